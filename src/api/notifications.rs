//! `GET /notification?userId=…`: a user's notifications, as the
//! notification service's clients expect them.
//!
//! In: a WebSocket upgrade naming the user. Out: text frames, each one
//! notification's content: first what waited in the user's mailbox, then
//! live ones. Before it: the bridge's downlink, through the user's mailbox
//! (`bridge::mailboxes`). Bound: the mailbox (`bridge.mailbox_per_user`
//! notifications, at most `bridge.max_mailboxes` users); a client that stops
//! reading is cut after `http.ws_stall_timeout_ms`.

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::socket::{listen, send};
use super::{ApiError, AppState};
use crate::metrics::Metrics;

#[derive(Debug, Deserialize)]
pub struct NotificationParams {
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// `GET /notification?userId=…`: every notification for the user, as text
/// frames: first what waited in their mailbox, then live ones.
#[utoipa::path(get, path = "/notification", tag = "seed 001 notifications",
    params(("userId" = String, Query, description = "The user, 1-256 bytes")),
    responses(
        (status = 101, description = "WebSocket: each notification's `content` as a text frame, those that waited in the user's mailbox first"),
        (status = 400, description = "No `userId`, or not a WebSocket upgrade", body = super::error::ErrorBody),
    ))]
pub async fn notifications(
    State(state): State<AppState>,
    Query(params): Query<NotificationParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = params
        .user_id
        .filter(|u| !u.is_empty() && u.len() <= 256)
        .ok_or_else(|| ApiError::field("userId", "is required (1-256 bytes)"))?;
    Ok(ws
        .on_upgrade(move |socket| notification_feed(socket, user, state))
        .into_response())
}

struct NotificationGauge<'a>(&'a Metrics);
impl Drop for NotificationGauge<'_> {
    fn drop(&mut self) {
        Metrics::dec(&self.0.notification_clients);
    }
}

async fn notification_feed(mut socket: WebSocket, user: String, state: AppState) {
    let metrics = state.metrics.clone();
    Metrics::inc(&metrics.notification_clients);
    let _gauge = NotificationGauge(&metrics);
    let stall = Duration::from_millis(state.http.ws_stall_timeout_ms);
    let mut feed = state.mailboxes.connect(&user);
    for content in feed.pending.drain(..) {
        if !send(&mut socket, content, stall, &metrics).await {
            return;
        }
    }
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval((stall / 3).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            content = feed.live.recv() => match content {
                Some(content) => if !send(&mut socket, content, stall, &metrics).await { return; },
                None => return,
            },
            alive = listen(&mut socket, &mut last_heard, &mut ping, stall, &metrics) => {
                if !alive { return; }
            }
        }
    }
}
