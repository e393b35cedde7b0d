//! The result lines the tools write and `bench-report` reads: one serde
//! schema, so a writer and the readers cannot drift apart.
//!
//! In: a tool's report (writing), or a line of a results file such as
//! `benches/results/*.jsonl` (reading). Out: one JSON object per line:
//! [`BenchLine`] (`loadgen bench`), [`IdleConnLine`] (`loadgen idle-conn`),
//! [`WsWatchLine`] (`loadgen ws-watch`), [`BridgeBenchLine`] (the `RESULT`
//! line of `bridge_bench`), and the records `benches/compare.sh` wraps the
//! last two in ([`WsRecord`], [`BridgeBenchRecord`]); [`ResultLine`] is any
//! of them. Keys come out sorted (every line goes through
//! [`serde_json::Value`], whose map is ordered), as the stored results have
//! them. Bound: one line.
//!
//! Reading is lenient, as the report and the chart always were: a missing
//! field takes its default, and every field a reader uses is an `Option`
//! read by [`lenient`], so a missing, null or mistyped value is `None` (a
//! "–" in the table, nothing drawn in the chart) instead of losing the
//! record. The writers fill those fields with `Some`.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod http;
pub use http::{SearchLoadLine, SmqPutLine, WsFanoutLine};

/// Reads a field as `Some(T)` if it holds a `T`, else as `None`.
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// One `loadgen idle-conn` result; with `--label` also the `scenario`
/// (`"idle-conn"`) and the `broker`, as `benches/compare.sh` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdleConnLine {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub broker: Option<String>,
    pub attempted: usize,
    #[serde(deserialize_with = "lenient")]
    pub connected: Option<usize>,
    pub failed: usize,
    pub connect_elapsed_s: f64,
    #[serde(deserialize_with = "lenient")]
    pub connects_per_s: Option<f64>,
    pub dropped_while_held: usize,
    #[serde(deserialize_with = "lenient")]
    pub rss_before_kib: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub rss_after_kib: Option<u64>,
    /// Always written (null without `--pid`): the report knows an idle-conn
    /// line by this key.
    #[serde(deserialize_with = "lenient")]
    pub kib_per_connection: Option<f64>,
}

/// The JSON line of a conformance run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConformanceLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub cases: usize,
    pub closed: usize,
    /// The rules of the cases the broker left open.
    pub not_closed: Vec<String>,
}

/// The JSON line of a churn run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChurnLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Named so `benches/compare.sh` sees that the run measured something.
    pub connected: usize,
    pub refused: usize,
    pub failed: usize,
    pub cycles_per_s: f64,
    pub rss_warm_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (RSS at the end − RSS after the warm-up) / 1 000 cycles.
    pub growth_kib_per_1000: Option<f64>,
    pub still_delivers: bool,
}

/// Latency percentiles in µs; written as `null` where nothing was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyLine {
    pub n: u64,
    #[serde(deserialize_with = "lenient")]
    pub p50: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub p99: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub p999: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub max: Option<u64>,
}

/// The broker's resident memory over a bench run, KiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RssLine {
    #[serde(deserialize_with = "lenient")]
    pub before: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub max: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub end: Option<u64>,
}

/// One step of a bench run (the warm-up is step 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepLine {
    pub step: usize,
    /// Total messages/s offered (0 = flat out).
    #[serde(deserialize_with = "lenient")]
    pub offered_per_s: Option<f64>,
    pub duration_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    #[serde(deserialize_with = "lenient")]
    pub latency_us: Option<LatencyLine>,
    #[serde(deserialize_with = "lenient")]
    pub rss_max_kib: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    /// Search mode: whether the step passed (null in fixed mode).
    pub passed: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub failed_because: Option<String>,
}

/// The clients of a bench run: asked for, connected, and closed during it
/// (part of [`BenchLine`], its keys beside the others).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchClientsLine {
    pub publishers: usize,
    pub publishers_connected: usize,
    pub subscribers: usize,
    pub subscribers_connected: usize,
    /// Connections the broker (or the tool) closed during the run.
    pub publishers_lost: usize,
    pub subscribers_lost: usize,
}

/// One `loadgen bench` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchLine {
    /// `"firmware-sim bench"`, the name the stored results carry.
    pub tool: String,
    #[serde(deserialize_with = "lenient")]
    pub scenario: Option<String>,
    /// The label of the broker under test (`--label`).
    #[serde(deserialize_with = "lenient")]
    pub broker: Option<String>,
    /// Its address.
    pub target: String,
    /// `"fixed"` or `"search"`.
    #[serde(deserialize_with = "lenient")]
    pub mode: Option<String>,
    pub payload: String,
    pub payload_bytes: usize,
    pub qos: u8,
    #[serde(flatten)]
    pub clients: BenchClientsLine,
    #[serde(deserialize_with = "lenient")]
    pub slow_subscribers: Option<usize>,
    pub share_group: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub connects_per_s: Option<f64>,
    pub measured_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    #[serde(deserialize_with = "lenient")]
    pub lost: Option<u64>,
    pub duplicates: u64,
    pub sent_per_s: f64,
    #[serde(deserialize_with = "lenient")]
    pub received_per_s: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub latency_us: Option<LatencyLine>,
    #[serde(deserialize_with = "lenient")]
    pub max_sustained_per_s: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub max_sustained_latency_us: Option<LatencyLine>,
    #[serde(deserialize_with = "lenient")]
    pub cpu_pct: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub rss_kib: Option<RssLine>,
    pub first_error: Option<String>,
    pub warmup: StepLine,
    #[serde(deserialize_with = "lenient")]
    pub steps: Option<Vec<StepLine>>,
}

/// Freshness of positions in ms (`now − received_ms` or `now − time_ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FreshnessLine {
    pub n: u64,
    #[serde(deserialize_with = "lenient")]
    pub p50_ms: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// What one window of a reading ws-watch client saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsWindowLine {
    /// End of the window, seconds after connecting.
    pub end_s: f64,
    pub frames: u64,
    pub positions: u64,
    pub positions_per_s: f64,
    /// Freshness against `received_ms` within the window.
    pub fresh_p99_ms: Option<u64>,
    pub fresh_max_ms: Option<u64>,
}

/// How a ws-watch connection ended, and what a stalled client learnt of it
/// (part of [`WsWatchLine`], its keys beside the others).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsEndLine {
    /// The server closed the connection (or it broke) before our deadline.
    pub disconnected: bool,
    pub disconnected_after_s: Option<f64>,
    pub disconnect_reason: Option<String>,
    /// Stalled client: the server had closed it when we finally read.
    pub server_closed: Option<bool>,
    /// Stalled client: frames still buffered when we read at the end.
    pub drained_frames: u64,
    /// Stalled client with `--metrics-url`: when the gateway's stalled
    /// counter first rose above its value at our connect (unix ms).
    pub stalled_counter_rose_at_ms: Option<u64>,
    pub stalled_counter_before: Option<u64>,
    pub stalled_counter_after: Option<u64>,
}

/// One `loadgen ws-watch` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsWatchLine {
    /// `"read"` or `"stall"`.
    pub mode: String,
    pub url: String,
    pub connected_at_ms: u64,
    pub handshake_ms: f64,
    pub elapsed_s: f64,
    pub frames: u64,
    pub frames_per_s: f64,
    pub bytes: u64,
    pub snapshot_vehicles: u64,
    pub positions: u64,
    #[serde(deserialize_with = "lenient")]
    pub positions_per_s: Option<f64>,
    pub statuses: u64,
    pub events: u64,
    #[serde(deserialize_with = "lenient")]
    pub lagged: Option<u64>,
    pub lagged_frames: u64,
    pub parse_errors: u64,
    pub distinct_vehicles: usize,
    #[serde(deserialize_with = "lenient")]
    pub fresh_received: Option<FreshnessLine>,
    #[serde(deserialize_with = "lenient")]
    pub fresh_fix: Option<FreshnessLine>,
    pub negative_freshness: u64,
    pub max_frame_gap_ms: u64,
    pub windows: Vec<WsWindowLine>,
    #[serde(flatten)]
    pub end: WsEndLine,
    pub stalled_disconnect_after_s: Option<f64>,
}

/// CPU use over a stretch of a bridge_bench phase, % of one core.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuSplitLine {
    /// Per thread group (`gw`, `bench`, `gw/lapin-io-loop` …), those above 0.5 %.
    pub threads_pct_of_core: BTreeMap<String, f64>,
    pub rabbitmq_pct_of_core: f64,
    /// The whole machine, % of all its cores.
    pub machine_busy_pct: f64,
}

/// The dashboard's latency (now − `received_ms`) over a stretch of phase B, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainLatencyLine {
    pub p50_ms: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub count: usize,
}

/// bridge_bench's phase A: the sustained rate with the link up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseALine {
    pub positions: u64,
    pub records_confirmed: u64,
    pub ingest_per_s: f64,
    pub spooled_per_s: Option<f64>,
    pub confirmed_per_s: Option<f64>,
    pub received_per_s: Option<f64>,
    pub confirmed_per_s_overall: f64,
    pub seconds: f64,
    pub target_20000_met: bool,
    pub timed_out: bool,
    pub cpu: CpuSplitLine,
}

/// bridge_bench's phase B: a backlog drained under live traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseBLine {
    #[serde(deserialize_with = "lenient")]
    pub backlog_records: Option<u64>,
    pub backlog_push_s: f64,
    pub spool_records_at_restore: u64,
    pub reconnect_s: Option<f64>,
    pub drain_s_from_connect: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub drain_s_from_restore: Option<f64>,
    pub spool_gauge_low_s: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub drain_per_s: Option<f64>,
    pub drain_per_s_from_restore: f64,
    pub live_per_s_before: f64,
    pub live_per_s_during_drain: f64,
    #[serde(deserialize_with = "lenient")]
    pub drain_over_live: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub latency_before: Option<DrainLatencyLine>,
    #[serde(deserialize_with = "lenient")]
    pub latency_during_drain: Option<DrainLatencyLine>,
    pub latency_after: DrainLatencyLine,
    pub ws_lagged: u64,
    pub ws_frames: u64,
    pub target_5x_met: bool,
    pub timed_out: bool,
    pub live_traffic_error: Option<String>,
    pub cpu_before: CpuSplitLine,
    pub cpu_during_drain: CpuSplitLine,
}

/// The machine a bridge_bench ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineLine {
    pub nproc: usize,
    pub cpu: Option<String>,
    pub kernel: Option<String>,
    pub rustc: Option<String>,
    pub loadavg_at_start: Option<String>,
}

/// bridge_bench's knobs, as it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeBenchConfigLine {
    pub sustained: u64,
    pub vehicles: u64,
    pub connections: usize,
    pub window: usize,
    pub backlog: u64,
    pub live_rate: u64,
    pub live_vehicles: u64,
    pub durable_queue: bool,
    pub no_consume: bool,
    pub confirm_window: usize,
    pub spool_max_bytes: u64,
}

/// bridge_bench's `RESULT` line; a phase that did not run is left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeBenchLine {
    pub tag: String,
    pub command: String,
    pub config: BridgeBenchConfigLine,
    pub machine: MachineLine,
    /// Messages of other runs or other gateways the consumer saw.
    pub foreign_messages: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_a: Option<PhaseALine>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub phase_b: Option<PhaseBLine>,
}

/// `{"scenario", "broker", "ws": …}`: a ws-watch line as
/// `benches/compare.sh` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsRecord {
    #[serde(deserialize_with = "lenient")]
    pub scenario: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub broker: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub ws: Option<WsWatchLine>,
}

/// `{"scenario", "broker", "bridge_bench": …}`: a bridge_bench result as
/// `benches/compare.sh` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeBenchRecord {
    #[serde(deserialize_with = "lenient")]
    pub scenario: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub broker: Option<String>,
    pub bridge_bench: BridgeBenchLine,
}

/// Only the names of a record none of the other kinds reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtherRecord {
    #[serde(deserialize_with = "lenient")]
    pub scenario: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub broker: Option<String>,
}

/// Any line of a results file. Its kind is told by its keys, as the report
/// always did: `ws` a [`WsRecord`]; `bridge_bench.phase_b` a
/// [`BridgeBenchRecord`]; `kib_per_connection` an [`IdleConnLine`]; any
/// other object a [`BenchLine`]. An object whose fields do not fit its kind
/// keeps its names ([`ResultLine::Other`]); anything else is not a line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResultLine {
    Bench(Box<BenchLine>),
    IdleConn(IdleConnLine),
    Ws(Box<WsRecord>),
    BridgeBench(Box<BridgeBenchRecord>),
    Churn(ChurnLine),
    Conformance(ConformanceLine),
    SmqPut(Box<SmqPutLine>),
    WsFanout(Box<WsFanoutLine>),
    SearchLoad(Box<SearchLoadLine>),
    Other(OtherRecord),
}

impl<'de> Deserialize<'de> for ResultLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let Some(object) = value.as_object() else {
            return Err(serde::de::Error::custom("a result line is a JSON object"));
        };
        let tool = object.get("tool").and_then(Value::as_str).unwrap_or("");
        let typed = if tool == "loadgen smq-put" {
            serde_json::from_value(value.clone()).map(|r| ResultLine::SmqPut(Box::new(r)))
        } else if tool == "loadgen ws-fanout" {
            serde_json::from_value(value.clone()).map(|r| ResultLine::WsFanout(Box::new(r)))
        } else if tool == "loadgen search-load" {
            serde_json::from_value(value.clone()).map(|r| ResultLine::SearchLoad(Box::new(r)))
        } else if object.contains_key("ws") {
            serde_json::from_value(value.clone()).map(|r| ResultLine::Ws(Box::new(r)))
        } else if object
            .get("bridge_bench")
            .and_then(|b| b.get("phase_b"))
            .is_some()
        {
            serde_json::from_value(value.clone()).map(|r| ResultLine::BridgeBench(Box::new(r)))
        } else if object.contains_key("not_closed") {
            serde_json::from_value(value.clone()).map(ResultLine::Conformance)
        } else if object.contains_key("still_delivers") {
            serde_json::from_value(value.clone()).map(ResultLine::Churn)
        } else if object.contains_key("kib_per_connection") {
            serde_json::from_value(value.clone()).map(ResultLine::IdleConn)
        } else {
            serde_json::from_value(value.clone()).map(|r| ResultLine::Bench(Box::new(r)))
        };
        typed.or_else(|_| {
            serde_json::from_value(value)
                .map(ResultLine::Other)
                .map_err(serde::de::Error::custom)
        })
    }
}

impl ResultLine {
    /// The scenario the line belongs to, if it names one.
    pub fn scenario(&self) -> Option<&str> {
        match self {
            ResultLine::Bench(l) => l.scenario.as_deref(),
            ResultLine::IdleConn(l) => l.scenario.as_deref(),
            ResultLine::Ws(r) => r.scenario.as_deref(),
            ResultLine::BridgeBench(r) => r.scenario.as_deref(),
            ResultLine::Churn(l) => l.scenario.as_deref(),
            ResultLine::Conformance(l) => l.scenario.as_deref(),
            ResultLine::SmqPut(l) => Some(&l.scenario),
            ResultLine::WsFanout(l) => Some(&l.scenario),
            ResultLine::SearchLoad(l) => Some(&l.scenario),
            ResultLine::Other(r) => r.scenario.as_deref(),
        }
    }

    /// The broker it measured, if it names one.
    pub fn broker(&self) -> Option<&str> {
        match self {
            ResultLine::Bench(l) => l.broker.as_deref(),
            ResultLine::IdleConn(l) => l.broker.as_deref(),
            ResultLine::Ws(r) => r.broker.as_deref(),
            ResultLine::BridgeBench(r) => r.broker.as_deref(),
            ResultLine::Churn(l) => l.broker.as_deref(),
            ResultLine::Conformance(l) => l.broker.as_deref(),
            ResultLine::SmqPut(l) => l.broker.as_deref(),
            ResultLine::WsFanout(l) => l.broker.as_deref(),
            ResultLine::SearchLoad(l) => l.broker.as_deref(),
            ResultLine::Other(r) => r.broker.as_deref(),
        }
    }
}

/// Parses JSON lines, skipping blanks and anything that is not an object.
pub fn parse_lines(text: &str) -> Vec<ResultLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<ResultLine>(l.trim()).ok())
        .collect()
}

/// `line` as one line of JSON with sorted keys (no newline).
pub fn to_line<T: Serialize>(line: &T) -> String {
    serde_json::to_value(line).map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = include_str!("../../../benches/results/2026-11-22.jsonl");

    #[test]
    fn every_stored_line_reads_as_its_kind_and_writes_back_the_same_json() {
        let mut kinds = Vec::new();
        for raw in STORED.lines() {
            let line: ResultLine = serde_json::from_str(raw).unwrap();
            kinds.push(match &line {
                ResultLine::Bench(_) => "bench",
                ResultLine::IdleConn(_) => "idle-conn",
                ResultLine::Ws(_) => "ws",
                ResultLine::BridgeBench(_) => "bridge_bench",
                ResultLine::Churn(_) => "churn",
                ResultLine::Conformance(_) => "conformance",
                ResultLine::SmqPut(_) | ResultLine::WsFanout(_) | ResultLine::SearchLoad(_) => {
                    "http"
                }
                ResultLine::Other(_) => "other",
            });
            // The same keys, the same values, the same number types (an
            // integer stays an integer): the schema is the stored one.
            let written = serde_json::to_value(&line).unwrap();
            let stored: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(written, stored, "{raw}");
        }
        let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(
            (count("bench"), count("idle-conn"), count("ws")),
            (14, 2, 1)
        );
        assert_eq!((count("bridge_bench"), count("other")), (1, 0));
    }

    #[test]
    fn http_bench_lines_read_as_their_kinds_and_write_back() {
        let smq = SmqPutLine {
            tool: "loadgen smq-put".into(),
            scenario: "smq-put".into(),
            received: 7,
            ..SmqPutLine::default()
        };
        let raw = to_line(&smq);
        let line: ResultLine = serde_json::from_str(&raw).unwrap();
        assert!(
            matches!(&line, ResultLine::SmqPut(l) if l.received == 7),
            "{line:?}"
        );
        assert_eq!(to_line(&line), raw);
        let fanout = WsFanoutLine {
            tool: "loadgen ws-fanout".into(),
            scenario: "ws-fanout".into(),
            subscribers: 100,
            ..WsFanoutLine::default()
        };
        let line: ResultLine = serde_json::from_str(&to_line(&fanout)).unwrap();
        assert!(matches!(&line, ResultLine::WsFanout(l) if l.subscribers == 100));
        assert_eq!(line.scenario(), Some("ws-fanout"));
        let search = SearchLoadLine {
            tool: "loadgen search-load".into(),
            scenario: "search-load".into(),
            vehicles: 100_000,
            ..SearchLoadLine::default()
        };
        let raw = to_line(&search);
        let line: ResultLine = serde_json::from_str(&raw).unwrap();
        assert!(matches!(&line, ResultLine::SearchLoad(l) if l.vehicles == 100_000));
        assert_eq!(to_line(&line), raw);
    }

    #[test]
    fn conformance_and_many_filters_lines_read_as_their_kinds() {
        let raw = r#"{"broker":"m","cases":30,"closed":25,"not_closed":["dup_at_qos0 (0x38)"],"scenario":"conformance"}"#;
        let line: ResultLine = serde_json::from_str(raw).unwrap();
        assert!(
            matches!(&line, ResultLine::Conformance(l) if l.closed == 25 && l.not_closed.len() == 1)
        );
        assert_eq!(to_line(&line), raw);
        let raw = r#"{"broker":"f","connected":10,"cycles_per_s":5.0,"failed":0,"growth_kib_per_1000":null,"refused":0,"rss_after_kib":null,"rss_warm_kib":null,"scenario":"many-filters","still_delivers":true}"#;
        let line: ResultLine = serde_json::from_str(raw).unwrap();
        assert_eq!(line.scenario(), Some("many-filters"));
        assert!(matches!(line, ResultLine::Churn(_)));
    }

    #[test]
    fn odd_values_read_as_missing_and_odd_records_keep_their_names() {
        let line: ResultLine = serde_json::from_str(
            r#"{"scenario":"s","broker":"b","received_per_s":"fast","latency_us":{"p50":-1,"p99":3}}"#,
        )
        .unwrap();
        let ResultLine::Bench(bench) = &line else {
            panic!("{line:?}");
        };
        assert_eq!(bench.received_per_s, None);
        let latency = bench.latency_us.clone().unwrap_or_default();
        assert_eq!((latency.p50, latency.p99), (None, Some(3)));

        let line: ResultLine =
            serde_json::from_str(r#"{"scenario":"s","broker":"b","payload":7}"#).unwrap();
        assert!(matches!(line, ResultLine::Other(_)), "{line:?}");
        assert_eq!((line.scenario(), line.broker()), (Some("s"), Some("b")));

        assert!(serde_json::from_str::<ResultLine>("[1]").is_err());
    }
}
