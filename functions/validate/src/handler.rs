//! The validate function's handler: an upload event, a direct request or the webhook's
//! `webhook_validate` call in, the validation report out.

use falaj::Registry;
use lambda_runtime::Diagnostic;
use serde_json::Value;

/// Validates what the event names (`falaj_gates::validate_function`).
pub async fn handle(registry: &Registry, event: &Value) -> Result<Value, Diagnostic> {
    falaj_gates::validate_function(registry, event)
        .await
        .map_err(|e| Diagnostic {
            error_type: e.error_type,
            error_message: e.message,
        })
}
