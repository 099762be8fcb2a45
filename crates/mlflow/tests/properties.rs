//! Every MLflow request, whatever its method, path, query or body, gets MLflow's typed answer
//! from an authenticated caller: JSON, an `error_code` on every failure, and never a 5xx (the
//! client retries 5xx for minutes). A fixed number of cases per run.

use std::sync::Arc;

use falaj::Registry;
use falaj::store::{self, OpenOptions};
use falaj_core::promotion::Role;
use falaj_webhook::{HttpRequest, Webhook, WebhookAuth};
use proptest::prelude::*;
use serde_json::{Value, json};

const TOKEN: &str = "dana-token-0123456789";

fn world(rt: &tokio::runtime::Runtime) -> (Webhook, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().join("store").display());
    let opts = OpenOptions {
        create: true,
        ..Default::default()
    };
    let reg = Arc::new(Registry::new(
        rt.block_on(store::open(&uri, &opts)).unwrap(),
    ));
    rt.block_on(falaj::promotion::grant(&reg, "root", "root", Role::Admin))
        .unwrap();
    rt.block_on(falaj::promotion::grant(
        &reg,
        "root",
        "dana",
        Role::DataScientist,
    ))
    .unwrap();
    let promoter = Arc::new(falaj_webhook::LocalPromoter::new(
        reg.clone(),
        falaj::deploy::DeployKey::from_seed([7; 32]),
    ));
    let config =
        json!({"tokens": [{"identity": "dana", "sha256": falaj_webhook::token_digest(TOKEN)}]});
    let auth = WebhookAuth::parse(&config.to_string(), "w.json").unwrap();
    (Webhook::new(reg, promoter, auth), d)
}

/// A JSON value with the keys MLflow's handlers read over-represented.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("name".to_string()),
        Just("version".to_string()),
        Just("alias".to_string()),
        Just("source".to_string()),
        Just("run_id".to_string()),
        Just("experiment_id".to_string()),
        Just("key".to_string()),
        Just("value".to_string()),
        Just("metrics".to_string()),
        Just("params".to_string()),
        Just("tags".to_string()),
        Just("filter".to_string()),
        Just("max_results".to_string()),
        Just("page_token".to_string()),
        "[a-z_]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::num::f64::ANY.prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
        Just(Value::from("clinic")),
        Just(Value::from("production")),
        Just(Value::from("runs:/../../x")),
        Just(Value::from("name = 'clinic' AND tags.a LIKE 'x%'")),
    ];
    let value = leaf.prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        value.prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..48),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_mlflow_request_gets_a_typed_answer_and_never_a_5xx(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("PUT")],
        path in prop_oneof![
            "/api/2\\.0/mlflow/(registered-models|model-versions|experiments|runs|logged-models|metrics)/(create|get|search|update|delete|alias|set-tag|delete-tag|get-latest-versions|get-download-uri|get-by-name|log-batch|log-metric|log-parameter|log-inputs|outputs|get-history|m-[0-9a-f]{0,32})",
            "/api/2\\.0/mlflow-artifacts/(artifacts|presigned)(/[ -~]{0,24})?",
            "/api/3\\.0/mlflow/[a-z-]{0,12}",
        ],
        query in "(\\?(name|version|alias|run_id|path|experiment_id|filter|max_results|page_token)=[ -~&&[^#]]{0,12})?",
        body in body(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (hook, _d) = world(&rt);
        let req = HttpRequest::new(method, &format!("{path}{query}"))
            .with_header("authorization", format!("Bearer {TOKEN}"))
            .with_body(body);
        let resp = rt.block_on(falaj_mlflow::handle(&hook, req));
        prop_assert!((200..500).contains(&resp.status) || resp.status == 501, "{} {}{}: {} {}", method, path, query, resp.status, String::from_utf8_lossy(&resp.body));
        if resp.status >= 400 {
            let body: Value = serde_json::from_slice(&resp.body).map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert!(body["error_code"].is_string(), "{body}");
            prop_assert!(body["message"].is_string(), "{body}");
        }
    }
}

/// Found by the property above in CI: a model name that is not a valid store segment (it
/// starts with '.') reached a store key unchecked and panicked into a 500.
#[test]
fn names_that_are_not_store_segments_are_refused_not_panicked_on() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (hook, _d) = world(&rt);
    for path in [
        "/api/2.0/mlflow/registered-models/get-latest-versions?name=.x",
        "/api/2.0/mlflow/model-versions/get?name=.x&version=1",
        "/api/2.0/mlflow/model-versions/get-download-uri?name=..&version=1",
    ] {
        let req =
            HttpRequest::new("GET", path).with_header("authorization", format!("Bearer {TOKEN}"));
        let resp = rt.block_on(falaj_mlflow::handle(&hook, req));
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(
            (400..500).contains(&resp.status),
            "{path}: {} {body}",
            resp.status
        );
        assert!(body["error_code"].is_string(), "{path}: {body}");
    }
}
