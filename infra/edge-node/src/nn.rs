//! The host inference path: `wasi:nn` for the inference component, served by native tract.
//!
//! A component built with `host-nn` (`falaj-inference-nn.wasm`) asks for its graph by the
//! artifact's digest (`load-by-name`). A version deployed with `runtime = "host"` gets a
//! [`HostGraph`]: the very engine the component runs ([`falaj_inference::engine::Engine`]),
//! loaded natively from the staged directory whose digests the fleet verified against the
//! signed deployment, and planned once per version. Every other version's instances see no
//! graph and keep tract in the sandbox. The host never plans bytes a guest hands it: `load`
//! answers `unsupported-operation`.
//!
//! `compute` runs on the node's [`HostPool`]: a fixed set of threads fed by a bounded
//! queue (a full queue answers at once, and the component says 503 `model_busy`), under the
//! request deadline (a late run answers `timeout`, 504 `deadline_exceeded`). Inputs and
//! outputs are bounded by the instance's memory cap; tract runs the rows in chunks, as in the
//! sandbox.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use falaj_inference::engine::{Engine, RunError};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wasm-modules/inference/wit/wasi-nn.wit",
        world: "ml",
        imports: {
            "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
            default: trappable,
        },
        require_store_data_send: true,
        with: {
            "wasi:nn/graph.graph": super::GraphRes,
            "wasi:nn/tensor.tensor": super::TensorRes,
            "wasi:nn/inference.graph-execution-context": super::ContextRes,
            "wasi:nn/errors.error": super::ErrorRes,
        },
    });
}

use bindings::wasi::nn::errors::{self, ErrorCode};
use bindings::wasi::nn::graph::{self, ExecutionTarget, GraphBuilder, GraphEncoding};
use bindings::wasi::nn::inference::{self, NamedTensor};
use bindings::wasi::nn::tensor::{self, TensorData, TensorDimensions, TensorType};

/// A version's graph, held by the host: the engine, and the name components ask for.
#[derive(Clone)]
pub struct HostGraph {
    /// `sha256:<hex>` of the artifact (the name for `load-by-name`).
    pub digest: String,
    planned: Arc<Planned>,
}

/// Runs expected to take less than this run inline on the calling thread (as tract in the
/// sandbox does), not on the pool: for them, handing the run to a thread and back costs
/// more than the run (an MLP's 0.01 ms against about 0.1 ms on 2 cores).
pub const INLINE_MAX: Duration = Duration::from_micros(500);

/// An engine and what its runs have cost, per row.
struct Planned {
    engine: Engine,
    /// Moving average of nanoseconds per row of the runs so far (0: none yet).
    per_row_nanos: AtomicU64,
}

impl Planned {
    /// Whether `rows` rows are expected to take less than [`INLINE_MAX`] (never before a
    /// first run has been measured on the pool).
    fn small(&self, rows: usize) -> bool {
        let per_row = self.per_row_nanos.load(Ordering::Relaxed);
        per_row > 0 && (per_row as u128).saturating_mul(rows as u128) < INLINE_MAX.as_nanos()
    }

    /// Runs, catching a panic, and counts the time.
    fn run(&self, x: &[f32], rows: usize, stats: &HostStats) -> Result<Vec<f32>, RunError> {
        let started = Instant::now();
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.run(x, rows)));
        let took = nanos(started.elapsed());
        stats.run_nanos.fetch_add(took, Ordering::Relaxed);
        stats.runs.fetch_add(1, Ordering::Relaxed);
        let sample = took / rows.max(1) as u64;
        let old = self.per_row_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old.saturating_mul(7).saturating_add(sample) / 8
        };
        self.per_row_nanos.store(new.max(1), Ordering::Relaxed);
        out.unwrap_or_else(|_| {
            Err(RunError::new(
                500,
                "inference_failed",
                "tract panicked running the model",
            ))
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for HostGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostGraph")
            .field("digest", &self.digest)
            .finish()
    }
}

impl HostGraph {
    /// Loads and plans the staged version in `dir` natively: the same reading, digest checks
    /// against `version.json` and planning the component does. Seconds for a CNN; run it off
    /// the async threads.
    pub fn load(dir: &Path) -> Result<Self> {
        let engine = Engine::load(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(v) = &engine.version else {
            bail!(
                "{} has no version.json; the host path runs only staged, verified versions",
                dir.display()
            );
        };
        Ok(Self {
            digest: v.digest.clone(),
            planned: Arc::new(Planned {
                engine,
                per_row_nanos: AtomicU64::new(0),
            }),
        })
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run host inference, with a bounded queue in front of them.
pub struct HostPool {
    tx: Mutex<Option<SyncSender<Job>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    size: usize,
    queue: usize,
    stats: Arc<HostStats>,
}

/// What the host path did, for `/metrics`: `falaj_edge_host_*`.
#[derive(Debug, Default)]
pub struct HostStats {
    /// Graph runs finished.
    pub runs: AtomicU64,
    /// Nanoseconds in tract, all runs together.
    pub run_nanos: AtomicU64,
    /// Nanoseconds runs waited between the call and a thread taking them.
    pub wait_nanos: AtomicU64,
    /// Calls refused at once because the queue was full.
    pub busy: AtomicU64,
    /// Calls that answered `timeout` (the run finished later, or never).
    pub timeouts: AtomicU64,
    /// Runs small enough to run inline on the calling thread ([`INLINE_MAX`]).
    pub inline: AtomicU64,
}

impl HostStats {
    /// Prometheus text for these counters.
    pub fn render(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| n(a) as f64 / 1e9;
        format!(
            "# HELP falaj_edge_host_runs_total Graph runs on the host inference path (wasi:nn, native tract).\n\
             # TYPE falaj_edge_host_runs_total counter\n\
             falaj_edge_host_runs_total {}\n\
             # HELP falaj_edge_host_run_seconds_total Time those runs spent in tract.\n\
             # TYPE falaj_edge_host_run_seconds_total counter\n\
             falaj_edge_host_run_seconds_total {}\n\
             # HELP falaj_edge_host_wait_seconds_total Time those runs waited for a host thread.\n\
             # TYPE falaj_edge_host_wait_seconds_total counter\n\
             falaj_edge_host_wait_seconds_total {}\n\
             # HELP falaj_edge_host_busy_total Host runs refused because every thread was busy and the queue full (503).\n\
             # TYPE falaj_edge_host_busy_total counter\n\
             falaj_edge_host_busy_total {}\n\
             # HELP falaj_edge_host_timeouts_total Host runs not done by the request deadline (504).\n\
             # TYPE falaj_edge_host_timeouts_total counter\n\
             falaj_edge_host_timeouts_total {}\n\
             # HELP falaj_edge_host_inline_runs_total Host runs expected under 0.5 ms, run on the calling thread instead of the pool.\n\
             # TYPE falaj_edge_host_inline_runs_total counter\n\
             falaj_edge_host_inline_runs_total {}\n",
            n(&self.runs),
            secs(&self.run_nanos),
            secs(&self.wait_nanos),
            n(&self.busy),
            n(&self.timeouts),
            n(&self.inline),
        )
    }
}

impl HostPool {
    /// `threads` workers (at least one) and room for `queue` waiting runs.
    pub fn new(threads: usize, queue: usize) -> Result<Self> {
        let size = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..size)
            .map(|i| {
                let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("falaj-nn-{i}"))
                    .spawn(move || {
                        loop {
                            let job = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => return,
                            };
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    })
                    .context("starting a host inference thread")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            threads,
            size,
            queue,
            stats: Arc::new(HostStats::default()),
        })
    }

    /// The pool's counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Queues `job`, or says the queue is full.
    fn submit(&self, job: Job) -> std::result::Result<(), String> {
        let tx = self
            .tx
            .lock()
            .map_err(|_| "host pool poisoned".to_string())?;
        let Some(tx) = tx.as_ref() else {
            return Err("the host pool is shut down".into());
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err({
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                format!(
                    "{} host inference threads busy and {} runs queued",
                    self.size, self.queue
                )
            }),
            Err(TrySendError::Disconnected(_)) => Err("the host pool is shut down".into()),
        }
    }
}

impl Drop for HostPool {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The wasi:nn state of one instance.
pub struct NnCtx {
    graphs: HashMap<String, Arc<Planned>>,
    pool: Arc<HostPool>,
    deadline: Duration,
    max_bytes: usize,
}

impl NnCtx {
    /// An instance that may load `graph` (none: every `load-by-name` is `not-found`, and the
    /// component keeps tract in the sandbox).
    pub fn new(
        graph: Option<&HostGraph>,
        pool: Arc<HostPool>,
        deadline: Duration,
        max_bytes: usize,
    ) -> Self {
        Self {
            graphs: graph
                .map(|g| (g.digest.clone(), g.planned.clone()))
                .into_iter()
                .collect(),
            pool,
            deadline,
            max_bytes,
        }
    }
}

/// A loaded graph (guest handle).
pub struct GraphRes(Arc<Planned>);
/// An execution context (guest handle).
pub struct ContextRes(Arc<Planned>);
/// A tensor (guest handle).
pub struct TensorRes {
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}
/// An error (guest handle).
pub struct ErrorRes {
    code: ErrorCode,
    data: String,
}

/// What the bindings' host traits are implemented on.
pub struct NnView<'a> {
    ctx: &'a mut NnCtx,
    table: &'a mut ResourceTable,
}

impl<'a> NnView<'a> {
    /// The view of one instance's state.
    pub fn new(ctx: &'a mut NnCtx, table: &'a mut ResourceTable) -> Self {
        Self { ctx, table }
    }

    fn error<T>(
        &mut self,
        code: ErrorCode,
        data: impl Into<String>,
    ) -> wasmtime::Result<std::result::Result<T, Resource<ErrorRes>>> {
        let e = self.table.push(ErrorRes {
            code,
            data: data.into(),
        })?;
        Ok(Err(e))
    }
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Adds wasi:nn to `linker`; `view` finds an instance's [`NnCtx`] and resource table.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> Result<()> {
    graph::add_to_linker::<T, HasNn>(linker, view)?;
    tensor::add_to_linker::<T, HasNn>(linker, view)?;
    inference::add_to_linker::<T, HasNn>(linker, view)?;
    errors::add_to_linker::<T, HasNn>(linker, view)?;
    Ok(())
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builder: Vec<GraphBuilder>,
        _encoding: GraphEncoding,
        _target: ExecutionTarget,
    ) -> wasmtime::Result<std::result::Result<Resource<GraphRes>, Resource<ErrorRes>>> {
        self.error(
            ErrorCode::UnsupportedOperation,
            "falaj-edge runs only graphs it verified from a signed deployment: use load-by-name \
             with the artifact's digest",
        )
    }

    fn load_by_name(
        &mut self,
        name: String,
    ) -> wasmtime::Result<std::result::Result<Resource<GraphRes>, Resource<ErrorRes>>> {
        match self.ctx.graphs.get(&name) {
            Some(e) => Ok(Ok(self.table.push(GraphRes(e.clone()))?)),
            None => self.error(
                ErrorCode::NotFound,
                format!("no host graph named {name:?}: this version runs in the sandbox"),
            ),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(
        &mut self,
        graph: Resource<GraphRes>,
    ) -> wasmtime::Result<std::result::Result<Resource<ContextRes>, Resource<ErrorRes>>> {
        let engine = self.table.get(&graph)?.0.clone();
        Ok(Ok(self.table.push(ContextRes(engine))?))
    }

    fn drop(&mut self, graph: Resource<GraphRes>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dims: TensorDimensions,
        ty: TensorType,
        data: TensorData,
    ) -> wasmtime::Result<Resource<TensorRes>> {
        Ok(self.table.push(TensorRes { dims, ty, data })?)
    }

    fn dimensions(&mut self, t: Resource<TensorRes>) -> wasmtime::Result<TensorDimensions> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<TensorRes>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&t)?.ty)
    }

    fn data(&mut self, t: Resource<TensorRes>) -> wasmtime::Result<TensorData> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<TensorRes>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&e)?.code)
    }

    fn data(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.data.clone())
    }

    fn drop(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}

/// Checks one input tensor against the graph and returns its rows and values.
fn input(
    engine: &Engine,
    t: &TensorRes,
    max_bytes: usize,
) -> std::result::Result<(usize, Vec<f32>), (ErrorCode, String)> {
    let bad = |m: String| (ErrorCode::InvalidArgument, m);
    if t.ty != TensorType::Fp32 {
        return Err(bad(format!(
            "the input is {:?}; the graph takes FP32",
            t.ty
        )));
    }
    let (rows, item) = t
        .dims
        .split_first()
        .ok_or_else(|| bad("the input tensor has no dimensions".into()))?;
    let item: Vec<usize> = item.iter().map(|&d| d as usize).collect();
    if item != engine.item_shape || *rows == 0 {
        return Err(bad(format!(
            "the input is shaped {:?}; the graph takes [rows >= 1, {:?}]",
            t.dims, engine.item_shape
        )));
    }
    let rows = *rows as usize;
    let want = rows
        .checked_mul(engine.n_features)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad("the input tensor's size overflows".into()))?;
    if t.data.len() != want {
        return Err(bad(format!(
            "the input holds {} bytes; {rows} rows of {} f32 take {want}",
            t.data.len(),
            engine.n_features
        )));
    }
    let out_bytes = rows.saturating_mul(engine.n_outputs).saturating_mul(4);
    if want > max_bytes || out_bytes > max_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!("{rows} rows exceed the instance's {max_bytes}-byte memory cap"),
        ));
    }
    Ok((rows, f32s(&t.data)))
}

/// Little-endian f32 bytes as values: one copy (a CNN's input is 600 KB; a per-value loop
/// cost milliseconds in an unoptimised build).
fn f32s(bytes: &[u8]) -> Vec<f32> {
    let mut x = vec![0f32; bytes.len() / 4];
    #[cfg(target_endian = "little")]
    // SAFETY: `x` holds exactly `bytes.len() / 4` f32s, every bit pattern is a valid f32,
    // and on a little-endian target the bytes are already in memory order.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), x.as_mut_ptr().cast::<u8>(), x.len() * 4);
    }
    #[cfg(not(target_endian = "little"))]
    for (v, c) in x.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    x
}

/// Values as little-endian f32 bytes.
fn le_bytes(x: &[f32]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: any f32 memory may be read as bytes (u8 has no alignment or validity
        // requirement); on a little-endian target that is the wire order.
        unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len() * 4) }.to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        ctx: Resource<ContextRes>,
        inputs: Vec<NamedTensor>,
    ) -> wasmtime::Result<std::result::Result<Vec<NamedTensor>, Resource<ErrorRes>>> {
        let planned = self.table.get(&ctx)?.0.clone();
        let engine = &planned.engine;
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            tensors.push((name, self.table.delete(t)?));
        }
        if tensors.len() != 1 {
            return self.error(
                ErrorCode::InvalidArgument,
                format!("the graph takes one input; {} given", tensors.len()),
            );
        }
        let (rows, x) = match input(engine, &tensors[0].1, self.ctx.max_bytes) {
            Ok(v) => v,
            Err((code, m)) => return self.error(code, m),
        };
        drop(tensors);
        let stats = self.ctx.pool.stats.clone();
        let out = if planned.small(rows) {
            stats.inline.fetch_add(1, Ordering::Relaxed);
            planned.run(&x, rows, &stats)
        } else {
            match self.pooled(planned.clone(), x, rows).await? {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            }
        };
        let out = match out {
            Ok(out) => out,
            Err(e) => return self.error(ErrorCode::RuntimeError, e.message),
        };
        let data = le_bytes(&out);
        let t = self.table.push(TensorRes {
            dims: vec![rows as u32, engine.n_outputs as u32],
            ty: TensorType::Fp32,
            data,
        })?;
        let name = engine
            .summary
            .signature
            .outputs
            .first()
            .map_or_else(|| "output".to_string(), |o| o.name.clone());
        Ok(Ok(vec![(name, t)]))
    }

    fn drop(&mut self, ctx: Resource<ContextRes>) -> wasmtime::Result<()> {
        self.table.delete(ctx)?;
        Ok(())
    }
}

impl NnView<'_> {
    /// Runs on the pool under the deadline: the run's result, or the error resource to
    /// answer with (busy, timeout).
    async fn pooled(
        &mut self,
        planned: Arc<Planned>,
        x: Vec<f32>,
        rows: usize,
    ) -> wasmtime::Result<std::result::Result<Result<Vec<f32>, RunError>, Resource<ErrorRes>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stats = self.ctx.pool.stats.clone();
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            stats
                .wait_nanos
                .fetch_add(nanos(queued.elapsed()), Ordering::Relaxed);
            let _ = tx.send(planned.run(&x, rows, &stats));
        });
        if let Err(busy) = self.ctx.pool.submit(job) {
            // `unknown` is falaj's "busy": the component answers 503 model_busy.
            return self.error(ErrorCode::Unknown, busy);
        }
        match tokio::time::timeout(self.ctx.deadline, rx).await {
            Err(_) => {
                self.ctx.pool.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.error(
                    ErrorCode::Timeout,
                    format!("the host did not finish within {:?}", self.ctx.deadline),
                )
            }
            Ok(Err(_)) => self.error(ErrorCode::RuntimeError, "the host run was lost"),
            Ok(Ok(out)) => Ok(Ok(out)),
        }
    }
}

/// The test files' fixtures and helpers (`write_version`), shared with the unit tests below.
#[cfg(test)]
#[path = "../tests/component_support/mod.rs"]
mod component_support;

#[cfg(test)]
mod tests {
    use super::*;

    use super::component_support;

    /// The `mlp-folded` case staged as the fleet stages a version: the artifact, its manifest
    /// and a `version.json` recording its digest.
    fn staged() -> (tempfile::TempDir, HostGraph) {
        let src = component_support::repo_root().join("tests/fixtures/models/mlp-folded");
        let dir = tempfile::tempdir().unwrap();
        let onnx = std::fs::read(src.join("model.onnx")).unwrap();
        std::fs::write(dir.path().join("model.onnx"), &onnx).unwrap();
        std::fs::copy(src.join("manifest.json"), dir.path().join("manifest.json")).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
        let digest = falaj_inference::engine::sha256(&onnx);
        let model = manifest["model"].as_str().unwrap();
        component_support::write_version(dir.path(), model, 1, &onnx, None, &digest);
        let graph = HostGraph::load(dir.path()).unwrap();
        (dir, graph)
    }

    fn code(
        table: &ResourceTable,
        r: std::result::Result<impl Sized, Resource<ErrorRes>>,
    ) -> ErrorCode {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => table.get(&e).unwrap().code,
        }
    }

    /// What a guest could ask of the host: only the verified graph, by its digest, with
    /// inputs the graph takes, within the memory cap.
    #[tokio::test]
    async fn a_guest_gets_only_the_verified_graph_and_only_well_formed_runs() {
        let (_dir, graph) = staged();
        let pool = Arc::new(HostPool::new(1, 4).unwrap());
        let n = graph.planned.engine.n_features;
        let mut ctx = NnCtx::new(Some(&graph), pool.clone(), Duration::from_secs(5), 4096);
        let mut table = ResourceTable::new();
        let mut view = NnView::new(&mut ctx, &mut table);

        // Bytes of its own: never planned.
        let r = graph::Host::load(
            &mut view,
            vec![b"not a model".to_vec()],
            GraphEncoding::Onnx,
            ExecutionTarget::Cpu,
        )
        .unwrap();
        assert_eq!(code(view.table, r), ErrorCode::UnsupportedOperation);
        // Another version's digest: not here.
        let other = format!("sha256:{}", "0".repeat(64));
        let r = graph::Host::load_by_name(&mut view, other).unwrap();
        assert_eq!(code(view.table, r), ErrorCode::NotFound);

        // The verified one, by its digest.
        let g = graph::Host::load_by_name(&mut view, graph.digest.clone())
            .unwrap()
            .unwrap();
        let ctx_res = graph::HostGraph::init_execution_context(&mut view, g)
            .unwrap()
            .unwrap();
        let ctx_again = || Resource::<ContextRes>::new_borrow(ctx_res.rep());
        let mut run = async |dims: Vec<u32>, ty: TensorType, values: Vec<f32>| {
            let t = tensor::HostTensor::new(&mut view, dims, ty, le_bytes(&values)).unwrap();
            let out = inference::HostGraphExecutionContext::compute(
                &mut view,
                ctx_again(),
                vec![("input".into(), t)],
            )
            .await
            .unwrap();
            match out {
                Ok(outs) => Ok(view.table.get(&outs[0].1).unwrap().dims.clone()),
                Err(e) => Err(view.table.get(&e).unwrap().code),
            }
        };
        // Two rows: answered, two rows of outputs.
        let dims = run(vec![2, n as u32], TensorType::Fp32, vec![0.5; 2 * n]).await;
        assert_eq!(dims.unwrap()[0], 2);
        // The wrong width, the wrong type, zero rows: invalid, nothing run.
        for (dims, ty, len) in [
            (vec![1, n as u32 + 1], TensorType::Fp32, n + 1),
            (vec![1, n as u32], TensorType::I32, n),
            (vec![0, n as u32], TensorType::Fp32, 0),
            (vec![2, n as u32], TensorType::Fp32, n),
        ] {
            let r = run(dims.clone(), ty, vec![0.0; len]).await;
            assert_eq!(r, Err(ErrorCode::InvalidArgument), "{dims:?} {ty:?}");
        }
        // More rows than the 4 KiB cap holds.
        let rows = 4096 / (4 * n) + 1;
        let r = run(
            vec![rows as u32, n as u32],
            TensorType::Fp32,
            vec![0.0; rows * n],
        )
        .await;
        assert_eq!(r, Err(ErrorCode::TooLarge));
        assert_eq!(
            pool.stats().runs.load(Ordering::Relaxed),
            1,
            "only the good run ran"
        );
    }

    #[test]
    fn tensor_bytes_round_trip_as_little_endian_f32() {
        let x = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.25e7];
        let b = le_bytes(&x);
        assert_eq!(&b[..4], &1.5f32.to_le_bytes());
        assert_eq!(f32s(&b), x);
    }

    #[test]
    fn a_full_queue_answers_at_once_and_the_pool_keeps_running() {
        let pool = HostPool::new(1, 1).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<u32>();
        // One run holds the thread, one waits in the queue: the third is refused.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            started_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
        }))
        .unwrap();
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let d = done_tx.clone();
        let queued = (0..50).find_map(|_| {
            let d = d.clone();
            pool.submit(Box::new(move || d.send(1).unwrap())).err()
        });
        let busy = queued.expect("a bounded queue refuses once full");
        assert!(
            busy.contains("1 host inference threads busy and 1 runs queued"),
            "{busy}"
        );
        hold_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        pool.submit(Box::new(move || done_tx.send(2).unwrap()))
            .unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    }
}
