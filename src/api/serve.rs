//! The HTTP server: axum's router on hyper, with the limits `axum::serve`
//! does not set.
//!
//! In: TCP connections to `http.listen` (over TLS with `tls.https`, each
//! handshake under `tls.handshake_timeout_ms`: `crate::tls`). Out: each
//! served by the router (WebSocket upgrades included) until it closes or
//! the gateway stops.
//! Bound: at most `http.max_connections` connections (one more is closed
//! at accept and counted in `http_refused_total{reason="limit"}`), each with
//! a read buffer of at most [`MAX_BUF_BYTES`] (a larger request head gets
//! 431); a request head must arrive within `http.header_read_timeout_ms`
//! (`axum::serve` installs no timer, so hyper's own default of 30 s is
//! inert and one silent or dribbling client — Slowloris — would hold a
//! connection forever).
//!
//! On shutdown: accepting stops, every connection is told to finish its
//! request and close, and those still open after [`DRAIN`] (WebSockets,
//! which outlive requests) are dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::tls::{Listener, Tls};

/// Largest buffered request head, bytes (hyper's minimum is 8 KiB).
pub const MAX_BUF_BYTES: usize = 8 * 1024;
/// How long a shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let max = config.max_connections.get();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Some((stream, _)) = crate::accept::or_back_off(accepted, "http").await else {
                    continue;
                };
                if open.fetch_add(1, Ordering::AcqRel) >= max {
                    open.fetch_sub(1, Ordering::AcqRel);
                    Metrics::inc(&metrics.http_refused_total_limit);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stopping = stopping.clone();
                let open = open.clone();
                let metrics = metrics.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(stream, app, header_timeout, stopping, &metrics).await,
                        Some(tls) => {
                            // Boxed: rustls' handshake state is large and short-lived.
                            if let Some(accepted) = Box::pin(tls.accept(stream, Listener::Https)).await {
                                let _slot = accepted.slot;
                                serve_connection(accepted.stream, app, header_timeout, stopping, &metrics).await;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "HTTP connections still open at shutdown: dropped"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection, plain or TLS, until it closes or the gateway
/// stops (then it finishes its request first).
async fn serve_connection<S>(
    stream: S,
    app: Router,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    metrics: &Metrics,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { drop(stopping.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            Metrics::inc(&metrics.http_refused_total_header_timeout);
        }
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
