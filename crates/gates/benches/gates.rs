//! Gate benchmarks, each printed beside its baseline from the same run.
//!
//! 1. Gate evaluation throughput (rows/s) on a 100k-row holdout: tract in falaj-gates vs
//!    onnxruntime (`scripts/bench_gates_ort.py`, run with `FALAJ_BENCH_PYTHON`, default
//!    `target/py/bin/python3`) on the same ONNX file, holdout and machine; both single-threaded,
//!    batches of 8192 rows, inference + accuracy/precision/recall/F1/ROC-AUC.
//! 2. Promotion latency (promote to production: role, state and approval checks, alias CAS,
//!    signed manifest write, audit) on `dir://`, p50/p99, vs one bare create-only put.
//!
//! Run: `cargo bench -p falaj --bench gates` (env: `FALAJ_BENCH_ROWS`, default 100000;
//! `FALAJ_BENCH_PROMOTIONS`, default 50).

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod fx;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use falaj::deploy::DeployKey;
use falaj::promotion::{self, Promotion};
use falaj::store::Precondition;
use falaj_core::StoreKey;
use falaj_core::promotion::Stage;
use falaj_gates::{self as gates, Holdout, LoadedModel, Validation};
use rand::{Rng, SeedableRng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    gates::metrics::percentile(v, q)
}

/// Resamples breast_cancer.csv to `rows` rows with seeded ±2% jitter on every feature.
fn write_holdout(path: &Path, rows: usize) {
    let (header, data) = fx::read_csv(&fx::dataset("breast_cancer.csv"));
    let ti = header.iter().position(|h| h == "diagnosis").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{}", header.join(",")).unwrap();
    for _ in 0..rows {
        let r = &data[rng.random_range(0..data.len())];
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i == ti {
                    v.clone()
                } else {
                    let x: f64 = v.parse().unwrap();
                    format!("{:.6}", x * (1.0 + rng.random_range(-0.02..0.02)))
                }
            })
            .collect();
        writeln!(f, "{}", line.join(",")).unwrap();
    }
}

fn throughput(dir: &Path) {
    let rows = env_u64("FALAJ_BENCH_ROWS", 100_000) as usize;
    let fitted = fx::breast_cancer();
    let mut manifest = fitted.manifest.clone();
    manifest.model = "bench".into();
    let model_path = dir.join("model.onnx");
    let manifest_path = dir.join("manifest.json");
    let holdout_path = dir.join("holdout.csv");
    std::fs::write(&model_path, &fitted.onnx).unwrap();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    write_holdout(&holdout_path, rows);

    let bytes = std::fs::read(&holdout_path).unwrap();
    let t = Instant::now();
    let data = gates::parse_holdout(&bytes, &manifest, None).unwrap();
    let parse_s = t.elapsed().as_secs_f64();
    let model = LoadedModel::load(&fitted.onnx, &data.item_shape, None).unwrap();
    let k = manifest.classes.len();
    let mut best = f64::MAX;
    let mut acc = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        let s = gates::score(&model, &data, &data.x, manifest.task, k, k - 1).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        acc = s.metrics[&falaj_core::policy::Metric::Accuracy];
    }
    let tract_rps = rows as f64 / best;
    println!(
        "\n## gate evaluation, {rows} rows x {} features, single thread",
        data.n_features
    );
    println!(
        "tract (falaj-gates) inference + metrics: {best:.4} s = {tract_rps:.0} rows/s (accuracy {acc:.4})"
    );
    println!(
        "tract end to end incl. CSV parse ({parse_s:.3} s): {:.0} rows/s",
        rows as f64 / (best + parse_s)
    );
    let python = std::env::var("FALAJ_BENCH_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/py/bin/python3")
            .display()
            .to_string()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_gates_ort.py");
    match std::process::Command::new(&python)
        .arg(&script)
        .arg(&model_path)
        .arg(&holdout_path)
        .arg(&manifest_path)
        .output()
    {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let ort_rps = v["rows_per_s"].as_f64().unwrap();
            println!(
                "{} inference + metrics: {:.4} s = {ort_rps:.0} rows/s (accuracy {:.4}); its CSV parse {:.3} s",
                v["engine"].as_str().unwrap_or("onnxruntime"),
                v["seconds"].as_f64().unwrap(),
                v["accuracy"].as_f64().unwrap(),
                v["parse_seconds"].as_f64().unwrap()
            );
            println!(
                "ratio tract / onnxruntime: {:.2}x (goal >= 0.7x)",
                tract_rps / ort_rps
            );
        }
        Ok(o) => println!(
            "onnxruntime baseline failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("onnxruntime baseline not run ({python}: {e})"),
    }
}

async fn promotion_latency() {
    let n = env_u64("FALAJ_BENCH_PROMOTIONS", 50) as usize;
    let e = fx::env().await;
    fx::create(&e.reg, "bench").await;
    // Only the attached policy's reports count (an own `--policy` run is advisory).
    fx::attach_policy(&e.reg, "bench", "[metrics]\naccuracy = { min = 0.5 }\n").await;
    let f = fx::breast_cancer();
    let key = DeployKey::from_seed([3; 32]);
    let mut times = Vec::new();
    let mut put_times = Vec::new();
    for i in 0..n {
        let v = fx::register(&e.reg, "bench", &f, "sam").await;
        gates::validate(
            &e.reg,
            Validation {
                model: "bench".into(),
                version: v,
                holdout: Holdout::Path(fx::dataset("breast_cancer.csv")),
                policy: None,
                actor: "sam".into(),
            },
        )
        .await
        .unwrap();
        for who in ["ann", "bob"] {
            promotion::approve(&e.reg, "bench", v, Stage::Production, "", who)
                .await
                .unwrap();
        }
        let t = Instant::now();
        promotion::promote(
            &e.reg,
            &key,
            Promotion {
                model: "bench".into(),
                version: v,
                to: Stage::Production,
                canary: None,
                blue_green: false,
                runtime: falaj_core::deployment::Runtime::Sandbox,
                expect: falaj::Expect::Any,
                actor: "mel".into(),
            },
        )
        .await
        .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        e.reg
            .store()
            .put(
                &StoreKey::new(format!("bench/put-{i}")).unwrap(),
                Bytes::from_static(b"{}"),
                Precondition::IfAbsent,
            )
            .await
            .unwrap();
        put_times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!("\n## promotion to production on dir://, {n} promotions");
    println!(
        "promote: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 0.99)
    );
    println!(
        "baseline, one create-only put: p50 {:.3} ms, p99 {:.3} ms",
        pct(&mut put_times.clone(), 0.5),
        pct(&mut put_times, 0.99)
    );
}

fn main() {
    let dir = tempfile::tempdir_in(
        std::env::var("FALAJ_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()),
    )
    .unwrap();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    throughput(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(promotion_latency());
}
