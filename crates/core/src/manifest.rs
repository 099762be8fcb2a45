//! The training manifest written beside `model.onnx` by `falaj-train`.
//!
//! It carries what training, the gates and the edge must agree on: feature names and order,
//! the preprocessing, the task and classes, and the lineage recorded into the version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::version::Lineage;

/// Supervised task of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Output is class probabilities.
    #[default]
    Classification,
    /// Output is one value per row.
    Regression,
}

/// Per-feature standardisation `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Standardization {
    /// Mean per feature, training split only.
    pub mean: Vec<f64>,
    /// Standard deviation per feature, training split only.
    pub std: Vec<f64>,
    /// Whether the exported graph already applies it (the edge then takes raw features).
    #[serde(default)]
    pub folded_into_graph: bool,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingManifest {
    /// Model name.
    pub model: String,
    /// The falaj identity that trained and uploaded it (the trainer's `FALAJ_IDENTITY`); an
    /// upload registers the version as this author, who must hold a role that may register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Semantic version to register under, if the author chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Training run id (`incoming/<model>/<run-id>/`).
    #[serde(default)]
    pub run_id: String,
    /// Task.
    #[serde(default)]
    pub task: Task,
    /// Target column.
    #[serde(default)]
    pub target: String,
    /// Feature names, in the order the model takes them.
    #[serde(default)]
    pub features: Vec<String>,
    /// Class labels, in output order (classification).
    #[serde(default)]
    pub classes: Vec<String>,
    /// How an image becomes the model's input (image classifiers): resize, centre crop,
    /// scale, mean/std, channel order; the edge applies it to PNG and JPEG request bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::image::ImagePreprocess>,
    /// The graph output to read, when the model has several (scikit-learn exports a label
    /// and the probabilities: this names the probabilities); else the first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Standardisation applied to inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardization: Option<Standardization>,
    /// Lineage recorded into the version.
    #[serde(default)]
    pub lineage: Lineage,
    /// Random seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Compute backend (`ndarray`, `cuda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Final metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Anything else the trainer recorded.
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/manifest.schema.json` names exactly the fields this type reads and writes, with
    /// the same required field.
    #[test]
    fn the_published_schema_matches_the_type() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/manifest.schema.json")).unwrap();
        let props: std::collections::BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let full = TrainingManifest {
            model: "m".into(),
            author: Some("a".into()),
            semver: Some("1.0.0".into()),
            run_id: "r".into(),
            target: "t".into(),
            features: vec!["f".into()],
            classes: vec!["c".into()],
            output: Some("probabilities".into()),
            image: Some(crate::image::ImagePreprocess {
                resize: Some(36),
                crop: [32, 32],
                scale: 1.0,
                mean: vec![],
                std: vec![],
                channel_order: crate::image::ChannelOrder::Rgb,
            }),
            standardization: Some(Standardization::default()),
            seed: Some(1),
            backend: Some("flex".into()),
            device: Some("cpu".into()),
            metrics: [("accuracy".to_string(), 1.0)].into(),
            started_at: Some("t".into()),
            finished_at: Some("t".into()),
            ..Default::default()
        };
        let keys: std::collections::BTreeSet<String> = serde_json::to_value(&full)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, props, "docs/manifest.schema.json is out of date");
        assert_eq!(schema["required"], serde_json::json!(["model"]));
        // Only `model` is required by the type too.
        assert!(serde_json::from_str::<TrainingManifest>(r#"{"model": "m"}"#).is_ok());
        assert!(serde_json::from_str::<TrainingManifest>("{}").is_err());
    }
}
