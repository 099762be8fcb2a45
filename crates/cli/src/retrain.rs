//! Retraining on one machine: what `falaj serve` does with a drift check's request.
//!
//! In AWS a `retrain/<model>/<stamp>.json` object starts a Batch job (the rule in
//! `terraform/modules/training`). Embedded, [`Retrainer`] polls `retrain/` and, for each
//! request it has not handled:
//!
//! 1. claims it with a create-only write of `idempotency/retrain/<model>/<stamp>.json`, so a
//!    second `falaj serve`, a restart or a duplicate poll never trains twice (a claim left
//!    `started` by a crashed trainer is taken over by compare-and-swap once it is stale);
//! 2. assembles the data the request names: the drifted version's training dataset plus the
//!    labelled rows that arrived since (`datasets/<model>/labelled/*.csv`), written create-only
//!    to `datasets/<model>/retrain/<stamp>.csv` so the new version's lineage names an object
//!    that stays in the store with its digest;
//! 3. runs `falaj-train` as a child process with the drifted version's hyperparameters (the
//!    seed plus one) and `--parent-version`, uploading to `incoming/<model>/retrain-<stamp>/`,
//!    where the watcher registers and validates the new version like any other upload;
//! 4. records `done` (with the run id) or `failed` (with the trainer's last words) in the claim.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj_core::StoreKey;
use falaj_core::layout;
use falaj_core::manifest::TrainingManifest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use falaj::RegistryError;
use falaj::claim::Claimed;
use falaj::drift::RetrainRequest;
use falaj::registry::{Registry, now};
use falaj::store::{ETag, Precondition, list_all};

/// How a retraining job is run.
#[derive(Debug, Clone)]
pub struct RetrainConfig {
    /// The `falaj-train` binary.
    pub trainer: PathBuf,
    /// Where each run's outputs and log go (`<work>/<model>/<stamp>/`).
    pub work_dir: PathBuf,
    /// A `started` claim older than this is taken to belong to a trainer that died.
    pub stale_after: Duration,
}

impl RetrainConfig {
    /// `falaj-train` next to the running executable, outputs under `target/retrain`.
    pub fn beside_current_exe() -> Self {
        Self {
            trainer: sibling_binary("falaj-train"),
            work_dir: PathBuf::from("target/retrain"),
            stale_after: Duration::from_secs(3600),
        }
    }
}

/// `name` in the directory of the running executable (where cargo puts every workspace
/// binary), or plain `name` (looked up on `PATH`) if that cannot be told.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// What the retrainer did with one request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RetrainEvent {
    /// Claimed; the trainer is running.
    Started {
        /// Model.
        model: String,
        /// The request's key.
        request: String,
        /// The version whose inputs drifted (the new version's parent).
        parent_version: u64,
        /// Run id of the new training (its `incoming/` folder).
        run_id: String,
        /// Dataset the trainer reads.
        data: String,
        /// Rows of labelled data added to the original dataset.
        labelled_rows: usize,
    },
    /// The trainer finished and uploaded to `incoming/`.
    Trained {
        /// Model.
        model: String,
        /// The request's key.
        request: String,
        /// Run id.
        run_id: String,
        /// Seconds the trainer ran.
        seconds: f64,
        /// The trainer's final metrics.
        metrics: Value,
    },
    /// The request could not be carried out (recorded in its claim).
    Failed {
        /// Model.
        model: String,
        /// The request's key.
        request: String,
        /// What went wrong.
        error: String,
    },
}

/// The claim of one request: `idempotency/retrain/<model>/<stamp>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    /// The request's key.
    pub request: String,
    /// `started`, `done` or `failed`.
    pub state: String,
    /// When the state was written (RFC 3339).
    pub at: String,
    /// Run id of the training.
    pub run_id: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Errors assembling or running a retrain.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Store or registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The request cannot be carried out as written.
    #[error("{0}")]
    Request(String),
}

/// Polls `retrain/` and runs a training for each new request.
pub struct Retrainer {
    registry: std::sync::Arc<Registry>,
    config: RetrainConfig,
    seen: HashSet<String>,
}

/// `idempotency/<request key>`.
pub fn claim_key(request: &str) -> Result<StoreKey, RegistryError> {
    falaj_core::layout::retrain_claim(request)
        .map_err(|e| RegistryError::from(falaj::store::StoreError::from(e)))
}

fn key(k: String) -> Result<StoreKey, RegistryError> {
    StoreKey::new(k).map_err(|e| RegistryError::from(falaj::store::StoreError::from(e)))
}

impl Retrainer {
    /// A retrainer over `registry`.
    pub fn new(registry: std::sync::Arc<Registry>, config: RetrainConfig) -> Self {
        Self {
            registry,
            config,
            seen: HashSet::new(),
        }
    }

    /// One pass: every request under `retrain/` not claimed yet is trained, one at a time;
    /// `report` hears of each start as it happens.
    pub async fn poll_once(
        &mut self,
        report: &(dyn Fn(&RetrainEvent) + Sync),
    ) -> Result<Vec<RetrainEvent>, RegistryError> {
        let store = self.registry.store().clone();
        let keys = list_all(store.as_ref(), "retrain/").await?;
        let mut events = Vec::new();
        for request in keys {
            if self.seen.contains(&request) || !is_request_key(&request) {
                continue;
            }
            let model = request.split('/').nth(1).unwrap_or_default().to_string();
            let stamp = request
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".json"))
                .unwrap_or_default()
                .to_string();
            // Run ids are lower case (the registry's name rule); stamps have a `T` and a `Z`.
            let run_id = format!("retrain-{}", stamp.to_ascii_lowercase());
            let Some(etag) = self.claim(&request, &run_id).await? else {
                self.seen.insert(request);
                continue;
            };
            self.seen.insert(request.clone());
            let result = self.run(&request, &model, &stamp, &run_id, report).await;
            let (state, error, event) = match result {
                Ok(ev) => ("done", None, ev),
                Err(e) => {
                    let error = e.to_string();
                    tracing::error!(request, error, "retrain failed");
                    (
                        "failed",
                        Some(error.clone()),
                        RetrainEvent::Failed {
                            model: model.clone(),
                            request: request.clone(),
                            error,
                        },
                    )
                }
            };
            let claim = Claim {
                request: request.clone(),
                state: state.into(),
                at: now(),
                run_id,
                error,
            };
            if let Err(e) = self
                .registry
                .put_json(&claim_key(&request)?, &claim, Precondition::IfMatch(etag))
                .await
            {
                tracing::warn!(request, error = %e, "could not record the retrain's end in its claim");
            }
            report(&event);
            events.push(event);
        }
        Ok(events)
    }

    /// Claims `request`; `Some(etag)` if this process now owns it.
    async fn claim(&self, request: &str, run_id: &str) -> Result<Option<ETag>, RegistryError> {
        let k = claim_key(request)?;
        let claim = Claim {
            request: request.into(),
            state: "started".into(),
            at: now(),
            run_id: run_id.into(),
            error: None,
        };
        let stale_after = self.config.stale_after;
        let free = |held: &Claim| {
            let take = held.state == "started" && falaj::claim::is_stale(&held.at, stale_after);
            if take {
                tracing::warn!(
                    request,
                    since = held.at,
                    "taking over a stale retrain claim"
                );
            }
            take
        };
        match falaj::claim::claim(&self.registry, &k, &claim, free).await {
            Ok(Claimed::Ours(etag)) => Ok(Some(etag)),
            Ok(Claimed::Theirs(_)) => Ok(None),
            // Lost to other retrainers: one of them has it.
            Err(RegistryError::Contention { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn run(
        &self,
        request_key: &str,
        model: &str,
        stamp: &str,
        run_id: &str,
        report: &(dyn Fn(&RetrainEvent) + Sync),
    ) -> Result<RetrainEvent, RetrainError> {
        let reg = &self.registry;
        let (request, _) = reg
            .get_json::<RetrainRequest>(&key(request_key.to_string())?)
            .await?
            .ok_or_else(|| RetrainError::Request(format!("{request_key} disappeared")))?;
        // What the request may read is checked before anything is looked up.
        if let Some(d) = &request.dataset {
            dataset_key(reg, model, d)?;
        }
        for k in &request.labelled {
            labelled_key(model, k)?;
        }
        let version = reg.version(model, request.version).await?;
        let manifest = reg.training_manifest(&version).await?.ok_or_else(|| {
            RetrainError::Request(format!(
                "{model}@{} has no training manifest: nothing says how to retrain it",
                request.version
            ))
        })?;
        let (data, labelled_rows) = assemble_data(reg, &request, stamp).await?;
        let out = self.config.work_dir.join(model).join(stamp);
        std::fs::create_dir_all(&out)
            .map_err(|e| RetrainError::Request(format!("cannot create {}: {e}", out.display())))?;
        let args = trainer_args(
            &manifest,
            &data,
            model,
            &out,
            reg.store().uri(),
            run_id,
            request.version,
        );
        report(&RetrainEvent::Started {
            model: model.into(),
            request: request_key.into(),
            parent_version: request.version,
            run_id: run_id.into(),
            data: data.clone(),
            labelled_rows,
        });
        let started = Instant::now();
        let summary = run_trainer(
            &self.config.trainer,
            &args,
            None,
            &out.join("train.log"),
            &mut |_| {},
        )
        .await?;
        Ok(RetrainEvent::Trained {
            model: model.into(),
            request: request_key.into(),
            run_id: run_id.into(),
            seconds: started.elapsed().as_secs_f64(),
            metrics: summary.get("metrics").cloned().unwrap_or(Value::Null),
        })
    }
}

/// `retrain/<model>/<stamp>.json`, and nothing deeper.
fn is_request_key(k: &str) -> bool {
    let parts: Vec<&str> = k.split('/').collect();
    parts.len() == 3 && parts[0] == "retrain" && parts[2].ends_with(".json")
}

/// The store key a retraining request's dataset names. A request is an object any store
/// writer can put, so it may name only this store's `datasets/<model>/`: never a local path
/// (the signing key sits on this machine) and never another model's data.
fn dataset_key(reg: &Registry, model: &str, uri: &str) -> Result<StoreKey, RetrainError> {
    let store = reg.store();
    let prefix = layout::datasets_prefix(model);
    let refused = || {
        RetrainError::Request(format!(
            "the request's dataset must be an object of this store under {prefix} (`{}/{prefix}...`); it names {uri:?}, which the retrainer does not read",
            store.uri()
        ))
    };
    let k = uri
        .strip_prefix(&format!("{}/", store.uri()))
        .ok_or_else(refused)?;
    if !k.starts_with(&prefix) {
        return Err(refused());
    }
    StoreKey::new(k).map_err(|_| refused())
}

/// Checks a labelled-data key lies under `datasets/<model>/`.
fn labelled_key(model: &str, k: &str) -> Result<StoreKey, RetrainError> {
    let prefix = layout::datasets_prefix(model);
    match StoreKey::new(k) {
        Ok(key) if k.starts_with(&prefix) => Ok(key),
        _ => Err(RetrainError::Request(format!(
            "labelled data {k:?} is not a store key under {prefix}; the retrainer reads nothing else"
        ))),
    }
}

/// Reads a dataset named by a URI in this store (`<store uri>/datasets/<model>/...`).
async fn read_dataset(reg: &Registry, model: &str, uri: &str) -> Result<Vec<u8>, RetrainError> {
    let k = dataset_key(reg, model, uri)?;
    match reg.store().get(&k).await.map_err(RegistryError::from)? {
        Some(o) => Ok(o.bytes.to_vec()),
        None => Err(RetrainError::Request(format!("dataset {uri} is missing"))),
    }
}

fn header(bytes: &[u8]) -> &[u8] {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Concatenates CSVs that share one header row; returns the bytes and the rows added after
/// the first. A file whose header differs is refused by name.
pub fn concat_csv(
    base: &[u8],
    extra: &[(String, Vec<u8>)],
) -> Result<(Vec<u8>, usize), RetrainError> {
    let head = header(base);
    if head.is_empty() {
        return Err(RetrainError::Request(
            "the dataset has no header row".into(),
        ));
    }
    let mut out = base.to_vec();
    let mut added = 0;
    for (name, bytes) in extra {
        if header(bytes) != head {
            // Counts only: the error goes to logs and the claim, and must never quote data.
            let n = |h: &[u8]| h.split(|b| *b == b',').count();
            return Err(RetrainError::Request(format!(
                "{name}: its header differs from the dataset's ({} columns against {}); give both the same columns in the same order",
                n(header(bytes)),
                n(head)
            )));
        }
        let body = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&[][..], |i| &bytes[i + 1..]);
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(body);
        added += body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
            .count();
    }
    Ok((out, added))
}

/// The dataset URI the trainer reads, and how many labelled rows it adds.
async fn assemble_data(
    reg: &Registry,
    req: &RetrainRequest,
    stamp: &str,
) -> Result<(String, usize), RetrainError> {
    let base = req.dataset.clone().ok_or_else(|| {
        RetrainError::Request(format!(
            "{}@{}'s lineage names no dataset: nothing to retrain on",
            req.model, req.version
        ))
    })?;
    dataset_key(reg, &req.model, &base)?;
    if req.labelled.is_empty() {
        return Ok((base, 0));
    }
    let base_bytes = read_dataset(reg, &req.model, &base).await?;
    let mut extra = Vec::new();
    for k in &req.labelled {
        let o = reg
            .store()
            .get(&labelled_key(&req.model, k)?)
            .await
            .map_err(RegistryError::from)?
            .ok_or_else(|| RetrainError::Request(format!("labelled data {k} is missing")))?;
        extra.push((k.clone(), o.bytes.to_vec()));
    }
    let (bytes, added) = concat_csv(&base_bytes, &extra)?;
    let k = layout::dataset(&req.model, &format!("retrain/{stamp}.csv"))
        .map_err(|e| RegistryError::from(falaj::store::StoreError::from(e)))?;
    let bytes = Bytes::from(bytes);
    match reg
        .store()
        .put(&k, bytes.clone(), Precondition::IfAbsent)
        .await
    {
        Ok(_) => {}
        // A retry of the same request: the same inputs give the same bytes.
        Err(e) if e.is_conflict() => {
            let same = reg
                .store()
                .get(&k)
                .await
                .map_err(RegistryError::from)?
                .is_some_and(|o| o.bytes == bytes);
            if !same {
                return Err(RetrainError::Request(format!(
                    "{k} exists with other content; refusing to overwrite a dataset"
                )));
            }
        }
        Err(e) => return Err(RegistryError::from(e).into()),
    }
    Ok((format!("{}/{k}", reg.store().uri()), added))
}

/// `falaj-train` arguments that repeat the drifted version's training on `data`.
pub fn trainer_args(
    m: &TrainingManifest,
    data: &str,
    model: &str,
    out: &Path,
    store: &str,
    run_id: &str,
    parent: u64,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--data".into(),
        data.into(),
        "--target".into(),
        m.target.clone(),
        "--task".into(),
        serde_json::to_value(m.task)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "classification".into()),
        "--model".into(),
        model.into(),
        "--seed".into(),
        m.seed.unwrap_or(42).wrapping_add(1).to_string(),
        "--out".into(),
        out.display().to_string(),
        "--store".into(),
        store.into(),
        "--run-id".into(),
        run_id.into(),
        "--parent-version".into(),
        parent.to_string(),
    ];
    if !m.features.is_empty() {
        a.push("--features".into());
        a.push(m.features.join(","));
    }
    let h = &m.lineage.hyperparameters;
    if let Some(hidden) = h.get("hidden").and_then(|v| v.as_array()) {
        let widths: Vec<String> = hidden.iter().map(|w| w.to_string()).collect();
        a.push("--hidden".into());
        a.push(if widths.is_empty() {
            "none".into()
        } else {
            widths.join(",")
        });
    }
    for name in [
        "activation",
        "dropout",
        "epochs",
        "batch_size",
        "learning_rate",
        "val_fraction",
    ] {
        let value = match h.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => continue,
        };
        a.push(format!("--{}", name.replace('_', "-")));
        a.push(value);
    }
    a
}

/// Runs `falaj-train` with `args`, writing its log (stderr) to `log` and handing each log
/// line to `on_line` as it comes (progress); returns its JSON summary (stdout). A failure
/// names the exit status, the trainer's last log lines and the log's path. `identity`, when
/// given, is the `FALAJ_IDENTITY` the trainer uploads as (its versions' author); else it
/// inherits this process's.
pub async fn run_trainer(
    trainer: &Path,
    args: &[String],
    identity: Option<&str>,
    log: &Path,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Value, RetrainError> {
    use tokio::io::AsyncBufReadExt;
    let fail = |m: String| RetrainError::Request(m);
    let mut log_file = std::fs::File::create(log)
        .map_err(|e| fail(format!("cannot create {}: {e}", log.display())))?;
    let mut cmd = tokio::process::Command::new(trainer);
    if let Some(id) = identity {
        cmd.env("FALAJ_IDENTITY", id);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot start the trainer {}: {e} (build it with `cargo build --workspace --bins`, or pass --trainer)",
                trainer.display()
            ))
        })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut tail = std::collections::VecDeque::with_capacity(3);
    while let Ok(Some(line)) = lines.next_line().await {
        use std::io::Write;
        let _ = writeln!(log_file, "{line}");
        on_line(&line);
        if tail.len() == 3 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    // stdout is one small JSON summary printed at the end: it fits the pipe while stderr drains.
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("waiting for the trainer: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "falaj-train exited with {}: {} (log: {})",
            out.status,
            Vec::from(tail).join(" | "),
            log.display()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("the trainer's summary is not JSON: {e}")))
}

/// Runs the retrainer every `every`, reporting each step.
pub async fn watch(
    mut retrainer: Retrainer,
    every: Duration,
    report: impl Fn(&RetrainEvent) + Sync,
) {
    loop {
        if let Err(e) = retrainer.poll_once(&report).await {
            tracing::error!(error = %e, "watching retrain/ failed; retrying");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csvs_with_one_header_are_joined_and_others_refused() {
        let base = b"a,b,y\n1,2,0\n3,4,1";
        let (out, added) = concat_csv(
            base,
            &[
                ("l1.csv".into(), b"a,b,y\r\n5,6,1\r\n\n".to_vec()),
                ("empty.csv".into(), b"a,b,y\n".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(out, b"a,b,y\n1,2,0\n3,4,1\n5,6,1\r\n\n");
        assert_eq!(added, 1);
        let e = concat_csv(base, &[("bad.csv".into(), b"a,y\n1,0\n".to_vec())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.csv") && e.contains("2 columns against 3"),
            "{e}"
        );
        assert!(!e.contains("a,y"), "an error never quotes data: {e}");
        assert!(concat_csv(b"", &[]).is_err());
    }

    #[test]
    fn only_top_level_request_keys_are_requests() {
        assert!(is_request_key("retrain/bc/20261202T010203Z-v1.json"));
        assert!(!is_request_key("retrain/bc/sub/x.json"));
        assert!(!is_request_key("retrain/bc/x.txt"));
    }
}
