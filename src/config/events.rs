//! `[events]`: the events the gateway derives from positions (overspeed,
//! motion, ignition) and the ring of recent events `GET /events` answers
//! from.
//!
//! ```toml
//! [events]
//! ring = 256                    # recent events kept for GET /events
//!
//! [events.overspeed]
//! default_limit_kmh = 90        # none by default: only listed vehicles and fences
//! multiplier = 1.0              # above limit × multiplier counts as speeding
//! minimal_duration_s = 10       # … for this long before the one event
//! hysteresis_kmh = 5            # the episode ends below limit − 5
//! vehicles = { "van-7" = 50 }   # a vehicle's own limit
//!
//! [events.motion]
//! distance_m = 200              # moving once 200 m from where it stopped
//! stop_after_s = 180            # stopped once every fix for 180 s lies within 200 m
//! start_speed_kmh = 5           # the first fix after a start: moving at or above this
//! ```
//!
//! [`EventsConfig::check`] refuses a bad value at start, naming the key
//! (and the vehicle, for a per-vehicle limit). Bound: the ring holds
//! `events.ring` events (`crate::fleet::events`); the per-vehicle limits
//! are what the file lists.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use serde::Deserialize;

use crate::topics::VehicleId;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Recent events kept in memory for `GET /events`; when full, the
    /// oldest one goes (`drop_oldest`, counted in
    /// `fleetgate_events_ring_evicted_total`).
    pub ring: NonZeroUsize,
    pub overspeed: OverspeedConfig,
    pub motion: MotionConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            ring: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            overspeed: OverspeedConfig::default(),
            motion: MotionConfig::default(),
        }
    }
}

/// Where a vehicle's speed limit comes from. The lowest of the vehicle's
/// own (`vehicles`, else `default_limit_kmh`) and those of the fences it is
/// in (`speed_limit_kmh` of a geofence) wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverspeedConfig {
    /// For every vehicle not listed in `vehicles`; none by default.
    pub default_limit_kmh: Option<f64>,
    /// Speeding is above limit × multiplier (1.0: the limit itself).
    pub multiplier: f64,
    /// Speeding must last this long (by fix time) before the episode's
    /// one `overspeed` event; 0 reports the first fix above.
    pub minimal_duration_s: u64,
    /// The episode ends once speed is below limit − this.
    pub hysteresis_kmh: f64,
    /// A vehicle's own limit, by vehicle id.
    pub vehicles: BTreeMap<String, f64>,
}

impl Default for OverspeedConfig {
    fn default() -> Self {
        OverspeedConfig {
            default_limit_kmh: None,
            multiplier: 1.0,
            minimal_duration_s: 10,
            hysteresis_kmh: 5.0,
            vehicles: BTreeMap::new(),
        }
    }
}

/// When a vehicle counts as moving or stopped, judged on its fixes (as
/// Traccar does).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotionConfig {
    /// A stopped vehicle starts moving once a fix is this far from where
    /// it stopped; a moving one stops once every fix for `stop_after_s`
    /// stays this close to the first of them.
    pub distance_m: f64,
    pub stop_after_s: u64,
    /// The first fix after a start sets the state silently: moving at or
    /// above this speed, stopped below.
    pub start_speed_kmh: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            distance_m: 200.0,
            stop_after_s: 180,
            start_speed_kmh: 5.0,
        }
    }
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl EventsConfig {
    /// Every value usable, or which key is not.
    pub fn check(&self) -> Result<(), String> {
        let o = &self.overspeed;
        if let Some(limit) = o.default_limit_kmh {
            if !positive(limit) {
                return Err(format!(
                    "events.overspeed.default_limit_kmh = {limit} must be above 0"
                ));
            }
        }
        if !(o.multiplier.is_finite() && o.multiplier >= 1.0) {
            return Err(format!(
                "events.overspeed.multiplier = {} must be 1 or more",
                o.multiplier
            ));
        }
        if !(o.hysteresis_kmh.is_finite() && o.hysteresis_kmh >= 0.0) {
            return Err(format!(
                "events.overspeed.hysteresis_kmh = {} must be 0 or more",
                o.hysteresis_kmh
            ));
        }
        for (vehicle, &limit) in &o.vehicles {
            if VehicleId::parse(vehicle).is_none() {
                return Err(format!(
                    "events.overspeed.vehicles: {vehicle:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"
                ));
            }
            if !positive(limit) {
                return Err(format!(
                    "events.overspeed.vehicles.{vehicle} = {limit} must be above 0"
                ));
            }
        }
        let m = &self.motion;
        if !positive(m.distance_m) {
            return Err(format!(
                "events.motion.distance_m = {} must be above 0",
                m.distance_m
            ));
        }
        if m.stop_after_s == 0 {
            return Err("events.motion.stop_after_s must be above 0".into());
        }
        if !(m.start_speed_kmh.is_finite() && m.start_speed_kmh >= 0.0) {
            return Err(format!(
                "events.motion.start_speed_kmh = {} must be 0 or more",
                m.start_speed_kmh
            ));
        }
        Ok(())
    }
}

impl super::Config {
    /// The fleet services' sections (`[geofence]`, `[dispatch]`,
    /// `[events]`), checked together: the first bad value, by key.
    pub(super) fn check_fleet_services(&self) -> Result<(), String> {
        self.geofence.check()?;
        self.dispatch.check()?;
        self.events.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_by_key() {
        assert!(EventsConfig::default().check().is_ok());
        let mut c = EventsConfig::default();
        c.overspeed.vehicles.insert("van/7".into(), 50.0);
        assert!(c.check().unwrap_err().contains("\"van/7\""));
        let mut c = EventsConfig::default();
        c.overspeed.vehicles.insert("van-7".into(), -1.0);
        assert!(c.check().unwrap_err().contains("vehicles.van-7"));
        let mut c = EventsConfig::default();
        c.overspeed.multiplier = 0.5;
        assert!(c.check().unwrap_err().contains("multiplier"));
        let mut c = EventsConfig::default();
        c.motion.stop_after_s = 0;
        assert!(c.check().unwrap_err().contains("stop_after_s"));
    }
}
