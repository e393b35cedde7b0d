//! The full policy, `drop_oldest_positions` (see *Who deletes what, when*
//! in the [module documentation](super)).
//!
//! In: the size of the frame [`Spool::append`] is about to write. Out: room
//! for it within `max_bytes`, made by compacting the oldest sealed segment
//! that holds positions (rewritten without them through `<name>.seg.tmp` and
//! a rename), by sealing the active segment when only it holds positions,
//! and at last by deleting the oldest sealed segment whole; every dropped
//! record counted by class. Or [`SpoolError::Full`] when nothing can be
//! dropped. Bound: one segment's `.tmp` beside the one it replaces on disk;
//! a 64 KiB read buffer, a 64 KiB write buffer and one payload in memory;
//! at most `2 × segments + 8` steps per append.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};

use super::format::{
    encode_frame, read_frame, segment_header, segment_name, sync_dir, FrameRead, PosReader,
};
use super::recovery::{scan_segment, Scan};
use super::{io_err, RecordClass, Seg, Spool, SpoolError, SEGMENT_HEADER_BYTES};

impl Spool {
    /// The full policy, `drop_oldest_positions`: see the module docs.
    pub(super) fn make_room(&mut self, size: u64) -> Result<(), SpoolError> {
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
            self.save_state();
        }
        Ok(())
    }

    /// Rewrites sealed segment `idx` without its positions.
    pub(super) fn compact(&mut self, idx: usize) -> Result<(), SpoolError> {
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
    pub(super) fn drop_segment(&mut self, idx: usize) -> Result<(), SpoolError> {
        let seg = self.segs[idx].clone();
        let path = self.seg_path(seg.first_id);
        let above = if seg.last_id.is_none_or(|l| l <= self.watermark) {
            0
        } else if seg.first_record.is_some_and(|f| f > self.watermark) {
            seg.records
        } else {
            match scan_segment(&path, seg.first_id, 0, self.watermark, &self.confirmed, 0)? {
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
}
