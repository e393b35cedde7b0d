//! Per-vehicle sequence numbers: duplicates, gaps and late arrivals.
//!
//! In: each sequence number a device sends. Out: a [`SeqVerdict`]. Bound:
//! 12 bytes per vehicle — the highest number seen and a 64-bit window of
//! which of the 64 numbers below it have arrived.
//!
//! Numbers wrap at `u32::MAX`; "newer" means ahead by less than 2³¹.

/// What one sequence number means for its vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The newest so far; `missing` numbers were skipped since the last newest.
    Newest { missing: u32 },
    /// Older than the newest, inside the window and not seen before: a
    /// late arrival (it fills a gap counted earlier).
    Late,
    /// Seen before, or too old to tell: dropped.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SeqWindow {
    highest: Option<u32>,
    /// Bit i set: `highest - 1 - i` has arrived.
    below: u64,
}

const WINDOW: u32 = 64;

impl SeqWindow {
    pub fn observe(&mut self, seq: u32) -> SeqVerdict {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return SeqVerdict::Newest { missing: 0 };
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead != 0 && ahead < 1 << 31 {
            // Shift the window: the old highest becomes bit (ahead - 1).
            self.below = if ahead > WINDOW {
                0
            } else {
                let shifted = if ahead == WINDOW {
                    0
                } else {
                    self.below << ahead
                };
                shifted | 1 << (ahead - 1)
            };
            self.highest = Some(seq);
            return SeqVerdict::Newest { missing: ahead - 1 };
        }
        let behind = highest.wrapping_sub(seq);
        if behind == 0 || behind > WINDOW {
            return SeqVerdict::Duplicate;
        }
        let bit = 1u64 << (behind - 1);
        if self.below & bit != 0 {
            SeqVerdict::Duplicate
        } else {
            self.below |= bit;
            SeqVerdict::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SeqVerdict::*;

    #[test]
    fn in_order_numbers_are_newest_without_gaps() {
        let mut w = SeqWindow::default();
        for s in 10..20 {
            assert_eq!(w.observe(s), Newest { missing: 0 });
        }
    }

    #[test]
    fn repeats_and_old_numbers_are_duplicates() {
        let mut w = SeqWindow::default();
        w.observe(5);
        w.observe(6);
        assert_eq!(w.observe(6), Duplicate);
        assert_eq!(w.observe(5), Duplicate);
        w.observe(200);
        assert_eq!(w.observe(100), Duplicate, "older than the window");
    }

    #[test]
    fn a_gap_is_counted_then_filled_once_by_a_late_arrival() {
        let mut w = SeqWindow::default();
        w.observe(1);
        assert_eq!(w.observe(4), Newest { missing: 2 });
        assert_eq!(w.observe(3), Late);
        assert_eq!(w.observe(3), Duplicate);
        assert_eq!(w.observe(2), Late);
        assert_eq!(w.observe(1), Duplicate);
    }

    #[test]
    fn numbers_wrap_around() {
        let mut w = SeqWindow::default();
        w.observe(u32::MAX - 1);
        assert_eq!(w.observe(u32::MAX), Newest { missing: 0 });
        assert_eq!(w.observe(0), Newest { missing: 0 });
        assert_eq!(w.observe(u32::MAX), Duplicate);
    }

    #[test]
    fn a_jump_of_exactly_the_window_keeps_the_old_highest() {
        let mut w = SeqWindow::default();
        w.observe(0);
        assert_eq!(w.observe(64), Newest { missing: 63 });
        assert_eq!(w.observe(0), Duplicate);
        assert_eq!(w.observe(1), Late);
    }
}
