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
//! In: HTTP requests, bodies of at most [`MAX_BODY_BYTES`] (413 past it).
//! Out: copies of the registry (`crate::fleet::packages`), owned by the
//! ingest task; each change it applies goes out as an `Update::Package` to
//! the bridge (`package_status`, `message_id` = the vehicle id), the MQTT
//! republisher and the WebSockets. Bound: `fleet.max_packages` (one more
//! in transit is 429 naming it), one call at a time through the ingest
//! task's queue (503 when it is full, for reads).
//!
//! Errors: `{"error"}` JSON; 400 with `"field"` naming the bad one, 404 for
//! an unknown package, 405 for another method, 409 for a change to a
//! delivered package.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use super::nearest::method_not_allowed;
use super::{package_track, ApiError, AppState};
use crate::clock::now_ms;
use crate::fleet::packages::{Package, PackageError, PackageId, MAX_PLACE_LEN};
use crate::ingest::{PackageChange, PackageLookup};
use crate::topics::VehicleId;
use crate::views::VehicleView;

/// Largest request body: three names and an id fit many times over.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The `/packages` routes; `track` is a static segment, so no package
/// named "track" is reachable at `GET /packages/track`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/packages",
            get(list).post(create).fallback(method_not_allowed),
        )
        .route(
            "/packages/track/{vehicle}",
            get(package_track::upgrade).fallback(method_not_allowed),
        )
        .route("/packages/{id}", get(read).fallback(method_not_allowed))
        .route(
            "/packages/{id}/move",
            post(move_to).fallback(method_not_allowed),
        )
        .route(
            "/packages/{id}/deliver",
            post(deliver).fallback(method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// What a package endpoint answers instead of its result.
#[derive(Debug)]
pub enum Refusal {
    Api(ApiError),
    /// 429: `fleet.max_packages` packages are in transit.
    Full(usize),
    /// 413: the body is over [`MAX_BODY_BYTES`].
    TooLarge,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::Full(max) => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "error": format!(
                        "package registry full: {max} packages in transit (fleet.max_packages = {max}); deliver some first"
                    ),
                    "bound": "fleet.max_packages",
                })),
            )
                .into_response(),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({
                    "error": format!("the request body is over {MAX_BODY_BYTES} bytes")
                })),
            )
                .into_response(),
        }
    }
}

fn bad(field: &'static str, what: impl Into<String>) -> Refusal {
    Refusal::Api(ApiError::BadField {
        field,
        message: format!("{field}: {}", what.into()),
    })
}

fn refused(e: PackageError) -> Refusal {
    match e {
        PackageError::Full(max) => Refusal::Full(max),
        PackageError::Unknown(_) => ApiError::NotFound(e.to_string()).into(),
        PackageError::AlreadyDelivered(_) => ApiError::Conflict(e.to_string()).into(),
        PackageError::InTransit(_) => ApiError::Conflict(format!(
            "{e}; move it with POST /packages/{{id}}/move, deliver it first to use its id again"
        ))
        .into(),
        PackageError::BadPlace => bad("from", e.to_string()),
    }
}

fn unavailable<T>(_: T) -> Refusal {
    ApiError::Unavailable.into()
}

/// An id in the path or body: 1-64 of A-Z a-z 0-9 . _ -.
fn parse_id(field: &'static str, raw: &str) -> Result<VehicleId, Refusal> {
    VehicleId::parse(raw).ok_or_else(|| {
        bad(
            field,
            format!("{raw:?} is not an id (1-64 of A-Z a-z 0-9 . _ -)"),
        )
    })
}

/// The JSON object of a request body, or why not.
fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Refusal> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge
        } else {
            bad("body", format!("cannot be read ({e})"))
        }
    })?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("body", "must be a JSON object")),
        Err(e) => Err(bad("body", format!("is not JSON ({e})"))),
    }
}

fn string_field<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, Refusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn place<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Refusal> {
    match string_field(body, field)? {
        Some(s) if !s.trim().is_empty() && s.len() <= MAX_PLACE_LEN => Ok(s),
        Some(_) => Err(bad(
            field,
            format!("must be a place name of 1 to {MAX_PLACE_LEN} bytes"),
        )),
        None => Err(bad(field, "is required (a place name)")),
    }
}

fn vehicle_field(body: &Map<String, Value>) -> Result<VehicleId, Refusal> {
    match string_field(body, "vehicleId")? {
        Some(raw) => parse_id("vehicleId", raw),
        None => Err(bad("vehicleId", "is required (a vehicle id)")),
    }
}

/// An id for a package created without one: unique for this gateway's run,
/// and unlikely to meet one from an earlier run.
fn new_id() -> Result<PackageId, Refusal> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Digits and dashes, at most 44 bytes: always a valid id.
    VehicleId::parse(&format!("pkg-{}-{n}", now_ms())).ok_or(Refusal::Api(ApiError::Unavailable))
}

async fn change(state: &AppState, change: PackageChange) -> Result<Package, Refusal> {
    state
        .fleet
        .package(change)
        .await
        .map_err(unavailable)?
        .map_err(refused)
}

/// `POST /packages`: 201 with the package.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let body = body_object(body)?;
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

/// `GET /packages/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let id = parse_id("id", &id)?;
    let found = state
        .fleet
        .packages(PackageLookup::Id(id.clone()))
        .await
        .map_err(unavailable)?;
    let Some(package) = found.first() else {
        return Err(ApiError::NotFound(format!("unknown package {:?}", id.as_str())).into());
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

/// `GET /packages?vehicleId=…`.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
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
pub async fn move_to(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let id = parse_id("id", &id)?;
    let vehicle = vehicle_field(&body_object(body)?)?;
    let package = change(&state, PackageChange::Move { id, vehicle }).await?;
    Ok(Json(package).into_response())
}

/// `POST /packages/{id}/deliver` (any body is ignored).
pub async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    if let Err(e) = body {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Err(Refusal::TooLarge);
        }
    }
    let id = parse_id("id", &id)?;
    let package = change(&state, PackageChange::Deliver { id }).await?;
    Ok(Json(package).into_response())
}
