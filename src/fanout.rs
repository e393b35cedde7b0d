//! The bounded-memory fan-out core.
//!
//! In: batches of [`Update`]s from the one producer (the ingest task),
//! published once. Out: each subscriber's own bounded queue, drained by that
//! subscriber (the MQTT republisher, each WebSocket, the bridge feeder).
//!
//! Bound: at most `fanout.max_subscribers` subscribers (one more gets
//! [`FanoutError::TooManySubscribers`]); each queue holds at most its
//! `capacity` updates, allocated when it subscribes, plus for `conflate` an
//! index of 2 × `fleet.max_vehicles` `u32`s and `fanout.events_queue`
//! events. Nothing grows with traffic.
//!
//! A full queue applies the subscriber's [`WhenFull`] policy, and whatever a
//! subscriber loses is reported to it ([`Subscription::recv`] returns the
//! count) and counted in `/metrics` (`fanout_dropped_total`,
//! `fanout_conflated_total`). Only `block` can slow the producer, so it is
//! reserved for a consumer backed by disk; every other policy makes a slow
//! or stalled consumer lose its own updates and nobody else's.
//!
//! Cost: the producer takes each subscriber's lock once per batch, not per
//! update, and copies updates into preallocated storage: no allocation per
//! message (see `tests/alloc_free.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::fleet::Update;
use crate::metrics::Metrics;
use crate::topics::VehicleId;

/// What a full queue does. Who loses what is the point of each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Keep only the newest position and status per vehicle: the subscriber
    /// misses intermediate positions, never a vehicle's latest (unless more
    /// distinct vehicles are pending than its capacity: then the oldest
    /// pending one is dropped). Events are kept in order in their own queue
    /// of `fanout.events_queue`, oldest dropped first. Late positions are
    /// skipped: a live view wants the latest. The default for live views.
    Conflate,
    /// Drop the oldest queued update for the new one: the subscriber misses
    /// old updates.
    DropOldest,
    /// Drop the new update: the subscriber misses new updates until it has
    /// made room.
    DropNewest,
    /// Make the producer wait for room: nobody loses anything, and ingest
    /// slows to this consumer's pace. Only for a consumer backed by disk.
    Block,
}

/// Which updates a subscriber wants.
#[derive(Debug, Clone, Default)]
pub enum Filter {
    #[default]
    All,
    /// Only these vehicles.
    Vehicles(Vec<VehicleId>),
    /// Positions inside the box (inclusive, in 1e-6°); statuses and events
    /// of every vehicle, since whether a vehicle is inside is a property of
    /// its positions.
    BoundingBox {
        min_lat_e6: i32,
        min_lon_e6: i32,
        max_lat_e6: i32,
        max_lon_e6: i32,
    },
}

impl Filter {
    /// Whether a vehicle with this id and latest position belongs in the
    /// view (a vehicle with no position is outside any box).
    pub fn admits_vehicle(
        &self,
        id: &VehicleId,
        position: Option<&fleetgate_wire::Position>,
    ) -> bool {
        match self {
            Filter::All => true,
            Filter::Vehicles(ids) => ids.contains(id),
            Filter::BoundingBox { .. } => position.is_some_and(|p| self.contains(p)),
        }
    }

    fn contains(&self, p: &fleetgate_wire::Position) -> bool {
        match self {
            Filter::BoundingBox {
                min_lat_e6,
                min_lon_e6,
                max_lat_e6,
                max_lon_e6,
            } => {
                (*min_lat_e6..=*max_lat_e6).contains(&p.lat_e6)
                    && (*min_lon_e6..=*max_lon_e6).contains(&p.lon_e6)
            }
            _ => true,
        }
    }

    fn admits(&self, update: &Update) -> bool {
        match self {
            Filter::All => true,
            Filter::Vehicles(ids) => ids.iter().any(|id| id.as_str() == update.vehicle_id()),
            Filter::BoundingBox { .. } => match update {
                Update::Position(p) => self.contains(&p.position),
                _ => true,
            },
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FanoutError {
    #[error("too many subscribers: at most {max} (fanout.max_subscribers)")]
    TooManySubscribers { max: usize },
    #[error("a queue must hold at least one update")]
    ZeroCapacity,
}

/// How to subscribe.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// For logs: "mqtt", "ws", "bridge".
    pub name: &'static str,
    pub policy: WhenFull,
    pub capacity: usize,
    pub filter: Filter,
}

/// The fan-out's shared half; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    subscribers: Mutex<Vec<Arc<Shared>>>,
    max_subscribers: usize,
    max_vehicles: usize,
    events_capacity: usize,
    metrics: Arc<Metrics>,
}

struct Shared {
    name: &'static str,
    policy: WhenFull,
    filter: Filter,
    queue: Mutex<Queue>,
    /// Data is waiting (one permit, so no wake-up is ever lost).
    ready: Notify,
    /// Room was made (for `block`).
    room: Notify,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the queue consistent; a panic
    // elsewhere must not take the fan-out down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fanout {
    pub fn new(
        max_subscribers: usize,
        max_vehicles: usize,
        events_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Fanout {
        Fanout {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(Vec::with_capacity(max_subscribers)),
                max_subscribers,
                max_vehicles,
                events_capacity: events_capacity.max(1),
                metrics,
            }),
        }
    }

    pub fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, FanoutError> {
        if options.capacity == 0 {
            return Err(FanoutError::ZeroCapacity);
        }
        let mut subscribers = lock(&self.inner.subscribers);
        if subscribers.len() >= self.inner.max_subscribers {
            Metrics::inc(&self.inner.metrics.fanout_subscribers_refused_total);
            return Err(FanoutError::TooManySubscribers {
                max: self.inner.max_subscribers,
            });
        }
        let shared = Arc::new(Shared {
            name: options.name,
            policy: options.policy,
            filter: options.filter,
            queue: Mutex::new(Queue::new(
                options.policy,
                options.capacity,
                self.inner.max_vehicles,
                self.inner.events_capacity,
            )),
            ready: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        });
        subscribers.push(shared.clone());
        Metrics::inc(&self.inner.metrics.fanout_subscribers);
        tracing::debug!(name = options.name, policy = ?options.policy, "fan-out subscriber added");
        Ok(Subscription {
            shared,
            inner: self.inner.clone(),
        })
    }

    pub fn subscriber_count(&self) -> usize {
        lock(&self.inner.subscribers).len()
    }

    /// The producer's handle. There is one producer: the ingest task.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            inner: self.inner.clone(),
            blocking: Vec::with_capacity(self.inner.max_subscribers),
        }
    }
}

/// Publishes batches to every subscriber.
pub struct Publisher {
    inner: Arc<Inner>,
    /// Reused each batch, so publishing allocates nothing.
    blocking: Vec<Arc<Shared>>,
}

impl Publisher {
    /// Delivers `batch` to every subscriber whose filter admits it. Returns
    /// at once unless a `block` subscriber is full.
    pub async fn publish(&mut self, batch: &[Update]) {
        if batch.is_empty() {
            return;
        }
        let metrics = &self.inner.metrics;
        {
            let subscribers = lock(&self.inner.subscribers);
            for sub in subscribers.iter() {
                if sub.policy == WhenFull::Block {
                    self.blocking.push(sub.clone());
                    continue;
                }
                let mut queue = lock(&sub.queue);
                let before = queue.len();
                for update in batch.iter().filter(|u| sub.filter.admits(u)) {
                    queue.push(update, metrics);
                }
                let added = queue.len() != before || queue.lagged > 0;
                drop(queue);
                if added {
                    sub.ready.notify_one();
                }
            }
        }
        for sub in self.blocking.drain(..) {
            let mut next = 0;
            while next < batch.len() {
                {
                    let mut queue = lock(&sub.queue);
                    while let Some(update) = batch.get(next) {
                        if !sub.filter.admits(update) {
                            next += 1;
                            continue;
                        }
                        if !queue.try_push_fifo(update) {
                            break;
                        }
                        next += 1;
                    }
                }
                sub.ready.notify_one();
                if next < batch.len() {
                    if sub.closed.load(Ordering::Acquire) {
                        break;
                    }
                    Metrics::inc(&metrics.fanout_blocked_total);
                    sub.room.notified().await;
                }
            }
        }
    }
}

/// A subscriber's half. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

impl Subscription {
    /// Waits until something is queued, then moves all of it into `out`
    /// (appended). Returns how many updates this subscriber lost since the
    /// last call (its lag).
    pub async fn recv(&mut self, out: &mut Vec<Update>) -> u64 {
        loop {
            let lagged = self.try_recv(out);
            if lagged > 0 || !out.is_empty() {
                return lagged;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `out` without waiting; returns the lag.
    pub fn try_recv(&mut self, out: &mut Vec<Update>) -> u64 {
        let lagged = lock(&self.shared.queue).drain_into(out);
        if self.shared.policy == WhenFull::Block {
            self.shared.room.notify_one();
        }
        lagged
    }

    pub fn policy(&self) -> WhenFull {
        self.shared.policy
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_one();
        let mut subscribers = lock(&self.inner.subscribers);
        let before = subscribers.len();
        subscribers.retain(|s| !Arc::ptr_eq(s, &self.shared));
        if subscribers.len() != before {
            Metrics::dec(&self.inner.metrics.fanout_subscribers);
        }
        tracing::debug!(name = self.shared.name, "fan-out subscriber removed");
    }
}

const NO_ENTRY: u32 = u32::MAX;

/// Positions and statuses conflate per vehicle: slot × 2 and slot × 2 + 1.
fn conflation_key(update: &Update) -> Option<usize> {
    let slot = update.slot()? as usize;
    Some(slot * 2 + usize::from(matches!(update, Update::Status(_))))
}

/// One subscriber's queue. FIFO policies use `fifo`; `conflate` keeps the
/// newest position and status per vehicle in `entries` (a slab of
/// `capacity`), indexed by vehicle slot, in arrival order in `order`, and
/// events in `fifo`.
struct Queue {
    policy: WhenFull,
    fifo: VecDeque<Update>,
    fifo_capacity: usize,
    entries: Vec<Option<Update>>,
    free: Vec<u32>,
    order: VecDeque<u32>,
    /// 2 × max_vehicles: slot × 2 for positions, slot × 2 + 1 for statuses.
    by_key: Vec<u32>,
    lagged: u64,
}

impl Queue {
    fn new(
        policy: WhenFull,
        capacity: usize,
        max_vehicles: usize,
        events_capacity: usize,
    ) -> Queue {
        let conflate = policy == WhenFull::Conflate;
        let fifo_capacity = if conflate { events_capacity } else { capacity };
        Queue {
            policy,
            fifo: VecDeque::with_capacity(fifo_capacity),
            fifo_capacity,
            entries: if conflate {
                vec![None; capacity]
            } else {
                Vec::new()
            },
            free: if conflate {
                (0..capacity as u32).rev().collect()
            } else {
                Vec::new()
            },
            order: VecDeque::with_capacity(if conflate { capacity } else { 0 }),
            by_key: if conflate {
                vec![NO_ENTRY; max_vehicles * 2]
            } else {
                Vec::new()
            },
            lagged: 0,
        }
    }

    fn len(&self) -> usize {
        self.fifo.len() + self.order.len()
    }

    fn push(&mut self, update: &Update, metrics: &Metrics) {
        match self.policy {
            WhenFull::Conflate => match update {
                Update::Event(_) | Update::Package(_) => self.push_drop_oldest(update, metrics),
                Update::Position(p) if p.late => {}
                Update::Position(_) | Update::Status(_) => self.conflate(update, metrics),
            },
            WhenFull::DropOldest => self.push_drop_oldest(update, metrics),
            // `block` is handled by the publisher; this is only a fallback.
            WhenFull::DropNewest | WhenFull::Block => {
                if !self.try_push_fifo(update) {
                    self.lose(metrics);
                }
            }
        }
    }

    fn try_push_fifo(&mut self, update: &Update) -> bool {
        if self.fifo.len() >= self.fifo_capacity {
            return false;
        }
        self.fifo.push_back(update.clone());
        true
    }

    fn push_drop_oldest(&mut self, update: &Update, metrics: &Metrics) {
        if self.fifo.len() >= self.fifo_capacity {
            self.fifo.pop_front();
            self.lose(metrics);
        }
        self.fifo.push_back(update.clone());
    }

    fn lose(&mut self, metrics: &Metrics) {
        self.lagged += 1;
        Metrics::inc(&metrics.fanout_dropped_total);
    }

    fn conflate(&mut self, update: &Update, metrics: &Metrics) {
        let Some(key) = conflation_key(update) else {
            return self.push_drop_oldest(update, metrics);
        };
        let Some(&at) = self.by_key.get(key) else {
            // A slot past max_vehicles cannot happen; never index out of bounds.
            return self.lose(metrics);
        };
        if at != NO_ENTRY {
            self.entries[at as usize] = Some(update.clone());
            Metrics::inc(&metrics.fanout_conflated_total);
            return;
        }
        let entry = match self.free.pop() {
            Some(e) => e,
            None => {
                // More distinct vehicles pending than the capacity: the
                // oldest pending one goes.
                let Some(oldest) = self.order.pop_front() else {
                    return self.lose(metrics);
                };
                if let Some(old) = self.entries[oldest as usize].take() {
                    self.unindex(&old);
                }
                self.lose(metrics);
                oldest
            }
        };
        self.entries[entry as usize] = Some(update.clone());
        self.by_key[key] = entry;
        self.order.push_back(entry);
    }

    fn unindex(&mut self, update: &Update) {
        if let Some(k) = conflation_key(update).and_then(|key| self.by_key.get_mut(key)) {
            *k = NO_ENTRY;
        }
    }

    fn drain_into(&mut self, out: &mut Vec<Update>) -> u64 {
        while let Some(entry) = self.order.pop_front() {
            if let Some(update) = self.entries[entry as usize].take() {
                self.unindex(&update);
                out.push(update);
            }
            self.free.push(entry);
        }
        out.extend(self.fifo.drain(..));
        std::mem::take(&mut self.lagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{EventKind, FleetEvent, PositionUpdate, Presence};
    use fleetgate_wire::Position;

    fn pos(slot: u32, seq: u32) -> Update {
        Update::Position(PositionUpdate {
            slot,
            vehicle: VehicleId::parse(&format!("v{slot}")).unwrap(),
            position: Position {
                seq,
                time_ms: u64::from(seq),
                lat_e6: slot as i32,
                lon_e6: 0,
                speed_cm_s: 0,
                heading: 0,
                flags: 1,
                odometer_m: None,
            },
            received_ms: 0,
            odometer_m: 0.0,
            late: false,
        })
    }

    fn event(slot: u32) -> Update {
        Update::Event(FleetEvent {
            slot,
            vehicle: VehicleId::parse(&format!("v{slot}")).unwrap(),
            time_ms: 0,
            kind: EventKind::StatusChanged {
                from: Presence::Unknown,
                to: Presence::Online,
            },
        })
    }

    fn seqs(out: &[Update]) -> Vec<(u32, u32)> {
        out.iter()
            .filter_map(|u| match u {
                Update::Position(p) => Some((p.slot, p.position.seq)),
                _ => None,
            })
            .collect()
    }

    fn fanout(max_subscribers: usize) -> (Fanout, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (Fanout::new(max_subscribers, 16, 4, m.clone()), m)
    }

    fn opts(policy: WhenFull, capacity: usize) -> SubscribeOptions {
        SubscribeOptions {
            name: "test",
            policy,
            capacity,
            filter: Filter::All,
        }
    }

    #[tokio::test]
    async fn conflate_keeps_the_newest_position_per_vehicle_and_every_event() {
        let (f, m) = fanout(4);
        let mut sub = f.subscribe(opts(WhenFull::Conflate, 8)).unwrap();
        let mut publisher = f.publisher();
        publisher
            .publish(&[pos(1, 1), pos(2, 1), event(1), pos(1, 2), pos(1, 3)])
            .await;
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out).await, 0, "conflation is not lag");
        assert_eq!(seqs(&out), vec![(1, 3), (2, 1)]);
        assert_eq!(
            out.iter().filter(|u| matches!(u, Update::Event(_))).count(),
            1
        );
        assert_eq!(Metrics::get(&m.fanout_conflated_total), 2);
    }

    #[tokio::test]
    async fn conflate_past_capacity_drops_the_oldest_pending_vehicle() {
        let (f, _) = fanout(4);
        let mut sub = f.subscribe(opts(WhenFull::Conflate, 2)).unwrap();
        f.publisher()
            .publish(&[pos(1, 1), pos(2, 1), pos(3, 1)])
            .await;
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out).await, 1);
        assert_eq!(seqs(&out), vec![(2, 1), (3, 1)]);
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_n_and_reports_lag() {
        let (f, m) = fanout(4);
        let mut sub = f.subscribe(opts(WhenFull::DropOldest, 3)).unwrap();
        f.publisher()
            .publish(&(1..=5).map(|s| pos(1, s)).collect::<Vec<_>>())
            .await;
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out).await, 2);
        assert_eq!(seqs(&out), vec![(1, 3), (1, 4), (1, 5)]);
        assert_eq!(Metrics::get(&m.fanout_dropped_total), 2);
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_first_n_and_reports_lag() {
        let (f, _) = fanout(4);
        let mut sub = f.subscribe(opts(WhenFull::DropNewest, 3)).unwrap();
        f.publisher()
            .publish(&(1..=5).map(|s| pos(1, s)).collect::<Vec<_>>())
            .await;
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out).await, 2);
        assert_eq!(seqs(&out), vec![(1, 1), (1, 2), (1, 3)]);
    }

    #[tokio::test]
    async fn block_makes_the_producer_wait_and_loses_nothing() {
        let (f, m) = fanout(4);
        let mut sub = f.subscribe(opts(WhenFull::Block, 2)).unwrap();
        let batch: Vec<Update> = (1..=7).map(|s| pos(1, s)).collect();
        let producer = {
            let f = f.clone();
            tokio::spawn(async move { f.publisher().publish(&batch).await })
        };
        let mut got = Vec::new();
        while got.len() < 7 {
            let mut out = Vec::new();
            assert_eq!(sub.recv(&mut out).await, 0);
            got.extend(seqs(&out));
        }
        producer.await.unwrap();
        assert_eq!(got, (1..=7).map(|s| (1, s)).collect::<Vec<_>>());
        assert!(Metrics::get(&m.fanout_blocked_total) >= 1);
    }

    #[tokio::test]
    async fn a_stalled_subscriber_does_not_slow_or_starve_another() {
        let (f, _) = fanout(4);
        let _stalled = f.subscribe(opts(WhenFull::DropOldest, 2)).unwrap();
        let mut live = f.subscribe(opts(WhenFull::DropOldest, 1000)).unwrap();
        let mut publisher = f.publisher();
        for s in 1..=100 {
            publisher.publish(&[pos(1, s)]).await;
        }
        let mut out = Vec::new();
        assert_eq!(live.recv(&mut out).await, 0);
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn one_subscriber_past_the_maximum_gets_a_clear_error_and_a_place_frees_on_drop() {
        let (f, m) = fanout(2);
        let a = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
        let _b = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
        let err = f.subscribe(opts(WhenFull::Conflate, 4)).err();
        assert_eq!(err, Some(FanoutError::TooManySubscribers { max: 2 }));
        assert_eq!(Metrics::get(&m.fanout_subscribers_refused_total), 1);
        drop(a);
        let _c = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
        assert_eq!(Metrics::get(&m.fanout_subscribers), 2);
    }

    #[tokio::test]
    async fn filters_narrow_by_vehicle_and_bounding_box() {
        let (f, _) = fanout(4);
        let mut by_id = f
            .subscribe(SubscribeOptions {
                filter: Filter::Vehicles(vec![VehicleId::parse("v2").unwrap()]),
                ..opts(WhenFull::DropOldest, 10)
            })
            .unwrap();
        let mut by_box = f
            .subscribe(SubscribeOptions {
                filter: Filter::BoundingBox {
                    min_lat_e6: 3,
                    min_lon_e6: -1,
                    max_lat_e6: 9,
                    max_lon_e6: 1,
                },
                ..opts(WhenFull::DropOldest, 10)
            })
            .unwrap();
        f.publisher()
            .publish(&[pos(1, 1), pos(2, 1), pos(3, 1), pos(4, 1)])
            .await;
        let mut out = Vec::new();
        by_id.recv(&mut out).await;
        assert_eq!(seqs(&out), vec![(2, 1)]);
        out.clear();
        by_box.recv(&mut out).await;
        assert_eq!(seqs(&out), vec![(3, 1), (4, 1)]);
    }
}
