//! Geofences over REST: `GET /geofences`, `POST /geofences`,
//! `GET|PUT|DELETE /geofences/{id}`.
//!
//! In: HTTP requests with a fence as JSON, in the config file's shape
//! (`{"name", "circle": {"lat","lon","radius_m"}}` or `{"name", "polygon":
//! [[lon, lat], …], "exit_buffer_m"}`). Out: the fence as stored, with its
//! id; each edit is applied by the ingest task, which owns the fences, and
//! emits the enter/exit events it implies for every vehicle at once.
//! Bound: `geofence.max_fences` (one more is 429 naming it, as every
//! bound of the API), `geofence.max_vertices` per polygon (400); one edit
//! at a time through the ingest task's queue.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ErrorBody;
use super::{schemas, ApiError, AppState};
use crate::config::geofence::FenceConfig;
use crate::fleet::geofence::{FenceEditError, FenceId};

fn fence_id(raw: &str) -> Result<FenceId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::field(
            "id",
            format!("{raw:?} is not a geofence id (a positive number)"),
        )
    })
}

fn fence_body(body: &[u8]) -> Result<FenceConfig, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::field("body", format!("not a geofence ({e})")))
}

fn edit_error(e: FenceEditError) -> ApiError {
    match e {
        FenceEditError::Invalid(message) => ApiError::BadField {
            field: "body",
            message,
        },
        FenceEditError::Full(_) => ApiError::TooMany {
            bound: "geofence.max_fences",
            message: e.to_string(),
        },
        FenceEditError::NotFound(_) => ApiError::NotFound(e.to_string()),
    }
}

/// Every geofence, with its id.
#[utoipa::path(get, path = "/geofences", operation_id = "geofence_list", tag = "fleet",
    responses((status = 200, body = Vec<schemas::StoredGeofence>), (status = 503, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let fences = state
        .fleet
        .fences()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(fences).into_response())
}

/// One geofence.
#[utoipa::path(get, path = "/geofences/{id}", operation_id = "geofence_get", tag = "fleet",
    params(("id" = u32, Path, description = "The geofence id")),
    responses(
        (status = 200, body = schemas::StoredGeofence),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fence_id(&id)?;
    match state
        .fleet
        .fence(id)
        .await
        .map_err(|_| ApiError::Unavailable)?
    {
        Some(fence) => Ok(Json(fence).into_response()),
        None => Err(ApiError::NotFound(format!("no geofence {id}"))),
    }
}

/// A new geofence; its enter/exit events go out at once.
#[utoipa::path(post, path = "/geofences", operation_id = "geofence_create", tag = "fleet",
    request_body = schemas::Geofence,
    responses(
        (status = 201, description = "Stored, with its id", body = schemas::StoredGeofence),
        (status = 400, description = "Not a valid fence (`field`: `body`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "`geofence.max_fences` are stored", body = ErrorBody),
    ))]
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let fence = fence_body(&body)?;
    let stored = state
        .fleet
        .edit_fence(None, Some(fence))
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(edit_error)?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// Replaces a geofence; the transitions it implies go out at once.
#[utoipa::path(put, path = "/geofences/{id}", operation_id = "geofence_replace", tag = "fleet",
    params(("id" = u32, Path, description = "The geofence id")),
    request_body = schemas::Geofence,
    responses(
        (status = 200, body = schemas::StoredGeofence),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = fence_id(&id)?;
    let fence = fence_body(&body)?;
    let stored = state
        .fleet
        .edit_fence(Some(id), Some(fence))
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(edit_error)?;
    Ok(Json(stored).into_response())
}

/// Deletes a geofence; vehicles inside it exit.
#[utoipa::path(delete, path = "/geofences/{id}", operation_id = "geofence_delete", tag = "fleet",
    params(("id" = u32, Path, description = "The geofence id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fence_id(&id)?;
    state
        .fleet
        .edit_fence(Some(id), None)
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(edit_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
