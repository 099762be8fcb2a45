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
use falaj_core::promotion::{Stage, VALIDATOR};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ingest::{self, EventError};
use crate::registry::Registry;
// Validating: only with the `gates` feature (tract).
use crate::webhook::{ExpectAlias, PromoteError, PromoteRequest, apply_promote_request};
#[cfg(feature = "gates")]
use {
    crate::gates::{self, GateError, Holdout, Validation},
    crate::ingest::InvocationError,
    falaj_core::policy::{Evidence, GatePolicy},
};

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

/// Validates one version per its model's policy.
#[cfg(feature = "gates")]
pub async fn validate_version(reg: &Registry, req: &ValidateRequest) -> ValidateOutcome {
    let skipped = |reason: String| ValidateOutcome::Skipped {
        model: req.model.clone(),
        version: req.version,
        reason,
    };
    let failed = |e: GateError| {
        let retryable = matches!(&e, GateError::Registry(r) if matches!(r.code(), "store_error" | "contention"));
        ValidateOutcome::Failed {
            subject: format!("{}@{}", req.model, req.version),
            code: e.code().into(),
            error: e.to_string(),
            retryable,
        }
    };
    // Only a report that counts (the attached policy's) makes a re-run pointless; an
    // advisory one does not.
    let counted = match reg.version(&req.model, req.version).await {
        Ok(v) => crate::gatekeeper::evidence(reg, &v).await,
        Err(e) => return failed(e.into()),
    };
    match counted {
        Ok(Evidence::Passed(r) | Evidence::Failed(r)) => {
            return skipped(format!(
                "already validated: {}",
                gates::report_key(&req.model, req.version, r.run)
            ));
        }
        Ok(_) => {}
        Err(crate::promotion::PromotionError::Registry(e)) => return failed(e.into()),
        Err(crate::promotion::PromotionError::Policy(e)) => return failed(GateError::Policy(e)),
        Err(e) => {
            return failed(GateError::Holdout {
                source_name: req.model.clone(),
                reason: e.to_string(),
            });
        }
    }
    let model = match reg.model(&req.model).await {
        Ok(m) => m,
        Err(e) => return failed(e.into()),
    };
    let Some(src) = model.gate_policy else {
        return skipped(format!(
            "model {} has no gate policy; attach one with `falaj policy set {} gates.toml`",
            req.model, req.model
        ));
    };
    let policy = match GatePolicy::parse(&src, "gate_policy") {
        Ok(p) => p,
        Err(e) => return failed(GateError::Policy(e)),
    };
    let Some(holdout) = policy.holdout_key.clone() else {
        return skipped(format!(
            "the gate policy of {} names no holdout; add `[holdout] key = \"datasets/...csv\"` to validate on registration",
            req.model
        ));
    };
    let holdout = match Holdout::parse(&format!("store:{holdout}")) {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let validation = Validation {
        model: req.model.clone(),
        version: req.version,
        holdout,
        policy: None,
        actor: VALIDATOR.into(),
    };
    match gates::validate(reg, validation).await {
        Ok(report) => ValidateOutcome::Validated {
            model: req.model.clone(),
            version: req.version,
            passed: report.passed,
            failed: report.failures().iter().map(|g| g.gate.clone()).collect(),
            report: gates::report_key(&req.model, req.version, report.run).to_string(),
            promote_to_staging: report.passed && policy.auto_staging,
        },
        Err(e) => failed(e),
    }
}

/// The outcomes of an invocation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidateReport {
    /// One per request, in order.
    pub results: Vec<ValidateOutcome>,
}

/// Handles every request of an event.
#[cfg(feature = "gates")]
pub async fn handle_event(reg: &Registry, event: &Value) -> Result<ValidateReport, EventError> {
    let mut report = ValidateReport::default();
    for r in parse_event(event)? {
        let outcome = match r {
            Ok(req) => validate_version(reg, &req).await,
            Err(o) => o,
        };
        match &outcome {
            ValidateOutcome::Failed {
                subject,
                code,
                error,
                ..
            } => {
                tracing::error!(subject, code, error, "validation failed")
            }
            other => tracing::info!(outcome = ?other, "validation handled"),
        }
        report.results.push(outcome);
    }
    Ok(report)
}

/// One Lambda invocation: a failed request fails the invocation so Lambda retries it and,
/// past its retries, sends it to the dead-letter queue.
#[cfg(feature = "gates")]
pub async fn invoke(reg: &Registry, event: &Value) -> Result<ValidateReport, InvocationError> {
    let report = handle_event(reg, event)
        .await
        .map_err(|e| InvocationError {
            error_type: "InvalidEvent",
            message: e.to_string(),
        })?;
    let failed: Vec<&ValidateOutcome> = report
        .results
        .iter()
        .filter(|o| matches!(o, ValidateOutcome::Failed { .. }))
        .collect();
    if failed.is_empty() {
        return Ok(report);
    }
    let retryable = failed.iter().any(|o| {
        matches!(
            o,
            ValidateOutcome::Failed {
                retryable: true,
                ..
            }
        )
    });
    Err(InvocationError {
        error_type: if retryable {
            "Retryable"
        } else {
            "RecordsFailed"
        },
        message: format!(
            "{} of {} requests failed: {}",
            failed.len(),
            report.results.len(),
            serde_json::to_string(&failed).unwrap_or_default()
        ),
    })
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
            let req = PromoteRequest::Promote {
                model: model.into(),
                version,
                actor: VALIDATOR.into(),
                to: Stage::Staging,
                canary: None,
                blue_green: false,
                expect: ExpectAlias::Any,
            };
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

/// The validate function's handler for every event it gets: a call from the webhook
/// (`{"webhook_validate": ValidateCall}`, answered with the gate report or a [`PromoteError`]
/// as JSON in the error message, which `LambdaFunction` reads back), else an upload or
/// direct event for [`invoke`]. `Err` is (error type, message) for Lambda.
#[cfg(feature = "gates")]
pub async fn validate_function(reg: &Registry, event: &Value) -> Result<Value, (String, String)> {
    use crate::webhook::{LocalValidator, ValidateCall, Validator};
    if let Some(call) = event.get("webhook_validate") {
        let remote = |e: PromoteError| crate::function::promote_error_message(&e);
        let call: ValidateCall = serde_json::from_value(call.clone()).map_err(|e| {
            remote(PromoteError::new(
                "invalid_request",
                400,
                format!("webhook_validate: {e}"),
            ))
        })?;
        let report = LocalValidator.validate(reg, call).await.map_err(remote)?;
        return Ok(serde_json::to_value(report).unwrap_or_default());
    }
    invoke(reg, event)
        .await
        .map(|report| serde_json::to_value(report).unwrap_or_default())
        .map_err(|e| (e.error_type.into(), e.message))
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
