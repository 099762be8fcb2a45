//! The training loop: mini-batch Adam on the autodiff device, per-epoch validation metrics.
//!
//! The same code runs on every backend; only the [`Device`] differs. Batches are shuffled
//! and dropout masks drawn from seeded ChaCha streams, so a CPU run is a pure function of its
//! data, configuration and seed.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use falaj_core::manifest::Task;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::TrainingError;
use crate::model::{Mlp, MlpSpec};

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Rows per optimiser step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of every random choice (initial weights, batch order, dropout masks).
    pub seed: u64,
}

/// The training and validation splits, already standardised, in f32.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Task.
    pub task: Task,
    /// Input width.
    pub features: usize,
    /// Output width (classes, or 1).
    pub outputs: usize,
    /// Row-major standardised training features.
    pub train_x: Vec<f32>,
    /// Training targets: class index, or standardised value.
    pub train_y: Vec<f32>,
    /// Row-major standardised validation features.
    pub val_x: Vec<f32>,
    /// Validation targets in the same coding as `train_y`.
    pub val_y: Vec<f32>,
    /// Regression: `(std, mean)` that map standardised targets back to original units.
    pub target_scale: Option<(f32, f32)>,
}

impl PreparedData {
    /// Training rows.
    pub fn train_rows(&self) -> usize {
        self.train_y.len()
    }
    /// Validation rows.
    pub fn val_rows(&self) -> usize {
        self.val_y.len()
    }
}

/// What one epoch measured. Validation metrics are in the target's original units.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch (cross-entropy, or MSE on the standardised target).
    pub train_loss: f64,
    /// Validation loss, same definition.
    pub val_loss: f64,
    /// Validation accuracy (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Validation root mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_rmse: Option<f64>,
    /// Validation mean absolute error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_mae: Option<f64>,
    /// Validation coefficient of determination (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_r2: Option<f64>,
    /// Wall-clock seconds spent on the epoch's training steps.
    pub train_seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
}

/// The result of training.
#[derive(Debug)]
pub struct Trained {
    /// The network (on the autodiff device).
    pub model: Mlp,
    /// One entry per epoch.
    pub history: Vec<EpochMetrics>,
}

fn tensor2(data: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

/// Stream numbers carved out of one seed, so each random use has its own sequence.
pub(crate) mod streams {
    /// Initial weights.
    pub const INIT: u64 = 1;
    /// Batch order.
    pub const SHUFFLE: u64 = 2;
    /// Dropout masks.
    pub const DROPOUT: u64 = 3;
    /// Train/validation split.
    pub const SPLIT: u64 = 4;
}

/// A ChaCha stream for `seed` and one of [`streams`].
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Trains a fresh network on `data`; `on_epoch` sees each epoch's metrics as they come.
pub fn train(
    spec: &MlpSpec,
    cfg: &TrainConfig,
    data: &PreparedData,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<Trained, TrainingError> {
    let ad = device.clone().autodiff();
    let mut model = Mlp::init(spec, &mut rng_for(cfg.seed, streams::INIT), &ad);
    let mut optimizer = AdamConfig::new().with_epsilon(1e-8).init();
    let mut shuffle = rng_for(cfg.seed, streams::SHUFFLE);
    let mut dropout = rng_for(cfg.seed, streams::DROPOUT);
    let n = data.features;
    let rows = data.train_rows();
    let mut order: Vec<usize> = (0..rows).collect();
    let mut history = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let started = Instant::now();
        order.shuffle(&mut shuffle);
        let mut batch_losses: Vec<Tensor<1>> = Vec::with_capacity(rows.div_ceil(cfg.batch_size));
        for batch in order.chunks(cfg.batch_size) {
            let b = batch.len();
            let mut xb = Vec::with_capacity(b * n);
            for &r in batch {
                xb.extend_from_slice(&data.train_x[r * n..(r + 1) * n]);
            }
            let x = tensor2(xb, b, n, &ad);
            let out = model.forward(x, spec.activation, Some((spec.dropout, &mut dropout)));
            let loss = match data.task {
                Task::Classification => {
                    let mut onehot = vec![0f32; b * data.outputs];
                    for (i, &r) in batch.iter().enumerate() {
                        onehot[i * data.outputs + data.train_y[r] as usize] = 1.0;
                    }
                    let target = tensor2(onehot, b, data.outputs, &ad);
                    (log_softmax(out, 1) * target).sum_dim(1).mean().neg()
                }
                Task::Regression => {
                    let y: Vec<f32> = batch.iter().map(|&r| data.train_y[r]).collect();
                    (out - tensor2(y, b, 1, &ad)).square().mean()
                }
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(cfg.learning_rate, model, grads);
            batch_losses.push(loss.detach().inner().mul_scalar(b as f32));
        }
        let loss_sum: f32 = Tensor::cat(batch_losses, 0).sum().into_scalar();
        let train_seconds = started.elapsed().as_secs_f64();
        let train_loss = f64::from(loss_sum) / rows as f64;
        if !train_loss.is_finite() {
            return Err(TrainingError::Diverged {
                epoch,
                loss: train_loss,
            });
        }
        let mut metrics = evaluate(&model, spec, data, device);
        metrics.epoch = epoch;
        metrics.train_loss = train_loss;
        metrics.train_seconds = train_seconds;
        metrics.samples_per_second = rows as f64 / train_seconds.max(1e-9);
        on_epoch(&metrics);
        history.push(metrics);
    }
    Ok(Trained { model, history })
}

/// Validation metrics of `model` (epoch and timing fields left at zero).
pub fn evaluate(model: &Mlp, spec: &MlpSpec, data: &PreparedData, device: &Device) -> EpochMetrics {
    let plain = device.clone().inner();
    let m = model.valid().to_device(&plain);
    let rows = data.val_rows();
    let out = m.forward(
        tensor2(data.val_x.clone(), rows, data.features, &plain),
        spec.activation,
        None,
    );
    let mut metrics = EpochMetrics {
        epoch: 0,
        train_loss: 0.0,
        val_loss: 0.0,
        val_accuracy: None,
        val_rmse: None,
        val_mae: None,
        val_r2: None,
        train_seconds: 0.0,
        samples_per_second: 0.0,
    };
    match data.task {
        Task::Classification => {
            let p = softmax(out, 1)
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 outputs");
            let k = data.outputs;
            let mut nll = 0.0;
            let mut correct = 0usize;
            for (i, &y) in data.val_y.iter().enumerate() {
                let row = &p[i * k..(i + 1) * k];
                nll -= f64::from(row[y as usize]).max(1e-12).ln();
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(j, _)| j);
                correct += usize::from(best == y as usize);
            }
            metrics.val_loss = nll / rows as f64;
            metrics.val_accuracy = Some(correct as f64 / rows as f64);
        }
        Task::Regression => {
            let z = out.into_data().try_into_vec::<f32>().expect("f32 outputs");
            let (std, mean) = data.target_scale.unwrap_or((1.0, 0.0));
            let mut se_std = 0.0;
            let mut se = 0.0;
            let mut ae = 0.0;
            let truth: Vec<f64> = data
                .val_y
                .iter()
                .map(|&y| f64::from(y * std + mean))
                .collect();
            for (i, &y) in data.val_y.iter().enumerate() {
                se_std += f64::from(z[i] - y).powi(2);
                let pred = f64::from(z[i] * std + mean);
                se += (pred - truth[i]).powi(2);
                ae += (pred - truth[i]).abs();
            }
            let avg = truth.iter().sum::<f64>() / rows as f64;
            let ss_tot: f64 = truth.iter().map(|t| (t - avg).powi(2)).sum();
            metrics.val_loss = se_std / rows as f64;
            metrics.val_rmse = Some((se / rows as f64).sqrt());
            metrics.val_mae = Some(ae / rows as f64);
            metrics.val_r2 = Some(if ss_tot > 0.0 { 1.0 - se / ss_tot } else { 0.0 });
        }
    }
    metrics
}
