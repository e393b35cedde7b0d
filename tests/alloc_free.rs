//! Invariant 4: the hot path (ingest → fleet → fan-out) does not allocate
//! per message.
//!
//! A counting global allocator counts allocations made by the test's own
//! thread while a thread-local flag is set, so the harness's other threads
//! do not interfere. The test warms up (the first round adds the vehicles:
//! their table rows, mirror topics and index entries are allocated once),
//! then counts over 100 000 positions pushed through the same loop the
//! ingest task runs: `Pipeline::handle` for a batch of 256, the event log
//! numbering and keeping the batch's events (`EventLog::record`), one
//! `Publisher::publish`, the subscribers drained with `try_recv` into
//! reused `Vec`s, and the broker mirror queue drained.
//!
//! The vehicles drive through 200 geofences (some with a dwell, some with
//! a speed limit) over a 45 km/h limit of their own, some switch the
//! ignition on and off and some stop and start again, so every event kind
//! is evaluated and made while the allocations are counted (the test
//! checks each kind was).
//!
//! Postcard payloads only: the JSON form goes through `serde_json`, which
//! may allocate while parsing (e.g. for escaped strings), so it is not part
//! of the promise.
//!
//! To find an allocation that breaks the invariant, run with
//! `FLEETGATE_ALLOC_BACKTRACE=1 cargo nextest run -p fleetgate --test
//! alloc_free --no-capture`: the allocator prints a backtrace of the first
//! counted allocation; with `FLEETGATE_ALLOC_BACKTRACE=sites` the failure
//! message tallies the call sites (in `src/`, and in the dependency that
//! allocated) of the first few thousand.

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The counting global allocator is `unsafe impl GlobalAlloc` by nature.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fleetgate::broker::{BrokerPublisher, DetachedBroker};
use fleetgate::config::geofence::{Circle, FenceConfig};
use fleetgate::fanout::{Fanout, Filter, Publisher, SubscribeOptions, Subscription, WhenFull};
use fleetgate::fleet::Update;
use fleetgate::ingest::{Pipeline, VehiclePublish, BATCH};
use fleetgate::metrics::Metrics;
use fleetgate::topics::{DeviceTopicKind, VehicleId};
use fleetgate::Config;
use fleetgate_wire::{encode, flags, FirmwareVersion, Position, Status, MAX_ENCODED_LEN};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// What `FLEETGATE_ALLOC_BACKTRACE` asked for: 0 nothing, 1 the first
/// counted allocation's backtrace, 2 (`=sites`) a tally of where the first
/// [`SAMPLED`] counted allocations came from.
static BACKTRACES: AtomicU8 = AtomicU8::new(0);
const SAMPLED: u64 = 5_000;
static SITES: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn record(&self) {
        let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
        if !counting {
            return;
        }
        let n = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        let mode = BACKTRACES.load(Ordering::Relaxed);
        if (mode == 1 && n == 0) || (mode == 2 && n < SAMPLED) {
            // Capturing allocates: stop counting while we do.
            COUNTING.with(|c| c.set(false));
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            if mode == 1 {
                eprintln!("first allocation on the hot path:\n{bt}");
            } else {
                let site = site(&bt);
                let mut sites = SITES.lock().unwrap_or_else(|p| p.into_inner());
                match sites.iter_mut().find(|(s, _)| *s == site) {
                    Some((_, count)) => *count += 1,
                    None => sites.push((site, 1)),
                }
            }
            COUNTING.with(|c| c.set(true));
        }
    }
}

/// The allocating call in a dependency (if any) and the line of fleetgate's
/// `src/` that led to it.
fn site(backtrace: &str) -> String {
    let mut function = "";
    let mut dependency = None;
    for line in backtrace.lines().map(str::trim) {
        if let Some(location) = line.strip_prefix("at ") {
            if location.starts_with("./src/") {
                return format!("{location} ({function}){}", dependency.unwrap_or_default());
            }
            if dependency.is_none() && location.contains("/.cargo/registry/") {
                // …/registry/src/<index>/<crate-version>/<path>
                let path = location
                    .rsplit_once("/registry/src/")
                    .map_or(location, |(_, p)| p);
                let path = path.split_once('/').map_or(path, |(_, p)| p);
                dependency = Some(format!(" via {path} ({function})"));
            }
        } else if let Some((_, name)) = line.split_once(": ") {
            function = name;
        }
    }
    format!("outside src/: {}", dependency.unwrap_or_default())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Polls once: every policy but `block` publishes without waiting, so
/// `publish` is ready at the first poll (a minimal executor that
/// allocates nothing).
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

const VEHICLES: usize = 1000;
const WARMUP_ROUNDS: usize = 3;
const COUNTED_ROUNDS: usize = 100; // × 1000 vehicles = 100 000 positions
/// Vehicles that also say goodbye and come back each round, so presence
/// events flow through the fan-out's event queues too.
const FLAPPING: usize = 10;
/// 2026-11-22T00:00:00Z.
const T0_MS: u64 = 1_795_341_600_000;
/// Fences along the vehicles' diagonal, one per this many vehicles.
const FENCE_EVERY: usize = 5;

fn vehicle_id(v: usize) -> VehicleId {
    VehicleId::parse(&format!("truck-{v:04}")).unwrap()
}

fn position(v: usize, round: usize) -> Position {
    // Every tenth vehicle, from the fourth: parked for 20 rounds of 40
    // (motion_stop after 10 s, motion_start when it drives off).
    let parked = v % 10 == 3 && (round / 20) % 2 == 1;
    let moved = if v % 10 == 3 {
        round.min(round / 40 * 40 + 20)
    } else {
        round
    };
    let (v, r) = (v as i32, moved as i32);
    // 50 km/h for 10 rounds, then 30: an overspeed episode over 45 every 20.
    let speed_cm_s = match (parked, (round / 10) % 2) {
        (true, _) => 0,
        (false, 0) => 1389,
        (false, _) => 833,
    };
    // Every tenth, from the third: the ignition flips every 5 rounds.
    let ignition = v % 10 != 2 || (round / 5).is_multiple_of(2);
    Position {
        seq: round as u32 + 1,
        time_ms: T0_MS + round as u64 * 1000,
        // Around Amsterdam, moving north-east ~14 m per fix.
        lat_e6: 52_300_000 + v * 200 + r * 100,
        lon_e6: 4_850_000 + v * 150 + r * 100,
        speed_cm_s,
        heading: (v % 256) as u8,
        flags: flags::FIX_VALID | if ignition { flags::IGNITION } else { 0 },
        odometer_m: round
            .is_multiple_of(10)
            .then_some(100_000 + round as u32 * 14),
    }
}

/// A 30 m circle on vehicle `5k`'s path, where it passes in round 10, 30,
/// 50, 70 or 90 (so fences are crossed while counting); every other one
/// with a 3 s dwell, every third with a 30 km/h limit.
fn fence(k: usize) -> FenceConfig {
    let v = (k * FENCE_EVERY) as f64;
    let round = (10 + 20 * (k % 5)) as f64;
    FenceConfig {
        name: format!("f{k}"),
        circle: Some(Circle {
            lat: 52.3 + v * 0.000_2 + round * 0.000_1,
            lon: 4.85 + v * 0.000_15 + round * 0.000_1,
            radius_m: 30.0,
        }),
        dwell_s: k.is_multiple_of(2).then_some(3),
        speed_limit_kmh: k.is_multiple_of(3).then_some(30.0),
        ..Default::default()
    }
}

fn goodbye(round: usize) -> Status {
    Status {
        time_ms: T0_MS + round as u64 * 1000,
        online: false,
        ignition: false,
        supply_mv: 12_600,
        firmware: FirmwareVersion {
            major: 1,
            minor: 4,
            patch: 2,
        },
    }
}

/// Every round's publishes, encoded once. Each payload is its own
/// `Bytes`, copied out of the encoding buffer as `IngestSender::admit`
/// copies it out of the connection's read buffer: that is what reaches
/// `Pipeline::handle`.
fn rounds(n: usize) -> Vec<Vec<VehiclePublish>> {
    let ids: Vec<VehicleId> = (0..VEHICLES).map(vehicle_id).collect();
    let mut buf = [0u8; MAX_ENCODED_LEN];
    (0..n)
        .map(|round| {
            let mut publishes = Vec::with_capacity(VEHICLES + FLAPPING);
            for (v, id) in ids.iter().enumerate() {
                let mut push = |kind, payload: &[u8]| {
                    publishes.push(VehiclePublish {
                        vehicle: id.clone(),
                        kind,
                        payload: Bytes::copy_from_slice(payload),
                        received_ms: T0_MS + round as u64 * 1000 + 250,
                    })
                };
                if v < FLAPPING {
                    push(
                        DeviceTopicKind::Status,
                        encode(&goodbye(round), &mut buf).unwrap(),
                    );
                }
                push(
                    DeviceTopicKind::Position,
                    encode(&position(v, round), &mut buf).unwrap(),
                );
            }
            publishes
        })
        .collect()
}

struct Rig {
    pipeline: Pipeline,
    publisher: Publisher,
    mirror: DetachedBroker,
    /// Each drained every n batches: n > 1 lets a queue fill (its policy
    /// drops) and, past a round, conflate a vehicle's positions.
    subscribers: Vec<(Subscription, usize)>,
    batches: usize,
    updates: Vec<Update>,
    received: Vec<Update>,
    metrics: Arc<Metrics>,
    /// Events of each kind the first subscriber received, by topic name.
    kinds: [(&'static str, u64); 8],
}

impl Rig {
    fn new() -> Rig {
        let metrics = Arc::new(Metrics::default());
        let mut config = Config::default();
        config.fleet.max_vehicles = NonZeroUsize::new(VEHICLES).unwrap();
        config.geofence.max_fences = NonZeroUsize::new(VEHICLES / FENCE_EVERY).unwrap();
        config.geofence.fences = (0..VEHICLES / FENCE_EVERY).map(fence).collect();
        config.events.overspeed.default_limit_kmh = Some(45.0);
        config.events.overspeed.minimal_duration_s = 2;
        config.events.motion.distance_m = 50.0;
        config.events.motion.stop_after_s = 10;
        config.validate().unwrap();
        let (mirror_tx, mirror) = BrokerPublisher::detached(4096, metrics.clone());
        let pipeline = Pipeline::new(&config, metrics.clone(), mirror_tx);
        let fanout = Fanout::new(16, VEHICLES, 64, metrics.clone());
        let mut subscribers = Vec::new();
        for (policy, capacity, filter, drain_every) in [
            (WhenFull::Conflate, VEHICLES, Filter::All, 1),
            (WhenFull::Conflate, VEHICLES, Filter::All, 9),
            // Fewer entries than vehicles: the oldest pending one goes.
            (WhenFull::Conflate, 100, Filter::All, 2),
            (WhenFull::DropOldest, 300, Filter::All, 1),
            (WhenFull::DropOldest, 64, Filter::All, 2),
            (WhenFull::DropNewest, 300, Filter::All, 1),
            (WhenFull::DropNewest, 64, Filter::All, 2),
            (
                WhenFull::Conflate,
                VEHICLES,
                Filter::Vehicles(vec![vehicle_id(3), vehicle_id(700)]),
                9,
            ),
            (
                WhenFull::DropOldest,
                300,
                Filter::BoundingBox {
                    min_lat_e6: 52_300_000,
                    min_lon_e6: 4_850_000,
                    max_lat_e6: 52_400_000,
                    max_lon_e6: 4_900_000,
                },
                1,
            ),
        ] {
            let sub = fanout
                .subscribe(SubscribeOptions {
                    name: "alloc_free",
                    policy,
                    capacity,
                    filter,
                })
                .unwrap();
            subscribers.push((sub, drain_every));
        }
        Rig {
            pipeline,
            publisher: fanout.publisher(),
            mirror,
            subscribers,
            batches: 0,
            updates: Vec::with_capacity(BATCH * 4),
            received: Vec::with_capacity(VEHICLES * 2 + 64),
            metrics,
            kinds: [
                "status_changed",
                "geofence_enter",
                "geofence_exit",
                "overspeed",
                "motion_start",
                "motion_stop",
                "ignition_on",
                "ignition_off",
            ]
            .map(|k| (k, 0)),
        }
    }

    /// One round through the ingest task's loop; returns updates received.
    fn round(&mut self, publishes: Vec<VehiclePublish>, now: tokio::time::Instant) -> usize {
        let mut received = 0;
        let mut publishes = publishes.into_iter().peekable();
        while publishes.peek().is_some() {
            self.batches += 1;
            for publish in publishes.by_ref().take(BATCH) {
                self.pipeline.handle(publish, now, &mut self.updates);
            }
            self.pipeline.fleet.events.record(&mut self.updates);
            ready(self.publisher.publish(&self.updates));
            self.updates.clear();
            for (i, (sub, drain_every)) in self.subscribers.iter_mut().enumerate() {
                if self.batches.is_multiple_of(*drain_every) {
                    sub.try_recv(&mut self.received);
                    received += self.received.len();
                    if i == 0 {
                        tally(&mut self.kinds, &self.received);
                    }
                    self.received.clear();
                }
            }
            self.mirror.drain();
        }
        received
    }
}

fn tally(kinds: &mut [(&'static str, u64)], updates: &[Update]) {
    for update in updates {
        if let Update::Event(e) = update {
            let name = e.kind.topic_name();
            if let Some((_, n)) = kinds.iter_mut().find(|(k, _)| *k == name) {
                *n += 1;
            }
            assert!(e.id > 0, "every event numbered before the fan-out");
        }
    }
}

#[test]
fn hot_path_allocates_nothing_per_message() {
    let mode = match std::env::var("FLEETGATE_ALLOC_BACKTRACE").as_deref() {
        Ok("sites") => 2,
        Ok(_) => 1,
        Err(_) => 0,
    };
    BACKTRACES.store(mode, Ordering::Relaxed);
    let mut rounds = rounds(WARMUP_ROUNDS + COUNTED_ROUNDS);
    let mut rig = Rig::new();
    let now = tokio::time::Instant::now();

    for publishes in rounds.drain(..WARMUP_ROUNDS) {
        rig.round(publishes, now);
    }
    assert_eq!(rig.pipeline.fleet.len(), VEHICLES);

    let decoded_before = Metrics::get(&rig.metrics.messages_decoded_total_position);
    rig.kinds.iter_mut().for_each(|(_, n)| *n = 0);
    let mut received = 0;
    let allocations = allocations_during(|| {
        for publishes in rounds.drain(..) {
            received += rig.round(publishes, now);
        }
    });
    let positions = Metrics::get(&rig.metrics.messages_decoded_total_position) - decoded_before;

    // The loop did the work: every position decoded and accepted, none a
    // duplicate, and the subscribers got (and lost) updates.
    assert_eq!(positions, (COUNTED_ROUNDS * VEHICLES) as u64);
    assert_eq!(Metrics::get(&rig.metrics.positions_duplicate_total), 0);
    assert_eq!(Metrics::get(&rig.metrics.messages_malformed_total), 0);
    assert!(received > COUNTED_ROUNDS * VEHICLES, "{received}");
    assert!(Metrics::get(&rig.metrics.fanout_dropped_total) > 0);
    assert!(Metrics::get(&rig.metrics.fanout_conflated_total) > 0);
    assert_eq!(Metrics::get(&rig.metrics.broker_publish_dropped_total), 0);
    // and every kind of event was evaluated and made while counting
    for (kind, n) in &rig.kinds {
        assert!(*n > 0, "no {kind} event while counting: {:?}", rig.kinds);
    }

    let sites = SITES.lock().unwrap_or_else(|p| p.into_inner());
    let sites: String = sites
        .iter()
        .map(|(s, n)| format!("\n  {n:>5} × {s}"))
        .collect();
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {positions} positions (rerun with \
         FLEETGATE_ALLOC_BACKTRACE=1 for the first one's backtrace, =sites for \
         where the first {SAMPLED} came from){sites}"
    );
}
