//! The seed's HTTP endpoints, merged into the gateway's HTTP router.
//!
//! In: `GET /ping`; `POST /put?topic=T` (or `GET`, as the seed took any
//! method) with the raw body as the message; `GET /stats` and
//! `GET /stats?format=json`. Out: `OK`, `OK` once the message is queued for
//! the broker, the topic names one per line, or the JSON figures (topics,
//! channels, depths, in flight, drops). Bound: a body of at most
//! `smq.max_message_bytes` (413 past it); a `/put` that would pass a bound
//! is answered 429 and counted. Errors are JSON `{"error": …}` naming the
//! field, as everywhere in the API.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::hub::{Hub, PutError};
use super::protocol::{check_topic, SmqError};
use crate::topics::is_gateway_namespace;

/// `/ping`, `/put`, `/stats`, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>(hub: Arc<Hub>) -> Router<S> {
    let limit = hub.config().max_message_bytes.get();
    Router::new()
        .route("/ping", get(ping))
        .route("/put", get(put).post(put))
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(hub)
}

#[derive(Debug)]
enum HttpError {
    BadRequest(String),
    TooLarge(String),
    TooMany(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            HttpError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            HttpError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            HttpError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn ping() -> Response {
    text("OK".into())
}

#[derive(Deserialize)]
struct PutQuery {
    topic: Option<String>,
}

async fn put(
    State(hub): State<Arc<Hub>>,
    query: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Query(query) =
        query.map_err(|e| HttpError::BadRequest(format!("invalid query string: {e}")))?;
    let topic = query
        .topic
        .ok_or_else(|| HttpError::BadRequest("missing query parameter `topic`".into()))?;
    let max = hub.config().max_message_bytes;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::TooLarge(format!("the message is over smq.max_message_bytes = {max}"))
        } else {
            HttpError::BadRequest(format!("cannot read the message body: {e}"))
        }
    })?;
    if check_topic(&topic).is_err() {
        return Err(HttpError::BadRequest(format!(
            "`topic` {topic:?} is not an SMQ topic: 1 to {} bytes, no `+`, `#` or NUL, not a `$` topic",
            super::config::MAX_TOPIC_BYTES
        )));
    }
    if is_gateway_namespace(&topic) {
        return Err(HttpError::BadRequest(format!(
            "`topic` {topic:?}: only the gateway publishes under fleet/"
        )));
    }
    match hub.publish(&topic, body) {
        Ok(()) => Ok(text("OK".into())),
        Err(PutError::Refused(SmqError::TooManyTopics)) => Err(HttpError::TooMany(format!(
            "`topic` {topic:?} would be one topic too many: at most smq.max_topics = {}, within broker.max_filters, and none is idle",
            hub.config().max_topics
        ))),
        Err(_) => Err(HttpError::TooMany(
            "the queue into the broker is full (smq.publish_queue); try again".into(),
        )),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    format: Option<String>,
}

async fn stats(
    State(hub): State<Arc<Hub>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(query) =
        query.map_err(|e| HttpError::BadRequest(format!("invalid query string: {e}")))?;
    match query.format.as_deref() {
        None | Some("text") => {
            let mut out = String::new();
            for name in hub.topic_names() {
                out.push_str(&name);
                out.push('\n');
            }
            Ok(text(out))
        }
        Some("json") => Ok(Json(hub.stats()).into_response()),
        Some(other) => Err(HttpError::BadRequest(format!(
            "`format` {other:?}: json, or leave it out for topic names"
        ))),
    }
}
