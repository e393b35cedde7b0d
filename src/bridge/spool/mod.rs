//! The bridge's spool: a durable, bounded, segmented log on disk of what
//! the uplink has not yet had confirmed by RabbitMQ.
//!
//! In: records from the bridge's feeder ([`Spool::append`]), each a
//! [`RecordClass`] and an opaque payload (the bridge's own encoding of
//! routing key, properties and body). Out: the unsent records, oldest first
//! ([`Spool::read_unsent`]), until RabbitMQ confirms them
//! ([`Spool::confirm`]); a record leaves the spool only after its confirm,
//! or when the full policy drops it (counted). Bound: `max_bytes` on disk;
//! in memory a summary per segment and at most [`MAX_CONFIRMED_RANGES`]
//! ranges of out-of-order confirms (see *Memory* below). The API is
//! synchronous and `std` only: the bridge calls it from a blocking thread.
//! One process per directory: `Spool::open` takes no lock itself, but the
//! bridge takes an exclusive lock on `<dir>/LOCK` (`File::try_lock`, in
//! `bridge::lock_dir`) before it opens the spool and holds it while the
//! spool is open, so a second gateway on the same directory fails to start
//! (`BridgeError::InUse`). The kernel releases the lock when the process
//! ends, however it ends.
//!
//! This comment is the spool's design document (as vector's `disk_v2`
//! keeps its own); change it with the code.
//!
//! # Files
//!
//! ```text
//! <dir>/00000000000000000001.seg    segments, named by the lowest id they may hold,
//! <dir>/00000000000000004097.seg    20 digits so lexical order = numeric order
//! <dir>/state                       watermark, confirmed ranges, id reservation (two slots)
//! <dir>/*.seg.tmp                   a compaction in progress (removed at open)
//! <dir>/LOCK                        the bridge's lock file (empty; the spool ignores it)
//! ```
//!
//! Segments cover disjoint, ascending id ranges; the last one is the
//! *active* segment, the only one appended to. A segment is *sealed* when the
//! next append would take it past `segment_bytes`: it is fsynced, a new
//! active segment named by the next id is created, and the directory is
//! fsynced.
//!
//! # Segment layout
//!
//! All integers little-endian.
//!
//! ```text
//! header (24 bytes): magic "FGSPOOL\0" [8] | version u32 (= 1) | first_id u64 | crc32 u32 (of the 20 bytes before it)
//! frame (25 + len):  len u32 | crc32 u32 | id u64 | class u8 | appended_ms u64 | payload [len]
//! ```
//!
//! A frame's crc32 (IEEE, `crc32fast`) covers everything after the crc
//! field: id, class, appended_ms and payload; `len` is checked against the
//! segment size and the payload bound, so a bad `len` fails either that check
//! or the crc. A frame is good when its crc matches, its class is 0..=3 and
//! its id is above every id before it (in this segment and the ones before).
//! Ids are assigned in append order, so the file order is the id order.
//!
//! # The state file
//!
//! Two slots, written alternately in place (one `pwrite` each), slot i at
//! offset i × 16 432 (`STATE_SLOT_BYTES`, room for the most ranges a slot
//! may hold; a write covers only the bytes used):
//!
//! ```text
//! slot (48 + 16n bytes): magic "FGSPSTA\0" [8] | version u32 (= 2) | seq u64 | confirmed_through u64
//!     | id_floor u64 | crc32 u32 (of the 36 bytes before it)
//!     | n u32 | n × (first u64 | last u64) | crc32 u32 (of the 44 + 16n bytes before it)
//! ```
//!
//! At open the valid slot with the higher `seq` wins, so a torn slot write
//! loses only that update: the other slot holds the state before it, which
//! confirms nothing this one did not (confirms only add), so it costs
//! duplicates, never a record. `confirmed_through` (the watermark, *W*) is
//! the highest id such that every id ≤ W is confirmed or no longer in the
//! spool (dropped by the full policy, or cut as corrupt): nothing ≤ W is
//! ever read again. The `first..=last` ranges are ids above W confirmed out
//! of order (every id in a range was confirmed), ascending and disjoint: a
//! record in one is never read again either, before or after a restart.
//! A slot holds the lowest [`SpoolConfig::persisted_ranges`] of them (the
//! bridge passes `bridge.confirm_window`, at most [`MAX_PERSISTED_RANGES`]);
//! records in ranges past those are sent again after a restart (duplicates).
//!
//! Version 1 had 40-byte slots at offsets 0 and 40: the head above, no
//! ranges. It is still read; the first write after opening one goes to the
//! second slot (offset 16 432, clear of both old ones) and is fsynced, so a
//! torn upgrade leaves the old state whole. The head's layout is the same in
//! both versions, so a build that reads only version 1 refuses a version-2
//! file (unknown version) rather than take it for garbage and resend all.
//!
//! `id_floor` reserves ids: before handing out an id ≥ `id_floor`,
//! the spool writes `id_floor = id + 4096` into both slots, one after the
//! other, fsyncing each (so one damaged slot cannot lose it). At open
//! the next id is the highest of `id_floor`, W + 1, the last segment's name
//! and its last record's id + 1, so an id is never reused, even when a power
//! cut took appended (and maybe already published) records with the page
//! cache: RabbitMQ consumers may deduplicate on the `message_id` the bridge
//! derives from it. Ids skip up to 4096 at each restart; gaps are harmless.
//!
//! # Who deletes what, when
//!
//! - [`Spool::confirm`] records a confirm. Confirms of the oldest unconfirmed
//!   record move W forward, past every following record already confirmed
//!   out of order; a sealed segment whose records are all ≤ W is deleted at
//!   once. The active segment is never deleted (it is sealed first, when
//!   full), so the spool keeps at most one segment of confirmed records. A
//!   segment whose records were all confirmed out of order, behind an older
//!   unconfirmed record, waits for W (or the full policy).
//! - The full policy, `drop_oldest_positions`, runs inside [`Spool::append`]
//!   *before* writing, whenever the segments plus the new frame (plus a
//!   header, if it seals the active segment) would exceed `max_bytes`:
//!   1. the oldest sealed segment holding [`RecordClass::Position`] records
//!      is compacted: rewritten without its positions into `<name>.seg.tmp`,
//!      fsynced, renamed over the segment, directory fsynced (a crash leaves
//!      either the old or the new file, both valid; a stale `.tmp` is removed
//!      at open). A segment left empty is deleted. Repeat, oldest first;
//!   2. if only the active segment still holds positions, it is sealed and
//!      compacted the same way;
//!   3. when no position is left anywhere and it is still full, the oldest
//!      sealed segment is deleted whole.
//!
//!   Every dropped record is counted by class ([`SpoolStats::dropped`]).
//!   Dropped records are gone from the files, so [`Spool::read_unsent`]
//!   cannot return them, and W moves over their ids. The spool never blocks
//!   the appender and never exceeds `max_bytes` (while a compaction runs, its
//!   `.tmp` file, at most one segment, exists beside the segment it
//!   replaces). `max_bytes` must be at least twice `segment_bytes`, so there
//!   is always a sealed segment to drop.
//!
//! # Cursors
//!
//! The *sent* cursor is the id of the last record handed out by
//! [`Spool::read_unsent`]; [`Spool::rewind`] (after an uplink loss) puts it
//! back to W, so every unconfirmed record is sent again, in order, skipping
//! those confirmed out of order meanwhile. Both cursors are ids with a
//! (segment, generation, offset) hint; a compaction bumps the segment's
//! generation and the cursor finds its place again by id.
//!
//! # Fsync policy and loss windows
//!
//! Every append is one `pwrite` of the whole frame, so it reaches the page
//! cache before `append` returns: a process kill (SIGKILL, panic, OOM) loses
//! nothing `append` acknowledged, under either policy.
//!
//! - [`FsyncPolicy::Always`]: the segment is fsynced (`fdatasync`) before
//!   `append` returns. A power cut loses nothing `append` acknowledged.
//! - [`FsyncPolicy::IntervalMs`]`(n)`: `append` fsyncs when the last fsync
//!   is older than n ms, and the bridge's feeder calls [`Spool::flush`] on
//!   an n-ms timer whenever it appended since the last flush. A power cut
//!   loses up to n ms of appends (the torn tail is cut at open, see below).
//!   Nothing flushes at shutdown (see *Shutdown*).
//!
//! The watermark and the confirmed ranges are written into the state file
//! (page cache) by every confirm call that changes them (the uplink
//! confirms a batch of acks per call, [`Spool::confirm_all`]: one `pwrite`
//! of 48 + 16 × ranges bytes), so after a process kill only records whose
//! ack had not reached the spool are sent again: at most the uplink's
//! confirm window of duplicates, however long ago W last moved (within
//! `persisted_ranges` ranges). The state is fsynced by [`Spool::flush`],
//! when a segment is created, on each id reservation, and otherwise at most
//! every 100 ms (`Always`) or n ms (`IntervalMs(n)`) on a confirm. A power
//! cut can therefore lose the last of those writes: those records are
//! published again (at least once, same id).
//!
//! # Shutdown
//!
//! The spool has no close: dropping it closes its files and fsyncs nothing.
//! The gateway stops it in order (`Gateway::shutdown`, on SIGTERM or
//! Ctrl-C): the edge stops and ingest drains its queue into the fan-out;
//! the bridge feeder drains the fan-out into the spool, calls
//! [`Spool::flush`] and ends; only then is the uplink aborted. So, on
//! SIGTERM:
//!
//! - every update the edge had acknowledged is appended and fsynced before
//!   the process exits (unless the drain takes longer than
//!   `DRAIN_TIMEOUT`, logged), and the next start sends it;
//! - records published but not yet confirmed are sent again at the next
//!   start (same id, so same `message_id`): at most the confirm window;
//!   records confirmed, in order or not, are not, since each confirm
//!   reached the state file's page cache as it happened.
//!
//! A SIGKILL (or a panic that ends the process, or the OOM killer) drains
//! nothing, and loses nothing a device was told is kept: the edge answers a
//! QoS 1/2 publish only once the feeder has appended its record (the
//! watermark of `crate::acks`), and an appended record is in the page
//! cache. What a SIGKILL does lose is what no one was promised: QoS 0
//! publishes and updates still in the fan-out. It resends the same records
//! as a SIGTERM; killed mid-compaction it leaves a `.tmp` file, removed at
//! the next open. Only a power cut (or a kernel crash) reaches past the
//! page cache: see *Fsync policy and loss windows*.
//!
//! # Recovery
//!
//! [`Spool::open`] creates the directory, removes stale `.tmp` files, reads
//! the state file (no valid slot: W = 0, everything on disk is resent) and
//! its confirmed ranges (a record in one is skipped, as by a read), then
//! scans every segment in order, checking every frame:
//!
//! - in the **last** segment, a torn or corrupt tail (a partial frame, a bad
//!   crc, a bad class, an id out of order, trailing zeros) is truncated at the
//!   last good frame. With `Always` such a tail holds only records whose
//!   `append` never returned.
//! - in an **older** segment, reading stops at the first bad frame and the
//!   segment is truncated there: the records after it in that segment are
//!   lost (their frames cannot be trusted, so they are counted in bytes), and
//!   recovery goes on with the next segment. The alternative, scanning for
//!   the next frame that happens to check, could resurrect garbage; the
//!   records after a bad frame are not trusted.
//! - a segment whose header is unreadable is deleted if it is older, or
//!   emptied to a fresh header if it is the last; a header with a valid crc
//!   but an unknown version is an error (never destroy a newer format).
//!
//! Each cut counts one in [`RecoveryReport::corrupt_records`] and its bytes
//! in [`RecoveryReport::truncated_bytes`]. No file content makes `open`
//! panic; corruption found later by a read (bit rot) is cut the same way and
//! counted in [`SpoolStats::corrupt_records`].
//!
//! # Memory
//!
//! No record is kept in memory. Per segment: a summary of ~100 bytes (name,
//! size, record counts by class, last id). Segments number about
//! `max_bytes / segment_bytes + 1`; compaction can leave smaller ones,
//! at worst `max_bytes / (24 + 25)`. Out-of-order confirms: at most
//! [`MAX_CONFIRMED_RANGES`] ranges of ids above W (a `BTreeMap` entry each,
//! ~3 MiB at worst, however many ids they cover); a confirm that would start
//! one more is not recorded, so that record is sent again (a duplicate,
//! never a loss). Buffers: one frame for writing, one payload for reading,
//! one state slot (at most 16 KiB).
//!
//! # Code
//!
//! - `format.rs`: the bytes (*Files*, *Segment layout*, *The state file*).
//! - `recovery.rs`: [`Spool::open`] and the cut of a bad frame (*Recovery*).
//! - `writer.rs`: appends, seals, id reservations, fsyncs (*Fsync policy*).
//! - `full.rs`: the full policy (*Who deletes what, when*).
//! - `cursor.rs`: the sent cursor, confirms, the watermark (*Cursors*).
//! - `confirmed.rs`: the out-of-order confirms, as ranges (*Memory*).
//! - `report.rs`: what open found and the figures for `/metrics`.
//!
//! This file holds the types and the public API; the `impl Spool` blocks
//! that do the work live in those modules, one job each.

mod confirmed;
mod cursor;
mod format;
mod full;
mod recovery;
mod report;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use confirmed::Confirmed;
use cursor::Cursor;
use format::{segment_name, FrameHead, State};
pub use report::{RecoveryReport, SpoolStats};

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a segment's header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// Bytes a frame adds to its payload.
pub const FRAME_OVERHEAD_BYTES: u64 = 25;
/// The smallest `segment_bytes` accepted.
pub const MIN_SEGMENT_BYTES: u64 = 256;
/// The most ranges of out-of-order confirms remembered (see *Memory*).
pub const MAX_CONFIRMED_RANGES: usize = 65_536;
/// The most confirmed ranges a state slot holds (see *The state file*).
pub const MAX_PERSISTED_RANGES: usize = 1024;

/// When appended records are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before `append` returns: a power cut loses nothing that
    /// `append` acknowledged. Costs one fsync per record.
    Always,
    /// fsync at most every n ms (in `append`, and in [`Spool::flush`], which
    /// the bridge's feeder calls on an n-ms timer after appends; nothing
    /// flushes at shutdown): a power cut loses up to n ms of
    /// appends. A process kill loses nothing, since every append reaches the
    /// page cache at once.
    IntervalMs(u64),
}

/// Where and how big the spool is.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bound on the segments' total size; at least `2 * segment_bytes`.
    pub max_bytes: u64,
    /// A segment is sealed before it passes this; the largest record is
    /// `segment_bytes - 24 - 25` bytes of payload.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// How many ranges of out-of-order confirms the state file keeps, so a
    /// restart skips them (see *The state file*); capped at
    /// [`MAX_PERSISTED_RANGES`]. The bridge passes its confirm window: each
    /// publish still in flight can split one range from the next.
    pub persisted_ranges: usize,
}

/// What a record is, for the full policy: positions are dropped first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecordClass {
    Position = 0,
    Status = 1,
    Event = 2,
    Package = 3,
}

impl RecordClass {
    pub const ALL: [RecordClass; 4] = [
        RecordClass::Position,
        RecordClass::Status,
        RecordClass::Event,
        RecordClass::Package,
    ];

    fn from_u8(b: u8) -> Option<RecordClass> {
        RecordClass::ALL.get(usize::from(b)).copied()
    }

    /// Lower-case name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RecordClass::Position => "position",
            RecordClass::Status => "status",
            RecordClass::Event => "event",
            RecordClass::Package => "package",
        }
    }
}

/// One spooled record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Increasing across restarts, never reused.
    pub id: u64,
    pub class: RecordClass,
    /// Wall-clock time of the append, ms since the Unix epoch.
    pub appended_ms: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("a record of {len} bytes does not fit a spool segment of {segment_bytes} bytes (at most {max} bytes of payload)")]
    TooLarge {
        len: usize,
        max: u64,
        segment_bytes: u64,
    },
    #[error("invalid spool configuration for {dir}: {reason}")]
    Config { dir: PathBuf, reason: String },
    #[error("{path}: spool format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("spool {dir} is full and nothing can be dropped to fit a {needed}-byte record")]
    Full { dir: PathBuf, needed: u64 },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The spool. See the module documentation.
pub struct Spool {
    cfg: SpoolConfig,
    max_payload: u64,
    segs: VecDeque<Seg>,
    total_bytes: u64,
    /// The active (last) segment, open for writing.
    writer: File,
    next_id: u64,
    next_gen: u64,
    /// W: every id ≤ it is confirmed or gone.
    watermark: u64,
    /// Where W is: `after` = W, hint at the first record above it.
    front: Cursor,
    /// The oldest unconfirmed record, when known.
    front_head: Option<FrameHead>,
    sent: Cursor,
    /// Confirms above W, out of order (in the state file too).
    confirmed: Confirmed,
    /// Records on disk with id > W.
    above_watermark: u64,
    state_file: File,
    state: State,
    /// W or the confirmed ranges changed since the state was last written.
    state_dirty: bool,
    /// The slot being written.
    state_buf: Vec<u8>,
    state_unsynced: bool,
    last_state_sync: Instant,
    unsynced: bool,
    last_sync: Instant,
    dir_unsynced: bool,
    dropped: [u64; 4],
    corrupt_records: u64,
    confirms_not_remembered: u64,
    confirm_errors: u64,
    /// `next_id` at open: ids below it were recovered, not appended.
    recovered_below: u64,
    /// The highest recovered id handed out since open.
    resent_through: u64,
    resent_after_recovery: u64,
    frame_buf: Vec<u8>,
    payload_buf: Vec<u8>,
    /// Open read handles: (segment, generation, file); at most 4.
    readers: Vec<(u64, u64, File)>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` and recovers it: see
    /// *Recovery*.
    pub fn open(config: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        Spool::recover(config)
    }

    /// Appends a record and returns its id; see *Fsync policy* for when it
    /// is durable. Applies the full policy first, so the bound holds.
    pub fn append(&mut self, class: RecordClass, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_record(class, payload)
    }

    /// Reads up to `max` records after the sent cursor into `out`, oldest
    /// first, and moves the cursor past them. Returns how many.
    pub fn read_unsent(&mut self, max: usize, out: &mut Vec<Record>) -> Result<usize, SpoolError> {
        self.read_after_sent(max, out)
    }

    /// After an uplink loss: the next [`Spool::read_unsent`] starts again at
    /// the oldest unconfirmed record.
    pub fn rewind(&mut self) {
        self.sent = self.front;
    }

    /// Confirms one record (any order, repeats are fine); see *Who deletes
    /// what, when*. I/O errors are logged and counted in
    /// [`SpoolStats::confirm_errors`]: a confirm that failed to persist only
    /// causes a duplicate.
    pub fn confirm(&mut self, id: u64) {
        self.confirm_all([id]);
    }

    /// [`Spool::confirm`] for each of `ids`, with one state write for all.
    pub fn confirm_all(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.record_confirm(id);
        }
        self.save_state();
    }

    /// Fsyncs what was appended, the watermark and the directory.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.flush_pending()
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            bytes: self.total_bytes,
            records: self.segs.iter().map(|s| s.records).sum(),
            unconfirmed: self.above_watermark.saturating_sub(self.confirmed.len()),
            oldest_unconfirmed_ms: if self.above_watermark > 0 {
                self.front_head.map(|h| h.appended_ms)
            } else {
                None
            },
            dropped: self.dropped,
            segments: self.segs.len(),
            confirmed_through: self.watermark,
            next_id: self.next_id,
            corrupt_records: self.corrupt_records,
            confirms_not_remembered: self.confirms_not_remembered,
            confirmed_ranges: self.confirmed.range_count(),
            resent_after_recovery: self.resent_after_recovery,
            confirm_errors: self.confirm_errors,
        }
    }

    fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    fn seg_path(&self, first_id: u64) -> PathBuf {
        self.cfg.dir.join(segment_name(first_id))
    }

    fn active_path(&self) -> PathBuf {
        self.seg_path(self.active().first_id)
    }

    fn active(&self) -> &Seg {
        // `segs` is never empty: open creates a segment, and the active one
        // is never removed.
        static NONE: Seg = Seg {
            first_id: 0,
            gen: 0,
            bytes: 0,
            records: 0,
            by_class: [0; 4],
            first_record: None,
            last_id: None,
        };
        self.segs.back().unwrap_or(&NONE)
    }
}

/// What the spool remembers of one segment.
#[derive(Clone, Debug)]
struct Seg {
    /// The name: no id in it is lower.
    first_id: u64,
    /// Bumped when the file is rewritten or cut: cursor hints and cached
    /// readers of an older generation are stale.
    gen: u64,
    /// Valid bytes, header included (the file may be longer only while a
    /// failed write's tail awaits truncation).
    bytes: u64,
    records: u64,
    by_class: [u64; 4],
    first_record: Option<u64>,
    last_id: Option<u64>,
}

impl Seg {
    fn empty(first_id: u64, gen: u64) -> Seg {
        Seg {
            first_id,
            gen,
            bytes: SEGMENT_HEADER_BYTES,
            records: 0,
            by_class: [0; 4],
            first_record: None,
            last_id: None,
        }
    }

    fn add(&mut self, head: &FrameHead) {
        self.records += 1;
        self.by_class[head.class as usize] += 1;
        self.first_record.get_or_insert(head.id);
        self.last_id = Some(head.id);
        self.bytes += head.size;
    }
}
