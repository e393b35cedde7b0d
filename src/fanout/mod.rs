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
//!
//! # Layout
//!
//! - [`policy`]: [`WhenFull`] and [`Filter`], the subscriber's choices.
//! - `queue`: one subscriber's bounded queue and the policies applied to it.
//!
//! Before it: ingest (the only producer). After it: the consumers, each
//! with its own queue: the MQTT republisher (`broker::republish`), the
//! WebSockets (`api::live`) and the bridge feeder (`bridge::feeder`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::fleet::Update;
use crate::metrics::Metrics;

pub mod policy;
mod queue;
#[cfg(test)]
mod tests;

pub use policy::{Filter, WhenFull};
use queue::Queue;

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
    /// The producer's [`Publisher`] is gone: nothing more will come (the
    /// gateway is stopping), so a draining consumer may end.
    producer_gone: AtomicBool,
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
                producer_gone: AtomicBool::new(false),
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
        let mut subscribers = self.inner.subscribers.lock();
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
        self.inner.subscribers.lock().len()
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
            let subscribers = self.inner.subscribers.lock();
            for sub in subscribers.iter() {
                if sub.policy == WhenFull::Block {
                    self.blocking.push(sub.clone());
                    continue;
                }
                let mut queue = sub.queue.lock();
                let before = queue.len();
                // Checkpoints are for consumers that keep what they get
                // (`block`): to anyone else they mean nothing.
                let wanted =
                    |u: &&Update| !matches!(u, Update::Checkpoint(_)) && sub.filter.admits(u);
                for update in batch.iter().filter(wanted) {
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
                    let mut queue = sub.queue.lock();
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

    /// [`recv`](Self::recv), or `None` once the producer is gone and
    /// everything it published was taken: for a consumer that must drain
    /// the fan-out at shutdown (the bridge feeder).
    pub async fn recv_until_closed(&mut self, out: &mut Vec<Update>) -> Option<u64> {
        loop {
            let lagged = self.try_recv(out);
            if lagged > 0 || !out.is_empty() {
                return Some(lagged);
            }
            if self.inner.producer_gone.load(Ordering::Acquire) {
                // What the producer published before it went.
                let lagged = self.try_recv(out);
                return (lagged > 0 || !out.is_empty()).then_some(lagged);
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `out` without waiting; returns the lag.
    pub fn try_recv(&mut self, out: &mut Vec<Update>) -> u64 {
        let lagged = self.shared.queue.lock().drain_into(out);
        if self.shared.policy == WhenFull::Block {
            self.shared.room.notify_one();
        }
        lagged
    }

    pub fn policy(&self) -> WhenFull {
        self.shared.policy
    }
}

impl Drop for Publisher {
    /// The producer is gone (ingest stopped): wake every consumer, so one
    /// that drains ([`Subscription::recv_until_closed`]) sees the end.
    fn drop(&mut self) {
        self.inner.producer_gone.store(true, Ordering::Release);
        for sub in self.inner.subscribers.lock().iter() {
            sub.ready.notify_one();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_one();
        let mut subscribers = self.inner.subscribers.lock();
        let before = subscribers.len();
        subscribers.retain(|s| !Arc::ptr_eq(s, &self.shared));
        if subscribers.len() != before {
            Metrics::dec(&self.inner.metrics.fanout_subscribers);
        }
        tracing::debug!(name = self.shared.name, "fan-out subscriber removed");
    }
}
