//! `falaj-fn-drift`: on a schedule, checks every model deployed to an environment for input
//! drift (the edge's sketches under `telemetry/` against the training distribution) and
//! writes `retrain/<model>/<stamp>.json` where the rule says so; that object starts the
//! retraining job. Payload (all optional): `{"env": "prod", "models": ["m"], "psi": 0.25,
//! "ks": 0.3, "min_rows": 200}`; an EventBridge scheduled event works as is. All logic lives
//! in `falaj::drift`.

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
