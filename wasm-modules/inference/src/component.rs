//! The wasi:http (WASI 0.3) entry point: spin-sdk 7's `#[http_service]`.
//!
//! It reads the body under the size cap and hands everything to [`crate::api`]; the model is
//! loaded by the first request an instance sees and kept for every later one (a host that
//! reuses instances, such as `wasmtime serve -Sp3` or Spin, then pays the load once).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

use crate::api::{Reply, instance};
use crate::input::{MAX_BODY_BYTES, too_large};

fn respond(reply: Reply) -> impl IntoResponse {
    let mut b = http::Response::builder()
        .status(reply.status)
        .header("content-type", "application/json");
    for (name, value) in reply.headers {
        b = b.header(name, value);
    }
    b.body(Full::new(Bytes::from(reply.body)))
        .expect("status and headers are valid")
}

/// Reads the whole body, refusing it as soon as it passes [`MAX_BODY_BYTES`].
async fn read_body(req: Request) -> Result<Vec<u8>, Reply> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > MAX_BODY_BYTES as u64
    {
        return Err(Reply::error(&too_large(n)));
    }
    let mut body = std::pin::pin!(req.into_body());
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Reply::error(&crate::input::InputError::new(
                400,
                "body_read_failed",
                format!("reading the request body failed: {e:?}"),
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(Reply::error(&too_large((buf.len() + data.len()) as u64)));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = if method == "POST" {
        match read_body(req).await {
            Ok(b) => b,
            Err(reply) => return respond(reply),
        }
    } else {
        Vec::new()
    };
    respond(instance().handle(&method, &path, content_type.as_deref(), &body))
}
