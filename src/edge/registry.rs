//! Which edge connection serves which vehicle's command topic.
//!
//! In: registrations from vehicle connections that subscribed to their own
//! `v/<vid>/cmd`, and commands from the broker's local link. Out: each
//! command onto that connection's queue. Bound: one entry per connected
//! vehicle (at most `mqtt.max_connections`, ~200 bytes each), each with a
//! queue of at most `mqtt.vehicle_command_queue` commands that holds memory
//! only while commands wait; a full queue drops the newest command
//! (`drop_newest`), and a command for a vehicle not connected here is
//! dropped; both are counted in `commands_dropped_total`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::broker::CommandSink;
use crate::metrics::Metrics;
use crate::topics::VehicleId;

pub struct VehicleRegistry {
    routes: Mutex<HashMap<VehicleId, Arc<Mailbox>>>,
    queue_len: usize,
    metrics: Arc<Metrics>,
}

/// One registration's command queue. Not a tokio `mpsc` channel: that
/// allocates a block of 32 slots (~1.2 KiB) per channel up front, for
/// commands that rarely come, and waiting on it (or on a `Notify`) puts a
/// ~100-byte waiter into every connection's task. This holds no allocation
/// while empty, and its one consumer waits through a waker slot.
struct Mailbox {
    vehicle: VehicleId,
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    queue: VecDeque<Bytes>,
    waker: Option<Waker>,
}

impl MailboxState {
    fn pop(&mut self) -> Option<Bytes> {
        let command = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            // Give the slots back: an idle vehicle holds no queue memory.
            self.queue = VecDeque::new();
        }
        command
    }
}

/// A connection's claim on a vehicle's commands; it ends when dropped, unless
/// a newer connection for the same vehicle has taken the route over.
pub struct Registration {
    registry: Arc<VehicleRegistry>,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    pub fn vehicle(&self) -> &VehicleId {
        &self.mailbox.vehicle
    }

    /// The next command routed to this registration, or a wake-up of the
    /// task polling when one arrives (only the last poller is woken: one
    /// connection task owns the registration).
    pub fn poll_command(&self, cx: &mut Context<'_>) -> Poll<Bytes> {
        let mut state = self.mailbox.state.lock();
        if let Some(command) = state.pop() {
            return Poll::Ready(command);
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

    /// The next command if one is queued.
    pub fn try_next_command(&self) -> Option<Bytes> {
        self.mailbox.state.lock().pop()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.registry.routes.lock();
        if routes
            .get(&self.mailbox.vehicle)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mailbox))
        {
            routes.remove(&self.mailbox.vehicle);
        }
    }
}

impl VehicleRegistry {
    pub fn new(queue_len: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(VehicleRegistry {
            routes: Mutex::new(HashMap::new()),
            queue_len: queue_len.max(1),
            metrics,
        })
    }

    /// Routes `vehicle`'s commands to the caller; the newest connection for
    /// a vehicle wins.
    pub fn register(self: &Arc<Self>, vehicle: VehicleId) -> Registration {
        let mailbox = Arc::new(Mailbox {
            vehicle: vehicle.clone(),
            state: Mutex::new(MailboxState::default()),
        });
        self.routes.lock().insert(vehicle, mailbox.clone());
        Registration {
            registry: self.clone(),
            mailbox,
        }
    }

    pub fn len(&self) -> usize {
        self.routes.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CommandSink for VehicleRegistry {
    fn deliver(&self, vehicle_id: &str, payload: Bytes) {
        let mailbox =
            VehicleId::parse(vehicle_id).and_then(|vid| self.routes.lock().get(&vid).cloned());
        let delivered = mailbox.is_some_and(|mailbox| {
            let mut state = mailbox.state.lock();
            if state.queue.len() >= self.queue_len {
                return false;
            }
            state.queue.push_back(payload);
            let waker = state.waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            true
        });
        if delivered {
            Metrics::inc(&self.metrics.commands_delivered_total);
        } else {
            Metrics::inc(&self.metrics.commands_dropped_total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_registration_wins_and_old_drop_keeps_it() {
        let m = Arc::new(Metrics::default());
        let reg = VehicleRegistry::new(2, m.clone());
        let vid = VehicleId::parse("t1").unwrap();
        let old = reg.register(vid.clone());
        let new = reg.register(vid.clone());
        drop(old);
        reg.deliver("t1", Bytes::from_static(b"x"));
        assert_eq!(new.try_next_command().unwrap(), Bytes::from_static(b"x"));
        drop(new);
        assert!(reg.is_empty());
        reg.deliver("t1", Bytes::from_static(b"y"));
        assert_eq!(Metrics::get(&m.commands_dropped_total), 1);
    }

    #[test]
    fn full_queue_drops_newest_and_counts() {
        let m = Arc::new(Metrics::default());
        let reg = VehicleRegistry::new(1, m.clone());
        let r = reg.register(VehicleId::parse("t1").unwrap());
        reg.deliver("t1", Bytes::from_static(b"1"));
        reg.deliver("t1", Bytes::from_static(b"2"));
        assert_eq!(r.try_next_command().unwrap(), Bytes::from_static(b"1"));
        assert!(r.try_next_command().is_none());
        assert_eq!(Metrics::get(&m.commands_dropped_total), 1);
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_command() {
        let m = Arc::new(Metrics::default());
        let reg = VehicleRegistry::new(2, m.clone());
        let r = reg.register(VehicleId::parse("t1").unwrap());
        let waiter =
            tokio::spawn(async move { std::future::poll_fn(|cx| r.poll_command(cx)).await });
        tokio::task::yield_now().await;
        reg.deliver("t1", Bytes::from_static(b"x"));
        assert_eq!(waiter.await.unwrap(), Bytes::from_static(b"x"));
        assert_eq!(Metrics::get(&m.commands_delivered_total), 1);
    }
}
