//! Wire codec: a typical `Position` through postcard (what devices send)
//! against serde_json on the same struct and against the JSON form that
//! dashboards and `mosquitto_pub` users see.
//!
//! Run with `cargo bench --bench wire`; results and the machine are in
//! BENCHMARKS.md. Each case is one message (`Throughput::Elements(1)`), so
//! criterion's "thrpt" line reads as messages per second.
//!
//! Cases:
//! - `position_encode_postcard`: `fleetgate_wire::encode` into a stack
//!   `[u8; MAX_ENCODED_LEN]` (the device's and the gateway's path; no allocation).
//! - `position_decode_postcard`: `fleetgate_wire::decode::<Position>`.
//! - `position_decode_any_postcard`: `json::decode_position_any` on postcard
//!   bytes (what ingest calls: format detection, then postcard).
//! - `position_encode_serde_json`: `serde_json::to_vec(&Position)` (a new Vec each time).
//! - `position_encode_serde_json_reused_vec`: `serde_json::to_writer` into a
//!   cleared, reused Vec (no allocation after the first).
//! - `position_decode_serde_json`: `serde_json::from_slice::<Position>`.
//! - `position_encode_json_form`: `PositionJson::from_position` + `serde_json::to_vec`
//!   (unit conversion to degrees and km/h, then text).
//! - `position_decode_json_form`: `json::decode_position_any` on the JSON form
//!   (parse, range checks, conversion back to wire units).

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate_wire::json::{decode_position_any, PositionJson};
use fleetgate_wire::{decode, encode, flags, Position, MAX_ENCODED_LEN};

/// 2026-11-22T00:00:00Z, as in the wire crate's contract tests.
const NOV_22_2026_MS: u64 = 1_795_341_600_000;

/// The wire crate's "typical position": Amsterdam, 50 km/h, heading east,
/// no odometer (22 bytes of postcard).
fn typical_position() -> Position {
    Position {
        seq: 1234,
        time_ms: NOV_22_2026_MS,
        lat_e6: 52_373_100,
        lon_e6: 4_892_200,
        speed_cm_s: 1389,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

fn wire(c: &mut Criterion) {
    let position = typical_position();

    let mut buf = [0u8; MAX_ENCODED_LEN];
    let postcard_bytes = match encode(&position, &mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => panic!("cannot encode the typical position: {e}"),
    };
    let serde_json_bytes =
        serde_json::to_vec(&position).unwrap_or_else(|e| panic!("serde_json: {e}"));
    let json_form_bytes = serde_json::to_vec(&PositionJson::from_position(&position))
        .unwrap_or_else(|e| panic!("JSON form: {e}"));
    // Sanity: every decoder below yields the same position.
    assert_eq!(decode::<Position>(&postcard_bytes), Ok(position));
    assert_eq!(
        serde_json::from_slice::<Position>(&serde_json_bytes).ok(),
        Some(position)
    );
    assert_eq!(decode_position_any(&json_form_bytes, 0), Ok(position));
    eprintln!(
        "typical position: postcard {} bytes, serde_json {} bytes, JSON form {} bytes",
        postcard_bytes.len(),
        serde_json_bytes.len(),
        json_form_bytes.len()
    );

    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    group.bench_function("position_encode_postcard", |b| {
        b.iter(|| {
            let mut buf = [0u8; MAX_ENCODED_LEN];
            let len = encode(black_box(&position), &mut buf).map_or(0, |bytes| bytes.len());
            black_box(buf);
            len
        });
    });
    group.bench_function("position_decode_postcard", |b| {
        b.iter(|| decode::<Position>(black_box(&postcard_bytes)));
    });
    group.bench_function("position_decode_any_postcard", |b| {
        b.iter(|| decode_position_any(black_box(&postcard_bytes), 0));
    });

    group.bench_function("position_encode_serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&position)).map_or(0, |v| v.len()));
    });
    let mut reused = Vec::with_capacity(256);
    group.bench_function("position_encode_serde_json_reused_vec", |b| {
        b.iter(|| {
            reused.clear();
            let ok = serde_json::to_writer(&mut reused, black_box(&position)).is_ok();
            black_box(&reused);
            ok
        });
    });
    group.bench_function("position_decode_serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Position>(black_box(&serde_json_bytes)).ok());
    });

    group.bench_function("position_encode_json_form", |b| {
        b.iter(|| {
            let form = PositionJson::from_position(black_box(&position));
            serde_json::to_vec(&form).map_or(0, |v| v.len())
        });
    });
    group.bench_function("position_decode_json_form", |b| {
        b.iter(|| decode_position_any(black_box(&json_form_bytes), 0));
    });

    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
