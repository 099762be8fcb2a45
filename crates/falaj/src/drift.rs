//! Drift checks over the store: the edge's sketches against the training distribution, and
//! the retraining request when they differ (the side effects around `falaj_core::drift`).
//!
//! [`check`] reads the version the environment serves (the verified deployment manifest's
//! champion), its training manifest (the blob named by the version record), and every sketch
//! window of that version under `telemetry/<env>/` newer than the last retraining request of
//! the model. When the rule says drift, it writes `retrain/<model>/<stamp>.json` create-only
//! (the stamp is the newest window's, so a repeated check over the same windows finds the
//! request already there and writes nothing) and appends `drift.retrain_requested` to the
//! model's audit chain.

use falaj_core::StoreKey;
use falaj_core::drift::{self, DriftReport, DriftRule};
use falaj_core::layout;
use falaj_core::promotion::Stage;
use falaj_core::sketch::SketchWindow;
use serde::{Deserialize, Serialize};

use crate::RegistryError;
use crate::access::PromotionError;
use crate::deploy;
use crate::registry::{Registry, now};
use crate::store::{Precondition, list_all};

/// Identity drift checks act as.
pub const ACTOR: &str = "falaj-drift";

/// A request to retrain, written to `retrain/<model>/<stamp>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainRequest {
    /// Schema version (1).
    pub schema: u32,
    /// Model to retrain.
    pub model: String,
    /// Version whose inputs drifted.
    pub version: u64,
    /// Environment the inputs came from.
    pub env: String,
    /// RFC 3339.
    pub requested_at: String,
    /// Who asked.
    pub requested_by: String,
    /// Features that drifted.
    pub drifted: Vec<String>,
    /// The full verdict.
    pub report: DriftReport,
    /// Dataset the drifted version was trained on (from its lineage), the starting point.
    pub dataset: Option<String>,
    /// Labelled rows gathered since training (`datasets/<model>/labelled/*.csv` in the store,
    /// same columns as the dataset): the retrain learns from them too.
    #[serde(default)]
    pub labelled: Vec<String>,
    /// Target column and task of the last training, so the retrain can repeat it.
    pub target: String,
    /// The sketch windows the verdict used.
    pub telemetry: Vec<String>,
}

/// What a check did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DriftOutcome {
    /// Nothing deployed in the environment, or no new sketches.
    NoData {
        /// Why.
        reason: String,
    },
    /// Measured; no drift (or too few rows).
    Stable {
        /// Verdict.
        report: DriftReport,
    },
    /// Drift: a retraining request was written.
    RetrainRequested {
        /// Key written.
        key: String,
        /// The request.
        request: Box<RetrainRequest>,
    },
    /// Drift, but this request was already written by an earlier check of the same windows.
    AlreadyRequested {
        /// Key found.
        key: String,
    },
}

/// Errors of a check.
#[derive(Debug, thiserror::Error)]
pub enum DriftCheckError {
    /// Store or registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Deployment manifest unreadable or unverifiable.
    #[error(transparent)]
    Deployment(#[from] PromotionError),
    /// The rule cannot be applied.
    #[error(transparent)]
    Rule(#[from] drift::DriftError),
    /// A sketch or manifest the check needs is missing.
    #[error("{key}: {reason}")]
    Unreadable {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Why a drift invocation checked nothing.
#[derive(Debug, thiserror::Error)]
pub enum DriftInvokeError {
    /// The event asks for something impossible.
    #[error("invalid drift event: {reason}")]
    InvalidEvent {
        /// What was wrong.
        reason: String,
    },
    /// The deployments could not be listed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl DriftInvokeError {
    /// Whether Lambda should retry the invocation.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Registry(e) if e.is_retryable())
    }
}

fn stamp_of(key: &str) -> Option<(&str, u64)> {
    let file = key.rsplit('/').next()?.strip_suffix(".json")?;
    let (stamp, v) = file.rsplit_once("-v")?;
    Some((stamp, v.parse().ok()?))
}

fn store_key(key: String) -> Result<StoreKey, DriftCheckError> {
    StoreKey::new(key).map_err(|e| RegistryError::from(crate::store::StoreError::from(e)).into())
}

/// An object that must exist, decoded (a corrupt one is named by the registry's error).
async fn read_json<T: serde::de::DeserializeOwned>(
    reg: &Registry,
    key: StoreKey,
) -> Result<T, DriftCheckError> {
    match reg.get_json::<T>(&key).await? {
        Some((v, _)) => Ok(v),
        None => Err(DriftCheckError::Unreadable {
            key: key.to_string(),
            reason: "missing".into(),
        }),
    }
}

/// `prod` for `production` (as deployments and telemetry spell it); other names unchanged.
pub fn env_name(env: &str) -> String {
    Stage::for_env(env).map_or_else(|| env.to_owned(), |s| s.env().to_owned())
}

/// Checks `model` in `env` with `rule`.
pub async fn check(
    reg: &Registry,
    env: &str,
    model: &str,
    rule: DriftRule,
) -> Result<DriftOutcome, DriftCheckError> {
    let env = &env_name(env);
    reg.model(model).await?;
    let Some((deployment, _)) = deploy::read(reg, env, model).await? else {
        return Ok(DriftOutcome::NoData {
            reason: format!("{model} is not deployed in {env}"),
        });
    };
    let version = reg.version(model, deployment.champion.version).await?;
    let Some(manifest) = reg.training_manifest(&version).await? else {
        return Err(drift::DriftError::NoTrainingDistribution {
            model: model.into(),
        }
        .into());
    };
    // Windows newer than the last request: the request's key is the newest window's stamp.
    let last_request = list_all(reg.store().as_ref(), &layout::retrain_prefix(model))
        .await
        .map_err(RegistryError::from)?
        .into_iter()
        .filter_map(|k| {
            k.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .max();
    let mut keys: Vec<(String, String)> =
        list_all(reg.store().as_ref(), &layout::telemetry_prefix(env))
            .await
            .map_err(RegistryError::from)?
            .into_iter()
            .filter(|k| k.split('/').nth(3) == Some(model))
            .filter_map(|k| {
                let (stamp, v) = stamp_of(&k)?;
                (v == version.version && last_request.as_deref().is_none_or(|l| stamp > l))
                    .then(|| (stamp.to_owned(), k.clone()))
            })
            .collect();
    keys.sort();
    let Some((newest, _)) = keys.last().cloned() else {
        return Ok(DriftOutcome::NoData {
            reason: format!(
                "no sketches of {model} v{} in telemetry/{env}/ since the last retraining request",
                version.version
            ),
        });
    };
    let mut windows = Vec::with_capacity(keys.len());
    for (_, k) in &keys {
        windows.push(read_json::<SketchWindow>(reg, store_key(k.clone())?).await?);
    }
    let report = drift::evaluate(&manifest, &windows, rule)?;
    if !report.drifted() {
        return Ok(DriftOutcome::Stable { report });
    }
    let request = RetrainRequest {
        schema: 1,
        model: model.into(),
        version: version.version,
        env: env.into(),
        requested_at: now(),
        requested_by: ACTOR.into(),
        drifted: report.drifted.clone(),
        dataset: manifest.lineage.datasets.first().map(|d| d.uri.clone()),
        labelled: list_all(reg.store().as_ref(), &layout::labelled_prefix(model))
            .await
            .map_err(RegistryError::from)?
            .into_iter()
            .filter(|k| k.ends_with(".csv"))
            .collect(),
        target: manifest.target.clone(),
        telemetry: keys.iter().map(|(_, k)| k.clone()).collect(),
        report,
    };
    let key = store_key(format!("{}{newest}.json", layout::retrain_prefix(model)))?;
    match reg.put_json(&key, &request, Precondition::IfAbsent).await {
        Ok(_) => {}
        Err(RegistryError::Store(e)) if e.is_conflict() => {
            return Ok(DriftOutcome::AlreadyRequested {
                key: key.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    reg.append_audit(
        model,
        ACTOR,
        "drift.retrain_requested",
        &format!("{model}@{}", version.version),
        serde_json::json!({
            "env": env,
            "request": key.to_string(),
            "drifted": request.drifted,
            "psi": request.report.features.iter().map(|f| (f.feature.clone(), f.psi)).collect::<std::collections::BTreeMap<_, _>>(),
            "rows": request.report.rows,
        }),
    )
    .await?;
    Ok(DriftOutcome::RetrainRequested {
        key: key.to_string(),
        request: Box::new(request),
    })
}

/// One window of a drift history: the sketches of one stamp (every node's, merged) judged on
/// their own against the training distribution.
#[derive(Debug, Clone, Serialize)]
pub struct DriftPoint {
    /// The window's stamp.
    pub stamp: String,
    /// The verdict for that window alone.
    pub report: DriftReport,
}

/// The served champion's drift per window in `env`, oldest first, at most `limit` windows
/// (the newest): what the console plots. Windows of other versions are left out; a version
/// without a training distribution has no history (an empty list).
pub async fn history(
    reg: &Registry,
    env: &str,
    model: &str,
    rule: DriftRule,
    limit: usize,
) -> Result<(Option<u64>, Vec<DriftPoint>), DriftCheckError> {
    let env = &env_name(env);
    let Some((deployment, _)) = deploy::read(reg, env, model).await? else {
        return Ok((None, Vec::new()));
    };
    let version = reg.version(model, deployment.champion.version).await?;
    let Some(manifest) = reg.training_manifest(&version).await? else {
        return Ok((Some(version.version), Vec::new()));
    };
    let mut by_stamp: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for k in list_all(reg.store().as_ref(), &layout::telemetry_prefix(env))
        .await
        .map_err(RegistryError::from)?
    {
        if k.split('/').nth(3) != Some(model) {
            continue;
        }
        if let Some((stamp, v)) = stamp_of(&k)
            && v == version.version
        {
            by_stamp
                .entry(stamp.to_owned())
                .or_default()
                .push(k.clone());
        }
    }
    let skip = by_stamp.len().saturating_sub(limit);
    let mut out = Vec::new();
    for (stamp, keys) in by_stamp.into_iter().skip(skip) {
        let mut windows = Vec::with_capacity(keys.len());
        for k in keys {
            windows.push(read_json::<SketchWindow>(reg, store_key(k)?).await?);
        }
        let report = drift::evaluate(&manifest, &windows, rule)?;
        out.push(DriftPoint { stamp, report });
    }
    Ok((Some(version.version), out))
}

/// The drift function's handler: `{"env", "models", "psi", "ks", "min_rows"}`, all optional
/// (an EventBridge scheduled event has none of them: every model deployed to `prod`, the
/// default rule). Returns one outcome per model; a model that cannot be checked is reported
/// in its entry and does not stop the others.
pub async fn invoke(
    reg: &Registry,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, DriftInvokeError> {
    let invalid = |reason: String| DriftInvokeError::InvalidEvent { reason };
    let env = payload
        .get("env")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| std::env::var("FALAJ_DRIFT_ENV").ok())
        .unwrap_or_else(|| "prod".into());
    let env = env_name(&env);
    let d = DriftRule::default();
    let num = |k: &str| payload.get(k).and_then(|v| v.as_f64());
    let rule = DriftRule {
        psi: num("psi").unwrap_or(d.psi),
        ks: num("ks").or(d.ks),
        min_rows: num("min_rows").map_or(d.min_rows, |v| v as u64),
    };
    if rule.psi.is_nan() || rule.psi <= 0.0 {
        return Err(invalid(format!(
            "psi must be a positive number, not {}",
            rule.psi
        )));
    }
    let models: Vec<String> = match payload.get("models").and_then(|v| v.as_array()) {
        Some(list) => list
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("models must be strings, not {m}")))
            })
            .collect::<Result<_, _>>()?,
        None => list_all(reg.store().as_ref(), &layout::deployments_prefix(&env))
            .await
            .map_err(RegistryError::from)?
            .iter()
            .filter_map(|k| layout::parse_deployment_key(k).map(|(_, m)| m.to_owned()))
            .collect(),
    };
    let mut results = Vec::new();
    for model in models {
        let r = match check(reg, &env, &model, rule).await {
            Ok(o) => serde_json::json!({"model": model, "result": o}),
            Err(e) => {
                tracing::error!(model, error = %e, "drift check failed");
                serde_json::json!({"model": model, "error": e.to_string()})
            }
        };
        results.push(r);
    }
    Ok(serde_json::json!({"env": env, "rule": rule, "models": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sketch_windows_are_read_as_sketches() {
        assert_eq!(
            stamp_of("telemetry/prod/n1/bc/20261204T100000Z-v3.json"),
            Some(("20261204T100000Z", 3))
        );
        // The canary's live windows share the folder and are not sketches.
        let w = falaj_core::live::VariantWindow::new(("prod", "n1", "bc"), 3, "challenger", 7, "t");
        assert_eq!(
            stamp_of(&falaj_core::live::window_key(&w, "20261204T100000Z")),
            None
        );
    }
}
