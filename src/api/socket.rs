//! What every WebSocket of the API shares: a send that gives up on a client
//! that stopped reading, and a listen that pings and notices a stall.
//!
//! In: a socket and `http.ws_stall_timeout_ms`. Out: whether the client is
//! still there; stalls counted in `ws_stalled_disconnects_total`. Bound: no
//! state of its own.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Reads one message from the client or sends a ping; false when the
/// client is gone or has stalled.
pub(super) async fn listen(
    socket: &mut WebSocket,
    last_heard: &mut Instant,
    ping: &mut tokio::time::Interval,
    stall: Duration,
    metrics: &Metrics,
) -> bool {
    tokio::select! {
        message = socket.recv() => match message {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => false,
            // Anything from the client, pongs included, shows it reads.
            Some(Ok(_)) => {
                *last_heard = Instant::now();
                true
            }
        },
        _ = ping.tick() => {
            if last_heard.elapsed() > stall {
                Metrics::inc(&metrics.ws_stalled_disconnects_total);
                tracing::info!("disconnecting a WebSocket client that stopped reading");
                return false;
            }
            tokio::time::timeout(stall, socket.send(Message::Ping(Default::default())))
                .await
                .is_ok_and(|r| r.is_ok())
        }
    }
}

/// Sends one text frame; false when the client is gone or did not take
/// it within `stall`.
pub(super) async fn send(
    socket: &mut WebSocket,
    text: String,
    stall: Duration,
    metrics: &Metrics,
) -> bool {
    match tokio::time::timeout(stall, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => {
            Metrics::inc(&metrics.ws_frames_sent_total);
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            Metrics::inc(&metrics.ws_stalled_disconnects_total);
            tracing::info!("disconnecting a WebSocket client that stopped reading");
            false
        }
    }
}
