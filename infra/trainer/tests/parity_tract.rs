//! Parity: burn's forward pass against tract running our exported ONNX file.
//!
//! Case data: untrained networks with random weights and random preprocessing (every
//! activation × task), and networks trained on the real datasets, evaluated on every dataset
//! row plus random rows. The tolerance is max |Δ| ≤ 1e-5 on every output: class
//! probabilities, and regression outputs in standardised target units (the network's own
//! output, checked on a graph without the final `z·std + mean`). The full regression graph,
//! in target units, is held to 1e-5 target standard deviations (see `Compare::InUnitsOf`).

mod common;

use common::*;
use falaj_core::manifest::Task;
use falaj_train::export::{self, ExportRequest, Layer};
use falaj_train::model::{Activation, Mlp, MlpSpec, Pipeline, Predictor};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const TOLERANCE: f32 = 1e-5;

struct Case {
    onnx: Vec<u8>,
    predictor: Predictor,
    layers: Vec<Layer>,
    inputs: usize,
}

fn random_case(activation: Activation, task: Task, seed: u64) -> Case {
    random_case_with(activation, task, seed, vec![12, 9])
}

fn random_case_with(activation: Activation, task: Task, seed: u64, hidden: Vec<usize>) -> Case {
    let device = burn::tensor::Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let inputs = 7;
    let spec = MlpSpec {
        inputs,
        hidden,
        outputs: if task == Task::Classification { 4 } else { 1 },
        activation,
        dropout: 0.2,
    };
    let model = Mlp::init(&spec, &mut rng, &device);
    let pipeline = Pipeline {
        task,
        mean: (0..inputs)
            .map(|_| rng.random_range(-50.0f32..50.0))
            .collect(),
        scale: (0..inputs)
            .map(|_| rng.random_range(0.01f32..20.0))
            .collect(),
        target_scale: (task == Task::Regression).then_some((3.5, -1.25)),
    };
    let layers = pipeline.layers(&spec, &model.weights());
    let onnx = export::export(&request(inputs, layers.clone())).expect("export succeeds");
    Case {
        onnx,
        predictor: Predictor::new(&model, activation, pipeline, &device),
        layers,
        inputs,
    }
}

fn request(inputs: usize, layers: Vec<Layer>) -> ExportRequest {
    ExportRequest {
        inputs,
        layers,
        opset: export::DEFAULT_OPSET,
        graph_name: "parity".into(),
        input_doc: String::new(),
        output_doc: String::new(),
        metadata: vec![],
    }
}

fn check(case: &Case, x: &[f32], rows: usize, what: &str) -> f32 {
    check_with(case, x, rows, what, Compare::Absolute)
}

fn check_with(case: &Case, x: &[f32], rows: usize, what: &str, mode: Compare) -> f32 {
    let burn_out = case.predictor.predict(x, rows);
    let tract_out = tract_run(&case.onnx, x, rows, case.inputs);
    let diff = max_diff(&burn_out, &tract_out, mode);
    assert!(
        diff <= TOLERANCE,
        "{what}: burn and tract differ by {diff:e} ({mode:?}, > {TOLERANCE:e})"
    );
    diff
}

#[test]
fn random_networks_match_tract_for_every_activation_and_task() {
    for (i, activation) in [Activation::Relu, Activation::Gelu].into_iter().enumerate() {
        for (j, task) in [Task::Classification, Task::Regression]
            .into_iter()
            .enumerate()
        {
            let case = random_case(activation, task, 100 + (i * 2 + j) as u64);
            let p = case.predictor.pipeline().clone();
            let rows = 256;
            let x = random_rows(&p.mean, &p.scale, rows, 9);
            let diff = check(&case, &x, rows, &format!("{activation} {task:?}"));
            // A batch of one goes through the same dynamic batch dimension.
            check(
                &case,
                &x[..case.inputs],
                1,
                &format!("{activation} {task:?}, batch of 1"),
            );
            if task == Task::Classification {
                let probs = case.predictor.predict(&x, rows);
                for row in probs.chunks(4) {
                    assert!(
                        (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                        "softmax rows sum to 1"
                    );
                }
            }
            eprintln!("{activation} {task:?}: max |Δ| = {diff:e}");
        }
    }
}

#[test]
fn a_linear_model_without_hidden_layers_matches_tract() {
    for task in [Task::Classification, Task::Regression] {
        let case = random_case_with(Activation::Relu, task, 77, vec![]);
        let p = case.predictor.pipeline().clone();
        let x = random_rows(&p.mean, &p.scale, 128, 4);
        check(&case, &x, 128, &format!("linear {task:?}"));
    }
}

#[test]
fn the_parity_check_catches_a_perturbed_weight() {
    // The comparison must be able to fail: nudge one weight by 1e-3 in the exported file only.
    let case = random_case(Activation::Gelu, Task::Classification, 5);
    let mut layers = case.layers.clone();
    let dense = layers
        .iter_mut()
        .find_map(|l| {
            if let Layer::Dense(d) = l {
                Some(d)
            } else {
                None
            }
        })
        .expect("a dense layer");
    dense.weight[0] += 1e-3;
    let wrong = export::export(&request(case.inputs, layers)).expect("export succeeds");
    let p = case.predictor.pipeline().clone();
    let x = random_rows(&p.mean, &p.scale, 64, 3);
    let diff = max_abs_diff(
        &case.predictor.predict(&x, 64),
        &tract_run(&wrong, &x, 64, case.inputs),
    );
    assert!(
        diff > TOLERANCE,
        "a perturbed graph went unnoticed (max |Δ| = {diff:e})"
    );
}

#[test]
fn trained_networks_match_tract_on_real_rows_and_random_rows() {
    let cases = [
        (DATASETS[0], Activation::Relu),
        (DATASETS[1], Activation::Gelu),
        (DATASETS[2], Activation::Relu),
        (DATASETS[2], Activation::Gelu),
    ];
    for ((file, target, task), activation) in cases {
        let mut spec = small_spec(file, target, task, activation);
        spec.dropout = 0.1;
        let run = train_fixture(&spec, file);
        let case = Case {
            predictor: run.predictor(),
            inputs: run.features.len(),
            onnx: run.onnx.clone(),
            layers: vec![],
        };
        let (x, rows) = raw_rows(file, target, task);
        let p = case.predictor.pipeline().clone();
        let xr = random_rows(&p.mean, &p.scale, 128, 11);
        let mode = match run.pipeline.target_scale {
            Some((std, _)) => Compare::InUnitsOf(std),
            None => Compare::Absolute,
        };
        let d_real = check_with(
            &case,
            &x,
            rows,
            &format!("{file} {activation}: dataset rows"),
            mode,
        );
        let d_rand = check_with(
            &case,
            &xr,
            128,
            &format!("{file} {activation}: random rows"),
            mode,
        );
        eprintln!("{file} {activation}: max {mode:?} Δ dataset {d_real:e}, random {d_rand:e}");
        if task == Task::Regression {
            // Before the target is un-standardised the outputs are O(1): absolute 1e-5 holds.
            let (onnx, predictor) = standardized_variant(&run);
            let z = Case {
                predictor,
                inputs: run.features.len(),
                onnx,
                layers: vec![],
            };
            let d_real = check(
                &z,
                &x,
                rows,
                &format!("{file} {activation}: standardised outputs, dataset rows"),
            );
            let d_rand = check(
                &z,
                &xr,
                128,
                &format!("{file} {activation}: standardised outputs, random rows"),
            );
            eprintln!(
                "{file} {activation} (standardised units): max |Δ| dataset {d_real:e}, random {d_rand:e}"
            );
        }
    }
}
