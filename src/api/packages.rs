//! Packages over REST (seed 000: "where is my package now, and where is it
//! going?"), and the route of its tracking socket ([`super::package_track`]).
//!
//! - `POST /packages {"from","to","vehicleId","id"?}` → 201 with the package
//!   (an id is made when none is given; the id of a delivered package may be
//!   used again, one in transit is 409);
//! - `GET /packages/{id}` → the package with its carrying vehicle's live
//!   state (`"vehicle"`: status and latest position, `null` when the gateway
//!   has not heard from it);
//! - `GET /packages?vehicleId=…` → that vehicle's packages, sorted by id;
//! - `POST /packages/{id}/move {"vehicleId"}` → the package on its new vehicle;
//! - `POST /packages/{id}/deliver` → the package, delivered.
//!
//! In: HTTP requests, bodies of at most `http.max_body_bytes` (413 past it).
//! Out: copies of the registry (`crate::fleet::packages`), owned by the
//! ingest task; each change it applies goes out as an `Update::Package` to
//! the bridge (`package_status`, `message_id` = the vehicle id), the MQTT
//! republisher and the WebSockets. Bound: `fleet.max_packages` (one more
//! in transit is 429 naming it in `"bound"`), one call at a time through the ingest
//! task's queue (503 when it is full, for reads).
//!
//! Errors: `{"error"}` JSON; 400 with `"field"` naming the bad one, 404 for
//! an unknown package, 405 for another method, 409 for a change to a
//! delivered package.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{package_track, schemas, ApiError, AppState};
use crate::clock::now_ms;
use crate::fleet::packages::{Package, PackageError, PackageId, MAX_PLACE_LEN};
use crate::ingest::{PackageChange, PackageLookup};
use crate::topics::VehicleId;
use crate::views::VehicleView;

/// The `/packages` routes; `track` is a static segment, so no package
/// named "track" is reachable at `GET /packages/track`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(package_track::upgrade))
        .routes(routes!(read))
        .routes(routes!(move_to))
        .routes(routes!(deliver))
}

fn bad(field: &'static str, what: impl Into<String>) -> ApiError {
    ApiError::field(field, what)
}

fn refused(e: PackageError) -> ApiError {
    match e {
        PackageError::Full(max) => ApiError::TooMany {
            bound: "fleet.max_packages",
            message: format!(
                "package registry full: {max} packages in transit (fleet.max_packages = {max}); deliver some first"
            ),
        },
        PackageError::Unknown(_) => ApiError::NotFound(e.to_string()),
        PackageError::AlreadyDelivered(_) => ApiError::Conflict(e.to_string()),
        PackageError::InTransit(_) => ApiError::Conflict(format!(
            "{e}; move it with POST /packages/{{id}}/move, deliver it first to use its id again"
        )),
        PackageError::BadPlace => bad("from", e.to_string()),
    }
}

fn unavailable<T>(_: T) -> ApiError {
    ApiError::Unavailable
}

/// An id in the path or body: 1-64 of A-Z a-z 0-9 . _ -.
fn parse_id(field: &'static str, raw: &str) -> Result<VehicleId, ApiError> {
    VehicleId::parse(raw).ok_or_else(|| {
        bad(
            field,
            format!("{raw:?} is not an id (1-64 of A-Z a-z 0-9 . _ -)"),
        )
    })
}

/// The JSON object of a request body, or why not.
fn body_object(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let limit = state.http.max_body_bytes;
    super::nearest::body_object(&body.map_err(|e| super::error::body_refused(e, limit))?)
}

fn string_field<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn place<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, ApiError> {
    match string_field(body, field)? {
        Some(s) if !s.trim().is_empty() && s.len() <= MAX_PLACE_LEN => Ok(s),
        Some(_) => Err(bad(
            field,
            format!("must be a place name of 1 to {MAX_PLACE_LEN} bytes"),
        )),
        None => Err(bad(field, "is required (a place name)")),
    }
}

fn vehicle_field(body: &Map<String, Value>) -> Result<VehicleId, ApiError> {
    match string_field(body, "vehicleId")? {
        Some(raw) => parse_id("vehicleId", raw),
        None => Err(bad("vehicleId", "is required (a vehicle id)")),
    }
}

/// An id for a package created without one: unique for this gateway's run,
/// and unlikely to meet one from an earlier run.
fn new_id() -> Result<PackageId, ApiError> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Digits and dashes, at most 44 bytes: always a valid id.
    VehicleId::parse(&format!("pkg-{}-{n}", now_ms())).ok_or(ApiError::Unavailable)
}

async fn change(state: &AppState, change: PackageChange) -> Result<Package, ApiError> {
    state
        .fleet
        .package(change)
        .await
        .map_err(unavailable)?
        .map_err(refused)
}

/// `POST /packages`: 201 with the package.
#[utoipa::path(post, path = "/packages", operation_id = "package_create", tag = "seed 000 packages",
    request_body = schemas::NewPackage,
    responses(
        (status = 201, description = "Created, in transit", body = schemas::Package),
        (status = 400, description = "A bad field (`from`, `to`, `vehicleId`, `id`, `body`)", body = ErrorBody),
        (status = 409, description = "That id is in transit", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "`fleet.max_packages` in transit", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_object(&state, body)?;
    let from = place(&body, "from")?.to_owned();
    let to = place(&body, "to")?.to_owned();
    let vehicle = vehicle_field(&body)?;
    let id = match string_field(&body, "id")? {
        Some(raw) => parse_id("id", raw)?,
        None => new_id()?,
    };
    let package = change(
        &state,
        PackageChange::Assign {
            id,
            from,
            to,
            vehicle,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(package)).into_response())
}

/// A package with its carrying vehicle's live state.
#[derive(Serialize)]
struct Carried<'a> {
    #[serde(flatten)]
    package: &'a Package,
    vehicle: Option<VehicleView<'a>>,
}

/// `GET /packages/{id}`: the package with its carrier's live state.
#[utoipa::path(get, path = "/packages/{id}", operation_id = "package_read", tag = "seed 000 packages",
    params(("id" = String, Path, description = "The package id")),
    responses(
        (status = 200, body = schemas::CarriedPackage),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown package", body = ErrorBody),
    ))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id("id", &id)?;
    let found = state
        .fleet
        .packages(PackageLookup::Id(id.clone()))
        .await
        .map_err(unavailable)?;
    let Some(package) = found.first() else {
        return Err(ApiError::NotFound(format!(
            "unknown package {:?}",
            id.as_str()
        )));
    };
    let vehicle = match VehicleId::parse(&package.vehicle_id) {
        Some(v) => state.fleet.one(v).await.map_err(unavailable)?,
        None => None,
    };
    Ok(Json(Carried {
        package,
        vehicle: vehicle.as_ref().map(VehicleView::of),
    })
    .into_response())
}

/// `GET /packages?vehicleId=…`: that vehicle's packages, sorted by id.
#[utoipa::path(get, path = "/packages", operation_id = "package_list", tag = "seed 000 packages",
    params(("vehicleId" = String, Query, description = "The carrying vehicle")),
    responses(
        (status = 200, body = Vec<schemas::Package>),
        (status = 400, description = "No or a bad `vehicleId`", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(raw) = params.get("vehicleId") else {
        return Err(bad(
            "vehicleId",
            "is required: GET /packages?vehicleId=… lists one vehicle's packages",
        ));
    };
    let vehicle = parse_id("vehicleId", raw)?;
    let found = state
        .fleet
        .packages(PackageLookup::OnVehicle(vehicle))
        .await
        .map_err(unavailable)?;
    Ok(Json(found).into_response())
}

/// `POST /packages/{id}/move {"vehicleId"}`: a hand-over to another vehicle.
#[utoipa::path(post, path = "/packages/{id}/move", operation_id = "package_move", tag = "seed 000 packages",
    params(("id" = String, Path, description = "The package id")),
    request_body = schemas::PackageMove,
    responses(
        (status = 200, description = "The package on its new vehicle", body = schemas::Package),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already delivered", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn move_to(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id("id", &id)?;
    let vehicle = vehicle_field(&body_object(&state, body)?)?;
    let package = change(&state, PackageChange::Move { id, vehicle }).await?;
    Ok(Json(package).into_response())
}

/// `POST /packages/{id}/deliver` (any body is ignored).
#[utoipa::path(post, path = "/packages/{id}/deliver", operation_id = "package_deliver", tag = "seed 000 packages",
    params(("id" = String, Path, description = "The package id")),
    responses(
        (status = 200, description = "The package, delivered", body = schemas::Package),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already delivered", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Err(e) = body {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Err(super::error::body_refused(e, state.http.max_body_bytes));
        }
    }
    let id = parse_id("id", &id)?;
    let package = change(&state, PackageChange::Deliver { id }).await?;
    Ok(Json(package).into_response())
}
