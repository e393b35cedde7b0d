//! The gateway's events, numbered, and the most recent of them kept.
//!
//! In: the updates of one ingest step ([`EventLog::record`], called by the
//! ingest task just before it hands them to the fan-out). Out: every event
//! — a vehicle's ([`Update::Event`]: status, geofence, overspeed, motion,
//! ignition) and a dispatch request's transition ([`Update::Dispatch`]) —
//! stamped with its `event_id`, and a copy kept for `GET /events`
//! ([`EventLog::query`]).
//!
//! Event ids: one counter for all events, increasing by one per event,
//! starting at each start from (the wall clock in whole seconds) × 2²⁰. So
//! ids keep increasing across restarts as long as the clock does and the
//! gateway averaged under a million events a second; they stay below 2⁵³
//! (exact in a JavaScript number) until the year 2242. The same id is the
//! `event_id` of the event's JSON on every path (WebSocket, MQTT
//! `fleet/events/<kind>`, `GET /events`, upstream) and, upstream, part of
//! its AMQP `message_id` (`<gateway_id>-event-<event_id>`, so a consumer
//! dedupes replays after an outage by it).
//!
//! Bound: a ring of `events.ring` [`Recent`] entries (inline data, no
//! heap), allocated at start. When it is full the oldest entry goes
//! (`drop_oldest`), counted in `fleetgate_events_ring_evicted_total` and not
//! logged: ageing out is the ring's normal life, and the event itself went
//! out through the fan-out; a reader that fell behind learns it from the
//! answer's `missed`. Recording allocates nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::dispatch::DispatchUpdate;
use super::driving::LimitSource;
use super::geofence::FenceId;
use super::{Presence, Slot, Update};
use crate::metrics::Metrics;
use crate::topics::VehicleId;

#[derive(Debug, Clone)]
pub struct FleetEvent {
    /// Its number (this module's): set as it goes out, 0 before.
    pub id: u64,
    pub slot: Slot,
    pub vehicle: VehicleId,
    pub time_ms: u64,
    pub kind: EventKind,
}

impl FleetEvent {
    pub fn new(slot: Slot, vehicle: &VehicleId, time_ms: u64, kind: EventKind) -> FleetEvent {
        FleetEvent {
            id: 0,
            slot,
            vehicle: vehicle.clone(),
            time_ms,
            kind,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// `from` → `to`; one event per transition.
    StatusChanged {
        from: Presence,
        to: Presence,
    },
    /// Into a geofence (`fence` is its id, `GET /geofences` names it),
    /// after its dwell.
    GeofenceEnter {
        fence: FenceId,
    },
    /// Out of it, past its exit buffer.
    GeofenceExit {
        fence: FenceId,
    },
    /// Once per episode, above the limit for `minimal_duration_s`
    /// (`super::driving`); `fence` is the fence that set the limit, if one did.
    Overspeed {
        // f32: 0.1 km/h is plenty, and an event no bigger than a position
        // keeps every fan-out queue's entry at its size
        speed_kmh: f32,
        limit_kmh: f32,
        limit_from: LimitSource,
        fence: Option<FenceId>,
    },
    MotionStart,
    MotionStop,
    /// The position's ignition flag flipped.
    IgnitionOn,
    IgnitionOff,
}

impl EventKind {
    /// The last level of `fleet/events/<kind>`. Never `position` or
    /// `status`, so `fleet/+/position` and `fleet/+/status` match vehicles
    /// only.
    pub fn topic_name(&self) -> &'static str {
        match self {
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::GeofenceEnter { .. } => "geofence_enter",
            EventKind::GeofenceExit { .. } => "geofence_exit",
            EventKind::Overspeed { .. } => "overspeed",
            EventKind::MotionStart => "motion_start",
            EventKind::MotionStop => "motion_stop",
            EventKind::IgnitionOn => "ignition_on",
            EventKind::IgnitionOff => "ignition_off",
        }
    }
}

/// One kept event.
#[derive(Debug, Clone)]
pub enum Recent {
    Vehicle(FleetEvent),
    Dispatch(DispatchUpdate),
}

impl Recent {
    pub fn id(&self) -> u64 {
        match self {
            Recent::Vehicle(e) => e.id,
            Recent::Dispatch(d) => d.event_id,
        }
    }

    pub fn time_ms(&self) -> u64 {
        match self {
            Recent::Vehicle(e) => e.time_ms,
            Recent::Dispatch(d) => d.time_ms,
        }
    }

    /// The vehicle it concerns: a dispatch transition's once one is
    /// assigned.
    pub fn vehicle(&self) -> Option<&VehicleId> {
        match self {
            Recent::Vehicle(e) => Some(&e.vehicle),
            Recent::Dispatch(d) => d.request.vehicle_id.as_ref(),
        }
    }
}

/// Which kept events to copy (`GET /events`).
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Only this vehicle's.
    pub vehicle: Option<VehicleId>,
    /// Only events with an `event_id` above this one (exclusive).
    pub since: Option<u64>,
    /// Only events at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// At most this many, oldest first.
    pub limit: usize,
}

/// What a query found.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Recent>,
    /// The `since` for the next call: the id of the last event returned,
    /// or when none, the newest id the ring holds (or `since`).
    pub next_since: u64,
    /// More matching events follow (the limit stopped it).
    pub more: bool,
    /// Events after `since` (after any, without it) already left the ring.
    pub missed: bool,
}

pub struct EventLog {
    next_id: u64,
    ring: VecDeque<Recent>,
    capacity: usize,
    /// The id of the newest event evicted, 0 while none was.
    evicted_through: u64,
    metrics: Arc<Metrics>,
}

/// The first event id of a start at `now_ms`: (the time in whole seconds)
/// × 2²⁰, at least 1.
pub fn first_event_id(now_ms: u64) -> u64 {
    ((now_ms / 1000) << 20).max(1)
}

impl EventLog {
    /// A ring of `capacity` (at least 1), numbering from `first_id`.
    pub fn new(capacity: usize, first_id: u64, metrics: Arc<Metrics>) -> EventLog {
        let capacity = capacity.max(1);
        EventLog {
            next_id: first_id.max(1),
            ring: VecDeque::with_capacity(capacity),
            capacity,
            evicted_through: 0,
            metrics,
        }
    }

    /// Stamps every event in `updates` with the next id, and keeps a copy.
    pub fn record(&mut self, updates: &mut [Update]) {
        for update in updates {
            let kept = match update {
                Update::Event(e) => {
                    e.id = self.take_id();
                    Recent::Vehicle(e.clone())
                }
                Update::Dispatch(d) => {
                    d.event_id = self.take_id();
                    Recent::Dispatch((**d).clone())
                }
                _ => continue,
            };
            if self.ring.len() == self.capacity {
                if let Some(old) = self.ring.pop_front() {
                    self.evicted_through = old.id();
                    Metrics::inc(&self.metrics.events_ring_evicted_total);
                }
            }
            self.ring.push_back(kept);
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Copies of the kept events `q` asks for, oldest first.
    pub fn query(&self, q: &EventQuery) -> EventPage {
        let since = q.since.unwrap_or(0);
        let start = self.ring.partition_point(|e| e.id() <= since);
        let mut events = Vec::new();
        let mut more = false;
        let limit = q.limit.max(1);
        let mut next_since = self.ring.back().map_or(since, Recent::id).max(since);
        for e in self.ring.range(start..) {
            let wanted = q.vehicle.as_ref().is_none_or(|v| e.vehicle() == Some(v))
                && q.since_ms.is_none_or(|t| e.time_ms() >= t);
            if !wanted {
                continue;
            }
            if events.len() == limit {
                more = true;
                break;
            }
            events.push(e.clone());
        }
        if more {
            next_since = events.last().map_or(since, Recent::id);
        }
        EventPage {
            events,
            next_since,
            more,
            missed: self.evicted_through > since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{EventKind, Presence};

    fn event(vehicle: &str, time_ms: u64) -> Update {
        Update::Event(FleetEvent::new(
            0,
            &VehicleId::parse(vehicle).unwrap(),
            time_ms,
            EventKind::StatusChanged {
                from: Presence::Unknown,
                to: Presence::Online,
            },
        ))
    }

    fn ids(page: &EventPage) -> Vec<u64> {
        page.events.iter().map(Recent::id).collect()
    }

    fn query(vehicle: Option<&str>, since: Option<u64>, limit: usize) -> EventQuery {
        EventQuery {
            vehicle: vehicle.map(|v| VehicleId::parse(v).unwrap()),
            since,
            since_ms: None,
            limit,
        }
    }

    #[test]
    fn ids_increase_and_the_ring_keeps_the_newest() {
        let metrics = Arc::new(Metrics::default());
        let mut log = EventLog::new(3, 100, metrics.clone());
        let mut updates = vec![event("a", 1), event("b", 2), event("a", 3)];
        log.record(&mut updates);
        assert!(matches!(&updates[2], Update::Event(e) if e.id == 102));
        let page = log.query(&query(None, None, 10));
        assert_eq!(ids(&page), vec![100, 101, 102]);
        assert!(!page.missed && !page.more);
        assert_eq!(page.next_since, 102);

        log.record(&mut [event("b", 4), event("a", 5)]);
        assert_eq!(Metrics::get(&metrics.events_ring_evicted_total), 2);
        let page = log.query(&query(None, Some(100), 10));
        assert_eq!(ids(&page), vec![102, 103, 104]);
        assert!(page.missed, "101 is gone");
        assert!(!log.query(&query(None, Some(101), 10)).missed);
    }

    #[test]
    fn a_query_filters_by_vehicle_and_time_and_pages_by_since() {
        let mut log = EventLog::new(16, 1, Arc::new(Metrics::default()));
        let mut updates: Vec<Update> = (0..10)
            .map(|i| event(if i % 2 == 0 { "a" } else { "b" }, 1000 + i))
            .collect();
        log.record(&mut updates);
        let page = log.query(&query(Some("a"), None, 2));
        assert_eq!(ids(&page), vec![1, 3]);
        assert!(page.more);
        let page = log.query(&query(Some("a"), Some(page.next_since), 2));
        assert_eq!(ids(&page), vec![5, 7]);
        let page = log.query(&query(Some("a"), Some(page.next_since), 2));
        assert_eq!(ids(&page), vec![9]);
        assert!(!page.more);
        assert_eq!(page.next_since, 10, "the newest id, past b's last");
        let empty = log.query(&query(Some("a"), Some(10), 2));
        assert!(empty.events.is_empty());
        assert_eq!(empty.next_since, 10);
        let mut q = query(None, None, 100);
        q.since_ms = Some(1007);
        assert_eq!(ids(&log.query(&q)), vec![8, 9, 10]);
    }

    #[test]
    fn first_ids_of_later_starts_are_higher() {
        let a = first_event_id(1_795_341_600_000);
        let b = first_event_id(1_795_341_601_000);
        assert!(b - a == 1 << 20);
        assert!(first_event_id(u64::from(u32::MAX) * 1000) < 1 << 53);
    }
}
