//! `falaj-fn-validate`: runs a model's gates when a version is registered.
//!
//! Triggered by the creation of `models/<m>/versions/<n>.json` (S3 / EventBridge), invoked
//! with `{"model": ..., "version": ...}`, or invoked by the webhook with
//! `{"webhook_validate": ...}` for `POST …/validate` (the webhook links no tract). Scores the
//! version on the holdout its gate policy names and writes the immutable gate report; all
//! logic lives in `falaj_gates::pipeline`. When the gates pass and the policy says `auto_staging`,
//! the response asks for a promotion to staging, which a Lambda destination or the caller
//! hands to the promote function (the only holder of the signing key).

mod handler;

use falaj_lambda as function;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

fn main() -> Result<(), lambda_runtime::Error> {
    // Run as `bootstrap __falaj-gates-worker`, this binary measures one model in a child
    // process under the gates' deadline and memory cap (falaj_gates::sandbox).
    falaj_gates::sandbox::serve_worker_if_asked();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), lambda_runtime::Error> {
    function::init_json_logs();
    let registry = &*Box::leak(Box::new(function::registry_from_env().await?));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        handler::handle(registry, &ev.payload).await
    }))
    .await
}
