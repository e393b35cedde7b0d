//! `[geofence]`: the fences the gateway evaluates, and their limits.
//!
//! ```toml
//! [geofence]
//! exit_buffer_m = 25          # default for fences that do not set one
//! dwell_s = 0                 # default: an enter counts at once
//!
//! [[geofence.fences]]
//! name = "depot"
//! circle = { lat = 52.3731, lon = 4.8922, radius_m = 150 }
//!
//! [[geofence.fences]]
//! name = "city centre"
//! polygon = [[4.88, 52.37], [4.90, 52.37], [4.90, 52.38], [4.88, 52.38]]  # [lon, lat], GeoJSON order
//! exit_buffer_m = 40
//! dwell_s = 30                # enter reported once inside for 30 s
//! speed_limit_kmh = 30        # overspeed limit while inside (`[events.overspeed]`)
//! ```
//!
//! [`GeofenceConfig::check`] refuses a bad fence at start with its name and
//! what is wrong (so `crate::fleet::geofence` takes them as they are).

use std::num::NonZeroUsize;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeofenceConfig {
    /// Fences at most; more in the config refuse the start.
    pub max_fences: NonZeroUsize,
    /// Vertices of one polygon at most.
    pub max_vertices: NonZeroUsize,
    /// Metres outside a fence a vehicle must be before it exits (GPS noise
    /// at the boundary then makes no flaps), for fences that set none.
    pub exit_buffer_m: f64,
    /// Seconds (by fix time) a vehicle must count as inside before its
    /// enter is reported, for fences that set none; 0: at once.
    pub dwell_s: u64,
    pub fences: Vec<FenceConfig>,
}

impl Default for GeofenceConfig {
    fn default() -> Self {
        GeofenceConfig {
            max_fences: NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN),
            max_vertices: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            exit_buffer_m: 25.0,
            dwell_s: 0,
            fences: Vec::new(),
        }
    }
}

/// One fence: a name, and a circle or a polygon. `Default` is an empty
/// name and no shape (refused by the check): for `..Default::default()`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FenceConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circle: Option<Circle>,
    /// `[longitude, latitude]` pairs (GeoJSON order); the ring closes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<Vec<[f64; 2]>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_buffer_m: Option<f64>,
    /// Seconds inside before the enter counts (`geofence.dwell_s` if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<u64>,
    /// The speed limit inside, in km/h, for `overspeed` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_limit_kmh: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Circle {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// A polygon's distinct vertices as (lat, lon): the closing vertex, when
/// the ring repeats its first one, dropped.
pub fn polygon_vertices(ring: &[[f64; 2]]) -> Vec<(f64, f64)> {
    let mut vertices: Vec<(f64, f64)> = ring.iter().map(|&[lon, lat]| (lat, lon)).collect();
    if vertices.len() > 1 && vertices.first() == vertices.last() {
        vertices.pop();
    }
    vertices
}

/// The longest dwell a fence may ask for: a day.
pub const MAX_DWELL_S: u64 = 86_400;

fn latitude_ok(lat: f64) -> bool {
    lat.is_finite() && lat.abs() <= 90.0
}

fn longitude_ok(lon: f64) -> bool {
    lon.is_finite() && lon.abs() <= 180.0
}

impl GeofenceConfig {
    /// Every fence valid and within the limits, or what is wrong with the
    /// first one that is not, by name.
    pub fn check(&self) -> Result<(), String> {
        if self.fences.len() > self.max_fences.get() {
            return Err(format!(
                "{} geofences configured, at most geofence.max_fences = {}",
                self.fences.len(),
                self.max_fences
            ));
        }
        if !(self.exit_buffer_m.is_finite() && self.exit_buffer_m >= 0.0) {
            return Err("geofence.exit_buffer_m must be 0 or more".into());
        }
        if self.dwell_s > MAX_DWELL_S {
            return Err(format!(
                "geofence.dwell_s must be at most {MAX_DWELL_S} (a day)"
            ));
        }
        for fence in &self.fences {
            self.check_fence(fence)
                .map_err(|why| format!("geofence {:?}: {why}", fence.name))?;
        }
        Ok(())
    }

    /// One fence valid within these limits, or what is wrong with it.
    pub fn check_fence(&self, fence: &FenceConfig) -> Result<(), String> {
        if let Some(b) = fence.exit_buffer_m {
            if !(b.is_finite() && b >= 0.0) {
                return Err(format!("exit_buffer_m {b} must be 0 or more"));
            }
        }
        if let Some(limit) = fence.speed_limit_kmh {
            if !(limit.is_finite() && limit > 0.0) {
                return Err(format!("speed_limit_kmh {limit} must be above 0"));
            }
        }
        if fence.dwell_s.is_some_and(|d| d > MAX_DWELL_S) {
            return Err(format!("dwell_s must be at most {MAX_DWELL_S} (a day)"));
        }
        match (&fence.circle, &fence.polygon) {
            (Some(c), None) => {
                if !latitude_ok(c.lat) || !longitude_ok(c.lon) {
                    return Err(format!(
                        "centre ({}, {}) is not a latitude, longitude",
                        c.lat, c.lon
                    ));
                }
                if !(c.radius_m.is_finite() && c.radius_m > 0.0) {
                    return Err(format!("radius_m {} must be above 0", c.radius_m));
                }
                Ok(())
            }
            (None, Some(ring)) => {
                let vertices = polygon_vertices(ring);
                if vertices.len() < 3 {
                    return Err("a polygon needs at least 3 distinct vertices".into());
                }
                if vertices.len() > self.max_vertices.get() {
                    return Err(format!(
                        "{} vertices, at most geofence.max_vertices = {}",
                        vertices.len(),
                        self.max_vertices
                    ));
                }
                match vertices
                    .iter()
                    .find(|&&(lat, lon)| !latitude_ok(lat) || !longitude_ok(lon))
                {
                    Some((lat, lon)) => Err(format!(
                        "vertex [{lon}, {lat}] is not [longitude, latitude] (GeoJSON order)"
                    )),
                    None => Ok(()),
                }
            }
            _ => Err("needs exactly one of circle or polygon".into()),
        }
    }
}
