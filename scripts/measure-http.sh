#!/usr/bin/env bash
# The source systems' HTTP-side figures (issue 13), on the release build:
#   1. SMQ: `loadgen smq-put`, /put producers to consumers on the SMQ port,
#      flat out and at a fixed rate;
#   2. /message: `loadgen ws-fanout`, one publisher to 100 WebSocket
#      subscribers, at fixed rates and flat out;
#   3. POST /search (issue 12): `loadgen search-load`, a fleet of 10 000
#      and 100 000 vehicles fed in through POST /tracking, then keep-alive
#      clients searching the nearest 10 while POST /tracking keeps moving
#      vehicles (none, 2 000 and 10 000 positions/s).
# Each run gets a fresh gateway on free loopback ports (bridge off,
# pubsub.max_connections and http.max_connections raised for the 100
# subscribers), stopped after it.
# Prints each run's human summary and appends its JSON line to
# $OUT (default target/measure-http/results.jsonl). Traffic stays on
# loopback; every run stops by itself (about 4 minutes in all).
#
# Environment:
#   PARTS ["smq fanout search"]  which of the three to run
#   DURATION_S [10]     seconds per run
#   SUBSCRIBERS [100]   /message subscribers
#   SEARCH_CLIENTS [8]  POST /search clients
#   SKIP_BUILD [0]      1: use the binaries already built
#   CARGO_TARGET_DIR    where the binaries are built (default ./target)
set -euo pipefail
trap 'printf "measure-http: failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DURATION_S=${DURATION_S:-10}
SUBSCRIBERS=${SUBSCRIBERS:-100}
SEARCH_CLIENTS=${SEARCH_CLIENTS:-8}
PARTS=${PARTS:-smq fanout search}
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/measure-http/results.jsonl}

MEASURE_NAME=measure-http
# shellcheck source=scripts/lib-measure.sh
source scripts/lib-measure.sh
need python3
need curl
need cargo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/measure-http.XXXXXX")
cleanup() {
    local rc=$?
    stop_pids
    [ "$rc" -eq 0 ] && rm -rf "$TMP" || printf 'measure-http: logs kept in %s\n' "$TMP" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || true

build_release
mkdir -p "$(dirname "$OUT")"

# gateway: a fresh gateway with the SMQ and the proxy on; sets HTTP_ADDR,
# SMQ_ADDR, GATEWAY_PID (lib-measure's start_gateway).
gateway() {
    local dir=$TMP/gw-$RANDOM
    SMQ_ADDR=127.0.0.1:$(free_port)
    start_gateway "$dir" "$(printf '[bridge]\nenabled = false\n[smq]\nlisten = "%s"\n[pubsub]\nmax_connections = %s\n[http]\nmax_connections = %s' \
        "$SMQ_ADDR" "$((SUBSCRIBERS + 8))" "$((SUBSCRIBERS + 16))")"
}
# search_gateway VEHICLES: a fresh gateway whose fleet table holds them
# (bridge and SMQ off).
search_gateway() {
    start_gateway "$TMP/gw-$RANDOM" "$(printf '[bridge]\nenabled = false\n[smq]\nenabled = false\n[fleet]\nmax_vehicles = %s\n[http]\nmax_connections = %s' \
        "$1" "$((SEARCH_CLIENTS + 16))")"
}
stop_gateway() {
    stop_pids
    PIDS=()
}

run() {
    say "loadgen $*"
    "$LOADGEN_BIN" "$@" --label fleetgate | tee -a "$OUT"
}

say "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
part() { [[ " $PARTS " == *" $1 "* ]]; }
part smq && for args in "--producers 4 --consumers 4 --rate 0" "--producers 1 --consumers 1 --rate 0" "--producers 2 --consumers 2 --rate 2000"; do
    gateway
    # shellcheck disable=SC2086
    run smq-put --http "$HTTP_ADDR" --smq "$SMQ_ADDR" $args --duration-s "$DURATION_S"
    stop_gateway
done
part fanout && for rate in 100 1000 0; do
    gateway
    run ws-fanout --url "ws://$HTTP_ADDR/message" --subscribers "$SUBSCRIBERS" --rate "$rate" --duration-s "$DURATION_S"
    stop_gateway
done
# One fleet per size, fed once; the runs at each position rate follow on it.
part search && for vehicles in 10000 100000; do
    search_gateway "$vehicles"
    for rate in 0 2000 10000; do
        run search-load --http "$HTTP_ADDR" --vehicles "$vehicles" --clients "$SEARCH_CLIENTS" \
            --publish-rate "$rate" --duration-s "$DURATION_S"
    done
    stop_gateway
done
say "results appended to $OUT"
