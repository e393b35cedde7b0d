//! The spatial index over the vehicles' latest positions: the nearest
//! vehicles to a point, within a radius.
//!
//! In: each vehicle's newest valid fix, by slot ([`Grid::update`], called
//! by the fleet table for every position it takes as the newest). Out: the
//! `k` nearest slots to a point within a radius, nearest first, with their
//! great-circle distances ([`Grid::nearest`] into a [`TopK`]).
//!
//! Bound: arrays sized to `fleet.max_vehicles` at start, never grown — a
//! bucket head and an occupancy bit per slot rounded up to a power of two,
//! per vehicle its place (4 bytes) and one 64-byte block (the worst case,
//! every vehicle alone in its cell). Neither an update nor a search
//! allocates (`tests/alloc_free.rs` counts the update; the bench measures
//! the search).
//!
//! How: a spatial hash of blocks. The globe is cut into square cells of
//! [`CELL_DEG`] degrees (about 550 m north–south; narrower east–west away
//! from the equator); a cell hashes to a bucket, and a bucket is a chain of
//! 64-byte blocks (one cache line), each holding up to [`BLOCK_ITEMS`]
//! vehicles of one cell as (slot, offset in the cell as two `f32`: 0.05 mm
//! at worst). So a search reads a cell's vehicles a cache line at a time,
//! not one scattered entry per vehicle. A cell's first block in its chain
//! is the only one that may have room: a vehicle that enters a cell goes
//! there (or into a new block at the chain's head), one that leaves is
//! replaced by that block's last. Moving within a cell rewrites its offset.
//! A search scans rings of cells around the point's cell, outwards; a cell
//! wholly farther than the `k`-th best is passed on arithmetic alone, an
//! empty bucket on its occupancy bit, and the search stops once the next
//! ring lies farther than the `k`-th best, or past the radius. When the
//! radius covers more cells than there are vehicles, it scans the blocks
//! instead. Longitude wraps at ±180°. Measured (BENCHMARKS.md, `cargo
//! bench --bench nearest`) beside the linked-list layout it replaced and
//! rstar, which allocates on a share of its moves and searches.

use std::mem::size_of;

use super::{haversine_m, Slot};

/// Cell size in degrees of latitude and longitude; 360 / `CELL_DEG` is a
/// whole number ([`LON_CELLS`]), so a column's western edge is exact.
pub const CELL_DEG: f64 = 0.005;
/// The most vehicles a search returns.
pub const MAX_K: usize = 100;
/// Vehicles per block: 4 × 12 bytes and a 16-byte header make 64.
pub const BLOCK_ITEMS: usize = 4;
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

/// The south-west corner of a cell, in degrees (longitude in 0..360).
fn corner((row, col): Cell) -> (f64, f64) {
    (f64::from(row) * CELL_DEG, f64::from(col) * CELL_DEG)
}

/// One vehicle in a block: its slot and where it is in the block's cell.
#[derive(Debug, Clone, Copy)]
struct Item {
    dlat: f32,
    dlon: f32,
    slot: Slot,
}

/// Up to [`BLOCK_ITEMS`] vehicles of one cell, in one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Block {
    cell: Cell,
    /// The next block of the bucket's chain (or of the free list).
    next: u32,
    len: u32,
    items: [Item; BLOCK_ITEMS],
}

const EMPTY_ITEM: Item = Item {
    dlat: 0.0,
    dlon: 0.0,
    slot: 0,
};

pub struct Grid {
    /// Bucket → its chain's first block, or `NONE`.
    heads: Vec<u32>,
    /// One bit per bucket: set while it holds a block, so a search passes
    /// an empty cell without touching `heads`.
    occupied: Vec<u64>,
    /// As many as slots: enough for every vehicle alone in its cell.
    blocks: Vec<Block>,
    /// The first unused block; they chain through `next`.
    free: u32,
    /// Slot → block × [`BLOCK_ITEMS`] + index, or `NONE` before its
    /// first valid fix.
    places: Vec<u32>,
    bucket_bits: u32,
    indexed: usize,
}

impl Grid {
    /// An index for slots `0..capacity`.
    pub fn new(capacity: usize) -> Grid {
        let buckets = capacity.max(2).next_power_of_two();
        let blocks = (0..capacity)
            .map(|i| Block {
                cell: (0, 0),
                next: if i + 1 < capacity { i as u32 + 1 } else { NONE },
                len: 0,
                items: [EMPTY_ITEM; BLOCK_ITEMS],
            })
            .collect();
        Grid {
            heads: vec![NONE; buckets],
            occupied: vec![0; buckets.div_ceil(64)],
            blocks,
            free: if capacity > 0 { 0 } else { NONE },
            places: vec![NONE; capacity],
            bucket_bits: buckets.trailing_zeros(),
            indexed: 0,
        }
    }

    /// Bytes it holds for `capacity` slots (for the memory budget).
    pub fn bytes_for(capacity: usize) -> usize {
        let buckets = capacity.max(2).next_power_of_two();
        buckets * 4 + buckets.div_ceil(64) * 8 + capacity * (size_of::<Block>() + 4)
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

    /// The first block of `cell` in its bucket's chain, and the block
    /// before it (`NONE` when it is the head).
    fn first_block(&self, bucket: usize, cell: Cell) -> Option<(u32, u32)> {
        let (mut before, mut at) = (NONE, self.heads[bucket]);
        while at != NONE {
            let block = &self.blocks[at as usize];
            if block.cell == cell {
                return Some((at, before));
            }
            (before, at) = (at, block.next);
        }
        None
    }

    /// Moves `slot` to its new fix. A slot past the capacity is ignored.
    pub fn update(&mut self, slot: Slot, lat: f64, lon: f64) {
        let s = slot as usize;
        if s >= self.places.len() || !lat.is_finite() || !lon.is_finite() {
            return;
        }
        let cell = cell_of(lat, lon);
        let (lat0, lon0) = corner(cell);
        // the offset is within the cell, but lon0 is in 0..360 and lon in
        // -180..180: bring the difference back, and a rounding below 0 to 0
        let mut dlon = lon - lon0;
        if dlon < -180.0 {
            dlon += 360.0;
        }
        let item = Item {
            dlat: (lat - lat0) as f32,
            dlon: dlon.max(0.0) as f32,
            slot,
        };
        let place = self.places[s];
        if place == NONE {
            self.indexed += 1;
        } else {
            let (b, i) = (place as usize / BLOCK_ITEMS, place as usize % BLOCK_ITEMS);
            if self.blocks[b].cell == cell {
                self.blocks[b].items[i] = item;
                return;
            }
            self.remove(b, i);
        }
        self.insert(cell, item);
    }

    fn insert(&mut self, cell: Cell, item: Item) {
        let bucket = self.bucket(cell);
        let block = match self.first_block(bucket, cell) {
            Some((b, _)) if (self.blocks[b as usize].len as usize) < BLOCK_ITEMS => b,
            _ => {
                // room for every vehicle alone: never empty while a slot
                // still lacks a place
                let b = self.free;
                let Some(fresh) = self.blocks.get_mut(b as usize) else {
                    return;
                };
                self.free = fresh.next;
                fresh.cell = cell;
                fresh.len = 0;
                fresh.next = self.heads[bucket];
                self.heads[bucket] = b;
                self.occupied[bucket / 64] |= 1 << (bucket % 64);
                b
            }
        };
        let entry = &mut self.blocks[block as usize];
        let i = entry.len as usize;
        entry.items[i] = item;
        entry.len += 1;
        self.places[item.slot as usize] = block * BLOCK_ITEMS as u32 + i as u32;
    }

    /// Takes the vehicle at (`b`, `i`) out: the last vehicle of its cell's
    /// first block fills the hole, and an emptied block is freed.
    fn remove(&mut self, b: usize, i: usize) {
        let cell = self.blocks[b].cell;
        let bucket = self.bucket(cell);
        let Some((first, before)) = self.first_block(bucket, cell) else {
            return;
        };
        let first = first as usize;
        let last = self.blocks[first].len as usize - 1;
        let moved = self.blocks[first].items[last];
        self.blocks[b].items[i] = moved;
        self.places[moved.slot as usize] = (b * BLOCK_ITEMS + i) as u32;
        self.blocks[first].len -= 1;
        if self.blocks[first].len == 0 {
            let next = self.blocks[first].next;
            if before == NONE {
                self.heads[bucket] = next;
                if next == NONE {
                    self.occupied[bucket / 64] &= !(1 << (bucket % 64));
                }
            } else {
                self.blocks[before as usize].next = next;
            }
            self.blocks[first].next = self.free;
            self.free = first as u32;
        }
    }

    /// The slot's indexed position (longitude in -180..180), if it has one.
    pub fn position(&self, slot: Slot) -> Option<(f64, f64)> {
        let place = *self.places.get(slot as usize)?;
        if place == NONE {
            return None;
        }
        let block = &self.blocks[place as usize / BLOCK_ITEMS];
        let item = block.items[place as usize % BLOCK_ITEMS];
        let (lat, lon) = Self::coordinates(block.cell, &item);
        Some((lat, if lon >= 180.0 { lon - 360.0 } else { lon }))
    }

    /// An item's coordinates in degrees (longitude in 0..360).
    fn coordinates(cell: Cell, item: &Item) -> (f64, f64) {
        let (lat0, lon0) = corner(cell);
        (lat0 + f64::from(item.dlat), lon0 + f64::from(item.dlon))
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
            for block in self.blocks.iter().filter(|b| b.len > 0) {
                self.scan_block(block, &probe, out);
            }
            return;
        }
        let (row0, col0) = cell_of(lat, lon);
        let frame = Frame::around(lat, lon, cell_m, col_m, radius_m <= FLAT_LIMIT_M);
        for ring in 0..=rows.max(cols) {
            // nothing in this ring or beyond can be nearer than `near`
            let near = frame.ring_near_m(ring);
            if near > radius_m || (out.full() && near >= out.worst()) {
                break;
            }
            self.scan_ring(ring, rows, cols, (row0, col0), &frame, &probe, out);
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
        frame: &Frame,
        probe: &Probe<F>,
        out: &mut TopK,
    ) {
        let dr_max = ring.min(rows);
        let dc_max = ring.min(cols);
        for dr in -dr_max..=dr_max {
            let Ok(row) = i32::try_from(i64::from(row0) + dr) else {
                continue;
            };
            // a cell wholly farther than the k-th best (or the radius) is
            // passed on arithmetic, without a memory access; a whole row
            // too, when its nearest edge is
            let bound = frame.squared_bound(probe.radius_m.min(out.worst()));
            let dy2 = frame.dy2(dr);
            if dy2 > bound {
                continue;
            }
            let on_edge_row = dr.abs() == ring;
            let mut dc = -dc_max;
            while dc <= dc_max {
                if on_edge_row || dc.abs() == ring {
                    let bound = frame.squared_bound(probe.radius_m.min(out.worst()));
                    if dy2 + frame.dx2(dc) <= bound {
                        // |dc| < LON_CELLS: one turn at most
                        let mut col = i64::from(col0) + dc;
                        if col < 0 {
                            col += LON_CELLS;
                        } else if col >= LON_CELLS {
                            col -= LON_CELLS;
                        }
                        self.scan_cell((row, col as i32), probe, out);
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
        let bucket = self.bucket(cell);
        if self.occupied[bucket / 64] & (1 << (bucket % 64)) == 0 {
            return;
        }
        let mut at = self.heads[bucket];
        while at != NONE {
            let block = &self.blocks[at as usize];
            if block.cell == cell {
                self.scan_block(block, probe, out);
            }
            at = block.next;
        }
    }

    fn scan_block<F: Fn(Slot) -> bool>(&self, block: &Block, probe: &Probe<F>, out: &mut TopK) {
        let len = (block.len as usize).min(BLOCK_ITEMS);
        for item in &block.items[..len] {
            let (lat, lon) = Self::coordinates(block.cell, item);
            consider(probe, lat, lon, item.slot, out);
        }
    }
}

fn consider<F: Fn(Slot) -> bool>(probe: &Probe<F>, lat: f64, lon: f64, slot: Slot, out: &mut TopK) {
    let bound = probe.radius_m.min(out.worst());
    if lat.abs() <= probe.far_lat && probe.radius_m <= FLAT_LIMIT_M {
        // A flat distance with the narrowest east–west scale of the
        // box never exceeds the great-circle one by more than 0.2 % at
        // these sizes: skip what cannot beat `bound` without the trig.
        let dlat = (lat - probe.lat) * M_PER_DEG;
        let dlon =
            ((lon - probe.lon + 540.0).rem_euclid(360.0) - 180.0) * M_PER_DEG * probe.far_cos;
        let flat = dlat * dlat + dlon * dlon;
        let limit = bound / FLAT_SAFETY;
        if flat > limit * limit {
            return;
        }
    }
    let d = haversine_m(probe.lat, probe.lon, lat, lon);
    if d <= probe.radius_m && d < out.worst() && (probe.accept)(slot) {
        out.offer(d, slot);
    }
}

/// Where a search's point lies in its cell, in metres, for lower bounds
/// on the distance to other cells: flat, with the narrowest east–west
/// scale of the scanned rows and [`FLAT_SAFETY`], so never above the
/// great-circle distance (below [`FLAT_LIMIT_M`]; past it the bounds are
/// the rings' width alone).
struct Frame {
    /// A cell's height and (narrowest) width.
    cell_h: f64,
    cell_w: f64,
    /// From the point to its cell's south, north, west and east edges.
    to_s: f64,
    to_n: f64,
    to_w: f64,
    to_e: f64,
    /// Whether the flat bounds hold (the radius is below `FLAT_LIMIT_M`).
    flat: bool,
}

impl Frame {
    fn around(lat: f64, lon: f64, cell_h: f64, cell_w: f64, flat: bool) -> Frame {
        let fy = (lat / CELL_DEG).rem_euclid(1.0);
        let fx = (lon / CELL_DEG).rem_euclid(1.0);
        Frame {
            cell_h,
            cell_w,
            to_s: fy * cell_h,
            to_n: (1.0 - fy) * cell_h,
            to_w: fx * cell_w,
            to_e: (1.0 - fx) * cell_w,
            flat,
        }
    }

    /// Metres (at least) from the point to a cell `d` rows (or columns)
    /// away, along one axis.
    fn axis(d: i64, size: f64, to_low: f64, to_high: f64) -> f64 {
        match d {
            0 => 0.0,
            d if d > 0 => (d - 1) as f64 * size + to_high,
            d => (-d - 1) as f64 * size + to_low,
        }
    }

    /// (At least how far a cell `dr` rows away is)², in m²; 0 without
    /// the flat bounds.
    fn dy2(&self, dr: i64) -> f64 {
        self.squared(Self::axis(dr, self.cell_h, self.to_s, self.to_n))
    }

    /// The same, `dc` columns away.
    fn dx2(&self, dc: i64) -> f64 {
        self.squared(Self::axis(dc, self.cell_w, self.to_w, self.to_e))
    }

    fn squared(&self, d: f64) -> f64 {
        if self.flat {
            d * d
        } else {
            0.0
        }
    }

    /// What `dy2 + dx2` of a cell must not pass for it to hold a point
    /// within `bound_m` metres.
    fn squared_bound(&self, bound_m: f64) -> f64 {
        let b = bound_m / FLAT_SAFETY;
        b * b
    }

    /// At least how far every cell of ring `ring` (and beyond) is.
    fn ring_near_m(&self, ring: i64) -> f64 {
        if ring == 0 {
            return 0.0;
        }
        let r = (ring - 1) as f64;
        if !self.flat {
            // the point is in ring 0: ring r is r - 1 whole cells away
            return r * self.cell_h.min(self.cell_w) * FLAT_SAFETY;
        }
        let dy = r * self.cell_h + self.to_s.min(self.to_n);
        let dx = r * self.cell_w + self.to_w.min(self.to_e);
        dy.min(dx) * FLAT_SAFETY
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
    fn a_block_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Block>(), 64);
        assert_eq!(std::mem::align_of::<Block>(), 64);
        assert_eq!(360.0 / CELL_DEG, LON_CELLS as f64);
    }

    /// Vehicles crowded into a few cells (chains of full blocks, several
    /// cells per bucket) move about, in and out of cells, at random: the
    /// index answers as a brute-force search does, and keeps every slot
    /// once.
    #[test]
    fn many_moves_through_crowded_cells_keep_it_exact() {
        let mut seed = 3;
        let n = 600;
        let mut grid = Grid::new(n);
        let mut points = vec![(0.0, 0.0); n];
        let (lat0, lon0, span) = (52.37, 4.89, 0.02); // 5 × 5 cells
        for step in 0..20_000 {
            let s = if step < n {
                step
            } else {
                (lcg(&mut seed) * n as f64) as usize
            };
            let p = (
                lat0 + (lcg(&mut seed) - 0.5) * span,
                lon0 + (lcg(&mut seed) - 0.5) * span,
            );
            grid.update(s as Slot, p.0, p.1);
            points[s] = p;
        }
        assert_eq!(grid.len(), n);
        let in_blocks: usize = grid.blocks.iter().map(|b| b.len as usize).sum();
        assert_eq!(in_blocks, n, "every slot in exactly one block");
        for (s, &(lat, lon)) in points.iter().enumerate() {
            let (a, o) = grid.position(s as Slot).unwrap();
            assert!((a - lat).abs() < 1e-8 && (o - lon).abs() < 1e-8);
        }
        for q in 0..200 {
            let lat = lat0 + (lcg(&mut seed) - 0.5) * span * 1.2;
            let lon = lon0 + (lcg(&mut seed) - 0.5) * span * 1.2;
            let (radius, k) = [(300.0, 10), (2_000.0, 50), (100.0, 3), (5_000.0, 1)][q % 4];
            assert_eq!(
                found(&grid, lat, lon, radius, k),
                brute(&points, lat, lon, radius, k),
                "at {lat},{lon} r={radius} k={k}"
            );
        }
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
