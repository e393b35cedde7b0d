//! `firmware-sim bench`: a load tool for any MQTT 3.1.1 broker, the engine
//! behind `benches/compare.sh` (fleetgate and Mosquitto, side by side).
//!
//! In: a [`BenchConfig`]: N publishers and M subscribers on raw sockets
//! (hand-written MQTT, so the tool costs little beside the broker it
//! measures), what they send and how fast, and optionally the pid of the
//! broker to sample. Out: one [`BenchReport`], printed as a human summary
//! and one JSON line.
//!
//! What is measured:
//! - latency from a timestamp carried in each payload to its arrival at a
//!   subscriber (p50, p99, p99.9, max, from an HDR histogram). `bench`
//!   payloads carry nanoseconds; `vehicle` payloads are real postcard
//!   [`Position`]s whose `time_ms` is milliseconds, so their latencies read
//!   up to 1 ms high;
//! - throughput sent and received, and losses by per-publisher sequence
//!   number (a gap is a loss unless the message arrives later; a repeat is
//!   a duplicate);
//! - the broker's RSS and CPU, sampled from `/proc/<pid>` every
//!   [`SAMPLE_EVERY`], and this tool's own CPU (to show when the tool, not
//!   the broker, was the limit).
//!
//! The run is a warm-up (step 0, not reported in the totals) and then
//! steps. `fixed` mode: `steps` back-to-back equal steps at one rate (the
//! `slow-sub` scenario stalls its slow subscribers from a given step on, so
//! step 1 is the baseline). `search` mode: step k offers `search_from ·
//! factor^(k-1)` messages/s in total; after each step the publishers pause
//! until every message of the step has arrived (or [`SEARCH_GAP`] passes);
//! a step passes when nothing is missing, its p99 is under the limit and
//! the publishers reached 95 % of the offered rate. The search stops at the
//! first failing step; the highest passing step's delivered rate is the
//! "max sustained rate".
//!
//! A message belongs to the step in which it was sent, decided from its
//! timestamp by publisher and subscriber alike, so per-step sent and
//! received counts match exactly and a slow arrival counts against the step
//! that caused it.
//!
//! Bound: per publisher one socket, a reusable output buffer of at most
//! [`MAX_BATCH`] packets and `inflight` QoS 1 permits; per subscriber a
//! [`READ_BUFFER`] read buffer, a sequence cursor per publisher and one
//! latency histogram per step it saw (2 significant digits, ~20 KiB each);
//! the sampler keeps one sample per [`SAMPLE_EVERY`]. Everything stops by
//! itself: each wait is bounded by the run's timings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use fleetgate_wire::{decode, encode, flags, Position, MAX_ENCODED_LEN};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use firmware_sim::clock::now_unix_ns;
use firmware_sim::runner::raise_open_files_limit;

use crate::mqtt::{
    connect_packet, handshake, next_frame, publish_parts, put_publish, subscribe_packet,
};
use crate::procfs::{cpu_ticks, rss_kib, TICKS_PER_S};

/// Packets written per `write_all` at most (flat-out publishers batch).
pub const MAX_BATCH: usize = 256;
/// A subscriber's read buffer.
pub const READ_BUFFER: usize = 64 * 1024;
/// How often the broker's RSS and CPU are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Search mode: the longest pause after a step for its messages to arrive.
pub const SEARCH_GAP: Duration = Duration::from_secs(1);
/// Search mode: the shortest pause between steps, so that every message
/// (even one stamped in whole milliseconds) belongs to one step.
const STEP_GAP: Duration = Duration::from_millis(10);
/// How far ahead of a step its start time is published.
const STEP_LEAD: Duration = Duration::from_millis(5);
/// Connection handshakes in flight at once.
const HANDSHAKES_IN_FLIGHT: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Latencies are recorded in µs up to this; longer ones are clamped.
const MAX_LATENCY_US: u64 = 120_000_000;
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// `payload_bytes` bytes on `bench/<n>`: send time (ns), publisher, sequence, zero padding.
    Bench,
    /// A postcard `Position` (about 22 bytes) on `v/<id>/pos`, as a vehicle sends it.
    Vehicle,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenario name, recorded in the result (fan-in, fan-out, slow-sub, …).
    #[arg(long, default_value = "custom")]
    pub scenario: String,
    /// Name of the broker under test, recorded in the result.
    #[arg(long, default_value = "broker")]
    pub label: String,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    #[arg(long, value_enum, default_value_t = PayloadKind::Bench)]
    pub payload: PayloadKind,
    /// Size of a `bench` payload (at least 16 bytes).
    #[arg(long, default_value_t = 32)]
    pub payload_bytes: usize,
    /// The subscribers' topic filter (default `bench/#`, or `v/+/pos` for
    /// vehicle payloads; on fleetgate `fleet/+/position` reads its JSON).
    #[arg(long)]
    pub sub_topic: Option<String>,
    /// Subscribe as `$share/<group>/<filter>`: each message reaches one subscriber.
    #[arg(long)]
    pub share_group: Option<String>,
    /// QoS of the publishes and of the subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Messages per second per publisher (fixed mode); 0 = as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// QoS 1 publishes awaiting their PUBACK, per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Publisher connections opened per second (0: as fast as possible).
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Fixed mode: measured seconds, split into `--steps` equal steps.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    #[arg(long, default_value_t = 1)]
    pub steps: usize,
    /// Search mode: total messages/s offered by the first step.
    #[arg(long)]
    pub search_from: Option<f64>,
    #[arg(long, default_value_t = 1.5)]
    pub search_factor: f64,
    /// Search mode: seconds per step.
    #[arg(long, default_value_t = 3.0)]
    pub step_s: f64,
    /// Search mode: the most steps to try.
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// Search mode: a step whose p99 is above this fails.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// This many subscribers stop reading at step `--slow-from-step` (their
    /// connections stay open); they are left out of latency and loss.
    #[arg(long, default_value_t = 0)]
    pub slow_subscribers: usize,
    #[arg(long, default_value_t = 2)]
    pub slow_from_step: usize,
    /// After the last step, wait at most this long for messages still on their way.
    #[arg(long, default_value_t = 5.0)]
    pub drain_s: f64,
    /// The broker's pid: its RSS and CPU are sampled from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Client ids are `<prefix>p<n>` and `<prefix>s<n>`; vehicle ids `<prefix><n:05>`.
    #[arg(long, default_value = "bench-")]
    pub id_prefix: String,
    /// Also append the JSON result line to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// How the run is paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `steps` equal steps over `duration`, `rate` per publisher (0 = flat out).
    Fixed {
        rate_per_publisher: f64,
        duration: Duration,
        steps: usize,
    },
    /// Geometric steps of total offered rate until one fails.
    Search {
        from_total: f64,
        factor: f64,
        step: Duration,
        max_steps: usize,
        p99_limit_us: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    pub scenario: String,
    pub label: String,
    pub broker: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub payload: PayloadKind,
    pub payload_bytes: usize,
    pub sub_topic: String,
    pub share_group: Option<String>,
    pub qos: u8,
    pub inflight: usize,
    pub connect_rate_per_s: u32,
    pub warmup: Duration,
    pub mode: Mode,
    pub slow_subscribers: usize,
    pub slow_from_step: usize,
    pub drain: Duration,
    pub pid: Option<u32>,
    pub id_prefix: String,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{name} must be a non-negative number of seconds, not {s}"))
}

impl BenchArgs {
    pub fn to_config(&self) -> anyhow::Result<BenchConfig> {
        if self.publishers == 0 && self.subscribers == 0 {
            bail!("nothing to do: --publishers and --subscribers are both 0");
        }
        if self.payload == PayloadKind::Bench && self.payload_bytes < BENCH_HEADER {
            bail!(
                "--payload-bytes must be at least {BENCH_HEADER} (send time, publisher, sequence)"
            );
        }
        if self.slow_subscribers > self.subscribers {
            bail!(
                "--slow-subscribers ({}) exceeds --subscribers ({})",
                self.slow_subscribers,
                self.subscribers
            );
        }
        if self.slow_subscribers > 0 && self.share_group.is_some() {
            bail!("--slow-subscribers and --share-group together would lose the slow ones' share: pick one");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("--rate must be 0 (flat out) or a positive number of messages per second");
        }
        if self.qos == 1 && !(1..=u16::MAX as usize).contains(&self.inflight) {
            bail!("--inflight must be between 1 and 65535");
        }
        let mode = match self.search_from {
            Some(from) => {
                let valid = from > 0.0 && from.is_finite() && self.search_factor > 1.0;
                if !valid {
                    bail!("--search-from must be positive and --search-factor above 1");
                }
                Mode::Search {
                    from_total: from,
                    factor: self.search_factor,
                    step: seconds("--step-s", self.step_s)?,
                    max_steps: self.max_steps.max(1),
                    p99_limit_us: (self.p99_limit_ms * 1000.0).max(1.0) as u64,
                }
            }
            None => Mode::Fixed {
                rate_per_publisher: self.rate,
                duration: seconds("--duration-s", self.duration_s)?,
                steps: self.steps.max(1),
            },
        };
        let sub_topic = self
            .sub_topic
            .clone()
            .unwrap_or_else(|| match self.payload {
                PayloadKind::Bench => "bench/#".to_owned(),
                PayloadKind::Vehicle => "v/+/pos".to_owned(),
            });
        Ok(BenchConfig {
            scenario: self.scenario.clone(),
            label: self.label.clone(),
            broker: self.broker.clone(),
            publishers: self.publishers,
            subscribers: self.subscribers,
            payload: self.payload,
            payload_bytes: self.payload_bytes,
            sub_topic,
            share_group: self.share_group.clone(),
            qos: self.qos,
            inflight: self.inflight,
            connect_rate_per_s: self.connect_rate,
            warmup: seconds("--warmup-s", self.warmup_s)?,
            mode,
            slow_subscribers: self.slow_subscribers,
            slow_from_step: self.slow_from_step,
            drain: seconds("--drain-s", self.drain_s)?,
            pid: self.pid,
            id_prefix: self.id_prefix.clone(),
        })
    }
}

/// send time (u64 ns) + publisher (u32) + sequence (u32).
pub const BENCH_HEADER: usize = 16;

/// One message as a subscriber reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: usize,
    pub seq: u32,
    /// Send time, ns since the Unix epoch.
    pub sent_ns: u64,
}

/// The `bench` payload: header then zeros up to `len`.
pub fn bench_payload(out: &mut Vec<u8>, len: usize, stamp: Stamp) {
    let start = out.len();
    out.extend_from_slice(&stamp.sent_ns.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(stamp.publisher)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.resize(start + len.max(BENCH_HEADER), 0);
}

/// The id a vehicle publisher `n` uses (`<prefix><n:05>`).
pub fn vehicle_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:05}")
}

/// Reads a stamp back from a payload: a `bench` header, a postcard
/// `Position` (vehicle from the topic `v/<id>/pos`) or the JSON a
/// dashboard topic carries (`vehicle_id`, `seq`, `time_ms`).
pub fn parse_stamp(kind: PayloadKind, prefix: &str, topic: &[u8], payload: &[u8]) -> Option<Stamp> {
    match kind {
        PayloadKind::Bench => {
            let header = payload.get(..BENCH_HEADER)?;
            Some(Stamp {
                sent_ns: u64::from_le_bytes(header[0..8].try_into().ok()?),
                publisher: u32::from_le_bytes(header[8..12].try_into().ok()?) as usize,
                seq: u32::from_le_bytes(header[12..16].try_into().ok()?),
            })
        }
        PayloadKind::Vehicle if payload.first() == Some(&b'{') => {
            #[derive(Deserialize)]
            struct Dashboard<'a> {
                #[serde(borrow)]
                vehicle_id: &'a str,
                seq: u32,
                time_ms: u64,
            }
            let json: Dashboard = serde_json::from_slice(payload).ok()?;
            Some(Stamp {
                publisher: vehicle_number(prefix, json.vehicle_id)?,
                seq: json.seq,
                sent_ns: json.time_ms.saturating_mul(1_000_000),
            })
        }
        PayloadKind::Vehicle => {
            let p: Position = decode(payload).ok()?;
            let topic = std::str::from_utf8(topic).ok()?;
            let id = topic.strip_prefix("v/")?.strip_suffix("/pos")?;
            Some(Stamp {
                publisher: vehicle_number(prefix, id)?,
                seq: p.seq,
                sent_ns: p.time_ms.saturating_mul(1_000_000),
            })
        }
    }
}

fn vehicle_number(prefix: &str, id: &str) -> Option<usize> {
    id.strip_prefix(prefix)?.parse().ok()
}

/// What the publishers do now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Paused,
    /// Step `step` at `rate` messages/s per publisher (0 = flat out).
    Run {
        step: usize,
        rate: f64,
    },
    Done,
}

#[derive(Default)]
struct StepCounters {
    /// Unix ns when the step began (0: not yet).
    start_ns: AtomicU64,
    sent: AtomicU64,
    /// Each (message, reading subscriber) pair seen for the first time.
    received: AtomicU64,
    /// Of those, arrivals later than the search's p99 limit.
    late: AtomicU64,
}

struct Shared {
    steps: Vec<StepCounters>,
    /// The step now running (for the sampler and slow subscribers); usize::MAX before.
    current_step: AtomicUsize,
    publishers_connected: AtomicUsize,
    publishers_lost: AtomicUsize,
    subscribers_lost: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// The step a message sent at `sent_ns` belongs to.
    fn step_of(&self, sent_ns: u64) -> usize {
        self.steps
            .iter()
            .rposition(|s| {
                let start = s.start_ns.load(Relaxed);
                start != 0 && start <= sent_ns
            })
            .unwrap_or(0)
    }
    fn note_error(&self, e: impl std::fmt::Display) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub n: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u32>) -> Self {
        Latency {
            n: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
    fn to_json(self) -> serde_json::Value {
        if self.n == 0 {
            return serde_json::Value::Null;
        }
        serde_json::json!({"n": self.n, "p50": self.p50, "p99": self.p99, "p999": self.p999, "max": self.max})
    }
}

fn new_histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    pub step: usize,
    /// Total messages/s offered (0 = flat out).
    pub offered_per_s: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub latency: Latency,
    pub rss_max_kib: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    /// Search mode: whether the step passed (None in fixed mode).
    pub passed: Option<bool>,
    /// Search mode: why it failed.
    pub failed_because: Option<String>,
}

impl StepReport {
    pub fn sent_per_s(&self) -> f64 {
        per_s(self.sent, self.duration_s)
    }
    pub fn received_per_s(&self) -> f64 {
        per_s(self.received, self.duration_s)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "step": self.step,
            "offered_per_s": self.offered_per_s,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost,
            "sent_per_s": self.sent_per_s(),
            "received_per_s": self.received_per_s(),
            "latency_us": self.latency.to_json(),
            "rss_max_kib": self.rss_max_kib,
            "cpu_pct": self.cpu_pct,
            "tool_cpu_pct": self.tool_cpu_pct,
            "passed": self.passed,
            "failed_because": self.failed_because,
        })
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchReport {
    pub scenario: String,
    pub label: String,
    pub broker: String,
    pub mode: &'static str,
    pub payload: &'static str,
    pub payload_bytes: usize,
    pub qos: u8,
    pub publishers: usize,
    pub publishers_connected: usize,
    pub subscribers: usize,
    pub subscribers_connected: usize,
    pub slow_subscribers: usize,
    pub share_group: Option<String>,
    pub connects_per_s: f64,
    /// Measured steps (1..); `warmup` is step 0.
    pub steps: Vec<StepReport>,
    pub warmup: StepReport,
    /// Over all measured steps.
    pub total: StepReport,
    pub duplicates: u64,
    /// Highest passing step (search mode).
    pub max_sustained: Option<StepReport>,
    pub rss_before_kib: Option<u64>,
    pub rss_max_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// Connections the broker (or the tool) closed during the run.
    pub publishers_lost: usize,
    pub subscribers_lost: usize,
    pub first_error: Option<String>,
}

impl BenchReport {
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "tool": "firmware-sim bench",
            "scenario": self.scenario,
            "broker": self.label,
            "target": self.broker,
            "mode": self.mode,
            "payload": self.payload,
            "payload_bytes": self.payload_bytes,
            "qos": self.qos,
            "publishers": self.publishers,
            "publishers_connected": self.publishers_connected,
            "subscribers": self.subscribers,
            "subscribers_connected": self.subscribers_connected,
            "slow_subscribers": self.slow_subscribers,
            "share_group": self.share_group,
            "connects_per_s": self.connects_per_s,
            "measured_s": self.total.duration_s,
            "sent": self.total.sent,
            "expected": self.total.expected,
            "received": self.total.received,
            "lost": self.total.lost,
            "duplicates": self.duplicates,
            "sent_per_s": self.total.sent_per_s(),
            "received_per_s": self.total.received_per_s(),
            "latency_us": self.total.latency.to_json(),
            "max_sustained_per_s": self.max_sustained.as_ref().map(StepReport::received_per_s),
            "max_sustained_latency_us": self.max_sustained.as_ref().map(|s| s.latency.to_json()),
            "cpu_pct": self.total.cpu_pct,
            "tool_cpu_pct": self.total.tool_cpu_pct,
            "rss_kib": {"before": self.rss_before_kib, "max": self.rss_max_kib, "end": self.rss_end_kib},
            "publishers_lost": self.publishers_lost,
            "subscribers_lost": self.subscribers_lost,
            "first_error": self.first_error,
            "warmup": self.warmup.to_json(),
            "steps": self.steps.iter().map(StepReport::to_json).collect::<Vec<_>>(),
        })
        .to_string()
    }

    pub fn to_human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bench {} on {} ({}): {} publishers ({} connected, {:.0} connects/s), {} subscribers ({} connected{}), QoS {}, {} payload{}",
            self.scenario,
            self.label,
            self.broker,
            self.publishers,
            self.publishers_connected,
            self.connects_per_s,
            self.subscribers,
            self.subscribers_connected,
            if self.slow_subscribers > 0 { format!(", {} slow", self.slow_subscribers) } else { String::new() },
            self.qos,
            self.payload,
            if self.payload == "bench" { format!(" of {} B", self.payload_bytes) } else { String::new() },
        );
        let _ = writeln!(
            s,
            "{:>4} {:>10} {:>7} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}",
            "step",
            "offered/s",
            "secs",
            "sent/s",
            "recv/s",
            "lost",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "RSS KiB",
            "cpu%",
            "pass"
        );
        for step in std::iter::once(&self.warmup)
            .chain(&self.steps)
            .chain(std::iter::once(&self.total))
        {
            let name = if std::ptr::eq(step, &self.total) {
                "all".to_owned()
            } else if step.step == 0 {
                "warm".to_owned()
            } else {
                step.step.to_string()
            };
            let offered = if step.offered_per_s > 0.0 {
                format!("{:.0}", step.offered_per_s)
            } else {
                "max".to_owned()
            };
            let _ = writeln!(
                s,
                "{:>4} {:>10} {:>7.2} {:>10.0} {:>10.0} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}",
                name,
                offered,
                step.duration_s,
                step.sent_per_s(),
                step.received_per_s(),
                step.lost,
                step.latency.p50,
                step.latency.p99,
                step.latency.p999,
                step.latency.max,
                step.rss_max_kib.map_or("-".to_owned(), |v| v.to_string()),
                step.cpu_pct.map_or("-".to_owned(), |v| format!("{v:.0}")),
                match step.passed {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "",
                },
            );
            if let Some(why) = &step.failed_because {
                let _ = writeln!(s, "     step {} failed: {why}", step.step);
            }
        }
        if let Some(best) = &self.max_sustained {
            let _ = writeln!(
                s,
                "max sustained: {:.0} msg/s delivered (step {}, p99 {} µs)",
                best.received_per_s(),
                best.step,
                best.latency.p99
            );
        } else if self.mode == "search" {
            let _ = writeln!(s, "max sustained: no step passed");
        }
        let _ = writeln!(
            s,
            "lost {} of {} expected, {} duplicates; broker RSS KiB before {} max {} end {}; tool CPU {}%",
            self.total.lost,
            self.total.expected,
            self.duplicates,
            opt(self.rss_before_kib),
            opt(self.rss_max_kib),
            opt(self.rss_end_kib),
            self.total.tool_cpu_pct.map_or("-".to_owned(), |v| format!("{v:.0}")),
        );
        if self.publishers_lost + self.subscribers_lost > 0 {
            let _ = writeln!(
                s,
                "connections closed during the run: {} publishers, {} subscribers",
                self.publishers_lost, self.subscribers_lost
            );
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        s
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}

/// One /proc sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    step: usize,
    at: Instant,
    rss_kib: Option<u64>,
    ticks: Option<u64>,
    tool_ticks: Option<u64>,
}

/// Runs the benchmark; returns when every connection is closed.
pub async fn run_bench(cfg: BenchConfig) -> anyhow::Result<BenchReport> {
    raise_open_files_limit();
    let addr = tokio::net::lookup_host(&cfg.broker)
        .await
        .with_context(|| format!("cannot resolve {}", cfg.broker))?
        .next()
        .with_context(|| format!("no address for {}", cfg.broker))?;
    let cfg = Arc::new(cfg);
    let step_slots = match cfg.mode {
        Mode::Fixed { steps, .. } => steps + 1,
        Mode::Search { max_steps, .. } => max_steps + 1,
    };
    let shared = Arc::new(Shared {
        steps: (0..step_slots).map(|_| StepCounters::default()).collect(),
        current_step: AtomicUsize::new(usize::MAX),
        publishers_connected: AtomicUsize::new(0),
        publishers_lost: AtomicUsize::new(0),
        subscribers_lost: AtomicUsize::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Paused);
    let rss_before_kib = cfg.pid.and_then(rss_kib);

    // Sampler.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (cfg, shared, sampling) =
            (Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&sampling));
        tokio::spawn(async move {
            let me = std::process::id();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while sampling.load(Relaxed) {
                tick.tick().await;
                samples.push(Sample {
                    step: shared.current_step.load(Relaxed),
                    at: Instant::now(),
                    rss_kib: cfg.pid.and_then(rss_kib),
                    ticks: cfg.pid.and_then(cpu_ticks),
                    tool_ticks: cpu_ticks(me),
                });
            }
            samples
        })
    };

    // Subscribers first, so they see every message.
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
    let mut subscribers = JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(cfg.subscribers.max(1));
    for n in 0..cfg.subscribers {
        let permit = Arc::clone(&handshakes).acquire_owned().await?;
        let (cfg, shared, phase, ready) = (
            Arc::clone(&cfg),
            Arc::clone(&shared),
            phase_rx.clone(),
            ready_tx.clone(),
        );
        let slow = n < cfg.slow_subscribers;
        subscribers.spawn(async move {
            let stream = within(HANDSHAKE_TIMEOUT, "SUBACK", subscribe(addr, &cfg, n)).await;
            drop(permit);
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    shared.note_error(format!("subscriber {n}: {e:#}"));
                    let _ = ready.send(false).await;
                    return SubscriberStats::default();
                }
            };
            let _ = ready.send(true).await;
            read_messages(stream, &cfg, &shared, slow, phase).await
        });
    }
    drop(ready_tx);
    let mut subscribers_connected = 0;
    // Each task reports once (and keeps its sender): count the reports.
    for _ in 0..cfg.subscribers {
        match ready_rx.recv().await {
            Some(ok) => subscribers_connected += usize::from(ok),
            None => break,
        }
    }
    if cfg.subscribers > 0 && subscribers_connected == 0 {
        bail!(
            "no subscriber could subscribe to {}: {}",
            cfg.broker,
            shared
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()
        );
    }
    let readers = subscribers_connected.saturating_sub(cfg.slow_subscribers) as u64;
    let copies_per_message = if cfg.share_group.is_some() {
        u64::from(readers > 0)
    } else {
        readers
    };

    // Publishers, ramped.
    let mut publishers = JoinSet::new();
    let ramp_start = Instant::now();
    let (connected_tx, mut connected_rx) =
        tokio::sync::mpsc::channel::<bool>(cfg.publishers.max(1));
    for n in 0..cfg.publishers {
        if cfg.connect_rate_per_s > 0 {
            sleep_until(
                ramp_start + Duration::from_secs_f64(n as f64 / f64::from(cfg.connect_rate_per_s)),
            )
            .await;
        }
        let permit = Arc::clone(&handshakes).acquire_owned().await?;
        let (cfg, shared, phase, connected) = (
            Arc::clone(&cfg),
            Arc::clone(&shared),
            phase_rx.clone(),
            connected_tx.clone(),
        );
        publishers.spawn(async move {
            let client_id = format!("{}p{n}", cfg.id_prefix);
            let packet = connect_packet(&client_id, 0, None, None);
            let stream = within(HANDSHAKE_TIMEOUT, "CONNACK", async {
                Ok(handshake(addr, &packet).await?)
            })
            .await;
            drop(permit);
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    shared.note_error(format!("publisher {n}: {e:#}"));
                    let _ = connected.send(false).await;
                    return;
                }
            };
            shared.publishers_connected.fetch_add(1, Relaxed);
            let _ = connected.send(true).await;
            if let Err(e) = publish_messages(stream, n, &cfg, &shared, phase).await {
                shared.publishers_lost.fetch_add(1, Relaxed);
                shared.note_error(format!("publisher {n}: {e:#}"));
            }
        });
    }
    drop(connected_tx);
    let mut last_connack = ramp_start;
    for _ in 0..cfg.publishers {
        match connected_rx.recv().await {
            Some(true) => last_connack = Instant::now(),
            Some(false) => {}
            None => break,
        }
    }
    let publishers_connected = shared.publishers_connected.load(Relaxed);
    let connects_per_s = per_s(
        publishers_connected as u64,
        (last_connack - ramp_start).as_secs_f64(),
    );
    if cfg.publishers > 0 && publishers_connected == 0 {
        bail!(
            "no publisher could connect to {}: {}",
            cfg.broker,
            shared
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()
        );
    }
    let active_publishers = publishers_connected.max(1) as f64;

    // Steps. `bounds[k]` = (start, end, offered total) of step k.
    let mut bounds: Vec<(Instant, Instant, f64)> = Vec::new();
    let mut verdicts: Vec<(bool, Option<String>)> = Vec::new();
    // A step's start time is published STEP_LEAD ahead of the step: a
    // publisher still sending the previous step sees it before its stamps
    // pass it, so publisher and subscriber attribute every message alike.
    let begin_step = |k: usize, rate: f64| {
        let (shared, phase_tx) = (&shared, &phase_tx);
        async move {
            let start = Instant::now() + STEP_LEAD;
            if let Some(step) = shared.steps.get(k) {
                let lead_ns = u64::try_from(STEP_LEAD.as_nanos()).unwrap_or(u64::MAX);
                step.start_ns
                    .store(now_unix_ns().saturating_add(lead_ns), Relaxed);
            }
            sleep_until(start).await;
            shared.current_step.store(k, Relaxed);
            let _ = phase_tx.send(Phase::Run { step: k, rate });
            start
        }
    };
    match cfg.mode {
        Mode::Fixed {
            rate_per_publisher,
            duration,
            steps,
        } => {
            let offered = rate_per_publisher * active_publishers;
            let start = begin_step(0, rate_per_publisher).await;
            sleep(cfg.warmup).await;
            bounds.push((start, Instant::now(), offered));
            let each = duration / u32::try_from(steps).unwrap_or(u32::MAX);
            for k in 1..=steps {
                let start = begin_step(k, rate_per_publisher).await;
                sleep(each).await;
                bounds.push((start, Instant::now(), offered));
            }
            let _ = phase_tx.send(Phase::Paused);
        }
        Mode::Search {
            from_total,
            factor,
            step,
            max_steps,
            p99_limit_us,
        } => {
            let start = begin_step(0, from_total / active_publishers).await;
            sleep(cfg.warmup).await;
            let _ = phase_tx.send(Phase::Paused);
            bounds.push((start, Instant::now(), from_total));
            await_arrivals(&shared, 0..1, copies_per_message, SEARCH_GAP).await;
            let mut offered = from_total;
            for k in 1..=max_steps {
                let start = begin_step(k, offered / active_publishers).await;
                sleep(step).await;
                let _ = phase_tx.send(Phase::Paused);
                let end = Instant::now();
                bounds.push((start, end, offered));
                sleep(STEP_GAP).await;
                await_arrivals(&shared, k..k + 1, copies_per_message, SEARCH_GAP).await;
                let c = &shared.steps[k];
                let (sent, received, late) = (
                    c.sent.load(Relaxed),
                    c.received.load(Relaxed),
                    c.late.load(Relaxed),
                );
                let expected = sent * copies_per_message;
                let secs = (end - start).as_secs_f64();
                let why = if received < expected {
                    Some(format!(
                        "{} of {expected} messages had not arrived {SEARCH_GAP:?} after the step",
                        expected - received
                    ))
                } else if late * 100 > received {
                    Some(format!("p99 above {} ms", p99_limit_us as f64 / 1000.0))
                } else if per_s(sent, secs) < 0.95 * offered {
                    Some(format!(
                        "publishers reached only {:.0} of {offered:.0} msg/s",
                        per_s(sent, secs)
                    ))
                } else {
                    None
                };
                let passed = why.is_none();
                verdicts.push((passed, why));
                if !passed || shared.publishers_lost.load(Relaxed) > 0 {
                    break;
                }
                offered *= factor;
            }
        }
    }
    shared.current_step.store(usize::MAX, Relaxed);
    // Drain: everything sent should arrive.
    await_arrivals(
        &shared,
        0..shared.steps.len(),
        copies_per_message,
        cfg.drain,
    )
    .await;
    let rss_end_kib = cfg.pid.and_then(rss_kib);
    let _ = phase_tx.send(Phase::Done);
    let stop_by = Instant::now() + Duration::from_secs(10);
    let mut stats = SubscriberStats::default();
    while let Ok(Some(joined)) = timeout(
        stop_by.saturating_duration_since(Instant::now()),
        subscribers.join_next(),
    )
    .await
    {
        if let Ok(s) = joined {
            stats.merge(s);
        }
    }
    subscribers.abort_all();
    let _ = timeout(stop_by.saturating_duration_since(Instant::now()), async {
        while publishers.join_next().await.is_some() {}
    })
    .await;
    publishers.abort_all();
    sampling.store(false, Relaxed);
    let samples = sampler.await.unwrap_or_default();

    // Report.
    let step_report = |k: usize| -> StepReport {
        let c = &shared.steps[k];
        let (start, end, offered) = bounds[k];
        let in_step: Vec<&Sample> = samples.iter().filter(|s| s.step == k).collect();
        let cpu = |f: fn(&Sample) -> Option<u64>| -> Option<f64> {
            let (first, last) = (in_step.first()?, in_step.last()?);
            let secs = (last.at - first.at).as_secs_f64();
            let ticks = f(last)?.saturating_sub(f(first)?);
            (secs > 0.0).then(|| ticks as f64 / TICKS_PER_S / secs * 100.0)
        };
        let sent = c.sent.load(Relaxed);
        let received = c.received.load(Relaxed);
        let expected = sent * copies_per_message;
        StepReport {
            step: k,
            offered_per_s: offered,
            duration_s: (end - start).as_secs_f64(),
            sent,
            expected,
            received,
            lost: expected.saturating_sub(received),
            latency: stats
                .histograms
                .get(k)
                .and_then(Option::as_ref)
                .map(Latency::of)
                .unwrap_or_default(),
            rss_max_kib: in_step.iter().filter_map(|s| s.rss_kib).max(),
            cpu_pct: cpu(|s| s.ticks),
            tool_cpu_pct: cpu(|s| s.tool_ticks),
            passed: verdicts
                .get(k.wrapping_sub(1))
                .map(|v| v.0)
                .filter(|_| k > 0),
            failed_because: verdicts
                .get(k.wrapping_sub(1))
                .and_then(|v| v.1.clone())
                .filter(|_| k > 0),
        }
    };
    let warmup = step_report(0);
    let steps: Vec<StepReport> = (1..bounds.len()).map(step_report).collect();
    let mut total = StepReport {
        step: usize::MAX,
        ..StepReport::default()
    };
    let mut total_hist = new_histogram();
    let (mut cpu_weighted, mut tool_weighted, mut cpu_secs) = (0.0, 0.0, 0.0);
    for s in &steps {
        total.duration_s += s.duration_s;
        total.sent += s.sent;
        total.expected += s.expected;
        total.received += s.received;
        total.lost += s.lost;
        total.rss_max_kib = total.rss_max_kib.max(s.rss_max_kib);
        if let (Some(c), Some(t)) = (s.cpu_pct, s.tool_cpu_pct) {
            cpu_weighted += c * s.duration_s;
            tool_weighted += t * s.duration_s;
            cpu_secs += s.duration_s;
        }
        if let (Some(h), Some(Some(step_h))) = (total_hist.as_mut(), stats.histograms.get(s.step)) {
            let _ = h.add(step_h);
        }
    }
    total.offered_per_s = steps.first().map_or(0.0, |s| s.offered_per_s);
    total.latency = total_hist.as_ref().map(Latency::of).unwrap_or_default();
    if cpu_secs > 0.0 {
        total.cpu_pct = Some(cpu_weighted / cpu_secs);
        total.tool_cpu_pct = Some(tool_weighted / cpu_secs);
    }
    let max_sustained = steps
        .iter()
        .filter(|s| s.passed == Some(true))
        .max_by(|a, b| a.received_per_s().total_cmp(&b.received_per_s()))
        .cloned();
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    Ok(BenchReport {
        scenario: cfg.scenario.clone(),
        label: cfg.label.clone(),
        broker: cfg.broker.clone(),
        mode: match cfg.mode {
            Mode::Fixed { .. } => "fixed",
            Mode::Search { .. } => "search",
        },
        payload: match cfg.payload {
            PayloadKind::Bench => "bench",
            PayloadKind::Vehicle => "vehicle",
        },
        payload_bytes: match cfg.payload {
            PayloadKind::Bench => cfg.payload_bytes,
            PayloadKind::Vehicle => TYPICAL_POSITION_BYTES,
        },
        qos: cfg.qos,
        publishers: cfg.publishers,
        publishers_connected,
        subscribers: cfg.subscribers,
        subscribers_connected,
        slow_subscribers: cfg.slow_subscribers,
        share_group: cfg.share_group.clone(),
        connects_per_s,
        steps,
        warmup,
        total,
        duplicates: stats.duplicates,
        max_sustained,
        rss_before_kib,
        rss_max_kib: samples.iter().filter_map(|s| s.rss_kib).max(),
        rss_end_kib,
        publishers_lost: shared.publishers_lost.load(Relaxed),
        subscribers_lost: shared.subscribers_lost.load(Relaxed),
        first_error,
    })
}

/// `fut`, or an error naming the `awaited` packet once `limit` has passed.
async fn within<T>(
    limit: Duration,
    awaited: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no {awaited} within {limit:?}")))
}

/// Size of the postcard positions vehicle publishers send (for the report).
const TYPICAL_POSITION_BYTES: usize = 22;

/// The instant that decides a message's step, computed alike by publisher
/// and subscriber from what the payload carries: a vehicle's `time_ms` is
/// whole milliseconds, so it counts at the end of its millisecond (it was
/// sent within it; steps in search mode are at least [`STEP_GAP`] apart).
fn attribution_ns(kind: PayloadKind, sent_ns: u64) -> u64 {
    match kind {
        PayloadKind::Bench => sent_ns,
        PayloadKind::Vehicle => (sent_ns / 1_000_000)
            .saturating_mul(1_000_000)
            .saturating_add(999_999),
    }
}

/// Waits until every message sent in `steps` has reached each reader, or `limit`.
async fn await_arrivals(
    shared: &Shared,
    steps: std::ops::Range<usize>,
    copies: u64,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let missing = shared.steps[steps.clone()]
            .iter()
            .any(|s| s.received.load(Relaxed) < s.sent.load(Relaxed) * copies);
        if !missing || Instant::now() >= deadline {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

async fn subscribe(addr: SocketAddr, cfg: &BenchConfig, n: usize) -> anyhow::Result<TcpStream> {
    let client_id = format!("{}s{n}", cfg.id_prefix);
    let mut stream = handshake(addr, &connect_packet(&client_id, 0, None, None)).await?;
    let filter = match &cfg.share_group {
        Some(group) => format!("$share/{group}/{}", cfg.sub_topic),
        None => cfg.sub_topic.clone(),
    };
    stream
        .write_all(&subscribe_packet(&filter, cfg.qos))
        .await?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).await?;
    // SUBACK: 0x90, length 3, packet id 1, one return code (0x80 = refused).
    if suback[0] != 0x90 || suback[1] != 0x03 {
        bail!("expected a SUBACK for {filter}, got {suback:02x?}");
    }
    if suback[4] == 0x80 {
        bail!("the broker refused the subscription to {filter}");
    }
    Ok(stream)
}

#[derive(Default)]
struct SubscriberStats {
    /// Latency per step (index = step).
    histograms: Vec<Option<Histogram<u32>>>,
    duplicates: u64,
}

impl SubscriberStats {
    fn merge(&mut self, other: SubscriberStats) {
        self.duplicates += other.duplicates;
        if self.histograms.len() < other.histograms.len() {
            self.histograms.resize_with(other.histograms.len(), || None);
        }
        for (mine, theirs) in self.histograms.iter_mut().zip(other.histograms) {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => {
                    let _ = m.add(&t);
                }
                (None, Some(t)) => *mine = Some(t),
                _ => {}
            }
        }
    }
}

/// Reads until the run is done; acks QoS 1; records every stamp (unless `slow`).
async fn read_messages(
    mut stream: TcpStream,
    cfg: &BenchConfig,
    shared: &Shared,
    slow: bool,
    mut phase: watch::Receiver<Phase>,
) -> SubscriberStats {
    let mut stats = SubscriberStats {
        histograms: (0..shared.steps.len()).map(|_| None).collect(),
        duplicates: 0,
    };
    // Next expected sequence number per publisher (grown on demand).
    let mut next_seq: Vec<u32> = Vec::new();
    let limit_us = match cfg.mode {
        Mode::Search { p99_limit_us, .. } => p99_limit_us,
        Mode::Fixed { .. } => u64::MAX,
    };
    let mut buf = bytes::BytesMut::with_capacity(READ_BUFFER);
    let mut acks = Vec::with_capacity(1024);
    // Per-step (received, late) counts of one read, published in one go.
    let mut counts = vec![(0u64, 0u64); shared.steps.len()];
    loop {
        if slow
            && shared.current_step.load(Relaxed) != usize::MAX
            && shared.current_step.load(Relaxed) >= cfg.slow_from_step
        {
            // Stop reading, keep the connection: the broker's queues fill.
            while !matches!(*phase.borrow_and_update(), Phase::Done) {
                if phase.changed().await.is_err() {
                    break;
                }
            }
            return stats;
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    shared.subscribers_lost.fetch_add(1, Relaxed);
                    shared.note_error("a subscriber's connection was closed by the broker");
                    return stats;
                }
                Ok(_) => {}
            },
            changed = phase.changed() => {
                if changed.is_err() || matches!(*phase.borrow(), Phase::Done) {
                    return stats;
                }
                continue;
            }
        }
        let now_ns = now_unix_ns();
        let mut consumed = 0;
        loop {
            let frame = match next_frame(&buf[consumed..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    shared.note_error(format!("subscriber: {e:#}"));
                    return stats;
                }
            };
            let packet = &buf[consumed..consumed + frame.len];
            consumed += frame.len;
            if frame.header >> 4 != 3 {
                continue; // PINGRESP and the like.
            }
            let Some((topic, pkid, payload)) =
                publish_parts(frame.header, &packet[frame.body_start..])
            else {
                continue;
            };
            if pkid != 0 {
                acks.extend_from_slice(&[0x40, 0x02]);
                acks.extend_from_slice(&pkid.to_be_bytes());
            }
            if slow {
                continue;
            }
            let Some(stamp) = parse_stamp(cfg.payload, &cfg.id_prefix, topic, payload) else {
                continue;
            };
            if cfg.share_group.is_none() {
                if next_seq.len() <= stamp.publisher {
                    if stamp.publisher > 10_000_000 {
                        continue;
                    }
                    next_seq.resize(stamp.publisher + 1, 0);
                }
                let next = &mut next_seq[stamp.publisher];
                if stamp.seq < *next {
                    stats.duplicates += 1;
                    continue;
                }
                *next = stamp.seq.wrapping_add(1);
            }
            let step = shared.step_of(attribution_ns(cfg.payload, stamp.sent_ns));
            let latency_us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
            if let Some(slot) = stats.histograms.get_mut(step) {
                if slot.is_none() {
                    *slot = new_histogram();
                }
                if let Some(h) = slot {
                    let _ = h.record(latency_us.clamp(1, MAX_LATENCY_US));
                }
            }
            if let Some(c) = counts.get_mut(step) {
                c.0 += 1;
                c.1 += u64::from(latency_us > limit_us);
            }
        }
        let _ = buf.split_to(consumed);
        for (k, c) in counts.iter_mut().enumerate() {
            if c.0 > 0 {
                shared.steps[k].received.fetch_add(c.0, Relaxed);
                shared.steps[k].late.fetch_add(c.1, Relaxed);
                *c = (0, 0);
            }
        }
        if !acks.is_empty() {
            if stream.write_all(&acks).await.is_err() {
                shared.subscribers_lost.fetch_add(1, Relaxed);
                return stats;
            }
            acks.clear();
        }
    }
}

/// Publishes at the phase's rate until the run is done.
async fn publish_messages(
    stream: TcpStream,
    n: usize,
    cfg: &BenchConfig,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    let (read_half, mut write_half) = stream.into_split();
    let window = Arc::new(Semaphore::new(if cfg.qos > 0 { cfg.inflight } else { 0 }));
    let closed = Arc::new(AtomicBool::new(false));
    let acks = tokio::spawn(read_acks(
        read_half,
        Arc::clone(&window),
        Arc::clone(&closed),
    ));
    let topic = match cfg.payload {
        PayloadKind::Bench => format!("bench/{n}"),
        PayloadKind::Vehicle => format!("v/{}/pos", vehicle_id(&cfg.id_prefix, n)),
    };
    let mut out =
        Vec::with_capacity(MAX_BATCH * (cfg.payload_bytes.max(MAX_ENCODED_LEN) + topic.len() + 8));
    let mut payload = Vec::with_capacity(cfg.payload_bytes.max(MAX_ENCODED_LEN));
    let mut seq: u32 = 0;
    let mut pkid: u16 = 0;
    // Messages of one batch by the step their stamp belongs to.
    let mut sent_per_step = vec![0u64; shared.steps.len()];
    let result = 'run: loop {
        let current = *phase.borrow_and_update();
        let rate = match current {
            Phase::Done => break Ok(()),
            Phase::Run { rate, .. } => rate,
            Phase::Paused => {
                if phase.changed().await.is_err() {
                    break Ok(());
                }
                continue;
            }
        };
        let start = Instant::now();
        // Fixed-rate publishers are spread over one period (golden-ratio
        // offsets), as a real fleet's reports are, not all at once.
        let offset = if rate > 0.0 {
            Duration::from_secs_f64(((n as f64 * 0.618_033_988_75).fract() / rate).min(1.0))
        } else {
            Duration::ZERO
        };
        let mut sent_here: u64 = 0;
        loop {
            if closed.load(Relaxed) {
                break 'run Err(anyhow::anyhow!("the broker closed the connection"));
            }
            if phase.has_changed().unwrap_or(true) {
                continue 'run;
            }
            let mut batch = MAX_BATCH as u64;
            if rate > 0.0 {
                let elapsed = start.elapsed().saturating_sub(offset).as_secs_f64();
                let due = if start.elapsed() < offset {
                    0
                } else {
                    (elapsed * rate) as u64 + 1
                };
                batch = due.saturating_sub(sent_here).min(MAX_BATCH as u64);
                if batch == 0 {
                    let next = start + offset + Duration::from_secs_f64(sent_here as f64 / rate);
                    tokio::select! {
                        () = sleep_until(next) => {}
                        _ = phase.changed() => continue 'run,
                    }
                    continue;
                }
            }
            if cfg.qos > 0 {
                let permit = tokio::select! {
                    permit = window.acquire() => permit,
                    _ = phase.changed() => continue 'run,
                };
                let Ok(permit) = permit else {
                    break 'run Err(anyhow::anyhow!("the broker closed the connection"));
                };
                permit.forget();
                let mut taken = 1;
                while taken < batch {
                    match window.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            taken += 1;
                        }
                        Err(_) => break,
                    }
                }
                batch = taken;
            }
            out.clear();
            sent_per_step.iter_mut().for_each(|c| *c = 0);
            for _ in 0..batch {
                payload.clear();
                let stamp = Stamp {
                    publisher: n,
                    seq,
                    sent_ns: now_unix_ns(),
                };
                match cfg.payload {
                    PayloadKind::Bench => bench_payload(&mut payload, cfg.payload_bytes, stamp),
                    PayloadKind::Vehicle => vehicle_payload(&mut payload, n, stamp),
                }
                let at = shared.step_of(attribution_ns(cfg.payload, stamp.sent_ns));
                if let Some(c) = sent_per_step.get_mut(at) {
                    *c += 1;
                }
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                put_publish(&mut out, topic.as_bytes(), cfg.qos, pkid, &payload);
                seq = seq.wrapping_add(1);
            }
            if let Err(e) = write_half.write_all(&out).await {
                break 'run Err(e.into());
            }
            for (c, &n) in shared.steps.iter().zip(&sent_per_step) {
                if n > 0 {
                    c.sent.fetch_add(n, Relaxed);
                }
            }
            sent_here += batch;
        }
    };
    // Outstanding PUBACKs are not waited for: every subscriber's count says what arrived.
    let _ = write_half.write_all(&[0xe0, 0x00]).await; // DISCONNECT
    acks.abort();
    result
}

/// A postcard position from vehicle `n`, fix time = now.
fn vehicle_payload(out: &mut Vec<u8>, n: usize, stamp: Stamp) {
    let step = i32::try_from(stamp.seq % 1000).unwrap_or(0);
    let lane = i32::try_from(n % 1000).unwrap_or(0);
    let position = Position {
        seq: stamp.seq,
        time_ms: stamp.sent_ns / 1_000_000,
        // Central Amsterdam, a lane per vehicle, moving east.
        lat_e6: 52_360_000 + lane * 30,
        lon_e6: 4_880_000 + step * 20,
        speed_cm_s: 1_100,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    };
    let mut buf = [0u8; MAX_ENCODED_LEN];
    if let Ok(bytes) = encode(&position, &mut buf) {
        out.extend_from_slice(bytes);
    }
}

/// Returns a QoS 1 permit for each PUBACK; marks `closed` when the broker hangs up.
async fn read_acks(mut read_half: OwnedReadHalf, window: Arc<Semaphore>, closed: Arc<AtomicBool>) {
    let mut buf = bytes::BytesMut::with_capacity(4096);
    loop {
        match read_half.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut consumed = 0;
        while let Ok(Some(frame)) = next_frame(&buf[consumed..]) {
            if frame.header >> 4 == 4 {
                window.add_permits(1);
            }
            consumed += frame.len;
        }
        let _ = buf.split_to(consumed);
    }
    closed.store(true, Relaxed);
    window.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_payload_round_trips_and_pads() {
        let stamp = Stamp {
            publisher: 7,
            seq: 42,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut out = Vec::new();
        bench_payload(&mut out, 32, stamp);
        assert_eq!(out.len(), 32);
        assert_eq!(
            parse_stamp(PayloadKind::Bench, "x", b"bench/7", &out),
            Some(stamp)
        );
        assert_eq!(
            parse_stamp(PayloadKind::Bench, "x", b"bench/7", &out[..15]),
            None
        );
    }

    #[test]
    fn vehicle_payload_reads_back_from_postcard_topic_and_dashboard_json() {
        let stamp = Stamp {
            publisher: 123,
            seq: 9,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut out = Vec::new();
        vehicle_payload(&mut out, 123, stamp);
        let id = vehicle_id("bench-", 123);
        let topic = format!("v/{id}/pos");
        let back = parse_stamp(PayloadKind::Vehicle, "bench-", topic.as_bytes(), &out);
        assert_eq!(
            back,
            Some(Stamp {
                sent_ns: 1_700_000_000_123_000_000,
                ..stamp
            })
        );
        let json = format!(r#"{{"vehicle_id":"{id}","seq":9,"time_ms":1700000000123,"lat":52.3}}"#);
        let back = parse_stamp(
            PayloadKind::Vehicle,
            "bench-",
            b"fleet/x/position",
            json.as_bytes(),
        );
        assert_eq!(
            back,
            Some(Stamp {
                sent_ns: 1_700_000_000_123_000_000,
                ..stamp
            })
        );
        // Another fleet's vehicle is not ours.
        assert_eq!(
            parse_stamp(PayloadKind::Vehicle, "other-", topic.as_bytes(), &out),
            None
        );
    }
}
