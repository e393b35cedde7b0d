//! The edge's budget of live subscription filters in rumqttd.
//!
//! In: every hand-off's start and end, and every SUBSCRIBE and UNSUBSCRIBE
//! of a handed-off client (the edge sees them all: rumqttd has no other
//! clients but the gateway's own link, which holds only `v/+/cmd`). Out:
//! whether a filter may be subscribed to. Bound: at most `broker.max_filters`
//! distinct filters held at once, so rumqttd's commit logs stay under
//! [`BrokerConfig::log_bound_bytes`](crate::config::BrokerConfig::log_bound_bytes);
//! this table itself holds one entry per held filter and per holder.
//!
//! Our rumqttd frees a filter's log once nothing holds it (patch 1 in
//! `vendor/rumqttd/PATCHES.md`), so the budget counts **live** filters, not
//! every filter ever seen: a filter counts while at least one holder holds
//! it, and one more filter is admitted as soon as one is let go.
//!
//! A holder is either
//! - a **clean-session connection**: its filters are let go when it
//!   unsubscribes, or when its hand-off ends (rumqttd drops its state then);
//! - a **persistent session**, by client id: its filters stay counted after
//!   its connections end, since rumqttd keeps the session, until the session
//!   ends: the client connects again with a clean session, or the session is
//!   evicted. The edge mirrors rumqttd's eviction (patch 2): at most
//!   `broker.max_persistent_sessions` disconnected sessions, the one
//!   disconnected longest ago evicted first. The two orders can differ by
//!   the sessions that disconnect at the same instant, so the count may then
//!   be off by those sessions' filters until they end.
//!
//! `$share/<group>/<f>` counts as its own name, though rumqttd keeps one log
//! for `f`: an over-count, on the safe side.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::metrics::Metrics;

/// Who holds filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A clean-session connection, by a number of the edge's own.
    Connection(u64),
    /// A persistent session, by client id.
    Session(String),
}

pub struct FilterBudget {
    inner: Mutex<Inner>,
    max_filters: usize,
    max_sessions: usize,
    next_connection: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Inner {
    /// Filter → how many holders hold it.
    counts: HashMap<String, usize>,
    held: HashMap<Holder, HashSet<String>>,
    /// Persistent sessions, by client id: connections open now, and when
    /// none is, its place in `parked`.
    sessions: HashMap<String, Session>,
    /// Disconnected persistent sessions, oldest disconnection first.
    parked: BTreeMap<u64, String>,
    next_seq: u64,
}

struct Session {
    live: usize,
    parked_at: Option<u64>,
}

impl FilterBudget {
    pub fn new(max_filters: usize, max_sessions: usize, metrics: Arc<Metrics>) -> Self {
        FilterBudget {
            inner: Mutex::new(Inner::default()),
            max_filters,
            max_sessions,
            next_connection: AtomicU64::new(1),
            metrics,
        }
    }

    /// A connection of `client_id` was handed to rumqttd. A clean one ends
    /// the client's persistent session, if any, as rumqttd does.
    pub fn open(&self, client_id: &str, clean_session: bool) -> FilterHold<'_> {
        let mut inner = self.inner.lock();
        let holder = if clean_session {
            inner.end_session(client_id);
            Holder::Connection(self.next_connection.fetch_add(1, Ordering::Relaxed))
        } else {
            let session = inner
                .sessions
                .entry(client_id.to_owned())
                .or_insert(Session {
                    live: 0,
                    parked_at: None,
                });
            session.live += 1;
            if let Some(seq) = session.parked_at.take() {
                inner.parked.remove(&seq);
            }
            Holder::Session(client_id.to_owned())
        };
        self.publish_gauge(&inner);
        FilterHold {
            budget: self,
            holder,
        }
    }

    /// A holder for an in-process client of rumqttd that lives as long as
    /// the gateway (the SMQ queue's link): its filters count like any
    /// client's, taken with [`admit_for`](Self::admit_for) and let go with
    /// [`release_for`](Self::release_for).
    pub fn gateway_holder(&self) -> Holder {
        Holder::Connection(self.next_connection.fetch_add(1, Ordering::Relaxed))
    }

    /// [`FilterHold::admit`] for a [`gateway_holder`](Self::gateway_holder).
    pub fn admit_for(&self, holder: &Holder, filter: &str) -> bool {
        self.admit(holder, filter)
    }

    /// [`FilterHold::release`] for a [`gateway_holder`](Self::gateway_holder).
    pub fn release_for(&self, holder: &Holder, filter: &str) {
        self.release(holder, filter)
    }

    /// Filters held now.
    pub fn live(&self) -> usize {
        self.inner.lock().counts.len()
    }

    fn admit(&self, holder: &Holder, filter: &str) -> bool {
        let mut inner = self.inner.lock();
        if inner.held.get(holder).is_some_and(|f| f.contains(filter)) {
            return true;
        }
        let held_by_others = inner.counts.contains_key(filter);
        if !held_by_others && inner.counts.len() >= self.max_filters {
            return false;
        }
        *inner.counts.entry(filter.to_owned()).or_default() += 1;
        inner
            .held
            .entry(holder.clone())
            .or_default()
            .insert(filter.to_owned());
        self.publish_gauge(&inner);
        true
    }

    fn release(&self, holder: &Holder, filter: &str) {
        let mut inner = self.inner.lock();
        let Some(filters) = inner.held.get_mut(holder) else {
            return;
        };
        if !filters.remove(filter) {
            return;
        }
        if filters.is_empty() {
            inner.held.remove(holder);
        }
        inner.drop_count(filter);
        self.publish_gauge(&inner);
    }

    fn close(&self, holder: &Holder) {
        let mut inner = self.inner.lock();
        match holder {
            Holder::Connection(_) => inner.release_all(holder),
            Holder::Session(id) => {
                let Some(session) = inner.sessions.get_mut(id) else {
                    // ended by a clean connection while this one was open
                    inner.release_all(holder);
                    self.publish_gauge(&inner);
                    return;
                };
                session.live = session.live.saturating_sub(1);
                if session.live == 0 {
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    if let Some(session) = inner.sessions.get_mut(id) {
                        session.parked_at = Some(seq);
                    }
                    inner.parked.insert(seq, id.clone());
                }
                while inner.parked.len() > self.max_sessions {
                    let Some((_, oldest)) = inner.parked.pop_first() else {
                        break;
                    };
                    inner.end_session(&oldest);
                }
            }
        }
        self.publish_gauge(&inner);
    }

    fn publish_gauge(&self, inner: &Inner) {
        self.metrics
            .broker_filters_live
            .store(inner.counts.len() as u64, Ordering::Relaxed);
    }
}

impl Inner {
    fn drop_count(&mut self, filter: &str) {
        if let Some(n) = self.counts.get_mut(filter) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(filter);
            }
        }
    }

    fn release_all(&mut self, holder: &Holder) {
        for filter in self.held.remove(holder).unwrap_or_default() {
            self.drop_count(&filter);
        }
    }

    /// The persistent session of `client_id` ends (evicted, or replaced by
    /// a clean session): its filters are let go.
    fn end_session(&mut self, client_id: &str) {
        if let Some(session) = self.sessions.remove(client_id) {
            if let Some(seq) = session.parked_at {
                self.parked.remove(&seq);
            }
        }
        self.release_all(&Holder::Session(client_id.to_owned()));
    }
}

/// One hand-off's hold on the budget; closing it (drop) lets go of a clean
/// connection's filters, or parks a persistent session.
pub struct FilterHold<'a> {
    budget: &'a FilterBudget,
    holder: Holder,
}

impl FilterHold<'_> {
    /// May this client subscribe to `filter`? Always, if it (or its session)
    /// already holds it, or another client does; otherwise only while fewer
    /// than `broker.max_filters` filters are held.
    pub fn admit(&self, filter: &str) -> bool {
        self.budget.admit(&self.holder, filter)
    }

    /// Does this client (or its session) hold `filter`?
    pub fn holds(&self, filter: &str) -> bool {
        let inner = self.budget.inner.lock();
        inner
            .held
            .get(&self.holder)
            .is_some_and(|f| f.contains(filter))
    }

    /// The client unsubscribed from `filter`.
    pub fn release(&self, filter: &str) {
        self.budget.release(&self.holder, filter)
    }
}

impl Drop for FilterHold<'_> {
    fn drop(&mut self) {
        self.budget.close(&self.holder);
    }
}

/// The budget as an in-process client of rumqttd holds it
/// (`crate::broker::local`; the SMQ's link, the pub/sub proxy's link): one
/// holder for the gateway's lifetime.
pub struct LocalFilters {
    edge: Arc<super::EdgeContext>,
    holder: Holder,
}

impl LocalFilters {
    pub fn new(edge: Arc<super::EdgeContext>) -> LocalFilters {
        let holder = edge.filters.gateway_holder();
        LocalFilters { edge, holder }
    }
}

impl crate::broker::local::TopicFilters for LocalFilters {
    fn admit(&self, filter: &str) -> bool {
        self.edge.filters.admit_for(&self.holder, filter)
    }

    fn release(&self, filter: &str) {
        self.edge.filters.release_for(&self.holder, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_filters: usize, max_sessions: usize) -> FilterBudget {
        FilterBudget::new(max_filters, max_sessions, Arc::new(Metrics::default()))
    }

    #[test]
    fn a_filter_counts_while_someone_holds_it() {
        let b = budget(2, 10);
        let a = b.open("a", true);
        let c = b.open("c", true);
        assert!(a.admit("x"));
        assert!(c.admit("x"));
        assert!(a.admit("y"));
        assert!(!c.admit("z"), "two live filters: x and y");
        a.release("x");
        assert!(!c.admit("z"), "c still holds x");
        drop(a);
        assert_eq!(b.live(), 1);
        assert!(c.admit("z"));
        drop(c);
        assert_eq!(b.live(), 0);
    }

    #[test]
    fn many_short_lived_clients_never_lock_others_out() {
        let b = budget(4, 10);
        for i in 0..10_000 {
            let hold = b.open(&format!("c{i}"), true);
            assert!(hold.admit(&format!("t/{i}")), "client {i} refused");
        }
        assert_eq!(b.live(), 0);
    }

    #[test]
    fn persistent_session_keeps_its_filters_until_evicted_or_cleaned() {
        let b = budget(100, 2);
        for id in ["p1", "p2"] {
            let hold = b.open(id, false);
            assert!(hold.admit(&format!("own/{id}")));
        }
        assert_eq!(b.live(), 2, "sessions kept after disconnect");

        // resumed: the filter is still its own
        drop(b.open("p1", false));
        // a third session evicts the one disconnected longest ago (p2)
        let hold = b.open("p3", false);
        assert!(hold.admit("own/p3"));
        drop(hold);
        assert_eq!(b.live(), 2);
        let inner = b.inner.lock();
        assert!(inner.counts.contains_key("own/p1"));
        assert!(inner.counts.contains_key("own/p3"));
        drop(inner);

        // a clean connection ends p1's session
        drop(b.open("p1", true));
        assert_eq!(b.live(), 1);
    }
}
