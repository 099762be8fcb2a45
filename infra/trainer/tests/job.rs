//! A whole job end to end on a local store: files, upload order, manifest contents, the
//! registry's view of the ONNX signature, and create-only uploads.

mod common;

use common::*;
use falaj::store::{self, OpenOptions};
use falaj_core::StoreKey;
use falaj_core::manifest::{Task, TrainingManifest};
use falaj_train::error::JobError;
use falaj_train::job::{self, FILES};
use falaj_train::model::Activation;

#[tokio::test]
async fn job_writes_and_uploads_a_complete_run_with_the_manifest_last() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("registry");
    let mut spec = small_spec(
        "wine.csv",
        "cultivar",
        Task::Classification,
        Activation::Relu,
    );
    spec.model = "wine".into();
    spec.run_id = Some("run-7".into());
    spec.out_dir = dir.path().join("out");
    spec.store = Some(format!("dir://{}", store_dir.display()));
    spec.code_commit = Some("0123abc".into());
    let mut epochs_seen = 0;
    let outcome = job::run(&spec, &mut |_| epochs_seen += 1)
        .await
        .expect("job succeeds");
    assert_eq!(epochs_seen, spec.epochs);

    let expected: Vec<String> = FILES
        .iter()
        .map(|f| format!("incoming/wine/run-7/{f}"))
        .collect();
    assert_eq!(outcome.uploaded, expected, "upload order (manifest last)");
    assert_eq!(FILES.last(), Some(&"manifest.json"));

    let s = store::open(
        &format!("dir://{}", store_dir.display()),
        &OpenOptions::default(),
    )
    .await
    .expect("open");
    let get = |name: &str| {
        let s = s.clone();
        let key = StoreKey::new(format!("incoming/wine/run-7/{name}")).expect("key");
        async move {
            s.get(&key)
                .await
                .expect("get")
                .expect("object exists")
                .bytes
        }
    };
    let onnx = get("model.onnx").await;
    assert_eq!(
        onnx.as_ref(),
        std::fs::read(spec.out_dir.join("model.onnx"))
            .expect("local file")
            .as_slice()
    );

    let manifest: TrainingManifest =
        serde_json::from_slice(&get("manifest.json").await).expect("manifest parses");
    let ds = fixture("wine.csv");
    assert_eq!(manifest.model, "wine");
    assert_eq!(manifest.run_id, "run-7");
    assert_eq!(manifest.task, Task::Classification);
    assert_eq!(manifest.target, "cultivar");
    assert_eq!(manifest.features.len(), 13);
    assert_eq!(manifest.features[0], "alcohol");
    assert_eq!(manifest.classes, vec!["class_0", "class_1", "class_2"]);
    assert_eq!(manifest.lineage.datasets.len(), 1);
    assert_eq!(
        manifest.lineage.datasets[0].digest, ds.digest,
        "the digest of the exact bytes read"
    );
    assert!(manifest.lineage.datasets[0].digest.starts_with("sha256:"));
    assert_eq!(manifest.lineage.code_commit.as_deref(), Some("0123abc"));
    assert_eq!(
        manifest.lineage.hyperparameters["hidden"],
        serde_json::json!([16, 8])
    );
    assert_eq!(manifest.seed, Some(7));
    assert_eq!(manifest.backend.as_deref(), Some("flex"));
    assert!(
        manifest
            .device
            .as_deref()
            .is_some_and(|d| d.starts_with("cpu"))
    );
    let st = manifest.standardization.as_ref().expect("standardization");
    assert!(st.folded_into_graph);
    assert_eq!(st.mean.len(), 13);
    assert!(st.std.iter().all(|s| *s > 0.0));
    assert!(
        manifest.metrics["accuracy"] > 0.5,
        "wine is easy: {:?}",
        manifest.metrics
    );
    assert!(manifest.started_at.is_some() && manifest.finished_at.is_some());
    let stats = manifest.extra["feature_stats"]
        .as_array()
        .expect("feature_stats");
    assert_eq!(stats.len(), 13);
    let props: f64 = stats[0]["proportions"]
        .as_array()
        .expect("proportions")
        .iter()
        .filter_map(|v| v.as_f64())
        .sum();
    assert!((props - 1.0).abs() < 1e-9, "histogram proportions sum to 1");
    assert_eq!(stats[0]["bin_edges"].as_array().expect("edges").len(), 11);
    assert_eq!(
        manifest.extra["artifact"]["digest"],
        serde_json::json!(outcome.onnx_digest)
    );

    // The registry reads the signature with falaj-core's summarize.
    let summary = falaj_core::onnx::summarize(&onnx).expect("registry can read it");
    assert_eq!(summary.format.opset, 17);
    assert_eq!(summary.signature.inputs.len(), 1);
    assert_eq!(summary.signature.inputs[0].name, "input");
    assert_eq!(summary.signature.inputs[0].shape, vec!["batch", "13"]);
    assert_eq!(summary.signature.outputs[0].name, "output");
    assert_eq!(summary.signature.outputs[0].shape, vec!["batch", "3"]);
    assert_eq!(summary.ops, vec!["Div", "Gemm", "Relu", "Softmax", "Sub"]);

    let metrics: serde_json::Value =
        serde_json::from_slice(&get("metrics.json").await).expect("metrics parse");
    assert_eq!(
        metrics["epochs"].as_array().expect("epochs").len(),
        spec.epochs
    );
    let png = get("training_curve.png").await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Uploads are create-only: the same run id again is refused before the manifest.
    let err = job::run(&spec, &mut |_| {})
        .await
        .expect_err("a second upload to the same run must fail");
    match &err {
        JobError::Upload {
            key,
            uploaded,
            source,
        } => {
            assert_eq!(key, "incoming/wine/run-7/model.onnx");
            assert!(uploaded.is_empty());
            assert!(source.is_conflict());
        }
        other => panic!("expected an upload conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn dataset_read_from_a_dir_store_records_uri_digest_and_region() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("falaj");
    let s = store::open(
        &format!("dir://{}", root.display()),
        &OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .await
    .expect("create store");
    let ds = fixture("diabetes.csv");
    s.put(
        &StoreKey::new("datasets/diabetes.csv").expect("key"),
        ds.bytes.clone().into(),
        store::Precondition::IfAbsent,
    )
    .await
    .expect("put dataset");
    let uri = format!("dir://{}/datasets/diabetes.csv", root.display());
    let mut spec = small_spec(
        "diabetes.csv",
        "progression",
        Task::Regression,
        Activation::Gelu,
    );
    spec.data = uri.clone();
    spec.model = "diabetes".into();
    spec.run_id = Some("r1".into());
    spec.out_dir = dir.path().join("out");
    spec.store = Some(format!("dir://{}", root.display()));
    let outcome = job::run(&spec, &mut |_| {}).await.expect("job succeeds");
    let d = &outcome.manifest.lineage.datasets[0];
    assert_eq!(d.uri, uri);
    assert_eq!(d.digest, ds.digest);
    assert_eq!(d.region.as_deref(), Some("me-central-1"));
    assert!(outcome.manifest.metrics.contains_key("rmse"));
    assert!(
        outcome.manifest.features.contains(&"sex".to_string()),
        "the sensitive attribute stays a feature"
    );
    let summary = falaj_core::onnx::summarize(
        &std::fs::read(spec.out_dir.join("model.onnx")).expect("model"),
    )
    .expect("summary");
    assert_eq!(summary.signature.outputs[0].shape, vec!["batch", "1"]);
    assert_eq!(summary.ops, vec!["Add", "Div", "Erf", "Gemm", "Mul", "Sub"]);
}
