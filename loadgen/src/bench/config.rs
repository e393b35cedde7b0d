//! `loadgen bench`'s arguments and the [`BenchConfig`] they make.
//!
//! In: the command line. Out: a validated [`BenchConfig`] (a run that could
//! not measure anything is an error here, not halfway through). Bound: no state.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::payload::BENCH_HEADER;

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

pub(super) fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
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
