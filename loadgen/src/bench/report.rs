//! What a bench run measured: latency percentiles, per-step and total
//! figures, and the [`BenchReport`] printed for people and as one JSON line
//! ([`crate::results::BenchLine`]).
//!
//! In: the counters, histograms and samples of a finished run. Out: a
//! report, its human block and its result line. Bound: one [`StepReport`]
//! per step.

use hdrhistogram::Histogram;

use crate::results::{to_line, BenchClientsLine, BenchLine, LatencyLine, RssLine, StepLine};

/// Latencies are recorded in µs up to this; longer ones are clamped.
pub(super) const MAX_LATENCY_US: u64 = 120_000_000;

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
    pub fn of(h: &Histogram<u32>) -> Self {
        Latency {
            n: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
    /// The result line's percentiles; none (`null`) where nothing was measured.
    pub fn to_line(self) -> Option<LatencyLine> {
        (self.n > 0).then_some(LatencyLine {
            n: self.n,
            p50: Some(self.p50),
            p99: Some(self.p99),
            p999: Some(self.p999),
            max: Some(self.max),
        })
    }
}

/// µs from 1 to [`MAX_LATENCY_US`], 2 significant digits.
pub fn new_histogram() -> Option<Histogram<u32>> {
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
    pub(super) fn to_line(&self) -> StepLine {
        StepLine {
            step: self.step,
            offered_per_s: Some(self.offered_per_s),
            duration_s: self.duration_s,
            sent: self.sent,
            expected: self.expected,
            received: self.received,
            lost: self.lost,
            sent_per_s: self.sent_per_s(),
            received_per_s: self.received_per_s(),
            latency_us: self.latency.to_line(),
            rss_max_kib: self.rss_max_kib,
            cpu_pct: self.cpu_pct,
            tool_cpu_pct: self.tool_cpu_pct,
            passed: self.passed,
            failed_because: self.failed_because.clone(),
        }
    }
}

pub(super) fn per_s(n: u64, secs: f64) -> f64 {
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
    /// Publishers and subscribers, asked for, connected and lost.
    pub clients: BenchClientsLine,
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
    pub first_error: Option<String>,
}

impl BenchReport {
    /// The result line ([`BenchLine`]).
    pub fn to_line(&self) -> BenchLine {
        BenchLine {
            tool: "firmware-sim bench".to_owned(),
            scenario: Some(self.scenario.clone()),
            broker: Some(self.label.clone()),
            target: self.broker.clone(),
            mode: Some(self.mode.to_owned()),
            payload: self.payload.to_owned(),
            payload_bytes: self.payload_bytes,
            qos: self.qos,
            clients: self.clients.clone(),
            slow_subscribers: Some(self.slow_subscribers),
            share_group: self.share_group.clone(),
            connects_per_s: Some(self.connects_per_s),
            measured_s: self.total.duration_s,
            sent: self.total.sent,
            expected: self.total.expected,
            received: self.total.received,
            lost: Some(self.total.lost),
            duplicates: self.duplicates,
            sent_per_s: self.total.sent_per_s(),
            received_per_s: Some(self.total.received_per_s()),
            latency_us: self.total.latency.to_line(),
            max_sustained_per_s: self.max_sustained.as_ref().map(StepReport::received_per_s),
            max_sustained_latency_us: self
                .max_sustained
                .as_ref()
                .and_then(|s| s.latency.to_line()),
            cpu_pct: self.total.cpu_pct,
            tool_cpu_pct: self.total.tool_cpu_pct,
            rss_kib: Some(RssLine {
                before: self.rss_before_kib,
                max: self.rss_max_kib,
                end: self.rss_end_kib,
            }),
            first_error: self.first_error.clone(),
            warmup: self.warmup.to_line(),
            steps: Some(self.steps.iter().map(StepReport::to_line).collect()),
        }
    }

    /// The result line as one line of JSON with sorted keys.
    pub fn to_json_line(&self) -> String {
        to_line(&self.to_line())
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
            self.clients.publishers,
            self.clients.publishers_connected,
            self.connects_per_s,
            self.clients.subscribers,
            self.clients.subscribers_connected,
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
        if self.clients.publishers_lost + self.clients.subscribers_lost > 0 {
            let _ = writeln!(
                s,
                "connections closed during the run: {} publishers, {} subscribers",
                self.clients.publishers_lost, self.clients.subscribers_lost
            );
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        s
    }
}

pub(super) fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}
