//! The HTTP API of the component, as a pure function of (method, path, content type, body).
//!
//! The wasi:http glue in `component.rs` only moves bytes in and out; everything a response
//! says is decided here, so the host-side tests exercise exactly what the component runs.
//!
//! | route            | answer                                                            |
//! | ---------------- | ----------------------------------------------------------------- |
//! | `GET /health`    | 200 `{"status":"ok",...}`, or 503 with the load error             |
//! | `GET /metadata`  | signature, features, classes, version, digest, instance counters  |
//! | `POST /predict`  | predictions for the rows (see `input.rs` for the accepted bodies) |
//!
//! Errors are JSON: `{"status": 422, "code": "wrong_feature_count", "error": "..."}`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use falaj_core::manifest::Task;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Engine, LoadError, RUNTIME, model_dir};
use crate::input::{self, InputError, MAX_BODY_BYTES};

/// Times a model was loaded in this process (a WASM instance is one process): stays 1 for the
/// life of an instance whatever the number of requests, which `/metadata` reports.
pub static LOADS: AtomicU64 = AtomicU64::new(0);

/// A response: status, extra headers and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `content-type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// The JSON error reply for `e`.
    pub fn error(e: &InputError) -> Self {
        Self::json(
            e.status,
            &json!({"status": e.status, "code": e.code, "error": e.message}),
        )
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// A model instance: the loaded engine (or why it is not) and its counters.
pub struct Instance {
    engine: Result<Engine, LoadError>,
    id: String,
    requests: AtomicU64,
}

fn instance_id() -> String {
    // RandomState is seeded from the host's randomness (wasi:random in a component), so two
    // instances get different ids without pulling in a random-number crate.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x66616c616a);
    format!("{:016x}", h.finish())
}

static INSTANCE: OnceLock<Instance> = OnceLock::new();

/// This process's instance, loaded from [`model_dir`] on first use and never again.
pub fn instance() -> &'static Instance {
    INSTANCE.get_or_init(|| Instance::load(&model_dir()))
}

impl Instance {
    /// Loads the model in `dir` (a failed load is kept and reported, not retried per request).
    pub fn load(dir: &std::path::Path) -> Self {
        LOADS.fetch_add(1, Ordering::SeqCst);
        Self {
            engine: Engine::load(dir),
            id: instance_id(),
            requests: AtomicU64::new(0),
        }
    }

    /// The engine, if the model loaded.
    pub fn engine(&self) -> Result<&Engine, &LoadError> {
        self.engine.as_ref()
    }

    /// Answers one request.
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let served = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let path = path.split('?').next().unwrap_or("");
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let allowed = match path {
            "/health" | "/metadata" => "GET",
            "/predict" => "POST",
            _ => {
                return Reply::error(&InputError::new(
                    404,
                    "not_found",
                    format!("no route {path}: try GET /health, GET /metadata, POST /predict"),
                ));
            }
        };
        if method != allowed {
            return Reply::error(&InputError::new(
                405,
                "method_not_allowed",
                format!("{path} takes {allowed}, not {method}"),
            ))
            .header("allow", allowed.into());
        }
        let engine = match &self.engine {
            Ok(e) => e,
            Err(e) => {
                let status = if path == "/health" {
                    json!({"status": "unavailable", "error": e.0})
                } else {
                    json!({"status": 503, "code": "model_unavailable", "error": e.0})
                };
                return Reply::json(503, &status);
            }
        };
        let reply = match path {
            "/health" => Reply::json(
                200,
                &json!({
                    "status": "ok",
                    "model": engine.model_name(),
                    "version": engine.version.as_ref().map(|v| v.version),
                    "digest": engine.digest,
                }),
            ),
            "/metadata" => Reply::json(200, &self.metadata(engine, served)),
            _ => match predict(engine, content_type, body) {
                Ok(r) => r,
                Err(e) => Reply::error(&e),
            },
        };
        reply
            .header("x-falaj-model", engine.model_name().into())
            .header(
                "x-falaj-version",
                engine
                    .version
                    .as_ref()
                    .map_or_else(|| "unregistered".into(), |v| v.version.to_string()),
            )
            .header("x-falaj-digest", engine.digest.clone())
            .header("x-falaj-instance", format!("{}/{served}", self.id))
            .header("x-falaj-runtime", engine.runtime().into())
    }

    fn metadata(&self, e: &Engine, served: u64) -> Value {
        let task = e.task().map(task_name);
        json!({
            "model": e.model_name(),
            "version": e.version.as_ref().map(|v| v.version),
            "semver": e.semver(),
            "digest": e.digest,
            "size": e.size,
            "manifest_digest": e.manifest_digest,
            "registered": e.version.is_some(),
            "task": task,
            "n_features": e.n_features,
            "item_shape": e.item_shape,
            "n_outputs": e.n_outputs,
            "features": e.features(),
            "classes": e.classes(),
            "preprocessing": e.preprocess.describe(e.manifest.as_ref()),
            "format": e.summary.format,
            "signature": e.summary.signature,
            "ops": e.summary.ops,
            "input": {
                "json": "{\"inputs\": [[f32; n_features], ...]} or {\"inputs\": [{feature: value}, ...]}",
                "raw": "application/octet-stream: little-endian f32, rows x n_features",
                "max_body_bytes": MAX_BODY_BYTES,
            },
            "runtime": {
                "engine": RUNTIME,
                "where": e.runtime(),
                "target": std::env::consts::ARCH,
                "simd128": cfg!(target_feature = "simd128"),
            },
            "instance": {
                "id": self.id,
                "loads": LOADS.load(Ordering::SeqCst),
                "loaded_at_unix_ms": e.info.loaded_at_unix_ms,
                "load_ms": e.info.load_ms,
                "requests_served": served,
            },
        })
    }
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}

/// One row's prediction: class, label and probabilities (classification), value
/// (regression), or the raw output row (no manifest to say which).
#[derive(Serialize, Default)]
struct Prediction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a [f32]>,
}

/// `POST /predict`'s answer.
#[derive(Serialize)]
struct PredictResponse<'a> {
    model: &'a str,
    version: Option<u64>,
    semver: Option<&'a str>,
    digest: &'a str,
    task: Option<&'static str>,
    rows: usize,
    predictions: Vec<Prediction<'a>>,
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// `POST /predict`.
fn predict(e: &Engine, content_type: Option<&str>, body: &[u8]) -> Result<Reply, InputError> {
    let kind = input::body_kind(content_type)?;
    // Images (a PNG or JPEG body, or JSON {"images": [base64, ...]}) go through the
    // manifest's image rule; everything else is the model's input as sent.
    let images = kind == input::BodyKind::Image
        || (kind == input::BodyKind::Json
            && e.image_rule().is_some()
            && body.windows(8).any(|w| w == b"\"images\""));
    let batch = if images {
        input::parse_images(kind, body, e.image_rule())?
    } else {
        input::parse(kind, body, e.features(), e.n_features)?
    };
    let started = Instant::now();
    let out = e
        .predict(&batch.x, batch.rows)
        .map_err(|e| InputError::new(e.status, e.code, e.message))?;
    let infer_ms = started.elapsed().as_secs_f64() * 1000.0;
    let w = e.n_outputs;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(InputError::new(
            422,
            "non_finite_output",
            format!(
                "the model produced a non-finite output for row {} (inputs far outside the \
                 training range?)",
                i / w
            ),
        ));
    }
    let classes = e.classes();
    let task = e.task();
    let predictions: Vec<Prediction<'_>> = out
        .chunks_exact(w)
        .map(|row| match task {
            Some(Task::Classification) => {
                let c = argmax(row);
                Prediction {
                    class: Some(c),
                    label: (classes.len() == w).then(|| classes[c].as_str()),
                    probabilities: Some(row),
                    ..Default::default()
                }
            }
            Some(Task::Regression) if w == 1 => Prediction {
                value: Some(row[0]),
                ..Default::default()
            },
            _ => Prediction {
                output: Some(row),
                ..Default::default()
            },
        })
        .collect();
    // Serialised from typed structs (not `json!`) so f32 values print as f32, not as their
    // longer f64 expansion: exact either way, about half the bytes for large batches.
    let body = PredictResponse {
        model: e.model_name(),
        version: e.version.as_ref().map(|v| v.version),
        semver: e.semver(),
        digest: &e.digest,
        task: task.map(task_name),
        rows: batch.rows,
        predictions,
    };
    let mut bytes = serde_json::to_vec(&body).map_err(|err| {
        InputError::new(
            500,
            "serialize_failed",
            format!("cannot write the response: {err}"),
        )
    })?;
    bytes.push(b'\n');
    Ok(Reply {
        status: 200,
        headers: Vec::new(),
        body: bytes,
    }
    .header("server-timing", format!("infer;dur={infer_ms:.4}")))
}
