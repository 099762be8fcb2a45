//! Function benchmarks, printed: per function, the stripped binary size, the cold start (exec
//! to the first event handled, against the runtime-API emulator on loopback), and handler
//! p50/p99 over warm invocations on `dir://`. Baseline in the same run: `true`'s exec time
//! (what a process start costs on this machine) and an emulator round trip with an echo of
//! the event (the protocol's own cost), so the function's share can be read off.
//!
//! Run: `cargo bench -p falaj-lambda-emulator --bench functions` (release binaries are built
//! by cargo for this bench's profile; `FALAJ_BENCH_INVOCATIONS`, default 200;
//! `FALAJ_BENCH_COLD`, default 10; `FALAJ_BENCH_FUNCTIONS_DIR` measures other binaries, e.g.
//! the packaged ones in `target/x86_64-unknown-linux-musl/lambda`).

#[path = "../../../crates/falaj/tests/gates_fixtures/mod.rs"]
mod fx;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use falaj::store::Precondition;
use falaj_core::StoreKey;
use falaj_lambda_emulator::{Emulator, Outcome};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The function binary: from `FALAJ_BENCH_FUNCTIONS_DIR` when set (e.g. the shipped ones,
/// `target/x86_64-unknown-linux-musl/lambda` after `scripts/package-functions.sh`), else
/// the ones cargo built next to this bench.
fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FALAJ_BENCH_FUNCTIONS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().to_path_buf()
        }
    };
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace --bins` or scripts/package-functions.sh",
        bin.display()
    );
    bin
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn stripped_size(bin: &Path) -> u64 {
    let out = std::env::temp_dir().join(format!("falaj-bench-{}", std::process::id()));
    let ok = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    let size = if ok {
        std::fs::metadata(&out).map_or(0, |m| m.len())
    } else {
        std::fs::metadata(bin).map_or(0, |m| m.len())
    };
    let _ = std::fs::remove_file(&out);
    size
}

fn eventbridge(key: &str) -> Value {
    json!({"version": "0", "id": "bench", "detail-type": "Object Created", "source": "aws.s3", "account": "111122223333",
           "time": "2026-11-23T10:00:00Z", "region": "me-central-1", "resources": [],
           "detail": {"bucket": {"name": "bench"}, "object": {"key": key, "etag": "e1", "sequencer": "01"}}})
}

struct Case {
    name: &'static str,
    env: Vec<(String, String)>,
    /// The event of the i-th warm invocation.
    event: Box<dyn Fn(usize) -> Value>,
}

async fn measure(case: &Case, cold_runs: usize, warm: usize) {
    let bin = binary(case.name);
    let env: Vec<(&str, &str)> = case
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut cold = Vec::new();
    for i in 0..cold_runs {
        let emu = Emulator::start().await.unwrap();
        let id = emu.push(&(case.event)(i));
        let t = Instant::now();
        let mut child = emu.spawn(&bin, &env).unwrap();
        let inv = emu
            .wait(&id, Duration::from_secs(60))
            .await
            .expect("answered");
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Outcome::Error { body, .. } = &inv.outcome {
            panic!("{}: {body}", case.name);
        }
        child.kill().await.unwrap();
    }
    let emu = Emulator::start().await.unwrap();
    let mut child = emu.spawn(&bin, &env).unwrap();
    let mut times = Vec::new();
    for i in 0..warm {
        let inv = emu
            .invoke(&(case.event)(cold_runs + i), Duration::from_secs(60))
            .await
            .expect("answered");
        times.push((inv.answered_at - inv.fetched_at).as_secs_f64() * 1000.0);
    }
    child.kill().await.unwrap();
    println!(
        "{:<20} {:>7.1} MB  cold start p50 {:>6.1} ms (min {:>5.1})  handler p50 {:>7.3} ms  p99 {:>7.3} ms",
        case.name,
        stripped_size(&bin) as f64 / 1e6,
        pct(&mut cold.clone(), 0.5),
        pct(&mut cold, 0.0),
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let cold_runs = env_usize("FALAJ_BENCH_COLD", 10);
    let warm = env_usize("FALAJ_BENCH_INVOCATIONS", 200);
    println!(
        "machine: {} cores; {cold_runs} cold starts, {warm} warm invocations per function",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Baselines: a bare process start, and the emulator's own round trip.
    let mut exec = Vec::new();
    for _ in 0..cold_runs.max(5) {
        let t = Instant::now();
        std::process::Command::new("true").status().unwrap();
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!("baseline: exec of `true` p50 {:.2} ms", pct(&mut exec, 0.5));

    let e = fx::env().await;
    fx::create(&e.reg, "bc").await;
    let fitted = fx::breast_cancer();
    let policy = std::fs::read_to_string(fx::policy_fixture("breast_cancer.toml")).unwrap()
        + "\n[holdout]\nkey = \"datasets/bc/holdout.csv\"\n";
    falaj::promotion::set_policy(&e.reg, "bc", "gates.toml", &policy, "mel")
        .await
        .unwrap();
    let put = |k: String, b: Vec<u8>| {
        let reg = &e.reg;
        async move {
            reg.store()
                .put(
                    &StoreKey::new(k).unwrap(),
                    Bytes::from(b),
                    Precondition::None,
                )
                .await
                .unwrap()
        }
    };
    put(
        "datasets/bc/holdout.csv".into(),
        std::fs::read(fx::dataset("breast_cancer.csv")).unwrap(),
    )
    .await;
    let n = cold_runs + warm;
    let mut manifest = fitted.manifest.clone();
    manifest.model = "bc".into();
    for i in 0..n {
        put(
            format!("incoming/bc/run{i}/model.onnx"),
            fitted.onnx.clone(),
        )
        .await;
        put(
            format!("incoming/bc/run{i}/manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await;
    }
    let store = format!("dir://{}", e.dir.path().join("store").display());
    let base = vec![
        ("FALAJ_STORE".to_string(), store.clone()),
        ("FALAJ_LOG".to_string(), "warn".to_string()),
    ];

    println!(
        "\nfunction              stripped  cold start (exec → first event answered)        handler (event fetched → answer posted)"
    );
    // ingest: each invocation registers a new upload (a new version).
    measure(
        &Case {
            name: "falaj-fn-ingest",
            env: base.clone(),
            event: Box::new(|i| eventbridge(&format!("incoming/bc/run{i}/manifest.json"))),
        },
        cold_runs,
        warm,
    )
    .await;
    // validate: each invocation runs every gate of the policy on a 569-row holdout.
    let gated = 20.min(n);
    measure(
        &Case {
            name: "falaj-fn-validate",
            env: base.clone(),
            event: Box::new(move |i| {
                eventbridge(&format!("models/bc/versions/{}.json", i % gated + 1))
            }),
        },
        cold_runs.min(5),
        gated.saturating_sub(cold_runs.min(5)),
    )
    .await;
    // promote: approvals by alternating approvers (idempotent after the first).
    let key = e.dir.path().join("signing.key");
    std::fs::write(&key, "09".repeat(32)).unwrap();
    let mut penv = base.clone();
    penv.push(("FALAJ_SIGNING_KEY".into(), key.display().to_string()));
    measure(&Case { name: "falaj-fn-promote", env: penv, event: Box::new(|i| json!({"op": "approve", "model": "bc", "version": i % 20 + 1, "actor": if i % 2 == 0 { "ann" } else { "bob" }, "to": "production"})) }, cold_runs, warm).await;
    // webhook: an authenticated GET of a version.
    let cfg = e.dir.path().join("webhook.json");
    std::fs::write(&cfg, json!({"tokens": [{"identity": "sam", "sha256": falaj_webhook::token_digest("sam-token-0123456789")}]}).to_string()).unwrap();
    let mut wenv = base.clone();
    wenv.extend([
        ("FALAJ_WEBHOOK_CONFIG".into(), cfg.display().to_string()),
        ("FALAJ_PROMOTE_FUNCTION".into(), "unused".into()),
        ("FALAJ_VALIDATE_FUNCTION".into(), "unused".into()),
        ("AWS_ACCESS_KEY_ID".into(), "x".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "x".into()),
    ]);
    measure(&Case { name: "falaj-fn-webhook", env: wenv, event: Box::new(|i| json!({
        "version": "2.0", "routeKey": "$default", "rawPath": format!("/v1/models/bc/versions/{}", i % 20 + 1), "rawQueryString": "",
        "headers": {"authorization": "Bearer sam-token-0123456789"},
        "requestContext": {"accountId": "1", "apiId": "a", "domainName": "a.execute-api.me-central-1.amazonaws.com", "domainPrefix": "a",
            "http": {"method": "GET", "path": format!("/v1/models/bc/versions/{}", i % 20 + 1), "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "b"},
            "requestId": format!("r{i}"), "routeKey": "$default", "stage": "$default", "time": "23/Nov/2026:10:00:00 +0000", "timeEpoch": 0},
        "isBase64Encoded": false})) }, cold_runs, warm).await;
}
