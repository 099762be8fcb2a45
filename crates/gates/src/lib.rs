//! Validation gates: runs a registered ONNX model in tract on a holdout CSV, measures every
//! gate of the model's policy and writes the immutable gate report.
//!
//! This is the only crate outside the edge component that links tract. A model that does not
//! load or run in tract is not an error of the command: the version is rejected, and the
//! report records the loader's message. The request and report types are `falaj`'s
//! ([`falaj::reports`]), re-exported here. The modules, lowest first: `holdout`, `model`,
//! `metrics`, `measure`, `sandbox` (the worker process), `validate`, `validator`,
//! `pipeline` (the validate function's logic).

pub mod holdout;
pub mod init;
pub mod measure;
pub mod metrics;
pub mod model;
pub mod npz;
pub mod pipeline;
pub mod sandbox;
pub mod validate;
mod validator;

pub use falaj::reports::{
    GateError, Holdout, Validation, artifact_of, latest_report, manifest_of, report_key, reports,
};
pub use holdout::{
    HoldoutData, HoldoutParseError, MAX_ARTIFACT_BYTES, MAX_HOLDOUT_BYTES, parse_holdout,
};
pub use init::{ImageRule, InitError, ManifestInit, init_manifest};
pub use measure::{GateInputs, measure};
pub use model::{LoadedModel, ModelError, Scored, score, served_rows};
pub use pipeline::{FunctionError, handle_event, invoke, validate_function, validate_version};
pub use validate::{EVALUATOR, validate};
pub use validator::LocalValidator;
