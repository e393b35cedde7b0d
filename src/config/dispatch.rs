//! `[dispatch]`: dispatch requests (`POST /v2/search`), searched, widened,
//! leased and expired as the nearest-driver service's users expect.

use std::num::NonZeroUsize;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// A request still without a vehicle searches again this often (and
    /// at once when a reserved vehicle becomes free).
    pub interval_s: u64,
    /// The first search's radius; each later one doubles it, up to
    /// `max_radius_m`.
    pub first_radius_m: f64,
    pub max_radius_m: f64,
    /// A request without a vehicle this long after it was made expires.
    pub ttl_s: u64,
    /// A found vehicle is reserved for this long unless released or
    /// cancelled first.
    pub lease_s: u64,
    /// Requests searching or holding a vehicle at once; one more is 429.
    /// As many ended ones are kept for `GET /v2/requests/{id}`.
    pub max_open_requests: NonZeroUsize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            interval_s: 30,
            first_radius_m: 1_000.0,
            max_radius_m: 5_000.0,
            ttl_s: 240,
            lease_s: 300,
            max_open_requests: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl DispatchConfig {
    pub fn check(&self) -> Result<(), String> {
        let radius_ok = |r: f64| r.is_finite() && r > 0.0;
        if !radius_ok(self.first_radius_m)
            || !radius_ok(self.max_radius_m)
            || self.first_radius_m > self.max_radius_m
        {
            return Err(
                "dispatch.first_radius_m and max_radius_m must be above 0, first ≤ max".into(),
            );
        }
        if self.interval_s == 0 || self.ttl_s == 0 || self.lease_s == 0 {
            return Err("dispatch.interval_s, ttl_s and lease_s must be above 0".into());
        }
        Ok(())
    }
}
