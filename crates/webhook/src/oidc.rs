//! CI signs in with the OpenID Connect token its platform hands every job (GitHub Actions,
//! GitLab CI): no shared secret sits in CI.
//!
//! A token is verified offline against the issuer's JSON Web Key Set pinned in the store
//! (`keys/oidc/<issuer host>.json`, written by an operator or Terraform): RS256 only (`none`
//! and `HS*` are refused by name), `iss` and `aud` exact, `exp`/`nbf`/`iat` within
//! [`LEEWAY_SECS`] of the server's clock. The configuration maps immutable claims to an
//! identity (`[[oidc]]` in the webhook configuration, docs/webhook.md); a token whose claims
//! match no entry (a fork's merge request, another branch, another repository) names no one.
//! Every `jti` is claimed once, create-only, so a token read from a log is spent.
//!
//! A token authenticates the caller, not the request: a state-changing request must repeat
//! the claims its entry binds (default: the commit `sha`) under `"ci"` in its JSON body, so a
//! token taken from one job cannot drive a request about another commit.

use std::collections::BTreeMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::http::base64_decode;

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// The issuer of GitHub Actions' tokens.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn default_bind() -> Vec<String> {
    vec!["sha".into()]
}

/// A claim's required value: a string, a whole number or a boolean, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimValue {
    /// `ref_protected = true`.
    Bool(bool),
    /// `repository_id = 123` (GitHub sends ids as strings: `"123"` matches too).
    Int(i64),
    /// `ref = "refs/heads/main"`.
    Str(String),
}

impl ClaimValue {
    /// Whether the token's claim is this value (a number or boolean also matches its string).
    pub fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Self::Bool(b), Value::Bool(x)) => b == x,
            (Self::Bool(b), Value::String(s)) => s == &b.to_string(),
            (Self::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
            (Self::Int(i), Value::String(s)) => s == &i.to_string(),
            (Self::Str(s), Value::String(x)) => s == x,
            _ => false,
        }
    }
}

/// One trusted issuer and audience, and the claims that make a token act as `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTrust {
    /// The issuer, exactly as the token's `iss` (`https://token.actions.githubusercontent.com`,
    /// or a GitLab instance's URL).
    pub issuer: String,
    /// The audience the job asks its token for, exactly (a falaj-specific value; GitLab has
    /// no default).
    pub audience: String,
    /// The identity such a token acts as (its roles come from `roles.json`).
    pub identity: String,
    /// Claims that must hold exactly these values; use immutable ones (`repository_id`,
    /// `project_id`, `namespace_id`) with `ref`, `ref_protected`, `environment`.
    pub claims: BTreeMap<String, ClaimValue>,
    /// Claims a state-changing request repeats under `"ci"` in its body (default `["sha"]`).
    #[serde(default = "default_bind")]
    pub bind: Vec<String>,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The identity it acts as.
    pub identity: String,
    /// Its issuer.
    pub issuer: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp` (unix seconds): the `jti` claim may be dropped after it.
    pub exp: i64,
    /// Claim names and values a state-changing request must repeat under `"ci"`.
    pub bound: BTreeMap<String, Value>,
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(401, code, message)
}

/// Whether a bearer credential is a JWT rather than an opaque token: three base64url parts
/// (the last may be empty: an unsigned `alg: none` token, refused by name).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| {
            p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

fn part_json(part: &str, what: &str) -> Result<Value, ApiError> {
    let bytes = base64_decode(part)
        .map_err(|e| refused("malformed_token", format!("the token's {what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            "malformed_token",
            format!("the token's {what} is not JSON: {e}"),
        )
    })
}

/// `keys/oidc/<host>.json`'s host part for an issuer URL (`https://gitlab.example.com/` →
/// `gitlab.example.com`).
pub fn issuer_host(issuer: &str) -> Option<&str> {
    let rest = issuer.strip_prefix("https://")?;
    let host = rest.split('/').next()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    ok.then_some(host)
}

/// Reads the token's issuer without verifying anything (to pick the key set to verify with);
/// checks the algorithm first: only RS256 is accepted.
pub fn issuer_of(token: &str) -> Result<String, ApiError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p)) = (parts.next(), parts.next()) else {
        return Err(refused(
            "malformed_token",
            "not a JWT (header.payload.signature)".into(),
        ));
    };
    let header = part_json(h, "header")?;
    match header["alg"].as_str() {
        Some("RS256") => {}
        other => {
            return Err(refused(
                "algorithm_refused",
                format!(
                    "the token is signed with {other:?}; only RS256 tokens from the issuer are accepted (\"none\" and shared-secret HS* never)"
                ),
            ));
        }
    }
    let payload = part_json(p, "payload")?;
    payload["iss"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| refused("malformed_token", "the token has no \"iss\" claim".into()))
}

/// Verifies `token` at `now` (unix seconds) against `keys`, the pinned key set of `issuer`
/// (as [`issuer_of`] read it, which also refused any algorithm but RS256; the signature check
/// below holds the token to that issuer), and maps its claims to an identity through `trusts`.
pub fn verify(
    trusts: &[OidcTrust],
    keys: &JwkSet,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<VerifiedToken, ApiError> {
    let issuer = issuer.to_string();
    let for_issuer: Vec<&OidcTrust> = trusts.iter().filter(|t| t.issuer == issuer).collect();
    if for_issuer.is_empty() {
        return Err(refused(
            "wrong_issuer",
            format!(
                "tokens from {issuer:?} are not trusted here; the webhook configuration's [[oidc]] entries name the issuers it trusts"
            ),
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| refused("malformed_token", format!("the token's header: {e}")))?;
    let kid = header.kid.unwrap_or_default();
    let jwk = keys.find(&kid).ok_or_else(|| {
        refused(
            "unknown_kid",
            format!(
                "the token's key id {kid:?} is not in the pinned key set of {issuer}; if the issuer rotated its keys, refresh keys/oidc/{}.json",
                issuer_host(&issuer).unwrap_or("<host>")
            ),
        )
    })?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| refused("unknown_kid", format!("the pinned key {kid:?}: {e}")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // Times are checked below against the server's (injectable) clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = ["iss", "aud"].iter().map(|s| s.to_string()).collect();
    validation.set_issuer(&[issuer.as_str()]);
    let audiences: Vec<&str> = for_issuer.iter().map(|t| t.audience.as_str()).collect();
    validation.set_audience(&audiences);
    let data = jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => refused(
                "bad_signature",
                "the token's signature does not verify with the issuer's pinned key".into(),
            ),
            ErrorKind::InvalidAudience => refused(
                "wrong_audience",
                format!("the token's audience is not one this webhook accepts ({audiences:?}); ask the CI job for a token with that audience"),
            ),
            ErrorKind::InvalidIssuer => refused(
                "wrong_issuer",
                format!("the token's issuer is not {issuer:?}"),
            ),
            ErrorKind::InvalidAlgorithm => refused(
                "algorithm_refused",
                "only RS256 tokens are accepted".into(),
            ),
            _ => refused("malformed_token", format!("the token: {e}")),
        })?;
    let claims = data.claims;
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = time("exp")
        .ok_or_else(|| refused("malformed_token", "the token has no \"exp\" claim".into()))?;
    if now > exp + LEEWAY_SECS {
        return Err(refused(
            "token_expired",
            format!(
                "the token expired at {exp} ({} s ago); ask for a fresh token in the job step that calls falaj",
                now - exp
            ),
        ));
    }
    for (name, what) in [("nbf", "is not valid before"), ("iat", "was issued at")] {
        if let Some(t) = time(name)
            && t > now + LEEWAY_SECS
        {
            return Err(refused(
                "token_not_yet_valid",
                format!(
                    "the token {what} {t}, {} s ahead of the server's clock ({now}); check the clocks",
                    t - now
                ),
            ));
        }
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or_else(|| {
            refused(
                "malformed_token",
                "the token has no \"jti\" claim, so it could be replayed; falaj accepts only tokens that name themselves".into(),
            )
        })?
        .to_string();
    let aud_ok = |t: &OidcTrust| match claims.get("aud") {
        Some(Value::String(a)) => a == &t.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&t.audience)),
        _ => false,
    };
    let matching: Vec<&&OidcTrust> = for_issuer
        .iter()
        .filter(|t| {
            aud_ok(t)
                && t.claims
                    .iter()
                    .all(|(k, want)| claims.get(k).is_some_and(|v| want.matches(v)))
        })
        .collect();
    if matching.iter().any(|t| t.identity != matching[0].identity) {
        let names: Vec<&str> = matching.iter().map(|t| t.identity.as_str()).collect();
        return Err(ApiError::new(
            403,
            "ambiguous_identity",
            format!(
                "the token's claims match several [[oidc]] entries ({names:?}); make each entry's claims name one job (add environment or ref)"
            ),
        ));
    }
    let trust = matching
        .first()
        .ok_or_else(|| {
            let shown: BTreeMap<&str, &Value> = ["repository", "repository_id", "project_path", "project_id", "ref", "ref_protected", "environment", "event_name", "pipeline_source"]
                .iter()
                .filter_map(|k| claims.get(*k).map(|v| (*k, v)))
                .collect();
            ApiError::new(
                403,
                "no_identity_for_claims",
                format!(
                    "the token is valid but its claims {} match no [[oidc]] entry of the webhook configuration, so it names no identity (a fork, another branch or an unprotected ref does not act as the repository)",
                    serde_json::to_string(&shown).unwrap_or_default()
                ),
            )
        })?;
    let bound = trust
        .bind
        .iter()
        .map(|k| (k.clone(), claims.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(VerifiedToken {
        identity: trust.identity.clone(),
        issuer,
        jti,
        exp,
        bound,
    })
}

/// Checks that a state-changing request's JSON body repeats the bound claims under `"ci"`.
pub fn check_bound(token: &VerifiedToken, body: &[u8]) -> Result<(), ApiError> {
    let doc: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?
    };
    let ci = &doc["ci"];
    let want = serde_json::to_string(&token.bound).unwrap_or_default();
    for (k, v) in &token.bound {
        if v.is_null() || &ci[k] != v {
            return Err(ApiError::new(
                403,
                "unbound_request",
                format!(
                    "a request signed in with a CI token must repeat the token's {} under \"ci\" in its body (\"ci\": {want}): the token names the job, the body must name the same job",
                    token.bound.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A key set pinned by [`pin_keys`].
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    /// The issuer, as tokens name it.
    pub issuer: String,
    /// Store key written (`keys/oidc/<host>.json`).
    pub key: String,
    /// Key ids now pinned.
    pub kids: Vec<String>,
    /// Key ids pinned before (empty the first time).
    pub previous: Vec<String>,
    /// `sha256:<hex>` of the object written.
    pub digest: String,
    /// Keys in the set that were left out (not RS256 signing keys with a `kid`).
    pub skipped: usize,
}

/// Why a key set was not pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The issuer is not `https://HOST`.
    #[error(
        "issuer {0:?} is not an https://HOST URL; give it exactly as tokens name it in `iss` (https://token.actions.githubusercontent.com, https://gitlab.example.com)"
    )]
    BadIssuer(String),
    /// The key set is unusable.
    #[error("the key set from {from} cannot be pinned: {reason}")]
    BadKeys {
        /// Where it came from.
        from: String,
        /// Why.
        reason: String,
    },
    /// Roles refused it, or the store failed.
    #[error(transparent)]
    Promotion(#[from] falaj::promotion::PromotionError),
}

impl PinError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadIssuer(_) => "invalid_issuer",
            Self::BadKeys { .. } => "invalid_keys",
            Self::Promotion(e) => e.code(),
        }
    }
}

/// Pins `issuer`'s JSON Web Key Set (`bytes`, read from `from`) at `keys/oidc/<host>.json`,
/// the one place the webhook reads keys from; admins only, audited under `_roles` with the
/// key ids before and after. Only RS256 signing keys with a `kid` are kept; a set with none
/// is refused, and nothing is written.
pub async fn pin_keys(
    reg: &falaj::Registry,
    actor: &falaj_core::promotion::Actor,
    issuer: &str,
    from: &str,
    bytes: &[u8],
) -> Result<Pinned, PinError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
    use sha2::Digest as _;
    let host = issuer_host(issuer).ok_or_else(|| PinError::BadIssuer(issuer.into()))?;
    let key = falaj_core::layout::oidc_keys(host);
    falaj::promotion::authorize(
        reg,
        falaj::promotion::ROLES_AUDIT,
        &actor.identity,
        falaj_core::promotion::Action::GrantRoles,
        key.as_str(),
    )
    .await?;
    let bad = |reason: String| PinError::BadKeys {
        from: from.into(),
        reason,
    };
    let set: JwkSet = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("it is not a JSON Web Key Set ({e})")))?;
    let total = set.keys.len();
    let keys: Vec<_> = set
        .keys
        .into_iter()
        .filter(|k| {
            matches!(k.algorithm, AlgorithmParameters::RSA(_))
                && k.common.key_id.as_deref().is_some_and(|id| !id.is_empty())
                && matches!(k.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
                && matches!(
                    k.common.public_key_use,
                    None | Some(PublicKeyUse::Signature)
                )
        })
        .collect();
    if keys.is_empty() {
        return Err(bad(format!(
            "none of its {total} keys is an RS256 signing key with a kid (falaj verifies RS256 only)"
        )));
    }
    let kids: Vec<String> = keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    let pinned = JwkSet { keys };
    let body = serde_json::to_vec_pretty(&pinned).map_err(|e| bad(e.to_string()))?;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    let previous: Vec<String> = match reg.get_json::<JwkSet>(&key).await {
        Ok(Some((old, _))) => old
            .keys
            .into_iter()
            .filter_map(|k| k.common.key_id)
            .collect(),
        // An unreadable old set is replaced; the event says nothing was pinned before.
        Ok(None) | Err(falaj::RegistryError::Corrupt { .. }) => Vec::new(),
        Err(e) => return Err(falaj::promotion::PromotionError::from(e).into()),
    };
    reg.store()
        .put(
            &key,
            bytes::Bytes::from(body),
            falaj::store::Precondition::None,
        )
        .await
        .map_err(|e| falaj::promotion::PromotionError::from(falaj::RegistryError::from(e)))?;
    reg.append_audit(
        falaj::promotion::ROLES_AUDIT,
        &actor.identity,
        "oidc.keys_pinned",
        key.as_str(),
        serde_json::json!({"issuer": issuer, "kids": kids, "previous": previous, "digest": digest, "from": from, "by_principal": actor.principal}),
    )
    .await
    .map_err(falaj::promotion::PromotionError::from)?;
    Ok(Pinned {
        issuer: issuer.into(),
        key: key.to_string(),
        kids,
        previous,
        digest,
        skipped: total - pinned.keys.len(),
    })
}
