//! `loadgen bench`: a load tool for any MQTT 3.1.1 broker, the engine
//! behind `benches/compare.sh` (fleetgate and Mosquitto, side by side).
//!
//! In: a [`BenchConfig`]: N publishers and M subscribers on raw sockets
//! (hand-written MQTT, so the tool costs little beside the broker it
//! measures), what they send and how fast, and optionally the pid of the
//! broker to sample. Out: one [`BenchReport`], printed as a human summary
//! and one JSON line ([`crate::results::BenchLine`]).
//!
//! What is measured:
//! - latency from a timestamp carried in each payload to its arrival at a
//!   subscriber (p50, p99, p99.9, max, from an HDR histogram). `bench`
//!   payloads carry nanoseconds; `vehicle` payloads are real postcard
//!   [`Position`](fleetgate_wire::Position)s whose `time_ms` is milliseconds, so their latencies read
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

mod config;
mod measured;
mod payload;
mod publisher;
mod report;
mod shared;
mod subscriber;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use firmware_sim::clock::now_unix_ns;
use firmware_sim::runner::raise_open_files_limit;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

pub use config::{BenchArgs, BenchConfig, Mode, PayloadKind};
pub use payload::{bench_payload, parse_stamp, vehicle_id, Stamp, BENCH_HEADER};
pub use report::{new_histogram, BenchReport, Latency, StepReport};

use measured::{Measured, Sampler};
use publisher::publish_messages;
use report::per_s;
use shared::{await_arrivals, Phase, Shared};
use subscriber::{read_messages, subscribe, SubscriberStats};

use crate::mqtt::{connect_packet, handshake, resolve};
use crate::procfs::rss_kib;

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

/// Runs the benchmark; returns when every connection is closed.
pub async fn run_bench(cfg: BenchConfig) -> anyhow::Result<BenchReport> {
    raise_open_files_limit();
    let addr = resolve(&cfg.broker).await?;
    let step_slots = match cfg.mode {
        Mode::Fixed { steps, .. } => steps + 1,
        Mode::Search { max_steps, .. } => max_steps + 1,
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Paused);
    let clients = Clients {
        addr,
        cfg: Arc::new(cfg),
        shared: Arc::new(Shared::new(step_slots)),
        phase: phase_rx,
        handshakes: Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT)),
    };
    let (cfg, shared) = (Arc::clone(&clients.cfg), Arc::clone(&clients.shared));
    let rss_before_kib = cfg.pid.and_then(rss_kib);
    let sampler = Sampler::start(&cfg, &shared);

    // Subscribers first, so they see every message.
    let (subscribers, subscribers_connected) = clients.start_subscribers().await?;
    let readers = subscribers_connected.saturating_sub(cfg.slow_subscribers) as u64;
    let copies_per_message = if cfg.share_group.is_some() {
        u64::from(readers > 0)
    } else {
        readers
    };
    let (publishers, ramp) = clients.start_publishers().await?;
    let active_publishers = ramp.connected.max(1) as f64;

    let steps = Steps {
        shared: &shared,
        phase: &phase_tx,
        copies_per_message,
    };
    let timeline = match cfg.mode {
        Mode::Fixed {
            rate_per_publisher,
            duration,
            steps: n,
        } => {
            steps
                .run_fixed(
                    cfg.warmup,
                    rate_per_publisher,
                    active_publishers,
                    duration,
                    n,
                )
                .await
        }
        Mode::Search { .. } => steps.run_search(&cfg, active_publishers).await,
    };
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
    let stats = stop_clients(&phase_tx, subscribers, publishers).await;
    let samples = sampler.stop().await;
    Ok(Measured {
        cfg: &cfg,
        shared: &shared,
        timeline,
        samples,
        stats,
        copies_per_message,
        subscribers_connected,
        ramp,
        rss_before_kib,
        rss_end_kib,
    }
    .report())
}

/// What the connection tasks are started with.
struct Clients {
    addr: SocketAddr,
    cfg: Arc<BenchConfig>,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    handshakes: Arc<Semaphore>,
}

/// How the publishers' ramp went.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ramp {
    pub(super) connected: usize,
    pub(super) connects_per_s: f64,
}

impl Clients {
    /// Connects and subscribes every subscriber, each then reading in a task
    /// of its own; returns the tasks and how many subscribed.
    async fn start_subscribers(&self) -> anyhow::Result<(JoinSet<SubscriberStats>, usize)> {
        let cfg = &self.cfg;
        let mut subscribers = JoinSet::new();
        let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(cfg.subscribers.max(1));
        for n in 0..cfg.subscribers {
            let permit = Arc::clone(&self.handshakes).acquire_owned().await?;
            let (cfg, shared, phase, ready) = (
                Arc::clone(cfg),
                Arc::clone(&self.shared),
                self.phase.clone(),
                ready_tx.clone(),
            );
            let addr = self.addr;
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
        let mut connected = 0;
        // Each task reports once (and keeps its sender): count the reports.
        for _ in 0..cfg.subscribers {
            match ready_rx.recv().await {
                Some(ok) => connected += usize::from(ok),
                None => break,
            }
        }
        if cfg.subscribers > 0 && connected == 0 {
            bail!(
                "no subscriber could subscribe to {}: {}",
                cfg.broker,
                self.shared.first_error().unwrap_or_default()
            );
        }
        Ok((subscribers, connected))
    }

    /// Connects the publishers at the configured connect rate, each then
    /// publishing in a task of its own as the phase says.
    async fn start_publishers(&self) -> anyhow::Result<(JoinSet<()>, Ramp)> {
        let cfg = &self.cfg;
        let mut publishers = JoinSet::new();
        let ramp_start = Instant::now();
        let (connected_tx, mut connected_rx) = mpsc::channel::<bool>(cfg.publishers.max(1));
        for n in 0..cfg.publishers {
            if cfg.connect_rate_per_s > 0 {
                let offset = n as f64 / f64::from(cfg.connect_rate_per_s);
                sleep_until(ramp_start + Duration::from_secs_f64(offset)).await;
            }
            let permit = Arc::clone(&self.handshakes).acquire_owned().await?;
            let (cfg, shared, phase, connected) = (
                Arc::clone(cfg),
                Arc::clone(&self.shared),
                self.phase.clone(),
                connected_tx.clone(),
            );
            let addr = self.addr;
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
        let connected = self.shared.publishers_connected.load(Relaxed);
        if cfg.publishers > 0 && connected == 0 {
            bail!(
                "no publisher could connect to {}: {}",
                cfg.broker,
                self.shared.first_error().unwrap_or_default()
            );
        }
        let connects_per_s = per_s(connected as u64, (last_connack - ramp_start).as_secs_f64());
        Ok((
            publishers,
            Ramp {
                connected,
                connects_per_s,
            },
        ))
    }
}

/// When a step ran and what it offered.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepBounds {
    pub(super) start: Instant,
    pub(super) end: Instant,
    /// Total messages/s offered.
    pub(super) offered: f64,
}

/// A search step's verdict.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    pub(super) passed: bool,
    pub(super) failed_because: Option<String>,
}

/// The steps a run went through: `bounds[k]` of step k (0 = the warm-up),
/// and in search mode the verdict of each measured step (`verdicts[k - 1]`).
#[derive(Debug, Default)]
pub(super) struct Timeline {
    pub(super) bounds: Vec<StepBounds>,
    pub(super) verdicts: Vec<Verdict>,
}

/// Paces the publishers through the steps.
struct Steps<'a> {
    shared: &'a Shared,
    phase: &'a watch::Sender<Phase>,
    copies_per_message: u64,
}

impl Steps<'_> {
    /// Starts step `k` at `rate` per publisher; returns when it started.
    ///
    /// A step's start time is published STEP_LEAD ahead of the step: a
    /// publisher still sending the previous step sees it before its stamps
    /// pass it, so publisher and subscriber attribute every message alike.
    async fn begin(&self, k: usize, rate: f64) -> Instant {
        let start = Instant::now() + STEP_LEAD;
        if let Some(step) = self.shared.steps.get(k) {
            let lead_ns = u64::try_from(STEP_LEAD.as_nanos()).unwrap_or(u64::MAX);
            step.start_ns
                .store(now_unix_ns().saturating_add(lead_ns), Relaxed);
        }
        sleep_until(start).await;
        self.shared.current_step.store(k, Relaxed);
        let _ = self.phase.send(Phase::Run { step: k, rate });
        start
    }

    /// Fixed mode: the warm-up, then `steps` equal steps back to back at one rate.
    async fn run_fixed(
        &self,
        warmup: Duration,
        rate_per_publisher: f64,
        active_publishers: f64,
        duration: Duration,
        steps: usize,
    ) -> Timeline {
        let mut timeline = Timeline::default();
        let offered = rate_per_publisher * active_publishers;
        let start = self.begin(0, rate_per_publisher).await;
        sleep(warmup).await;
        timeline.bounds.push(StepBounds {
            start,
            end: Instant::now(),
            offered,
        });
        let each = duration / u32::try_from(steps).unwrap_or(u32::MAX);
        for k in 1..=steps {
            let start = self.begin(k, rate_per_publisher).await;
            sleep(each).await;
            timeline.bounds.push(StepBounds {
                start,
                end: Instant::now(),
                offered,
            });
        }
        let _ = self.phase.send(Phase::Paused);
        timeline
    }

    /// Search mode: geometric steps of total offered rate, each followed by
    /// a pause for its messages, until one fails (or `max_steps`).
    async fn run_search(&self, cfg: &BenchConfig, active_publishers: f64) -> Timeline {
        let mut timeline = Timeline::default();
        let Mode::Search {
            from_total,
            factor,
            step,
            max_steps,
            p99_limit_us,
        } = cfg.mode
        else {
            return timeline;
        };
        let start = self.begin(0, from_total / active_publishers).await;
        sleep(cfg.warmup).await;
        let _ = self.phase.send(Phase::Paused);
        timeline.bounds.push(StepBounds {
            start,
            end: Instant::now(),
            offered: from_total,
        });
        await_arrivals(self.shared, 0..1, self.copies_per_message, SEARCH_GAP).await;
        let mut offered = from_total;
        for k in 1..=max_steps {
            let start = self.begin(k, offered / active_publishers).await;
            sleep(step).await;
            let _ = self.phase.send(Phase::Paused);
            let bounds = StepBounds {
                start,
                end: Instant::now(),
                offered,
            };
            timeline.bounds.push(bounds);
            sleep(STEP_GAP).await;
            await_arrivals(self.shared, k..k + 1, self.copies_per_message, SEARCH_GAP).await;
            let failed_because = self.why_step_failed(k, bounds, p99_limit_us);
            let passed = failed_because.is_none();
            timeline.verdicts.push(Verdict {
                passed,
                failed_because,
            });
            if !passed || self.shared.publishers_lost.load(Relaxed) > 0 {
                break;
            }
            offered *= factor;
        }
        timeline
    }

    /// Why search step `k` failed: messages missing after [`SEARCH_GAP`],
    /// more than 1 % later than the p99 limit, or publishers short of the
    /// offered rate; `None` when it passed.
    fn why_step_failed(&self, k: usize, bounds: StepBounds, p99_limit_us: u64) -> Option<String> {
        let c = self.shared.steps.get(k)?;
        let (sent, received, late) = (
            c.sent.load(Relaxed),
            c.received.load(Relaxed),
            c.late.load(Relaxed),
        );
        let expected = sent * self.copies_per_message;
        let secs = (bounds.end - bounds.start).as_secs_f64();
        let offered = bounds.offered;
        if received < expected {
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
        }
    }
}

/// Tells every client the run is done and waits (10 s at most) for them to
/// close; returns what the subscribers measured.
async fn stop_clients(
    phase: &watch::Sender<Phase>,
    mut subscribers: JoinSet<SubscriberStats>,
    mut publishers: JoinSet<()>,
) -> SubscriberStats {
    let _ = phase.send(Phase::Done);
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
    stats
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
