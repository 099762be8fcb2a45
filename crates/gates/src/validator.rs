//! [`LocalValidator`]: the gates run in this process for a [`ValidateCall`] (`falaj serve`,
//! the validate function, tests).

use falaj::calls::{PromoteError, ValidateCall, Validator};
use falaj::registry::Registry;
use falaj_core::StoreKey;
use falaj_core::policy::GateReport;

use falaj::reports::{Holdout, Validation};

/// Runs the gates in this process (tract): `falaj serve`, the validate function, tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalValidator;

#[async_trait::async_trait]
impl Validator for LocalValidator {
    async fn validate(
        &self,
        reg: &Registry,
        call: ValidateCall,
    ) -> Result<GateReport, PromoteError> {
        let holdout = StoreKey::new(call.holdout.clone()).map_err(|e| {
            PromoteError::new(
                "invalid_holdout",
                400,
                format!("holdout {:?}: {e}", call.holdout),
            )
        })?;
        crate::validate::validate(
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
        .map_err(PromoteError::from)
    }
}
