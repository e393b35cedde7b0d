//! Recovery: [`Spool::open`]'s work, and the same cut applied when a later
//! read meets a bad frame (see *Recovery* in the [module documentation](super)).
//!
//! In: a [`SpoolConfig`] and whatever the directory holds (any bytes, stale
//! `.tmp` files, torn tails, unreadable headers). Out: an open [`Spool`] with
//! every segment checked frame by frame, torn or corrupt tails truncated on
//! disk, and a [`RecoveryReport`] counting each cut; or an error for I/O, a
//! bad configuration, or a format version this build does not know (never a
//! wipe). Bound: one 64 KiB read buffer and one payload at a time while
//! scanning; the per-segment summaries the spool keeps anyway.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use super::confirmed::Confirmed;
use super::cursor::Cursor;
use super::format::{
    create_segment, decode_state, le_u32, le_u64, parse_segment_name, read_frame, read_up_to,
    segment_name, sync_dir, FrameRead, SlotRead, SEGMENT_MAGIC, STATE_FILE, STATE_SLOT_BYTES,
    STATE_V1_SLOT_BYTES,
};
use super::{
    io_err, FsyncPolicy, RecoveryReport, Seg, Spool, SpoolConfig, SpoolError, FORMAT_VERSION,
    FRAME_OVERHEAD_BYTES, MIN_SEGMENT_BYTES, SEGMENT_HEADER_BYTES,
};

impl Spool {
    /// [`Spool::open`]: checks the configuration, lists the directory,
    /// reads the state file, scans every segment and cuts what does not check.
    pub(super) fn recover(config: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
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
        let mut raw = vec![0u8; 2 * STATE_SLOT_BYTES];
        let n = read_up_to(&state_file, &mut raw).map_err(io_err("reading", &state_path))?;
        let raw = &raw[..n];
        // Version-2 slots at 0 and STATE_SLOT_BYTES; a version-1 file's at 0
        // and 40. The valid one with the highest seq wins, whichever it is.
        let mut best: Option<SlotRead> = None;
        for at in [0, STATE_V1_SLOT_BYTES, STATE_SLOT_BYTES] {
            let Some(slot) = decode_state(&state_path, raw.get(at..).unwrap_or(&[]))? else {
                continue;
            };
            if best.as_ref().is_none_or(|b| slot.state.seq > b.state.seq) {
                best = Some(slot);
            }
        }
        report.state_reset = best.is_none();
        let upgrade = best.as_ref().is_some_and(|b| b.version == 1);
        let mut confirmed = Confirmed::default();
        let mut state = Default::default();
        if let Some(best) = best {
            for (first, last) in best.ranges {
                confirmed.insert_range(first, last);
            }
            state = best.state;
        }
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
            match scan_segment(&path, first_id, last_id, watermark, &confirmed, next_gen)? {
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
                Scan::Read {
                    seg,
                    cut,
                    above,
                    above_confirmed,
                } => {
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
                    report.confirmed_out_of_order += above_confirmed;
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
            confirmed,
            above_watermark,
            state_file,
            state,
            state_dirty: false,
            state_buf: Vec::new(),
            state_unsynced: false,
            last_state_sync: now,
            unsynced: false,
            last_sync: now,
            dir_unsynced: false,
            dropped: [0; 4],
            corrupt_records: 0,
            confirms_not_remembered: 0,
            confirm_errors: 0,
            recovered_below: next_id,
            resent_through: 0,
            resent_after_recovery: 0,
            frame_buf: Vec::new(),
            payload_buf: Vec::new(),
            readers: Vec::new(),
            cfg: config,
        };
        if report.state_reset || upgrade {
            if upgrade && spool.state.seq % 2 == 1 {
                // So the next write (seq + 1, odd) goes to the second slot,
                // clear of both version-1 slots: torn, it leaves the old
                // state whole.
                spool.state.seq += 1;
            }
            // A first state (or the first in this version), so the file
            // holds a valid slot from now on.
            spool.write_state(true)?;
        }
        spool.advance_front()?;
        spool.save_state();
        spool.sent = spool.front;
        report.records = spool.segs.iter().map(|s| s.records).sum();
        report.unconfirmed = spool
            .above_watermark
            .saturating_sub(report.confirmed_out_of_order);
        report.segments = spool.segs.len();
        Ok((spool, report))
    }

    /// Cuts segment `idx` at `offset` after a bad frame found by a read.
    pub(super) fn cut(&mut self, idx: usize, offset: u64) -> Result<(), SpoolError> {
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
        let seg = match scan_segment(
            &path,
            old.first_id,
            after,
            self.watermark,
            &self.confirmed,
            self.next_gen,
        )? {
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
}

pub(super) enum Scan {
    /// The header is unreadable.
    BadHeader,
    Read {
        seg: Seg,
        /// The frames after the last good one are bad.
        cut: bool,
        /// Good records with id > the watermark given.
        above: u64,
        /// Of those, the ones in the confirmed ranges given.
        above_confirmed: u64,
    },
}

/// Reads a whole segment, frame by frame, stopping at the first bad frame.
pub(super) fn scan_segment(
    path: &Path,
    first_id: u64,
    after_id: u64,
    watermark: u64,
    confirmed: &Confirmed,
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
    let mut above_confirmed = 0;
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
                    if confirmed.contains(head.id) {
                        above_confirmed += 1;
                    }
                }
                seg.add(&head);
            }
        }
    };
    Ok(Scan::Read {
        seg,
        cut,
        above,
        above_confirmed,
    })
}
