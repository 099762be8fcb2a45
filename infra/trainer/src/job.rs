//! A training job from start to finish: read and check the dataset, split it, standardise,
//! train, export to ONNX, write `--out`, then upload to `incoming/<model>/<run-id>/`.
//!
//! Ordering is what keeps failures clean: every input is checked and the destination store
//! is opened (residency check included) *before* training, all files are built in memory and
//! written locally before the first upload, and `manifest.json` is uploaded last with a
//! create-only put, because the ingest function triggers on it. A failed job therefore never
//! leaves a manifest behind, and a bad dataset leaves nothing at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use falaj_core::manifest::{Standardization, Task, TrainingManifest};
use falaj_core::version::{DatasetRef, Lineage};
use falaj_core::{AllowedRegions, StoreKey};
use falaj_store::{self as store, OpenOptions, Precondition};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::backend::BackendKind;
use crate::data::{self, Columns, FeatureStats};
use crate::error::{ConfigError, JobError};
use crate::export::{self, ExportRequest};
use crate::model::{Activation, MlpSpec, Pipeline, Predictor, weights_digest};
use crate::train::{self, EpochMetrics, PreparedData, TrainConfig};

/// Everything a job needs; `falaj-train`'s flags map one to one onto these fields.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Dataset: path, `dir://STORE/KEY` or `s3://BUCKET/KEY`.
    pub data: String,
    /// Target column.
    pub target: String,
    /// Feature columns in order; `None`: all other columns.
    pub features: Option<Vec<String>>,
    /// Task.
    pub task: Task,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Dropout probability after each hidden layer.
    pub dropout: f64,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Share of rows held out for validation.
    pub val_fraction: f64,
    /// Seed.
    pub seed: u64,
    /// Backend.
    pub backend: BackendKind,
    /// Model name (`incoming/<model>/…`).
    pub model: String,
    /// Run id; `None`: `<UTC time>-s<seed>`.
    pub run_id: Option<String>,
    /// Local output directory.
    pub out_dir: PathBuf,
    /// Store to upload to; `None`: write locally only.
    pub store: Option<String>,
    /// Regions data may live in (dataset and store).
    pub allowed: AllowedRegions,
    /// S3 endpoint override.
    pub endpoint: Option<String>,
    /// Commit of the training code, recorded in the lineage.
    pub code_commit: Option<String>,
    /// Image or binary that runs the job, recorded in the lineage.
    pub trainer_image: Option<String>,
    /// ONNX opset to write.
    pub opset: i64,
    /// The version this run retrains (recorded as the lineage's parent).
    pub parent_version: Option<u64>,
}

impl JobSpec {
    /// A spec with the trainer's defaults for everything but the required inputs.
    pub fn new(
        data: impl Into<String>,
        target: impl Into<String>,
        task: Task,
        model: impl Into<String>,
    ) -> Self {
        Self {
            data: data.into(),
            target: target.into(),
            features: None,
            task,
            hidden: vec![64, 32],
            activation: Activation::Relu,
            dropout: 0.0,
            epochs: 50,
            batch_size: 32,
            learning_rate: 1e-3,
            val_fraction: 0.2,
            seed: 42,
            backend: BackendKind::Cpu,
            model: model.into(),
            run_id: None,
            out_dir: PathBuf::from("falaj-train-out"),
            store: None,
            allowed: AllowedRegions::default(),
            endpoint: None,
            code_commit: None,
            trainer_image: None,
            opset: export::DEFAULT_OPSET,
            parent_version: None,
        }
    }

    fn check(&self) -> Result<(), JobError> {
        let range = |name, value: String, expected| {
            Err(ConfigError::OutOfRange {
                name,
                value,
                expected,
            })
        };
        if self.epochs == 0 {
            return range("--epochs", self.epochs.to_string(), "at least 1")?;
        }
        if self.batch_size == 0 {
            return range("--batch-size", self.batch_size.to_string(), "at least 1")?;
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return range(
                "--learning-rate",
                self.learning_rate.to_string(),
                "a positive number such as 0.001",
            )?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return range(
                "--dropout",
                self.dropout.to_string(),
                "a probability in [0, 1)",
            )?;
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return range(
                "--val-fraction",
                self.val_fraction.to_string(),
                "a fraction strictly between 0 and 1, e.g. 0.2",
            )?;
        }
        if self.hidden.contains(&0) {
            return range(
                "--hidden",
                format!("{:?}", self.hidden),
                "positive layer widths, e.g. 64,32",
            )?;
        }
        if !(export::MIN_OPSET..=export::MAX_OPSET).contains(&self.opset) {
            return range("--opset", self.opset.to_string(), "13 to 21")?;
        }
        falaj_core::names::validate_model_name(&self.model).map_err(|e| JobError::InvalidName {
            what: "model name",
            value: self.model.clone(),
            reason: format!("{} ({})", e.reason, e.rule),
        })?;
        if let Some(run) = &self.run_id {
            check_run_id(run)?;
        }
        Ok(())
    }
}

fn check_run_id(run: &str) -> Result<(), JobError> {
    falaj_core::names::validate_model_name(run).map_err(|e| JobError::InvalidName {
        what: "run id",
        value: run.into(),
        reason: format!("{} ({})", e.reason, e.rule),
    })
}

/// What a finished job produced.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Run id used.
    pub run_id: String,
    /// The manifest written.
    pub manifest: TrainingManifest,
    /// Local files written, in write order.
    pub files: Vec<PathBuf>,
    /// Store keys uploaded, in upload order (manifest last).
    pub uploaded: Vec<String>,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetrics>,
    /// `sha256:` of the trained weights.
    pub weights_digest: String,
    /// `sha256:` of `model.onnx`.
    pub onnx_digest: String,
}

/// The files of a run, in upload order: the manifest must stay last.
pub const FILES: [&str; 4] = [
    "model.onnx",
    "metrics.json",
    "training_curve.png",
    "manifest.json",
];

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn default_run_id(seed: u64) -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}z-s{seed}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Prepared data plus what the manifest records about it.
struct Prepared {
    data: PreparedData,
    pipeline: Pipeline,
    table: data::Table,
    stats: Vec<FeatureStats>,
    target_stats: Option<(f64, f64)>,
    split_sizes: (usize, usize),
}

fn prepare(spec: &JobSpec, source: &str, bytes: &[u8]) -> Result<Prepared, JobError> {
    let cols = Columns {
        target: &spec.target,
        features: spec.features.as_deref(),
        task: spec.task,
    };
    let table = data::parse_csv(source, bytes, &cols)?;
    let split = data::split(
        source,
        table.rows,
        spec.val_fraction,
        &mut train::rng_for(spec.seed, train::streams::SPLIT),
    )?;
    let stats = data::feature_stats(&table, &split.train);
    let mean: Vec<f32> = stats.iter().map(|s| s.mean as f32).collect();
    let scale: Vec<f32> = stats
        .iter()
        .map(|s| data::safe_scale(s.std) as f32)
        .collect();
    let n = table.features.len();
    let standardize = |rows: &[usize]| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * n);
        for &r in rows {
            for j in 0..n {
                out.push((table.x[r * n + j] as f32 - mean[j]) / scale[j]);
            }
        }
        out
    };
    let (target_scale, target_stats) = match spec.task {
        Task::Classification => (None, None),
        Task::Regression => {
            let ys: Vec<f64> = split.train.iter().map(|&r| table.y[r]).collect();
            let m = ys.iter().sum::<f64>() / ys.len() as f64;
            let s = (ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / ys.len() as f64).sqrt();
            (Some((data::safe_scale(s) as f32, m as f32)), Some((m, s)))
        }
    };
    let code_y = |rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .map(|&r| match target_scale {
                Some((s, m)) => (table.y[r] as f32 - m) / s,
                None => table.y[r] as f32,
            })
            .collect()
    };
    let outputs = match spec.task {
        Task::Classification => table.classes.len(),
        Task::Regression => 1,
    };
    let data = PreparedData {
        task: spec.task,
        features: n,
        outputs,
        train_x: standardize(&split.train),
        train_y: code_y(&split.train),
        val_x: standardize(&split.validation),
        val_y: code_y(&split.validation),
        target_scale,
    };
    let pipeline = Pipeline {
        task: spec.task,
        mean,
        scale,
        target_scale,
    };
    Ok(Prepared {
        data,
        pipeline,
        table,
        stats,
        target_stats,
        split_sizes: (split.train.len(), split.validation.len()),
    })
}

fn final_metrics(task: Task, last: &EpochMetrics) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("train_loss".into(), last.train_loss);
    m.insert("val_loss".into(), last.val_loss);
    match task {
        Task::Classification => {
            m.insert("accuracy".into(), last.val_accuracy.unwrap_or(0.0));
        }
        Task::Regression => {
            m.insert("rmse".into(), last.val_rmse.unwrap_or(0.0));
            m.insert("mae".into(), last.val_mae.unwrap_or(0.0));
            m.insert("r2".into(), last.val_r2.unwrap_or(0.0));
        }
    }
    m.insert("train_samples_per_second".into(), last.samples_per_second);
    m
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, JobError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| JobError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// A trained network with everything needed to export, predict and describe it.
#[derive(Debug)]
pub struct TrainedRun {
    /// Network shape.
    pub mlp: MlpSpec,
    /// Trained network (autodiff device).
    pub model: crate::model::Mlp,
    /// Preprocessing and output head.
    pub pipeline: Pipeline,
    /// Encoded `model.onnx`.
    pub onnx: Vec<u8>,
    /// Feature names in input order.
    pub features: Vec<String>,
    /// Class labels in output order.
    pub classes: Vec<String>,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetrics>,
    /// `sha256:` of the weights.
    pub weights_digest: String,
    /// Per-feature statistics of the training split.
    pub stats: Vec<FeatureStats>,
    /// Regression: `(mean, std)` of the training target.
    pub target_stats: Option<(f64, f64)>,
    /// `(training rows, validation rows)`.
    pub split_sizes: (usize, usize),
}

impl TrainedRun {
    /// The burn inference pipeline the ONNX graph mirrors, on the CPU.
    pub fn predictor(&self) -> Predictor {
        Predictor::new(
            &self.model,
            self.mlp.activation,
            self.pipeline.clone(),
            &burn::tensor::Device::flex(),
        )
    }
}

/// Parses `dataset`, trains on it and exports the result, in memory: the part of [`run`]
/// without I/O, which tests call directly.
pub fn train_dataset(
    spec: &JobSpec,
    dataset: &data::DatasetBytes,
    run_id: &str,
    device: &burn::tensor::Device,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<TrainedRun, JobError> {
    spec.check()?;
    let prepared = prepare(spec, &dataset.uri, &dataset.bytes)?;
    let mlp = MlpSpec {
        inputs: prepared.data.features,
        hidden: spec.hidden.clone(),
        outputs: prepared.data.outputs,
        activation: spec.activation,
        dropout: spec.dropout,
    };
    let cfg = TrainConfig {
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        learning_rate: spec.learning_rate,
        seed: spec.seed,
    };
    tracing::info!(
        train_rows = prepared.split_sizes.0,
        val_rows = prepared.split_sizes.1,
        features = mlp.inputs,
        outputs = mlp.outputs,
        backend = spec.backend.name(),
        "training"
    );
    let trained = train::train(&mlp, &cfg, &prepared.data, device, on_epoch)?;
    let weights = trained.model.weights();
    let digest = weights_digest(&weights);

    let features = prepared.table.features.clone();
    let classes = prepared.table.classes.clone();
    let onnx = export::export(&ExportRequest {
        inputs: mlp.inputs,
        layers: prepared.pipeline.layers(&mlp, &weights),
        opset: spec.opset,
        graph_name: spec.model.clone(),
        input_doc: format!("raw features, in this order: {}", features.join(", ")),
        output_doc: match spec.task {
            Task::Classification => {
                format!("class probabilities, in this order: {}", classes.join(", "))
            }
            Task::Regression => format!("predicted {}", spec.target),
        },
        metadata: vec![
            (
                "falaj.task".into(),
                format!("{:?}", spec.task).to_lowercase(),
            ),
            (
                "falaj.features".into(),
                serde_json::to_string(&features).unwrap_or_default(),
            ),
            (
                "falaj.classes".into(),
                serde_json::to_string(&classes).unwrap_or_default(),
            ),
            ("falaj.run_id".into(), run_id.to_string()),
        ],
    })?;
    Ok(TrainedRun {
        mlp,
        pipeline: prepared.pipeline,
        onnx,
        features,
        classes,
        history: trained.history,
        weights_digest: digest,
        model: trained.model,
        stats: prepared.stats,
        target_stats: prepared.target_stats,
        split_sizes: prepared.split_sizes,
    })
}

/// Runs a job. `on_epoch` is called after every epoch (progress display).
pub async fn run(
    spec: &JobSpec,
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> Result<JobOutcome, JobError> {
    let started_at = now();
    spec.check()?;
    let device = spec.backend.device()?;
    let run_id = spec
        .run_id
        .clone()
        .unwrap_or_else(|| default_run_id(spec.seed));
    check_run_id(&run_id)?;

    let opts = OpenOptions {
        allowed: spec.allowed.clone(),
        create: false,
        endpoint: spec.endpoint.clone(),
    };
    let dataset = data::read_dataset(&spec.data, &opts).await?;
    tracing::info!(uri = %dataset.uri, digest = %dataset.digest, bytes = dataset.bytes.len(), "dataset read");
    // Parse and check the data now, so a bad dataset fails before the store is touched.
    prepare(spec, &dataset.uri, &dataset.bytes)?;

    // Open the destination before spending time on training: a store outside the allowed
    // regions (or a bad URI) fails here, with nothing written anywhere.
    let destination = match &spec.store {
        Some(uri) => Some(
            store::open(
                uri,
                &OpenOptions {
                    create: true,
                    ..opts.clone()
                },
            )
            .await
            .map_err(|source| JobError::OpenStore {
                uri: uri.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let keys: Vec<StoreKey> = FILES
        .iter()
        .map(|f| {
            falaj_core::layout::incoming_file(&spec.model, &run_id, f).map_err(|e| {
                JobError::InvalidName {
                    what: "run id",
                    value: run_id.clone(),
                    reason: e.to_string(),
                }
            })
        })
        .collect::<Result<_, _>>()?;

    let trained = train_dataset(spec, &dataset, &run_id, &device, on_epoch)?;
    let TrainedRun {
        onnx,
        features,
        classes,
        history,
        weights_digest: digest,
        stats,
        target_stats,
        split_sizes,
        ..
    } = trained;
    let onnx_digest = data::sha256_digest(&onnx);
    let last = history.last().cloned().expect("at least one epoch ran");

    let metrics_json = serde_json::to_vec_pretty(&json!({
        "task": spec.task,
        "final": final_metrics(spec.task, &last),
        "epochs": history,
    }))
    .expect("metrics serialise");
    let curve = crate::curve::render(&history).map_err(|e| JobError::Write {
        path: spec.out_dir.join("training_curve.png"),
        source: std::io::Error::other(e),
    })?;

    let mut hyper = BTreeMap::new();
    hyper.insert("hidden".into(), json!(spec.hidden));
    hyper.insert("activation".into(), json!(spec.activation));
    hyper.insert("dropout".into(), json!(spec.dropout));
    hyper.insert("epochs".into(), json!(spec.epochs));
    hyper.insert("batch_size".into(), json!(spec.batch_size));
    hyper.insert("learning_rate".into(), json!(spec.learning_rate));
    hyper.insert("val_fraction".into(), json!(spec.val_fraction));
    hyper.insert(
        "optimizer".into(),
        json!({"name": "adam", "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}),
    );
    hyper.insert(
        "loss".into(),
        json!(match spec.task {
            Task::Classification => "cross_entropy",
            Task::Regression => "mse_on_standardized_target",
        }),
    );
    let mut extra = BTreeMap::new();
    extra.insert("feature_stats".into(), json!(stats));
    extra.insert("weights_digest".into(), json!(digest));
    extra.insert("artifact".into(), json!({"file": "model.onnx", "digest": onnx_digest, "opset": spec.opset, "size": onnx.len()}));
    extra.insert("split".into(), json!({"train_rows": split_sizes.0, "validation_rows": split_sizes.1, "seed_stream": "chacha8"}));
    extra.insert("epochs_run".into(), json!(history.len()));
    // The training curve, per epoch, for the console's version page (a few numbers an epoch).
    extra.insert("epochs".into(), json!(history));
    if let Some((m, s)) = target_stats {
        extra.insert(
            "target_standardization".into(),
            json!({"mean": m, "std": s, "folded_into_graph": true}),
        );
    }
    let manifest = TrainingManifest {
        model: spec.model.clone(),
        // Who uploads: the job's identity, which the version records as its author.
        author: std::env::var("FALAJ_IDENTITY")
            .ok()
            .filter(|s| !s.trim().is_empty()),
        semver: None,
        run_id: run_id.clone(),
        task: spec.task,
        target: spec.target.clone(),
        features,
        classes,
        output: None,
        image: None,
        standardization: Some(Standardization {
            mean: stats.iter().map(|s| s.mean).collect(),
            std: stats.iter().map(|s| data::safe_scale(s.std)).collect(),
            folded_into_graph: true,
        }),
        lineage: Lineage {
            datasets: vec![DatasetRef {
                uri: dataset.uri.clone(),
                digest: dataset.digest.clone(),
                region: dataset.region.clone(),
            }],
            code_commit: spec.code_commit.clone(),
            trainer_image: Some(
                spec.trainer_image
                    .clone()
                    .unwrap_or_else(|| format!("falaj-train {}", env!("CARGO_PKG_VERSION"))),
            ),
            hyperparameters: hyper,
            parent_version: spec.parent_version,
        },
        seed: Some(spec.seed),
        backend: Some(spec.backend.name().into()),
        device: Some(spec.backend.describe()),
        metrics: final_metrics(spec.task, &last),
        started_at: Some(started_at),
        finished_at: Some(now()),
        extra,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");

    let contents: [&[u8]; 4] = [&onnx, &metrics_json, &curve, &manifest_json];
    std::fs::create_dir_all(&spec.out_dir).map_err(|source| JobError::Write {
        path: spec.out_dir.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for (name, bytes) in FILES.iter().zip(contents) {
        files.push(write_file(&spec.out_dir, name, bytes)?);
    }

    let mut uploaded = Vec::new();
    if let Some(dest) = destination {
        for (key, bytes) in keys.iter().zip(contents) {
            dest.put(key, Bytes::copy_from_slice(bytes), Precondition::IfAbsent)
                .await
                .map_err(|source| JobError::Upload {
                    key: key.to_string(),
                    uploaded: uploaded.clone(),
                    source,
                })?;
            uploaded.push(key.to_string());
        }
        tracing::info!(store = dest.uri(), keys = ?uploaded, "uploaded");
    }
    Ok(JobOutcome {
        run_id,
        manifest,
        files,
        uploaded,
        history,
        weights_digest: digest,
        onnx_digest,
    })
}
