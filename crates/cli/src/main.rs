//! `falaj`: the command line of the falaj registry.
//!
//! Each subcommand turns its arguments into one library call and prints the result, as a
//! table for people or as JSON (`--json`) for scripts.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use falaj::store::{self, OpenOptions};
use falaj::{Artifact, Expect, NewModel, Registration, Registry, RegistryError, VersionFilter};
use falaj_core::version::ModelRef;
use falaj_core::{AllowedRegions, ModelVersion};
use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  falaj model create wine --description 'wine quality classifier' --owner ml-team
  falaj push wine model.onnx --manifest manifest.json
  falaj versions wine
  falaj show wine@1                 # or wine@production, or wine (latest)
  falaj alias set wine staging 1
  falaj alias set wine production 2 --expect 1   # compare-and-swap: fails if someone moved it
  falaj tag wine@2 reviewed=yes
  falaj audit wine --verify
  falaj --store s3://my-bucket/falaj --json versions wine

Gates, approvals and deployments (docs/gates.md):
  falaj roles grant alice admin       # first grant in a store makes the caller admin
  falaj policy set wine gates.toml
  falaj validate wine@3 --data holdout.csv [--policy gates.toml]   # exit 6 if a gate fails
  falaj approve wine@3 --to production           # as an approver other than the author
  falaj promote wine@3 --to staging
  falaj promote wine@3 --to production [--canary 10 | --blue-green]
  falaj rollout wine --env prod --weight 50      # 100 makes the canary the champion
  falaj rollback wine --env prod
  falaj deployments [--repair]

Stores:
  dir://PATH        a local directory (the default: dir://.falaj)
  s3://BUCKET[/P]   Amazon S3, or an S3-compatible server with FALAJ_S3_ENDPOINT=http://host:port
                    The bucket must be in an allowed region (FALAJ_ALLOWED_REGIONS, default me-central-1).

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (someone else changed it first), 4 not found,
            5 audit chain broken, 6 gates failed or refused (role, approvals, state).";

/// falaj: an MLOps registry whose database is an object store, kept in the UAE.
#[derive(Parser, Debug)]
#[command(name = "falaj", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Store URI: dir://PATH or s3://BUCKET[/PREFIX].
    #[arg(long, global = true, env = "FALAJ_STORE", default_value = store::DEFAULT_STORE)]
    store: String,
    /// Print JSON instead of tables (errors too, on stderr).
    #[arg(long, global = true, env = "FALAJ_JSON", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true", default_value = "false")]
    json: bool,
    /// Identity recorded as author/actor (defaults to $USER).
    #[arg(long = "as", global = true, env = "FALAJ_IDENTITY")]
    identity: Option<String>,
    /// Comma-separated regions data may live in.
    #[arg(
        long,
        global = true,
        env = "FALAJ_ALLOWED_REGIONS",
        default_value = "me-central-1"
    )]
    allowed_regions: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, show, list and tag models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Register a new version from an ONNX file (and its training manifest).
    #[command(
        after_help = "Example:\n  falaj push wine out/model.onnx --manifest out/manifest.json --semver 1.2.0"
    )]
    Push {
        /// Model name.
        model: String,
        /// The ONNX file.
        file: PathBuf,
        /// The training manifest written by falaj-train.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Semantic version (default: the manifest's, else <n>.0.0).
        #[arg(long)]
        semver: Option<String>,
        /// Create the model first if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// List a model's versions.
    Versions {
        /// Model name.
        model: String,
        /// Only versions with this tag (KEY=VALUE), repeatable.
        #[arg(long = "tag", value_parser = parse_kv)]
        tags: Vec<(String, String)>,
        /// Only versions by this author.
        #[arg(long)]
        author: Option<String>,
    },
    /// Show one version: MODEL@N, MODEL@ALIAS or MODEL (latest).
    Show {
        /// MODEL@N | MODEL@ALIAS | MODEL
        reference: String,
    },
    /// Move, remove and list aliases (staging, production, champion, ...).
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Set or remove tags on a version (MODEL@N) or on a model (MODEL).
    #[command(
        after_help = "Examples:\n  falaj tag wine@3 dataset=2026-11 reviewed=yes\n  falaj tag wine@3 --rm reviewed"
    )]
    Tag {
        /// MODEL@N or MODEL.
        reference: String,
        /// KEY=VALUE pairs to set.
        #[arg(value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Keys to remove.
        #[arg(long = "rm")]
        remove: Vec<String>,
    },
    /// Show a model's audit log; --verify checks its hash chain and the state it explains.
    ///
    /// --verify first completes any move a crashed writer left half-made (its event was
    /// written, its alias, approval or deployment was not), then checks that no event was
    /// edited, removed, reordered or cut off the end (the head, audit/<model>/head.json), and
    /// that every alias, approval, archive marker and deployment is exactly what the event
    /// it names wrote. Exit 5 names each problem by store key.
    Audit {
        /// Model name.
        model: String,
        /// Verify the chain and the state (exit 5 on any problem).
        #[arg(long)]
        verify: bool,
    },
    /// Residency checks.
    #[command(subcommand)]
    Residency(ResidencyCmd),
    /// Run the gates of MODEL@N on a holdout and write its gate report.
    Validate {
        /// MODEL@N (or MODEL@ALIAS).
        reference: String,
        /// Holdout CSV: a path, or store:KEY for an object in the store.
        #[arg(long)]
        data: String,
        /// Gate policy file to use instead of the model's attached one.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Approve MODEL@N for a stage (approvers only, never the author).
    Approve {
        /// MODEL@N.
        reference: String,
        /// Stage: production (or staging).
        #[arg(long, default_value = "production")]
        to: String,
        /// Free text recorded with the approval.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Promote MODEL@N to staging or production and write the signed deployment.
    Promote {
        /// MODEL@N.
        reference: String,
        /// staging | production.
        #[arg(long)]
        to: String,
        /// Start a canary with this percentage of traffic (production only).
        #[arg(long, conflicts_with = "blue_green")]
        canary: Option<u8>,
        /// Switch at once and keep the previous champion as standby.
        #[arg(long)]
        blue_green: bool,
        /// Only promote if the alias is now at this version ('none': only if unset).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Set the canary's traffic weight; 100 makes it the champion.
    Rollout {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
        /// Percentage 0-100.
        #[arg(long)]
        weight: u32,
    },
    /// Abort a canary, or go back to the previous champion in one compare-and-swap.
    Rollback {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
    },
    /// List deployments and whether each matches its aliases.
    Deployments {
        /// Rebuild diverged manifests from their aliases (after an interrupted change).
        #[arg(long)]
        repair: bool,
    },
    /// Compare the edge's input sketches with the training distribution (PSI per feature,
    /// binned KS); on drift, write a retraining request (retrain/<model>/<stamp>.json) and an
    /// audit event. Reads the sketches falaj-edge writes to telemetry/<env>/ for the version
    /// the environment serves, since the model's last retraining request.
    Drift {
        /// Model name.
        model: String,
        /// Environment: prod | staging.
        #[arg(long, default_value = "prod")]
        env: String,
        /// PSI above which a feature drifts (0.1 moderate, 0.25 large).
        #[arg(long, default_value_t = 0.25)]
        psi: f64,
        /// Binned Kolmogorov-Smirnov statistic above which a feature drifts (off by default).
        #[arg(long)]
        ks: Option<f64>,
        /// Fewer rows than this decide nothing.
        #[arg(long, default_value_t = 200)]
        min_rows: u64,
    },
    /// Attach a gate policy to a model.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Grant and list roles (viewer, data-scientist, ml-engineer, approver, admin).
    #[command(subcommand)]
    Roles(RolesCmd),
    /// Run the serverless flow on this machine: the webhook API on loopback, and a watcher
    /// that registers uploads to incoming/, validates them and stages them per policy.
    ///
    /// Uploads (model.onnx, then manifest.json, under incoming/<model>/<run>/) go through the
    /// same ingest and validate handlers as the Lambda functions. The webhook needs a
    /// configuration of CI secrets and token digests (docs/webhook.md); without one only
    /// /v1/health answers. Signing uses the local deployment key (FALAJ_SIGNING_KEY).
    ///
    /// Connection limits: a client must send a request's headers within
    /// FALAJ_HTTP_HEADER_TIMEOUT_MS (default 10000) and at most FALAJ_HTTP_MAX_CONNECTIONS
    /// (default 512) connections are served at once; others wait for a slot.
    Serve {
        /// Address to listen on (loopback by default; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8787", env = "FALAJ_LISTEN")]
        listen: std::net::SocketAddr,
        /// Webhook configuration (TOML or JSON): CI secrets, token digests, limits.
        #[arg(long, env = "FALAJ_WEBHOOK_CONFIG")]
        webhook_config: Option<std::path::PathBuf>,
        /// How often to look for new uploads, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Handle what is in incoming/ and retrain/ now, then exit (no HTTP).
        #[arg(long)]
        once: bool,
        /// The falaj-train binary that retraining requests run [default: next to falaj].
        #[arg(long, env = "FALAJ_TRAINER")]
        trainer: Option<PathBuf>,
        /// Where retraining runs write their outputs and logs.
        #[arg(long, default_value = "target/retrain")]
        retrain_dir: PathBuf,
        /// Leave retraining requests to another consumer (in AWS: the Batch rule).
        #[arg(long)]
        no_retrain: bool,
    },
    /// Run the whole loop on this machine, printing each step: train → incoming/ → ingest →
    /// gates → two approvals → production → falaj-edge serves the WASM component →
    /// predictions → shifted traffic → drift → retraining request → retrain → gates.
    ///
    /// Needs falaj-train and falaj-edge (built beside falaj by `cargo build --workspace
    /// --bins`) and the inference component (scripts/wasm-component.sh); `bash
    /// scripts/demo.sh` builds all three and runs this. Re-running adds versions to the same
    /// store (a canary then goes out); --clean starts from an empty store.
    #[command(
        after_help = "Examples:\n  falaj demo                       # on dir://.falaj\n  falaj demo --clean --epochs 15   # afresh, quicker\n  falaj --store dir:///tmp/d --json demo   # JSON lines, e.g. for CI"
    )]
    Demo {
        /// Remove the store (dir:// only) and the demo's work directory first.
        #[arg(long)]
        clean: bool,
        /// Training epochs (the retrain repeats them).
        #[arg(long, default_value_t = 30, env = "FALAJ_DEMO_EPOCHS")]
        epochs: usize,
        /// Model name.
        #[arg(long, default_value = "breast-cancer", env = "FALAJ_DEMO_MODEL")]
        model: String,
        /// Run outputs, logs and the edge's cache.
        #[arg(long, default_value = "target/demo")]
        work_dir: PathBuf,
        /// The falaj-train binary [default: next to falaj].
        #[arg(long, env = "FALAJ_TRAINER")]
        trainer: Option<PathBuf>,
        /// The falaj-edge binary [default: next to falaj].
        #[arg(long, env = "FALAJ_EDGE")]
        edge: Option<PathBuf>,
        /// The inference component.
        #[arg(
            long,
            env = "FALAJ_EDGE_COMPONENT",
            default_value = "target/wasm/falaj-inference.wasm"
        )]
        component: PathBuf,
        /// Compiled-component cache shared with other falaj-edge nodes on this machine.
        #[arg(long, env = "FALAJ_EDGE_CODE_CACHE")]
        code_cache: Option<PathBuf>,
        /// Rows of shifted traffic to send.
        #[arg(long, default_value_t = 400)]
        shifted_rows: usize,
        /// Factor on the size features of the shifted traffic.
        #[arg(long, default_value_t = 1.6)]
        shift: f64,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Check and attach a policy file (TOML) to a model.
    Set {
        /// Model name.
        model: String,
        /// Policy file.
        file: PathBuf,
    },
    /// Print a model's policy.
    Show {
        /// Model name.
        model: String,
    },
}

#[derive(Subcommand, Debug)]
enum RolesCmd {
    /// Grant ROLE to IDENTITY (admins only; the first grant in a store makes the caller admin).
    Grant {
        /// Identity to grant the role to.
        #[arg(value_name = "IDENTITY")]
        who: String,
        /// Role.
        role: String,
    },
    /// List role bindings.
    List,
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Register a new model name.
    Create(CreateArgs),
    /// Show a model.
    Show {
        /// Model name.
        name: String,
    },
    /// List models.
    List,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Model name: 1-64 chars of a-z, 0-9, '-', '_', '.'.
    name: String,
    /// Free text.
    #[arg(long, default_value = "")]
    description: String,
    /// Owning team or person.
    #[arg(long, default_value = "")]
    owner: String,
    /// Tag KEY=VALUE, repeatable.
    #[arg(long = "tag", value_parser = parse_kv)]
    tags: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
enum AliasCmd {
    /// Point an alias at a version (compare-and-swap).
    Set {
        /// Model name.
        model: String,
        /// Alias name.
        alias: String,
        /// Version number.
        version: u64,
        /// Only move if the alias is now at this version ('none': only if unset).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Remove an alias (kept as a tombstone; the move is audited).
    Rm {
        /// Model name.
        model: String,
        /// Alias name.
        alias: String,
        /// Only remove if the alias is now at this version.
        #[arg(long)]
        expect: Option<u64>,
    },
    /// List a model's aliases.
    List {
        /// Model name.
        model: String,
    },
}

#[derive(Subcommand, Debug)]
enum ResidencyCmd {
    /// Check Terraform sources for resources or regions outside the allowed list.
    #[command(after_help = "Example:\n  falaj residency check terraform/")]
    Check {
        /// Directory with .tf files (searched recursively).
        dir: PathBuf,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// What a command failed with, with its exit code.
struct Failure {
    code: &'static str,
    exit: u8,
    message: String,
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

fn exit_for(code: &str) -> u8 {
    match code {
        "conflict" => 3,
        "not_found" => 4,
        "forbidden" | "refused" | "gates_failed" => 6,
        _ => 1,
    }
}

impl From<falaj::reports::GateError> for Failure {
    fn from(e: falaj::reports::GateError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

impl From<falaj::promotion::PromotionError> for Failure {
    fn from(e: falaj::promotion::PromotionError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

fn signing_key() -> Result<falaj::deploy::DeployKey, Failure> {
    Ok(falaj::deploy::DeployKey::load_or_create(
        &falaj::deploy::DeployKey::default_path(),
    )?)
}

fn parse_stage(s: &str) -> Result<falaj_core::promotion::Stage, Failure> {
    falaj_core::promotion::Stage::parse(s).ok_or_else(|| {
        fail(
            "invalid_name",
            2,
            format!("unknown stage {s:?}: use staging or production"),
        )
    })
}

fn numbered(r: &ModelRef) -> Result<u64, Failure> {
    match r.version {
        falaj_core::version::VersionRef::Number(n) => Ok(n),
        _ => Err(fail(
            "invalid_name",
            2,
            format!("{r}: give a version number, MODEL@N"),
        )),
    }
}

fn report_text(r: &falaj_core::policy::GateReport) -> String {
    let mut s = format!(
        "gates of {}@{} (run {}): {}\n  evaluator {}\n  at        {} by {}\n",
        r.model,
        r.version,
        r.run,
        if r.passed { "PASSED" } else { "FAILED" },
        r.evaluator,
        r.evaluated_at,
        r.evaluated_by
    );
    if let Some(h) = &r.holdout {
        s += &format!("  holdout   {} ({} rows, {})\n", h.uri, h.rows, h.digest);
    }
    if let Some(e) = &r.error {
        s += &format!("  error     {e}\n");
    }
    for g in &r.gates {
        let bound = match g.bound {
            Some(falaj_core::policy::Bound::Min(t)) => format!(">= {t}"),
            Some(falaj_core::policy::Bound::Max(t)) => format!("<= {t}"),
            None => String::new(),
        };
        s += &format!(
            "  {} {:<28} {:>12} {:<10} {}\n",
            if g.passed { "ok  " } else { "FAIL" },
            g.gate,
            g.measured.map_or("-".into(), |m| format!("{m:.4}")),
            bound,
            g.detail
        );
    }
    s.trim_end().to_string()
}

fn drift_text(o: &falaj::drift::DriftOutcome) -> String {
    use falaj::drift::DriftOutcome as O;
    let table = |r: &falaj_core::drift::DriftReport| {
        let mut s = format!(
            "{} v{}: {} rows in {} windows (rule: PSI > {}{})\n",
            r.model,
            r.version,
            r.rows,
            r.windows,
            r.rule.psi,
            r.rule.ks.map_or(String::new(), |k| format!(" or KS > {k}"))
        );
        for f in &r.features {
            s.push_str(&format!(
                "  {} {:<24} PSI {:>7.4}  KS {:>6.4}  mean {:>10.4} (training {:.4})\n",
                if f.drifted { "DRIFT" } else { "ok   " },
                f.feature,
                f.psi,
                f.ks,
                f.observed_mean.unwrap_or(f64::NAN),
                f.training_mean
            ));
        }
        s
    };
    match o {
        O::NoData { reason } => format!("no verdict: {reason}"),
        O::Stable { report } => format!(
            "{}{}",
            table(report),
            if report.enough_rows {
                "stable: no retraining needed"
            } else {
                "too few rows to decide"
            }
        ),
        O::RetrainRequested { key, request } => format!(
            "{}drift in {}: retraining requested at {key}",
            table(&request.report),
            request.drifted.join(", ")
        ),
        O::AlreadyRequested { key } => {
            format!("drift; the retraining request {key} already exists")
        }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        RegistryError::from(e).into()
    }
}

fn fail(code: &'static str, exit: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        exit,
        message: message.into(),
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("output serialises")
            );
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

fn identity(cli: &Cli) -> String {
    cli.identity
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local-user".into())
}

fn version_line(v: &ModelVersion) -> String {
    format!(
        "{:>4}  {:<10} {}  {:>10}  {:<16} {}",
        v.version,
        v.semver,
        &v.digest_hex()[..12.min(v.digest_hex().len())],
        human_size(v.size),
        v.author,
        v.created_at
    )
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn show_version(v: &ModelVersion, tags: &BTreeMap<String, String>) -> String {
    let mut s = format!(
        "{}@{} (semver {})\n  digest    {}\n  size      {} ({} bytes)\n  format    {} opset {} (IR {}), produced by {}\n  author    {}\n  created   {}\n  region    {}\n",
        v.model,
        v.version,
        v.semver,
        v.digest,
        human_size(v.size),
        v.size,
        v.format.kind,
        v.format.opset,
        v.format.ir_version,
        v.format.producer,
        v.author,
        v.created_at,
        v.region
    );
    for (dir, specs) in [
        ("input ", &v.signature.inputs),
        ("output", &v.signature.outputs),
    ] {
        for t in specs {
            s += &format!(
                "  {dir}    {}: {}[{}]\n",
                t.name,
                t.dtype,
                t.shape.join(", ")
            );
        }
    }
    for d in &v.lineage.datasets {
        s += &format!("  dataset   {} ({})\n", d.uri, d.digest);
    }
    if let Some(c) = &v.lineage.code_commit {
        s += &format!("  commit    {c}\n");
    }
    if let Some(p) = v.lineage.parent_version {
        s += &format!("  parent    {}@{p}\n", v.model);
    }
    for (k, m) in &v.metrics {
        s += &format!("  metric    {k} = {m}\n");
    }
    for (k, t) in tags {
        s += &format!("  tag       {k}={t}\n");
    }
    if let Some(src) = &v.source {
        s += &format!("  source    {src}\n");
    }
    s.trim_end().to_string()
}

fn deployment_line(
    d: &falaj_core::deployment::DeploymentManifest,
    repaired: Option<&str>,
) -> String {
    let mut s = repaired.map_or(String::new(), |r| format!("repaired first: {r}\n"));
    s += &format!(
        "{}/{} generation {}: champion {}{}",
        d.env,
        d.model,
        d.generation,
        d.champion.version,
        d.challenger.as_ref().map_or(String::new(), |c| format!(
            ", challenger {} at {}%",
            c.version, d.challenger_weight
        ))
    );
    s
}

fn parse_ref(s: &str) -> Result<ModelRef, Failure> {
    s.parse::<ModelRef>().map_err(|e| {
        fail(
            "invalid_name",
            2,
            format!("{e} (expected MODEL@N, MODEL@ALIAS or MODEL)"),
        )
    })
}

async fn registry(cli: &Cli, create: bool) -> Result<Registry, Failure> {
    let opts = OpenOptions {
        allowed: AllowedRegions::parse(&cli.allowed_regions),
        create,
        endpoint: None,
    };
    Ok(Registry::new(store::open(&cli.store, &opts).await?))
}

fn progress_bar(
    file: &std::path::Path,
    enabled: bool,
) -> (store::Progress, Option<indicatif::ProgressBar>) {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    // Only large uploads on a terminal get a bar; scripts and small files stay quiet.
    if !enabled || size < 16 * 1024 * 1024 || !std::io::stderr().is_terminal() {
        return (store::no_progress(), None);
    }
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let b = bar.clone();
    (Arc::new(move |n| b.set_position(n)), Some(bar))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out { json: cli.json };
    let me = identity(&cli);
    match &cli.command {
        Command::Model(ModelCmd::Create(a)) => {
            let reg = registry(&cli, true).await?;
            let rec = reg
                .create_model(
                    NewModel {
                        name: a.name.clone(),
                        description: a.description.clone(),
                        owner: a.owner.clone(),
                        tags: a.tags.iter().cloned().collect(),
                    },
                    &me,
                )
                .await?;
            out.print(&rec, || {
                format!("created model {} in {}", rec.name, cli.store)
            });
        }
        Command::Model(ModelCmd::Show { name }) => {
            let reg = registry(&cli, false).await?;
            let rec = reg.model(name).await?;
            let latest = reg.latest_version(name).await?;
            let aliases = reg.aliases(name).await?;
            let view =
                serde_json::json!({"model": rec, "latest_version": latest, "aliases": aliases});
            out.print(&view, || {
                let mut s = format!(
                    "{}\n  description  {}\n  owner        {}\n  created      {} by {}\n  versions     {}\n",
                    rec.name, rec.description, rec.owner, rec.created_at, rec.created_by, latest
                );
                for a in &aliases {
                    s += &format!("  alias        {} -> {}\n", a.alias, a.version.unwrap_or(0));
                }
                for (k, v) in &rec.tags {
                    s += &format!("  tag          {k}={v}\n");
                }
                s.trim_end().into()
            });
        }
        Command::Model(ModelCmd::List) => {
            let reg = registry(&cli, false).await?;
            let models = reg.models().await?;
            out.print(&models, || {
                if models.is_empty() {
                    return "no models yet; create one with `falaj model create NAME`".into();
                }
                models
                    .iter()
                    .map(|m| format!("{:<24} {:<16} {}", m.name, m.owner, m.description))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Push {
            model,
            file,
            manifest,
            semver,
            create,
        } => {
            let reg = registry(&cli, true).await?;
            if *create
                && matches!(
                    reg.model(model).await,
                    Err(RegistryError::ModelNotFound { .. })
                )
            {
                reg.create_model(
                    NewModel {
                        name: model.clone(),
                        ..Default::default()
                    },
                    &me,
                )
                .await?;
            }
            let manifest = match manifest {
                Some(p) => Some((
                    p.display().to_string(),
                    bytes::Bytes::from(std::fs::read(p).map_err(|e| {
                        fail(
                            "invalid_manifest",
                            1,
                            format!("cannot read manifest {}: {e}", p.display()),
                        )
                    })?),
                )),
                None => None,
            };
            if !file.is_file() {
                return Err(fail(
                    "invalid_artifact",
                    1,
                    format!("{} is not a file", file.display()),
                ));
            }
            let (progress, bar) = progress_bar(file, !cli.json);
            let started = std::time::Instant::now();
            let r = reg
                .register(
                    Registration {
                        model: model.clone(),
                        artifact: Artifact::File(file.clone()),
                        artifact_name: file.display().to_string(),
                        manifest,
                        semver: semver.clone(),
                        author: me.clone(),
                        source: Some(file.display().to_string()),
                    },
                    progress,
                )
                .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let r = r?;
            out.print(&r, || {
                format!(
                    "registered {}@{} ({}, {}{}) in {:.2}s",
                    r.version.model,
                    r.version.version,
                    r.version.digest,
                    human_size(r.version.size),
                    if r.blob_created {
                        ""
                    } else {
                        ", artifact already stored"
                    },
                    started.elapsed().as_secs_f64()
                )
            });
        }
        Command::Versions {
            model,
            tags,
            author,
        } => {
            let reg = registry(&cli, false).await?;
            let vs = reg
                .versions(
                    model,
                    &VersionFilter {
                        tags: tags.clone(),
                        author: author.clone(),
                    },
                )
                .await?;
            out.print(&vs, || {
                if vs.is_empty() {
                    return format!(
                        "no versions match; register one with `falaj push {model} model.onnx`"
                    );
                }
                let mut s = format!(
                    "{:>4}  {:<10} {:<12}  {:>10}  {:<16} {}\n",
                    "N", "SEMVER", "DIGEST", "SIZE", "AUTHOR", "CREATED"
                );
                s += &vs.iter().map(version_line).collect::<Vec<_>>().join("\n");
                s
            });
        }
        Command::Show { reference } => {
            let r = parse_ref(reference)?;
            let reg = registry(&cli, false).await?;
            let v = reg.resolve(&r).await?;
            let tags = reg.version_tags(&v.model, v.version).await?;
            let report = falaj::reports::latest_report(&reg, &v.model, v.version).await?;
            let state = falaj::promotion::version_state(&reg, &v.model, v.version).await?;
            let view = serde_json::json!({"version": v, "tags": tags, "state": state, "gate_report": report});
            out.print(&view, || {
                let mut s = show_version(&v, &tags);
                s += &format!("\n  state     {state}");
                if let Some(r) = &report {
                    s += &format!("\n{}", report_text(r));
                }
                s
            });
        }
        Command::Alias(AliasCmd::Set {
            model,
            alias,
            version,
            expect,
        }) => {
            let expect = match expect.as_deref() {
                None => Expect::Any,
                Some("none") => Expect::Absent,
                Some(n) => Expect::Version(n.parse().map_err(|_| {
                    fail(
                        "invalid_name",
                        2,
                        format!("--expect takes a version number or 'none', got {n:?}"),
                    )
                })?),
            };
            let reg = registry(&cli, false).await?;
            let rec = reg
                .move_alias(model, alias, Some(*version), expect, &me)
                .await?;
            out.print(&rec, || {
                format!(
                    "{model}@{alias} -> {version} (was {}, generation {})",
                    rec.previous.map_or("unset".into(), |p| p.to_string()),
                    rec.generation
                )
            });
        }
        Command::Alias(AliasCmd::Rm {
            model,
            alias,
            expect,
        }) => {
            let reg = registry(&cli, false).await?;
            let rec = reg
                .move_alias(
                    model,
                    alias,
                    None,
                    expect.map_or(Expect::Any, Expect::Version),
                    &me,
                )
                .await?;
            out.print(&rec, || {
                format!(
                    "removed {model}@{alias} (was {})",
                    rec.previous.unwrap_or(0)
                )
            });
        }
        Command::Alias(AliasCmd::List { model }) => {
            let reg = registry(&cli, false).await?;
            let aliases = reg.aliases(model).await?;
            out.print(&aliases, || {
                aliases
                    .iter()
                    .map(|a| {
                        format!(
                            "{:<16} -> {:<4} (generation {}, moved by {} at {})",
                            a.alias,
                            a.version.unwrap_or(0),
                            a.generation,
                            a.moved_by,
                            a.moved_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Tag {
            reference,
            set,
            remove,
        } => {
            if set.is_empty() && remove.is_empty() {
                return Err(fail(
                    "invalid_name",
                    2,
                    "nothing to do: give KEY=VALUE pairs and/or --rm KEY",
                ));
            }
            let r = parse_ref(reference)?;
            let reg = registry(&cli, false).await?;
            let tags = match r.version {
                falaj_core::version::VersionRef::Latest if !reference.contains('@') => {
                    reg.tag_model(&r.model, set, remove, &me).await?.tags
                }
                _ => {
                    let v = reg.resolve(&r).await?;
                    reg.tag_version(&v.model, v.version, set, remove, &me)
                        .await?
                }
            };
            out.print(&tags, || {
                tags.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Audit { model, verify } => {
            let reg = registry(&cli, false).await?;
            reg.model(model).await?;
            if *verify {
                let (problems, rolled) = reg.verify_audit_settled(model).await?;
                let n = reg.audit_events(model).await?.len();
                let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
                out.print(&serde_json::json!({"model": model, "events": n, "ok": problems.is_empty(), "problems": msgs, "rolled_forward": rolled}), || {
                    let mut text = rolled
                        .iter()
                        .map(|k| format!("rolled forward {k}: its audit event was written but the object was not (a writer stopped between the two)\n"))
                        .collect::<String>();
                    if problems.is_empty() {
                        text += &format!("audit chain of {model} intact: {n} events, every alias, approval, archive marker and deployment explained");
                    } else {
                        text += &format!("audit chain of {model} is BROKEN:\n  {}", msgs.join("\n  "));
                    }
                    text
                });
                if !problems.is_empty() {
                    return Err(fail(
                        "audit_broken",
                        5,
                        format!(
                            "{} problem(s) in the audit chain of {model}",
                            problems.len()
                        ),
                    ));
                }
            } else {
                let events: Vec<_> = reg
                    .audit_events(model)
                    .await?
                    .into_iter()
                    .map(|(_, _, e)| e)
                    .collect();
                out.print(&events, || {
                    events
                        .iter()
                        .map(|e| {
                            format!(
                                "{:>5}  {}  {:<16} {:<20} {}  {}",
                                e.seq, e.at, e.actor, e.action, e.subject, e.details
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        }
        Command::Validate {
            reference,
            data,
            policy,
        } => {
            let r = parse_ref(reference)?;
            let reg = registry(&cli, false).await?;
            let v = reg.resolve(&r).await?;
            let policy = match policy {
                Some(p) => Some((
                    p.display().to_string(),
                    std::fs::read_to_string(p).map_err(|e| {
                        fail(
                            "invalid_policy",
                            1,
                            format!("cannot read policy {}: {e}", p.display()),
                        )
                    })?,
                )),
                None => None,
            };
            let report = falaj_gates::validate(
                &reg,
                falaj::reports::Validation {
                    model: v.model.clone(),
                    version: v.version,
                    holdout: falaj::reports::Holdout::parse(data)?,
                    policy,
                    actor: me.clone(),
                },
            )
            .await?;
            out.print(&report, || report_text(&report));
            if !report.passed {
                return Err(fail(
                    "gates_failed",
                    6,
                    format!(
                        "{}@{} is rejected: {} gate(s) failed{}",
                        report.model,
                        report.version,
                        report.failures().len(),
                        report
                            .error
                            .as_ref()
                            .map_or(String::new(), |e| format!(" ({e})"))
                    ),
                ));
            }
        }
        Command::Approve {
            reference,
            to,
            comment,
        } => {
            let r = parse_ref(reference)?;
            let n = numbered(&r)?;
            let reg = registry(&cli, false).await?;
            let a = falaj::promotion::approve(&reg, &r.model, n, parse_stage(to)?, comment, &me)
                .await?;
            out.print(&a, || {
                format!(
                    "{} approved {}@{} for {}",
                    a.by, a.model, a.version, a.stage
                )
            });
        }
        Command::Promote {
            reference,
            to,
            canary,
            blue_green,
            expect,
        } => {
            let r = parse_ref(reference)?;
            let n = numbered(&r)?;
            let expect = match expect.as_deref() {
                None => Expect::Any,
                Some("none") => Expect::Absent,
                Some(x) => Expect::Version(x.parse().map_err(|_| {
                    fail(
                        "invalid_name",
                        2,
                        format!("--expect takes a version number or 'none', got {x:?}"),
                    )
                })?),
            };
            let reg = registry(&cli, false).await?;
            let key = signing_key()?;
            let p = falaj::promotion::promote(
                &reg,
                &key,
                falaj::promotion::Promotion {
                    model: r.model.clone(),
                    version: n,
                    to: parse_stage(to)?,
                    canary: *canary,
                    blue_green: *blue_green,
                    expect,
                    actor: me.clone(),
                },
            )
            .await?;
            out.print(&p, || {
                let d = &p.deployment;
                let mut s = String::new();
                if let Some(r) = &p.repaired {
                    s += &format!("repaired first: {r}\n");
                }
                s += &format!(
                    "{}@{} -> {}@{}; deployment {}/{} generation {}: champion {}{}",
                    r.model,
                    p.alias.alias,
                    r.model,
                    n,
                    d.env,
                    d.model,
                    d.generation,
                    d.champion.version,
                    d.challenger.as_ref().map_or(String::new(), |c| format!(
                        ", challenger {} at {}%",
                        c.version, d.challenger_weight
                    ))
                );
                s
            });
        }
        Command::Rollout { model, env, weight } => {
            let reg = registry(&cli, false).await?;
            let key = signing_key()?;
            let c = falaj::deploy::rollout(&reg, &key, model, env, *weight, &me).await?;
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Rollback { model, env } => {
            let reg = registry(&cli, false).await?;
            let key = signing_key()?;
            let c = falaj::deploy::rollback(&reg, &key, model, env, &me).await?;
            out.print(&c, || deployment_line(&c.deployment, c.repaired.as_deref()));
        }
        Command::Serve {
            listen,
            webhook_config,
            poll_ms,
            once,
            trainer,
            retrain_dir,
            no_retrain,
        } => {
            let reg = std::sync::Arc::new(registry(&cli, true).await?);
            let key = signing_key()?;
            let promoter: std::sync::Arc<dyn falaj_webhook::Promoter> =
                std::sync::Arc::new(falaj_webhook::LocalPromoter::new(reg.clone(), key));
            let json = out.json;
            let report = move |ev: &falaj_cli::serve::WatchEvent| {
                if json {
                    println!("{}", serde_json::to_string(ev).unwrap_or_default());
                } else {
                    println!("{}", ev.line());
                }
            };
            let mut watcher = falaj_cli::serve::Watcher::new(reg.clone(), promoter.clone());
            let retrainer = (!*no_retrain).then(|| {
                let mut cfg = falaj_cli::retrain::RetrainConfig::beside_current_exe();
                if let Some(t) = trainer {
                    cfg.trainer = t.clone();
                }
                cfg.work_dir = retrain_dir.clone();
                falaj_cli::retrain::Retrainer::new(reg.clone(), cfg)
            });
            let retrain_report = move |ev: &falaj_cli::retrain::RetrainEvent| {
                report(&falaj_cli::serve::WatchEvent::Retrain { event: ev.clone() })
            };
            if *once {
                for ev in watcher.poll_once().await? {
                    report(&ev);
                }
                if let Some(mut r) = retrainer {
                    let trained = r.poll_once(&retrain_report).await?;
                    // A retrain uploaded to incoming/: register and validate it too.
                    if trained
                        .iter()
                        .any(|e| matches!(e, falaj_cli::retrain::RetrainEvent::Trained { .. }))
                    {
                        for ev in watcher.poll_once().await? {
                            report(&ev);
                        }
                    }
                }
                return Ok(());
            }
            let auth = match webhook_config {
                Some(p) => falaj_webhook::WebhookAuth::load(p)
                    .map_err(|e| fail("invalid_config", 2, e.to_string()))?,
                None => {
                    eprintln!(
                        "falaj serve: no --webhook-config: every route but /v1/health answers 401 (see docs/webhook.md)"
                    );
                    falaj_webhook::WebhookAuth::default()
                }
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| fail("io_error", 1, format!("cannot listen on {listen}: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| fail("io_error", 1, e.to_string()))?;
            let hook = std::sync::Arc::new(
                falaj_webhook::Webhook::new(reg.clone(), promoter, auth)
                    .with_validator(std::sync::Arc::new(falaj_gates::LocalValidator)),
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({"listening": format!("http://{addr}"), "store": cli.store})
                );
            } else {
                println!(
                    "falaj serve: webhook on http://{addr}, watching {}/incoming/",
                    cli.store
                );
            }
            let limits =
                falaj_runtime::httpd::Limits::from_env().map_err(|e| fail("usage", 2, e))?;
            tokio::spawn(falaj_cli::serve::serve_http(listener, hook, limits));
            let every = std::time::Duration::from_millis(*poll_ms);
            if let Some(r) = retrainer {
                tokio::spawn(falaj_cli::retrain::watch(r, every, retrain_report));
            }
            // Expired idempotency claims go (dir://; S3 has its lifecycle rule), every 10 min.
            let sweeper = reg.clone();
            tokio::spawn(async move {
                let every = std::time::Duration::from_secs(600);
                loop {
                    match falaj::ingest::expire_claims(&sweeper, every).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "idempotency claims expired"),
                        Err(e) => tracing::warn!(error = %e, "expiring idempotency claims failed"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
            falaj_cli::serve::watch(watcher, every, report).await;
        }
        Command::Demo {
            clean,
            epochs,
            model,
            work_dir,
            trainer,
            edge,
            component,
            code_cache,
            shifted_rows,
            shift,
        } => {
            if *epochs == 0 {
                return Err(fail("usage", 2, "--epochs must be at least 1"));
            }
            if !(shift.is_finite() && *shift > 0.0) {
                return Err(fail(
                    "usage",
                    2,
                    format!("--shift must be a positive factor, not {shift}"),
                ));
            }
            if *clean {
                let Some(dir) = cli.store.strip_prefix("dir://") else {
                    return Err(fail(
                        "usage",
                        2,
                        format!(
                            "--clean removes a dir:// store only; {} is not one",
                            cli.store
                        ),
                    ));
                };
                for d in [std::path::Path::new(dir), work_dir.as_path()] {
                    match std::fs::remove_dir_all(d) {
                        Ok(()) => eprintln!("cleaned {}", d.display()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(fail(
                                "io_error",
                                1,
                                format!("cannot remove {}: {e}", d.display()),
                            ));
                        }
                    }
                }
            }
            let reg = std::sync::Arc::new(registry(&cli, true).await?);
            let key = signing_key()?;
            let cfg = falaj_cli::demo::DemoConfig {
                model: model.clone(),
                epochs: *epochs,
                work_dir: work_dir.clone(),
                trainer: trainer
                    .clone()
                    .unwrap_or_else(|| falaj_cli::retrain::sibling_binary("falaj-train")),
                edge: edge
                    .clone()
                    .unwrap_or_else(|| falaj_cli::retrain::sibling_binary("falaj-edge")),
                component: component.clone(),
                code_cache: code_cache.clone(),
                shifted_rows: *shifted_rows,
                shift: *shift,
                json: out.json,
            };
            let summary = falaj_cli::demo::run(reg, key, cfg)
                .await
                .map_err(|e| fail("demo_failed", 1, e.to_string()))?;
            out.print(&summary, || falaj_cli::demo::summary_text(&summary));
        }
        Command::Deployments { repair } => {
            let reg = registry(&cli, false).await?;
            if *repair {
                let key = signing_key()?;
                for st in falaj::deploy::list(&reg).await? {
                    if st.divergence.is_some() {
                        falaj::deploy::repair_as_admin(&reg, &key, &st.model, &st.env, &me).await?;
                    }
                }
            }
            let all = falaj::deploy::list(&reg).await?;
            out.print(&all, || {
                if all.is_empty() {
                    return "no deployments yet; promote a version with `falaj promote MODEL@N --to production`".into();
                }
                all.iter()
                    .map(|st| {
                        let m = st.manifest.as_ref();
                        format!(
                            "{:<8} {:<20} gen {:<4} champion {:<4} challenger {:<8} {}",
                            st.env,
                            st.model,
                            m.map_or(0, |m| m.generation),
                            m.map_or("-".into(), |m| m.champion.version.to_string()),
                            m.and_then(|m| m.challenger.as_ref().map(|c| format!("{}@{}%", c.version, m.challenger_weight)))
                                .unwrap_or_else(|| "-".into()),
                            st.divergence
                                .as_ref()
                                .map_or("ok".to_string(), |d| format!("DIVERGED: {d} (run `falaj deployments --repair`)"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            if all.iter().any(|s| s.divergence.is_some()) {
                return Err(fail(
                    "diverged",
                    1,
                    "a deployment differs from its aliases; run `falaj deployments --repair`",
                ));
            }
        }
        Command::Drift {
            model,
            env,
            psi,
            ks,
            min_rows,
        } => {
            if psi.is_nan() || *psi <= 0.0 {
                return Err(fail(
                    "usage",
                    2,
                    format!("--psi must be positive, not {psi}"),
                ));
            }
            let reg = registry(&cli, false).await?;
            let rule = falaj_core::drift::DriftRule {
                psi: *psi,
                ks: *ks,
                min_rows: *min_rows,
            };
            let outcome =
                falaj::drift::check(&reg, env, model, rule)
                    .await
                    .map_err(|e| match e {
                        falaj::drift::DriftCheckError::Registry(r) => Failure::from(r),
                        falaj::drift::DriftCheckError::Deployment(p) => Failure::from(p),
                        other => fail("drift", 1, other.to_string()),
                    })?;
            out.print(&outcome, || drift_text(&outcome));
        }
        Command::Policy(PolicyCmd::Set { model, file }) => {
            let src = std::fs::read_to_string(file).map_err(|e| {
                fail(
                    "invalid_policy",
                    1,
                    format!("cannot read policy {}: {e}", file.display()),
                )
            })?;
            let reg = registry(&cli, false).await?;
            let p =
                falaj::promotion::set_policy(&reg, model, &file.display().to_string(), &src, &me)
                    .await?;
            out.print(&p, || format!("attached {} to {model}", file.display()));
        }
        Command::Policy(PolicyCmd::Show { model }) => {
            let reg = registry(&cli, false).await?;
            let rec = reg.model(model).await?;
            let src = rec.gate_policy.unwrap_or_default();
            out.print(&serde_json::json!({"model": model, "policy": src}), || {
                if src.is_empty() {
                    format!("{model} has no gate policy; attach one with `falaj policy set {model} gates.toml`")
                } else {
                    src.trim_end().to_string()
                }
            });
        }
        Command::Roles(RolesCmd::Grant { who, role }) => {
            let role = falaj_core::promotion::Role::parse(role).ok_or_else(|| {
                fail("invalid_name", 2, format!("unknown role {role:?}: use viewer, data-scientist, ml-engineer, approver or admin"))
            })?;
            let reg = registry(&cli, true).await?;
            let b = falaj::promotion::grant(&reg, &me, who, role).await?;
            out.print(&b, || format!("granted {role} to {who}"));
        }
        Command::Roles(RolesCmd::List) => {
            let reg = registry(&cli, false).await?;
            let b = falaj::promotion::roles(&reg).await?;
            out.print(&b, || {
                b.bindings
                    .iter()
                    .map(|(w, rs)| {
                        format!(
                            "{w:<24} {}",
                            rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Residency(ResidencyCmd::Check { dir }) => {
            let allowed = AllowedRegions::parse(&cli.allowed_regions);
            let report = falaj_residency::check_dir(dir, &allowed)
                .map_err(|e| fail("invalid_terraform", 1, e.to_string()))?;
            out.print(&report, || {
                let mut s: Vec<String> = report
                    .violations
                    .iter()
                    .map(|v| {
                        format!(
                            "{}:{}: [{}] {}",
                            dir.join(&v.file).display(),
                            v.line,
                            v.rule,
                            v.message
                        )
                    })
                    .collect();
                s.push(format!(
                    "{} file(s) checked, {} violation(s)",
                    report.files_checked,
                    report.violations.len()
                ));
                s.join("\n")
            });
            if !report.violations.is_empty() {
                return Err(fail(
                    "residency_violation",
                    1,
                    format!(
                        "{} residency violation(s) in {}",
                        report.violations.len(),
                        dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // `falaj __falaj-gates-worker`: measure one model under the gates' limits, then exit.
    falaj_gates::sandbox::serve_worker_if_asked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FALAJ_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = cli.json;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"error": {"code": f.code, "message": f.message}})
                );
            } else {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.exit)
        }
    }
}
