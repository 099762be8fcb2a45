//! Feature sketches: what an edge node saw, per model version and time window, small enough
//! to write every minute. Each feature keeps count, sum, sum of squares, min, max, the number
//! of non-finite values, and a histogram over fixed edges. The edges come from the training
//! distribution (mean ± 3 standard deviations in half-deviation steps), so a drift check can
//! compare a window with training without the raw inputs ever leaving the node.
//!
//! Stored at `telemetry/<env>/<node>/<model>/<window end, compact UTC>-v<version>.json`.

use serde::{Deserialize, Serialize};

use crate::manifest::TrainingManifest;

/// Sketch schema version.
pub const SCHEMA: u32 = 1;

/// One feature's summary over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSketch {
    /// Feature name (from the training manifest), or `x<i>`.
    pub name: String,
    /// Finite values seen.
    pub count: u64,
    /// NaN or infinite values seen (not in any other figure).
    pub non_finite: u64,
    /// Sum of the finite values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
    /// Smallest finite value (`+inf` when none).
    pub min: f64,
    /// Largest finite value (`-inf` when none).
    pub max: f64,
    /// Ascending bin edges; empty for no histogram.
    pub edges: Vec<f64>,
    /// `edges.len() + 1` counts: below the first edge, between edges, at or above the last.
    pub counts: Vec<u64>,
}

impl FeatureSketch {
    /// An empty sketch with `edges` (sorted and deduplicated here).
    pub fn new(name: impl Into<String>, mut edges: Vec<f64>) -> Self {
        edges.retain(|e| e.is_finite());
        edges.sort_by(f64::total_cmp);
        edges.dedup();
        Self {
            name: name.into(),
            count: 0,
            non_finite: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            counts: vec![0; edges.len() + 1],
            edges,
        }
    }

    /// Edges at `mean + k * std` for k = -3, -2.5, ..., 3 (13 edges, 14 bins). A zero or
    /// non-finite deviation gives one edge at the mean.
    pub fn training_edges(mean: f64, std: f64) -> Vec<f64> {
        if !mean.is_finite() {
            return Vec::new();
        }
        if !(std.is_finite() && std > 0.0) {
            return vec![mean];
        }
        (-6..=6).map(|k| mean + f64::from(k) * 0.5 * std).collect()
    }

    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.non_finite += 1;
            return;
        }
        self.count += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let bin = self.edges.partition_point(|e| *e <= x);
        self.counts[bin] += 1;
    }

    /// Mean of the finite values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Adds `other` (same feature, same edges) into this one.
    pub fn merge(&mut self, other: &FeatureSketch) -> Result<(), SketchMismatch> {
        if other.name != self.name || other.edges != self.edges {
            return Err(SketchMismatch {
                left: self.name.clone(),
                right: other.name.clone(),
            });
        }
        self.count += other.count;
        self.non_finite += other.non_finite;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }
}

/// Two sketches that cannot be added: other features, or other bin edges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge sketches of {left} and {right}: names or bin edges differ")]
pub struct SketchMismatch {
    /// The sketch merged into.
    pub left: String,
    /// The sketch merged.
    pub right: String,
}

/// The sketches of one model version over one window, as written to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SketchWindow {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Environment.
    pub env: String,
    /// Edge node that saw the inputs.
    pub node: String,
    /// Model.
    pub model: String,
    /// Version that served them.
    pub version: u64,
    /// RFC 3339 start of the window.
    pub started_at: String,
    /// RFC 3339 end of the window.
    pub ended_at: String,
    /// Rows seen.
    pub rows: u64,
    /// Rows whose width did not match the model (not sketched).
    pub rejected_rows: u64,
    /// One per feature, in the model's feature order.
    pub features: Vec<FeatureSketch>,
}

impl SketchWindow {
    /// An empty window for `n_features` features, named and binned from the training
    /// manifest where there is one.
    pub fn for_model(
        manifest: Option<&TrainingManifest>,
        n_features: usize,
        ids: (&str, &str, &str, u64),
        started_at: String,
    ) -> Self {
        let (env, node, model, version) = ids;
        let features = (0..n_features)
            .map(|i| {
                let name = manifest
                    .and_then(|m| m.features.get(i).cloned())
                    .unwrap_or_else(|| format!("x{i}"));
                let edges = manifest.map(|m| feature_edges(m, i)).unwrap_or_default();
                FeatureSketch::new(name, edges)
            })
            .collect();
        Self {
            schema: SCHEMA,
            env: env.into(),
            node: node.into(),
            model: model.into(),
            version,
            started_at: started_at.clone(),
            ended_at: started_at,
            rows: 0,
            rejected_rows: 0,
            features,
        }
    }

    /// Adds one input row; a row of the wrong width is counted in `rejected_rows` only.
    pub fn add_row(&mut self, row: &[f64]) {
        if row.len() != self.features.len() {
            self.rejected_rows += 1;
            return;
        }
        self.rows += 1;
        for (f, x) in self.features.iter_mut().zip(row) {
            f.add(*x);
        }
    }
}

/// The histogram of feature `i` the trainer recorded (`feature_stats[i]` in the manifest's
/// extra fields: `bin_edges`, `bins + 1` ascending values whose first and last bins are
/// open-ended, and `proportions`, the share of training rows per bin), as the interior edges
/// a [`FeatureSketch`] takes and the shares.
pub fn training_histogram(m: &TrainingManifest, i: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let stats = m.extra.get("feature_stats")?.as_array()?.get(i)?;
    let floats = |k: &str| -> Option<Vec<f64>> {
        stats
            .get(k)?
            .as_array()?
            .iter()
            .map(|v| v.as_f64())
            .collect()
    };
    let edges = floats("bin_edges")?;
    let shares = floats("proportions")?;
    if edges.len() < 2 || shares.len() + 1 != edges.len() {
        return None;
    }
    Some((edges[1..edges.len() - 1].to_vec(), shares))
}

/// The bin edges the edge sketches feature `i` with: the trainer's recorded histogram where
/// the manifest has one, else mean ± 3 deviations from its standardisation, else none.
pub fn feature_edges(m: &TrainingManifest, i: usize) -> Vec<f64> {
    if let Some((edges, _)) = training_histogram(m, i) {
        return edges;
    }
    m.standardization
        .as_ref()
        .and_then(|s| {
            Some(FeatureSketch::training_edges(
                *s.mean.get(i)?,
                *s.std.get(i)?,
            ))
        })
        .unwrap_or_default()
}

/// `telemetry/<env>/<node>/<model>/<stamp>-v<version>.json`.
pub fn telemetry_key(env: &str, node: &str, model: &str, stamp: &str, version: u64) -> String {
    crate::layout::telemetry(env, node, model, stamp, version)
}

/// `n` deterministic, roughly standard-normal values (the sum of 12 uniforms from a 64-bit
/// LCG, minus 6): synthetic traffic for drift tests, benchmarks and demos, the same on every
/// machine for a given `seed`.
pub fn pseudo_normals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..12)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_bins_their_edges_say() {
        let mut s = FeatureSketch::new("a", FeatureSketch::training_edges(0.0, 1.0));
        assert_eq!(s.edges.len(), 13);
        for x in [-10.0, -3.0, -0.1, 0.0, 0.2, 2.99, 3.0, 50.0, f64::NAN] {
            s.add(x);
        }
        assert_eq!(s.count, 8);
        assert_eq!(s.non_finite, 1);
        assert_eq!(s.counts.iter().sum::<u64>(), 8);
        assert_eq!(s.counts[0], 1, "-10 is below -3");
        assert_eq!(s.counts[1], 1, "-3 sits at the first edge");
        assert_eq!(s.counts[6], 1, "-0.1 is in [-0.5, 0)");
        assert_eq!(s.counts[7], 2, "0 and 0.2 are in [0, 0.5)");
        assert_eq!(s.counts[13], 2, "3 and 50 are at or above the last edge");
        assert_eq!((s.min, s.max), (-10.0, 50.0));
    }

    #[test]
    fn merging_needs_the_same_edges_and_adds_everything() {
        let mut a = FeatureSketch::new("f", vec![0.0, 1.0]);
        let mut b = a.clone();
        a.add(0.5);
        b.add(2.0);
        b.add(-1.0);
        a.merge(&b).unwrap();
        assert_eq!((a.count, a.counts.clone()), (3, vec![1, 1, 1]));
        assert_eq!(a.mean(), Some(0.5));
        let other = FeatureSketch::new("f", vec![0.0]);
        assert!(
            a.merge(&other)
                .unwrap_err()
                .to_string()
                .contains("edges differ")
        );
    }

    #[test]
    fn rows_of_the_wrong_width_are_counted_not_sketched() {
        let mut w = SketchWindow::for_model(None, 2, ("prod", "n1", "m", 3), "t".into());
        w.add_row(&[1.0, 2.0]);
        w.add_row(&[1.0]);
        assert_eq!((w.rows, w.rejected_rows), (1, 1));
        assert_eq!(w.features[1].name, "x1");
        assert_eq!(w.features[1].sum, 2.0);
        assert!(w.features[0].edges.is_empty());
    }
}
