//! falaj-edge: the wasmtime host for CPU edge nodes.
//!
//! It pulls the signed deployment manifests of one environment from the store
//! (`deployments/<env>/<model>.json`), verifies each signature and every artifact digest,
//! stages the verified files in its cache, and serves every deployed model version from the
//! tract inference component (`wasm-modules/inference`) over HTTP:
//! `POST /v1/models/<name>/predict`. See `docs/edge.md`.
//!
//! - [`runtime`]: engine, pooling allocator, compiled-component cache, sandbox limits, and
//!   the per-version instance pool.
//! - [`fleet`]: the pull loop: verify, stage, warm up, swap atomically, keep the last good.
//! - [`server`]: HTTP routing, canary split, shadow copies, metrics and feature sketches.
//! - [`live`]: request ids and the per-variant windows the canary controller judges.
//! - [`batch`]: micro-batching of concurrent predictions for one tabular version.
//! - [`nn`]: the host inference path: wasi:nn served by native tract for versions deployed
//!   with `runtime = "host"`.
#![deny(missing_docs)]

pub mod batch;
pub mod fleet;
pub mod fsutil;
pub mod live;
pub mod metrics;
pub mod nn;
pub mod runtime;
pub mod server;
