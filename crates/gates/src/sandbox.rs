//! Running a model in the gates under a wall-clock deadline and a memory cap.
//!
//! A model is untrusted input: a 191-byte ONNX file whose `ConstantOfShape` asks for a
//! 20000 x 20000 tensor costs 12 s and 1.5 GB while tract merely *loads* it (constant
//! folding), and a larger shape takes the machine. Nothing inside one process can stop that,
//! so the gates measure in a child process:
//!
//! - the binary that runs the gates (`falaj`, `falaj-fn-validate`) calls
//!   [`serve_worker_if_asked`] first in `main`; run as `<binary> __falaj-gates-worker`, it reads
//!   one job from stdin, measures, writes the result to stdout and exits;
//! - the parent starts that child with `RLIMIT_AS` set to the memory cap
//!   (`FALAJ_GATES_MAX_MEMORY_BYTES`, default 4 GiB) and kills it at the deadline
//!   (`FALAJ_GATES_DEADLINE_SECS`, default 300 s). Either ends in a failed report naming the
//!   limit, never a hung or killed validator.
//!
//! A program that links the library without declaring itself a worker (a test harness, or a
//! library user) measures in a thread under the same deadline but without the memory cap,
//! unless `FALAJ_GATES_WORKER` names a binary that is one (e.g. the `falaj` CLI).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use falaj_core::policy::{GatePolicy, GateResult};
use falaj_core::{ModelVersion, TrainingManifest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::holdout::{HoldoutData, parse_holdout};
use crate::measure::{GateInputs, measure};
use crate::model::ModelError;

/// The argument that makes a gates binary a worker.
pub const WORKER_ARG: &str = "__falaj-gates-worker";

static SELF_IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Limits on one measurement.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time for loading and scoring the model (and the baseline).
    pub deadline: Duration,
    /// Address space of the worker process, in bytes.
    pub max_memory: u64,
    /// The worker binary; `None` measures in a thread (deadline only).
    pub worker: Option<PathBuf>,
}

impl Limits {
    /// From `FALAJ_GATES_DEADLINE_SECS` (300), `FALAJ_GATES_MAX_MEMORY_BYTES` (4 GiB) and
    /// `FALAJ_GATES_WORKER` (else this executable, if it serves as a worker).
    pub fn from_env() -> Result<Self, falaj_runtime::BadLimit> {
        let worker = match std::env::var_os("FALAJ_GATES_WORKER").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None if SELF_IS_WORKER.load(Ordering::Relaxed) => std::env::current_exe().ok(),
            None => None,
        };
        Ok(Self {
            deadline: Duration::from_secs(falaj_runtime::positive_env(
                "FALAJ_GATES_DEADLINE_SECS",
                300,
            )?),
            max_memory: falaj_runtime::positive_env("FALAJ_GATES_MAX_MEMORY_BYTES", 4 << 30)?,
            worker,
        })
    }
}

/// What a worker is given: everything `measure` reads, the holdout as its raw bytes (parsed
/// again in the worker by the same function).
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    version: ModelVersion,
    manifest: TrainingManifest,
    policy_name: String,
    policy_src: String,
    sensitive: Option<String>,
    holdout_len: u64,
    onnx_len: u64,
    baseline: Option<(u64, TrainingManifest, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Measured(Vec<GateResult>),
    Refused(String),
}

/// The inputs of one measurement, owned so they can cross to a thread or a process.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The version.
    pub version: ModelVersion,
    /// Its manifest.
    pub manifest: TrainingManifest,
    /// Policy name and TOML source.
    pub policy: (String, String),
    /// The holdout's raw bytes, and the column the fairness gate groups by.
    pub holdout: (bytes::Bytes, Option<String>),
    /// Parsed holdout (for the in-thread path).
    pub data: HoldoutData,
    /// ONNX bytes.
    pub onnx: bytes::Bytes,
    /// Production's version number, ONNX and manifest, for the no-regression gate.
    pub baseline: Option<(u64, bytes::Bytes, TrainingManifest)>,
}

fn run(m: &Measurement, policy: &GatePolicy) -> Result<Vec<GateResult>, ModelError> {
    measure(&GateInputs {
        version: &m.version,
        manifest: &m.manifest,
        onnx: &m.onnx,
        policy,
        data: &m.data,
        baseline: m.baseline.as_ref().map(|(n, b, pm)| (*n, &b[..], pm)),
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Measures every gate under `limits`; `Err` is the reason the version is rejected.
pub async fn measure_within(
    m: Measurement,
    limits: &Limits,
) -> Result<Vec<GateResult>, ModelError> {
    let deadline = limits.deadline;
    let late = || {
        format!(
            "the model did not load and score the holdout within {} s (FALAJ_GATES_DEADLINE_SECS): it is rejected, as the edge could not serve it either",
            deadline.as_secs()
        )
    };
    let policy = GatePolicy::parse(&m.policy.1, &m.policy.0).map_err(|e| e.to_string())?;
    let Some(exe) = &limits.worker else {
        // In a thread: the deadline holds, the thread is abandoned if it runs over.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("falaj-gates".into())
            .spawn(move || {
                let _ = tx.send(run(&m, &policy));
            })
            .map_err(|e| format!("cannot start the evaluator: {e}"))?;
        return match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                Err(String::from("the evaluator stopped without an answer (it panicked)").into())
            }
            Err(_) => Err(late().into()),
        };
    };
    let job = Job {
        version: m.version.clone(),
        manifest: m.manifest.clone(),
        policy_name: m.policy.0.clone(),
        policy_src: m.policy.1.clone(),
        sensitive: m.holdout.1.clone(),
        holdout_len: m.holdout.0.len() as u64,
        onnx_len: m.onnx.len() as u64,
        baseline: m
            .baseline
            .as_ref()
            .map(|(n, b, pm)| (*n, pm.clone(), b.len() as u64)),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(WORKER_ARG)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let cap = limits.max_memory;
    #[cfg(unix)]
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: cap as libc::rlim_t,
                rlim_max: cap as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the gates worker {}: {e}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let feed = async move {
        let mut header = serde_json::to_vec(&job).expect("jobs serialise");
        header.push(b'\n');
        stdin.write_all(&header).await?;
        stdin.write_all(&m.holdout.0).await?;
        stdin.write_all(&m.onnx).await?;
        if let Some((_, b, _)) = &m.baseline {
            stdin.write_all(b).await?;
        }
        stdin.shutdown().await
    };
    let work = async {
        // A worker that dies early closes its stdin: its exit status says why.
        let _ = feed.await;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        // Dropping the child kills it (kill_on_drop).
        Err(_) => return Err(late().into()),
    };
    let status = status.map_err(|e| format!("the gates worker failed: {e}"))?;
    let out_of_memory = |said: &str| {
        ["memory allocation of", "failed to allocate", "Cannot allocate memory"]
            .iter()
            .any(|m| said.contains(m))
            .then(|| {
                format!(
                    "the model needs more than {} of memory to load and score (FALAJ_GATES_MAX_MEMORY_BYTES): it is rejected, as an edge node could not hold it either ({})",
                    gib(cap),
                    said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
                )
            })
    };
    if let Ok(answer) = serde_json::from_slice::<Answer>(&out)
        && status.success()
    {
        return match answer {
            Answer::Measured(g) => Ok(g),
            // tract turns a refused allocation into a panic, which the loader reports.
            Answer::Refused(why) => Err(out_of_memory(&why).unwrap_or(why).into()),
        };
    }
    let err = String::from_utf8_lossy(&err);
    if let Some(why) = out_of_memory(&err) {
        return Err(why.into());
    }
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "the evaluator process ended without an answer ({status}){}",
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    )
    .into())
}

/// In `main` of a binary that runs the gates: run as a worker if asked (never returns then);
/// otherwise note that this executable can serve as one.
pub fn serve_worker_if_asked() {
    if std::env::args().nth(1).as_deref() != Some(WORKER_ARG) {
        SELF_IS_WORKER.store(true, Ordering::Relaxed);
        return;
    }
    let answer = match worker() {
        Ok(a) => a,
        Err(e) => Answer::Refused(e),
    };
    let out = serde_json::to_vec(&answer).expect("answers serialise");
    let mut stdout = std::io::stdout().lock();
    let ok = stdout.write_all(&out).and_then(|_| stdout.flush()).is_ok();
    std::process::exit(if ok { 0 } else { 1 });
}

fn worker() -> Result<Answer, String> {
    let mut input = std::io::stdin().lock();
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        input
            .read_exact(&mut byte)
            .map_err(|e| format!("reading the job: {e}"))?;
        if byte[0] == b'\n' {
            break;
        }
        header.push(byte[0]);
    }
    let job: Job = serde_json::from_slice(&header).map_err(|e| format!("bad job: {e}"))?;
    let mut read = |len: u64| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; len as usize];
        input
            .read_exact(&mut b)
            .map_err(|e| format!("reading the job: {e}"))?;
        Ok(b)
    };
    let holdout = read(job.holdout_len)?;
    let onnx = read(job.onnx_len)?;
    let baseline = match job.baseline {
        Some((n, pm, len)) => Some((n, bytes::Bytes::from(read(len)?), pm)),
        None => None,
    };
    let policy = GatePolicy::parse(&job.policy_src, &job.policy_name).map_err(|e| e.to_string())?;
    let data = parse_holdout(&holdout, &job.manifest, job.sensitive.as_deref())
        .map_err(|e| e.to_string())?;
    let m = Measurement {
        version: job.version,
        manifest: job.manifest,
        policy: (job.policy_name, job.policy_src),
        holdout: (bytes::Bytes::from(holdout), job.sensitive),
        data,
        onnx: bytes::Bytes::from(onnx),
        baseline,
    };
    Ok(match run(&m, &policy) {
        Ok(g) => Answer::Measured(g),
        Err(e) => Answer::Refused(e.message),
    })
}
