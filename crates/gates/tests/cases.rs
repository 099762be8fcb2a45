//! The model cases of `tests/fixtures/models/` through the gates' runner: the rows as the gates
//! score them (`served_rows`, then tract via `LoadedModel`), against what onnxruntime computed
//! (`scripts/make-model-cases.py`), within the one tolerance `cases.json` states. The same
//! cases run through the inference component natively and under wasmtime
//! (`infra/edge-node/tests/cases.rs`).

use std::path::{Path, PathBuf};

use falaj_core::TrainingManifest;
use falaj_gates::{LoadedModel, served_rows};
use serde_json::Value;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn every_case_scores_as_onnxruntime_computes_it() {
    let index = read_json(&models().join("cases.json"));
    let tol = index["tolerance"].as_f64().unwrap() as f32;
    let cases = index["cases"].as_array().unwrap();
    assert!(cases.len() >= 4, "cases.json lists {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = models().join(name);
        let manifest: TrainingManifest =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let rows = floats(&read_json(&dir.join("inputs.json"))["rows"]);
        let want = floats(&read_json(&dir.join("expected.json"))["outputs"]);
        let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
        // A table's rows have the manifest's features; an image model's (no features) the
        // input's fixed dimensions after the batch, flattened.
        let item: Vec<usize> = if manifest.features.is_empty() {
            falaj_core::onnx::summarize(&onnx).unwrap().signature.inputs[0].shape[1..]
                .iter()
                .map(|d| d.parse().unwrap())
                .collect()
        } else {
            vec![manifest.features.len()]
        };
        let n: usize = item.iter().product();
        assert!(rows.iter().all(|r| r.len() == n), "{name}: rows of {n}");
        let x: Vec<f32> = rows.concat();
        let model = LoadedModel::load(&onnx, &item, manifest.output.as_deref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let served = served_rows(&manifest, n, &x).unwrap();
        let (got, width) = model.predict(&served, rows.len()).unwrap();
        assert_eq!(width, want[0].len(), "{name}: output width");
        for (r, w) in want.iter().enumerate() {
            for (j, &v) in w.iter().enumerate() {
                let g = got[r * width + j];
                assert!(
                    (g - v).abs() <= tol,
                    "{name}: row {r} output {j}: gates {g}, onnxruntime {v} (tolerance {tol})"
                );
            }
        }
    }
}
