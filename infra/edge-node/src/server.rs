//! HTTP: routes, canary split, limits at the door, metrics.
//!
//! | route                                 | answer                                          |
//! | ------------------------------------- | ----------------------------------------------- |
//! | `POST /v1/models/<name>/predict`      | the component's prediction, from the version the canary split picks |
//! | `GET /v1/models/<name>/metadata`      | the component's metadata of the champion (or `?slot=challenger`) |
//! | `GET /v1/models`                      | every model: generation, versions, weight, last refusal |
//! | `GET /health`                         | the node: environment, models served            |
//! | `GET /metrics`                        | Prometheus text                                 |
//!
//! Every model answer carries `x-falaj-model`, `x-falaj-model-version`, `x-falaj-slot`
//! (`champion` or `challenger`), `x-falaj-generation` and `x-falaj-request-id` (the id
//! feedback names; see [`crate::live`]). The canary split is sticky: a request with
//! `x-falaj-request-key` (or, when the deployment names a split key for an A/B test, that
//! header or cookie) always lands on the same side for a given weight (sha256 of the key,
//! mod 100, below the weight → challenger); without one it is random. A shadow challenger
//! gets a copy of every prediction request after the champion has answered; its answer is
//! recorded and thrown away. Errors are JSON `{"status", "code", "error"}`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::fleet::{Fleet, Route, Served};
use crate::live::{Live, REQUEST_ID, predictions, request_id};
use crate::metrics::{Metrics, Sketches};
use falaj_core::live::Logged;

/// Largest request body the node reads (the component's own cap is the same).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Header naming the key the canary split is sticky on.
pub const REQUEST_KEY: &str = "x-falaj-request-key";

/// Everything a request needs.
pub struct Node {
    /// Deployed models.
    pub fleet: Arc<Fleet>,
    /// Counters.
    pub metrics: Metrics,
    /// Input sketches.
    pub sketches: Sketches,
    /// Per-variant windows for the canary controller.
    pub live: Live,
    /// Shadow copies in flight at once; a request past it is not copied.
    pub shadow_slots: Arc<tokio::sync::Semaphore>,
    /// Node name.
    pub node: String,
    /// Route `/v1/models/<name>/__fault/<drill>` to the component (tests of the sandbox).
    pub fault_drills: bool,
}

type Resp = hyper::Response<Full<Bytes>>;

fn json_response(status: u16, v: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, code: &str, message: impl std::fmt::Display) -> Resp {
    json_response(
        status,
        &json!({"status": status, "code": code, "error": message.to_string()}),
    )
}

/// Serves HTTP on `listener` until the process ends, under `limits`.
pub async fn serve(listener: TcpListener, node: Arc<Node>, limits: falaj_runtime::httpd::Limits) {
    falaj_runtime::httpd::serve(listener, limits, move |req, _peer| {
        let node = node.clone();
        async move { answer(&node, req).await }
    })
    .await
}

/// The value the split is sticky on: the deployment's split key (`header:<name>` or
/// `cookie:<name>`) when it names one, else `x-falaj-request-key`.
pub fn split_value(route: &Route, headers: &hyper::HeaderMap) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match route.split_key.as_deref().and_then(|k| k.split_once(':')) {
        Some(("header", name)) => header(name),
        Some(("cookie", name)) => headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned()),
        _ => header(REQUEST_KEY),
    }
}

/// Which side of the canary split a request goes to.
pub fn pick<'a>(route: &'a Route, key: Option<&str>) -> (&'a Arc<Served>, &'static str) {
    match &route.challenger {
        Some((challenger, weight)) if *weight > 0 => {
            let bucket = match key {
                Some(k) => {
                    let h = Sha256::digest(k.as_bytes());
                    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % 100
                }
                None => rand::random_range(0..100u64),
            };
            if bucket < u64::from(*weight) {
                (challenger, "challenger")
            } else {
                (&route.champion, "champion")
            }
        }
        _ => (&route.champion, "champion"),
    }
}

async fn answer(node: &Arc<Node>, req: hyper::Request<hyper::body::Incoming>) -> Resp {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["health"]) => json_response(
            200,
            &json!({
                "status": "ok",
                "node": node.node,
                "env": node.fleet.env(),
                "models": node.fleet.routes().len(),
            }),
        ),
        ("GET", ["metrics"]) => {
            let extra: Vec<(String, u64, u64)> = node
                .fleet
                .status()
                .into_iter()
                .map(|s| (s.model, s.generation.unwrap_or(0), s.refusals))
                .collect();
            let mut text = node.metrics.render(&extra);
            text.push_str("# HELP falaj_edge_batched_requests_total Predictions answered from a batch of two or more (micro-batching).\n# TYPE falaj_edge_batched_requests_total counter\n");
            for (m, route) in node.fleet.routes() {
                let served = std::iter::once(&route.champion)
                    .chain(route.challenger.as_ref().map(|(c, _)| c))
                    .chain(route.shadow.as_ref());
                for s in served {
                    let n = s.batcher.batched.load(std::sync::atomic::Ordering::Relaxed);
                    let b = s.batcher.batches.load(std::sync::atomic::Ordering::Relaxed);
                    text.push_str(&format!(
                        "falaj_edge_batched_requests_total{{model=\"{m}\",version=\"{}\"}} {n}\nfalaj_edge_batches_total{{model=\"{m}\",version=\"{}\"}} {b}\n",
                        s.version, s.version
                    ));
                }
            }
            text.push_str(&node.fleet.engine().host_stats().render());
            let mut r = hyper::Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        ("GET", ["v1", "models"]) => json_response(
            200,
            &json!({"env": node.fleet.env(), "node": node.node, "models": node.fleet.status()}),
        ),
        (_, ["v1", "models", model, action]) | (_, ["v1", "models", model, "__fault", action]) => {
            let model = (*model).to_owned();
            let action = if segments.len() == 5 {
                if !node.fault_drills {
                    return error(404, "not_found", format!("no route {method} {path}"));
                }
                format!("__fault/{action}")
            } else {
                (*action).to_owned()
            };
            let r = model_call(node, req, &model, &action, &query).await;
            let version = r
                .headers()
                .get("x-falaj-model-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            if node.fleet.route(&model).is_some() {
                node.metrics
                    .observe(&model, &version, r.status().as_u16(), t0.elapsed());
            }
            r
        }
        _ => error(
            404,
            "not_found",
            format!(
                "no route {method} {path}: try POST /v1/models/<name>/predict, GET /v1/models, GET /health, GET /metrics"
            ),
        ),
    }
}

async fn model_call(
    node: &Arc<Node>,
    req: hyper::Request<hyper::body::Incoming>,
    model: &str,
    action: &str,
    query: &str,
) -> Resp {
    let Some(route) = node.fleet.route(model) else {
        let known: Vec<String> = node.fleet.routes().into_iter().map(|(m, _)| m).collect();
        return error(
            404,
            "unknown_model",
            format!(
                "no model {model:?} is deployed in {} on this node (deployed: {})",
                node.fleet.env(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        );
    };
    let expected = match action {
        "predict" => "POST",
        a if a.starts_with("__fault/") => "POST",
        "metadata" | "health" => "GET",
        _ => {
            return error(
                404,
                "not_found",
                format!("no route {action} for a model: use predict, metadata or health"),
            );
        }
    };
    if req.method().as_str() != expected {
        return error(
            405,
            "method_not_allowed",
            format!("{action} takes {expected}, not {}", req.method()),
        );
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return error(
            413,
            "body_too_large",
            format!(
                "the body is {} bytes; the limit is {MAX_BODY_BYTES}",
                declared.unwrap_or(0)
            ),
        );
    }
    let key = split_value(&route, req.headers());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                413,
                "body_too_large",
                format!("the body is over the {MAX_BODY_BYTES}-byte limit"),
            );
        }
    };
    let (served, slot) = if action == "metadata" && query.contains("slot=challenger") {
        match &route.challenger {
            Some((c, _)) => (c, "challenger"),
            None => {
                return error(
                    404,
                    "no_challenger",
                    format!("{model} has no canary challenger"),
                );
            }
        }
    } else {
        pick(&route, key.as_deref())
    };
    let method = if expected == "POST" {
        http::Method::POST
    } else {
        http::Method::GET
    };
    let id = request_id();
    let started = Instant::now();
    // The body's rows, read once: for the batcher, and for the sketches after a success.
    let rows = if action == "predict" {
        crate::metrics::read_batch(served, content_type.as_deref(), &body)
    } else {
        None
    };
    let result = if action == "predict" {
        crate::batch::predict(served, content_type.as_deref(), body.clone(), rows.as_ref()).await
    } else {
        served
            .runtime
            .call(
                method,
                &format!("/{action}"),
                content_type.as_deref(),
                body.clone(),
            )
            .await
    };
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    if action == "predict" {
        let (status, pred) = outcome(&result);
        node.live.record(
            (model, served.version, slot, route.generation),
            Logged {
                id: id.clone(),
                ms: took_ms,
                status,
                pred,
            },
        );
        if let Some(shadow) = &route.shadow {
            mirror(
                node,
                shadow,
                &route,
                &id,
                content_type.clone(),
                body.clone(),
            );
        }
    }
    let mut r = match result {
        Ok(a) => {
            if let Some(rows) = rows.as_ref().filter(|_| a.status.is_success()) {
                node.sketches.observe(served, rows);
            }
            let mut r = hyper::Response::new(Full::new(a.body));
            *r.status_mut() = a.status;
            for (name, value) in &a.headers {
                let n = name.as_str();
                if n == "content-type"
                    || n.starts_with("x-falaj-")
                    || n == "allow"
                    || n == "server-timing"
                {
                    r.headers_mut().insert(name.clone(), value.clone());
                }
            }
            r
        }
        Err(e) => {
            tracing::warn!(model, version = served.version, slot, code = e.code(), error = %e, "request failed");
            error(e.status(), e.code(), &e)
        }
    };
    let h = r.headers_mut();
    // The host's share beside the component's `infer`: `edge` is the whole component call as
    // the node timed it (the wasm boundary, the body's parsing and the answer's encoding
    // around the inference), so a client can tell where a request's time went.
    let timing = match h.get("server-timing").and_then(|v| v.to_str().ok()) {
        Some(component) => format!("{component}, edge;dur={took_ms:.4}"),
        None => format!("edge;dur={took_ms:.4}"),
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    for (name, value) in [
        ("x-falaj-model", model.to_string()),
        ("x-falaj-model-version", served.version.to_string()),
        ("x-falaj-slot", slot.to_string()),
        ("x-falaj-generation", route.generation.to_string()),
        (REQUEST_ID, id),
    ] {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    r
}

/// Copies a prediction request to the shadow challenger after the champion answered, and
/// records its answer under the same request id. At most `shadow_slots` copies run at once;
/// past that a request is not copied (the champion's answer never waits for the shadow).
fn mirror(
    node: &Arc<Node>,
    shadow: &Arc<Served>,
    route: &Route,
    id: &str,
    content_type: Option<String>,
    body: Bytes,
) {
    let Ok(permit) = node.shadow_slots.clone().try_acquire_owned() else {
        tracing::debug!(
            model = shadow.model,
            "shadow copy skipped: too many in flight"
        );
        return;
    };
    let (node, shadow, id, generation) = (
        node.clone(),
        shadow.clone(),
        id.to_owned(),
        route.generation,
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let result = shadow
            .runtime
            .call(
                http::Method::POST,
                "/predict",
                content_type.as_deref(),
                body,
            )
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, pred) = outcome(&result);
        node.live.record(
            (&shadow.model, shadow.version, "shadow", generation),
            Logged {
                id,
                ms,
                status,
                pred,
            },
        );
        drop(permit);
    });
}

/// What the live window records of a predict call: its status, and its predictions when it
/// succeeded.
fn outcome(
    result: &Result<crate::runtime::Answer, crate::runtime::CallError>,
) -> (u16, Vec<String>) {
    match result {
        Ok(a) if a.status.is_success() => (a.status.as_u16(), predictions(&a.body)),
        Ok(a) => (a.status.as_u16(), Vec::new()),
        Err(e) => (e.status(), Vec::new()),
    }
}
