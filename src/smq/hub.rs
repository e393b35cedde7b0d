//! The SMQ's state: topics, their channels, and what each holds.
//!
//! In: messages the broker forwards for SMQ topics ([`LocalSink`]), `/put`s
//! ([`Hub::publish`], which go through the broker first), and consumers'
//! `SUB`, `GET`, `FIN`, `REQ`. Out: messages to consumers, and `/stats`.
//!
//! Semantics, the seed's: a topic exists from its first `/put` or `SUB`;
//! every channel of a topic gets every message; the consumers of one
//! channel share its messages; a topic's messages wait in its own queue
//! until its first channel exists, which takes them over (later channels
//! get what comes after they exist). A requeued message goes to the back of
//! its channel.
//!
//! Bound: `smq.max_topics` topics, `smq.max_channels` channels over all
//! topics, each queue `smq.mem_queue_size` entries, all of it within
//! `smq.max_bytes` (`queue`). A new topic or channel past its bound takes
//! the place of an idle one (no consumer, nothing queued, nothing in
//! flight; nothing is lost), else it is refused and counted. One lock over
//! all of it, held for a few map operations, never across an `.await`.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::config::SmqConfig;
use super::protocol::SmqError;
use super::queue::{Entry, MsgQueue, Pool, Pushed};
use crate::auth::Auth;
use crate::broker::local::{LocalClient, LocalRequest, LocalSink};
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;

/// The broker's filter budget, as the SMQ's subscriptions see it: each
/// topic holds its name as a filter while it exists.
pub use crate::broker::local::TopicFilters;

/// Why a `/put` was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    Refused(SmqError),
    /// The broker link's queue is full.
    Busy,
}

pub struct Hub {
    state: Mutex<State>,
    config: SmqConfig,
    metrics: Arc<Metrics>,
    link: OnceLock<LocalClient>,
    filters: Arc<dyn TopicFilters>,
    auth: Arc<Auth>,
    consumers: AtomicUsize,
    id_salt: u64,
    next_id: AtomicU64,
}

struct State {
    topics: BTreeMap<String, Topic>,
    channels: usize,
    pool: Pool,
    drop_log: RateLimit,
}

#[derive(Default)]
struct Topic {
    /// Messages waiting for the topic's first channel.
    backlog: MsgQueue,
    backlog_dropped: u64,
    channels: BTreeMap<String, Channel>,
}

#[derive(Default)]
struct Channel {
    queue: MsgQueue,
    notify: Arc<Notify>,
    consumers: usize,
    in_flight: usize,
    dropped: u64,
    requeued: u64,
}

impl Channel {
    fn idle(&self) -> bool {
        self.consumers == 0 && self.in_flight == 0 && self.queue.is_empty()
    }
}

impl Topic {
    fn idle(&self) -> bool {
        self.backlog.is_empty() && self.channels.values().all(Channel::idle)
    }
}

/// A consumer's place in a channel; give it back with [`Hub::leave`].
#[derive(Debug)]
pub struct Subscription {
    topic: String,
    channel: String,
    notify: Arc<Notify>,
}

impl Subscription {
    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// One of `smq.max_consumers` connection places, given back on drop.
pub struct ConsumerSlot(Arc<Hub>);

impl Drop for ConsumerSlot {
    fn drop(&mut self) {
        let hub = &self.0;
        let now = hub.consumers.fetch_sub(1, Ordering::Relaxed) - 1;
        hub.metrics
            .smq_consumers
            .store(now as u64, Ordering::Relaxed);
    }
}

/// How a message came back to its channel.
#[derive(Debug, Clone, Copy)]
pub enum Requeue {
    Req,
    Timeout,
    Disconnect,
}

impl Hub {
    pub fn new(
        config: SmqConfig,
        metrics: Arc<Metrics>,
        filters: Arc<dyn TopicFilters>,
        auth: Arc<Auth>,
    ) -> Hub {
        let id_salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Hub {
            state: Mutex::new(State {
                topics: BTreeMap::new(),
                channels: 0,
                pool: Pool::new(config.max_bytes.get()),
                drop_log: RateLimit::new(1),
            }),
            config,
            metrics,
            link: OnceLock::new(),
            filters,
            auth,
            consumers: AtomicUsize::new(0),
            id_salt,
            next_id: AtomicU64::new(1),
        }
    }

    /// Who may consume and `/put` which topic (`smq::tcp`, `smq::http`).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Connects the hub to its broker link (once, at start).
    pub fn attach(&self, link: LocalClient) {
        let _ = self.link.set(link);
    }

    pub fn config(&self) -> &SmqConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn request(&self, request: LocalRequest) -> bool {
        self.link
            .get()
            .is_some_and(|link| link.request(request).is_ok())
    }

    /// A message id: unique in this process (a counter under a random
    /// salt), shaped as a version-4 UUID.
    fn new_id(&self) -> [u8; 16] {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.id_salt.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    }

    /// `/put`: creates the topic if needed (its subscription is queued
    /// before the publish, so the message comes back to its channels), then
    /// publishes into the broker.
    pub fn publish(&self, topic: &str, body: Bytes) -> Result<(), PutError> {
        {
            let mut state = self.state.lock();
            self.ensure_topic(&mut state, topic)
                .map_err(PutError::Refused)?;
        }
        let request = LocalRequest::Publish {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: body,
        };
        if self.request(request) {
            Metrics::inc(&self.metrics.smq_put_total);
            Ok(())
        } else {
            Metrics::inc(&self.metrics.smq_refused_total_busy);
            Err(PutError::Busy)
        }
    }

    fn ensure_topic(&self, state: &mut State, name: &str) -> Result<(), SmqError> {
        if state.topics.contains_key(name) {
            return Ok(());
        }
        if state.topics.len() >= self.config.max_topics.get() && !self.evict_topic(state) {
            Metrics::inc(&self.metrics.smq_refused_total_max_topics);
            return Err(SmqError::TooManyTopics);
        }
        if !self.filters.admit(name) {
            Metrics::inc(&self.metrics.smq_refused_total_max_filters);
            return Err(SmqError::TooManyTopics);
        }
        if !self.request(LocalRequest::Subscribe(name.to_owned())) {
            self.filters.release(name);
            Metrics::inc(&self.metrics.smq_refused_total_busy);
            return Err(SmqError::Busy);
        }
        state.topics.insert(name.to_owned(), Topic::default());
        tracing::info!(topic = name, "smq: new topic");
        Ok(())
    }

    /// Removes one idle topic (and its idle channels); false if none is.
    fn evict_topic(&self, state: &mut State) -> bool {
        let Some(name) = state
            .topics
            .iter()
            .find(|(_, t)| t.idle())
            .map(|(n, _)| n.clone())
        else {
            return false;
        };
        if !self.request(LocalRequest::Unsubscribe(name.clone())) {
            return false;
        }
        if let Some(mut topic) = state.topics.remove(&name) {
            state.channels -= topic.channels.len();
            topic.backlog.clear(&mut state.pool);
        }
        self.filters.release(&name);
        tracing::info!(
            topic = name,
            "smq: idle topic evicted for a new one (smq.max_topics)"
        );
        true
    }

    /// Removes one idle channel; false if none is.
    fn evict_channel(state: &mut State) -> bool {
        let found = state.topics.iter().find_map(|(t, topic)| {
            topic
                .channels
                .iter()
                .find(|(_, c)| c.idle())
                .map(|(c, _)| (t.clone(), c.clone()))
        });
        let Some((topic, channel)) = found else {
            return false;
        };
        if let Some(t) = state.topics.get_mut(&topic) {
            t.channels.remove(&channel);
            state.channels -= 1;
        }
        tracing::info!(
            topic,
            channel,
            "smq: idle channel evicted for a new one (smq.max_channels)"
        );
        true
    }

    /// `SUB <topic> <channel>`.
    pub fn subscribe(&self, topic: &str, channel: &str) -> Result<Subscription, SmqError> {
        let mut state = self.state.lock();
        self.ensure_topic(&mut state, topic)?;
        let exists = state
            .topics
            .get(topic)
            .is_some_and(|t| t.channels.contains_key(channel));
        if !exists {
            if state.channels >= self.config.max_channels.get() && !Self::evict_channel(&mut state)
            {
                Metrics::inc(&self.metrics.smq_refused_total_max_channels);
                return Err(SmqError::TooManyChannels);
            }
            let Some(t) = state.topics.get_mut(topic) else {
                return Err(SmqError::BadTopic);
            };
            let mut new = Channel::default();
            if t.channels.is_empty() {
                new.queue = std::mem::take(&mut t.backlog);
            }
            t.channels.insert(channel.to_owned(), new);
            state.channels += 1;
        }
        let Some(c) = state
            .topics
            .get_mut(topic)
            .and_then(|t| t.channels.get_mut(channel))
        else {
            return Err(SmqError::BadChannel);
        };
        c.consumers += 1;
        Ok(Subscription {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            notify: c.notify.clone(),
        })
    }

    /// A consumer leaves its channel (its connection ended).
    pub fn leave(&self, sub: Subscription) {
        let mut state = self.state.lock();
        if let Some(c) = Self::channel(&mut state, &sub) {
            c.consumers = c.consumers.saturating_sub(1);
        }
    }

    fn channel<'s>(state: &'s mut State, sub: &Subscription) -> Option<&'s mut Channel> {
        state
            .topics
            .get_mut(&sub.topic)
            .and_then(|t| t.channels.get_mut(&sub.channel))
    }

    /// The channel's oldest message, now in flight, if it has one.
    pub fn try_take(&self, sub: &Subscription) -> Option<Entry> {
        let mut state = self.state.lock();
        let State { topics, pool, .. } = &mut *state;
        let c = topics.get_mut(&sub.topic)?.channels.get_mut(&sub.channel)?;
        let entry = c.queue.pop(pool)?;
        c.in_flight += 1;
        let used = pool.used();
        drop(state);
        self.metrics
            .smq_queued_bytes
            .store(used as u64, Ordering::Relaxed);
        Metrics::inc(&self.metrics.smq_delivered_total);
        Some(entry)
    }

    /// `GET`: waits for the channel's next message.
    pub async fn take(&self, sub: &Subscription) -> Entry {
        loop {
            let notified = sub.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(entry) = self.try_take(sub) {
                return entry;
            }
            notified.await;
        }
    }

    /// `FIN`: the message is done.
    pub fn finish(&self, sub: &Subscription) {
        let mut state = self.state.lock();
        if let Some(c) = Self::channel(&mut state, sub) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Metrics::inc(&self.metrics.smq_finished_total);
    }

    /// `REQ`, a timeout or a lost consumer: back to its channel.
    pub fn requeue(&self, sub: &Subscription, entry: Entry, why: Requeue) {
        Metrics::inc(match why {
            Requeue::Req => &self.metrics.smq_requeued_total_req,
            Requeue::Timeout => &self.metrics.smq_requeued_total_timeout,
            Requeue::Disconnect => &self.metrics.smq_requeued_total_disconnect,
        });
        let limit = self.config.mem_queue_size.get();
        let mut state = self.state.lock();
        let State {
            topics,
            pool,
            drop_log,
            ..
        } = &mut *state;
        let Some(c) = topics
            .get_mut(&sub.topic)
            .and_then(|t| t.channels.get_mut(&sub.channel))
        else {
            return;
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        c.requeued += 1;
        let pushed = c.queue.push(entry, limit, pool);
        if pushed != Pushed::DroppedNew {
            c.notify.notify_waiters();
        }
        let dropped = self.count(pushed, &sub.topic, Some(sub.channel.as_str()), drop_log);
        c.dropped += dropped;
    }

    /// Counts and logs (rate-limited) what a push dropped; returns 0 or 1.
    fn count(
        &self,
        pushed: Pushed,
        topic: &str,
        channel: Option<&str>,
        log: &mut RateLimit,
    ) -> u64 {
        let (counter, reason) = match pushed {
            Pushed::Queued => return 0,
            Pushed::DroppedOldest => (&self.metrics.smq_dropped_total_queue_full, "queue_full"),
            Pushed::DroppedNew => (&self.metrics.smq_dropped_total_memory_full, "memory_full"),
        };
        Metrics::inc(counter);
        if let Some(suppressed) = log.allow() {
            tracing::warn!(topic, channel, reason, suppressed, "smq: a queue is full; a message was dropped (smq.mem_queue_size, smq.max_bytes; smq_dropped_total)");
        }
        1
    }

    /// Takes a consumer connection's place, if one is free.
    pub fn admit_consumer(self: &Arc<Self>) -> Option<ConsumerSlot> {
        let max = self.config.max_consumers.get();
        let taken = self
            .consumers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                self.metrics
                    .smq_consumers
                    .store(n as u64 + 1, Ordering::Relaxed);
                Some(ConsumerSlot(self.clone()))
            }
            Err(_) => {
                Metrics::inc(&self.metrics.smq_refused_total_max_consumers);
                None
            }
        }
    }

    /// Topic names, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        self.state.lock().topics.keys().cloned().collect()
    }

    /// What `/stats?format=json` shows.
    pub fn stats(&self) -> serde_json::Value {
        use serde_json::json;
        let state = self.state.lock();
        let topics: Vec<_> = state
            .topics
            .iter()
            .map(|(name, t)| {
                let channels: Vec<_> = t
                    .channels
                    .iter()
                    .map(|(name, c)| {
                        json!({
                            "name": name,
                            "depth": c.queue.len(),
                            "in_flight": c.in_flight,
                            "consumers": c.consumers,
                            "requeued": c.requeued,
                            "dropped": c.dropped,
                        })
                    })
                    .collect();
                json!({
                    "name": name,
                    "depth": t.backlog.len(),
                    "dropped": t.backlog_dropped,
                    "channels": channels,
                })
            })
            .collect();
        let m = &self.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "topics": topics,
            "queued_bytes": state.pool.used(),
            "consumers": self.consumers.load(Ordering::Relaxed),
            "dropped": {
                "queue_full": get(&m.smq_dropped_total_queue_full),
                "memory_full": get(&m.smq_dropped_total_memory_full),
                "too_large": get(&m.smq_dropped_total_too_large),
                "no_topic": get(&m.smq_dropped_total_no_topic),
            },
            "limits": {
                "mem_queue_size": self.config.mem_queue_size,
                "max_bytes": self.config.max_bytes,
                "max_topics": self.config.max_topics,
                "max_channels": self.config.max_channels,
                "max_consumers": self.config.max_consumers,
                "msg_timeout_s": self.config.msg_timeout_s,
            },
        })
    }
}

impl LocalSink for Hub {
    fn deliver(&self, topic: &[u8], payload: &Bytes, retained: bool) {
        if retained {
            // A retained message replayed at SUBSCRIBE, not a new one: a
            // re-created topic would get it again.
            return;
        }
        let Ok(name) = std::str::from_utf8(topic) else {
            return;
        };
        if payload.len() > self.config.max_message_bytes.get() {
            Metrics::inc(&self.metrics.smq_dropped_total_too_large);
            return;
        }
        let limit = self.config.mem_queue_size.get();
        // Our own copy: the forward's bytes may share a larger buffer.
        let entry = Entry {
            id: self.new_id(),
            body: Bytes::copy_from_slice(payload),
        };
        let mut state = self.state.lock();
        let State {
            topics,
            pool,
            drop_log,
            ..
        } = &mut *state;
        let Some(t) = topics.get_mut(name) else {
            // Forwarded as the topic was evicted, before the unsubscribe.
            Metrics::inc(&self.metrics.smq_dropped_total_no_topic);
            return;
        };
        Metrics::inc(&self.metrics.smq_received_total);
        if t.channels.is_empty() {
            let pushed = t.backlog.push(entry, limit, pool);
            t.backlog_dropped += self.count(pushed, name, None, drop_log);
        } else {
            for (channel, c) in t.channels.iter_mut() {
                let pushed = c.queue.push(entry.clone(), limit, pool);
                if pushed != Pushed::DroppedNew {
                    c.notify.notify_waiters();
                }
                c.dropped += self.count(pushed, name, Some(channel.as_str()), drop_log);
            }
        }
        self.metrics
            .smq_queued_bytes
            .store(pool.used() as u64, Ordering::Relaxed);
    }
}
