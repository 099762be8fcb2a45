//! Edge benchmark: native tract vs the inference component in falaj-edge vs onnxruntime, on
//! the same model files, side by side in one run. Run by `scripts/bench-edge.sh`, which
//! prepares the models (the trainer's MLP, two CNNs) and the component.
//!
//! Per model: native tract in process (single item, p50/p99), onnxruntime in Python (one
//! thread, same input), and falaj-edge over HTTP on loopback (deploy-to-first-response,
//! p50/p99 of the whole request, and tract's own time inside the component from its
//! `server-timing` header). For the MLP also: an open-loop load at a fixed rate, and the
//! cost of a fresh instance per request (a second node with `--instance-reuse 1`).
//!
//! Env: FALAJ_BENCH_MODELS (directory of `*.onnx`, with `<name>.manifest.json` beside those
//! that have one), FALAJ_BENCH_SECONDS (time per measurement, default 3), FALAJ_BENCH_RATE
//! (open-loop rate, default 1000/s), FALAJ_BENCH_PYTHON (with onnxruntime),
//! FALAJ_INFERENCE_WASM (the component to serve; default target/wasm/falaj-inference.wasm).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj::deploy::DeployKey;
use falaj::store::{Precondition, Store};
use falaj::{Artifact, NewModel, Registration, Registry};
use falaj_core::StoreKey;
use falaj_core::deployment::{DeploymentManifest, SCHEMA, Slot, Strategy};
use serde_json::{Value, json};
use tract_onnx::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    s: BufReader<TcpStream>,
}

struct Resp {
    status: u16,
    infer_ms: Option<f64>,
    /// The node's `edge` timing: the whole component call.
    host_ms: Option<f64>,
    body: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Self {
            s: BufReader::new(s),
        }
    }

    fn send(&mut self, method: &str, path: &str, ct: &str, body: &[u8]) -> Resp {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let w = self.s.get_mut();
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(body).unwrap();
        let mut line = String::new();
        self.s.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        let mut len = 0usize;
        let mut infer_ms = None;
        let mut host_ms = None;
        loop {
            line.clear();
            self.s.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if let Some(v) = lower.strip_prefix("server-timing:") {
                let entry = |name: &str| {
                    v.split(',')
                        .map(str::trim)
                        .find(|e| e.starts_with(name))
                        .and_then(|e| e.split("dur=").nth(1))
                        .and_then(|d| d.split(';').next())
                        .and_then(|d| d.trim().parse::<f64>().ok())
                };
                infer_ms = entry("infer");
                host_ms = entry("edge");
            }
        }
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        Resp {
            status,
            infer_ms,
            host_ms,
            body,
        }
    }
}

struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plain component, or its wasi:nn build (`-nn.wasm` beside it).
fn component(nn: bool) -> PathBuf {
    // FALAJ_INFERENCE_WASM: another build of the component (e.g. with other target features).
    let plain = std::env::var_os("FALAJ_INFERENCE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm/falaj-inference.wasm"));
    if nn {
        let stem = plain.file_stem().unwrap().to_string_lossy().into_owned();
        plain.with_file_name(format!("{stem}-nn.wasm"))
    } else {
        plain
    }
}

/// A node of `env` (`prod`: the sandbox deployments; `staging`: the same versions signed
/// with `runtime = "host"`, served by the wasi:nn build).
fn start_node(store: &str, cache: &Path, key: &DeployKey, env: &str, extra: &[&str]) -> Node {
    let component = component(env == "staging");
    assert!(
        component.exists(),
        "{} is missing: build the component first (scripts/wasm-component.sh)",
        component.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_falaj-edge"))
        .args(["--store", store, "--env", env, "--listen", "127.0.0.1:0"])
        .arg("--cache")
        .arg(cache)
        .arg("--code-cache")
        .arg(root().join("target/edge-tests/code-cache"))
        .arg("--component")
        .arg(&component)
        .args(["--trust-key", &hex::encode(key.public().as_bytes())])
        .args([
            "--poll-ms",
            "20",
            "--memory-mb",
            "1024",
            "--deadline-ms",
            "30000",
        ])
        .args(["--max-concurrent", "2"])
        .args(extra)
        .env("FALAJ_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    Node {
        addr: v["listening"].as_str().unwrap().into(),
        child,
    }
}

struct Model {
    name: String,
    bytes: Vec<u8>,
    manifest: Option<Vec<u8>>,
    path: PathBuf,
}

fn models(dir: &Path) -> Vec<Model> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bench-edge.sh)", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('_', "-");
        let manifest = std::fs::read(path.with_extension("manifest.json")).ok();
        out.push(Model {
            name,
            bytes: std::fs::read(&path).unwrap(),
            manifest,
            path,
        });
    }
    out
}

/// Registers `m`, deploys it signed, and returns ms from the manifest write to the first 200.
async fn deploy(
    reg: &Registry,
    store: &Arc<dyn Store>,
    key: &DeployKey,
    node: &Node,
    m: &Model,
) -> f64 {
    reg.create_model(
        NewModel {
            name: m.name.clone(),
            owner: "bench".into(),
            ..Default::default()
        },
        "bench",
    )
    .await
    .unwrap();
    let v = reg
        .register(
            Registration {
                model: m.name.clone(),
                artifact: Artifact::Bytes(Bytes::from(m.bytes.clone())),
                artifact_name: "model.onnx".into(),
                manifest: m
                    .manifest
                    .clone()
                    .map(|b| ("manifest.json".to_string(), Bytes::from(b))),
                semver: None,
                author: "bench".into(),
                author_principal: None,
                source: None,
            },
            falaj::store::no_progress(),
        )
        .await
        .unwrap()
        .version;
    let manifest = DeploymentManifest {
        schema: SCHEMA,
        env: "prod".into(),
        model: m.name.clone(),
        generation: 1,
        strategy: Strategy::Direct,
        champion: Slot::new(v.version, v.digest.clone()),
        challenger: None,
        challenger_weight: 0,
        standby: None,
        history: Vec::new(),
        updated_by: "bench".into(),
        updated_at: falaj::registry::now(),
        event_seq: None,
        challenger_mode: Default::default(),
        split_key: None,
    };
    // The host path's node serves staging: the same version, signed for the host.
    let mut on_host = manifest.clone();
    on_host.env = "staging".into();
    on_host.champion.runtime = falaj_core::deployment::Runtime::Host;
    let put = |d: DeploymentManifest| async move {
        let k = StoreKey::new(format!("deployments/{}/{}.json", d.env, d.model)).unwrap();
        let signed = Bytes::from(serde_json::to_vec(&key.sign(&d)).unwrap());
        store.put(&k, signed, Precondition::None).await.unwrap();
    };
    put(on_host).await;
    let t0 = Instant::now();
    put(manifest).await;
    let mut c = Conn::open(&node.addr);
    loop {
        let r = c.send(
            "GET",
            &format!("/v1/models/{}/health", m.name),
            "text/plain",
            b"",
        );
        if r.status == 200 {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{} never served",
            m.name
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn item_shape(node: &Node, model: &str) -> Vec<usize> {
    let r = Conn::open(&node.addr).send(
        "GET",
        &format!("/v1/models/{model}/metadata"),
        "text/plain",
        b"",
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["item_shape"]
        .as_array()
        .unwrap_or_else(|| panic!("no item_shape in {v}"))
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn input(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect()
}

/// Native tract, same optimisation as the component: returns (load ms, p50, p99, n, mean).
/// `fixed_batch`: a concrete batch of 1 instead of the symbolic `N`.
fn native(
    m: &Model,
    shape: &[usize],
    budget: Duration,
    fixed_batch: bool,
) -> (f64, f64, f64, usize, f64) {
    let t0 = Instant::now();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &m.bytes[..])
        .unwrap();
    let batch = if fixed_batch {
        1.to_dim()
    } else {
        model.symbols.sym("N").to_dim()
    };
    let mut dims: TVec<TDim> = tvec![batch];
    dims.extend(shape.iter().map(|d| d.to_dim()));
    let plan = model
        .with_input_fact(0, f32::fact(dims).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let load = t0.elapsed().as_secs_f64() * 1000.0;
    let n: usize = shape.iter().product();
    let mut full = vec![1];
    full.extend_from_slice(shape);
    let x = Tensor::from_shape(&full, &input(n)).unwrap();
    for _ in 0..3 {
        plan.run(tvec!(x.clone().into())).unwrap();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 20 {
        let t = Instant::now();
        plan.run(tvec!(x.clone().into())).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let s = sorted(times);
    (load, pct(&s, 0.5), pct(&s, 0.99), s.len(), mean)
}

fn ort(m: &Model, shape: &[usize], n: usize) -> Value {
    let python = std::env::var("FALAJ_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/py/bin/python"));
    let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let out = Command::new(python)
        .arg(root().join("scripts/bench/ort_time.py"))
        .arg(&m.path)
        .arg(shape.join(","))
        .arg(n.to_string())
        .arg("1")
        .output()
        .expect("python with onnxruntime (scripts/test.sh makes target/py)");
    assert!(
        out.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sequential single requests on one keep-alive connection.
struct HttpLatency {
    p50: f64,
    p99: f64,
    infer_p50: f64,
    infer_p99: f64,
    /// The node's own time in the component call (`server-timing: edge`), p50.
    host_p50: f64,
    n: usize,
}

fn http_latency(node: &Node, model: &str, ct: &str, body: &[u8], budget: Duration) -> HttpLatency {
    let mut c = Conn::open(&node.addr);
    let path = format!("/v1/models/{model}/predict");
    for _ in 0..3 {
        assert_eq!(c.send("POST", &path, ct, body).status, 200);
    }
    let (mut http, mut infer, mut host) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < budget || http.len() < 20 {
        let t = Instant::now();
        let r = c.send("POST", &path, ct, body);
        http.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        infer.extend(r.infer_ms);
        host.extend(r.host_ms);
    }
    let (h, i, e) = (sorted(http), sorted(infer), sorted(host));
    HttpLatency {
        p50: pct(&h, 0.5),
        p99: pct(&h, 0.99),
        infer_p50: pct(&i, 0.5),
        infer_p99: pct(&i, 0.99),
        host_p50: pct(&e, 0.5),
        n: h.len(),
    }
}

/// Open-loop load at `rate` req/s for `secs`, spread over `conns` connections; latency is
/// from each request's scheduled time (so queueing counts). Returns (sent/s, p50, p99, errors).
fn open_loop(
    node: &Node,
    model: &str,
    body: &[u8],
    rate: f64,
    secs: f64,
    conns: usize,
) -> (f64, f64, f64, usize) {
    let per_conn = rate / conns as f64;
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let total = (per_conn * secs) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let addr = node.addr.clone();
            let body = body.to_vec();
            let path = format!("/v1/models/{model}/predict");
            std::thread::spawn(move || {
                let mut c = Conn::open(&addr);
                let offset = interval.mul_f64(i as f64 / conns as f64);
                let mut lat = Vec::with_capacity(total);
                let mut errors = 0;
                for k in 0..total {
                    let due = start + offset + interval * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let r = c.send("POST", &path, "application/json", &body);
                    if r.status != 200 {
                        errors += 1;
                    }
                    lat.push(due.elapsed().as_secs_f64() * 1000.0);
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().unwrap();
        all.extend(l);
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    let n = all.len();
    let s = sorted(all);
    (n as f64 / took, pct(&s, 0.5), pct(&s, 0.99), errors)
}

#[tokio::main]
async fn main() {
    let dir = std::env::var("FALAJ_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/bench-edge/models"));
    let budget = Duration::from_secs_f64(env_or("FALAJ_BENCH_SECONDS", 3.0));
    let rate: f64 = env_or("FALAJ_BENCH_RATE", 1000.0);
    let work = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", work.path().join("store").display());
    let store = falaj::store::open(
        &uri,
        &falaj::store::OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reg = Registry::new(store.clone());
    let key = DeployKey::from_seed([3; 32]);
    falaj::deploy::publish_key(&reg, &key).await.unwrap();
    let node = start_node(&uri, &work.path().join("cache"), &key, "prod", &[]);
    let fresh = start_node(
        &uri,
        &work.path().join("cache-fresh"),
        &key,
        "prod",
        &["--instance-reuse", "1"],
    );
    // The host inference path: the wasi:nn build, serving the versions signed for the host.
    let host = start_node(&uri, &work.path().join("cache-host"), &key, "staging", &[]);
    // The same node without micro-batching: the open-loop baseline.
    let unbatched = start_node(
        &uri,
        &work.path().join("cache-unbatched"),
        &key,
        "prod",
        &["--batch-window-us", "0"],
    );
    println!(
        "# falaj-edge benchmark ({} s per figure; times in ms)",
        budget.as_secs_f64()
    );
    for m in models(&dir) {
        let deploy_ms = deploy(&reg, &store, &key, &node, &m).await;
        let shape = item_shape(&node, &m.name);
        let n: usize = shape.iter().product();
        let x = input(n);
        let (native_load, native_p50, native_p99, native_n, native_mean) =
            native(&m, &shape, budget, false);
        let (_, fixed_p50, fixed_p99, _, fixed_mean) = native(&m, &shape, budget, true);
        let ort_n =
            ((budget.as_secs_f64() * 1000.0 / native_p50.max(0.001)) as usize).clamp(20, 5000);
        let o = ort(&m, &shape, ort_n);
        let (ct, body) = if m.manifest.is_some() {
            (
                "application/json",
                serde_json::to_vec(&json!({ "inputs": [x] })).unwrap(),
            )
        } else {
            (
                "application/octet-stream",
                x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        let lat = http_latency(&node, &m.name, ct, &body, budget);
        let (h50, h99, i50, i99, hn) = (lat.p50, lat.p99, lat.infer_p50, lat.infer_p99, lat.n);
        let _ = deploy_fresh(&host, &m.name);
        let before = host_counters(&host);
        let on_host = http_latency(&host, &m.name, ct, &body, budget);
        let after = host_counters(&host);
        // Mean per run, from the node's own counters: tract on the host thread, and the wait
        // for that thread.
        let runs = (after.0 - before.0).max(1.0);
        let (host_run, host_wait) = (
            (after.1 - before.1) * 1000.0 / runs,
            (after.2 - before.2) * 1000.0 / runs,
        );
        let ort50 = o["p50_ms"].as_f64().unwrap();
        // The component runs image models at a concrete batch of 1 (tabular ones with a
        // symbolic batch): compare with native tract planned the same way.
        let (native_same, native_same_mean) = if shape.len() > 1 {
            (fixed_p50, fixed_mean)
        } else {
            (native_p50, native_mean)
        };
        let mut figures = json!({
            "model": m.name,
            "item_shape": shape,
            "bytes": m.bytes.len(),
            "deploy_to_first_response_ms": deploy_ms,
            "native_tract": {"load_ms": native_load, "p50_ms": native_p50, "p99_ms": native_p99, "n": native_n},
            "native_tract_batch1": {"p50_ms": fixed_p50, "p99_ms": fixed_p99},
            "onnxruntime_1_thread": o,
            "edge_http": {"p50_ms": h50, "p99_ms": h99, "n": hn, "body": ct},
            "component_infer": {"p50_ms": i50, "p99_ms": i99},
            // Where a request's time goes, by p50: the inference; the rest of the component
            // call (wasm boundary, JSON parsing and encoding); and outside it (client, TCP,
            // hyper, the node's routing and headers).
            "breakdown_p50_ms": {
                "inference": i50,
                "component_call_outside_inference": lat.host_p50 - i50,
                "outside_the_component_call": h50 - lat.host_p50,
            },
            // The same component with its graph in the node's native tract (wasi:nn): its
            // inference time includes handing the tensors over and the worker thread.
            "host_path": {
                "edge_http": {"p50_ms": on_host.p50, "p99_ms": on_host.p99, "n": on_host.n},
                "component_infer": {"p50_ms": on_host.infer_p50, "p99_ms": on_host.infer_p99},
                "ratio_infer_vs_native": on_host.infer_p50 / native_same,
                "host_thread_mean_ms": {"run": host_run, "wait": host_wait, "runs": runs},
                "ratio_host_run_mean_vs_native_mean": host_run / native_same_mean,
                "ratio_edge_http_vs_sandbox": on_host.p50 / h50,
            },
            "ratio_component_infer_vs_native": i50 / native_same,
            "ratio_edge_http_vs_native": h50 / native_same,
            "ratio_component_infer_vs_onnxruntime": i50 / ort50,
        });
        if m.manifest.is_some() {
            // Fresh instance per request: the same model on the node that never reuses.
            let _ = deploy_fresh(&fresh, &m.name);
            let f = http_latency(&fresh, &m.name, ct, &body, budget);
            let (f50, f99) = (f.p50, f.p99);
            figures["fresh_instance_http"] = json!({"p50_ms": f50, "p99_ms": f99});
            figures["instantiation_cost_ms"] = json!(f50 - h50);
            // Open loop at the rate and at five times it, each with and without
            // micro-batching, one after the other in this run (the load generator shares the
            // node's cores: its threads are the connections).
            let _ = deploy_fresh(&unbatched, &m.name);
            let mut loads = Vec::new();
            for (r, conns) in [(rate, 8), (rate * 5.0, 32)] {
                for (batching, n) in [("on", &node), ("off", &unbatched), ("on, host path", &host)]
                {
                    let secs = budget.as_secs_f64().max(5.0);
                    let (sent, l50, l99, errors) = open_loop(n, &m.name, &body, r, secs, conns);
                    eprintln!(
                        "{:<14} open loop {r:>6.0} req/s over {conns} connections, batching {batching:<3}: achieved {sent:>7.0} req/s, p50 {l50:>7.3} ms, p99 {l99:>8.3} ms, errors {errors}",
                        m.name
                    );
                    loads.push(json!({"target_rps": r, "batching": batching, "achieved_rps": sent, "p50_ms": l50, "p99_ms": l99, "errors": errors, "connections": conns}));
                }
            }
            figures["open_loop"] = json!(loads);
        }
        println!("{figures}");
        eprintln!(
            "{:<14} native (same plan) p50 {:>8.3} | component infer p50 {:>8.3} ({:.2}x native, {:.2}x ort) | edge HTTP p50 {:>8.3} p99 {:>8.3} (component call {:>8.3}) | onnxruntime p50 {:>8.3} | deploy->first {:>7.0}",
            m.name,
            native_same,
            i50,
            i50 / native_same,
            i50 / ort50,
            h50,
            h99,
            lat.host_p50,
            ort50,
            deploy_ms
        );
        eprintln!(
            "{:<14} host path: component infer p50 {:>8.3} ({:.2}x native) | edge HTTP p50 {:>8.3} p99 {:>8.3} ({:.2}x the sandbox's p50) | host thread mean: run {:>8.3} wait {:>6.3}",
            m.name,
            on_host.infer_p50,
            on_host.infer_p50 / native_same,
            on_host.p50,
            on_host.p99,
            on_host.p50 / h50,
            host_run,
            host_wait
        );
    }
}

/// The host path's counters from a node's `/metrics`: (runs, seconds in tract, seconds
/// waiting for a thread).
fn host_counters(node: &Node) -> (f64, f64, f64) {
    let mut c = Conn::open(&node.addr);
    let text = String::from_utf8(c.send("GET", "/metrics", "text/plain", b"").body).unwrap();
    let read = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    (
        read("falaj_edge_host_runs_total "),
        read("falaj_edge_host_run_seconds_total "),
        read("falaj_edge_host_wait_seconds_total "),
    )
}

/// The fresh-instance node pulls the same store; wait until it serves `model`.
fn deploy_fresh(node: &Node, model: &str) -> f64 {
    let t0 = Instant::now();
    let mut c = Conn::open(&node.addr);
    loop {
        if c.send(
            "GET",
            &format!("/v1/models/{model}/health"),
            "text/plain",
            b"",
        )
        .status
            == 200
        {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(t0.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
}
