//! falaj-residency: `falaj residency check`, static residency rules over Terraform sources.
//!
//! This module owns the CI check that keeps `terraform/` inside the allowed regions
//! (`me-central-1` unless the operator lists others). It parses every `.tf` file with
//! `hcl-edit`, which keeps byte spans, so each [`Violation`] names a file and a line.
//!
//! Each directory is one Terraform module. The checker reads the whole tree first (variables,
//! locals, `provider "aws"` blocks and local module calls), then applies the rules listed in
//! [`rule`]. What it can see:
//!
//! - literal strings, `var.x` whose default is a literal, `local.x` that resolves to one, a
//!   `"${var.x}"` template, and `data.aws_region.<name>` (the provider's own region);
//! - providers passed to local modules (`source = "./..."` or `"../..."`), through
//!   `providers = { aws = aws.alias }` or the implicit default provider.
//!
//! What it cannot see, and how it answers: a value computed at plan time (a function call, a
//! remote data source, a `-var` on the command line). A `region` attribute it cannot resolve
//! is a violation (`region-unverifiable`); a variable used as a region must carry a
//! `validation {}` block that lists allowed regions, so a `-var` or `.tfvars` value outside
//! them fails at `terraform plan`. Remote modules (registry or git sources) are not read.
//! `.tf.json` files are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use falaj_core::AllowedRegions;
use hcl_edit::expr::{Expression, TraversalOperator};
use hcl_edit::structure::{Attribute, Block, Body};
use hcl_edit::template::Element;
use hcl_edit::visit::{self, Visit};
use hcl_edit::{Decorated, Span, Spanned};
use serde::Serialize;

/// Rule ids, stable: CI output and tests match on them.
pub mod rule {
    /// A `region` (or `*_region`) attribute resolves to a region outside the allowed list.
    pub const REGION_NOT_ALLOWED: &str = "region-not-allowed";
    /// A `region` attribute whose value the checker cannot resolve.
    pub const REGION_UNVERIFIABLE: &str = "region-unverifiable";
    /// A region name outside the allowed list inside a string (ARN, endpoint, policy, default).
    pub const REGION_LITERAL_NOT_ALLOWED: &str = "region-literal-not-allowed";
    /// A variable used as a region without a validation that restricts it to allowed regions.
    pub const REGION_VARIABLE_UNVALIDATED: &str = "region-variable-unvalidated";
    /// A `provider "aws"` block with no `region`: it would follow `AWS_REGION` of whoever runs it.
    pub const PROVIDER_REGION_MISSING: &str = "provider-region-missing";
    /// An `aws_s3_bucket` whose provider does not pin an allowed region.
    pub const BUCKET_WITHOUT_LOCATION: &str = "bucket-without-location";
    /// S3 replication (to another region or account).
    pub const S3_REPLICATION: &str = "s3-replication";
    /// A KMS replica key: key material copied to another region.
    pub const KMS_REPLICA_KEY: &str = "kms-replica-key";
    /// A KMS key with `multi_region = true`.
    pub const KMS_MULTI_REGION: &str = "kms-multi-region";
    /// A global service that stores or caches data outside the region.
    pub const GLOBAL_RESOURCE: &str = "global-resource";
    /// A resource that copies data to other regions (global tables, replicas).
    pub const CROSS_REGION_REPLICA: &str = "cross-region-replica";
}

/// Resource types that are global or cache data outside any one region. Each entry is
/// `(type or prefix ending in '_', why)`.
pub const GLOBAL_RESOURCES: &[(&str, &str)] = &[
    (
        "aws_cloudfront_",
        "CloudFront caches and logs content at edge locations worldwide",
    ),
    (
        "aws_globalaccelerator_",
        "Global Accelerator is a global service; traffic enters at edge locations worldwide",
    ),
    (
        "aws_route53_query_log",
        "public DNS query logs can only be delivered to CloudWatch Logs in us-east-1",
    ),
    (
        "aws_s3control_multi_region_access_point",
        "a Multi-Region Access Point routes and replicates objects across regions",
    ),
    (
        "aws_s3_bucket_accelerate_configuration",
        "Transfer Acceleration sends objects through CloudFront edge locations worldwide",
    ),
    (
        "aws_lightsail_distribution",
        "a Lightsail distribution is a CloudFront distribution",
    ),
];

/// Resource types that copy data into other regions. Each entry is `(type, why)`.
pub const CROSS_REGION_RESOURCES: &[(&str, &str)] = &[
    (
        "aws_dynamodb_global_table",
        "a global table replicates items to other regions",
    ),
    (
        "aws_dynamodb_table_replica",
        "a table replica lives in another region",
    ),
    (
        "aws_ecr_replication_configuration",
        "ECR replication copies images to other regions",
    ),
    (
        "aws_rds_global_cluster",
        "an Aurora global database replicates to other regions",
    ),
    (
        "aws_docdb_global_cluster",
        "a DocumentDB global cluster replicates to other regions",
    ),
    (
        "aws_neptune_global_cluster",
        "a Neptune global database replicates to other regions",
    ),
    (
        "aws_elasticache_global_replication_group",
        "a global datastore replicates to other regions",
    ),
    (
        "aws_db_instance_automated_backups_replication",
        "copies RDS backups to another region",
    ),
];

/// One rule broken at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// File, relative to the checked directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Stable rule id, e.g. `region-not-allowed`; see [`rule`].
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file.display(),
            self.line,
            self.rule,
            self.message
        )
    }
}

/// The result of checking a directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `.tf` files parsed.
    pub files_checked: usize,
    /// Violations, in file and line order.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether no rule was broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The directory could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// I/O on a file or directory.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file is not valid HCL.
    #[error(
        "{path}:{line}: not valid HCL: {message} (fix the syntax; `terraform fmt` shows the same place)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
}

/// Checks every `.tf` file under `dir` (recursively) against the residency rules.
///
/// Directories whose name starts with `.` (such as `.terraform/`) are skipped; files that do
/// not end in `.tf` are ignored.
pub fn check_dir(dir: &Path, allowed: &AllowedRegions) -> Result<Report, CheckError> {
    let mut paths = Vec::new();
    collect_tf_files(dir, &mut paths)?;
    paths.sort();

    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let src = std::fs::read_to_string(&path).map_err(|source| CheckError::Io {
            path: path.clone(),
            source,
        })?;
        let body = hcl_edit::parser::parse_body(&src).map_err(|e| CheckError::Parse {
            path: path.clone(),
            line: e.location().line(),
            message: e.message().to_string(),
        })?;
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        files.push(TfFile {
            lines: LineIndex::new(&src),
            rel,
            body,
        });
    }

    let tree = Tree::index(&files);
    let mut checker = Checker {
        tree: &tree,
        allowed,
        violations: Vec::new(),
    };
    checker.run();

    let mut violations = checker.violations;
    violations.sort_by(|a, b| (&a.file, a.line, a.rule).cmp(&(&b.file, b.line, b.rule)));
    violations.dedup();
    Ok(Report {
        files_checked: files.len(),
        violations,
    })
}

fn collect_tf_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let io = |source| CheckError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| CheckError::Io {
            path: path.clone(),
            source,
        })?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if kind.is_dir() && !hidden {
            collect_tf_files(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "tf") {
            out.push(path);
        }
    }
    Ok(())
}

/// Byte offset to 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

struct TfFile {
    rel: PathBuf,
    lines: LineIndex,
    body: Body,
}

impl TfFile {
    fn line_of(&self, span: Option<Range<usize>>) -> usize {
        span.map_or(1, |s| self.lines.line(s.start))
    }
}

/// A place in the tree: which file, which line.
#[derive(Clone, Copy)]
struct At<'a> {
    file: &'a TfFile,
    line: usize,
}

impl At<'_> {
    fn show(&self) -> String {
        format!("{}:{}", self.file.rel.display(), self.line)
    }
}

struct VariableDecl<'a> {
    at: At<'a>,
    default: Option<&'a Expression>,
    conditions: Vec<&'a Expression>,
}

struct ProviderDecl<'a> {
    at: At<'a>,
    region: Option<&'a Attribute>,
}

struct ModuleCall {
    /// The called module's directory, when its source is a local path inside the tree.
    target: Option<PathBuf>,
    /// Child provider name (`aws`, `aws.x`) to the caller's (`aws`, `aws.y`).
    providers: BTreeMap<String, String>,
}

/// One directory: one Terraform module.
#[derive(Default)]
struct Module<'a> {
    files: Vec<&'a TfFile>,
    variables: BTreeMap<String, VariableDecl<'a>>,
    locals: BTreeMap<String, &'a Expression>,
    /// `provider "aws"` blocks by alias (`""` for the default one).
    providers: BTreeMap<String, ProviderDecl<'a>>,
    calls: Vec<ModuleCall>,
}

struct Tree<'a> {
    modules: BTreeMap<PathBuf, Module<'a>>,
}

impl<'a> Tree<'a> {
    fn index(files: &'a [TfFile]) -> Self {
        let mut modules: BTreeMap<PathBuf, Module<'a>> = BTreeMap::new();
        for file in files {
            let dir = file.rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let module = modules.entry(dir.clone()).or_default();
            module.files.push(file);
            for block in file.body.blocks() {
                let at = At {
                    file,
                    line: file.line_of(block.ident.span()),
                };
                match (block.ident.as_str(), label(block, 0)) {
                    ("variable", Some(name)) => {
                        let conditions = block
                            .body
                            .get_blocks("validation")
                            .filter_map(|v| v.body.get_attribute("condition"))
                            .map(|a| &a.value)
                            .collect();
                        let default = block.body.get_attribute("default").map(|a| &a.value);
                        module.variables.insert(
                            name.to_string(),
                            VariableDecl {
                                at,
                                default,
                                conditions,
                            },
                        );
                    }
                    ("locals", _) => {
                        for attr in block.body.attributes() {
                            module
                                .locals
                                .insert(attr.key.as_str().to_string(), &attr.value);
                        }
                    }
                    ("provider", Some("aws")) => {
                        let alias = block
                            .body
                            .get_attribute("alias")
                            .and_then(|a| string_literal(&a.value))
                            .unwrap_or_default();
                        let region = block.body.get_attribute("region");
                        module.providers.insert(alias, ProviderDecl { at, region });
                    }
                    ("module", Some(_)) => {
                        let target = block
                            .body
                            .get_attribute("source")
                            .and_then(|a| string_literal(&a.value))
                            .filter(|s| s.starts_with("./") || s.starts_with("../"))
                            .and_then(|s| normalize(&dir.join(s)));
                        let providers = block
                            .body
                            .get_attribute("providers")
                            .map(|a| provider_map(&a.value))
                            .unwrap_or_default();
                        module.calls.push(ModuleCall { target, providers });
                    }
                    _ => {}
                }
            }
        }
        Tree { modules }
    }
}

/// Lexically resolves `a/b/../c` to `a/c`; `None` if it climbs out of the checked directory.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn label(block: &Block, i: usize) -> Option<&str> {
    block.labels.get(i).map(|l| l.as_str())
}

/// The string value of a literal, or of a template with no interpolation.
fn string_literal(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().clone()),
        Expression::StringTemplate(t) => {
            let mut out = String::new();
            for element in t.iter() {
                match element {
                    Element::Literal(l) => out.push_str(l.value()),
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// `aws.alias` (or `aws`) as written in a traversal expression.
fn provider_ref(expr: &Expression) -> Option<String> {
    match expr {
        Expression::Variable(v) => Some(v.as_str().to_string()),
        Expression::Traversal(t) => {
            let Expression::Variable(root) = &t.expr else {
                return None;
            };
            let mut out = root.as_str().to_string();
            for op in &t.operators {
                let TraversalOperator::GetAttr(a) = op.value() else {
                    return None;
                };
                out.push('.');
                out.push_str(a.as_str());
            }
            Some(out)
        }
        _ => None,
    }
}

/// `providers = { aws = aws.uae, "aws.x" = aws }` as a map.
fn provider_map(expr: &Expression) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Expression::Object(object) = expr {
        for (key, value) in object.iter() {
            let key = match key {
                hcl_edit::expr::ObjectKey::Ident(i) => Some(i.as_str().to_string()),
                hcl_edit::expr::ObjectKey::Expression(e) => {
                    provider_ref(e).or_else(|| string_literal(e))
                }
            };
            if let (Some(k), Some(v)) = (key, provider_ref(value.expr())) {
                out.insert(k, v);
            }
        }
    }
    out
}

/// `var.name`, if the expression is exactly that.
fn var_ref(expr: &Expression) -> Option<&str> {
    let Expression::Traversal(t) = expr else {
        return None;
    };
    let Expression::Variable(root) = &t.expr else {
        return None;
    };
    match (root.as_str(), t.operators.as_slice()) {
        ("var", [op]) => match op.value() {
            TraversalOperator::GetAttr(a) => Some(a.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// What a region expression resolves to.
enum Region<'a> {
    /// A literal region, with where it came from when it went through variables or locals.
    Literal { region: String, via: String },
    /// A variable without a literal default: its validation decides (checked separately).
    Variable(&'a str),
    /// `data.aws_region.*`: the provider's own region, checked on the provider.
    Provider,
    /// Anything the checker cannot evaluate.
    Unknown,
}

fn resolve_region<'a>(module: &Module<'a>, expr: &'a Expression, depth: usize) -> Region<'a> {
    if depth > 8 {
        return Region::Unknown;
    }
    if let Some(region) = string_literal(expr) {
        return Region::Literal {
            region,
            via: String::new(),
        };
    }
    if let Expression::StringTemplate(t) = expr {
        let elements: Vec<&Element> = t.iter().collect();
        if let [Element::Interpolation(i)] = elements.as_slice() {
            return resolve_region(module, &i.expr, depth + 1);
        }
    }
    if let Expression::Parenthesis(p) = expr {
        return resolve_region(module, p.inner(), depth + 1);
    }
    if let Some(name) = var_ref(expr) {
        let Some(var) = module.variables.get(name) else {
            return Region::Unknown;
        };
        return match var.default.map(|d| (d, string_literal(d))) {
            Some((_, Some(region))) => Region::Literal {
                region,
                via: format!(" (the default of var.{name} at {})", var.at.show()),
            },
            Some((Expression::Null(_), None)) | None => Region::Variable(name),
            Some((_, None)) => Region::Unknown,
        };
    }
    if let Expression::Traversal(t) = expr
        && let Expression::Variable(root) = &t.expr
        && let Some(TraversalOperator::GetAttr(first)) = t.operators.first().map(|o| o.value())
    {
        match root.as_str() {
            "local" if t.operators.len() == 1 => {
                if let Some(local) = module.locals.get(first.as_str()) {
                    return match resolve_region(module, local, depth + 1) {
                        Region::Literal { region, via } if via.is_empty() => Region::Literal {
                            region,
                            via: format!(" (through local.{})", first.as_str()),
                        },
                        other => other,
                    };
                }
            }
            "data" if first.as_str() == "aws_region" => return Region::Provider,
            _ => {}
        }
    }
    Region::Unknown
}

/// Whether a provider reference (`aws`, `aws.alias`) in `dir` lands in an allowed region.
#[derive(Debug, PartialEq, Eq)]
enum Located {
    Yes,
    No(String),
}

struct Checker<'t, 'a> {
    tree: &'t Tree<'a>,
    allowed: &'t AllowedRegions,
    violations: Vec<Violation>,
}

/// `region`, `sts_region`, `source_region`...; `multi_region` is a flag, judged by its own rule.
fn is_region_key(key: &str) -> bool {
    key == "region" || (key.ends_with("_region") && key != "multi_region")
}

impl<'a> Checker<'_, 'a> {
    fn allowed_list(&self) -> String {
        self.allowed.regions().join(", ")
    }

    fn report(&mut self, at: At<'_>, rule: &'static str, message: String) {
        self.violations.push(Violation {
            file: at.file.rel.clone(),
            line: at.line,
            rule,
            message,
        });
    }

    fn run(&mut self) {
        let tree = self.tree;
        for (dir, module) in &tree.modules {
            let mut region_vars = BTreeSet::new();
            for file in &module.files {
                for block in file.body.blocks() {
                    self.check_block(module, file, block, &mut region_vars);
                    self.check_resource(dir, module, file, block);
                }
                let mut scan = LiteralScan {
                    checker: self,
                    file,
                };
                scan.visit_body(&file.body);
            }
            self.check_providers(module);
            self.check_region_variables(module, &region_vars);
        }
    }

    /// The `region` attributes of a block and its nested blocks.
    fn check_block(
        &mut self,
        module: &Module<'a>,
        file: &'a TfFile,
        block: &'a Block,
        vars: &mut BTreeSet<&'a str>,
    ) {
        if block.ident.as_str() == "variable" {
            return;
        }
        for attr in block.body.attributes() {
            if is_region_key(attr.key.as_str()) {
                self.check_region_attr(module, file, block, attr, vars);
            }
        }
        for inner in block.body.blocks() {
            self.check_block(module, file, inner, vars);
        }
    }

    fn check_region_attr(
        &mut self,
        module: &Module<'a>,
        file: &'a TfFile,
        block: &Block,
        attr: &'a Attribute,
        vars: &mut BTreeSet<&'a str>,
    ) {
        let at = At {
            file,
            line: file.line_of(attr.key.span()),
        };
        let what = describe(block);
        let key = attr.key.as_str();
        match resolve_region(module, &attr.value, 0) {
            Region::Literal { region, via } => {
                if !self.allowed.allows(&region) {
                    let allowed = self.allowed_list();
                    self.report(
                        at,
                        rule::REGION_NOT_ALLOWED,
                        format!(
                            "{what} sets {key} = \"{region}\"{via}, outside the allowed regions [{allowed}]; \
                             set it to an allowed region (or add a UAE region to FALAJ_ALLOWED_REGIONS)"
                        ),
                    );
                }
            }
            Region::Variable(name) => {
                vars.insert(name);
            }
            Region::Provider => {}
            Region::Unknown => {
                let allowed = self.allowed_list();
                self.report(
                    at,
                    rule::REGION_UNVERIFIABLE,
                    format!(
                        "{what} sets {key} to an expression the checker cannot resolve; use a literal from \
                         [{allowed}] or a variable whose validation restricts it to those regions"
                    ),
                );
            }
        }
        if let Some(name) = var_ref(&attr.value) {
            vars.insert(name);
        }
    }

    fn check_providers(&mut self, module: &Module<'a>) {
        for (alias, provider) in &module.providers {
            if provider.region.is_none() {
                let name = if alias.is_empty() {
                    "aws".to_string()
                } else {
                    format!("aws.{alias}")
                };
                self.report(
                    provider.at,
                    rule::PROVIDER_REGION_MISSING,
                    format!(
                        "provider {name} has no region, so it would use AWS_REGION of whoever runs terraform; \
                         add `region = var.region` with a validated variable, or a literal from [{}]",
                        self.allowed_list()
                    ),
                );
            }
        }
    }

    /// Every variable named like a region, or used as one, must have a validation that lists
    /// allowed regions and refers to the variable.
    fn check_region_variables(&mut self, module: &Module<'a>, used: &BTreeSet<&'a str>) {
        for (name, var) in &module.variables {
            if !(is_region_key(name) || used.contains(name.as_str())) {
                continue;
            }
            let restricted = var.conditions.iter().any(|c| {
                let mut probe = ConditionProbe {
                    var: name,
                    refers: false,
                    regions: Vec::new(),
                };
                probe.visit_expr(c);
                probe.refers
                    && !probe.regions.is_empty()
                    && probe.regions.iter().all(|r| self.allowed.allows(r))
            });
            if !restricted {
                let allowed: Vec<String> = self
                    .allowed
                    .regions()
                    .iter()
                    .map(|r| format!("\"{r}\""))
                    .collect();
                self.report(
                    var.at,
                    rule::REGION_VARIABLE_UNVALIDATED,
                    format!(
                        "variable \"{name}\" is a region but no validation restricts it to the allowed regions; \
                         add `validation {{ condition = contains([{}], var.{name}) ... }}`",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn check_resource(
        &mut self,
        dir: &Path,
        module: &Module<'a>,
        file: &'a TfFile,
        block: &'a Block,
    ) {
        if block.ident.as_str() != "resource" {
            return;
        }
        let Some(kind) = label(block, 0) else { return };
        let at = At {
            file,
            line: file.line_of(block.ident.span()),
        };
        let what = describe(block);

        if let Some((_, why)) = GLOBAL_RESOURCES.iter().find(|(t, _)| {
            if t.ends_with('_') {
                kind.starts_with(t)
            } else {
                kind == *t
            }
        }) {
            self.report(
                at,
                rule::GLOBAL_RESOURCE,
                format!("{what}: {why}; remove it (serve from the region: an HTTP API, an ALB, a Function URL)"),
            );
        }
        if kind == "aws_wafv2_web_acl"
            && block
                .body
                .get_attribute("scope")
                .and_then(|a| string_literal(&a.value))
                .as_deref()
                == Some("CLOUDFRONT")
        {
            self.report(
                at,
                rule::GLOBAL_RESOURCE,
                format!(
                    "{what} has scope CLOUDFRONT, which lives in us-east-1; use scope REGIONAL"
                ),
            );
        }
        if let Some((_, why)) = CROSS_REGION_RESOURCES.iter().find(|(t, _)| kind == *t) {
            self.report(
                at,
                rule::CROSS_REGION_REPLICA,
                format!("{what}: {why}; remove it, data must stay in the region"),
            );
        }
        for (parent, nested) in [
            ("aws_dynamodb_table", "replica"),
            ("aws_secretsmanager_secret", "replica"),
        ] {
            if kind == parent && block.body.has_blocks(nested) {
                self.report(
                    at,
                    rule::CROSS_REGION_REPLICA,
                    format!("{what} has a `{nested}` block, which copies it to another region; remove the block"),
                );
            }
        }
        match kind {
            "aws_s3_bucket_replication_configuration" => self.report(
                at,
                rule::S3_REPLICATION,
                format!("{what} replicates objects out of the bucket; remove it (backups stay in-region: versioning, Object Lock)"),
            ),
            "aws_kms_replica_key" | "aws_kms_replica_external_key" => self.report(
                at,
                rule::KMS_REPLICA_KEY,
                format!("{what} copies key material to another region; remove it"),
            ),
            "aws_kms_key" | "aws_kms_external_key" => self.check_multi_region(module, at, &what, block),
            "aws_s3_bucket" => {
                if block.body.has_blocks("replication_configuration") {
                    self.report(
                        at,
                        rule::S3_REPLICATION,
                        format!("{what} has a replication_configuration block; remove it"),
                    );
                }
                self.check_bucket_location(dir, at, &what, block);
            }
            _ => {}
        }
    }

    fn check_multi_region(
        &mut self,
        module: &Module<'a>,
        at: At<'_>,
        what: &str,
        block: &'a Block,
    ) {
        let Some(attr) = block.body.get_attribute("multi_region") else {
            return;
        };
        let value = match &attr.value {
            Expression::Bool(b) => Some(*b.value()),
            other => var_ref(other)
                .and_then(|n| module.variables.get(n))
                .and_then(|v| match v.default {
                    Some(Expression::Bool(b)) => Some(*b.value()),
                    _ => None,
                }),
        };
        let at = At {
            file: at.file,
            line: at.file.line_of(attr.key.span()),
        };
        match value {
            Some(false) => {}
            Some(true) => self.report(
                at,
                rule::KMS_MULTI_REGION,
                format!("{what} sets multi_region = true, which lets the key be replicated to other regions; set it to false"),
            ),
            None => self.report(
                at,
                rule::KMS_MULTI_REGION,
                format!("{what} sets multi_region to a value the checker cannot resolve; write `multi_region = false`"),
            ),
        }
    }

    fn check_bucket_location(&mut self, dir: &Path, at: At<'_>, what: &str, block: &'a Block) {
        // Provider v6 resources take their own `region`; the region rule judges that attribute.
        if block.body.has_attribute("region") {
            return;
        }
        let provider = block
            .body
            .get_attribute("provider")
            .and_then(|a| provider_ref(&a.value))
            .unwrap_or_else(|| "aws".to_string());
        if let Located::No(why) = self.located(dir, &provider, 0) {
            self.report(
                at,
                rule::BUCKET_WITHOUT_LOCATION,
                format!(
                    "{what} has no location constraint in an allowed region: {why}; give its provider \
                     `region` from [{}] (check the root module that configures the provider)",
                    self.allowed_list()
                ),
            );
        }
    }

    /// Follows a provider reference up through the modules that call `dir`.
    fn located(&self, dir: &Path, provider: &str, depth: usize) -> Located {
        if depth > 16 {
            return Located::No("module calls nest too deep to follow".into());
        }
        let Some(module) = self.tree.modules.get(dir) else {
            return Located::No(format!(
                "module {} is not in the checked tree",
                dir.display()
            ));
        };
        let alias = provider.strip_prefix("aws.").unwrap_or("");
        if provider != "aws" && alias.is_empty() {
            return Located::No(format!("provider {provider} is not an aws provider"));
        }
        if let Some(decl) = module.providers.get(alias) {
            let Some(attr) = decl.region else {
                return Located::No(format!(
                    "provider {provider} at {} has no region",
                    decl.at.show()
                ));
            };
            return match resolve_region(module, &attr.value, 0) {
                Region::Literal { region, .. } if self.allowed.allows(&region) => Located::Yes,
                Region::Variable(_) => Located::Yes,
                Region::Literal { region, .. } => Located::No(format!(
                    "provider {provider} at {} is in {region}",
                    decl.at.show()
                )),
                Region::Provider | Region::Unknown => Located::No(format!(
                    "the region of provider {provider} at {} cannot be resolved",
                    decl.at.show()
                )),
            };
        }
        let callers: Vec<(&PathBuf, &ModuleCall)> = self
            .tree
            .modules
            .iter()
            .flat_map(|(d, m)| m.calls.iter().map(move |c| (d, c)))
            .filter(|(_, c)| c.target.as_deref() == Some(dir))
            .collect();
        if callers.is_empty() {
            return Located::No(format!(
                "{} configures no provider {provider} and no module in the checked tree calls it",
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                }
                .display()
            ));
        }
        for (caller_dir, call) in callers {
            let passed = match call.providers.get(provider) {
                Some(p) => p.clone(),
                None if provider == "aws" => "aws".to_string(),
                None => {
                    return Located::No(format!(
                        "a call from {} does not pass {provider}",
                        caller_dir.display()
                    ));
                }
            };
            if let Located::No(why) = self.located(caller_dir, &passed, depth + 1) {
                return Located::No(why);
            }
        }
        Located::Yes
    }
}

/// `resource "aws_s3_bucket" "registry"` and the like, for messages.
fn describe(block: &Block) -> String {
    let mut out = block.ident.as_str().to_string();
    for l in &block.labels {
        out.push_str(&format!(" \"{}\"", l.as_str()));
    }
    out
}

/// Finds region names outside the allowed list in every string of a file.
struct LiteralScan<'c, 't, 'a, 'f> {
    checker: &'c mut Checker<'t, 'a>,
    file: &'f TfFile,
}

impl LiteralScan<'_, '_, '_, '_> {
    fn scan(&mut self, text: &str, start: usize) {
        for (offset, region) in region_names(text) {
            if self.checker.allowed.allows(&region) {
                continue;
            }
            let line = self.file.lines.line(start + offset);
            let allowed = self.checker.allowed_list();
            self.checker.violations.push(Violation {
                file: self.file.rel.clone(),
                line,
                rule: rule::REGION_LITERAL_NOT_ALLOWED,
                message: format!(
                    "the string names region {region}, outside the allowed regions [{allowed}]; \
                     use an allowed region (build ARNs and endpoints from var.region)"
                ),
            });
        }
    }
}

impl Visit for LiteralScan<'_, '_, '_, '_> {
    fn visit_attr(&mut self, node: &Attribute) {
        let key = node.key.as_str();
        // Prose may name other regions; region attributes are judged by their own rule.
        if key == "description" || key == "error_message" || is_region_key(key) {
            return;
        }
        visit::visit_attr(self, node);
    }

    fn visit_string(&mut self, node: &Decorated<String>) {
        let start = node.span().map_or(0, |s| s.start + 1);
        self.scan(node.value(), start);
    }

    fn visit_literal(&mut self, node: &Spanned<String>) {
        let start = node.span().map_or(0, |s| s.start);
        self.scan(node.value(), start);
    }
}

/// Looks at a validation condition: does it refer to `var.<var>`, and which regions does it name?
struct ConditionProbe<'n> {
    var: &'n str,
    refers: bool,
    regions: Vec<String>,
}

impl Visit for ConditionProbe<'_> {
    fn visit_expr(&mut self, node: &Expression) {
        if var_ref(node) == Some(self.var) {
            self.refers = true;
        }
        visit::visit_expr(self, node);
    }

    fn visit_string(&mut self, node: &Decorated<String>) {
        self.regions
            .extend(region_names(node.value()).into_iter().map(|(_, r)| r));
    }

    fn visit_literal(&mut self, node: &Spanned<String>) {
        self.regions
            .extend(region_names(node.value()).into_iter().map(|(_, r)| r));
    }
}

const GEOS: &[&str] = &[
    "af", "ap", "ca", "cn", "eu", "eusc", "il", "me", "mx", "sa", "us",
];
const DIRECTIONS: &[&str] = &[
    "central",
    "east",
    "west",
    "north",
    "south",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];
const PARTITION_MARKS: &[&str] = &["gov", "iso", "isob", "isoe", "isof", "de"];

/// AWS region names (and availability zones, reported as their region) in `text`, with
/// their byte offsets. A name counts only as a whole token: ARNs (`:`), hostnames (`.`), paths
/// (`/`) and JSON delimit it; `my-eu-west-1-bucket` does not.
fn region_names(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    let bytes = text.as_bytes();
    for i in 0..=bytes.len() {
        let in_token = i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-');
        match (in_token, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if let Some(region) = as_region(&text[s..i]) {
                    out.push((s, region));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn as_region(token: &str) -> Option<String> {
    let parts: Vec<&str> = token.split('-').collect();
    let (geo, rest) = parts.split_first()?;
    let (last, middle) = rest.split_last()?;
    if !GEOS.contains(geo) || middle.is_empty() || middle.len() > 2 {
        return None;
    }
    let (direction, marks) = middle.split_last()?;
    if !DIRECTIONS.contains(direction) || !marks.iter().all(|m| PARTITION_MARKS.contains(m)) {
        return None;
    }
    let digits = last.trim_end_matches(|c: char| c.is_ascii_lowercase());
    let zone = &last[digits.len()..];
    if digits.is_empty()
        || digits.len() > 2
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || zone.len() > 1
    {
        return None;
    }
    Some(token[..token.len() - zone.len()].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_whole_tokens() {
        let found = |s: &str| {
            region_names(s)
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
        };
        assert_eq!(found("arn:aws:sns:eu-west-1:123456789012:t"), ["eu-west-1"]);
        assert_eq!(
            found("https://s3.me-central-1.amazonaws.com"),
            ["me-central-1"]
        );
        assert_eq!(
            found("us-gov-west-1 and ap-southeast-2"),
            ["us-gov-west-1", "ap-southeast-2"]
        );
        assert_eq!(found("me-central-1a"), ["me-central-1"]);
        assert!(found("my-eu-west-1-bucket").is_empty());
        assert!(found("eu-west").is_empty());
        assert!(found("us-east-1ab").is_empty());
        assert!(found("falaj-fn-ingest").is_empty());
    }

    #[test]
    fn region_name_offsets_point_at_the_name() {
        let text = "x = arn:aws:kms:us-east-1:1:key/k";
        let [(offset, region)] = region_names(text).try_into().unwrap();
        assert_eq!(&text[offset..offset + region.len()], "us-east-1");
    }

    #[test]
    fn lines_are_one_based() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!(
            [
                index.line(0),
                index.line(1),
                index.line(2),
                index.line(5),
                index.line(6)
            ],
            [1, 1, 2, 3, 4]
        );
    }

    #[test]
    fn relative_module_sources_normalize_inside_the_tree() {
        assert_eq!(
            normalize(Path::new("envs/uae/../../modules/registry")),
            Some(PathBuf::from("modules/registry"))
        );
        assert_eq!(normalize(Path::new("../outside")), None);
    }

    fn resolve(src: &str, expr: &str) -> String {
        let file = TfFile {
            rel: PathBuf::from("main.tf"),
            lines: LineIndex::new(src),
            body: hcl_edit::parser::parse_body(src).unwrap(),
        };
        let files = [file];
        let tree = Tree::index(&files);
        let module = &tree.modules[Path::new("")];
        let expr = hcl_edit::parser::parse_expr(expr).unwrap();
        match resolve_region(module, &expr, 0) {
            Region::Literal { region, via } => format!("{region}{via}"),
            Region::Variable(v) => format!("var {v}"),
            Region::Provider => "provider".into(),
            Region::Unknown => "unknown".into(),
        }
    }

    #[test]
    fn regions_resolve_through_variables_and_locals() {
        let src = "variable \"r\" {\n  default = \"eu-west-1\"\n}\nvariable \"n\" {}\nlocals {\n  l = var.r\n}\n";
        assert_eq!(resolve(src, "\"me-central-1\""), "me-central-1");
        assert_eq!(
            resolve(src, "var.r"),
            "eu-west-1 (the default of var.r at main.tf:1)"
        );
        assert_eq!(
            resolve(src, "\"${var.r}\""),
            "eu-west-1 (the default of var.r at main.tf:1)"
        );
        assert_eq!(
            resolve(src, "local.l"),
            "eu-west-1 (the default of var.r at main.tf:1)"
        );
        assert_eq!(resolve(src, "var.n"), "var n");
        assert_eq!(resolve(src, "data.aws_region.current.name"), "provider");
        assert_eq!(resolve(src, "lookup(var.m, \"k\")"), "unknown");
        assert_eq!(resolve(src, "var.missing"), "unknown");
    }
}
