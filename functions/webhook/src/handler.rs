//! The webhook function's handler: an API Gateway HTTP API or Function URL event in, its
//! HTTP response out (always an answer: errors are JSON responses, never Lambda errors).

use falaj_webhook::Webhook;
use serde_json::Value;

/// Answers one HTTP request.
pub async fn handle(hook: &Webhook, event: Value) -> Value {
    falaj_lambda::apigw::invoke(hook, event).await
}
