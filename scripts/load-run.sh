#!/usr/bin/env bash
# The documented load run: 10 000 simulated vehicles publishing as fast as
# the machine allows for 5 minutes, while one WebSocket client never reads
# and another reads normally. Loopback only; stops by itself.
#
#   bash scripts/load-run.sh                      # the full run (300 s of traffic)
#   LOAD_DURATION_S=30 bash scripts/load-run.sh   # a smoke run
#
# What it checks (the issue's acceptance):
#   - the gateway's RSS (VmRSS, sampled every second from /proc) stays within
#     LOAD_RSS_TOLERANCE_PCT (10) % of its level 30 s after the fleet started,
#     until the fleet stops;
#   - the reading client keeps getting fresh positions: never disconnected,
#     positions in every 10-s window once the fleet is up, p99 of
#     now − received_ms at most LOAD_FRESH_P99_MS (1000) ms;
#   - the stalled client is disconnected on time: the gateway's
#     fleetgate_ws_stalled_disconnects_total rises between 0.95× and 1.5× the
#     stall timeout (http.ws_stall_timeout_ms, 10 s by default) after the
#     client's last read (its connect: it never reads).
# and reports RSS at idle, at 10 000 connected vehicles, after 30 s, the peak.
#
# In order:
#   1. builds the release binaries (cargo build --release -p fleetgate -p firmware-sim -p loadgen --bins);
#   2. starts target/release/fleetgate on two free 127.0.0.1 ports, waits for
#      /healthz, and starts a sampler writing rss.csv every second (VmRSS, CPU
#      ticks of the gateway and of firmware-sim, and a few /metrics series);
#   3. after LOAD_IDLE_S (5) s reads the idle RSS, then starts
#        loadgen ws-watch --url ws://…/ws                      (reads normally)
#        loadgen ws-watch --url ws://…/ws --stall --metrics-url http://…/metrics
#      and the fleet:
#        firmware-sim run --vehicles 10000 --rate 10 --qos 0 --connect-rate 2000 --duration-s 300
#      10 Hz is the simulator's per-vehicle maximum: 10 000 × 10 = 100 000
#      positions/s offered, more than a 2-core machine carries, so the run is
#      "as fast as the machine allows". The simulator competes with the
#      gateway for the same cores; its own achieved rate is reported;
#   4. prints the figures, PASS/FAIL per check, the machine's load (uptime) at
#      start and end, and, last, one JSON line with everything.
# Every process it starts is stopped on exit (trap), whatever happens. The
# run's files (rss.csv, logs, each tool's JSON) stay in
# $CARGO_TARGET_DIR/load-run/<time>/ (default target/load-run/<time>/).
#
# Knobs (environment; defaults in brackets):
#   LOAD_DURATION_S [300]   seconds of fleet traffic
#   LOAD_VEHICLES [10000]   LOAD_RATE_HZ [10]   LOAD_CONNECT_RATE [2000]   LOAD_QOS [0]
#   LOAD_IDLE_S [5]         idle time before the clients start
#   LOAD_RSS_TOLERANCE_PCT [10]   LOAD_FRESH_P99_MS [1000]
#   LOAD_STALL_TIMEOUT_MS [10000] must match the gateway's http.ws_stall_timeout_ms
#   SKIP_BUILD [0]          1: use the binaries already built
#   CARGO_TARGET_DIR        where the binaries are built (default ./target)
set -Eeuo pipefail
trap 'printf "load-run: failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

DURATION_S=${LOAD_DURATION_S:-300}
VEHICLES=${LOAD_VEHICLES:-10000}
RATE_HZ=${LOAD_RATE_HZ:-10}
CONNECT_RATE=${LOAD_CONNECT_RATE:-2000}
QOS=${LOAD_QOS:-0}
IDLE_S=${LOAD_IDLE_S:-5}
RSS_TOLERANCE_PCT=${LOAD_RSS_TOLERANCE_PCT:-10}
FRESH_P99_MS=${LOAD_FRESH_P99_MS:-1000}
STALL_TIMEOUT_MS=${LOAD_STALL_TIMEOUT_MS:-10000}
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

MEASURE_NAME=load-run
# shellcheck source=scripts/lib-measure.sh
source scripts/lib-measure.sh
need python3
need curl
need cargo

OUT=$TARGET_DIR/load-run/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
cleanup() {
    local rc=$?
    trap - ERR
    stop_pids
    printf 'load-run: files in %s\n' "$OUT" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every vehicle is a socket in the simulator and one in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt "$((VEHICLES + 200))" ]; then
    die "open-files limit $NOFILE is too low for $VEHICLES vehicles (raise the hard limit)"
fi

now_ms() { date +%s%3N; }

UPTIME_START=$(uptime)
say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load at start: $UPTIME_START"

# ---------------------------------------------------------------- build
build_release

# ---------------------------------------------------------------- gateway
start_gateway "$OUT"
grep -m1 'fleetgate serving' "$OUT/gateway.log" >&2 || true

# ---------------------------------------------------------------- sampler
# One row per second: VmRSS and CPU ticks of the gateway (and of the
# simulator once it runs, pid in $OUT/sim.pid), plus /metrics series.
python3 - "$GATEWAY_PID" "$HTTP_ADDR" "$OUT" >"$OUT/rss.csv" 2>"$OUT/sampler.err" <<'EOF' &
import os, sys, time, urllib.request
pid, http, out = sys.argv[1], sys.argv[2], sys.argv[3]
series = {
    "vehicles": 'fleetgate_connections{kind="vehicle"}',
    "ws_clients": "fleetgate_ws_clients",
    "decoded": 'fleetgate_messages_decoded_total{kind="position"}',
    "stalled": "fleetgate_ws_stalled_disconnects_total",
    "ingest_dropped": "fleetgate_ingest_dropped_total",
    "fanout_dropped": "fleetgate_fanout_dropped_total",
    "fanout_conflated": "fleetgate_fanout_conflated_total",
}
def rss(p):
    try:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return ""
    return ""
def ticks(p):
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return ""
def metrics():
    try:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=0.8).read().decode()
    except Exception:
        return {k: "" for k in series}
    values = {}
    for line in text.splitlines():
        name, _, v = line.rpartition(" ")
        values[name] = v
    return {k: values.get(s, "") for k, s in series.items()}
print("unix_ms,rss_kib,gw_cpu_ticks,sim_cpu_ticks," + ",".join(series), flush=True)
start = time.monotonic()
n = 0
while os.path.exists(f"/proc/{pid}"):
    try:
        sim = open(os.path.join(out, "sim.pid")).read().strip()
    except OSError:
        sim = ""
    row = [int(time.time() * 1000), rss(pid), ticks(pid), ticks(sim) if sim else ""]
    m = metrics()
    row += [m[k] for k in series]
    print(",".join(str(x) for x in row), flush=True)
    n += 1
    time.sleep(max(0.0, start + n - time.monotonic()))
EOF
PIDS+=("$!")

say "idle for ${IDLE_S} s"
sleep "$IDLE_S"
RSS_IDLE=$(rss_kib "$GATEWAY_PID")
say "idle RSS: $RSS_IDLE KiB"

# ---------------------------------------------------------------- clients
WS_URL=ws://$HTTP_ADDR/ws
WATCH_S=$((DURATION_S + 15))
say "reading client: loadgen ws-watch --url $WS_URL --duration-s $WATCH_S"
"$LOADGEN_BIN" ws-watch --url "$WS_URL" --duration-s "$WATCH_S" \
    >"$OUT/ws-reader.json" 2>"$OUT/ws-reader.log" &
READER_PID=$!
PIDS+=("$READER_PID")
say "stalled client: loadgen ws-watch --url $WS_URL --stall --metrics-url http://$HTTP_ADDR/metrics --duration-s $WATCH_S"
"$LOADGEN_BIN" ws-watch --url "$WS_URL" --stall --metrics-url "http://$HTTP_ADDR/metrics" \
    --duration-s "$WATCH_S" >"$OUT/ws-stalled.json" 2>"$OUT/ws-stalled.log" &
STALLED_PID=$!
PIDS+=("$STALLED_PID")
sleep 1

FLEET_CMD="firmware-sim run --vehicles $VEHICLES --rate $RATE_HZ --qos $QOS --connect-rate $CONNECT_RATE --duration-s $DURATION_S --broker $MQTT_ADDR"
say "fleet: $FLEET_CMD"
FLEET_START_MS=$(now_ms)
# shellcheck disable=SC2086
"$SIM_BIN" ${FLEET_CMD#firmware-sim } >"$OUT/fleet.json" 2>"$OUT/fleet.log" &
SIM_PID=$!
PIDS+=("$SIM_PID")
echo "$SIM_PID" >"$OUT/sim.pid"

# Watch: everything must stay up while the fleet drives.
while kill -0 "$SIM_PID" 2>/dev/null; do
    kill -0 "$GATEWAY_PID" 2>/dev/null || {
        tail -n 30 "$OUT/gateway.log" >&2
        die "fleetgate died during the run (log above)"
    }
    sleep 1
done
FLEET_END_MS=$(now_ms)
wait "$SIM_PID" || die "firmware-sim run failed (see $OUT/fleet.log)"
say "fleet done: $(tail -n 1 "$OUT/fleet.json")"
say "waiting for the WebSocket clients"
wait "$READER_PID" || die "the reading ws-watch failed (see $OUT/ws-reader.log)"
wait "$STALLED_PID" || die "the stalled ws-watch failed (see $OUT/ws-stalled.log)"
kill -0 "$GATEWAY_PID" 2>/dev/null || die "fleetgate died at the end of the run"
RSS_END=$(rss_kib "$GATEWAY_PID")
curl -fsS --max-time 5 "http://$HTTP_ADDR/metrics" >"$OUT/metrics-end.txt"
UPTIME_END=$(uptime)

# ---------------------------------------------------------------- report
python3 - "$OUT" <<EOF
import csv, json, sys
out = sys.argv[1]
cfg = dict(duration_s=$DURATION_S, vehicles=$VEHICLES, rate_hz=$RATE_HZ, qos=$QOS,
           connect_rate=$CONNECT_RATE, tolerance_pct=$RSS_TOLERANCE_PCT,
           fresh_p99_ms=$FRESH_P99_MS, stall_timeout_ms=$STALL_TIMEOUT_MS)
fleet_start, fleet_end = $FLEET_START_MS, $FLEET_END_MS
rss_idle, rss_end = $RSS_IDLE, $RSS_END
uptime_start, uptime_end = """$UPTIME_START""".strip(), """$UPTIME_END""".strip()
command = "$FLEET_CMD"
tick_hz = $(getconf CLK_TCK)

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
rows = [{k: num(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/rss.csv"))]
rows = [r for r in rows if r["rss_kib"] is not None]
def last_json(path):
    lines = [l for l in open(path) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
fleet, reader, stalled = (last_json(f"{out}/{n}.json") for n in ("fleet", "ws-reader", "ws-stalled"))
metrics = {}
for line in open(f"{out}/metrics-end.txt"):
    if not line.startswith("#") and " " in line:
        name, _, v = line.rpartition(" ")
        metrics[name] = num(v)

t = lambda r: (r["unix_ms"] - fleet_start) / 1000.0
during = [r for r in rows if fleet_start <= r["unix_ms"] <= fleet_end]
peak = max(rows, key=lambda r: r["rss_kib"])
full = [r for r in during if (r["vehicles"] or 0) >= cfg["vehicles"]]
at_full = full[0] if full else None
most = max(during, key=lambda r: r["vehicles"] or 0) if during else None
after30 = [r for r in during if t(r) >= 30.0]
r30 = after30[0] if after30 else None
steady = after30
if r30 and len(steady) > 1:
    base = r30["rss_kib"]
    dev = max(abs(r["rss_kib"] - base) for r in steady) / base * 100
    lo, hi = min(r["rss_kib"] for r in steady), max(r["rss_kib"] for r in steady)
    rss_ok = dev <= cfg["tolerance_pct"]
else:
    base = dev = lo = hi = None
    rss_ok = None
def rate(rs, key):
    rs = [r for r in rs if r[key] is not None]
    if len(rs) < 2:
        return None
    dt = (rs[-1]["unix_ms"] - rs[0]["unix_ms"]) / 1000.0
    return (rs[-1][key] - rs[0][key]) / dt if dt > 0 else None
def cpu(rs, key):
    r = rate(rs, key)
    return None if r is None else r / tick_hz * 100
window = steady if len(steady) > 1 else during

# The reading client: windows while the fleet was up (after its ramp).
ramp_s = cfg["vehicles"] / cfg["connect_rate"] if cfg["connect_rate"] else 0
lead_s = (fleet_start - reader.get("connected_at_ms", fleet_start)) / 1000.0
fleet_windows = [w for w in reader.get("windows", [])
                 if w["end_s"] - 10 - lead_s >= ramp_s + 2 and w["end_s"] - lead_s <= cfg["duration_s"]]
starved = [w for w in fleet_windows if w["positions"] == 0]
p99 = (reader.get("fresh_received") or {}).get("p99_ms")
reader_ok = (not reader.get("disconnected", True)) and not starved and p99 is not None and p99 <= cfg["fresh_p99_ms"]

after = stalled.get("stalled_disconnect_after_s")
stall_s = cfg["stall_timeout_ms"] / 1000.0
stalled_ok = after is not None and 0.95 * stall_s <= after <= 1.5 * stall_s and stalled.get("server_closed") is True

def fmt(v, unit="", nd=0):
    return "-" if v is None else f"{v:,.{nd}f}{unit}"
verdict = lambda ok: "n/a" if ok is None else ("PASS" if ok else "FAIL")
mib = lambda kib: None if kib is None else kib / 1024
print()
print(f"load run: {cfg['vehicles']} vehicles x {cfg['rate_hz']} Hz, QoS {cfg['qos']}, {cfg['duration_s']} s")
print(f"  command              {command}")
print(f"  load at start        {uptime_start}")
print(f"  load at end          {uptime_end}")
print("gateway memory (VmRSS)")
print(f"  idle                 {fmt(rss_idle)} KiB ({fmt(mib(rss_idle), ' MiB', 1)})")
if at_full:
    print(f"  {cfg['vehicles']} connected      {fmt(at_full['rss_kib'])} KiB ({fmt(mib(at_full['rss_kib']), ' MiB', 1)}) at t={t(at_full):.0f} s")
else:
    print(f"  {cfg['vehicles']} connected      never reached; at most {fmt(most and most['vehicles'])} vehicles")
print(f"  after 30 s           {fmt(base)} KiB ({fmt(mib(base), ' MiB', 1)})")
print(f"  peak                 {fmt(peak['rss_kib'])} KiB ({fmt(mib(peak['rss_kib']), ' MiB', 1)}) at t={t(peak):.0f} s")
print(f"  30 s .. end          {fmt(lo)} .. {fmt(hi)} KiB, max deviation {fmt(dev, ' %', 2)}: {verdict(rss_ok)} (limit {cfg['tolerance_pct']} %)")
print(f"  at the end           {fmt(rss_end)} KiB (clients gone)")
print(f"throughput ({'30 s .. end of the fleet' if len(steady) > 1 else 'whole fleet run'})")
print(f"  simulator sent       {fmt(fleet.get('positions_per_s'), '/s')} over the run ({fleet.get('vehicles_connected')} vehicles connected, {fleet.get('errors')} errors, {fleet.get('queue_full')} queue full)")
print(f"  gateway decoded      {fmt(rate(window, 'decoded'), '/s')}")
print(f"  CPU (100 % = 1 core) gateway {fmt(cpu(window, 'gw_cpu_ticks'), ' %')}, simulator {fmt(cpu(window, 'sim_cpu_ticks'), ' %')}")
print("reading WebSocket client")
fr, ff = reader.get("fresh_received") or {}, reader.get("fresh_fix") or {}
print(f"  positions            {fmt(reader.get('positions_per_s'), '/s')} over its {fmt(reader.get('elapsed_s'), ' s')}, {reader.get('distinct_vehicles')} distinct vehicles, {fmt(reader.get('frames_per_s'), ' frames/s', 1)}")
if fleet_windows:
    print(f"  per 10-s window      min {fmt(min(w['positions_per_s'] for w in fleet_windows), '/s')}, max {fmt(max(w['positions_per_s'] for w in fleet_windows), '/s')}; worst window p99 {fmt(max((w['fresh_p99_ms'] or 0) for w in fleet_windows), ' ms')}")
print(f"  freshness received   p50 {fmt(fr.get('p50_ms'))} / p99 {fmt(fr.get('p99_ms'))} / max {fmt(fr.get('max_ms'))} ms (now - received_ms)")
print(f"  freshness fix        p50 {fmt(ff.get('p50_ms'))} / p99 {fmt(ff.get('p99_ms'))} / max {fmt(ff.get('max_ms'))} ms (now - time_ms)")
print(f"  lagged               {reader.get('lagged')} in {reader.get('lagged_frames')} frames; max gap between frames {reader.get('max_frame_gap_ms')} ms")
print(f"  disconnected         {reader.get('disconnected')} {reader.get('disconnect_reason') or ''}")
print(f"  verdict              {verdict(reader_ok)} (never disconnected, positions in every window, p99 <= {cfg['fresh_p99_ms']} ms)")
print("stalled WebSocket client")
print(f"  counted as stalled   {fmt(after, ' s', 1)} after its last read (fleetgate_ws_stalled_disconnects_total {stalled.get('stalled_counter_before')} -> {stalled.get('stalled_counter_after')})")
print(f"  server closed it     {stalled.get('server_closed')} ({stalled.get('disconnect_reason')}; {stalled.get('drained_frames')} frames were still buffered)")
print(f"  verdict              {verdict(stalled_ok)} (within {0.95*stall_s:.1f}..{1.5*stall_s:.1f} s)")
counters = {k: metrics.get(s) for k, s in {
    "decoded": 'fleetgate_messages_decoded_total{kind="position"}',
    "ingest_dropped": "fleetgate_ingest_dropped_total",
    "fanout_dropped": "fleetgate_fanout_dropped_total",
    "fanout_conflated": "fleetgate_fanout_conflated_total",
    "ws_frames_sent": "fleetgate_ws_frames_sent_total",
    "ws_stalled_disconnects": "fleetgate_ws_stalled_disconnects_total",
    "malformed": "fleetgate_messages_malformed_total",
}.items()}
print("gateway counters at the end")
for k, v in counters.items():
    print(f"  {k:<22} {fmt(v)}")
overall = all(x is not False for x in (rss_ok, reader_ok, stalled_ok)) and rss_ok is not None
print(f"overall: {'PASS' if overall else 'FAIL' if rss_ok is not None else 'INCOMPLETE (run shorter than 30 s of steady state)'}")
print(f"files: {out}")
result = {
    "config": cfg, "command": command, "uptime_start": uptime_start, "uptime_end": uptime_end,
    "rss_kib": {"idle": rss_idle, "at_full_fleet": at_full and at_full["rss_kib"],
                "at_full_fleet_t_s": at_full and t(at_full), "after_30s": base, "peak": peak["rss_kib"],
                "peak_t_s": t(peak), "steady_min": lo, "steady_max": hi, "end": rss_end},
    "rss_max_deviation_pct": dev, "rss_pass": rss_ok,
    "sim_positions_per_s": fleet.get("positions_per_s"), "sim": fleet,
    "gateway_decoded_per_s": rate(window, "decoded"),
    "gateway_cpu_pct": cpu(window, "gw_cpu_ticks"), "sim_cpu_pct": cpu(window, "sim_cpu_ticks"),
    "reader": {k: reader.get(k) for k in ("positions_per_s", "frames_per_s", "distinct_vehicles", "fresh_received", "fresh_fix", "lagged", "max_frame_gap_ms", "disconnected", "disconnect_reason")},
    "reader_min_window_positions_per_s": min((w["positions_per_s"] for w in fleet_windows), default=None),
    "reader_pass": reader_ok,
    "stalled": {k: stalled.get(k) for k in ("stalled_disconnect_after_s", "server_closed", "disconnect_reason", "drained_frames", "stalled_counter_before", "stalled_counter_after")},
    "stalled_pass": stalled_ok,
    "counters": counters, "pass": overall, "dir": out,
}
print(json.dumps(result, separators=(",", ":")))
EOF
