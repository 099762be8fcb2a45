//! Who is calling: OpenID Connect tokens from CI ([`crate::oidc`]), HMAC-signed requests (v2:
//! method, path, query and body bound) from CI systems, and bearer tokens for people.
//!
//! Authentication only names an identity. What the identity may do is decided by the
//! store's `roles.json` (`falaj::promotion::authorize`); a role claimed in a request is
//! never trusted.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ApiError;
use super::http::HttpRequest;

type HmacSha256 = Hmac<Sha256>;

/// `X-Falaj-Signature: v2=<hex>`: HMAC-SHA256 of the string [`signing_string`] builds from
/// the timestamp, method, path, raw query and the SHA-256 of the body.
pub const SIGNATURE_HEADER: &str = "x-falaj-signature";
/// The body-only signature of earlier releases (`X-Hub-Signature-256: sha256=<hex>` over
/// `"{timestamp}.{body}"`): refused, since one signed GET replayed as any POST with an empty
/// body, and one signed body fitted several routes.
pub const V1_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// `X-Falaj-Timestamp: <unix seconds>`: the time the request was signed.
pub const TIMESTAMP_HEADER: &str = "x-falaj-timestamp";
/// `X-Falaj-Identity: <ci identity>`: whose secret signed the request.
pub const IDENTITY_HEADER: &str = "x-falaj-identity";
/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default limit of one MLflow artifact upload: 256 MiB (held in memory while it is
/// written; API Gateway and Lambda cap a request at 10 and 6 MB before it gets here).
pub const DEFAULT_MAX_ARTIFACT_BYTES: usize = 256 << 20;
/// Replay window: a signature is accepted ±120 s around the server's clock (a smaller
/// window may be configured, never a larger one).
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 120;
/// Shortest HMAC secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

fn default_window() -> u64 {
    DEFAULT_REPLAY_WINDOW_SECS
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_max_artifact() -> usize {
    DEFAULT_MAX_ARTIFACT_BYTES
}

/// A CI system that signs its requests with a shared secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiIdentity {
    /// The identity its requests act as (bound to roles in `roles.json`).
    pub identity: String,
    /// The shared HMAC secret (its UTF-8 bytes are the key), at least 16 bytes.
    pub secret: String,
}

impl std::fmt::Debug for CiIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiIdentity")
            .field("identity", &self.identity)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A person's bearer token, kept only as its SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIdentity {
    /// The identity the token acts as.
    pub identity: String,
    /// Lower-case hex SHA-256 of the token (see [`token_digest`]).
    pub sha256: String,
}

/// The webhook's configuration: CI secrets, token digests and limits.
///
/// Loaded from a TOML or JSON document ([`WebhookAuth::parse`]); in AWS the document is the
/// value of the SSM SecureString parameter named by `FALAJ_WEBHOOK_SECRET_PARAM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAuth {
    /// CI identities with their HMAC secrets.
    #[serde(default)]
    pub ci: Vec<CiIdentity>,
    /// Bearer tokens (digests) of people.
    #[serde(default)]
    pub tokens: Vec<TokenIdentity>,
    /// CI platforms whose OIDC tokens are accepted, and the claims that name each identity.
    #[serde(default)]
    pub oidc: Vec<crate::oidc::OidcTrust>,
    /// A signed request is accepted when its timestamp is within this many seconds of the
    /// server's clock, either way.
    #[serde(default = "default_window")]
    pub replay_window_secs: u64,
    /// Largest request body accepted, in bytes; checked before anything else.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest artifact a client may upload through the MLflow artifact API
    /// (`PUT /api/2.0/mlflow-artifacts/artifacts/...`), in bytes; every other route keeps
    /// `max_body_bytes`.
    #[serde(default = "default_max_artifact")]
    pub max_artifact_bytes: usize,
}

impl Default for WebhookAuth {
    fn default() -> Self {
        Self {
            ci: Vec::new(),
            tokens: Vec::new(),
            oidc: Vec::new(),
            replay_window_secs: DEFAULT_REPLAY_WINDOW_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
        }
    }
}

/// The webhook configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook configuration {source_name}: {reason}")]
pub struct WebhookConfigError {
    /// File or parameter name.
    pub source_name: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl WebhookAuth {
    /// Parses a TOML or JSON document (JSON when it starts with `{`) and validates it.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, WebhookConfigError> {
        let err = |reason: String| WebhookConfigError {
            source_name: source_name.into(),
            reason,
        };
        let auth: Self = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?
        } else {
            // toml's own message quotes the offending line, which may hold a secret: say
            // only where and what.
            toml::from_str(text).map_err(|e: toml::de::Error| {
                let line = e.span().map_or(0, |s| {
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                });
                err(format!("invalid TOML at line {line}: {}", e.message()))
            })?
        };
        auth.validate(source_name)?;
        Ok(auth)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, WebhookConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| WebhookConfigError {
            source_name: name.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    /// Checks identities, secrets, digests and limits.
    pub fn validate(&self, source_name: &str) -> Result<(), WebhookConfigError> {
        let err = |reason: String| {
            Err(WebhookConfigError {
                source_name: source_name.into(),
                reason,
            })
        };
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.ci {
            if let Err(e) = falaj_core::promotion::validate_identity(&c.identity) {
                return err(format!("ci identity: {e}"));
            }
            if !seen.insert(c.identity.as_str()) {
                return err(format!(
                    "ci identity {:?} is listed twice; give each CI system one entry",
                    c.identity
                ));
            }
            if c.secret.len() < MIN_SECRET_BYTES {
                return err(format!(
                    "the secret of ci identity {:?} is {} bytes; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                    c.identity,
                    c.secret.len()
                ));
            }
        }
        let mut digests = std::collections::BTreeSet::new();
        for t in &self.tokens {
            if let Err(e) = falaj_core::promotion::validate_identity(&t.identity) {
                return err(format!("token identity: {e}"));
            }
            let ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !ok {
                return err(format!(
                    "the token of {:?} must be given as the lower-case hex SHA-256 of the token (64 digits; `printf %s TOKEN | sha256sum`), never the token itself",
                    t.identity
                ));
            }
            if !digests.insert(t.sha256.as_str()) {
                return err(format!(
                    "the token digest of {:?} is listed twice; one token names one identity",
                    t.identity
                ));
            }
        }
        for o in &self.oidc {
            if let Err(e) = falaj_core::promotion::validate_identity(&o.identity) {
                return err(format!("oidc identity: {e}"));
            }
            if crate::oidc::issuer_host(&o.issuer).is_none() {
                return err(format!(
                    "oidc issuer {:?} must be an https:// URL, exactly as the tokens' \"iss\" (e.g. {})",
                    o.issuer,
                    crate::oidc::GITHUB_ISSUER
                ));
            }
            if o.audience.trim().is_empty() {
                return err(format!(
                    "oidc entry {:?} needs an audience: a falaj-specific value the CI job asks its token for",
                    o.identity
                ));
            }
            if !o.claims.keys().any(|k| k.ends_with("_id")) {
                return err(format!(
                    "oidc entry {:?} must match an immutable id claim (repository_id, repository_owner_id, project_id or namespace_id): names can be renamed and re-registered by someone else",
                    o.identity
                ));
            }
        }
        if self.replay_window_secs == 0 || self.replay_window_secs > DEFAULT_REPLAY_WINDOW_SECS {
            return err(format!(
                "replay_window_secs must be 1 to {DEFAULT_REPLAY_WINDOW_SECS}"
            ));
        }
        if self.max_body_bytes == 0 {
            return err("max_body_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// What a v2 signature covers:
/// `"v2\n{timestamp}\n{METHOD}\n{path}\n{raw query, empty if none}\n{hex sha256(body)}"`.
pub fn signing_string(
    timestamp: i64,
    method: &str,
    path: &str,
    raw_query: &str,
    body: &[u8],
) -> String {
    format!(
        "v2\n{timestamp}\n{}\n{path}\n{raw_query}\n{}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

/// The value of `X-Falaj-Signature` for a request: `v2=<hex HMAC-SHA256(secret, S)>` with
/// `S` from [`signing_string`]. `target` is the path with its query, as sent.
pub fn sign(secret: &str, timestamp: i64, method: &str, target: &str, body: &[u8]) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut mac = mac(secret);
    mac.update(signing_string(timestamp, method, path, query, body).as_bytes());
    format!("v2={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

const HOW_TO_SIGN: &str = "sign `v2\\n{X-Falaj-Timestamp}\\n{METHOD}\\n{path}\\n{raw query}\\n{hex sha256(body)}` with HMAC-SHA256 and send `X-Falaj-Signature: v2=<hex>` (docs/webhook.md has curl+openssl and Python examples)";

/// The lower-case hex SHA-256 of a bearer token, as configured in [`TokenIdentity::sha256`].
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equality in time independent of where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// An HMAC signature; the raw 32 bytes (its digest names the replay claim).
    Signature(Vec<u8>),
    /// A bearer token.
    Bearer,
    /// A CI platform's OIDC token, not verified yet: its key set is in the store.
    Jwt(String),
    /// A verified OIDC token (its `jti` names the replay claim).
    Oidc(crate::oidc::VerifiedToken),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The identity (roles come from `roles.json`).
    pub identity: String,
    /// How it authenticated.
    pub credential: Credential,
}

fn unauthorized(code: &'static str, message: String) -> ApiError {
    ApiError::new(401, code, message)
}

/// Authenticates `req` at `now` (unix seconds); nothing is read from or written to the store.
pub fn authenticate(auth: &WebhookAuth, req: &HttpRequest, now: i64) -> Result<Caller, ApiError> {
    if req.header(V1_SIGNATURE_HEADER).is_some() {
        return Err(unauthorized(
            "signature_v1_refused",
            format!(
                "X-Hub-Signature-256 (a signature over the body only) is no longer accepted: it does not bind the method, path or query. Instead {HOW_TO_SIGN}"
            ),
        ));
    }
    let signature = req.header(SIGNATURE_HEADER);
    let authorization = req.header("authorization");
    match (signature, authorization) {
        (Some(_), Some(_)) => Err(unauthorized(
            "ambiguous_credentials",
            "the request carries both X-Falaj-Signature and Authorization; send exactly one"
                .into(),
        )),
        (Some(sig), None) => verify_signature(auth, req, sig, now),
        (None, Some(value)) => verify_bearer(auth, value),
        (None, None) => Err(unauthorized(
            "missing_credentials",
            "authentication required: send `Authorization: Bearer <token>`, or sign the request with `X-Falaj-Signature: v2=<hmac>`, `X-Falaj-Timestamp` and `X-Falaj-Identity`".into(),
        )),
    }
}

fn verify_signature(
    auth: &WebhookAuth,
    req: &HttpRequest,
    sig: &str,
    now: i64,
) -> Result<Caller, ApiError> {
    let ci = match req.header(IDENTITY_HEADER) {
        Some(id) => auth
            .ci
            .iter()
            .find(|c| c.identity == id.trim())
            .ok_or_else(|| {
                unauthorized(
                    "unknown_identity",
                    format!("X-Falaj-Identity {id:?} is not a configured CI identity"),
                )
            })?,
        None => match auth.ci.as_slice() {
            [only] => only,
            [] => {
                return Err(unauthorized(
                    "unknown_identity",
                    "signed requests are not accepted: no CI identity is configured; use a bearer token".into(),
                ));
            }
            _ => {
                return Err(unauthorized(
                    "missing_identity",
                    "X-Falaj-Identity is required: several CI identities are configured, name the one whose secret signed the request".into(),
                ));
            }
        },
    };
    let ts_raw = req.header(TIMESTAMP_HEADER).ok_or_else(|| {
        unauthorized(
            "missing_timestamp",
            "X-Falaj-Timestamp is required with X-Falaj-Signature: the unix time in seconds at which the request was signed".into(),
        )
    })?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| {
        unauthorized(
            "invalid_timestamp",
            format!("X-Falaj-Timestamp {ts_raw:?} is not a unix time in whole seconds"),
        )
    })?;
    let raw = sig
        .trim()
        .strip_prefix("v2=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            unauthorized(
                "malformed_signature",
                "X-Falaj-Signature must be `v2=` followed by 64 hex digits".into(),
            )
        })?;
    let mut mac = mac(&ci.secret);
    mac.update(signing_string(ts, &req.method, &req.path, &req.raw_query, &req.body).as_bytes());
    // `verify_slice` compares in constant time.
    if mac.verify_slice(&raw).is_err() {
        return Err(unauthorized(
            "signature_mismatch",
            format!(
                "X-Falaj-Signature does not match this method, path, query and body: {HOW_TO_SIGN}, using the secret of CI identity {:?}",
                ci.identity
            ),
        ));
    }
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > auth.replay_window_secs {
        return Err(unauthorized(
            "stale_timestamp",
            format!(
                "X-Falaj-Timestamp {ts} is {} s {} the server's clock ({now}); signed requests are accepted within ±{} s: sign each request when it is sent, and check the CI clock",
                skew.unsigned_abs(),
                if skew > 0 { "behind" } else { "ahead of" },
                auth.replay_window_secs
            ),
        ));
    }
    Ok(Caller {
        identity: ci.identity.clone(),
        credential: Credential::Signature(raw),
    })
}

fn verify_bearer(auth: &WebhookAuth, value: &str) -> Result<Caller, ApiError> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        Some((scheme, b)) if scheme.eq_ignore_ascii_case("basic") => {
            return verify_basic(auth, b.trim());
        }
        _ => {
            return Err(unauthorized(
                "malformed_authorization",
                "the Authorization header must be `Bearer <token>` (or `Basic` with an identity and its token as the password)".into(),
            ));
        }
    };
    if !auth.oidc.is_empty() && crate::oidc::looks_like_jwt(token) {
        // Verified by the caller of `authenticate`, which reads the issuer's key set.
        return Ok(Caller {
            identity: String::new(),
            credential: Credential::Jwt(token.to_string()),
        });
    }
    match token_identity(auth, token) {
        Some(t) => Ok(Caller {
            identity: t.identity.clone(),
            credential: Credential::Bearer,
        }),
        None => Err(unauthorized(
            "unknown_token",
            "the bearer token is not recognised; ask an operator to add its SHA-256 digest to the webhook configuration".into(),
        )),
    }
}

/// `Authorization: Basic b64(identity:token)` (what MLflow clients send for
/// `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`): the password is the person's
/// bearer token, and the user name must be the identity that token belongs to.
fn verify_basic(auth: &WebhookAuth, encoded: &str) -> Result<Caller, ApiError> {
    let malformed = || {
        unauthorized(
            "malformed_authorization",
            "the Basic credentials are not base64 of `identity:token`".into(),
        )
    };
    let raw = crate::http::base64_decode(encoded).map_err(|_| malformed())?;
    let text = String::from_utf8(raw).map_err(|_| malformed())?;
    let (user, token) = text.split_once(':').ok_or_else(malformed)?;
    match token_identity(auth, token) {
        Some(t) if t.identity == user => Ok(Caller {
            identity: t.identity.clone(),
            credential: Credential::Bearer,
        }),
        _ => Err(unauthorized(
            "unknown_token",
            format!(
                "the password is not a token of {user:?}: with Basic credentials the user name is the falaj identity and the password that identity's bearer token"
            ),
        )),
    }
}

/// The configured token whose digest matches `token`, compared with every digest without
/// stopping at the first match.
fn token_identity<'a>(auth: &'a WebhookAuth, token: &str) -> Option<&'a TokenIdentity> {
    let digest = Sha256::digest(token.as_bytes());
    let mut found: Option<&TokenIdentity> = None;
    for t in &auth.tokens {
        let configured = hex::decode(&t.sha256).unwrap_or_default();
        if ct_eq(&configured, &digest) {
            found = Some(t);
        }
    }
    found
}
