//! `falaj-train`: trains a multi-layer perceptron with burn on a CSV dataset and exports it to
//! ONNX with our own exporter, then hands `model.onnx` and `manifest.json` to the registry.
//!
//! The steps, one module each:
//! 1. [`data`]: read the dataset (path, `dir://`, `s3://`), digest its bytes, parse and check
//!    the CSV, split it with a seed, compute standardisation and drift histograms on the
//!    training split;
//! 2. [`model`]: the MLP (hidden layers, ReLU/GELU, dropout), seeded initialisation, and the
//!    burn inference pipeline that the ONNX graph mirrors;
//! 3. [`train`]: mini-batch Adam, per-epoch validation metrics;
//! 4. [`export`]: the ONNX graph on `falaj_core::onnx`'s prost types;
//! 5. [`job`]: the whole run, local files and the upload to `incoming/<model>/<run-id>/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), falaj_train::error::JobError> {
//! use falaj_core::manifest::Task;
//! let mut spec = falaj_train::job::JobSpec::new("tests/fixtures/datasets/wine.csv", "cultivar", Task::Classification, "wine");
//! spec.store = Some("dir://.falaj".into());
//! let outcome = falaj_train::job::run(&spec, &mut |m| println!("epoch {} loss {}", m.epoch, m.train_loss)).await?;
//! println!("uploaded {:?}", outcome.uploaded);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod backend;
pub mod curve;
pub mod data;
pub mod error;
pub mod export;
pub mod graph;
pub mod job;
pub mod model;
pub mod train;
