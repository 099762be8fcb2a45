//! Times one image model at batch 1 with the tract the inference component uses, planned as
//! the component plans it (a concrete `[1, 3, 224, 224]` input). Built natively and as a
//! wasm32-wasip1 program, so `scripts/bench-wasm-ab.sh` can run the very same code natively
//! and under wasmtime with one sandbox setting changed at a time.
//!
//!     falaj-wasm-ab MODEL.onnx [RUNS]
//!
//! Prints one JSON line: load time, and the min and p50 of RUNS timed runs after one warm-up.

use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: falaj-wasm-ab MODEL.onnx [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = match args.next().map(|s| s.parse()) {
        None => 20,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("RUNS must be a positive integer");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let plan = tract_onnx::onnx()
        .model_for_path(&path)?
        .with_input_fact(0, f32::fact([1usize, 3, 224, 224]).into())?
        .into_optimized()?
        .into_runnable()?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let x: Tensor =
        tract_ndarray::Array4::<f32>::from_shape_fn((1, 3, 224, 224), |(_, c, h, w)| {
            ((c * 7 + h * 3 + w) % 17) as f32 / 17.0
        })
        .into();
    plan.run(tvec!(x.clone().into()))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        plan.run(tvec!(x.clone().into()))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"model\":\"{path}\",\"load_ms\":{load_ms:.1},\"runs\":{runs},\"min_ms\":{:.2},\"p50_ms\":{:.2}}}",
        times[0],
        times[runs / 2]
    );
    Ok(())
}
