//! MLflow's REST API over the falaj store: an unmodified MLflow client (`MLFLOW_TRACKING_URI`
//! pointed at `falaj serve` or the webhook function) logs experiments, runs, metrics and
//! models, and registers them, while falaj's gates, roles, four-eyes approvals and signed
//! deployments stay in charge.
//!
//! [`handle`] answers `/api/2.0/mlflow/...`, `/api/3.0/mlflow/...` and
//! `/api/2.0/mlflow-artifacts/...`, and hands every other path to [`falaj_webhook::handle`],
//! so both carriers (`falaj serve`, `falaj-fn-webhook`) serve both APIs on one port.
//!
//! - **Registry** ([`registry`]): a registered model is a falaj model; a model version is a
//!   falaj version (immutable, content-addressed: the ONNX file is copied into `blobs/`).
//!   Free aliases move by compare-and-swap; `staging`, `production` and `challenger` go
//!   through the promoter, the one gatekeeper, and a refusal is `PERMISSION_DENIED` naming
//!   the missing gate or approval. Gate results and state appear as `falaj.*` tags.
//! - **Tracking** ([`tracking`]): experiments, runs (params, metrics, tags, dataset inputs,
//!   model outputs) and MLflow 3's logged models, under `mlflow/` in the store.
//! - **Artifacts** ([`artifacts`]): upload, download and listing under `mlflow/artifacts/`;
//!   a registered version is read back from its blobs under `_registry/<model>/<n>/`.
//!
//! Errors are MLflow's: `{"error_code", "message"}` with its statuses
//! (`RESOURCE_ALREADY_EXISTS` is 400, as `mlflow.register_model` expects); a definite failure
//! is never a 5xx, which the client would retry for minutes. Callers authenticate with a
//! falaj bearer token (`MLFLOW_TRACKING_TOKEN`) or Basic credentials (`MLFLOW_TRACKING_USERNAME`
//! = the identity, `MLFLOW_TRACKING_PASSWORD` = its token); roles come from `roles.json`.

use std::collections::BTreeMap;

use falaj::RegistryError;
use falaj::registry::Registry;
use falaj::store::Precondition;
use falaj_core::StoreKey;
use falaj_webhook::{ApiError, Credential, HttpRequest, HttpResponse, PromoteError, Webhook};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub mod artifacts;
pub mod model_files;
pub mod registry;
pub mod search;
pub mod tracking;

/// Whether `path` belongs to the MLflow API.
pub fn is_mlflow_path(path: &str) -> bool {
    path.starts_with("/api/2.0/mlflow/")
        || path.starts_with("/api/2.0/mlflow-artifacts/")
        || path == "/api/2.0/mlflow-artifacts"
        || path.starts_with("/api/3.0/mlflow/")
        || path.starts_with("/ajax-api/")
}

/// The largest body accepted for a request to `path`: artifact uploads may be larger than
/// the webhook's requests (`max_artifact_bytes`), everything else keeps `max_body_bytes`.
pub fn body_limit(hook: &Webhook, path: &str) -> usize {
    let auth = hook.auth();
    if path.starts_with("/api/2.0/mlflow-artifacts/artifacts/") {
        auth.max_artifact_bytes.max(auth.max_body_bytes)
    } else {
        auth.max_body_bytes
    }
}

/// Answers one request: MLflow's API for its paths, the webhook for every other.
pub async fn handle(hook: &Webhook, req: HttpRequest) -> HttpResponse {
    if !is_mlflow_path(&req.path) {
        return falaj_webhook::handle(hook, req).await;
    }
    let started = std::time::Instant::now();
    let request_id = req.id();
    let mut identity = None;
    let outcome = falaj_webhook::catch_panic(dispatch(hook, &req, &mut identity)).await;
    let mut response = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(panic) => {
            tracing::error!(request_id = %request_id, panic = %panic, "mlflow handler panicked");
            MlError::new(
                "INTERNAL_ERROR",
                format!("internal error; quote request id {request_id} to the operator"),
            )
            .into_response()
        }
    };
    response.set_header("x-request-id", request_id.clone());
    let identity = identity.as_deref().unwrap_or("-");
    req.log_answer(
        "mlflow",
        &request_id,
        identity,
        response.status,
        started,
        tracing::Level::DEBUG,
    );
    response
}

async fn dispatch(
    hook: &Webhook,
    req: &HttpRequest,
    identity: &mut Option<String>,
) -> Result<HttpResponse, MlError> {
    let limit = body_limit(hook, &req.path);
    if req.body.len() > limit {
        return Err(MlError::new(
            "INVALID_PARAMETER_VALUE",
            format!(
                "the request body is {} bytes; the limit is {limit} bytes (max_body_bytes, or max_artifact_bytes for artifact uploads, in the webhook configuration)",
                req.body.len()
            ),
        )
        .with_status(413));
    }
    // Probes the client makes before it has credentials to offer: harmless, no store read.
    if req.method == "GET" && req.path == "/api/3.0/mlflow/server-info" {
        // On S3, downloads go straight to the store through presigned URLs: a Lambda
        // function answers 6 MB at most, and no large body passes through it.
        return Ok(ok(json!({
            "store_type": "falaj",
            "artifacts_presigned_only": false,
            "multipart_downloads_enabled": artifacts::presigns(hook),
            "multipart_uploads_enabled": false,
            "workspaces_enabled": false,
        })));
    }
    let caller = authenticate(hook, req)?;
    *identity = Some(caller.clone());
    let cx = Cx {
        hook,
        reg: hook.registry().as_ref(),
        caller,
    };
    let path = req
        .path
        .strip_prefix("/ajax-api")
        .map(|p| format!("/api{p}"))
        .unwrap_or_else(|| req.path.clone());
    if let Some(rest) = path.strip_prefix("/api/2.0/mlflow-artifacts") {
        return artifacts::route(&cx, req, rest).await;
    }
    let rest = path
        .strip_prefix("/api/2.0/mlflow/")
        .or_else(|| path.strip_prefix("/api/3.0/mlflow/"))
        .unwrap_or_default();
    let p = Params::of(req)?;
    let method = req.method.as_str();
    if let Some(r) = registry::route(&cx, method, rest, &p).await {
        return r;
    }
    if let Some(r) = tracking::route(&cx, method, rest, &p).await {
        return r;
    }
    Err(not_found_endpoint(method, &req.path))
}

fn not_found_endpoint(method: &str, path: &str) -> MlError {
    MlError::new(
        "ENDPOINT_NOT_FOUND",
        format!(
            "falaj does not serve {method} {path}; docs/mlflow.md lists the MLflow endpoints it answers"
        ),
    )
}

/// Who is calling. The MLflow API takes the long-lived credentials an MLflow client sends: a
/// falaj bearer token, or Basic with the identity and its token. A CI OIDC token is
/// single-use (its `jti` is claimed) and a signed request is bound to one call, so neither
/// fits a client that makes many calls: both are refused with what to use instead.
fn authenticate(hook: &Webhook, req: &HttpRequest) -> Result<String, MlError> {
    let caller = falaj_webhook::auth::authenticate(hook.auth(), req, hook.now())
        .map_err(|e| MlError::from_api(e, false))?;
    match caller.credential {
        Credential::Bearer => Ok(caller.identity),
        _ => Err(MlError::new(
            "UNAUTHENTICATED",
            "the MLflow API takes MLFLOW_TRACKING_TOKEN (a falaj bearer token) or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (the identity and its token); CI OIDC tokens and signed requests are single-use and are accepted on /v1 only",
        )),
    }
}

/// What every handler needs.
pub(crate) struct Cx<'a> {
    pub hook: &'a Webhook,
    pub reg: &'a Registry,
    /// The authenticated identity.
    pub caller: String,
}

// ---- errors ----

/// An error as MLflow's server answers it: `{"error_code", "message"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MlError {
    /// HTTP status.
    pub status: u16,
    /// MLflow's error code (`RESOURCE_DOES_NOT_EXIST`, ...).
    pub code: &'static str,
    /// What was wrong, and the fix.
    pub message: String,
}

impl MlError {
    /// An error with the status MLflow's server gives `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        let status = match code {
            "RESOURCE_DOES_NOT_EXIST" | "NOT_FOUND" | "ENDPOINT_NOT_FOUND" => 404,
            "RESOURCE_CONFLICT" | "ALREADY_EXISTS" | "ABORTED" => 409,
            "PERMISSION_DENIED" => 403,
            "UNAUTHENTICATED" => 401,
            "REQUEST_LIMIT_EXCEEDED" | "RESOURCE_EXHAUSTED" => 429,
            "NOT_IMPLEMENTED" => 501,
            "TEMPORARILY_UNAVAILABLE" => 503,
            "INTERNAL_ERROR" => 500,
            // RESOURCE_ALREADY_EXISTS, INVALID_PARAMETER_VALUE, BAD_REQUEST, ...
            _ => 400,
        };
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// A bad or missing parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("INVALID_PARAMETER_VALUE", message)
    }

    /// Something named does not exist.
    pub fn missing(message: impl Into<String>) -> Self {
        Self::new("RESOURCE_DOES_NOT_EXIST", message)
    }

    /// The falaj error `e` in MLflow's terms. `refusal` marks a promotion through an alias,
    /// where anything falaj refuses for what the version is (gates, approvals, roles) is
    /// `PERMISSION_DENIED`.
    pub(crate) fn from_api(e: ApiError, refusal: bool) -> Self {
        let code = match e.status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "RESOURCE_DOES_NOT_EXIST",
            409 => "RESOURCE_CONFLICT",
            422 if refusal => "PERMISSION_DENIED",
            400..=499 => "INVALID_PARAMETER_VALUE",
            503 => "TEMPORARILY_UNAVAILABLE",
            _ => "INTERNAL_ERROR",
        };
        Self::new(code, format!("{} ({})", e.message, e.code))
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::json(
            self.status,
            &json!({"error_code": self.code, "message": self.message}),
        )
    }
}

impl From<RegistryError> for MlError {
    fn from(e: RegistryError) -> Self {
        Self::from_api(ApiError::from(e), false)
    }
}

impl From<PromoteError> for MlError {
    fn from(e: PromoteError) -> Self {
        Self::from_api(ApiError::from(e), false)
    }
}

impl From<falaj::promotion::PromotionError> for MlError {
    fn from(e: falaj::promotion::PromotionError) -> Self {
        Self::from_api(ApiError::from(e), false)
    }
}

impl From<falaj::store::StoreError> for MlError {
    fn from(e: falaj::store::StoreError) -> Self {
        RegistryError::from(e).into()
    }
}

impl From<falaj_core::layout::KeyError> for MlError {
    fn from(e: falaj_core::layout::KeyError) -> Self {
        Self::invalid(e.to_string())
    }
}

pub(crate) type Answer = Result<HttpResponse, MlError>;

pub(crate) fn ok(v: Value) -> HttpResponse {
    HttpResponse::json(200, &v)
}

// ---- parameters ----

/// A request's fields: the JSON body (POST, PATCH, DELETE) or the query (GET), where
/// MLflow's client sends numbers as strings and repeats a key for a list.
pub(crate) struct Params {
    fields: Map<String, Value>,
}

impl Params {
    fn of(req: &HttpRequest) -> Result<Self, MlError> {
        let mut fields = Map::new();
        for (k, v) in &req.query {
            match fields.get_mut(k) {
                Some(Value::Array(a)) => a.push(Value::String(v.clone())),
                Some(prev) => {
                    let p = prev.take();
                    *prev = Value::Array(vec![p, Value::String(v.clone())]);
                }
                None => {
                    fields.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let body_is_json = !matches!(req.method.as_str(), "GET" | "PUT")
            && !req.body.iter().all(u8::is_ascii_whitespace);
        if body_is_json {
            let doc: Value = serde_json::from_slice(&req.body).map_err(|e| {
                MlError::new("MALFORMED_REQUEST", format!("the body is not JSON: {e}"))
                    .with_status(400)
            })?;
            match doc {
                Value::Object(o) => fields.extend(o),
                _ => return Err(MlError::invalid("the body must be a JSON object")),
            }
        }
        Ok(Self { fields })
    }

    /// A string field, if present and not empty.
    pub fn str(&self, k: &str) -> Option<String> {
        match self.fields.get(k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A required string field.
    pub fn need(&self, k: &str) -> Result<String, MlError> {
        self.str(k)
            .ok_or_else(|| MlError::invalid(format!("Missing value for required parameter '{k}'.")))
    }

    /// An integer field (a number or a string of digits).
    pub fn int(&self, k: &str) -> Result<Option<i64>, MlError> {
        match self.fields.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| MlError::invalid(format!("'{k}' must be an integer"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| MlError::invalid(format!("'{k}' must be an integer, not {s:?}"))),
            Some(_) => Err(MlError::invalid(format!("'{k}' must be an integer"))),
        }
    }

    /// A list of strings (a JSON array, or a repeated query key).
    pub fn strings(&self, k: &str) -> Vec<String> {
        match self.fields.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// A list of objects (`tags`, `metrics`, `params`, ...).
    pub fn objects(&self, k: &str) -> Result<Vec<Map<String, Value>>, MlError> {
        match self.fields.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Object(o) => Ok(o.clone()),
                    _ => Err(MlError::invalid(format!("'{k}' must be a list of objects"))),
                })
                .collect(),
            Some(_) => Err(MlError::invalid(format!("'{k}' must be a list"))),
        }
    }

    /// `[{key, value}]` as pairs.
    pub fn key_values(&self, k: &str) -> Result<Vec<(String, String)>, MlError> {
        self.objects(k)?
            .iter()
            .map(|o| {
                let key = o.get("key").and_then(Value::as_str).unwrap_or_default();
                if key.is_empty() {
                    return Err(MlError::invalid(format!(
                        "every entry of '{k}' needs a key"
                    )));
                }
                let value = match o.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                };
                Ok((key.to_string(), value))
            })
            .collect()
    }

    /// The raw value of a field.
    pub fn raw(&self, k: &str) -> Option<&Value> {
        self.fields.get(k)
    }
}

/// `[{key, value}]` from a map.
pub(crate) fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// Milliseconds since the epoch of an RFC 3339 time (0 if it does not parse).
pub(crate) fn millis(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// Now, in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let b: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(b)
}

// ---- the store ----

/// Reads a JSON object with its ETag; `None` when absent.
pub(crate) async fn read<T: DeserializeOwned>(
    reg: &Registry,
    key: &StoreKey,
) -> Result<Option<(T, falaj::store::ETag)>, MlError> {
    Ok(reg.get_json(key).await?)
}

/// Writes a JSON object under `pre`; a lost compare-and-swap is `Ok(false)`.
pub(crate) async fn write<T: Serialize>(
    reg: &Registry,
    key: &StoreKey,
    value: &T,
    pre: Precondition,
) -> Result<bool, MlError> {
    match reg.put_json(key, value, pre).await {
        Ok(_) => Ok(true),
        Err(RegistryError::Store(e)) if e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Read-modify-write of one JSON object by compare-and-swap, retried on a lost race;
/// `change` returns what to answer, or an error that leaves the object as it was.
pub(crate) async fn update<T, R>(
    reg: &Registry,
    key: &StoreKey,
    what: &str,
    mut change: impl FnMut(&mut T) -> Result<R, MlError>,
) -> Result<R, MlError>
where
    T: Serialize + DeserializeOwned,
{
    for _ in 0..1000 {
        let Some((mut value, etag)) = read::<T>(reg, key).await? else {
            return Err(MlError::missing(format!("{what} not found")));
        };
        let out = change(&mut value)?;
        if write(reg, key, &value, Precondition::IfMatch(etag)).await? {
            return Ok(out);
        }
    }
    Err(MlError::new(
        "TEMPORARILY_UNAVAILABLE",
        format!("{what} is being changed by many writers at once; try again"),
    ))
}

/// Every key under `prefix`.
pub(crate) async fn list(reg: &Registry, prefix: &str) -> Result<Vec<String>, MlError> {
    Ok(falaj::store::list_all(reg.store().as_ref(), prefix).await?)
}

/// An offset page token (opaque to clients) and a page size clamped to `max`.
pub(crate) fn page(p: &Params, default: usize, max: usize) -> Result<(usize, usize), MlError> {
    let size = match p.int("max_results")? {
        None => default,
        Some(n) if n <= 0 => {
            return Err(MlError::invalid(format!(
                "max_results must be positive, not {n}"
            )));
        }
        Some(n) => (n as usize).min(max),
    };
    let offset = match p.str("page_token") {
        None => 0,
        Some(t) => t
            .strip_prefix("o")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| MlError::invalid(format!("invalid page_token {t:?}")))?,
    };
    Ok((offset, size))
}

/// One page of `items`, with the token of the next one when there is more.
pub(crate) fn paged<T>(items: Vec<T>, offset: usize, size: usize) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = (offset + size < total).then(|| format!("o{}", offset + size));
    (page, next)
}
