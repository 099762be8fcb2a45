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

Stores:
  dir://PATH        a local directory (the default: dir://.falaj)
  s3://BUCKET[/P]   Amazon S3, or an S3-compatible server with FALAJ_S3_ENDPOINT=http://host:port
                    The bucket must be in an allowed region (FALAJ_ALLOWED_REGIONS, default me-central-1).

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (someone else changed it first), 4 not found,
            5 audit chain broken.";

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
    /// Show a model's audit log; --verify checks its hash chain.
    Audit {
        /// Model name.
        model: String,
        /// Check that no event was edited, removed or reordered (exit 5 if one was).
        #[arg(long)]
        verify: bool,
    },
    /// Residency checks.
    #[command(subcommand)]
    Residency(ResidencyCmd),
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
        let exit = match e.code() {
            "conflict" => 3,
            "not_found" => 4,
            _ => 1,
        };
        Self {
            code: e.code(),
            exit,
            message: e.to_string(),
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
            let view = serde_json::json!({"version": v, "tags": tags});
            out.print(&view, || show_version(&v, &tags));
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
                let problems = reg.verify_audit(model).await?;
                let n = reg.audit_events(model).await?.len();
                let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
                out.print(&serde_json::json!({"model": model, "events": n, "ok": problems.is_empty(), "problems": msgs}), || {
                    if problems.is_empty() {
                        format!("audit chain of {model} intact: {n} events")
                    } else {
                        format!("audit chain of {model} is BROKEN:\n  {}", msgs.join("\n  "))
                    }
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
        Command::Residency(ResidencyCmd::Check { dir }) => {
            let allowed = AllowedRegions::parse(&cli.allowed_regions);
            let report = falaj::terraform::check_dir(dir, &allowed)
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
