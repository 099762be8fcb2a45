//! The transport-neutral request and response the webhook works on.
//!
//! Adapters build an [`HttpRequest`] from whatever carried it (an API Gateway or Function
//! URL event in [`super::lambda`], a hyper request in `falaj serve`) and turn the
//! [`HttpResponse`] back into the carrier's shape.

use bytes::Bytes;
use serde_json::Value;

/// An HTTP request, as the webhook sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, upper-case (`GET`, `POST`).
    pub method: String,
    /// Path as sent (percent-encoded), without the query string.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The query string exactly as sent (no `?`; empty if none): what a v2 signature covers.
    pub raw_query: String,
    /// Headers with lower-cased names, in order; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    /// The raw body: the exact bytes a signature covers.
    pub body: Bytes,
    /// The client's address, if the carrier knows it.
    pub source_ip: Option<String>,
    /// The carrier's request id (API Gateway's `requestContext.requestId`); one is made up
    /// when absent.
    pub request_id: Option<String>,
}

impl HttpRequest {
    /// A request for `target`, a path with an optional `?query`.
    pub fn new(method: &str, target: &str) -> Self {
        let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: parse_query(raw_query),
            raw_query: raw_query.to_string(),
            ..Self::default()
        }
    }

    /// Adds a header (the name is lower-cased).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The carrier's request id, or a fresh one when it gave none.
    pub fn id(&self) -> String {
        self.request_id
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(crate::new_request_id)
    }

    /// The path's segments after the leading `/` (a trailing `/` ignored), each
    /// percent-decoded: what routes match on.
    pub fn segments(&self) -> Vec<String> {
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.is_empty() {
            return Vec::new();
        }
        path.split('/').map(|s| percent_decode(s, false)).collect()
    }

    /// One log line for an answered request, at a level by status (5xx error, 4xx warn, else
    /// `ok_level`): `{api} request` with the request id, method, path, identity, status and
    /// time taken, as CloudWatch reads it.
    pub fn log_answer(
        &self,
        api: &str,
        request_id: &str,
        identity: &str,
        status: u16,
        started: std::time::Instant,
        ok_level: tracing::Level,
    ) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (method, path) = (&self.method, &self.path);
        let source_ip = self.source_ip.as_deref().unwrap_or("-");
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(request_id = %request_id, method = %method, path = %path, identity, status, elapsed_ms, source_ip, "{api} request")
            };
        }
        match status {
            500.. => line!(error),
            400..=499 => line!(warn),
            _ if ok_level == tracing::Level::DEBUG => line!(debug),
            _ => line!(info),
        }
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response; the body is always JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers with lower-cased names.
    pub headers: Vec<(String, String)>,
    /// JSON bytes.
    pub body: Bytes,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &Value) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body),
        }
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON, which `handle` never does).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets header `name`, replacing any value it had.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); invalid escapes are
/// kept as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `a=1&b=x%20y` into decoded pairs; a parameter without `=` has an empty value.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Why a body is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Base64Error {
    /// What is wrong with it.
    pub reason: String,
}

/// Encodes standard base64, padded.
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, Base64Error> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let data = match clean.iter().position(|&c| c == b'=') {
        Some(p) => {
            if clean[p..].iter().any(|&c| c != b'=') || clean.len() - p > 2 {
                return Err(Base64Error {
                    reason: "padding in the middle of the data".into(),
                });
            }
            &clean[..p]
        }
        None => &clean[..],
    };
    if data.len() % 4 == 1 {
        return Err(Base64Error {
            reason: "truncated data".into(),
        });
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = val(c).ok_or_else(|| Base64Error {
                reason: format!("invalid character {:?}", c as char),
            })?;
            acc |= v << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length_and_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b"falaj:t0ken"), "ZmFsYWo6dDBrZW4=");
        for n in 0..70u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
    }
}
