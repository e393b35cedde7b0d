//! The end of a bench run: the /proc samples taken while it ran, and the
//! [`BenchReport`] made from them, the step counters and the subscribers'
//! histograms.
//!
//! In: the run's configuration, counters, timeline, samples and stats. Out:
//! the report. Bound: one sample per [`SAMPLE_EVERY`] of the run.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{BenchConfig, Mode, PayloadKind};
use super::payload::TYPICAL_POSITION_BYTES;
use super::report::{new_histogram, BenchReport, Latency, StepReport};
use super::shared::Shared;
use super::subscriber::SubscriberStats;
use super::{Ramp, Timeline, SAMPLE_EVERY};
use crate::procfs::{cpu_ticks, rss_kib, TICKS_PER_S};
use crate::results::BenchClientsLine;

/// One /proc sample.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    step: usize,
    at: Instant,
    rss_kib: Option<u64>,
    ticks: Option<u64>,
    tool_ticks: Option<u64>,
}

/// Samples the broker's RSS and CPU and the tool's CPU every [`SAMPLE_EVERY`].
pub(super) struct Sampler {
    sampling: Arc<AtomicBool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub(super) fn start(cfg: &Arc<BenchConfig>, shared: &Arc<Shared>) -> Self {
        let sampling = Arc::new(AtomicBool::new(true));
        let (cfg, shared, running) = (Arc::clone(cfg), Arc::clone(shared), Arc::clone(&sampling));
        let task = tokio::spawn(async move {
            let me = std::process::id();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while running.load(Relaxed) {
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
        });
        Sampler { sampling, task }
    }

    pub(super) async fn stop(self) -> Vec<Sample> {
        self.sampling.store(false, Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Everything a finished run measured, before it becomes a [`BenchReport`].
pub(super) struct Measured<'a> {
    pub(super) cfg: &'a BenchConfig,
    pub(super) shared: &'a Shared,
    pub(super) timeline: Timeline,
    pub(super) samples: Vec<Sample>,
    pub(super) stats: SubscriberStats,
    pub(super) copies_per_message: u64,
    pub(super) subscribers_connected: usize,
    pub(super) ramp: Ramp,
    pub(super) rss_before_kib: Option<u64>,
    pub(super) rss_end_kib: Option<u64>,
}

impl Measured<'_> {
    /// Step `k`'s figures from its counters, histogram, samples and verdict.
    fn step_report(&self, k: usize) -> StepReport {
        let Some((c, bounds)) = self.shared.steps.get(k).zip(self.timeline.bounds.get(k)) else {
            return StepReport::default();
        };
        let in_step: Vec<&Sample> = self.samples.iter().filter(|s| s.step == k).collect();
        let cpu = |f: fn(&Sample) -> Option<u64>| -> Option<f64> {
            let (first, last) = (in_step.first()?, in_step.last()?);
            let secs = (last.at - first.at).as_secs_f64();
            let ticks = f(last)?.saturating_sub(f(first)?);
            (secs > 0.0).then(|| ticks as f64 / TICKS_PER_S / secs * 100.0)
        };
        let sent = c.sent.load(Relaxed);
        let received = c.received.load(Relaxed);
        let expected = sent * self.copies_per_message;
        let verdict = k.checked_sub(1).and_then(|i| self.timeline.verdicts.get(i));
        StepReport {
            step: k,
            offered_per_s: bounds.offered,
            duration_s: (bounds.end - bounds.start).as_secs_f64(),
            sent,
            expected,
            received,
            lost: expected.saturating_sub(received),
            latency: self
                .stats
                .histograms
                .get(k)
                .and_then(Option::as_ref)
                .map(Latency::of)
                .unwrap_or_default(),
            rss_max_kib: in_step.iter().filter_map(|s| s.rss_kib).max(),
            cpu_pct: cpu(|s| s.ticks),
            tool_cpu_pct: cpu(|s| s.tool_ticks),
            passed: verdict.map(|v| v.passed),
            failed_because: verdict.and_then(|v| v.failed_because.clone()),
        }
    }

    /// The measured steps summed, latencies merged, CPU weighted by duration.
    fn total(&self, steps: &[StepReport]) -> StepReport {
        let mut total = StepReport {
            step: usize::MAX,
            ..StepReport::default()
        };
        let mut total_hist = new_histogram();
        let (mut cpu_weighted, mut tool_weighted, mut cpu_secs) = (0.0, 0.0, 0.0);
        for s in steps {
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
            if let (Some(h), Some(Some(step_h))) =
                (total_hist.as_mut(), self.stats.histograms.get(s.step))
            {
                let _ = h.add(step_h);
            }
        }
        total.offered_per_s = steps.first().map_or(0.0, |s| s.offered_per_s);
        total.latency = total_hist.as_ref().map(Latency::of).unwrap_or_default();
        if cpu_secs > 0.0 {
            total.cpu_pct = Some(cpu_weighted / cpu_secs);
            total.tool_cpu_pct = Some(tool_weighted / cpu_secs);
        }
        total
    }

    pub(super) fn report(self) -> BenchReport {
        let cfg = self.cfg;
        let warmup = self.step_report(0);
        let steps: Vec<StepReport> = (1..self.timeline.bounds.len())
            .map(|k| self.step_report(k))
            .collect();
        let total = self.total(&steps);
        let max_sustained = steps
            .iter()
            .filter(|s| s.passed == Some(true))
            .max_by(|a, b| a.received_per_s().total_cmp(&b.received_per_s()))
            .cloned();
        BenchReport {
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
            clients: BenchClientsLine {
                publishers: cfg.publishers,
                publishers_connected: self.ramp.connected,
                subscribers: cfg.subscribers,
                subscribers_connected: self.subscribers_connected,
                publishers_lost: self.shared.publishers_lost.load(Relaxed),
                subscribers_lost: self.shared.subscribers_lost.load(Relaxed),
            },
            slow_subscribers: cfg.slow_subscribers,
            share_group: cfg.share_group.clone(),
            connects_per_s: self.ramp.connects_per_s,
            steps,
            warmup,
            total,
            duplicates: self.stats.duplicates,
            max_sustained,
            rss_before_kib: self.rss_before_kib,
            rss_max_kib: self.samples.iter().filter_map(|s| s.rss_kib).max(),
            rss_end_kib: self.rss_end_kib,
            first_error: self.shared.first_error(),
        }
    }
}
