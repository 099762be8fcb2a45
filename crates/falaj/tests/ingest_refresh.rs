//! Ingest claims refreshed as fast as the store answers (a 20 ms stale time, so a refresh
//! every 4 ms): the refresh in flight when the work ends must never make the final record of
//! the claim fail. Its own test binary, since the stale time is read from the environment.

mod support;

use bytes::Bytes;
use falaj::Registry;
use falaj::ingest::{Outcome, handle_event};
use falaj::store::{self, OpenOptions, Precondition};
use falaj_core::StoreKey;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_register_while_their_claims_are_refreshed() {
    // SAFETY: set before anything reads it; this binary holds only this test.
    unsafe { std::env::set_var("FALAJ_INGEST_CLAIM_STALE_SECS", "0.02") };
    let bucket = support::s3_bucket("me-central-1").await;
    let opts = OpenOptions {
        endpoint: Some(support::s3_endpoint()),
        ..Default::default()
    };
    let reg = Registry::new(store::open(&format!("s3://{bucket}"), &opts).await.unwrap());
    support::let_uploads_register(&reg).await;
    let path = format!(
        "{}/../../tests/fixtures/events/s3-put-manifest.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for i in 0..12u32 {
        let dir = format!("incoming/wine/run{i}");
        for (file, bytes) in [
            ("model.onnx", support::onnx_bytes(i)),
            ("manifest.json", br#"{"model": "wine"}"#.to_vec()),
        ] {
            reg.store()
                .put(
                    &StoreKey::new(format!("{dir}/{file}")).unwrap(),
                    Bytes::from(bytes),
                    Precondition::None,
                )
                .await
                .unwrap();
        }
        let mut event = fixture.clone();
        event["Records"][0]["s3"]["bucket"]["name"] = Value::from(bucket.as_str());
        event["Records"][0]["s3"]["object"]["key"] = Value::from(format!("{dir}/manifest.json"));
        let report = handle_event(&reg, &event).await.unwrap();
        assert!(
            matches!(&report.results[..], [Outcome::Registered { .. }]),
            "upload {i}: {report:?}"
        );
    }
}
