//! The spool's bytes on disk: file names, segment headers, frames, state
//! slots, and the few file primitives that write them (see *Files*,
//! *Segment layout* and *The state file* in the [module documentation](super)).
//!
//! In: ids, classes, timestamps and payloads to encode; bytes from a segment
//! or the state file to check. Out: encoded headers, frames and slots;
//! decoded [`FrameHead`]s and [`State`]s, or `Bad`/`None` for any content
//! that does not check (never a panic, whatever the bytes). Bound: no
//! allocation of its own; [`read_frame`] fills the caller's payload buffer,
//! whose length is bounded by what is left of the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    io_err, RecordClass, SpoolError, FORMAT_VERSION, FRAME_OVERHEAD_BYTES, MAX_PERSISTED_RANGES,
    SEGMENT_HEADER_BYTES,
};

pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"FGSPOOL\0";
pub(super) const STATE_MAGIC: [u8; 8] = *b"FGSPSTA\0";
pub(super) const STATE_FILE: &str = "state";
/// The state file's format; version 1 (40-byte slots, no ranges) is read too.
pub(super) const STATE_VERSION: u32 = 2;
/// A version-1 slot, and the head of a version-2 one.
pub(super) const STATE_V1_SLOT_BYTES: usize = 40;
/// Room for a version-2 slot with every range it may hold: the second slot
/// starts here.
pub(super) const STATE_SLOT_BYTES: usize = 48 + 16 * MAX_PERSISTED_RANGES;

pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

pub(super) fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn segment_header(first_id: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_id.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn encode_frame(
    buf: &mut Vec<u8>,
    id: u64,
    class: RecordClass,
    appended_ms: u64,
    payload: &[u8],
) {
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
pub(super) struct FrameHead {
    pub(super) id: u64,
    pub(super) class: RecordClass,
    pub(super) appended_ms: u64,
    /// Bytes of the whole frame.
    pub(super) size: u64,
}

pub(super) enum FrameRead {
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
pub(super) fn read_frame<R: Read>(
    r: &mut R,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> io::Result<FrameRead> {
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
pub(super) struct PosReader<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsyncing directory", dir))
}

/// The state file's content, less the confirmed ranges (which the spool
/// keeps in [`super::confirmed::Confirmed`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct State {
    pub(super) seq: u64,
    pub(super) confirmed_through: u64,
    pub(super) id_floor: u64,
}

/// One slot as read back.
#[derive(Clone, Debug)]
pub(super) struct SlotRead {
    pub(super) state: State,
    /// The slot's format: 1 (no ranges) or [`STATE_VERSION`].
    pub(super) version: u32,
    /// Confirmed id ranges above `confirmed_through`, ascending, disjoint.
    pub(super) ranges: Vec<(u64, u64)>,
}

/// Encodes a slot of [`STATE_VERSION`] into `buf`: the head (laid out as a
/// version-1 slot, so a build that reads only version 1 refuses the file
/// rather than taking it for garbage), then at most
/// [`MAX_PERSISTED_RANGES`] of `ranges`.
pub(super) fn encode_state(buf: &mut Vec<u8>, s: &State, ranges: impl Iterator<Item = (u64, u64)>) {
    buf.clear();
    buf.extend_from_slice(&STATE_MAGIC);
    buf.extend_from_slice(&STATE_VERSION.to_le_bytes());
    buf.extend_from_slice(&s.seq.to_le_bytes());
    buf.extend_from_slice(&s.confirmed_through.to_le_bytes());
    buf.extend_from_slice(&s.id_floor.to_le_bytes());
    let crc = crc32fast::hash(&buf[..36]);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let mut n = 0u32;
    for (first, last) in ranges.take(MAX_PERSISTED_RANGES) {
        buf.extend_from_slice(&first.to_le_bytes());
        buf.extend_from_slice(&last.to_le_bytes());
        n += 1;
    }
    buf[40..44].copy_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes the slot at the start of `b`: `None` for anything that does not
/// check (torn, garbled, ranges out of order), an error for a valid head of
/// a version this build does not know (never overwrite a newer format).
pub(super) fn decode_state(path: &Path, b: &[u8]) -> Result<Option<SlotRead>, SpoolError> {
    if b.len() < STATE_V1_SLOT_BYTES
        || b[..8] != STATE_MAGIC
        || crc32fast::hash(&b[..36]) != le_u32(b, 36)
    {
        return Ok(None);
    }
    let state = State {
        seq: le_u64(b, 12),
        confirmed_through: le_u64(b, 20),
        id_floor: le_u64(b, 28),
    };
    let version = le_u32(b, 8);
    match version {
        1 => {
            return Ok(Some(SlotRead {
                state,
                version,
                ranges: Vec::new(),
            }))
        }
        STATE_VERSION => {}
        _ => {
            return Err(SpoolError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: STATE_VERSION,
            })
        }
    }
    let n = le_u32(b, 40) as usize;
    let end = 44 + 16 * n;
    if n > MAX_PERSISTED_RANGES || b.len() < end + 4 || crc32fast::hash(&b[..end]) != le_u32(b, end)
    {
        return Ok(None);
    }
    let mut ranges = Vec::with_capacity(n);
    let mut floor = state.confirmed_through;
    for i in 0..n {
        let (first, last) = (le_u64(b, 44 + 16 * i), le_u64(b, 52 + 16 * i));
        // Written ascending, above W, disjoint: anything else is not ours.
        if first <= floor || last < first {
            return Ok(None);
        }
        ranges.push((first, last));
        floor = last;
    }
    Ok(Some(SlotRead {
        state,
        version,
        ranges,
    }))
}

/// Creates a segment file holding only its header, fsynced.
pub(super) fn create_segment(path: &Path, first_id: u64) -> Result<File, SpoolError> {
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
pub(super) fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
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
