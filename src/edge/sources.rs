//! Connection rate per source address, and bans for sources that flap.
//!
//! In: the peer address of every accepted connection. Out: admit, or
//! refuse because the address is banned. Bound: at most
//! `mqtt.max_tracked_sources` addresses, each a few dozen bytes; when the
//! table is full and nothing in it has expired, a new address is admitted
//! untracked (policy `admit_untracked`, counted in
//! `fleetgate_sources_untracked_total`), so a flood from many addresses
//! cannot lock out the ones not yet seen. Loopback is exempt unless
//! `mqtt.limit_loopback_sources`: tools on the box itself (and the tests'
//! churn runs) connect thousands of times a second on purpose.
//!
//! The rule, as EMQX's flapping detection: more than
//! `mqtt.max_connects_per_source_per_minute` connections from one address
//! within a minute bans it for `mqtt.source_ban_s`; the connection that
//! crossed the line and every one during the ban is closed at accept and
//! counted (`connections_refused_total{reason="source_banned"}`). Other
//! addresses are not affected.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::config::MqttConfig;

const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Source {
    window_start_ms: u64,
    connects: u32,
    banned_until_ms: u64,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Admitted without being tracked: the table is full.
    Untracked,
    /// This connection crossed the limit: the source is banned from now.
    BannedNow,
    /// The source is banned.
    Banned,
}

pub struct SourceTable {
    max_per_minute: u32,
    ban_ms: u64,
    capacity: usize,
    limit_loopback: bool,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl SourceTable {
    pub fn new(mqtt: &MqttConfig) -> SourceTable {
        SourceTable {
            max_per_minute: mqtt.max_connects_per_source_per_minute,
            ban_ms: mqtt.source_ban_s.saturating_mul(1000),
            capacity: mqtt.max_tracked_sources.get(),
            limit_loopback: mqtt.limit_loopback_sources,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Decides on a connection from `ip` at `now_ms` (any monotonic clock).
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Admission {
        if self.max_per_minute == 0 || (ip.is_loopback() && !self.limit_loopback) {
            return Admission::Admit;
        }
        let mut sources = self.sources.lock();
        if !sources.contains_key(&ip) && sources.len() >= self.capacity {
            // Forget what can no longer matter: windows over and bans served.
            sources.retain(|_, s| {
                now_ms < s.banned_until_ms || now_ms.saturating_sub(s.window_start_ms) < WINDOW_MS
            });
            if sources.len() >= self.capacity {
                return Admission::Untracked;
            }
        }
        let source = sources.entry(ip).or_insert(Source {
            window_start_ms: now_ms,
            connects: 0,
            banned_until_ms: 0,
        });
        if now_ms < source.banned_until_ms {
            return Admission::Banned;
        }
        if now_ms.saturating_sub(source.window_start_ms) >= WINDOW_MS {
            source.window_start_ms = now_ms;
            source.connects = 0;
        }
        source.connects = source.connects.saturating_add(1);
        if source.connects > self.max_per_minute {
            source.banned_until_ms = now_ms.saturating_add(self.ban_ms);
            source.connects = 0;
            return Admission::BannedNow;
        }
        Admission::Admit
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.sources.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    fn table(max: u32, capacity: usize) -> SourceTable {
        let mqtt = MqttConfig {
            max_connects_per_source_per_minute: max,
            source_ban_s: 300,
            max_tracked_sources: NonZeroUsize::new(capacity).unwrap(),
            limit_loopback_sources: false,
            ..MqttConfig::default()
        };
        SourceTable::new(&mqtt)
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_flapping_source_is_banned_and_only_it() {
        let t = table(3, 16);
        for ms in [0, 10, 20] {
            assert_eq!(t.admit(ip(1), ms), Admission::Admit);
        }
        assert_eq!(t.admit(ip(1), 30), Admission::BannedNow);
        assert_eq!(t.admit(ip(1), 40), Admission::Banned);
        assert_eq!(
            t.admit(ip(2), 40),
            Admission::Admit,
            "another source is not affected"
        );
        assert_eq!(t.admit(ip(1), 30 + 299_999), Admission::Banned);
        assert_eq!(
            t.admit(ip(1), 30 + 300_000),
            Admission::Admit,
            "the ban ends"
        );
    }

    #[test]
    fn the_window_resets_each_minute() {
        let t = table(2, 16);
        assert_eq!(t.admit(ip(1), 0), Admission::Admit);
        assert_eq!(t.admit(ip(1), 1), Admission::Admit);
        assert_eq!(t.admit(ip(1), 60_001), Admission::Admit);
        assert_eq!(t.admit(ip(1), 60_002), Admission::Admit);
    }

    #[test]
    fn a_full_table_admits_new_sources_untracked_and_forgets_stale_ones() {
        let t = table(1, 2);
        assert_eq!(t.admit(ip(1), 0), Admission::Admit);
        assert_eq!(t.admit(ip(2), 0), Admission::Admit);
        assert_eq!(t.admit(ip(3), 10), Admission::Untracked);
        assert_eq!(t.len(), 2);
        // A minute on, both windows are over: room again.
        assert_eq!(t.admit(ip(3), 60_000), Admission::Admit);
        assert!(t.len() <= 2);
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let t = table(1, 4);
        let lo = IpAddr::from([127, 0, 0, 1]);
        for ms in 0..10 {
            assert_eq!(t.admit(lo, ms), Admission::Admit);
        }
        assert!(t.is_empty());
    }
}
