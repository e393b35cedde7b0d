//! A position update with the spatial index, geofence evaluation and the
//! driving events (`Fleet::apply_position`), at 10 000 and 100 000
//! vehicles with 0, 1 000 and 10 000 fences; the target is
//! ≥ 100 000 positions/s on one core with 10 000 fences (Tile38 reports
//! ~6 000 SET/s with 23 000 fences, tidwall/tile38#491).
//!
//! Run with `cargo bench --bench fences`; results and the machine are in
//! BENCHMARKS.md. One position per iteration, so criterion's "thrpt" reads
//! as positions per second, on the bench thread alone (one core).
//!
//! Layout: vehicles and fences spread evenly over 50 × 50 km around
//! Amsterdam (a city). Fences are circles of 50–400 m radius, one in four
//! a polygon of 8 vertices of the same size, one in three with a 30 km/h
//! speed limit, one in five with a 30 s dwell; every vehicle has a 50 km/h
//! limit of its own (`events.overspeed.default_limit_kmh`), so overspeed is
//! judged on every fix. With 10 000 fences about 60 % of the area lies in
//! some fence. Each vehicle drives 22 m per fix, at 50 km/h, for 128 fixes
//! (2.8 km) and then starts over, so it crosses fence boundaries, changes
//! index cells and makes events as a real one does. Timed: the whole
//! state update (sequence window, odometer, presence, the nearest index,
//! candidate fences and their shapes, memberships, dwell, overspeed,
//! motion, ignition, the events) — not the fan-out, which
//! `cargo bench --bench pipeline` measures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fleetgate::config::events::EventsConfig;
use fleetgate::config::geofence::{Circle, FenceConfig, GeofenceConfig};
use fleetgate::fleet::driving::Driving;
use fleetgate::fleet::geofence::Geofences;
use fleetgate::fleet::{Fleet, Update};
use fleetgate::metrics::Metrics;
use fleetgate::topics::VehicleId;
use fleetgate_wire::{flags, Position};

mod common;

use common::Lcg;

const SIDE_KM: f64 = 50.0;

fn fence(i: usize, rng: &mut Lcg) -> FenceConfig {
    let (lat, lon) = rng.point(SIDE_KM);
    let radius_m = 50.0 + rng.unit() * 350.0;
    let mut f = FenceConfig {
        name: format!("f{i}"),
        speed_limit_kmh: i.is_multiple_of(3).then_some(30.0),
        dwell_s: i.is_multiple_of(5).then_some(30),
        ..Default::default()
    };
    if i.is_multiple_of(4) {
        let dlat = radius_m / 111_195.0;
        let dlon = dlat / lat.to_radians().cos();
        f.polygon = Some(
            (0..8)
                .map(|k| {
                    let a = f64::from(k) * std::f64::consts::TAU / 8.0;
                    [lon + dlon * a.cos(), lat + dlat * a.sin()]
                })
                .collect(),
        );
    } else {
        f.circle = Some(Circle { lat, lon, radius_m });
    }
    f
}

/// A fleet of `vehicles` with `fences` fences, every vehicle placed once.
fn fleet(vehicles: usize, fences: usize) -> (Fleet, Vec<VehicleId>, Vec<(f64, f64)>) {
    let mut rng = Lcg(7);
    let config = GeofenceConfig {
        max_fences: NonZeroUsize::new(fences.max(1)).unwrap(),
        fences: (0..fences).map(|i| fence(i, &mut rng)).collect(),
        ..Default::default()
    };
    config.check().unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut fleet = Fleet::new(vehicles, 16, Duration::from_secs(600), metrics.clone());
    fleet.geofences = Geofences::new(&config, vehicles, metrics);
    let mut events = EventsConfig::default();
    events.overspeed.default_limit_kmh = Some(50.0);
    fleet.driving = Driving::new(&events, vehicles);
    let ids: Vec<VehicleId> = (0..vehicles)
        .map(|i| VehicleId::parse(&format!("v{i}")).unwrap())
        .collect();
    let starts: Vec<(f64, f64)> = (0..vehicles).map(|_| rng.point(SIDE_KM)).collect();
    let mut out = Vec::with_capacity(64);
    let now = tokio::time::Instant::now();
    for (slot, id) in ids.iter().enumerate() {
        let p = position(starts[slot], 0);
        fleet.apply_position(id, &p, true, now, 0, &mut out);
        out.clear();
    }
    (fleet, ids, starts)
}

/// Fix `seq` of a vehicle that started at `start`: 22 m north-east per
/// fix, 128 fixes, then back to the start.
fn position((lat, lon): (f64, f64), seq: u32) -> Position {
    let step = f64::from(seq % 128) * 0.000_14;
    Position {
        seq: seq + 1,
        time_ms: 1_795_000_000_000 + u64::from(seq) * 1000,
        lat_e6: ((lat + step) * 1e6) as i32,
        lon_e6: ((lon + step * 1.6) * 1e6) as i32,
        speed_cm_s: 1_389,
        heading: 32,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

fn bench_position_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("position_update");
    group.throughput(Throughput::Elements(1));
    // criterion's test mode (`cargo test --benches`) runs each case once:
    // a tenth of the set-up keeps it quick and still runs every line
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        10
    };
    for (vname, vehicles) in [("10k_vehicles", 10_000usize), ("100k_vehicles", 100_000)] {
        for (fname, fences) in [
            ("0_fences", 0usize),
            ("1k_fences", 1_000),
            ("10k_fences", 10_000),
        ] {
            let (vehicles, fences) = (vehicles / scale, fences / scale);
            let (mut fleet, ids, starts) = fleet(vehicles, fences);
            let mut seq = vec![0u32; vehicles];
            let mut out: Vec<Update> = Vec::with_capacity(64);
            let now = tokio::time::Instant::now();
            let mut step = 0usize;
            let mut events = 0u64;
            let mut positions = 0u64;
            group.bench_function(BenchmarkId::new(vname, fname), |b| {
                b.iter(|| {
                    step = step.wrapping_add(1);
                    let slot = step % vehicles;
                    seq[slot] += 1;
                    let p = position(starts[slot], seq[slot]);
                    out.clear();
                    black_box(fleet.apply_position(&ids[slot], &p, true, now, 0, &mut out));
                    positions += 1;
                    events += out.len() as u64 - 1;
                })
            });
            eprintln!(
                "position_update/{vname}/{fname}: {:.3} events per position, {} fences",
                events as f64 / positions.max(1) as f64,
                fleet.geofences.len()
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_position_update);
criterion_main!(benches);
