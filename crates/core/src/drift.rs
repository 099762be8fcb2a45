//! The drift rule: edge sketches against the training distribution.
//!
//! For each feature, the expected share of each histogram bin comes from the training
//! distribution the manifest records: the trainer's histogram of the training split
//! (`feature_stats[i].bin_edges` / `proportions`, which the edge also bins its sketches by),
//! or, for a manifest without one, a normal with the recorded mean and standard deviation
//! (sketch edges `mean ± k·std/2`). Against the shares the edge saw:
//!
//! - **PSI** (population stability index) `Σ (o − e) · ln(o / e)`, shares floored at 1e-4 so an
//!   empty bin does not make it infinite. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate,
//!   > 0.25 large;
//! - **KS** on the binned data: the largest gap between the expected and observed cumulative
//!   shares at the bin edges (a lower bound of the continuous KS statistic).
//!
//! A feature drifts when its PSI passes the threshold (or its KS does, where a KS threshold
//! is set) over at least `min_rows` rows; the model drifts when any feature does.

use serde::{Deserialize, Serialize};

use crate::manifest::TrainingManifest;
use crate::sketch::{FeatureSketch, SketchWindow, feature_edges, training_histogram};

/// Thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftRule {
    /// PSI above which a feature drifts.
    pub psi: f64,
    /// Binned KS above which a feature drifts (`None`: PSI only).
    pub ks: Option<f64>,
    /// Fewer rows than this decide nothing.
    pub min_rows: u64,
}

impl Default for DriftRule {
    fn default() -> Self {
        Self {
            psi: 0.25,
            ks: None,
            min_rows: 200,
        }
    }
}

/// One feature's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// Feature name.
    pub feature: String,
    /// Rows with a finite value.
    pub rows: u64,
    /// PSI against training.
    pub psi: f64,
    /// Binned KS against training.
    pub ks: f64,
    /// Training mean and the mean the edge saw.
    pub training_mean: f64,
    /// Mean of the edge's values.
    pub observed_mean: Option<f64>,
    /// Over a threshold.
    pub drifted: bool,
}

/// The verdict for one model version over some windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Model.
    pub model: String,
    /// Version the sketches are of.
    pub version: u64,
    /// Rows in all windows.
    pub rows: u64,
    /// Windows read.
    pub windows: usize,
    /// The rule applied.
    pub rule: DriftRule,
    /// Per feature, in order.
    pub features: Vec<FeatureDrift>,
    /// Whether enough rows were seen to decide.
    pub enough_rows: bool,
    /// Names of the drifted features.
    pub drifted: Vec<String>,
}

impl DriftReport {
    /// Whether retraining is called for.
    pub fn drifted(&self) -> bool {
        self.enough_rows && !self.drifted.is_empty()
    }
}

/// Why no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriftError {
    /// The manifest records no training distribution.
    #[error(
        "the training manifest of {model} records no feature means and deviations; drift cannot be measured"
    )]
    NoTrainingDistribution {
        /// Model.
        model: String,
    },
    /// Windows of other features or edges.
    #[error("the sketches do not match the training manifest: {0}")]
    Mismatch(String),
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26 for erf; error below 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Expected bin shares for `edges` under a normal with `mean` and `std`.
pub fn expected_shares(edges: &[f64], mean: f64, std: f64) -> Vec<f64> {
    let cdf: Vec<f64> = edges
        .iter()
        .map(|e| {
            if std > 0.0 {
                normal_cdf((e - mean) / std)
            } else if *e <= mean {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mut shares = Vec::with_capacity(edges.len() + 1);
    let mut prev = 0.0;
    for c in cdf {
        shares.push((c - prev).max(0.0));
        prev = c;
    }
    shares.push((1.0 - prev).max(0.0));
    shares
}

const FLOOR: f64 = 1e-4;

/// PSI between expected shares and observed counts.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(e, c)| {
            let e = e.max(FLOOR);
            let o = (*c as f64 / total as f64).max(FLOOR);
            (o - e) * (o / e).ln()
        })
        .sum()
}

/// Largest gap between expected and observed cumulative shares at the bin edges.
pub fn binned_ks(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let (mut ce, mut co, mut worst) = (0.0, 0.0, 0.0f64);
    for (e, c) in expected.iter().zip(counts) {
        ce += e;
        co += *c as f64 / total as f64;
        worst = worst.max((ce - co).abs());
    }
    worst
}

/// Applies `rule` to `windows` (all of one model version) against `manifest`.
pub fn evaluate(
    manifest: &TrainingManifest,
    windows: &[SketchWindow],
    rule: DriftRule,
) -> Result<DriftReport, DriftError> {
    let stats =
        manifest
            .standardization
            .as_ref()
            .ok_or_else(|| DriftError::NoTrainingDistribution {
                model: manifest.model.clone(),
            })?;
    let n = manifest.features.len();
    if stats.mean.len() != n || stats.std.len() != n {
        return Err(DriftError::NoTrainingDistribution {
            model: manifest.model.clone(),
        });
    }
    let mut merged: Vec<FeatureSketch> = manifest
        .features
        .iter()
        .enumerate()
        .map(|(i, name)| FeatureSketch::new(name.clone(), feature_edges(manifest, i)))
        .collect();
    let (mut rows, mut version) = (0, 0);
    for w in windows {
        if w.features.len() != n {
            return Err(DriftError::Mismatch(format!(
                "a window of {} v{} has {} features, the manifest {n}",
                w.model,
                w.version,
                w.features.len()
            )));
        }
        rows += w.rows;
        version = w.version;
        for (m, f) in merged.iter_mut().zip(&w.features) {
            m.merge(f)
                .map_err(|e| DriftError::Mismatch(e.to_string()))?;
        }
    }
    let enough_rows = rows >= rule.min_rows;
    let features: Vec<FeatureDrift> = merged
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let expected = match training_histogram(manifest, i) {
                Some((_, shares)) if shares.len() == f.counts.len() => shares,
                _ => expected_shares(&f.edges, stats.mean[i], stats.std[i]),
            };
            let p = psi(&expected, &f.counts);
            let k = binned_ks(&expected, &f.counts);
            FeatureDrift {
                feature: f.name.clone(),
                rows: f.count,
                psi: p,
                ks: k,
                training_mean: stats.mean[i],
                observed_mean: f.mean(),
                drifted: enough_rows && (p > rule.psi || rule.ks.is_some_and(|t| k > t)),
            }
        })
        .collect();
    Ok(DriftReport {
        model: manifest.model.clone(),
        version,
        rows,
        windows: windows.len(),
        rule,
        drifted: features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.feature.clone())
            .collect(),
        features,
        enough_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Standardization;

    fn manifest() -> TrainingManifest {
        let mut m: TrainingManifest = serde_json::from_value(serde_json::json!({
            "model": "m", "run_id": "r", "task": "regression", "target": "y",
            "features": ["a", "b"],
        }))
        .unwrap();
        m.standardization = Some(Standardization {
            mean: vec![0.0, 10.0],
            std: vec![1.0, 2.0],
            folded_into_graph: true,
        });
        m
    }

    use crate::sketch::pseudo_normals as normals;

    fn window(shift_b: f64) -> SketchWindow {
        let m = manifest();
        let mut w = SketchWindow::for_model(Some(&m), 2, ("prod", "n", "m", 4), "t".into());
        for (x, y) in normals(2000, 1).iter().zip(normals(2000, 2)) {
            w.add_row(&[*x, 10.0 + 2.0 * y + shift_b]);
        }
        w
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
        let shares = expected_shares(&FeatureSketch::training_edges(0.0, 1.0), 0.0, 1.0);
        assert_eq!(shares.len(), 14);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn data_like_training_is_stable_and_a_shifted_feature_drifts() {
        let m = manifest();
        let stable = evaluate(&m, &[window(0.0)], DriftRule::default()).unwrap();
        assert!(!stable.drifted(), "{stable:#?}");
        assert!(stable.features.iter().all(|f| f.psi < 0.1), "{stable:#?}");

        let shifted = evaluate(&m, &[window(3.0)], DriftRule::default()).unwrap();
        assert!(shifted.drifted());
        assert_eq!(shifted.drifted, vec!["b".to_string()]);
        assert!(shifted.features[1].psi > 0.25);
        assert!(
            shifted.features[1].ks > 0.4,
            "a 1.5-sd shift moves ~50% of the mass"
        );
        assert!(shifted.features[0].psi < 0.1);
    }

    #[test]
    fn the_trainers_recorded_histogram_is_the_reference_when_there_is_one() {
        // A skewed training feature (exponential-like): a normal reference would call the
        // training data itself drifted; the recorded histogram does not.
        let skewed: Vec<f64> = normals(3000, 3).iter().map(|z| (z * 0.8).exp()).collect();
        let (min, max) = skewed
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        let width = (max - min) / 10.0;
        let edges: Vec<f64> = (0..=10).map(|i| min + width * i as f64).collect();
        let mut counts = [0.0; 10];
        for x in &skewed {
            counts[(((x - min) / width) as usize).min(9)] += 1.0;
        }
        let shares: Vec<f64> = counts.iter().map(|c| c / skewed.len() as f64).collect();
        let mean = skewed.iter().sum::<f64>() / skewed.len() as f64;
        let std =
            (skewed.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / skewed.len() as f64).sqrt();
        let mut m = manifest();
        m.features = vec!["s".into()];
        m.standardization = Some(Standardization {
            mean: vec![mean],
            std: vec![std],
            folded_into_graph: true,
        });
        let sketch_of = |m: &TrainingManifest, xs: &[f64]| {
            let mut w = SketchWindow::for_model(Some(m), 1, ("prod", "n", "m", 1), "t".into());
            for x in xs {
                w.add_row(&[*x]);
            }
            w
        };
        let fresh: Vec<f64> = normals(1000, 77).iter().map(|z| (z * 0.8).exp()).collect();
        let normal_ref = evaluate(&m, &[sketch_of(&m, &fresh)], DriftRule::default()).unwrap();
        m.extra.insert(
            "feature_stats".into(),
            serde_json::json!([{"name": "s", "bin_edges": edges, "proportions": shares}]),
        );
        let w = sketch_of(&m, &fresh);
        assert_eq!(
            w.features[0].edges.len(),
            9,
            "the edge bins by the recorded histogram"
        );
        let recorded = evaluate(&m, &[w], DriftRule::default()).unwrap();
        assert!(recorded.features[0].psi < 0.1, "{recorded:#?}");
        assert!(
            normal_ref.features[0].psi > recorded.features[0].psi * 3.0,
            "normal {} vs recorded {}",
            normal_ref.features[0].psi,
            recorded.features[0].psi
        );
        let shifted: Vec<f64> = fresh.iter().map(|x| x * 1.6).collect();
        let r = evaluate(&m, &[sketch_of(&m, &shifted)], DriftRule::default()).unwrap();
        assert!(r.drifted(), "{r:#?}");
    }

    #[test]
    fn too_few_rows_decide_nothing() {
        let m = manifest();
        let rule = DriftRule {
            min_rows: 10_000,
            ..Default::default()
        };
        let r = evaluate(&m, &[window(3.0)], rule).unwrap();
        assert!(!r.enough_rows && !r.drifted());
        assert!(r.features[1].psi > 0.25, "the figure is still reported");
    }

    #[test]
    fn windows_merge_and_mismatches_are_refused() {
        let m = manifest();
        let r = evaluate(&m, &[window(0.0), window(0.0)], DriftRule::default()).unwrap();
        assert_eq!((r.rows, r.windows), (4000, 2));
        let mut bad = window(0.0);
        bad.features.pop();
        assert!(matches!(
            evaluate(&m, &[bad], DriftRule::default()),
            Err(DriftError::Mismatch(_))
        ));
        let mut none = manifest();
        none.standardization = None;
        assert!(evaluate(&none, &[window(0.0)], DriftRule::default()).is_err());
    }
}
