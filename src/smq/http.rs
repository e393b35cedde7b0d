//! The seed's HTTP endpoints, merged into the gateway's HTTP router.
//!
//! In: `GET /ping`; `POST /put?topic=T` (or `GET`, as the seed took any
//! method) with the raw body as the message; `GET /stats` and
//! `GET /stats?format=json`. Out: `OK`, `OK` once the message is queued for
//! the broker, the topic names one per line, or the JSON figures (topics,
//! channels, depths, in flight, drops). Bound: a body of at most
//! `http.max_body_bytes`, as on every route, and a message of at most
//! `smq.max_message_bytes` (413 past either); a `/put` that would pass a
//! bound is answered 429 naming it, and counted. With a password file a
//! `/put` is its token's user's MQTT publish to the topic (an SMQ topic is
//! the broker's topic of that name): one its role or the ACL refuses is
//! answered 403 (`acl_denied_total`). Errors are the API's
//! ([`crate::api::error`]): JSON `{"error": …}` naming the field.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::hub::{Hub, PutError};
use super::protocol::{check_topic, SmqError};
use crate::api::error::{body_refused, ErrorBody};
use crate::api::ApiError;
use crate::auth::Principal;
use crate::metrics::Metrics;
use crate::topics::is_gateway_namespace;

/// `/ping`, `/put`, `/stats`, each with its OpenAPI entry; the hub is
/// their state.
pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(routes!(ping))
        .routes(routes!(put, put_by_get))
        .routes(routes!(stats))
}

/// [`routes`] on `hub`, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>(hub: Arc<Hub>) -> OpenApiRouter<S> {
    routes().with_state(hub)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The seed's liveness check.
#[utoipa::path(get, path = "/ping", tag = "seed 002 smq",
    responses((status = 200, description = "`OK`", body = String, content_type = "text/plain")))]
async fn ping() -> Response {
    text("OK".into())
}

#[derive(Deserialize)]
struct PutQuery {
    topic: Option<String>,
}

/// One message to a topic: the raw body is the message.
#[utoipa::path(post, path = "/put", operation_id = "smq_put", tag = "seed 002 smq",
    params(("topic" = String, Query, description = "The topic: a topic of the embedded broker, not under `fleet/` or `$`")),
    request_body(content = Vec<u8>, description = "The message, raw bytes", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "`OK`: queued for the broker and the topic's channels", body = String, content_type = "text/plain"),
        (status = 400, description = "No or a bad `topic` (`field`: `topic`)", body = ErrorBody),
        (status = 403, description = "With a password file: the token's user may not publish to `topic` (its role, the ACL)", body = ErrorBody),
        (status = 413, description = "Over `http.max_body_bytes` or `smq.max_message_bytes`", body = ErrorBody),
        (status = 429, description = "`smq.max_topics` topics, or the queue into the broker (`smq.publish_queue`) is full", body = ErrorBody),
    ))]
async fn put(
    State(hub): State<Arc<Hub>>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::field("topic", format!("invalid query string: {e}")))?;
    let topic = query
        .topic
        .ok_or_else(|| ApiError::field("topic", "missing query parameter `topic`"))?;
    let max = hub.config().max_message_bytes.get();
    let too_large = ApiError::TooLarge {
        bound: "smq.max_message_bytes",
        limit: max,
    };
    // Read under the API's body limit: a body past it is past this one too.
    let body = match body {
        Ok(body) if body.len() > max => return Err(too_large),
        Ok(body) => body,
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large),
        Err(e) => return Err(body_refused(e, max)),
    };
    if check_topic(&topic).is_err() {
        return Err(ApiError::field(
            "topic",
            format!(
                "{topic:?} is not an SMQ topic: 1 to {} bytes, no `+`, `#` or NUL, not a `$` topic",
                super::config::MAX_TOPIC_BYTES
            ),
        ));
    }
    if is_gateway_namespace(&topic) {
        return Err(ApiError::field(
            "topic",
            format!("{topic:?}: only the gateway publishes under fleet/"),
        ));
    }
    let who = principal.as_ref().map(|Extension(p)| p);
    if !hub.auth().may_publish_as(who, &topic).allowed() {
        Metrics::inc(&hub.metrics().acl_denied_total);
        tracing::debug!(user = ?who.map(|p| &p.client_id), %topic, "/put denied by the ACL");
        return Err(ApiError::Forbidden(format!(
            "the token's user may not publish to {topic:?}"
        )));
    }
    match hub.publish(&topic, body) {
        Ok(()) => Ok(text("OK".into())),
        Err(PutError::Refused(SmqError::TooManyTopics)) => Err(ApiError::TooMany {
            bound: "smq.max_topics",
            message: format!(
                "topic {topic:?} would be one topic too many: at most smq.max_topics = {}, within broker.max_filters, and none is idle",
                hub.config().max_topics
            ),
        }),
        Err(_) => Err(ApiError::TooMany {
            bound: "smq.publish_queue",
            message: "the queue into the broker is full (smq.publish_queue); try again".into(),
        }),
    }
}

/// `/put` by `GET`, as the seed took any method: the same as `POST`.
#[utoipa::path(get, path = "/put", operation_id = "smq_put_by_get", tag = "seed 002 smq",
    params(("topic" = String, Query, description = "The topic, as for POST")),
    responses(
        (status = 200, description = "`OK`, as for POST", body = String, content_type = "text/plain"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
async fn put_by_get(
    hub: State<Arc<Hub>>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put(hub, principal, query, body).await
}

#[derive(Deserialize)]
struct StatsQuery {
    format: Option<String>,
}

/// The topics, one per line, or every figure as JSON.
#[utoipa::path(get, path = "/stats", tag = "seed 002 smq",
    params(("format" = Option<String>, Query, description = "`json` for channels, depths, in flight, consumers, requeues and drops")),
    responses(
        (status = 200, description = "Topic names, one per line; with `format=json` a JSON object `{\"topics\":[{\"name\",\"channels\":[…],…}],…}`", content(
            (String = "text/plain"),
            (serde_json::Value = "application/json"),
        )),
        (status = 400, description = "A bad `format`", body = ErrorBody),
    ))]
async fn stats(
    State(hub): State<Arc<Hub>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::field("format", format!("invalid query string: {e}")))?;
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
        Some(other) => Err(ApiError::field(
            "format",
            format!("{other:?}: json, or leave it out for topic names"),
        )),
    }
}
