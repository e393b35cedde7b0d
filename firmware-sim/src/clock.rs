//! The wall clock, as the device side and the tools read it: shared
//! vocabulary, so neither the CLI nor the fleet runner imports the other for
//! the time.
//!
//! In: the system clock. Out: milliseconds or nanoseconds since the Unix
//! epoch (0 before 1970, saturating far in the future). Bound: no state.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock (0 if it is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nanoseconds since the Unix epoch by the system clock (0 if it is before 1970).
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
