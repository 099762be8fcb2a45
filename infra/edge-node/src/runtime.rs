//! The sandbox: one wasmtime [`Engine`] per node, the inference component compiled once (and
//! cached on disk by digest), and one [`ModelRuntime`] per deployed model version.
//!
//! A `ModelRuntime` owns a wasmtime-wasi-http [`ProxyHandler`]: instances are prepared once
//! (`instantiate_pre`), created on demand, and **reused** for many requests, so the component
//! loads and optimises its model once per instance. Each instance runs in its own [`Store`]
//! with:
//!
//! - a linear-memory cap (the pooling allocator's slot size and a [`StoreLimits`] both say
//!   so; an allocation past it fails inside the guest, which traps);
//! - a per-request deadline: the engine's epoch ticks every [`EPOCH_TICK`], every tick makes
//!   a running guest yield, and a request that has not answered by its deadline expires; the
//!   instance that was running it is then dropped;
//! - the model directory mounted read-only at `/model`, no other files, no network (outgoing
//!   `wasi:http` requests are refused), stderr passed through for the component's log lines.
//!
//! A request that traps, loops or balloons fails alone: its instance is thrown away and the
//! next request gets a fresh one.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, GuestTaskId, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreContextMut,
    StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, ProxyHandler, ProxyPre,
    ShouldAccept, TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// How often the engine's epoch advances: the granularity of request deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest response body the host accepts from a component.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Sandbox limits, the same for every model on a node.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear-memory cap per instance, bytes.
    pub memory_bytes: usize,
    /// Time a request may run inside the component.
    pub deadline: Duration,
    /// Requests one model version runs at once (each in its own instance); more wait up to
    /// the deadline for a slot, then get 503.
    pub max_concurrent: usize,
    /// Instances on the node at once, all versions together (pooling allocator slots).
    pub max_instances: u32,
    /// Requests one instance serves before it is replaced.
    pub instance_reuse: usize,
    /// An idle instance is dropped after this long.
    pub idle_timeout: Duration,
    /// Set `FALAJ_FAULTS=1` in instances (the component's trap/loop/balloon drills; tests).
    pub fault_drills: bool,
    /// Threads running host inference ([`crate::nn`]), all versions together.
    pub host_threads: usize,
    /// Host runs that may wait for a thread; past that, a request answers 503 at once.
    pub host_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            deadline: Duration::from_secs(5),
            max_concurrent: 4,
            max_instances: 64,
            instance_reuse: 100_000,
            idle_timeout: Duration::from_secs(600),
            fault_drills: false,
            host_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            host_queue: 64,
        }
    }
}

/// Store data of one instance.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutbound,
    limits: StoreLimits,
    nn: crate::nn::NnCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A model has no business calling out: every outgoing request is denied.
struct NoOutbound;

type OutboundIo = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: OutboundIo,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, OutboundIo), HttpError>> + Send>
    {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("falaj-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node's engine and linker.
pub struct EdgeEngine {
    engine: Engine,
    linker: Linker<Host>,
    limits: Limits,
    pool: Arc<crate::nn::HostPool>,
    _ticker: EpochTicker,
}

/// A component compiled for this engine.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component.
    pub component: Component,
    /// `sha256:<hex>` of the `.wasm` it was compiled from.
    pub digest: String,
    /// Whether it came from the on-disk cache (no compilation).
    pub from_cache: bool,
    /// Time to compile or deserialise.
    pub load_time: Duration,
}

impl EdgeEngine {
    /// An engine with the pooling allocator sized for `limits`, epoch interruption, and the
    /// component model (sync and async: WASI 0.2 and 0.3 components both run).
    pub fn new(limits: Limits) -> Result<Self> {
        if limits.memory_bytes < (1 << 20) {
            bail!(
                "memory cap {} bytes is below 1 MiB; no component can run in it",
                limits.memory_bytes
            );
        }
        let mut pool = PoolingAllocationConfig::new();
        let n = limits.max_instances.max(1);
        pool.total_component_instances(n)
            // A component built by wasm-component-ld has a handful of core instances
            // (the program, adapters, shims) and up to two memories.
            .total_core_instances(n * 16)
            .total_memories(n * 4)
            .total_tables(n * 8)
            .total_stacks(n * 4)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        // Everything `wasmtime serve -Scli -Shttp -Sp3` offers a component, WASI 0.2 and 0.3.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        // And wasi:nn, for the host-nn build of the component (the plain build ignores it).
        crate::nn::add_to_linker(&mut linker, |h: &mut Host| {
            crate::nn::NnView::new(&mut h.nn, &mut h.table)
        })?;
        let pool = Arc::new(crate::nn::HostPool::new(
            limits.host_threads,
            limits.host_queue,
        )?);
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            limits,
            pool,
            _ticker: ticker,
        })
    }

    /// The limits every instance gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles the component at `wasm`, or loads it from `cache_dir` where an earlier run
    /// compiled the same bytes with a compatible engine (`<sha256>-<engine hash>.cwasm`).
    /// Compiling takes seconds to a minute; loading from the cache, milliseconds.
    pub fn load_component(&self, wasm: &Path, cache_dir: &Path) -> Result<LoadedComponent> {
        let t0 = Instant::now();
        let bytes = std::fs::read(wasm)
            .with_context(|| format!("reading the component {}", wasm.display()))?;
        let hex = hex::encode(Sha256::digest(&bytes));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let cached = cache_dir.join(format!("{hex}-{:016x}.cwasm", h.finish()));
        if cached.exists() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (the name carries the compatibility hash) into the node's own
            // cache directory; whoever can write there already controls the node.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => {
                    return Ok(LoadedComponent {
                        component,
                        digest: format!("sha256:{hex}"),
                        from_cache: true,
                        load_time: t0.elapsed(),
                    });
                }
                Err(e) => tracing::warn!(
                    path = %cached.display(),
                    error = %e,
                    "cached component unusable; compiling again"
                ),
            }
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling the component {}", wasm.display()))?;
        let serialized = component.serialize().map_err(anyhow::Error::from)?;
        crate::fsutil::write_atomic(&cached, &serialized)
            .with_context(|| format!("caching the compiled component at {}", cached.display()))?;
        Ok(LoadedComponent {
            component,
            digest: format!("sha256:{hex}"),
            from_cache: false,
            load_time: t0.elapsed(),
        })
    }

    /// The host inference path's counters ([`crate::nn::HostStats`]).
    pub fn host_stats(&self) -> &crate::nn::HostStats {
        self.pool.stats()
    }

    /// Whether `component` imports wasi:nn (the host-nn build), so it can take the host path.
    pub fn imports_nn(&self, component: &Component) -> bool {
        component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:nn/"))
    }

    /// A runtime serving the model in `dir` (mounted at `/model`) with `component`; with
    /// `host`, its instances may hand that graph to the host ([`crate::nn`]).
    pub fn runtime(
        &self,
        component: &Component,
        dir: &Path,
        host: Option<crate::nn::HostGraph>,
    ) -> Result<ModelRuntime> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("linking the component (does it export wasi:http/handler?)")?;
        let pre = match wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()) {
            Ok(p3) => ProxyPre::P3(p3),
            Err(_) => ProxyPre::P2(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context("the component exports neither wasi:http 0.3 nor 0.2")?,
            ),
        };
        let state = VersionState {
            engine: self.engine.clone(),
            pre,
            dir: dir.to_path_buf(),
            limits: self.limits.clone(),
            instances: AtomicU64::new(0),
            host,
            pool: self.pool.clone(),
        };
        Ok(ModelRuntime {
            handler: ProxyHandler::new(state),
            permits: Arc::new(Semaphore::new(self.limits.max_concurrent.max(1))),
            deadline: self.limits.deadline,
            dir: dir.to_path_buf(),
        })
    }
}

struct VersionState {
    engine: Engine,
    pre: ProxyPre<Host>,
    dir: PathBuf,
    limits: Limits,
    instances: AtomicU64,
    host: Option<crate::nn::HostGraph>,
    pool: Arc<crate::nn::HostPool>,
}

impl HandlerState for VersionState {
    type StoreData = Host;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, Expiry, Worker>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.preopened_dir(&self.dir, "/model", FsPerms::ReadOnly)?;
        wasi.inherit_stderr();
        if self.limits.fault_drills {
            wasi.env("FALAJ_FAULTS", "1");
        }
        let host = Host {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutbound,
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .build(),
            nn: crate::nn::NnCtx::new(
                self.host.as_ref(),
                self.pool.clone(),
                self.limits.deadline,
                self.limits.memory_bytes,
            ),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        // Yield to the host at every epoch tick, so a guest that never returns still lets the
        // request deadline fire; the worker then drops the instance.
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            proxy,
            view: <Host as WasiHttpView>::http,
            expiration: Expiry {
                idle: self.limits.idle_timeout,
                deadline: self.limits.deadline,
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400 * 365))),
            },
            state: Worker {
                reuse: self.limits.instance_reuse.max(1),
                deadline: self.limits.deadline,
            },
        })
    }
}

/// When a worker's instance is dropped: idle too long, or a request (or post-return work)
/// running past the deadline.
struct Expiry {
    idle: Duration,
    deadline: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        let wait = match status {
            WorkerStatus::Idle => me.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.deadline,
        };
        let Some(at) = start.checked_add(wait) else {
            return Poll::Pending;
        };
        let at = tokio::time::Instant::from_std(at);
        if me.sleep.deadline() != at {
            me.sleep.as_mut().reset(at);
        }
        me.sleep.as_mut().poll(cx)
    }
}

/// One instance runs one request at a time (tract's work is CPU-bound and single-threaded
/// inside the sandbox; concurrency comes from more instances).
struct Worker {
    reuse: usize,
    deadline: Duration,
}

impl WorkerState for Worker {
    type StoreData = Host;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent >= 1 {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Host>,
        _data: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + 'static + Send + Sync>> {
        Box::pin(tokio::time::sleep(self.deadline))
    }

    fn drop(&self, store: Store<Host>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "instance ended with an error; dropped");
        }
        drop(store);
    }
}

/// Why a call into the component produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Every slot for this version was busy for the whole deadline.
    #[error("the model is busy: {max} requests already running for {waited:?}")]
    Busy {
        /// Concurrency limit.
        max: usize,
        /// How long the request waited.
        waited: Duration,
    },
    /// The request ran past its deadline (a loop, or too much work).
    #[error("the model did not answer within its {0:?} deadline; its instance was stopped")]
    Deadline(Duration),
    /// The guest trapped (a panic, or an allocation past the memory cap).
    #[error("the model crashed while handling the request ({0}); its instance was discarded")]
    Crashed(String),
    /// No instance could be created.
    #[error("the model could not be started: {0}")]
    Unavailable(String),
    /// The response was malformed or too large.
    #[error("the model's response could not be read: {0}")]
    BadResponse(String),
}

impl CallError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Busy { .. } | Self::Unavailable(_) => 503,
            Self::Deadline(_) => 504,
            Self::Crashed(_) | Self::BadResponse(_) => 500,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "model_busy",
            Self::Deadline(_) => "deadline_exceeded",
            Self::Crashed(_) => "model_crashed",
            Self::Unavailable(_) => "model_unavailable",
            Self::BadResponse(_) => "bad_model_response",
        }
    }
}

/// The component's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: http::StatusCode,
    /// Headers as the component set them.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// One model version, served by instances of the component.
pub struct ModelRuntime {
    handler: ProxyHandler<VersionState>,
    permits: Arc<Semaphore>,
    deadline: Duration,
    dir: PathBuf,
}

impl ModelRuntime {
    /// The directory mounted at `/model`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Instances created so far (1 while one instance keeps serving).
    pub fn instances_created(&self) -> u64 {
        self.handler.state().instances.load(Ordering::Relaxed)
    }

    /// Sends one request to the component: `path` is the component's route (`/predict`).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, CallError> {
        let t0 = Instant::now();
        let _permit = match tokio::time::timeout(self.deadline, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(CallError::Busy {
                    max: self.handler.state().limits.max_concurrent,
                    waited: t0.elapsed(),
                });
            }
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "falaj-edge")
            .header(http::header::CONTENT_LENGTH, body.len());
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| CallError::Unavailable(format!("building the request: {e}")))?;
        // The worker enforces the deadline; this outer timeout is a second line of defence.
        let grace = self.deadline + Duration::from_secs(1);
        let started = Instant::now();
        let resp = match tokio::time::timeout(grace, self.handler.handle((), req)).await {
            Err(_) => return Err(CallError::Deadline(self.deadline)),
            Ok(Ok(r)) => r,
            // An expired request may be reported as its worker going away (the instance is
            // dropped under it): past the deadline, that is the deadline.
            Ok(Err(_)) if started.elapsed() >= self.deadline => {
                return Err(CallError::Deadline(self.deadline));
            }
            Ok(Err(e)) => return Err(classify(&e, self.deadline)),
        };
        let (parts, body) = resp.into_parts();
        let left = grace.saturating_sub(t0.elapsed());
        let collected =
            tokio::time::timeout(left, Limited::new(body, MAX_RESPONSE_BYTES).collect()).await;
        let body = match collected {
            Err(_) => return Err(CallError::Deadline(self.deadline)),
            Ok(Err(e)) => return Err(CallError::BadResponse(e.to_string())),
            Ok(Ok(c)) => c.to_bytes(),
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn classify(e: &wasmtime::Error, deadline: Duration) -> CallError {
    if e.is::<ExpirationError>() {
        return CallError::Deadline(deadline);
    }
    if e.is::<TrapOrPanicError>() {
        return CallError::Crashed("trap".into());
    }
    if let Some(i) = e.downcast_ref::<InstantiationError<()>>() {
        return CallError::Unavailable(format!("{:#}", i.error));
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return CallError::Crashed(trap.to_string());
    }
    CallError::Crashed(first_line(&format!("{e:#}")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(300).collect()
}
