//! falaj-core: the domain of falaj with no I/O.
//!
//! Everything here is pure and builds for `wasm32-wasip2`, so the registry, the gates, the
//! trainer and the edge component share one definition of a model version, a manifest, a
//! store key and an audit event, and cannot drift apart.
#![deny(missing_docs)]

pub mod audit;
pub mod canary;
pub mod deployment;
pub mod drift;
pub mod image;
pub mod input;
pub mod layout;
pub mod live;
pub mod manifest;
pub mod names;
pub mod onnx;
pub mod policy;
pub mod preprocess;
pub mod promotion;
pub mod residency;
pub mod sketch;
pub mod version;

pub use audit::{AuditEvent, AuditProblem, verify_chain};
pub use layout::StoreKey;
pub use manifest::{Standardization, Task, TrainingManifest};
pub use names::{
    NameError, validate_alias, validate_model_name, validate_tag_key, validate_tag_value,
};
pub use residency::{AllowedRegions, ResidencyError};
pub use version::{
    AliasRecord, ArtifactFormat, DatasetRef, Lineage, ModelRecord, ModelRef, ModelVersion,
    Signature, TensorSpec, VersionRef,
};
