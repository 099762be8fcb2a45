//! Upload-triggered registration: the logic of the `falaj-fn-ingest` function.
//!
//! An upload of `incoming/<model>/<run>/manifest.json` (the trainer uploads it last, after
//! `model.onnx`) registers `incoming/<model>/<run>/model.onnx` as a new version. Events come
//! as S3 notifications (`S3Event`) or EventBridge "Object Created" events; both carry
//! URL-encoded keys (`+` for space, `%XX`), decoded here.
//!
//! S3 delivers at least once, unordered, and Lambda may retry a finished invocation, so each
//! upload is claimed by a create-only write of `idempotency/ingest/<h>.json`, where `h`
//! hashes bucket, key, ETag/versionId and sequencer. A duplicate finds the claim and returns
//! the version registered the first time. The invocation holding a claim refreshes it every
//! fifth of [`STALE_CLAIM`] while it works, so a slow registration keeps it; a claim left
//! unrefreshed that long (a crashed invocation) is taken over by compare-and-swap, after
//! checking whether that invocation had already registered the version (the version's
//! `source` names the upload), and a holder that lost its claim stops before registering.
//! Finished claims expire after [`FINISHED_CLAIM_TTL`] ([`expire_claims`] on `dir://`, the
//! bucket's lifecycle rule on S3).
//!
//! Each record of a batch is handled on its own: one bad record fails alone and is
//! reported, never dropped.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3EventRecord;
use bytes::Bytes;
use falaj_core::StoreKey;
use falaj_core::promotion::Action;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::claim::Claimed;
use crate::registry::{Artifact, NewModel, Registration, Registry, now};
use crate::store::{ETag, Precondition, no_progress};
use crate::{RegistryError, VersionFilter};

/// How long a claim may stay unrefreshed before another invocation takes it over
/// (`FALAJ_INGEST_CLAIM_STALE_SECS` overrides). The invocation holding a claim refreshes it
/// every fifth of this, so only a dead (or store-less) one loses it.
pub const STALE_CLAIM: Duration = Duration::from_secs(300);

/// [`STALE_CLAIM`], or `FALAJ_INGEST_CLAIM_STALE_SECS` when set to a positive number.
pub fn stale_claim() -> Duration {
    std::env::var("FALAJ_INGEST_CLAIM_STALE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(STALE_CLAIM, Duration::from_secs_f64)
}

/// The author recorded for versions registered by uploads whose manifest names none.
pub const INGEST_ACTOR: &str = "falaj-ingest";

/// One uploaded object, as named by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// Bucket name.
    pub bucket: String,
    /// Object key, URL-decoded.
    pub key: String,
    /// ETag, if the event gave one.
    pub etag: Option<String>,
    /// Version id, if the bucket is versioned.
    pub version_id: Option<String>,
    /// S3's per-key ordering token.
    pub sequencer: Option<String>,
}

impl Upload {
    /// Where a version registered from this upload says it came from.
    pub fn source(&self) -> String {
        let tag = self
            .version_id
            .as_deref()
            .or(self.etag.as_deref())
            .unwrap_or("-");
        format!("s3://{}/{}#{}", self.bucket, self.key, tag)
    }

    fn idempotency_key(&self) -> StoreKey {
        let mut h = Sha256::new();
        for part in [
            self.bucket.as_str(),
            self.key.as_str(),
            self.etag.as_deref().unwrap_or(""),
            self.version_id.as_deref().unwrap_or(""),
            self.sequencer.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        falaj_core::layout::ingest_claim(&hex::encode(h.finalize()))
    }
}

/// An uploaded object's bytes; a missing one is named with the order uploads must follow.
async fn read_upload(registry: &Registry, k: &StoreKey) -> Result<Bytes, RegistryError> {
    registry
        .store()
        .get(k)
        .await?
        .map(|o| o.bytes)
        .ok_or_else(|| RegistryError::InvalidArtifact {
            source_name: k.to_string(),
            reason: "it does not exist; upload model.onnx before manifest.json".into(),
        })
}

/// The identity an upload's manifest names as its author (`"author"`), else
/// [`INGEST_ACTOR`]. A manifest that is not JSON, or an author that is not a string, is an
/// error here; the rest of the manifest is checked when the version is registered.
fn upload_author(manifest: &[u8]) -> Result<String, RegistryError> {
    let bad = |reason: String| RegistryError::InvalidArtifact {
        source_name: "manifest.json".into(),
        reason,
    };
    let v: Value =
        serde_json::from_slice(manifest).map_err(|e| bad(format!("it is not JSON ({e})")))?;
    match v.get("author") {
        None | Some(Value::Null) => Ok(INGEST_ACTOR.into()),
        Some(Value::String(a)) => Ok(a.clone()),
        Some(other) => Err(bad(format!(
            "\"author\" must be a falaj identity (a string), not {other}"
        ))),
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new version.
    Registered {
        /// Key of the trigger object.
        key: String,
        /// Model name.
        model: String,
        /// Version number.
        version: u64,
    },
    /// A repeated delivery of an upload already registered.
    Duplicate {
        /// Key of the trigger object.
        key: String,
        /// Model name.
        model: String,
        /// The version registered the first time.
        version: u64,
    },
    /// Not a trigger (outside `incoming/`, or not the manifest).
    Ignored {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The record failed.
    Failed {
        /// Key, or the record's position if it had none.
        key: String,
        /// What went wrong and how to fix it.
        error: String,
        /// Whether a retry may succeed (store trouble, another invocation in flight).
        retryable: bool,
    },
}

impl Outcome {
    fn failed(key: &str, error: impl ToString, retryable: bool) -> Self {
        Self::Failed {
            key: key.into(),
            error: error.to_string(),
            retryable,
        }
    }
}

/// The outcomes of a batch, in record order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    /// One outcome per record.
    pub results: Vec<Outcome>,
}

impl BatchReport {
    /// The failed records.
    pub fn failures(&self) -> Vec<&Outcome> {
        self.results
            .iter()
            .filter(|o| matches!(o, Outcome::Failed { .. }))
            .collect()
    }
}

/// The event is neither an S3 notification nor an EventBridge S3 event.
#[derive(Debug, thiserror::Error)]
#[error(
    "not an S3 event: {reason} (expected {{\"Records\": [...]}} from S3 notifications or an EventBridge \"Object Created\" event from aws.s3)"
)]
pub struct EventError {
    /// What was wrong.
    pub reason: String,
}

/// Decodes an S3 event key: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_key(raw: &str) -> Result<String, EventError> {
    let bad = |reason: String| EventError { reason };
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .ok_or_else(|| bad(format!("truncated %-escape in key {raw:?}")))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| bad(format!("bad %-escape %{hex} in key {raw:?}")))?,
                );
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad(format!("key {raw:?} does not decode to UTF-8")))
}

/// Splits an event into its uploads; a malformed record becomes an `Err` of its own.
pub fn parse_event(event: &Value) -> Result<Vec<Result<Upload, Outcome>>, EventError> {
    if let Some(records) = event.get("Records") {
        let records = records.as_array().ok_or_else(|| EventError {
            reason: "\"Records\" is not an array".into(),
        })?;
        return Ok(records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let label = format!("record {i}");
                let rec: S3EventRecord = serde_json::from_value(r.clone()).map_err(|e| {
                    Outcome::failed(&label, format!("malformed S3 record: {e}"), false)
                })?;
                let bucket = rec.s3.bucket.name.ok_or_else(|| {
                    Outcome::failed(&label, "the record has no bucket name", false)
                })?;
                let raw = rec.s3.object.key.ok_or_else(|| {
                    Outcome::failed(&label, "the record has no object key", false)
                })?;
                let key = decode_key(&raw).map_err(|e| Outcome::failed(&raw, e.reason, false))?;
                Ok(Upload {
                    bucket,
                    key,
                    etag: rec.s3.object.e_tag,
                    version_id: rec.s3.object.version_id,
                    sequencer: rec.s3.object.sequencer,
                })
            })
            .collect());
    }
    if event.get("detail-type").is_some() {
        let ev: EventBridgeEvent<Value> =
            serde_json::from_value(event.clone()).map_err(|e| EventError {
                reason: format!("malformed EventBridge event: {e}"),
            })?;
        if ev.source != "aws.s3" || ev.detail_type != "Object Created" {
            return Err(EventError {
                reason: format!(
                    "EventBridge event {:?} from {:?}",
                    ev.detail_type, ev.source
                ),
            });
        }
        let s = |v: &Value| v.as_str().map(String::from);
        let obj = &ev.detail["object"];
        let one = (|| {
            let bucket = s(&ev.detail["bucket"]["name"])
                .ok_or_else(|| Outcome::failed("event", "detail.bucket.name is missing", false))?;
            let raw = s(&obj["key"])
                .ok_or_else(|| Outcome::failed("event", "detail.object.key is missing", false))?;
            let key = decode_key(&raw).map_err(|e| Outcome::failed(&raw, e.reason, false))?;
            Ok(Upload {
                bucket,
                key,
                etag: s(&obj["etag"]),
                version_id: s(&obj["version-id"]),
                sequencer: s(&obj["sequencer"]),
            })
        })();
        return Ok(vec![one]);
    }
    Err(EventError {
        reason: "it has neither \"Records\" nor \"detail-type\"".into(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClaimState {
    Claimed,
    Done,
    Rejected,
    Retry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    upload: Upload,
    state: ClaimState,
    at: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    /// The invocation holding it (random, per invocation).
    #[serde(default)]
    owner: String,
}

impl Claim {
    /// A claim in progress by `owner`, made now.
    fn claimed(upload: &Upload, model: &str, owner: &str) -> Self {
        Self {
            upload: upload.clone(),
            state: ClaimState::Claimed,
            at: now(),
            model: model.into(),
            version: None,
            error: None,
            owner: owner.into(),
        }
    }
}

/// Writes `c` over the claim `held` says this invocation holds. A conflict with a write of
/// this same owner (a refresh cut short by the end of the work) is retried on the new ETag;
/// a claim another invocation took over is a conflict.
async fn rewrite_claim(
    registry: &Registry,
    idem: &StoreKey,
    held: &std::sync::Mutex<(ETag, bool)>,
    c: &Claim,
) -> Result<ETag, RegistryError> {
    for _ in 0..3 {
        let etag = held.lock().expect("claim lock").0.clone();
        match registry
            .put_json(idem, c, Precondition::IfMatch(etag))
            .await
        {
            Ok(e) => {
                held.lock().expect("claim lock").0 = e.clone();
                return Ok(e);
            }
            Err(RegistryError::Store(e)) if e.is_conflict() => {
                match registry.get_json::<Claim>(idem).await? {
                    Some((now, etag)) if now.owner == c.owner => {
                        held.lock().expect("claim lock").0 = etag;
                    }
                    _ => {
                        held.lock().expect("claim lock").1 = true;
                        return Err(RegistryError::Store(e));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Contention {
        what: idem.to_string(),
        attempts: 3,
    })
}

/// Handles every record of an event.
pub async fn handle_event(registry: &Registry, event: &Value) -> Result<BatchReport, EventError> {
    let mut report = BatchReport::default();
    for record in parse_event(event)? {
        let outcome = match record {
            Ok(upload) => ingest_upload(registry, &upload).await,
            Err(failed) => failed,
        };
        log_outcome(&outcome);
        report.results.push(outcome);
    }
    Ok(report)
}

/// Logs what happened to one upload: one JSON line CloudWatch can query.
pub fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Failed {
            key,
            error,
            retryable,
        } => tracing::error!(key, error, retryable, "record failed"),
        Outcome::Ignored { key, reason } => tracing::info!(key, reason, "record ignored"),
        other => tracing::info!(outcome = ?other, "record handled"),
    }
}

/// Registers one upload, exactly once however often it is delivered.
pub async fn ingest_upload(registry: &Registry, upload: &Upload) -> Outcome {
    let key = upload.key.as_str();
    let store = registry.store();
    // The store's own key first: on `s3://bucket/PREFIX` the event names `PREFIX/incoming/...`.
    let manifest_key = match store.key_for_object(&upload.bucket, key) {
        Ok(k) => k,
        Err(e @ crate::store::StoreError::OutsidePrefix { .. }) => {
            return Outcome::Ignored {
                key: key.into(),
                reason: e.to_string(),
            };
        }
        Err(e) => return Outcome::failed(key, e, false),
    };
    let parts: Vec<&str> = manifest_key.as_str().split('/').collect();
    if parts.first() != Some(&"incoming") {
        return Outcome::Ignored {
            key: key.into(),
            reason: "outside incoming/".into(),
        };
    }
    if parts.len() != 4 || parts[2].is_empty() {
        return Outcome::Ignored {
            key: key.into(),
            reason: "not incoming/<model>/<run>/<file>".into(),
        };
    }
    match parts[3] {
        "manifest.json" => {}
        "model.onnx" => {
            return Outcome::Ignored {
                key: key.into(),
                reason: "registered when its manifest.json arrives (uploaded last)".into(),
            };
        }
        _ => {
            return Outcome::Ignored {
                key: key.into(),
                reason: "not a trigger file".into(),
            };
        }
    }
    let model = parts[1];
    if let Err(e) = falaj_core::validate_model_name(model) {
        return Outcome::failed(key, e, false);
    }
    // The version's author is the identity the upload names (the manifest's `author`, which
    // the trainer fills from its FALAJ_IDENTITY), else `falaj-ingest`. It must hold a role
    // that may register, like every other registration path; a refusal is audited and not
    // retried (a grant, then a new upload, registers it).
    let manifest = match read_upload(registry, &manifest_key).await {
        Ok(m) => m,
        Err(e) => {
            let retryable = e.is_retryable();
            return Outcome::failed(key, e, retryable);
        }
    };
    let author = match upload_author(&manifest) {
        Ok(a) => a,
        Err(e) => return Outcome::failed(key, e, false),
    };
    if let Err(e) = crate::access::authorize(registry, model, &author, Action::Register, key).await
    {
        let retryable = e.is_retryable();
        return Outcome::failed(key, e, retryable);
    }
    let model_key = match StoreKey::new(
        manifest_key
            .as_str()
            .replace("/manifest.json", "/model.onnx"),
    ) {
        Ok(k) => k,
        Err(e) => return Outcome::failed(key, e, false),
    };

    // Claim the upload.
    let idem = upload.idempotency_key();
    let owner = format!("{:016x}", rand::random::<u64>());
    let claim_etag = match claim(registry, &idem, upload, model, &owner).await {
        Ok(Ok(etag)) => etag,
        Ok(Err(outcome)) => return outcome,
        Err(e) => {
            let retryable = e.is_retryable();
            return Outcome::failed(key, e, retryable);
        }
    };
    // The claim's current ETag, and whether another invocation took it over.
    let held = std::sync::Mutex::new((claim_etag, false));
    let finish = |state: ClaimState, version: Option<u64>, error: Option<String>| {
        let c = Claim {
            state,
            version,
            error,
            ..Claim::claimed(upload, model, &owner)
        };
        let (idem, held) = (idem.clone(), &held);
        async move { rewrite_claim(registry, &idem, held, &c).await }
    };
    // While this invocation works, it refreshes its claim, so a slow registration is never
    // mistaken for a dead one and registered twice.
    let heartbeat = async {
        let every = stale_claim() / 5;
        loop {
            tokio::time::sleep(every).await;
            let c = Claim::claimed(upload, model, &owner);
            match rewrite_claim(registry, &idem, &held, &c).await {
                Ok(_) => {}
                Err(RegistryError::Store(e)) if e.is_conflict() => break,
                Err(e) => tracing::warn!(error = %e, key, "could not refresh the ingest claim"),
            }
        }
        std::future::pending::<()>().await
    };

    let work = async {
        // A crashed earlier invocation may have registered it already.
        let source = upload.source();
        if let Some(v) = registry
            .versions(model, &VersionFilter::default())
            .await
            .ok()
            .and_then(|vs| {
                vs.into_iter()
                    .find(|v| v.source.as_deref() == Some(source.as_str()))
            })
        {
            return Ok(v.version);
        }
        let onnx: Bytes = read_upload(registry, &model_key).await?;
        if held.lock().expect("claim lock").1 {
            return Err(RegistryError::Contention {
                what: format!("the ingest claim of {key} (taken over by another invocation)"),
                attempts: 1,
            });
        }
        match registry
            .create_model(
                NewModel {
                    name: model.into(),
                    description: "created by an upload to incoming/".into(),
                    ..Default::default()
                },
                &author,
            )
            .await
        {
            Ok(_) | Err(RegistryError::ModelExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let r = registry
            .register(
                Registration {
                    model: model.into(),
                    artifact: Artifact::Bytes(onnx),
                    artifact_name: model_key.to_string(),
                    manifest: Some((manifest_key.to_string(), manifest.clone())),
                    semver: None,
                    author: author.clone(),
                    author_principal: None,
                    source: Some(source),
                },
                no_progress(),
            )
            .await?;
        Ok(r.version.version)
    };
    let result: Result<u64, RegistryError> = tokio::select! {
        r = work => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };

    match result {
        Ok(version) => match finish(ClaimState::Done, Some(version), None).await {
            Ok(_) => Outcome::Registered {
                key: key.into(),
                model: model.into(),
                version,
            },
            Err(e) => Outcome::failed(
                key,
                format!("registered {model}@{version} but could not record it: {e}"),
                true,
            ),
        },
        Err(e) => {
            // Retried (by Lambda, or the watcher's next poll) only when a retry may succeed.
            let retryable = e.is_retryable();
            let state = if retryable {
                ClaimState::Retry
            } else {
                ClaimState::Rejected
            };
            let _ = finish(state, None, Some(e.to_string())).await;
            Outcome::failed(key, e, retryable)
        }
    }
}

/// Claims `idem` for `upload` (`crate::claim`): the claim's ETag, or the outcome to return
/// instead. A claim in progress is taken over once stale, and one left for a retry at once.
async fn claim(
    registry: &Registry,
    idem: &StoreKey,
    upload: &Upload,
    model: &str,
    owner: &str,
) -> Result<Result<ETag, Outcome>, RegistryError> {
    let key = upload.key.as_str();
    let fresh = Claim::claimed(upload, model, owner);
    let free = |c: &Claim| match c.state {
        ClaimState::Retry => true,
        ClaimState::Claimed => crate::claim::is_stale(&c.at, stale_claim()),
        ClaimState::Done | ClaimState::Rejected => false,
    };
    Ok(
        match crate::claim::claim(registry, idem, &fresh, free).await? {
            Claimed::Ours(etag) => Ok(etag),
            Claimed::Theirs(c) => Err(match c.state {
                ClaimState::Done => Outcome::Duplicate {
                    key: key.into(),
                    model: c.model.clone(),
                    version: c.version.unwrap_or(0),
                },
                ClaimState::Rejected => Outcome::failed(
                    key,
                    format!(
                        "rejected when first delivered: {}",
                        c.error.clone().unwrap_or_default()
                    ),
                    false,
                ),
                ClaimState::Claimed | ClaimState::Retry => Outcome::failed(
                    key,
                    format!(
                        "another invocation has been registering this upload since {}; retry later",
                        c.at
                    ),
                    true,
                ),
            }),
        },
    )
}

/// Why an invocation failed as a whole: the Lambda `errorType` and `errorMessage`.
///
/// Any failed record fails the invocation, so Lambda retries it and, past its retries, sends
/// it to the dead-letter queue: nothing is dropped silently. Records that succeeded are
/// idempotent, so a retry reports them as duplicates.
#[derive(Debug, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct InvocationError {
    /// `InvalidEvent` (not retryable), `RecordsFailed` (not retryable) or `Retryable`.
    pub error_type: &'static str,
    /// Which records failed and why, as JSON.
    pub message: String,
}

impl InvocationError {
    /// The event itself could not be read: not retried.
    pub fn invalid_event(e: impl std::fmt::Display) -> Self {
        Self {
            error_type: "InvalidEvent",
            message: e.to_string(),
        }
    }

    /// The invocation's error when any of `outcomes` failed (`failed` says which, and whether
    /// a retry may cure it): `Retryable` if one may be retried, else `RecordsFailed`, naming
    /// each failure as JSON. `None` when nothing failed. `what` names the items ("records").
    pub fn from_failures<T: Serialize>(
        outcomes: &[T],
        failed: impl Fn(&T) -> Option<bool>,
        what: &str,
    ) -> Option<Self> {
        let failures: Vec<(&T, bool)> = outcomes
            .iter()
            .filter_map(|o| failed(o).map(|r| (o, r)))
            .collect();
        if failures.is_empty() {
            return None;
        }
        let retryable = failures.iter().any(|(_, r)| *r);
        let listed: Vec<&T> = failures.iter().map(|(o, _)| *o).collect();
        Some(Self {
            error_type: if retryable {
                "Retryable"
            } else {
                "RecordsFailed"
            },
            message: format!(
                "{} of {} {what} failed: {}",
                failures.len(),
                outcomes.len(),
                serde_json::to_string(&listed).unwrap_or_default()
            ),
        })
    }
}

/// Handles one Lambda invocation: the report, or an error naming every failed record.
pub async fn invoke(registry: &Registry, event: &Value) -> Result<BatchReport, InvocationError> {
    let report = handle_event(registry, event)
        .await
        .map_err(InvocationError::invalid_event)?;
    let failed = |o: &Outcome| match o {
        Outcome::Failed { retryable, .. } => Some(*retryable),
        _ => None,
    };
    match InvocationError::from_failures(&report.results, failed, "records") {
        None => Ok(report),
        Some(e) => Err(e),
    }
}

/// How long finished claims are kept on a store that does not expire them itself (`dir://`;
/// S3's lifecycle rule expires `idempotency/` after the same 7 days by default).
pub const FINISHED_CLAIM_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Deletes expired idempotency claims (on `dir://`; see [`crate::store::Store::expire_claim`]):
/// a signed webhook request's claim once its timestamp is far outside the replay window (the
/// signature is refused by its timestamp from then on, so the claim guards nothing), and a
/// finished or rejected ingest claim after [`FINISHED_CLAIM_TTL`] (a late redelivery is still
/// caught: the version records the upload as its `source`). Claims in progress, and
/// retraining claims (they record that a request ran), are kept. Returns how many went.
pub async fn expire_claims(
    registry: &Registry,
    webhook_ttl: Duration,
) -> Result<usize, RegistryError> {
    let store = registry.store();
    let mut gone = 0;
    for prefix in ["idempotency/webhook/", "idempotency/ingest/"] {
        for key in crate::store::list_all(store.as_ref(), prefix).await? {
            let key = StoreKey::new(key)?;
            let Some(obj) = store.get(&key).await? else {
                continue;
            };
            let v: Value = serde_json::from_slice(&obj.bytes).unwrap_or(Value::Null);
            let at = v.get("at").and_then(Value::as_str).unwrap_or("");
            let expired = if prefix.ends_with("webhook/") {
                // An OIDC token's claim outlives the token (its `exp`), whatever the TTL.
                let token_alive = v.get("exp").and_then(Value::as_i64).is_some_and(|exp| {
                    time::OffsetDateTime::now_utc().unix_timestamp() <= exp + 60
                });
                crate::claim::is_stale(at, webhook_ttl) && !token_alive
            } else {
                let finished = matches!(
                    v.get("state").and_then(Value::as_str),
                    Some("done" | "rejected")
                );
                finished && crate::claim::is_stale(at, FINISHED_CLAIM_TTL)
            };
            if expired && store.expire_claim(&key).await? {
                gone += 1;
            }
        }
    }
    Ok(gone)
}
