//! The inference component under `wasmtime serve` (wasmtime-cli 48), side by side with the
//! same model in native tract and the component's own API code run natively.
//!
//! `cargo bench --profile dev --workspace --bench wasmtime_serve` (needs `wasmtime` 48 and the
//! component, like `tests/wasmtime_serve.rs`; `tests/wasm/run.sh` installs and builds both).
//! `FALAJ_BENCH_REQUESTS=N` (≤ 120) one-row requests per mode.
//!
//! Prints, per model size: time to first response with wasmtime's code cache cold and warm;
//! one-row latency with instance reuse (the WASI 0.3 default) and with a fresh instance per
//! request (what a WASI 0.2 component gets; forced with `--max-instance-reuse-count 1`);
//! native tract and the component's API code natively, as the baselines for the ratios.

#[path = "../tests/component_support/mod.rs"]
mod component_support;

use std::time::Instant;

use component_support::*;
use falaj_core::manifest::Task;
use serde_json::json;

const CLASSES: usize = 3;

fn main() {
    let samples: usize = std::env::var("FALAJ_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
        .min(120);
    for (label, n, hidden) in [("mlp 6-16-3", 6, 16), ("mlp 30-1024-3", 30, 1024)] {
        let dir = TempDir::new("bench");
        let (onnx, _, _) = mlp_classifier(n, hidden, CLASSES, 1);
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        write_model_dir(
            &dir.0,
            "bench",
            &onnx,
            Task::Classification,
            &feature_names(n),
            &classes,
            None,
            Some(1),
        );
        let x = Lcg(3).vec(samples * n, 8.0);
        let body = |r: usize| json!({ "inputs": [&x[r * n..(r + 1) * n]] });

        // Native: plain tract, and the component's own API code compiled for the host.
        let native = NativeTract::load(&dir.0.join("model.onnx"), n);
        let local = falaj_inference::api::Instance::load(&dir.0);
        let mut tract_ms = Vec::new();
        let mut api_ms = Vec::new();
        for i in 0..(samples * 5) {
            let r = i % samples;
            let t = Instant::now();
            std::hint::black_box(native.run(&x[r * n..(r + 1) * n], 1));
            tract_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let b = serde_json::to_vec(&body(r)).unwrap();
            let t = Instant::now();
            let reply = local.handle("POST", "/predict", Some("application/json"), &b);
            api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(reply.status, 200);
        }

        let mut reuse = (f64::NAN, f64::NAN);
        for (mode, extra) in [
            (
                "cold cache",
                vec!["-C", "cache=n", "--idle-instance-timeout", "120s"],
            ),
            (
                "reuse (p3 default)",
                vec!["--idle-instance-timeout", "120s"],
            ),
            (
                "fresh instance per request",
                vec!["--max-instance-reuse-count", "1"],
            ),
        ] {
            let server = Server::start(&dir.0, &extra);
            let mut http_ms = Vec::new();
            let mut infer_ms = Vec::new();
            let mut ids = std::collections::BTreeSet::new();
            let count = if mode == "cold cache" { 3 } else { samples };
            for r in 0..count {
                let t = Instant::now();
                let resp = post_json(server.port, &body(r));
                http_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(resp.status, 200);
                infer_ms.push(resp.infer_ms());
                ids.insert(resp.instance().0);
            }
            let load_ms = get(server.port, "/metadata").json()["instance"]["load_ms"]
                .as_f64()
                .unwrap();
            if mode.starts_with("reuse") {
                reuse = (
                    percentile(infer_ms.clone(), 0.5),
                    percentile(http_ms.clone(), 0.5),
                );
            }
            eprintln!(
                "[bench {label}] {mode}: first response {:.0} ms | {count} one-row POSTs: \
                 HTTP p50 {:.3} ms p99 {:.3} ms, tract in component p50 {:.4} ms | instances \
                 {} | model load in instance {load_ms:.1} ms",
                server.first_response.as_secs_f64() * 1000.0,
                percentile(http_ms.clone(), 0.5),
                percentile(http_ms, 0.99),
                percentile(infer_ms, 0.5),
                ids.len(),
            );
        }
        let (tract_p50, api_p50) = (percentile(tract_ms, 0.5), percentile(api_ms, 0.5));
        eprintln!(
            "[bench {label}] native tract p50 {tract_p50:.4} ms | component API natively (JSON \
             in/out) p50 {api_p50:.4} ms | tract in component / native tract {:.2}x | HTTP \
             round trip / component API natively {:.1}x",
            reuse.0 / tract_p50,
            reuse.1 / api_p50,
        );
    }
}
