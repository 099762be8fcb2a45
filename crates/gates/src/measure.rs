//! Every gate of a policy measured on one model (and the production baseline): quality,
//! fairness, robustness, latency, size, edge operators, residency, no regression.

use falaj_core::manifest::Task;
use falaj_core::policy::{Bound, GatePolicy, GateResult};
use falaj_core::{ModelVersion, TrainingManifest};

use crate::metrics;

use crate::holdout::*;
use crate::model::*;

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
    let model = LoadedModel::load(inp.onnx, &d.item_shape, m.output.as_deref()).map_err(|e| {
        // Name the operators the edge does not run: the likely reason, and the fix to look for.
        let bad = falaj_core::onnx::summarize(inp.onnx)
            .map(|s| falaj_core::policy::unsupported_ops(&s.ops))
            .unwrap_or_default();
        if bad.is_empty() {
            e
        } else {
            ModelError::from(format!(
                "the model uses operators the edge does not run: {} ({})",
                bad.join(", "),
                e.message
            ))
        }
    })?;
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
                groups: Vec::new(),
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
                .with_detail(detail.clone())
                .with_groups(fair.by_group.clone()),
            );
        }
        if let Some(max) = f.max_equal_opportunity {
            gates.push(
                GateResult::measured(
                    "fairness.equal_opportunity",
                    fair.equal_opportunity,
                    Bound::Max(max),
                )
                .with_detail(detail)
                .with_groups(fair.by_group.clone()),
            );
        }
    }
    if let Some(r) = &p.robustness {
        // Each perturbation of the raw rows, as the world would make it, then the same
        // preprocessing; the gate is the metric's drop.
        let clean = scored.metrics.get(&r.metric).copied().unwrap_or(f64::NAN);
        let mut perturbed = vec![(
            "robustness.noise_drop",
            metrics::add_noise(&d.x, d.n_features, r.noise_std, r.seed),
            format!(
                "with noise std {} x feature std (seed {})",
                r.noise_std, r.seed
            ),
        )];
        if let Some(shift) = r.brightness_shift {
            perturbed.push((
                "robustness.brightness_drop",
                metrics::shift_brightness(&d.x, d.n_features, shift),
                format!("with every value moved by {shift} x its feature's std"),
            ));
        }
        for (gate, raw, how) in perturbed {
            let rows = preprocess(m, &raw)?;
            let worse = score(&model, d, &rows, m.task, m.classes.len(), positive)?;
            let dirty = worse.metrics.get(&r.metric).copied().unwrap_or(f64::NAN);
            gates.push(
                GateResult::measured(gate, r.metric.drop(clean, dirty), Bound::Max(r.max_drop))
                    .with_detail(format!(
                        "{} {clean:.4} clean, {dirty:.4} {how}",
                        r.metric.name()
                    )),
            );
        }
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
                let base = LoadedModel::load(bytes, &d.item_shape, pm.output.as_deref())
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
                        groups: Vec::new(),
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
