//! Test support: model fixtures, native tract as the reference, a `wasmtime serve` process,
//! and a tiny HTTP/1.1 client (std only, so the test adds no HTTP stack to build).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use falaj_core::manifest::{Standardization, Task, TrainingManifest};
use falaj_core::onnx::{
    AttributeProto, FLOAT, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, float_tensor,
    linear_model, summarize, value_info,
};
use falaj_core::version::{Lineage, ModelVersion};
use falaj_inference::engine::sha256;
use prost::Message;
use serde_json::Value;
use tract_onnx::prelude::*;

// ---------------------------------------------------------------- paths and tools

/// The repository root (`infra/edge-node/../..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `wasmtime` 48: `FALAJ_WASMTIME`, else `target/tools/bin/wasmtime`, else `wasmtime` on PATH.
pub fn wasmtime() -> PathBuf {
    let candidates = [
        std::env::var_os("FALAJ_WASMTIME").map(PathBuf::from),
        Some(repo_root().join("target/tools/bin/wasmtime")),
        Some(PathBuf::from("wasmtime")),
    ];
    for c in candidates.into_iter().flatten() {
        if let Ok(out) = Command::new(&c).arg("--version").output()
            && out.status.success()
        {
            let v = String::from_utf8_lossy(&out.stdout);
            assert!(
                v.starts_with("wasmtime 48."),
                "{} is {v}; the component is proven against wasmtime-cli 48",
                c.display()
            );
            return c;
        }
    }
    panic!(
        "no wasmtime found (FALAJ_WASMTIME, target/tools/bin/wasmtime, PATH); install it with \
         `cargo install wasmtime-cli --version '^48' --locked --root target/tools` or run \
         tests/wasm/run.sh"
    );
}

/// The built component: `FALAJ_INFERENCE_WASM`, else `target/wasm/falaj-inference.wasm`.
pub fn component() -> PathBuf {
    let p = std::env::var_os("FALAJ_INFERENCE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm/falaj-inference.wasm"));
    assert!(
        p.is_file(),
        "no component at {}: build it with scripts/wasm-component.sh",
        p.display()
    );
    p
}

/// The wasi:nn build of the component (`falaj-inference-nn.wasm`), built beside the plain
/// one by scripts/wasm-component.sh: `FALAJ_INFERENCE_NN_WASM`, else next to [`component`].
pub fn component_nn() -> PathBuf {
    let p = std::env::var_os("FALAJ_INFERENCE_NN_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let plain = component();
            plain.with_file_name(format!(
                "{}-nn.wasm",
                plain.file_stem().unwrap().to_string_lossy()
            ))
        });
    assert!(
        p.is_file(),
        "no wasi:nn component at {}: build it with scripts/wasm-component.sh",
        p.display()
    );
    p
}

/// Trains the breast-cancer MLP with this workspace's `falaj-train` (3 epochs, no upload)
/// into `out` (`model.onnx`, `manifest.json`). The binary is looked up next to the test's
/// own directory (`target/<profile>/`), where `cargo build --workspace --bins` puts it.
pub fn train_with_falaj_train(out: &Path) {
    let exe = std::env::current_exe().unwrap();
    let train = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("falaj-train"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no falaj-train next to {}: build it with `cargo build --workspace --bins`",
                exe.display()
            )
        });
    let out_ = Command::new(&train)
        .args(["--data"])
        .arg(repo_root().join("tests/fixtures/datasets/breast_cancer.csv"))
        .args([
            "--target",
            "diagnosis",
            "--model",
            "breast-cancer",
            "--hidden",
            "16,8",
        ])
        .args(["--epochs", "3", "--seed", "7", "--no-upload", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        out_.status.success(),
        "{} failed: {}",
        train.display(),
        String::from_utf8_lossy(&out_.stderr)
    );
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "falaj-inference-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- fixtures

/// Deterministic pseudo-random numbers in [-1, 1) (no rand crate in the test build).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// The trainer's graph shape: `Sub(mean) → Div(scale) → Gemm → Relu → Gemm → Softmax`, with
/// standardisation folded in (raw features in), random weights.
pub fn mlp_classifier(
    n: usize,
    hidden: usize,
    classes: usize,
    seed: u64,
) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let mut r = Lcg(seed);
    let mean = r.vec(n, 5.0);
    let scale: Vec<f32> = r.vec(n, 1.0).iter().map(|v| 0.5 + v.abs() * 3.0).collect();
    let w1 = r.vec(n * hidden, 0.8);
    let b1 = r.vec(hidden, 0.2);
    let w2 = r.vec(hidden * classes, 0.8);
    let b2 = r.vec(classes, 0.2);
    let softmax_axis = AttributeProto {
        name: "axis".into(),
        r#type: 2,
        i: -1,
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "falaj-inference-test".into(),
        graph: Some(GraphProto {
            name: "mlp".into(),
            node: vec![
                node("Sub", &["input", "mean"], "centred", vec![]),
                node("Div", &["centred", "scale"], "standard", vec![]),
                node("Gemm", &["standard", "w1", "b1"], "h1", vec![]),
                node("Relu", &["h1"], "a1", vec![]),
                node("Gemm", &["a1", "w2", "b2"], "logits", vec![]),
                node("Softmax", &["logits"], "output", vec![softmax_axis]),
            ],
            initializer: vec![
                float_tensor("mean", &[n as i64], &mean),
                float_tensor("scale", &[n as i64], &scale),
                float_tensor("w1", &[n as i64, hidden as i64], &w1),
                float_tensor("b1", &[hidden as i64], &b1),
                float_tensor("w2", &[hidden as i64, classes as i64], &w2),
                float_tensor("b2", &[classes as i64], &b2),
            ],
            input: vec![value_info("input", FLOAT, &[None, Some(n as i64)], "batch")],
            output: vec![value_info(
                "output",
                FLOAT,
                &[None, Some(classes as i64)],
                "batch",
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    (model.encode_to_vec(), mean, scale)
}

/// A linear regression `y = x·w + b` (one Gemm, `falaj_core::onnx::linear_model`).
pub fn linear_regression(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Lcg(seed);
    linear_model(n, 1, &r.vec(n, 2.0), &[0.25]).encode_to_vec()
}

pub fn feature_names(n: usize) -> Vec<String> {
    (0..n).map(|j| format!("feature_{j:02}")).collect()
}

/// Writes `model.onnx` and a `manifest.json` (and `version.json` when `version` is given)
/// into `dir`; returns the model's digest.
#[allow(clippy::too_many_arguments)]
pub fn write_model_dir(
    dir: &Path,
    model_name: &str,
    onnx: &[u8],
    task: Task,
    features: &[String],
    classes: &[String],
    standardization: Option<Standardization>,
    version: Option<u64>,
) -> String {
    std::fs::write(dir.join("model.onnx"), onnx).unwrap();
    let manifest = TrainingManifest {
        model: model_name.into(),
        task,
        target: "y".into(),
        features: features.to_vec(),
        classes: classes.to_vec(),
        output: None,
        image: None,
        standardization,
        ..Default::default()
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(dir.join("manifest.json"), &manifest_bytes).unwrap();
    let digest = sha256(onnx);
    if let Some(n) = version {
        write_version(
            dir,
            model_name,
            n,
            onnx,
            Some(sha256(&manifest_bytes)),
            &digest,
        );
    }
    digest
}

/// Writes a `version.json` (a `falaj_core::ModelVersion`) recording `digest`.
pub fn write_version(
    dir: &Path,
    model: &str,
    n: u64,
    onnx: &[u8],
    manifest_digest: Option<String>,
    digest: &str,
) {
    let s = summarize(onnx).unwrap();
    let v = ModelVersion {
        model: model.into(),
        version: n,
        semver: format!("{n}.0.0"),
        digest: digest.into(),
        size: onnx.len() as u64,
        format: s.format,
        signature: s.signature,
        manifest_digest,
        lineage: Lineage::default(),
        metrics: BTreeMap::new(),
        author: "test".into(),
        author_principal: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        region: "me-central-1".into(),
        source: None,
    };
    std::fs::write(
        dir.join("version.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
}

// ---------------------------------------------------------------- native reference

/// Plain native tract, independent of the component's engine: load, optimise, run.
pub struct NativeTract {
    plan: Arc<TypedRunnableModel>,
    pub n: usize,
}

impl NativeTract {
    pub fn load(onnx: &Path, n: usize) -> Self {
        let model = tract_onnx::onnx().model_for_path(onnx).unwrap();
        let batch = model.symbols.sym("B");
        let plan = model
            .with_input_fact(0, f32::fact([batch.to_dim(), n.to_dim()]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        Self { plan, n }
    }

    /// Outputs row-major for `rows` rows of `x`.
    pub fn run(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let input = Tensor::from_shape(&[rows, self.n], x).unwrap();
        let out = self.plan.run(tvec!(input.into())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }
}

// ---------------------------------------------------------------- HTTP

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The instance that answered and how many requests it has served, from the component's
    /// `x-falaj-instance: <id>/<n>` header.
    pub fn instance(&self) -> (String, u64) {
        let h = self
            .header("x-falaj-instance")
            .unwrap_or_else(|| panic!("no x-falaj-instance header: {:?}", self.headers));
        let (id, n) = h.split_once('/').unwrap();
        (id.to_string(), n.parse().unwrap())
    }

    /// tract's time inside the component, from its `server-timing: infer;dur=<ms>` header.
    pub fn infer_ms(&self) -> f64 {
        let timing = self
            .header("server-timing")
            .unwrap_or_else(|| panic!("no server-timing header: {:?}", self.headers));
        timing
            .trim_start_matches("infer;dur=")
            .parse()
            .unwrap_or_else(|e| panic!("server-timing {timing:?}: {e}"))
    }
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.set_nodelay(true)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\
         content-length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("content-type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    s.write_all(&msg)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

/// Sends raw request bytes (for bodies that lie about their length or are chunked), ignoring
/// write errors (the server may answer before it has read everything), then reads. It does not
/// half-close: a FIN before the declared body is complete may end the request early.
pub fn request_raw(port: u16, head: &str, chunks: &mut dyn Iterator<Item = Vec<u8>>) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let _ = s.write_all(head.as_bytes());
    for c in chunks {
        if s.write_all(&c).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, None, b"").unwrap()
}

pub fn post_json(port: u16, v: &Value) -> Response {
    request(
        port,
        "POST",
        "/predict",
        Some("application/json"),
        &serde_json::to_vec(v).unwrap(),
    )
    .unwrap()
}

pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

// ---------------------------------------------------------------- wasmtime serve

/// A `wasmtime serve` process serving the component with `model_dir` mounted at `/model`.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Spawn to the first 200 from `/health` (compile + instantiate + model load).
    pub first_response: Duration,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the server and waits for `/health` to answer (any status: a model that fails to
    /// load answers 503, which some tests want).
    pub fn start(model_dir: &Path, extra: &[&str]) -> Self {
        Self::start_component(&component(), model_dir, extra)
    }

    /// [`Server::start`] with another build of the component (the wasi:nn one).
    pub fn start_component(component: &Path, model_dir: &Path, extra: &[&str]) -> Self {
        let wasmtime = wasmtime();
        let port = free_port();
        let log = model_dir.with_extension("wasmtime.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let started = Instant::now();
        let mut cmd = Command::new(&wasmtime);
        cmd.args([
            "serve",
            "-Scli",
            "-Shttp",
            "-Sp3",
            "-Wcomponent-model-async",
        ])
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(format!("{}::/model", model_dir.display()))
        .args(extra)
        .arg(component)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
        let child = cmd.spawn().unwrap();
        let mut server = Self {
            child,
            port,
            first_response: Duration::ZERO,
            log,
        };
        let deadline = started + Duration::from_secs(300);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "wasmtime serve exited with {status}: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if let Ok(r) = request(port, "GET", "/health", None, b"")
                && (r.status == 200 || r.status == 503)
            {
                server.first_response = started.elapsed();
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "wasmtime serve did not answer in 300 s: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

// ---------------------------------------------------------------- numbers

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: value {i} is {g} under wasmtime serve, {w} in native tract (|diff| {} > {tol})",
            (g - w).abs()
        );
    }
}

pub fn json_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}
