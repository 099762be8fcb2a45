//! Drift checks over a real `dir://` store: sketches as falaj-edge writes them, a signed
//! deployment, a registered version with its training manifest; then the CLI.

use std::process::Command;

use bytes::Bytes;
use falaj::deploy::DeployKey;
use falaj::drift::{DriftOutcome, check};
use falaj::store::{Precondition, list_all};
use falaj::{Artifact, NewModel, Registration, Registry};
use falaj_core::StoreKey;
use falaj_core::deployment::{DeploymentManifest, SCHEMA, Slot, Strategy};
use falaj_core::drift::DriftRule;
use falaj_core::sketch::{SketchWindow, pseudo_normals as normals, telemetry_key};
use serde_json::{Value, json};

const MODEL: &str = "drifty";

fn manifest() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": MODEL, "run_id": "r1", "task": "regression", "target": "y",
        "features": ["a", "b"],
        "standardization": {"mean": [0.0, 10.0], "std": [1.0, 2.0], "folded_into_graph": true},
        "lineage": {"datasets": [{"uri": "file://data/drifty.csv", "digest": "sha256:00"}]},
    }))
    .unwrap()
}

async fn sketch(reg: &Registry, stamp: &str, shift_b: f64, seed: u64) {
    let m: falaj_core::manifest::TrainingManifest = serde_json::from_slice(&manifest()).unwrap();
    let mut w = SketchWindow::for_model(Some(&m), 2, ("prod", "node-a", MODEL, 1), stamp.into());
    for (x, y) in normals(500, seed).iter().zip(normals(500, seed + 1)) {
        w.add_row(&[*x, 10.0 + 2.0 * y + shift_b]);
    }
    let key = StoreKey::new(telemetry_key("prod", "node-a", MODEL, stamp, 1)).unwrap();
    reg.put_json(&key, &w, Precondition::IfAbsent)
        .await
        .unwrap();
}

async fn world(dir: &std::path::Path) -> Registry {
    let uri = format!("dir://{}", dir.display());
    let store = falaj::store::open(
        &uri,
        &falaj::store::OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reg = Registry::new(store);
    reg.create_model(
        NewModel {
            name: MODEL.into(),
            owner: "ml".into(),
            ..Default::default()
        },
        "dana",
    )
    .await
    .unwrap();
    let w: Vec<f32> = vec![0.1, 0.2];
    let onnx = prost::Message::encode_to_vec(&falaj_core::onnx::linear_model(2, 1, &w, &[0.0]));
    let v = reg
        .register(
            Registration {
                model: MODEL.into(),
                artifact: Artifact::Bytes(Bytes::from(onnx)),
                artifact_name: "model.onnx".into(),
                manifest: Some(("manifest.json".into(), Bytes::from(manifest()))),
                semver: None,
                author: "dana".into(),
                author_principal: None,
                source: None,
            },
            falaj::store::no_progress(),
        )
        .await
        .unwrap()
        .version;
    let key = DeployKey::from_seed([5; 32]);
    falaj::deploy::publish_key(&reg, &key).await.unwrap();
    let m = DeploymentManifest {
        schema: SCHEMA,
        env: "prod".into(),
        model: MODEL.into(),
        generation: 1,
        strategy: Strategy::Direct,
        champion: Slot::new(v.version, v.digest),
        challenger: None,
        challenger_weight: 0,
        standby: None,
        history: vec![],
        updated_by: "mel".into(),
        updated_at: "2026-11-23T00:00:00Z".into(),
        event_seq: None,
        challenger_mode: Default::default(),
        split_key: None,
    };
    // Written with its audit event, as falaj's own signer does.
    let k = StoreKey::new(format!("deployments/prod/{MODEL}.json")).unwrap();
    reg.commit_state(
        MODEL,
        "mel",
        "deployment.written",
        &format!("prod/{MODEL}"),
        serde_json::json!({}),
        &k,
        Precondition::IfAbsent,
        |seq| {
            let mut m = m.clone();
            m.event_seq = Some(seq);
            key.sign(&m)
        },
    )
    .await
    .unwrap();
    reg
}

#[tokio::test]
async fn stable_inputs_pass_and_shifted_inputs_request_retraining_once() {
    let dir = tempfile::tempdir().unwrap();
    let reg = world(dir.path()).await;

    let o = check(&reg, "production", MODEL, DriftRule::default())
        .await
        .unwrap();
    assert!(matches!(o, DriftOutcome::NoData { .. }), "{o:?}");

    sketch(&reg, "20261123T100000Z", 0.0, 1).await;
    let o = check(&reg, "production", MODEL, DriftRule::default())
        .await
        .unwrap();
    let DriftOutcome::Stable { report } = o else {
        panic!("{o:?}")
    };
    assert_eq!(report.rows, 500);
    assert!(report.features.iter().all(|f| f.psi < 0.1), "{report:#?}");

    // Feature b moves by 1.5 standard deviations.
    sketch(&reg, "20261123T100100Z", 3.0, 5).await;
    sketch(&reg, "20261123T100200Z", 3.0, 9).await;
    let o = check(&reg, "prod", MODEL, DriftRule::default())
        .await
        .unwrap();
    let DriftOutcome::RetrainRequested { key, request } = o else {
        panic!("{o:?}")
    };
    assert_eq!(key, format!("retrain/{MODEL}/20261123T100200Z.json"));
    assert_eq!(request.drifted, vec!["b".to_string()]);
    assert_eq!(request.version, 1);
    assert_eq!(request.dataset.as_deref(), Some("file://data/drifty.csv"));
    assert_eq!(request.telemetry.len(), 3);
    let stored = reg
        .get_json::<Value>(&StoreKey::new(key.clone()).unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(stored["drifted"], json!(["b"]));
    let audit = reg.audit_events(MODEL).await.unwrap();
    let last = &audit.last().unwrap().2;
    assert_eq!(last.action, "drift.retrain_requested");
    assert_eq!(last.actor, "falaj-drift");
    assert_eq!(last.details["request"], key.as_str());
    let problems = reg.verify_audit(MODEL).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    // Checked again: nothing new since the request, so no second request.
    let o = check(&reg, "prod", MODEL, DriftRule::default())
        .await
        .unwrap();
    assert!(matches!(o, DriftOutcome::NoData { .. }), "{o:?}");
    assert_eq!(
        list_all(reg.store().as_ref(), &format!("retrain/{MODEL}/"))
            .await
            .unwrap()
            .len(),
        1
    );

    // The function's handler, as a scheduled event would call it: every prod model.
    sketch(&reg, "20261123T100300Z", 3.0, 13).await;
    let out = falaj::drift::invoke(
        &reg,
        &json!({"source": "aws.events", "detail-type": "Scheduled Event"}),
    )
    .await
    .unwrap();
    assert_eq!(out["models"][0]["model"], MODEL);
    assert_eq!(
        out["models"][0]["result"]["outcome"], "retrain_requested",
        "{out}"
    );
    let err = falaj::drift::invoke(&reg, &json!({"psi": -1}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, falaj::drift::DriftInvokeError::InvalidEvent { .. }) && !err.is_retryable(),
        "{err}"
    );
}

#[tokio::test]
async fn the_cli_reports_drift_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let reg = world(dir.path()).await;
    sketch(&reg, "20261123T110000Z", 4.0, 21).await;
    let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
        .args([
            "--store",
            &format!("dir://{}", dir.path().display()),
            "--json",
        ])
        .args(["drift", MODEL, "--env", "production", "--min-rows", "100"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "retrain_requested", "{v}");
    assert_eq!(v["request"]["drifted"], json!(["b"]));

    let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
        .args(["--store", &format!("dir://{}", dir.path().display())])
        .args(["drift", "no-such-model"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model"));
}
