//! Acknowledgements that mean "kept": the way back from the spool to the
//! edge, for QoS 1 and 2 device publishes.
//!
//! In: for each publish a device sent at QoS 1 or 2, the ticket ingest gave
//! it (its place in the order ingest handled publishes), pushed into the
//! connection's [`PendingAcks`] by the ingest task; and the [`Durable`]
//! watermark, advanced by the bridge feeder once every record up to a
//! ticket is in the spool (by ingest itself when the bridge is off, or for
//! tickets that produce nothing for the spool). Out: the PUBACKs and
//! PUBRECs a connection may send now, oldest first, so they go out in the
//! order the publishes arrived [MQTT-4.6.0-2].
//!
//! So an acknowledged publish is one a SIGKILL cannot lose: the spool has it
//! in the page cache (with `bridge.spool_fsync = "always"`, on disk).
//!
//! Bound: per connection at most `mqtt.max_pending_acks` entries of 16
//! bytes (the edge stops reading a connection that has that many waiting);
//! the watermark's waiting list holds each connection at most once, so at
//! most `mqtt.max_connections` entries. Locks: the waiting list may be held
//! while a connection's state is taken (an advance); a connection's state is
//! always released before the waiting list is taken (a push), so the two
//! never wait on each other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// The acknowledgement owed for one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// PUBACK, for QoS 1.
    PubAck(u16),
    /// PUBREC, for QoS 2.
    PubRec(u16),
}

/// A client has `mqtt.max_qos2_inflight` QoS 2 publishes awaiting PUBREL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyUnreleased;

/// How far the spool has everything: every ticket up to [`Durable::through`]
/// is kept.
pub struct Durable {
    through: AtomicU64,
    /// Connections with acks not yet due, each at most once.
    waiting: Mutex<Vec<Arc<PendingAcks>>>,
}

impl Durable {
    /// `connections`: the most connections that may wait at once.
    pub fn new(connections: usize) -> Arc<Durable> {
        Arc::new(Durable {
            through: AtomicU64::new(0),
            waiting: Mutex::new(Vec::with_capacity(connections)),
        })
    }

    /// The highest ticket everything up to which is kept.
    pub fn through(&self) -> u64 {
        self.through.load(Ordering::Acquire)
    }

    /// Everything up to `ticket` is kept: wakes each connection whose
    /// oldest waiting ack is now due.
    pub fn advance(&self, ticket: u64) {
        let previous = self.through.fetch_max(ticket, Ordering::AcqRel);
        if ticket <= previous {
            return;
        }
        // In place: no allocation per advance. Holding the list while each
        // connection's state is taken is safe, since nobody takes the list
        // while holding a state (see the module's locks).
        self.waiting.lock().retain(|acks| acks.wake_if_due(ticket));
    }

    fn register(&self, acks: &Arc<PendingAcks>) {
        self.waiting.lock().push(acks.clone());
    }
}

/// One connection's acknowledgements not yet sent.
#[derive(Default)]
pub struct PendingAcks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (ticket, ack), tickets increasing.
    queue: VecDeque<(u64, Ack)>,
    /// QoS 2 packet ids received and not yet released by PUBREL, so a
    /// redelivery is not ingested twice. Kept here, not in the connection's
    /// task, so a QoS 0 connection's task carries none of it.
    qos2_unreleased: Vec<u16>,
    waker: Option<Waker>,
    /// In the watermark's waiting list (or in the list an advance took).
    registered: bool,
}

impl PendingAcks {
    pub fn new() -> Arc<PendingAcks> {
        Arc::new(PendingAcks::default())
    }

    /// For ingest: the publish owing `ack` got `ticket`; it is sent once
    /// the watermark reaches it.
    pub fn push(self: &Arc<Self>, ticket: u64, ack: Ack, durable: &Durable) {
        let register = {
            let mut state = self.state.lock();
            state.queue.push_back((ticket, ack));
            !std::mem::replace(&mut state.registered, true)
        };
        if register {
            durable.register(self);
        }
        // Already due (an advance ran before this push: the bridge is off).
        if durable.through() >= ticket {
            self.wake_if_due(durable.through());
        }
    }

    /// For the edge: records a QoS 2 packet id as received. `Err(())` when
    /// `max` are already awaiting release (the client is misbehaving);
    /// `Ok(false)` when it was already there (a redelivery).
    pub fn qos2_receive(&self, pkid: u16, max: usize) -> Result<bool, TooManyUnreleased> {
        let mut state = self.state.lock();
        if state.qos2_unreleased.contains(&pkid) {
            return Ok(false);
        }
        if state.qos2_unreleased.len() >= max {
            return Err(TooManyUnreleased);
        }
        state.qos2_unreleased.push(pkid);
        Ok(true)
    }

    /// For the edge: the client released a QoS 2 packet id (PUBREL).
    pub fn qos2_release(&self, pkid: u16) {
        self.state.lock().qos2_unreleased.retain(|&id| id != pkid);
    }

    /// Acks waiting, due or not.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For the edge: ready when the oldest waiting ack is due at
    /// `through`; otherwise stores the waker for when it comes due.
    pub fn poll_due(&self, cx: &mut Context<'_>, through: u64) -> Poll<()> {
        let mut state = self.state.lock();
        if state.queue.front().is_some_and(|&(t, _)| t <= through) {
            return Poll::Ready(());
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// For the edge: moves the acks due at `through` into `out`, oldest
    /// first, as many as it has room for. Returns how many it moved.
    pub fn take_due<const N: usize>(&self, through: u64, out: &mut heapless::Vec<Ack, N>) -> usize {
        let mut state = self.state.lock();
        let mut moved = 0;
        while let Some(&(ticket, ack)) = state.queue.front() {
            if ticket > through || out.push(ack).is_err() {
                break;
            }
            state.queue.pop_front();
            moved += 1;
        }
        moved
    }

    /// Wakes the connection if its oldest ack is due at `through`; returns
    /// whether it must stay registered (some ack is not due yet).
    fn wake_if_due(&self, through: u64) -> bool {
        let mut state = self.state.lock();
        if state.queue.front().is_some_and(|&(t, _)| t <= through) {
            if let Some(waker) = &state.waker {
                waker.wake_by_ref();
            }
        }
        let stay = state.queue.back().is_some_and(|&(t, _)| t > through);
        state.registered = stay;
        stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn acks_wait_for_the_watermark_and_leave_in_order() {
        let durable = Durable::new(4);
        let acks = PendingAcks::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = heapless::Vec::<Ack, 8>::new();
        acks.push(1, Ack::PubAck(10), &durable);
        acks.push(2, Ack::PubRec(11), &durable);
        acks.push(3, Ack::PubAck(12), &durable);
        assert!(acks.poll_due(&mut cx, durable.through()).is_pending());
        assert_eq!(acks.take_due(durable.through(), &mut out), 0);
        durable.advance(2);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "woken when due");
        assert!(acks.poll_due(&mut cx, durable.through()).is_ready());
        assert_eq!(acks.take_due(durable.through(), &mut out), 2);
        assert!(acks.poll_due(&mut cx, durable.through()).is_pending());
        assert_eq!(out.as_slice(), &[Ack::PubAck(10), Ack::PubRec(11)]);
        assert_eq!(durable.waiting.lock().len(), 1, "still waiting for 3");
        durable.advance(3);
        out.clear();
        assert_eq!(acks.take_due(durable.through(), &mut out), 1);
        assert!(durable.waiting.lock().is_empty());
        // A push after the watermark passed its ticket is due at once.
        durable.advance(10);
        acks.push(4, Ack::PubAck(13), &durable);
        assert!(counter.0.load(Ordering::Relaxed) >= 3);
        out.clear();
        assert_eq!(acks.take_due(durable.through(), &mut out), 1);
    }

    #[test]
    fn a_full_output_leaves_the_rest_queued() {
        let durable = Durable::new(1);
        let acks = PendingAcks::new();
        for t in 1..=5 {
            acks.push(t, Ack::PubAck(t as u16), &durable);
        }
        durable.advance(5);
        let mut out = heapless::Vec::<Ack, 2>::new();
        assert_eq!(acks.take_due(5, &mut out), 2);
        assert_eq!(acks.len(), 3);
    }
}
