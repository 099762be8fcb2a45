//! A second implementation accepts our files: `onnx.checker` (full check) and onnxruntime,
//! through `scripts/parity_check.py`, against burn's outputs. Python, onnx and onnxruntime
//! are required: the test fails (it never skips) when they are missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use falaj_core::manifest::Task;
use falaj_train::model::Activation;
use serde_json::json;

#[allow(clippy::too_many_arguments)]
fn write_case(
    dir: &Path,
    onnx: &[u8],
    x: &[f32],
    rows: usize,
    features: usize,
    outputs: usize,
    unit: f32,
    expected: &[f32],
) {
    std::fs::create_dir_all(dir).expect("case dir");
    std::fs::write(dir.join("model.onnx"), onnx).expect("write model");
    let case = json!({
        "rows": rows, "features": features, "outputs": outputs, "tolerance": 1e-5,
        "unit": unit, "inputs": x, "expected": expected,
    });
    std::fs::write(
        dir.join("case.json"),
        serde_json::to_vec(&case).expect("json"),
    )
    .expect("write case");
}

#[test]
fn onnx_checker_and_onnxruntime_accept_the_exported_models() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("breast_cancer-relu", DATASETS[0], Activation::Relu),
        ("wine-gelu", DATASETS[1], Activation::Gelu),
        ("diabetes-relu", DATASETS[2], Activation::Relu),
        ("diabetes-gelu", DATASETS[2], Activation::Gelu),
    ];
    for (name, (file, target, task), activation) in cases {
        let mut spec = small_spec(file, target, task, activation);
        spec.dropout = 0.1;
        let run = train_fixture(&spec, file);
        let (mut x, mut rows) = raw_rows(file, target, task);
        let p = run.pipeline.clone();
        x.extend(random_rows(&p.mean, &p.scale, 100, 21));
        rows += 100;
        let outputs = if task == Task::Classification {
            run.classes.len()
        } else {
            1
        };
        let unit = run.pipeline.target_scale.map_or(1.0, |(std, _)| std);
        write_case(
            &dir.path().join(name),
            &run.onnx,
            &x,
            rows,
            run.features.len(),
            outputs,
            unit,
            &run.predictor().predict(&x, rows),
        );
        if task == Task::Regression {
            let (onnx, predictor) = standardized_variant(&run);
            let name = format!("{name}-standardized");
            write_case(
                &dir.path().join(name),
                &onnx,
                &x,
                rows,
                run.features.len(),
                1,
                1.0,
                &predictor.predict(&x, rows),
            );
        }
    }
    let script = workspace_root().join("scripts/parity_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}); install Python 3, then `pip install onnx onnxruntime`"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "scripts/parity_check.py failed (exit {:?}); if onnx/onnxruntime are missing run `pip install onnx onnxruntime`\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(
        stdout.contains("6 passed, 0 failed"),
        "expected 6 passing cases:\n{stdout}"
    );
}
