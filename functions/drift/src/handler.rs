//! The drift function's handler: a scheduled event in, the drift checks' outcomes out.

use falaj::Registry;
use lambda_runtime::Diagnostic;
use serde_json::Value;

/// Checks every deployed model's edge sketches against its training distribution.
pub async fn handle(registry: &Registry, event: &Value) -> Result<Value, Diagnostic> {
    falaj::drift::invoke(registry, event)
        .await
        .map_err(|e| Diagnostic {
            error_type: if e.is_retryable() {
                "Retryable"
            } else {
                "DriftCheckFailed"
            }
            .into(),
            error_message: e.to_string(),
        })
}
