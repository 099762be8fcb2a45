//! The errors `falaj-train` reports, one enum per stage, each message saying what was wrong
//! and how to fix it.

use std::path::PathBuf;

use falaj_store::StoreError;

/// Reading or checking the dataset failed. Every variant names the dataset (`dataset`) and,
/// where a single cell is at fault, its 1-based line (the header is line 1) and its column.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The URI or path could not be understood.
    #[error("dataset {uri:?}: {reason}")]
    BadUri {
        /// What was given.
        uri: String,
        /// Why it is not usable and what to write instead.
        reason: String,
    },
    /// A local file could not be read.
    #[error("cannot read dataset {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The store holding the dataset refused it or failed (includes residency violations).
    #[error("cannot read dataset {uri}: {source}")]
    Store {
        /// Dataset URI.
        uri: String,
        /// Cause.
        source: StoreError,
    },
    /// The store answered, but has no object under that key.
    #[error(
        "dataset {uri} does not exist: no object at key {key:?} in store {store}; upload it first (`aws s3 cp` or copy it into the store directory)"
    )]
    NotFound {
        /// Dataset URI.
        uri: String,
        /// Store URI.
        store: String,
        /// Key.
        key: String,
    },
    /// The file has no header or no data rows.
    #[error(
        "dataset {dataset} is empty: {detail}; it needs a header row and at least one data row"
    )]
    Empty {
        /// Dataset.
        dataset: String,
        /// What is missing.
        detail: String,
    },
    /// The CSV itself is malformed (bad quoting, invalid UTF-8).
    #[error("dataset {dataset}, line {line}: not valid CSV: {reason}")]
    Csv {
        /// Dataset.
        dataset: String,
        /// Line.
        line: u64,
        /// Parser message.
        reason: String,
    },
    /// Two header cells have the same name.
    #[error(
        "dataset {dataset}: column {column:?} appears twice in the header; column names must be unique"
    )]
    DuplicateColumn {
        /// Dataset.
        dataset: String,
        /// Name.
        column: String,
    },
    /// A named column is not in the header.
    #[error(
        "dataset {dataset}: {role} column {column:?} is not in the header (columns: {available})"
    )]
    MissingColumn {
        /// Dataset.
        dataset: String,
        /// `target` or `feature`.
        role: &'static str,
        /// Name asked for.
        column: String,
        /// Header, comma-separated.
        available: String,
    },
    /// A row has a different number of cells than the header.
    #[error(
        "dataset {dataset}, line {line}: row has {found} cells but the header has {expected}; every row needs one value per column"
    )]
    Ragged {
        /// Dataset.
        dataset: String,
        /// Line.
        line: u64,
        /// Header width.
        expected: usize,
        /// Row width.
        found: usize,
    },
    /// A numeric cell does not parse as a number.
    #[error(
        "dataset {dataset}, line {line}, column {column:?}: {value:?} is not a number; features (and a regression target) must be numeric"
    )]
    NotNumeric {
        /// Dataset.
        dataset: String,
        /// Line.
        line: u64,
        /// Column.
        column: String,
        /// Cell text.
        value: String,
    },
    /// A numeric cell is NaN or infinite (or empty).
    #[error(
        "dataset {dataset}, line {line}, column {column:?}: {value:?} is not a finite number; remove or impute missing values before training"
    )]
    NonFinite {
        /// Dataset.
        dataset: String,
        /// Line.
        line: u64,
        /// Column.
        column: String,
        /// Cell text.
        value: String,
    },
    /// A classification target with fewer than two classes.
    #[error(
        "dataset {dataset}: target column {column:?} has a single class ({class:?}); classification needs at least two classes (or use --task regression)"
    )]
    SingleClass {
        /// Dataset.
        dataset: String,
        /// Target column.
        column: String,
        /// The only label.
        class: String,
    },
    /// Too few rows to split into training and validation.
    #[error(
        "dataset {dataset} has {rows} data rows; at least {needed} are needed for a training and a validation split"
    )]
    TooFewRows {
        /// Dataset.
        dataset: String,
        /// Rows found.
        rows: usize,
        /// Rows needed.
        needed: usize,
    },
    /// No feature columns are left once the target is taken out.
    #[error(
        "dataset {dataset}: no feature columns (the target {target:?} is the only column); add features or name them with --features"
    )]
    NoFeatures {
        /// Dataset.
        dataset: String,
        /// Target.
        target: String,
    },
}

/// The training configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("invalid {name} = {value}: {expected}")]
    OutOfRange {
        /// Option name (as on the command line).
        name: &'static str,
        /// Value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The requested backend is not compiled into this binary.
    #[error("backend {backend:?} is not available in this build: {hint}")]
    BackendUnavailable {
        /// Backend name.
        backend: String,
        /// How to get it.
        hint: &'static str,
    },
    /// A name on the command line is not one the trainer knows.
    #[error("unknown {what} {value:?}; expected one of: {expected}")]
    Unknown {
        /// `activation`, `task`, `backend`.
        what: &'static str,
        /// Given.
        value: String,
        /// Accepted names.
        expected: &'static str,
    },
}

/// Turning a trained network into ONNX failed; nothing is written when this happens.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A layer cannot be expressed with the operators the exporter emits.
    #[error("cannot export layer {index} ({layer}): {reason}")]
    Unsupported {
        /// Position in the network.
        index: usize,
        /// Layer description.
        layer: String,
        /// Why.
        reason: String,
    },
    /// Shapes do not chain (a bug in the caller, reported instead of writing a wrong graph).
    #[error("cannot export layer {index}: expects {expected} inputs but receives {found}")]
    ShapeMismatch {
        /// Position.
        index: usize,
        /// Width the layer expects.
        expected: usize,
        /// Width it receives.
        found: usize,
    },
    /// A weight or preprocessing constant is NaN or infinite (training diverged).
    #[error(
        "cannot export {tensor}: it holds a non-finite value at index {index}; training diverged, lower --learning-rate"
    )]
    NonFinite {
        /// Tensor name.
        tensor: String,
        /// Flat index.
        index: usize,
    },
    /// Any other inconsistency in the export request.
    #[error("cannot export: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
}

/// Training itself failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss}; lower --learning-rate or check the data for extreme values"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// Loss value.
        loss: f64,
    },
    /// The backend reported a failure.
    #[error("the {backend} backend failed: {reason}")]
    Backend {
        /// Backend.
        backend: String,
        /// Message.
        reason: String,
    },
}

/// A training job failed. Nothing has been uploaded unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The dataset could not be read or is invalid.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The options are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Training failed.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// Export failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Writing a local output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The destination store could not be opened (includes residency violations).
    #[error("cannot open the model store {uri}: {source}")]
    OpenStore {
        /// Store URI.
        uri: String,
        /// Cause.
        source: StoreError,
    },
    /// An upload failed; `uploaded` lists the keys already written (never the manifest).
    #[error(
        "upload of {key} failed: {source} (already uploaded: {uploaded:?}; the ingest function only reacts to manifest.json, so this run is not registered — rerun with a new --run-id)"
    )]
    Upload {
        /// Key being written.
        key: String,
        /// Keys already written.
        uploaded: Vec<String>,
        /// Cause.
        source: StoreError,
    },
    /// The model name or run id is not a valid store key segment.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// `model name` or `run id`.
        what: &'static str,
        /// Given.
        value: String,
        /// Why.
        reason: String,
    },
}
