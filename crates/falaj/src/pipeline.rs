//! What happens after a version is registered: the logic of the `falaj-fn-validate` function.
//!
//! In AWS, the creation of a version record `models/<m>/versions/<n>.json` reaches the
//! validate function as an S3 / EventBridge "Object Created" event; `falaj serve` calls the
//! same [`handle_event`] with the same event shape. The version is scored on the holdout that
//! the model's gate policy names (`[holdout] key`), as [`VALIDATOR`]. When every gate passes
//! and the policy says `[promotion] auto_staging = true`, the outcome asks for a promotion to
//! staging, which the caller hands to whoever holds the signing key (the promote function in
//! AWS, the local key in `falaj serve`).
//!
//! A version that already has a gate report is not validated again, so a duplicate delivery
//! writes nothing. Two deliveries racing may both validate: reports are create-only and
//! numbered, so the result is a second immutable report, never a lost or mixed one.

use falaj_core::layout;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calls::{PromoteError, PromoteRequest, apply_promote_request};
use crate::ingest::{self, EventError};
use crate::registry::Registry;

/// A request to validate one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
}

/// What happened to one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ValidateOutcome {
    /// Gates ran; `report` is the report's key.
    Validated {
        /// Model.
        model: String,
        /// Version.
        version: u64,
        /// Every gate passed.
        passed: bool,
        /// Names of the failed gates.
        failed: Vec<String>,
        /// The report written.
        report: String,
        /// The policy asks for staging and the gates passed: promote next.
        promote_to_staging: bool,
    },
    /// Nothing to do: no policy, no holdout in it, or already validated.
    Skipped {
        /// Model.
        model: String,
        /// Version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// Not a version record (another object under `models/`, or outside it).
    Ignored {
        /// Key.
        key: String,
    },
    /// Validation could not run.
    Failed {
        /// Model, or the key.
        subject: String,
        /// Stable code (`invalid_holdout`, `no_manifest`, ...).
        code: String,
        /// What went wrong.
        error: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
}

/// Parses `models/<m>/versions/<n>.json` into a request.
pub fn version_key(key: &str) -> Option<ValidateRequest> {
    let rest = key.strip_prefix(layout::MODELS_PREFIX)?;
    let (model, tail) = rest.split_once('/')?;
    let n = tail.strip_prefix("versions/")?.strip_suffix(".json")?;
    if n.contains('/') {
        return None;
    }
    Some(ValidateRequest {
        model: model.to_string(),
        version: n.parse().ok()?,
    })
}

/// Splits an event into requests: an S3 / EventBridge event for version records, or a direct
/// `{"model": ..., "version": ...}`.
pub fn parse_event(
    event: &Value,
) -> Result<Vec<Result<ValidateRequest, ValidateOutcome>>, EventError> {
    if event.get("model").is_some() {
        return serde_json::from_value::<ValidateRequest>(event.clone())
            .map(|r| vec![Ok(r)])
            .map_err(|e| EventError {
                reason: format!("malformed validate request: {e}"),
            });
    }
    Ok(ingest::parse_event(event)?
        .into_iter()
        .map(|r| match r {
            Ok(upload) => {
                version_key(&upload.key).ok_or(ValidateOutcome::Ignored { key: upload.key })
            }
            Err(ingest::Outcome::Failed {
                key,
                error,
                retryable,
            }) => Err(ValidateOutcome::Failed {
                subject: key,
                code: "invalid_event".into(),
                error,
                retryable,
            }),
            Err(other) => Err(ValidateOutcome::Failed {
                subject: String::new(),
                code: "invalid_event".into(),
                error: format!("{other:?}"),
                retryable: false,
            }),
        })
        .collect())
}

/// Logs what happened to one version: one JSON line CloudWatch can query.
pub fn log_outcome(outcome: &ValidateOutcome) {
    match outcome {
        ValidateOutcome::Failed {
            subject,
            code,
            error,
            ..
        } => tracing::error!(subject, code, error, "validation failed"),
        other => tracing::info!(outcome = ?other, "validation handled"),
    }
}

/// The outcomes of an invocation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidateReport {
    /// One per request, in order.
    pub results: Vec<ValidateOutcome>,
}

/// The promote function's handler. Its event is either a [`PromoteRequest`] (the webhook
/// invokes it with one) or the Lambda destination record of a validate invocation
/// (`requestContext` + `responsePayload`), whose versions that passed with `auto_staging` are
/// promoted to staging as [`VALIDATOR`].
pub async fn promote_invoke(
    reg: &Registry,
    key: &crate::deploy::DeployKey,
    event: &Value,
) -> Result<Value, PromoteError> {
    if let (Some(_), Some(payload)) = (event.get("requestContext"), event.get("responsePayload")) {
        let mut results = Vec::new();
        let staged = payload["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["outcome"] == "validated" && r["promote_to_staging"] == true);
        for r in staged {
            let (Some(model), Some(version)) = (r["model"].as_str(), r["version"].as_u64()) else {
                continue;
            };
            let req = PromoteRequest::auto_staging(model, version);
            results.push(apply_promote_request(reg, key, req).await?);
        }
        return Ok(serde_json::json!({ "results": results }));
    }
    let req: PromoteRequest = serde_json::from_value(event.clone()).map_err(|e| {
        PromoteError::new(
            "invalid_request",
            400,
            format!("not a promote request nor a validate destination record: {e}"),
        )
    })?;
    apply_promote_request(reg, key, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_records_are_requests() {
        assert_eq!(
            version_key("models/bc/versions/12.json"),
            Some(ValidateRequest {
                model: "bc".into(),
                version: 12
            })
        );
        for k in [
            "models/bc/versions/12/tags.json",
            "models/bc/versions/12/gates.json",
            "models/bc/model.json",
            "models/bc/versions/x.json",
            "incoming/bc/r1/manifest.json",
        ] {
            assert_eq!(version_key(k), None, "{k}");
        }
    }
}
