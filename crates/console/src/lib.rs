//! The registry console: pages under `/ui/` for the people who decide what reaches
//! production, served by `falaj serve` and by the webhook function on the same port as the
//! webhook and MLflow's API (docs/console.md).
//!
//! [`handle`] answers `/ui` and `/ui/...` and hands every other path to
//! [`falaj_mlflow::handle`] (which hands non-MLflow paths to the webhook), so both carriers
//! serve all three.
//!
//! - Pages are rendered on the server ([`pages`], maud) with plots as inline SVG ([`svg`]):
//!   no script, readable in a phone-sized window. Every page answers
//!   `Accept: application/json` with the data it shows ([`data`]).
//! - Who is asking: a person's bearer token, kept in an `HttpOnly`, `SameSite=Strict` cookie
//!   after `/ui/login`, or an `Authorization` header ([`session`]).
//! - Actions (approve, reject, promote, roll out, roll back) are the webhook's own
//!   [`PromoteRequest`]s through the webhook's [`Promoter`](falaj_webhook::Promoter): the same
//!   gatekeeper, role checks, four-eyes rule, signing and audit as every other path. The page
//!   enforces nothing itself. Form posts carry a CSRF token.

use falaj_core::promotion::Stage;
use falaj_webhook::http::parse_query;
use falaj_webhook::{ApiError, ExpectAlias, HttpRequest, HttpResponse, PromoteRequest, Webhook};
use maud::Markup;

pub mod data;
pub mod pages;
pub mod session;
pub mod svg;

use pages::Frame;
use session::Session;

/// Whether `path` belongs to the console.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Answers one request: the console for `/ui` paths, MLflow's API and the webhook for the rest.
pub async fn handle(hook: &Webhook, req: HttpRequest) -> HttpResponse {
    if !is_console_path(&req.path) {
        return falaj_mlflow::handle(hook, req).await;
    }
    let started = std::time::Instant::now();
    let request_id = req.id();
    let mut identity = None;
    let outcome = falaj_webhook::catch_panic(dispatch(hook, &req, &mut identity)).await;
    let mut response = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_response(&req, &e, identity.as_ref(), &request_id),
        Err(panic) => {
            tracing::error!(request_id = %request_id, panic = %panic, "console handler panicked");
            let e = ApiError::new(
                500,
                "internal",
                format!("internal error; quote request id {request_id} to the operator"),
            );
            error_response(&req, &e, identity.as_ref(), &request_id)
        }
    };
    response.set_header("x-request-id", request_id.clone());
    response.set_header("cache-control", "no-store");
    response.set_header("x-content-type-options", "nosniff");
    response.set_header("referrer-policy", "same-origin");
    response.set_header(
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    let who = identity
        .as_ref()
        .map_or("-", |s: &Session| s.identity.as_str());
    req.log_answer(
        "console",
        &request_id,
        who,
        response.status,
        started,
        tracing::Level::INFO,
    );
    response
}

/// Whether the client asked for JSON.
fn wants_json(req: &HttpRequest) -> bool {
    req.header("accept")
        .is_some_and(|a| a.contains("application/json"))
}

fn html_response(status: u16, page: Markup) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: page.into_string().into(),
    }
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse {
        status: 303,
        headers: vec![
            ("location".into(), to.into()),
            ("content-type".into(), "text/plain; charset=utf-8".into()),
        ],
        body: format!("see {to}").into(),
    }
}

fn error_response(
    req: &HttpRequest,
    e: &ApiError,
    s: Option<&Session>,
    request_id: &str,
) -> HttpResponse {
    if wants_json(req) {
        return e.clone().into_response(request_id);
    }
    // A page that needs a session sends a browser to sign in, and back here afterwards.
    if e.status == 401 && req.method == "GET" {
        let next = session::encode(&req.path);
        return redirect(&format!("/ui/login?next={next}"));
    }
    let f = Frame {
        identity: s.map(|s| s.identity.as_str()),
        csrf: s.map_or("", |s| s.csrf.as_str()),
        flash: None,
    };
    let mut r = html_response(e.status, pages::error(&f, e.status, &e.code, &e.message));
    for (n, v) in &e.headers {
        r.set_header(n, v.clone());
    }
    r
}

#[derive(Debug, PartialEq)]
enum Route {
    Models,
    Login,
    Logout,
    Deployments(Option<String>),
    Model(String),
    Version(String, u64),
    Decide(String, u64),
    Promote(String, u64),
    Rollout(String, String),
    Rollback(String, String),
    Drift(String),
    Audit(String),
}

impl Route {
    fn parse(req: &HttpRequest) -> Option<Self> {
        let segs = req.segments();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let ["ui", s @ ..] = s.as_slice() else {
            return None;
        };
        let o = |x: &str| x.to_string();
        let n = |x: &str| x.parse::<u64>().ok().filter(|n| *n >= 1);
        Some(match s {
            [] | ["models"] => Self::Models,
            ["login"] => Self::Login,
            ["logout"] => Self::Logout,
            ["deployments"] => Self::Deployments(None),
            ["models", m] => Self::Model(o(m)),
            ["models", m, "versions", v] => Self::Version(o(m), n(v)?),
            ["models", m, "versions", v, "decide"] => Self::Decide(o(m), n(v)?),
            ["models", m, "versions", v, "promote"] => Self::Promote(o(m), n(v)?),
            ["models", m, "deployments"] => Self::Deployments(Some(o(m))),
            ["models", m, "deployments", e, "rollout"] => Self::Rollout(o(m), o(e)),
            ["models", m, "deployments", e, "rollback"] => Self::Rollback(o(m), o(e)),
            ["models", m, "drift"] => Self::Drift(o(m)),
            ["models", m, "audit"] => Self::Audit(o(m)),
            _ => return None,
        })
    }

    fn method(&self) -> &'static [&'static str] {
        match self {
            Self::Login => &["GET", "POST"],
            Self::Logout
            | Self::Decide(..)
            | Self::Promote(..)
            | Self::Rollout(..)
            | Self::Rollback(..) => &["POST"],
            _ => &["GET"],
        }
    }

    fn model(&self) -> Option<&str> {
        match self {
            Self::Deployments(Some(m))
            | Self::Model(m)
            | Self::Version(m, _)
            | Self::Decide(m, _)
            | Self::Promote(m, _)
            | Self::Rollout(m, _)
            | Self::Rollback(m, _)
            | Self::Drift(m)
            | Self::Audit(m) => Some(m),
            _ => None,
        }
    }
}

/// The largest form a console post may carry.
const MAX_FORM_BYTES: usize = 16 * 1024;

async fn dispatch(
    hook: &Webhook,
    req: &HttpRequest,
    who: &mut Option<Session>,
) -> Result<HttpResponse, ApiError> {
    let route = Route::parse(req).ok_or_else(|| {
        ApiError::new(
            404,
            "not_found",
            format!("no console page {}; start at /ui/models", req.path),
        )
    })?;
    let methods = route.method();
    if !methods.contains(&req.method.as_str()) {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            format!(
                "{} does not accept {}; use {}",
                req.path,
                req.method,
                methods.join(" or ")
            ),
        )
        .with_header("allow", methods.join(", ")));
    }
    if req.body.len() > MAX_FORM_BYTES {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!("a console form is at most {MAX_FORM_BYTES} bytes"),
        ));
    }
    if let Some(m) = route.model() {
        falaj_core::validate_model_name(m)
            .map_err(|e| ApiError::from(falaj::RegistryError::from(e)))?;
    }
    let form = parse_query(std::str::from_utf8(&req.body).unwrap_or_default());
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if route == Route::Login {
        return login(hook, req, field("token"), field("next")).await;
    }
    let s = session::authenticate(hook, req)?;
    *who = Some(s.clone());
    if req.method == "POST" {
        session::check_post(&s, req, field("csrf"))?;
    }
    let reg = hook.registry().as_ref();
    let flash = session::cookie(req, session::FLASH).and_then(|f| {
        let (ok, text) = f.split_once(':')?;
        Some((ok == "1", text.to_string()))
    });
    let frame = Frame {
        identity: Some(&s.identity),
        csrf: &s.csrf,
        flash: flash.clone(),
    };
    macro_rules! page {
        ($data:expr, $render:path) => {{
            let d = $data.await.map_err(ApiError::from)?;
            let mut r = if wants_json(req) {
                HttpResponse::json(200, &serde_json::to_value(&d).unwrap_or_default())
            } else {
                html_response(200, $render(&frame, &d))
            };
            if flash.is_some() {
                r.headers.push((
                    "set-cookie".into(),
                    session::set_cookie(req, session::FLASH, "", 0),
                ));
            }
            Ok(r)
        }};
    }
    let (request, done, back) = match route {
        Route::Login => unreachable!("answered above"),
        Route::Logout => {
            let mut r = redirect("/ui/login");
            r.headers.push((
                "set-cookie".into(),
                session::set_cookie(req, session::COOKIE, "", 0),
            ));
            return Ok(r);
        }
        Route::Models => {
            return page!(
                data::models(reg, req.query_param("q").unwrap_or_default()),
                pages::models
            );
        }
        Route::Model(m) => return page!(data::model(reg, &m), pages::model),
        Route::Version(m, v) => return page!(data::version(reg, &m, v), pages::version),
        Route::Deployments(m) => {
            return page!(data::deployments(reg, m.as_deref()), pages::deployments);
        }
        Route::Drift(m) => {
            let env = environment(req.query_param("env").unwrap_or("prod"))?;
            return page!(data::drift(reg, &m, &env), pages::drift);
        }
        Route::Audit(m) => {
            let page = req
                .query_param("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            return page!(data::audit(reg, &m, page), pages::audit);
        }
        Route::Decide(m, v) => {
            let to = stage(field("to"))?;
            let comment = field("comment").unwrap_or_default().trim().to_string();
            let decision = field("decision").unwrap_or("approve");
            let request = PromoteRequest::decision(decision, (&m, v), &s.identity, to, comment)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("decision {decision:?} is neither \"approve\" nor \"reject\""),
                    )
                })?;
            let done = match request {
                PromoteRequest::Reject(_) => format!("Rejected {m}@{v} for {to}."),
                _ => format!("Approved {m}@{v} for {to}."),
            };
            (request, done, format!("/ui/models/{m}/versions/{v}"))
        }
        Route::Promote(m, v) => {
            let to = stage(field("to"))?;
            let canary = match field("canary").map(str::trim).filter(|c| !c.is_empty()) {
                None => None,
                Some(c) => Some(
                    c.parse::<u8>()
                        .ok()
                        .filter(|c| (1..=99).contains(c))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_body",
                                format!("canary {c:?} must be a percentage from 1 to 99, or empty"),
                            )
                        })?,
                ),
            };
            let request = PromoteRequest::Promote {
                model: m.clone(),
                version: v,
                actor: s.identity.clone(),
                to,
                canary,
                blue_green: false,
                runtime: falaj_core::deployment::Runtime::Sandbox,
                expect: ExpectAlias::Any,
            };
            let done = match canary {
                Some(c) => format!("Promoted {m}@{v} to {to} as a {c}% canary."),
                None => format!("Promoted {m}@{v} to {to}."),
            };
            (request, done, format!("/ui/models/{m}/versions/{v}"))
        }
        Route::Rollout(m, e) => {
            let env = environment(&e)?;
            let weight = field("weight")
                .and_then(|w| w.trim().parse::<u32>().ok())
                .filter(|w| *w <= 100)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        "weight must be a percentage from 0 to 100",
                    )
                })?;
            let request = PromoteRequest::Rollout {
                model: m.clone(),
                env: env.clone(),
                actor: s.identity.clone(),
                weight,
            };
            let done = format!("Set the challenger of {m} in {env} to {weight}%.");
            (request, done, format!("/ui/models/{m}/deployments"))
        }
        Route::Rollback(m, e) => {
            let env = environment(&e)?;
            let request = PromoteRequest::Rollback {
                model: m.clone(),
                env: env.clone(),
                actor: s.identity.clone(),
            };
            let done = format!("Rolled {m} back in {env}.");
            (request, done, format!("/ui/models/{m}/deployments"))
        }
    };
    act(hook, req, request, done, &back).await
}

fn stage(to: Option<&str>) -> Result<Stage, ApiError> {
    let to = to.unwrap_or_default();
    Stage::parse(to).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_stage",
            format!("stage {to:?} is not a stage; use \"staging\" or \"production\""),
        )
    })
}

fn environment(env: &str) -> Result<String, ApiError> {
    Stage::for_env(env)
        .map(|s| s.env().to_string())
        .ok_or_else(|| ApiError::from(falaj::access::PromotionError::BadEnv { env: env.into() }))
}

/// Runs `request` through the webhook's promoter; a browser goes back to `back` with the
/// outcome as a one-shot message, a script gets the outcome as JSON.
async fn act(
    hook: &Webhook,
    req: &HttpRequest,
    request: PromoteRequest,
    done: String,
    back: &str,
) -> Result<HttpResponse, ApiError> {
    let outcome = hook.promoter().apply(request).await;
    if wants_json(req) {
        return match outcome {
            Ok(v) => Ok(HttpResponse::json(200, &v)),
            Err(e) => Err(e.into()),
        };
    }
    let flash = match outcome {
        Ok(_) => format!("1:{done}"),
        Err(e) => format!("0:Refused: {}", e.message),
    };
    // A cookie holds about 4 KB: a longer message would be dropped by the browser whole.
    let flash: String = flash.chars().take(1000).collect();
    let mut r = redirect(back);
    r.headers.push((
        "set-cookie".into(),
        session::set_cookie(req, session::FLASH, &flash, 60),
    ));
    Ok(r)
}

/// Where a sign-in may send the browser next: a console page on this host, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/models".into(),
    }
}

async fn login(
    hook: &Webhook,
    req: &HttpRequest,
    token: Option<&str>,
    next: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    if req.method == "GET" {
        let next = safe_next(req.query_param("next"));
        return Ok(html_response(200, pages::login(&next, None)));
    }
    let next = safe_next(next);
    // A sign-in from another site's page is refused (login CSRF).
    if let (Some(origin), Some(host)) = (req.header("origin"), req.header("host"))
        && origin.split_once("://").map_or(origin, |(_, h)| h) != host
    {
        return Err(ApiError::new(
            403,
            "cross_origin",
            format!("a sign-in posted from {origin} is refused"),
        ));
    }
    let token = token.map(str::trim).unwrap_or_default();
    match session::check_token(hook, token) {
        Ok(identity) => {
            tracing::info!(identity = %identity, "console sign-in");
            let mut r = redirect(&next);
            r.headers.push((
                "set-cookie".into(),
                session::set_cookie(req, session::COOKIE, token, session::SESSION_SECONDS),
            ));
            Ok(r)
        }
        Err(e) => {
            tracing::warn!(code = %e.code, source_ip = req.source_ip.as_deref().unwrap_or("-"), "console sign-in refused");
            if wants_json(req) {
                return Err(e);
            }
            // A server with no tokens at all is a set-up problem, not a typo: say how to fix it.
            let why = if hook.auth().tokens.is_empty() {
                "This server has no bearer tokens configured, so nobody can sign in. Start it with \
                 --webhook-config FILE listing each person's token by its SHA-256 digest \
                 (docs/console.md, \"Signing in\")."
            } else {
                "That token is not recognised. Use the bearer token the webhook configuration lists for you."
            };
            Ok(html_response(401, pages::login(&next, Some(why))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_refuse_the_rest() {
        let parse = |p: &str| Route::parse(&HttpRequest::new("GET", p));
        assert_eq!(parse("/ui"), Some(Route::Models));
        assert_eq!(parse("/ui/"), Some(Route::Models));
        assert_eq!(
            parse("/ui/models/wine/versions/3"),
            Some(Route::Version("wine".into(), 3))
        );
        assert_eq!(parse("/ui/models/wine/versions/0"), None);
        assert_eq!(parse("/ui/models/wine/versions/x/decide"), None);
        assert_eq!(
            parse("/ui/models/wine/deployments/prod/rollback"),
            Some(Route::Rollback("wine".into(), "prod".into()))
        );
        assert_eq!(parse("/uix"), None);
        assert_eq!(parse("/ui/etc/passwd"), None);
    }

    #[test]
    fn a_sign_in_only_sends_the_browser_to_a_console_page() {
        assert_eq!(safe_next(Some("/ui/models/wine")), "/ui/models/wine");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/models");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/models");
        assert_eq!(safe_next(Some("/ui\\@evil")), "/ui/models");
        assert_eq!(safe_next(None), "/ui/models");
    }
}
