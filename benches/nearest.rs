//! The spatial index (`fleetgate::fleet::nearest`): what a position update
//! costs with the index, and what a nearest-10 search costs, at 10 000 and
//! 100 000 vehicles.
//!
//! Run with `cargo bench --bench nearest`; results and the machine are in
//! BENCHMARKS.md. Cases (one operation per iteration, so "thrpt" reads as
//! operations per second):
//! - `grid_move/{10k,100k}`: `Grid::update` of a vehicle to a new fix a
//!   few hundred metres on (most moves change cell).
//! - `fleet_apply_position/{10k,100k}`: `Fleet::apply_position`, the
//!   whole state update of one position (sequence window, odometer,
//!   presence, the index, the update for the fan-out).
//! - `nearest10/{city,region}_100k`: 100 000 vehicles spread evenly over
//!   50 × 50 km (a city) or 300 × 300 km (a region), nearest 10 within
//!   5 km (city) or 15 km (region) of a random point in the area.
//!
//! After criterion, it prints the p50/p99/p99.9 of 100 000 single
//! nearest-10 searches in each layout, timed one by one (criterion reports
//! means): the target is p99 < 10 µs at 100 000 vehicles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fleetgate::fleet::nearest::{Grid, TopK};
use fleetgate::fleet::Fleet;
use fleetgate::metrics::Metrics;
use fleetgate::topics::VehicleId;
use fleetgate_wire::{flags, Position};

mod common;

use common::Lcg;

/// `n` points spread evenly over a square of `side_km` around Amsterdam.
fn spread(n: usize, side_km: f64, rng: &mut Lcg) -> Vec<(f64, f64)> {
    (0..n).map(|_| rng.point(side_km)).collect()
}

fn grid_of(points: &[(f64, f64)]) -> Grid {
    let mut grid = Grid::new(points.len());
    for (slot, &(lat, lon)) in points.iter().enumerate() {
        grid.update(slot as u32, lat, lon);
    }
    grid
}

fn bench_moves(c: &mut Criterion) {
    let mut group = c.benchmark_group("grid_move");
    group.throughput(Throughput::Elements(1));
    for (name, n) in [("10k", 10_000usize), ("100k", 100_000)] {
        let mut rng = Lcg(1);
        let points = spread(n, 50.0, &mut rng);
        let mut grid = grid_of(&points);
        // each vehicle moves ~600 m north-east per step
        let mut step = 0usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                step = step.wrapping_add(1);
                let slot = step % n;
                let (lat, lon) = points[slot];
                let hop = ((step / n) % 16) as f64 * 0.004;
                grid.update(slot as u32, black_box(lat + hop), black_box(lon + hop));
            })
        });
    }
    group.finish();
}

fn bench_apply_position(c: &mut Criterion) {
    let mut group = c.benchmark_group("fleet_apply_position");
    group.throughput(Throughput::Elements(1));
    for (name, n) in [("10k", 10_000usize), ("100k", 100_000)] {
        let mut rng = Lcg(2);
        let points = spread(n, 50.0, &mut rng);
        let ids: Vec<VehicleId> = (0..n)
            .map(|i| VehicleId::parse(&format!("v{i}")).unwrap())
            .collect();
        let metrics = Arc::new(Metrics::default());
        let mut fleet = Fleet::new(n, 16, Duration::from_secs(600), metrics);
        let mut out = Vec::with_capacity(64);
        let now = tokio::time::Instant::now();
        let mut seq = vec![0u32; n];
        let mut step = 0usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                step = step.wrapping_add(1);
                let slot = step % n;
                seq[slot] += 1;
                let (lat, lon) = points[slot];
                let hop = f64::from(seq[slot] % 16) * 0.004;
                let p = Position {
                    seq: seq[slot],
                    time_ms: 1_795_000_000_000 + u64::from(seq[slot]) * 1000,
                    lat_e6: ((lat + hop) * 1e6) as i32,
                    lon_e6: ((lon + hop) * 1e6) as i32,
                    speed_cm_s: 1_389,
                    heading: 64,
                    flags: flags::FIX_VALID | flags::IGNITION,
                    odometer_m: None,
                };
                out.clear();
                black_box(fleet.apply_position(&ids[slot], &p, true, now, 0, &mut out));
            })
        });
    }
    group.finish();
}

/// (layout name, square side in km, search radius in m)
const LAYOUTS: [(&str, f64, f64); 2] = [
    ("city_100k", 50.0, 5_000.0),
    ("region_100k", 300.0, 15_000.0),
];

fn bench_nearest(c: &mut Criterion) {
    let mut group = c.benchmark_group("nearest10");
    group.throughput(Throughput::Elements(1));
    for (name, side_km, radius_m) in LAYOUTS {
        let mut rng = Lcg(3);
        let grid = grid_of(&spread(100_000, side_km, &mut rng));
        let queries = spread(4096, side_km, &mut rng);
        let mut top = TopK::new(10);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                let (lat, lon) = queries[i];
                grid.nearest(
                    black_box(lat),
                    black_box(lon),
                    radius_m,
                    10,
                    |_| true,
                    &mut top,
                );
                black_box(top.as_slice().len())
            })
        });
    }
    group.finish();
    percentiles();
}

/// p50/p99/p99.9 of single searches, timed one by one.
fn percentiles() {
    let searches = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        100
    };
    for (name, side_km, radius_m) in LAYOUTS {
        let mut rng = Lcg(4);
        let grid = grid_of(&spread(100_000, side_km, &mut rng));
        let queries = spread(searches, side_km, &mut rng);
        let mut top = TopK::new(10);
        let mut ns: Vec<u128> = queries
            .iter()
            .map(|&(lat, lon)| {
                let t = Instant::now();
                grid.nearest(lat, lon, radius_m, 10, |_| true, &mut top);
                black_box(top.as_slice().len());
                t.elapsed().as_nanos()
            })
            .collect();
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        eprintln!(
            "nearest10/{name}: {searches} searches, p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
}

criterion_group!(benches, bench_moves, bench_apply_position, bench_nearest);
criterion_main!(benches);
