#!/usr/bin/env bash
# Shared by the measurement scripts (measure-edge.sh, load-run.sh): sourced,
# never run. The caller sets MEASURE_NAME (for messages), TARGET_DIR and
# SKIP_BUILD, and keeps the pids it starts in PIDS (stop_pids ends them).
#
# The gateway runs with the bridge off, so the figures do not depend on
# whether a RabbitMQ happens to run on the machine (unbound messages would be
# spooled and retried meanwhile).

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: ERROR: %s\n' "${MEASURE_NAME:-measure}" "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "needs '$1' on PATH"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# metric NAME: its value in the gateway's /metrics (0 when absent).
metric() {
    local text
    text=$(curl -fsS --max-time 5 "http://$HTTP_ADDR/metrics") ||
        die "cannot read http://$HTTP_ADDR/metrics (is the gateway still up?)"
    awk -v name="$1" '$1 == name {v = $2} END {print (v == "" ? 0 : v)}' <<<"$text"
}

PIDS=()
# Ends every process in PIDS: TERM, then KILL after 10 s.
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# Sets GATEWAY_BIN, SIM_BIN (firmware-sim: the fleet) and LOADGEN_BIN (the
# measuring tools), building them unless SKIP_BUILD=1.
build_release() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        say "building release binaries (cargo build --release -p fleetgate -p firmware-sim -p loadgen --bins)"
        cargo build --release -p fleetgate -p firmware-sim -p loadgen --bins
    fi
    GATEWAY_BIN=$TARGET_DIR/release/fleetgate
    SIM_BIN=$TARGET_DIR/release/firmware-sim
    LOADGEN_BIN=$TARGET_DIR/release/loadgen
    [ -x "$GATEWAY_BIN" ] || die "no gateway binary at $GATEWAY_BIN"
    [ -x "$SIM_BIN" ] || die "no firmware-sim binary at $SIM_BIN"
    [ -x "$LOADGEN_BIN" ] || die "no loadgen binary at $LOADGEN_BIN"
}

# start_gateway DIR [TOML]: the gateway on two free loopback ports, data and
# log in DIR, configured by TOML (default: bridge and SMQ off); sets
# MQTT_ADDR, HTTP_ADDR, GATEWAY_PID, GATEWAY_LOG once /healthz answers.
start_gateway() {
    local dir=$1 config=${2:-$'[bridge]\nenabled = false\n[smq]\nenabled = false'} mqtt_port http_port i
    mqtt_port=$(free_port)
    http_port=$(free_port)
    [ "$mqtt_port" != "$http_port" ] || http_port=$(free_port)
    MQTT_ADDR=127.0.0.1:$mqtt_port
    HTTP_ADDR=127.0.0.1:$http_port
    GATEWAY_LOG=$dir/gateway.log
    mkdir -p "$dir/data"
    printf '%s\n' "$config" >"$dir/fleetgate.toml"
    say "starting fleetgate: MQTT $MQTT_ADDR, HTTP $HTTP_ADDR, data $dir/data (bridge off)"
    "$GATEWAY_BIN" --config "$dir/fleetgate.toml" --mqtt-listen "$MQTT_ADDR" \
        --http-listen "$HTTP_ADDR" --data-dir "$dir/data" >"$GATEWAY_LOG" 2>&1 &
    GATEWAY_PID=$!
    PIDS+=("$GATEWAY_PID")
    for i in $(seq 300); do
        kill -0 "$GATEWAY_PID" 2>/dev/null || {
            tail -n 30 "$GATEWAY_LOG" >&2
            die "fleetgate exited during start-up (log above)"
        }
        curl -fsS --max-time 1 "http://$HTTP_ADDR/healthz" >/dev/null 2>&1 && return 0
        [ "$i" -lt 300 ] || die "fleetgate's /healthz did not answer within 30 s"
        sleep 0.1
    done
}
