//! A model loaded in tract: its rows as the edge serves them, its outputs, its scores.

use std::sync::Arc;
use std::time::Instant;

use falaj_core::TrainingManifest;
use falaj_core::manifest::Task;
use falaj_core::policy::Metric;
use tract_onnx::prelude::*;

use crate::metrics;

use crate::holdout::*;

/// Rows per inference batch: large enough to amortise tract's per-call cost, small enough
/// to keep memory flat on a 100k-row holdout.
const BATCH: usize = 8192;

/// A model loaded in tract, ready to run batches of rows.
#[derive(Clone)]
pub struct LoadedModel {
    plan: Arc<TypedRunnableModel>,
    n_features: usize,
    /// One row's shape as the graph takes it: `[features]`, or `[C, H, W]`.
    item: Vec<usize>,
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
    /// Loads and optimises `onnx` for rows of shape `item` (`[features]`, or an image's
    /// `[C, H, W]`), reading the graph output `output` (the manifest's; else the first); the
    /// error is tract's message.
    pub fn load(onnx: &[u8], item: &[usize], output: Option<&str>) -> Result<Self, ModelError> {
        let n_features: usize = item.iter().product();
        let run = || -> TractResult<Arc<TypedRunnableModel>> {
            let mut model = tract_onnx::onnx().model_for_read(&mut &onnx[..])?;
            if let Some(o) = output {
                // Only this output is computed: the others (a label) are pruned.
                model.select_outputs_by_name([o])?;
            }
            // Image models run item by item with a concrete batch of 1, as the edge runs them:
            // with a symbolic batch tract cannot specialise its convolutions (MobileNetV3
            // scored 6x slower in scripts/bench-image-gates.sh).
            let batch = if item.len() > 1 {
                1.to_dim()
            } else {
                model.symbols.sym("N").to_dim()
            };
            model
                .with_input_fact(0, {
                    let mut dims: TVec<TDim> = tvec![batch];
                    dims.extend(item.iter().map(|d| d.to_dim()));
                    f32::fact(dims).into()
                })?
                .into_optimized()?
                .into_runnable()
        };
        let plan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .map_err(|p| format!("tract panicked loading the model: {}", panic_message(p)))?
            .map_err(|e| format!("{e:#}"))?;
        let m = Self {
            plan,
            n_features,
            item: item.to_vec(),
        };
        // A model that loads but cannot run a row is just as unusable at the edge.
        m.predict(&vec![0.0; n_features], 1)?;
        Ok(m)
    }

    /// Runs `rows` rows; returns the outputs row-major and the width of one output row.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<(Vec<f32>, usize), ModelError> {
        let mut out = Vec::new();
        let mut width = 0;
        let step = if self.item.len() > 1 { 1 } else { BATCH };
        for start in (0..rows).step_by(step) {
            let n = step.min(rows - start);
            let chunk = &x[start * self.n_features..(start + n) * self.n_features];
            let run = || -> TractResult<Vec<f32>> {
                let mut shape = vec![n];
                shape.extend(&self.item);
                let input = tract_ndarray::ArrayD::from_shape_vec(shape, chunk.to_vec())?;
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
