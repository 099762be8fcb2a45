//! Gate policies and gate reports: what a version must measure up to before it may be
//! promoted, parsed from the TOML file users keep next to their code.
//!
//! Parsing keeps the line of every gate, so a policy that names an unknown gate, gives a
//! threshold out of range, or (found later, against a holdout) a sensitive column that is not
//! there, is reported with the line to fix. The decisions here are pure: the `falaj` crate
//! measures, this module judges.
//!
//! ```toml
//! [metrics]
//! accuracy = { min = 0.90 }
//! roc_auc = { min = 0.95 }
//!
//! [fairness]
//! sensitive_column = "sex"
//! max_demographic_parity = 0.10
//! max_equal_opportunity = 0.10
//!
//! [robustness]
//! noise_std = 0.05        # Gaussian noise, as a fraction of each feature's std
//! seed = 7
//! metric = "accuracy"
//! max_drop = 0.03
//!
//! [edge]
//! max_latency_p99_ms = 5.0
//! max_size_bytes = 10_000_000
//!
//! [residency]
//! allowed_regions = ["me-central-1"]
//!
//! [no_regression]
//! metric = "accuracy"
//! max_drop = 0.01
//!
//! [holdout]
//! key = "datasets/wine/holdout.csv"   # store key the validate function scores new versions on
//!
//! [promotion]
//! approvals = 2           # at least 2: four eyes, none of them the author
//! auto_staging = true     # the validate function promotes to staging when every gate passes
//! ```

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::manifest::Task;

/// The ONNX operators the edge inference component runs: what the trainer exports, the
/// operators of the torchvision classifiers in the model cases (squeezenet, MobileNetV3,
/// ShuffleNetV2: HardSwish, channel shuffles by Reshape/Transpose, Slice, ...), and the
/// `ai.onnx.ml` tree ensemble scikit-learn's forests export; each runs in a model case the
/// component and the gates are checked on (tests/fixtures/models). A model using anything else fails the
/// edge-compatibility gate.
pub const EDGE_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Erf",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "ai.onnx.ml:TreeEnsembleClassifier",
];

/// Operators of `ops` the edge component does not support, in order.
pub fn unsupported_ops(ops: &[String]) -> Vec<String> {
    ops.iter()
        .filter(|o| !EDGE_OPS.contains(&o.as_str()))
        .cloned()
        .collect()
}

/// Approvals needed for production when a policy does not say.
pub const DEFAULT_APPROVALS: u32 = 2;
/// `[canary] steps` when the policy names none.
pub const DEFAULT_CANARY_STEPS: [u8; 4] = [5, 25, 50, 100];
/// `[canary] min_samples` when the policy names none.
pub const DEFAULT_CANARY_MIN_SAMPLES: u64 = 500;
/// `[canary] alpha` when the policy names none.
pub const DEFAULT_CANARY_ALPHA: f64 = 0.05;
/// `[canary] step_time_limit_secs` when the policy names none: one hour.
pub const DEFAULT_CANARY_STEP_SECS: u64 = 3600;
/// The metrics a canary is judged on: HTTP errors, wrong predictions on labelled feedback,
/// requests slower than `slow_request_ms`.
pub const CANARY_METRICS: [&str; 3] = ["errors", "wrong_predictions", "slow_requests"];

/// Fewest approvals a policy may ask for production: two people besides the author.
pub const MIN_APPROVALS: u32 = 2;

/// A quality metric a gate can hold a model to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of rows classified correctly.
    Accuracy,
    /// Positive predictive value (binary) or its macro average over classes.
    Precision,
    /// True positive rate (binary) or its macro average.
    Recall,
    /// Harmonic mean of precision and recall (binary) or the macro average of per-class F1.
    F1,
    /// Area under the ROC curve (binary) or the macro one-vs-rest average.
    RocAuc,
    /// Root mean squared error.
    Rmse,
    /// Mean absolute error.
    Mae,
    /// Coefficient of determination.
    R2,
    /// Share of rows whose true class has the highest score (the same as `accuracy`; the
    /// name image classifiers use).
    Top1Accuracy,
    /// Share of rows whose true class is among the five highest scores.
    Top5Accuracy,
    /// The lowest recall of any class in the holdout (a class the model never gets right
    /// shows here, however rare it is).
    MinClassRecall,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 11] = [
        Self::Accuracy,
        Self::Precision,
        Self::Recall,
        Self::F1,
        Self::RocAuc,
        Self::Rmse,
        Self::Mae,
        Self::R2,
        Self::Top1Accuracy,
        Self::Top5Accuracy,
        Self::MinClassRecall,
    ];

    /// The name used in policies and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::Precision => "precision",
            Self::Recall => "recall",
            Self::F1 => "f1",
            Self::RocAuc => "roc_auc",
            Self::Rmse => "rmse",
            Self::Mae => "mae",
            Self::R2 => "r2",
            Self::Top1Accuracy => "top1_accuracy",
            Self::Top5Accuracy => "top5_accuracy",
            Self::MinClassRecall => "min_class_recall",
        }
    }

    /// Parses a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether a larger value is better (false for errors).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::Rmse | Self::Mae)
    }

    /// The task the metric applies to.
    pub fn task(self) -> Task {
        match self {
            Self::Rmse | Self::Mae | Self::R2 => Task::Regression,
            _ => Task::Classification,
        }
    }

    /// How much worse `candidate` is than `baseline` (positive = worse).
    pub fn drop(self, baseline: f64, candidate: f64) -> f64 {
        if self.higher_is_better() {
            baseline - candidate
        } else {
            candidate - baseline
        }
    }
}

/// A threshold and which side of it passes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Bound {
    /// Passes when the measured value is at least this.
    Min(f64),
    /// Passes when the measured value is at most this.
    Max(f64),
}

impl Bound {
    /// The pure gate decision; a NaN measurement never passes.
    pub fn passes(self, measured: f64) -> bool {
        match self {
            _ if measured.is_nan() => false,
            Self::Min(t) => measured >= t,
            Self::Max(t) => measured <= t,
        }
    }

    /// The threshold.
    pub fn threshold(self) -> f64 {
        match self {
            Self::Min(t) | Self::Max(t) => t,
        }
    }
}

/// `[metrics] <metric> = { min = .. }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricGate {
    /// Metric.
    pub metric: Metric,
    /// Threshold.
    pub bound: Bound,
    /// Line in the policy file.
    pub line: usize,
}

/// `[fairness]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FairnessPolicy {
    /// Column of the holdout holding the sensitive attribute (it need not be a feature).
    pub sensitive_column: String,
    /// Line of `sensitive_column`, for the error when the holdout lacks it.
    pub sensitive_line: usize,
    /// Class counted as the favourable outcome (default: the last class, `1` when binary).
    pub positive_class: Option<String>,
    /// Regression: a prediction above this is the favourable outcome (default: the median
    /// of the holdout's target).
    pub positive_threshold: Option<f64>,
    /// Largest allowed gap in favourable-prediction rate between groups.
    pub max_demographic_parity: Option<f64>,
    /// Largest allowed gap in true-positive rate between groups.
    pub max_equal_opportunity: Option<f64>,
    /// Line of the `[fairness]` table.
    pub line: usize,
}

/// `[robustness]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobustnessPolicy {
    /// Standard deviation of the added noise, as a fraction of each feature's std.
    pub noise_std: f64,
    /// Seed of the noise, so a re-run measures the same thing.
    pub seed: u64,
    /// A brightness shift: every value moved by this fraction of its feature's std (for an
    /// image, every pixel of a channel brighter), measured as a second drop.
    pub brightness_shift: Option<f64>,
    /// Metric whose drop is measured.
    pub metric: Metric,
    /// Largest allowed drop.
    pub max_drop: f64,
    /// Line of the `[robustness]` table.
    pub line: usize,
}

/// `[edge]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgePolicy {
    /// Largest allowed single-row p99 latency in tract, milliseconds.
    pub max_latency_p99_ms: Option<f64>,
    /// Largest allowed artifact size in bytes.
    pub max_size_bytes: Option<u64>,
    /// Single-row runs timed for the latency gate.
    pub latency_runs: u32,
    /// Whether the edge-compatibility gate runs (default true).
    pub check_ops: bool,
    /// Whether a deployment may run this version's graph in the edge host's native tract
    /// (`runtime = "host"`) rather than in the sandbox (default false).
    pub allow_host_runtime: bool,
}

impl Default for EdgePolicy {
    fn default() -> Self {
        Self {
            max_latency_p99_ms: None,
            max_size_bytes: None,
            latency_runs: 200,
            check_ops: true,
            allow_host_runtime: false,
        }
    }
}

/// `[no_regression]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoRegressionPolicy {
    /// Metric compared against the version at `production`, on the same holdout.
    pub metric: Metric,
    /// How far below production the candidate may fall.
    pub max_drop: f64,
    /// Line of the `[no_regression]` table.
    pub line: usize,
}

/// `[canary]`: how a challenger's traffic grows and what the canary judge
/// (`crate::canary`) asks of it at each step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryPolicy {
    /// Challenger weight (percent) of each step, increasing, ending at 100.
    pub steps: Vec<u8>,
    /// Challenger requests a step needs before it may promote.
    pub min_samples: u64,
    /// Error level of each step's decision (a false rollback, or a false promotion).
    pub alpha: f64,
    /// Seconds a step may last before it is inconclusive (and is held, never promoted).
    pub step_time_limit_secs: u64,
    /// Per metric (`errors`, `wrong_predictions`, `slow_requests`): the tolerated ratio of
    /// the challenger's bad-event rate to the champion's, and whether a step needs evidence
    /// of no harm (labelled feedback: `wrong_predictions`) or only no evidence of harm.
    pub metrics: Vec<(String, crate::canary::MetricRule)>,
    /// A request slower than this counts as a `slow_requests` event.
    pub slow_request_ms: Option<f64>,
    /// Regression: a labelled prediction off by more than this counts as a
    /// `wrong_predictions` event (without it, predictions and labels are compared as classes).
    pub max_abs_error: Option<f64>,
    /// Line of the `[canary]` table.
    pub line: usize,
}

impl CanaryPolicy {
    /// The judge's rule for one step.
    pub fn step_rule(&self) -> crate::canary::StepRule {
        crate::canary::StepRule {
            alpha: self.alpha,
            min_samples: self.min_samples,
            time_limit_secs: self.step_time_limit_secs,
        }
    }

    /// The weight after `current` (0 before the first step), `None` once at 100.
    pub fn next_weight(&self, current: u8) -> Option<u8> {
        self.steps.iter().copied().find(|&w| w > current)
    }
}

/// A parsed gate policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatePolicy {
    /// Metric thresholds.
    pub metrics: Vec<MetricGate>,
    /// Fairness gates.
    pub fairness: Option<FairnessPolicy>,
    /// Robustness gate.
    pub robustness: Option<RobustnessPolicy>,
    /// Latency, size and operator gates.
    pub edge: EdgePolicy,
    /// Regions lineage may come from (the residency gate always runs).
    pub allowed_regions: Vec<String>,
    /// No-regression gate.
    pub no_regression: Option<NoRegressionPolicy>,
    /// Approvals needed for production.
    pub approvals: u32,
    /// `[holdout] key`: the store object new versions are validated on without a command.
    pub holdout_key: Option<String>,
    /// `[promotion] auto_staging`: promote to staging when every gate passes.
    pub auto_staging: bool,
    /// `[canary]`: automated canary analysis, when the policy asks for it.
    pub canary: Option<CanaryPolicy>,
}

/// A policy file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}:{line}: {message}")]
pub struct PolicyError {
    /// File name, for messages.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    metrics: Option<RawMetrics>,
    fairness: Option<Spanned<RawFairness>>,
    robustness: Option<Spanned<RawRobustness>>,
    edge: Option<Spanned<RawEdge>>,
    residency: Option<Spanned<RawResidency>>,
    no_regression: Option<Spanned<RawNoRegression>>,
    promotion: Option<Spanned<RawPromotion>>,
    holdout: Option<Spanned<RawHoldout>>,
    canary: Option<Spanned<RawCanary>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    steps: Option<Spanned<Vec<i64>>>,
    min_samples: Option<Spanned<i64>>,
    alpha: Option<Spanned<f64>>,
    step_time_limit_secs: Option<Spanned<i64>>,
    no_traffic: Option<Spanned<String>>,
    slow_request_ms: Option<Spanned<f64>>,
    max_abs_error: Option<Spanned<f64>>,
    tolerate: Option<Spanned<std::collections::BTreeMap<String, Spanned<f64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoldout {
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    accuracy: Option<Spanned<RawBound>>,
    precision: Option<Spanned<RawBound>>,
    recall: Option<Spanned<RawBound>>,
    f1: Option<Spanned<RawBound>>,
    roc_auc: Option<Spanned<RawBound>>,
    rmse: Option<Spanned<RawBound>>,
    mae: Option<Spanned<RawBound>>,
    r2: Option<Spanned<RawBound>>,
    top1_accuracy: Option<Spanned<RawBound>>,
    top5_accuracy: Option<Spanned<RawBound>>,
    min_class_recall: Option<Spanned<RawBound>>,
}

impl RawMetrics {
    fn into_list(self) -> Vec<(Metric, Spanned<RawBound>)> {
        [
            (Metric::Accuracy, self.accuracy),
            (Metric::Precision, self.precision),
            (Metric::Recall, self.recall),
            (Metric::F1, self.f1),
            (Metric::RocAuc, self.roc_auc),
            (Metric::Rmse, self.rmse),
            (Metric::Mae, self.mae),
            (Metric::R2, self.r2),
            (Metric::Top1Accuracy, self.top1_accuracy),
            (Metric::Top5Accuracy, self.top5_accuracy),
            (Metric::MinClassRecall, self.min_class_recall),
        ]
        .into_iter()
        .filter_map(|(m, b)| b.map(|b| (m, b)))
        .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBound {
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFairness {
    sensitive_column: Spanned<String>,
    positive_class: Option<String>,
    positive_threshold: Option<Spanned<f64>>,
    max_demographic_parity: Option<Spanned<f64>>,
    max_equal_opportunity: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRobustness {
    noise_std: Spanned<f64>,
    brightness_shift: Option<Spanned<f64>>,
    #[serde(default)]
    seed: u64,
    metric: Spanned<String>,
    max_drop: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    max_latency_p99_ms: Option<Spanned<f64>>,
    max_size_bytes: Option<Spanned<i64>>,
    latency_runs: Option<Spanned<i64>>,
    check_ops: Option<bool>,
    allow_host_runtime: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResidency {
    allowed_regions: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNoRegression {
    metric: Spanned<String>,
    max_drop: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromotion {
    approvals: Option<Spanned<i64>>,
    #[serde(default)]
    auto_staging: bool,
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

struct Ctx<'a> {
    src: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn canary(&self, c: &Spanned<RawCanary>) -> Result<CanaryPolicy, PolicyError> {
        let line = line_of(self.src, c.span().start);
        let here = c.span().start;
        let c = c.get_ref();
        let steps: Vec<u8> = match &c.steps {
            None => DEFAULT_CANARY_STEPS.to_vec(),
            Some(s) => {
                let v = s.get_ref();
                let ok = !v.is_empty()
                    && v.iter().all(|w| (1..=100).contains(w))
                    && v.windows(2).all(|p| p[0] < p[1])
                    && v.last() == Some(&100);
                if !ok {
                    return Err(self.err(
                        s.span().start,
                        format!(
                            "canary.steps must be challenger weights from 1 to 100, increasing, ending at 100 (e.g. [5, 25, 50, 100]), got {v:?}"
                        ),
                    ));
                }
                v.iter().map(|&w| w as u8).collect()
            }
        };
        let min_samples = match &c.min_samples {
            None => DEFAULT_CANARY_MIN_SAMPLES,
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
            Some(n) => {
                return Err(self.err(
                    n.span().start,
                    format!("canary.min_samples must be at least 1, got {}", n.get_ref()),
                ));
            }
        };
        let alpha = match &c.alpha {
            None => DEFAULT_CANARY_ALPHA,
            Some(a) if *a.get_ref() > 0.0 && *a.get_ref() <= 0.5 => *a.get_ref(),
            Some(a) => {
                return Err(self.err(
                    a.span().start,
                    format!(
                        "canary.alpha is the chance of a wrong decision per step: above 0 and at most 0.5 (e.g. 0.05), got {}",
                        a.get_ref()
                    ),
                ));
            }
        };
        let step_time_limit_secs = match &c.step_time_limit_secs {
            None => DEFAULT_CANARY_STEP_SECS,
            Some(t) if *t.get_ref() >= 1 => *t.get_ref() as u64,
            Some(t) => {
                return Err(self.err(
                    t.span().start,
                    format!(
                        "canary.step_time_limit_secs must be at least 1, got {}",
                        t.get_ref()
                    ),
                ));
            }
        };
        if let Some(n) = &c.no_traffic
            && n.get_ref() != "hold"
        {
            return Err(self.err(
                n.span().start,
                format!(
                    "canary.no_traffic is \"hold\": a step without traffic is never promoted, got {:?}",
                    n.get_ref()
                ),
            ));
        }
        let slow_request_ms = c
            .slow_request_ms
            .as_ref()
            .map(|v| self.non_negative(v, "canary.slow_request_ms"))
            .transpose()?;
        let max_abs_error = c
            .max_abs_error
            .as_ref()
            .map(|v| self.non_negative(v, "canary.max_abs_error"))
            .transpose()?;
        let mut metrics = Vec::new();
        let tolerate = c
            .tolerate
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_else(|| {
                [("errors".to_string(), Spanned::new(here..here, 1.1))]
                    .into_iter()
                    .collect()
            });
        for (name, ratio) in &tolerate {
            if !CANARY_METRICS.contains(&name.as_str()) {
                return Err(self.err(
                    ratio.span().start,
                    format!(
                        "canary.tolerate.{name} is not a canary metric; use {}",
                        CANARY_METRICS.join(", ")
                    ),
                ));
            }
            let r = *ratio.get_ref();
            if !(r.is_finite() && r >= 1.0) {
                return Err(self.err(
                    ratio.span().start,
                    format!(
                        "canary.tolerate.{name} is the challenger's bad-event rate over the champion's that is still fine: at least 1 (1.1 = 10% more), got {r}"
                    ),
                ));
            }
            if name == "slow_requests" && slow_request_ms.is_none() {
                return Err(self.err(
                    ratio.span().start,
                    "canary.tolerate.slow_requests needs canary.slow_request_ms: the latency above which a request counts as slow",
                ));
            }
            metrics.push((
                name.clone(),
                crate::canary::MetricRule {
                    max_ratio: r,
                    needs_no_harm_evidence: name == "wrong_predictions",
                },
            ));
        }
        Ok(CanaryPolicy {
            steps,
            min_samples,
            alpha,
            step_time_limit_secs,
            metrics,
            slow_request_ms,
            max_abs_error,
            line,
        })
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            source_name: self.name.into(),
            line: line_of(self.src, offset),
            message: message.into(),
        }
    }

    fn fraction(&self, v: &Spanned<f64>, what: &str) -> Result<f64, PolicyError> {
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.err(
                v.span().start,
                format!("{what} must be between 0 and 1, got {x}"),
            ));
        }
        Ok(x)
    }

    fn non_negative(&self, v: &Spanned<f64>, what: &str) -> Result<f64, PolicyError> {
        let x = *v.get_ref();
        if !x.is_finite() || x < 0.0 {
            return Err(self.err(
                v.span().start,
                format!("{what} must be a finite number >= 0, got {x}"),
            ));
        }
        Ok(x)
    }

    fn metric(&self, v: &Spanned<String>) -> Result<Metric, PolicyError> {
        Metric::parse(v.get_ref()).ok_or_else(|| {
            self.err(
                v.span().start,
                format!(
                    "unknown metric {:?}; use one of {}",
                    v.get_ref(),
                    metric_names()
                ),
            )
        })
    }
}

fn metric_names() -> String {
    Metric::ALL.map(Metric::name).join(", ")
}

impl GatePolicy {
    /// Parses and checks a policy; `source_name` (the file name) prefixes errors.
    pub fn parse(src: &str, source_name: &str) -> Result<Self, PolicyError> {
        let cx = Ctx {
            src,
            name: source_name,
        };
        let raw: RawPolicy = toml::from_str(src).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(src, s.start));
            let msg = e.message().trim().replace('\n', " ");
            let hint = if msg.contains("unknown field") {
                " (known sections: metrics, fairness, robustness, edge, residency, no_regression, promotion, holdout, canary; see docs/gates.md)"
            } else {
                ""
            };
            PolicyError {
                source_name: source_name.into(),
                line,
                message: format!("{msg}{hint}"),
            }
        })?;
        let mut metrics = Vec::new();
        if let Some(raw_metrics) = raw.metrics {
            let mut list = raw_metrics.into_list();
            list.sort_by_key(|(_, b)| b.span().start);
            for (metric, spanned) in list {
                let name = metric.name();
                let offset = spanned.span().start;
                let bound = spanned.into_inner();
                let bound = match (bound.min, bound.max, metric.higher_is_better()) {
                    (Some(t), None, true) => Bound::Min(match metric {
                        Metric::R2 => {
                            let x = *t.get_ref();
                            if !x.is_finite() || x > 1.0 {
                                return Err(cx.err(
                                    offset,
                                    format!("metrics.r2.min must be a number <= 1, got {x}"),
                                ));
                            }
                            x
                        }
                        _ => cx
                            .fraction(&t, &format!("metrics.{name}.min"))
                            .map_err(|e| PolicyError {
                                line: line_of(src, offset),
                                ..e
                            })?,
                    }),
                    (None, Some(t), false) => Bound::Max(
                        cx.non_negative(&t, &format!("metrics.{name}.max"))
                            .map_err(|e| PolicyError {
                                line: line_of(src, offset),
                                ..e
                            })?,
                    ),
                    (None, None, _) => {
                        return Err(cx.err(
                            offset,
                            format!(
                                "metrics.{name} needs a threshold: {{ min = .. }} or {{ max = .. }}"
                            ),
                        ));
                    }
                    (Some(_), Some(_), _) => {
                        return Err(
                            cx.err(offset, format!("metrics.{name}: give min or max, not both"))
                        );
                    }
                    (_, _, true) => {
                        return Err(cx.err(
                            offset,
                            format!(
                                "metrics.{name} is better when higher: use {{ min = .. }}, not max"
                            ),
                        ));
                    }
                    (_, _, false) => {
                        return Err(cx.err(
                            offset,
                            format!("metrics.{name} is an error, better when lower: use {{ max = .. }}, not min"),
                        ));
                    }
                };
                metrics.push(MetricGate {
                    metric,
                    bound,
                    line: line_of(src, offset),
                });
            }
            if let Some(first) = metrics.first()
                && let Some(m) = metrics
                    .iter()
                    .find(|m| m.metric.task() != first.metric.task())
            {
                return Err(PolicyError {
                    source_name: source_name.into(),
                    line: m.line,
                    message: format!(
                        "metrics mix regression and classification metrics ({} and {}); a model has one task",
                        first.metric.name(),
                        m.metric.name()
                    ),
                });
            }
        }
        let fairness = match &raw.fairness {
            None => None,
            Some(f) => {
                let line = line_of(src, f.span().start);
                let f = f.get_ref();
                if f.sensitive_column.get_ref().trim().is_empty() {
                    return Err(cx.err(
                        f.sensitive_column.span().start,
                        "fairness.sensitive_column is empty; name the holdout column holding the sensitive attribute",
                    ));
                }
                let dp = f
                    .max_demographic_parity
                    .as_ref()
                    .map(|v| cx.fraction(v, "fairness.max_demographic_parity"))
                    .transpose()?;
                let eo = f
                    .max_equal_opportunity
                    .as_ref()
                    .map(|v| cx.fraction(v, "fairness.max_equal_opportunity"))
                    .transpose()?;
                if dp.is_none() && eo.is_none() {
                    return Err(PolicyError {
                        source_name: source_name.into(),
                        line,
                        message: "[fairness] sets no gate: add max_demographic_parity and/or max_equal_opportunity".into(),
                    });
                }
                let positive_threshold = match &f.positive_threshold {
                    Some(t) if !t.get_ref().is_finite() => {
                        return Err(cx.err(
                            t.span().start,
                            "fairness.positive_threshold must be a finite number",
                        ));
                    }
                    t => t.as_ref().map(|t| *t.get_ref()),
                };
                Some(FairnessPolicy {
                    sensitive_column: f.sensitive_column.get_ref().clone(),
                    sensitive_line: line_of(src, f.sensitive_column.span().start),
                    positive_class: f.positive_class.clone(),
                    positive_threshold,
                    max_demographic_parity: dp,
                    max_equal_opportunity: eo,
                    line,
                })
            }
        };
        let robustness = match &raw.robustness {
            None => None,
            Some(r) => {
                let line = line_of(src, r.span().start);
                let r = r.get_ref();
                let noise_std = cx.non_negative(&r.noise_std, "robustness.noise_std")?;
                if noise_std == 0.0 || noise_std > 10.0 {
                    return Err(cx.err(
                        r.noise_std.span().start,
                        format!("robustness.noise_std must be in (0, 10] (a fraction of each feature's std), got {noise_std}"),
                    ));
                }
                let brightness_shift = match &r.brightness_shift {
                    None => None,
                    Some(b) => {
                        let v = *b.get_ref();
                        if !v.is_finite() || v == 0.0 || v.abs() > 10.0 {
                            return Err(cx.err(
                                b.span().start,
                                format!("robustness.brightness_shift must be non-zero and within [-10, 10] (a fraction of each feature's std), got {v}"),
                            ));
                        }
                        Some(v)
                    }
                };
                Some(RobustnessPolicy {
                    noise_std,
                    brightness_shift,
                    seed: r.seed,
                    metric: cx.metric(&r.metric)?,
                    max_drop: cx.non_negative(&r.max_drop, "robustness.max_drop")?,
                    line,
                })
            }
        };
        let mut edge = EdgePolicy::default();
        if let Some(e) = &raw.edge {
            let e = e.get_ref();
            edge.max_latency_p99_ms = e
                .max_latency_p99_ms
                .as_ref()
                .map(|v| cx.non_negative(v, "edge.max_latency_p99_ms"))
                .transpose()?;
            if let Some(s) = &e.max_size_bytes {
                if *s.get_ref() <= 0 {
                    return Err(cx.err(
                        s.span().start,
                        format!("edge.max_size_bytes must be > 0, got {}", s.get_ref()),
                    ));
                }
                edge.max_size_bytes = Some(*s.get_ref() as u64);
            }
            if let Some(r) = &e.latency_runs {
                if !(10..=100_000).contains(r.get_ref()) {
                    return Err(cx.err(
                        r.span().start,
                        format!(
                            "edge.latency_runs must be between 10 and 100000, got {}",
                            r.get_ref()
                        ),
                    ));
                }
                edge.latency_runs = *r.get_ref() as u32;
            }
            edge.check_ops = e.check_ops.unwrap_or(true);
            edge.allow_host_runtime = e.allow_host_runtime.unwrap_or(false);
        }
        let allowed_regions = match &raw.residency {
            None => crate::residency::DEFAULT_ALLOWED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(r) => {
                let list = &r.get_ref().allowed_regions;
                if list.get_ref().is_empty() || list.get_ref().iter().any(|s| s.trim().is_empty()) {
                    return Err(cx.err(
                        list.span().start,
                        "residency.allowed_regions must list at least one region, e.g. [\"me-central-1\"]",
                    ));
                }
                list.get_ref().clone()
            }
        };
        let no_regression = match &raw.no_regression {
            None => None,
            Some(n) => {
                let line = line_of(src, n.span().start);
                let n = n.get_ref();
                Some(NoRegressionPolicy {
                    metric: cx.metric(&n.metric)?,
                    max_drop: cx.non_negative(&n.max_drop, "no_regression.max_drop")?,
                    line,
                })
            }
        };
        let approvals = match raw
            .promotion
            .as_ref()
            .and_then(|p| p.get_ref().approvals.as_ref())
        {
            None => DEFAULT_APPROVALS,
            Some(a) => {
                if !(i64::from(MIN_APPROVALS)..=20).contains(a.get_ref()) {
                    return Err(cx.err(
                        a.span().start,
                        format!(
                            "promotion.approvals must be between {MIN_APPROVALS} and 20 (four eyes: two approvers besides the author), got {}",
                            a.get_ref()
                        ),
                    ));
                }
                *a.get_ref() as u32
            }
        };
        let auto_staging = raw
            .promotion
            .as_ref()
            .is_some_and(|p| p.get_ref().auto_staging);
        let holdout_key = match &raw.holdout {
            None => None,
            Some(h) => {
                let k = &h.get_ref().key;
                if let Err(e) = crate::layout::StoreKey::new(k.get_ref().as_str()) {
                    return Err(cx.err(
                        k.span().start,
                        format!(
                            "holdout.key {:?} is not a valid store key: {e}",
                            k.get_ref()
                        ),
                    ));
                }
                Some(k.get_ref().clone())
            }
        };
        let canary = raw.canary.as_ref().map(|c| cx.canary(c)).transpose()?;
        Ok(Self {
            metrics,
            fairness,
            robustness,
            edge,
            allowed_regions,
            no_regression,
            approvals,
            holdout_key,
            auto_staging,
            canary,
        })
    }

    /// The task the policy's metrics imply, if any metric is set.
    pub fn task(&self) -> Option<Task> {
        self.metrics
            .first()
            .map(|m| m.metric.task())
            .or(self.no_regression.as_ref().map(|n| n.metric.task()))
            .or(self.robustness.as_ref().map(|r| r.metric.task()))
    }
}

/// One measured gate in a [`GateReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Gate name: `metrics.accuracy`, `fairness.demographic_parity`, `edge.ops`, ...
    pub gate: String,
    /// What was measured (`None` when it could not be).
    pub measured: Option<f64>,
    /// Threshold and side, `None` for a gate without one (edge ops: none unsupported).
    pub bound: Option<Bound>,
    /// Whether it passed.
    pub passed: bool,
    /// Context: unsupported ops, regions found, the production baseline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Per-group rates behind a fairness gate (empty for every other gate, and in reports
    /// made before they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRate>,
}

/// One group's rates, as a fairness gate measured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRate {
    /// The sensitive column's value.
    pub group: String,
    /// Holdout rows in the group.
    pub rows: u64,
    /// Share of the group's rows predicted favourable.
    pub selection_rate: f64,
    /// Share of the group's actual positives predicted favourable (`None` without positives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_positive_rate: Option<f64>,
}

impl GateResult {
    /// A gate decided by a bound.
    pub fn measured(gate: impl Into<String>, measured: f64, bound: Bound) -> Self {
        Self {
            gate: gate.into(),
            measured: Some(measured),
            bound: Some(bound),
            passed: bound.passes(measured),
            detail: String::new(),
            groups: Vec::new(),
        }
    }

    /// Adds context.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Adds the per-group rates behind a fairness gate.
    pub fn with_groups(mut self, groups: Vec<GroupRate>) -> Self {
        self.groups = groups;
        self
    }
}

/// Where a holdout came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldoutRef {
    /// Path or `store:<key>`.
    pub uri: String,
    /// `sha256:<hex>` of the bytes read.
    pub digest: String,
    /// Rows evaluated.
    pub rows: u64,
}

/// `models/<m>/versions/<n>/gates.json` (first run) or `gates-<k>.json` (run k ≥ 2): the
/// immutable record of one validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Model name.
    pub model: String,
    /// Version evaluated.
    pub version: u64,
    /// Artifact digest evaluated.
    pub digest: String,
    /// Run number, 1 for `gates.json`.
    pub run: u32,
    /// `sha256:<hex>` of the policy source used.
    pub policy_digest: String,
    /// The holdout.
    pub holdout: Option<HoldoutRef>,
    /// Evaluator name and version.
    pub evaluator: String,
    /// RFC 3339.
    pub evaluated_at: String,
    /// Who ran it.
    pub evaluated_by: String,
    /// True when every gate passed and the model loaded.
    pub passed: bool,
    /// Why the model could not be evaluated at all (the loader's message), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The gates, in policy order.
    pub gates: Vec<GateResult>,
    /// Made with a policy other than the model's attached one (`falaj validate --policy`):
    /// recorded for the person who asked, never counted for the version's state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

/// `sha256:<hex>` of a policy's TOML source, as reports and `policy.set` events record it.
pub fn policy_digest(src: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(src.as_bytes()))
    )
}

/// What a version's gate reports say, judged against the model's attached policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// No report counts: never validated with the attached policy.
    None,
    /// Reports exist, but none was made with the attached policy on the holdout it names.
    Stale {
        /// Why the latest report does not count, and what to run.
        reason: String,
    },
    /// Every counting report passed; the latest one.
    Passed(Box<GateReport>),
    /// A counting report failed; the first failing one.
    Failed(Box<GateReport>),
}

impl Evidence {
    /// `Some(passed)` when a report counts.
    pub fn passed(&self) -> Option<bool> {
        match self {
            Self::Passed(_) => Some(true),
            Self::Failed(_) => Some(false),
            Self::None | Self::Stale { .. } => None,
        }
    }
}

/// Judges a version's reports (oldest first): a report counts when it is not advisory, was
/// made on the version's artifact `digest` with the attached policy (`policy_digest`), and,
/// when that policy names a holdout (`holdout_key`), on that store object. Among the reports
/// that count, one failure decides: two concurrent validations on the same inputs can finish
/// in either order, and the version's state must not depend on which run number won.
pub fn judge_reports(
    reports: &[GateReport],
    digest: &str,
    policy_digest: Option<&str>,
    holdout_key: Option<&str>,
) -> Evidence {
    let official: Vec<&GateReport> = reports
        .iter()
        .filter(|r| !r.advisory && r.digest == digest)
        .collect();
    let Some(latest) = official.last() else {
        return Evidence::None;
    };
    let Some(policy_digest) = policy_digest else {
        return Evidence::Stale {
            reason: "the model has no attached policy; attach one with `falaj policy set` and validate again".into(),
        };
    };
    let on_holdout = |r: &GateReport| match holdout_key {
        None => true,
        Some(k) => r
            .holdout
            .as_ref()
            .is_some_and(|h| h.uri == format!("store:{k}")),
    };
    let counting: Vec<&GateReport> = official
        .iter()
        .copied()
        .filter(|r| r.policy_digest == policy_digest && on_holdout(r))
        .collect();
    if counting.is_empty() {
        let why = if latest.policy_digest != policy_digest {
            format!(
                "its latest report (run {}) was made with policy {}, but the attached policy is {}",
                latest.run, latest.policy_digest, policy_digest
            )
        } else {
            format!(
                "its latest report (run {}) scored {}, not the holdout the policy names (store:{})",
                latest.run,
                latest
                    .holdout
                    .as_ref()
                    .map_or("no holdout", |h| h.uri.as_str()),
                holdout_key.unwrap_or_default()
            )
        };
        return Evidence::Stale {
            reason: format!("{why}; validate it again with the attached policy"),
        };
    }
    match counting.iter().find(|r| !r.passed) {
        Some(failed) => Evidence::Failed(Box::new((*failed).clone())),
        None => Evidence::Passed(Box::new((*counting.last().expect("non-empty")).clone())),
    }
}

impl GateReport {
    /// The overall decision: no load error and every gate passed.
    pub fn decide(error: &Option<String>, gates: &[GateResult]) -> bool {
        error.is_none() && gates.iter().all(|g| g.passed)
    }

    /// The gates that failed.
    pub fn failures(&self) -> Vec<&GateResult> {
        self.gates.iter().filter(|g| !g.passed).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FULL: &str = r#"
[metrics]
accuracy = { min = 0.9 }
rmse.max = 3.0

[fairness]
sensitive_column = "sex"
max_demographic_parity = 0.1

[robustness]
noise_std = 0.05
seed = 7
metric = "accuracy"
max_drop = 0.03

[edge]
max_latency_p99_ms = 5.0
max_size_bytes = 1000000

[no_regression]
metric = "f1"
max_drop = 0.01

[promotion]
approvals = 3
"#;

    fn err(src: &str) -> PolicyError {
        GatePolicy::parse(src, "gates.toml").unwrap_err()
    }

    #[test]
    fn the_policy_in_docs_gates_md_parses() {
        let doc = include_str!("../../../docs/gates.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &doc[start..start + doc[start..].find("```").unwrap()];
        let p = GatePolicy::parse(block, "docs/gates.md").unwrap();
        assert!(p.fairness.is_some() && p.robustness.is_some() && p.no_regression.is_some());
        let c = p.canary.unwrap();
        assert_eq!(c.metrics.len(), 3);
    }

    #[test]
    fn a_canary_section_gives_the_judges_rules_and_its_steps() {
        let p = GatePolicy::parse(
            "[metrics]\naccuracy = { min = 0.9 }\n\n[canary]\nsteps = [10, 50, 100]\nmin_samples = 200\nalpha = 0.01\nstep_time_limit_secs = 600\nno_traffic = \"hold\"\nslow_request_ms = 250.0\n[canary.tolerate]\nerrors = 1.2\nwrong_predictions = 1.0\nslow_requests = 1.5\n",
            "gates.toml",
        )
        .unwrap();
        let c = p.canary.unwrap();
        assert_eq!(c.steps, [10, 50, 100]);
        assert_eq!(
            (c.next_weight(0), c.next_weight(10), c.next_weight(100)),
            (Some(10), Some(50), None)
        );
        let rule = c.step_rule();
        assert_eq!(
            (rule.alpha, rule.min_samples, rule.time_limit_secs),
            (0.01, 200, 600)
        );
        let by_name: BTreeMap<_, _> = c.metrics.iter().cloned().collect();
        assert_eq!(by_name["errors"].max_ratio, 1.2);
        assert!(by_name["wrong_predictions"].needs_no_harm_evidence);
        assert!(!by_name["slow_requests"].needs_no_harm_evidence);
        assert_eq!(c.line, 4);
        // An empty section takes the defaults; no section, no canary.
        let d = GatePolicy::parse("[canary]\n", "g")
            .unwrap()
            .canary
            .unwrap();
        assert_eq!(d.steps, DEFAULT_CANARY_STEPS);
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].0, "errors");
        assert!(GatePolicy::parse("", "g").unwrap().canary.is_none());
    }

    #[test]
    fn a_bad_canary_section_is_refused_with_the_line_and_the_fix() {
        for (body, says) in [
            ("steps = [50, 25, 100]", "increasing"),
            ("steps = [5, 25]", "ending at 100"),
            ("steps = [0, 100]", "from 1 to 100"),
            ("min_samples = 0", "at least 1"),
            ("alpha = 0.9", "at most 0.5"),
            ("alpha = 0.0", "above 0"),
            ("step_time_limit_secs = 0", "at least 1"),
            ("no_traffic = \"promote\"", "never promoted"),
            ("[canary.tolerate]\nerrors = 0.5", "at least 1"),
            ("[canary.tolerate]\nlatency = 2.0", "not a canary metric"),
            ("[canary.tolerate]\nslow_requests = 1.5", "slow_request_ms"),
            ("promote_after = 3", "unknown field"),
        ] {
            let e = err(&format!("[canary]\n{body}\n"));
            assert!(e.message.contains(says), "{body}: {e}");
            assert!(e.line >= 1, "{body}: {e}");
        }
        assert_eq!(err("[canary]\nalpha = 0.9\n").line, 2);
    }

    #[test]
    fn mixed_tasks_are_refused_with_the_line() {
        let e = err(FULL);
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("rmse"), "{e}");
    }

    #[test]
    fn parses_a_full_policy() {
        let src = FULL.replace("rmse.max = 3.0\n", "f1 = { min = 0.8 }\n");
        let p = GatePolicy::parse(&src, "gates.toml").unwrap();
        assert_eq!(p.task(), Some(Task::Classification));
        assert_eq!(p.metrics.len(), 2);
        assert_eq!(p.metrics[0].metric, Metric::Accuracy);
        assert_eq!(p.metrics[0].bound, Bound::Min(0.9));
        assert_eq!(p.metrics[0].line, 3);
        assert_eq!(p.metrics[1].line, 4);
        let f = p.fairness.unwrap();
        assert_eq!(f.sensitive_column, "sex");
        assert_eq!(f.sensitive_line, 7);
        assert_eq!(p.robustness.unwrap().seed, 7);
        assert_eq!(p.edge.max_size_bytes, Some(1_000_000));
        assert_eq!(p.no_regression.unwrap().metric, Metric::F1);
        assert_eq!(p.approvals, 3);
        assert_eq!(p.allowed_regions, vec!["me-central-1".to_string()]);
    }

    #[test]
    fn empty_policy_has_defaults() {
        let p = GatePolicy::parse("", "g.toml").unwrap();
        assert_eq!(p.approvals, DEFAULT_APPROVALS);
        assert!(p.edge.check_ops);
        assert!(p.metrics.is_empty());
    }

    #[test]
    fn unknown_gates_name_their_line() {
        let e = err("[metrics]\naccuracy = { min = 0.9 }\nbogus = { min = 0.5 }\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = err("[metrics]\naccuracy = { min = 0.9 }\n\n[latency_gate]\nx = 1\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("latency_gate"), "{e}");
        let e = err("[edge]\nmax_size_bytes = 10\nmax_latncy = 2.0\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("max_latncy"), "{e}");
    }

    #[test]
    fn bad_thresholds_name_their_line() {
        let e = err("[metrics]\n\naccuracy = { min = 1.5 }\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("between 0 and 1"), "{e}");
        let e = err("[metrics]\naccuracy = { min = \"high\" }\n");
        assert_eq!(e.line, 2, "{e}");
        let e = err("[metrics]\nrmse = { min = 3.0 }\n");
        assert!(e.message.contains("use { max"), "{e}");
        let e = err("[fairness]\nsensitive_column = \"sex\"\nmax_demographic_parity = -0.2\n");
        assert_eq!(e.line, 3, "{e}");
        let e = err("[robustness]\nnoise_std = 0.1\nmetric = \"acc\"\nmax_drop = 0.1\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown metric"), "{e}");
        let e = err("[promotion]\napprovals = -1\n");
        assert_eq!(e.line, 2, "{e}");
        let e = err("[promotion]\nauto_staging = true\napprovals = 1\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("four eyes"), "{e}");
        let e = err("# holdout\n[holdout]\nkey = \"../etc/passwd\"\n");
        assert_eq!(e.line, 3, "{e}");
        let p = GatePolicy::parse(
            "[holdout]\nkey = \"datasets/bc/holdout.csv\"\n[promotion]\nauto_staging = true\n",
            "gates.toml",
        )
        .unwrap();
        assert_eq!(p.holdout_key.as_deref(), Some("datasets/bc/holdout.csv"));
        assert!(p.auto_staging);
        assert_eq!(p.approvals, DEFAULT_APPROVALS);
        let e = err("[metrics\naccuracy = 1\n");
        assert_eq!(e.line, 1, "{e}");
        assert!(e.to_string().starts_with("gates.toml:1:"), "{e}");
    }

    #[test]
    fn bounds_decide() {
        assert!(Bound::Min(0.9).passes(0.9));
        assert!(!Bound::Min(0.9).passes(0.89));
        assert!(Bound::Max(2.0).passes(1.0));
        assert!(!Bound::Max(2.0).passes(f64::NAN));
        assert!(!Bound::Min(0.0).passes(f64::NAN));
        assert_eq!(Metric::Rmse.drop(1.0, 1.5), 0.5);
        assert_eq!(Metric::Accuracy.drop(0.9, 0.8), 0.9 - 0.8);
    }

    #[test]
    fn edge_ops_are_checked() {
        let ops = vec!["Gemm".to_string(), "Softmax".into(), "LSTM".into()];
        assert_eq!(unsupported_ops(&ops), vec!["LSTM".to_string()]);
        assert!(EDGE_OPS.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn report_decision() {
        let g = vec![GateResult::measured(
            "metrics.accuracy",
            0.95,
            Bound::Min(0.9),
        )];
        assert!(GateReport::decide(&None, &g));
        assert!(!GateReport::decide(&Some("load failed".into()), &g));
        let g2 = vec![GateResult::measured(
            "metrics.accuracy",
            0.5,
            Bound::Min(0.9),
        )];
        assert!(!GateReport::decide(&None, &g2));
    }
}

#[cfg(test)]
mod judge_tests {
    use super::*;

    fn report(run: u32, policy: &str, holdout: &str, passed: bool, advisory: bool) -> GateReport {
        GateReport {
            model: "m".into(),
            version: 1,
            digest: "sha256:a".into(),
            run,
            policy_digest: policy.into(),
            holdout: Some(HoldoutRef {
                uri: holdout.into(),
                digest: "sha256:h".into(),
                rows: 10,
            }),
            evaluator: "t".into(),
            evaluated_at: "2026-01-01T00:00:00Z".into(),
            evaluated_by: "sam".into(),
            passed,
            error: None,
            gates: Vec::new(),
            advisory,
        }
    }

    #[test]
    fn judge_counts_only_the_attached_policys_reports() {
        let rs = [
            report(1, "p", "x.csv", false, false),
            report(2, "lax", "x.csv", true, true),
        ];
        assert_eq!(
            judge_reports(&rs, "sha256:a", Some("p"), None).passed(),
            Some(false)
        );
        let rs = [report(1, "lax", "x.csv", true, false)];
        assert!(matches!(
            judge_reports(&rs, "sha256:a", Some("p"), None),
            Evidence::Stale { .. }
        ));
        assert_eq!(
            judge_reports(&[], "sha256:a", Some("p"), None),
            Evidence::None
        );
    }

    #[test]
    fn judge_a_failure_on_the_same_inputs_decides_whatever_the_run_order() {
        let a = report(1, "p", "x.csv", true, false);
        let b = report(2, "p", "x.csv", false, false);
        for rs in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            assert_eq!(
                judge_reports(&rs, "sha256:a", Some("p"), None).passed(),
                Some(false)
            );
        }
    }

    #[test]
    fn judge_wants_the_holdout_the_policy_names() {
        let rs = [report(1, "p", "/tmp/easy.csv", true, false)];
        assert!(matches!(
            judge_reports(&rs, "sha256:a", Some("p"), Some("datasets/m/h.csv")),
            Evidence::Stale { .. }
        ));
        let rs = [report(1, "p", "store:datasets/m/h.csv", true, false)];
        assert_eq!(
            judge_reports(&rs, "sha256:a", Some("p"), Some("datasets/m/h.csv")).passed(),
            Some(true)
        );
    }
}
