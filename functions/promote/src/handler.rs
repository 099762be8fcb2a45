//! The promote function's handler: a promote request (or the validate function's destination
//! record) in, the result or the [`falaj::calls::PromoteError`] as a Lambda error out.

use falaj::Registry;
use falaj::deploy::DeployKey;
use lambda_runtime::Diagnostic;
use serde_json::Value;

/// Applies the request with the signing key.
pub async fn handle(
    registry: &Registry,
    key: &DeployKey,
    event: &Value,
) -> Result<Value, Diagnostic> {
    falaj::pipeline::promote_invoke(registry, key, event)
        .await
        .map_err(|e| {
            let (error_type, error_message) = falaj_lambda::promote_error_message(&e);
            Diagnostic {
                error_type,
                error_message,
            }
        })
}
