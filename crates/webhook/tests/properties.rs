//! Property tests over what falaj parses from outside: ONNX files, S3/EventBridge events,
//! webhook requests and gate policies. A fixed number of cases per run; each property fails
//! on a panic or on an error that is not the parser's own typed error.

use std::sync::Arc;

use bytes::Bytes;
use falaj::store::{self, OpenOptions};
use falaj::{Registry, ingest};
use falaj_core::policy::GatePolicy;
use falaj_webhook::{HttpRequest, Webhook, WebhookAuth, handle};
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep, with the keys the parsers look for over-represented.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Records".to_string()),
        Just("s3".to_string()),
        Just("bucket".to_string()),
        Just("object".to_string()),
        Just("key".to_string()),
        Just("name".to_string()),
        Just("detail".to_string()),
        Just("detail-type".to_string()),
        Just("source".to_string()),
        "[a-zA-Z%+]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::num::f64::ANY.prop_map(Value::from),
        "(%[0-9A-Fa-f]{0,2}|\\+|[a-z/é]){0,12}".prop_map(Value::from),
        Just(Value::from("Object Created")),
        Just(Value::from("aws.s3")),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_onnx() -> Vec<u8> {
    falaj_core::onnx::linear_model(3, 2, &[0.5; 6], &[0.1, 0.2]).encode_to_vec()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_onnx_summariser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = falaj_core::onnx::summarize(&bytes);
    }

    #[test]
    fn the_onnx_summariser_never_panics_on_a_damaged_model(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = valid_onnx();
        for (i, v) in edits {
            let at = i.index(b.len());
            b[at] = v;
        }
        let keep = cut.index(b.len() + 1);
        b.truncate(keep);
        // Either a summary whose counts fit the bytes, or the typed error.
        if let Ok(s) = falaj_core::onnx::summarize(&b) {
            prop_assert!(s.ops.len() <= b.len());
        }
    }

    #[test]
    fn the_event_parser_never_panics(event in json()) {
        match ingest::parse_event(&event) {
            Ok(records) => {
                // Every record is an upload or a typed, named failure.
                for r in records {
                    if let Err(o) = r {
                        prop_assert!(matches!(o, ingest::Outcome::Failed { .. }), "{o:?}");
                    }
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("not an S3 event")),
        }
    }

    #[test]
    fn a_gate_policy_parses_or_names_its_error(
        section in prop_oneof![Just("metrics".to_string()), Just("fairness".to_string()), Just("latency".to_string()), Just("promotion".to_string()), Just("holdout".to_string()), "[a-z]{1,8}"],
        key in prop_oneof![Just("accuracy".to_string()), Just("approvals".to_string()), Just("p99_ms".to_string()), Just("key".to_string()), "[a-z_]{1,10}"],
        value in prop_oneof![
            prop::num::f64::ANY.prop_map(|v| format!("{{ min = {v:?} }}")),
            Just("{ min = nan }".to_string()),
            Just("{ max = inf }".to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            "\"[ -~]{0,12}\"",
            "[ -~]{0,16}",
        ],
    ) {
        let src = format!("[{section}]\n{key} = {value}\n");
        match GatePolicy::parse(&src, "p.toml") {
            Ok(p) => {
                // What parses is usable: its approvals are a count, and every bound is a number.
                prop_assert!(p.approvals <= 100, "{src}");
                for g in &p.metrics {
                    let shown = format!("{:?}", g.bound);
                    prop_assert!(!shown.contains("NaN") && !shown.contains("inf"), "{src} -> {shown}");
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("p.toml"), "{src}: {e}"),
        }
    }

    #[test]
    fn the_onnx_summariser_never_panics_on_a_stream(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = falaj_core::onnx::summarize_reader(std::io::Cursor::new(bytes));
    }
}

fn webhook() -> (Webhook, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().join("store").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = OpenOptions {
        create: true,
        ..Default::default()
    };
    let reg = Arc::new(Registry::new(
        rt.block_on(store::open(&uri, &opts)).unwrap(),
    ));
    let promoter = Arc::new(falaj_webhook::LocalPromoter::new(
        reg.clone(),
        falaj::deploy::DeployKey::from_seed([3; 32]),
    ));
    let auth = WebhookAuth::parse(
        r#"{"ci": [{"identity": "ci", "secret": "0123456789abcdef0123456789"}]}"#,
        "w.json",
    )
    .unwrap();
    (Webhook::new(reg, promoter, auth), d)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..config() })]

    #[test]
    fn every_webhook_request_gets_a_typed_answer(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("PUT".to_string()), Just("DELETE".to_string()), "[A-Za-z]{0,7}"],
        path in prop_oneof![
            "/v1/models(/[a-z]{1,4}(/versions/[0-9x]{1,3}(/(approvals|promote|validate))?)?)?",
            "/v1/models/[a-z]{1,3}/deployments/(prod|staging|x)(/(rollback|rollout))?",
            "/[ -~]{0,30}",
        ],
        query in "(\\?[a-z=&%]{0,12})?",
        sig in prop_oneof![Just(None), "v[12]=[0-9a-f]{0,64}".prop_map(Some), "[ -~]{0,20}".prop_map(Some)],
        ts in prop_oneof![Just(None), any::<i64>().prop_map(|t| Some(t.to_string())), "[ -~]{0,8}".prop_map(Some)],
        identity in prop_oneof![Just(None), Just(Some("ci".to_string())), "[ -~]{0,12}".prop_map(Some)],
        bearer in prop_oneof![Just(None), "Bearer [ -~]{0,20}".prop_map(Some)],
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..64), json().prop_map(|v| v.to_string().into_bytes())],
    ) {
        let (hook, _d) = webhook();
        let mut req = HttpRequest::new(&method, &format!("{path}{query}")).with_body(Bytes::from(body));
        for (name, v) in [("x-falaj-signature", sig), ("x-falaj-timestamp", ts), ("x-falaj-identity", identity), ("authorization", bearer)] {
            if let Some(v) = v {
                req = req.with_header(name, v);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let resp = rt.block_on(handle(&hook, req));
        prop_assert!((200..600).contains(&resp.status), "{}", resp.status);
        let body: Value = serde_json::from_slice(&resp.body).map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
        if resp.status >= 400 {
            prop_assert!(body["error"]["code"].is_string(), "{body}");
        }
    }
}
