//! `GET /message`: the WebSocket, its requests and its error frames.
//!
//! In: a WebSocket upgrade (429 past `pubsub.max_connections`), then text
//! frames `{"action":"subscribe"|"unsubscribe","topic":F}` and
//! `{"action":"publish","topic":T,"message":M}` (M a string, as in the
//! seed). Out: the connection's [`Outbox`](super::hub::Outbox) frames, and
//! for a request that cannot be done an error frame
//! `{"action":"error","error":"…","status":400|413|429}`; the connection
//! stays open. A subscribe or unsubscribe that works gets no answer (the
//! seed sent none).
//!
//! With a password file (`api::auth`), the socket is its token's user's:
//! a publish is checked as that user's MQTT publish to its topic, a
//! subscribe as its MQTT SUBSCRIBE (ACL, role), each refused with an error
//! frame of status 403 (`acl_denied_total`); each message delivered is
//! checked as a read ([`super::hub`]). A user removed from the password
//! file (SIGHUP) gets status 401 at its next request and the socket closes.
//!
//! Bound: a text frame of at most `pubsub.max_frame_bytes()` (past it the
//! socket closes with 1009); a client that does not take a frame, or answer
//! a ping, within `http.ws_stall_timeout_ms` is cut
//! (`ws_stalled_disconnects_total`, `pubsub_stalled_total`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::config::READ_BUFFER_BYTES;
use super::filter::{valid_filter, valid_topic, MAX_TOPIC_BYTES};
use super::hub::{Connection, Hub, HubError};
use crate::api::error::ErrorBody;
use crate::api::ApiError;
use crate::auth::{Decision, Principal};
use crate::metrics::Metrics;
use crate::topics::is_gateway_namespace;

/// The proxy's hub and `http.ws_stall_timeout_ms`: the route's state.
#[derive(Clone)]
pub struct Ctx {
    pub hub: Arc<Hub>,
    pub stall: Duration,
}

/// `GET /message` with its OpenAPI entry; [`Ctx`] is its state.
pub fn routes() -> OpenApiRouter<Ctx> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// The seed-003 proxy's socket.
#[utoipa::path(get, path = "/message", operation_id = "pubsub_socket", tag = "seed 003 pubsub",
    responses(
        (status = 101, description = "WebSocket: `{\"action\":\"subscribe\"|\"unsubscribe\",\"topic\":F}` and `{\"action\":\"publish\",\"topic\":T,\"message\":M}` in; every subscriber of T gets `{\"action\":\"publish\",\"topic\":T,\"message\":M}`; a bad request gets `{\"action\":\"error\",\"error\",\"status\"}` and the socket stays open"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "With a password file: no token, or a wrong one", body = ErrorBody),
        (status = 429, description = "`pubsub.max_connections` sockets are open", body = ErrorBody),
    ))]
async fn upgrade(
    State(ctx): State<Ctx>,
    principal: Option<Extension<Principal>>,
    ws: WebSocketUpgrade,
) -> Response {
    let principal = principal.map(|Extension(p)| p);
    if principal.is_none() && ctx.hub.auth().checks_passwords() {
        // api::auth lets no request through without its user: fail closed.
        return ApiError::Forbidden("this socket needs a token".into()).into_response();
    }
    let Some(conn) = ctx.hub.connect(principal) else {
        let max = ctx.hub.config().max_connections;
        return ApiError::TooMany {
            bound: "pubsub.max_connections",
            message: format!(
                "{max} pub/sub WebSockets are open (pubsub.max_connections); try again later"
            ),
        }
        .into_response();
    };
    let frame = ctx.hub.config().max_frame_bytes();
    ws.max_message_size(frame)
        .max_frame_size(frame)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(socket, conn, ctx))
        .into_response()
}

/// An error frame; the connection stays open.
#[derive(Debug, PartialEq)]
struct Refusal {
    status: u16,
    error: String,
}

fn bad(error: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        error: error.into(),
    }
}

/// An ACL's answer as the error frame it earns, if it is not "allow".
fn acl_refusal(decision: Decision, hub: &Hub, what: String) -> Result<(), Refusal> {
    let status = match decision {
        Decision::Allow => return Ok(()),
        Decision::Deny => 403,
        Decision::Revoked => 401,
    };
    Metrics::inc(&hub.metrics().acl_denied_total);
    tracing::debug!(?decision, %what, "/message request denied by the ACL");
    let error = match decision {
        Decision::Revoked => "the token's user is no longer in the password file".into(),
        _ => what,
    };
    Err(Refusal { status, error })
}

impl Refusal {
    /// A user that is gone gets its answer, then the socket closes.
    fn ends_connection(&self) -> bool {
        self.status == 401
    }

    fn frame(&self) -> String {
        json!({ "action": "error", "error": self.error, "status": self.status }).to_string()
    }
}

fn string_field<'a>(req: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    match req.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("`{name}` must be a string"))),
        None => Err(bad(format!("`{name}` is missing"))),
    }
}

fn filter_field(req: &Map<String, Value>) -> Result<&str, Refusal> {
    let topic = string_field(req, "topic")?;
    if topic.starts_with('$') {
        return Err(bad(format!(
            "`topic` {topic:?}: `$` topics are the broker's own"
        )));
    }
    if !valid_filter(topic) {
        return Err(bad(format!(
            "`topic` {topic:?} is not an MQTT topic filter: 1 to {MAX_TOPIC_BYTES} bytes, `+` and `#` only as whole levels, `#` last"
        )));
    }
    Ok(topic)
}

fn hub_refusal(e: HubError) -> Refusal {
    let status = match e {
        HubError::TooManyTopics | HubError::TooManyFilters | HubError::Busy => 429,
    };
    Refusal {
        status,
        error: e.to_string(),
    }
}

/// Does one request; `Err` is the error frame to send.
fn handle(conn: &Connection, hub: &Hub, text: &str) -> Result<(), Refusal> {
    let req: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("the frame is not JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(bad("a request is a JSON object with an `action`"));
    };
    let action = string_field(&req, "action")?;
    match action {
        "subscribe" => {
            let filter = filter_field(&req)?;
            let decision = hub.auth().may_subscribe_as(conn.principal.as_ref(), filter);
            acl_refusal(
                decision,
                hub,
                format!("the token's user may not subscribe to {filter:?}"),
            )?;
            conn.subscribe(filter).map_err(hub_refusal)
        }
        "unsubscribe" => {
            conn.unsubscribe(filter_field(&req)?);
            Ok(())
        }
        "publish" => {
            let topic = string_field(&req, "topic")?;
            if topic.starts_with('$') || is_gateway_namespace(topic) {
                return Err(bad(format!(
                    "`topic` {topic:?}: only the gateway publishes under fleet/ and the broker to `$` topics"
                )));
            }
            if !valid_topic(topic) {
                return Err(bad(format!(
                    "`topic` {topic:?} is not an MQTT topic name: 1 to {MAX_TOPIC_BYTES} bytes, no `+`, `#` or NUL"
                )));
            }
            let decision = hub.auth().may_publish_as(conn.principal.as_ref(), topic);
            acl_refusal(
                decision,
                hub,
                format!("the token's user may not publish to {topic:?}"),
            )?;
            let message = string_field(&req, "message")?;
            let max = hub.config().max_message_bytes;
            if message.len() > max.get() {
                return Err(Refusal {
                    status: 413,
                    error: format!("`message` is over pubsub.max_message_bytes = {max}"),
                });
            }
            hub.publish(topic, message).map_err(hub_refusal)
        }
        other => Err(bad(format!(
            "unknown `action` {other:?}: subscribe, unsubscribe or publish"
        ))),
    }
}

async fn serve(mut socket: WebSocket, conn: Connection, ctx: Ctx) {
    let hub = &ctx.hub;
    let metrics = hub.metrics();
    let stall = ctx.stall;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval((stall / 3).max(Duration::from_millis(10)));
    let outbox = conn.outbox.clone();
    loop {
        tokio::select! {
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let refusal = bad("send requests as text frames of JSON");
                        Metrics::inc(&metrics.pubsub_errors_total);
                        if !send(&mut socket, Message::Text(refusal.frame().into()), stall, metrics).await {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {
                        last_heard = Instant::now();
                        continue;
                    }
                };
                last_heard = Instant::now();
                if let Err(refusal) = handle(&conn, hub, &text) {
                    Metrics::inc(&metrics.pubsub_errors_total);
                    if !send(&mut socket, Message::Text(refusal.frame().into()), stall, metrics).await
                        || refusal.ends_connection()
                    {
                        break;
                    }
                }
            }
            frame = outbox.next(&metrics.pubsub_queued_frames) => {
                if !send(&mut socket, Message::Text(frame), stall, metrics).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > stall {
                    stalled(metrics);
                    break;
                }
                if !send(&mut socket, Message::Ping(Default::default()), stall, metrics).await {
                    break;
                }
            }
        }
    }
    drop(conn);
}

fn stalled(metrics: &Metrics) {
    Metrics::inc(&metrics.ws_stalled_disconnects_total);
    Metrics::inc(&metrics.pubsub_stalled_total);
    tracing::info!("pubsub: disconnecting a WebSocket client that stopped reading");
}

/// Sends one message; false when the client is gone, or has not taken it
/// within `stall` (then it is counted as stalled).
async fn send(
    socket: &mut WebSocket,
    message: Message,
    stall: Duration,
    metrics: &Metrics,
) -> bool {
    let text = matches!(message, Message::Text(_));
    match tokio::time::timeout(stall, socket.send(message)).await {
        Ok(Ok(())) => {
            if text {
                Metrics::inc(&metrics.pubsub_sent_total);
            }
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            stalled(metrics);
            false
        }
    }
}
