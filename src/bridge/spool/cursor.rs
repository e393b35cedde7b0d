//! The cursors: what has been sent, what is confirmed, and reading the log
//! by id (see *Cursors* and *Who deletes what, when* in the
//! [module documentation](super)).
//!
//! In: [`Spool::read_unsent`], [`Spool::rewind`] and [`Spool::confirm`]
//! calls, in any order, confirms repeated or out of order. Out: records in id
//! order from the sent cursor; the watermark W moved past every record
//! confirmed (or gone), and W with the out-of-order confirms written to the
//! state file once per confirm call; sealed segments wholly behind W
//! deleted. Bound: at most
//! [`MAX_CONFIRMED_RANGES`](super::MAX_CONFIRMED_RANGES) ranges of
//! out-of-order confirms (one that does not fit causes a duplicate, never a
//! loss); one payload buffer; at most 4 open read handles.

use std::fs::{self, File};
use std::time::Duration;

use super::format::{read_frame, FrameHead, FrameRead, PosReader};
use super::{io_err, FsyncPolicy, Record, Spool, SpoolError, SEGMENT_HEADER_BYTES};

/// How often, at most, a confirm fsyncs the watermark under
/// [`FsyncPolicy::Always`] (under `IntervalMs(n)`: every n ms).
const ALWAYS_WATERMARK_SYNC_MS: u64 = 100;

#[derive(Clone, Copy, Debug)]
pub(super) struct Hint {
    pub(super) seg: u64,
    pub(super) gen: u64,
    pub(super) offset: u64,
}

/// A position in the log: everything up to `after` is behind it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cursor {
    pub(super) after: u64,
    pub(super) hint: Option<Hint>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    pub(super) head: FrameHead,
    pub(super) at: Hint,
}

impl Spool {
    /// [`Spool::read_unsent`]: the records after the sent cursor, skipping
    /// those confirmed out of order.
    pub(super) fn read_after_sent(
        &mut self,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<usize, SpoolError> {
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
            if self.confirmed.contains(found.head.id) {
                continue;
            }
            if found.head.id < self.recovered_below && found.head.id > self.resent_through {
                self.resent_through = found.head.id;
                self.resent_after_recovery += 1;
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

    /// [`Spool::confirm`]: the oldest unconfirmed record moves W (and
    /// deletes what is behind it); any other is remembered, within
    /// [`MAX_CONFIRMED_RANGES`](super::MAX_CONFIRMED_RANGES). Either marks
    /// the state for [`Spool::save_state`].
    pub(super) fn record_confirm(&mut self, id: u64) {
        if id <= self.watermark || id >= self.next_id {
            return;
        }
        if self.front_head.is_none() {
            // Unknown since a compaction or a cut: found first, so that only
            // the front itself may pass the bound below.
            if let Err(e) = self.advance_front() {
                self.confirm_errors += 1;
                tracing::warn!(error = %e, id, "spool: confirm could not find the oldest record");
                return;
            }
            if id <= self.watermark {
                return;
            }
        }
        if let Some(head) = self.front_head {
            if head.id != id {
                if self.confirmed.contains(id) {
                    return;
                }
                if self.confirmed.insert(id) {
                    self.state_dirty = true;
                } else {
                    self.confirms_not_remembered += 1;
                }
                return;
            }
        }
        // The front: past the bound is fine, `advance_front` takes it (and
        // removes it) at once. Refused, W would wait behind it for good.
        self.confirmed.insert_past_bound(id);
        if let Err(e) = self.advance_front() {
            self.confirm_errors += 1;
            tracing::warn!(error = %e, id, "spool: confirm could not move the watermark");
        }
    }

    /// Writes W and the confirmed ranges if they changed since the last
    /// write: into the page cache at once (a process kill keeps them),
    /// fsynced at most every 100 ms (`Always`) or n ms (`IntervalMs(n)`).
    /// A failure is counted: it costs duplicates after a restart, nothing
    /// more.
    pub(super) fn save_state(&mut self) {
        if !self.state_dirty {
            return;
        }
        let every = match self.cfg.fsync {
            FsyncPolicy::Always => ALWAYS_WATERMARK_SYNC_MS,
            FsyncPolicy::IntervalMs(ms) => ms,
        };
        let durable = self.last_state_sync.elapsed() >= Duration::from_millis(every);
        if let Err(e) = self.write_state(durable) {
            self.confirm_errors += 1;
            tracing::warn!(error = %e, "spool: confirms could not be written to the state file");
        }
    }

    /// Moves W past every record confirmed (or gone) at the front, deletes
    /// the sealed segments behind it, and marks the state for
    /// [`Spool::save_state`] when W moved.
    pub(super) fn advance_front(&mut self) -> Result<(), SpoolError> {
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
                Some(found) if self.confirmed.contains(found.head.id) => {
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
        self.confirmed.remove_through(self.watermark);
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
            self.state_dirty = true;
        }
        Ok(())
    }

    pub(super) fn seg_index(&self, first_id: u64) -> Option<usize> {
        self.segs
            .binary_search_by_key(&first_id, |s| s.first_id)
            .ok()
    }

    /// The next good record after `cur`, its payload in `payload_buf`.
    /// Corruption met on the way is cut and counted.
    pub(super) fn find_next(&mut self, cur: Cursor) -> Result<Option<Found>, SpoolError> {
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

    /// A cached read handle for a segment generation.
    pub(super) fn reader(&mut self, first_id: u64, gen: u64) -> Result<usize, SpoolError> {
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

    pub(super) fn forget_reader(&mut self, first_id: u64) {
        self.readers.retain(|r| r.0 != first_id);
    }
}
