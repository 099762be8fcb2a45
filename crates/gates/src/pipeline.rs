//! The validate function's logic over [`falaj::pipeline`]'s requests: validate a version per
//! its model's policy, handle an upload event, answer a Lambda invocation.

use falaj::calls::{PromoteError, ValidateCall, Validator, promote_error_message};
use falaj::ingest::{EventError, InvocationError};
use falaj::pipeline::{ValidateOutcome, ValidateReport, ValidateRequest, parse_event};
use falaj::registry::Registry;
use falaj_core::policy::{Evidence, GatePolicy};
use falaj_core::promotion::VALIDATOR;
use serde_json::Value;

use falaj::reports::{GateError, Holdout, Validation};

use crate::validator::LocalValidator;

/// Validates one version per its model's policy.
pub async fn validate_version(reg: &Registry, req: &ValidateRequest) -> ValidateOutcome {
    let skipped = |reason: String| ValidateOutcome::Skipped {
        model: req.model.clone(),
        version: req.version,
        reason,
    };
    let failed = |e: GateError| {
        let retryable = e.is_retryable();
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
        Ok(v) => falaj::gatekeeper::evidence(reg, &v).await,
        Err(e) => return failed(e.into()),
    };
    match counted {
        Ok(Evidence::Passed(r) | Evidence::Failed(r)) => {
            return skipped(format!(
                "already validated: {}",
                falaj::reports::report_key(&req.model, req.version, r.run)
            ));
        }
        Ok(_) => {}
        Err(falaj::promotion::PromotionError::Registry(e)) => return failed(e.into()),
        Err(falaj::promotion::PromotionError::Policy(e)) => return failed(GateError::Policy(e)),
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
    match crate::validate::validate(reg, validation).await {
        Ok(report) => ValidateOutcome::Validated {
            model: req.model.clone(),
            version: req.version,
            passed: report.passed,
            failed: report.failures().iter().map(|g| g.gate.clone()).collect(),
            report: falaj::reports::report_key(&req.model, req.version, report.run).to_string(),
            promote_to_staging: report.passed && policy.auto_staging,
        },
        Err(e) => failed(e),
    }
}

/// Handles every request of an event.
pub async fn handle_event(reg: &Registry, event: &Value) -> Result<ValidateReport, EventError> {
    let mut report = ValidateReport::default();
    for r in parse_event(event)? {
        let outcome = match r {
            Ok(req) => validate_version(reg, &req).await,
            Err(o) => o,
        };
        falaj::pipeline::log_outcome(&outcome);
        report.results.push(outcome);
    }
    Ok(report)
}

/// One Lambda invocation: a failed request fails the invocation so Lambda retries it and,
/// past its retries, sends it to the dead-letter queue.
pub async fn invoke(reg: &Registry, event: &Value) -> Result<ValidateReport, InvocationError> {
    let report = handle_event(reg, event)
        .await
        .map_err(InvocationError::invalid_event)?;
    let failed = |o: &ValidateOutcome| match o {
        ValidateOutcome::Failed { retryable, .. } => Some(*retryable),
        _ => None,
    };
    match InvocationError::from_failures(&report.results, failed, "requests") {
        None => Ok(report),
        Some(e) => Err(e),
    }
}

/// The validate function's handler for every event it gets: a call from the webhook
/// (`{"webhook_validate": ValidateCall}`, answered with the gate report or a [`PromoteError`]
/// as JSON in the error message, which `LambdaFunction` reads back), else an upload or
/// direct event for [`invoke`]. `Err` is the Lambda error to report.
pub async fn validate_function(reg: &Registry, event: &Value) -> Result<Value, FunctionError> {
    if let Some(call) = event.get("webhook_validate") {
        let remote = |e: PromoteError| {
            let (error_type, message) = promote_error_message(&e);
            FunctionError {
                error_type,
                message,
            }
        };
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
        .map_err(|e| FunctionError {
            error_type: e.error_type.into(),
            message: e.message,
        })
}

/// What a function reports to Lambda when an invocation fails: the `errorType` (a stable code,
/// or `Retryable`) and the `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct FunctionError {
    /// Lambda's `errorType`.
    pub error_type: String,
    /// Lambda's `errorMessage`.
    pub message: String,
}
