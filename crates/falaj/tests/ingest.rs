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

/// A fresh `dir://` store with no roles at all.
async fn bare_registry() -> (Registry, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", d.path().join("store").display());
    let opts = OpenOptions {
        create: true,
        ..Default::default()
    };
    (Registry::new(store::open(&uri, &opts).await.unwrap()), d)
}

/// A fresh `dir://` store whose uploads may register.
async fn registry() -> (Registry, tempfile::TempDir) {
    let (reg, d) = bare_registry().await;
    support::let_uploads_register(&reg).await;
    (reg, d)
}

/// Uploads a run directory the way falaj-train does: model first, manifest last.
async fn upload_run(reg: &Registry, dir: &str, seed: u32) {
    upload_run_by(reg, dir, seed, serde_json::Value::Null).await;
}

/// [`upload_run`], with a manifest naming `author` (null: none).
async fn upload_run_by(reg: &Registry, dir: &str, seed: u32, author: serde_json::Value) {
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
        serde_json::to_vec(
            &serde_json::json!({"model": "wine", "author": author, "metrics": {"accuracy": 0.9}}),
        )
        .unwrap(),
    )
    .await;
}

/// Registering needs a role, on every path: a store whose roles do not let `falaj-ingest`
/// register refuses the upload (audited, not retried, nothing registered, the fix named),
/// and the same upload registers once the role is granted.
#[tokio::test]
async fn an_upload_registers_only_if_the_uploader_may_register() {
    let (reg, _d) = bare_registry().await;
    support::grant(&reg, &["dana"], falaj_core::promotion::Role::DataScientist).await;
    upload_run(&reg, "incoming/wine/run 1 + été", 1).await;
    let event = fixture("s3-put-manifest.json");
    let refused = handle_event(&reg, &event).await.unwrap();
    match &refused.results[..] {
        [
            Outcome::Failed {
                error, retryable, ..
            },
        ] => {
            assert!(!retryable, "a refusal is not retried");
            assert!(
                error.contains("falaj-ingest may not register")
                    && error.contains("falaj roles grant falaj-ingest"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.versions("wine", &VersionFilter::default()).await,
        Err(falaj::RegistryError::ModelNotFound { .. })
    ));
    let events = reg.audit_events("wine").await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, _, e)| e.action == "refused" && e.actor == "falaj-ingest"),
        "{events:?}"
    );
    support::let_uploads_register(&reg).await;
    let again = handle_event(&reg, &event).await.unwrap();
    assert!(
        matches!(&again.results[..], [Outcome::Registered { version: 1, .. }]),
        "{again:?}"
    );
}

/// The version records who uploaded it: the identity the manifest names (the trainer's
/// FALAJ_IDENTITY), who must hold a role that may register; an author that is not a string
/// is refused with the field named. Nothing is registered for a refused upload.
#[tokio::test]
async fn an_upload_is_authored_by_the_identity_its_manifest_names() {
    let (reg, _d) = bare_registry().await;
    support::grant(&reg, &["dana"], falaj_core::promotion::Role::DataScientist).await;
    let event = fixture("s3-put-manifest.json");
    let dir = "incoming/wine/run 1 + été";
    for (author, needle) in [
        (serde_json::json!("eve"), "eve may not register"),
        (serde_json::json!(42), "\"author\" must be a falaj identity"),
        (serde_json::json!("../x"), "identity \"../x\" is invalid"),
    ] {
        upload_run_by(&reg, dir, 1, author).await;
        let r = handle_event(&reg, &event).await.unwrap();
        match &r.results[..] {
            [
                Outcome::Failed {
                    error, retryable, ..
                },
            ] => {
                assert!(!retryable);
                assert!(error.contains(needle), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            reg.versions("wine", &VersionFilter::default())
                .await
                .is_err()
        );
    }
    upload_run_by(&reg, dir, 1, serde_json::json!("dana")).await;
    let r = handle_event(&reg, &event).await.unwrap();
    assert!(
        matches!(&r.results[..], [Outcome::Registered { version: 1, .. }]),
        "{r:?}"
    );
    let v = reg.version("wine", 1).await.unwrap();
    assert_eq!(v.author, "dana");
    // The store vouched for nobody: no principal is recorded.
    assert_eq!(v.author_principal, None);
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
    support::let_uploads_register(&reg).await;
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

/// A store whose reads of `model.onnx` take two seconds: a slow first invocation.
#[derive(Debug)]
struct SlowReads(std::sync::Arc<dyn store::Store>);

#[async_trait::async_trait]
impl store::Store for SlowReads {
    fn uri(&self) -> &str {
        self.0.uri()
    }
    fn region(&self) -> &str {
        self.0.region()
    }
    async fn get(&self, key: &StoreKey) -> Result<Option<store::Object>, store::StoreError> {
        if key.as_str().ends_with("model.onnx") {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        self.0.get(key).await
    }
    async fn put(
        &self,
        key: &StoreKey,
        bytes: Bytes,
        pre: Precondition,
    ) -> Result<store::ETag, store::StoreError> {
        self.0.put(key, bytes, pre).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<store::ListPage, store::StoreError> {
        self.0.list_page(prefix, start_after, limit).await
    }
    async fn put_blob(
        &self,
        src: store::BlobSource,
        progress: store::Progress,
    ) -> Result<store::BlobInfo, store::StoreError> {
        self.0.put_blob(src, progress).await
    }
}

/// A first invocation slower than the stale-claim time keeps its claim alive (it refreshes
/// it), so a redelivery meanwhile is told to retry and the upload is registered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_first_invocation_keeps_its_claim_and_registers_once() {
    // SAFETY: read only by the ingest handler; the other tests here are indifferent to it.
    unsafe { std::env::set_var("FALAJ_INGEST_CLAIM_STALE_SECS", "0.5") };
    let (reg, _d) = registry().await;
    upload_run(&reg, "incoming/wine/run 1 + été", 1).await;
    let slow = Registry::new(std::sync::Arc::new(SlowReads(reg.store().clone())));
    let first = tokio::spawn(async move {
        handle_event(&slow, &fixture("s3-put-manifest.json"))
            .await
            .unwrap()
    });
    // Well past the stale time while the first one is still reading model.onnx.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let second = handle_event(&reg, &fixture("s3-put-manifest.json"))
        .await
        .unwrap();
    assert!(
        matches!(&second.results[..], [Outcome::Failed { retryable: true, error, .. }] if error.contains("retry later")),
        "{second:?}"
    );
    let first = first.await.unwrap();
    assert!(
        matches!(&first.results[..], [Outcome::Registered { version: 1, .. }]),
        "{first:?}"
    );
    let again = handle_event(&reg, &fixture("s3-put-manifest.json"))
        .await
        .unwrap();
    assert!(
        matches!(&again.results[..], [Outcome::Duplicate { version: 1, .. }]),
        "{again:?}"
    );
    assert_eq!(
        reg.versions("wine", &VersionFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

/// On `dir://` nothing else expires idempotency claims: old webhook claims and finished
/// ingest claims go; claims in progress and retraining claims stay.
#[tokio::test]
async fn expired_claims_go_and_live_ones_stay() {
    let (reg, _d) = registry().await;
    let ago = |secs: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let put = |k: &str, v: Value| {
        let reg = &reg;
        let k = k.to_string();
        async move {
            reg.store()
                .put(
                    &StoreKey::new(k).unwrap(),
                    Bytes::from(v.to_string()),
                    Precondition::IfAbsent,
                )
                .await
                .unwrap();
        }
    };
    let day = 86_400;
    put(
        "idempotency/webhook/old.json",
        serde_json::json!({"at": ago(3600)}),
    )
    .await;
    put(
        "idempotency/webhook/new.json",
        serde_json::json!({"at": ago(5)}),
    )
    .await;
    // An OIDC token's jti claim outlives the TTL while the token is alive: expiring it would
    // let the token be replayed.
    let in_an_hour = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    put(
        "idempotency/webhook/oidc-live.json",
        serde_json::json!({"at": ago(3600), "exp": in_an_hour}),
    )
    .await;
    put(
        "idempotency/ingest/done-old.json",
        serde_json::json!({"state": "done", "at": ago(8 * day)}),
    )
    .await;
    put(
        "idempotency/ingest/done-new.json",
        serde_json::json!({"state": "done", "at": ago(day)}),
    )
    .await;
    put(
        "idempotency/ingest/claimed-old.json",
        serde_json::json!({"state": "claimed", "at": ago(8 * day)}),
    )
    .await;
    put(
        "idempotency/retrain/m/old.json",
        serde_json::json!({"state": "done", "at": ago(30 * day)}),
    )
    .await;
    let gone = falaj::ingest::expire_claims(&reg, std::time::Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(gone, 2);
    let left = store::list_all(reg.store().as_ref(), "idempotency/")
        .await
        .unwrap();
    assert_eq!(
        left,
        [
            "idempotency/ingest/claimed-old.json",
            "idempotency/ingest/done-new.json",
            "idempotency/retrain/m/old.json",
            "idempotency/webhook/new.json",
            "idempotency/webhook/oidc-live.json",
        ]
    );
    // Nothing outside idempotency/ can be expired.
    let k = StoreKey::new("models/x/model.json").unwrap();
    reg.store()
        .put(&k, Bytes::from_static(b"{}"), Precondition::IfAbsent)
        .await
        .unwrap();
    assert!(!reg.store().expire_claim(&k).await.unwrap());
    assert!(reg.store().get(&k).await.unwrap().is_some());
}
