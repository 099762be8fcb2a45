//! `falaj demo`: the whole loop on one machine, each step printed as it happens.
//!
//! The demo is a user of falaj like any other: it uploads a dataset, runs `falaj-train`
//! (which uploads `model.onnx` + `manifest.json` to `incoming/`), and lets the serverless flow
//! of `falaj serve` — the ingest and validate handlers, staging per policy, and the retrainer —
//! run in this process. It approves as two approvers, promotes (a canary when a production
//! version exists), starts `falaj-edge`, which pulls, verifies and serves the signed
//! deployment from the WASM component, sends predictions and then shifted traffic over HTTP,
//! runs the drift check on the sketches the edge wrote, and waits while the retraining request
//! it writes is trained, registered and gated. Every outcome is left in the store, where
//! `scripts/check-demo.py` (CI) checks it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj_core::StoreKey;
use falaj_core::drift::DriftRule;
use falaj_core::layout;
use falaj_core::promotion::{Role, Stage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::retrain::{RetrainConfig, RetrainEvent, Retrainer};
use crate::serve::{WatchEvent, Watcher};
use falaj::deploy::DeployKey;
use falaj::drift::{self, DriftOutcome};
use falaj::ingest::Outcome;
use falaj::pipeline::ValidateOutcome;
use falaj::registry::{NewModel, Registry};
use falaj::store::Precondition;
use falaj_webhook::{LocalPromoter, Promoter};

/// The dataset the demo trains on when no other is given: the Wisconsin diagnostic breast
/// cancer data (569 rows, 30 features, `diagnosis` 0 = malignant / 1 = benign), as bundled
/// with scikit-learn.
pub const BREAST_CANCER_CSV: &str =
    include_str!("../../../tests/fixtures/datasets/breast_cancer.csv");
const POLICY: &str = include_str!("../demo/breast_cancer.toml");
const TARGET: &str = "diagnosis";
/// Features the shifted traffic scales (a recalibrated scanner measures sizes larger).
const SIZE_FEATURES: [&str; 3] = ["radius", "perimeter", "area"];

/// What the demo runs and where.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Model name.
    pub model: String,
    /// Training epochs (the retrain repeats them).
    pub epochs: usize,
    /// Where run outputs, logs and the edge cache go.
    pub work_dir: PathBuf,
    /// `falaj-train`.
    pub trainer: PathBuf,
    /// `falaj-edge`.
    pub edge: PathBuf,
    /// The inference component (`scripts/wasm-component.sh`).
    pub component: PathBuf,
    /// Where falaj-edge keeps compiled components (shared across runs).
    pub code_cache: Option<PathBuf>,
    /// Rows of shifted traffic.
    pub shifted_rows: usize,
    /// Factor applied to the size features of the shifted traffic.
    pub shift: f64,
    /// Print JSON lines instead of text.
    pub json: bool,
}

/// What the demo left behind, for the closing summary and `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoSummary {
    /// Model.
    pub model: String,
    /// Store URI.
    pub store: String,
    /// Version trained first.
    pub trained: u64,
    /// Version the retrain produced.
    pub retrained: u64,
    /// Every version: number, gate result, aliases.
    pub versions: Vec<Value>,
    /// The retraining request.
    pub retrain_request: String,
    /// Audit events of the model; the chain verified.
    pub audit_events: usize,
    /// Seconds the whole demo took.
    pub seconds: f64,
    /// Files to look at.
    pub files: Value,
}

/// A failed step.
#[derive(Debug, thiserror::Error)]
#[error("demo step '{step}' failed: {message}")]
pub struct DemoError {
    /// The step.
    pub step: String,
    /// What went wrong and where to look.
    pub message: String,
}

struct Run {
    reg: Arc<Registry>,
    cfg: DemoConfig,
    key: DeployKey,
    t0: Instant,
    step: String,
    events: mpsc::UnboundedReceiver<WatchEvent>,
}

type R<T> = Result<T, DemoError>;

/// Prints a detail line of `step`.
fn detail(json: bool, step: &str, text: &str) {
    if json {
        println!("{}", json!({"step": step, "detail": text}));
    } else {
        println!("  {text}");
    }
}

impl Run {
    fn say(&mut self, step: &str) {
        self.step = step.to_string();
        let t = self.t0.elapsed().as_secs_f64();
        if self.cfg.json {
            println!(
                "{}",
                json!({"t_s": (t * 10.0).round() / 10.0, "step": step})
            );
        } else {
            println!("\n[{t:6.1}s] {step}");
        }
    }

    fn info(&self, text: &str) {
        detail(self.cfg.json, &self.step, text);
    }

    fn fail<T>(&self, message: impl Into<String>) -> R<T> {
        Err(DemoError {
            step: self.step.clone(),
            message: message.into(),
        })
    }

    fn or_fail<T, E: std::fmt::Display>(&self, r: Result<T, E>) -> R<T> {
        r.map_err(|e| DemoError {
            step: self.step.clone(),
            message: e.to_string(),
        })
    }

    /// Waits for the serverless flow to report an event `pick` accepts.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&WatchEvent) -> Option<R<T>>,
    ) -> R<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(r) = pick(&ev) {
                        return r;
                    }
                }
                Ok(None) => return self.fail(format!("the serverless flow stopped before {what}")),
                Err(_) => {
                    return self.fail(format!(
                        "no {what} within {} s (see the lines above)",
                        limit.as_secs()
                    ));
                }
            }
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> R<()> {
        let k = self.or_fail(StoreKey::new(key))?;
        self.or_fail(
            self.reg
                .store()
                .put(&k, Bytes::from(bytes), Precondition::None)
                .await,
        )?;
        Ok(())
    }
}

/// Runs the demo against `reg` (opened by the caller, created if new), signing with `key`.
pub async fn run(reg: Arc<Registry>, key: DeployKey, cfg: DemoConfig) -> R<DemoSummary> {
    let (tx, events) = mpsc::unbounded_channel();
    let mut r = Run {
        reg: reg.clone(),
        cfg: cfg.clone(),
        key: key.clone(),
        t0: Instant::now(),
        step: "start".into(),
        events,
    };
    let model = cfg.model.clone();
    let store_uri = reg.store().uri().to_string();

    r.step = "check what the demo runs".into();
    // Fail before any step rather than half-way: the three programs the demo starts.
    for (what, path, how) in [
        (
            "falaj-train",
            &cfg.trainer,
            "cargo build --workspace --bins, or pass --trainer",
        ),
        (
            "falaj-edge",
            &cfg.edge,
            "cargo build --workspace --bins, or pass --edge",
        ),
        (
            "the inference component",
            &cfg.component,
            "scripts/wasm-component.sh, or pass --component",
        ),
    ] {
        // A bare name is looked up on PATH when it is started.
        if path.components().count() > 1 && !path.is_file() {
            return r.fail(format!(
                "{what} is not at {}: build it with {how}",
                path.display()
            ));
        }
    }

    r.say("roles: platform (admin), dana (data-scientist: she trains, and her uploads register as hers), mel (ml-engineer), ann and bob (approvers), falaj-ingest (data-scientist: uploads that name no author may register)");
    for (who, role) in [
        ("platform", Role::Admin),
        ("dana", Role::DataScientist),
        ("mel", Role::MlEngineer),
        ("ann", Role::Approver),
        ("bob", Role::Approver),
        (falaj::ingest::INGEST_ACTOR, Role::DataScientist),
    ] {
        r.or_fail(falaj::promotion::grant(&reg, "platform", who, role).await)
            .map_err(|e| DemoError {
                message: format!(
                    "{} (the demo grants roles as 'platform', the store's first admin; use a fresh store with --clean)",
                    e.message
                ),
                ..e
            })?;
    }

    r.say(&format!(
        "model {model} in {store_uri}, with its gate policy"
    ));
    match reg.model(&model).await {
        Ok(_) => r.info(&format!("{model} exists: this run adds new versions")),
        Err(falaj::RegistryError::ModelNotFound { .. }) => {
            r.or_fail(
                reg.create_model(
                    NewModel {
                        name: model.clone(),
                        description: "Wisconsin breast cancer classifier (the demo)".into(),
                        owner: "demo".into(),
                        tags: Default::default(),
                    },
                    "dana",
                )
                .await,
            )?;
            r.info(&format!("created {model}"));
        }
        Err(e) => return r.fail(e.to_string()),
    }
    let holdout_key = layout::datasets_prefix(&model) + "holdout.csv";
    let policy = POLICY.replace("HOLDOUT_KEY", &holdout_key);
    r.or_fail(
        falaj::promotion::set_policy(&reg, &model, "falaj demo policy", &policy, "mel").await,
    )?;
    r.info("gates: accuracy ≥ 0.90, recall ≥ 0.85, f1 ≥ 0.85, roc_auc ≥ 0.95, robustness, p99 ≤ 50 ms, size ≤ 1 MB, edge ops, residency, no regression; 2 approvals; auto staging");

    r.say("dataset upload: every 5th row is the holdout the gates score, the rest trains");
    let (train_csv, holdout_csv) = split(BREAST_CANCER_CSV);
    let train_key = layout::datasets_prefix(&model) + "train.csv";
    r.put(&train_key, train_csv.clone().into_bytes()).await?;
    r.put(&holdout_key, holdout_csv.clone().into_bytes())
        .await?;
    r.info(&format!(
        "{train_key}: {} rows; {holdout_key}: {} rows",
        train_csv.lines().count() - 1,
        holdout_csv.lines().count() - 1
    ));

    r.say("the serverless flow starts in this process: incoming/ watcher (ingest → validate → staging) and retrainer");
    let promoter: Arc<dyn Promoter> = Arc::new(LocalPromoter::new(reg.clone(), key.clone()));
    let json_out = cfg.json;
    let report = move |ev: &WatchEvent| {
        if json_out {
            println!("{}", serde_json::to_string(ev).unwrap_or_default());
        } else {
            println!("  | {}", ev.line());
        }
        let _ = tx.send(ev.clone());
    };
    let report = Arc::new(report);
    let watcher = Watcher::new(reg.clone(), promoter);
    let rep = report.clone();
    let watch_task = tokio::spawn(crate::serve::watch(
        watcher,
        Duration::from_millis(300),
        move |ev| rep(ev),
    ));
    let retrainer = Retrainer::new(
        reg.clone(),
        RetrainConfig {
            trainer: cfg.trainer.clone(),
            work_dir: cfg.work_dir.join("retrain"),
            stale_after: Duration::from_secs(3600),
        },
    );
    let rep = report.clone();
    let retrain_task = tokio::spawn(crate::retrain::watch(
        retrainer,
        Duration::from_millis(300),
        move |ev: &RetrainEvent| rep(&WatchEvent::Retrain { event: ev.clone() }),
    ));
    let result = steps(&mut r, &train_key).await;
    watch_task.abort();
    retrain_task.abort();
    result
}

async fn steps(r: &mut Run, train_key: &str) -> R<DemoSummary> {
    let reg = r.reg.clone();
    let cfg = r.cfg.clone();
    let model = cfg.model.clone();
    let store_uri = reg.store().uri().to_string();
    let run_id = format!("demo-{}", compact_now().to_ascii_lowercase());
    let out = cfg.work_dir.join(&model).join(&run_id);

    r.say(&format!(
        "train: burn MLP 32-16 ReLU on the CPU, {} epochs, seed 7; falaj-train uploads to incoming/{model}/{run_id}/",
        cfg.epochs
    ));
    let data_uri = format!("{store_uri}/{train_key}");
    let epochs = cfg.epochs.to_string();
    let out_s = out.display().to_string();
    let args = [
        "--data", &data_uri, "--target", TARGET, "--model", &model, "--hidden", "32,16",
        "--epochs", &epochs, "--seed", "7", "--out", &out_s, "--store", &store_uri, "--run-id",
        &run_id,
    ];
    train(r, &cfg.trainer, &args, &out).await?;

    r.say("ingest handler registers the upload; validate handler runs the gates on the holdout");
    let n = wait_registered(r, &model, &run_id).await?;
    let passed = wait_validated(r, &model, n).await?;
    if !passed {
        return r.fail(format!(
            "{model}@{n} failed its gates; see `falaj show {model}@{n}` (more --epochs may help)"
        ));
    }
    wait_staged(r, &model, n).await?;

    r.say(&format!(
        "two approvers who are not the author approve {model}@{n} for production"
    ));
    for who in ["ann", "bob"] {
        let a = r.or_fail(
            falaj::promotion::approve(&reg, &model, n, Stage::Production, "demo review", who).await,
        )?;
        r.info(&format!("{} approved {model}@{n}", a.by));
    }

    let has_production = reg
        .alias(&model, "production")
        .await
        .ok()
        .flatten()
        .is_some_and(|(a, _)| a.version.is_some());
    let promote = |canary| falaj::promotion::Promotion {
        model: model.clone(),
        version: n,
        to: Stage::Production,
        canary,
        blue_green: false,
        runtime: falaj_core::deployment::Runtime::Sandbox,
        expect: falaj::Expect::Any,
        actor: "mel".into(),
    };
    if has_production {
        r.say(&format!(
            "production exists: {model}@{n} goes out as a 20% canary, then is rolled out to 100%"
        ));
        let p = r.or_fail(falaj::promotion::promote(&reg, &r.key, promote(Some(20))).await)?;
        r.info(&format!(
            "deployment prod/{model} generation {}: champion v{}, challenger v{n} at 20%",
            p.deployment.generation, p.deployment.champion.version
        ));
        let c =
            r.or_fail(falaj::deploy::rollout(&reg, &r.key, &model, "prod", 100, "mel").await)?;
        r.info(&format!(
            "rolled out: generation {}, champion v{}",
            c.deployment.generation, c.deployment.champion.version
        ));
    } else {
        r.say(&format!(
            "promote {model}@{n} to production (its first production version)"
        ));
        let p = r.or_fail(falaj::promotion::promote(&reg, &r.key, promote(None)).await)?;
        r.info(&format!(
            "signed deployments/prod/{model}.json generation {}: champion v{} (key {})",
            p.deployment.generation,
            p.deployment.champion.version,
            r.key.key_id()
        ));
    }

    r.say("edge: falaj-edge pulls the signed deployment, verifies signature and digests, serves the WASM component");
    let mut edge = Edge::start(r).await?;
    let wait = edge.serving(r, &model, n).await;
    let result = match wait {
        Ok(()) => traffic(r, &mut edge, &model, n).await,
        Err(e) => Err(e),
    };
    let log = edge.log.clone();
    edge.stop().await;
    result.map_err(|e| DemoError {
        message: format!("{} (falaj-edge log: {})", e.message, log.display()),
        ..e
    })?;
    r.info(&format!(
        "falaj-edge stopped; its input sketches are in telemetry/prod/demo-node/{model}/"
    ));

    r.say("drift check: the edge's sketches against the training distribution (PSI per feature)");
    let outcome = r.or_fail(drift::check(&reg, "prod", &model, DriftRule::default()).await)?;
    let request = match &outcome {
        DriftOutcome::RetrainRequested { key, request } => {
            let mut feats: Vec<_> = request
                .report
                .features
                .iter()
                .filter(|f| request.drifted.contains(&f.feature))
                .map(|f| format!("{} (PSI {:.2})", f.feature, f.psi))
                .collect();
            feats.truncate(6);
            r.info(&format!(
                "{} of {} features drifted over {} rows: {}{}",
                request.drifted.len(),
                request.report.features.len(),
                request.report.rows,
                feats.join(", "),
                if request.drifted.len() > 6 {
                    ", ..."
                } else {
                    ""
                }
            ));
            r.info(&format!(
                "retraining request {key}: dataset {}, + {} labelled file(s)",
                request.dataset.as_deref().unwrap_or("-"),
                request.labelled.len()
            ));
            key.clone()
        }
        other => {
            return r.fail(format!(
                "expected drift from the shifted traffic, got {}",
                serde_json::to_string(other).unwrap_or_default()
            ));
        }
    };

    r.say("the retrainer takes the request: falaj-train on the dataset + labelled rows, uploaded to incoming/");
    let req = request.clone();
    let retrain_run = r
        .wait_for("retrain start", Duration::from_secs(60), |ev| match ev {
            WatchEvent::Retrain {
                event:
                    RetrainEvent::Started {
                        request, run_id, ..
                    },
            } if *request == req => Some(Ok(run_id.clone())),
            _ => None,
        })
        .await?;
    let limit = Duration::from_secs(60 + 10 * cfg.epochs as u64);
    r.wait_for("retrain end", limit, |ev| match ev {
        WatchEvent::Retrain {
            event: RetrainEvent::Trained { request, .. },
        } if *request == req => Some(Ok(())),
        WatchEvent::Retrain {
            event: RetrainEvent::Failed { request, error, .. },
        } if *request == req => Some(Err(DemoError {
            step: "retrain".into(),
            message: error.clone(),
        })),
        _ => None,
    })
    .await?;

    r.say("the retrained version is registered and goes through the same gates");
    let n2 = wait_registered(r, &model, &retrain_run).await?;
    let passed2 = wait_validated(r, &model, n2).await?;
    if passed2 {
        wait_staged(r, &model, n2).await?;
        r.info(&format!(
            "{model}@{n2} is in staging; production stays on v{n} until two approvers say otherwise"
        ));
    } else {
        r.info(&format!(
            "{model}@{n2} was refused by the gates: it stays out of staging"
        ));
    }

    r.say("verify the audit chain");
    let problems = r.or_fail(reg.verify_audit(&model).await)?;
    if !problems.is_empty() {
        return r.fail(format!(
            "the audit chain of {model} is broken: {problems:?}"
        ));
    }
    let audit = r.or_fail(reg.audit_events(&model).await)?;
    r.info(&format!(
        "{} events, hash chain intact (`falaj audit {model} --verify`)",
        audit.len()
    ));

    let mut versions = Vec::new();
    let aliases = r.or_fail(reg.aliases(&model).await)?;
    for v in r.or_fail(reg.versions(&model, &Default::default()).await)? {
        let report = r.or_fail(falaj_gates::latest_report(&reg, &model, v.version).await)?;
        let on: Vec<&str> = aliases
            .iter()
            .filter(|a| a.version == Some(v.version))
            .map(|a| a.alias.as_str())
            .collect();
        versions.push(json!({
            "version": v.version,
            "parent": v.lineage.parent_version,
            "gates": report.as_ref().map_or("not run", |g| if g.passed { "passed" } else { "failed" }),
            "aliases": on,
        }));
    }
    let dir = cfg.work_dir.join(&model);
    Ok(DemoSummary {
        model: model.clone(),
        store: store_uri.clone(),
        trained: n,
        retrained: n2,
        versions,
        retrain_request: request,
        audit_events: audit.len(),
        seconds: r.t0.elapsed().as_secs_f64(),
        files: json!({
            "training_curve": out.join("training_curve.png"),
            "metrics": out.join("metrics.json"),
            "retrain_runs": cfg.work_dir.join("retrain").join(&model),
            "edge_log": cfg.work_dir.join("edge.log"),
            "work_dir": dir,
        }),
    })
}

/// The summary for people: versions, gates, where things are, what to run next.
pub fn summary_text(s: &DemoSummary) -> String {
    let m = &s.model;
    let mut t = format!("\ndone in {:.0} s. {m} in {}:\n", s.seconds, s.store);
    for v in &s.versions {
        let aliases = v["aliases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        t += &format!(
            "  v{:<3} gates {:<8} {}{}\n",
            v["version"],
            v["gates"].as_str().unwrap_or("-"),
            if aliases.is_empty() {
                String::new()
            } else {
                format!("[{aliases}]")
            },
            v["parent"]
                .as_u64()
                .map_or(String::new(), |p| format!("  (retrained from v{p})"))
        );
    }
    let f = &s.files;
    let path = |k: &str| f[k].as_str().unwrap_or("-").to_string();
    t += &format!(
        "\nretraining request: {}\naudit log: {} events, chain verified\ntraining curve: {}\n\nexplore:\n",
        s.retrain_request,
        s.audit_events,
        path("training_curve")
    );
    let store = &s.store;
    for (what, cmd) in [
        ("versions", format!("falaj --store {store} versions {m}")),
        (
            "gate report",
            format!("falaj --store {store} show {m}@{}", s.trained),
        ),
        ("deployments", format!("falaj --store {store} deployments")),
        (
            "audit log",
            format!("falaj --store {store} audit {m} --verify"),
        ),
        (
            "drift",
            format!("falaj --store {store} drift {m} --env prod"),
        ),
        (
            "the edge",
            format!("falaj-edge --store {store} --env prod   # then curl localhost:8090/v1/models"),
        ),
        (
            "serve",
            format!("falaj --store {store} serve   # webhook + incoming/ watcher + retrainer"),
        ),
    ] {
        t += &format!("  {what:<12} target/debug/{cmd}\n");
    }
    t += &format!("  {:<12} {}\n", "edge log", path("edge_log"));
    t
}

/// Splits a CSV: every 5th data row to the holdout, the rest to training (headers kept).
pub fn split(csv: &str) -> (String, String) {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    let (mut train, mut holdout) = (format!("{header}\n"), format!("{header}\n"));
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let to = if i % 5 == 0 { &mut holdout } else { &mut train };
        to.push_str(line);
        to.push('\n');
    }
    (train, holdout)
}

fn compact_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Runs falaj-train, printing a line every tenth of the epochs.
async fn train(r: &mut Run, trainer: &Path, args: &[&str], out: &Path) -> R<()> {
    r.or_fail(std::fs::create_dir_all(out))?;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (json, step, epochs) = (r.cfg.json, r.step.clone(), r.cfg.epochs);
    let every = (epochs / 10).max(1);
    let mut progress = |line: &str| {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let f = &v["fields"];
        if f["message"] == "epoch"
            && f["epoch"]
                .as_u64()
                .is_some_and(|e| (e as usize).is_multiple_of(every))
        {
            detail(
                json,
                &step,
                &format!(
                    "epoch {:>3}/{epochs}  loss {:.4}  val loss {:.4}  val accuracy {:.3}",
                    f["epoch"],
                    f["train_loss"].as_f64().unwrap_or(f64::NAN),
                    f["val_loss"].as_f64().unwrap_or(f64::NAN),
                    f["val_accuracy"].as_f64().unwrap_or(f64::NAN)
                ),
            );
        }
    };
    let summary = r.or_fail(
        // dana trains: the versions she uploads are hers, so she may not approve them.
        crate::retrain::run_trainer(
            trainer,
            &args,
            Some("dana"),
            &out.join("train.log"),
            &mut progress,
        )
        .await,
    )?;
    r.info(&format!(
        "trained: accuracy {:.3} on its validation split; uploaded {}",
        summary["metrics"]["accuracy"].as_f64().unwrap_or(f64::NAN),
        summary["uploaded"]
            .as_array()
            .map_or_else(|| "-".into(), |a| format!("{} files", a.len()))
    ));
    Ok(())
}

/// Waits for the upload under `incoming/<model>/<run>/` to be registered.
async fn wait_registered(r: &mut Run, model: &str, run: &str) -> R<u64> {
    let upload = format!("{}{run}/", layout::incoming_prefix(model));
    r.wait_for("registration", Duration::from_secs(120), |ev| match ev {
        WatchEvent::Ingest {
            outcome:
                Outcome::Registered {
                    model: m,
                    version,
                    key,
                }
                | Outcome::Duplicate {
                    model: m,
                    version,
                    key,
                },
        } if m == model && key.starts_with(&upload) => Some(Ok(*version)),
        WatchEvent::Ingest {
            outcome:
                Outcome::Failed {
                    key,
                    error,
                    retryable: false,
                },
        } if key.starts_with(&upload) => Some(Err(DemoError {
            step: "ingest".into(),
            message: format!("{key}: {error}"),
        })),
        _ => None,
    })
    .await
}

async fn wait_validated(r: &mut Run, model: &str, n: u64) -> R<bool> {
    r.wait_for("gate report", Duration::from_secs(300), |ev| match ev {
        WatchEvent::Validate {
            outcome:
                ValidateOutcome::Validated {
                    model: m,
                    version,
                    passed,
                    ..
                },
        } if m == model && *version == n => Some(Ok(*passed)),
        WatchEvent::Validate {
            outcome:
                ValidateOutcome::Skipped {
                    model: m,
                    version,
                    reason,
                },
        } if m == model && *version == n => Some(Err(DemoError {
            step: "validate".into(),
            message: format!("{m}@{version} was not validated: {reason}"),
        })),
        WatchEvent::Validate {
            outcome: ValidateOutcome::Failed { subject, error, .. },
        } if subject.contains(model) => Some(Err(DemoError {
            step: "validate".into(),
            message: format!("{subject}: {error}"),
        })),
        _ => None,
    })
    .await
}

async fn wait_staged(r: &mut Run, model: &str, n: u64) -> R<()> {
    r.wait_for("staging", Duration::from_secs(60), |ev| match ev {
        WatchEvent::Staged {
            model: m,
            version,
            result,
        } if m == model && *version == n => Some(match result.get("error") {
            None => Ok(()),
            Some(e) => Err(DemoError {
                step: "staging".into(),
                message: e.to_string(),
            }),
        }),
        _ => None,
    })
    .await
}

/// A running falaj-edge.
struct Edge {
    child: tokio::process::Child,
    addr: String,
    log: PathBuf,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
}

impl Edge {
    async fn start(r: &mut Run) -> R<Edge> {
        let cfg = &r.cfg;
        let log = cfg.work_dir.join("edge.log");
        let log_file = r.or_fail(std::fs::File::create(&log))?;
        let trust = hex::encode(r.key.public().to_bytes());
        let mut cmd = tokio::process::Command::new(&cfg.edge);
        cmd.args(["--store", r.reg.store().uri(), "--env", "prod"])
            .args(["--listen", "127.0.0.1:0", "--node", "demo-node"])
            .args(["--poll-ms", "200", "--sketch-secs", "1"])
            .arg("--cache")
            .arg(cfg.work_dir.join("edge-cache"))
            .arg("--component")
            .arg(&cfg.component)
            .args(["--trust-key", &trust])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(c) = &cfg.code_cache {
            cmd.arg("--code-cache").arg(c);
        }
        let mut child = r.or_fail(cmd.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with `cargo build --workspace --bins`, or pass --edge)",
                cfg.edge.display()
            )
        }))?;
        r.info("a node's first start compiles the component with cranelift (about a minute on 2 cores); later starts load it from the code cache");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let t = Instant::now();
        let first = loop {
            match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
                Ok(Ok(Some(l))) => break l,
                Ok(_) => {
                    return r.fail(format!(
                        "falaj-edge exited before it listened; see {}",
                        log.display()
                    ));
                }
                Err(_) if t.elapsed() < Duration::from_secs(900) => {
                    r.info(&format!(
                        "falaj-edge is compiling the component... ({} s)",
                        t.elapsed().as_secs()
                    ));
                }
                Err(_) => return r.fail("falaj-edge did not start in 15 minutes"),
            }
        };
        let line: Value = r.or_fail(serde_json::from_str(&first))?;
        let addr = line["listening"].as_str().unwrap_or_default().to_string();
        r.info(&format!(
            "falaj-edge (pid {}) on http://{addr}, component {} ({}), trusting key {}",
            child.id().unwrap_or(0),
            line["component"].as_str().unwrap_or("-"),
            if line["component_from_cache"] == true {
                "from the code cache"
            } else {
                "compiled now"
            },
            r.key.key_id()
        ));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Edge {
            child,
            addr,
            log,
            client,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        request_key: &str,
    ) -> Result<(u16, hyper::HeaderMap, Value), String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .header("x-falaj-request-key", request_key)
            .body(http_body_util::Full::new(Bytes::from(
                body.map_or_else(Vec::new, |b| b.to_string().into_bytes()),
            )))
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| format!("{method} {path}: no answer in 30 s"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = http_body_util::BodyExt::collect(res.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        Ok((status, headers, v))
    }

    /// Waits until the node serves `model` with champion `n`.
    async fn serving(&mut self, r: &mut Run, model: &str, n: u64) -> R<()> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(300) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return r.fail(format!("falaj-edge exited ({status})"));
            }
            if let Ok((200, _, v)) = self.request("GET", "/v1/models", None, "demo").await
                && let Some(m) = v["models"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["model"] == model))
                && m["champion"].as_u64() == Some(n)
            {
                r.info(&format!(
                    "serving {model}: generation {}, champion v{n}, swapped in {} ms after the manifest was seen",
                    m["generation"], m["apply_ms"]
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        r.fail(format!("falaj-edge did not serve {model}@{n} within 300 s"))
    }

    /// Sends `rows` (by feature name) in batches of 20; returns (prediction, version) per row.
    async fn predict(
        &self,
        model: &str,
        rows: &[serde_json::Map<String, Value>],
        tag: &str,
    ) -> Result<Vec<(Value, String)>, String> {
        let mut out = Vec::new();
        for (i, batch) in rows.chunks(20).enumerate() {
            let body = json!({"inputs": batch});
            let (status, headers, v) = self
                .request(
                    "POST",
                    &format!("/v1/models/{model}/predict"),
                    Some(&body),
                    &format!("{tag}-{i}"),
                )
                .await?;
            if status != 200 {
                return Err(format!("predict answered {status}: {v}"));
            }
            let version = headers
                .get("x-falaj-model-version")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("?")
                .to_string();
            for p in v["predictions"].as_array().cloned().unwrap_or_default() {
                out.push((p, version.clone()));
            }
        }
        Ok(out)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the node writes its last sketch window before it exits.
            // SAFETY: kill(2) with a pid we spawned and still own.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Rows of a CSV as feature-name maps, with the label apart.
fn rows(csv: &str, limit: usize, scale: f64) -> Vec<(serde_json::Map<String, Value>, String)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .take(limit)
        .map(|l| {
            let mut m = serde_json::Map::new();
            let mut label = String::new();
            for (name, cell) in header.iter().zip(l.split(',')) {
                if *name == TARGET {
                    label = cell.to_string();
                    continue;
                }
                let mut x: f64 = cell.trim().parse().unwrap_or(f64::NAN);
                if SIZE_FEATURES.iter().any(|s| name.contains(s)) {
                    x *= scale;
                }
                m.insert((*name).to_string(), json!(x));
            }
            (m, label)
        })
        .collect()
}

/// The labelled CSV of rows sent (same columns as the dataset).
fn labelled_csv(header: &str, rows: &[(serde_json::Map<String, Value>, String)]) -> String {
    let mut out = format!("{header}\n");
    for (m, label) in rows {
        let cells: Vec<String> = header
            .split(',')
            .map(|c| {
                if c == TARGET {
                    label.clone()
                } else {
                    m.get(c).map_or_else(String::new, |v| v.to_string())
                }
            })
            .collect();
        out += &cells.join(",");
        out.push('\n');
    }
    out
}

async fn traffic(r: &mut Run, edge: &mut Edge, model: &str, n: u64) -> R<()> {
    let (train_csv, holdout_csv) = split(BREAST_CANCER_CSV);
    r.say("sample predictions over HTTP (holdout rows by feature name)");
    let sample = rows(&holdout_csv, 5, 1.0);
    let maps: Vec<_> = sample.iter().map(|(m, _)| m.clone()).collect();
    let answers = r.or_fail(edge.predict(model, &maps, "sample").await)?;
    for ((_, label), (p, version)) in sample.iter().zip(&answers) {
        let prob = p["probabilities"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).fold(0.0, f64::max))
            .unwrap_or(f64::NAN);
        r.info(&format!(
            "v{version}: class {} p={prob:.3}  (true: {label})",
            p.get("label").unwrap_or(&p["class"])
        ));
    }
    if answers.iter().any(|(_, v)| *v != n.to_string()) {
        return r.fail(format!("answers came from another version than v{n}"));
    }

    let shifted = r.cfg.shifted_rows;
    r.say(&format!(
        "shifted traffic: {shifted} rows whose size features (radius, perimeter, area) are {}x larger — a recalibrated scanner",
        r.cfg.shift
    ));
    let rows_sent = rows(&train_csv, shifted, r.cfg.shift);
    let maps: Vec<_> = rows_sent.iter().map(|(m, _)| m.clone()).collect();
    let t = Instant::now();
    let answers = r.or_fail(edge.predict(model, &maps, "shifted").await)?;
    r.info(&format!(
        "{} rows answered in {} requests, {:.0} ms",
        answers.len(),
        maps.len().div_ceil(20),
        t.elapsed().as_secs_f64() * 1e3
    ));
    let header = train_csv.lines().next().unwrap_or_default();
    let key = format!("{}{}.csv", layout::labelled_prefix(model), compact_now());
    r.put(&key, labelled_csv(header, &rows_sent).into_bytes())
        .await?;
    r.info(&format!(
        "their labels arrive later, as the clinic confirms diagnoses: uploaded to {key}"
    ));
    // One more sketch window (--sketch-secs 1) before the node stops and flushes the rest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_every_row_once_and_the_header_twice() {
        let (train, holdout) = split("a,diagnosis\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n\n");
        assert_eq!(holdout, "a,diagnosis\n1,0\n6,1\n");
        assert_eq!(train, "a,diagnosis\n2,1\n3,0\n4,1\n5,0\n");
        let (t, h) = split(BREAST_CANCER_CSV);
        assert_eq!(t.lines().count() + h.lines().count() - 2, 569);
    }

    #[test]
    fn shifted_rows_scale_only_size_features_and_keep_their_labels() {
        let csv = "mean radius,mean texture,worst area,diagnosis\n10,20,100,1\n";
        let r = rows(csv, 10, 2.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0["mean radius"], json!(20.0));
        assert_eq!(r[0].0["mean texture"], json!(20.0));
        assert_eq!(r[0].0["worst area"], json!(200.0));
        assert_eq!(r[0].1, "1");
        assert_eq!(
            labelled_csv("mean radius,mean texture,worst area,diagnosis", &r),
            "mean radius,mean texture,worst area,diagnosis\n20.0,20.0,200.0,1\n"
        );
    }
}
