//! Wall-clock time, as the gateway stamps it on what it receives.
//!
//! In: nothing. Out: milliseconds since the Unix epoch. Bound: none needed;
//! no state. Shared vocabulary: every stage stamps with this one function,
//! so no stage imports another for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before it, and
/// `u64::MAX` in the year 584 million.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
