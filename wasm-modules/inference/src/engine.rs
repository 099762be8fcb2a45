//! The model of one instance: read from the model directory, checked, optimised by tract once.
//!
//! The directory (`/model` unless `FALAJ_MODEL_DIR` says otherwise) holds:
//!
//! | file            | required | what                                                        |
//! | --------------- | -------- | ----------------------------------------------------------- |
//! | `model.onnx`    | yes      | the artifact; its sha256 is computed here at load           |
//! | `manifest.json` | no       | `falaj_core::TrainingManifest`: features, task, classes,    |
//! |                 |          | standardisation                                             |
//! | `version.json`  | no       | `falaj_core::ModelVersion`, the registry's                  |
//! |                 |          | `models/<name>/versions/<n>.json` as it is                   |
//!
//! With `version.json` present, the model's digest (and the manifest's, where the record has
//! one) must match the record, or the instance refuses to serve: the edge host writes the
//! record beside the artifacts it verified, and a mismatch means the directory was changed
//! behind its back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use falaj_core::manifest::{Task, TrainingManifest};
use falaj_core::onnx::{OnnxSummary, summarize};
use falaj_core::version::ModelVersion;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::preprocess::Preprocess;

/// Where the model directory is mounted unless `FALAJ_MODEL_DIR` is set.
pub const DEFAULT_MODEL_DIR: &str = "/model";
/// The artifact.
pub const MODEL_FILE: &str = "model.onnx";
/// The training manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The registry's version record.
pub const VERSION_FILE: &str = "version.json";
/// Rows given to tract in one run: bounds the memory of one call whatever the batch size.
pub const CHUNK_ROWS: usize = 512;
/// What runs the model, as reported by `/metadata`.
pub const RUNTIME: &str = "tract-onnx 0.23";

/// Why running rows failed: the status and code the answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// HTTP status (500 for a model that fails; 503/504 for a busy or late host).
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl RunError {
    /// A run error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn failed(message: String) -> Self {
        Self::new(500, "inference_failed", message)
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where the graph runs.
enum Backend {
    /// tract in this process: inside the sandbox in the component, native in a host.
    Local(Arc<TypedRunnableModel>),
    /// The host's native tract, through wasi:nn (the `host-nn` component build).
    #[cfg(all(target_arch = "wasm32", feature = "host-nn"))]
    Host(crate::nn::HostGraph),
}

/// The model directory this instance reads.
pub fn model_dir() -> PathBuf {
    std::env::var_os("FALAJ_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A model that could not be loaded: the instance answers 503 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl From<crate::preprocess::PreprocessError> for LoadError {
    fn from(e: crate::preprocess::PreprocessError) -> Self {
        Self(e.0)
    }
}

/// How the instance got its model, for `/metadata` (proof that it loads once).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadInfo {
    /// Wall-clock time the load finished, milliseconds since the Unix epoch.
    pub loaded_at_unix_ms: u64,
    /// Time spent reading, hashing, parsing and optimising, milliseconds.
    pub load_ms: f64,
}

/// One loaded, optimised model.
pub struct Engine {
    backend: Backend,
    /// Features per row (for an image model: every value of one item, `C×H×W`).
    pub n_features: usize,
    /// Shape of one row as the model takes it: `[n_features]` for tabular models, the fixed
    /// non-batch input dimensions (`[3, 224, 224]`) for image models.
    pub item_shape: Vec<usize>,
    /// Values per output row.
    pub n_outputs: usize,
    /// `sha256:<hex>` of `model.onnx`.
    pub digest: String,
    /// Size of `model.onnx` in bytes.
    pub size: u64,
    /// `sha256:<hex>` of `manifest.json`, when there is one.
    pub manifest_digest: Option<String>,
    /// The training manifest, when there is one.
    pub manifest: Option<TrainingManifest>,
    /// The registry's version record, when there is one.
    pub version: Option<ModelVersion>,
    /// What the ONNX file declares (format, signature, operators).
    pub summary: OnnxSummary,
    /// Standardisation the component applies itself (none when the graph has it folded in).
    pub preprocess: Preprocess,
    /// Load timing.
    pub info: LoadInfo,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model_name())
            .field("digest", &self.digest)
            .field("n_features", &self.n_features)
            .field("n_outputs", &self.n_outputs)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, LoadError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The fixed width of dimension `axis` of the first input, if the file declares one.
fn declared_dim(summary: &OnnxSummary, input: bool, axis: usize) -> Option<usize> {
    let specs = if input {
        &summary.signature.inputs
    } else {
        &summary.signature.outputs
    };
    specs.first()?.shape.get(axis)?.parse().ok()
}

impl Engine {
    /// Loads the model directory: reads and hashes the files, checks them against each other
    /// and against `version.json`, then has tract parse, type and optimise the graph for
    /// `[batch, n_features]` f32 input, and runs one row to be sure it can.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let started = Instant::now();
        let bytes = read(&dir.join(MODEL_FILE))?;
        let digest = sha256(&bytes);
        let summary = summarize(&bytes)
            .map_err(|e| LoadError(format!("{}: {e}", dir.join(MODEL_FILE).display())))?;

        let manifest_bytes = read_optional(&dir.join(MANIFEST_FILE))?;
        let manifest_digest = manifest_bytes.as_deref().map(sha256);
        let manifest: Option<TrainingManifest> = manifest_bytes
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|e| {
                LoadError(format!(
                    "{} is not a training manifest: {e}",
                    dir.join(MANIFEST_FILE).display()
                ))
            })?;
        let version: Option<ModelVersion> = read_optional(&dir.join(VERSION_FILE))?
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|e| {
                LoadError(format!(
                    "{} is not a model version record: {e}",
                    dir.join(VERSION_FILE).display()
                ))
            })?;

        if let Some(v) = &version {
            if v.digest != digest {
                return Err(LoadError(format!(
                    "model.onnx has digest {digest} but version.json (model {} version {}) \
                     records {}; refusing to serve an artifact that is not the registered one",
                    v.model, v.version, v.digest
                )));
            }
            if let (Some(want), Some(got)) = (&v.manifest_digest, &manifest_digest)
                && want != got
            {
                return Err(LoadError(format!(
                    "manifest.json has digest {got} but version.json records {want}"
                )));
            }
            if let Some(m) = &manifest
                && !m.model.is_empty()
                && m.model != v.model
            {
                return Err(LoadError(format!(
                    "manifest.json is for model {:?} but version.json for {:?}",
                    m.model, v.model
                )));
            }
        }

        // An input of rank 3 or more with fixed non-batch dimensions (a CNN's [N, C, H, W])
        // takes rows of C×H×W values, reshaped; rank 2 is the tabular [N, features].
        let rank = summary
            .signature
            .inputs
            .first()
            .map_or(0, |s| s.shape.len());
        let image_dims: Option<Vec<usize>> = (rank > 2)
            .then(|| (1..rank).map(|a| declared_dim(&summary, true, a)).collect())
            .flatten();
        let declared = match &image_dims {
            Some(d) => Some(d.iter().product()),
            None => declared_dim(&summary, true, 1),
        };
        let n_features = match (&manifest, declared) {
            (Some(m), Some(d)) if !m.features.is_empty() && m.features.len() != d => {
                return Err(LoadError(format!(
                    "manifest.json lists {} features but the model's input takes {d}",
                    m.features.len()
                )));
            }
            (Some(m), _) if !m.features.is_empty() => m.features.len(),
            (_, Some(d)) => d,
            _ => {
                return Err(LoadError(
                    "cannot tell how many features a row has: the model's input has no fixed \
                     second dimension and there is no manifest.json listing the features"
                        .into(),
                ));
            }
        };
        if n_features == 0 {
            return Err(LoadError("the model takes zero features".into()));
        }
        let preprocess = Preprocess::from_manifest(manifest.as_ref(), n_features)?;
        let item_shape = image_dims.unwrap_or_else(|| vec![n_features]);
        if let Some(rule) = manifest.as_ref().and_then(|m| m.image.as_ref()) {
            rule.check(&item_shape)
                .map_err(|e| LoadError(format!("manifest.json: {e}")))?;
        }

        let backend = match host_backend(version.as_ref(), &summary) {
            Some(host) => host,
            None => Backend::Local(
                plan(&bytes, manifest.as_ref(), &item_shape)
                    .map_err(|e| LoadError(format!("tract cannot load the model: {e:#}")))?,
            ),
        };

        let mut engine = Self {
            backend,
            n_features,
            item_shape,
            n_outputs: 0,
            digest,
            size: bytes.len() as u64,
            manifest_digest,
            manifest,
            version,
            summary,
            preprocess,
            info: LoadInfo {
                loaded_at_unix_ms: 0,
                load_ms: 0.0,
            },
        };
        // A model that loads but cannot run a row is just as unusable: find out now.
        let out = engine
            .run(&vec![0.0; n_features], 1)
            .map_err(|e| LoadError(format!("the model cannot run one row of zeros: {e}")))?;
        engine.n_outputs = out.len();
        engine.info = LoadInfo {
            loaded_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(engine)
    }

    /// Where the graph runs: `sandbox` (tract in this instance) or `host` (the host's native
    /// tract through wasi:nn). A host-side engine (tests, falaj-edge's host path) says
    /// `sandbox` too: it is the same local tract.
    pub fn runtime(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "sandbox",
            #[cfg(all(target_arch = "wasm32", feature = "host-nn"))]
            Backend::Host(_) => "host",
        }
    }

    /// Model name: from the version record, else the manifest, else `unregistered`.
    pub fn model_name(&self) -> &str {
        if let Some(v) = &self.version {
            return &v.model;
        }
        match &self.manifest {
            Some(m) if !m.model.is_empty() => &m.model,
            _ => "unregistered",
        }
    }

    /// Semantic version: from the version record, else the manifest.
    pub fn semver(&self) -> Option<&str> {
        self.version
            .as_ref()
            .map(|v| v.semver.as_str())
            .or_else(|| self.manifest.as_ref().and_then(|m| m.semver.as_deref()))
    }

    /// The task, when the manifest says.
    pub fn task(&self) -> Option<Task> {
        self.manifest.as_ref().map(|m| m.task)
    }

    /// Feature names in input order (empty without a manifest).
    pub fn features(&self) -> &[String] {
        self.manifest
            .as_ref()
            .map_or(&[], |m| m.features.as_slice())
    }

    /// How an image becomes this model's input, when its manifest says (image classifiers).
    pub fn image_rule(&self) -> Option<&falaj_core::image::ImagePreprocess> {
        self.manifest.as_ref().and_then(|m| m.image.as_ref())
    }

    /// Class labels in output order (empty without a manifest).
    pub fn classes(&self) -> &[String] {
        self.manifest.as_ref().map_or(&[], |m| m.classes.as_slice())
    }

    /// Runs `rows` rows of raw features (row-major, already validated) through preprocessing
    /// and the model; returns the outputs row-major, `n_outputs` per row.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, RunError> {
        if x.len() != rows * self.n_features {
            return Err(RunError::failed(format!(
                "{} values for {rows} rows of {} features",
                x.len(),
                self.n_features
            )));
        }
        let out = if self.preprocess.is_identity() {
            self.run(x, rows)?
        } else {
            self.run(&self.preprocess.apply(x), rows)?
        };
        if out.len() != rows * self.n_outputs {
            return Err(RunError::failed(format!(
                "the model returned {} values for {rows} rows of {} outputs",
                out.len(),
                self.n_outputs
            )));
        }
        Ok(out)
    }

    /// Runs `rows` rows already preprocessed (row-major, `n_features` each) through the
    /// graph, wherever it runs; returns the outputs row-major. falaj-edge's host path calls
    /// this on its own engine for what a component hands it through wasi:nn.
    pub fn run(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, RunError> {
        match &self.backend {
            Backend::Local(plan) => self.run_local(plan, x, rows),
            #[cfg(all(target_arch = "wasm32", feature = "host-nn"))]
            Backend::Host(graph) => {
                let mut shape = vec![rows];
                shape.extend_from_slice(&self.item_shape);
                graph.run(x, &shape)
            }
        }
    }

    fn run_local(
        &self,
        plan: &Arc<TypedRunnableModel>,
        x: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>, RunError> {
        let n = self.n_features;
        let mut out = Vec::new();
        let chunk_rows = if self.item_shape.len() > 1 {
            1
        } else {
            CHUNK_ROWS
        };
        for start in (0..rows).step_by(chunk_rows) {
            let k = chunk_rows.min(rows - start);
            let chunk = &x[start * n..(start + k) * n];
            let vals = (|| -> TractResult<Vec<f32>> {
                let mut shape = vec![k];
                shape.extend_from_slice(&self.item_shape);
                let input = Tensor::from_shape(&shape, chunk)?;
                let res = plan.run(tvec!(input.into()))?;
                let view = res[0].to_plain_array_view::<f32>()?;
                Ok(view.iter().copied().collect())
            })()
            .map_err(|e| RunError::failed(format!("running the model failed: {e:#}")))?;
            if vals.is_empty() || !vals.len().is_multiple_of(k) {
                return Err(RunError::failed(format!(
                    "the model returned {} values for {k} rows",
                    vals.len()
                )));
            }
            out.extend(vals);
        }
        Ok(out)
    }
}

/// The host-nn build hands the graph to the host when the host holds this very artifact
/// (named by the digest the host verified and wrote into version.json).
#[cfg(all(target_arch = "wasm32", feature = "host-nn"))]
fn host_backend(version: Option<&ModelVersion>, summary: &OnnxSummary) -> Option<Backend> {
    let input = summary
        .signature
        .inputs
        .first()
        .map_or("", |i| i.name.as_str());
    crate::nn::HostGraph::open(&version?.digest, input).map(Backend::Host)
}

/// Any other build runs the graph itself.
#[cfg(not(all(target_arch = "wasm32", feature = "host-nn")))]
fn host_backend(_: Option<&ModelVersion>, _: &OnnxSummary) -> Option<Backend> {
    None
}

/// tract's plan for the model: parsed, typed for `[batch, item_shape...]` f32 input, and
/// optimised. Done once per instance (and once per version in falaj-edge's host path).
fn plan(
    bytes: &[u8],
    manifest: Option<&TrainingManifest>,
    item_shape: &[usize],
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    // A model with several outputs (a label beside the probabilities): read the one the
    // manifest names; the others are pruned.
    if let Some(o) = manifest.and_then(|m| m.output.as_deref()) {
        model.select_outputs_by_name([o])?;
    }
    // Image models get a concrete batch of 1 and run item by item: with a symbolic batch
    // tract cannot specialise its convolution kernels, and MobileNetV2 runs about 5x slower
    // (measured: benches/edge.rs, native_tract vs native_tract_batch1).
    let batch = if item_shape.len() > 1 {
        1.to_dim()
    } else {
        model.symbols.sym("N").to_dim()
    };
    let mut dims: TVec<TDim> = tvec![batch];
    dims.extend(item_shape.iter().map(|d| d.to_dim()));
    model
        .with_input_fact(0, f32::fact(dims).into())?
        .into_optimized()?
        .into_runnable()
}
