//! falaj-inference: one ONNX model served over HTTP from inside a WebAssembly component.
//!
//! Built for `wasm32-wasip2` with SIMD (`scripts/wasm-component.sh`), it is a WASI 0.3
//! `wasi:http` service (spin-sdk 7 `#[http_service]`) that runs under `wasmtime serve`,
//! Spin, and falaj-edge. The model directory is mounted at `/model` (see [`engine`]); the
//! model is read, checked against its version record, and optimised by tract **once per
//! instance**, on the first request, then reused by every request the host sends that
//! instance. The routes and every answer are in [`api`], which the host-side tests run
//! natively next to the component to prove both give the same outputs.
#![deny(missing_docs)]

pub mod api;
pub mod engine;
pub mod input;
pub mod preprocess;

#[cfg(target_arch = "wasm32")]
mod component;
#[cfg(all(target_arch = "wasm32", feature = "host-nn"))]
mod nn;
