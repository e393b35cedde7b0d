//! HTTP: the operator's and the dashboards' surface.
//!
//! In: HTTP requests. Out: `GET /` the live map page; `GET /ws` the live
//! WebSocket feed ([`live`]); `GET /notification?userId=` a user's
//! notifications ([`notifications`], the notification service's contract); `GET /vehicles`, `GET /vehicles/{id}` the fleet's
//! current state; `/geofences` ([`geofences`]); `GET /events` the recent events ([`events`]); `GET /vehicles/nearest`, `POST /tracking`, `POST /search`
//! nearest-vehicle search ([`nearest`], with the nearest-driver service's
//! contract); `/packages` and the `/packages/track/{vehicleId}` socket
//! ([`packages`], the package-tracking service's contract); `GET /healthz`; `GET /metrics` (Prometheus text). Bound:
//! each WebSocket holds one fan-out queue (`http.ws_queue`), and at most
//! `fanout.max_subscribers` exist; REST answers are copies made by the
//! ingest task, one question at a time; a request body is at most
//! `http.max_body_bytes`. Errors follow one set of rules on every route
//! ([`error`]): JSON `{"error": …}` with the right status, never an empty
//! body. Every route is registered once, with its OpenAPI entry
//! ([`routes`]); [`openapi`] serves the document at `GET /openapi.json`.
//!
//! Before it: the fan-out (each WebSocket's own queue), the ingest task
//! (answers to questions), and the bridge's mailboxes (notifications). After
//! it: browsers, dashboards and the operator.

pub mod auth;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod geofences;
pub mod live;
pub mod nearest;
pub mod notifications;
pub mod openapi;
mod package_track;
pub mod packages;
mod schemas;
pub mod serve;
mod socket;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::bridge::mailboxes::Mailboxes;
use crate::config::HttpConfig;
use crate::fanout::Fanout;
use crate::ingest::{FleetQueries, IngestSender};
use crate::metrics::Metrics;
use crate::topics::VehicleId;
use crate::views::VehicleView;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub fanout: Fanout,
    pub fleet: FleetQueries,
    /// For `POST /tracking`: positions in, like a device's.
    pub ingest: IngestSender,
    pub mailboxes: Arc<Mailboxes>,
    pub http: Arc<HttpConfig>,
}

/// Every route of this module, each with its OpenAPI entry: a route is
/// added here, and only here, as `.routes(routes!(handler))` with a
/// `#[utoipa::path]` on the handler (a plain `.route` would be served but
/// undocumented, and `openapi::tests` fails on it). One `routes!` takes
/// the handlers of one path. [`openapi::app`] turns the tables of this
/// module, `smq::http` and `pubsub` into the served router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(live::upgrade))
        .routes(routes!(notifications::notifications))
        .routes(routes!(events::events))
        .routes(routes!(vehicles))
        // a static segment wins over `{id}`: no vehicle named "nearest"
        // is reachable at /vehicles/nearest (it is at /vehicles?… lists)
        .routes(routes!(nearest::nearest))
        .routes(routes!(vehicle))
        .routes(routes!(nearest::tracking))
        .routes(routes!(nearest::search))
        .routes(routes!(dispatch::search))
        .routes(routes!(dispatch::cancel))
        .routes(routes!(dispatch::get))
        .routes(routes!(dispatch::release))
        .routes(routes!(geofences::list, geofences::create))
        .routes(routes!(
            geofences::get,
            geofences::replace,
            geofences::delete
        ))
        .merge(packages::routes())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The live map: one self-contained page (no external scripts or tiles,
/// so it works on a depot network without internet).
#[utoipa::path(get, path = "/", tag = "fleet",
    responses((status = 200, description = "The live map page", body = String, content_type = "text/html")))]
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("map.html"),
    )
        .into_response()
}

/// Every vehicle, sorted by id, with its status and latest position.
#[utoipa::path(get, path = "/vehicles", tag = "fleet",
    responses(
        (status = 200, body = Vec<schemas::Vehicle>),
        (status = 503, description = "The fleet state is busy", body = error::ErrorBody),
    ))]
async fn vehicles(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut all = state.fleet.all().await.map_err(|_| ApiError::Unavailable)?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let views: Vec<VehicleView> = all.iter().map(VehicleView::of).collect();
    Ok(Json(views).into_response())
}

/// One vehicle's status and latest position.
#[utoipa::path(get, path = "/vehicles/{id}", tag = "fleet",
    params(("id" = String, Path, description = "A vehicle id: 1-64 of A-Z a-z 0-9 . _ -")),
    responses(
        (status = 200, body = schemas::Vehicle),
        (status = 400, description = "Not a vehicle id (`field`: `id`)", body = error::ErrorBody),
        (status = 404, description = "Unknown vehicle", body = error::ErrorBody),
    ))]
async fn vehicle(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let vid = VehicleId::parse(&id).ok_or_else(|| {
        ApiError::field(
            "id",
            format!("{id:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"),
        )
    })?;
    let state = state
        .fleet
        .one(vid)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match state {
        Some(v) => Ok(Json(VehicleView::of(&v)).into_response()),
        None => Err(ApiError::NotFound(format!("unknown vehicle {id:?}"))),
    }
}

/// Whether the gateway serves.
#[utoipa::path(get, path = "/healthz", tag = "operator",
    responses((status = 200, body = schemas::Health)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text: what the gateway did, every drop and refusal.
#[utoipa::path(get, path = "/metrics", tag = "operator",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
