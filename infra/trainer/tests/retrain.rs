//! The embedded retrainer (`falaj_cli::retrain`, what `falaj serve` runs) with this crate's real
//! `falaj-train` binary: a retraining request is claimed once, trained on the dataset plus
//! the labelled rows it names, uploaded to `incoming/` and registered by the ingest watcher
//! as a child of the drifted version; a request whose data cannot be joined fails with its
//! reason recorded and nothing uploaded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use falaj::deploy::DeployKey;
use falaj::ingest::Outcome;
use falaj::registry::Registry;
use falaj::store::{self, OpenOptions, Precondition, list_all};
use falaj_cli::retrain::{Claim, RetrainConfig, RetrainEvent, Retrainer};
use falaj_cli::serve::{WatchEvent, Watcher};
use falaj_core::StoreKey;
use falaj_core::manifest::Task;
use falaj_train::model::Activation;
use serde_json::json;

async fn put(reg: &Registry, key: &str, bytes: Vec<u8>) {
    reg.store()
        .put(
            &StoreKey::new(key).unwrap(),
            Bytes::from(bytes),
            Precondition::None,
        )
        .await
        .expect("put");
}

/// A request as `falaj::drift::check` writes it (the verdict itself does not matter here).
fn request(model: &str, version: u64, dataset: &str, labelled: &[&str]) -> serde_json::Value {
    json!({
        "schema": 1, "model": model, "version": version, "env": "prod",
        "requested_at": "2026-12-01T00:00:00Z", "requested_by": "falaj-drift",
        "drifted": ["alcohol"],
        "report": {"model": model, "version": version, "rows": 300, "windows": 1,
                   "rule": {"psi": 0.25, "ks": null, "min_rows": 200}, "features": [],
                   "enough_rows": true, "drifted": ["alcohol"]},
        "dataset": dataset, "labelled": labelled, "target": "cultivar", "telemetry": []
    })
}

async fn registered(watcher: &mut Watcher) -> Vec<(String, u64)> {
    watcher
        .poll_once()
        .await
        .expect("watch")
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Ingest {
                outcome: Outcome::Registered { model, version, .. },
            } => Some((model, version)),
            _ => None,
        })
        .collect()
}

/// A fresh `dir://` store in a temporary directory: the directory, its URI, the registry.
async fn new_store() -> (tempfile::TempDir, String, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", dir.path().join("store").display());
    let opts = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let reg = Arc::new(Registry::new(store::open(&uri, &opts).await.unwrap()));
    // Uploads register as falaj-ingest, which needs a role that may register.
    falaj::promotion::grant(
        &reg,
        "platform",
        falaj::ingest::INGEST_ACTOR,
        falaj_core::promotion::Role::DataScientist,
    )
    .await
    .unwrap();
    (dir, uri, reg)
}

#[tokio::test]
async fn a_retraining_request_trains_once_on_the_named_data_and_registers_a_child_version() {
    let (dir, uri, reg) = new_store().await;
    let wine = std::fs::read(fixture_path("wine.csv")).unwrap();
    let text = String::from_utf8(wine.clone()).unwrap();
    let header = text.lines().next().unwrap();
    put(&reg, "datasets/wine/train.csv", wine.clone()).await;

    // v1: trained from the store's dataset and uploaded to incoming/, as the demo does.
    let mut spec = small_spec(
        "wine.csv",
        "cultivar",
        Task::Classification,
        Activation::Relu,
    );
    spec.data = format!("{uri}/datasets/wine/train.csv");
    spec.model = "wine".into();
    spec.epochs = 3;
    spec.run_id = Some("first".into());
    spec.out_dir = dir.path().join("out1");
    spec.store = Some(uri.clone());
    falaj_train::job::run(&spec, &mut |_| {}).await.unwrap();
    let promoter = Arc::new(falaj_webhook::LocalPromoter::new(
        reg.clone(),
        DeployKey::from_seed([7; 32]),
    ));
    let mut watcher = Watcher::new(reg.clone(), promoter);
    assert_eq!(registered(&mut watcher).await, vec![("wine".into(), 1)]);

    // Labelled rows that arrived later, and the request naming them.
    let extra: Vec<&str> = text.lines().skip(1).take(25).collect();
    let labelled = format!("{header}\n{}\n", extra.join("\n"));
    put(&reg, "datasets/wine/labelled/a.csv", labelled.into_bytes()).await;
    let req_key = "retrain/wine/20261201T000000Z-v1.json";
    put(
        &reg,
        req_key,
        serde_json::to_vec(&request(
            "wine",
            1,
            &spec.data,
            &["datasets/wine/labelled/a.csv"],
        ))
        .unwrap(),
    )
    .await;

    let config = RetrainConfig {
        trainer: env!("CARGO_BIN_EXE_falaj-train").into(),
        work_dir: dir.path().join("retrain"),
        stale_after: Duration::from_secs(3600),
    };
    let heard = std::sync::Mutex::new(Vec::new());
    let mut retrainer = Retrainer::new(reg.clone(), config.clone());
    let events = retrainer
        .poll_once(&|e: &RetrainEvent| heard.lock().unwrap().push(e.clone()))
        .await
        .unwrap();
    assert!(
        matches!(&events[..], [RetrainEvent::Trained { run_id, .. }] if run_id == "retrain-20261201t000000z-v1"),
        "{events:?}"
    );
    let heard = heard.into_inner().unwrap();
    let [
        RetrainEvent::Started {
            labelled_rows,
            data,
            parent_version,
            ..
        },
        RetrainEvent::Trained { .. },
    ] = &heard[..]
    else {
        panic!("expected start then end: {heard:?}");
    };
    assert_eq!((*labelled_rows, *parent_version), (25, 1));
    assert_eq!(
        data,
        &format!("{uri}/datasets/wine/retrain/20261201T000000Z-v1.csv")
    );

    // The joined dataset is in the store: every row of both, one header.
    let joined = reg
        .store()
        .get(&StoreKey::new("datasets/wine/retrain/20261201T000000Z-v1.csv").unwrap())
        .await
        .unwrap()
        .expect("joined dataset");
    let rows = String::from_utf8(joined.bytes.to_vec()).unwrap();
    assert_eq!(rows.lines().count(), text.lines().count() + 25);
    assert_eq!(rows.matches(header).count(), 1);

    // Claimed and finished: neither this retrainer nor a new one (a restart) trains again.
    let claim: Claim = reg
        .get_json(&falaj_cli::retrain::claim_key(req_key).unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(claim.state, "done");
    assert!(retrainer.poll_once(&|_| {}).await.unwrap().is_empty());
    let mut restarted = Retrainer::new(reg.clone(), config.clone());
    assert!(restarted.poll_once(&|_| {}).await.unwrap().is_empty());

    // The upload becomes v2, a child of v1 trained on the joined data.
    assert_eq!(registered(&mut watcher).await, vec![("wine".into(), 2)]);
    let v2 = reg.version("wine", 2).await.unwrap();
    assert_eq!(v2.lineage.parent_version, Some(1));
    assert_eq!(v2.lineage.datasets[0].uri, *data);
    let source = v2.source.as_deref().unwrap_or_default();
    assert!(
        source.contains("/incoming/wine/retrain-20261201t000000z-v1/manifest.json"),
        "{source}"
    );
    let h = &v2.lineage.hyperparameters;
    assert_eq!(h["hidden"], json!([16, 8]), "the drifted version's widths");
    assert_eq!(h["epochs"], json!(3));

    // Labelled data with other columns: refused by name, recorded, nothing uploaded.
    put(
        &reg,
        "datasets/wine/labelled/b.csv",
        b"alcohol,cultivar\n1,class_0\n".to_vec(),
    )
    .await;
    let bad_key = "retrain/wine/20261201T000100Z-v1.json";
    put(
        &reg,
        bad_key,
        serde_json::to_vec(&request(
            "wine",
            1,
            &spec.data,
            &["datasets/wine/labelled/b.csv"],
        ))
        .unwrap(),
    )
    .await;
    let events = restarted.poll_once(&|_| {}).await.unwrap();
    let [RetrainEvent::Failed { error, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(
        error.contains("datasets/wine/labelled/b.csv") && error.contains("columns"),
        "{error}"
    );
    let claim: Claim = reg
        .get_json(&falaj_cli::retrain::claim_key(bad_key).unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(claim.state, "failed");
    assert!(
        list_all(
            reg.store().as_ref(),
            "incoming/wine/retrain-20261201t000100z"
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn a_stale_started_claim_is_taken_over_and_a_fresh_one_is_left_alone() {
    let (dir, uri, reg) = new_store().await;
    let key = "retrain/m/20261201T000000Z-v1.json";
    // The request names a version that does not exist: a taken-over claim ends `failed`.
    put(
        &reg,
        key,
        serde_json::to_vec(&request("m", 1, &format!("{uri}/datasets/m/x.csv"), &[])).unwrap(),
    )
    .await;
    let claim = |at: &str| {
        serde_json::to_vec(&json!({"request": key, "state": "started", "at": at, "run_id": "r"}))
            .unwrap()
    };
    let claim_key = falaj_cli::retrain::claim_key(key).unwrap();
    put(&reg, claim_key.as_str(), claim(&falaj::registry::now())).await;
    let config = RetrainConfig {
        trainer: env!("CARGO_BIN_EXE_falaj-train").into(),
        work_dir: dir.path().join("retrain"),
        stale_after: Duration::from_secs(600),
    };
    let mut r = Retrainer::new(reg.clone(), config.clone());
    assert!(
        r.poll_once(&|_| {}).await.unwrap().is_empty(),
        "fresh claim"
    );

    put(&reg, claim_key.as_str(), claim("2026-01-01T00:00:00Z")).await;
    let mut r = Retrainer::new(reg.clone(), config);
    let events = r.poll_once(&|_| {}).await.unwrap();
    assert!(
        matches!(&events[..], [RetrainEvent::Failed { error, .. }] if error.contains("does not exist")),
        "{events:?}"
    );
    let held: Claim = reg.get_json(&claim_key).await.unwrap().unwrap().0;
    assert_eq!(held.state, "failed");
}

/// Attack: a store writer names a local file (the signing key) as a request's dataset. The
/// retrainer reads only `datasets/<model>/` in its own store and never quotes a file.
#[tokio::test]
async fn a_request_naming_a_local_file_is_refused() {
    let (dir, _, reg) = new_store().await;
    let secret = dir.path().join("signing.key");
    std::fs::write(&secret, "f00dfeedsecretbytes\n").unwrap();
    let key = "retrain/m/20261201T000000Z-v1.json";
    put(
        &reg,
        key,
        serde_json::to_vec(&request(
            "m",
            1,
            secret.to_str().unwrap(),
            &["datasets/m/labelled/a.csv"],
        ))
        .unwrap(),
    )
    .await;
    let config = RetrainConfig {
        trainer: env!("CARGO_BIN_EXE_falaj-train").into(),
        work_dir: dir.path().join("retrain"),
        stale_after: Duration::from_secs(600),
    };
    let events = Retrainer::new(reg.clone(), config)
        .poll_once(&|_| {})
        .await
        .unwrap();
    let text = format!("{events:?}");
    assert!(!text.contains("f00dfeed"), "the file leaked: {text}");
    let held: Claim = reg
        .get_json(&falaj_cli::retrain::claim_key(key).unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(held.state, "failed", "{text}");
    assert!(
        text.contains("datasets/m/"),
        "refused for naming a local file: {text}"
    );
    assert!(
        !serde_json::to_string(&held).unwrap().contains("f00dfeed"),
        "the claim quotes the file"
    );
}
