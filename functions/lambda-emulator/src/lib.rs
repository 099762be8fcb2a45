//! A Lambda Runtime API endpoint on loopback, for tests and benchmarks.
//!
//! It speaks the protocol a `provided.al2023` function speaks to Lambda
//! (`/2018-06-01/runtime/...`): the function long-polls `GET invocation/next`, gets an event
//! with its `Lambda-Runtime-Aws-Request-Id` and deadline, and posts the result to
//! `invocation/<id>/response` or `invocation/<id>/error`; a failed start posts `init/error`.
//! [`Emulator::spawn`] starts a compiled function binary, unmodified, with the environment
//! Lambda gives it, so a test proves the binary works under the real protocol.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What a function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST invocation/<id>/response`.
    Response(Value),
    /// `POST invocation/<id>/error`: the error type header and the body.
    Error {
        /// `Lambda-Runtime-Function-Error-Type`.
        error_type: String,
        /// The error document (`errorType`, `errorMessage`).
        body: Value,
    },
}

/// A finished invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Request id.
    pub request_id: String,
    /// What the function answered.
    pub outcome: Outcome,
    /// When the function fetched the event (`invocation/next` answered).
    pub fetched_at: std::time::Instant,
    /// When the answer arrived.
    pub answered_at: std::time::Instant,
}

/// One emulator's queue, as the Invoke API of another reaches it.
type Queue = (Arc<Mutex<State>>, Arc<Notify>, Arc<Notify>);

#[derive(Default)]
struct State {
    /// Invoke API calls for these function names go to another emulator's queue.
    forward: HashMap<String, Queue>,
    queue: VecDeque<(String, Bytes)>,
    fetched: HashMap<String, std::time::Instant>,
    done: Vec<Invocation>,
    init_errors: Vec<Value>,
    next_polls: u64,
    seq: u64,
}

/// The endpoint. Dropping it stops accepting connections.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    queued: Arc<Notify>,
    answered: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

impl Emulator {
    /// Starts listening on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let queued = Arc::new(Notify::new());
        let answered = Arc::new(Notify::new());
        let (s, q, a) = (state.clone(), queued.clone(), answered.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, q, a) = (s.clone(), q.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (s, q, a) = (s.clone(), q.clone(), a.clone());
                        async move { Ok::<_, Infallible>(route(req, s, q, a).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            queued,
            answered,
            task,
        })
    }

    /// Sends Invoke API calls for `function` (`POST /2015-03-31/functions/<function>/
    /// invocations` on this endpoint) to the function polling `to`; calls for other names stay
    /// here. One `AWS_ENDPOINT_URL_LAMBDA` then reaches several functions, as in AWS.
    pub fn forward_invocations(&self, function: &str, to: &Emulator) {
        self.state.lock().unwrap().forward.insert(
            function.to_string(),
            (to.state.clone(), to.queued.clone(), to.answered.clone()),
        );
    }

    /// Every invocation answered so far, oldest first.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.state.lock().unwrap().done.clone()
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event; returns its request id.
    pub fn push(&self, event: &Value) -> String {
        let mut st = self.state.lock().unwrap();
        st.seq += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", st.seq);
        st.queue
            .push_back((id.clone(), Bytes::from(event.to_string())));
        drop(st);
        self.queued.notify_waiters();
        self.queued.notify_one();
        id
    }

    /// Waits for the answer to `request_id`.
    pub async fn wait(&self, request_id: &str, timeout: Duration) -> Option<Invocation> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.answered.notified();
            if let Some(i) = self
                .state
                .lock()
                .unwrap()
                .done
                .iter()
                .find(|i| i.request_id == request_id)
            {
                return Some(i.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Pushes an event and waits for its answer.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Option<Invocation> {
        let id = self.push(event);
        self.wait(&id, timeout).await
    }

    /// `init/error` documents posted so far.
    pub fn init_errors(&self) -> Vec<Value> {
        self.state.lock().unwrap().init_errors.clone()
    }

    /// How many times a function has asked for its next event.
    pub fn next_polls(&self) -> u64 {
        self.state.lock().unwrap().next_polls
    }

    /// Starts `exe` as Lambda would: the runtime API address, function name, memory and
    /// version in the environment, plus `env`. Logs go to the child's stderr, inherited.
    pub fn spawn(
        &self,
        exe: &Path,
        env: &[(&str, &str)],
    ) -> std::io::Result<tokio::process::Child> {
        let name = exe
            .file_name()
            .map_or("function".into(), |n| n.to_string_lossy().into_owned());
        let mut cmd = tokio::process::Command::new(exe);
        cmd.env("AWS_LAMBDA_RUNTIME_API", self.endpoint())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "emulator")
            .env("AWS_REGION", "me-central-1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn()
    }
}

/// Lambda's Invoke API (`POST /2015-03-31/functions/<name>/invocations`, RequestResponse), as
/// `aws-sdk-lambda` calls it with an endpoint override: the payload is queued for the function
/// polling this endpoint and its answer returned, a function error flagged with
/// `X-Amz-Function-Error` as Lambda does.
async fn invoke_api(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    queued: Arc<Notify>,
    answered: Arc<Notify>,
) -> Response<Full<Bytes>> {
    let function = req
        .uri()
        .path()
        .trim_start_matches("/2015-03-31/functions/")
        .trim_end_matches("/invocations")
        .to_string();
    let forwarded = state.lock().unwrap().forward.get(&function).cloned();
    let (state, queued, answered) = forwarded.unwrap_or((state, queued, answered));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let id = {
        let mut st = state.lock().unwrap();
        st.seq += 1;
        let id = format!("00000000-0000-4000-9000-{:012}", st.seq);
        st.queue.push_back((id.clone(), body));
        id
    };
    queued.notify_waiters();
    queued.notify_one();
    let done = loop {
        let notified = answered.notified();
        if let Some(i) = state
            .lock()
            .unwrap()
            .done
            .iter()
            .find(|i| i.request_id == id)
        {
            break i.clone();
        }
        if tokio::time::timeout(Duration::from_secs(120), notified)
            .await
            .is_err()
        {
            return reply(
                StatusCode::GATEWAY_TIMEOUT,
                r#"{"message":"the function did not answer"}"#,
            );
        }
    };
    match done.outcome {
        Outcome::Response(v) => reply(StatusCode::OK, v.to_string()),
        Outcome::Error { body, .. } => {
            let mut r = reply(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert("x-amz-function-error", "Unhandled".parse().expect("ascii"));
            r
        }
    }
}

async fn route(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    queued: Arc<Notify>,
    answered: Arc<Notify>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations") {
        return invoke_api(req, state, queued, answered).await;
    }
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return reply(StatusCode::NOT_FOUND, "unknown path");
    };
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let parse = |b: &Bytes| {
        serde_json::from_slice::<Value>(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
    };
    match (method, rest) {
        (Method::GET, "invocation/next") => {
            state.lock().unwrap().next_polls += 1;
            let (id, event) = loop {
                let notified = queued.notified();
                if let Some(item) = state.lock().unwrap().queue.pop_front() {
                    break item;
                }
                notified.await;
            };
            state
                .lock()
                .unwrap()
                .fetched
                .insert(id.clone(), std::time::Instant::now());
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                + Duration::from_secs(60);
            let mut r = reply(StatusCode::OK, event);
            let h = r.headers_mut();
            h.insert(
                "lambda-runtime-aws-request-id",
                id.parse().expect("ascii id"),
            );
            h.insert(
                "lambda-runtime-deadline-ms",
                deadline.as_millis().to_string().parse().expect("digits"),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:me-central-1:000000000000:function:emulated"
                    .parse()
                    .expect("ascii"),
            );
            h.insert(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0"
                    .parse()
                    .expect("ascii"),
            );
            h.insert("content-type", "application/json".parse().expect("ascii"));
            r
        }
        (Method::POST, "init/error") => {
            state.lock().unwrap().init_errors.push(parse(&body));
            answered.notify_waiters();
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        (Method::POST, p) => {
            let Some((id, what)) = p
                .strip_prefix("invocation/")
                .and_then(|p| p.split_once('/'))
            else {
                return reply(StatusCode::NOT_FOUND, "unknown path");
            };
            let outcome = match what {
                "response" => Outcome::Response(parse(&body)),
                "error" => Outcome::Error {
                    error_type: headers
                        .get("lambda-runtime-function-error-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: parse(&body),
                },
                _ => return reply(StatusCode::NOT_FOUND, "unknown path"),
            };
            let mut st = state.lock().unwrap();
            let Some(fetched_at) = st.fetched.remove(id) else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorMessage":"unknown or already answered request id"}"#,
                );
            };
            st.done.push(Invocation {
                request_id: id.to_string(),
                outcome,
                fetched_at,
                answered_at: std::time::Instant::now(),
            });
            drop(st);
            answered.notify_waiters();
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}
