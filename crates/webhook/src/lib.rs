//! The webhook: falaj's HTTP API for CI systems and people, independent of its transport.
//!
//! [`handle`] takes an [`HttpRequest`] and returns an [`HttpResponse`] whose body is always
//! JSON; it never panics (a panic below it becomes a 500 `internal` answer). Adapters carry
//! it: `falaj_lambda::apigw::invoke` for API Gateway HTTP API and Lambda Function URL events
//! (the `falaj-fn-webhook` binary), a hyper server for `falaj serve` (`falaj-cli`).
//!
//! Every route but `GET /v1/health` is authenticated ([`auth`]): an HMAC-signed request
//! (CI) or a bearer token (people). Roles come from the store's `roles.json` only.
//! Approvals, promotions, rollouts and rollbacks go through a [`Promoter`], because in AWS
//! only the promote function holds the deployment signing key.
//!
//! The order of checks decides what a rejected request can write, which is nothing:
//! body size (413), route (404) and method (405), authentication (401), body and path
//! parameters (400) are all checked before the store is touched. Then a signed request (GET
//! included) claims its signature (`idempotency/webhook/<sha256 of the signature>.json`, create-only; a
//! replay gets 409 `replayed`), and the action runs, checking roles first (a refusal, 403,
//! is audited as a `refused` event in the model's chain). Routes, codes and statuses are
//! listed in `docs/webhook.md`.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use falaj_core::promotion::{Action, Stage, VersionFacts, state_of};
use falaj_core::version::ModelRef;
use falaj_core::{ModelVersion, StoreKey, TrainingManifest};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use falaj::RegistryError;
use falaj::deploy;
use falaj::promotion::{self, PromotionError};
use falaj::registry::{Artifact, NewModel, Registration, Registry, VersionFilter, now};
use falaj::reports as gates;
use falaj::store::{Precondition, no_progress};

pub mod auth;
mod errors;
pub mod http;
pub mod oidc;

pub use auth::{Caller, Credential, WebhookAuth, WebhookConfigError, sign, token_digest};
pub use errors::ApiError;
/// The requests the webhook hands on, and their error (`falaj::calls`).
pub use falaj::calls::{
    ExpectAlias, LocalPromoter, PromoteError, PromoteRequest, Promoter, ValidateCall, Validator,
    apply_promote_request,
};
pub use http::{HttpRequest, HttpResponse};

/// The current unix time in seconds; injectable so tests can sign at a fixed time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// Everything a request needs: the registry, the promoter, the configuration and a clock.
/// Built once per process (Lambda cold start) and shared by every request.
#[derive(Clone)]
pub struct Webhook {
    registry: Arc<Registry>,
    promoter: Arc<dyn Promoter>,
    validator: Option<Arc<dyn Validator>>,
    auth: WebhookAuth,
    clock: Clock,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("registry", &self.registry)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook over `registry` that applies promotions through `promoter`.
    pub fn new(registry: Arc<Registry>, promoter: Arc<dyn Promoter>, auth: WebhookAuth) -> Self {
        Self {
            registry,
            promoter,
            validator: None,
            auth,
            clock: system_clock(),
        }
    }

    /// Runs `POST …/validate` through `validator` (`falaj_gates::LocalValidator` in process,
    /// the validate function over Lambda); without one that route answers 501.
    pub fn with_validator(mut self, validator: Arc<dyn Validator>) -> Self {
        self.validator = Some(validator);
        self
    }

    /// Replaces the clock (unix seconds).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The configuration.
    pub fn auth(&self) -> &WebhookAuth {
        &self.auth
    }

    /// The promoter: approvals, promotions, rollouts and rollbacks go through it.
    pub fn promoter(&self) -> &Arc<dyn Promoter> {
        &self.promoter
    }

    /// The validator, if this webhook runs the gates.
    pub fn validator(&self) -> Option<&Arc<dyn Validator>> {
        self.validator.as_ref()
    }

    /// The current unix time in seconds, by this webhook's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// A fresh request id: 16 hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

// ---- routes ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Models,
    Model(String),
    Versions(String),
    Version(String, String),
    Gates(String, String),
    Validate(String, String),
    Approvals(String, String),
    Promote(String, String),
    Deployment(String, String),
    Rollout(String, String),
    Rollback(String, String),
    Audit(String),
    Feedback(String),
}

impl Route {
    fn parse(req: &HttpRequest) -> Option<Self> {
        let segs = req.segments();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let o = |x: &str| x.to_string();
        Some(match s.as_slice() {
            ["v1", "health"] => Self::Health,
            ["v1", "models"] => Self::Models,
            ["v1", "models", m] => Self::Model(o(m)),
            ["v1", "models", m, "versions"] => Self::Versions(o(m)),
            ["v1", "models", m, "versions", v] => Self::Version(o(m), o(v)),
            ["v1", "models", m, "versions", v, "gates"] => Self::Gates(o(m), o(v)),
            ["v1", "models", m, "versions", v, "validate"] => Self::Validate(o(m), o(v)),
            ["v1", "models", m, "versions", v, "approvals"] => Self::Approvals(o(m), o(v)),
            ["v1", "models", m, "versions", v, "promote"] => Self::Promote(o(m), o(v)),
            ["v1", "models", m, "deployments", e] => Self::Deployment(o(m), o(e)),
            ["v1", "models", m, "deployments", e, "rollout"] => Self::Rollout(o(m), o(e)),
            ["v1", "models", m, "deployments", e, "rollback"] => Self::Rollback(o(m), o(e)),
            ["v1", "models", m, "audit"] => Self::Audit(o(m)),
            ["v1", "models", m, "feedback"] => Self::Feedback(o(m)),
            _ => return None,
        })
    }

    fn methods(&self) -> &'static [&'static str] {
        match self {
            Self::Versions(..) | Self::Approvals(..) => &["GET", "POST"],
            Self::Validate(..)
            | Self::Promote(..)
            | Self::Rollout(..)
            | Self::Rollback(..)
            | Self::Feedback(..) => &["POST"],
            _ => &["GET"],
        }
    }

    /// The route's template, for logs.
    fn template(&self) -> &'static str {
        match self {
            Self::Health => "/v1/health",
            Self::Models => "/v1/models",
            Self::Model(..) => "/v1/models/{m}",
            Self::Versions(..) => "/v1/models/{m}/versions",
            Self::Version(..) => "/v1/models/{m}/versions/{v}",
            Self::Gates(..) => "/v1/models/{m}/versions/{v}/gates",
            Self::Validate(..) => "/v1/models/{m}/versions/{n}/validate",
            Self::Approvals(..) => "/v1/models/{m}/versions/{n}/approvals",
            Self::Promote(..) => "/v1/models/{m}/versions/{n}/promote",
            Self::Deployment(..) => "/v1/models/{m}/deployments/{env}",
            Self::Rollout(..) => "/v1/models/{m}/deployments/{env}/rollout",
            Self::Rollback(..) => "/v1/models/{m}/deployments/{env}/rollback",
            Self::Audit(..) => "/v1/models/{m}/audit",
            Self::Feedback(..) => "/v1/models/{m}/feedback",
        }
    }
}

// ---- the entry point ----

/// What the request log line reports.
#[derive(Debug, Default)]
struct Trace {
    route: &'static str,
    identity: Option<String>,
    code: Option<String>,
}

/// Polls a future, turning a panic into an `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Runs `fut`, turning a panic below it into `Err` with the panic's message: for the
/// handlers beside this one (`falaj-mlflow`) that must answer too when something panics.
pub async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, String> {
    CatchUnwind(Box::pin(fut)).await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

/// Handles one request. Never panics; every answer, error or not, is JSON.
pub async fn handle(ctx: &Webhook, req: HttpRequest) -> HttpResponse {
    let started = std::time::Instant::now();
    let request_id = req.id();
    let mut trace = Trace {
        route: "-",
        ..Trace::default()
    };
    let outcome = CatchUnwind(Box::pin(dispatch(ctx, &req, &request_id, &mut trace))).await;
    let mut response = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            trace.code = Some(e.code.clone());
            if e.status >= 500 {
                tracing::error!(request_id = %request_id, code = %e.code, message = %e.message, "webhook request failed");
            }
            e.into_response(&request_id)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(request_id = %request_id, panic = %what, "webhook handler panicked");
            trace.code = Some("internal".into());
            ApiError::new(
                500,
                "internal",
                format!("internal error; quote request id {request_id} to the operator"),
            )
            .into_response(&request_id)
        }
    };
    response.set_header("x-request-id", request_id.clone());
    response.set_header("cache-control", "no-store");
    let status = response.status;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let identity = trace.identity.as_deref().unwrap_or("-");
    let code = trace.code.as_deref().unwrap_or("-");
    let source_ip = req.source_ip.as_deref().unwrap_or("-");
    if status >= 500 {
        tracing::error!(request_id = %request_id, method = %req.method, route = trace.route, identity, status, code, elapsed_ms, source_ip, "webhook request");
    } else if status >= 400 {
        tracing::warn!(request_id = %request_id, method = %req.method, route = trace.route, identity, status, code, elapsed_ms, source_ip, "webhook request");
    } else {
        tracing::info!(request_id = %request_id, method = %req.method, route = trace.route, identity, status, elapsed_ms, source_ip, "webhook request");
    }
    response
}

fn ok(value: Value) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::json(200, &value))
}

async fn dispatch(
    ctx: &Webhook,
    req: &HttpRequest,
    request_id: &str,
    trace: &mut Trace,
) -> Result<HttpResponse, ApiError> {
    let limit = ctx.auth.max_body_bytes;
    if req.body.len() > limit {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!(
                "the request body is {} bytes; the limit is {limit} bytes",
                req.body.len()
            ),
        ));
    }
    let route = Route::parse(req).ok_or_else(|| {
        ApiError::new(
            404,
            "not_found",
            format!(
                "no route {} {}; the API is under /v1 (see docs/webhook.md)",
                req.method, req.path
            ),
        )
    })?;
    trace.route = route.template();
    let methods = route.methods();
    if !methods.contains(&req.method.as_str()) {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            format!(
                "{} does not accept {}; use {}",
                route.template(),
                req.method,
                methods.join(" or ")
            ),
        )
        .with_header("allow", methods.join(", ")));
    }
    if route == Route::Health {
        return ok(
            json!({"status": "ok", "service": "falaj-webhook", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    let mut caller = auth::authenticate(&ctx.auth, req, (ctx.clock)())
        .map_err(|e| e.with_header("www-authenticate", "Bearer realm=\"falaj\""))?;
    if let Credential::Jwt(token) = &caller.credential {
        let verified = verify_oidc(ctx, token)
            .await
            .map_err(|e| e.with_header("www-authenticate", "Bearer realm=\"falaj\""))?;
        caller = Caller {
            identity: verified.identity.clone(),
            credential: Credential::Oidc(verified),
        };
    }
    trace.identity = Some(caller.identity.clone());
    let reg = ctx.registry.as_ref();
    if req.method == "GET" {
        // A signed GET is claimed too: a signature seen once (in a log) is spent.
        claim_signature(ctx, req, &caller, request_id).await?;
        return get(reg, req, route).await;
    }
    // POST: everything the request says is checked before the store is written.
    if let Credential::Oidc(token) = &caller.credential {
        oidc::check_bound(token, &req.body)?;
    }
    let action = prepare(req, route, &caller.identity)?;
    claim_signature(ctx, req, &caller, request_id).await?;
    execute(ctx, action, &caller.identity).await
}

// ---- parameters ----

fn check_model(m: &str) -> Result<(), ApiError> {
    falaj_core::validate_model_name(m).map_err(|e| RegistryError::from(e).into())
}

/// A version number for a write: aliases move, so a write names the version it means.
fn version_number(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_version",
            format!(
                "version {v:?} must be a number from 1 (writes name the version, not an alias)"
            ),
        )
    })
}

fn stage(to: &str) -> Result<Stage, ApiError> {
    Stage::parse(to).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_stage",
            format!("\"to\": {to:?} is not a stage; use \"staging\" or \"production\""),
        )
    })
}

fn environment(env: &str) -> Result<&'static str, ApiError> {
    Stage::for_env(env)
        .map(Stage::env)
        .ok_or_else(|| PromotionError::BadEnv { env: env.into() }.into())
}

/// An object key named in a body: valid, and under `incoming/<model>/`.
fn incoming_key(model: &str, field: &str, key: &str) -> Result<StoreKey, ApiError> {
    let k = StoreKey::new(key)
        .map_err(|e| ApiError::bad_request("invalid_key", format!("\"{field}\": {e}")))?;
    if !k
        .as_str()
        .starts_with(&falaj_core::layout::incoming_prefix(model))
    {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!("\"{field}\": {key:?} must be an uploaded object under incoming/{model}/"),
        ));
    }
    Ok(k)
}

/// The body as `T`; an empty body reads as `{}`.
fn parse_body<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    let bytes: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(
            "invalid_body",
            format!("the request body does not fit this route: {e}"),
        ),
        _ => ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON: {e}"),
        ),
    })
}

/// `null` → `Some(None)`, absent → `None` (with `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    artifact: String,
    manifest: String,
    #[serde(default)]
    semver: Option<String>,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    holdout: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    to: String,
    #[serde(default)]
    comment: String,
    /// `approve` (the default) or `reject`: an approver's veto, with the comment as reason.
    #[serde(default)]
    decision: Option<String>,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    to: String,
    #[serde(default)]
    canary: Option<u8>,
    #[serde(default)]
    blue_green: bool,
    /// `"sandbox"` (the default) or `"host"`, which the version's policy must allow.
    #[serde(default)]
    runtime: falaj_core::deployment::Runtime,
    #[serde(default, deserialize_with = "present")]
    expect: Option<Option<u64>>,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    #[serde(default)]
    weight: Option<u32>,
    /// Let the canary judge decide the step (`falaj rollout --auto`).
    #[serde(default)]
    auto: bool,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    labels: Vec<FeedbackLabel>,
    #[serde(default, rename = "nonce")]
    _nonce: Option<IgnoredAny>,
    /// The claims a CI token binds (checked by `oidc::check_bound` before this is parsed).
    #[serde(default, rename = "ci")]
    _ci: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackLabel {
    request_id: String,
    #[serde(default)]
    row: usize,
    label: serde_json::Value,
}

/// A checked write, ready to run.
enum Write {
    Register {
        model: String,
        artifact: StoreKey,
        manifest: StoreKey,
        semver: Option<String>,
    },
    Validate {
        model: String,
        version: u64,
        holdout: StoreKey,
        policy: Option<String>,
    },
    Promoter(PromoteRequest),
    Feedback {
        model: String,
        labels: Vec<falaj_core::live::Label>,
    },
}

fn prepare(req: &HttpRequest, route: Route, actor: &str) -> Result<Write, ApiError> {
    let actor = actor.to_string();
    Ok(match route {
        Route::Versions(m) => {
            check_model(&m)?;
            let b: RegisterBody = parse_body(req)?;
            Write::Register {
                artifact: incoming_key(&m, "artifact", &b.artifact)?,
                manifest: incoming_key(&m, "manifest", &b.manifest)?,
                semver: b.semver,
                model: m,
            }
        }
        Route::Validate(m, v) => {
            check_model(&m)?;
            let version = version_number(&v)?;
            let b: ValidateBody = parse_body(req)?;
            let key = b.holdout.strip_prefix("store:").unwrap_or(&b.holdout);
            let holdout = StoreKey::new(key)
                .map_err(|e| ApiError::bad_request("invalid_key", format!("\"holdout\": {e}")))?;
            Write::Validate {
                model: m,
                version,
                holdout,
                policy: b.policy,
            }
        }
        Route::Approvals(m, v) => {
            check_model(&m)?;
            let version = version_number(&v)?;
            let b: ApproveBody = parse_body(req)?;
            let to = stage(&b.to)?;
            let decision = b.decision.as_deref().unwrap_or("approve");
            let request = PromoteRequest::decision(decision, (&m, version), &actor, to, b.comment)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("\"decision\": {decision:?} is not a decision; use \"approve\" or \"reject\""),
                    )
                })?;
            Write::Promoter(request)
        }
        Route::Promote(m, v) => {
            check_model(&m)?;
            let version = version_number(&v)?;
            let b: PromoteBody = parse_body(req)?;
            Write::Promoter(PromoteRequest::Promote {
                to: stage(&b.to)?,
                model: m,
                version,
                actor,
                canary: b.canary,
                blue_green: b.blue_green,
                runtime: b.runtime,
                expect: match b.expect {
                    None => ExpectAlias::Any,
                    Some(None) => ExpectAlias::Absent,
                    Some(Some(n)) => ExpectAlias::Version(n),
                },
            })
        }
        Route::Rollout(m, e) => {
            check_model(&m)?;
            let env = environment(&e)?.to_string();
            let b: RolloutBody = parse_body(req)?;
            match (b.weight, b.auto) {
                (Some(weight), false) => Write::Promoter(PromoteRequest::Rollout {
                    model: m,
                    env,
                    actor,
                    weight,
                }),
                (None, true) => Write::Promoter(PromoteRequest::CanaryLook {
                    model: m,
                    env,
                    actor,
                }),
                _ => {
                    return Err(ApiError::new(
                        400,
                        "invalid_request",
                        "a rollout body is {\"weight\": 0-100} or {\"auto\": true} (the canary judge decides the step), not both",
                    ));
                }
            }
        }
        Route::Feedback(m) => {
            check_model(&m)?;
            let b: FeedbackBody = parse_body(req)?;
            let labels = b
                .labels
                .into_iter()
                .map(|l| falaj_core::live::Label {
                    request_id: l.request_id,
                    row: l.row,
                    // A class label as sent, or a regression value as a number.
                    label: match l.label {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    },
                })
                .collect();
            Write::Feedback { model: m, labels }
        }
        Route::Rollback(m, e) => {
            check_model(&m)?;
            let env = environment(&e)?.to_string();
            let _: EmptyBody = parse_body(req)?;
            Write::Promoter(PromoteRequest::Rollback {
                model: m,
                env,
                actor,
            })
        }
        other => {
            // `methods()` lets POST through only for the routes above.
            return Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{} does not accept POST", other.template()),
            ));
        }
    })
}

/// Verifies a CI platform's OIDC token against its issuer's key set pinned in the store.
async fn verify_oidc(ctx: &Webhook, token: &str) -> Result<oidc::VerifiedToken, ApiError> {
    let issuer = oidc::issuer_of(token)?;
    let trusted = ctx.auth.oidc.iter().any(|t| t.issuer == issuer);
    let (true, Some(host)) = (trusted, oidc::issuer_host(&issuer)) else {
        return Err(ApiError::new(
            401,
            "wrong_issuer",
            format!(
                "tokens from {issuer:?} are not trusted here; the webhook configuration's [[oidc]] entries name the issuers it trusts"
            ),
        ));
    };
    let key = falaj_core::layout::oidc_keys(host);
    let keys = match ctx
        .registry
        .get_json::<jsonwebtoken::jwk::JwkSet>(&key)
        .await
    {
        Ok(Some((k, _))) => k,
        Ok(None) => {
            return Err(ApiError::new(
                401,
                "no_issuer_keys",
                format!(
                    "no key set is pinned for {issuer} at {key}; an operator pins it once (Terraform, or the issuer's /.well-known/jwks)"
                ),
            ));
        }
        Err(RegistryError::Corrupt { .. }) => {
            return Err(ApiError::new(
                500,
                "corrupt_object",
                format!("{key} is not a JSON Web Key Set"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    oidc::verify(&ctx.auth.oidc, &keys, &issuer, token, (ctx.clock)())
}

/// Claims a signed request's signature, or an OIDC token's `jti`, create-only: a second use
/// is a replay.
async fn claim_signature(
    ctx: &Webhook,
    req: &HttpRequest,
    caller: &Caller,
    request_id: &str,
) -> Result<(), ApiError> {
    let (digest, exp, replayed) = match &caller.credential {
        Credential::Signature(sig) => (
            hex::encode(Sha256::digest(sig)),
            None,
            ApiError::new(
                409,
                "replayed",
                "this signed request was already received: every signature is accepted once. Sign each request afresh with the current X-Falaj-Timestamp (to send the same body twice within a second, add a \"nonce\" field)",
            ),
        ),
        Credential::Oidc(t) => (
            hex::encode(Sha256::digest(format!("oidc\n{}\n{}", t.issuer, t.jti))),
            Some(t.exp),
            ApiError::new(
                409,
                "token_replayed",
                "this CI token was already used: each token (its jti) is accepted once. Ask for a fresh token for every call",
            ),
        ),
        Credential::Bearer | Credential::Jwt(_) => return Ok(()),
    };
    let key = falaj_core::layout::webhook_claim(&digest);
    let record = json!({
        "identity": caller.identity,
        "timestamp": req.header(auth::TIMESTAMP_HEADER),
        "method": req.method,
        "path": req.path,
        "body_sha256": hex::encode(Sha256::digest(&req.body)),
        "request_id": request_id,
        "at": now(),
        // Kept at least until the token expires (falaj::ingest::expire_claims).
        "exp": exp,
    });
    match ctx
        .registry
        .put_json(&key, &record, Precondition::IfAbsent)
        .await
    {
        Ok(_) => Ok(()),
        Err(RegistryError::Store(e)) if e.is_conflict() => Err(replayed),
        Err(e) => Err(e.into()),
    }
}

async fn execute(ctx: &Webhook, write: Write, actor: &str) -> Result<HttpResponse, ApiError> {
    let reg = ctx.registry.as_ref();
    match write {
        Write::Register {
            model,
            artifact,
            manifest,
            semver,
        } => register(reg, &model, &artifact, &manifest, semver, actor).await,
        Write::Validate {
            model,
            version,
            holdout,
            policy,
        } => {
            let Some(validator) = ctx.validator.as_ref() else {
                return Err(ApiError::new(
                    501,
                    "no_evaluator",
                    "this webhook has no validator: give it one (`falaj serve` runs the gates in process; the webhook function calls the validate function named by FALAJ_VALIDATE_FUNCTION)",
                ));
            };
            let call = ValidateCall {
                model: model.clone(),
                version,
                holdout: holdout.to_string(),
                policy,
                actor: actor.into(),
            };
            let report = validator.validate(reg, call).await?;
            if report.passed {
                return ok(json!({ "report": report }));
            }
            let failed: Vec<String> = report.failures().iter().map(|g| g.gate.clone()).collect();
            let why = match &report.error {
                Some(e) => format!("the model did not run: {e}"),
                None => format!("failed gates: {}", failed.join(", ")),
            };
            Err(ApiError::new(
                422,
                "gates_failed",
                format!(
                    "{model}@{version} is rejected ({why}); the report is run {} of its gate reports",
                    report.run
                ),
            )
            .with_details(json!({ "report": report })))
        }
        Write::Promoter(req) => match ctx.promoter.apply(req).await {
            Ok(v) => ok(v),
            Err(e) => Err(e.into()),
        },
        Write::Feedback { model, labels } => {
            let key = falaj::canary::record_feedback(reg, &model, &labels, actor).await?;
            ok(json!({ "key": key, "labels": labels.len() }))
        }
    }
}

// ---- register ----

async fn register(
    reg: &Registry,
    model: &str,
    artifact: &StoreKey,
    manifest: &StoreKey,
    semver: Option<String>,
    actor: &str,
) -> Result<HttpResponse, ApiError> {
    // Checked again by `falaj::access::register` below; checked here first so a caller
    // without the role learns nothing about which objects exist.
    promotion::authorize(reg, model, actor, Action::Register, model).await?;
    let read = |k: &StoreKey| {
        let k = k.clone();
        async move {
            reg.store()
                .get(&k)
                .await
                .map_err(RegistryError::from)?
                .ok_or_else(|| {
                    ApiError::new(
                        422,
                        "object_missing",
                        format!("{k} does not exist in the store; upload it before registering"),
                    )
                })
        }
    };
    let art = read(artifact).await?;
    let man = read(manifest).await?;
    let source = format!("store:{artifact}#{}", art.etag);
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&man.bytes)));
    let exists = match reg.model(model).await {
        Ok(_) => true,
        Err(RegistryError::ModelNotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if exists {
        // The same objects registered again (a CI retry) give the same version.
        let found = reg
            .versions(model, &VersionFilter::default())
            .await?
            .into_iter()
            .find(|v| {
                v.source.as_deref() == Some(source.as_str())
                    && v.manifest_digest.as_deref() == Some(manifest_digest.as_str())
            });
        if let Some(v) = found {
            return ok(json!({"version": v, "duplicate": true}));
        }
    } else {
        // Creating the model is a write: check first what `register` would refuse.
        precheck(model, artifact, &art.bytes, manifest, &man.bytes)?;
        match reg
            .create_model(
                NewModel {
                    name: model.into(),
                    description: "created by a webhook registration".into(),
                    owner: actor.into(),
                    ..Default::default()
                },
                actor,
            )
            .await
        {
            Ok(_) | Err(RegistryError::ModelExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let r = falaj::access::register(
        reg,
        Registration {
            model: model.into(),
            artifact: Artifact::Bytes(art.bytes),
            artifact_name: artifact.to_string(),
            manifest: Some((manifest.to_string(), man.bytes)),
            semver,
            author: actor.into(),
            // The credential that authenticated the caller vouches for it.
            author_principal: Some(actor.into()),
            source: Some(source),
        },
        no_progress(),
    )
    .await?;
    Ok(HttpResponse::json(
        201,
        &json!({"version": r.version, "blob_created": r.blob_created, "duplicate": false}),
    ))
}

/// The checks `Registry::register` makes before writing, with the same errors.
fn precheck(
    model: &str,
    artifact: &StoreKey,
    onnx: &Bytes,
    manifest: &StoreKey,
    manifest_bytes: &Bytes,
) -> Result<(), ApiError> {
    let m: TrainingManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| RegistryError::InvalidManifest {
            source_name: manifest.to_string(),
            reason: e.to_string(),
        })?;
    if !m.model.is_empty() && m.model != model {
        return Err(RegistryError::InvalidManifest {
            source_name: manifest.to_string(),
            reason: format!("it is for model {:?}, not {model:?}", m.model),
        }
        .into());
    }
    falaj_core::onnx::summarize(onnx).map_err(|e| RegistryError::InvalidArtifact {
        source_name: artifact.to_string(),
        reason: e.to_string(),
    })?;
    Ok(())
}

// ---- reads ----

fn version_ref(m: &str, v: &str) -> Result<ModelRef, ApiError> {
    format!("{m}@{v}")
        .parse::<ModelRef>()
        .map_err(|e| RegistryError::from(e).into())
}

async fn alias_version(reg: &Registry, m: &str, alias: &str) -> Result<Option<u64>, ApiError> {
    Ok(reg.alias(m, alias).await?.and_then(|(a, _)| a.version))
}

async fn get(reg: &Registry, req: &HttpRequest, route: Route) -> Result<HttpResponse, ApiError> {
    match route {
        Route::Models => ok(json!({ "models": reg.models().await? })),
        Route::Model(m) => {
            check_model(&m)?;
            let rec = reg.model(&m).await?;
            ok(json!({
                "model": rec,
                "aliases": reg.aliases(&m).await?,
                "latest_version": reg.latest_version(&m).await?,
            }))
        }
        Route::Versions(m) => {
            check_model(&m)?;
            let versions = reg.versions(&m, &VersionFilter::default()).await?;
            let staging = alias_version(reg, &m, "staging").await?;
            let production = alias_version(reg, &m, "production").await?;
            let mut out = Vec::with_capacity(versions.len());
            for v in versions {
                let n = v.version;
                let facts = VersionFacts {
                    gates_passed: falaj::gatekeeper::evidence(reg, &v)
                        .await
                        .map_err(ApiError::from)?
                        .passed(),
                    at_staging: staging == Some(n),
                    at_production: production == Some(n),
                    was_replaced: reg
                        .store()
                        .get(&promotion::archived_key(&m, n))
                        .await
                        .map_err(RegistryError::from)?
                        .is_some(),
                };
                out.push(with_state(&v, state_of(facts)));
            }
            ok(json!({"model": m, "versions": out}))
        }
        Route::Version(m, v) => {
            let r = version_ref(&m, &v)?;
            let ver = reg.resolve(&r).await?;
            let n = ver.version;
            let state = promotion::version_state(reg, &m, n).await?;
            let aliases: Vec<String> = reg
                .aliases(&m)
                .await?
                .into_iter()
                .filter(|a| a.version == Some(n))
                .map(|a| a.alias)
                .collect();
            ok(json!({
                "version": ver,
                "state": state,
                "tags": reg.version_tags(&m, n).await?,
                "aliases": aliases,
                "approvals": promotion::approvals(reg, &m, n).await?,
            }))
        }
        Route::Gates(m, v) => {
            let r = version_ref(&m, &v)?;
            let n = reg.resolve(&r).await?.version;
            let mut reports = gates::reports(reg, &m, n).await?;
            let runs = reports.len();
            match reports.pop() {
                Some(report) => ok(json!({"report": report, "runs": runs})),
                None => Err(ApiError::new(
                    404,
                    "not_found",
                    format!(
                        "{m}@{n} has no gate report yet; validate it with POST /v1/models/{m}/versions/{n}/validate"
                    ),
                )),
            }
        }
        Route::Approvals(m, v) => {
            let r = version_ref(&m, &v)?;
            let n = reg.resolve(&r).await?.version;
            ok(json!({"approvals": promotion::approvals(reg, &m, n).await?}))
        }
        Route::Deployment(m, e) => {
            check_model(&m)?;
            let env = environment(&e)?;
            reg.model(&m).await?;
            ok(serde_json::to_value(deploy::status(reg, &m, env).await?).unwrap_or(Value::Null))
        }
        Route::Audit(m) => audit(reg, req, &m).await,
        other => Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{} does not accept GET", other.template()),
        )),
    }
}

fn with_state(v: &ModelVersion, state: falaj_core::promotion::VersionState) -> Value {
    let mut value = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut value {
        o.insert("state".into(), json!(state));
    }
    value
}

/// Largest page of audit events.
const MAX_AUDIT_PAGE: usize = 1000;

async fn audit(reg: &Registry, req: &HttpRequest, m: &str) -> Result<HttpResponse, ApiError> {
    check_model(m)?;
    let bad = |name: &str, v: &str, rule: &str| {
        ApiError::bad_request("invalid_query", format!("?{name}={v:?}: {rule}"))
    };
    let after = match req.query_param("after") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad("after", v, "expected an event seq (a whole number)"))?,
    };
    let limit = match req.query_param("limit") {
        None => MAX_AUDIT_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_AUDIT_PAGE).contains(l))
            .ok_or_else(|| bad("limit", v, "expected 1 to 1000"))?,
    };
    let verify = match req.query_param("verify") {
        None | Some("0" | "false" | "no") => false,
        Some("" | "1" | "true" | "yes") => true,
        Some(v) => return Err(bad("verify", v, "expected 1 or 0")),
    };
    reg.model(m).await?;
    let events = reg.audit_events(m).await?;
    let total = events.len();
    let page: Vec<_> = events
        .into_iter()
        .filter(|(_, seq, _)| *seq > after)
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit - 1].1);
    let page: Vec<_> = page.into_iter().take(limit).map(|(_, _, e)| e).collect();
    let mut out = json!({"model": m, "events": page, "total": total, "next": next});
    if verify {
        let problems: Vec<String> = reg
            .verify_audit(m)
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        out["verify"] = json!({"ok": problems.is_empty(), "problems": problems});
    }
    ok(out)
}

/// Route templates and the methods each accepts, for documentation and `falaj serve`.
pub fn routes() -> BTreeMap<&'static str, &'static [&'static str]> {
    let s = String::new;
    [
        Route::Health,
        Route::Models,
        Route::Model(s()),
        Route::Versions(s()),
        Route::Version(s(), s()),
        Route::Gates(s(), s()),
        Route::Validate(s(), s()),
        Route::Approvals(s(), s()),
        Route::Promote(s(), s()),
        Route::Deployment(s(), s()),
        Route::Rollout(s(), s()),
        Route::Rollback(s(), s()),
        Route::Audit(s()),
    ]
    .iter()
    .map(|r| (r.template(), r.methods()))
    .collect()
}
