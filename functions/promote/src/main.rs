//! `falaj-fn-promote`: applies approvals, promotions, rollouts and rollbacks.
//!
//! Invoked by the webhook function with a promote request, and as the on-success destination
//! of the validate function (versions whose policy says `auto_staging`). The only function
//! that can read the deployment signing key (`FALAJ_SIGNING_KEY_PARAM`, an SSM SecureString;
//! `FALAJ_SIGNING_KEY`, a file, in tests). All logic lives in `falaj::pipeline`.

mod handler;

use falaj_lambda as function;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    function::init_json_logs();
    let registry = &*Box::leak(Box::new(function::registry_from_env().await?));
    let key = &*Box::leak(Box::new(function::signing_key_from_env().await?));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        handler::handle(registry, key, &ev.payload).await
    }))
    .await
}
