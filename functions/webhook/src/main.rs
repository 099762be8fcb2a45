//! `falaj-fn-webhook`: the HTTP API for CI systems and people.
//!
//! Behind an API Gateway HTTP API (payload v2) or a Lambda Function URL. Reads its
//! configuration (CI secrets, token digests, limits) from the SSM parameter named by
//! `FALAJ_WEBHOOK_SECRET_PARAM` (or the file `FALAJ_WEBHOOK_CONFIG`), and hands approvals and
//! promotions to the promote function `FALAJ_PROMOTE_FUNCTION`, and validations to the
//! validate function `FALAJ_VALIDATE_FUNCTION` (so it links no tract). All logic lives in
//! `falaj_webhook` (and `falaj_lambda::apigw`).

mod handler;

use std::sync::Arc;

use falaj_lambda as function;
use falaj_webhook::{Webhook, WebhookAuth};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    function::init_json_logs();
    let registry = Arc::new(function::registry_from_env().await?);
    let text =
        function::secret_from_env("FALAJ_WEBHOOK_SECRET_PARAM", "FALAJ_WEBHOOK_CONFIG").await?;
    let auth = WebhookAuth::parse(&text, "webhook configuration")?;
    let promote =
        std::env::var("FALAJ_PROMOTE_FUNCTION").map_err(|_| "FALAJ_PROMOTE_FUNCTION is not set")?;
    let validate = std::env::var("FALAJ_VALIDATE_FUNCTION")
        .map_err(|_| "FALAJ_VALIDATE_FUNCTION is not set")?;
    let promoter = function::LambdaFunction::new(promote).await;
    let validator = Arc::new(promoter.sibling(validate));
    let promoter = Arc::new(promoter);
    let hook = &*Box::leak(Box::new(
        Webhook::new(registry, promoter, auth).with_validator(validator),
    ));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(handler::handle(hook, ev.payload).await)
    }))
    .await
}
