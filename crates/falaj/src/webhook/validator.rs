//! `POST /v1/models/<m>/versions/<n>/validate`: who runs the gates for the webhook.
//!
//! Running a model takes tract, and tract is most of a binary that links it (its op registry
//! is kept whole by the linker). So the webhook function does not link it: in AWS it hands a
//! [`ValidateCall`] to the validate function over Lambda's Invoke API (`LambdaFunction` in
//! [`crate::function`]), the way it hands promotions to the promote function. In process
//! (`falaj serve`, tests) [`LocalValidator`] runs the gates itself. Errors cross the wire as a
//! [`PromoteError`]: a stable code, the HTTP status and the message.

use falaj_core::policy::GateReport;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::promote::PromoteError;
use crate::registry::Registry;

/// One validation the webhook was asked for, as it travels to the validate function (under
/// the event's `webhook_validate` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateCall {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Store key of the holdout CSV.
    pub holdout: String,
    /// A gate policy (TOML) from the request body, instead of the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The authenticated caller, whose role is checked.
    pub actor: String,
}

/// Runs a [`ValidateCall`]: the report written (passed or not), or why none could be.
#[async_trait::async_trait]
pub trait Validator: Send + Sync {
    /// Validates `call` against `reg`.
    async fn validate(
        &self,
        reg: &Registry,
        call: ValidateCall,
    ) -> Result<GateReport, PromoteError>;
}

impl From<ApiError> for PromoteError {
    fn from(a: ApiError) -> Self {
        Self {
            code: a.code,
            status: a.status,
            message: a.message,
            details: a.details,
        }
    }
}

/// Runs the gates in this process (tract): `falaj serve`, the validate function, tests.
#[cfg(feature = "gates")]
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalValidator;

#[cfg(feature = "gates")]
#[async_trait::async_trait]
impl Validator for LocalValidator {
    async fn validate(
        &self,
        reg: &Registry,
        call: ValidateCall,
    ) -> Result<GateReport, PromoteError> {
        use crate::gates::{self, Holdout, Validation};
        use falaj_core::StoreKey;
        let holdout = StoreKey::new(call.holdout.clone()).map_err(|e| {
            PromoteError::new(
                "invalid_holdout",
                400,
                format!("holdout {:?}: {e}", call.holdout),
            )
        })?;
        gates::validate(
            reg,
            Validation {
                model: call.model,
                version: call.version,
                holdout: Holdout::Store(holdout),
                policy: call
                    .policy
                    .map(|p| ("request body \"policy\"".to_string(), p)),
                actor: call.actor,
            },
        )
        .await
        .map_err(|e| ApiError::from(e).into())
    }
}

/// What a webhook built without `gates` uses when no validator is given: none.
#[cfg(not(feature = "gates"))]
pub(super) fn default_validator() -> Option<std::sync::Arc<dyn Validator>> {
    None
}

/// What a webhook built with `gates` uses when no validator is given: [`LocalValidator`].
#[cfg(feature = "gates")]
pub(super) fn default_validator() -> Option<std::sync::Arc<dyn Validator>> {
    Some(std::sync::Arc::new(LocalValidator))
}
