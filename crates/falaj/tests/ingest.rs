//! The ingest handler with real event shapes (`tests/fixtures/events/`): duplicates,
//! out-of-order delivery, a poison record in a batch, URL-encoded keys.

mod support;

use bytes::Bytes;
use falaj::ingest::{Outcome, handle_event};
use falaj::store::{self, OpenOptions, Precondition};
use falaj::{Registry, VersionFilter};
use falaj_core::StoreKey;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn registry() -> (Registry, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().join("store").display());
    let opts = OpenOptions {
        create: true,
        ..Default::default()
    };
    (Registry::new(store::open(&uri, &opts).await.unwrap()), d)
}

/// Uploads a run directory the way falaj-train does: model first, manifest last.
async fn upload_run(reg: &Registry, dir: &str, seed: u32) {
    let put = |k: String, b: Vec<u8>| async move {
        reg.store()
            .put(
                &StoreKey::new(k).unwrap(),
                Bytes::from(b),
                Precondition::None,
            )
            .await
            .unwrap();
    };
    put(format!("{dir}/model.onnx"), support::onnx_bytes(seed)).await;
    put(
        format!("{dir}/manifest.json"),
        serde_json::to_vec(&serde_json::json!({"model": "wine", "metrics": {"accuracy": 0.9}}))
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_encoded_key_registers_once_however_often_delivered() {
    let (reg, _d) = registry().await;
    upload_run(&reg, "incoming/wine/run 1 + été", 1).await;
    let event = fixture("s3-put-manifest.json");
    let first = handle_event(&reg, &event).await.unwrap();
    assert!(
        matches!(&first.results[..], [Outcome::Registered { version: 1, key, .. }] if key == "incoming/wine/run 1 + été/manifest.json"),
        "{first:?}"
    );
    // Duplicate delivery and a replay later: the same version, never a second one.
    for _ in 0..3 {
        let again = handle_event(&reg, &event).await.unwrap();
        assert!(
            matches!(&again.results[..], [Outcome::Duplicate { version: 1, .. }]),
            "{again:?}"
        );
    }
    let versions = reg
        .versions("wine", &VersionFilter::default())
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].metrics["accuracy"], 0.9);
    assert!(
        versions[0]
            .source
            .as_deref()
            .unwrap()
            .starts_with("s3://falaj-registry/incoming/wine/run 1 + été/manifest.json#")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_fails_alone_and_is_reported() {
    let (reg, _d) = registry().await;
    upload_run(&reg, "incoming/wine/run2", 2).await;
    let report = handle_event(&reg, &fixture("s3-batch-poison.json"))
        .await
        .unwrap();
    assert_eq!(report.results.len(), 3);
    assert!(
        matches!(&report.results[0], Outcome::Registered { version: 1, .. }),
        "{report:?}"
    );
    assert!(
        matches!(&report.results[1], Outcome::Failed { retryable: false, error, .. } if error.contains("malformed S3 record")),
        "{report:?}"
    );
    assert!(
        matches!(&report.results[2], Outcome::Ignored { reason, .. } if reason.contains("outside incoming/")),
        "{report:?}"
    );
    assert_eq!(report.failures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_shape_and_out_of_order_delivery() {
    let (reg, _d) = registry().await;
    // The manifest event arrives before the model exists: a clear, non-retryable failure,
    // recorded so a replay says the same; nothing is registered.
    let put = |k: &str, b: Vec<u8>| {
        let k = StoreKey::new(k).unwrap();
        let reg = &reg;
        async move {
            reg.store()
                .put(&k, Bytes::from(b), Precondition::None)
                .await
                .unwrap()
        }
    };
    put(
        "incoming/wine/run3/manifest.json",
        b"{\"model\": \"wine\"}".to_vec(),
    )
    .await;
    let event = fixture("eventbridge-object-created.json");
    let r = handle_event(&reg, &event).await.unwrap();
    assert!(
        matches!(&r.results[..], [Outcome::Failed { error, retryable: false, .. }] if error.contains("upload model.onnx before manifest.json")),
        "{r:?}"
    );
    assert_eq!(reg.latest_version("wine").await.unwrap_or(0), 0);
    // A new upload of the same key (new etag/sequencer) with the model in place registers.
    put("incoming/wine/run3/model.onnx", support::onnx_bytes(3)).await;
    let mut again = event.clone();
    again["detail"]["object"]["etag"] = "c0ffee".into();
    again["detail"]["object"]["sequencer"] = "00617F08299329D190".into();
    let r = handle_event(&reg, &again).await.unwrap();
    assert!(
        matches!(&r.results[..], [Outcome::Registered { version: 1, .. }]),
        "{r:?}"
    );
    // The model.onnx event itself is acknowledged and skipped.
    let mut model_event = again.clone();
    model_event["detail"]["object"]["key"] = "incoming/wine/run3/model.onnx".into();
    let r = handle_event(&reg, &model_event).await.unwrap();
    assert!(matches!(&r.results[..], [Outcome::Ignored { .. }]), "{r:?}");
}

#[tokio::test]
async fn malformed_events_are_refused_with_a_reason() {
    let (reg, _d) = registry().await;
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"Records": 3}),
        serde_json::json!({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}),
    ] {
        let e = handle_event(&reg, &bad).await.unwrap_err();
        assert!(e.to_string().contains("not an S3 event"), "{e}");
    }
    assert_eq!(
        falaj::ingest::decode_key("a+b%2Bc%C3%A9").unwrap(),
        "a b+cé"
    );
    assert!(falaj::ingest::decode_key("bad%zz").is_err());
    assert!(falaj::ingest::decode_key("trunc%4").is_err());
}

/// On `s3://bucket/PREFIX` the event names `PREFIX/incoming/...`: it registers; a key outside
/// the prefix is ignored, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefixed_s3_store_ingests_its_uploads() {
    let bucket = support::s3_bucket("me-central-1").await;
    let opts = OpenOptions {
        endpoint: Some(support::s3_endpoint()),
        ..Default::default()
    };
    let reg = Registry::new(
        store::open(&format!("s3://{bucket}/team-a"), &opts)
            .await
            .unwrap(),
    );
    upload_run(&reg, "incoming/wine/run1", 1).await;
    let event = |key: &str| {
        let mut e = fixture("s3-put-manifest.json");
        e["Records"][0]["s3"]["bucket"]["name"] = Value::from(bucket.as_str());
        e["Records"][0]["s3"]["object"]["key"] = Value::from(key);
        e
    };
    let report = handle_event(&reg, &event("team-a/incoming/wine/run1/manifest.json"))
        .await
        .unwrap();
    assert!(
        matches!(
            &report.results[..],
            [Outcome::Registered { version: 1, .. }]
        ),
        "{report:?}"
    );
    let report = handle_event(&reg, &event("team-b/incoming/wine/run1/manifest.json"))
        .await
        .unwrap();
    assert!(
        matches!(&report.results[..], [Outcome::Ignored { reason, .. }] if reason.contains("outside this store's prefix")),
        "{report:?}"
    );
    assert_eq!(
        reg.versions("wine", &VersionFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}
