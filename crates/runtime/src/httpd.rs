//! The HTTP/1.1 accept loop shared by `falaj serve` and `falaj-edge`, with the limits a
//! server on a network needs: a connection cap (past it, new connections wait in the kernel's
//! backlog until one closes) and a header-read timeout (a client that sends half a request
//! and stalls is closed, so slow clients cannot hold every slot).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle time).
    pub header_timeout: Duration,
}

impl Limits {
    /// The defaults (512 connections, 10 s), overridden by `FALAJ_HTTP_MAX_CONNECTIONS` and
    /// `FALAJ_HTTP_HEADER_TIMEOUT_MS`; a value that does not parse is an error naming it.
    pub fn from_env() -> Result<Self, crate::BadLimit> {
        use crate::positive_env;
        Ok(Self {
            max_connections: positive_env("FALAJ_HTTP_MAX_CONNECTIONS", 512)? as usize,
            header_timeout: Duration::from_millis(positive_env(
                "FALAJ_HTTP_HEADER_TIMEOUT_MS",
                10_000,
            )?),
        })
    }
}

/// Serves `handler` on `listener` until the process ends.
pub async fn serve<F, Fut, B>(listener: TcpListener, limits: Limits, handler: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let fut = handler(req, peer);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, %peer, "connection closed");
            }
            drop(permit);
        });
    }
}
