#!/usr/bin/env bash
# fleetgate and Mosquitto side by side, on this machine, on loopback only.
# Stops by itself. Run it on a quiet machine:
#
#   bash benches/compare.sh            # the full run, ~12 minutes on 2 cores
#   bash benches/compare.sh --smoke    # seconds per scenario: checks the harness works (CI)
#
# What it does:
#   1. builds the release binaries (fleetgate, and loadgen's loadgen and
#      bridge_bench), installs Debian's mosquitto when missing (and rabbitmq-server
#      for outage-drain), and records the machine;
#   2. for each broker scenario, alternating which goes first, starts a fresh
#      broker on a free 127.0.0.1 port, runs the same `loadgen bench`
#      (or `idle-conn`) against it with --pid (the broker's RSS and CPU are
#      sampled from /proc), and stops it again:
#        Mosquitto: persistence off, anonymous, the same connection and
#          packet-size limits as fleetgate; its queue limits are its defaults
#          (max_queued_messages 1000, max_inflight_messages 20);
#        fleetgate: the release binary, bridge off, limits raised for the
#          scale (mqtt.max_connections, broker.max_connections, fleet.max_vehicles);
#   3. the fleetgate-only scenarios: `pipeline` (bridge on, to a real
#      RabbitMQ with a consumer bound, as a deployment has;
#      vehicles → decode → state → MQTT JSON dashboard and WebSocket) and
#      `outage-drain` (loadgen's bridge_bench against a real RabbitMQ);
#   4. writes results.jsonl (one JSON line per run), summary.md (machine,
#      scale, the table) and chart.svg into $OUT_DIR, and prints the table.
#
# Scenarios (SCENARIOS picks a subset, in this order):
#   fan-in         10 000 vehicles at 1 position/s (postcard, QoS 1) → one
#                  dashboard subscriber (Mosquitto: the raw v/+/pos;
#                  fleetgate: its decoded JSON on fleet/+/position)
#   fan-in-generic 100 publishers × 200 msg/s, 32 B, QoS 1 → one subscriber, at
#                  that fixed rate: latency percentiles and broker CPU per
#                  delivered message (the generic MQTT path, through rumqttd)
#   fan-in-max     100 publishers, 32 B, QoS 1 → one subscriber: the offered
#                  rate rises ×1.5 every 3 s until a step loses a message or
#                  its p99 passes 50 ms; the last passing step is the max
#                  sustained rate
#   fan-in-max-q0  the same at QoS 0
#   fan-out        1 publisher, 32 B, QoS 1 → 100 subscribers, searched the same way
#   shared-sub     10 publishers → 4 subscribers in one $share group, QoS 1, searched
#   idle-conn      10 000 idle connections: (RSS_N − RSS_0)/N and connects/s
#   churn          100 000 clients that come and go (fresh id, a filter no one
#                  used, 16 at a time) after 5 000 of warm-up: cycles/s,
#                  subscriptions refused, RSS growth per 1 000 clients, and
#                  whether a new client still subscribes and receives
#   many-filters   16 long-lived clients, each subscribing to a new filter and
#                  unsubscribing it, 100 000 times after 5 000 of warm-up (a
#                  dashboard that subscribes per vehicle): cycles/s, refusals,
#                  RSS growth per 1 000 filters, and the lockout check
#   conformance    the MQTT 3.1.1 MUST-close cases of `loadgen conformance`,
#                  one connection each: how many the broker closes
#   slow-sub       10 publishers × 500 msg/s → 5 subscribers; from the second
#                  half one stops reading: the others' p99 and the broker's RSS
#   pipeline       fleetgate only: 10 000 vehicles at 1 Hz with an MQTT JSON
#                  dashboard and a WebSocket client, bridge on to RabbitMQ
#                  (loadgen's amqp_sink consumes `fleet.#` on amq.topic); then
#                  pipeline-max: 1 000 vehicles searched with a 10 ms p99 limit
#   outage-drain   fleetgate only: 100 000 positions spooled while RabbitMQ is
#                  cut off, drained under 1 000/s of live traffic
#
# Knobs (environment):
#   SCENARIOS   [all of the above]
#   OUT_DIR     [target/compare/<date>]
#   SKIP_BUILD  [0]  1: use binaries already built
#   PIPE_CONSUMER [1]  0: the pipeline with no queue bound at RabbitMQ, so
#                      every record it spools comes back unroutable
#   BIN_DIR     [$CARGO_TARGET_DIR/release]  where fleetgate, loadgen and bridge_bench are
#   CARGO_TARGET_DIR [./target]
set -Eeuo pipefail
trap 'printf "compare: failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCALE=full
[ "${1:-}" = --smoke ] && SCALE=smoke
SCENARIOS=${SCENARIOS:-fan-in fan-in-generic fan-in-max fan-in-max-q0 fan-out shared-sub idle-conn churn many-filters conformance slow-sub pipeline outage-drain}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${BIN_DIR:-$TARGET_DIR/release}
OUT_DIR=${OUT_DIR:-$TARGET_DIR/compare/$(date +%Y%m%d-%H%M%S)-$SCALE}
SKIP_BUILD=${SKIP_BUILD:-0}
PIPE_CONSUMER=${PIPE_CONSUMER:-1}

MEASURE_NAME=compare
# shellcheck source=scripts/lib-measure.sh
source scripts/lib-measure.sh
# shellcheck source=scripts/lib-services.sh
source scripts/lib-services.sh
need python3
need curl

# ------------------------------------------------------------------ scale
if [ "$SCALE" = full ]; then
    FANIN_VEHICLES=10000 FANIN_WARMUP=5 FANIN_SECS=20
    GENERIC_PUBS=100 GENERIC_RATE=200 GENERIC_SECS=20
    MAX_PUBS=100 MAX_FROM=10000 STEP_S=3 MAX_STEPS=12
    FANOUT_SUBS=100 FANOUT_FROM=100
    SHARED_PUBS=10 SHARED_SUBS=4 SHARED_FROM=5000
    IDLE_CONNS=10000 IDLE_HOLD=5
    # The issue's 100 000 cycles, after a warm-up that fills the pools
    # (the gateway's RSS levels after ~4 000 clients).
    CHURN_CYCLES=100000 CHURN_WARMUP=5000
    SLOW_PUBS=10 SLOW_RATE=500 SLOW_SUBS=5 SLOW_SECS=20
    PIPE_VEHICLES=10000 PIPE_SECS=20 PIPE_MAX_VEHICLES=1000 PIPE_MAX_FROM=5000
    DRAIN_ARGS=(--backlog 100000 --live-rate 1000 --live-vehicles 200 --before-s 10 --after-s 5)
else
    FANIN_VEHICLES=50 FANIN_WARMUP=0.5 FANIN_SECS=1
    GENERIC_PUBS=10 GENERIC_RATE=50 GENERIC_SECS=1
    MAX_PUBS=10 MAX_FROM=1000 STEP_S=0.5 MAX_STEPS=2
    FANOUT_SUBS=10 FANOUT_FROM=50
    SHARED_PUBS=2 SHARED_SUBS=2 SHARED_FROM=200
    IDLE_CONNS=200 IDLE_HOLD=0.5
    CHURN_CYCLES=300 CHURN_WARMUP=50
    SLOW_PUBS=2 SLOW_RATE=100 SLOW_SUBS=3 SLOW_SECS=2
    PIPE_VEHICLES=50 PIPE_SECS=1 PIPE_MAX_VEHICLES=20 PIPE_MAX_FROM=200
    DRAIN_ARGS=(--backlog 2000 --live-rate 100 --live-vehicles 10 --before-s 1 --after-s 1)
fi
MAX_CONNECTIONS=$((IDLE_CONNS > FANIN_VEHICLES ? IDLE_CONNS : FANIN_VEHICLES))
MAX_CONNECTIONS=$((MAX_CONNECTIONS + 2000))
PACKET_LIMIT=16384

wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
: >"$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX")
cleanup() {
    local rc=$?
    stop_pids
    rm -rf "$TMP"
    [ "$rc" -eq 0 ] || printf 'compare: logs in %s\n' "$OUT_DIR" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# ------------------------------------------------------------------ set-up
packages=(mosquitto procps)
if wants outage-drain || wants pipeline; then packages+=(rabbitmq-server); fi
fg_ensure_packages "${packages[@]}"
MQ_BIN=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MQ_BIN" ] || die "no mosquitto binary after installing the package"
if [ "$SKIP_BUILD" != 1 ]; then
    say "building: cargo build --release -p fleetgate -p loadgen --bins"
    cargo build --release -p fleetgate -p loadgen --bins
fi
GATEWAY_BIN=$BIN_DIR/fleetgate
LOADGEN_BIN=$BIN_DIR/loadgen
DRAIN_BIN=$BIN_DIR/bridge_bench
SINK_BIN=$BIN_DIR/amqp_sink
[ -x "$GATEWAY_BIN" ] || die "no fleetgate binary at $GATEWAY_BIN"
[ -x "$LOADGEN_BIN" ] || die "no loadgen binary at $LOADGEN_BIN"

MQ_VERSION=$({ "$MQ_BIN" -h 2>&1 || true; } | awk '/^mosquitto version/ {print $3; exit}')
FG_VERSION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(rustc --version 2>/dev/null | cut -d' ' -f1-2), Mosquitto $MQ_VERSION, fleetgate $FG_VERSION"
say "machine: $MACHINE; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "scale: $SCALE; scenarios: $SCENARIOS; results in $OUT_DIR"

# ------------------------------------------------------------------ brokers
# start_mosquitto / start_fleetgate [BRIDGE_CONFIG [BROKER_CONFIG]]: a fresh broker; sets
# BROKER_ADDR, BROKER_PID (and HTTP_ADDR for fleetgate).
start_mosquitto() {
    local port i
    port=$(free_port)
    cat >"$TMP/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections $MAX_CONNECTIONS
max_packet_size $PACKET_LIMIT
max_keepalive 65535
log_dest file $TMP/mosquitto.log
log_type error
log_type warning
EOF
    "$MQ_BIN" -c "$TMP/mosquitto.conf" >>"$TMP/mosquitto.out" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    BROKER_ADDR=127.0.0.1:$port
    for i in $(seq 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$TMP/mosquitto.out" >&2; die "mosquitto exited at start"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        [ "$i" -lt 100 ] || die "mosquitto did not listen within 10 s"
        sleep 0.1
    done
}
start_fleetgate() {
    local dir=$TMP/fleetgate-$RANDOM mqtt_port http_port i
    mkdir -p "$dir/data"
    mqtt_port=$(free_port)
    http_port=$(free_port)
    [ "$mqtt_port" != "$http_port" ] || http_port=$(free_port)
    cat >"$dir/fleetgate.toml" <<EOF
[mqtt]
max_connections = $MAX_CONNECTIONS
max_packet_size_bytes = $PACKET_LIMIT
[broker]
max_connections = 1000
${2:-}
[fleet]
max_vehicles = $((MAX_CONNECTIONS))
[bridge]
${1:-enabled = false}
[smq]
# not measured here; and no fixed port (5151) to collide on
enabled = false
EOF
    BROKER_ADDR=127.0.0.1:$mqtt_port
    HTTP_ADDR=127.0.0.1:$http_port
    GATEWAY_LOG=$dir/gateway.log
    "$GATEWAY_BIN" --config "$dir/fleetgate.toml" --mqtt-listen "$BROKER_ADDR" \
        --http-listen "$HTTP_ADDR" --data-dir "$dir/data" >"$GATEWAY_LOG" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    for i in $(seq 300); do
        kill -0 "$BROKER_PID" 2>/dev/null || { tail -n 30 "$GATEWAY_LOG" >&2; die "fleetgate exited during start-up"; }
        curl -fsS --max-time 1 "http://$HTTP_ADDR/healthz" >/dev/null 2>&1 && return 0
        [ "$i" -lt 300 ] || die "fleetgate's /healthz did not answer within 30 s"
        sleep 0.1
    done
}
stop_broker() {
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
}

# run_tool NAME BROKER ARGS...: one loadgen run, its JSON line appended
# to results.jsonl, its human summary kept in OUT_DIR/NAME-BROKER.txt.
run_tool() {
    local name=$1 broker=$2 log
    shift 2
    log=$OUT_DIR/$name-$broker.txt
    say "$name on $broker: loadgen $*"
    "$LOADGEN_BIN" "$@" >"$TMP/out.json" 2>"$log" || { cat "$log" >&2; die "$name on $broker failed"; }
    kill -0 "$BROKER_PID" 2>/dev/null || die "$broker died during $name"
    grep -v '^\s*$' "$TMP/out.json" | tail -n 1 >"$TMP/line.json"
    # A run that delivered nothing (or held no connection) measured nothing.
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if (r.get("received", 0) if "received" in r else r.get("connected", r.get("cases", 0))) > 0 else 1)
' "$TMP/line.json" || die "$name on $broker measured nothing (see $log)"
    cat "$TMP/line.json" >>"$RESULTS"
    sed 's/^/    /' "$log" >&2
}

# side_by_side NAME FLEETGATE_TOPIC_ARGS -- COMMON_ARGS...: the scenario
# against both brokers, alternating which goes first.
ORDER=0
side_by_side() {
    local name=$1 fg_extra=$2 broker
    shift 2
    local first=mosquitto second=fleetgate
    if [ $((ORDER % 2)) = 1 ]; then first=fleetgate second=mosquitto; fi
    ORDER=$((ORDER + 1))
    for broker in $first $second; do
        local extra=()
        if [ "$broker" = mosquitto ]; then start_mosquitto; else
            start_fleetgate
            # shellcheck disable=SC2206 # deliberate word splitting of the extra args
            extra=($fg_extra)
        fi
        run_tool "$name" "$broker" "$@" "${extra[@]}" --scenario "$name" --label "$broker" \
            --broker "$BROKER_ADDR" --pid "$BROKER_PID" --id-prefix "$name-"
        stop_broker
    done
}

search_args() { echo --search-from "$1" --step-s "$STEP_S" --max-steps "$MAX_STEPS" --warmup-s 1; }

# ------------------------------------------------------------------ scenarios
T0=$SECONDS
if wants fan-in; then
    # shellcheck disable=SC2046
    side_by_side fan-in "--sub-topic fleet/+/position" bench --payload vehicle --qos 1 \
        --publishers "$FANIN_VEHICLES" --subscribers 1 --rate 1 --warmup-s "$FANIN_WARMUP" \
        --duration-s "$FANIN_SECS" --connect-rate 2000
fi
if wants fan-in-generic; then
    side_by_side fan-in-generic "" bench --qos 1 --publishers "$GENERIC_PUBS" --rate "$GENERIC_RATE" \
        --subscribers 1 --warmup-s "$FANIN_WARMUP" --duration-s "$GENERIC_SECS"
fi
if wants fan-in-max; then
    # shellcheck disable=SC2046
    side_by_side fan-in-max "" bench --qos 1 --publishers "$MAX_PUBS" --subscribers 1 $(search_args "$MAX_FROM")
fi
if wants fan-in-max-q0; then
    # shellcheck disable=SC2046
    side_by_side fan-in-max-q0 "" bench --qos 0 --publishers "$MAX_PUBS" --subscribers 1 $(search_args "$MAX_FROM")
fi
if wants fan-out; then
    # shellcheck disable=SC2046
    side_by_side fan-out "" bench --qos 1 --publishers 1 --subscribers "$FANOUT_SUBS" $(search_args "$FANOUT_FROM")
fi
if wants shared-sub; then
    # shellcheck disable=SC2046
    side_by_side shared-sub "" bench --qos 1 --publishers "$SHARED_PUBS" --subscribers "$SHARED_SUBS" \
        --share-group bench $(search_args "$SHARED_FROM")
fi
if wants idle-conn; then
    for broker in $([ $((ORDER % 2)) = 0 ] && echo mosquitto fleetgate || echo fleetgate mosquitto); do
        if [ "$broker" = mosquitto ]; then start_mosquitto; else start_fleetgate; fi
        run_tool idle-conn "$broker" idle-conn --connections "$IDLE_CONNS" --connect-rate 0 \
            --hold-s "$IDLE_HOLD" --broker "$BROKER_ADDR" --pid "$BROKER_PID" --label "$broker"
        stop_broker
    done
    ORDER=$((ORDER + 1))
fi
if wants churn; then
    for broker in $([ $((ORDER % 2)) = 0 ] && echo mosquitto fleetgate || echo fleetgate mosquitto); do
        if [ "$broker" = mosquitto ]; then start_mosquitto; else start_fleetgate; fi
        run_tool churn "$broker" churn --cycles "$CHURN_CYCLES" --warmup "$CHURN_WARMUP" \
            --broker "$BROKER_ADDR" --pid "$BROKER_PID" --label "$broker"
        stop_broker
    done
    ORDER=$((ORDER + 1))
fi
if wants many-filters; then
    for broker in $([ $((ORDER % 2)) = 0 ] && echo mosquitto fleetgate || echo fleetgate mosquitto); do
        if [ "$broker" = mosquitto ]; then start_mosquitto; else start_fleetgate; fi
        run_tool many-filters "$broker" churn --one-connection --scenario many-filters \
            --cycles "$CHURN_CYCLES" --warmup "$CHURN_WARMUP" --id-prefix filters- \
            --broker "$BROKER_ADDR" --pid "$BROKER_PID" --label "$broker"
        stop_broker
    done
    ORDER=$((ORDER + 1))
fi
if wants conformance; then
    for broker in mosquitto fleetgate; do
        if [ "$broker" = mosquitto ]; then start_mosquitto; else start_fleetgate; fi
        run_tool conformance "$broker" conformance --broker "$BROKER_ADDR" --label "$broker"
        stop_broker
    done
fi
if wants slow-sub; then
    side_by_side slow-sub "" bench --qos 1 --publishers "$SLOW_PUBS" --rate "$SLOW_RATE" \
        --subscribers "$SLOW_SUBS" --slow-subscribers 1 --slow-from-step 2 --steps 2 \
        --duration-s "$SLOW_SECS" --warmup-s 1
fi
NOTES=()
if wants pipeline; then
    # Bridge on, to a real RabbitMQ with a consumer bound to what the
    # gateway publishes (amq.topic, fleet.#), as a deployment has: without
    # one, every record comes back unroutable and stays spooled, and the
    # uplink's retries of that backlog share the two cores with the run.
    # The broker's filter logs sized as an operator would for 10 000 JSON
    # positions/s to a dashboard: ~1 s of lag (the small-box defaults,
    # 64 KiB x 2 segments, hold ~60 ms, and on two shared cores a dashboard
    # stalls longer; those losses are counted as broker_lagged_messages_total).
    fg_ensure_rabbitmq
    sink_pid=
    upstream="a consumer bound to fleet.# on amq.topic"
    if [ "$PIPE_CONSUMER" = 1 ]; then
        [ -x "$SINK_BIN" ] || die "pipeline needs $SINK_BIN (cargo build --release -p loadgen --bins)"
        "$SINK_BIN" --amqp-url "$FLEETGATE_TEST_AMQP_URL" --exchange amq.topic --binding 'fleet.#' \
            --ready-file "$TMP/sink.ready" >"$TMP/sink.json" 2>"$OUT_DIR/pipeline-amqp-sink.txt" &
        sink_pid=$!
        PIDS+=("$sink_pid")
        for i in $(seq 300); do
            [ -e "$TMP/sink.ready" ] && break
            kill -0 "$sink_pid" 2>/dev/null || { cat "$OUT_DIR/pipeline-amqp-sink.txt" >&2; die "amqp_sink exited at start"; }
            [ "$i" -lt 300 ] || die "amqp_sink did not bind its queue within 30 s"
            sleep 0.1
        done
    else
        upstream="PIPE_CONSUMER=0: no queue bound, every record comes back unroutable"
    fi
    start_fleetgate "enabled = true
url = \"$FLEETGATE_TEST_AMQP_URL\"" \
        "link_capacity = 64
max_segment_size_bytes = 1048576
max_segment_count = 3"
    NOTES+=("pipeline: fleetgate with the bridge on to RabbitMQ ($upstream), WebSocket frames paced at the default 100 ms (ws_frame_interval_ms), broker logs of 3 x 1 MiB and link_capacity 64")
    ws_secs=$(python3 -c "print($FANIN_WARMUP + $PIPE_SECS + 1)")
    "$LOADGEN_BIN" ws-watch --url "ws://$HTTP_ADDR/ws" --duration-s "$ws_secs" --quiet \
        >"$TMP/ws.json" 2>"$OUT_DIR/pipeline-ws-fleetgate.txt" &
    ws_pid=$!
    PIDS+=("$ws_pid")
    run_tool pipeline fleetgate bench --payload vehicle --qos 1 --publishers "$PIPE_VEHICLES" \
        --subscribers 1 --rate 1 --warmup-s "$FANIN_WARMUP" --duration-s "$PIPE_SECS" \
        --connect-rate 2000 --sub-topic 'fleet/+/position' --scenario pipeline --label fleetgate \
        --broker "$BROKER_ADDR" --pid "$BROKER_PID" --id-prefix pipe-
    wait "$ws_pid" || { cat "$OUT_DIR/pipeline-ws-fleetgate.txt" >&2; die "ws-watch failed"; }
    printf '{"scenario":"pipeline-websocket","broker":"fleetgate","ws":%s}\n' "$(tail -n 1 "$TMP/ws.json")" >>"$RESULTS"
    # shellcheck disable=SC2046
    run_tool pipeline-max fleetgate bench --payload vehicle --qos 1 --publishers "$PIPE_MAX_VEHICLES" \
        --subscribers 1 --sub-topic 'fleet/+/position' --p99-limit-ms 10 $(search_args "$PIPE_MAX_FROM") \
        --scenario pipeline-max --label fleetgate --broker "$BROKER_ADDR" --pid "$BROKER_PID" --id-prefix pmax-
    curl -fsS "http://$HTTP_ADDR/metrics" >"$OUT_DIR/pipeline-metrics-fleetgate.txt"
    NOTES+=("pipeline memory bound (fleetgate_memory_bound_bytes): $(awk '$1 == "fleetgate_memory_bound_bytes" {printf "%.0f MiB", $2/1048576}' "$OUT_DIR/pipeline-metrics-fleetgate.txt")")
    NOTES+=("pipeline upstream (both runs): $(awk '$1 ~ /^fleetgate_bridge_(records_spooled|confirmed|returns|publishes|unroutable_probes|unroutable_untracked)_total$|^fleetgate_bridge_spool_records$/ {sub("fleetgate_bridge_", "", $1); printf "%s%s %s", sep, $1, $2; sep=", "}' "$OUT_DIR/pipeline-metrics-fleetgate.txt")")
    stop_broker
    if [ -n "$sink_pid" ]; then
        kill -TERM "$sink_pid" 2>/dev/null || true
        wait "$sink_pid" || { cat "$OUT_DIR/pipeline-amqp-sink.txt" >&2; die "amqp_sink failed"; }
        NOTES+=("pipeline: the RabbitMQ consumer received $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["received"])' "$TMP/sink.json") messages")
    fi
fi
if wants outage-drain; then
    if [ -x "$DRAIN_BIN" ]; then
        fg_ensure_rabbitmq
        say "outage-drain: bridge_bench --phases b ${DRAIN_ARGS[*]}"
        "$DRAIN_BIN" --amqp-url "$FLEETGATE_TEST_AMQP_URL" --phases b "${DRAIN_ARGS[@]}" \
            >"$OUT_DIR/outage-drain-fleetgate.txt" 2>&1 ||
            { tail -n 40 "$OUT_DIR/outage-drain-fleetgate.txt" >&2; die "bridge_bench failed"; }
        result=$(sed -n 's/^RESULT //p' "$OUT_DIR/outage-drain-fleetgate.txt" | tail -n 1)
        [ -n "$result" ] || die "bridge_bench printed no RESULT line"
        printf '{"scenario":"outage-drain","broker":"fleetgate","bridge_bench":%s}\n' "$result" >>"$RESULTS"
    else
        die "outage-drain needs $DRAIN_BIN (cargo build --release -p loadgen --bin bridge_bench)"
    fi
fi
ELAPSED=$((SECONDS - T0))

# ------------------------------------------------------------------ report
{
    printf '# fleetgate and Mosquitto, side by side\n\n'
    printf -- '- machine: %s\n' "$MACHINE"
    printf -- '- scale: %s (%s); scenarios ran in %d s\n' "$SCALE" \
        "fan-in $FANIN_VEHICLES vehicles for ${FANIN_SECS}s; searches from $MAX_FROM msg/s ×1.5 every ${STEP_S}s (at most $MAX_STEPS steps); fan-out to $FANOUT_SUBS; $IDLE_CONNS idle connections" "$ELAPSED"
    printf -- '- Mosquitto %s: persistence off, max_connections %s, max_packet_size %s, its default queues\n' "$MQ_VERSION" "$MAX_CONNECTIONS" "$PACKET_LIMIT"
    printf -- '- fleetgate %s: bridge off (but in pipeline), mqtt.max_connections %s, broker.max_connections 1000\n' "$FG_VERSION" "$MAX_CONNECTIONS"
    for note in "${NOTES[@]}"; do printf -- '- %s\n' "$note"; done
    printf -- '- (↑) higher is better, (↓) lower is better; the last column is fleetgate ÷ Mosquitto\n\n'
    "$LOADGEN_BIN" bench-report --results "$RESULTS" --svg "$OUT_DIR/chart.svg" \
        --title "fleetgate vs Mosquitto $MQ_VERSION — $(nproc) cores, loopback ($SCALE scale)"
} >"$OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
say "results: $RESULTS; chart: $OUT_DIR/chart.svg; per-run logs: $OUT_DIR/*.txt"
