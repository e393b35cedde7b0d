//! HTTP: the operator's and the dashboards' surface.
//!
//! In: HTTP requests. Out: `GET /` the live map page; `GET /ws` the live
//! WebSocket feed ([`live`]); `GET /notification?userId=` a user's
//! notifications ([`notifications`], the notification service's contract); `GET /vehicles`, `GET /vehicles/{id}` the fleet's
//! current state; `/geofences` ([`geofences`]); `GET /vehicles/nearest`, `POST /tracking`, `POST /search`
//! nearest-vehicle search ([`nearest`], with the nearest-driver service's
//! contract); `/packages` and the `/packages/track/{vehicleId}` socket
//! ([`packages`], the package-tracking service's contract); `GET /healthz`; `GET /metrics` (Prometheus text). Bound:
//! each WebSocket holds one fan-out queue (`http.ws_queue`), and at most
//! `fanout.max_subscribers` exist; REST answers are copies made by the
//! ingest task, one question at a time. Errors are JSON `{"error": …}` with
//! the right status, never an empty body.
//!
//! Before it: the fan-out (each WebSocket's own queue), the ingest task
//! (answers to questions), and the bridge's mailboxes (notifications). After
//! it: browsers, dashboards and the operator.

pub mod dispatch;
pub mod events;
pub mod geofences;
pub mod live;
pub mod nearest;
pub mod notifications;
mod package_track;
pub mod packages;
mod socket;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/ws", get(live::upgrade))
        .route("/notification", get(notifications::notifications))
        .route("/events", get(events::events))
        .route("/vehicles", get(vehicles))
        // a static segment wins over `{id}`: no vehicle named "nearest"
        // is reachable at /vehicles/nearest (it is at /vehicles?… lists)
        .route("/vehicles/nearest", get(nearest::nearest))
        .route("/vehicles/{id}", get(vehicle))
        .route(
            "/tracking",
            post(nearest::tracking).fallback(nearest::method_not_allowed),
        )
        .route(
            "/v2/search",
            post(dispatch::search).fallback(nearest::method_not_allowed),
        )
        .route(
            "/v2/cancel",
            post(dispatch::cancel).fallback(nearest::method_not_allowed),
        )
        .route("/v2/requests/{id}", get(dispatch::get))
        .route("/v2/requests/{id}/release", post(dispatch::release))
        .route("/geofences", get(geofences::list).post(geofences::create))
        .route(
            "/geofences/{id}",
            get(geofences::get)
                .put(geofences::replace)
                .delete(geofences::delete),
        )
        .route(
            "/search",
            post(nearest::search).fallback(nearest::method_not_allowed),
        )
        .merge(packages::router())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The live map: one self-contained page (no external scripts or tiles,
/// so it works on a depot network without internet).
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("map.html"),
    )
        .into_response()
}

/// Every vehicle, sorted by id, with its status and latest position.
async fn vehicles(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut all = state.fleet.all().await.map_err(|_| ApiError::Unavailable)?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let views: Vec<VehicleView> = all.iter().map(VehicleView::of).collect();
    Ok(Json(views).into_response())
}

async fn vehicle(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let vid = VehicleId::parse(&id).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{id:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"
        ))
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

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

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

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint".into()).into_response()
}

/// What an endpoint can answer instead of its result; the body is always
/// `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A bad request naming the field at fault (`{"error", "field"}`).
    #[error("{message}")]
    BadField {
        field: &'static str,
        message: String,
    },
    /// A bound is reached (429).
    #[error("{0}")]
    TooMany(String),
    /// The request is valid but a bound refuses it.
    #[error("{0}")]
    Conflict(String),
    #[error("too many live feed clients: at most {0}")]
    TooManyClients(usize),
    #[error("the fleet state is busy; try again")]
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) | ApiError::BadField { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyClients(_) | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = match &self {
            ApiError::BadField { field, .. } => {
                json!({ "error": self.to_string(), "field": field })
            }
            _ => json!({ "error": self.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}
