//! Serving the API's warp filter on the `--http` port: our own accept
//! loop over hyper's HTTP/1.1 connections, so that the edge's limits are
//! ours to set (`warp::serve` runs hyper without a timer, which turns its
//! header deadline off):
//!
//! * **`--max-connections`**: a connection accepted while that many are
//!   open is closed at once (counted, logged within a [`LogBudget`]), so a
//!   flood of connections costs file descriptors up to the cap, no more.
//! * **`--http-header-timeout-ms`**: hyper closes a connection whose
//!   request headers (or, on an idle keep-alive connection, the next
//!   request) do not arrive in time, so a client trickling its headers
//!   holds its connection for a bounded time. The body's deadline is the
//!   request's (`request::Body::read`), answered 408 `request_timeout`.
//! * **HTTPS** when [`Limits::tls`] is set (`--tls-cert`, `--tls-key`;
//!   [`super::tls`]): each connection's TLS handshake runs on its own task
//!   and must end within the header deadline.
//!
//! The request path is warp's (`warp::service`), as before. Stopping is
//! graceful: the listener closes, idle connections close, requests under
//! way finish.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};
use warp::Filter;
use warp::reply::Response as WarpResponse;

use crate::log_budget::LogBudget;

/// The limits of the HTTP edge.
#[derive(Clone)]
pub struct Limits {
    /// Open connections at once (`--max-connections`).
    pub max_connections: usize,
    /// Deadline for a request's headers (`--http-header-timeout-ms`), and
    /// for a TLS handshake.
    pub header_timeout: Duration,
    /// Serve HTTPS with this acceptor.
    pub tls: Option<TlsAcceptor>,
}

/// Lines about refused connections: a few a minute, the rest counted.
const REFUSED_LOG: (u32, Duration) = (3, Duration::from_secs(60));

/// Serves `filter` on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting and returns once every connection has
/// closed (idle ones at once, busy ones after their request).
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (WarpResponse,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    F::Future: Send,
{
    let open = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let refused_log = Mutex::new(LogBudget::new(REFUSED_LOG.0, REFUSED_LOG.1));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // E.g. out of file descriptors: give closing
                    // connections a moment instead of spinning.
                    warn!(error = %e, "accept on --http failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            metrics.edge.connections_refused.inc();
            let admitted = refused_log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(Instant::now());
            if let Some(suppressed) = admitted {
                warn!(
                    %remote,
                    suppressed,
                    "HTTP connection closed at accept: {} connections are open (--max-connections)",
                    limits.max_connections
                );
            }
            continue;
        };
        let svc = TowerToHyperService::new(warp::service(filter.clone()));
        let watcher = graceful.watcher();
        let (builder, metrics, tls) = (builder.clone(), metrics.clone(), limits.tls.clone());
        let handshake = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            metrics.edge.connections_open.inc();
            let served = match tls {
                None => serve_io(&builder, watcher, stream, svc).await,
                Some(tls) => match tokio::time::timeout(handshake, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_io(&builder, watcher, stream, svc).await,
                    Ok(Err(e)) => {
                        debug!(%remote, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        metrics.edge.header_timeouts.inc();
                        debug!(%remote, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    metrics.edge.header_timeouts.inc();
                }
                debug!(%remote, error = %e, "HTTP connection ended");
            }
            metrics.edge.connections_open.dec();
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes.
async fn serve_io<I, S>(
    builder: &http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    svc: TowerToHyperService<S>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = WarpResponse,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    watcher
        .watch(builder.serve_connection(TokioIo::new(io), svc))
        .await
}
