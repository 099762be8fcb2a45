//! falaj: the model registry and its audit log, the gates, promotion and deployments.
//!
//! The `falaj` CLI, the Lambda functions and the edge host are thin shells over this crate:
//! they turn their input into a call here and the result back. Cargo features choose how much
//! of it a binary links (see `Cargo.toml`): without `gates` nothing runs a model, without
//! `cli` there is no `serve`, `demo` or `retrain` (and no Terraform residency check:
//! `falaj-residency`). The stores are `falaj-store`, re-exported as [`store`].
#![deny(missing_docs)]

pub mod access;
#[cfg(feature = "cli")]
pub mod demo;
pub mod deploy;
pub mod drift;
pub mod error;
pub mod function;
pub mod gatekeeper;
pub mod gates;
pub mod ingest;
pub mod pipeline;
pub mod promotion;
pub mod registry;
#[cfg(feature = "cli")]
pub mod retrain;
#[cfg(feature = "cli")]
pub mod serve;
pub mod webhook;

/// The shared HTTP accept loop (`falaj-runtime`).
pub use falaj_runtime::httpd;
/// The store backends (`falaj-store`), re-exported so `falaj::store::...` keeps working.
pub use falaj_store as store;

pub use error::RegistryError;
pub use registry::{Artifact, Expect, NewModel, Registered, Registration, Registry, VersionFilter};
