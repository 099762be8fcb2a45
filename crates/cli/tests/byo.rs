//! Bring your own model: a PyTorch MLP exported by torch.onnx.export (committed by
//! scripts/make-byo-cases.py) goes from `falaj push --holdout --target` (the manifest written
//! from the model and the holdout, nothing by hand) through the gates and two approvals to a
//! signed deployment, with the real `falaj` binary; and `falaj manifest init` names each way
//! a model and a holdout can disagree.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> String {
    case("pytorch-mlp")
}

fn case(name: &str) -> String {
    root()
        .join(format!("tests/fixtures/models/{name}/model.onnx"))
        .display()
        .to_string()
}

fn holdout() -> String {
    root()
        .join("tests/fixtures/datasets/breast_cancer.csv")
        .display()
        .to_string()
}

struct Ran {
    code: Option<i32>,
    out: Value,
    err: String,
}

fn falaj(dir: &Path, who: &str, args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
        .arg("--store")
        .arg(format!("dir://{}", dir.join("store").display()))
        .args(["--json", "--as", who])
        .args(args)
        .env("FALAJ_SIGNING_KEY", dir.join("signing.key"))
        .output()
        .unwrap();
    Ran {
        code: out.status.code(),
        out: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        // The message itself, not its JSON escaping.
        err: serde_json::from_slice::<Value>(&out.stderr)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The gate `name` of a report (panics naming the report when it is missing).
fn gate(report: &Value, name: &str) -> Value {
    report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[track_caller]
fn ok(dir: &Path, who: &str, args: &[&str]) -> Value {
    let r = falaj(dir, who, args);
    assert_eq!(r.code, Some(0), "falaj {args:?}: {}", r.err);
    r.out
}

/// A store with roles, model `clinic` and a policy of accuracy >= 0.9.
fn clinic_store(dir: &Path) {
    for (who, role) in [
        ("root", "admin"),
        ("sam", "data-scientist"),
        ("mel", "ml-engineer"),
        ("ann", "approver"),
        ("bob", "approver"),
    ] {
        ok(dir, "root", &["roles", "grant", who, role]);
    }
    ok(dir, "root", &["model", "create", "clinic"]);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[metrics]\naccuracy = { min = 0.9 }\n").unwrap();
    ok(
        dir,
        "mel",
        &["policy", "set", "clinic", &policy.display().to_string()],
    );
}

#[test]
fn a_pytorch_export_goes_from_push_to_a_signed_deployment_with_no_hand_written_json() {
    to_deployment(&model());
}

/// scikit-learn's forest: two outputs (a label and the probabilities), an `ai.onnx.ml`
/// operator; the manifest names the probabilities and the gates and edge read them.
#[test]
fn a_scikit_learn_forest_goes_from_push_to_a_signed_deployment() {
    to_deployment(&case("sklearn-forest"));
}

/// A scikit-learn pipeline whose operators the edge does not run (`ai.onnx.ml` Scaler): the
/// gates reject it with the operators named; nothing crashes, nothing is deployed.
#[test]
fn a_model_with_operators_the_edge_does_not_run_is_rejected_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    clinic_store(dir);
    let m = root()
        .join("tests/fixtures/models-unsupported/sklearn-logreg.onnx")
        .display()
        .to_string();
    let h = holdout();
    push_clinic(dir, &m, &[]);
    let r = falaj(dir, "sam", &["validate", "clinic@1", "--data", &h]);
    assert_eq!(r.code, Some(6), "{}", r.err);
    let report = ok(dir, "sam", &["show", "clinic@1"]).to_string();
    assert!(report.contains("ai.onnx.ml:Scaler"), "{report}");
    let r = falaj(dir, "mel", &["promote", "clinic@1", "--to", "staging"]);
    assert_eq!(r.code, Some(6), "{}", r.err);
    assert!(!dir.join("store/deployments/staging/clinic.json").exists());
}

/// `falaj push clinic FILE --holdout breast_cancer.csv --target diagnosis`, as sam.
fn push_clinic(dir: &Path, file: &str, extra: &[&str]) -> Value {
    let h = holdout();
    let mut args = vec![
        "push",
        "clinic",
        file,
        "--holdout",
        &h,
        "--target",
        "diagnosis",
    ];
    args.extend_from_slice(extra);
    ok(dir, "sam", &args)
}

fn to_deployment(m: &str) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    clinic_store(dir);
    let (m, h) = (m.to_string(), holdout());
    let pushed = push_clinic(dir, &m, &["--param", "lr=0.01"]);
    assert_eq!(pushed["version"]["version"], 1, "{pushed}");
    let report = ok(dir, "sam", &["validate", "clinic@1", "--data", &h]);
    assert_eq!(report["passed"], true, "{report}");
    ok(dir, "ann", &["approve", "clinic@1", "--to", "production"]);
    ok(dir, "bob", &["approve", "clinic@1", "--to", "production"]);
    ok(dir, "mel", &["promote", "clinic@1", "--to", "production"]);
    let signed: Value = serde_json::from_slice(
        &std::fs::read(dir.join("store/deployments/prod/clinic.json")).unwrap(),
    )
    .unwrap();
    let payload: Value = serde_json::from_str(signed["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["champion"]["version"], 1);
    // The manifest the version carries is the one falaj wrote: features in header order.
    let shown = ok(dir, "sam", &["show", "clinic@1"]);
    assert_eq!(
        shown["version"]["lineage"]["hyperparameters"]["lr"], "0.01",
        "{shown}"
    );
}

#[test]
fn manifest_init_writes_the_manifest_and_names_each_disagreement() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (m, h) = (model(), holdout());
    let out = dir.join("manifest.json");
    let o = out.display().to_string();
    let init = |extra: &[&str]| {
        let mut a = vec!["manifest", "init", &m, "--model", "clinic"];
        a.extend_from_slice(extra);
        falaj(dir, "sam", &a)
    };
    let r = init(&["--holdout", &h, "--target", "diagnosis", "--out", &o]);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let header = std::fs::read_to_string(&h).unwrap();
    let columns: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    let features: Vec<&str> = columns.into_iter().filter(|c| *c != "diagnosis").collect();
    assert_eq!(written["features"], serde_json::json!(features));
    assert_eq!(
        written["classes"],
        serde_json::json!(["benign", "malignant"])
    );
    assert_eq!(written["task"], "classification");

    // A holdout with one column too many for the model's input.
    let text = std::fs::read_to_string(&h).unwrap();
    let wide: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "extra" } else { "1" }))
        .collect();
    let wide_path = dir.join("wide.csv");
    std::fs::write(&wide_path, wide).unwrap();
    let w = wide_path.display().to_string();
    for (args, needle) in [
        (
            vec!["--holdout", h.as_str(), "--target", "label"],
            "has no column \"label\"",
        ),
        (
            vec!["--holdout", w.as_str(), "--target", "diagnosis"],
            "takes 30 features, but",
        ),
        (
            vec![
                "--holdout",
                h.as_str(),
                "--target",
                "diagnosis",
                "--classes",
                "a,b,c",
            ],
            "which is not one of the classes given (a, b, c)",
        ),
        (
            vec![
                "--holdout",
                h.as_str(),
                "--target",
                "diagnosis",
                "--classes",
                "benign,malignant,unknown",
            ],
            "gives 2 values per row, but there are 3 classes",
        ),
        (
            vec![
                "--holdout",
                h.as_str(),
                "--target",
                "diagnosis",
                "--task",
                "regression",
            ],
            "outputs one value per row",
        ),
        (vec!["--target", "diagnosis"], "needs --holdout"),
    ] {
        let r = init(&args);
        assert_ne!(r.code, Some(0), "{args:?} must fail");
        assert!(r.err.contains(needle), "{args:?}: {}", r.err);
    }
}

/// A torchvision CNN (squeezenet1_1, random weights) with an `.npz` image holdout: the
/// manifest from the model and the holdout, image gates (top-1, top-5 accuracy) measured by
/// the gates, approvals, a signed deployment; and a stricter policy rejects the same model.
#[test]
fn a_torchvision_cnn_goes_through_the_image_gates_to_a_signed_deployment() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    clinic_store(dir);
    let m = case("torchvision-squeezenet");
    let h = root()
        .join("tests/fixtures/models/torchvision-squeezenet/holdout.npz")
        .display()
        .to_string();
    for (model, top1) in [("cnn", 0.7), ("strict", 0.8)] {
        ok(dir, "root", &["model", "create", model]);
        let policy = dir.join(format!("{model}.toml"));
        std::fs::write(
            &policy,
            format!(
                "[metrics]\ntop1_accuracy = {{ min = {top1} }}\ntop5_accuracy = {{ min = 0.85 }}\n{}\n[robustness]\nnoise_std = 0.05\nbrightness_shift = 0.3\nmetric = \"top1_accuracy\"\nmax_drop = 1.0\n",
                // The strict policy also asks every class to be recalled half the time: the 8
                // relabelled images make classes the model never predicts.
                if model == "strict" { "min_class_recall = { min = 0.5 }" } else { "" }
            ),
        )
        .unwrap();
        ok(
            dir,
            "mel",
            &["policy", "set", model, &policy.display().to_string()],
        );
        ok(dir, "sam", &["push", model, &m, "--holdout", &h]);
    }
    let report = ok(dir, "sam", &["validate", "cnn@1", "--data", &h]);
    assert_eq!(report["passed"], true, "{report}");
    let top1 = gate(&report, "metrics.top1_accuracy");
    // 24 of the 32 labels are the model's own top class (scripts/make-byo-cases.py).
    assert_eq!(top1["measured"], 0.75, "{top1}");
    assert!(
        gate(&report, "robustness.brightness_drop")["detail"]
            .as_str()
            .unwrap()
            .contains("moved by 0.3"),
        "{report}"
    );
    ok(dir, "ann", &["approve", "cnn@1", "--to", "production"]);
    ok(dir, "bob", &["approve", "cnn@1", "--to", "production"]);
    ok(dir, "mel", &["promote", "cnn@1", "--to", "production"]);
    assert!(dir.join("store/deployments/prod/cnn.json").exists());

    let r = falaj(dir, "sam", &["validate", "strict@1", "--data", &h]);
    assert_eq!(r.code, Some(6), "{}", r.err);
    let recall = gate(&r.out, "metrics.min_class_recall");
    assert_eq!(recall["passed"], false, "{recall}");
    assert_eq!(recall["measured"], 0.0, "{recall}");
    let r = falaj(dir, "mel", &["promote", "strict@1", "--to", "staging"]);
    assert_eq!(r.code, Some(6), "{}", r.err);
}

/// Every torchvision case (squeezenet, MobileNetV3 small, ShuffleNetV2) goes push → manifest →
/// image gates → approvals → signed deployment, with top-1 accuracy measured at exactly 0.75
/// (24 of 32 labels are the model's own top class, scripts/make-byo-cases.py).
#[test]
fn each_torchvision_classifier_goes_from_push_to_a_signed_deployment() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    clinic_store(dir);
    let policy = dir.join("top1.toml");
    std::fs::write(&policy, "[metrics]\ntop1_accuracy = { min = 0.7 }\n").unwrap();
    for name in [
        "torchvision-squeezenet",
        "torchvision-mobilenet-v3-small",
        "torchvision-shufflenet-v2",
    ] {
        let h = root()
            .join(format!("tests/fixtures/models/{name}/holdout.npz"))
            .display()
            .to_string();
        ok(dir, "root", &["model", "create", name]);
        ok(
            dir,
            "mel",
            &["policy", "set", name, &policy.display().to_string()],
        );
        ok(dir, "sam", &["push", name, &case(name), "--holdout", &h]);
        let at = format!("{name}@1");
        let report = ok(dir, "sam", &["validate", &at, "--data", &h]);
        assert_eq!(report["passed"], true, "{name}: {report}");
        let top1 = gate(&report, "metrics.top1_accuracy")["measured"].clone();
        assert_eq!(top1, 0.75, "{name}");
        ok(dir, "ann", &["approve", &at, "--to", "production"]);
        ok(dir, "bob", &["approve", &at, "--to", "production"]);
        ok(dir, "mel", &["promote", &at, "--to", "production"]);
        assert!(
            dir.join(format!("store/deployments/prod/{name}.json"))
                .exists()
        );
    }
}

/// A folder of PNG files with labels.csv is an image holdout too: the gates turn each image
/// into the model's input by the manifest's image rule (the edge's rule), so the gates score
/// what the edge would be sent. Paths out of the folder and links are refused.
#[test]
fn a_folder_of_images_is_scored_by_the_manifests_image_rule() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    clinic_store(dir);
    let case_dir = root().join("tests/fixtures/models/torchvision-squeezenet");
    let cnn = "torchvision-squeezenet";
    ok(dir, "root", &["model", "create", cnn]);
    let policy = dir.join("cnn.toml");
    std::fs::write(&policy, "[metrics]\ntop1_accuracy = { min = 0.5 }\n").unwrap();
    ok(
        dir,
        "mel",
        &["policy", "set", cnn, &policy.display().to_string()],
    );
    ok(
        dir,
        "sam",
        &[
            "push",
            cnn,
            &case("torchvision-squeezenet"),
            "--manifest",
            &case_dir.join("manifest.json").display().to_string(),
        ],
    );
    // The class onnxruntime gives the fixture PNG (under the same rule).
    let expected: Value =
        serde_json::from_slice(&std::fs::read(case_dir.join("image-expected.json")).unwrap())
            .unwrap();
    let scores = expected["outputs"][0].as_array().unwrap();
    let top = (0..scores.len())
        .max_by(|a, b| {
            scores[*a]
                .as_f64()
                .unwrap()
                .total_cmp(&scores[*b].as_f64().unwrap())
        })
        .unwrap();
    let folder = dir.join("images");
    std::fs::create_dir(&folder).unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        std::fs::copy(case_dir.join("image.png"), folder.join(name)).unwrap();
    }
    let labels = format!(
        "file,label\na.png,{top}\nb.png,{top}\nc.png,{}\n",
        (top + 1) % 10
    );
    std::fs::write(folder.join("labels.csv"), labels).unwrap();
    let f = folder.display().to_string();
    let report = ok(
        dir,
        "sam",
        &["validate", "torchvision-squeezenet@1", "--data", &f],
    );
    let top1 = gate(&report, "metrics.top1_accuracy")["measured"]
        .as_f64()
        .unwrap();
    assert!((top1 - 2.0 / 3.0).abs() < 1e-9, "{report}");

    // A label file naming a path out of the folder, or a link, is refused by name.
    std::fs::write(folder.join("labels.csv"), "file,label\n../secret.png,1\n").unwrap();
    let r = falaj(
        dir,
        "sam",
        &["validate", "torchvision-squeezenet@1", "--data", &f],
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.err.contains("is not a file name in the folder"),
        "{}",
        r.err
    );
    std::os::unix::fs::symlink(case_dir.join("image.png"), folder.join("link.png")).unwrap();
    std::fs::write(
        folder.join("labels.csv"),
        "file,label\nlink.png,1\na.png,2\n",
    )
    .unwrap();
    let r = falaj(
        dir,
        "sam",
        &["validate", "torchvision-squeezenet@1", "--data", &f],
    );
    assert_ne!(r.code, Some(0));
    assert!(r.err.contains("links are not followed"), "{}", r.err);
}
