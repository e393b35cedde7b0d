//! One SMQ queue (a channel's, or a topic's before it has channels) and the
//! byte pool all of them share.
//!
//! In: messages ([`Entry`]) pushed by the hub, taken by consumers. Out:
//! the oldest first. Bound: at most `limit` (`smq.mem_queue_size`) entries;
//! every body it holds and every slot past its first [`MIN_QUEUE_SLOTS`] is
//! charged to the [`Pool`] (`smq.max_bytes`), exactly: the capacity grows by
//! doubling up to `limit` and halves when three quarters are empty.
//!
//! Full: at `limit` the oldest entry is dropped to make room
//! (`drop_oldest`); when the pool cannot take the new body (or the slots
//! it needs), the new entry is dropped (`drop_newest`). [`Pushed`] says
//! which, and the caller counts it.

use std::collections::VecDeque;
use std::mem::size_of;

use bytes::Bytes;

pub use super::config::MIN_QUEUE_SLOTS;

/// A message: its id (the 16 bytes a consumer gets before the body) and
/// body (shared by every queue it waits in).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: [u8; 16],
    pub body: Bytes,
}

const SLOT: usize = size_of::<Entry>();

/// The bytes every SMQ queue together may hold.
#[derive(Debug)]
pub struct Pool {
    used: usize,
    max: usize,
}

impl Pool {
    pub fn new(max: usize) -> Self {
        Pool { used: 0, max }
    }

    pub fn used(&self) -> usize {
        self.used
    }

    fn fits(&self, bytes: usize) -> bool {
        self.used.saturating_add(bytes) <= self.max
    }

    fn charge(&mut self, bytes: usize) {
        self.used = self.used.saturating_add(bytes);
    }

    fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest entry was dropped to make room (`limit`).
    DroppedOldest,
    /// Not queued: the pool is full.
    DroppedNew,
}

#[derive(Debug)]
pub struct MsgQueue {
    entries: VecDeque<Entry>,
}

impl Default for MsgQueue {
    fn default() -> Self {
        MsgQueue {
            entries: VecDeque::with_capacity(MIN_QUEUE_SLOTS),
        }
    }
}

fn slot_bytes(capacity: usize) -> usize {
    capacity.saturating_sub(MIN_QUEUE_SLOTS) * SLOT
}

impl MsgQueue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `entry` under the policies above.
    pub fn push(&mut self, entry: Entry, limit: usize, pool: &mut Pool) -> Pushed {
        let mut pushed = Pushed::Queued;
        if self.entries.len() >= limit.max(1) {
            if let Some(old) = self.entries.pop_front() {
                pool.release(old.body.len());
                pushed = Pushed::DroppedOldest;
            }
        }
        let len = self.entries.len();
        let capacity = self.entries.capacity();
        let grow_to = if len == capacity {
            (capacity * 2).clamp(MIN_QUEUE_SLOTS, limit.max(MIN_QUEUE_SLOTS))
        } else {
            capacity
        };
        let growth = slot_bytes(grow_to) - slot_bytes(capacity);
        if !pool.fits(entry.body.len() + growth) {
            return Pushed::DroppedNew;
        }
        if grow_to > capacity {
            self.entries.reserve_exact(grow_to - len);
            pool.charge(slot_bytes(self.entries.capacity()) - slot_bytes(capacity));
        }
        pool.charge(entry.body.len());
        self.entries.push_back(entry);
        pushed
    }

    /// Takes the oldest entry.
    pub fn pop(&mut self, pool: &mut Pool) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        pool.release(entry.body.len());
        let capacity = self.entries.capacity();
        if capacity > MIN_QUEUE_SLOTS && self.entries.len() < capacity / 4 {
            self.entries.shrink_to((capacity / 2).max(MIN_QUEUE_SLOTS));
            pool.release(slot_bytes(capacity) - slot_bytes(self.entries.capacity()));
        }
        Some(entry)
    }

    /// Drops everything, giving its bytes back; returns how many entries.
    pub fn clear(&mut self, pool: &mut Pool) -> usize {
        let n = self.entries.len();
        let bodies: usize = self.entries.iter().map(|e| e.body.len()).sum();
        pool.release(bodies + slot_bytes(self.entries.capacity()));
        self.entries = VecDeque::with_capacity(MIN_QUEUE_SLOTS);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, len: usize) -> Entry {
        Entry {
            id: [n; 16],
            body: Bytes::from(vec![n; len]),
        }
    }

    #[test]
    fn full_queue_drops_its_oldest() {
        let mut pool = Pool::new(1 << 20);
        let mut q = MsgQueue::default();
        for n in 0..5 {
            assert_eq!(q.push(entry(n, 10), 5, &mut pool), Pushed::Queued);
        }
        assert_eq!(q.push(entry(5, 10), 5, &mut pool), Pushed::DroppedOldest);
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop(&mut pool).unwrap().id, [1; 16]);
    }

    #[test]
    fn full_pool_drops_the_newest_and_counts_every_byte() {
        let mut pool = Pool::new(100);
        let mut q = MsgQueue::default();
        assert_eq!(q.push(entry(0, 60), 10, &mut pool), Pushed::Queued);
        assert_eq!(q.push(entry(1, 60), 10, &mut pool), Pushed::DroppedNew);
        assert_eq!(pool.used(), 60);
        q.pop(&mut pool);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn slots_are_charged_as_the_queue_grows_and_given_back_as_it_shrinks() {
        let mut pool = Pool::new(1 << 20);
        let mut q = MsgQueue::default();
        for n in 0..1000u32 {
            q.push(entry(n as u8, 1), 10_000, &mut pool);
        }
        let cap = q.entries.capacity();
        assert!(cap <= 2048, "{cap}");
        assert_eq!(pool.used(), 1000 + slot_bytes(cap));
        while q.pop(&mut pool).is_some() {}
        assert_eq!(pool.used(), slot_bytes(q.entries.capacity()));
        assert!(q.entries.capacity() <= 2 * MIN_QUEUE_SLOTS);
        q.clear(&mut pool);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn capacity_never_passes_the_limit() {
        let mut pool = Pool::new(1 << 30);
        let mut q = MsgQueue::default();
        for n in 0..30_000u32 {
            q.push(entry(n as u8, 0), 10_000, &mut pool);
        }
        assert_eq!(q.len(), 10_000);
        assert_eq!(q.entries.capacity(), 10_000);
    }
}
