//! falaj: the store backends, the model registry and its audit log.
//!
//! The `falaj` CLI, the Lambda functions and the edge host are thin shells over this crate:
//! they turn their input into a call here and the result back.
#![deny(missing_docs)]

pub mod demo;
pub mod deploy;
pub mod drift;
pub mod error;
pub mod function;
pub mod gates;
pub mod ingest;
pub mod pipeline;
pub mod promotion;
pub mod registry;
pub mod retrain;
pub mod serve;
pub mod store;
pub mod terraform;
pub mod webhook;

pub use error::RegistryError;
pub use registry::{Artifact, Expect, NewModel, Registered, Registration, Registry, VersionFilter};
