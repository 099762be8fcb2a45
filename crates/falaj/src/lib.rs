//! falaj: the model registry and its audit log, roles, promotion, deployments and drift.
//!
//! The crates above it are thin over this one: `falaj-gates` runs models (tract) and writes
//! the gate reports this crate reads, `falaj-webhook` is the HTTP API, `falaj-lambda` the
//! Lambda plumbing, `falaj-cli` the `falaj` binary. This crate links no tract, no HTTP server
//! and no Lambda SDK. The stores are `falaj-store`, re-exported as [`store`]. The crate map is
//! in `docs/architecture.md`.
#![deny(missing_docs)]

pub mod access;
pub mod calls;
pub mod canary;
pub mod claim;
pub mod deploy;
pub mod drift;
pub mod error;
pub mod gatekeeper;
pub mod ingest;
pub mod pipeline;
pub mod promotion;
pub mod registry;
pub mod reports;

/// The store backends (`falaj-store`), re-exported so `falaj::store::...` keeps working.
pub use falaj_store as store;

pub use error::RegistryError;
pub use registry::{Artifact, Expect, NewModel, Registered, Registration, Registry, VersionFilter};
