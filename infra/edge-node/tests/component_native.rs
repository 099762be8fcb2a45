//! The component's API compiled for the host, no WebAssembly: the same `Instance::handle` the
//! component runs, checked against native tract. Fast, and needs no wasmtime; the proof under
//! a real host is `wasmtime_serve.rs`.

mod component_support;

use component_support::*;
use falaj_core::manifest::{Standardization, Task};
use falaj_inference::api::Instance;
use serde_json::{Value, json};

fn reply_json(r: &falaj_inference::api::Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn predictions_match_native_tract_and_unfolded_standardisation_is_applied_once() {
    let n = 5;
    let (onnx, mean, scale) = mlp_classifier(n, 8, 3, 77);
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let x = Lcg(1).vec(4 * n, 6.0);
    let body = serde_json::to_vec(&json!({"inputs": x.chunks(n).collect::<Vec<_>>()})).unwrap();

    // Folded (the trainer's way): raw features straight into the graph.
    let folded = TempDir::new("api-folded");
    write_model_dir(
        &folded.0,
        "m",
        &onnx,
        Task::Classification,
        &feature_names(n),
        &classes,
        Some(Standardization {
            mean: mean.iter().map(|&v| v as f64).collect(),
            std: scale.iter().map(|&v| v as f64).collect(),
            folded_into_graph: true,
        }),
        Some(1),
    );
    let native = NativeTract::load(&folded.0.join("model.onnx"), n);
    let want = native.run(&x, 4);
    let inst = Instance::load(&folded.0);
    let r = inst.handle("POST", "/predict", Some("application/json"), &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got: Vec<f32> = reply_json(&r)["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| json_f32s(&p["probabilities"]))
        .collect();
    assert_close(&got, &want, 1e-6, "native API vs native tract");

    // Not folded: the manifest asks the edge to standardise, so the component applies
    // (x - mean) / std before the graph. With a graph that also standardises, the result must
    // equal tract on standardised input, i.e. applied exactly once more, not zero or twice.
    let unfolded = TempDir::new("api-unfolded");
    write_model_dir(
        &unfolded.0,
        "m",
        &onnx,
        Task::Classification,
        &feature_names(n),
        &classes,
        Some(Standardization {
            mean: mean.iter().map(|&v| v as f64).collect(),
            std: scale.iter().map(|&v| v as f64).collect(),
            folded_into_graph: false,
        }),
        None,
    );
    let inst = Instance::load(&unfolded.0);
    let meta = reply_json(&inst.handle("GET", "/metadata", None, b""));
    assert_eq!(
        meta["preprocessing"],
        "standardize: applied by the component"
    );
    let r = inst.handle("POST", "/predict", Some("application/json"), &body);
    let got: Vec<f32> = reply_json(&r)["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| json_f32s(&p["probabilities"]))
        .collect();
    let pre: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mean[i % n]) / scale[i % n])
        .collect();
    assert_close(
        &got,
        &native.run(&pre, 4),
        1e-5,
        "component-side standardisation",
    );
}

#[test]
fn a_directory_without_a_model_answers_503_with_the_reason() {
    let empty = TempDir::new("api-empty");
    let inst = Instance::load(&empty.0);
    let h = inst.handle("GET", "/health", None, b"");
    assert_eq!(h.status, 503);
    let v = reply_json(&h);
    assert!(v["error"].as_str().unwrap().contains("model.onnx"), "{v}");
    assert_eq!(inst.handle("GET", "/nope", None, b"").status, 404);
}
