//! The model cases of `tests/fixtures/models/` through the inference component: its API
//! compiled for the host, and the real component under `wasmtime serve`. Each answer to
//! `POST /predict` must equal what onnxruntime computed (`scripts/make-model-cases.py`) within
//! the one tolerance `cases.json` states; the gates run the same cases
//! (`crates/gates/tests/cases.rs`), so a model is gated on what it is served. The wasi:nn
//! build of the component runs each case twice in falaj-edge's own runtime: its graph in
//! the host's native tract (the host path) and in the sandbox.

mod component_support;

use std::path::{Path, PathBuf};

use component_support::*;
use falaj_inference::api::Instance;
use serde_json::{Value, json};

struct Case {
    name: String,
    dir: PathBuf,
    rows: Vec<Vec<f32>>,
    want: Vec<Vec<f32>>,
    /// An image model's case may carry `image.png` and onnxruntime's outputs for the tensor
    /// the manifest's image rule makes of it (computed in NumPy by the fixture script): the
    /// PNG is then sent as a body too.
    image: Option<(Vec<u8>, Vec<Vec<f32>>)>,
    /// And `image.jpg` with onnxruntime's outputs for the rule applied to Pillow's decoding
    /// of it (libjpeg, the reference decoder).
    jpeg: Option<(Vec<u8>, Vec<Vec<f32>>)>,
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(json_f32s).collect()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The cases and the tolerance, each case copied into a temp dir holding what the component
/// reads (the fixtures stay untouched: `wasmtime serve` writes its log beside the dir).
fn cases(tag: &str) -> (f32, Vec<(Case, TempDir)>) {
    let models = repo_root().join("tests/fixtures/models");
    let index = read_json(&models.join("cases.json"));
    let tol = index["tolerance"].as_f64().unwrap() as f32;
    let out = index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let src = models.join(&name);
            let tmp = TempDir::new(&format!("{tag}-{name}"));
            for f in ["model.onnx", "manifest.json"] {
                std::fs::copy(src.join(f), tmp.0.join(f)).unwrap();
            }
            let image = src.join("image.png").exists().then(|| {
                (
                    std::fs::read(src.join("image.png")).unwrap(),
                    floats(&read_json(&src.join("image-expected.json"))["outputs"]),
                )
            });
            let jpeg = src.join("image.jpg").exists().then(|| {
                (
                    std::fs::read(src.join("image.jpg")).unwrap(),
                    floats(&read_json(&src.join("image-jpeg-expected.json"))["outputs"]),
                )
            });
            let case = Case {
                image,
                jpeg,
                rows: floats(&read_json(&src.join("inputs.json"))["rows"]),
                want: floats(&read_json(&src.join("expected.json"))["outputs"]),
                dir: tmp.0.clone(),
                name,
            };
            (case, tmp)
        })
        .collect::<Vec<_>>();
    assert!(out.len() >= 4, "cases.json lists {} cases", out.len());
    (tol, out)
}

/// The outputs of a `/predict` answer, one row per prediction: the probabilities of a
/// classifier, the value of a regressor.
fn outputs(answer: &Value) -> Vec<Vec<f32>> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p.get("probabilities") {
            Some(probs) => json_f32s(probs),
            None => vec![p["value"].as_f64().unwrap() as f32],
        })
        .collect()
}

fn check(case: &Case, got: &[Vec<f32>], tol: f32, runner: &str) {
    assert_eq!(got.len(), case.want.len(), "{}: {runner}: rows", case.name);
    for (r, (g, w)) in got.iter().zip(&case.want).enumerate() {
        assert_eq!(g.len(), w.len(), "{}: {runner}: row {r} width", case.name);
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "{}: {runner}: row {r} output {j}: {a}, onnxruntime {b} (tolerance {tol})",
                case.name
            );
        }
    }
}

/// The answer to a case's PNG body: 200 and onnxruntime's outputs for the tensor the
/// manifest's image rule makes of it.
fn check_image(case: &Case, status: u16, body: &[u8], tol: f32, runner: &str) {
    let (_, want) = case.image.as_ref().expect("a case with an image");
    check_body(case, want, "PNG body", status, body, tol, runner);
}

/// How far a JPEG body's outputs may be from onnxruntime's on Pillow's decoding: JPEG
/// decoders (zune-jpeg here, libjpeg in Pillow) may differ by a level in some pixels, which
/// moves this case's outputs by about 3e-4 (measured).
const JPEG_TOLERANCE: f32 = 2e-3;

/// The answer to a case's JPEG body, against onnxruntime on the rule applied to Pillow's
/// decoding of the same file (within [`JPEG_TOLERANCE`]).
fn check_jpeg(case: &Case, status: u16, body: &[u8], runner: &str) {
    let (_, want) = case.jpeg.as_ref().expect("a case with a JPEG");
    check_body(
        case,
        want,
        "JPEG body",
        status,
        body,
        JPEG_TOLERANCE,
        runner,
    );
}

fn check_body(
    case: &Case,
    want: &[Vec<f32>],
    what: &str,
    status: u16,
    body: &[u8],
    tol: f32,
    runner: &str,
) {
    assert_eq!(
        status,
        200,
        "{}: {}",
        case.name,
        String::from_utf8_lossy(body)
    );
    let answer: Value = serde_json::from_slice(body).unwrap();
    let image_case = Case {
        want: want.to_vec(),
        rows: Vec::new(),
        image: None,
        jpeg: None,
        name: format!("{} ({what})", case.name),
        dir: case.dir.clone(),
    };
    check(&image_case, &outputs(&answer), tol, runner);
}

fn body(case: &Case) -> Value {
    json!({ "inputs": case.rows })
}

#[test]
fn every_case_is_served_natively_as_onnxruntime_computes_it() {
    let (tol, cases) = cases("cases-native");
    for (case, _tmp) in &cases {
        let inst = Instance::load(&case.dir);
        let r = inst.handle(
            "POST",
            "/predict",
            Some("application/json"),
            &serde_json::to_vec(&body(case)).unwrap(),
        );
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&r.body)
        );
        let answer: Value = serde_json::from_slice(&r.body).unwrap();
        check(case, &outputs(&answer), tol, "component API (native)");
        if let Some((png, _)) = &case.image {
            let r = inst.handle("POST", "/predict", Some("image/png"), png);
            check_image(case, r.status, &r.body, tol, "component API (native)");
        }
        if let Some((jpg, _)) = &case.jpeg {
            let r = inst.handle("POST", "/predict", Some("image/jpeg"), jpg);
            check_jpeg(case, r.status, &r.body, "component API (native)");
        }
    }
}

/// One case through a falaj-edge runtime: every body the case has, each answer checked
/// against onnxruntime, and `x-falaj-runtime` saying where the graph ran.
async fn check_runtime(
    case: &Case,
    rt: &falaj_edge::runtime::ModelRuntime,
    tol: f32,
    runs_in: &str,
) {
    let runner = format!("falaj-edge, graph in the {runs_in}");
    let call = |ct: &'static str, body: Vec<u8>| {
        rt.call(http::Method::POST, "/predict", Some(ct), body.into())
    };
    let a = call("application/json", serde_json::to_vec(&body(case)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}: {runner}: {e}", case.name));
    assert_eq!(
        a.status,
        200,
        "{}: {runner}: {}",
        case.name,
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(
        a.headers["x-falaj-runtime"], runs_in,
        "{}: where the graph ran",
        case.name
    );
    check(
        case,
        &outputs(&serde_json::from_slice(&a.body).unwrap()),
        tol,
        &runner,
    );
    if let Some((png, _)) = &case.image {
        let a = call("image/png", png.clone()).await.unwrap();
        check_image(case, a.status.as_u16(), &a.body, tol, &runner);
    }
    if let Some((jpg, _)) = &case.jpeg {
        let a = call("image/jpeg", jpg.clone()).await.unwrap();
        check_jpeg(case, a.status.as_u16(), &a.body, &runner);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_is_served_by_the_host_path_as_in_the_sandbox_and_onnxruntime() {
    use falaj_edge::nn::HostGraph;
    use falaj_edge::runtime::{EdgeEngine, Limits};

    let (tol, cases) = cases("cases-host");
    let engine = EdgeEngine::new(Limits::default()).unwrap();
    let code = TempDir::new("cases-host-code");
    let nn = engine.load_component(&component_nn(), &code.0).unwrap();
    assert!(
        engine.imports_nn(&nn.component),
        "the -nn build imports wasi:nn"
    );
    let plain = engine.load_component(&component(), &code.0).unwrap();
    assert!(
        !engine.imports_nn(&plain.component),
        "the plain build does not"
    );
    for (case, _tmp) in &cases {
        // As the fleet stages a version: the record beside the artifact it verified.
        let onnx = std::fs::read(case.dir.join("model.onnx")).unwrap();
        let digest = falaj_inference::engine::sha256(&onnx);
        let manifest = read_json(&case.dir.join("manifest.json"));
        let model = manifest["model"].as_str().unwrap_or("case");
        write_version(&case.dir, model, 1, &onnx, None, &digest);
        let graph = HostGraph::load(&case.dir).unwrap();
        assert_eq!(graph.digest, digest);
        let host = engine
            .runtime(&nn.component, &case.dir, Some(graph.clone()))
            .unwrap();
        check_runtime(case, &host, tol, "host").await;
        // No graph offered: the same component keeps tract in the sandbox.
        let sandbox = engine.runtime(&nn.component, &case.dir, None).unwrap();
        check_runtime(case, &sandbox, tol, "sandbox").await;
        // The plain build takes no graph even when one is offered.
        let plain = engine
            .runtime(&plain.component, &case.dir, Some(graph))
            .unwrap();
        check_runtime(case, &plain, tol, "sandbox").await;
    }
}

#[test]
fn every_case_is_served_under_wasmtime_as_onnxruntime_computes_it() {
    let (tol, cases) = cases("cases-wasmtime");
    for (case, _tmp) in &cases {
        let server = Server::start(&case.dir, &[]);
        let resp = post_json(server.port, &body(case));
        assert_eq!(
            resp.status,
            200,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&resp.body)
        );
        check(
            case,
            &outputs(&resp.json()),
            tol,
            "component under wasmtime",
        );
        if let Some((jpg, _)) = &case.jpeg {
            let resp = request(server.port, "POST", "/predict", Some("image/jpeg"), jpg).unwrap();
            check_jpeg(case, resp.status, &resp.body, "component under wasmtime");
        }
        if let Some((png, _)) = &case.image {
            let resp = request(server.port, "POST", "/predict", Some("image/png"), png).unwrap();
            check_image(
                case,
                resp.status,
                &resp.body,
                tol,
                "component under wasmtime",
            );
        }
    }
}
