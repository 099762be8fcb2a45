//! Training throughput of falaj-train on the CPU (burn Flex) against PyTorch on the CPU, in
//! one run, on the same MLP, data and batch size.
//!
//!     cargo bench -p falaj-train --bench train_throughput
//!
//! Each configuration trains on `breast_cancer.csv` (455 training rows, 30 features) for
//! `EPOCHS` epochs and reports the mean training samples/s over all epochs but the first.
//! The baseline is `scripts/bench_train_torch.py` (needs `pip install torch`); if it cannot
//! run, the bench says so and prints falaj-train's figures alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use falaj_core::manifest::Task;
use falaj_train::data::{DatasetBytes, sha256_digest};
use falaj_train::job::{self, JobSpec};

const EPOCHS: usize = 20;
const CONFIGS: [(&str, usize); 3] = [("64,32", 32), ("64,32", 128), ("256,256", 64)];

fn steady_rate(rates: &[f64]) -> f64 {
    let steady = if rates.len() > 1 { &rates[1..] } else { rates };
    steady.iter().sum::<f64>() / steady.len() as f64
}

fn torch_rate(
    root: &Path,
    data: &str,
    hidden: &str,
    batch: usize,
) -> Result<(f64, String), String> {
    let out = Command::new("python3")
        .arg(root.join("scripts/bench_train_torch.py"))
        .args(["--data", data, "--target", "diagnosis", "--hidden", hidden])
        .args([
            "--batch-size",
            &batch.to_string(),
            "--epochs",
            &EPOCHS.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((
        v["samples_per_second"].as_f64().unwrap_or(0.0),
        v["runtime"].as_str().unwrap_or("torch").to_string(),
    ))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = root.join("tests/fixtures/datasets/breast_cancer.csv");
    let bytes = std::fs::read(&data).expect("fixture");
    let ds = DatasetBytes {
        uri: data.display().to_string(),
        digest: sha256_digest(&bytes),
        bytes,
        region: None,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "falaj-train CPU (burn flex) vs PyTorch CPU: breast_cancer.csv, {EPOCHS} epochs, {threads} threads"
    );
    println!(
        "{:<10} {:>6} {:>16} {:>16} {:>8}",
        "hidden", "batch", "falaj samples/s", "torch samples/s", "ratio"
    );
    for (hidden, batch) in CONFIGS {
        let mut spec = JobSpec::new(ds.uri.clone(), "diagnosis", Task::Classification, "bench");
        spec.hidden = hidden
            .split(',')
            .map(|h| h.parse().expect("width"))
            .collect();
        spec.batch_size = batch;
        spec.epochs = EPOCHS;
        let run = job::train_dataset(
            &spec,
            &ds,
            "bench",
            &burn::tensor::Device::flex(),
            &mut |_| {},
        )
        .expect("training");
        let rates: Vec<f64> = run.history.iter().map(|m| m.samples_per_second).collect();
        let ours = steady_rate(&rates);
        match torch_rate(&root, &data.display().to_string(), hidden, batch) {
            Ok((theirs, runtime)) => {
                println!(
                    "{hidden:<10} {batch:>6} {ours:>16.0} {theirs:>16.0} {:>7.2}x   ({runtime})",
                    ours / theirs
                )
            }
            Err(e) => println!(
                "{hidden:<10} {batch:>6} {ours:>16.0} {:>16} {:>8}   (PyTorch baseline not run: {e})",
                "-", "-"
            ),
        }
    }
}
