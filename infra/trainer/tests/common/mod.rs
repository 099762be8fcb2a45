//! Helpers shared by the trainer's integration tests: fixtures, a small-job spec, the tract
//! runner, and the comparison the parity tests use.
#![allow(dead_code)]

use std::path::PathBuf;

use falaj_core::manifest::Task;
use falaj_train::data::{self, Columns, DatasetBytes};
use falaj_train::job::{self, JobSpec, TrainedRun};
use falaj_train::model::Activation;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Path of a dataset fixture.
pub fn fixture_path(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/datasets").join(name)
}

/// A dataset fixture as the trainer reads it.
pub fn fixture(name: &str) -> DatasetBytes {
    let path = fixture_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    DatasetBytes {
        uri: path.display().to_string(),
        digest: data::sha256_digest(&bytes),
        bytes,
        region: None,
    }
}

/// The real datasets with their target and task.
pub const DATASETS: [(&str, &str, Task); 3] = [
    ("breast_cancer.csv", "diagnosis", Task::Classification),
    ("wine.csv", "cultivar", Task::Classification),
    ("diabetes.csv", "progression", Task::Regression),
];

/// A spec for a quick run: small network, few epochs.
pub fn small_spec(file: &str, target: &str, task: Task, activation: Activation) -> JobSpec {
    let mut spec = JobSpec::new(
        fixture_path(file).display().to_string(),
        target,
        task,
        "test-model",
    );
    spec.hidden = vec![16, 8];
    spec.activation = activation;
    spec.epochs = 8;
    spec.batch_size = 32;
    spec.learning_rate = 5e-3;
    spec.seed = 7;
    spec
}

/// Trains `spec` on its fixture in memory.
pub fn train_fixture(spec: &JobSpec, file: &str) -> TrainedRun {
    let ds = fixture(file);
    job::train_dataset(
        spec,
        &ds,
        "run-1",
        &burn::tensor::Device::flex(),
        &mut |_| {},
    )
    .expect("training succeeds")
}

/// Every row of a fixture's features as raw f32, row-major, with the row count.
pub fn raw_rows(file: &str, target: &str, task: Task) -> (Vec<f32>, usize) {
    let ds = fixture(file);
    let t = data::parse_csv(
        &ds.uri,
        &ds.bytes,
        &Columns {
            target,
            features: None,
            task,
        },
    )
    .expect("fixture parses");
    (t.x.iter().map(|v| *v as f32).collect(), t.rows)
}

/// `rows` random raw inputs around the training distribution: mean ± 3 scales per feature.
pub fn random_rows(mean: &[f32], scale: &[f32], rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .flat_map(|_| {
            mean.iter()
                .zip(scale)
                .map(|(m, s)| m + s * rng.random_range(-3.0f32..3.0))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `onnx` in tract on `rows` x `n` inputs; the model is loaded with its symbolic batch.
pub fn tract_run(onnx: &[u8], x: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model");
    let input = tract_ndarray::Array2::from_shape_vec((rows, n), x.to_vec()).expect("input shape");
    let out = model
        .run(tvec!(input.into_tensor().into()))
        .expect("tract runs the model");
    out[0]
        .to_plain_array_view::<f32>()
        .expect("f32 output")
        .iter()
        .copied()
        .collect()
}

/// How outputs are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// `|a - b|`.
    Absolute,
    /// `|a - b| / max(1, unit)`: the difference measured in `unit`s. Regression outputs in
    /// target units are compared in units of the target's standard deviation, which is the
    /// absolute difference of the network's own (standardised) output: the final
    /// `z·std + mean` multiplies any rounding difference in `z` by `std`, and one f32 step at
    /// a diabetes progression of 150 is already 1.5e-5.
    InUnitsOf(f32),
}

/// Largest difference under `mode` between `a` (reference) and `b`.
pub fn max_diff(a: &[f32], b: &[f32], mode: Compare) -> f32 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    let unit = match mode {
        Compare::Absolute => 1.0,
        Compare::InUnitsOf(u) => u.max(1.0),
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(
                x.is_finite() && y.is_finite(),
                "non-finite output: {x} vs {y}"
            );
            (x - y).abs() / unit
        })
        .fold(0.0, f32::max)
}

/// The same trained network without its regression head (`z·std + mean`): outputs in
/// standardised target units, as ONNX bytes and as a burn predictor.
pub fn standardized_variant(run: &TrainedRun) -> (Vec<u8>, falaj_train::model::Predictor) {
    let mut pipeline = run.pipeline.clone();
    pipeline.target_scale = None;
    let layers = pipeline.layers(&run.mlp, &run.model.weights());
    let onnx = falaj_train::export::export(&falaj_train::export::ExportRequest {
        inputs: run.mlp.inputs,
        layers,
        opset: falaj_train::export::DEFAULT_OPSET,
        graph_name: "standardized".into(),
        input_doc: String::new(),
        output_doc: String::new(),
        metadata: vec![],
    })
    .expect("export succeeds");
    let predictor = falaj_train::model::Predictor::new(
        &run.model,
        run.mlp.activation,
        pipeline,
        &burn::tensor::Device::flex(),
    );
    (onnx, predictor)
}

/// Largest absolute difference, failing on length mismatch or a non-finite value.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(
                x.is_finite() && y.is_finite(),
                "non-finite output: {x} vs {y}"
            );
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}
