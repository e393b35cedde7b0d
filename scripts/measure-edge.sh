#!/usr/bin/env bash
# Measures fleetgate's MQTT edge on this machine, on loopback only, and stops
# by itself. Run it on a quiet machine (nothing else using the CPU):
#
#   bash scripts/measure-edge.sh
#
# What it does, in order:
#   1. builds the release binaries (`cargo build --release -p fleetgate -p firmware-sim -p loadgen --bins`);
#   2. starts `fleetgate` on two free 127.0.0.1 ports with a temporary
#      --data-dir, waits for /healthz, and reads its idle RSS (VmRSS);
#   3. idle connections: `loadgen idle-conn` opens $CONNECTIONS MQTT
#      connections as fast as it can (--connect-rate 0) and holds them
#      $HOLD_S s; reports RSS at N, (RSS_N - RSS_0)/N in KiB and connects/s;
#   4. throughput, for QoS 0 and QoS 1: `firmware-sim run` with $VEHICLES
#      vehicles at $RATE positions/s each for $DURATION_S s (the simulator
#      caps a vehicle at 10/s, so the offered load is set by the vehicle
#      count). Reports sent/s from the simulator's summary and, at the gateway,
#      positions decoded per second from /metrics deltas of
#      fleetgate_messages_decoded_total{kind="position"} over a steady window
#      (after $WARMUP_S s of ramp-up, until 1 s before the end) and over the
#      whole run, the fleetgate_ingest_dropped_total delta (QoS 0 drops) and
#      the gateway's CPU use in the window (100% = one core);
#   5. if Mosquitto is installed (or can be: MOSQUITTO_INSTALL=1 runs
#      `apt-get install -y mosquitto`), the same idle-connection test against
#      a private Mosquitto on a free loopback port, for comparison;
#   6. prints a table for people and one JSON line (prefixed `RESULT `) with
#      every figure and the machine (nproc, memory, kernel, rustc).
# Every process it starts is stopped on exit (trap), whatever happens.
#
# Knobs (environment; defaults in brackets):
#   CONNECTIONS [5000]  HOLD_S [5]      idle-connection test
#   VEHICLES [2000]     RATE [10]       DURATION_S [15]   WARMUP_S [4]   throughput test
#   SKIP_BUILD [0]      1: use the binaries already built
#   MOSQUITTO [auto]    auto: compare if installed; 0: never; 1: install if missing
#   KEEP_TMP [0]        1: keep the temp dir (gateway log, firmware-sim output)
#   CARGO_TARGET_DIR    where the binaries are built (default ./target)
#   MEASURE_COMMIT      the commit to report (default: git rev-parse HEAD; for an export without .git)
set -Eeuo pipefail
trap 'printf "measure-edge: failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

CONNECTIONS=${CONNECTIONS:-5000}
HOLD_S=${HOLD_S:-5}
VEHICLES=${VEHICLES:-2000}
RATE=${RATE:-10}
DURATION_S=${DURATION_S:-15}
WARMUP_S=${WARMUP_S:-4}
SKIP_BUILD=${SKIP_BUILD:-0}
MOSQUITTO=${MOSQUITTO:-auto}
KEEP_TMP=${KEEP_TMP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

MEASURE_NAME=measure-edge
# shellcheck source=scripts/lib-measure.sh
source scripts/lib-measure.sh
need python3
need curl
need cargo

[ "$WARMUP_S" -lt "$((DURATION_S - 2))" ] || die "WARMUP_S ($WARMUP_S) must be below DURATION_S - 2 ($DURATION_S)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/measure-edge.XXXXXX")
cleanup() {
    local rc=$?
    stop_pids
    if [ "$KEEP_TMP" = 1 ] || [ "$rc" -ne 0 ]; then
        printf 'measure-edge: logs kept in %s\n' "$TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each connection is a file descriptor, for the load generators too.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt "$((CONNECTIONS + 100))" ]; then
    die "open-files limit $NOFILE is too low for $CONNECTIONS connections"
fi

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# json_get FILE KEY: a field of the last JSON line in FILE.
json_get() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if not lines:
    sys.exit(f"no JSON line in {sys.argv[1]}")
v = json.loads(lines[-1]).get(sys.argv[2])
print("null" if v is None else v)
EOF
}
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }
now_s() { python3 -c 'import time; print(time.monotonic())'; }

# ---------------------------------------------------------------- build
build_release

# ---------------------------------------------------------------- gateway
start_gateway "$TMP"
sleep 3
RSS_IDLE=$(rss_kib "$GATEWAY_PID")
say "gateway pid $GATEWAY_PID, idle RSS $RSS_IDLE KiB"

gateway_alive() {
    kill -0 "$GATEWAY_PID" 2>/dev/null || {
        tail -n 30 "$GATEWAY_LOG" >&2
        die "fleetgate died during: $1 (log above)"
    }
}

# ---------------------------------------------------------------- idle connections
# put KEY VALUE: one figure for the report (dotted keys nest in the JSON).
put() { printf '%s\t%s\n' "$1" "$2" >>"$TMP/results.tsv"; }
# put_json PREFIX FILE KEY...: fields of FILE's last JSON line.
put_json() {
    local prefix=$1 file=$2 key
    shift 2
    for key in "$@"; do
        put "$prefix.$key" "$(json_get "$file" "$key")"
    done
}
put gateway.idle_rss_kib "$RSS_IDLE"

put gateway.idle_conn.command "loadgen idle-conn --connections $CONNECTIONS --broker 127.0.0.1:<port> --connect-rate 0 --hold-s $HOLD_S --pid <gateway pid>"
put gateway.idle_conn.connections "$CONNECTIONS"
say "idle connections: loadgen idle-conn --connections $CONNECTIONS --broker $MQTT_ADDR --connect-rate 0 --hold-s $HOLD_S --pid $GATEWAY_PID"
"$LOADGEN_BIN" idle-conn --connections "$CONNECTIONS" --broker "$MQTT_ADDR" --connect-rate 0 \
    --hold-s "$HOLD_S" --pid "$GATEWAY_PID" >"$TMP/idle.json" 2>"$TMP/idle.err" ||
    { cat "$TMP/idle.err" >&2; die "loadgen idle-conn failed"; }
cat "$TMP/idle.err" >&2
gateway_alive "idle connections"
put_json gateway.idle_conn "$TMP/idle.json" connected failed dropped_while_held connect_elapsed_s \
    connects_per_s rss_before_kib rss_after_kib kib_per_connection
connected=$(json_get "$TMP/idle.json" connected)
[ "$connected" = "$CONNECTIONS" ] ||
    say "WARNING: only $connected of $CONNECTIONS connections succeeded"
# Memory once the connections are gone again (does the gateway give it back?).
sleep 3
put gateway.idle_conn.rss_after_close_kib "$(rss_kib "$GATEWAY_PID")"
put gateway.idle_conn.vehicle_gauge_after_close "$(metric 'fleetgate_connections{kind="vehicle"}')"

# ---------------------------------------------------------------- throughput
DECODED='fleetgate_messages_decoded_total{kind="position"}'
throughput() {
    local qos=$1 out=$TMP/run-qos$1 key=gateway.throughput.qos$1
    local args=(run --vehicles "$VEHICLES" --rate "$RATE" --qos "$qos" --duration-s "$DURATION_S"
        --connect-rate 0 --quiet --id-prefix "q$qos-" --broker "$MQTT_ADDR")
    put "$key.command" "firmware-sim ${args[*]/$MQTT_ADDR/127.0.0.1:<port>}"
    say "throughput QoS $qos: firmware-sim ${args[*]}"
    local d0 x0 t0 d1 x1 t1 w0 w1 wt0 wt1 c0 c1 sim prev=-1
    d0=$(metric "$DECODED")
    x0=$(metric fleetgate_ingest_dropped_total)
    t0=$(now_s)
    "$SIM_BIN" "${args[@]}" >"$out.json" 2>"$out.err" &
    sim=$!
    PIDS+=("$sim")
    sleep "$WARMUP_S"
    w0=$(metric "$DECODED")
    wt0=$(now_s)
    c0=$(cpu_ticks "$GATEWAY_PID")
    sleep "$((DURATION_S - WARMUP_S - 1))"
    w1=$(metric "$DECODED")
    wt1=$(now_s)
    c1=$(cpu_ticks "$GATEWAY_PID")
    wait "$sim" || { cat "$out.err" >&2; die "firmware-sim run (QoS $qos) failed"; }
    t1=$(now_s)
    gateway_alive "throughput QoS $qos"
    # Let ingest drain what is still queued, then read the totals.
    for _ in $(seq 20); do
        d1=$(metric "$DECODED")
        [ "$d1" = "$prev" ] && break
        prev=$d1
        sleep 0.5
    done
    x1=$(metric fleetgate_ingest_dropped_total)
    put_json "$key" "$out.json" vehicles_connected sent positions_per_s acknowledged errors queue_full elapsed_s
    put "$key.decoded" "$(calc "$d1 - $d0")"
    put "$key.decoded_per_s_window" "$(calc "round(($w1 - $w0) / ($wt1 - $wt0))")"
    put "$key.window_s" "$(calc "round($wt1 - $wt0, 2)")"
    put "$key.decoded_per_s_run" "$(calc "round(($d1 - $d0) / ($t1 - $t0))")"
    put "$key.ingest_dropped" "$(calc "$x1 - $x0")"
    put "$key.gateway_cpu_pct" "$(calc "round(100 * ($c1 - $c0) / $(getconf CLK_TCK) / ($wt1 - $wt0))")"
    put "$key.gateway_rss_kib" "$(rss_kib "$GATEWAY_PID")"
    say "QoS $qos: firmware-sim sent $(json_get "$out.json" positions_per_s)/s; gateway decoded $(calc "round(($w1 - $w0) / ($wt1 - $wt0))")/s in the steady window, dropped $(calc "$x1 - $x0")"
    # Let the vehicles' connections close before the next run.
    sleep 2
}
throughput 0
throughput 1
put gateway.rss_end_kib "$(rss_kib "$GATEWAY_PID")"

# ---------------------------------------------------------------- mosquitto
MQ_BIN=$(command -v mosquitto || true)
if [ -z "$MQ_BIN" ] && [ -x /usr/sbin/mosquitto ]; then MQ_BIN=/usr/sbin/mosquitto; fi
if [ "$MOSQUITTO" = 1 ] && [ -z "$MQ_BIN" ]; then
    say "installing mosquitto (apt-get install -y mosquitto)"
    { apt-get install -y mosquitto || { apt-get update && apt-get install -y mosquitto; }; } \
        >"$TMP/apt.log" 2>&1 || die "cannot install mosquitto (see $TMP/apt.log)"
    MQ_BIN=/usr/sbin/mosquitto
fi
if [ "$MOSQUITTO" != 0 ] && [ -n "$MQ_BIN" ]; then
    MQ_PORT=$(free_port)
    MQ_VERSION=$({ "$MQ_BIN" -h 2>&1 || true; } | awk '/^mosquitto version/ {print $3; exit}')
    cat >"$TMP/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest stderr
log_type error
log_type warning
EOF
    say "mosquitto $MQ_VERSION on 127.0.0.1:$MQ_PORT"
    "$MQ_BIN" -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
    MQ_PID=$!
    PIDS+=("$MQ_PID")
    for i in $(seq 100); do
        kill -0 "$MQ_PID" 2>/dev/null || { cat "$TMP/mosquitto.log" >&2; die "mosquitto exited at start"; }
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' \
            "$MQ_PORT" 2>/dev/null && break
        [ "$i" -lt 100 ] || die "mosquitto did not listen within 10 s"
        sleep 0.1
    done
    sleep 1
    put mosquitto.status measured
    put mosquitto.version "$MQ_VERSION"
    put mosquitto.command "loadgen idle-conn --connections $CONNECTIONS --broker 127.0.0.1:<port> --connect-rate 0 --hold-s $HOLD_S --pid <mosquitto pid>"
    say "idle connections against mosquitto"
    "$LOADGEN_BIN" idle-conn --connections "$CONNECTIONS" --broker "127.0.0.1:$MQ_PORT" --connect-rate 0 \
        --hold-s "$HOLD_S" --pid "$MQ_PID" >"$TMP/mq-idle.json" 2>"$TMP/mq-idle.err" ||
        { cat "$TMP/mq-idle.err" >&2; die "loadgen idle-conn against mosquitto failed"; }
    cat "$TMP/mq-idle.err" >&2
    put_json mosquitto "$TMP/mq-idle.json" connected failed connect_elapsed_s connects_per_s \
        rss_before_kib rss_after_kib kib_per_connection
    kill -TERM "$MQ_PID" 2>/dev/null || true
    wait "$MQ_PID" 2>/dev/null || true
elif [ "$MOSQUITTO" = 0 ]; then
    put mosquitto.status "skipped (MOSQUITTO=0)"
else
    put mosquitto.status "not installed (MOSQUITTO=1 installs it)"
fi

# ---------------------------------------------------------------- report
put machine.nproc "$(nproc)"
put machine.mem_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
put machine.cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
put machine.kernel "$(uname -r)"
put machine.rustc "$(rustc --version 2>/dev/null || echo unknown)"
put commit "${MEASURE_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"

python3 - "$TMP/results.tsv" <<'EOF'
import json, sys

flat = {}
for line in open(sys.argv[1], encoding="utf-8"):
    key, _, value = line.rstrip("\n").partition("\t")
    flat[key] = value

TEXT = ("commit", "cpu", "kernel", "rustc", "version", "status", "command")

def typed(key, v):
    if key.rsplit(".", 1)[-1] in TEXT:
        return v
    if v in ("", "null", "None"):
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else round(f, 3)

tree = {}
for key, value in flat.items():
    node = tree
    *path, leaf = key.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = typed(key, value)

m, g = tree["machine"], tree["gateway"]
ic = g["idle_conn"]
def fmt(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"
rows = [
    ("gateway idle RSS", f"{fmt(g['idle_rss_kib'])} KiB"),
    ("idle connections accepted",
     f"{ic['connected']} / {ic['connections']} ({ic['failed']} failed, {ic['dropped_while_held']} dropped while held)"),
    (f"RSS before -> at {ic['connections']} connections",
     f"{fmt(ic['rss_before_kib'])} -> {fmt(ic['rss_after_kib'])} KiB"),
    ("RSS per idle connection", f"{fmt(ic['kib_per_connection'], 2)} KiB"),
    ("connects/s (--connect-rate 0)", fmt(ic["connects_per_s"])),
    ("RSS 3 s after they closed",
     f"{fmt(ic['rss_after_close_kib'])} KiB (vehicle connections gauge {ic['vehicle_gauge_after_close']})"),
]
for q in ("qos0", "qos1"):
    t = g["throughput"][q]
    n = q[-1]
    rows += [
        (f"QoS {n}: sent/s (firmware-sim summary)",
         f"{fmt(t['positions_per_s'])} ({fmt(t['sent'])} in {fmt(t['elapsed_s'], 1)} s, "
         f"{t['vehicles_connected']} vehicles, {t['errors']} errors)"),
        (f"QoS {n}: decoded/s at gateway, steady window",
         f"{fmt(t['decoded_per_s_window'])} (whole run {fmt(t['decoded_per_s_run'])}/s, {fmt(t['decoded'])} total)"),
        (f"QoS {n}: ingest drops / gateway CPU / RSS",
         f"{fmt(t['ingest_dropped'])} dropped, {t['gateway_cpu_pct']}% CPU (100% = 1 core), "
         f"{fmt(t['gateway_rss_kib'])} KiB"),
    ]
rows.append(("gateway RSS at the end", f"{fmt(g['rss_end_kib'])} KiB"))
mq = tree.get("mosquitto", {})
if mq.get("status") == "measured":
    rows += [
        (f"mosquitto {mq['version']}: RSS per idle connection",
         f"{fmt(mq['kib_per_connection'], 2)} KiB ({fmt(mq['rss_before_kib'])} -> "
         f"{fmt(mq['rss_after_kib'])} KiB, {mq['connected']} connected)"),
        (f"mosquitto {mq['version']}: connects/s", fmt(mq["connects_per_s"])),
    ]
else:
    rows.append(("mosquitto", str(mq.get("status"))))

out = sys.stderr
print(f"\nfleetgate edge, commit {tree['commit']}, on {m['cpu']}: {m['nproc']} cores, "
      f"{m['mem_kib'] // 1024} MiB, kernel {m['kernel']}, {m['rustc']}", file=out)
width = max(len(k) for k, _ in rows)
for k, v in rows:
    print(f"  {k:<{width}}  {v}", file=out)
print(file=out)
print("RESULT " + json.dumps(tree, sort_keys=False))
EOF
