//! `falaj-train`: parses the command line, sets up logging and progress display, and runs
//! one training job through the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use falaj_core::AllowedRegions;
use falaj_core::manifest::Task;
use falaj_train::backend::BackendKind;
use falaj_train::job::{self, JobSpec};
use falaj_train::model::Activation;
use falaj_train::train::EpochMetrics;

const AFTER_HELP: &str = "\
Datasets (--data):
  a plain path            tests/fixtures/datasets/wine.csv
  dir://STORE/KEY         key KEY of the local falaj store STORE (the nearest directory on
                          the path holding .falaj-store.json), e.g. dir://.falaj/datasets/wine.csv
  s3://BUCKET/KEY         object KEY of bucket BUCKET (must be in an allowed region)
The CSV needs a header row; features must be numeric and finite. The sha256 of the exact
bytes read is recorded in the manifest.

Outputs: --out DIR gets model.onnx, metrics.json, training_curve.png and manifest.json.
With --store (default dir://.falaj) they are also uploaded, create-only, to
incoming/<model>/<run-id>/ with manifest.json last (the ingest function triggers on it).
Use --no-upload to only write --out.

Examples:
  # classification on the CPU, uploaded to the local store
  falaj-train --data tests/fixtures/datasets/wine.csv --target cultivar \\
      --task classification --model wine --hidden 32,16 --epochs 60 --out out/wine

  # regression with GELU and dropout, reproducible with a seed
  falaj-train --data tests/fixtures/datasets/diabetes.csv --target progression \\
      --task regression --model diabetes --activation gelu --dropout 0.1 --seed 7

  # an AWS Batch GPU job (binary built with --features cuda), data and registry in S3
  falaj-train --data s3://falaj-datasets-uae/wine.csv --target cultivar \\
      --model wine --backend cuda --store s3://falaj-registry-uae

Progress: a bar per epoch on a terminal, one JSON log line per epoch otherwise.
Set RUST_LOG=debug for more detail.";

/// Train an MLP on a CSV dataset with burn and export it to ONNX for the falaj registry.
#[derive(Debug, Parser)]
#[command(name = "falaj-train", version, about, after_help = AFTER_HELP)]
struct Args {
    /// Dataset: a path, dir://STORE/KEY or s3://BUCKET/KEY.
    #[arg(long, value_name = "URI")]
    data: String,
    /// Target column.
    #[arg(long)]
    target: String,
    /// Feature columns in model input order, comma-separated [default: all but the target].
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// classification or regression.
    #[arg(long, default_value = "classification", value_parser = parse_task)]
    task: Task,
    /// Model name in the registry.
    #[arg(long)]
    model: String,
    /// Hidden layer widths, comma-separated; `none` for a linear model.
    #[arg(long, default_value = "64,32", value_parser = parse_widths)]
    hidden: Widths,
    /// Hidden activation: relu or gelu.
    #[arg(long, default_value = "relu", value_parser = |s: &str| Activation::parse(s).map_err(|e| e.to_string()))]
    activation: Activation,
    /// Dropout probability after each hidden layer.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Passes over the training split.
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Rows per optimiser step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// Share of rows held out for validation.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Seed for initial weights, split, batch order and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// cpu (burn Flex) or cuda[:N] (needs a build with --features cuda).
    #[arg(long, default_value = "cpu", value_parser = |s: &str| BackendKind::parse(s).map_err(|e| e.to_string()))]
    backend: BackendKind,
    /// Local output directory.
    #[arg(long, default_value = "falaj-train-out")]
    out: PathBuf,
    /// Store to upload to.
    #[arg(long, default_value = falaj_store::DEFAULT_STORE, env = "FALAJ_STORE")]
    store: String,
    /// Only write --out; upload nothing.
    #[arg(long)]
    no_upload: bool,
    /// Run id [default: <UTC time>-s<seed>].
    #[arg(long)]
    run_id: Option<String>,
    /// Allowed regions, comma-separated.
    #[arg(long, env = "FALAJ_ALLOWED_REGIONS", default_value = "me-central-1")]
    allowed_regions: String,
    /// S3 endpoint override (S3-compatible servers).
    #[arg(long, env = "FALAJ_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Commit of the training code [default: `git rev-parse HEAD` if available].
    #[arg(long, env = "FALAJ_CODE_COMMIT")]
    code_commit: Option<String>,
    /// Trainer image recorded in the lineage (set by the Batch job definition).
    #[arg(long, env = "FALAJ_TRAINER_IMAGE")]
    trainer_image: Option<String>,
    /// The registered version this run retrains, recorded as the lineage's parent
    /// (`falaj serve` sets it when a drift request starts a retrain).
    #[arg(long, value_name = "N")]
    parent_version: Option<u64>,
    /// ONNX opset to write (13-21).
    #[arg(long, default_value_t = falaj_train::export::DEFAULT_OPSET)]
    opset: i64,
}

/// Hidden layer widths as given on the command line.
#[derive(Debug, Clone)]
struct Widths(Vec<usize>);

fn parse_widths(s: &str) -> Result<Widths, String> {
    if s.trim().is_empty() || s.trim() == "none" {
        return Ok(Widths(vec![]));
    }
    s.split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .map_err(|_| format!("{w:?} is not a layer width; use e.g. 64,32 or none"))
        })
        .collect::<Result<_, _>>()
        .map(Widths)
}

fn parse_task(s: &str) -> Result<Task, String> {
    match s {
        "classification" => Ok(Task::Classification),
        "regression" => Ok(Task::Regression),
        _ => Err(format!(
            "unknown task {s:?}; expected classification or regression"
        )),
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("falaj-train: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what failed and how to fix it (the library's messages do).
            eprintln!("falaj-train: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let terminal = std::io::stderr().is_terminal();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if terminal {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }

    let mut spec = JobSpec::new(args.data, args.target, args.task, args.model);
    spec.features = args.features;
    spec.hidden = args.hidden.0;
    spec.activation = args.activation;
    spec.dropout = args.dropout;
    spec.epochs = args.epochs;
    spec.batch_size = args.batch_size;
    spec.learning_rate = args.learning_rate;
    spec.val_fraction = args.val_fraction;
    spec.seed = args.seed;
    spec.backend = args.backend;
    spec.out_dir = args.out;
    spec.store = (!args.no_upload).then_some(args.store);
    spec.run_id = args.run_id;
    spec.allowed = AllowedRegions::parse(&args.allowed_regions);
    spec.endpoint = args.s3_endpoint;
    spec.code_commit = args.code_commit.or_else(git_commit);
    spec.trainer_image = args.trainer_image;
    spec.opset = args.opset;
    spec.parent_version = args.parent_version;

    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(spec.epochs as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} epoch {pos}/{len} {msg} [{elapsed}<{eta}]",
            )
            .expect("valid template"),
        );
        bar
    });
    let mut on_epoch = |m: &EpochMetrics| match &bar {
        Some(bar) => {
            let quality = match (m.val_accuracy, m.val_rmse) {
                (Some(a), _) => format!("val acc {a:.3}"),
                (_, Some(r)) => format!("val rmse {r:.3}"),
                _ => String::new(),
            };
            bar.set_message(format!(
                "loss {:.4} val {:.4} {quality}",
                m.train_loss, m.val_loss
            ));
            bar.inc(1);
        }
        None => tracing::info!(
            epoch = m.epoch,
            train_loss = m.train_loss,
            val_loss = m.val_loss,
            val_accuracy = m.val_accuracy,
            val_rmse = m.val_rmse,
            val_r2 = m.val_r2,
            samples_per_second = m.samples_per_second,
            "epoch"
        ),
    };
    let outcome = job::run(&spec, &mut on_epoch).await?;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let summary = serde_json::json!({
        "run_id": outcome.run_id,
        "metrics": outcome.manifest.metrics,
        "files": outcome.files,
        "uploaded": outcome.uploaded,
        "onnx_digest": outcome.onnx_digest,
        "weights_digest": outcome.weights_digest,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
