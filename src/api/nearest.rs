//! Nearest-vehicle search over HTTP: fleetgate's own `GET /vehicles/nearest`,
//! and the nearest-driver service's (seed 004) `POST /tracking` and
//! `POST /search`, kept as its clients call them.
//!
//! In: HTTP requests. Out: JSON answers from the ingest task's spatial index
//! (`crate::fleet::nearest`), and positions handed to ingest like any
//! device's (`POST /tracking`: sequence handling, fan-out and upstream
//! apply). Bound: one question at a time to the ingest task (it refuses
//! past `ingest::queries::QUEUED_QUERIES`, answered 503), at most
//! `fleet::nearest::MAX_K` vehicles per answer; a `POST /tracking` that
//! finds ingest's queue full is answered 429, never dropped silently.
//!
//! Errors: 400 with `{"error", "field"}` naming the bad field (where the
//! seed answered a bad body with 500), 405 for another method, 429 when
//! ingest's queue is full, 503 when the fleet is busy.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

use super::error::ErrorBody;
use super::{schemas, ApiError, AppState};
use crate::clock::now_ms;
use crate::fleet::nearest::MAX_K;
use crate::ingest::{NearestQuery, VehiclePublish};
use crate::topics::{DeviceTopicKind, VehicleId};
use crate::views::VehicleView;

/// `POST /search` looks this far, as the seed did (Redis `GEOSEARCH … BYRADIUS 15 km`).
pub const SEARCH_RADIUS_M: f64 = 15_000.0;
/// `GET /vehicles/nearest` without `radius_m`.
pub const DEFAULT_RADIUS_M: f64 = 5_000.0;
/// The widest radius a search may ask for.
pub const MAX_RADIUS_M: f64 = 1_000_000.0;
/// `GET /vehicles/nearest` without `k`.
pub const DEFAULT_K: usize = 10;

fn bad(field: &'static str, what: impl Into<String>) -> ApiError {
    ApiError::field(field, what)
}

pub(super) fn degrees(
    field: &'static str,
    value: Option<f64>,
    limit: f64,
) -> Result<f64, ApiError> {
    match value {
        Some(v) if v.is_finite() && v.abs() <= limit => Ok(v),
        Some(_) => Err(bad(
            field,
            format!("must be a number from -{limit} to {limit}"),
        )),
        None => Err(bad(field, "is required (a number)")),
    }
}

fn query_number(
    params: &HashMap<String, String>,
    field: &'static str,
) -> Result<Option<f64>, ApiError> {
    params
        .get(field)
        .map(|raw| {
            raw.trim()
                .parse::<f64>()
                .map_err(|_| bad(field, format!("{raw:?} is not a number")))
        })
        .transpose()
}

/// One vehicle of a `GET /vehicles/nearest` answer: its state and distance.
#[derive(Serialize)]
struct NearbyView<'a> {
    distance_m: f64,
    #[serde(flatten)]
    vehicle: VehicleView<'a>,
}

/// `GET /vehicles/nearest?lat=…&lon=…&k=…&radius_m=…&all=true`: nearest
/// first, each with its distance in metres and its state. Only `online`
/// vehicles unless `all=true`.
#[utoipa::path(get, path = "/vehicles/nearest", tag = "fleet",
    params(
        ("lat" = f64, Query, description = "Latitude, degrees"),
        ("lon" = f64, Query, description = "Longitude, degrees"),
        ("k" = Option<u32>, Query, description = "At most this many, 1 to 100 (10)"),
        ("radius_m" = Option<f64>, Query, description = "Within this radius (5000)"),
        ("all" = Option<bool>, Query, description = "Offline, unknown and reserved vehicles too (false)"),
    ),
    responses(
        (status = 200, description = "Nearest first", body = Vec<schemas::NearbyVehicle>),
        (status = 400, description = "A bad parameter, named in `field`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn nearest(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let lat = degrees("lat", query_number(&params, "lat")?, 90.0)?;
    let lon = degrees("lon", query_number(&params, "lon")?, 180.0)?;
    let k = match query_number(&params, "k")? {
        None => DEFAULT_K,
        Some(k) if k.fract() == 0.0 && (1.0..=MAX_K as f64).contains(&k) => k as usize,
        Some(_) => {
            return Err(bad(
                "k",
                format!("must be a whole number from 1 to {MAX_K}"),
            ))
        }
    };
    let radius_m = match query_number(&params, "radius_m")? {
        None => DEFAULT_RADIUS_M,
        Some(r) if r > 0.0 && r <= MAX_RADIUS_M => r,
        Some(_) => {
            return Err(bad(
                "radius_m",
                format!("must be above 0 and at most {MAX_RADIUS_M}"),
            ))
        }
    };
    let include_all = match params.get("all").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(bad("all", format!("{other:?} is not true or false"))),
    };
    let found = state
        .fleet
        .nearest(NearestQuery {
            lat,
            lon,
            radius_m,
            k,
            include_all,
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let views: Vec<NearbyView> = found
        .iter()
        .map(|n| NearbyView {
            distance_m: (n.distance_m * 10.0).round() / 10.0,
            vehicle: VehicleView::of(&n.vehicle),
        })
        .collect();
    Ok(Json(views).into_response())
}

/// The JSON object of a request body, or a 400 that says what is wrong.
pub(super) fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("body", "must be a JSON object")),
        Err(e) => Err(bad("body", format!("is not JSON ({e})"))),
    }
}

pub(super) fn body_number(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<f64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(bad(field, "must be a number")),
    }
}

/// `POST /tracking {"id":"1","lat":-33.44,"lng":-70.63}` → 200, empty
/// body. The position goes through ingest as a JSON position without a
/// sequence number (ordered by arrival), like a device's.
#[utoipa::path(post, path = "/tracking", tag = "seed 004 nearest-driver",
    request_body = schemas::Tracking,
    responses(
        (status = 200, description = "Taken, empty body"),
        (status = 400, description = "A bad field (`id`, `lat`, `lng`, `body`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "Ingest's queue is full (`ingest.queue`); retry", body = ErrorBody),
    ))]
pub async fn tracking(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = body_object(&body)?;
    let id = match body.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(bad("id", "must be a string")),
        None => return Err(bad("id", "is required (a vehicle id)")),
    };
    let vehicle = VehicleId::parse(&id).ok_or_else(|| {
        bad(
            "id",
            format!("{id:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"),
        )
    })?;
    let lat = degrees("lat", body_number(&body, "lat")?, 90.0)?;
    let lng = degrees("lng", body_number(&body, "lng")?, 180.0)?;
    let payload = format!(r#"{{"lat":{lat},"lon":{lng}}}"#);
    state
        .ingest
        .submit(VehiclePublish {
            vehicle,
            kind: DeviceTopicKind::Position,
            payload: payload.into(),
            received_ms: now_ms(),
        })
        .map_err(|_| ApiError::TooMany {
            bound: "ingest.queue",
            message: "ingest's queue is full (ingest.queue); try again".into(),
        })?;
    Ok(StatusCode::OK.into_response())
}

/// One element of a `POST /search` answer, as go-redis's `GeoLocation`
/// marshals: `Dist` in km, `GeoHash` Redis's 52-bit integer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SeedLocation<'a> {
    name: &'a str,
    longitude: f64,
    latitude: f64,
    dist: f64,
    geo_hash: u64,
}

/// `POST /search {"lat","lng","limit"}` → the nearest online vehicles
/// within 15 km, nearest first (at most `limit`, or [`MAX_K`] when it is 0
/// or missing); `[]` when none.
#[utoipa::path(post, path = "/search", operation_id = "seed_search", tag = "seed 004 nearest-driver",
    request_body = schemas::SeedSearch,
    responses(
        (status = 200, description = "Nearest first, within 15 km", body = Vec<schemas::SeedLocation>),
        (status = 400, description = "A bad field (`lat`, `lng`, `limit`, `body`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn search(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = body_object(&body)?;
    let lat = degrees("lat", body_number(&body, "lat")?, 90.0)?;
    let lng = degrees("lng", body_number(&body, "lng")?, 180.0)?;
    let k = match body_number(&body, "limit")? {
        None => MAX_K,
        Some(0.0) => MAX_K,
        Some(l) if l.fract() == 0.0 && l > 0.0 => (l as usize).min(MAX_K),
        Some(_) => return Err(bad("limit", "must be a whole number ≥ 0")),
    };
    let found = state
        .fleet
        .nearest(NearestQuery {
            lat,
            lon: lng,
            radius_m: SEARCH_RADIUS_M,
            k,
            include_all: false,
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let locations: Vec<SeedLocation> = found
        .iter()
        .filter_map(|n| {
            let p = n.vehicle.position.as_ref()?;
            let (latitude, longitude) = (p.lat_deg(), p.lon_deg());
            Some(SeedLocation {
                name: n.vehicle.id.as_str(),
                longitude,
                latitude,
                dist: redis_km(n.distance_m),
                geo_hash: redis_geohash(latitude, longitude),
            })
        })
        .collect();
    Ok(Json(locations).into_response())
}

/// A distance in km as Redis reports it: its Earth radius (6 372 797.560856
/// m, ours is the mean 6 371 008.8 m), 4 decimals.
fn redis_km(distance_m: f64) -> f64 {
    let km = distance_m * (6_372_797.560_856 / 6_371_008.8) / 1000.0;
    (km * 10_000.0).round() / 10_000.0
}

/// Redis's 52-bit geohash (the sorted-set score `GEOSEARCH … WITHHASH`
/// returns): 26 bits each of latitude (in −85.05112878..85.05112878) and
/// longitude, interleaved with longitude in the odd bits.
pub fn redis_geohash(lat: f64, lon: f64) -> u64 {
    const LAT_LIMIT: f64 = 85.051_128_78;
    const STEP: u32 = 26;
    let scale = f64::from(1u32 << STEP);
    let lat_offset =
        ((lat.clamp(-LAT_LIMIT, LAT_LIMIT) + LAT_LIMIT) / (2.0 * LAT_LIMIT) * scale) as u64;
    let lon_offset = ((lon.clamp(-180.0, 180.0) + 180.0) / 360.0 * scale) as u64;
    let max = (1u64 << STEP) - 1;
    spread(lat_offset.min(max)) | (spread(lon_offset.min(max)) << 1)
}

/// The low 32 bits of `x` at the even bit positions.
fn spread(x: u64) -> u64 {
    let mut x = x & 0xFFFF_FFFF;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Redis's GEOADD / GEOSEARCH … WITHHASH WITHDIST docs:
    /// Sicily's two cities, searched from (15, 37).
    #[test]
    fn geohash_and_distance_are_what_redis_answers() {
        assert_eq!(redis_geohash(38.115556, 13.361389), 3_479_099_956_230_698);
        assert_eq!(redis_geohash(37.502669, 15.087269), 3_479_447_370_796_909);
        let palermo = crate::fleet::haversine_m(37.0, 15.0, 38.115556, 13.361389);
        let catania = crate::fleet::haversine_m(37.0, 15.0, 37.502669, 15.087269);
        assert!(
            (redis_km(palermo) - 190.4424).abs() < 0.001,
            "{}",
            redis_km(palermo)
        );
        assert!(
            (redis_km(catania) - 56.4413).abs() < 0.001,
            "{}",
            redis_km(catania)
        );
    }
}
