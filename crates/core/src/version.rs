//! Registered models, immutable model versions, their lineage and aliases.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `models/<name>/model.json`: a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Model name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Owning team or person.
    #[serde(default)]
    pub owner: String,
    /// Model-level tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// The gate policy (TOML source), once one is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_policy: Option<String>,
}

/// The element type and shape of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type, ONNX spelling in lower case (`float`, `int64`, ...).
    pub dtype: String,
    /// Dimensions: a number, or a symbol such as `batch` for a dynamic one.
    pub shape: Vec<String>,
}

/// The inputs and outputs of a model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Signature {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// What the artifact is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFormat {
    /// `onnx`.
    pub kind: String,
    /// Default-domain opset.
    pub opset: i64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Producer name and version, as written in the file.
    pub producer: String,
}

/// A dataset a version was trained or evaluated on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Where it was read from (`s3://...`, `dir://...`, a path).
    pub uri: String,
    /// `sha256:<hex>` of the exact bytes read.
    pub digest: String,
    /// Region the data lives in, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// Datasets read.
    #[serde(default)]
    pub datasets: Vec<DatasetRef>,
    /// Source commit of the training code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    /// Trainer image or binary that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_image: Option<String>,
    /// Hyperparameters as given to the trainer.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// The version this one was derived from (retraining, fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_version: Option<u64>,
}

/// `models/<name>/versions/<n>.json`: an immutable model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Model name.
    pub model: String,
    /// Version number, 1-based, gap-free.
    pub version: u64,
    /// Semantic version given by the author, or `<n>.0.0`.
    pub semver: String,
    /// `sha256:<hex>` of the artifact; the blob lives at `blobs/sha256/<hex>`.
    pub digest: String,
    /// Artifact size in bytes.
    pub size: u64,
    /// Artifact format.
    pub format: ArtifactFormat,
    /// Input/output signature read from the artifact.
    pub signature: Signature,
    /// `sha256:<hex>` of the training manifest blob, if one was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Where it came from.
    pub lineage: Lineage,
    /// Metrics reported by the trainer.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Who registered it.
    pub author: String,
    /// The principal that registered it (an AWS ARN, a CI token's subject); absent when
    /// nothing vouched for the author, and in versions registered before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_principal: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Region of the store it was registered in.
    pub region: String,
    /// Where the artifact was uploaded from (`incoming/...` key or local path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ModelVersion {
    /// The hex part of the digest.
    pub fn digest_hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// `models/<name>/aliases/<alias>.json`: a movable pointer, changed only by compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// Model name.
    pub model: String,
    /// Alias name.
    pub alias: String,
    /// Version it points at; `None` once removed (aliases are tombstoned, not deleted).
    pub version: Option<u64>,
    /// Version it pointed at before this move.
    pub previous: Option<u64>,
    /// Incremented on every move.
    pub generation: u64,
    /// Who moved it.
    pub moved_by: String,
    /// RFC 3339.
    pub moved_at: String,
    /// Seq of the audit event that made this move (its intent is written first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
}

/// `<n>` or `<alias>` after the `@` in `model@ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// A version number.
    Number(u64),
    /// An alias.
    Alias(String),
    /// The highest version number.
    Latest,
}

/// Parsed `model@ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Model name.
    pub model: String,
    /// Which version.
    pub version: VersionRef,
}

/// A `model@ref` string was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The name or alias failed validation.
    #[error(transparent)]
    Name(#[from] crate::NameError),
    /// Version 0 does not exist.
    #[error("version numbers start at 1, got 0 in {input:?}")]
    Zero {
        /// The input.
        input: String,
    },
}

impl FromStr for ModelRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let (model, v) = match s.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (s, None),
        };
        crate::validate_model_name(model)?;
        let version = match v {
            None | Some("latest") => VersionRef::Latest,
            Some(v) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => {
                let n: u64 = v.parse().map_err(|_| RefError::Zero { input: s.into() })?;
                if n == 0 {
                    return Err(RefError::Zero { input: s.into() });
                }
                VersionRef::Number(n)
            }
            Some(a) => {
                crate::validate_alias(a)?;
                VersionRef::Alias(a.to_string())
            }
        };
        Ok(Self {
            model: model.to_string(),
            version,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            VersionRef::Number(n) => write!(f, "{}@{n}", self.model),
            VersionRef::Alias(a) => write!(f, "{}@{a}", self.model),
            VersionRef::Latest => write!(f, "{}@latest", self.model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        let r: ModelRef = "wine@3".parse().unwrap();
        assert_eq!(r.version, VersionRef::Number(3));
        let r: ModelRef = "wine@production".parse().unwrap();
        assert_eq!(r.version, VersionRef::Alias("production".into()));
        let r: ModelRef = "wine".parse().unwrap();
        assert_eq!(r.version, VersionRef::Latest);
        assert!("wine@0".parse::<ModelRef>().is_err());
        assert!("wine@../x".parse::<ModelRef>().is_err());
        assert!("Wine@1".parse::<ModelRef>().is_err());
    }
}
