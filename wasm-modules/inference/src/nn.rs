//! The host inference path, guest side (the `host-nn` build only): the model's graph runs in
//! the host's native tract through wasi:nn, while parsing, preprocessing and answering stay
//! here in the sandbox.
//!
//! The component never sends the host a model. It asks for the graph by the artifact's
//! digest from `version.json` (`load-by-name`); falaj-edge holds a graph under that name only
//! when the signed deployment runs this version with `runtime = "host"`, and only after it
//! verified the artifact's digest itself. Any other answer (no such graph, a host whose
//! wasi:nn has no graphs, such as `wasmtime serve -S nn`) leaves the model in the sandbox.

use crate::engine::RunError;

wit_bindgen::generate!({
    path: "wit/wasi-nn.wit",
    world: "ml",
});

use wasi::nn::errors::ErrorCode;
use wasi::nn::graph::{Graph, load_by_name};
use wasi::nn::inference::GraphExecutionContext;
use wasi::nn::tensor::{Tensor, TensorType};

/// A graph held by the host, with its execution context.
pub struct HostGraph {
    ctx: GraphExecutionContext,
    _graph: Graph,
    input: String,
}

// SAFETY: a wasm32 component instance has one thread; the handles are never shared across
// threads (the engine sits in a `OnceLock` only because statics must be `Sync`).
unsafe impl Send for HostGraph {}
// SAFETY: as above.
unsafe impl Sync for HostGraph {}

impl HostGraph {
    /// The host's graph named `digest`, if the host holds one; `input` is the graph's input
    /// name as the ONNX file declares it.
    pub fn open(digest: &str, input: &str) -> Option<Self> {
        let graph = load_by_name(digest).ok()?;
        let ctx = graph.init_execution_context().ok()?;
        Some(Self {
            ctx,
            _graph: graph,
            input: input.to_owned(),
        })
    }

    /// Runs `x`, shaped `shape` (batch first), in the host; returns the output values.
    pub fn run(&self, x: &[f32], shape: &[usize]) -> Result<Vec<f32>, RunError> {
        let dims: Vec<u32> = shape.iter().map(|&d| d as u32).collect();
        // SAFETY: any f32 memory may be read as bytes; wasm32 is little-endian, the wire order.
        let bytes = unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len() * 4) };
        let tensor = Tensor::new(&dims, TensorType::Fp32, bytes);
        let outputs = self
            .ctx
            .compute(vec![(self.input.clone(), tensor)])
            .map_err(|e| {
                let (status, code) = match e.code() {
                    ErrorCode::Timeout => (504, "deadline_exceeded"),
                    ErrorCode::TooLarge => (413, "too_large"),
                    ErrorCode::Unknown => (503, "model_busy"),
                    _ => (500, "inference_failed"),
                };
                RunError::new(status, code, format!("host inference: {}", e.data()))
            })?;
        let (_, out) = outputs.into_iter().next().ok_or_else(|| {
            RunError::new(500, "inference_failed", "host inference returned no output")
        })?;
        if out.ty() != TensorType::Fp32 {
            return Err(RunError::new(
                500,
                "inference_failed",
                "host inference returned a non-f32 output",
            ));
        }
        let data = out.data();
        Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
