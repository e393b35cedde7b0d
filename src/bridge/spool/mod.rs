//! The bridge's spool: a durable, bounded, segmented log on disk of what
//! the uplink has not yet had confirmed by RabbitMQ.
//!
//! In: records from the bridge's feeder ([`Spool::append`]), each a
//! [`RecordClass`] and an opaque payload (the bridge's own encoding of
//! routing key, properties and body). Out: the unsent records, oldest first
//! ([`Spool::read_unsent`]), until RabbitMQ confirms them
//! ([`Spool::confirm`]); a record leaves the spool only after its confirm,
//! or when the full policy drops it (counted). Bound: `max_bytes` on disk;
//! in memory a summary per segment and at most [`MAX_CONFIRMED_AHEAD`]
//! out-of-order confirms (see *Memory* below). The API is synchronous and
//! `std` only: the bridge calls it from a blocking thread. One process per
//! directory (not enforced by a lock).
//!
//! This comment is the spool's design document (as vector's `disk_v2`
//! keeps its own); change it with the code.
//!
//! # Files
//!
//! ```text
//! <dir>/00000000000000000001.seg    segments, named by the lowest id they may hold,
//! <dir>/00000000000000004097.seg    20 digits so lexical order = numeric order
//! <dir>/state                       watermark and id reservation (two slots)
//! <dir>/*.seg.tmp                   a compaction in progress (removed at open)
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
//! Two 40-byte slots, written alternately in place (one `pwrite`):
//!
//! ```text
//! slot: magic "FGSPSTA\0" [8] | version u32 | seq u64 | confirmed_through u64 | id_floor u64 | crc32 u32 (of the 36 bytes before it)
//! ```
//!
//! At open the valid slot with the higher `seq` wins, so a torn slot write
//! loses only that update. `confirmed_through` (the watermark, *W*) is the
//! highest id such that every id ≤ W is confirmed or no longer in the spool
//! (dropped by the full policy, or cut as corrupt): nothing ≤ W is ever read
//! again. `id_floor` reserves ids: before handing out an id ≥ `id_floor`,
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
//!   is older than n ms; the bridge calls [`Spool::flush`] every n ms while
//!   idle and at shutdown. A power cut loses up to n ms of appends (the
//!   torn tail is cut at open, see below).
//!
//! The watermark is written into the state file (page cache) on every
//! confirm that moves it, so a process kill resends nothing confirmed in
//! order. It is fsynced by [`Spool::flush`], when a segment is created, on
//! each id reservation, and otherwise at most every 100 ms (`Always`) or n
//! ms (`IntervalMs(n)`) on a confirm. A power cut can therefore lose the
//! last watermark moves: those records are published again (at least once,
//! same id). Out-of-order confirms live only in memory: after a restart,
//! records above W are resent even if they had been confirmed out of order.
//!
//! # Recovery
//!
//! [`Spool::open`] creates the directory, removes stale `.tmp` files, reads
//! the state file (no valid slot: W = 0, everything on disk is resent), then
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
//! at worst `max_bytes / (24 + 25)`. Out-of-order confirms: a set of at most
//! [`MAX_CONFIRMED_AHEAD`] ids above W (~3 MiB at worst); a confirm that
//! does not fit is not recorded, so that record is sent again (a duplicate,
//! never a loss). Buffers: one frame for writing, one payload for reading.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a segment's header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// Bytes a frame adds to its payload.
pub const FRAME_OVERHEAD_BYTES: u64 = 25;
/// The smallest `segment_bytes` accepted.
pub const MIN_SEGMENT_BYTES: u64 = 256;
/// The most out-of-order confirms remembered (see *Memory*).
pub const MAX_CONFIRMED_AHEAD: usize = 65_536;

const SEGMENT_MAGIC: [u8; 8] = *b"FGSPOOL\0";
const STATE_MAGIC: [u8; 8] = *b"FGSPSTA\0";
const STATE_FILE: &str = "state";
const STATE_SLOT_BYTES: usize = 40;
const ID_BLOCK: u64 = 4096;
const ALWAYS_WATERMARK_SYNC_MS: u64 = 100;

/// When appended records are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before `append` returns: a power cut loses nothing that
    /// `append` acknowledged. Costs one fsync per record.
    Always,
    /// fsync at most every n ms (in `append`, and in [`Spool::flush`] which
    /// the caller runs on an n-ms timer): a power cut loses up to n ms of
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

/// What [`Spool::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Good records on disk after recovery (confirmed ones included).
    pub records: u64,
    /// Of those, the ones above the watermark: they will be sent.
    pub unconfirmed: u64,
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
    /// I/O errors met by `confirm` (which cannot return them).
    pub confirm_errors: u64,
}

impl SpoolStats {
    pub fn dropped_of(&self, class: RecordClass) -> u64 {
        self.dropped[class as usize]
    }
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

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn segment_header(first_id: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_id.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn encode_frame(buf: &mut Vec<u8>, id: u64, class: RecordClass, appended_ms: u64, payload: &[u8]) {
    buf.clear();
    // The caller checked the size against segment_bytes, which fits a u32
    // frame only when it is small enough; saturate rather than wrap.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(class as u8);
    buf.extend_from_slice(&appended_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One frame's fields (its payload goes to a caller's buffer).
#[derive(Clone, Copy, Debug)]
struct FrameHead {
    id: u64,
    class: RecordClass,
    appended_ms: u64,
    /// Bytes of the whole frame.
    size: u64,
}

enum FrameRead {
    /// No bytes left.
    End,
    /// A partial or corrupt frame.
    Bad,
    Good(FrameHead),
}

/// Reads one frame from `r`, which has `remaining` bytes before the end of
/// the segment's valid part. Any content gives `Bad`, never a panic.
/// The payload bound is the file, not `segment_bytes`: a spool written with
/// larger segments stays readable.
fn read_frame<R: Read>(r: &mut R, remaining: u64, payload: &mut Vec<u8>) -> io::Result<FrameRead> {
    if remaining == 0 {
        return Ok(FrameRead::End);
    }
    if remaining < FRAME_OVERHEAD_BYTES {
        return Ok(FrameRead::Bad);
    }
    let mut head = [0u8; FRAME_OVERHEAD_BYTES as usize];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(FrameRead::Bad),
        Err(e) => return Err(e),
    }
    let len = u64::from(le_u32(&head, 0));
    if len > remaining - FRAME_OVERHEAD_BYTES {
        return Ok(FrameRead::Bad);
    }
    payload.clear();
    payload.resize(len as usize, 0);
    match r.read_exact(payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(FrameRead::Bad),
        Err(e) => return Err(e),
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[8..]);
    crc.update(payload);
    if crc.finalize() != le_u32(&head, 4) {
        return Ok(FrameRead::Bad);
    }
    let Some(class) = RecordClass::from_u8(head[16]) else {
        return Ok(FrameRead::Bad);
    };
    Ok(FrameRead::Good(FrameHead {
        id: le_u64(&head, 8),
        class,
        appended_ms: le_u64(&head, 17),
        size: FRAME_OVERHEAD_BYTES + len,
    }))
}

/// `Read` over a file at an offset, by `pread`, so readers share no seek
/// position.
struct PosReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
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

#[derive(Clone, Copy, Debug)]
struct Hint {
    seg: u64,
    gen: u64,
    offset: u64,
}

/// A position in the log: everything up to `after` is behind it.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    after: u64,
    hint: Option<Hint>,
}

#[derive(Clone, Copy, Debug)]
struct Found {
    head: FrameHead,
    at: Hint,
}

enum Scan {
    /// The header is unreadable.
    BadHeader,
    Read {
        seg: Seg,
        /// The frames after the last good one are bad.
        cut: bool,
        /// Good records with id > the watermark given.
        above: u64,
    },
}

/// Reads a whole segment, frame by frame, stopping at the first bad frame.
fn scan_segment(
    path: &Path,
    first_id: u64,
    after_id: u64,
    watermark: u64,
    gen: u64,
) -> Result<Scan, SpoolError> {
    let file = File::open(path).map_err(io_err("opening", path))?;
    let file_len = file
        .metadata()
        .map_err(io_err("reading metadata of", path))?
        .len();
    let mut r = BufReader::with_capacity(64 * 1024, file);
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Scan::BadHeader),
        Err(e) => return Err(io_err("reading", path)(e)),
    }
    if header[..8] != SEGMENT_MAGIC || crc32fast::hash(&header[..20]) != le_u32(&header, 20) {
        return Ok(Scan::BadHeader);
    }
    let version = le_u32(&header, 8);
    if version != FORMAT_VERSION {
        return Err(SpoolError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if le_u64(&header, 12) != first_id {
        return Ok(Scan::BadHeader);
    }
    let mut seg = Seg::empty(first_id, gen);
    let mut above = 0;
    let mut last = after_id.max(first_id.saturating_sub(1));
    let mut payload = Vec::new();
    let cut = loop {
        let remaining = file_len.saturating_sub(seg.bytes);
        match read_frame(&mut r, remaining, &mut payload).map_err(io_err("reading", path))? {
            FrameRead::End => break false,
            FrameRead::Bad => break true,
            FrameRead::Good(head) => {
                if head.id <= last {
                    break true;
                }
                last = head.id;
                if head.id > watermark {
                    above += 1;
                }
                seg.add(&head);
            }
        }
    };
    Ok(Scan::Read { seg, cut, above })
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsyncing directory", dir))
}

/// The state file's content.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    seq: u64,
    confirmed_through: u64,
    id_floor: u64,
}

fn encode_state(s: &State) -> [u8; STATE_SLOT_BYTES] {
    let mut b = [0u8; STATE_SLOT_BYTES];
    b[..8].copy_from_slice(&STATE_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..20].copy_from_slice(&s.seq.to_le_bytes());
    b[20..28].copy_from_slice(&s.confirmed_through.to_le_bytes());
    b[28..36].copy_from_slice(&s.id_floor.to_le_bytes());
    let crc = crc32fast::hash(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_state(path: &Path, b: &[u8]) -> Result<Option<State>, SpoolError> {
    if b.len() < STATE_SLOT_BYTES
        || b[..8] != STATE_MAGIC
        || crc32fast::hash(&b[..36]) != le_u32(b, 36)
    {
        return Ok(None);
    }
    let version = le_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(SpoolError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(State {
        seq: le_u64(b, 12),
        confirmed_through: le_u64(b, 20),
        id_floor: le_u64(b, 28),
    }))
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
    confirmed_ahead: BTreeSet<u64>,
    /// Records on disk with id > W.
    above_watermark: u64,
    state_file: File,
    state: State,
    state_unsynced: bool,
    last_state_sync: Instant,
    unsynced: bool,
    last_sync: Instant,
    dir_unsynced: bool,
    dropped: [u64; 4],
    corrupt_records: u64,
    confirms_not_remembered: u64,
    confirm_errors: u64,
    frame_buf: Vec<u8>,
    payload_buf: Vec<u8>,
    /// Open read handles: (segment, generation, file); at most 4.
    readers: Vec<(u64, u64, File)>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` and recovers it: see
    /// *Recovery* in the module documentation.
    pub fn open(config: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        let dir = config.dir.clone();
        let bad = |reason: String| SpoolError::Config {
            dir: dir.clone(),
            reason,
        };
        if config.segment_bytes < MIN_SEGMENT_BYTES || config.segment_bytes > u64::from(u32::MAX) {
            return Err(bad(format!(
                "segment_bytes is {}, must be within {MIN_SEGMENT_BYTES}..=4294967295",
                config.segment_bytes
            )));
        }
        if config.max_bytes < config.segment_bytes.saturating_mul(2) {
            return Err(bad(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({})",
                config.max_bytes, config.segment_bytes
            )));
        }
        if config.fsync == FsyncPolicy::IntervalMs(0) {
            return Err(bad("fsync interval must be at least 1 ms".into()));
        }
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let max_payload = config.segment_bytes - SEGMENT_HEADER_BYTES - FRAME_OVERHEAD_BYTES;
        let mut report = RecoveryReport::default();

        // The directory: segments in order; stale temporary files go.
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = parse_segment_name(name) {
                names.push(id);
            } else if name.ends_with(".tmp") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        names.sort_unstable();

        // The state file.
        let state_path = dir.join(STATE_FILE);
        let state_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&state_path)
            .map_err(io_err("opening", &state_path))?;
        let mut raw = [0u8; 2 * STATE_SLOT_BYTES];
        let n = read_up_to(&state_file, &mut raw).map_err(io_err("reading", &state_path))?;
        let slots = [
            decode_state(&state_path, &raw[..n.min(STATE_SLOT_BYTES)])?,
            decode_state(&state_path, raw.get(STATE_SLOT_BYTES..n).unwrap_or(&[]))?,
        ];
        let state = slots.iter().flatten().max_by_key(|s| s.seq).copied();
        report.state_reset = state.is_none();
        let state = state.unwrap_or_default();
        let watermark = state.confirmed_through;
        report.confirmed_through = watermark;

        // The segments, checked frame by frame.
        let mut segs: VecDeque<Seg> = VecDeque::new();
        let mut above_watermark = 0;
        let mut last_id = 0;
        let mut next_gen = 1;
        for (i, &first_id) in names.iter().enumerate() {
            let is_last = i + 1 == names.len();
            let path = dir.join(segment_name(first_id));
            let file_len = fs::metadata(&path)
                .map_err(io_err("reading metadata of", &path))?
                .len();
            next_gen += 1;
            match scan_segment(&path, first_id, last_id, watermark, next_gen)? {
                Scan::BadHeader => {
                    report.corrupt_records += 1;
                    report.truncated_bytes += file_len;
                    if is_last {
                        create_segment(&path, first_id)?;
                        segs.push_back(Seg::empty(first_id, next_gen));
                    } else {
                        fs::remove_file(&path).map_err(io_err("removing", &path))?;
                    }
                }
                Scan::Read { seg, cut, above } => {
                    if cut || file_len > seg.bytes {
                        report.corrupt_records += 1;
                        report.truncated_bytes += file_len - seg.bytes;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err("opening", &path))?;
                        f.set_len(seg.bytes).map_err(io_err("truncating", &path))?;
                        f.sync_all().map_err(io_err("fsyncing", &path))?;
                    }
                    if !is_last && seg.records == 0 {
                        fs::remove_file(&path).map_err(io_err("removing", &path))?;
                        continue;
                    }
                    if let Some(l) = seg.last_id {
                        last_id = l;
                    }
                    above_watermark += above;
                    segs.push_back(seg);
                }
            }
        }

        let last_name = segs.back().map_or(0, |s| s.first_id);
        let next_id = [
            1,
            watermark.saturating_add(1),
            state.id_floor,
            last_name,
            last_id.saturating_add(1),
        ]
        .into_iter()
        .max()
        .unwrap_or(1);
        if segs.is_empty() {
            let path = dir.join(segment_name(next_id));
            create_segment(&path, next_id)?;
            next_gen += 1;
            segs.push_back(Seg::empty(next_id, next_gen));
        }
        sync_dir(&dir)?;

        let active = segs.back().map_or(next_id, |s| s.first_id);
        let active_path = dir.join(segment_name(active));
        let writer = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active_path)
            .map_err(io_err("opening", &active_path))?;
        let total_bytes = segs.iter().map(|s| s.bytes).sum();
        let start = Cursor {
            after: watermark,
            hint: None,
        };
        let now = Instant::now();
        let mut spool = Spool {
            max_payload,
            segs,
            total_bytes,
            writer,
            next_id,
            next_gen,
            watermark,
            front: start,
            front_head: None,
            sent: start,
            confirmed_ahead: BTreeSet::new(),
            above_watermark,
            state_file,
            state,
            state_unsynced: false,
            last_state_sync: now,
            unsynced: false,
            last_sync: now,
            dir_unsynced: false,
            dropped: [0; 4],
            corrupt_records: 0,
            confirms_not_remembered: 0,
            confirm_errors: 0,
            frame_buf: Vec::new(),
            payload_buf: Vec::new(),
            readers: Vec::new(),
            cfg: config,
        };
        if report.state_reset {
            // A first state, so the file holds a valid slot from now on.
            spool.write_state(true)?;
        }
        spool.advance_front()?;
        spool.sent = spool.front;
        report.records = spool.segs.iter().map(|s| s.records).sum();
        report.unconfirmed = spool.above_watermark;
        report.segments = spool.segs.len();
        Ok((spool, report))
    }

    /// Appends a record and returns its id; see *Fsync policy* for when it
    /// is durable. Applies the full policy first, so the bound holds.
    pub fn append(&mut self, class: RecordClass, payload: &[u8]) -> Result<u64, SpoolError> {
        let size = FRAME_OVERHEAD_BYTES + payload.len() as u64;
        if payload.len() as u64 > self.max_payload {
            return Err(SpoolError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
                segment_bytes: self.cfg.segment_bytes,
            });
        }
        self.make_room(size)?;
        if self.active().records > 0 && self.active().bytes + size > self.cfg.segment_bytes {
            self.seal()?;
        }
        if self.next_id >= self.state.id_floor {
            let before = self.state;
            self.state.id_floor = self.next_id.saturating_add(ID_BLOCK);
            // Both slots, one after the other: a torn or lost slot cannot
            // take the reservation with it.
            if let Err(e) = self.write_state(true).and_then(|()| self.write_state(true)) {
                self.state = before;
                return Err(e);
            }
        }
        let id = self.next_id;
        let appended_ms = now_ms();
        encode_frame(&mut self.frame_buf, id, class, appended_ms, payload);
        let offset = self.active().bytes;
        if let Err(e) = self.writer.write_all_at(&self.frame_buf, offset) {
            // Leave no partial frame for the next append to follow.
            let _ = self.writer.set_len(offset);
            return Err(io_err("appending to", &self.active_path())(e));
        }
        self.next_id += 1;
        let head = FrameHead {
            id,
            class,
            appended_ms,
            size,
        };
        if let Some(seg) = self.segs.back_mut() {
            seg.add(&head);
        }
        self.total_bytes += size;
        if self.above_watermark == 0 {
            // Nothing was pending: this is the oldest unconfirmed record.
            self.front_head = Some(head);
        }
        self.above_watermark += 1;
        self.unsynced = true;
        let sync_now = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::IntervalMs(ms) => self.last_sync.elapsed() >= Duration::from_millis(ms),
        };
        if sync_now {
            self.sync_active()?;
        }
        Ok(id)
    }

    /// Reads up to `max` records after the sent cursor into `out`, oldest
    /// first, and moves the cursor past them. Returns how many.
    pub fn read_unsent(&mut self, max: usize, out: &mut Vec<Record>) -> Result<usize, SpoolError> {
        if self.sent.after < self.watermark {
            self.sent = self.front;
        }
        let mut n = 0;
        while n < max {
            let Some(found) = self.find_next(self.sent)? else {
                break;
            };
            self.sent = Cursor {
                after: found.head.id,
                hint: Some(Hint {
                    offset: found.at.offset + found.head.size,
                    ..found.at
                }),
            };
            if self.confirmed_ahead.contains(&found.head.id) {
                continue;
            }
            out.push(Record {
                id: found.head.id,
                class: found.head.class,
                appended_ms: found.head.appended_ms,
                payload: self.payload_buf.clone(),
            });
            n += 1;
        }
        Ok(n)
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
        if id <= self.watermark || id >= self.next_id {
            return;
        }
        if let Some(head) = self.front_head {
            if head.id != id {
                if self.confirmed_ahead.len() < MAX_CONFIRMED_AHEAD {
                    self.confirmed_ahead.insert(id);
                } else if !self.confirmed_ahead.contains(&id) {
                    self.confirms_not_remembered += 1;
                }
                return;
            }
        }
        self.confirmed_ahead.insert(id);
        if let Err(e) = self.advance_front() {
            self.confirm_errors += 1;
            tracing::warn!(error = %e, id, "spool: confirm could not move the watermark");
        }
    }

    /// Fsyncs what was appended, the watermark and the directory.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            self.sync_active()?;
        }
        if self.state_unsynced {
            let path = self.dir().join(STATE_FILE);
            self.state_file
                .sync_data()
                .map_err(io_err("fsyncing", &path))?;
            self.state_unsynced = false;
            self.last_state_sync = Instant::now();
        }
        if self.dir_unsynced {
            sync_dir(&self.cfg.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            bytes: self.total_bytes,
            records: self.segs.iter().map(|s| s.records).sum(),
            unconfirmed: self
                .above_watermark
                .saturating_sub(self.confirmed_ahead.len() as u64),
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

    fn sync_active(&mut self) -> Result<(), SpoolError> {
        self.writer
            .sync_data()
            .map_err(io_err("fsyncing", &self.active_path()))?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes the state into its older slot; `durable` fsyncs it.
    fn write_state(&mut self, durable: bool) -> Result<(), SpoolError> {
        let path = self.dir().join(STATE_FILE);
        self.state.seq += 1;
        self.state.confirmed_through = self.watermark;
        let slot = (self.state.seq % 2) * STATE_SLOT_BYTES as u64;
        self.state_file
            .write_all_at(&encode_state(&self.state), slot)
            .map_err(io_err("writing", &path))?;
        if durable {
            self.state_file
                .sync_data()
                .map_err(io_err("fsyncing", &path))?;
            self.state_unsynced = false;
            self.last_state_sync = Instant::now();
        } else {
            self.state_unsynced = true;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one named by the next id.
    fn seal(&mut self) -> Result<(), SpoolError> {
        self.sync_active()?;
        let first_id = self.next_id;
        let path = self.seg_path(first_id);
        let writer = create_segment(&path, first_id)?;
        sync_dir(&self.cfg.dir)?;
        self.writer = writer;
        self.next_gen += 1;
        self.segs.push_back(Seg::empty(first_id, self.next_gen));
        self.total_bytes += SEGMENT_HEADER_BYTES;
        Ok(())
    }

    /// The full policy, `drop_oldest_positions`: see the module docs.
    fn make_room(&mut self, size: u64) -> Result<(), SpoolError> {
        let mut dropped_any = false;
        let mut guard = 2 * self.segs.len() + 8;
        loop {
            let active = self.active();
            let sealing = active.records > 0 && active.bytes + size > self.cfg.segment_bytes;
            let needed = size + if sealing { SEGMENT_HEADER_BYTES } else { 0 };
            if self.total_bytes + needed <= self.cfg.max_bytes {
                break;
            }
            if guard == 0 {
                return Err(SpoolError::Full {
                    dir: self.cfg.dir.clone(),
                    needed,
                });
            }
            guard -= 1;
            let sealed = self.segs.len() - 1;
            let active_positions = self.active().by_class[RecordClass::Position as usize];
            if let Some(i) =
                (0..sealed).find(|&i| self.segs[i].by_class[RecordClass::Position as usize] > 0)
            {
                self.compact(i)?;
            } else if active_positions > 0 {
                self.seal()?;
            } else if sealed > 0 {
                self.drop_segment(0)?;
            } else {
                return Err(SpoolError::Full {
                    dir: self.cfg.dir.clone(),
                    needed,
                });
            }
            dropped_any = true;
        }
        if dropped_any {
            self.advance_front()?;
        }
        Ok(())
    }

    /// Rewrites sealed segment `idx` without its positions.
    fn compact(&mut self, idx: usize) -> Result<(), SpoolError> {
        let old = self.segs[idx].clone();
        let path = self.seg_path(old.first_id);
        let tmp = self
            .cfg
            .dir
            .join(format!("{}.tmp", segment_name(old.first_id)));
        let src = File::open(&path).map_err(io_err("opening", &path))?;
        let mut r = BufReader::with_capacity(
            64 * 1024,
            PosReader {
                file: &src,
                pos: SEGMENT_HEADER_BYTES,
            },
        );
        let out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let mut w = BufWriter::with_capacity(64 * 1024, out);
        w.write_all(&segment_header(old.first_id))
            .map_err(io_err("writing", &tmp))?;
        self.next_gen += 1;
        let mut new = Seg::empty(old.first_id, self.next_gen);
        let mut removed_above = 0;
        let mut positions = 0;
        let mut read = SEGMENT_HEADER_BYTES;
        loop {
            let remaining = old.bytes - read;
            match read_frame(&mut r, remaining, &mut self.payload_buf)
                .map_err(io_err("reading", &path))?
            {
                FrameRead::End => break,
                FrameRead::Bad => {
                    // Bit rot since open: what follows is lost, as at open.
                    self.corrupt_records += 1;
                    removed_above += old.records.saturating_sub(new.records + positions);
                    break;
                }
                FrameRead::Good(head) => {
                    read += head.size;
                    if head.class == RecordClass::Position {
                        positions += 1;
                        self.dropped[RecordClass::Position as usize] += 1;
                        if head.id > self.watermark {
                            removed_above += 1;
                        }
                        continue;
                    }
                    encode_frame(
                        &mut self.frame_buf,
                        head.id,
                        head.class,
                        head.appended_ms,
                        &self.payload_buf,
                    );
                    w.write_all(&self.frame_buf)
                        .map_err(io_err("writing", &tmp))?;
                    new.add(&head);
                }
            }
        }
        let out = w
            .into_inner()
            .map_err(|e| io_err("writing", &tmp)(e.into_error()))?;
        drop(r);
        drop(src);
        self.forget_reader(old.first_id);
        if new.records == 0 {
            drop(out);
            fs::remove_file(&tmp).map_err(io_err("removing", &tmp))?;
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            self.segs.remove(idx);
        } else {
            out.sync_all().map_err(io_err("fsyncing", &tmp))?;
            drop(out);
            fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp))?;
            self.segs[idx] = new.clone();
        }
        sync_dir(&self.cfg.dir)?;
        self.total_bytes =
            self.total_bytes - old.bytes + if new.records == 0 { 0 } else { new.bytes };
        self.above_watermark = self.above_watermark.saturating_sub(removed_above);
        self.front.hint = None;
        self.sent.hint = None;
        self.front_head = None;
        Ok(())
    }

    /// Deletes sealed segment `idx` whole, counting its records as dropped.
    fn drop_segment(&mut self, idx: usize) -> Result<(), SpoolError> {
        let seg = self.segs[idx].clone();
        let path = self.seg_path(seg.first_id);
        let above = if seg.last_id.is_none_or(|l| l <= self.watermark) {
            0
        } else if seg.first_record.is_some_and(|f| f > self.watermark) {
            seg.records
        } else {
            match scan_segment(&path, seg.first_id, 0, self.watermark, 0)? {
                Scan::Read { above, .. } => above,
                Scan::BadHeader => seg.records,
            }
        };
        self.forget_reader(seg.first_id);
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        self.dir_unsynced = true;
        for (d, n) in self.dropped.iter_mut().zip(seg.by_class) {
            *d += n;
        }
        self.segs.remove(idx);
        self.total_bytes -= seg.bytes;
        self.above_watermark = self.above_watermark.saturating_sub(above);
        self.front_head = None;
        Ok(())
    }

    /// Moves W past every record confirmed (or gone), deletes the sealed
    /// segments behind it, and writes the watermark.
    fn advance_front(&mut self) -> Result<(), SpoolError> {
        let before = self.watermark;
        loop {
            match self.find_next(self.front)? {
                None => {
                    self.watermark = self.watermark.max(self.next_id - 1);
                    let active = self.active();
                    self.front = Cursor {
                        after: self.watermark,
                        hint: Some(Hint {
                            seg: active.first_id,
                            gen: active.gen,
                            offset: active.bytes,
                        }),
                    };
                    self.front_head = None;
                    self.above_watermark = 0;
                    break;
                }
                Some(found) if self.confirmed_ahead.remove(&found.head.id) => {
                    self.watermark = found.head.id;
                    self.front = Cursor {
                        after: found.head.id,
                        hint: Some(Hint {
                            offset: found.at.offset + found.head.size,
                            ..found.at
                        }),
                    };
                    self.above_watermark = self.above_watermark.saturating_sub(1);
                }
                Some(found) => {
                    self.watermark = self.watermark.max(found.head.id - 1);
                    self.front = Cursor {
                        after: self.watermark,
                        hint: Some(found.at),
                    };
                    self.front_head = Some(found.head);
                    break;
                }
            }
        }
        self.confirmed_ahead = self.confirmed_ahead.split_off(&(self.watermark + 1));
        // Sealed segments wholly behind W go.
        while self.segs.len() > 1 && self.segs[0].last_id.is_none_or(|l| l <= self.watermark) {
            let seg = self.segs[0].clone();
            let path = self.seg_path(seg.first_id);
            self.forget_reader(seg.first_id);
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            self.dir_unsynced = true;
            self.segs.pop_front();
            self.total_bytes -= seg.bytes;
        }
        if self.watermark != before {
            let every = match self.cfg.fsync {
                FsyncPolicy::Always => ALWAYS_WATERMARK_SYNC_MS,
                FsyncPolicy::IntervalMs(ms) => ms,
            };
            let durable = self.last_state_sync.elapsed() >= Duration::from_millis(every);
            self.write_state(durable)?;
        }
        Ok(())
    }

    fn seg_index(&self, first_id: u64) -> Option<usize> {
        self.segs
            .binary_search_by_key(&first_id, |s| s.first_id)
            .ok()
    }

    /// The next good record after `cur`, its payload in `payload_buf`.
    /// Corruption met on the way is cut and counted.
    fn find_next(&mut self, cur: Cursor) -> Result<Option<Found>, SpoolError> {
        let start = cur.hint.and_then(|h| {
            self.seg_index(h.seg)
                .filter(|&i| self.segs[i].gen == h.gen)
                .map(|i| (i, h.offset))
        });
        let (mut idx, mut offset) = match start {
            Some(p) => p,
            None => match self
                .segs
                .iter()
                .position(|s| s.last_id.is_some_and(|l| l > cur.after))
            {
                Some(i) => (i, SEGMENT_HEADER_BYTES),
                None => return Ok(None),
            },
        };
        while idx < self.segs.len() {
            let seg = &self.segs[idx];
            let (first_id, gen, bytes) = (seg.first_id, seg.gen, seg.bytes);
            if offset >= bytes || seg.last_id.is_none_or(|l| l <= cur.after) {
                idx += 1;
                offset = SEGMENT_HEADER_BYTES;
                continue;
            }
            let slot = self.reader(first_id, gen)?;
            let mut r = PosReader {
                file: &self.readers[slot].2,
                pos: offset,
            };
            let read = read_frame(&mut r, bytes - offset, &mut self.payload_buf)
                .map_err(io_err("reading", &self.seg_path(first_id)))?;
            match read {
                FrameRead::End => {
                    idx += 1;
                    offset = SEGMENT_HEADER_BYTES;
                }
                FrameRead::Good(head) if head.id > cur.after => {
                    return Ok(Some(Found {
                        head,
                        at: Hint {
                            seg: first_id,
                            gen,
                            offset,
                        },
                    }));
                }
                FrameRead::Good(head) => offset += head.size,
                FrameRead::Bad => {
                    self.cut(idx, offset)?;
                }
            }
        }
        Ok(None)
    }

    /// Cuts segment `idx` at `offset` after a bad frame found by a read.
    fn cut(&mut self, idx: usize, offset: u64) -> Result<(), SpoolError> {
        let old = self.segs[idx].clone();
        let path = self.seg_path(old.first_id);
        self.corrupt_records += 1;
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        f.set_len(offset).map_err(io_err("truncating", &path))?;
        f.sync_all().map_err(io_err("fsyncing", &path))?;
        self.next_gen += 1;
        let after = idx
            .checked_sub(1)
            .and_then(|i| self.segs[i].last_id)
            .unwrap_or(0);
        let seg = match scan_segment(&path, old.first_id, after, self.watermark, self.next_gen)? {
            Scan::Read { mut seg, .. } => {
                seg.bytes = seg.bytes.min(offset);
                seg
            }
            Scan::BadHeader => Seg::empty(old.first_id, self.next_gen),
        };
        self.forget_reader(old.first_id);
        let lost = old.records.saturating_sub(seg.records);
        self.above_watermark = self.above_watermark.saturating_sub(lost);
        self.total_bytes = self.total_bytes - old.bytes + seg.bytes;
        self.segs[idx] = seg;
        self.front_head = None;
        Ok(())
    }

    /// A cached read handle for a segment generation.
    fn reader(&mut self, first_id: u64, gen: u64) -> Result<usize, SpoolError> {
        if let Some(i) = self
            .readers
            .iter()
            .position(|r| r.0 == first_id && r.1 == gen)
        {
            return Ok(i);
        }
        self.forget_reader(first_id);
        let path = self.seg_path(first_id);
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        if self.readers.len() >= 4 {
            self.readers.remove(0);
        }
        self.readers.push((first_id, gen, file));
        Ok(self.readers.len() - 1)
    }

    fn forget_reader(&mut self, first_id: u64) {
        self.readers.retain(|r| r.0 != first_id);
    }
}

/// Creates a segment file holding only its header, fsynced.
fn create_segment(path: &Path, first_id: u64) -> Result<File, SpoolError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("creating", path))?;
    f.write_all_at(&segment_header(first_id), 0)
        .map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("fsyncing", path))?;
    Ok(f)
}

/// Reads as much of `buf` as the file has from offset 0.
fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SEG: u64 = 4096;

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: SEG,
            fsync: FsyncPolicy::IntervalMs(1000),
        }
    }

    fn open(dir: &Path, max_bytes: u64) -> (Spool, RecoveryReport) {
        match Spool::open(config(dir, max_bytes)) {
            Ok(x) => x,
            Err(e) => panic!("open failed: {e}"),
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        let mut p = format!("record {i:>6} ").into_bytes();
        p.resize(100, b'.');
        p
    }

    fn append_n(spool: &mut Spool, n: u64, class: impl Fn(u64) -> RecordClass) -> Vec<u64> {
        (0..n)
            .map(|i| spool.append(class(i), &payload(i)).expect("append"))
            .collect()
    }

    fn read_all(spool: &mut Spool) -> Vec<Record> {
        let mut out = Vec::new();
        while spool.read_unsent(7, &mut out).expect("read_unsent") > 0 {}
        out
    }

    fn ids(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.id).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    fn bytes_on_disk(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|p| fs::metadata(p).expect("metadata").len())
            .sum()
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert!(report.state_reset);
        let classes = |i: u64| RecordClass::ALL[(i % 4) as usize];
        let appended = append_n(&mut spool, 200, classes);
        assert!(appended.windows(2).all(|w| w[0] < w[1]));
        assert!(segment_files(dir.path()).len() > 3, "several segments");
        let first = read_all(&mut spool);
        assert_eq!(ids(&first), appended);
        drop(spool);

        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!(report.records, 200);
        assert_eq!(report.unconfirmed, 200);
        assert_eq!((report.corrupt_records, report.truncated_bytes), (0, 0));
        let again = read_all(&mut spool);
        assert_eq!(again, first);
        for (i, r) in again.iter().enumerate() {
            assert_eq!(r.payload, payload(i as u64));
            assert_eq!(r.class, classes(i as u64));
        }
    }

    #[test]
    fn restart_resends_unconfirmed_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 100, |_| RecordClass::Status);
        assert_eq!(read_all(&mut spool).len(), 100);
        // Out of order, gap filled last: the watermark ends at the 30th.
        for &i in [4, 2, 0, 1, 3].iter().chain(&(5..30).collect::<Vec<_>>()) {
            spool.confirm(appended[i]);
        }
        spool.confirm(appended[7]); // a repeat
        assert_eq!(spool.stats().confirmed_through, appended[29]);
        assert_eq!(spool.stats().unconfirmed, 70);
        drop(spool); // no flush

        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!(report.unconfirmed, 70);
        let back = read_all(&mut spool);
        assert_eq!(ids(&back), appended[30..]);
        assert_eq!(back[0].payload, payload(30));
    }

    #[test]
    fn a_confirm_above_a_gap_is_resent_after_restart_never_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 10, |_| RecordClass::Event);
        read_all(&mut spool);
        spool.confirm(appended[5]); // the 1st..5th are still unconfirmed
        assert_eq!(spool.stats().unconfirmed, 9);
        drop(spool);
        let (mut spool, _) = open(dir.path(), 1 << 20);
        // Out-of-order confirms live in memory only: a duplicate, not a loss.
        assert_eq!(ids(&read_all(&mut spool)), appended);
    }

    #[test]
    fn confirmed_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 300, |_| RecordClass::Status);
        let segments = segment_files(dir.path()).len();
        assert!(segments > 5);
        assert_eq!(spool.stats().segments, segments);
        assert_eq!(spool.stats().bytes, bytes_on_disk(dir.path()));
        read_all(&mut spool);
        for &id in &appended[..150] {
            spool.confirm(id);
        }
        let half = segment_files(dir.path()).len();
        assert!(half < segments && half > 1, "{half} of {segments}");
        for &id in appended[150..].iter().rev() {
            spool.confirm(id);
        }
        let stats = spool.stats();
        assert_eq!(
            segment_files(dir.path()).len(),
            1,
            "only the active segment"
        );
        assert_eq!(stats.segments, 1);
        assert_eq!(stats.unconfirmed, 0);
        assert_eq!(stats.oldest_unconfirmed_ms, None);
        assert_eq!(stats.confirmed_through, appended[299]);
        assert_eq!(stats.bytes, bytes_on_disk(dir.path()));
        spool.flush().expect("flush");
        drop(spool);
        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!(report.unconfirmed, 0);
        assert!(read_all(&mut spool).is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 50, |_| RecordClass::Status);
        drop(spool);
        let last = segment_files(dir.path()).pop().expect("a segment");
        let len = fs::metadata(&last).expect("metadata").len();
        let f = OpenOptions::new().write(true).open(&last).expect("open");
        f.set_len(len - 40).expect("truncate mid-record");
        f.write_all_at(&[0xA5; 7], len - 47).expect("garble");
        f.write_all_at(&[0; 9], len - 40).expect("append zeros");
        drop(f);

        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!(report.corrupt_records, 1);
        assert_eq!(report.truncated_bytes, 125 - 40 + 9);
        assert_eq!(report.records, 49);
        let back = read_all(&mut spool);
        assert_eq!(ids(&back), appended[..49]);
        assert!(back
            .iter()
            .enumerate()
            .all(|(i, r)| r.payload == payload(i as u64)));

        let id = spool
            .append(RecordClass::Event, b"after recovery")
            .expect("append");
        assert!(id > appended[49], "ids are never reused");
        let mut out = Vec::new();
        spool.read_unsent(10, &mut out).expect("read");
        assert_eq!(ids(&out), [id]);
        assert_eq!(out[0].payload, b"after recovery");
        drop(spool);
        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!((report.corrupt_records, report.truncated_bytes), (0, 0));
        let mut want = appended[..49].to_vec();
        want.push(id);
        assert_eq!(ids(&read_all(&mut spool)), want);
    }

    #[test]
    fn corrupt_record_in_an_older_segment_skips_the_rest_of_that_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 100, |_| RecordClass::Status);
        drop(spool);
        let segments = segment_files(dir.path());
        assert!(segments.len() >= 3);
        let per_segment = (SEG - SEGMENT_HEADER_BYTES) / 125;
        // Flip one payload byte of the 5th record of the first segment.
        let f = OpenOptions::new()
            .write(true)
            .open(&segments[0])
            .expect("open");
        f.write_all_at(b"X", SEGMENT_HEADER_BYTES + 4 * 125 + 60)
            .expect("flip");
        drop(f);

        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert_eq!(report.corrupt_records, 1);
        assert_eq!(report.truncated_bytes, (per_segment - 4) * 125);
        let mut want = appended[..4].to_vec();
        want.extend_from_slice(&appended[per_segment as usize..]);
        let back = read_all(&mut spool);
        assert_eq!(ids(&back), want);
        assert!(back
            .iter()
            .all(|r| r.payload == payload(r.id - appended[0])));
    }

    #[test]
    fn full_spool_drops_oldest_positions_first_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 4 * SEG;
        let (mut spool, _) = open(dir.path(), max);
        let class = |i: u64| {
            if i.is_multiple_of(10) {
                RecordClass::Status
            } else {
                RecordClass::Position
            }
        };
        let mut by_id = HashMap::new();
        for i in 0..1000 {
            let id = spool.append(class(i), &payload(i)).expect("append");
            by_id.insert(id, i);
            assert!(spool.stats().bytes <= max);
            if i % 50 == 0 {
                assert!(bytes_on_disk(dir.path()) <= max);
            }
        }
        assert!(bytes_on_disk(dir.path()) <= max);
        let stats = spool.stats();
        let back = read_all(&mut spool);
        let statuses: Vec<u64> = back
            .iter()
            .filter(|r| r.class == RecordClass::Status)
            .map(|r| by_id[&r.id])
            .collect();
        assert_eq!(
            statuses,
            (0..1000).step_by(10).collect::<Vec<_>>(),
            "every status survives"
        );
        let positions: Vec<u64> = back
            .iter()
            .filter(|r| r.class == RecordClass::Position)
            .map(|r| by_id[&r.id])
            .collect();
        let all_positions: Vec<u64> = (0..1000).filter(|i| i % 10 != 0).collect();
        assert!(!positions.is_empty());
        assert_eq!(
            positions,
            all_positions[all_positions.len() - positions.len()..],
            "the newest positions survive"
        );
        assert_eq!(
            stats.dropped_of(RecordClass::Position),
            (900 - positions.len()) as u64
        );
        assert_eq!(stats.dropped[1..], [0, 0, 0]);
        assert_eq!(stats.records, back.len() as u64);
        assert!(back.windows(2).all(|w| w[0].id < w[1].id), "in order");
        assert!(back.iter().all(|r| r.payload == payload(by_id[&r.id])));

        // Everything read is confirmed: the watermark passes the dropped ids.
        for r in &back {
            spool.confirm(r.id);
        }
        let stats = spool.stats();
        assert_eq!(stats.unconfirmed, 0);
        assert_eq!(stats.confirmed_through, stats.next_id - 1);
        assert_eq!(stats.segments, 1);
    }

    #[test]
    fn full_spool_of_precious_records_drops_oldest_segment_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 3 * SEG;
        let (mut spool, _) = open(dir.path(), max);
        let mut sent = Vec::new();
        // Some were sent (in flight) before they were dropped.
        let appended = append_n(&mut spool, 20, |_| RecordClass::Event);
        spool.read_unsent(10, &mut sent).expect("read");
        let more = append_n(&mut spool, 480, |i| RecordClass::ALL[1 + (i % 3) as usize]);
        assert!(bytes_on_disk(dir.path()) <= max);
        let stats = spool.stats();
        let dropped: u64 = stats.dropped.iter().sum();
        assert!(dropped > 0);
        assert_eq!(stats.dropped_of(RecordClass::Position), 0);
        let back = read_all(&mut spool);
        assert_eq!(back.len() as u64 + dropped, 500);
        let all: Vec<u64> = appended.iter().chain(&more).copied().collect();
        assert_eq!(
            ids(&back),
            all[dropped as usize..],
            "the newest survive, in order"
        );
        // A late confirm of a dropped record is harmless.
        spool.confirm(sent[0].id);
        spool.rewind();
        assert_eq!(ids(&read_all(&mut spool)), ids(&back));
    }

    #[test]
    fn rewind_resends_in_order_after_an_uplink_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 20, |_| RecordClass::Status);
        let mut sent = Vec::new();
        spool.read_unsent(10, &mut sent).expect("read");
        assert_eq!(ids(&sent), appended[..10]);
        for i in [0, 1, 2, 4] {
            spool.confirm(appended[i]);
        }
        spool.rewind();
        let again = read_all(&mut spool);
        let mut want = vec![appended[3]];
        want.extend_from_slice(&appended[5..]);
        assert_eq!(ids(&again), want);
        assert!(read_all(&mut spool).is_empty());
        spool.rewind();
        assert_eq!(ids(&read_all(&mut spool)), want);
    }

    #[test]
    fn ids_keep_increasing_across_restarts_even_when_everything_was_confirmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut last = 0;
        for round in 0..4 {
            let (mut spool, _) = open(dir.path(), 1 << 20);
            assert!(read_all(&mut spool).is_empty(), "round {round}");
            let appended = append_n(&mut spool, 40, |_| RecordClass::Status);
            assert!(
                appended[0] > last,
                "round {round}: {} after {last}",
                appended[0]
            );
            last = appended[39];
            for r in read_all(&mut spool) {
                spool.confirm(r.id);
            }
            assert_eq!(spool.stats().unconfirmed, 0);
            if round % 2 == 0 {
                spool.flush().expect("flush");
            }
        }
        // Even with every segment and the state file gone but the last.
        fs::remove_file(dir.path().join(STATE_FILE)).expect("remove state");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let id = spool.append(RecordClass::Status, b"x").expect("append");
        assert!(id > last);
    }

    #[test]
    fn random_bytes_over_a_segment_never_panic_and_never_replay_garbage() {
        // SPOOL_FUZZ_ROUNDS / SPOOL_FUZZ_SEED for a longer run.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let mut rng = env("SPOOL_FUZZ_SEED").unwrap_or(0x9E37_79B9_7F4A_7C15) | 1;
        let rounds = env("SPOOL_FUZZ_ROUNDS").unwrap_or(60);
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..rounds {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut spool, _) = open(dir.path(), 1 << 20);
            let mut by_id = HashMap::new();
            for i in 0..80 {
                let id = spool
                    .append(RecordClass::ALL[(i % 4) as usize], &payload(i))
                    .expect("append");
                by_id.insert(id, i);
            }
            drop(spool);
            let mut files = segment_files(dir.path());
            files.push(dir.path().join(STATE_FILE));
            let mut state_damaged = false;
            for _ in 0..1 + next() % 3 {
                let path = &files[(next() % files.len() as u64) as usize];
                state_damaged |= path.ends_with(STATE_FILE);
                let len = fs::metadata(path).expect("metadata").len();
                let f = OpenOptions::new().write(true).open(path).expect("open");
                match next() % 4 {
                    0 => f.set_len(next() % (len + 1)).expect("truncate"),
                    1 => f.set_len(len + next() % 200).expect("extend with zeros"),
                    _ => {
                        let mut junk = vec![0u8; 1 + (next() % 300) as usize];
                        junk.iter_mut().for_each(|b| *b = next() as u8);
                        f.write_all_at(&junk, next() % (len + 1)).expect("garble");
                    }
                }
            }
            let (mut spool, _) = match Spool::open(config(dir.path(), 1 << 20)) {
                Ok(x) => x,
                Err(e) => panic!("round {round}: file content must not fail open: {e}"),
            };
            let back = read_all(&mut spool);
            assert!(
                back.windows(2).all(|w| w[0].id < w[1].id),
                "round {round}: in order"
            );
            for r in &back {
                let i = by_id.get(&r.id).copied();
                assert_eq!(
                    Some(&r.payload),
                    i.map(payload).as_ref(),
                    "round {round}: id {}",
                    r.id
                );
            }
            let id = spool.append(RecordClass::Status, b"after").expect("append");
            // With the state file and the tail both damaged, nothing is
            // left to tell which ids were handed out.
            assert!(
                state_damaged || by_id.keys().all(|&k| k < id),
                "round {round}: id reused"
            );
            drop(spool);
            let (_, report) = open(dir.path(), 1 << 20);
            assert_eq!(
                report.corrupt_records, 0,
                "round {round}: recovery is final"
            );
        }
    }

    #[test]
    fn a_damaged_state_slot_loses_no_id_reservation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let appended = append_n(&mut spool, 10, |_| RecordClass::Status);
        drop(spool);
        let state = OpenOptions::new()
            .write(true)
            .open(dir.path().join(STATE_FILE))
            .expect("open state");
        for slot in [0, STATE_SLOT_BYTES as u64] {
            // Either slot garbled, and the records' tail lost (a power cut
            // under the interval policy): the ids must not come back.
            state.write_all_at(&[0xEE; 16], slot + 12).expect("garble");
            let last = segment_files(dir.path()).pop().expect("segment");
            OpenOptions::new()
                .write(true)
                .open(&last)
                .and_then(|f| f.set_len(SEGMENT_HEADER_BYTES))
                .expect("truncate");
            let (mut spool, report) = open(dir.path(), 1 << 20);
            assert!(!report.state_reset);
            let id = spool.append(RecordClass::Status, b"x").expect("append");
            assert!(id > appended[9], "{id} reuses an id");
        }
    }

    #[test]
    fn unknown_format_version_is_an_error_not_a_wipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        append_n(&mut spool, 3, |_| RecordClass::Status);
        drop(spool);
        let seg = segment_files(dir.path()).remove(0);
        let mut header = segment_header(1);
        header[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.write_all_at(&header, 0).expect("write");
        let Err(err) = Spool::open(config(dir.path(), 1 << 20)) else {
            panic!("a segment of format version 2 must not open");
        };
        assert!(
            matches!(err, SpoolError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(".seg"), "{err}");
    }

    #[test]
    fn oversized_payload_and_bad_config_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let max = (SEG - SEGMENT_HEADER_BYTES - FRAME_OVERHEAD_BYTES) as usize;
        assert!(spool.append(RecordClass::Status, &vec![1; max]).is_ok());
        let err = spool
            .append(RecordClass::Status, &vec![1; max + 1])
            .expect_err("too large");
        assert!(matches!(err, SpoolError::TooLarge { .. }), "{err}");
        assert!(
            Spool::open(config(dir.path(), SEG)).is_err(),
            "max_bytes < 2 segments"
        );
    }

    #[test]
    fn spool_is_send() {
        fn send<T: Send>() {}
        send::<Spool>();
    }

    /// `cargo nextest run -p fleetgate --run-ignored only -E 'test(spool_append_throughput)' --no-capture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn spool_append_throughput_with_each_fsync_policy() {
        for (policy, n) in [
            (FsyncPolicy::IntervalMs(200), 200_000u64),
            (FsyncPolicy::Always, 2_000),
        ] {
            let dir = tempfile::tempdir_in(
                std::env::var("SPOOL_BENCH_DIR")
                    .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
            )
            .expect("tempdir");
            let (mut spool, _) = Spool::open(SpoolConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 256 << 20,
                segment_bytes: 4 << 20,
                fsync: policy,
            })
            .expect("open");
            let body = [7u8; 200];
            let start = Instant::now();
            for _ in 0..n {
                spool.append(RecordClass::Position, &body).expect("append");
            }
            spool.flush().expect("flush");
            let append_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let mut out = Vec::with_capacity(1000);
            let mut read = 0;
            loop {
                out.clear();
                let k = spool.read_unsent(1000, &mut out).expect("read");
                if k == 0 {
                    break;
                }
                read += k;
                for r in &out {
                    spool.confirm(r.id);
                }
            }
            let read_s = start.elapsed().as_secs_f64();
            println!(
                "{policy:?}: append {:.0} records/s ({n} x 200-byte payloads); read+confirm {:.0} records/s ({read})",
                n as f64 / append_s,
                read as f64 / read_s
            );
        }
    }
}
