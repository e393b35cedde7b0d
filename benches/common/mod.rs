//! What the fleet benches share: a deterministic generator and points
//! spread over a square around Amsterdam (the benches need no rand crate).

/// Where the layouts are centred.
pub const AMSTERDAM: (f64, f64) = (52.3731, 4.8922);

/// A linear congruential generator: the same numbers on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number in 0..1.
    pub fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A point spread evenly over a square of `side_km` around Amsterdam.
    pub fn point(&mut self, side_km: f64) -> (f64, f64) {
        let dlat = side_km / 111.195;
        let dlon = dlat / AMSTERDAM.0.to_radians().cos();
        (
            AMSTERDAM.0 + (self.unit() - 0.5) * dlat,
            AMSTERDAM.1 + (self.unit() - 0.5) * dlon,
        )
    }
}
