//! The two axes: linear from 0 to a round number (throughput) and log10
//! between powers of ten (latency); values to x positions, and the ticks.

/// A linear axis from 0 to a round number at or above the largest value.
pub(super) struct LinearAxis {
    pub(super) step: f64,
    pub(super) top: f64,
    pub(super) left: f64,
    pub(super) right: f64,
}

impl LinearAxis {
    pub(super) fn new(max: f64, left: f64, right: f64) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / 5.0);
        let top = (max / step).ceil().max(1.0) * step;
        LinearAxis {
            step,
            top,
            left,
            right,
        }
    }

    pub(super) fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.top / self.step).round() as usize;
        (0..=n).map(move |i| i as f64 * self.step)
    }

    pub(super) fn x(&self, value: f64) -> f64 {
        let fraction = (value / self.top).clamp(0.0, 1.0);
        self.left + fraction * (self.right - self.left)
    }
}

/// The smallest of 1, 2, 5 × a power of ten at or above `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// A log10 axis between two powers of ten: the largest at or below the
/// smallest value (at least 10¹ µs) and the smallest at or above the largest.
pub(super) struct LogAxis {
    pub(super) low_exp: i32,
    pub(super) high_exp: i32,
    pub(super) left: f64,
    pub(super) right: f64,
}

impl LogAxis {
    pub(super) fn new(min: f64, max: f64, left: f64, right: f64) -> Self {
        let exponent = |v: f64, round: fn(f64) -> f64, default: i32| {
            if v.is_finite() && v > 0.0 {
                round(v.log10()) as i32
            } else {
                default
            }
        };
        let low_exp = exponent(min, f64::floor, 1).max(1);
        let high_exp = exponent(max, f64::ceil, low_exp + 1).max(low_exp + 1);
        LogAxis {
            low_exp,
            high_exp,
            left,
            right,
        }
    }

    /// Grid lines as (value, is a power of ten): every power of ten (every
    /// few when there are many decades), and 2…9 × each when there are few.
    pub(super) fn grid(&self) -> Vec<(f64, bool)> {
        let decades = self.high_exp - self.low_exp;
        let every = (decades + 9) / 10;
        let mut lines = Vec::new();
        for exp in (self.low_exp..=self.high_exp).step_by(every.max(1) as usize) {
            let power = 10_f64.powi(exp);
            lines.push((power, true));
            if decades <= 6 && exp < self.high_exp {
                lines.extend((2..10).map(|m| (f64::from(m) * power, false)));
            }
        }
        lines
    }

    pub(super) fn x(&self, value: f64) -> f64 {
        let span = f64::from(self.high_exp - self.low_exp);
        let fraction = ((value.log10() - f64::from(self.low_exp)) / span).clamp(0.0, 1.0);
        let fraction = if fraction.is_nan() { 0.0 } else { fraction };
        self.left + fraction * (self.right - self.left)
    }
}
