//! `falaj-edge`: serve the models deployed to one environment, from the WASM component.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use falaj_core::promotion::Stage;
use falaj_edge::fleet::{Fleet, pull_loop};
use falaj_edge::live::Live;
use falaj_edge::metrics::{Metrics, Sketches};
use falaj_edge::runtime::{EdgeEngine, Limits};
use falaj_edge::server::{Node, serve};
use falaj_store::{self as store, OpenOptions};

/// Serves every model deployed to one environment, each version in a wasmtime sandbox.
///
/// The node pulls `deployments/<env>/<model>.json` from the store every --poll-ms, verifies
/// the ed25519 signature and every artifact digest, stages the files in --cache, warms the
/// new version up and swaps it in atomically; on any failure the last good version keeps
/// serving. Models answer at POST /v1/models/<name>/predict (JSON rows or raw f32);
/// GET /v1/models, /health and /metrics (Prometheus) describe the node. Input sketches go to
/// telemetry/<env>/<node>/ every --sketch-secs for drift detection.
///
/// Connection limits: headers within FALAJ_HTTP_HEADER_TIMEOUT_MS (default 10000), at most
/// FALAJ_HTTP_MAX_CONNECTIONS (default 512) connections at once.
///
/// Example, on the embedded default store after `falaj promote` to staging:
///
///   scripts/wasm-component.sh
///   falaj-edge --env staging --listen 127.0.0.1:8090
///   curl -d '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}' localhost:8090/v1/models/iris/predict
#[derive(Debug, Parser)]
#[command(name = "falaj-edge", version, verbatim_doc_comment)]
struct Args {
    /// Store to pull from: dir://PATH or s3://BUCKET[/PREFIX].
    #[arg(long, env = "FALAJ_STORE", default_value = store::DEFAULT_STORE)]
    store: String,
    /// Comma-separated regions the store may be in (a bucket elsewhere is refused).
    #[arg(long, env = "FALAJ_ALLOWED_REGIONS", default_value = "me-central-1")]
    allowed_regions: String,
    /// Environment to serve (`prod`/`production`, `staging`, or any name deployments use).
    #[arg(long, env = "FALAJ_ENV", default_value = "prod")]
    env: String,
    /// Address to serve HTTP on (port 0 picks a free one; the startup line says which).
    #[arg(long, env = "FALAJ_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The inference component (.wasm), built by scripts/wasm-component.sh. The default is
    /// its wasi:nn build, which can take the host path; falaj-inference.wasm (the plain build)
    /// runs every version in the sandbox.
    #[arg(
        long,
        env = "FALAJ_EDGE_COMPONENT",
        default_value = "target/wasm/falaj-inference-nn.wasm"
    )]
    component: PathBuf,
    /// Node cache: compiled component, staged versions, last good manifests.
    #[arg(long, env = "FALAJ_EDGE_CACHE", default_value = ".falaj-edge")]
    cache: PathBuf,
    /// Where compiled components are kept (default: <cache>/components). Nodes on one
    /// machine may share it: entries are named by component digest and engine hash.
    #[arg(long, env = "FALAJ_EDGE_CODE_CACHE")]
    code_cache: Option<PathBuf>,
    /// This node's name in telemetry keys and metrics (default: the host name).
    #[arg(long, env = "FALAJ_EDGE_NODE")]
    node: Option<String>,
    /// Trusted deployment public key, 64 hex digits (`keys/deploy.pub`'s `public_key`).
    /// Required, or --trust-key-file: a node that took its key from the store would run
    /// whatever a store writer self-signed.
    #[arg(long, env = "FALAJ_TRUST_KEY")]
    trust_key: Option<String>,
    /// File holding the trusted public key (64 hex digits, or keys/deploy.pub's JSON).
    #[arg(long, env = "FALAJ_TRUST_KEY_FILE", conflicts_with = "trust_key")]
    trust_key_file: Option<PathBuf>,
    /// One-machine use only (`falaj demo`): trust keys/deploy.pub from the store instead of a
    /// pinned key. Anyone who can write the store can then deploy code to this node.
    #[arg(long, conflicts_with_all = ["trust_key", "trust_key_file"])]
    insecure_trust_store_key: bool,
    /// How often to look for changed deployments, milliseconds.
    #[arg(long, default_value_t = 2000)]
    poll_ms: u64,
    /// How often to write input sketches, seconds.
    #[arg(long, default_value_t = 60)]
    sketch_secs: u64,
    /// Linear-memory cap per instance, MiB.
    #[arg(long, default_value_t = 512)]
    memory_mb: usize,
    /// Deadline per request inside the component, milliseconds.
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    /// Requests one model version runs at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Instances on the node at once (pooling allocator slots).
    #[arg(long, default_value_t = 64)]
    max_instances: u32,
    /// Requests one instance serves before it is replaced (1: a fresh instance, and a model
    /// load, per request — what a WASI 0.2 host does; for measuring that cost).
    #[arg(long, default_value_t = 100_000)]
    instance_reuse: usize,
    /// Micro-batching: the longest a prediction waits for others to join its batch, in
    /// microseconds, when its model version is already busy (an idle version answers at
    /// once). 0 turns batching off. Tabular bodies only (docs/edge.md).
    #[arg(long, default_value_t = 500, env = "FALAJ_EDGE_BATCH_WINDOW_US")]
    batch_window_us: u64,
    /// A batch goes as soon as it holds this many rows.
    #[arg(long, default_value_t = 1024)]
    batch_max_rows: usize,
    /// Host inference path: threads that run graphs natively for versions deployed with
    /// `runtime = "host"` (all versions together; default: one per core). Needs the wasi:nn
    /// build of the component (falaj-inference-nn.wasm, the default --component).
    #[arg(long, env = "FALAJ_EDGE_HOST_THREADS")]
    host_threads: Option<usize>,
    /// Host runs that may wait for a thread; past that a prediction answers 503 model_busy.
    #[arg(long, default_value_t = 64)]
    host_queue: usize,
    /// Give instances FALAJ_FAULTS=1 (the component's trap/loop/balloon drills). Tests only.
    #[arg(long, hide = true)]
    fault_drills: bool,
    /// Compile the component into the code cache, print what was done as JSON, and exit
    /// (no store needed): a node image can ship with its code cache warm.
    #[arg(long)]
    precompile: bool,
    /// Logs as JSON lines (CloudWatch), else human-readable.
    #[arg(long)]
    json_logs: bool,
}

fn trusted_key(args: &Args) -> Result<Option<ed25519_dalek::VerifyingKey>> {
    let text = match (&args.trust_key, &args.trust_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the trusted key {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let hex = match serde_json::from_str::<falaj_core::deployment::PublishedKey>(&text) {
        Ok(p) => p.public_key,
        Err(_) => text.trim().to_owned(),
    };
    Ok(Some(
        falaj_core::deployment::public_key_from_hex(&hex).context("the trusted key")?,
    ))
}

fn limits(args: &Args) -> Limits {
    Limits {
        memory_bytes: args.memory_mb << 20,
        deadline: Duration::from_millis(args.deadline_ms.max(1)),
        max_concurrent: args.max_concurrent.max(1),
        max_instances: args.max_instances.max(1),
        fault_drills: args.fault_drills,
        instance_reuse: args.instance_reuse.max(1),
        host_threads: args
            .host_threads
            .unwrap_or_else(|| Limits::default().host_threads)
            .max(1),
        host_queue: args.host_queue,
        ..Limits::default()
    }
}

fn code_cache(args: &Args) -> PathBuf {
    args.code_cache
        .clone()
        .unwrap_or_else(|| args.cache.join("components"))
}

fn check_component(args: &Args) -> Result<()> {
    if !args.component.exists() {
        bail!(
            "the inference component {} does not exist: build it with scripts/wasm-component.sh, or pass --component",
            args.component.display()
        );
    }
    Ok(())
}

fn precompile(args: &Args) -> Result<()> {
    check_component(args)?;
    let engine = EdgeEngine::new(limits(args))?;
    let loaded = engine.load_component(&args.component, &code_cache(args))?;
    println!(
        "{}",
        serde_json::json!({
            "component": loaded.digest,
            "from_cache": loaded.from_cache,
            "ms": loaded.load_time.as_millis() as u64,
            "code_cache": code_cache(args).display().to_string(),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.json_logs {
        falaj_runtime::init_json_logs();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("FALAJ_LOG")
                    .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Err(e) = run(args).await {
        eprintln!("falaj-edge: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    if args.precompile {
        return precompile(&args);
    }
    if args.trust_key.is_none() && args.trust_key_file.is_none() && !args.insecure_trust_store_key {
        anyhow::bail!(
            "no trusted deployment key: pass --trust-key HEX or --trust-key-file PATH (FALAJ_TRUST_KEY / FALAJ_TRUST_KEY_FILE) with the public key the deployments are signed with (`public_key` in the store's keys/deploy.pub, checked out of band). For one machine only, --insecure-trust-store-key trusts the store's copy"
        );
    }
    let env = Stage::for_env(&args.env).map_or(args.env.clone(), |s| s.env().to_owned());
    if env.is_empty() || env.contains('/') {
        bail!("--env {:?} is not an environment name", args.env);
    }
    let node_name = args
        .node
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .unwrap_or_else(|| "edge".into());
    let opts = OpenOptions {
        allowed: falaj_core::AllowedRegions::parse(&args.allowed_regions),
        ..OpenOptions::default()
    };
    let store = store::open(&args.store, &opts)
        .await
        .with_context(|| format!("opening the store {}", args.store))?;
    let trusted = match trusted_key(&args)? {
        Some(k) => k,
        None => {
            let published = store
                .get(&falaj_core::layout::deploy_public_key())
                .await?
                .with_context(|| {
                    "no trusted key: pass --trust-key (or --trust-key-file), or publish one with a first `falaj promote` (keys/deploy.pub)"
                })?;
            let p: falaj_core::deployment::PublishedKey =
                serde_json::from_slice(&published.bytes).context("keys/deploy.pub")?;
            let k = falaj_core::deployment::public_key_from_hex(&p.public_key)
                .context("keys/deploy.pub")?;
            tracing::warn!(
                key_id = %falaj_core::deployment::key_id(&k),
                "--insecure-trust-store-key: trusting the deployment key published in the store (keys/deploy.pub); a store writer can deploy to this node. Pin it with --trust-key"
            );
            k
        }
    };
    check_component(&args)?;
    anyhow::ensure!(
        args.batch_window_us <= 1_000,
        "--batch-window-us {} is over 1000: a prediction waits at most 1 ms for its batch (0 turns batching off)",
        args.batch_window_us
    );
    let engine = Arc::new(EdgeEngine::new(limits(&args))?);
    let loaded = engine.load_component(&args.component, &code_cache(&args))?;
    tracing::info!(
        component = %args.component.display(),
        digest = %loaded.digest,
        from_cache = loaded.from_cache,
        load_ms = loaded.load_time.as_millis() as u64,
        "component ready"
    );
    let fleet = Arc::new(
        Fleet::new(
            store.clone(),
            &env,
            trusted,
            &args.cache,
            engine,
            loaded.component.clone(),
        )
        .with_batching(falaj_edge::batch::BatchConfig {
            window: std::time::Duration::from_micros(args.batch_window_us),
            max_rows: args.batch_max_rows.max(1),
        }),
    );
    let restored = fleet.restore().await;
    let limits = falaj_runtime::httpd::Limits::from_env().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let node = Arc::new(Node {
        fleet: fleet.clone(),
        metrics: Metrics::default(),
        sketches: Sketches::new(&env, &node_name),
        live: Live::new(&env, &node_name),
        shadow_slots: Arc::new(tokio::sync::Semaphore::new(64)),
        node: node_name.clone(),
        fault_drills: args.fault_drills,
    });
    println!(
        "{}",
        serde_json::json!({
            "listening": addr.to_string(),
            "env": env,
            "node": node_name,
            "store": args.store,
            "component": loaded.digest,
            "component_from_cache": loaded.from_cache,
            "restored": restored,
        })
    );
    tokio::spawn(serve(listener, node.clone(), limits));
    tokio::spawn(pull_loop(
        fleet.clone(),
        Duration::from_millis(args.poll_ms.max(50)),
    ));
    let mut sketch_tick = tokio::time::interval(Duration::from_secs(args.sketch_secs.max(1)));
    sketch_tick.tick().await;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = sketch_tick.tick() => flush(&node, store.as_ref()).await,
            _ = term.recv() => {
                flush(&node, store.as_ref()).await;
                tracing::info!("stopping (SIGTERM)");
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                flush(&node, store.as_ref()).await;
                tracing::info!("stopping");
                return Ok(());
            }
        }
    }
}

/// Writes the open sketch and live windows to the store.
async fn flush(node: &Node, store: &dyn falaj_store::Store) {
    let sketches = node.sketches.flush(store).await;
    let live = node.live.flush(store).await;
    if !sketches.is_empty() || !live.is_empty() {
        tracing::info!(
            sketches = sketches.len(),
            live = live.len(),
            "telemetry written"
        );
    }
}
