//! The HTTP API's one set of rules for what it answers instead of a
//! result, shared by every endpoint (`api`, `smq::http`, `pubsub::ws`).
//!
//! In: an endpoint's refusal ([`ApiError`]), or any response on its way
//! out. Out: a JSON body `{"error": "…"}` with the status the rule names:
//! 400 with `"field"` naming the bad field, 403 (a topic the caller's ACL
//! forbids), 404, 405 (a method the path does not take), 409 (a change the
//! state forbids), 413 (a body over `http.max_body_bytes`, or a message
//! over its own bound) and 429 (a configured bound reached) with `"bound"`
//! naming it, 503 when the fleet
//! state did not answer (busy or stopping). [`json_errors`] turns what
//! axum's extractors refuse with (plain text: a bad query string, a
//! missing WebSocket header) into the same JSON, so no endpoint answers an
//! error in another shape; [`limit_body`] refuses an oversized body by its
//! `Content-Length` before any handler runs, on every route alike.
//!
//! Bound: an error body read back to be wrapped is at most
//! [`WRAPPED_BODY_BYTES`]; no state.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// The longest error body of an extractor that [`json_errors`] re-wraps;
/// axum's are one line.
pub const WRAPPED_BODY_BYTES: usize = 4096;

/// What an endpoint can answer instead of its result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    /// 400, naming the field at fault (`{"error", "field"}`).
    #[error("{message}")]
    BadField {
        field: &'static str,
        message: String,
    },
    /// 409: the request is valid, the state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// 403: the caller's token is good, the ACL does not let its user do
    /// this (a topic it may not publish to).
    #[error("{0}")]
    Forbidden(String),
    /// 413: a body or message over `bound` (`limit` bytes).
    #[error("the request body is over {bound} = {limit} bytes")]
    TooLarge { bound: &'static str, limit: usize },
    /// 429: the configured bound `bound` is reached.
    #[error("{message}")]
    TooMany {
        bound: &'static str,
        message: String,
    },
    /// 503: the fleet state did not answer (its question queue is full, or
    /// the gateway is stopping).
    #[error("the fleet state is busy; try again")]
    Unavailable,
}

impl ApiError {
    /// A 400 whose message starts with the field's name.
    pub fn field(field: &'static str, what: impl Into<String>) -> ApiError {
        ApiError::BadField {
            field,
            message: format!("{field}: {}", what.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadField { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Every error body of the API (the document's `Error` schema).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
    /// 400: the request field (body key, query or path parameter) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<&'static str>,
    /// 413 and 429: the configuration key whose bound was reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub bound: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (field, bound) = match &self {
            ApiError::BadField { field, .. } => (Some(*field), None),
            ApiError::TooLarge { bound, .. } | ApiError::TooMany { bound, .. } => {
                (None, Some(*bound))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            error: self.to_string(),
            field,
            bound,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// 405 for a method a path does not take (the router's fallback for
/// every route).
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "method not allowed: see the Allow header, or GET /openapi.json" })),
    )
        .into_response()
}

/// 404 for a path no route serves.
pub async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint: GET /openapi.json lists them all".into()).into_response()
}

/// 413 before any handler runs when `Content-Length` is over the limit;
/// a chunked body is held to it by `DefaultBodyLimit` as it is read.
pub async fn limit_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::TooLarge {
            bound: "http.max_body_bytes",
            limit,
        }
        .into_response();
    }
    next.run(request).await
}

/// Rewrites an error response that is not JSON (axum's extractors answer
/// in plain text) as `{"error": "…"}`, keeping its status and headers;
/// a 413 from reading a chunked body names `http.max_body_bytes`.
pub async fn json_errors(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, WRAPPED_BODY_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let body = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorBody {
            error: ApiError::TooLarge {
                bound: "http.max_body_bytes",
                limit,
            }
            .to_string(),
            field: None,
            bound: Some("http.max_body_bytes"),
        }
    } else {
        let error = match text.is_empty() {
            true => status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_owned(),
            false => text,
        };
        ErrorBody {
            error,
            field: None,
            bound: None,
        }
    };
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"\"}".to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}

/// Why a body could not be read: 413 over the limit (a chunked body
/// read past `http.max_body_bytes`), else 400 naming `body`.
pub fn body_refused(e: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            bound: "http.max_body_bytes",
            limit,
        }
    } else {
        ApiError::field("body", format!("cannot be read ({e})"))
    }
}
