//! Micro-batching: concurrent predictions for one tabular model version coalesce into one
//! component call (docs/edge.md, "Micro-batching").
//!
//! - **Sparse traffic pays nothing.** A request that finds the version idle runs alone, with
//!   its own body, at once.
//! - **Busy traffic is batched.** A request that finds a call already running waits at most
//!   `window` (default 500 µs) for more to join. The wait ends sooner when the running call
//!   finishes or when `max_rows` rows have gathered.
//! - **One call per batch.** The rows, parsed on the host by the component's own parser
//!   (`falaj_core::input`), go as one little-endian f32 body. The answer's `predictions` are
//!   split back in request order, and each request gets the component's answer with its own
//!   `rows` and predictions.
//! - **The host's records stay per request.** Request ids, live windows, sketches and metrics
//!   are kept for each request by the caller, exactly as without batching.
//! - **Failures are answered singly.** If a batch fails, or its answer cannot be split, every
//!   request in it is answered by a call of its own, so each gets exactly the answer (or the
//!   error) it would have had alone.
//! - **Some bodies never batch.** A body the host cannot parse, and any request to an image
//!   model, run alone: the component answers them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use falaj_core::input::Batch;
use tokio::sync::oneshot;

use crate::fleet::Served;
use crate::runtime::{Answer, CallError};

/// How predictions are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// The longest a request waits for others to join its batch; zero turns batching off.
    pub window: Duration,
    /// A batch goes as soon as it holds this many rows.
    pub max_rows: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_micros(500),
            max_rows: 1024,
        }
    }
}

/// One version's batching state.
pub struct Batcher {
    config: BatchConfig,
    state: Mutex<State>,
    /// Requests answered from a batch of two or more.
    pub batched: AtomicU64,
    /// Batches of two or more sent.
    pub batches: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Component calls running for this version (a lone request or a batch).
    busy: usize,
    /// Requests waiting for the next batch, in arrival order.
    pending: Vec<Pending>,
    /// Rows in `pending`.
    rows: usize,
    /// A timer is armed for `pending`.
    timer: bool,
}

struct Pending {
    x: Vec<f32>,
    rows: usize,
    content_type: Option<String>,
    body: Bytes,
    tx: oneshot::Sender<Result<Answer, CallError>>,
}

impl Batcher {
    /// A batcher with `config`.
    pub fn new(config: BatchConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            batched: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }
}

/// Answers `POST /predict` for `served`, batching it with concurrent requests when it can.
/// `rows` is the body as the host read it ([`crate::metrics::read_batch`]); `None` runs the
/// request alone.
pub async fn predict(
    served: &Arc<Served>,
    content_type: Option<&str>,
    body: Bytes,
    rows: Option<&Batch>,
) -> Result<Answer, CallError> {
    let b = &served.batcher;
    // Image models take their own preprocessing in the component: never batched.
    let image_model = served.manifest.as_ref().is_some_and(|m| m.image.is_some());
    let batch = match rows {
        Some(batch) if !b.config.window.is_zero() && !image_model => batch,
        _ => return alone(served, content_type, body).await,
    };
    let mut body = Some(body);
    // Decided under the lock, acted on after it: no guard lives across an await.
    let step = {
        let mut st = b.state.lock().expect("batch lock");
        if st.busy == 0 && st.pending.is_empty() {
            st.busy += 1;
            None
        } else {
            let (tx, rx) = oneshot::channel();
            st.pending.push(Pending {
                // Copied only when the request waits for a batch.
                x: batch.x.clone(),
                rows: batch.rows,
                content_type: content_type.map(str::to_owned),
                body: body.take().expect("not taken yet"),
                tx,
            });
            st.rows += batch.rows;
            let flush_now = st.rows >= b.config.max_rows;
            let arm = !flush_now && !st.timer;
            st.timer |= arm;
            Some((rx, flush_now, arm))
        }
    };
    let Some((rx, flush_now, arm)) = step else {
        let r = alone(served, content_type, body.expect("kept for a lone call")).await;
        done(served);
        return r;
    };
    if flush_now {
        tokio::spawn(flush(served.clone()));
    } else if arm {
        let (s, window) = (served.clone(), b.config.window);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            flush(s).await;
        });
    }
    rx.await.unwrap_or_else(|_| {
        Err(CallError::Unavailable(
            "the batch this request joined was dropped".into(),
        ))
    })
}

async fn alone(
    served: &Served,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<Answer, CallError> {
    served
        .runtime
        .call(http::Method::POST, "/predict", content_type, body)
        .await
}

/// A call for this version finished: what waits goes now, without waiting out its window.
fn done(served: &Arc<Served>) {
    let waiting = {
        let mut st = served.batcher.state.lock().expect("batch lock");
        st.busy -= 1;
        !st.pending.is_empty()
    };
    if waiting {
        tokio::spawn(flush(served.clone()));
    }
}

/// Sends what is pending as one call and answers each request from it.
async fn flush(served: Arc<Served>) {
    let batch = {
        let mut st = served.batcher.state.lock().expect("batch lock");
        st.timer = false;
        if st.pending.is_empty() {
            return;
        }
        st.rows = 0;
        st.busy += 1;
        std::mem::take(&mut st.pending)
    };
    if batch.len() == 1 {
        let p = batch.into_iter().next().expect("one");
        let r = alone(&served, p.content_type.as_deref(), p.body).await;
        let _ = p.tx.send(r);
        done(&served);
        return;
    }
    let total: usize = batch.iter().map(|p| p.rows).sum();
    let mut raw = Vec::with_capacity(total * 4 * served.n_features.unwrap_or(1));
    for p in &batch {
        for v in &p.x {
            raw.extend_from_slice(&v.to_le_bytes());
        }
    }
    let answer = alone(&served, Some("application/octet-stream"), Bytes::from(raw)).await;
    match answer.ok().and_then(|a| split(a, &batch)) {
        Some(answers) => {
            served
                .batcher
                .batched
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            served.batcher.batches.fetch_add(1, Ordering::Relaxed);
            for (p, a) in batch.into_iter().zip(answers) {
                let _ = p.tx.send(Ok(a));
            }
        }
        None => {
            // Each on its own: every request gets the answer, or the error, it would have had.
            let calls = batch.into_iter().map(|p| {
                let s = served.clone();
                async move {
                    let r = alone(&s, p.content_type.as_deref(), p.body).await;
                    let _ = p.tx.send(r);
                }
            });
            answer_each(calls).await;
        }
    }
    done(&served);
}

/// Runs `futs` concurrently to completion.
async fn answer_each<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

/// The batch's answer as one answer per request, in order; `None` unless it is a 200 whose
/// `predictions` has exactly one entry per row sent.
fn split(a: Answer, batch: &[Pending]) -> Option<Vec<Answer>> {
    if a.status != http::StatusCode::OK {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&a.body).ok()?;
    let predictions = doc.get("predictions")?.as_array()?;
    let total: usize = batch.iter().map(|p| p.rows).sum();
    if predictions.len() != total {
        return None;
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut at = 0;
    for p in batch {
        let mut one = doc.clone();
        one["rows"] = p.rows.into();
        one["predictions"] = serde_json::Value::Array(predictions[at..at + p.rows].to_vec());
        at += p.rows;
        let mut body = serde_json::to_vec(&one).ok()?;
        body.push(b'\n');
        let mut headers = a.headers.clone();
        headers.remove(http::header::CONTENT_LENGTH);
        if let Ok(v) = http::HeaderValue::from_str(&batch.len().to_string()) {
            headers.insert("x-falaj-batch", v);
        }
        out.push(Answer {
            status: a.status,
            headers,
            body: Bytes::from(body),
        });
    }
    Some(out)
}
