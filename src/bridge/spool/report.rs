//! What the spool tells its owner: a [`RecoveryReport`] from
//! [`Spool::open`](super::Spool::open), and [`SpoolStats`] at any time
//! (copied into `/metrics` by the bridge).
//!
//! In: the spool's counters. Out: plain values, no reference into the
//! spool. Bound: two fixed-size structs.

use super::RecordClass;

/// What [`Spool::open`](super::Spool::open) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Good records on disk after recovery (confirmed ones included).
    pub records: u64,
    /// Of those, the ones above the watermark and not confirmed out of
    /// order: they will be sent (again, for those the last run had sent).
    pub unconfirmed: u64,
    /// Records above the watermark that the state file's ranges say were
    /// confirmed out of order: they are not sent again.
    pub confirmed_out_of_order: u64,
    /// Bytes cut: torn or corrupt tails, unreadable segments.
    pub truncated_bytes: u64,
    /// Cut points: each is one unreadable record (what follows it in its
    /// segment is counted in `truncated_bytes` only).
    pub corrupt_records: u64,
    /// Segments after recovery.
    pub segments: usize,
    /// The watermark read from the state file.
    pub confirmed_through: u64,
    /// No valid state slot was found (first start, or both slots corrupt).
    pub state_reset: bool,
}

/// The spool's figures, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Segment bytes on disk.
    pub bytes: u64,
    /// Records on disk, confirmed ones included.
    pub records: u64,
    /// Records not yet confirmed.
    pub unconfirmed: u64,
    /// `appended_ms` of the oldest unconfirmed record.
    pub oldest_unconfirmed_ms: Option<u64>,
    /// Records dropped by the full policy, indexed by `RecordClass as usize`.
    pub dropped: [u64; 4],
    pub segments: usize,
    /// The watermark W.
    pub confirmed_through: u64,
    pub next_id: u64,
    /// Corrupt records found after open (bit rot), cut.
    pub corrupt_records: u64,
    /// Out-of-order confirms not remembered (see *Memory*).
    pub confirms_not_remembered: u64,
    /// Ranges of out-of-order confirms remembered now.
    pub confirmed_ranges: usize,
    /// Records found unconfirmed at open and handed out since, each counted
    /// once (rewinds do not count again): what this run sent of what the
    /// last one left. Of those the last run had sent, at most its confirm
    /// window arrive twice.
    pub resent_after_recovery: u64,
    /// I/O errors met by `confirm` (which cannot return them).
    pub confirm_errors: u64,
}

impl SpoolStats {
    pub fn dropped_of(&self, class: RecordClass) -> u64 {
        self.dropped[class as usize]
    }
}
