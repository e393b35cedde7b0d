//! What the uplink does with a record RabbitMQ returns as unroutable: no
//! queue is bound to its routing key, so under `mandatory` the broker hands
//! it back instead of storing it.
//!
//! In: each return, with its record's append time and routing key. Out: a
//! verdict — retry it later, or drop it (the uplink then confirms it in the
//! spool so it frees its space; counted in
//! `bridge_unroutable_dropped_total`) — and at most one log line per
//! routing key per [`LOG_PERIOD`], saying how many returns it stands for.
//! Bound: [`MAX_LOGGED_KEYS`] routing keys remembered for the log; past it
//! the one logged longest ago is forgotten.
//!
//! Policy (`bridge.unroutable`): `retry_then_drop` (the default) retries a
//! returned record every `bridge.retry_failed_ms` until it is
//! `bridge.unroutable_keep_s` old, counted from when it was spooled, then
//! drops it: a key nobody consumes must not hold spool space forever, and a
//! consumer that binds within that time still gets everything. `retry`
//! keeps retrying until a queue is bound or the spool's full policy drops
//! it (the older behaviour). A nack is not a return: nacked records are
//! always retried.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Routing keys whose returns are remembered for the log.
pub const MAX_LOGGED_KEYS: usize = 64;
/// At most one log line per routing key this often.
pub const LOG_PERIOD: Duration = Duration::from_secs(60);

/// `bridge.unroutable`: what happens to a record no queue takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnroutablePolicy {
    /// Retried until `bridge.unroutable_keep_s` after it was spooled, then
    /// dropped and counted: the consumers of that key lose it.
    #[default]
    RetryThenDrop,
    /// Retried until a queue is bound; it holds its spool space until then
    /// (the spool's full policy may drop it, oldest positions first).
    Retry,
}

/// The uplink's verdict on one returned record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Drop,
}

/// The policy, and the per-key log limiter.
pub struct Unroutable {
    policy: UnroutablePolicy,
    keep_ms: u64,
    /// (routing key, when last logged, returns not logged since).
    logged: Vec<(String, Instant, u64)>,
}

impl Unroutable {
    pub fn new(policy: UnroutablePolicy, keep_s: u64) -> Unroutable {
        Unroutable {
            policy,
            keep_ms: keep_s.saturating_mul(1000),
            logged: Vec::with_capacity(MAX_LOGGED_KEYS),
        }
    }

    /// Decides about one return and logs it, rate-limited per key.
    pub fn on_return(
        &mut self,
        record: u64,
        appended_ms: u64,
        routing_key: &str,
        now_ms: u64,
        now: Instant,
    ) -> Verdict {
        let age_ms = now_ms.saturating_sub(appended_ms);
        let verdict = match self.policy {
            UnroutablePolicy::RetryThenDrop if age_ms >= self.keep_ms => Verdict::Drop,
            _ => Verdict::Retry,
        };
        if let Some(suppressed) = self.log_allowed(routing_key, now) {
            match verdict {
                Verdict::Retry => tracing::warn!(
                    record,
                    routing_key,
                    suppressed,
                    "RabbitMQ returned a message as unroutable (no queue bound to its key); it stays spooled and will be retried"
                ),
                Verdict::Drop => tracing::warn!(
                    record,
                    routing_key,
                    suppressed,
                    age_s = age_ms / 1000,
                    "unroutable for longer than bridge.unroutable_keep_s: dropped (bridge_unroutable_dropped_total)"
                ),
            }
        }
        verdict
    }

    /// `Some(returns not logged since the last line)` when this key may log.
    fn log_allowed(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some(entry) = self.logged.iter_mut().find(|(k, _, _)| k == key) {
            if now.duration_since(entry.1) < LOG_PERIOD {
                entry.2 += 1;
                return None;
            }
            entry.1 = now;
            return Some(std::mem::take(&mut entry.2));
        }
        if self.logged.len() >= MAX_LOGGED_KEYS {
            if let Some(oldest) = (0..self.logged.len()).min_by_key(|&i| self.logged[i].1) {
                self.logged.swap_remove(oldest);
            }
        }
        self.logged.push((key.to_owned(), now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_return_is_retried_an_old_one_dropped() {
        let mut u = Unroutable::new(UnroutablePolicy::RetryThenDrop, 600);
        let now = Instant::now();
        let spooled = 1_000_000;
        assert_eq!(
            u.on_return(1, spooled, "k", spooled + 599_999, now),
            Verdict::Retry
        );
        assert_eq!(
            u.on_return(1, spooled, "k", spooled + 600_000, now),
            Verdict::Drop
        );
        let mut keep = Unroutable::new(UnroutablePolicy::Retry, 600);
        assert_eq!(keep.on_return(1, 0, "k", u64::MAX, now), Verdict::Retry);
    }

    #[test]
    fn one_log_line_per_key_per_period() {
        let mut u = Unroutable::new(UnroutablePolicy::Retry, 600);
        let t0 = Instant::now();
        assert_eq!(u.log_allowed("a", t0), Some(0));
        assert_eq!(u.log_allowed("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(u.log_allowed("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(u.log_allowed("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(u.log_allowed("a", t0 + LOG_PERIOD), Some(2));
    }

    #[test]
    fn the_key_table_is_bounded() {
        let mut u = Unroutable::new(UnroutablePolicy::Retry, 600);
        let t0 = Instant::now();
        for i in 0..(MAX_LOGGED_KEYS * 3) {
            let _ = u.log_allowed(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(u.logged.len(), MAX_LOGGED_KEYS);
    }
}
