//! `GET /ws`: the live feed.
//!
//! Before it: the fan-out, one queue per client. After it: the browser (the
//! live map page, `map.html`) or any WebSocket client.
//!
//! In: a WebSocket upgrade, optionally narrowed with
//! `?vehicles=truck-1,truck-2` or `?bbox=min_lon,min_lat,max_lon,max_lat`
//! (degrees). Out: first a snapshot `{"snapshot":true,"vehicles":[…],
//! "requests":[…]}` of every vehicle's status and latest position and of
//! the open dispatch requests (searching or holding a vehicle: what the
//! map marks; their later transitions come as `"dispatch"`), then text
//! frames `{"positions":[…],"statuses":[…],"events":[…]}` (and
//! `"packages":[…]` when packages changed) batching what
//! changed during `http.ws_frame_interval_ms`, with `"lagged": n` when the
//! client's queue had to drop n updates.
//!
//! Bound: the client's fan-out queue (`http.ws_queue`, policy
//! `http.ws_when_full`, by default `conflate`: the latest position of each
//! vehicle is always kept). A client that stops reading is disconnected
//! once it has neither taken a frame nor answered a ping for
//! `http.ws_stall_timeout_ms` (`ws_stalled_disconnects_total`); it never
//! holds more than its queue.

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::socket::{listen, send};
use super::{ApiError, AppState};
use crate::fanout::{FanoutError, Filter, SubscribeOptions, Subscription};
use crate::fleet::dispatch::RequestView;
use crate::fleet::packages::Package;
use crate::fleet::Update;
use crate::metrics::Metrics;
use crate::topics::VehicleId;
use crate::views::{DispatchEventView, EventView, PositionView, StatusView, VehicleView};

#[derive(Debug, Deserialize)]
pub struct FeedParams {
    vehicles: Option<String>,
    bbox: Option<String>,
}

fn parse_filter(params: &FeedParams) -> Result<Filter, ApiError> {
    match (&params.vehicles, &params.bbox) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "bbox",
            "give either vehicles or bbox, not both",
        )),
        (Some(list), None) => {
            let ids = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    VehicleId::parse(s).ok_or_else(|| {
                        ApiError::field("vehicles", format!("{s:?} is not a vehicle id"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Err(ApiError::field("vehicles", "names no vehicle"));
            }
            Ok(Filter::Vehicles(ids))
        }
        (None, Some(bbox)) => {
            let bad =
                || ApiError::field("bbox", "must be min_lon,min_lat,max_lon,max_lat in degrees");
            let v: Vec<f64> = bbox
                .split(',')
                .map(|s| s.trim().parse::<f64>().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [min_lon, min_lat, max_lon, max_lat] = v[..] else {
                return Err(bad());
            };
            let valid = v.iter().all(|x| x.is_finite())
                && (-90.0..=90.0).contains(&min_lat)
                && (-90.0..=90.0).contains(&max_lat)
                && (-180.0..=180.0).contains(&min_lon)
                && (-180.0..=180.0).contains(&max_lon)
                && min_lat <= max_lat
                && min_lon <= max_lon;
            if !valid {
                return Err(bad());
            }
            let e6 = |deg: f64| (deg * 1e6).round() as i32;
            Ok(Filter::BoundingBox {
                min_lat_e6: e6(min_lat),
                min_lon_e6: e6(min_lon),
                max_lat_e6: e6(max_lat),
                max_lon_e6: e6(max_lon),
            })
        }
        (None, None) => Ok(Filter::All),
    }
}

/// The live feed (WebSocket): a snapshot, then batched changes.
#[utoipa::path(get, path = "/ws", operation_id = "live_feed_socket", tag = "fleet",
    params(
        ("vehicles" = Option<String>, Query, description = "Only these vehicles, comma-separated"),
        ("bbox" = Option<String>, Query, description = "Only inside min_lon,min_lat,max_lon,max_lat"),
    ),
    responses(
        (status = 101, description = "WebSocket: `{\"snapshot\":true,\"vehicles\":[…]}`, then `{\"positions\",\"statuses\",\"events\"}` frames every `http.ws_frame_interval_ms`"),
        (status = 400, description = "A bad `vehicles` or `bbox`, or not a WebSocket upgrade", body = super::error::ErrorBody),
        (status = 429, description = "`fanout.max_subscribers` feeds are open", body = super::error::ErrorBody),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<FeedParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let filter = parse_filter(&params)?;
    let subscription = state
        .fanout
        .subscribe(SubscribeOptions {
            name: "ws",
            policy: state.http.ws_when_full,
            capacity: state.http.ws_queue.get(),
            filter: filter.clone(),
        })
        .map_err(|e| match e {
            FanoutError::TooManySubscribers { max } => too_many_feeds(max),
            FanoutError::ZeroCapacity => ApiError::Unavailable,
        })?;
    Ok(ws
        .on_upgrade(move |socket| feed(socket, subscription, filter, state))
        .into_response())
}

/// 429: every fan-out subscriber slot is taken (`/ws` and the track
/// sockets share them).
pub(super) fn too_many_feeds(max: usize) -> ApiError {
    ApiError::TooMany {
        bound: "fanout.max_subscribers",
        message: format!("too many live feed clients: at most {max}"),
    }
}

#[derive(Serialize, Default)]
struct Frame<'a> {
    positions: Vec<PositionView<'a>>,
    statuses: Vec<StatusView<'a>>,
    events: Vec<EventView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    packages: Vec<&'a Package>,
    /// Dispatch requests' transitions, as events (`event_id`, `time_ms`,
    /// `type` and the request).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dispatch: Vec<DispatchEventView<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    lagged: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshot: bool,
    /// Only in the snapshot: every vehicle with its status and position.
    #[serde(skip_serializing_if = "Option::is_none")]
    vehicles: Option<Vec<VehicleView<'a>>>,
    /// Only in the snapshot: the open dispatch requests, oldest first (at
    /// most `dispatch.max_open_requests`); an assigned one's vehicle is
    /// reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<Vec<RequestView>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn render(updates: &[Update], lagged: u64) -> Option<String> {
    let mut frame = Frame {
        lagged,
        ..Frame::default()
    };
    for update in updates {
        match update {
            Update::Position(p) => frame.positions.push(PositionView::of(p)),
            Update::Status(s) => frame.statuses.push(StatusView::of(s)),
            Update::Event(e) => frame.events.push(EventView::of(e)),
            Update::Package(p) => frame.packages.push(&p.package),
            Update::Dispatch(d) => frame.dispatch.push(DispatchEventView::of(d)),
            // Never given to a WebSocket's queue (not `block`).
            Update::Checkpoint(_) => {}
        }
    }
    serde_json::to_string(&frame).ok()
}

struct ClientGauge<'a>(&'a Metrics);
impl Drop for ClientGauge<'_> {
    fn drop(&mut self) {
        Metrics::dec(&self.0.ws_clients);
    }
}

async fn feed(
    mut socket: WebSocket,
    mut subscription: Subscription,
    filter: Filter,
    state: AppState,
) {
    let metrics = state.metrics.clone();
    Metrics::inc(&metrics.ws_clients);
    let _gauge = ClientGauge(&metrics);
    let stall = Duration::from_millis(state.http.ws_stall_timeout_ms);
    let pace = Duration::from_millis(state.http.ws_frame_interval_ms);
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval((stall / 3).max(Duration::from_millis(10)));

    // The snapshot: every vehicle the filter admits, with its status and
    // latest position, so a new client sees parked vehicles too, and the
    // open requests (asked after subscribing: a transition after this copy
    // is in the queue). Requests are not narrowed by the filter: a pickup
    // point is no vehicle's, and there are few.
    if let Ok(vehicles) = state.fleet.all().await {
        let views: Vec<VehicleView> = vehicles
            .iter()
            .filter(|v| filter.admits_vehicle(&v.id, v.position.as_ref()))
            .map(VehicleView::of)
            .collect();
        let frame = Frame {
            snapshot: true,
            vehicles: Some(views),
            requests: Some(state.fleet.open_requests().await.unwrap_or_default()),
            ..Frame::default()
        };
        if let Ok(text) = serde_json::to_string(&frame) {
            if !send(&mut socket, text, stall, &metrics).await {
                return;
            }
        }
    }

    let mut batch = Vec::new();
    loop {
        // Wait for updates, answering the client meanwhile.
        let lagged = tokio::select! {
            lagged = subscription.recv(&mut batch) => lagged,
            alive = listen(&mut socket, &mut last_heard, &mut ping, stall, &metrics) => {
                if !alive { return; }
                continue;
            }
        };
        let Some(text) = render(&batch, lagged) else {
            batch.clear();
            continue;
        };
        batch.clear();
        if !send(&mut socket, text, stall, &metrics).await {
            return;
        }
        // Pace the frames: what changes meanwhile conflates in the queue.
        let next = Instant::now() + pace;
        while Instant::now() < next {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                alive = listen(&mut socket, &mut last_heard, &mut ping, stall, &metrics) => {
                    if !alive { return; }
                }
            }
        }
    }
}
