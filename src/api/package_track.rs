//! `GET /packages/track/{vehicleId}`: the package-tracking socket, kept as
//! seed 000's clients use it (no subscribe message: the vehicle is in the
//! path).
//!
//! Out: compact JSON text frames, one package per frame, in the registry's
//! shape `{"id","from","to","vehicleId","status"}`:
//! - on connect, each package the vehicle carries (in transit);
//! - at once on every change of one of its packages: assigned, delivered,
//!   or moved (to it, or away from it: then `vehicleId` is the new one);
//! - as the vehicle moves, each package it carries again with the position
//!   as extra keys (`lat`, `lon`, `speed_kmh`, `heading_deg`, `time_ms`),
//!   at most once per `http.package_track_interval_ms` (the latest fix).
//!
//! If the socket's queue lost package changes it sends the vehicle's
//! current packages again. What the client sends is read only to notice a
//! stall (a pong or anything else shows it reads).
//!
//! In: the fan-out, through a subscription of this one vehicle
//! (`http.package_track_queue`, `conflate`: its latest position and status,
//! package changes in order in `fanout.events_queue`, oldest dropped and
//! counted in `fanout_dropped_total`), and the registry's copies of the
//! vehicle's packages (one question to the ingest task on connect, per
//! position frame and after a loss). Bound: that queue; the socket counts
//! against `fanout.max_subscribers` like `/ws` (429 past it). A client that
//! neither takes a frame nor answers a ping for `http.ws_stall_timeout_ms`
//! is cut (`ws_stalled_disconnects_total`, shared with `/ws`).

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use super::socket::{listen, send};
use super::{ApiError, AppState};
use crate::fanout::{FanoutError, Filter, SubscribeOptions, Subscription, WhenFull};
use crate::fleet::packages::{Package, PackageStatus};
use crate::fleet::{PositionUpdate, Update};
use crate::ingest::PackageLookup;
use crate::metrics::Metrics;
use crate::topics::VehicleId;
use crate::views::PositionView;

/// The package-tracking socket (seed 000, kept): one package per frame.
#[utoipa::path(get, path = "/packages/track/{vehicleId}", operation_id = "package_track_socket", tag = "seed 000 packages",
    params(("vehicleId" = String, Path, description = "The vehicle whose packages to stream")),
    responses(
        (status = 101, description = "WebSocket, no subscribe message: one compact JSON package `{\"id\",\"from\",\"to\",\"vehicleId\",\"status\"}` per text frame, on connect, on each change, and with `lat`, `lon`, `speed_kmh`, `heading_deg`, `time_ms` as the vehicle moves"),
        (status = 400, description = "Not a vehicle id (`field`: `vehicleId`), or not a WebSocket upgrade", body = super::error::ErrorBody),
        (status = 429, description = "`fanout.max_subscribers` feeds are open", body = super::error::ErrorBody),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    Path(vehicle): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let vehicle = VehicleId::parse(&vehicle).ok_or_else(|| {
        ApiError::field(
            "vehicleId",
            format!("{vehicle:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"),
        )
    })?;
    // The id is judged first; then axum's own answer to a request that is
    // not an upgrade (made JSON by `error::json_errors`).
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let subscription = state
        .fanout
        .subscribe(SubscribeOptions {
            name: "package_track",
            policy: WhenFull::Conflate,
            capacity: state.http.package_track_queue.get(),
            filter: Filter::Vehicles(vec![vehicle.clone()]),
        })
        .map_err(|e| match e {
            FanoutError::TooManySubscribers { max } => super::live::too_many_feeds(max),
            FanoutError::ZeroCapacity => ApiError::Unavailable,
        })?;
    Ok(ws
        .on_upgrade(move |socket| track(socket, subscription, vehicle, state))
        .into_response())
}

/// A package with where its vehicle is: the position as extra keys.
#[derive(Serialize)]
struct Moving<'a> {
    #[serde(flatten)]
    package: &'a Package,
    lat: f64,
    lon: f64,
    speed_kmh: f64,
    heading_deg: f64,
    time_ms: u64,
}

fn frame(package: &Package, position: Option<&PositionUpdate>) -> Option<String> {
    match position {
        None => serde_json::to_string(package).ok(),
        Some(p) => {
            let view = PositionView::of(p);
            serde_json::to_string(&Moving {
                package,
                lat: view.lat,
                lon: view.lon,
                speed_kmh: view.speed_kmh,
                heading_deg: view.heading_deg,
                time_ms: view.time_ms,
            })
            .ok()
        }
    }
}

struct ClientGauge<'a>(&'a Metrics);
impl Drop for ClientGauge<'_> {
    fn drop(&mut self) {
        Metrics::dec(&self.0.package_track_clients);
    }
}

/// What woke the socket.
enum Wake {
    Updates(u64),
    PositionDue,
    Heard,
}

/// Sends each package `vehicle` carries now, with `position` when given;
/// false when the client is gone. A busy fleet skips this round.
async fn send_carried(
    socket: &mut WebSocket,
    state: &AppState,
    vehicle: &VehicleId,
    position: Option<&PositionUpdate>,
    stall: Duration,
) -> bool {
    let Ok(packages) = state
        .fleet
        .packages(PackageLookup::OnVehicle(vehicle.clone()))
        .await
    else {
        tracing::debug!(%vehicle, "package track: the fleet is busy, skipping a round");
        return true;
    };
    for package in packages
        .iter()
        .filter(|p| p.status == PackageStatus::InTransit)
    {
        if let Some(text) = frame(package, position) {
            if !send(socket, text, stall, &state.metrics).await {
                return false;
            }
        }
    }
    true
}

async fn track(
    mut socket: WebSocket,
    mut subscription: Subscription,
    vehicle: VehicleId,
    state: AppState,
) {
    let metrics = state.metrics.clone();
    Metrics::inc(&metrics.package_track_clients);
    let _gauge = ClientGauge(&metrics);
    let stall = Duration::from_millis(state.http.ws_stall_timeout_ms);
    let pace = Duration::from_millis(state.http.package_track_interval_ms);
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval((stall / 3).max(Duration::from_millis(10)));

    // Subscribed before this copy is taken: no change falls in between.
    if !send_carried(&mut socket, &state, &vehicle, None, stall).await {
        return;
    }
    let mut batch = Vec::new();
    // The latest fix not sent yet, and when the next may go.
    let mut moved: Option<PositionUpdate> = None;
    let mut due = Instant::now();
    loop {
        let wake = tokio::select! {
            lagged = subscription.recv(&mut batch) => Wake::Updates(lagged),
            _ = tokio::time::sleep_until(due), if moved.is_some() => Wake::PositionDue,
            alive = listen(&mut socket, &mut last_heard, &mut ping, stall, &metrics) => {
                if !alive { return; }
                Wake::Heard
            }
        };
        if let Wake::Updates(lagged) = wake {
            for update in batch.drain(..) {
                match update {
                    Update::Package(p) => {
                        let Some(text) = frame(&p.package, None) else {
                            continue;
                        };
                        if !send(&mut socket, text, stall, &metrics).await {
                            return;
                        }
                    }
                    Update::Position(p) if !p.late => moved = Some(p),
                    _ => {}
                }
            }
            if lagged > 0 && !send_carried(&mut socket, &state, &vehicle, None, stall).await {
                return;
            }
        }
        if moved.is_some() && Instant::now() >= due {
            let position = moved.take();
            if !send_carried(&mut socket, &state, &vehicle, position.as_ref(), stall).await {
                return;
            }
            due = Instant::now() + pace;
        }
    }
}
