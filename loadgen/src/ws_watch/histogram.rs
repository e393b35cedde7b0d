//! Freshness in ms, in bounded memory.

use super::HISTOGRAM_MAX_MS;

/// Counts of milliseconds in 1-ms buckets, `0..=HISTOGRAM_MAX_MS`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; HISTOGRAM_MAX_MS as usize + 1],
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        let bucket = ms.min(HISTOGRAM_MAX_MS) as usize;
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
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
    /// (`q` in 0..=1); the exact max for the last bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((ms as u64).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.n = 0;
        self.max = 0;
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n,
            "p50_ms": self.quantile(0.50),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.max(),
        })
    }
}
