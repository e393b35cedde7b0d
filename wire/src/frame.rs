//! COBS framing for serial links.
//!
//! In: messages to send (written to any [`embedded_io::Write`]), or raw bytes
//! read from a serial port in chunks of any size. Out: COBS frames on the
//! writer (`COBS(tag + postcard) 0x00`), and complete decoded payloads
//! (`tag + postcard`, ready for [`crate::decode`]) from a [`FrameAccumulator`].
//!
//! Bound: writing needs only the caller's `scratch` buffer (the encoded
//! message, at most [`crate::MAX_ENCODED_LEN`] bytes); the COBS bytes are
//! streamed to the writer block by block, so no second buffer is needed. A
//! `FrameAccumulator<N>` holds one decoded payload of at most `N` bytes plus
//! a few bytes of state; a longer frame is reported as
//! [`FrameDefect::Oversized`] and skipped up to the next `0x00`, after which
//! decoding resynchronises by itself.
//!
//! COBS (Consistent Overhead Byte Stuffing) removes every `0x00` from the
//! payload so that `0x00` can mark the end of a frame: a reader that starts
//! mid-stream, or loses bytes, finds the next frame boundary at the next
//! `0x00`. The overhead is one byte per 254 payload bytes plus the delimiter.

use crate::{encode, Error, WireMessage};

/// The byte that ends every frame (and never occurs inside one).
pub const FRAME_DELIMITER: u8 = 0x00;

/// Longest COBS encoding (delimiter included) of a payload of `payload_len` bytes.
pub const fn max_frame_len(payload_len: usize) -> usize {
    // One code byte per started block of 254 bytes, at least one, plus the delimiter.
    payload_len + payload_len / 254 + 1 + 1
}

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError<E> {
    /// The message could not be encoded (usually: `scratch` is too small).
    Encode(Error),
    /// The writer failed.
    Io(E),
}

impl<E: core::fmt::Debug> core::fmt::Display for FrameError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Encode(e) => write!(f, "cannot encode frame: {e}"),
            FrameError::Io(e) => write!(f, "cannot write frame: {e:?}"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: core::fmt::Debug> std::error::Error for FrameError<E> {}

/// Encodes `msg` (tag + postcard) into `scratch` and writes it as one COBS
/// frame, delimiter included. `scratch` must hold the encoded message
/// ([`crate::MAX_ENCODED_LEN`] bytes always suffice).
pub fn write_frame<W: embedded_io::Write, M: WireMessage>(
    w: &mut W,
    msg: &M,
    scratch: &mut [u8],
) -> Result<(), FrameError<W::Error>> {
    let payload = encode(msg, scratch).map_err(FrameError::Encode)?;
    write_payload_frame(w, payload).map_err(FrameError::Io)
}

/// Writes an already encoded payload as one COBS frame, delimiter included.
///
/// The frame goes out in several `write_all` calls (one per COBS block);
/// a buffered writer or a UART FIFO coalesces them.
pub fn write_payload_frame<W: embedded_io::Write>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), W::Error> {
    let mut rest = payload;
    loop {
        // A block is up to 254 non-zero bytes, ended by a zero (which the
        // code byte stands for) or by reaching 254 bytes (code 0xFF, no zero).
        let window = &rest[..rest.len().min(254)];
        let run = window.iter().position(|&b| b == 0).unwrap_or(window.len());
        let ended_by_zero = run < window.len();
        let code = u8::try_from(run + 1).unwrap_or(0xFF);
        w.write_all(&[code])?;
        w.write_all(&rest[..run])?;
        if ended_by_zero {
            rest = &rest[run + 1..];
            // A zero as the very last payload byte still needs the empty
            // block that stands for it: loop once more with an empty `rest`.
            continue;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            break;
        }
    }
    w.write_all(&[FRAME_DELIMITER])?;
    Ok(())
}

/// Why bytes between two delimiters were not a frame. The accumulator has
/// already resynchronised when it reports one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDefect {
    /// The decoded frame was longer than the accumulator's capacity; its
    /// bytes up to the next delimiter were skipped.
    Oversized {
        /// The accumulator's capacity in decoded bytes.
        limit: usize,
    },
    /// The bytes were not valid COBS (a block announced more bytes than the
    /// frame held).
    BadCobs,
}

impl core::fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameDefect::Oversized { limit } => write!(f, "frame longer than {limit} bytes"),
            FrameDefect::BadCobs => f.write_str("invalid COBS frame"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameDefect {}

/// What one call to [`FrameAccumulator::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedResult<'a, 'b> {
    /// All input was consumed and no frame ended in it; feed the next read.
    Consumed,
    /// A frame ended: its decoded payload, and the input not yet consumed
    /// (feed it again: it may hold more frames).
    Frame {
        /// The frame's decoded bytes, borrowed from the accumulator.
        payload: &'a [u8],
        /// The input after the frame's delimiter.
        remaining: &'b [u8],
    },
    /// Bytes ending at a delimiter were not a valid frame; `remaining` is the
    /// input after that delimiter.
    Defect {
        /// What was wrong with the frame.
        defect: FrameDefect,
        /// The input after the bad frame's delimiter.
        remaining: &'b [u8],
    },
}

/// Reassembles COBS frames from reads of any size and decodes them on the fly.
///
/// ```
/// # use fleetgate_wire::frame::{FrameAccumulator, FeedResult};
/// let mut acc = FrameAccumulator::<64>::new();
/// let mut window: &[u8] = &[0x03, 0x11, 0x22, 0x00, 0x02, 0x33];
/// while !window.is_empty() {
///     window = match acc.feed(window) {
///         FeedResult::Consumed => break,
///         FeedResult::Frame { payload, remaining } => {
///             assert_eq!(payload, &[0x11, 0x22]);
///             remaining
///         }
///         FeedResult::Defect { remaining, .. } => remaining,
///     };
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FrameAccumulator<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Data bytes still expected in the current COBS block; 0 means the next
    /// byte is a code byte.
    block_remaining: u8,
    /// The block just finished stands for a zero, to be emitted only if
    /// another block follows (the last block's implied zero is not data).
    zero_pending: bool,
    /// The current frame has outgrown `buf`; skip to the next delimiter.
    overflowed: bool,
}

impl<const N: usize> Default for FrameAccumulator<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameAccumulator<N> {
    /// An empty accumulator for frames of up to `N` decoded bytes.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            block_remaining: 0,
            zero_pending: false,
            overflowed: false,
        }
    }

    /// Forgets any partial frame (e.g. after the link was reset).
    pub fn reset(&mut self) {
        self.len = 0;
        self.block_remaining = 0;
        self.zero_pending = false;
        self.overflowed = false;
    }

    /// Consumes `input` up to and including the first delimiter and reports
    /// what it found; bytes after the delimiter are handed back in
    /// `remaining`. Empty frames (consecutive delimiters) are skipped silently,
    /// so a sender may start with a delimiter to flush line noise.
    pub fn feed<'a, 'b>(&'a mut self, input: &'b [u8]) -> FeedResult<'a, 'b> {
        for (i, &byte) in input.iter().enumerate() {
            if byte == FRAME_DELIMITER {
                let remaining = &input[i + 1..];
                let defect = if self.overflowed {
                    Some(FrameDefect::Oversized { limit: N })
                } else if self.block_remaining != 0 {
                    Some(FrameDefect::BadCobs)
                } else {
                    None
                };
                let frame_len = self.len;
                self.reset();
                match defect {
                    Some(defect) => return FeedResult::Defect { defect, remaining },
                    // Consecutive delimiters, or a frame of only a code byte
                    // (an empty payload): nothing to decode, keep scanning.
                    // A loop, not recursion: a flood of zeros must not grow the stack.
                    None if frame_len == 0 => continue,
                    None => {
                        return FeedResult::Frame {
                            payload: &self.buf[..frame_len],
                            remaining,
                        }
                    }
                }
            }
            if self.overflowed {
                continue;
            }
            if self.block_remaining == 0 {
                // `byte` is a code byte: it opens a block of `byte - 1` data bytes.
                if self.zero_pending {
                    self.push(0);
                }
                self.zero_pending = byte != 0xFF;
                self.block_remaining = byte - 1;
            } else {
                self.push(byte);
                self.block_remaining -= 1;
            }
        }
        FeedResult::Consumed
    }

    fn push(&mut self, byte: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }
}

// Runs without std too (`cargo test -p fleetgate-wire --no-default-features`):
// a fixed slice is the writer, as on a device.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Command, MAX_ENCODED_LEN};

    #[test]
    fn a_frame_written_to_a_slice_decodes_back() {
        let mut out = [0u8; max_frame_len(MAX_ENCODED_LEN)];
        let mut scratch = [0u8; MAX_ENCODED_LEN];
        let mut writer: &mut [u8] = &mut out;
        let command = Command::SetReportInterval { interval_ms: 5000 };
        assert!(write_frame(&mut writer, &command, &mut scratch).is_ok());
        let unused = writer.len();
        let written = out.len() - unused;
        assert_eq!(&out[..written], &[0x02, 0x13, 0x03, 0x88, 0x27, 0x00]);

        let mut acc = FrameAccumulator::<MAX_ENCODED_LEN>::new();
        match acc.feed(&out[..written]) {
            FeedResult::Frame { payload, remaining } => {
                assert!(remaining.is_empty());
                assert_eq!(decode::<Command>(payload), Ok(command));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_writer_is_an_io_error_not_a_panic() {
        let mut out = [0u8; 3];
        let mut scratch = [0u8; MAX_ENCODED_LEN];
        let mut writer: &mut [u8] = &mut out;
        let result = write_frame(
            &mut writer,
            &Command::SetReportInterval { interval_ms: 5000 },
            &mut scratch,
        );
        assert!(matches!(result, Err(FrameError::Io(_))));
        let mut tiny_scratch = [0u8; 2];
        let mut out = [0u8; 16];
        let mut writer: &mut [u8] = &mut out;
        let result = write_frame(
            &mut writer,
            &Command::SetReportInterval { interval_ms: 5000 },
            &mut tiny_scratch,
        );
        assert_eq!(result, Err(FrameError::Encode(crate::Error::BufferFull)));
    }
}
