//! The JSON every dashboard sees, in one place: MQTT `fleet/...` topics,
//! the WebSocket feed and the REST API render the same shapes.
//!
//! In: fleet state and updates. Out: serde views borrowing from them (no
//! copies of the data; rendering allocates only the output text).

use fleetgate_wire::{Position, Status};
use serde::Serialize;

use crate::fleet::dispatch::{DispatchUpdate, RequestView};
use crate::fleet::events::Recent;
use crate::fleet::{EventKind, FleetEvent, PositionUpdate, Presence, StatusUpdate, VehicleState};
use crate::topics::{VehicleId, DISPATCH_EVENT_KIND};

/// `fleet/<vid>/position`, and each entry of a WebSocket frame's `positions`.
#[derive(Debug, Serialize)]
pub struct PositionView<'a> {
    pub vehicle_id: &'a str,
    pub seq: u32,
    pub time_ms: u64,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub heading_deg: f64,
    pub fix_valid: bool,
    pub ignition: bool,
    /// Sent late by the device (from its offline ring).
    pub replayed: bool,
    /// Distance driven, summed by the gateway over valid fixes.
    pub odometer_m: f64,
    /// The device's own odometer, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_odometer_m: Option<u32>,
    pub received_ms: u64,
}

impl<'a> PositionView<'a> {
    pub fn new(vehicle: &'a VehicleId, p: &Position, odometer_m: f64, received_ms: u64) -> Self {
        PositionView {
            vehicle_id: vehicle.as_str(),
            seq: p.seq,
            time_ms: p.time_ms,
            lat: p.lat_deg(),
            lon: p.lon_deg(),
            speed_kmh: round1(p.speed_kmh()),
            heading_deg: round1(p.heading_deg()),
            fix_valid: p.fix_valid(),
            ignition: p.ignition(),
            replayed: p.flags & fleetgate_wire::flags::REPLAYED != 0,
            odometer_m: round1(odometer_m),
            device_odometer_m: p.odometer_m,
            received_ms,
        }
    }

    pub fn of(update: &'a PositionUpdate) -> Self {
        Self::new(
            &update.vehicle,
            &update.position,
            update.odometer_m,
            update.received_ms,
        )
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `fleet/<vid>/status`: the device's own report.
#[derive(Debug, Serialize)]
pub struct StatusView<'a> {
    pub vehicle_id: &'a str,
    pub online: bool,
    pub ignition: bool,
    pub supply_mv: u16,
    pub firmware: String,
    pub time_ms: u64,
}

impl<'a> StatusView<'a> {
    pub fn new(vehicle: &'a VehicleId, s: &Status, received_ms: u64) -> Self {
        let f = s.firmware;
        StatusView {
            vehicle_id: vehicle.as_str(),
            online: s.online,
            ignition: s.ignition,
            supply_mv: s.supply_mv,
            firmware: format!("{}.{}.{}", f.major, f.minor, f.patch),
            time_ms: if s.time_ms == 0 {
                received_ms
            } else {
                s.time_ms
            },
        }
    }

    pub fn of(update: &'a StatusUpdate) -> Self {
        Self::new(&update.vehicle, &update.status, update.received_ms)
    }
}

/// `fleet/events/<kind>`, each entry of a WebSocket frame's `events`, of
/// `GET /events`, and upstream: `{"event_id", "vehicle_id", "time_ms",
/// "type", …}` (the kind's own fields after `type`).
#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    /// Unique per gateway, increasing (`crate::fleet::events`): what a
    /// consumer dedupes by.
    pub event_id: u64,
    pub vehicle_id: &'a str,
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl<'a> EventView<'a> {
    pub fn of(event: &'a FleetEvent) -> Self {
        EventView {
            event_id: event.id,
            vehicle_id: event.vehicle.as_str(),
            time_ms: event.time_ms,
            kind: event.kind,
        }
    }
}

/// A dispatch transition as an event: `fleet/events/dispatch`, `GET
/// /events` and upstream: `{"event_id", "time_ms", "type": "dispatch"}`
/// and the request's fields (`GET /v2/requests/{id}`'s shape).
#[derive(Debug, Serialize)]
pub struct DispatchEventView<'a> {
    pub event_id: u64,
    pub time_ms: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub request: &'a RequestView,
}

impl<'a> DispatchEventView<'a> {
    pub fn of(update: &'a DispatchUpdate) -> Self {
        DispatchEventView {
            event_id: update.event_id,
            time_ms: update.time_ms,
            kind: DISPATCH_EVENT_KIND,
            request: &update.request,
        }
    }
}

/// One entry of `GET /events`: a vehicle's event or a dispatch transition,
/// each in its own shape.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RecentView<'a> {
    Vehicle(EventView<'a>),
    Dispatch(DispatchEventView<'a>),
}

impl<'a> RecentView<'a> {
    pub fn of(recent: &'a Recent) -> Self {
        match recent {
            Recent::Vehicle(e) => RecentView::Vehicle(EventView::of(e)),
            Recent::Dispatch(d) => RecentView::Dispatch(DispatchEventView::of(d)),
        }
    }
}

/// A vehicle as `GET /vehicles` lists it.
#[derive(Debug, Serialize)]
pub struct VehicleView<'a> {
    pub vehicle_id: &'a str,
    pub status: Presence,
    pub last_heard_ms: u64,
    pub odometer_m: f64,
    pub position: Option<PositionView<'a>>,
    pub device: Option<StatusView<'a>>,
}

impl<'a> VehicleView<'a> {
    pub fn of(v: &'a VehicleState) -> Self {
        VehicleView {
            vehicle_id: v.id.as_str(),
            status: v.presence,
            last_heard_ms: v.last_heard_ms,
            odometer_m: round1(v.odometer_m),
            position: v
                .position
                .as_ref()
                .map(|p| PositionView::new(&v.id, p, v.odometer_m, v.position_received_ms)),
            device: v
                .status
                .as_ref()
                .map(|s| StatusView::new(&v.id, s, v.last_heard_ms)),
        }
    }
}
