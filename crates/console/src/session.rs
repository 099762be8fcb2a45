//! Who is asking, and whether a form post is theirs.
//!
//! The console keeps no session store: the session cookie carries the person's own bearer
//! token (the one `webhook.json` lists by digest), `HttpOnly`, `SameSite=Strict`, scoped to
//! `/ui`, and `Secure` whenever the request came over HTTPS. Each request authenticates it
//! exactly as the webhook authenticates `Authorization: Bearer`, so revoking a token in the
//! webhook configuration ends every session made with it.
//!
//! A form post needs a CSRF token: an HMAC of the identity keyed by the bearer token, so only
//! a page served to that person can carry it, and it needs no state. A request with an
//! `Authorization: Bearer` header (a script) needs none: no browser sends that header on its
//! own. Basic credentials are ambient (a browser repeats them), so they need the token too.

use falaj_webhook::{ApiError, Credential, HttpRequest, Webhook};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub const COOKIE: &str = "falaj_session";
/// The one-shot message shown after an action.
pub const FLASH: &str = "falaj_flash";
/// How long a session cookie lives, in seconds (eight hours).
pub const SESSION_SECONDS: u32 = 8 * 3600;

/// An authenticated person.
#[derive(Debug, Clone)]
pub struct Session {
    /// The identity (roles come from `roles.json`).
    pub identity: String,
    /// The CSRF token for this person's forms.
    pub csrf: String,
    /// Whether the credential travels on its own (cookie, Basic): then a post needs `csrf`.
    pub ambient: bool,
}

/// The value of cookie `name`, percent-decoded.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| falaj_webhook::http::percent_decode(v, false))
}

/// Percent-encodes everything but unreserved characters (for cookie values).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the request reached the carrier over HTTPS (API Gateway says so in
/// `x-forwarded-proto`).
pub fn is_https(req: &HttpRequest) -> bool {
    req.header("x-forwarded-proto")
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for `name`, scoped to the console.
pub fn set_cookie(req: &HttpRequest, name: &str, value: &str, max_age: u32) -> String {
    let secure = if is_https(req) { "; Secure" } else { "" };
    format!(
        "{name}={}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        encode(value)
    )
}

fn csrf_for(token: &str, identity: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(b"falaj-console-csrf\n");
    mac.update(identity.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Authenticates a bearer `token` as the webhook would.
pub fn check_token(hook: &Webhook, token: &str) -> Result<String, ApiError> {
    let probe =
        HttpRequest::new("GET", "/ui/").with_header("authorization", format!("Bearer {token}"));
    bearer_identity(hook, &probe)
}

fn bearer_identity(hook: &Webhook, req: &HttpRequest) -> Result<String, ApiError> {
    let caller = falaj_webhook::auth::authenticate(hook.auth(), req, hook.now())?;
    match caller.credential {
        Credential::Bearer => Ok(caller.identity),
        _ => Err(ApiError::new(
            401,
            "bearer_only",
            "the console takes a person's bearer token (or Basic credentials: the identity and its token); CI tokens and signed requests are single-use and belong to /v1",
        )),
    }
}

/// Who sent `req`: its `Authorization` header if it has one, else its session cookie.
pub fn authenticate(hook: &Webhook, req: &HttpRequest) -> Result<Session, ApiError> {
    if let Some(value) = req.header("authorization") {
        let identity = bearer_identity(hook, req)?;
        let (scheme, secret) = value.trim().split_once(' ').unwrap_or(("", ""));
        let ambient = !scheme.eq_ignore_ascii_case("bearer");
        return Ok(Session {
            csrf: csrf_for(secret.trim(), &identity),
            identity,
            ambient,
        });
    }
    let Some(token) = cookie(req, COOKIE).filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            401,
            "missing_credentials",
            "sign in at /ui/login with your falaj bearer token (or send `Authorization: Bearer <token>`)",
        ));
    };
    let identity = check_token(hook, &token).map_err(|e| {
        ApiError::new(
            401,
            e.code,
            format!(
                "the session's token is no longer accepted ({}); sign in again at /ui/login",
                e.message
            ),
        )
    })?;
    Ok(Session {
        csrf: csrf_for(&token, &identity),
        identity,
        ambient: true,
    })
}

/// Equality in time independent of where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Checks a post: its CSRF token when the credential is ambient, and that an `Origin`
/// header, when the browser sends one, names this host.
pub fn check_post(s: &Session, req: &HttpRequest, form_csrf: Option<&str>) -> Result<(), ApiError> {
    if let (Some(origin), Some(host)) = (req.header("origin"), req.header("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(ApiError::new(
                403,
                "cross_origin",
                format!(
                    "a post from {origin} to {host} is refused: the console's forms post to their own host"
                ),
            ));
        }
    }
    if !s.ambient {
        return Ok(());
    }
    let sent = form_csrf
        .or_else(|| req.header("x-falaj-csrf"))
        .unwrap_or_default();
    if ct_eq(sent.as_bytes(), s.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "csrf",
            "this form's CSRF token is missing or not yours; reload the page and submit it again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_and_decoded() {
        let r = HttpRequest::new("GET", "/ui/")
            .with_header("cookie", "a=1; falaj_session=t%2Bk%3Dx; b=2");
        assert_eq!(cookie(&r, COOKIE).as_deref(), Some("t+k=x"));
        assert_eq!(cookie(&r, "c"), None);
        assert_eq!(encode("t+k=x"), "t%2Bk%3Dx");
    }

    #[test]
    fn csrf_depends_on_token_and_identity() {
        assert_ne!(csrf_for("t1", "ann"), csrf_for("t2", "ann"));
        assert_ne!(csrf_for("t1", "ann"), csrf_for("t1", "bob"));
        assert_eq!(csrf_for("t1", "ann").len(), 32);
    }

    #[test]
    fn posts_need_the_token_when_the_credential_is_ambient() {
        let s = Session {
            identity: "ann".into(),
            csrf: csrf_for("t", "ann"),
            ambient: true,
        };
        let r = HttpRequest::new("POST", "/ui/x").with_header("host", "h:1");
        assert!(check_post(&s, &r, None).is_err());
        assert!(check_post(&s, &r, Some("0000")).is_err());
        assert!(check_post(&s, &r, Some(&s.csrf)).is_ok());
        let evil = r.clone().with_header("origin", "https://evil.example");
        assert_eq!(
            check_post(&s, &evil, Some(&s.csrf)).unwrap_err().code,
            "cross_origin"
        );
        let script = Session {
            ambient: false,
            ..s
        };
        assert!(check_post(&script, &r, None).is_ok());
    }
}
