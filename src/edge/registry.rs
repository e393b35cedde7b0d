//! Which edge connection serves which vehicle's command topic.
//!
//! In: registrations from vehicle connections that subscribed to their own
//! `v/<vid>/cmd`, and commands from the broker's local link. Out: each
//! command onto that connection's queue. Bound: one entry per connected
//! vehicle (at most `mqtt.max_connections`), each with a queue of
//! `mqtt.vehicle_command_queue` commands; a full queue drops the newest
//! command (`drop_newest`), and a command for a vehicle not connected here is
//! dropped; both are counted in `commands_dropped_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::CommandSink;
use crate::metrics::Metrics;
use crate::topics::VehicleId;

pub struct VehicleRegistry {
    routes: Mutex<HashMap<VehicleId, Route>>,
    next_ticket: AtomicU64,
    queue_len: usize,
    metrics: Arc<Metrics>,
}

struct Route {
    ticket: u64,
    queue: mpsc::Sender<Bytes>,
}

/// A connection's claim on a vehicle's commands; it ends when dropped, unless
/// a newer connection for the same vehicle has taken the route over.
pub struct Registration {
    registry: Arc<VehicleRegistry>,
    vehicle: VehicleId,
    ticket: u64,
    pub commands: mpsc::Receiver<Bytes>,
}

impl Registration {
    pub fn vehicle(&self) -> &VehicleId {
        &self.vehicle
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.registry.lock();
        if routes
            .get(&self.vehicle)
            .is_some_and(|r| r.ticket == self.ticket)
        {
            routes.remove(&self.vehicle);
        }
    }
}

impl VehicleRegistry {
    pub fn new(queue_len: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(VehicleRegistry {
            routes: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
            queue_len: queue_len.max(1),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VehicleId, Route>> {
        // A poisoned map is still a consistent map: every critical section
        // below is a single insert/remove/lookup.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `vehicle`'s commands to the caller; the newest connection for
    /// a vehicle wins.
    pub fn register(self: &Arc<Self>, vehicle: VehicleId) -> Registration {
        let (queue, commands) = mpsc::channel(self.queue_len);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(vehicle.clone(), Route { ticket, queue });
        Registration {
            registry: self.clone(),
            vehicle,
            ticket,
            commands,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CommandSink for VehicleRegistry {
    fn deliver(&self, vehicle_id: &str, payload: Bytes) {
        let delivered = VehicleId::parse(vehicle_id).is_some_and(|vid| {
            self.lock()
                .get(&vid)
                .is_some_and(|route| route.queue.try_send(payload).is_ok())
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
        let mut new = reg.register(vid.clone());
        drop(old);
        reg.deliver("t1", Bytes::from_static(b"x"));
        assert_eq!(new.commands.try_recv().unwrap(), Bytes::from_static(b"x"));
        drop(new);
        assert!(reg.is_empty());
        reg.deliver("t1", Bytes::from_static(b"y"));
        assert_eq!(Metrics::get(&m.commands_dropped_total), 1);
    }

    #[test]
    fn full_queue_drops_newest_and_counts() {
        let m = Arc::new(Metrics::default());
        let reg = VehicleRegistry::new(1, m.clone());
        let mut r = reg.register(VehicleId::parse("t1").unwrap());
        reg.deliver("t1", Bytes::from_static(b"1"));
        reg.deliver("t1", Bytes::from_static(b"2"));
        assert_eq!(r.commands.try_recv().unwrap(), Bytes::from_static(b"1"));
        assert!(r.commands.try_recv().is_err());
        assert_eq!(Metrics::get(&m.commands_dropped_total), 1);
    }
}
