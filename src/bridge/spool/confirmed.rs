//! The confirms above the watermark, as ranges of ids (see *Cursors* and
//! *Memory* in the [module documentation](super)).
//!
//! In: ids confirmed out of order (above W, behind an unconfirmed record),
//! and each new W. Out: whether an id is confirmed; the ranges, lowest
//! first, for the state file. Bound: at most [`MAX_CONFIRMED_RANGES`]
//! ranges, whatever the number of ids they cover: an id that would start a
//! new range past the bound is refused (the caller counts it, and the
//! record is sent again: a duplicate, never a loss).
//!
//! Ranges, not single ids, because that is what a window of publisher
//! confirms looks like behind one stuck record: one run of thousands of ids
//! is one entry in memory and 16 bytes in the state file.

use std::collections::BTreeMap;

use super::MAX_CONFIRMED_RANGES;

/// Disjoint, non-adjacent ranges of confirmed ids: `first → last`.
#[derive(Debug, Default)]
pub(super) struct Confirmed {
    ranges: BTreeMap<u64, u64>,
    /// Ids covered by `ranges`.
    ids: u64,
}

impl Confirmed {
    pub(super) fn contains(&self, id: u64) -> bool {
        self.range_of(id).is_some()
    }

    fn range_of(&self, id: u64) -> Option<(u64, u64)> {
        self.ranges
            .range(..=id)
            .next_back()
            .filter(|(_, &last)| last >= id)
            .map(|(&first, &last)| (first, last))
    }

    /// Adds `id`. False when it would need a range past the bound (an id
    /// already in is fine).
    pub(super) fn insert(&mut self, id: u64) -> bool {
        self.add(id, false)
    }

    /// Adds `id` even past the bound: for the record at the front, which
    /// the watermark takes (and [`Confirmed::remove_through`] removes) at
    /// once, so the bound holds again after the call that confirmed it.
    pub(super) fn insert_past_bound(&mut self, id: u64) {
        self.add(id, true);
    }

    fn add(&mut self, id: u64, past_bound: bool) -> bool {
        if self.contains(id) {
            return true;
        }
        let below = id
            .checked_sub(1)
            .and_then(|b| self.range_of(b))
            .map(|(first, _)| first);
        let above = id.checked_add(1).and_then(|a| self.ranges.get(&a).copied());
        match (below, above) {
            (Some(first), Some(last)) => {
                self.ranges.remove(&(id + 1));
                self.ranges.insert(first, last);
            }
            (Some(first), None) => {
                self.ranges.insert(first, id);
            }
            (None, Some(last)) => {
                self.ranges.remove(&(id + 1));
                self.ranges.insert(id, last);
            }
            (None, None) => {
                if !past_bound && self.ranges.len() >= MAX_CONFIRMED_RANGES {
                    return false;
                }
                self.ranges.insert(id, id);
            }
        }
        self.ids += 1;
        true
    }

    /// Adds `first..=last` as read back from the state file, where ranges
    /// are ascending and disjoint (the decoder checks): one that is not
    /// above the last range is ignored, one that touches it extends it; past
    /// the bound they are ignored (those records are sent again).
    pub(super) fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        match self.ranges.last_key_value().map(|(&f, &l)| (f, l)) {
            Some((_, l)) if l >= first => {}
            Some((f, l)) if l + 1 == first => {
                self.ranges.insert(f, last);
                self.ids += last - first + 1;
            }
            _ if self.ranges.len() >= MAX_CONFIRMED_RANGES => {}
            _ => {
                self.ranges.insert(first, last);
                self.ids += last - first + 1;
            }
        }
    }

    /// Forgets every id ≤ `watermark`: the watermark covers them now.
    pub(super) fn remove_through(&mut self, watermark: u64) {
        let Some(next) = watermark.checked_add(1) else {
            self.ranges.clear();
            self.ids = 0;
            return;
        };
        let above = self.ranges.split_off(&next);
        // What is left below `next` goes, but for the part of a range that
        // started at or below W and reaches past it. Counting what goes
        // keeps this proportional to it, not to every range.
        let below = std::mem::replace(&mut self.ranges, above);
        for (first, last) in below {
            if last >= next {
                self.ranges.insert(next, last);
                self.ids -= next - first;
            } else {
                self.ids -= last - first + 1;
            }
        }
    }

    /// Ids covered.
    pub(super) fn len(&self) -> u64 {
        self.ids
    }

    pub(super) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, lowest first.
    pub(super) fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&f, &l)| (f, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(c: &Confirmed) -> Vec<(u64, u64)> {
        c.ranges().collect()
    }

    #[test]
    fn neighbours_merge_into_one_range() {
        let mut c = Confirmed::default();
        for id in [5, 7, 6, 9, 3, 4] {
            assert!(c.insert(id));
        }
        assert_eq!(ranges(&c), [(3, 7), (9, 9)]);
        assert_eq!(c.len(), 6);
        assert!(c.insert(8));
        assert!(c.insert(8), "a repeat is fine");
        assert_eq!(ranges(&c), [(3, 9)]);
        assert_eq!(c.len(), 7);
        assert!(c.contains(3) && c.contains(9) && !c.contains(2) && !c.contains(10));
    }

    #[test]
    fn remove_through_cuts_a_range_that_straddles_the_watermark() {
        let mut c = Confirmed::default();
        for id in (10..=20).chain(30..=31) {
            c.insert(id);
        }
        c.remove_through(14);
        assert_eq!(ranges(&c), [(15, 20), (30, 31)]);
        assert_eq!(c.len(), 8);
        c.remove_through(25);
        assert_eq!(ranges(&c), [(30, 31)]);
        c.remove_through(u64::MAX);
        assert_eq!((c.len(), c.range_count()), (0, 0));
    }

    #[test]
    fn a_new_range_past_the_bound_is_refused_but_an_extension_is_not() {
        let mut c = Confirmed::default();
        for i in 0..MAX_CONFIRMED_RANGES as u64 {
            assert!(c.insert(10 + 2 * i));
        }
        let past = 10 + 2 * MAX_CONFIRMED_RANGES as u64 + 1;
        assert!(!c.insert(past), "a new range past the bound");
        assert!(c.insert(11), "joins two ranges: one fewer");
        assert!(c.insert(past));
    }

    #[test]
    fn ranges_read_back_must_ascend() {
        let mut c = Confirmed::default();
        c.insert_range(5, 9);
        c.insert_range(8, 12); // overlaps: ignored
        c.insert_range(10, 12); // adjacent: extends
        c.insert_range(14, 13); // empty
        c.insert_range(20, 25);
        assert_eq!(ranges(&c), [(5, 12), (20, 25)]);
        assert_eq!(c.len(), 14);
    }
}
