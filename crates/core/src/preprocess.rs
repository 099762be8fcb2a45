//! Input preprocessing, as the training manifest describes it: one definition for the edge
//! component (before its graph runs) and the gates (before they score), so a model is gated on
//! exactly the inputs it is served.
//!
//! `falaj-train` folds standardisation into the exported graph (`Sub(mean)`, `Div(scale)`
//! ahead of the first `Gemm`) and records `folded_into_graph: true`: the component then passes
//! raw features straight to tract. Only a manifest that declares standardisation *not* folded
//! in makes the component apply `(x - mean) / scale` itself, with the trainer's rule for the
//! divisor (the standard deviation, or 1 for a constant feature). Applying it twice would be
//! silently wrong, so the flag decides and nothing else.

use crate::manifest::TrainingManifest;

/// A manifest's preprocessing is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PreprocessError(pub String);

/// Divisor for a feature: its standard deviation, or 1 when it is constant (the trainer's
/// `data::safe_scale`, kept identical so training and the edge agree).
pub fn safe_scale(std: f64) -> f64 {
    if std > 1e-12 { std } else { 1.0 }
}

/// What the component does to a row before the graph sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Preprocess {
    /// Raw features go to the graph (no standardisation, or it is folded into the graph).
    #[default]
    None,
    /// `(x - mean) / scale` per feature, applied here.
    Standardize {
        /// Mean per feature.
        mean: Vec<f32>,
        /// Divisor per feature (non-zero).
        scale: Vec<f32>,
    },
}

impl Preprocess {
    /// The preprocessing `manifest` asks of the edge for rows of `n_features`.
    pub fn from_manifest(
        manifest: Option<&TrainingManifest>,
        n_features: usize,
    ) -> Result<Self, PreprocessError> {
        let Some(st) = manifest.and_then(|m| m.standardization.as_ref()) else {
            return Ok(Self::None);
        };
        if st.folded_into_graph {
            return Ok(Self::None);
        }
        if st.mean.len() != n_features || st.std.len() != n_features {
            return Err(PreprocessError(format!(
                "manifest.json standardisation has {} means and {} deviations for {n_features} \
                 features",
                st.mean.len(),
                st.std.len()
            )));
        }
        if st.mean.iter().chain(&st.std).any(|v| !v.is_finite()) {
            return Err(PreprocessError(
                "manifest.json standardisation has a value that is not finite".into(),
            ));
        }
        Ok(Self::Standardize {
            mean: st.mean.iter().map(|&m| m as f32).collect(),
            scale: st.std.iter().map(|&s| safe_scale(s) as f32).collect(),
        })
    }

    /// Whether rows pass through unchanged.
    pub fn is_identity(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Short description for `/metadata`.
    pub fn describe(&self, manifest: Option<&TrainingManifest>) -> &'static str {
        match (self, manifest.and_then(|m| m.standardization.as_ref())) {
            (Self::Standardize { .. }, _) => "standardize: applied by the component",
            (Self::None, Some(_)) => "standardize: folded into the graph (raw features in)",
            (Self::None, None) => "none",
        }
    }

    /// Applies the preprocessing to row-major `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Self::None => x.to_vec(),
            Self::Standardize { mean, scale } => {
                let n = mean.len();
                x.iter()
                    .enumerate()
                    .map(|(i, v)| (v - mean[i % n]) / scale[i % n])
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::Standardization;

    use super::*;

    fn manifest(folded: bool) -> TrainingManifest {
        TrainingManifest {
            model: "m".into(),
            features: vec!["a".into(), "b".into()],
            standardization: Some(Standardization {
                mean: vec![1.0, 10.0],
                std: vec![2.0, 0.0],
                folded_into_graph: folded,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn folded_standardisation_is_not_applied_again() {
        let p = Preprocess::from_manifest(Some(&manifest(true)), 2).unwrap();
        assert!(p.is_identity());
        assert_eq!(p.apply(&[3.0, 4.0]), vec![3.0, 4.0]);
    }

    #[test]
    fn unfolded_standardisation_is_applied_with_the_trainers_divisor() {
        let p = Preprocess::from_manifest(Some(&manifest(false)), 2).unwrap();
        // (3-1)/2 = 1; the constant feature divides by 1: 4-10 = -6.
        assert_eq!(p.apply(&[3.0, 4.0, 1.0, 10.0]), vec![1.0, -6.0, 0.0, 0.0]);
    }

    #[test]
    fn standardisation_of_the_wrong_width_is_refused() {
        let err = Preprocess::from_manifest(Some(&manifest(false)), 3).unwrap_err();
        assert!(err.0.contains("3 features"), "{err}");
    }
}
