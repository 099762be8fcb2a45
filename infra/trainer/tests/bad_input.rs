//! Bad input is refused with an error that names the file, the line and the column, and a
//! refused job uploads nothing: the store has no key under `incoming/` afterwards.

mod common;

use std::path::Path;

use common::*;
use falaj::store::{self, OpenOptions};
use falaj_core::manifest::Task;
use falaj_train::error::JobError;
use falaj_train::job::{self, JobSpec};
use falaj_train::model::Activation;

fn spec_for(data: &str, target: &str, task: Task, store_dir: &Path) -> JobSpec {
    let mut spec = small_spec("wine.csv", target, task, Activation::Relu);
    spec.data = data.into();
    spec.epochs = 2;
    spec.out_dir = store_dir.with_extension("out");
    spec.store = Some(format!("dir://{}", store_dir.display()));
    spec.run_id = Some("bad-input".into());
    spec
}

async fn incoming_keys(store_dir: &Path) -> Vec<String> {
    if !store_dir.exists() {
        return vec![];
    }
    let s = store::open(
        &format!("dir://{}", store_dir.display()),
        &OpenOptions::default(),
    )
    .await
    .expect("open store");
    store::list_all(s.as_ref(), "incoming/")
        .await
        .expect("list")
}

/// Runs a job on `csv` and returns its error message, checking nothing was uploaded.
async fn refused(csv: &str, target: &str, task: Task) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("bad.csv");
    std::fs::write(&data, csv).expect("write csv");
    let store_dir = dir.path().join("store");
    let spec = spec_for(&data.display().to_string(), target, task, &store_dir);
    let err = job::run(&spec, &mut |_| {})
        .await
        .expect_err("the job must refuse this dataset");
    assert!(
        matches!(err, JobError::Data(_)),
        "expected a data error, got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bad.csv"),
        "error does not name the file: {msg}"
    );
    assert_eq!(
        incoming_keys(&store_dir).await,
        Vec::<String>::new(),
        "something was uploaded: {msg}"
    );
    assert!(
        !spec.out_dir.join("manifest.json").exists(),
        "a local manifest was written: {msg}"
    );
    msg
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} should contain {p:?}");
    }
}

#[tokio::test]
async fn missing_target_column() {
    let msg = refused("a,b,label\n1,2,x\n3,4,y\n", "species", Task::Classification).await;
    assert_names(&msg, &["target column \"species\"", "a, b, label"]);
}

#[tokio::test]
async fn non_numeric_cell() {
    let msg = refused(
        "a,b,label\n1,2,x\n3,abc,y\n5,6,x\n",
        "label",
        Task::Classification,
    )
    .await;
    assert_names(&msg, &["line 3", "column \"b\"", "\"abc\" is not a number"]);
}

#[tokio::test]
async fn nan_and_infinity() {
    let msg = refused(
        "a,b,label\n1,2,x\n3,4,y\nNaN,6,x\n",
        "label",
        Task::Classification,
    )
    .await;
    assert_names(&msg, &["line 4", "column \"a\"", "not a finite number"]);
    let msg = refused(
        "a,b,y\n1,2,0.5\n3,4,1.5\n5,inf,2.5\n",
        "y",
        Task::Regression,
    )
    .await;
    assert_names(&msg, &["line 4", "column \"b\"", "\"inf\""]);
    let msg = refused("a,b,y\n1,2,0.5\n3,4,-inf\n5,6,2.5\n", "y", Task::Regression).await;
    assert_names(&msg, &["line 3", "column \"y\""]);
}

#[tokio::test]
async fn empty_file_and_header_only() {
    let msg = refused("", "label", Task::Classification).await;
    assert_names(&msg, &["is empty", "no header row"]);
    let msg = refused("a,b,label\n", "label", Task::Classification).await;
    assert_names(&msg, &["is empty", "no data rows"]);
}

#[tokio::test]
async fn ragged_rows() {
    let msg = refused(
        "a,b,label\n1,2,x\n3,4\n5,6,x\n",
        "label",
        Task::Classification,
    )
    .await;
    assert_names(&msg, &["line 3", "row has 2 cells but the header has 3"]);
}

#[tokio::test]
async fn single_class_target() {
    let msg = refused(
        "a,b,label\n1,2,x\n3,4,x\n5,6,x\n",
        "label",
        Task::Classification,
    )
    .await;
    assert_names(&msg, &["column \"label\"", "single class", "\"x\""]);
}

#[tokio::test]
async fn dataset_in_a_region_that_is_not_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A local store that says it lives in Ireland, holding a good dataset.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(foreign.join("datasets")).expect("mkdir");
    std::fs::write(
        foreign.join(".falaj-store.json"),
        r#"{"region":"eu-west-1"}"#,
    )
    .expect("meta");
    std::fs::copy(fixture_path("wine.csv"), foreign.join("datasets/wine.csv")).expect("copy");
    let store_dir = dir.path().join("store");
    let data = format!("dir://{}/datasets/wine.csv", foreign.display());
    let spec = spec_for(&data, "cultivar", Task::Classification, &store_dir);
    let err = job::run(&spec, &mut |_| {})
        .await
        .expect_err("a dataset outside the UAE must be refused");
    let msg = err.to_string();
    assert_names(
        &msg,
        &[
            "datasets/wine.csv",
            "residency violation",
            "eu-west-1",
            "me-central-1",
        ],
    );
    assert_eq!(incoming_keys(&store_dir).await, Vec::<String>::new());
    assert!(
        !foreign.join("incoming").exists(),
        "something was written to the foreign store"
    );
}

#[tokio::test]
async fn destination_store_in_a_region_that_is_not_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let foreign = dir.path().join("foreign-registry");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(
        foreign.join(".falaj-store.json"),
        r#"{"region":"us-east-1"}"#,
    )
    .expect("meta");
    let spec = spec_for(
        &fixture_path("wine.csv").display().to_string(),
        "cultivar",
        Task::Classification,
        &foreign,
    );
    let err = job::run(&spec, &mut |_| {})
        .await
        .expect_err("a registry outside the UAE must be refused");
    assert!(matches!(err, JobError::OpenStore { .. }), "{err:?}");
    assert_names(&err.to_string(), &["residency violation", "us-east-1"]);
    // Nothing under incoming/: list it directly, the store itself refuses to open.
    assert!(
        !foreign.join("incoming").exists(),
        "something was uploaded to a foreign store"
    );
}
