//! Gate reports and what a validation asks for: the request, its errors, where reports live.
//!
//! Running the model is `falaj-gates` (tract); this module is what the rest of the registry
//! needs without linking tract: the reports' keys and reads, the manifest and artifact of a
//! version, and [`GateError`].
//!
//! Reports are create-only: the first validation of `model@n` writes
//! `models/<m>/versions/<n>/gates.json`, later ones `gates-2.json`, `gates-3.json`, ...
//! The latest report decides the version's state.

use std::path::PathBuf;

use bytes::Bytes;
use falaj_core::layout;
use falaj_core::policy::{GateReport, PolicyError};
use falaj_core::{ModelVersion, StoreKey, TrainingManifest};

use crate::error::RegistryError;
use crate::registry::Registry;
use crate::store::list_all;

/// Validation failed before any gate could be judged.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Roles refused the request (the refusal is audited).
    #[error(transparent)]
    Promotion(#[from] crate::access::PromotionError),
    /// Neither an attached policy nor `--policy`.
    #[error(
        "{model} has no gate policy; attach one with `falaj policy set {model} gates.toml` or pass --policy gates.toml"
    )]
    NoPolicy {
        /// Model.
        model: String,
    },
    /// The version was registered without a training manifest.
    #[error(
        "{model}@{version} has no training manifest, so its feature order is unknown; register it with `falaj push {model} model.onnx --manifest manifest.json`"
    )]
    NoManifest {
        /// Model.
        model: String,
        /// Version.
        version: u64,
    },
    /// The holdout cannot be read or parsed.
    #[error("holdout {source_name}: {reason}")]
    Holdout {
        /// Path or key.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The holdout's columns do not match the model signature.
    #[error(
        "holdout {source_name} does not match the model: missing column(s) {missing:?}; the model takes features {features:?} and target {target:?} (from its training manifest)"
    )]
    HoldoutMismatch {
        /// Path or key.
        source_name: String,
        /// Columns not found.
        missing: Vec<String>,
        /// Features expected, in order.
        features: Vec<String>,
        /// Target expected.
        target: String,
    },
    /// The fairness gate names a column the holdout lacks.
    #[error(
        "{policy}:{line}: fairness.sensitive_column {column:?} is not a column of holdout {source_name} (columns: {columns:?})"
    )]
    MissingSensitiveColumn {
        /// Policy name.
        policy: String,
        /// Line of `sensitive_column`.
        line: usize,
        /// The column.
        column: String,
        /// Holdout.
        source_name: String,
        /// Columns present.
        columns: Vec<String>,
    },
    /// The model's signature and manifest disagree with each other or the policy.
    #[error("{model}@{version}: {reason}")]
    Incompatible {
        /// Model.
        model: String,
        /// Version.
        version: u64,
        /// Why.
        reason: String,
    },
}

impl GateError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.code(),
            Self::Policy(_) => "invalid_policy",
            Self::Promotion(e) => e.code(),
            Self::NoPolicy { .. } => "no_policy",
            Self::NoManifest { .. } => "no_manifest",
            Self::Holdout { .. } | Self::HoldoutMismatch { .. } => "invalid_holdout",
            Self::MissingSensitiveColumn { .. } => "invalid_policy",
            Self::Incompatible { .. } => "incompatible",
        }
    }

    /// Whether the same call may succeed if tried again: only a retryable registry failure;
    /// a bad policy, holdout or model fails the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Registry(e) => e.is_retryable(),
            Self::Promotion(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Where the holdout comes from.
#[derive(Debug, Clone)]
pub enum Holdout {
    /// A local CSV file.
    Path(PathBuf),
    /// A CSV object in the store.
    Store(StoreKey),
    /// Bytes in memory, with a name for messages.
    Bytes {
        /// Name.
        name: String,
        /// Content.
        bytes: Bytes,
    },
}

impl Holdout {
    /// Parses a CLI argument: `store:<key>` or a path.
    pub fn parse(arg: &str) -> Result<Self, GateError> {
        match arg.strip_prefix("store:") {
            Some(k) => Ok(Self::Store(StoreKey::new(k).map_err(|e| {
                GateError::Holdout {
                    source_name: arg.into(),
                    reason: e.to_string(),
                }
            })?)),
            None => Ok(Self::Path(PathBuf::from(arg))),
        }
    }
}

/// A validation request.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Holdout data.
    pub holdout: Holdout,
    /// A policy to use instead of the model's attached one: `(name, TOML source)`.
    pub policy: Option<(String, String)>,
    /// Who runs it.
    pub actor: String,
}

/// `models/<m>/versions/<n>/gates.json` for run 1, `gates-<run>.json` after
/// (`falaj_core::layout::gate_report_run`).
pub fn report_key(model: &str, version: u64, run: u32) -> StoreKey {
    layout::gate_report_run(model, version, run)
}

/// Every gate report of a version, oldest run first.
pub async fn reports(
    reg: &Registry,
    model: &str,
    version: u64,
) -> Result<Vec<GateReport>, RegistryError> {
    let prefix = layout::version_dir(model, version);
    let mut runs: Vec<u32> = list_all(reg.store().as_ref(), &prefix)
        .await?
        .iter()
        .filter_map(|k| layout::parse_gate_report_run(model, version, k))
        .collect();
    runs.sort_unstable();
    let mut out = Vec::new();
    for r in runs {
        if let Some((rep, _)) = reg
            .get_json::<GateReport>(&report_key(model, version, r))
            .await?
        {
            out.push(rep);
        }
    }
    Ok(out)
}

/// The latest gate report of a version.
pub async fn latest_report(
    reg: &Registry,
    model: &str,
    version: u64,
) -> Result<Option<GateReport>, RegistryError> {
    Ok(reports(reg, model, version).await?.pop())
}

/// Reads a version's training manifest; [`GateError::NoManifest`] when it has none.
pub async fn manifest_of(reg: &Registry, v: &ModelVersion) -> Result<TrainingManifest, GateError> {
    reg.training_manifest(v)
        .await?
        .ok_or_else(|| GateError::NoManifest {
            model: v.model.clone(),
            version: v.version,
        })
}

/// Reads a version's ONNX bytes.
pub async fn artifact_of(reg: &Registry, v: &ModelVersion) -> Result<Bytes, RegistryError> {
    let key = layout::blob(v.digest_hex());
    reg.store()
        .get(&key)
        .await?
        .map(|o| o.bytes)
        .ok_or_else(|| RegistryError::Corrupt {
            key: key.to_string(),
            reason: "the artifact blob is missing".into(),
        })
}
