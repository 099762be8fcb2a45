//! `falaj-fn-ingest`: registers model versions uploaded under `incoming/`.
//!
//! Triggered by S3 notifications or EventBridge "Object Created" events. Sets up JSON logs,
//! opens the store named by `FALAJ_STORE` once per cold start and hands each event to
//! `falaj::ingest::invoke`; all logic lives in the library.

mod handler;

use falaj_lambda as function;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    function::init_json_logs();
    let registry = &*Box::leak(Box::new(function::registry_from_env().await?));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        handler::handle(registry, &ev.payload).await
    }))
    .await
}
