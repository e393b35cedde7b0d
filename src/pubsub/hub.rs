//! The proxy's state: connections, their filters, the link's covers, and
//! each connection's outgoing queue.
//!
//! In: subscribe, unsubscribe and publish from connections ([`Hub`]), and
//! every publish the broker forwards for the link's covers ([`LocalSink`]).
//! Out: `{"action":"publish","topic":T,"message":M}` frames in the
//! [`Outbox`] of every connection with a filter matching T; publishes and
//! (un)subscriptions to the broker link.
//!
//! Covers (`filter`'s doc says why): each distinct filter some connection
//! holds is covered by exactly one of the link's subscriptions, and no two
//! covers overlap, so the broker forwards each publish to the link once. A
//! new filter contained in a cover takes it; one that overlaps covers
//! replaces them by their [`join`] (subscribed first, then the old ones
//! unsubscribed: a message published in that instant may come twice); any
//! other gets a cover of its own. A cover is unsubscribed when the last
//! filter it covers goes (it is not narrowed while some remain). A
//! retained message replayed at subscribe time is not forwarded: which
//! connection asked for it is not known.
//!
//! Bound: `pubsub.max_connections`, `pubsub.max_topics_per_connection`
//! each, `pubsub.max_filters` distinct filters (and at most as many
//! covers, within `broker.max_filters`); each [`Outbox`] at most
//! `pubsub.queue` frames, `drop_oldest` past it. One lock over the tables,
//! never held across an `.await`; routing a message walks the connections.
//!
//! With a password file, each connection is its token's user: a message
//! goes only to connections whose user may read its topic (checked per
//! message, as the edge checks MQTT deliveries, so a reload applies at
//! once); what is skipped is counted in `acl_read_denied_total`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use super::config::PubSubConfig;
use super::filter::{contains, join, matches, overlaps};
use crate::auth::{Auth, Principal};
use crate::broker::local::{LocalClient, LocalRequest, LocalSink, TopicFilters};
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;

/// Why a subscribe or publish was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("this connection holds pubsub.max_topics_per_connection filters already")]
    TooManyTopics,
    #[error("the proxy holds pubsub.max_filters distinct filters (or the broker its broker.max_filters) already")]
    TooManyFilters,
    #[error("the queue into the broker is full (pubsub.publish_queue); try again")]
    Busy,
}

/// The frame every subscriber of a topic receives, keys in the seed's order.
#[derive(Serialize)]
struct PublishFrame<'a> {
    action: &'static str,
    topic: &'a str,
    message: &'a str,
}

/// One connection's outgoing frames: at most `pubsub.queue`, the oldest
/// dropped for a new one when full (`drop_oldest`).
pub struct Outbox {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    ready: Notify,
    capacity: usize,
}

impl Outbox {
    fn new(capacity: usize) -> Outbox {
        Outbox {
            frames: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues `frame`; true when the oldest was dropped for it. `queued`
    /// counts the frames of every outbox (changed under this one's lock).
    fn push(&self, frame: Utf8Bytes, queued: &AtomicU64) -> bool {
        let mut frames = self.frames.lock();
        let dropped = frames.len() >= self.capacity && frames.pop_front().is_some();
        frames.push_back(frame);
        if !dropped {
            queued.fetch_add(1, Ordering::Relaxed);
        }
        drop(frames);
        self.ready.notify_one();
        dropped
    }

    /// The oldest frame, waiting for one. Cancel-safe: a frame is taken
    /// only by the poll that returns it.
    pub async fn next(&self, queued: &AtomicU64) -> Utf8Bytes {
        loop {
            {
                let mut frames = self.frames.lock();
                if let Some(frame) = frames.pop_front() {
                    queued.fetch_sub(1, Ordering::Relaxed);
                    return frame;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Empties it, for a connection that ends.
    fn clear(&self, queued: &AtomicU64) {
        let mut frames = self.frames.lock();
        queued.fetch_sub(frames.len() as u64, Ordering::Relaxed);
        frames.clear();
    }
}

struct Conn {
    filters: Vec<String>,
    outbox: Arc<Outbox>,
    /// The token's user; `None` without a password file.
    principal: Option<Principal>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// Distinct filter → (connections holding it, its cover).
    filters: BTreeMap<String, (usize, String)>,
    /// The link's subscriptions → how many distinct filters each covers. A
    /// cover whose unsubscribe could not be queued (`pubsub.publish_queue`
    /// full) leaves this table but stays in rumqttd and in the budget
    /// (logged): what it forwards still reaches matching connections only,
    /// though a later overlapping cover may then bring a message twice.
    covers: BTreeMap<String, usize>,
}

pub struct Hub {
    state: Mutex<State>,
    config: PubSubConfig,
    metrics: Arc<Metrics>,
    link: OnceLock<LocalClient>,
    budget: Arc<dyn TopicFilters>,
    auth: Arc<Auth>,
    open: AtomicUsize,
    next_id: AtomicU64,
    drop_log: Mutex<RateLimit>,
}

/// A connection's place in the hub, given back on drop (its filters too).
pub struct Connection {
    hub: Arc<Hub>,
    id: u64,
    pub outbox: Arc<Outbox>,
    /// Who it is (the token's user), `None` without a password file.
    pub principal: Option<Principal>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}

impl Connection {
    pub fn subscribe(&self, filter: &str) -> Result<(), HubError> {
        self.hub.subscribe(self.id, filter)
    }

    pub fn unsubscribe(&self, filter: &str) {
        self.hub.unsubscribe(self.id, filter)
    }
}

impl Hub {
    pub fn new(
        config: PubSubConfig,
        metrics: Arc<Metrics>,
        budget: Arc<dyn TopicFilters>,
        auth: Arc<Auth>,
    ) -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            config,
            metrics,
            link: OnceLock::new(),
            budget,
            auth,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            drop_log: Mutex::new(RateLimit::new(1)),
        }
    }

    /// Connects the hub to its broker link (once, at start).
    pub fn attach(&self, link: LocalClient) {
        let _ = self.link.set(link);
    }

    pub fn config(&self) -> &PubSubConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Who decides what each connection's user may publish and read.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    fn request(&self, request: LocalRequest) -> bool {
        self.link
            .get()
            .is_some_and(|link| link.request(request).is_ok())
    }

    /// A new connection of `principal`, if one of `pubsub.max_connections`
    /// is free.
    pub fn connect(self: &Arc<Self>, principal: Option<Principal>) -> Option<Connection> {
        let max = self.config.max_connections.get();
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            Metrics::inc(&self.metrics.pubsub_refused_total_max_connections);
            return None;
        }
        Metrics::inc(&self.metrics.pubsub_connections);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.config.queue.get()));
        self.state.lock().conns.insert(
            id,
            Conn {
                filters: Vec::new(),
                outbox: outbox.clone(),
                principal: principal.clone(),
            },
        );
        Some(Connection {
            hub: self.clone(),
            id,
            outbox,
            principal,
        })
    }

    fn disconnect(&self, id: u64) {
        let mut state = self.state.lock();
        if let Some(conn) = state.conns.remove(&id) {
            for filter in &conn.filters {
                self.let_go(&mut state, filter);
                Metrics::dec(&self.metrics.pubsub_subscriptions);
            }
            conn.outbox.clear(&self.metrics.pubsub_queued_frames);
        }
        drop(state);
        self.open.fetch_sub(1, Ordering::Relaxed);
        Metrics::dec(&self.metrics.pubsub_connections);
    }

    fn subscribe(&self, id: u64, filter: &str) -> Result<(), HubError> {
        let mut state = self.state.lock();
        let Some(conn) = state.conns.get(&id) else {
            return Ok(());
        };
        if conn.filters.iter().any(|f| f == filter) {
            return Ok(());
        }
        if conn.filters.len() >= self.config.max_topics_per_connection.get() {
            Metrics::inc(&self.metrics.pubsub_refused_total_max_topics);
            return Err(HubError::TooManyTopics);
        }
        if let Some((holders, _)) = state.filters.get_mut(filter) {
            *holders += 1;
        } else {
            if state.filters.len() >= self.config.max_filters.get() {
                Metrics::inc(&self.metrics.pubsub_refused_total_max_filters);
                return Err(HubError::TooManyFilters);
            }
            let cover = self.cover_for(&mut state, filter)?;
            state.filters.insert(filter.to_owned(), (1, cover));
        }
        if let Some(conn) = state.conns.get_mut(&id) {
            conn.filters.push(filter.to_owned());
        }
        Metrics::inc(&self.metrics.pubsub_subscriptions);
        Ok(())
    }

    /// Finds or makes the cover of a new distinct filter and counts it there.
    fn cover_for(&self, state: &mut State, filter: &str) -> Result<String, HubError> {
        if let Some((cover, n)) = state.covers.iter_mut().find(|(c, _)| contains(c, filter)) {
            *n += 1;
            return Ok(cover.clone());
        }
        let mut cover = filter.to_owned();
        let mut merged: Vec<String> = Vec::new();
        while let Some(c) = state
            .covers
            .keys()
            .find(|c| !merged.contains(c) && overlaps(c, &cover))
        {
            cover = join(&cover, c);
            merged.push(c.clone());
        }
        if !state.covers.contains_key(&cover) {
            if !self.budget.admit(&cover) {
                Metrics::inc(&self.metrics.pubsub_refused_total_max_filters);
                return Err(HubError::TooManyFilters);
            }
            if !self.request(LocalRequest::Subscribe(cover.clone())) {
                self.budget.release(&cover);
                Metrics::inc(&self.metrics.pubsub_refused_total_busy);
                return Err(HubError::Busy);
            }
            state.covers.insert(cover.clone(), 0);
        }
        let mut count = 1;
        for old in merged.iter().filter(|m| **m != cover) {
            count += state.covers.remove(old).unwrap_or(0);
            for entry in state.filters.values_mut() {
                if entry.1 == *old {
                    entry.1 = cover.clone();
                }
            }
            self.drop_cover(old);
        }
        if let Some(n) = state.covers.get_mut(&cover) {
            *n += count;
        }
        tracing::debug!(filter, cover, "pubsub: filter covered");
        self.metrics
            .pubsub_link_filters
            .store(state.covers.len() as u64, Ordering::Relaxed);
        Ok(cover)
    }

    /// Unsubscribes a cover no longer in the table and lets its budget go.
    fn drop_cover(&self, cover: &str) {
        if self.request(LocalRequest::Unsubscribe(cover.to_owned())) {
            self.budget.release(cover);
        } else {
            // Stays subscribed in rumqttd (and counted) until the gateway
            // stops: what it forwards still reaches only matching filters.
            tracing::warn!(
                cover,
                "pubsub: could not queue an unsubscribe (pubsub.publish_queue full)"
            );
        }
    }

    fn unsubscribe(&self, id: u64, filter: &str) {
        let mut state = self.state.lock();
        let Some(conn) = state.conns.get_mut(&id) else {
            return;
        };
        let Some(at) = conn.filters.iter().position(|f| f == filter) else {
            return;
        };
        conn.filters.swap_remove(at);
        self.let_go(&mut state, filter);
        Metrics::dec(&self.metrics.pubsub_subscriptions);
    }

    /// One connection lets go of `filter`; its last holder frees its place
    /// in its cover, and a cover's last filter frees the cover.
    fn let_go(&self, state: &mut State, filter: &str) {
        let Some((holders, cover)) = state.filters.get_mut(filter) else {
            return;
        };
        *holders -= 1;
        if *holders > 0 {
            return;
        }
        let cover = cover.clone();
        state.filters.remove(filter);
        let Some(n) = state.covers.get_mut(&cover) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            state.covers.remove(&cover);
            self.drop_cover(&cover);
        }
        self.metrics
            .pubsub_link_filters
            .store(state.covers.len() as u64, Ordering::Relaxed);
    }

    /// Publishes `message` to `topic` in the broker (the caller checked the
    /// topic and the ACL). It reaches this proxy's subscribers when the
    /// broker forwards it back, like everyone else's.
    pub fn publish(&self, topic: &str, message: &str) -> Result<(), HubError> {
        let request = LocalRequest::Publish {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: Bytes::copy_from_slice(message.as_bytes()),
        };
        if self.request(request) {
            Metrics::inc(&self.metrics.pubsub_published_total);
            Ok(())
        } else {
            Metrics::inc(&self.metrics.pubsub_refused_total_busy);
            Err(HubError::Busy)
        }
    }

    fn dropped(&self, counter: &AtomicU64, reason: &str, topic: &str) {
        Metrics::inc(counter);
        if let Some(suppressed) = self.drop_log.lock().allow() {
            tracing::warn!(
                topic,
                reason,
                suppressed,
                "pubsub: a message was dropped (pubsub_dropped_total)"
            );
        }
    }
}

impl LocalSink for Hub {
    fn deliver(&self, topic: &[u8], payload: &Bytes, retained: bool) {
        if retained {
            return;
        }
        let Ok(topic) = std::str::from_utf8(topic) else {
            return;
        };
        Metrics::inc(&self.metrics.pubsub_received_total);
        if payload.len() > self.config.max_message_bytes.get() {
            self.dropped(
                &self.metrics.pubsub_dropped_total_too_large,
                "too_large",
                topic,
            );
            return;
        }
        let Ok(message) = std::str::from_utf8(payload) else {
            self.dropped(
                &self.metrics.pubsub_dropped_total_not_utf8,
                "not_utf8",
                topic,
            );
            return;
        };
        let frame = PublishFrame {
            action: "publish",
            topic,
            message,
        };
        let Ok(text) = serde_json::to_string(&frame) else {
            return;
        };
        if text.len() > self.config.max_out_frame_bytes() {
            // JSON escapes (control characters) blew it past the budget's frame.
            self.dropped(
                &self.metrics.pubsub_dropped_total_too_large,
                "too_large",
                topic,
            );
            return;
        }
        let frame = Utf8Bytes::from(text);
        // The tables once per message, not once per connection.
        let tables = self.auth.enforced().then(|| self.auth.tables());
        let state = self.state.lock();
        for conn in state.conns.values() {
            if !conn.filters.iter().any(|f| matches(f, topic)) {
                continue;
            }
            if let (Some(tables), Some(who)) = (&tables, &conn.principal) {
                if !tables.may_read(who, topic).allowed() {
                    Metrics::inc(&self.metrics.acl_read_denied_total);
                    continue;
                }
            }
            if conn
                .outbox
                .push(frame.clone(), &self.metrics.pubsub_queued_frames)
            {
                self.dropped(
                    &self.metrics.pubsub_dropped_total_queue_full,
                    "queue_full",
                    topic,
                );
            }
        }
    }
}
