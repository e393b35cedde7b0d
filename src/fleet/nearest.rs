//! The spatial index over the vehicles' latest positions: the nearest
//! vehicles to a point, within a radius.
//!
//! In: each vehicle's newest valid fix, by slot ([`Grid::update`], called
//! by the fleet table for every position it takes as the newest). Out: the
//! `k` nearest slots to a point within a radius, nearest first, with their
//! great-circle distances ([`Grid::nearest`] into a [`TopK`]).
//!
//! Bound: arrays sized to `fleet.max_vehicles` at start, never grown — a
//! bucket head per slot rounded up to a power of two, and per vehicle a
//! 32-byte entry (coordinates, cell, two links). Neither an update nor a search
//! allocates (`tests/alloc_free.rs` counts the update; the bench measures
//! the search).
//!
//! How: a spatial hash. The globe is cut into square cells of [`CELL_DEG`]
//! degrees (about 550 m north–south; narrower east–west away from the
//! equator); a cell hashes to a bucket, and a bucket is a doubly linked
//! list of the vehicles whose cell hashes there, so moving a vehicle to
//! another cell is two O(1) unlinks and links. A search scans rings of
//! cells around the point's cell, outwards, and stops once the `k`-th best
//! distance is nearer than anything the next ring could hold, or the
//! radius is covered. When the radius covers more cells than there are
//! vehicles, it scans the vehicles instead. Longitude wraps at ±180°.
//! Measured (BENCHMARKS.md, `cargo bench --bench nearest`) beside rstar,
//! which allocates on a share of its moves and searches.

use super::{haversine_m, Slot};

/// No cell yet (no valid fix): a row no latitude maps to.
const NO_CELL: Cell = (i32::MIN, 0);

/// Cell size in degrees of latitude and longitude.
pub const CELL_DEG: f64 = 0.005;
/// The most vehicles a search returns.
pub const MAX_K: usize = 100;
/// Metres per degree of latitude (mean); a cell is `CELL_DEG` of it.
const M_PER_DEG: f64 = 111_195.0;
/// Cells around the globe east–west: 360 / `CELL_DEG`.
const LON_CELLS: i64 = 72_000;
/// Radii up to this use the flat pre-check in `consider` (angles below 0.16
/// rad, where sin x ≥ 0.999 x).
const FLAT_LIMIT_M: f64 = 1_000_000.0;
/// The flat distance is at most this much above the true one below
/// `FLAT_LIMIT_M` (0.2 %), with margin.
const FLAT_SAFETY: f64 = 0.99;
/// Columns each side of the centre at most, so that no column is scanned
/// twice (2 × MAX_COLS + 1 ≤ LON_CELLS).
const MAX_COLS: i64 = (LON_CELLS - 1) / 2;
const NONE: u32 = u32::MAX;

/// The `k` nearest found so far, nearest first, in a fixed array.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    len: usize,
    items: [(f64, Slot); MAX_K],
}

impl TopK {
    /// Room for `k` (at most [`MAX_K`], at least 1).
    pub fn new(k: usize) -> TopK {
        TopK {
            k: k.clamp(1, MAX_K),
            len: 0,
            items: [(0.0, 0); MAX_K],
        }
    }

    /// Empties it for a new search of `k`.
    pub fn reset(&mut self, k: usize) {
        self.k = k.clamp(1, MAX_K);
        self.len = 0;
    }

    /// (distance in metres, slot), nearest first.
    pub fn as_slice(&self) -> &[(f64, Slot)] {
        &self.items[..self.len]
    }

    fn full(&self) -> bool {
        self.len == self.k
    }

    /// The distance a candidate must beat once full.
    fn worst(&self) -> f64 {
        if self.full() {
            self.items[self.len - 1].0
        } else {
            f64::INFINITY
        }
    }

    fn offer(&mut self, distance_m: f64, slot: Slot) {
        if distance_m >= self.worst() {
            return;
        }
        // insertion sort from the end: k is small
        let mut i = if self.full() { self.len - 1 } else { self.len };
        while i > 0 && self.items[i - 1].0 > distance_m {
            self.items[i] = self.items[i - 1];
            i -= 1;
        }
        self.items[i] = (distance_m, slot);
        if !self.full() {
            self.len += 1;
        }
    }
}

/// A cell: (row from latitude, column from longitude).
type Cell = (i32, i32);

fn cell_of(lat: f64, lon: f64) -> Cell {
    let row = (lat / CELL_DEG).floor() as i32;
    let col = ((lon / CELL_DEG).floor() as i64).rem_euclid(LON_CELLS) as i32;
    (row, col)
}

/// One vehicle in the index: 32 bytes, so a search touches one cache line
/// per vehicle it looks at.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lat: f64,
    lon: f64,
    /// The slot's cell; [`NO_CELL`] until its first valid fix.
    cell: Cell,
    next: u32,
    prev: u32,
}

pub struct Grid {
    /// Bucket → first slot in it, or `NONE`.
    heads: Vec<u32>,
    entries: Vec<Entry>,
    bucket_bits: u32,
    indexed: usize,
}

impl Grid {
    /// An index for slots `0..capacity`.
    pub fn new(capacity: usize) -> Grid {
        let buckets = capacity.max(2).next_power_of_two();
        Grid {
            heads: vec![NONE; buckets],
            entries: vec![
                Entry {
                    lat: 0.0,
                    lon: 0.0,
                    cell: NO_CELL,
                    next: NONE,
                    prev: NONE,
                };
                capacity
            ],
            bucket_bits: buckets.trailing_zeros(),
            indexed: 0,
        }
    }

    /// Vehicles in the index (those with a valid fix).
    pub fn len(&self) -> usize {
        self.indexed
    }

    pub fn is_empty(&self) -> bool {
        self.indexed == 0
    }

    fn bucket(&self, (row, col): Cell) -> usize {
        let key = (u64::from(row as u32) << 32) | u64::from(col as u32);
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bucket_bits)) as usize
    }

    /// Moves `slot` to its new fix. A slot past the capacity is ignored.
    pub fn update(&mut self, slot: Slot, lat: f64, lon: f64) {
        let s = slot as usize;
        if s >= self.entries.len() || !lat.is_finite() || !lon.is_finite() {
            return;
        }
        self.entries[s].lat = lat;
        self.entries[s].lon = lon;
        let cell = cell_of(lat, lon);
        match self.entries[s].cell {
            old if old == cell => return,
            NO_CELL => self.indexed += 1,
            old => self.unlink(s, old),
        }
        let bucket = self.bucket(cell);
        let head = self.heads[bucket];
        let entry = &mut self.entries[s];
        entry.next = head;
        entry.prev = NONE;
        entry.cell = cell;
        if head != NONE {
            self.entries[head as usize].prev = slot;
        }
        self.heads[bucket] = slot;
    }

    fn unlink(&mut self, s: usize, cell: Cell) {
        let (prev, next) = (self.entries[s].prev, self.entries[s].next);
        if prev == NONE {
            let bucket = self.bucket(cell);
            self.heads[bucket] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NONE {
            self.entries[next as usize].prev = prev;
        }
    }

    /// The slot's indexed position, if it has one.
    pub fn position(&self, slot: Slot) -> Option<(f64, f64)> {
        let s = slot as usize;
        let e = self.entries.get(s)?;
        (e.cell != NO_CELL).then_some((e.lat, e.lon))
    }

    /// The nearest vehicles to (`lat`, `lon`) within `radius_m` that
    /// `accept` takes, into `out` (reset to `k` first), nearest first.
    pub fn nearest(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        k: usize,
        accept: impl Fn(Slot) -> bool,
        out: &mut TopK,
    ) {
        out.reset(k);
        let radius_ok = radius_m.is_finite() && radius_m > 0.0;
        if self.indexed == 0 || !radius_ok || !lat.is_finite() || !lon.is_finite() {
            return;
        }
        let cell_m = CELL_DEG * M_PER_DEG;
        let rows = (radius_m / cell_m).ceil() as i64 + 1;
        // East–west, a cell is narrowest at the most poleward latitude the
        // scanned rows reach.
        let far_lat = (lat.abs() + (rows + 1) as f64 * CELL_DEG).min(90.0);
        let far_cos = far_lat.to_radians().cos();
        let col_m = cell_m * far_cos;
        let probe = Probe {
            lat,
            lon,
            radius_m,
            far_lat,
            far_cos,
            accept,
        };
        let cols = if col_m > 1.0 {
            ((radius_m / col_m).ceil() as i64 + 1).min(MAX_COLS)
        } else {
            MAX_COLS
        };
        if (2 * rows + 1).saturating_mul(2 * cols + 1) > self.indexed as i64 {
            // fewer vehicles than cells to look at: look at the vehicles
            for (s, e) in self.entries.iter().enumerate() {
                if e.cell != NO_CELL {
                    self.consider(&probe, s as Slot, out);
                }
            }
            return;
        }
        let (row0, col0) = cell_of(lat, lon);
        // A cell of ring r+1 is at least r cell widths away (the point is
        // in ring 0); 0.99 covers the flat-earth approximation of "width".
        let ring_gap_m = cell_m.min(col_m) * 0.99;
        for ring in 0..=rows.max(cols) {
            self.scan_ring(ring, rows, cols, (row0, col0), &probe, out);
            if out.full() && out.worst() <= ring as f64 * ring_gap_m {
                break;
            }
        }
    }

    /// Every cell at Chebyshev distance `ring` from `centre`, within
    /// `rows` × `cols`, each once.
    #[allow(clippy::too_many_arguments)]
    fn scan_ring<F: Fn(Slot) -> bool>(
        &self,
        ring: i64,
        rows: i64,
        cols: i64,
        (row0, col0): Cell,
        probe: &Probe<F>,
        out: &mut TopK,
    ) {
        let dr_max = ring.min(rows);
        let dc_max = ring.min(cols);
        for dr in -dr_max..=dr_max {
            let on_edge_row = dr.abs() == ring;
            let mut dc = -dc_max;
            while dc <= dc_max {
                if on_edge_row || dc.abs() == ring {
                    let row = i64::from(row0) + dr;
                    let col = (i64::from(col0) + dc).rem_euclid(LON_CELLS);
                    if let (Ok(row), Ok(col)) = (i32::try_from(row), i32::try_from(col)) {
                        self.scan_cell((row, col), probe, out);
                    }
                    dc += 1;
                } else {
                    // inside the ring: jump to its east edge
                    dc = ring;
                }
            }
        }
    }

    fn scan_cell<F: Fn(Slot) -> bool>(&self, cell: Cell, probe: &Probe<F>, out: &mut TopK) {
        let mut at = self.heads[self.bucket(cell)];
        while at != NONE {
            let s = at as usize;
            let e = &self.entries[s];
            if e.cell == cell {
                self.consider(probe, at, out);
            }
            at = e.next;
        }
    }

    fn consider<F: Fn(Slot) -> bool>(&self, probe: &Probe<F>, slot: Slot, out: &mut TopK) {
        let e = &self.entries[slot as usize];
        let bound = probe.radius_m.min(out.worst());
        if e.lat.abs() <= probe.far_lat && probe.radius_m <= FLAT_LIMIT_M {
            // A flat distance with the narrowest east–west scale of the
            // box never exceeds the great-circle one by more than 0.2 % at
            // these sizes: skip what cannot beat `bound` without the trig.
            let dlat = (e.lat - probe.lat) * M_PER_DEG;
            let dlon =
                ((e.lon - probe.lon + 540.0).rem_euclid(360.0) - 180.0) * M_PER_DEG * probe.far_cos;
            let flat = dlat * dlat + dlon * dlon;
            let limit = bound / FLAT_SAFETY;
            if flat > limit * limit {
                return;
            }
        }
        let d = haversine_m(probe.lat, probe.lon, e.lat, e.lon);
        if d <= probe.radius_m && d < out.worst() && (probe.accept)(slot) {
            out.offer(d, slot);
        }
    }
}

/// One search's point, radius and filter.
struct Probe<F> {
    lat: f64,
    lon: f64,
    radius_m: f64,
    /// The most poleward latitude of the scanned cells, and its cosine.
    far_lat: f64,
    far_cos: f64,
    accept: F,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    /// A slow, obviously right answer: every vehicle, sorted.
    fn brute(points: &[(f64, f64)], lat: f64, lon: f64, radius_m: f64, k: usize) -> Vec<Slot> {
        let mut all: Vec<(f64, Slot)> = points
            .iter()
            .enumerate()
            .map(|(s, &(a, o))| (haversine_m(lat, lon, a, o), s as Slot))
            .filter(|&(d, _)| d <= radius_m)
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().take(k).map(|(_, s)| s).collect()
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn found(grid: &Grid, lat: f64, lon: f64, radius_m: f64, k: usize) -> Vec<Slot> {
        let mut out = TopK::new(k);
        grid.nearest(lat, lon, radius_m, k, |_| true, &mut out);
        out.as_slice().iter().map(|&(_, s)| s).collect()
    }

    #[test]
    fn matches_a_brute_force_search_in_a_city_and_across_the_antimeridian() {
        let mut seed = 7;
        for (lat0, lon0, span) in [
            (52.37, 4.89, 0.3),
            (-33.44, -70.63, 0.05),
            (64.1, 179.98, 0.1),
        ] {
            let mut grid = Grid::new(3000);
            let mut points = Vec::new();
            for s in 0..3000 {
                let lat = lat0 + (lcg(&mut seed) - 0.5) * span;
                let mut lon = lon0 + (lcg(&mut seed) - 0.5) * span;
                if lon > 180.0 {
                    lon -= 360.0;
                }
                grid.update(s, lat, lon);
                points.push((lat, lon));
            }
            for q in 0..50 {
                let lat = lat0 + (lcg(&mut seed) - 0.5) * span;
                let lon = lon0 + (lcg(&mut seed) - 0.5) * span;
                let (radius, k) = [(500.0, 10), (5_000.0, 10), (15_000.0, 5), (100.0, 3)][q % 4];
                assert_eq!(
                    found(&grid, lat, lon, radius, k),
                    brute(&points, lat, lon, radius, k),
                    "at {lat},{lon} r={radius} k={k}"
                );
            }
        }
    }

    #[test]
    fn a_moved_vehicle_is_found_where_it_is_now_only() {
        let mut grid = Grid::new(4);
        grid.update(0, 52.0, 4.0);
        grid.update(1, 52.0001, 4.0);
        grid.update(0, 48.85, 2.35); // Amsterdam-ish → Paris
        assert_eq!(found(&grid, 52.0, 4.0, 1_000.0, 10), vec![1]);
        assert_eq!(found(&grid, 48.85, 2.35, 1_000.0, 10), vec![0]);
        assert_eq!(grid.len(), 2);
        // moving within one cell keeps it in the index once
        grid.update(1, 52.0002, 4.0);
        assert_eq!(found(&grid, 52.0, 4.0, 1_000.0, 10), vec![1]);
    }

    #[test]
    fn the_filter_excludes_and_the_radius_bounds() {
        let mut grid = Grid::new(8);
        for s in 0..8 {
            grid.update(s, 10.0 + f64::from(s) * 0.001, 20.0);
        }
        let mut out = TopK::new(3);
        grid.nearest(10.0, 20.0, 10_000.0, 3, |s| s % 2 == 1, &mut out);
        let slots: Vec<Slot> = out.as_slice().iter().map(|&(_, s)| s).collect();
        assert_eq!(slots, vec![1, 3, 5]);
        assert_eq!(found(&grid, 10.0, 20.0, 150.0, 10), vec![0, 1]);
        assert!(found(&grid, 0.0, 0.0, 1_000.0, 10).is_empty());
        assert!(found(&grid, 10.0, 20.0, 0.0, 10).is_empty());
    }

    #[test]
    fn k_is_clamped_to_the_maximum() {
        let mut grid = Grid::new(300);
        for s in 0..300 {
            grid.update(s, 1.0 + f64::from(s) * 1e-5, 1.0);
        }
        assert_eq!(found(&grid, 1.0, 1.0, 10_000.0, 1_000).len(), MAX_K);
    }
}
