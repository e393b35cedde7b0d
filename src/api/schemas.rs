//! The shapes of the API's JSON bodies, for the OpenAPI document only.
//!
//! In: nothing at run time; the handlers build their answers from the
//! views they always used (`crate::views`, the fleet's records). Out: the
//! document's `components.schemas`. These mirror those answers field for
//! field; `tests/it/openapi.rs` checks live answers against them (every key
//! documented, every required key present), so they cannot drift apart
//! silently. Bound: none (types only).
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// `online` (heard within `fleet.unknown_after_s`), `offline` (said
/// goodbye), `unknown` (silent longer).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
    Unknown,
}

/// A vehicle's latest fix, as on `fleet/<vid>/position`.
#[derive(Serialize, ToSchema)]
pub struct Position {
    pub vehicle_id: String,
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

/// The device's own report, as on `fleet/<vid>/status`.
#[derive(Serialize, ToSchema)]
pub struct DeviceStatus {
    pub vehicle_id: String,
    pub online: bool,
    pub ignition: bool,
    pub supply_mv: u16,
    pub firmware: String,
    pub time_ms: u64,
}

/// One vehicle's state.
#[derive(Serialize, ToSchema)]
pub struct Vehicle {
    pub vehicle_id: String,
    pub status: Presence,
    pub last_heard_ms: u64,
    pub odometer_m: f64,
    pub position: Option<Position>,
    pub device: Option<DeviceStatus>,
}

/// A vehicle of `GET /vehicles/nearest`, with its distance.
#[derive(Serialize, ToSchema)]
pub struct NearbyVehicle {
    pub distance_m: f64,
    #[serde(flatten)]
    pub vehicle: Vehicle,
}

/// `POST /tracking` (seed 004): a driver's position.
#[derive(Serialize, ToSchema)]
pub struct Tracking {
    /// The vehicle id (a number is taken as its digits).
    pub id: String,
    pub lat: f64,
    pub lng: f64,
}

/// `POST /search` (seed 004).
#[derive(Serialize, ToSchema)]
pub struct SeedSearch {
    pub lat: f64,
    pub lng: f64,
    /// At most this many (0 or absent: up to 100).
    pub limit: Option<u32>,
}

/// One answer of `POST /search`, as go-redis's `GeoLocation` marshals.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SeedLocation {
    pub name: String,
    pub longitude: f64,
    pub latitude: f64,
    /// Kilometres, Redis's Earth radius, 4 decimals.
    pub dist: f64,
    /// Redis's 52-bit geohash score.
    pub geo_hash: u64,
}

/// `in_transit` or `delivered`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackageStatus {
    InTransit,
    Delivered,
}

/// A package (seed 000's record, with its id and status).
#[derive(Serialize, ToSchema)]
pub struct Package {
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(rename = "vehicleId")]
    pub vehicle_id: String,
    pub status: PackageStatus,
}

/// `GET /packages/{id}`: the package and its carrier's live state.
#[derive(Serialize, ToSchema)]
pub struct CarriedPackage {
    #[serde(flatten)]
    pub package: Package,
    /// `null` until the gateway hears from the vehicle.
    pub vehicle: Option<Vehicle>,
}

/// `POST /packages`.
#[derive(Serialize, ToSchema)]
pub struct NewPackage {
    /// A place name, 1 to 128 bytes (`to` too).
    pub from: String,
    pub to: String,
    #[serde(rename = "vehicleId")]
    pub vehicle_id: String,
    /// 1-64 of `A-Z a-z 0-9 . _ -`; made when absent.
    pub id: Option<String>,
}

/// `POST /packages/{id}/move`.
#[derive(Serialize, ToSchema)]
pub struct PackageMove {
    #[serde(rename = "vehicleId")]
    pub vehicle_id: String,
}

/// A circle fence.
#[derive(Serialize, ToSchema)]
pub struct Circle {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// A geofence in the config file's shape: a circle or a polygon.
#[derive(Serialize, ToSchema)]
pub struct Geofence {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circle: Option<Circle>,
    /// `[lon, lat]` pairs (GeoJSON order); the ring closes itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<f64>>>)]
    pub polygon: Option<Vec<[f64; 2]>>,
    /// A vehicle exits this far outside (25 m when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_buffer_m: Option<f64>,
    /// Seconds inside before the enter counts (`geofence.dwell_s` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<u64>,
    /// The speed limit inside, km/h, for `overspeed` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_limit_kmh: Option<f64>,
}

/// A stored geofence: its id and the fence.
#[derive(Serialize, ToSchema)]
pub struct StoredGeofence {
    pub id: u32,
    #[serde(flatten)]
    pub fence: Geofence,
}

/// `POST /v2/search` (seed 004).
#[derive(Serialize, ToSchema)]
pub struct DispatchSearch {
    pub lat: f64,
    pub lng: f64,
}

/// `POST /v2/search`'s answer.
#[derive(Serialize, ToSchema)]
pub struct DispatchCreated {
    pub request_id: u64,
}

/// `POST /v2/cancel` (seed 004): the id as a string, as the seed sends
/// it, or a number.
#[derive(Serialize, ToSchema)]
pub struct DispatchCancel {
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Searching,
    Assigned,
    Released,
    Cancelled,
    Expired,
    LeaseEnded,
}

/// A dispatch request's state.
#[derive(Serialize, ToSchema)]
pub struct DispatchRequest {
    pub request_id: u64,
    pub state: RequestState,
    pub lat: f64,
    pub lon: f64,
    /// The radius of the latest search.
    pub radius_m: f64,
    pub vehicle_id: Option<String>,
    pub distance_m: Option<f64>,
    pub created_ms: u64,
    pub assigned_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

/// A vehicle's event: `fleet/events/<kind>`, the live feed's `events`,
/// `GET /events`. The fields after `type` are the kind's.
#[derive(Serialize, ToSchema)]
pub struct VehicleEvent {
    /// Increasing, unique per gateway: what a consumer dedupes by.
    pub event_id: u64,
    pub vehicle_id: String,
    /// The fix time for events a position made; the gateway's clock for
    /// status changes.
    pub time_ms: u64,
    /// `status_changed`, `geofence_enter`, `geofence_exit`, `overspeed`,
    /// `motion_start`, `motion_stop`, `ignition_on`, `ignition_off`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `status_changed`: the presence before and after.
    pub from: Option<Presence>,
    pub to: Option<Presence>,
    /// `geofence_*`: the fence; `overspeed`: the fence that set the limit
    /// (null when the vehicle's own limit did).
    pub fence: Option<u32>,
    /// `overspeed`: the speed, the limit, and where the limit came from
    /// (`vehicle`, `default`, `fence`).
    pub speed_kmh: Option<f64>,
    pub limit_kmh: Option<f64>,
    pub limit_from: Option<String>,
}

/// A dispatch request's transition as an event (`fleet/events/dispatch`,
/// `GET /events`): the request's fields after `type`.
#[derive(Serialize, ToSchema)]
pub struct DispatchEvent {
    pub event_id: u64,
    pub time_ms: u64,
    /// `dispatch`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub request: DispatchRequest,
}

/// One event of `GET /events`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Event {
    Vehicle(VehicleEvent),
    Dispatch(DispatchEvent),
}

/// `GET /events`'s answer.
#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// The `since` to read on from: the last event's id (or the newest
    /// kept, when none matched).
    pub next_since: u64,
    /// The limit cut the answer short.
    pub more: bool,
    /// Events after `since` already left the ring (`events.ring`).
    pub missed: bool,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}
