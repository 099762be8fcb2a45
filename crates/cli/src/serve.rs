//! `falaj serve`: the serverless flow on one machine.
//!
//! Two loops over the very handlers the Lambda functions run:
//! - the webhook API ([`falaj_webhook::handle`]) and MLflow's REST API ([`falaj_mlflow::handle`])
//!   over real HTTP/1.1 on a loopback address;
//! - a watcher that polls the store's `incoming/` and hands each new upload to the call the
//!   ingest function makes for each record of its event (`falaj::ingest::ingest_upload`);
//!   each version it registers goes to the validate function's call
//!   (`falaj_gates::validate_version`), and a passing version whose policy says
//!   `auto_staging` is promoted to staging through the same [`Promoter`] the webhook uses.
//!   Nothing here decides anything;
//! - and, with a trainer, [`crate::retrain::Retrainer`] over `retrain/`: a drift check's request
//!   runs `falaj-train`, whose upload the watcher then registers and validates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use falaj_core::layout;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use falaj::ingest::{self, Outcome, Upload};
use falaj::pipeline::{ValidateOutcome, ValidateRequest};
use falaj::registry::Registry;
use falaj::store::list_all;
use falaj_webhook::{HttpRequest, PromoteRequest, Promoter, Webhook};

/// The bucket name events carry in embedded mode.
pub const LOCAL_BUCKET: &str = "falaj-local";

/// One thing the watcher did, for logs, `--json` and tests.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The ingest handler's outcome for an upload.
    Ingest {
        /// Outcome.
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// The validate handler's outcome for a version.
    Validate {
        /// Outcome.
        #[serde(flatten)]
        outcome: ValidateOutcome,
    },
    /// The promotion to staging the policy asked for.
    Staged {
        /// Model.
        model: String,
        /// Version.
        version: u64,
        /// The promoter's answer, or its error.
        result: Value,
    },
    /// A retraining request handled by [`crate::retrain::Retrainer`].
    Retrain {
        /// What happened.
        #[serde(flatten)]
        event: crate::retrain::RetrainEvent,
    },
}

impl WatchEvent {
    /// One line for people: what happened, to which model and version.
    pub fn line(&self) -> String {
        use crate::retrain::RetrainEvent as R;
        use WatchEvent as W;
        use falaj::pipeline::ValidateOutcome as V;
        match self {
            W::Ingest { outcome } => match outcome {
                Outcome::Registered {
                    key,
                    model,
                    version,
                } => format!("ingest    {key}: registered {model}@{version}"),
                Outcome::Duplicate {
                    key,
                    model,
                    version,
                } => format!("ingest    {key}: already {model}@{version}"),
                Outcome::Ignored { key, reason } => format!("ingest    {key}: ignored ({reason})"),
                Outcome::Failed { key, error, .. } => format!("ingest    {key}: FAILED: {error}"),
            },
            W::Validate { outcome } => match outcome {
                V::Validated {
                    model,
                    version,
                    passed: true,
                    report,
                    ..
                } => format!("validate  {model}@{version}: every gate passed ({report})"),
                V::Validated {
                    model,
                    version,
                    failed,
                    report,
                    ..
                } => format!(
                    "validate  {model}@{version}: REJECTED, failed {} ({report})",
                    failed.join(", ")
                ),
                V::Skipped {
                    model,
                    version,
                    reason,
                } => format!("validate  {model}@{version}: skipped: {reason}"),
                V::Ignored { key } => format!("validate  {key}: ignored"),
                V::Failed { subject, error, .. } => format!("validate  {subject}: FAILED: {error}"),
            },
            W::Staged {
                model,
                version,
                result,
            } => match result.get("error") {
                Some(e) => format!("promote   {model}@{version} -> staging: FAILED: {e}"),
                None => format!("promote   {model}@{version} -> staging"),
            },
            W::Retrain { event } => match event {
                R::Started {
                    model,
                    parent_version,
                    run_id,
                    labelled_rows,
                    ..
                } => format!(
                    "retrain   {model}@{parent_version}: falaj-train started (run {run_id}, +{labelled_rows} labelled rows)"
                ),
                R::Trained {
                    model,
                    run_id,
                    seconds,
                    ..
                } => format!(
                    "retrain   {model}: run {run_id} trained in {seconds:.1} s, uploaded to incoming/"
                ),
                R::Failed { model, error, .. } => format!("retrain   {model}: FAILED: {error}"),
            },
        }
    }
}

/// Polls `incoming/` and drives uploads through ingest → validate → staging.
pub struct Watcher {
    registry: Arc<Registry>,
    promoter: Arc<dyn Promoter>,
    seen: HashMap<String, String>,
}

impl Watcher {
    /// A watcher over `registry`, promoting through `promoter`.
    pub fn new(registry: Arc<Registry>, promoter: Arc<dyn Promoter>) -> Self {
        Self {
            registry,
            promoter,
            seen: HashMap::new(),
        }
    }

    /// One pass: every `incoming/**/manifest.json` not seen with its current ETag.
    pub async fn poll_once(&mut self) -> Result<Vec<WatchEvent>, falaj::RegistryError> {
        let store = self.registry.store().clone();
        let keys = list_all(store.as_ref(), layout::INCOMING_PREFIX).await?;
        let mut events = Vec::new();
        for key in keys.into_iter().filter(|k| k.ends_with("/manifest.json")) {
            let Ok(k) = falaj_core::StoreKey::new(key.as_str()) else {
                continue;
            };
            let Some(obj) = store.get(&k).await? else {
                continue;
            };
            let etag = obj.etag.to_string();
            if self.seen.get(&key) == Some(&etag) {
                continue;
            }
            // What an S3 event record for this object would name. The same object gives the
            // same sequencer, so a restarted watcher's upload for an object it handled before
            // is a duplicate to ingest, not a new upload.
            let upload = Upload {
                bucket: LOCAL_BUCKET.into(),
                key: key.clone(),
                sequencer: Some(sequencer(&etag)),
                etag: Some(etag.clone()),
                version_id: None,
            };
            let outcome = ingest::ingest_upload(&self.registry, &upload).await;
            ingest::log_outcome(&outcome);
            let retry = matches!(
                outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            );
            if let Outcome::Registered { model, version, .. } = &outcome {
                let (m, v) = (model.clone(), *version);
                events.push(WatchEvent::Ingest { outcome });
                self.after_registration(&m, v, &mut events).await;
            } else {
                events.push(WatchEvent::Ingest { outcome });
            }
            if !retry {
                self.seen.insert(key, etag);
            }
        }
        Ok(events)
    }

    async fn after_registration(&self, model: &str, version: u64, events: &mut Vec<WatchEvent>) {
        let req = ValidateRequest {
            model: model.into(),
            version,
        };
        let outcome = falaj_gates::validate_version(&self.registry, &req).await;
        falaj::pipeline::log_outcome(&outcome);
        let stage = matches!(
            outcome,
            ValidateOutcome::Validated {
                promote_to_staging: true,
                ..
            }
        );
        events.push(WatchEvent::Validate { outcome });
        if stage {
            let req = PromoteRequest::auto_staging(model, version);
            let result = match self.promoter.apply(req).await {
                Ok(v) => v,
                Err(e) => json!({"error": e}),
            };
            events.push(WatchEvent::Staged {
                model: model.into(),
                version,
                result,
            });
        }
    }
}

/// S3's sequencer is a hex string that orders events of one key; here it is derived from the
/// object's ETag (the time when it has no hex digit).
fn sequencer(etag: &str) -> String {
    let hex: String = etag
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    if hex.is_empty() {
        falaj::registry::now()
    } else {
        hex.to_ascii_uppercase()
    }
}

/// Serves the webhook on `listener` until the process ends, under `limits`.
pub async fn serve_http(
    listener: TcpListener,
    hook: Arc<Webhook>,
    limits: falaj_runtime::httpd::Limits,
) {
    falaj_runtime::httpd::serve(listener, limits, move |req, peer| {
        let hook = hook.clone();
        async move {
            let max = falaj_mlflow::body_limit(&hook, req.uri().path());
            answer(&hook, req, peer, max).await
        }
    })
    .await
}

async fn answer(
    hook: &Webhook,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    max: usize,
) -> hyper::Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let mut r = HttpRequest::new(req.method().as_str(), &target);
    for (name, value) in req.headers() {
        if let Ok(v) = value.to_str() {
            r = r.with_header(name.as_str(), v);
        }
    }
    r.source_ip = Some(peer.ip().to_string());
    // Read at most one byte past the limit: the webhook answers 413 for anything longer,
    // and an oversized body is never held in memory whole.
    let body = match Limited::new(req.into_body(), max + 1).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from(vec![0u8; max + 1]),
    };
    let res = falaj_console::handle(hook, r.with_body(body)).await;
    let mut out = hyper::Response::new(Full::new(res.body.clone()));
    *out.status_mut() =
        hyper::StatusCode::from_u16(res.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &res.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

/// Runs the watcher every `every`, printing each step with `report`.
pub async fn watch(mut watcher: Watcher, every: Duration, report: impl Fn(&WatchEvent)) {
    loop {
        match watcher.poll_once().await {
            Ok(events) => events.iter().for_each(&report),
            Err(e) => tracing::error!(error = %e, "watching incoming/ failed; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}
