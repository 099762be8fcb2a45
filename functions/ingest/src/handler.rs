//! The ingest function's handler: an S3 / EventBridge event in, the registration report
//! (or the Lambda error that makes Lambda retry) out.

use falaj::Registry;
use lambda_runtime::Diagnostic;
use serde_json::Value;

/// Registers every upload the event names.
pub async fn handle(registry: &Registry, event: &Value) -> Result<Value, Diagnostic> {
    falaj::ingest::invoke(registry, event)
        .await
        .map(|report| serde_json::to_value(report).unwrap_or_default())
        .map_err(|e| Diagnostic {
            error_type: e.error_type.into(),
            error_message: e.message,
        })
}
