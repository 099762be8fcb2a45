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

/// Sandbox drills for hosts that test their limits (falaj-edge's tests): only when the host
/// sets `FALAJ_FAULTS=1` in the instance's environment, `POST /__fault/trap` panics (a trap),
/// `/__fault/loop` never returns, and `/__fault/balloon` allocates until memory runs out. A
/// host that does not set the variable gets a 404 for these paths like any unknown route.
fn fault(path: &str) -> Option<Reply> {
    let drill = path.strip_prefix("/__fault/")?;
    if std::env::var("FALAJ_FAULTS").as_deref() != Ok("1") {
        return None;
    }
    match drill {
        "trap" => panic!("fault drill: trap requested"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "balloon" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really committed, 8 MiB at a time.
                hoard.push(vec![1u8; 8 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => None,
    }
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    if let Some(reply) = fault(&path) {
        return respond(reply);
    }
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
