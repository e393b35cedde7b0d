//! A log-line rate limiter, so a flood of bad input cannot flood the logs.
//!
//! In: one call per event that would log. Out: whether to log it now, and
//! how many were suppressed since the last one logged. Bound: a few words
//! per limiter; the window is one wall-clock second.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::now_ms;

/// At most `per_s` events a second; reports how many it suppressed since
/// the last one it allowed.
pub struct RateLimit {
    per_s: u32,
    window_s: u64,
    used: u32,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub fn new(per_s: u32) -> Self {
        RateLimit {
            per_s,
            window_s: 0,
            used: 0,
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last allowed)` when this event may log.
    pub fn allow(&mut self) -> Option<u64> {
        let now_s = now_ms() / 1000;
        if now_s != self.window_s {
            self.window_s = now_s;
            self.used = 0;
        }
        if self.used < self.per_s {
            self.used += 1;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
