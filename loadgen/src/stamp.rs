//! What the HTTP-side benches (`smq-put`, `ws-fanout`, `search-load`) share: what they
//! put in a message to measure it: its sequence number and when it was sent, in µs since the
//! run's start (sender and receivers are one process, one clock), padded
//! to the message size; a set of the sequence numbers seen; rates and the
//! error line of their reports.
//!
//! In: a sequence number, a time, a size; a received body. Out: the text
//! `fgb <seq> <µs> xxx…`, or the two numbers back. Bound: [`SeqSet`] is
//! one bit per message sent.

use std::time::Duration;

use tokio::time::Instant;

/// The run's start: every stamp counts from it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub base: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }
}

/// µs from `from` to `to` (0 if `to` is earlier).
pub fn micros_since(from: Instant, to: Instant) -> u64 {
    let d: Duration = to.saturating_duration_since(from);
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// `n` per second of `elapsed` (0 for no time).
pub fn per_s(n: u64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        s if s > 0.0 => n as f64 / s,
        _ => 0.0,
    }
}

/// Adds one task's latencies to the run's (either may be missing if its
/// bounds were refused, which the tests would show).
pub fn merge(
    all: &mut Option<hdrhistogram::Histogram<u32>>,
    one: &Option<hdrhistogram::Histogram<u32>>,
) {
    if let (Some(all), Some(one)) = (all.as_mut(), one.as_ref()) {
        all.add(one).ok();
    }
}

/// Adds `n` answers of `status` to a tally by status.
pub fn add_status(counts: &mut Vec<(u16, u64)>, status: u16, n: u64) {
    match counts.iter_mut().find(|(s, _)| *s == status) {
        Some((_, total)) => *total += n,
        None => counts.push((status, n)),
    }
}

/// The human report's last line, if the run met an error.
pub fn error_line(first_error: &Option<String>) -> String {
    first_error
        .as_ref()
        .map(|e| format!("  first error: {e}\n"))
        .unwrap_or_default()
}

/// `fgb <seq> <sent_us> ` padded with `x` to `size` bytes (longer if the
/// stamp needs it).
pub fn stamped(seq: u64, sent_us: u64, size: usize) -> String {
    let mut text = format!("fgb {seq} {sent_us} ");
    let pad = size.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// The sequence number and send time of a [`stamped`] body.
pub fn parse(body: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(body.get(..body.len().min(48))?).ok()?;
    let mut words = text.strip_prefix("fgb ")?.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Which sequence numbers below `len` were seen.
#[derive(Debug, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
    len: u64,
    count: u64,
}

impl SeqSet {
    pub fn new(len: u64) -> SeqSet {
        SeqSet {
            bits: vec![0; len.div_ceil(64) as usize],
            len,
            count: 0,
        }
    }

    /// False if `seq` was seen before, or is out of range.
    pub fn insert(&mut self, seq: u64) -> bool {
        let word = match self.bits.get_mut((seq / 64) as usize) {
            Some(word) if seq < self.len => word,
            _ => return false,
        };
        let bit = 1u64 << (seq % 64);
        let new = *word & bit == 0;
        *word |= bit;
        self.count += u64::from(new);
        new
    }

    /// How many distinct numbers were seen.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_pads_to_its_size() {
        let body = stamped(42, 1_234_567, 64);
        assert_eq!(body.len(), 64);
        assert_eq!(parse(body.as_bytes()), Some((42, 1_234_567)));
        assert_eq!(parse(b"hello"), None);
        let mut seen = SeqSet::new(100);
        assert!(seen.insert(3) && !seen.insert(3) && !seen.insert(100));
        assert_eq!(seen.count(), 1);
    }
}
