//! Golden tests of `loadgen bench-report`: the table and the chart it makes
//! of the stored comparison `benches/results/2026-11-22.jsonl` stay what
//! they were when that file was written (the table saved in
//! `tests/fixtures/2026-11-22-table.md`, the chart committed beside the
//! results), so a change to the result schema, the report or the chart
//! that alters either shows up here.

// The helpers below unwrap: a missing fixture or a failed run is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadgen lives in the workspace")
        .to_path_buf()
}

fn results() -> PathBuf {
    repo().join("benches/results/2026-11-22.jsonl")
}

/// Runs the binary as `benches/compare.sh` does and returns its stdout.
fn bench_report(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("bench-report")
        .arg("--results")
        .arg(results())
        .args(extra)
        .output()
        .expect("loadgen runs");
    assert!(
        out.status.success(),
        "bench-report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the table is UTF-8")
}

#[test]
fn the_stored_comparison_prints_the_same_table() {
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/2026-11-22-table.md"),
    )
    .expect("the fixture is there");
    assert_eq!(bench_report(&[]), expected);
}

#[test]
fn the_stored_comparison_draws_the_same_chart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let svg = dir.path().join("chart.svg");
    let svg_arg = svg.to_str().expect("a UTF-8 path");
    bench_report(&[
        "--svg",
        svg_arg,
        "--title",
        "fleetgate vs Mosquitto 2.0.11 — 2 cores, loopback, full scale, 2026-11-22",
    ]);
    let drawn = std::fs::read_to_string(&svg).expect("the chart was written");
    let stored = std::fs::read_to_string(repo().join("benches/results/2026-11-22.svg"))
        .expect("the stored chart is there");
    assert!(
        drawn == stored,
        "the chart differs from benches/results/2026-11-22.svg"
    );
}
