//! The write path: appends, seals, id reservations and fsyncs (see *Fsync
//! policy and loss windows* in the [module documentation](super)).
//!
//! In: a record's class and payload from [`Spool::append`]; [`Spool::flush`]
//! calls. Out: one frame per record at the end of the active segment (one
//! `pwrite`, so a process kill loses nothing `append` returned), new segments
//! when the active one is full, state-file slots (W, confirmed ranges, ids
//! reserved in blocks of 4096), and fsyncs of segments, state file and
//! directory as the [`FsyncPolicy`] asks. Bound: one frame buffer (the
//! largest payload plus 25 bytes) and one state slot (at most 16 KiB); the
//! full policy ([`super::full`]) runs first, so `max_bytes` holds.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::format::{
    create_segment, encode_frame, encode_state, sync_dir, FrameHead, STATE_FILE, STATE_SLOT_BYTES,
};
use super::{
    io_err, FsyncPolicy, RecordClass, Seg, Spool, SpoolError, FRAME_OVERHEAD_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::clock::now_ms;

/// Ids reserved in the state file at a time: the most a restart skips.
const ID_BLOCK: u64 = 4096;

impl Spool {
    /// [`Spool::append`]: the full policy, a seal if the frame does not fit
    /// the active segment, an id reservation when the block is used up, one
    /// `pwrite`, and an fsync when the policy says so.
    pub(super) fn append_record(
        &mut self,
        class: RecordClass,
        payload: &[u8],
    ) -> Result<u64, SpoolError> {
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

    /// [`Spool::flush`]: fsyncs whatever is pending.
    pub(super) fn flush_pending(&mut self) -> Result<(), SpoolError> {
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

    pub(super) fn sync_active(&mut self) -> Result<(), SpoolError> {
        self.writer
            .sync_data()
            .map_err(io_err("fsyncing", &self.active_path()))?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes the state (W, the lowest `persisted_ranges` confirmed ranges,
    /// the id reservation) into its older slot; `durable` fsyncs it.
    pub(super) fn write_state(&mut self, durable: bool) -> Result<(), SpoolError> {
        let path = self.dir().join(STATE_FILE);
        self.state.seq += 1;
        let w = self.watermark;
        self.state.confirmed_through = w;
        // Clipped to above W: a move of W cut short by an I/O error may
        // leave confirms at or below it, and a slot with one would not
        // decode.
        let ranges = self
            .confirmed
            .ranges()
            .filter(|&(_, last)| last > w)
            .map(|(first, last)| (first.max(w + 1), last));
        encode_state(
            &mut self.state_buf,
            &self.state,
            ranges.take(self.cfg.persisted_ranges),
        );
        let slot = (self.state.seq % 2) * STATE_SLOT_BYTES as u64;
        self.state_file
            .write_all_at(&self.state_buf, slot)
            .map_err(io_err("writing", &path))?;
        self.state_dirty = false;
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
    pub(super) fn seal(&mut self) -> Result<(), SpoolError> {
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
}
