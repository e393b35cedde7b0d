//! The fleet's live totals, added up from every device and read into a
//! [`Summary`] at the end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::device::Counters;

use super::Summary;

/// Live totals, shared by all vehicle tasks (relaxed atomics: these are
/// statistics, not synchronisation).
#[derive(Debug, Default)]
pub(super) struct FleetCounters {
    pub(super) ever_connected: AtomicUsize,
    pub(super) connected_now: AtomicUsize,
    pub(super) produced: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) buffered: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) unsent_at_end: AtomicU64,
    pub(super) acknowledged: AtomicU64,
    pub(super) status_sent: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) queue_full: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) commands: AtomicU64,
    pub(super) bad_commands: AtomicU64,
}

impl FleetCounters {
    /// Adds what a device did since `before`.
    pub(super) fn add_device_delta(&self, before: &Counters, now: &Counters) {
        self.produced
            .fetch_add(now.produced - before.produced, Relaxed);
        self.sent.fetch_add(
            (now.sent + now.replayed) - (before.sent + before.replayed),
            Relaxed,
        );
        self.replayed
            .fetch_add(now.replayed - before.replayed, Relaxed);
        self.buffered
            .fetch_add(now.buffered - before.buffered, Relaxed);
        self.dropped
            .fetch_add(now.dropped_oldest - before.dropped_oldest, Relaxed);
        self.commands
            .fetch_add(now.commands - before.commands, Relaxed);
    }

    pub(super) fn summary(&self, elapsed: Duration) -> Summary {
        Summary {
            vehicles_connected: self.ever_connected.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            elapsed,
            replayed: self.replayed.load(Relaxed),
            produced: self.produced.load(Relaxed),
            unsent_at_end: self.unsent_at_end.load(Relaxed),
            status_sent: self.status_sent.load(Relaxed),
            connects: self.connects.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            commands: self.commands.load(Relaxed),
            bad_commands: self.bad_commands.load(Relaxed),
        }
    }
}
