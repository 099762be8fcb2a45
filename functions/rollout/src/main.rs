//! `falaj-fn-rollout`: on a schedule (EventBridge), finds every deployment that runs a
//! challenger and asks the promote function (`FALAJ_PROMOTE_FUNCTION`, the only holder of
//! the signing key) for one look of the canary judge each, as `falaj-rollout`. The judge
//! steps the challenger up, rolls it back or holds; each step is a signed deployment with the
//! judge's evidence in its audit event. Payload (optional): `{"envs": ["prod"]}`; an
//! EventBridge scheduled event works as is. All logic lives in `falaj::canary`.

use falaj_lambda as function;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    function::init_json_logs();
    let registry = &*Box::leak(Box::new(function::registry_from_env().await?));
    let promote =
        std::env::var("FALAJ_PROMOTE_FUNCTION").map_err(|_| "FALAJ_PROMOTE_FUNCTION is not set")?;
    let promoter = &*Box::leak(Box::new(function::LambdaFunction::new(promote).await));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        falaj::canary::schedule(registry, promoter, &ev.payload)
            .await
            .map_err(|e| Diagnostic {
                error_type: if e.is_retryable() {
                    "Retryable"
                } else {
                    "CanaryScheduleFailed"
                }
                .into(),
                error_message: e.to_string(),
            })
    }))
    .await
}
