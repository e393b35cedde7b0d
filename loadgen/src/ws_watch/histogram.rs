//! Freshness in ms, in bounded memory: an HDR histogram (the same crate the
//! bench uses) that also keeps the exact maximum.
//!
//! In: one age in ms per position. Out: the count, the exact max, and
//! quantiles exact to the ms below 32 768 ms (2-ms steps above, never above
//! the max nor [`HISTOGRAM_MAX_MS`]). Bound: a fixed ~384 KiB of counts,
//! however many samples.

use super::HISTOGRAM_MAX_MS;
use crate::results::FreshnessLine;

/// Significant digits: 4 keeps every value below 2¹⁵ ms in a bucket of its own.
const SIGNIFICANT_DIGITS: u8 = 4;

/// Ages in ms; a sample above [`HISTOGRAM_MAX_MS`] is counted at the cap
/// (its max is still exact).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `None` only if the constant bounds were invalid, which
    /// `histogram_quantiles_and_max` would catch (it checks exact quantiles).
    counts: Option<hdrhistogram::Histogram<u64>>,
    n: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: hdrhistogram::Histogram::new_with_bounds(
                1,
                HISTOGRAM_MAX_MS,
                SIGNIFICANT_DIGITS,
            )
            .ok(),
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        if let Some(counts) = self.counts.as_mut() {
            counts.saturating_record(ms.min(HISTOGRAM_MAX_MS));
        }
        self.n += 1;
        self.max = self.max.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// The smallest value with at least `q` of the samples at or below it
    /// (`q` in 0..=1), at most the exact max and [`HISTOGRAM_MAX_MS`].
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let at = self
            .counts
            .as_ref()
            .map_or(self.max, |c| c.value_at_quantile(q.clamp(0.0, 1.0)));
        Some(at.min(self.max).min(HISTOGRAM_MAX_MS))
    }

    pub fn clear(&mut self) {
        if let Some(counts) = self.counts.as_mut() {
            counts.reset();
        }
        self.n = 0;
        self.max = 0;
    }

    /// Count, p50, p99 and max, as the result line has them.
    pub fn to_line(&self) -> FreshnessLine {
        FreshnessLine {
            n: self.n,
            p50_ms: self.quantile(0.50),
            p99_ms: self.quantile(0.99),
            max_ms: self.max(),
        }
    }
}
