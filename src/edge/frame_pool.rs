//! One budget, shared by every vehicle connection, for the large frames
//! they are in the middle of reading.
//!
//! In: a connection that has read the header of a frame longer than
//! [`SMALL_FRAME_BYTES`] and must buffer the rest. Out: room for it, or a
//! refusal: that connection is closed (counted in
//! `connections_closed_frame_pool_total`), nobody else is affected. Bound: `mqtt.large_frame_pool_bytes` in all, on top of at most
//! [`SMALL_FRAME_BYTES`] per connection.
//!
//! Why: a position is ~50 bytes, but any client may announce a frame of up
//! to `mqtt.max_packet_size_bytes` and then send it slowly. Without a shared
//! budget the worst case is every connection holding one such partial frame
//! (12 000 × 16 KiB = 188 MiB with the defaults); with it, the bound is the
//! pool, and a flood of slow large frames costs only the clients that send
//! them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Frames up to this long are read without asking the pool: every
/// connection may hold one partial frame of this size.
pub const SMALL_FRAME_BYTES: usize = 1024;

/// The shared budget for partial frames larger than [`SMALL_FRAME_BYTES`].
#[derive(Debug)]
pub struct FramePool {
    used: AtomicUsize,
    capacity: usize,
}

impl FramePool {
    pub fn new(capacity: usize) -> FramePool {
        FramePool {
            used: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Takes `bytes` from the pool, or refuses if that would pass its
    /// capacity.
    pub fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.capacity)
            })
            .is_ok()
    }

    /// Gives back what [`take`](Self::take) took.
    pub fn give(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_refuses_only_what_would_pass_it() {
        let pool = FramePool::new(10_000);
        assert!(pool.take(6_000));
        assert!(!pool.take(6_000), "the one that would pass it is refused");
        assert!(pool.take(4_000), "a smaller one still fits");
        pool.give(6_000);
        assert_eq!(pool.used(), 4_000);
        assert!(pool.take(6_000));
    }
}
