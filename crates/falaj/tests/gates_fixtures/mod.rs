//! Fixtures for the gate and promotion tests: small models fitted here, in plain Rust, on
//! the real datasets in `tests/fixtures/datasets/`, exported as ONNX (Gemm [+ Softmax]) with
//! the standardisation folded into the weights, the way `falaj-train` exports them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use falaj::promotion;
use falaj::store::{self, OpenOptions, no_progress};
use falaj::{Artifact, NewModel, Registration, Registry};
use falaj_core::manifest::Task;
use falaj_core::onnx::{
    AttributeProto, FLOAT, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, float_tensor,
    value_info,
};
use falaj_core::promotion::Role;
use falaj_core::{DatasetRef, TrainingManifest};
use prost::Message;

pub fn dataset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets")
        .join(name)
}

pub fn policy_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/policies")
        .join(name)
}

/// Header and rows of a CSV.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// A fitted model: ONNX bytes and its manifest.
pub struct Fitted {
    pub onnx: Vec<u8>,
    pub manifest: TrainingManifest,
}

/// Gemm (+ Softmax) over raw features with weights `w` (n x k) and bias `b` (k).
pub fn export(n: usize, k: usize, w: &[f32], b: &[f32], softmax: bool) -> Vec<u8> {
    let mut nodes = vec![NodeProto {
        input: vec!["input".into(), "W".into(), "b".into()],
        output: vec![if softmax { "logits" } else { "output" }.into()],
        name: "gemm".into(),
        op_type: "Gemm".into(),
        ..Default::default()
    }];
    if softmax {
        nodes.push(NodeProto {
            input: vec!["logits".into()],
            output: vec!["output".into()],
            name: "softmax".into(),
            op_type: "Softmax".into(),
            attribute: vec![AttributeProto {
                name: "axis".into(),
                r#type: 2,
                i: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "falaj-tests".into(),
        graph: Some(GraphProto {
            name: "fitted".into(),
            node: nodes,
            initializer: vec![
                float_tensor("W", &[n as i64, k as i64], w),
                float_tensor("b", &[k as i64], b),
            ],
            input: vec![value_info("input", FLOAT, &[None, Some(n as i64)], "batch")],
            output: vec![value_info(
                "output",
                FLOAT,
                &[None, Some(k as i64)],
                "batch",
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Fits softmax regression (classification) or least squares (regression) by gradient
/// descent on standardised features, then folds the standardisation into the weights.
pub fn fit(file: &str, target: &str, task: Task, epochs: usize) -> Fitted {
    fit_with(file, target, task, epochs, true)
}

/// [`fit`], with standardisation folded into the graph (`fold`) or left to whoever runs the
/// model (`folded_into_graph: false` in the manifest: the graph takes standardised rows).
pub fn fit_with(file: &str, target: &str, task: Task, epochs: usize, fold: bool) -> Fitted {
    let (header, rows) = read_csv(&dataset(file));
    let ti = header.iter().position(|h| h == target).unwrap();
    let features: Vec<String> = header.iter().filter(|h| *h != target).cloned().collect();
    let n = features.len();
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            (0..header.len())
                .filter(|i| *i != ti)
                .map(|i| r[i].parse().unwrap())
                .collect()
        })
        .collect();
    let mut classes: Vec<String> = Vec::new();
    if task == Task::Classification {
        classes = rows.iter().map(|r| r[ti].clone()).collect();
        classes.sort();
        classes.dedup();
    }
    let k = if task == Task::Classification {
        classes.len()
    } else {
        1
    };
    let y: Vec<f64> = rows
        .iter()
        .map(|r| match task {
            Task::Classification => classes.iter().position(|c| *c == r[ti]).unwrap() as f64,
            Task::Regression => r[ti].parse().unwrap(),
        })
        .collect();
    let m = x.len() as f64;
    let mean: Vec<f64> = (0..n)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / m)
        .collect();
    let std: Vec<f64> = (0..n)
        .map(|j| {
            (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / m)
                .sqrt()
                .max(1e-9)
        })
        .collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| (0..n).map(|j| (r[j] - mean[j]) / std[j]).collect())
        .collect();
    let mut w = vec![0.0f64; n * k];
    let mut b = vec![0.0f64; k];
    let lr = if task == Task::Classification {
        0.5
    } else {
        0.1
    };
    for _ in 0..epochs {
        let mut gw = vec![0.0; n * k];
        let mut gb = vec![0.0; k];
        for (zi, yi) in z.iter().zip(&y) {
            let logits: Vec<f64> = (0..k)
                .map(|c| b[c] + (0..n).map(|j| zi[j] * w[j * k + c]).sum::<f64>())
                .collect();
            let err: Vec<f64> = match task {
                Task::Classification => {
                    let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = logits.iter().map(|l| (l - mx).exp()).collect();
                    let s: f64 = e.iter().sum();
                    (0..k)
                        .map(|c| e[c] / s - if c == *yi as usize { 1.0 } else { 0.0 })
                        .collect()
                }
                Task::Regression => vec![logits[0] - yi],
            };
            for c in 0..k {
                gb[c] += err[c];
                for j in 0..n {
                    gw[j * k + c] += err[c] * zi[j];
                }
            }
        }
        for (wi, g) in w.iter_mut().zip(&gw) {
            *wi -= lr * g / m;
        }
        for (bi, g) in b.iter_mut().zip(&gb) {
            *bi -= lr * g / m;
        }
    }
    // Fold: w·(x - mean)/std + b = (w/std)·x + (b - Σ w·mean/std).
    let (wf, bf): (Vec<f32>, Vec<f32>) = if fold {
        (
            (0..n * k).map(|i| (w[i] / std[i / k]) as f32).collect(),
            (0..k)
                .map(|c| {
                    (b[c] - (0..n).map(|j| w[j * k + c] * mean[j] / std[j]).sum::<f64>()) as f32
                })
                .collect(),
        )
    } else {
        (
            w.iter().map(|v| *v as f32).collect(),
            b.iter().map(|v| *v as f32).collect(),
        )
    };
    let standardization = (!fold).then(|| falaj_core::Standardization {
        mean: mean.clone(),
        std: std.clone(),
        folded_into_graph: false,
    });
    Fitted {
        onnx: export(n, k, &wf, &bf, task == Task::Classification),
        manifest: TrainingManifest {
            model: String::new(),
            task,
            target: target.into(),
            features,
            classes,
            output: None,
            image: None,
            lineage: falaj_core::Lineage {
                datasets: vec![DatasetRef {
                    uri: format!("s3://falaj-data/{file}"),
                    digest: "sha256:00".into(),
                    region: Some("me-central-1".into()),
                }],
                ..Default::default()
            },
            standardization,
            ..Default::default()
        },
    }
}

pub fn breast_cancer() -> Fitted {
    fit("breast_cancer.csv", "diagnosis", Task::Classification, 150)
}

pub fn diabetes() -> Fitted {
    fit("diabetes.csv", "progression", Task::Regression, 300)
}

/// A model with the same signature as `f` but weights that ignore the data (a regression).
pub fn degraded(f: &Fitted) -> Fitted {
    let n = f.manifest.features.len();
    let k = f.manifest.classes.len().max(1);
    let w: Vec<f32> = (0..n * k)
        .map(|i| if i % 7 == 0 { 1e-4 } else { -1e-4 })
        .collect();
    Fitted {
        onnx: export(
            n,
            k,
            &w,
            &vec![0.0; k],
            f.manifest.task == Task::Classification,
        ),
        manifest: f.manifest.clone(),
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub reg: Registry,
}

/// A fresh `dir://` store with roles: root (admin), sam (data-scientist), mel (ml-engineer),
/// ann and bob (approvers), eve (viewer), and falaj-ingest (data-scientist: uploads to
/// `incoming/` may register).
pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", dir.path().join("store").display());
    let opts = OpenOptions {
        allowed: falaj_core::AllowedRegions::default(),
        create: true,
        endpoint: None,
    };
    let reg = Registry::new(store::open(&uri, &opts).await.unwrap());
    for (who, role) in [
        ("root", Role::Admin),
        ("sam", Role::DataScientist),
        ("mel", Role::MlEngineer),
        ("ann", Role::Approver),
        ("bob", Role::Approver),
        ("eve", Role::Viewer),
        (falaj::ingest::INGEST_ACTOR, Role::DataScientist),
    ] {
        promotion::grant(&reg, "root", who, role).await.unwrap();
    }
    Env { dir, reg }
}

pub async fn create(reg: &Registry, model: &str) {
    reg.create_model(
        NewModel {
            name: model.into(),
            ..Default::default()
        },
        "root",
    )
    .await
    .unwrap();
}

/// Attaches `policy` to `model` as `root`, creating the model if needed: reports count for a
/// version's state only when made with its attached policy.
pub async fn attach_policy(reg: &Registry, model: &str, policy: &str) {
    if reg.model(model).await.is_err() {
        create(reg, model).await;
    }
    promotion::set_policy(reg, model, "p.toml", policy, "root")
        .await
        .unwrap();
}

/// Registers `f` under `model` as `author`; returns the version number.
pub async fn register(reg: &Registry, model: &str, f: &Fitted, author: &str) -> u64 {
    let mut manifest = f.manifest.clone();
    manifest.model = model.into();
    let r = reg
        .register(
            Registration {
                model: model.into(),
                artifact: Artifact::Bytes(Bytes::from(f.onnx.clone())),
                artifact_name: "model.onnx".into(),
                manifest: Some((
                    "manifest.json".into(),
                    Bytes::from(serde_json::to_vec(&manifest).unwrap()),
                )),
                semver: None,
                author: author.into(),
                author_principal: None,
                source: None,
            },
            no_progress(),
        )
        .await
        .unwrap();
    r.version.version
}

/// Writes an object unconditionally, as a user's upload does (`aws s3 cp`, the trainer).
pub async fn put_object(reg: &Registry, key: &str, bytes: Vec<u8>) {
    reg.store()
        .put(
            &falaj_core::StoreKey::new(key).unwrap(),
            Bytes::from(bytes),
            falaj::store::Precondition::None,
        )
        .await
        .unwrap();
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// Writes `model@alias = version` with its audit event, as promotion's own alias move does,
/// but without the promotion around it: for tests that set up (or interrupt) a promotion.
/// The registry's alias API refuses managed aliases, so this goes through `commit_state`.
pub async fn force_alias(reg: &Registry, model: &str, alias: &str, version: u64) {
    let key = falaj_core::layout::alias(model, alias);
    let current = reg.get_json::<falaj_core::AliasRecord>(&key).await.unwrap();
    let (previous, generation, pre) = match &current {
        Some((a, etag)) => (
            a.version,
            a.generation,
            falaj::store::Precondition::IfMatch(etag.clone()),
        ),
        None => (None, 0, falaj::store::Precondition::IfAbsent),
    };
    reg.commit_state(
        model,
        "root",
        "alias.moved",
        &format!("{model}@{alias}"),
        serde_json::json!({"from": previous, "to": version, "generation": generation + 1}),
        &key,
        pre,
        |seq| falaj_core::AliasRecord {
            model: model.into(),
            alias: alias.into(),
            version: Some(version),
            previous,
            generation: generation + 1,
            moved_by: "root".into(),
            moved_at: falaj::registry::now(),
            event_seq: Some(seq),
        },
    )
    .await
    .unwrap();
}
