//! The component under a host we did not write: `wasmtime serve` from wasmtime-cli 48.
//!
//! Each test mounts a model directory into the built component (`target/wasm/
//! falaj-inference.wasm`, from `scripts/wasm-component.sh`) and checks over real HTTP that:
//! outputs equal native tract's within 1e-5 (JSON rows, named rows, raw tensor); every bad
//! input gets its 4xx and a clear message; the model is loaded once per instance and the
//! instance is reused across requests; a directory whose model does not match its version
//! record is refused. It fails, not skips, when wasmtime or the component is missing.
//! `tests/wasm/run.sh` builds and installs both, then runs this; `scripts/test.sh` runs it in CI.
//!
//! The figures (time to first response, latency against native tract) are in the
//! `wasmtime_serve` bench of this crate, not here.

mod component_support;

use std::sync::Mutex;
use std::time::Instant;

use component_support::*;
use falaj_core::manifest::{Standardization, Task};
use serde_json::{Value, json};

/// One wasmtime at a time: each compiles the component, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const TOL: f32 = 1e-5;
const N: usize = 6;
const CLASSES: usize = 3;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn rows(seed: u64, rows: usize, n: usize) -> Vec<f32> {
    // Around the fixture's means (±5) with spread, like raw (unstandardised) features.
    Lcg(seed).vec(rows * n, 8.0)
}

fn classifier_dir(tag: &str) -> (TempDir, Vec<u8>, String) {
    let dir = TempDir::new(tag);
    let (onnx, mean, scale) = mlp_classifier(N, 16, CLASSES, 42);
    let classes: Vec<String> = ["setosa", "versicolor", "virginica"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let digest = write_model_dir(
        &dir.0,
        "iris-like",
        &onnx,
        Task::Classification,
        &feature_names(N),
        &classes,
        Some(Standardization {
            mean: mean.iter().map(|&v| v as f64).collect(),
            std: scale.iter().map(|&v| v as f64).collect(),
            folded_into_graph: true,
        }),
        Some(3),
    );
    (dir, onnx, digest)
}

fn check_predictions(resp: &Response, native: &[f32], rows: usize, what: &str) {
    assert_eq!(
        resp.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let v = resp.json();
    assert_eq!(v["rows"], rows, "{what}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), rows, "{what}");
    let mut got = Vec::new();
    for (r, p) in preds.iter().enumerate() {
        let probs = json_f32s(&p["probabilities"]);
        let want = &native[r * CLASSES..(r + 1) * CLASSES];
        let best = (0..CLASSES)
            .max_by(|&a, &b| want[a].partial_cmp(&want[b]).unwrap())
            .unwrap();
        assert_eq!(p["class"], best, "{what}: row {r} class");
        assert_eq!(
            p["label"],
            ["setosa", "versicolor", "virginica"][best],
            "{what}: row {r} label"
        );
        got.extend(probs);
    }
    assert_close(&got, native, TOL, what);
}

#[test]
fn classifier_matches_native_tract_and_loads_once() {
    let _g = serial();
    let (dir, _onnx, digest) = classifier_dir("classifier");
    let native = NativeTract::load(&dir.0.join("model.onnx"), N);
    // The idle timeout is raised so a slow CI machine cannot make wasmtime drop the instance
    // between two requests (default 1 s); reuse is otherwise wasmtime's default behaviour.
    let server = Server::start(&dir.0, &["--idle-instance-timeout", "120s"]);
    let port = server.port;
    eprintln!(
        "[wasmtime serve] time to first response (spawn → /health 200, incl. compile and model \
         load): {:.0} ms",
        server.first_response.as_secs_f64() * 1000.0
    );

    // health and metadata
    let h = get(port, "/health");
    assert_eq!(h.status, 200, "{}", server.log_text());
    assert_eq!(h.json()["status"], "ok");
    let m0 = get(port, "/metadata");
    assert_eq!(m0.status, 200);
    let meta = m0.json();
    assert_eq!(meta["model"], "iris-like");
    assert_eq!(meta["version"], 3);
    assert_eq!(meta["semver"], "3.0.0");
    assert_eq!(meta["digest"], digest.as_str());
    assert_eq!(meta["registered"], true);
    assert_eq!(meta["task"], "classification");
    assert_eq!(meta["n_features"], N);
    assert_eq!(meta["n_outputs"], CLASSES);
    assert_eq!(meta["features"], json!(feature_names(N)));
    assert_eq!(meta["classes"][2], "virginica");
    assert_eq!(
        meta["preprocessing"],
        "standardize: folded into the graph (raw features in)"
    );
    assert_eq!(meta["signature"]["inputs"][0]["name"], "input");
    assert_eq!(meta["format"]["opset"], 17);
    assert_eq!(meta["runtime"]["target"], "wasm32");
    assert_eq!(meta["runtime"]["simd128"], true, "built without +simd128");
    assert_eq!(meta["instance"]["loads"], 1);
    eprintln!(
        "[wasmtime serve] model load inside the instance: {:.1} ms",
        meta["instance"]["load_ms"].as_f64().unwrap()
    );
    let (instance, served0) = m0.instance();
    assert_eq!(m0.header("x-falaj-version"), Some("3"));
    assert_eq!(m0.header("x-falaj-digest"), Some(digest.as_str()));

    // A batch as JSON rows, as named rows (keys in another order), and as a raw tensor.
    let batch = 64;
    let x = rows(7, batch, N);
    let want = native.run(&x, batch);
    let json_rows: Vec<Vec<f32>> = x.chunks(N).map(<[f32]>::to_vec).collect();
    check_predictions(
        &post_json(port, &json!({ "inputs": json_rows })),
        &want,
        batch,
        "JSON rows",
    );
    let names = feature_names(N);
    let named: Vec<Value> = x
        .chunks(N)
        .map(|r| {
            let mut m = serde_json::Map::new();
            for j in (0..N).rev() {
                m.insert(names[j].clone(), json!(r[j]));
            }
            Value::Object(m)
        })
        .collect();
    check_predictions(
        &post_json(port, &json!({ "inputs": named })),
        &want,
        batch,
        "named rows",
    );
    let raw = request(
        port,
        "POST",
        "/predict",
        Some("application/octet-stream"),
        &f32_bytes(&x),
    )
    .unwrap();
    check_predictions(&raw, &want, batch, "raw f32 tensor");
    let p = raw.json();
    assert_eq!(p["model"], "iris-like");
    assert_eq!(p["version"], 3);
    assert_eq!(p["digest"], digest.as_str());

    // Single rows, timed: HTTP round trip, and tract's own time inside the component.
    let samples: usize = std::env::var("FALAJ_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .min(120); // stay inside one instance's 128-request reuse budget
    let one = rows(11, samples, N);
    let mut http_ms = Vec::new();
    let mut infer_ms = Vec::new();
    let mut last_served = served0;
    for r in 0..samples {
        let row = &one[r * N..(r + 1) * N];
        let t = Instant::now();
        let resp = post_json(port, &json!({ "inputs": [row] }));
        http_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        check_predictions(&resp, &native.run(row, 1), 1, "single row");
        infer_ms.push(resp.infer_ms());
        // Same instance, one more request each time: the instance is reused, not rebuilt.
        let (id, served) = resp.instance();
        assert_eq!(id, instance, "request {r} went to another instance");
        assert!(served > last_served, "request counter went backwards");
        last_served = served;
    }

    // Native tract in this process on the same rows, for the ratio.
    let mut native_ms = Vec::new();
    for r in 0..samples.max(200) {
        let row = &one[(r % samples) * N..(r % samples + 1) * N];
        let t = Instant::now();
        std::hint::black_box(native.run(row, 1));
        native_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let health_ms: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(get(port, "/health").status, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let (h50, i50, n50) = (
        percentile(http_ms.clone(), 0.5),
        percentile(infer_ms.clone(), 0.5),
        percentile(native_ms.clone(), 0.5),
    );
    eprintln!(
        "[latency, one row, {samples} requests] wasmtime serve HTTP round trip p50 {h50:.3} ms \
         p99 {:.3} ms | tract inside the component p50 {i50:.4} ms | native tract p50 \
         {n50:.4} ms | component/native (compute) {:.2}x | GET /health round trip p50 {:.3} ms",
        percentile(http_ms, 0.99),
        i50 / n50,
        percentile(health_ms, 0.5),
    );

    // Still the first and only load of this instance.
    let m1 = get(port, "/metadata");
    let after = m1.json();
    assert_eq!(m1.instance().0, instance);
    assert_eq!(after["instance"]["loads"], 1);
    assert_eq!(
        after["instance"]["loaded_at_unix_ms"],
        meta["instance"]["loaded_at_unix_ms"]
    );
    assert!(
        after["instance"]["requests_served"].as_u64().unwrap() > samples as u64,
        "{after}"
    );
}

/// The wasi:nn build under another host that offers wasi:nn (`wasmtime serve -S nn`, whose
/// wasi-nn holds no graph by the artifact's digest): it instantiates and keeps tract in the
/// sandbox, with the same answers.
#[test]
fn the_wasi_nn_build_serves_in_the_sandbox_under_wasmtime_serve_with_wasi_nn() {
    let _g = serial();
    let (dir, _onnx, _digest) = classifier_dir("nn-build");
    let native = NativeTract::load(&dir.0.join("model.onnx"), N);
    let server = Server::start_component(&component_nn(), &dir.0, &["-Snn"]);
    let batch = 16;
    let x = rows(11, batch, N);
    let json_rows: Vec<Vec<f32>> = x.chunks(N).map(<[f32]>::to_vec).collect();
    let resp = post_json(server.port, &json!({ "inputs": json_rows }));
    check_predictions(&resp, &native.run(&x, batch), batch, "wasi:nn build");
    assert_eq!(resp.header("x-falaj-runtime"), Some("sandbox"));
    assert_eq!(
        get(server.port, "/metadata").json()["runtime"]["where"],
        "sandbox"
    );
}

#[test]
fn bad_input_gets_a_clear_4xx_and_the_instance_keeps_serving() {
    let _g = serial();
    let (dir, _onnx, _) = classifier_dir("errors");
    let server = Server::start(&dir.0, &["--idle-instance-timeout", "120s"]);
    let port = server.port;
    let (instance, _) = get(port, "/metadata").instance();
    let ok_row = vec![0.5f32; N];

    let post = |ct: Option<&str>, body: &[u8]| request(port, "POST", "/predict", ct, body).unwrap();
    let expect = |r: Response, status: u16, code: &str, needle: &str| {
        let v = r.json();
        assert_eq!(r.status, status, "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        );
    };
    let js = Some("application/json");
    expect(
        post(js, b"{\"inputs\": [[1, 2,"),
        400,
        "malformed_json",
        "not valid JSON",
    );
    expect(
        post(js, b"{\"rows\": []}"),
        400,
        "bad_request",
        "\"inputs\"",
    );
    expect(
        post(js, b"{\"inputs\": [[1, 2, 3]]}"),
        422,
        "wrong_feature_count",
        "row 0 has 3 values; the model takes 6 features",
    );
    expect(
        post_json(
            port,
            &json!({"inputs": [{"feature_00": 1, "feature_01": 1, "feature_02": 1,
                "feature_03": 1, "feature_04": 1, "feature_05": 1, "colour": 2}]}),
        ),
        422,
        "unknown_feature",
        "\"colour\"",
    );
    expect(
        post_json(
            port,
            &json!({"inputs": [{"feature_00": 1, "feature_01": 1}]}),
        ),
        422,
        "missing_feature",
        "\"feature_05\"",
    );
    expect(
        post_json(port, &json!({"inputs": [[1, 2, 3, "4", 5, 6]]})),
        422,
        "not_a_number",
        "feature 3 (feature_03)",
    );
    expect(
        post(js, b"{\"inputs\": [[1, 2, 3, 4, 5, NaN]]}"),
        400,
        "malformed_json",
        "not valid JSON",
    );
    expect(
        post(js, b"{\"inputs\": [[1, 2, 3, 4, 5, 1e39]]}"),
        422,
        "not_finite",
        "row 0, feature 5",
    );
    let mut nan = ok_row.clone();
    nan[2] = f32::NAN;
    expect(
        post(Some("application/octet-stream"), &f32_bytes(&nan)),
        422,
        "not_finite",
        "NaN",
    );
    expect(
        post(Some("application/octet-stream"), &f32_bytes(&ok_row)[..7]),
        400,
        "bad_tensor",
        "7 bytes",
    );
    expect(
        post(Some("application/octet-stream"), &f32_bytes(&ok_row[..4])),
        422,
        "wrong_feature_count",
        "4 f32 values",
    );
    expect(post(js, b"{\"inputs\": []}"), 422, "no_rows", "no rows");
    expect(
        post(Some("image/gif"), b"GIF89a"),
        415,
        "unsupported_media_type",
        "image/gif",
    );
    // A tabular model has no image rule: an image is refused, naming why.
    expect(
        post(Some("image/png"), b"\x89PNG"),
        415,
        "not_an_image_model",
        "no `image` section",
    );
    expect(get(port, "/predict"), 405, "method_not_allowed", "POST");
    expect(get(port, "/nope"), 404, "not_found", "/nope");

    // Over 4 MiB, declared up front: refused from the header, before reading the body. No
    // body bytes are sent: bytes the server never reads would make its close a TCP reset,
    // which can discard the 413 before the client reads it.
    let big = 4 * 1024 * 1024 + 4;
    let head = format!(
        "POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: \
         application/octet-stream\r\ncontent-length: {big}\r\n\r\n"
    );
    expect(
        request_raw(port, &head, &mut std::iter::empty()),
        413,
        "body_too_large",
        "4194304",
    );
    // Over 4 MiB, chunked with no length: refused while streaming. Exactly one byte over the
    // limit and no final chunk, so the server has read everything sent when it answers (same
    // reason as above).
    let head = "POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: \
                application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = 256 * 1024;
    let sizes = std::iter::repeat_n(chunk, 16).chain(std::iter::once(1));
    let mut chunks = sizes.map(|size| {
        let mut c = format!("{size:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b' ', size));
        c.extend_from_slice(b"\r\n");
        c
    });
    expect(
        request_raw(port, head, &mut chunks),
        413,
        "body_too_large",
        "limit",
    );

    // Nothing above hurt the instance: same one, still serving, model loaded once.
    let ok = post_json(port, &json!({ "inputs": [ok_row] }));
    assert_eq!(ok.status, 200);
    let meta = get(port, "/metadata");
    assert_eq!(meta.instance().0, instance);
    assert_eq!(meta.json()["instance"]["loads"], 1);
}

#[test]
fn regression_model_without_version_record() {
    let _g = serial();
    let dir = TempDir::new("regression");
    let n = 4;
    let onnx = linear_regression(n, 9);
    let digest = write_model_dir(
        &dir.0,
        "price",
        &onnx,
        Task::Regression,
        &feature_names(n),
        &[],
        None,
        None,
    );
    let native = NativeTract::load(&dir.0.join("model.onnx"), n);
    let server = Server::start(&dir.0, &[]);
    let meta = get(server.port, "/metadata").json();
    assert_eq!(meta["model"], "price");
    assert_eq!(meta["version"], Value::Null);
    assert_eq!(meta["registered"], false);
    assert_eq!(meta["digest"], digest.as_str());
    assert_eq!(meta["preprocessing"], "none");
    let x = rows(3, 10, n);
    let resp = post_json(
        server.port,
        &json!({ "inputs": x.chunks(n).map(<[f32]>::to_vec).collect::<Vec<_>>() }),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-falaj-version"), Some("unregistered"));
    let v = resp.json();
    assert_eq!(v["task"], "regression");
    let got: Vec<f32> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap() as f32)
        .collect();
    assert_close(&got, &native.run(&x, 10), TOL, "regression values");
}

#[test]
fn trained_model_from_falaj_train_matches_native_tract() {
    // The real trainer's output: falaj-train from this workspace (`cargo build --workspace
    // --bins` puts it next to this test's directory), a few epochs on the bundled dataset.
    let _g = serial();
    let dir = TempDir::new("trained");
    train_with_falaj_train(&dir.0);
    let manifest: falaj_core::manifest::TrainingManifest =
        serde_json::from_slice(&std::fs::read(dir.0.join("manifest.json")).unwrap()).unwrap();
    let n = manifest.features.len();
    let st = manifest
        .standardization
        .as_ref()
        .expect("trainer records standardisation");
    assert!(
        st.folded_into_graph,
        "falaj-train folds standardisation into the graph"
    );
    let native = NativeTract::load(&dir.0.join("model.onnx"), n);
    let server = Server::start(&dir.0, &[]);
    let meta = get(server.port, "/metadata").json();
    assert_eq!(meta["n_features"], n);
    assert_eq!(
        meta["preprocessing"],
        "standardize: folded into the graph (raw features in)"
    );
    // Raw feature values around the training means, by name.
    let mut r = Lcg(5);
    let rows = 32;
    let mut x = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        for j in 0..n {
            x.push((st.mean[j] + st.std[j] * r.next() as f64 * 2.0) as f32);
        }
    }
    let named: Vec<Value> = x
        .chunks(n)
        .map(|row| {
            Value::Object(
                manifest
                    .features
                    .iter()
                    .zip(row)
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
            )
        })
        .collect();
    let resp = post_json(server.port, &json!({ "inputs": named }));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let got: Vec<f32> = resp.json()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| json_f32s(&p["probabilities"]))
        .collect();
    assert_close(
        &got,
        &native.run(&x, rows),
        TOL,
        "trained model probabilities",
    );
}

#[test]
fn a_model_that_is_not_the_registered_one_is_refused() {
    let _g = serial();
    let (dir, onnx, _) = classifier_dir("tampered");
    // The record says another artifact: as if model.onnx was swapped after verification.
    write_version(
        &dir.0,
        "iris-like",
        3,
        &onnx,
        None,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
    let server = Server::start(&dir.0, &[]);
    let h = get(server.port, "/health");
    assert_eq!(h.status, 503);
    let v = h.json();
    assert_eq!(v["status"], "unavailable");
    assert!(v["error"].as_str().unwrap().contains("refusing"), "{v}");
    let p = post_json(server.port, &json!({ "inputs": [[0, 0, 0, 0, 0, 0]] }));
    assert_eq!(p.status, 503);
    assert_eq!(p.json()["code"], "model_unavailable");
}
