//! Determinism: two CPU runs with the same seed and data give the same weights, metrics and
//! ONNX bytes; a different seed gives different weights.

mod common;

use common::*;
use falaj_train::model::Activation;
use falaj_train::train::EpochMetrics;

/// The metrics that must repeat exactly (timings excluded).
fn learned(history: &[EpochMetrics]) -> Vec<(u64, u64, Option<u64>, Option<u64>)> {
    history
        .iter()
        .map(|m| {
            (
                m.train_loss.to_bits(),
                m.val_loss.to_bits(),
                m.val_accuracy.map(f64::to_bits),
                m.val_rmse.map(f64::to_bits),
            )
        })
        .collect()
}

#[test]
fn same_seed_same_weights_metrics_and_file() {
    for (file, target, task) in [DATASETS[1], DATASETS[2]] {
        let mut spec = small_spec(file, target, task, Activation::Gelu);
        spec.dropout = 0.2; // dropout masks must repeat too
        let a = train_fixture(&spec, file);
        let b = train_fixture(&spec, file);
        assert_eq!(
            a.weights_digest, b.weights_digest,
            "{file}: weights differ between two runs with one seed"
        );
        assert_eq!(
            learned(&a.history),
            learned(&b.history),
            "{file}: metrics differ between two runs with one seed"
        );
        assert_eq!(
            a.onnx, b.onnx,
            "{file}: ONNX bytes differ between two runs with one seed"
        );

        spec.seed += 1;
        let c = train_fixture(&spec, file);
        assert_ne!(
            a.weights_digest, c.weights_digest,
            "{file}: a different seed gave the same weights"
        );
    }
}
