//! Dispatch requests over HTTP: the nearest-driver service's (seed 004)
//! `POST /v2/search` and `POST /v2/cancel`, kept as its clients call them,
//! and fleetgate's `GET /v2/requests/{id}` and `POST /v2/requests/{id}/release`.
//!
//! In: HTTP requests. Out: `{"request_id": N}` for a new request, and the
//! request's state as `crate::fleet::dispatch::RequestView`; the ingest
//! task applies each operation (`crate::fleet::dispatch` says what a
//! request does over time). Bound: `dispatch.max_open_requests` (one more
//! is 429 naming it); one operation at a time through the ingest task's queue.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ErrorBody;
use super::nearest::{body_number, body_object, degrees};
use super::{schemas, ApiError, AppState};
use crate::fleet::dispatch::{DispatchError, RequestId};
use crate::ingest::DispatchOp;

async fn run(
    state: &AppState,
    op: DispatchOp,
) -> Result<crate::fleet::dispatch::RequestView, ApiError> {
    state
        .fleet
        .dispatch(op)
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(|e| match e {
            DispatchError::Full(_) => ApiError::TooMany {
                bound: "dispatch.max_open_requests",
                message: e.to_string(),
            },
            DispatchError::NotFound(_) => ApiError::NotFound(e.to_string()),
            DispatchError::Ended(..) | DispatchError::NothingToRelease(_) => {
                ApiError::Conflict(e.to_string())
            }
        })
}

/// `POST /v2/search {"lat","lng"}` → `{"request_id": N}`: searched at once.
#[utoipa::path(post, path = "/v2/search", operation_id = "dispatch_search", tag = "seed 004 nearest-driver",
    request_body = schemas::DispatchSearch,
    responses(
        (status = 200, body = schemas::DispatchCreated),
        (status = 400, description = "A bad field (`lat`, `lng`, `body`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "`dispatch.max_open_requests` are open", body = ErrorBody),
    ))]
pub async fn search(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = body_object(&body)?;
    let lat = degrees("lat", body_number(&body, "lat")?, 90.0)?;
    let lon = degrees("lng", body_number(&body, "lng")?, 180.0)?;
    let request = run(&state, DispatchOp::Create { lat, lon }).await?;
    Ok(Json(json!({ "request_id": request.request_id })).into_response())
}

/// `POST /v2/cancel {"request_id":"N"}` (a string in the seed; a number too).
#[utoipa::path(post, path = "/v2/cancel", operation_id = "dispatch_cancel", tag = "seed 004 nearest-driver",
    request_body = schemas::DispatchCancel,
    responses(
        (status = 200, description = "The request, cancelled", body = schemas::DispatchRequest),
        (status = 400, description = "No or a bad `request_id`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The request has ended", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn cancel(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = body_object(&body)?;
    let id = match body.get("request_id") {
        Some(Value::String(s)) => s.trim().parse::<RequestId>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::field(
            "request_id",
            "is required (a request id, as a string or a number)",
        )
    })?;
    let request = run(&state, DispatchOp::Cancel(id)).await?;
    Ok(Json(request).into_response())
}

fn request_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::field("id", format!("{raw:?} is not a request id")))
}

/// `GET /v2/requests/{id}`: state, vehicle, distance, times.
#[utoipa::path(get, path = "/v2/requests/{id}", operation_id = "dispatch_get", tag = "seed 004 nearest-driver",
    params(("id" = u64, Path, description = "The request id")),
    responses(
        (status = 200, body = schemas::DispatchRequest),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = run(&state, DispatchOp::Get(request_id(&id)?)).await?;
    Ok(Json(request).into_response())
}

/// `POST /v2/requests/{id}/release`: the requester is done with the vehicle.
#[utoipa::path(post, path = "/v2/requests/{id}/release", operation_id = "dispatch_release", tag = "seed 004 nearest-driver",
    params(("id" = u64, Path, description = "The request id")),
    responses(
        (status = 200, description = "The request, released", body = schemas::DispatchRequest),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Nothing to release, or ended", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = run(&state, DispatchOp::Release(request_id(&id)?)).await?;
    Ok(Json(request).into_response())
}
