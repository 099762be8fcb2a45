//! One HTTPS GET, for the few commands that read something from the internet once (an OIDC
//! issuer's keys). Everything else falaj reads comes from the store.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::failure::{Failure, fail};

/// The most a fetched document may be.
const MAX_BYTES: usize = 1 << 20;

/// Whether `url` may be fetched: https anywhere, http only on loopback (a local mirror).
fn allowed(url: &hyper::Uri) -> bool {
    match url.scheme_str() {
        Some("https") => true,
        Some("http") => matches!(url.host(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

/// GETs `url` (200 only, at most 1 MiB, 20 s); a failure names the URL and what to do.
pub(crate) async fn get(url: &str) -> Result<Vec<u8>, Failure> {
    let bad = |m: String| fail("fetch_failed", 1, m);
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    if !allowed(&uri) {
        return Err(bad(format!(
            "{url} is not https (http is accepted only on loopback)"
        )));
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| bad(format!("no trusted root certificates on this machine: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = hyper::Request::get(uri)
        .header("accept", "application/json")
        .header("user-agent", concat!("falaj/", env!("CARGO_PKG_VERSION")))
        .body(Empty::new())
        .map_err(|e| bad(e.to_string()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| bad(format!("GET {url}: {e}")))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(bad(format!("GET {url}: HTTP {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| bad(format!("GET {url}: {e} (at most {MAX_BYTES} bytes)")))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .map_err(|_| bad(format!("GET {url}: no answer within 20 s")))?
}
