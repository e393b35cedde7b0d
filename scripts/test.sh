#!/usr/bin/env bash
# Runs every test of the workspace, as a new user or CI would:
#
#     bash scripts/test.sh [extra args for the test runner]
#
# 1. installs missing Debian packages (mosquitto-clients, rabbitmq-server,
#    chromium, fonts, procps) with apt-get; apt-get update only if needed;
# 2. starts a throwaway RabbitMQ node on 127.0.0.1:5672 unless a broker
#    already answers there (no systemd needed; see scripts/lib-services.sh)
#    and exports FLEETGATE_TEST_AMQP_URL; exports FLEETGATE_TEST_CHROMIUM;
# 3. runs the benches once each in test mode, the doctests (cargo test
#    --doc), the vendored rumqttd's own tests, then every other test with
#    cargo-nextest (or cargo test when nextest is missing), extra args passed
#    to that runner. The runner's summary is the last thing printed.
#
# Quick when everything is already there. See lib-services.sh for the knobs
# (FLEETGATE_TEST_AMQP_URL, FLEETGATE_STOP_SERVICES, FLEETGATE_SKIP_APT...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib-services.sh
source scripts/lib-services.sh

T0=$SECONDS

fg_section "Debian packages"
fg_ensure_packages procps mosquitto mosquitto-clients rabbitmq-server chromium fonts-dejavu-core

fg_section "RabbitMQ (loopback)"
fg_ensure_rabbitmq
if [ "$FG_RABBIT_STARTED" = 1 ] && [ "${FLEETGATE_STOP_SERVICES:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}" = 1 ]; then
    # quiet: the test runner's summary must stay the last line printed
    trap 'fg_rabbit_stop >/dev/null 2>&1' EXIT
fi

fg_section "Browser"
if [ -x /usr/bin/chromium ]; then
    export FLEETGATE_TEST_CHROMIUM=/usr/bin/chromium
    fg_info "FLEETGATE_TEST_CHROMIUM=$FLEETGATE_TEST_CHROMIUM ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
else
    fg_info "no /usr/bin/chromium: the live map page test will FAIL (it never skips)"
fi
fg_info "services ready after $((SECONDS - T0))s"

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# The fuzz targets (tests/it/fuzz.rs) run 200 mutated inputs each by
# default; CI runs 20 000 per target (about 15 s in all on 2 cores).
if [ "${CI:-}" = true ]; then
    export FLEETGATE_FUZZ_CASES="${FLEETGATE_FUZZ_CASES:-20000}"
fi
cores=$(nproc 2>/dev/null || echo 2)
status=0

# Benchmarks in criterion's test mode: each case runs once, so the benches
# cannot rot; their real runs are `cargo bench` (BENCHMARKS.md). Before the
# test runner, whose summary must close the output.
fg_section "Benchmark smoke: cargo test --workspace --benches (one iteration per case)"
cargo test --workspace --benches -q || {
    status=$?
    printf '\nscripts/test.sh: benchmark smoke FAILED (exit %s); running the tests anyway\n' "$status" >&2
}

fg_section "Doctests: cargo test --workspace --doc"
cargo test --workspace --doc || {
    status=$?
    printf '\nscripts/test.sh: doctests FAILED (exit %s); running the other tests anyway\n' "$status" >&2
}

fg_section "Comparison harness smoke: benches/compare.sh --smoke (debug binaries, seconds per scenario)"
# The full comparison is a documented command (BENCHMARKS.md), not a test;
# this keeps its every scenario, Mosquitto included, from rotting.
if cargo build -q -p fleetgate -p firmware-sim -p loadgen --bins; then
    SKIP_BUILD=1 BIN_DIR="${CARGO_TARGET_DIR:-target}/debug" OUT_DIR="${CARGO_TARGET_DIR:-target}/compare/smoke" \
        bash benches/compare.sh --smoke >"${CARGO_TARGET_DIR:-target}/compare-smoke.log" 2>&1 || {
        status=$?
        tail -n 60 "${CARGO_TARGET_DIR:-target}/compare-smoke.log" >&2
        printf '\nscripts/test.sh: comparison smoke FAILED (exit %s); full log in %s\n' "$status" "${CARGO_TARGET_DIR:-target}/compare-smoke.log" >&2
    }
    fg_info "table: ${CARGO_TARGET_DIR:-target}/compare/smoke/summary.md ($(grep -c '^| ' "${CARGO_TARGET_DIR:-target}/compare/smoke/summary.md" 2>/dev/null || echo 0) rows)"
else
    status=1
fi

# The vendored rumqttd is its own workspace (excluded from ours, so our
# lints do not run on upstream code); its tests pin our patches
# (vendor/rumqttd/PATCHES.md). Same target directory: the shared
# dependencies are built once.
fg_section "Vendored rumqttd: cargo test --manifest-path vendor/rumqttd/Cargo.toml"
cargo test -q --manifest-path vendor/rumqttd/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}" || {
    status=$?
    printf '\nscripts/test.sh: vendored rumqttd tests FAILED (exit %s); running the other tests anyway\n' "$status" >&2
}

if cargo nextest --version >/dev/null 2>&1; then
    # Profiles live in .config/nextest.toml; CI gets the "ci" profile.
    export NEXTEST_PROFILE="${NEXTEST_PROFILE:-$([ "${CI:-}" = true ] && echo ci || echo default)}"
    export NEXTEST_TEST_THREADS="${NEXTEST_TEST_THREADS:-$cores}"
    # --lib --bins --tests: every test target; the benches ran above in test
    # mode (nextest would run them at full length).
    fg_section "Tests: cargo nextest run --workspace --lib --bins --tests --no-fail-fast $* (profile $NEXTEST_PROFILE, $NEXTEST_TEST_THREADS threads)"
    cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@" || status=$?
else
    fg_section "Tests: cargo test --workspace --lib --bins --tests --no-fail-fast $* (cargo-nextest not installed)"
    export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$cores}"
    cargo test --workspace --lib --bins --tests --no-fail-fast "$@" || status=$?
fi
# Nothing printed after the runner: its summary stays the last line.
exit "$status"
