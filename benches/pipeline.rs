//! Ingest pipeline in-process: decode + fleet state update + fan-out to 1,
//! 64 and 1024 conflating subscribers, in positions per second; and the
//! same workload through `tokio::sync::broadcast` as a baseline.
//!
//! Run with `cargo bench --bench pipeline`; results and the machine are in
//! BENCHMARKS.md ("Ingest pipeline"). Single-threaded: producer and
//! subscribers run on the bench thread, so the figures are one core's.
//!
//! Workload: 10 000 vehicles (`fleet.max_vehicles`' default) sending
//! postcard positions round-robin, each with its next sequence number (the
//! fleet drops duplicates), in batches of [`BATCH`] = 256 (what the ingest
//! task drains at once). Each iteration is one batch
//! (`Throughput::Elements(256)`, so criterion's "thrpt" reads as positions
//! per second). Before timing, one round makes every vehicle known, so no
//! iteration adds a vehicle.
//!
//! What one iteration times:
//! - `Pipeline::handle` for each of the 256 publishes: format detection,
//!   postcard decode, range checks, sequence window, odometer, presence,
//!   the `Update`, and the payload's mirror into the (detached) broker queue;
//! - fan-out: one `Publisher::publish(&updates)` (conflating subscribers,
//!   queue of `http.ws_queue`' default 2048, `Filter::All`) — or, for the
//!   baseline, `broadcast::Sender::send(update.clone())` per update into a
//!   channel of the same capacity;
//! - the drain: every subscriber's `try_recv` into a reused `Vec` (every
//!   receiver's `try_recv` loop for broadcast). Cases named `…_drain_untimed`
//!   leave it out of the timing: what the ingest task itself pays, since in
//!   the gateway each subscriber drains on its own task.
//!
//! Not timed: encoding the batch's payloads (each copied into its own
//! `Bytes`, as `IngestSender::admit` does) and draining the detached broker
//! queue (the broker thread's work).

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetgate::broker::{BrokerPublisher, DetachedBroker};
use fleetgate::fanout::{Fanout, Filter, Publisher, SubscribeOptions, Subscription, WhenFull};
use fleetgate::fleet::Update;
use fleetgate::ingest::{Pipeline, VehiclePublish, BATCH};
use fleetgate::metrics::Metrics;
use fleetgate::topics::{DeviceTopicKind, VehicleId};
use fleetgate::Config;
use fleetgate_wire::{encode, flags, Position, MAX_ENCODED_LEN};
use tokio::sync::broadcast;

const VEHICLES: usize = 10_000;
/// Per-subscriber queue: `http.ws_queue`'s default (a live view).
const QUEUE: usize = 2048;
/// `fanout.events_queue`'s default.
const EVENTS_QUEUE: usize = 256;
/// 2026-11-22T00:00:00Z.
const T0_MS: u64 = 1_795_341_600_000;

/// Vehicle `n % VEHICLES`'s fix number `n / VEHICLES`: every publish is
/// new, forever.
struct Source {
    ids: Vec<VehicleId>,
    next: u64,
    batch: Vec<VehiclePublish>,
}

impl Source {
    fn new() -> Source {
        Source {
            ids: (0..VEHICLES)
                .map(|v| VehicleId::parse(&format!("truck-{v:05}")).unwrap())
                .collect(),
            next: 0,
            batch: Vec::with_capacity(BATCH),
        }
    }

    fn position(&self, v: usize, round: u64) -> Position {
        let (vi, r) = (v as i32, (round % 100_000) as i32);
        Position {
            seq: round as u32 + 1,
            time_ms: T0_MS + round * 1000,
            // Around Amsterdam, each vehicle moving north-east.
            lat_e6: 52_000_000 + vi * 50 + r * 10,
            lon_e6: 4_500_000 + vi * 70 + r * 10,
            speed_cm_s: 1389,
            heading: (v % 256) as u8,
            flags: flags::FIX_VALID | flags::IGNITION,
            odometer_m: round
                .is_multiple_of(10)
                .then_some(100_000 + round as u32 * 14),
        }
    }

    /// The next [`BATCH`] publishes.
    fn fill(&mut self) -> &[VehiclePublish] {
        self.batch.clear();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        for _ in 0..BATCH {
            let (v, round) = (
                (self.next % VEHICLES as u64) as usize,
                self.next / VEHICLES as u64,
            );
            self.next += 1;
            let payload = encode(&self.position(v, round), &mut buf).unwrap();
            self.batch.push(VehiclePublish {
                vehicle: self.ids[v].clone(),
                kind: DeviceTopicKind::Position,
                payload: Bytes::copy_from_slice(payload),
                received_ms: T0_MS + round * 1000 + 250,
            });
        }
        &self.batch
    }
}

/// Polls once: conflating subscribers never make `publish` wait.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("publish waited, but no subscriber uses `block`"),
    }
}

fn pipeline(metrics: &Arc<Metrics>) -> (Pipeline, DetachedBroker) {
    let mut config = Config::default();
    config.fleet.max_vehicles = NonZeroUsize::new(VEHICLES).unwrap();
    let (mirror, detached) = BrokerPublisher::detached(BATCH * 2, metrics.clone());
    (Pipeline::new(&config, metrics.clone(), mirror), detached)
}

/// What differs between the fan-out and the broadcast baseline.
trait Sink {
    /// Hands the batch's updates to every subscriber.
    fn publish(&mut self, updates: &[Update]);
    /// Every subscriber takes what it was given; returns how many updates.
    fn drain(&mut self) -> usize;
}

struct FanoutSink {
    publisher: Publisher,
    subscribers: Vec<Subscription>,
    received: Vec<Update>,
}

impl FanoutSink {
    fn new(subscribers: usize, metrics: &Arc<Metrics>) -> FanoutSink {
        let fanout = Fanout::new(subscribers.max(1), VEHICLES, EVENTS_QUEUE, metrics.clone());
        let subscribers = (0..subscribers)
            .map(|_| {
                fanout
                    .subscribe(SubscribeOptions {
                        name: "bench",
                        policy: WhenFull::Conflate,
                        capacity: QUEUE,
                        filter: Filter::All,
                    })
                    .unwrap()
            })
            .collect();
        FanoutSink {
            publisher: fanout.publisher(),
            subscribers,
            received: Vec::with_capacity(QUEUE + EVENTS_QUEUE),
        }
    }
}

impl Sink for FanoutSink {
    fn publish(&mut self, updates: &[Update]) {
        ready(self.publisher.publish(updates));
    }

    fn drain(&mut self) -> usize {
        let mut n = 0;
        for sub in &mut self.subscribers {
            black_box(sub.try_recv(&mut self.received));
            n += black_box(&self.received).len();
            self.received.clear();
        }
        n
    }
}

struct BroadcastSink {
    sender: broadcast::Sender<Update>,
    receivers: Vec<broadcast::Receiver<Update>>,
    received: Vec<Update>,
}

impl BroadcastSink {
    fn new(receivers: usize) -> BroadcastSink {
        let (sender, first) = broadcast::channel(QUEUE);
        let mut all = vec![first];
        all.extend((1..receivers).map(|_| sender.subscribe()));
        BroadcastSink {
            sender,
            receivers: all,
            received: Vec::with_capacity(QUEUE + EVENTS_QUEUE),
        }
    }
}

impl Sink for BroadcastSink {
    fn publish(&mut self, updates: &[Update]) {
        for update in updates {
            // Err only without receivers; there always are some here.
            let _ = self.sender.send(update.clone());
        }
    }

    fn drain(&mut self) -> usize {
        let mut n = 0;
        for rx in &mut self.receivers {
            // The queue holds 2048 and is drained every 256: never lagged.
            while let Ok(update) = rx.try_recv() {
                self.received.push(update);
            }
            n += black_box(&self.received).len();
            self.received.clear();
        }
        n
    }
}

/// A pipeline feeding a sink, with every vehicle already known.
struct Rig<S> {
    source: Source,
    pipeline: Pipeline,
    mirror: DetachedBroker,
    sink: S,
    updates: Vec<Update>,
    now: tokio::time::Instant,
}

impl<S: Sink> Rig<S> {
    fn new(sink: S, metrics: &Arc<Metrics>) -> Rig<S> {
        let (pipeline, mirror) = pipeline(metrics);
        let mut rig = Rig {
            source: Source::new(),
            pipeline,
            mirror,
            sink,
            updates: Vec::with_capacity(BATCH * 4),
            now: tokio::time::Instant::now(),
        };
        // Add every vehicle (allocates; not timed).
        for _ in 0..VEHICLES.div_ceil(BATCH) + 1 {
            rig.batch(true);
        }
        assert_eq!(rig.pipeline.fleet.len(), VEHICLES);
        rig
    }

    /// One batch; returns the time taken by the timed part.
    fn batch(&mut self, drain_timed: bool) -> Duration {
        // Owned copies, made before the clock starts: the pipeline takes
        // publishes by value, as the ingest task hands them over.
        let batch = self.source.fill().to_vec();
        let start = Instant::now();
        for publish in batch {
            self.pipeline.handle(publish, self.now, &mut self.updates);
        }
        self.sink.publish(&self.updates);
        self.updates.clear();
        if drain_timed {
            black_box(self.sink.drain());
        }
        let elapsed = start.elapsed();
        if !drain_timed {
            black_box(self.sink.drain());
        }
        self.mirror.drain();
        elapsed
    }
}

/// No subscriber at all: decode + state update alone.
struct NoSink;

impl Sink for NoSink {
    fn publish(&mut self, _: &[Update]) {}
    fn drain(&mut self) -> usize {
        0
    }
}

fn bench_rig<S: Sink>(
    c: &mut Criterion,
    name: &str,
    drain_timed: bool,
    make: impl FnOnce() -> Rig<S>,
) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    // Built on first use, so a filtered run skips the others' set-up.
    let (mut make, mut rig) = (Some(make), None);
    group.bench_function(name, |b| {
        let rig = rig.get_or_insert_with(|| make.take().map(|make| make()).unwrap());
        b.iter_custom(|iters| (0..iters).map(|_| rig.batch(drain_timed)).sum());
    });
    group.finish();
}

fn pipeline_benches(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::default());
    bench_rig(c, "pipeline_decode_state_no_subscribers", true, || {
        Rig::new(NoSink, &metrics)
    });
    for n in [1, 64, 1024] {
        for drain_timed in [true, false] {
            let suffix = if drain_timed { "" } else { "_drain_untimed" };
            let metrics = Arc::new(Metrics::default());
            bench_rig(
                c,
                &format!("pipeline_decode_state_fanout_{n}_conflating_subscribers{suffix}"),
                drain_timed,
                || Rig::new(FanoutSink::new(n, &metrics), &metrics),
            );
            assert_eq!(Metrics::get(&metrics.positions_duplicate_total), 0);
            assert_eq!(Metrics::get(&metrics.fanout_dropped_total), 0);
            let metrics = Arc::new(Metrics::default());
            bench_rig(
                c,
                &format!("pipeline_decode_state_broadcast_{n}_receivers{suffix}"),
                drain_timed,
                || Rig::new(BroadcastSink::new(n), &metrics),
            );
            assert_eq!(Metrics::get(&metrics.positions_duplicate_total), 0);
        }
    }
}

criterion_group!(benches, pipeline_benches);
criterion_main!(benches);
