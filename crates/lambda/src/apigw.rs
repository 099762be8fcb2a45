//! Lambda adapters: API Gateway HTTP API (payload format 2.0) and Lambda Function URL
//! events in, their response JSON out.
//!
//! Both shapes are payload-2.0-like (`rawPath`, `rawQueryString`, `headers`, `body`,
//! `isBase64Encoded`, `requestContext.http`). [`detect`] tells them apart:
//!
//! 1. `requestContext.domainName` contains `.lambda-url.` → Function URL (Function URLs have
//!    no custom domains; their domain is always `<url-id>.lambda-url.<region>.on.aws`);
//! 2. otherwise `requestContext.http.method` is a string → API Gateway HTTP API;
//! 3. otherwise the event is refused with 400 `invalid_event` (an API Gateway REST API /
//!    payload 1.0 event, say, which has `httpMethod` instead).
//!
//! A misdetection would be harmless: both response shapes are the same JSON
//! (`statusCode`, `headers`, `body`, `isBase64Encoded`, `cookies`).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use bytes::Bytes;
use serde_json::Value;

use falaj_console::handle;
use falaj_webhook::http::{base64_decode, base64_encode, parse_query};
use falaj_webhook::{ApiError, HttpRequest, HttpResponse, Webhook, new_request_id};

/// Which event shape an invocation carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventShape {
    /// API Gateway HTTP API, payload format 2.0.
    ApiGatewayV2,
    /// Lambda Function URL.
    FunctionUrl,
}

/// Detects the event shape (rules in the module docs); `None` for anything else.
pub fn detect(event: &Value) -> Option<EventShape> {
    let ctx = event.get("requestContext")?;
    if ctx
        .get("domainName")
        .and_then(Value::as_str)
        .is_some_and(|d| d.contains(".lambda-url."))
    {
        return Some(EventShape::FunctionUrl);
    }
    ctx.get("http")
        .and_then(|h| h.get("method"))
        .and_then(Value::as_str)
        .map(|_| EventShape::ApiGatewayV2)
}

fn headers_of(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Headers, with the event's `cookies` (payload 2.0 carries them apart) as one `cookie` header.
fn headers_with_cookies(map: &HeaderMap, cookies: Option<&Vec<String>>) -> Vec<(String, String)> {
    let mut h = headers_of(map);
    if let Some(c) = cookies.filter(|c| !c.is_empty()) {
        h.retain(|(n, _)| n != "cookie");
        h.push(("cookie".into(), c.join("; ")));
    }
    h
}

fn body_of(body: Option<&str>, base64: bool) -> Result<Bytes, ApiError> {
    match body {
        None => Ok(Bytes::new()),
        Some(b) if base64 => base64_decode(b).map(Bytes::from).map_err(|e| {
            ApiError::bad_request(
                "invalid_body_encoding",
                format!("the event says the body is base64 but it is not: {e}"),
            )
        }),
        Some(b) => Ok(Bytes::from(b.to_string())),
    }
}

/// The request an API Gateway HTTP API event carries. A stage name that prefixes the path
/// (`/prod/v1/...` on a named stage) is removed.
pub fn from_apigw_v2(ev: &ApiGatewayV2httpRequest) -> Result<HttpRequest, ApiError> {
    let ctx = &ev.request_context;
    let mut path = ev
        .raw_path
        .clone()
        .or_else(|| ctx.http.path.clone())
        .unwrap_or_else(|| "/".into());
    if let Some(stage) = ctx
        .stage
        .as_deref()
        .filter(|s| *s != "$default" && !s.is_empty())
        && !path.starts_with("/v1")
        && let Some(rest) = path.strip_prefix(&format!("/{stage}"))
        && (rest.is_empty() || rest.starts_with('/'))
    {
        path = if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        };
    }
    let query = match ev.raw_query_string.as_deref() {
        Some(q) => parse_query(q),
        None => Vec::new(),
    };
    Ok(HttpRequest {
        method: ctx.http.method.as_str().to_ascii_uppercase(),
        path,
        query,
        raw_query: ev.raw_query_string.clone().unwrap_or_default(),
        headers: headers_with_cookies(&ev.headers, ev.cookies.as_ref()),
        body: body_of(ev.body.as_deref(), ev.is_base64_encoded)?,
        source_ip: ctx.http.source_ip.clone(),
        request_id: ctx.request_id.clone(),
    })
}

/// The request a Lambda Function URL event carries.
pub fn from_function_url(ev: &LambdaFunctionUrlRequest) -> Result<HttpRequest, ApiError> {
    let ctx = &ev.request_context;
    let method = ctx.http.method.clone().ok_or_else(|| {
        ApiError::bad_request("invalid_event", "requestContext.http.method is missing")
    })?;
    let query = match ev.raw_query_string.as_deref() {
        Some(q) => parse_query(q),
        None => ev
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Ok(HttpRequest {
        method: method.to_ascii_uppercase(),
        path: ev
            .raw_path
            .clone()
            .or_else(|| ctx.http.path.clone())
            .unwrap_or_else(|| "/".into()),
        query,
        raw_query: ev.raw_query_string.clone().unwrap_or_default(),
        headers: headers_with_cookies(&ev.headers, ev.cookies.as_ref()),
        body: body_of(ev.body.as_deref(), ev.is_base64_encoded)?,
        source_ip: ctx.http.source_ip.clone(),
        request_id: ctx.request_id.clone(),
    })
}

/// The response's headers, but `set-cookie`: payload 2.0 answers cookies in `cookies`.
fn header_map(resp: &HttpResponse) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in resp.headers.iter().filter(|(n, _)| n != "set-cookie") {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The API Gateway response for `resp` (JSON text body, not base64).
pub fn to_apigw_v2(resp: &HttpResponse) -> ApiGatewayV2httpResponse {
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(resp.status);
    r.headers = header_map(resp);
    r.cookies = set_cookies(resp);
    let (body, b64) = body_text(resp);
    r.body = Some(Body::Text(body));
    r.is_base64_encoded = b64;
    r
}

fn set_cookies(resp: &HttpResponse) -> Vec<String> {
    resp.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone())
        .collect()
}

/// The body as text: JSON and text (the console's pages) as they are, anything else (an
/// MLflow artifact download) base64.
fn body_text(resp: &HttpResponse) -> (String, bool) {
    let json = resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json") || c.starts_with("text/"));
    match (json, std::str::from_utf8(&resp.body)) {
        (true, Ok(s)) => (s.to_string(), false),
        _ => (base64_encode(&resp.body), true),
    }
}

/// The Function URL response for `resp` (a JSON body as text, anything else base64).
pub fn to_function_url(resp: &HttpResponse) -> LambdaFunctionUrlResponse {
    let mut r = LambdaFunctionUrlResponse::default();
    r.status_code = i64::from(resp.status);
    r.headers = header_map(resp);
    r.cookies = set_cookies(resp);
    let (body, b64) = body_text(resp);
    r.body = Some(body);
    r.is_base64_encoded = b64;
    r
}

fn encode<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| {
        serde_json::json!({
            "statusCode": 500,
            "headers": {"content-type": "application/json"},
            "body": serde_json::json!({"error": {"code": "internal", "message": format!("cannot encode the response: {e}")}}).to_string(),
            "isBase64Encoded": false,
        })
    })
}

/// Handles one Lambda invocation: detects the event shape, handles the request and returns
/// the response in the same shape. Always returns a response (an event it cannot read is
/// answered with 400 `invalid_event` in the API Gateway shape), never an invocation error.
pub async fn invoke(ctx: &Webhook, event: Value) -> Value {
    let shape = detect(&event);
    let request = match shape {
        Some(EventShape::FunctionUrl) => serde_json::from_value::<LambdaFunctionUrlRequest>(event)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_event",
                    format!("malformed Lambda Function URL event: {e}"),
                )
            })
            .and_then(|ev| from_function_url(&ev)),
        Some(EventShape::ApiGatewayV2) => serde_json::from_value::<ApiGatewayV2httpRequest>(event)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_event",
                    format!("malformed API Gateway HTTP API (payload 2.0) event: {e}"),
                )
            })
            .and_then(|ev| from_apigw_v2(&ev)),
        None => Err(ApiError::bad_request(
            "invalid_event",
            "not an API Gateway HTTP API (payload format 2.0) or Lambda Function URL event: requestContext.http.method is missing",
        )),
    };
    let response = match request {
        Ok(req) => handle(ctx, req).await,
        Err(e) => {
            let id = new_request_id();
            tracing::warn!(request_id = %id, code = %e.code, message = %e.message, status = e.status, "webhook event refused");
            let mut r = e.into_response(&id);
            r.set_header("x-request-id", id);
            r
        }
    };
    match shape {
        Some(EventShape::FunctionUrl) => encode(&to_function_url(&response)),
        _ => encode(&to_apigw_v2(&response)),
    }
}
