//! Validation gates: runs a registered ONNX model in tract on a holdout CSV, measures every
//! gate of the model's policy and writes the immutable gate report.
//!
//! This is the only crate outside the edge component that links tract. A model that does not
//! load or run in tract is not an error of the command: the version is rejected, and the
//! report records the loader's message. The request and report types are `falaj`'s
//! ([`falaj::reports`]), re-exported here.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use falaj::RegistryError;
use falaj::registry::{Registry, now};
use falaj::store::Precondition;
use falaj_core::manifest::Task;
use falaj_core::policy::{
    Bound, GatePolicy, GateReport, GateResult, HoldoutRef, Metric, policy_digest,
};
use falaj_core::promotion::Action;
use falaj_core::{ModelVersion, TrainingManifest};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

pub use falaj::reports::{
    GateError, Holdout, Validation, artifact_of, latest_report, manifest_of, report_key, reports,
};

pub mod metrics;
pub mod pipeline;
pub mod sandbox;
mod validator;

pub use pipeline::{FunctionError, handle_event, invoke, validate_function, validate_version};
pub use validator::LocalValidator;

/// Name and version of this evaluator, recorded in every report.
pub const EVALUATOR: &str = concat!(
    "falaj-gates ",
    env!("CARGO_PKG_VERSION"),
    " (tract-onnx 0.23)"
);

/// Rows per inference batch: large enough to amortise tract's per-call cost, small enough
/// to keep memory flat on a 100k-row holdout.
const BATCH: usize = 8192;

/// Largest holdout the gates read (`FALAJ_MAX_HOLDOUT_BYTES` overrides): it is held in
/// memory whole, so a bigger one is refused before a byte is read.
pub const MAX_HOLDOUT_BYTES: u64 = 512 << 20;
/// Largest artifact the gates load into tract (`FALAJ_MAX_ARTIFACT_BYTES` overrides).
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

fn limit(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How the gates name and read a [`Holdout`].
trait HoldoutSource {
    fn name(&self) -> String;
    async fn read(&self, reg: &Registry) -> Result<Bytes, GateError>;
}

impl HoldoutSource for Holdout {
    fn name(&self) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Store(k) => format!("store:{k}"),
            Self::Bytes { name, .. } => name.clone(),
        }
    }

    async fn read(&self, reg: &Registry) -> Result<Bytes, GateError> {
        let name = self.name();
        let max = limit("FALAJ_MAX_HOLDOUT_BYTES", MAX_HOLDOUT_BYTES);
        let too_big = |len: u64| GateError::Holdout {
            source_name: name.clone(),
            reason: format!(
                "it is {len} bytes; the gates read holdouts of at most {max} bytes (FALAJ_MAX_HOLDOUT_BYTES): sample it down"
            ),
        };
        match self {
            Self::Path(p) => {
                if let Ok(m) = tokio::fs::metadata(p).await
                    && m.len() > max
                {
                    return Err(too_big(m.len()));
                }
                tokio::fs::read(p)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| GateError::Holdout {
                        source_name: name,
                        reason: format!("cannot read: {e}"),
                    })
            }
            Self::Store(k) => match reg.store().get(k).await.map_err(RegistryError::from)? {
                Some(o) if o.bytes.len() as u64 > max => Err(too_big(o.bytes.len() as u64)),
                Some(o) => Ok(o.bytes),
                None => Err(GateError::Holdout {
                    source_name: name,
                    reason: "no such object in the store".into(),
                }),
            },
            Self::Bytes { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// A holdout parsed against a model's manifest.
#[derive(Debug, Clone)]
pub struct HoldoutData {
    /// Row-major features, `rows x n_features`, in the manifest's order.
    pub x: Vec<f32>,
    /// Number of features.
    pub n_features: usize,
    /// Targets: class index (classification) or value (regression).
    pub y: Vec<f64>,
    /// Sensitive attribute per row, when the policy has a fairness gate.
    pub groups: Option<Vec<String>>,
    /// Rows.
    pub rows: usize,
}

/// Parses a holdout CSV for `manifest`, checking every column is present and numeric.
pub fn parse_holdout(
    csv_bytes: &[u8],
    manifest: &TrainingManifest,
    sensitive: Option<&str>,
) -> Result<HoldoutData, HoldoutParseError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| HoldoutParseError::Read(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let pos = |c: &str| headers.iter().position(|h| h == c);
    let mut missing: Vec<String> = manifest
        .features
        .iter()
        .filter(|f| pos(f).is_none())
        .cloned()
        .collect();
    if pos(&manifest.target).is_none() {
        missing.push(manifest.target.clone());
    }
    if !missing.is_empty() {
        return Err(HoldoutParseError::Missing(missing));
    }
    let sens_idx = match sensitive {
        Some(c) => Some(pos(c).ok_or_else(|| HoldoutParseError::NoSensitive(headers.clone()))?),
        None => None,
    };
    let feat_idx: Vec<usize> = manifest.features.iter().filter_map(|f| pos(f)).collect();
    let target_idx = pos(&manifest.target).unwrap_or(0);
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut groups = sens_idx.map(|_| Vec::new());
    let mut rec = csv::ByteRecord::new();
    let mut row = 0usize;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(HoldoutParseError::Read(e.to_string())),
        }
        row += 1;
        let field = |i: usize| {
            std::str::from_utf8(rec.get(i).unwrap_or(b""))
                .unwrap_or("")
                .trim()
        };
        for (fi, &i) in feat_idx.iter().enumerate() {
            let v: f32 = field(i)
                .parse()
                .map_err(|_| HoldoutParseError::NotNumeric {
                    row,
                    column: manifest.features[fi].clone(),
                    value: field(i).to_string(),
                })?;
            if !v.is_finite() {
                return Err(HoldoutParseError::NotFinite {
                    row,
                    column: manifest.features[fi].clone(),
                    value: field(i).to_string(),
                });
            }
            x.push(v);
        }
        let t = field(target_idx);
        let target = match manifest.task {
            Task::Regression => t
                .parse::<f64>()
                .map_err(|_| HoldoutParseError::NotNumeric {
                    row,
                    column: manifest.target.clone(),
                    value: t.to_string(),
                })?,
            Task::Classification => match manifest.classes.iter().position(|c| c == t) {
                Some(i) => i as f64,
                None if manifest.classes.is_empty() => {
                    t.parse::<u32>().map(f64::from).map_err(|_| {
                        HoldoutParseError::UnknownClass {
                            row,
                            value: t.to_string(),
                            classes: manifest.classes.clone(),
                        }
                    })?
                }
                None => {
                    return Err(HoldoutParseError::UnknownClass {
                        row,
                        value: t.to_string(),
                        classes: manifest.classes.clone(),
                    });
                }
            },
        };
        if !target.is_finite() {
            return Err(HoldoutParseError::NotFinite {
                row,
                column: manifest.target.clone(),
                value: t.to_string(),
            });
        }
        y.push(target);
        if let (Some(g), Some(i)) = (groups.as_mut(), sens_idx) {
            g.push(field(i).to_string());
        }
    }
    if row == 0 {
        return Err(HoldoutParseError::Read("it has no data rows".into()));
    }
    if row > 1 && y.iter().all(|t| *t == y[0]) {
        return Err(HoldoutParseError::ConstantTarget {
            column: manifest.target.clone(),
            rows: row,
        });
    }
    Ok(HoldoutData {
        x,
        n_features: feat_idx.len(),
        y,
        groups,
        rows: row,
    })
}

/// Why a holdout could not be parsed (see [`parse_holdout`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HoldoutParseError {
    /// CSV-level problem.
    #[error("{0}")]
    Read(String),
    /// Feature or target columns missing.
    #[error("missing columns {0:?}")]
    Missing(Vec<String>),
    /// The sensitive column is missing; holds the columns present.
    #[error("sensitive column missing (columns: {0:?})")]
    NoSensitive(Vec<String>),
    /// A value is not a number.
    #[error("row {row}, column {column:?}: {value:?} is not a number")]
    NotNumeric {
        /// 1-based data row.
        row: usize,
        /// Column.
        column: String,
        /// Value.
        value: String,
    },
    /// NaN or an infinity: the model would score it as some class and the gates would count it.
    #[error(
        "row {row}, column {column:?}: {value:?} is not a finite number; remove or impute the row"
    )]
    NotFinite {
        /// 1-based data row.
        row: usize,
        /// Column.
        column: String,
        /// Value.
        value: String,
    },
    /// Every row has the same target: accuracy would measure nothing.
    #[error(
        "column {column:?} holds the same target in all {rows} rows; a holdout must hold more than one class or value"
    )]
    ConstantTarget {
        /// Target column.
        column: String,
        /// Rows.
        rows: usize,
    },
    /// A target label the model does not know.
    #[error("row {row}: target {value:?} is not one of the model's classes {classes:?}")]
    UnknownClass {
        /// 1-based data row.
        row: usize,
        /// Value.
        value: String,
        /// Known classes.
        classes: Vec<String>,
    },
}

/// A model loaded in tract, ready to run batches of rows.
#[derive(Clone)]
pub struct LoadedModel {
    plan: Arc<TypedRunnableModel>,
    n_features: usize,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedModel({} features)", self.n_features)
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".into())
}

/// A model tract cannot load or run, or whose outputs do not fit its manifest or the holdout:
/// not an error of the command. The version is rejected and this message is recorded in its
/// gate report (`error`, and the failed `edge.load` gate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    /// What tract or the check said.
    pub message: String,
}

impl From<String> for ModelError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

/// Row-major raw rows as the edge component gives them to the graph: standardised when the
/// manifest says standardisation is not folded into the graph (`falaj_core::preprocess`, the
/// component's own code), unchanged otherwise. The gates score these, so a model is gated on
/// what it serves.
pub fn served_rows(
    manifest: &TrainingManifest,
    n_features: usize,
    x: &[f32],
) -> Result<Vec<f32>, ModelError> {
    falaj_core::preprocess::Preprocess::from_manifest(Some(manifest), n_features)
        .map(|pre| pre.apply(x))
        .map_err(|e| ModelError::from(e.to_string()))
}

impl LoadedModel {
    /// Loads and optimises `onnx` for inputs of `n_features`; the error is tract's message.
    pub fn load(onnx: &[u8], n_features: usize) -> Result<Self, ModelError> {
        let run = || -> TractResult<Arc<TypedRunnableModel>> {
            let model = tract_onnx::onnx().model_for_read(&mut &onnx[..])?;
            let batch = model.symbols.sym("N");
            model
                .with_input_fact(0, f32::fact([batch.to_dim(), n_features.to_dim()]).into())?
                .into_optimized()?
                .into_runnable()
        };
        let plan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .map_err(|p| format!("tract panicked loading the model: {}", panic_message(p)))?
            .map_err(|e| format!("{e:#}"))?;
        let m = Self { plan, n_features };
        // A model that loads but cannot run a row is just as unusable at the edge.
        m.predict(&vec![0.0; n_features], 1)?;
        Ok(m)
    }

    /// Runs `rows` rows; returns the outputs row-major and the width of one output row.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<(Vec<f32>, usize), ModelError> {
        let mut out = Vec::new();
        let mut width = 0;
        for start in (0..rows).step_by(BATCH) {
            let n = BATCH.min(rows - start);
            let chunk = &x[start * self.n_features..(start + n) * self.n_features];
            let run = || -> TractResult<Vec<f32>> {
                let input =
                    tract_ndarray::Array2::from_shape_vec((n, self.n_features), chunk.to_vec())?;
                let res = self.plan.run(tvec!(input.into_tensor().into()))?;
                let view = res[0].to_plain_array_view::<f32>()?;
                Ok(view.iter().copied().collect())
            };
            let vals = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .map_err(|p| format!("tract panicked running the model: {}", panic_message(p)))?
                .map_err(|e| format!("running the model failed: {e:#}"))?;
            if vals.len() % n != 0 || vals.is_empty() {
                return Err(
                    format!("the model returned {} values for {n} rows", vals.len()).into(),
                );
            }
            width = vals.len() / n;
            out.extend(vals);
        }
        Ok((out, width))
    }

    /// Times `runs` single-row inferences and returns the p99 in milliseconds.
    pub fn single_row_p99_ms(&self, x: &[f32], rows: usize, runs: u32) -> Result<f64, ModelError> {
        let mut times = Vec::with_capacity(runs as usize);
        for i in 0..(runs as usize + 10) {
            let r = i % rows;
            let row = &x[r * self.n_features..(r + 1) * self.n_features];
            let t = Instant::now();
            self.predict(row, 1)?;
            if i >= 10 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(metrics::percentile(&mut times, 0.99))
    }
}

/// What one model scored on a holdout.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Metric values (those defined for the task).
    pub metrics: std::collections::BTreeMap<Metric, f64>,
    /// Predicted class index (classification) or value (regression), per row.
    pub predictions: Vec<f64>,
    /// Score of the favourable class per row (classification), for fairness and AUC.
    pub positive_scores: Vec<f64>,
}

/// Runs the model on the holdout and computes every metric of the task.
pub fn score(
    model: &LoadedModel,
    data: &HoldoutData,
    x: &[f32],
    task: Task,
    n_classes: usize,
    positive: usize,
) -> Result<Scored, ModelError> {
    let (out, width) = model.predict(x, data.rows)?;
    match task {
        Task::Regression => {
            if width != 1 {
                return Err(format!(
                    "a regression model must output one value per row, this one outputs {width}"
                )
                .into());
            }
            let pred: Vec<f64> = out.iter().map(|v| f64::from(*v)).collect();
            Ok(Scored {
                metrics: metrics::regression(&data.y, &pred),
                positive_scores: pred.clone(),
                predictions: pred,
            })
        }
        Task::Classification => {
            let k = if width == 1 { 2 } else { width };
            if n_classes > 0 && k != n_classes {
                return Err(format!(
                    "the model outputs {width} value(s) per row but its manifest lists {n_classes} classes"
                ).into());
            }
            let probs: Vec<f64> = if width == 1 {
                out.iter()
                    .flat_map(|p| [1.0 - f64::from(*p), f64::from(*p)])
                    .collect()
            } else {
                out.iter().map(|v| f64::from(*v)).collect()
            };
            let truth: Vec<usize> = data.y.iter().map(|v| *v as usize).collect();
            if let Some(bad) = truth.iter().find(|t| **t >= k) {
                return Err(format!(
                    "the holdout has class index {bad} but the model has {k} outputs"
                )
                .into());
            }
            let pred = metrics::argmax_rows(&probs, k);
            let positive_scores = probs.chunks(k).map(|r| r[positive.min(k - 1)]).collect();
            Ok(Scored {
                metrics: metrics::classification(&truth, &pred, &probs, k, positive.min(k - 1)),
                predictions: pred.iter().map(|p| *p as f64).collect(),
                positive_scores,
            })
        }
    }
}

/// Everything the gates need besides the store.
#[derive(Debug, Clone)]
pub struct GateInputs<'a> {
    /// The version.
    pub version: &'a ModelVersion,
    /// Its manifest.
    pub manifest: &'a TrainingManifest,
    /// ONNX bytes.
    pub onnx: &'a [u8],
    /// The policy.
    pub policy: &'a GatePolicy,
    /// Parsed holdout.
    pub data: &'a HoldoutData,
    /// The production version's model and manifest, for the no-regression gate.
    pub baseline: Option<(u64, &'a [u8], &'a TrainingManifest)>,
}

fn positive_class(manifest: &TrainingManifest, policy: &GatePolicy) -> usize {
    let n = manifest.classes.len();
    policy
        .fairness
        .as_ref()
        .and_then(|f| f.positive_class.as_ref())
        .and_then(|c| manifest.classes.iter().position(|k| k == c))
        .unwrap_or(if n == 0 { 1 } else { n - 1 })
}

/// Measures every gate: the pure part of validation (no store access), run off the async
/// runtime. `Err` carries the loader's message: the version is then rejected.
pub fn measure(inp: &GateInputs<'_>) -> Result<Vec<GateResult>, ModelError> {
    let v = inp.version;
    let m = inp.manifest;
    let p = inp.policy;
    let d = inp.data;
    let mut gates = Vec::new();
    let preprocess = |m: &TrainingManifest, x: &[f32]| served_rows(m, d.n_features, x);
    let x = preprocess(m, &d.x)?;
    let model = LoadedModel::load(inp.onnx, d.n_features)?;
    let positive = positive_class(m, p);
    let scored = score(&model, d, &x, m.task, m.classes.len(), positive)?;
    for g in &p.metrics {
        let name = format!("metrics.{}", g.metric.name());
        if g.metric.task() != m.task {
            gates.push(GateResult {
                gate: name,
                measured: None,
                bound: Some(g.bound),
                passed: false,
                detail: format!(
                    "{} is not defined for a {:?} model",
                    g.metric.name(),
                    m.task
                ),
            });
            continue;
        }
        let value = scored.metrics.get(&g.metric).copied().unwrap_or(f64::NAN);
        gates.push(GateResult::measured(name, value, g.bound));
    }
    if let Some(f) = &p.fairness {
        let groups = d.groups.as_deref().unwrap_or(&[]);
        let (favourable, actual): (Vec<bool>, Vec<bool>) = match m.task {
            Task::Classification => (
                scored
                    .predictions
                    .iter()
                    .map(|c| *c as usize == positive)
                    .collect(),
                d.y.iter().map(|c| *c as usize == positive).collect(),
            ),
            Task::Regression => {
                let t = f
                    .positive_threshold
                    .unwrap_or_else(|| metrics::percentile(&mut d.y.clone(), 0.5));
                (
                    scored.predictions.iter().map(|v| *v > t).collect(),
                    d.y.iter().map(|v| *v > t).collect(),
                )
            }
        };
        let fair = metrics::fairness(groups, &favourable, &actual);
        let detail = format!("{} groups in {:?}", fair.groups, f.sensitive_column);
        if let Some(max) = f.max_demographic_parity {
            gates.push(
                GateResult::measured(
                    "fairness.demographic_parity",
                    fair.demographic_parity,
                    Bound::Max(max),
                )
                .with_detail(detail.clone()),
            );
        }
        if let Some(max) = f.max_equal_opportunity {
            gates.push(
                GateResult::measured(
                    "fairness.equal_opportunity",
                    fair.equal_opportunity,
                    Bound::Max(max),
                )
                .with_detail(detail),
            );
        }
    }
    if let Some(r) = &p.robustness {
        // Noise on the raw features, as the world would add it; then the same preprocessing.
        let noisy = preprocess(
            m,
            &metrics::add_noise(&d.x, d.n_features, r.noise_std, r.seed),
        )?;
        let noisy_scored = score(&model, d, &noisy, m.task, m.classes.len(), positive)?;
        let clean = scored.metrics.get(&r.metric).copied().unwrap_or(f64::NAN);
        let dirty = noisy_scored
            .metrics
            .get(&r.metric)
            .copied()
            .unwrap_or(f64::NAN);
        gates.push(
            GateResult::measured(
                "robustness.noise_drop",
                r.metric.drop(clean, dirty),
                Bound::Max(r.max_drop),
            )
            .with_detail(format!(
                "{} {clean:.4} clean, {dirty:.4} with noise std {} x feature std (seed {})",
                r.metric.name(),
                r.noise_std,
                r.seed
            )),
        );
    }
    if let Some(max) = p.edge.max_latency_p99_ms {
        let p99 = model.single_row_p99_ms(&x, d.rows, p.edge.latency_runs)?;
        gates.push(
            GateResult::measured("edge.latency_p99_ms", p99, Bound::Max(max))
                .with_detail(format!("{} single-row runs in tract", p.edge.latency_runs)),
        );
    }
    if let Some(max) = p.edge.max_size_bytes {
        gates.push(GateResult::measured(
            "edge.size_bytes",
            v.size as f64,
            Bound::Max(max as f64),
        ));
    }
    if p.edge.check_ops {
        let ops = falaj_core::onnx::summarize(inp.onnx)
            .map(|s| s.ops)
            .map_err(|e| e.to_string())?;
        let bad = falaj_core::policy::unsupported_ops(&ops);
        gates.push(
            GateResult::measured("edge.ops", bad.len() as f64, Bound::Max(0.0)).with_detail(
                if bad.is_empty() {
                    format!("ops {} all supported", ops.join(", "))
                } else {
                    format!("unsupported by the edge component: {}", bad.join(", "))
                },
            ),
        );
    }
    gates.push(residency_gate(v, &p.allowed_regions));
    if let Some(n) = &p.no_regression {
        gates.push(match inp.baseline {
            None => GateResult::measured("no_regression", 0.0, Bound::Max(n.max_drop))
                .with_detail("no version at production: nothing to regress from"),
            Some((pv, bytes, pm)) => {
                let base = LoadedModel::load(bytes, d.n_features)
                    .and_then(|bm| {
                        score(
                            &bm,
                            d,
                            &preprocess(pm, &d.x)?,
                            pm.task,
                            pm.classes.len(),
                            positive_class(pm, p),
                        )
                    })
                    .map(|s| s.metrics.get(&n.metric).copied().unwrap_or(f64::NAN));
                let cand = scored.metrics.get(&n.metric).copied().unwrap_or(f64::NAN);
                match base {
                    Ok(b) => GateResult::measured(
                        "no_regression",
                        n.metric.drop(b, cand),
                        Bound::Max(n.max_drop),
                    )
                    .with_detail(format!(
                        "{} {cand:.4} vs {b:.4} for production ({}@{pv}) on the same holdout",
                        n.metric.name(),
                        v.model
                    )),
                    Err(e) => GateResult {
                        gate: "no_regression".into(),
                        measured: None,
                        bound: Some(Bound::Max(n.max_drop)),
                        passed: false,
                        detail: format!(
                            "production {}@{pv} could not be scored on this holdout: {e}",
                            v.model
                        ),
                    },
                }
            }
        });
    }
    Ok(gates)
}

/// Every lineage dataset, and the version itself, must be in an allowed region.
fn residency_gate(v: &ModelVersion, allowed: &[String]) -> GateResult {
    let mut problems = Vec::new();
    let ok = |r: &str| allowed.iter().any(|a| a == r);
    if !ok(&v.region) {
        problems.push(format!("the version's store is in {}", v.region));
    }
    for d in &v.lineage.datasets {
        let region = match (&d.region, d.uri.split_once("://")) {
            (Some(r), _) => Some(r.clone()),
            // A remote URI without a recorded region cannot be shown to be in the UAE.
            (None, Some((scheme, _))) if scheme != "dir" && scheme != "file" => None,
            // Local data lives where the store lives.
            (None, _) => Some(v.region.clone()),
        };
        match region {
            Some(r) if ok(&r) => {}
            Some(r) => problems.push(format!("{} is in {r}", d.uri)),
            None => problems.push(format!("{} has no recorded region", d.uri)),
        }
    }
    let detail = if problems.is_empty() {
        format!(
            "{} lineage URI(s) in {}",
            v.lineage.datasets.len(),
            allowed.join(", ")
        )
    } else {
        problems.join("; ")
    };
    GateResult::measured("residency", problems.len() as f64, Bound::Max(0.0)).with_detail(detail)
}

async fn write_report(reg: &Registry, mut report: GateReport) -> Result<GateReport, RegistryError> {
    let existing = reports(reg, &report.model, report.version).await?;
    let mut run = existing.last().map_or(1, |r| r.run + 1);
    for _ in 0..1000 {
        report.run = run;
        let key = report_key(&report.model, report.version, run);
        match reg.put_json(&key, &report, Precondition::IfAbsent).await {
            Ok(_) => return Ok(report),
            Err(RegistryError::Store(e)) if e.is_conflict() => run += 1,
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Contention {
        what: format!("a gate report of {}@{}", report.model, report.version),
        attempts: 1000,
    })
}

/// Validates `model@version`: checks the actor's role, reads the policy, holdout, model and
/// the production baseline, measures every gate, writes the report and audits it.
///
/// Returns the report; `report.passed` is false when the version is rejected (including a
/// model tract cannot load, whose message is in `report.error`).
pub async fn validate(reg: &Registry, req: Validation) -> Result<GateReport, GateError> {
    let subject = format!("{}@{}", req.model, req.version);
    falaj::access::authorize(reg, &req.model, &req.actor, Action::Validate, &subject).await?;
    let model_rec = reg.model(&req.model).await?;
    let version = reg.version(&req.model, req.version).await?;
    let (policy_name, policy_src) = match req.policy.clone() {
        Some(p) => p,
        None => (
            format!("{}/gate_policy", req.model),
            model_rec
                .gate_policy
                .clone()
                .ok_or_else(|| GateError::NoPolicy {
                    model: req.model.clone(),
                })?,
        ),
    };
    let policy = GatePolicy::parse(&policy_src, &policy_name)?;
    // A policy of the caller's own is advisory: its report is kept, never counted.
    let attached_digest = model_rec.gate_policy.as_deref().map(policy_digest);
    let advisory = attached_digest.as_deref() != Some(policy_digest(&policy_src).as_str());
    let manifest = manifest_of(reg, &version).await?;
    if let Some(t) = policy.task()
        && t != manifest.task
    {
        return Err(GateError::Incompatible {
            model: req.model.clone(),
            version: req.version,
            reason: format!(
                "the policy's metrics are for {t:?} but the model was trained for {:?}",
                manifest.task
            ),
        });
    }
    let source_name = req.holdout.name();
    let csv_bytes = req.holdout.read(reg).await?;
    let holdout_digest = format!("sha256:{}", hex::encode(Sha256::digest(&csv_bytes)));
    let sensitive = policy.fairness.as_ref().map(|f| f.sensitive_column.clone());
    let data = {
        let (m, s) = (manifest.clone(), sensitive.clone());
        let b = csv_bytes.clone();
        tokio::task::spawn_blocking(move || parse_holdout(&b, &m, s.as_deref()))
            .await
            .map_err(|e| GateError::Holdout {
                source_name: source_name.clone(),
                reason: e.to_string(),
            })?
    };
    let data = data.map_err(|e| match e {
        HoldoutParseError::Missing(missing) => GateError::HoldoutMismatch {
            source_name: source_name.clone(),
            missing,
            features: manifest.features.clone(),
            target: manifest.target.clone(),
        },
        HoldoutParseError::NoSensitive(columns) => {
            let f = policy
                .fairness
                .as_ref()
                .expect("only asked with a fairness gate");
            GateError::MissingSensitiveColumn {
                policy: policy_name.clone(),
                line: f.sensitive_line,
                column: f.sensitive_column.clone(),
                source_name: source_name.clone(),
                columns,
            }
        }
        other => GateError::Holdout {
            source_name: source_name.clone(),
            reason: other.to_string(),
        },
    })?;
    if let Some(input) = version.signature.inputs.first()
        && let Some(width) = input.shape.get(1).and_then(|d| d.parse::<usize>().ok())
        && width != data.n_features
    {
        return Err(GateError::Incompatible {
            model: req.model.clone(),
            version: req.version,
            reason: format!(
                "the ONNX input {:?} takes {width} features but the manifest lists {}",
                input.name, data.n_features
            ),
        });
    }
    let max_artifact = limit("FALAJ_MAX_ARTIFACT_BYTES", MAX_ARTIFACT_BYTES);
    if version.size > max_artifact {
        return Err(GateError::Incompatible {
            model: req.model.clone(),
            version: req.version,
            reason: format!(
                "the artifact is {} bytes; the gates load at most {max_artifact} (FALAJ_MAX_ARTIFACT_BYTES)",
                version.size
            ),
        });
    }
    let onnx = artifact_of(reg, &version).await?;
    let baseline = match &policy.no_regression {
        None => None,
        Some(_) => match reg.alias(&req.model, "production").await? {
            Some((a, _)) if a.version.is_some_and(|p| p != req.version) => {
                let pv = reg
                    .version(&req.model, a.version.unwrap_or_default())
                    .await?;
                let pm = manifest_of(reg, &pv).await?;
                Some((pv.version, artifact_of(reg, &pv).await?, pm))
            }
            _ => None,
        },
    };
    let limits = sandbox::Limits::from_env().map_err(|e| GateError::Incompatible {
        model: req.model.clone(),
        version: req.version,
        reason: e.to_string(),
    })?;
    let rows = data.rows;
    let measured = sandbox::measure_within(
        sandbox::Measurement {
            version: version.clone(),
            manifest: manifest.clone(),
            policy: (policy_name.clone(), policy_src.clone()),
            holdout: (csv_bytes.clone(), sensitive.clone()),
            data,
            onnx: onnx.clone(),
            baseline,
        },
        &limits,
    )
    .await
    .map(|g| (g, rows));
    let (gates, error, rows) = match measured {
        Ok((g, rows)) => (g, None, rows as u64),
        Err(e) => (
            vec![GateResult {
                gate: "edge.load".into(),
                measured: None,
                bound: None,
                passed: false,
                detail: e.message.clone(),
            }],
            Some(e.message),
            0,
        ),
    };
    let report = GateReport {
        model: req.model.clone(),
        version: req.version,
        digest: version.digest.clone(),
        run: 0,
        policy_digest: policy_digest(&policy_src),
        holdout: Some(HoldoutRef {
            uri: source_name,
            digest: holdout_digest,
            rows,
        }),
        evaluator: EVALUATOR.into(),
        evaluated_at: now(),
        evaluated_by: req.actor.clone(),
        passed: GateReport::decide(&error, &gates),
        error,
        gates,
        advisory,
    };
    let report = write_report(reg, report).await?;
    reg.append_audit(
        &req.model,
        &req.actor,
        match (report.advisory, report.passed) {
            (true, _) => "gates.advisory",
            (false, true) => "gates.passed",
            (false, false) => "gates.failed",
        },
        &subject,
        serde_json::json!({
            "run": report.run,
            "failed": report.failures().iter().map(|g| g.gate.clone()).collect::<Vec<_>>(),
            "error": report.error,
            "holdout": report.holdout.as_ref().map(|h| h.digest.clone()),
            "policy": report.policy_digest,
            "passed": report.passed,
        }),
    )
    .await?;
    Ok(report)
}
