//! What the uplink does with records RabbitMQ returns as unroutable: no
//! queue is bound to their routing key, so under `mandatory` the broker
//! hands them back instead of storing them.
//!
//! In: each record the uplink reads from the spool, before it is sent
//! ([`Unroutable::on_read`]), keyed by exchange and routing key; each
//! outcome — a return ([`Unroutable::on_return`]), a confirm, a nack — and
//! each rewind of the spool ([`Unroutable::rewound`]). Out: for a record
//! read, send it, send it as its key's probe, hold it (leave it unsent in
//! the spool) or drop it; for a return, retry or drop (the uplink then
//! confirms it in the spool so it frees its space; counted in
//! `bridge_unroutable_dropped_total`); at most one log line per routing
//! key per [`LOG_PERIOD`], saying how many returns it stands for.
//!
//! **Probe before re-sending.** Once a record of a key comes back, the key
//! is *held*: its records stay in the spool unsent, and each retry pass
//! (every `bridge.retry_failed_ms`) sends one of them — the oldest still
//! kept — as a probe. Only when RabbitMQ routes and confirms the probe (a
//! queue is bound now) is the key released: the uplink rewinds and sends
//! the rest of that key's records in spool order, behind the probe. So an
//! unbound key costs one publish per retry period, not its whole backlog
//! (`bridge_unroutable_probes_total`, `bridge_unroutable_held_records`).
//! Records of a key that were already in flight when its first return
//! came may still be routed after that, out of order: the hold starts at
//! the first return. A nack is not a return: nacked records are retried
//! at the next pass as before, and a nacked probe is probed again then.
//!
//! Bound: [`MAX_HELD_KEYS`] held keys of 24 bytes each (a keyed 64-bit
//! hash of exchange and routing key, and its probe's state; 384 KiB at
//! most, allocated as keys come back: room for the position and status
//! keys of 8 000 vehicles). When the table is full, a key returned past
//! it is not held: its records are all re-sent at each retry, as before
//! probing (policy `resend_all`, counted in
//! `bridge_unroutable_untracked_total` and logged rate-limited). A held
//! key leaves the table at the rewind after a record of it was routed, or
//! when a whole pass over the spool finds none of its records left.
//! [`MAX_LOGGED_KEYS`] routing keys are remembered for the log; past it
//! the one logged longest ago is forgotten.
//!
//! Policy (`bridge.unroutable`): `retry_then_drop` (the default) keeps a
//! returned record, held or probed, until it is `bridge.unroutable_keep_s`
//! old, counted from when it was spooled, then drops it — a held record at
//! the pass that finds it expired, without sending it: a key nobody
//! consumes must not hold spool space forever, and a consumer that binds
//! within that time still gets everything. `retry` keeps them until a
//! queue is bound or the spool's full policy drops them (the older
//! behaviour, with the probe).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::log_limit::RateLimit;

/// Routing keys whose returns are remembered for the log.
pub const MAX_LOGGED_KEYS: usize = 64;
/// At most one log line per routing key this often.
pub const LOG_PERIOD: Duration = Duration::from_secs(60);
/// Routing keys held behind a probe at once; a key returned past it is
/// re-sent whole at each retry (`resend_all`).
pub const MAX_HELD_KEYS: usize = 16_384;
/// The held-key table at its bound, for the memory budget.
pub const MAX_HELD_TABLE_BYTES: usize = MAX_HELD_KEYS * std::mem::size_of::<(KeyId, Probe)>();

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

/// What the uplink does with one record it read from the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Its key is not held: publish it.
    Send,
    /// Its key is held and due a probe: publish it, the key's oldest kept.
    Probe,
    /// Its key is held: leave it unsent in the spool (read again at the
    /// next pass).
    Hold,
    /// Its key is held and it is older than `bridge.unroutable_keep_s`:
    /// confirm it in the spool unsent, and count it dropped.
    Drop,
}

/// A routing key as the held table knows it: a hash of exchange and key
/// under a per-process random seed, so no publisher can make two keys
/// collide on purpose (by chance: 2⁻⁵⁰ per record read, table full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyId(u64);

/// Where a held key's probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The next record of the key read is sent as its probe.
    Due,
    /// This record is the probe, awaiting its outcome.
    InFlight(u64),
    /// Something of the key came back: wait for the next timed retry.
    Returned,
    /// A record of the key was routed: send the rest at the next rewind,
    /// holding them until then so they follow in spool order.
    Released,
}

/// The policy, the held keys and the per-key log limiter.
pub struct Unroutable {
    policy: UnroutablePolicy,
    keep_ms: u64,
    seed: RandomState,
    /// Sorted by key; at most [`MAX_HELD_KEYS`].
    held: Vec<(KeyId, Probe)>,
    release_pending: bool,
    held_this_pass: u64,
    held_last_pass: u64,
    untracked_log: RateLimit,
    /// (routing key, when last logged, returns not logged since).
    logged: Vec<(String, Instant, u64)>,
}

impl Unroutable {
    pub fn new(policy: UnroutablePolicy, keep_s: u64) -> Unroutable {
        Unroutable {
            policy,
            keep_ms: keep_s.saturating_mul(1000),
            seed: RandomState::new(),
            held: Vec::new(),
            release_pending: false,
            held_this_pass: 0,
            held_last_pass: 0,
            untracked_log: RateLimit::new(1),
            logged: Vec::with_capacity(MAX_LOGGED_KEYS),
        }
    }

    /// The key a record is held by: its exchange and routing key.
    pub fn key(&self, exchange: &str, routing_key: &str) -> KeyId {
        KeyId(self.seed.hash_one((exchange, routing_key)))
    }

    /// Routing keys held behind a probe now.
    pub fn held_keys(&self) -> usize {
        self.held.len()
    }

    /// Records held back unsent since the last rewind, as of the last time
    /// the reads reached the spool's end (or now, when more).
    pub fn held_records(&self) -> u64 {
        self.held_last_pass.max(self.held_this_pass)
    }

    /// The reads reached the spool's end: what this pass held is the count.
    pub fn reached_end(&mut self) {
        self.held_last_pass = self.held_this_pass;
    }

    /// A held key's probe was routed: rewind (once nothing is in flight)
    /// so its other records go, in spool order.
    pub fn release_pending(&self) -> bool {
        self.release_pending
    }

    fn find(&self, key: KeyId) -> Result<usize, usize> {
        self.held.binary_search_by_key(&key, |&(k, _)| k)
    }

    fn expired(&self, appended_ms: u64, now_ms: u64) -> bool {
        self.policy == UnroutablePolicy::RetryThenDrop
            && now_ms.saturating_sub(appended_ms) >= self.keep_ms
    }

    /// Decides about one record read from the spool, before it is sent.
    pub fn on_read(&mut self, key: KeyId, record: u64, appended_ms: u64, now_ms: u64) -> Read {
        let Ok(i) = self.find(key) else {
            return Read::Send;
        };
        let read = match self.held[i].1 {
            // Routable again: it goes at the rewind, behind the probe.
            Probe::Released => Read::Hold,
            _ if self.expired(appended_ms, now_ms) => Read::Drop,
            Probe::Due => {
                self.held[i].1 = Probe::InFlight(record);
                Read::Probe
            }
            Probe::InFlight(_) | Probe::Returned => Read::Hold,
        };
        if read == Read::Hold {
            self.held_this_pass += 1;
        }
        read
    }

    /// A record of `key` was routed and confirmed: a queue is bound, so a
    /// held key is released.
    pub fn on_delivered(&mut self, key: KeyId) {
        if let Ok(i) = self.find(key) {
            self.held[i].1 = Probe::Released;
            self.release_pending = true;
        }
    }

    /// A record was nacked: a nacked probe is sent again at the next pass.
    pub fn on_nack(&mut self, key: KeyId, record: u64) {
        if let Ok(i) = self.find(key) {
            if self.held[i].1 == Probe::InFlight(record) {
                self.held[i].1 = Probe::Returned;
            }
        }
    }

    /// Decides about one return, holds its key (when the table has room)
    /// and logs it, rate-limited per key. Returns the verdict, and whether
    /// the key is held (`false`: the table is full, `resend_all`).
    pub fn on_return(
        &mut self,
        key: KeyId,
        record: u64,
        appended_ms: u64,
        routing_key: &str,
        now_ms: u64,
        now: Instant,
    ) -> (Verdict, bool) {
        let verdict = if self.expired(appended_ms, now_ms) {
            Verdict::Drop
        } else {
            Verdict::Retry
        };
        let held = match self.find(key) {
            Ok(i) => {
                self.held[i].1 = Probe::Returned;
                true
            }
            Err(at) if self.held.len() < MAX_HELD_KEYS => {
                self.held.insert(at, (key, Probe::Returned));
                true
            }
            Err(_) => false,
        };
        if !held {
            if let Some(suppressed) = self.untracked_log.allow() {
                tracing::warn!(
                    routing_key,
                    suppressed,
                    max_held_keys = MAX_HELD_KEYS,
                    "too many unroutable routing keys to probe: this key's records are all re-sent at each retry (bridge_unroutable_untracked_total)"
                );
            }
        }
        if let Some(suppressed) = self.log_allowed(routing_key, now) {
            let age_s = now_ms.saturating_sub(appended_ms) / 1000;
            match verdict {
                Verdict::Retry => tracing::warn!(
                    record,
                    routing_key,
                    suppressed,
                    "RabbitMQ returned a message as unroutable (no queue bound to its key); its key's records stay spooled, one sent as a probe every bridge.retry_failed_ms"
                ),
                Verdict::Drop => tracing::warn!(
                    record,
                    routing_key,
                    suppressed,
                    age_s,
                    "unroutable for longer than bridge.unroutable_keep_s: dropped (bridge_unroutable_dropped_total)"
                ),
            }
        }
        (verdict, held)
    }

    /// The spool was rewound: the next reads start again at its oldest
    /// unconfirmed record. `retry_due`: a timed retry (or a new session),
    /// so every held key is due a probe. `pass_complete`: every record up
    /// to the read cursor was read since the last rewind, so a key due a
    /// probe that saw none has nothing left to hold.
    pub fn rewound(&mut self, retry_due: bool, pass_complete: bool) {
        self.held.retain_mut(|(_, probe)| match probe {
            Probe::Released => false,
            Probe::Due => !pass_complete,
            Probe::Returned | Probe::InFlight(_) => {
                // In flight only when a session ended: its probe is lost.
                if retry_due || matches!(probe, Probe::InFlight(_)) {
                    *probe = Probe::Due;
                }
                true
            }
        });
        self.release_pending = false;
        self.held_this_pass = 0;
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

    fn returned(u: &mut Unroutable, key: KeyId, record: u64) -> (Verdict, bool) {
        u.on_return(key, record, 0, "k", 1, Instant::now())
    }

    /// A table whose key `a` came back and is due its probe (a timed
    /// retry rewound the spool).
    fn due_a_probe(policy: UnroutablePolicy, keep_s: u64) -> (Unroutable, KeyId) {
        let mut u = Unroutable::new(policy, keep_s);
        let k = u.key("x", "a");
        let _ = returned(&mut u, k, 1);
        u.rewound(true, true);
        (u, k)
    }

    #[test]
    fn a_young_return_is_retried_an_old_one_dropped() {
        let mut u = Unroutable::new(UnroutablePolicy::RetryThenDrop, 600);
        let now = Instant::now();
        let spooled = 1_000_000;
        let k = u.key("x", "k");
        assert_eq!(
            u.on_return(k, 1, spooled, "k", spooled + 599_999, now).0,
            Verdict::Retry
        );
        assert_eq!(
            u.on_return(k, 1, spooled, "k", spooled + 600_000, now).0,
            Verdict::Drop
        );
        let mut keep = Unroutable::new(UnroutablePolicy::Retry, 600);
        let k = keep.key("x", "k");
        assert_eq!(
            keep.on_return(k, 1, 0, "k", u64::MAX, now).0,
            Verdict::Retry
        );
    }

    #[test]
    fn a_held_key_sends_one_probe_per_retry_and_holds_the_rest() {
        let mut u = Unroutable::new(UnroutablePolicy::RetryThenDrop, 600);
        let (k, other) = (u.key("x", "a"), u.key("x", "b"));
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Send);
        assert_eq!(returned(&mut u, k, 1), (Verdict::Retry, true));
        // Until the timed retry, nothing of the key goes; other keys do.
        for id in 2..=5 {
            assert_eq!(u.on_read(k, id, 0, 1), Read::Hold);
        }
        assert_eq!(u.on_read(other, 6, 0, 1), Read::Send);
        for _pass in 0..3 {
            u.rewound(true, true);
            assert_eq!(u.on_read(k, 1, 0, 1), Read::Probe);
            for id in 2..=5 {
                assert_eq!(u.on_read(k, id, 0, 1), Read::Hold);
            }
            assert_eq!(returned(&mut u, k, 1), (Verdict::Retry, true));
        }
        u.reached_end();
        assert_eq!(u.held_records(), 4);
        assert_eq!(u.held_keys(), 1);
        // A rewind that is not a timed retry (a release) sends no probe.
        u.rewound(false, true);
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Hold);
    }

    #[test]
    fn a_routed_probe_releases_the_rest_at_the_next_rewind() {
        let (mut u, k) = due_a_probe(UnroutablePolicy::RetryThenDrop, 600);
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Probe);
        assert!(!u.release_pending());
        u.on_delivered(k);
        assert!(u.release_pending());
        // Appended before the rewind: still held, so it cannot overtake
        // the older records the rewind will send.
        assert_eq!(u.on_read(k, 9, 0, 1), Read::Hold);
        u.rewound(false, true);
        assert!(!u.release_pending());
        assert_eq!(u.held_keys(), 0);
        for id in 2..=9 {
            assert_eq!(u.on_read(k, id, 0, 1), Read::Send);
        }
    }

    #[test]
    fn held_records_past_the_keep_time_are_dropped_unsent() {
        let (mut u, k) = due_a_probe(UnroutablePolicy::RetryThenDrop, 1);
        // Records 1 and 2 are expired, 3 is not: it is the probe.
        assert_eq!(u.on_read(k, 1, 0, 1_000), Read::Drop);
        assert_eq!(u.on_read(k, 2, 0, 1_000), Read::Drop);
        assert_eq!(u.on_read(k, 3, 500, 1_000), Read::Probe);
        assert_eq!(u.on_read(k, 4, 0, 1_000), Read::Drop);
        assert_eq!(u.on_read(k, 5, 600, 1_000), Read::Hold);
        // Under `retry` nothing expires.
        let (mut keep, k) = due_a_probe(UnroutablePolicy::Retry, 1);
        assert_eq!(keep.on_read(k, 1, 0, u64::MAX), Read::Probe);
        assert_eq!(keep.on_read(k, 2, 0, u64::MAX), Read::Hold);
    }

    #[test]
    fn a_key_with_nothing_left_leaves_the_table() {
        let (mut u, k) = due_a_probe(UnroutablePolicy::RetryThenDrop, 600);
        // A pass that reads nothing of the key (its records dropped or
        // confirmed): the next rewind forgets it.
        u.rewound(true, true);
        assert_eq!(u.held_keys(), 0);
        assert_eq!(u.on_read(k, 2, 0, 1), Read::Send);
        // An unfinished pass (a session ended) proves nothing.
        let _ = returned(&mut u, k, 1);
        u.rewound(true, true);
        u.rewound(true, false);
        assert_eq!(u.held_keys(), 1);
    }

    #[test]
    fn a_nacked_or_lost_probe_is_probed_again_at_the_next_retry() {
        let (mut u, k) = due_a_probe(UnroutablePolicy::RetryThenDrop, 600);
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Probe);
        u.on_nack(k, 1);
        assert_eq!(u.on_read(k, 2, 0, 1), Read::Hold);
        u.rewound(true, true);
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Probe);
        // The session ended with the probe in flight.
        u.rewound(true, false);
        assert_eq!(u.on_read(k, 1, 0, 1), Read::Probe);
    }

    #[test]
    fn past_the_held_key_cap_a_key_is_resent_whole() {
        let mut u = Unroutable::new(UnroutablePolicy::Retry, 600);
        for i in 0..MAX_HELD_KEYS {
            let k = u.key("x", &format!("k{i}"));
            assert_eq!(returned(&mut u, k, i as u64), (Verdict::Retry, true));
        }
        assert_eq!(u.held_keys(), MAX_HELD_KEYS);
        let late = u.key("x", "late");
        assert_eq!(returned(&mut u, late, 1), (Verdict::Retry, false));
        assert_eq!(u.on_read(late, 1, 0, 1), Read::Send);
        assert!(u.held.capacity() <= MAX_HELD_KEYS);
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
