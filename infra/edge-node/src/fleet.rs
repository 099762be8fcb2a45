//! The pull loop: desired state from the store, verified, staged, warmed, swapped.
//!
//! For every `deployments/<env>/<model>.json` whose ETag changed since the last look (a
//! conditional GET: `If-None-Match` with the last ETag seen, a 304 when nothing changed):
//!
//! 1. verify the ed25519 signature against the key this node trusts, and that the manifest
//!    is for this environment and model and not older than what runs;
//! 2. for each slot (champion, canary challenger): read the version record, check its digest
//!    equals the signed one, download the artifact (and training manifest) blobs and check
//!    their sha256, and stage them in `<cache>/models/<model>/<version>-<digest>/`
//!    (temporary directory + rename: a crash leaves no half-staged version);
//! 3. start a runtime on it and send it `GET /health`: the component loads the model and
//!    checks the digests again from inside the sandbox; anything but 200 refuses the version;
//! 4. record the manifest as the last good one (`<cache>/state/<env>/<model>.json`, atomic),
//!    then swap the model's routing entry in one step. Requests already running keep the
//!    runtime they started on; new ones see the new entry.
//!
//! Any failure keeps the running version, is logged, counted, and reported by
//! `GET /v1/models`. On start the node serves its last good manifests from the cache
//! (re-verified) before it looks at the store, so a restart, even one that interrupted a
//! swap, serves what it served before.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use falaj_core::deployment::{self, DeploymentManifest, Slot};
use falaj_core::layout;
use falaj_core::manifest::TrainingManifest;
use falaj_core::version::ModelVersion;
use falaj_store::{ETag, Fetched, Store, list_all};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::fsutil::write_atomic;
use crate::runtime::{EdgeEngine, ModelRuntime};

/// A version refused: its manifest, records or bytes did not check out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One deployed, verified model version, ready to serve.
pub struct Served {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// Training manifest, if the version has one (feature names and training distribution).
    pub manifest: Option<TrainingManifest>,
    /// Number of input features the model takes, when known.
    pub n_features: Option<usize>,
    /// The instances.
    pub runtime: ModelRuntime,
    /// Where the signed deployment asked the graph to run.
    pub asked: falaj_core::deployment::Runtime,
    /// Where it runs: `host` or `sandbox`, as the warmed-up instance reported.
    pub runs_in: String,
    /// Concurrent predictions coalesced into one call ([`crate::batch`]).
    pub batcher: crate::batch::Batcher,
}

/// What a model routes to: one generation of its deployment manifest.
pub struct Route {
    /// Manifest generation.
    pub generation: u64,
    /// Serves everything the challenger does not.
    pub champion: Arc<Served>,
    /// Canary challenger and its share in percent.
    pub challenger: Option<(Arc<Served>, u8)>,
    /// Shadow challenger: gets a copy of every request; its answers are logged, not sent.
    pub shadow: Option<Arc<Served>>,
    /// What the split is sticky on (`header:<name>` or `cookie:<name>`), if the manifest says.
    pub split_key: Option<String>,
}

/// What `GET /v1/models` reports per model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelStatus {
    /// Model.
    pub model: String,
    /// Generation served, if any.
    pub generation: Option<u64>,
    /// Champion version.
    pub champion: Option<u64>,
    /// Challenger version and weight.
    pub challenger: Option<(u64, u8)>,
    /// Shadow challenger version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<u64>,
    /// Where each slot's graph runs, as its instance reported: `sandbox` or `host`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime: BTreeMap<String, String>,
    /// Last refusal or failure, kept until a later manifest is applied.
    pub last_error: Option<String>,
    /// When the served generation was applied (RFC 3339).
    pub applied_at: Option<String>,
    /// Milliseconds from seeing the manifest to the swap.
    pub apply_ms: Option<u64>,
    /// Manifests refused so far.
    pub refusals: u64,
}

/// The node's models.
pub struct Fleet {
    store: Arc<dyn Store>,
    env: String,
    trusted: VerifyingKey,
    cache: PathBuf,
    engine: Arc<EdgeEngine>,
    component: Component,
    routes: RwLock<BTreeMap<String, Arc<Route>>>,
    status: Mutex<BTreeMap<String, ModelStatus>>,
    seen: Mutex<HashMap<String, ETag>>,
    runtimes: Mutex<HashMap<(String, u64), Arc<Served>>>,
    batch: crate::batch::BatchConfig,
}

impl Fleet {
    /// A fleet for `env`, trusting `trusted`, staging under `cache`.
    pub fn new(
        store: Arc<dyn Store>,
        env: &str,
        trusted: VerifyingKey,
        cache: &Path,
        engine: Arc<EdgeEngine>,
        component: Component,
    ) -> Self {
        Self {
            store,
            env: env.into(),
            trusted,
            cache: cache.into(),
            engine,
            component,
            routes: RwLock::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(HashMap::new()),
            runtimes: Mutex::new(HashMap::new()),
            batch: crate::batch::BatchConfig::default(),
        }
    }

    /// Batches concurrent predictions per version as `config` says (a zero window: never).
    pub fn with_batching(mut self, config: crate::batch::BatchConfig) -> Self {
        self.batch = config;
        self
    }

    /// The environment served.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The routing entry of `model`.
    pub fn route(&self, model: &str) -> Option<Arc<Route>> {
        self.routes.read().expect("routes lock").get(model).cloned()
    }

    /// Every model's routing entry.
    pub fn routes(&self) -> Vec<(String, Arc<Route>)> {
        let routes = self.routes.read().expect("routes lock");
        routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Status of every model the node has heard of.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.status
            .lock()
            .expect("status lock")
            .values()
            .cloned()
            .collect()
    }

    fn state_path(&self, model: &str) -> PathBuf {
        self.cache
            .join("state")
            .join(&self.env)
            .join(format!("{model}.json"))
    }

    /// Serves the last good manifests recorded in the cache (each verified again, its staged
    /// files checked again). Returns how many models it restored.
    pub async fn restore(&self) -> usize {
        let dir = self.cache.join("state").join(&self.env);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut restored = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(model) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                continue;
            };
            let result = match std::fs::read(&path) {
                Ok(bytes) => self.apply(&model, &bytes, false).await,
                Err(e) => Err(anyhow::Error::from(e)),
            };
            match result {
                Ok(_) => {
                    restored += 1;
                    tracing::info!(model, "restored the last good deployment from the cache");
                }
                Err(e) => self.failed(&model, &format!("restoring from the cache: {e:#}")),
            }
        }
        restored
    }

    /// One pass over `deployments/<env>/`: applies every manifest that changed.
    pub async fn sync(&self) -> Result<()> {
        let prefix = falaj_core::layout::deployments_prefix(&self.env);
        let keys = list_all(self.store.as_ref(), &prefix)
            .await
            .with_context(|| format!("listing {prefix}"))?;
        for key in keys {
            let Some(model) = falaj_core::layout::parse_deployment_key(&key)
                .filter(|(env, _)| *env == self.env)
                .map(|(_, m)| m.to_owned())
            else {
                // A hand-made object no falaj key names: skipped, never stopping the pass.
                tracing::warn!(
                    key,
                    "not a deployment key (deployments/<env>/<model>.json); skipped"
                );
                continue;
            };
            // One key falaj could not have written (a hand-made object) is skipped, never
            // allowed to stop the pass for every other model.
            let store_key = match falaj_core::StoreKey::new(key.clone()) {
                Ok(k) => k,
                Err(e) => {
                    self.failed(&model, &format!("skipping {key:?}: {e}"));
                    continue;
                }
            };
            let seen = self.seen.lock().expect("seen lock").get(&key).cloned();
            // Conditional GET: an unchanged manifest costs a 304 on S3, no body.
            let obj = match self.store.get_if_changed(&store_key, seen.as_ref()).await {
                Ok(Fetched::Changed(o)) => o,
                Ok(Fetched::Unchanged | Fetched::Absent) => continue,
                Err(e) => {
                    self.failed(&model, &format!("reading {key}: {e}"));
                    continue;
                }
            };
            match self.apply(&model, &obj.bytes, true).await {
                Ok(_) => {
                    self.seen.lock().expect("seen lock").insert(key, obj.etag);
                }
                Err(e) => {
                    // A refusal is about these bytes: do not retry until they change. Other
                    // failures (the store, the disk) are retried on the next pass.
                    if e.downcast_ref::<Refused>().is_some() {
                        self.seen.lock().expect("seen lock").insert(key, obj.etag);
                    }
                    self.failed(&model, &format!("{e:#}"));
                }
            }
        }
        Ok(())
    }

    fn failed(&self, model: &str, error: &str) {
        tracing::error!(model, env = %self.env, error, "deployment refused; the last good version keeps serving");
        let mut status = self.status.lock().expect("status lock");
        let s = status.entry(model.into()).or_insert_with(|| ModelStatus {
            model: model.into(),
            ..Default::default()
        });
        s.last_error = Some(error.into());
        s.refusals += 1;
    }

    /// Verifies and applies one signed manifest; `persist` records it as the last good one.
    /// Returns false when it was already being served.
    pub async fn apply(&self, model: &str, bytes: &[u8], persist: bool) -> Result<bool> {
        let t0 = Instant::now();
        let m = deployment::verify(bytes, &self.trusted).map_err(|e| Refused(e.to_string()))?;
        if m.env != self.env || m.model != model {
            return Err(Refused(format!(
                "the manifest at deployments/{}/{model}.json is for {}/{}; refusing it",
                self.env, m.env, m.model
            ))
            .into());
        }
        if let Some(cur) = self.route(model) {
            if m.generation < cur.generation {
                return Err(Refused(format!(
                    "generation {} is older than the {} being served (a replayed manifest?); refusing it",
                    m.generation, cur.generation
                ))
                .into());
            }
            if m.generation == cur.generation {
                return Ok(false);
            }
        }
        let champion = self.prepare(&m, &m.champion).await?;
        let shadowing = m.challenger_mode == deployment::ChallengerMode::Shadow;
        let challenger = match &m.challenger {
            Some(slot) if m.challenger_weight > 0 && !shadowing => {
                Some((self.prepare(&m, slot).await?, m.challenger_weight.min(100)))
            }
            _ => None,
        };
        let shadow = match &m.challenger {
            Some(slot) if shadowing => Some(self.prepare(&m, slot).await?),
            _ => None,
        };
        if let Some(k) = &m.split_key {
            deployment::check_split_key(k).map_err(|e| Refused(e.to_string()))?;
        }
        if persist {
            fail_point("before-commit");
            write_atomic(&self.state_path(model), bytes)
                .with_context(|| format!("recording the last good manifest of {model}"))?;
        }
        let route = Arc::new(Route {
            generation: m.generation,
            champion,
            challenger,
            shadow,
            split_key: m.split_key.clone(),
        });
        let status = ModelStatus {
            model: model.into(),
            generation: Some(m.generation),
            champion: Some(route.champion.version),
            challenger: route.challenger.as_ref().map(|(s, w)| (s.version, *w)),
            shadow: route.shadow.as_ref().map(|s| s.version),
            runtime: std::iter::once(("champion", &route.champion))
                .chain(route.challenger.as_ref().map(|(s, _)| ("challenger", s)))
                .chain(route.shadow.as_ref().map(|s| ("shadow", s)))
                .map(|(slot, s)| (slot.to_string(), s.runs_in.clone()))
                .collect(),
            last_error: None,
            applied_at: Some(falaj_runtime::now()),
            apply_ms: Some(t0.elapsed().as_millis() as u64),
            refusals: self
                .status
                .lock()
                .expect("status lock")
                .get(model)
                .map_or(0, |s| s.refusals),
        };
        self.routes
            .write()
            .expect("routes lock")
            .insert(model.into(), route);
        self.status
            .lock()
            .expect("status lock")
            .insert(model.into(), status);
        self.forget_unused(model);
        tracing::info!(
            model,
            env = %self.env,
            generation = m.generation,
            champion = m.champion.version,
            challenger = ?m.challenger.as_ref().map(|s| s.version),
            weight = m.challenger_weight,
            apply_ms = t0.elapsed().as_millis() as u64,
            "deployment applied"
        );
        Ok(true)
    }

    /// Drops runtimes no route uses any more (their in-flight requests hold their own Arc).
    fn forget_unused(&self, model: &str) {
        let keep: Vec<u64> = self.route(model).map_or_else(Vec::new, |r| {
            let mut v = vec![r.champion.version];
            v.extend(r.challenger.as_ref().map(|(s, _)| s.version));
            v.extend(r.shadow.as_ref().map(|s| s.version));
            v
        });
        self.runtimes
            .lock()
            .expect("runtimes lock")
            .retain(|(m, v), _| m != model || keep.contains(v));
    }

    async fn prepare(&self, m: &DeploymentManifest, slot: &Slot) -> Result<Arc<Served>> {
        let key = (m.model.clone(), slot.version);
        if let Some(s) = self.runtimes.lock().expect("runtimes lock").get(&key)
            && s.digest == slot.digest
            && s.asked == slot.runtime
        {
            return Ok(s.clone());
        }
        let hex = slot
            .digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                Refused(format!(
                    "version {} has digest {:?}, not sha256:<64 hex>",
                    slot.version, slot.digest
                ))
            })?;
        let dir = self.cache.join("models").join(&m.model).join(format!(
            "{}-{}",
            slot.version,
            &hex[..16]
        ));
        if dir.join("version.json").exists() {
            check_staged(&dir, slot)?;
        } else {
            self.stage(m, slot, hex, &dir).await?;
        }
        let record: ModelVersion =
            serde_json::from_slice(&std::fs::read(dir.join("version.json"))?)
                .context("reading the staged version record")?;
        let manifest: Option<TrainingManifest> = std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let host = self.host_graph(slot, &dir).await?;
        let runtime = self.engine.runtime(&self.component, &dir, host)?;
        // Warm up: the first instance loads the model and checks its digests from inside;
        // its metadata says how many features the model takes.
        let health = runtime
            .call(http::Method::GET, "/metadata", None, Bytes::new())
            .await
            .map_err(|e| Refused(format!("version {} did not start: {e}", slot.version)))?;
        if health.status != http::StatusCode::OK {
            return Err(Refused(format!(
                "version {} is unhealthy in the component ({}): {}",
                slot.version,
                health.status,
                String::from_utf8_lossy(&health.body).trim()
            ))
            .into());
        }
        let meta = serde_json::from_slice::<serde_json::Value>(&health.body).ok();
        let n_features = manifest.as_ref().map(|m| m.features.len()).or_else(|| {
            meta.as_ref()
                .and_then(|v| v.get("n_features")?.as_u64())
                .map(|n| n as usize)
        });
        let runs_in = meta
            .as_ref()
            .and_then(|v| v["runtime"]["where"].as_str())
            .unwrap_or("sandbox")
            .to_string();
        if slot.runtime.as_str() != runs_in {
            tracing::warn!(
                model = %m.model,
                version = slot.version,
                asked = slot.runtime.as_str(),
                runs_in = %runs_in,
                "the deployment asks for another runtime than the component took"
            );
        }
        let served = Arc::new(Served {
            model: m.model.clone(),
            version: record.version,
            digest: slot.digest.clone(),
            manifest,
            n_features,
            runtime,
            asked: slot.runtime,
            runs_in,
            batcher: crate::batch::Batcher::new(self.batch),
        });
        self.runtimes
            .lock()
            .expect("runtimes lock")
            .insert(key, served.clone());
        Ok(served)
    }

    /// The node's engine.
    pub fn engine(&self) -> &EdgeEngine {
        &self.engine
    }

    /// The host graph for a slot the signed deployment runs with `runtime = "host"`: the
    /// staged, verified directory loaded and planned natively, once per version. `None` for
    /// the sandbox, and (with a warning) when the node's component cannot import wasi:nn.
    async fn host_graph(&self, slot: &Slot, dir: &Path) -> Result<Option<crate::nn::HostGraph>> {
        if slot.runtime != falaj_core::deployment::Runtime::Host {
            return Ok(None);
        }
        if !self.engine.imports_nn(&self.component) {
            tracing::warn!(
                version = slot.version,
                "the deployment asks for the host runtime but this node's component does not \
                 import wasi:nn; serving in the sandbox (run falaj-edge with \
                 --component target/wasm/falaj-inference-nn.wasm)"
            );
            return Ok(None);
        }
        let dir = dir.to_path_buf();
        let graph = tokio::task::spawn_blocking(move || crate::nn::HostGraph::load(&dir))
            .await
            .context("the host graph loader stopped")?
            .map_err(|e| {
                Refused(format!(
                    "version {} cannot load in the host: {e:#}",
                    slot.version
                ))
            })?;
        Ok(Some(graph))
    }

    async fn read(&self, key: &falaj_core::StoreKey) -> Result<Bytes> {
        match self.store.get(key).await? {
            Some(o) => Ok(o.bytes),
            None => Err(Refused(format!("{key} is missing from the store")).into()),
        }
    }

    /// Downloads and checks a version's files, then renames them into `dir` in one step.
    async fn stage(
        &self,
        m: &DeploymentManifest,
        slot: &Slot,
        hex: &str,
        dir: &Path,
    ) -> Result<()> {
        let record_bytes = self.read(&layout::version(&m.model, slot.version)).await?;
        let record: ModelVersion = serde_json::from_slice(&record_bytes).map_err(|e| {
            Refused(format!(
                "the version record of {} v{} is malformed: {e}",
                m.model, slot.version
            ))
        })?;
        if record.model != m.model || record.version != slot.version || record.digest != slot.digest
        {
            return Err(Refused(format!(
                "the version record of {} v{} says {} v{} {}, but the signed manifest says {}; refusing it",
                m.model, slot.version, record.model, record.version, record.digest, slot.digest
            ))
            .into());
        }
        let artifact = self.read(&layout::blob(hex)).await?;
        check_digest("the artifact", &artifact, &slot.digest)?;
        let manifest = match &record.manifest_digest {
            Some(d) => {
                let mhex = d.strip_prefix("sha256:").unwrap_or(d);
                let bytes = self.read(&layout::blob(mhex)).await?;
                check_digest("the training manifest", &bytes, d)?;
                Some(bytes)
            }
            None => None,
        };
        let parent = dir.parent().expect("dir has a parent");
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".staging-{}-{}", slot.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        write_atomic(&tmp.join("model.onnx"), &artifact)?;
        if let Some(b) = &manifest {
            write_atomic(&tmp.join("manifest.json"), b)?;
        }
        write_atomic(&tmp.join("version.json"), &record_bytes)?;
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("moving the staged version into {}", dir.display()))?;
        Ok(())
    }
}

fn check_digest(what: &str, bytes: &[u8], expected: &str) -> Result<(), Refused> {
    let got = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if got == expected {
        Ok(())
    } else {
        Err(Refused(format!(
            "{what} has digest {got}, but {expected} was signed; refusing it"
        )))
    }
}

/// Checks the files of an already-staged version again (the cache is not trusted blindly).
fn check_staged(dir: &Path, slot: &Slot) -> Result<(), Refused> {
    let model = std::fs::read(dir.join("model.onnx"))
        .map_err(|e| Refused(format!("staged model in {} unreadable: {e}", dir.display())))?;
    check_digest("the staged model", &model, &slot.digest)
}

/// Test hook: `FALAJ_EDGE_FAIL_POINT=<name>` aborts the process at that point (simulated
/// crash; used by the tests to kill the node in the middle of a swap).
fn fail_point(name: &str) {
    if std::env::var("FALAJ_EDGE_FAIL_POINT").as_deref() == Ok(name) {
        eprintln!("falaj-edge: fail point {name}: aborting");
        std::process::abort();
    }
}

/// Runs [`Fleet::sync`] every `every` until the process ends; errors are logged.
pub async fn pull_loop(fleet: Arc<Fleet>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = fleet.sync().await {
            tracing::error!(error = %format!("{e:#}"), "pulling deployments failed; retrying");
        }
    }
}
