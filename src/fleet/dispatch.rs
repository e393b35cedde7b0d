//! Dispatch requests: find the nearest free vehicle for a pickup point,
//! reserve it by a lease, and tell everyone the outcome.
//!
//! In: requests (`POST /v2/search`), cancels, releases, and the clock (the
//! fleet's sweep), applied by the ingest task, which owns the fleet. Out:
//! [`DispatchUpdate`]s for the fan-out (`fleet/events/dispatch`, the live
//! feed, upstream as `fleet.events.dispatch`), from which ingest also tells
//! the vehicle (a `Command::Text` on `v/<vid>/cmd`) and the requester (a
//! notification to `requestor_<id>`).
//!
//! Semantics (beyond the seed, which re-searched every 30 s within 5 km and
//! deleted the driver from its index): the first search is at once, within
//! `dispatch.first_radius_m`; then again every `dispatch.interval_s`, and
//! at once when a reserved vehicle becomes free, each time with the radius
//! doubled up to `dispatch.max_radius_m`; a request without a vehicle
//! `dispatch.ttl_s` after it was made expires. A found vehicle is reserved
//! by a lease, taken on the ingest task (so two requests can never hold
//! one vehicle): it stays on the map and in the state, marked, and out of
//! other searches until the request is released, cancelled, or the lease
//! (`dispatch.lease_s`) ends.
//!
//! Bound: at most `dispatch.max_open_requests` searching or assigned (one
//! more is refused, [`DispatchError::Full`]), as many ended ones kept for
//! reading (the oldest forgotten first), and one reservation word per
//! vehicle slot.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Slot;
use crate::config::dispatch::DispatchConfig;
use crate::topics::VehicleId;

pub type RequestId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// No vehicle yet.
    Searching,
    /// A vehicle is reserved for it.
    Assigned,
    /// Ended: the requester released the vehicle (done with it).
    Released,
    Cancelled,
    /// Ended: no vehicle found within `dispatch.ttl_s`.
    Expired,
    /// Ended: the reservation's lease ran out.
    LeaseEnded,
}

impl RequestState {
    pub fn is_open(self) -> bool {
        matches!(self, RequestState::Searching | RequestState::Assigned)
    }
}

/// A request as `GET /v2/requests/{id}` shows it, and as its events carry it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub request_id: RequestId,
    pub state: RequestState,
    pub lat: f64,
    pub lon: f64,
    /// The radius of the latest search, in metres.
    pub radius_m: f64,
    pub vehicle_id: Option<VehicleId>,
    pub distance_m: Option<f64>,
    pub created_ms: u64,
    pub assigned_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

/// One transition of a request, for the fan-out.
#[derive(Debug, Clone)]
pub struct DispatchUpdate {
    /// Set by the event log (`super::events`) as it goes out; 0 before.
    pub event_id: u64,
    pub time_ms: u64,
    pub request: RequestView,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("at most dispatch.max_open_requests = {0} open requests")]
    Full(usize),
    #[error("no dispatch request {0}")]
    NotFound(RequestId),
    #[error("dispatch request {0} is {1:?}: it can no longer change")]
    Ended(RequestId, RequestState),
    #[error("dispatch request {0} has no vehicle to release")]
    NothingToRelease(RequestId),
}

#[derive(Debug, Clone)]
struct Request {
    view: RequestView,
    slot: Option<Slot>,
    searches: u32,
    next_search: Instant,
    expires: Instant,
    lease_until: Option<Instant>,
}

pub struct Dispatch {
    config: DispatchConfig,
    open: BTreeMap<RequestId, Request>,
    ended: VecDeque<RequestView>,
    /// Per slot: the request holding that vehicle.
    reserved: Vec<Option<RequestId>>,
    next_id: RequestId,
}

/// What a search needs from the fleet: the nearest free vehicle to a point
/// within a radius, with its slot, id and distance.
pub trait FindVehicle {
    fn nearest_free(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        reserved: &[Option<RequestId>],
    ) -> Option<(Slot, VehicleId, f64)>;
}

impl Dispatch {
    pub fn new(config: &DispatchConfig, capacity: usize) -> Dispatch {
        Dispatch {
            config: config.clone(),
            open: BTreeMap::new(),
            ended: VecDeque::new(),
            reserved: vec![None; capacity],
            next_id: 1,
        }
    }

    /// Is this vehicle reserved (excluded from other searches)?
    pub fn is_reserved(&self, slot: Slot) -> bool {
        self.reserved
            .get(slot as usize)
            .is_some_and(Option::is_some)
    }

    pub fn reservations(&self) -> &[Option<RequestId>] {
        &self.reserved
    }

    /// The radius of search number `n` (from 0): doubling, capped.
    fn radius(&self, n: u32) -> f64 {
        (self.config.first_radius_m * f64::from(1u32 << n.min(20))).min(self.config.max_radius_m)
    }

    /// A new request, searched at once.
    pub fn create(
        &mut self,
        lat: f64,
        lon: f64,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) -> Result<RequestView, DispatchError> {
        if self.open.len() >= self.config.max_open_requests.get() {
            return Err(DispatchError::Full(self.config.max_open_requests.get()));
        }
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            view: RequestView {
                request_id: id,
                state: RequestState::Searching,
                lat,
                lon,
                radius_m: self.radius(0),
                vehicle_id: None,
                distance_m: None,
                created_ms: now_ms,
                assigned_ms: None,
                ended_ms: None,
            },
            slot: None,
            searches: 0,
            next_search: now,
            expires: now + Duration::from_secs(self.config.ttl_s),
            lease_until: None,
        };
        self.open.insert(id, request);
        out.push(self.update(id, now_ms));
        self.search(id, fleet, now, now_ms, out);
        self.get(id).ok_or(DispatchError::NotFound(id))
    }

    fn update(&self, id: RequestId, now_ms: u64) -> DispatchUpdate {
        let request = self.get(id).unwrap_or_else(|| RequestView {
            request_id: id,
            state: RequestState::Expired,
            lat: 0.0,
            lon: 0.0,
            radius_m: 0.0,
            vehicle_id: None,
            distance_m: None,
            created_ms: now_ms,
            assigned_ms: None,
            ended_ms: Some(now_ms),
        });
        DispatchUpdate {
            event_id: 0,
            time_ms: now_ms,
            request,
        }
    }

    /// One search for a searching request; reserves what it finds.
    fn search(
        &mut self,
        id: RequestId,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) {
        let Some(request) = self.open.get(&id) else {
            return;
        };
        if request.view.state != RequestState::Searching {
            return;
        }
        let radius = self.radius(request.searches);
        let (lat, lon) = (request.view.lat, request.view.lon);
        let found = fleet.nearest_free(lat, lon, radius, &self.reserved);
        let interval = Duration::from_secs(self.config.interval_s);
        let lease = Duration::from_secs(self.config.lease_s);
        let Some(request) = self.open.get_mut(&id) else {
            return;
        };
        request.searches += 1;
        request.view.radius_m = radius;
        request.next_search = now + interval;
        let Some((slot, vehicle, distance_m)) = found else {
            return;
        };
        if let Some(r) = self.reserved.get_mut(slot as usize) {
            *r = Some(id);
        }
        request.slot = Some(slot);
        request.lease_until = Some(now + lease);
        request.view.state = RequestState::Assigned;
        request.view.vehicle_id = Some(vehicle);
        request.view.distance_m = Some((distance_m * 10.0).round() / 10.0);
        request.view.assigned_ms = Some(now_ms);
        out.push(self.update(id, now_ms));
    }

    /// Ends an open request in `state`, freeing its vehicle; searching
    /// requests then try again at once (a vehicle became free).
    fn end(
        &mut self,
        id: RequestId,
        state: RequestState,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) {
        let Some(mut request) = self.open.remove(&id) else {
            return;
        };
        let freed = request.slot.take();
        if let Some(slot) = freed {
            if let Some(r) = self.reserved.get_mut(slot as usize) {
                *r = None;
            }
        }
        request.view.state = state;
        request.view.ended_ms = Some(now_ms);
        if self.ended.len() >= self.config.max_open_requests.get() {
            self.ended.pop_front();
        }
        out.push(DispatchUpdate {
            event_id: 0,
            time_ms: now_ms,
            request: request.view.clone(),
        });
        self.ended.push_back(request.view);
        if freed.is_some() {
            self.retry_searching(fleet, now, now_ms, out);
        }
    }

    fn retry_searching(
        &mut self,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) {
        let searching: Vec<RequestId> = self
            .open
            .iter()
            .filter(|(_, r)| r.view.state == RequestState::Searching)
            .map(|(&id, _)| id)
            .collect();
        for id in searching {
            self.search(id, fleet, now, now_ms, out);
        }
    }

    pub fn cancel(
        &mut self,
        id: RequestId,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) -> Result<RequestView, DispatchError> {
        self.check_open(id)?;
        self.end(id, RequestState::Cancelled, fleet, now, now_ms, out);
        self.get(id).ok_or(DispatchError::NotFound(id))
    }

    pub fn release(
        &mut self,
        id: RequestId,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) -> Result<RequestView, DispatchError> {
        let state = self.check_open(id)?;
        if state != RequestState::Assigned {
            return Err(DispatchError::NothingToRelease(id));
        }
        self.end(id, RequestState::Released, fleet, now, now_ms, out);
        self.get(id).ok_or(DispatchError::NotFound(id))
    }

    fn check_open(&self, id: RequestId) -> Result<RequestState, DispatchError> {
        if let Some(r) = self.open.get(&id) {
            return Ok(r.view.state);
        }
        match self.ended.iter().find(|r| r.request_id == id) {
            Some(r) => Err(DispatchError::Ended(id, r.state)),
            None => Err(DispatchError::NotFound(id)),
        }
    }

    /// The clock: searches that are due, expiries, and leases that end.
    pub fn tick(
        &mut self,
        fleet: &impl FindVehicle,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<DispatchUpdate>,
    ) {
        let due: Vec<(RequestId, RequestState)> = self
            .open
            .iter()
            .filter_map(|(&id, r)| match r.view.state {
                RequestState::Searching if now >= r.expires => Some((id, RequestState::Expired)),
                RequestState::Searching if now >= r.next_search => {
                    Some((id, RequestState::Searching))
                }
                RequestState::Assigned if r.lease_until.is_some_and(|t| now >= t) => {
                    Some((id, RequestState::LeaseEnded))
                }
                _ => None,
            })
            .collect();
        for (id, what) in due {
            match what {
                RequestState::Searching => self.search(id, fleet, now, now_ms, out),
                ended => self.end(id, ended, fleet, now, now_ms, out),
            }
        }
    }

    pub fn get(&self, id: RequestId) -> Option<RequestView> {
        self.open
            .get(&id)
            .map(|r| r.view.clone())
            .or_else(|| self.ended.iter().find(|r| r.request_id == id).cloned())
    }

    /// The open (searching or assigned) requests, oldest first: at most
    /// `dispatch.max_open_requests`. The live map's snapshot shows them.
    pub fn open(&self) -> impl Iterator<Item = &RequestView> {
        self.open.values().map(|r| &r.view)
    }

    /// The request holding this vehicle, if any.
    pub fn holder(&self, slot: Slot) -> Option<RequestId> {
        self.reserved.get(slot as usize).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Fleet, Update};
    use crate::metrics::Metrics;
    use fleetgate_wire::{flags, Position};
    use std::sync::Arc;

    const PICKUP: (f64, f64) = (52.3731, 4.8922);

    fn fleet(config: DispatchConfig, vehicles: &[(&str, f64)]) -> (Fleet, Instant) {
        let mut f = Fleet::new(
            16,
            4,
            Duration::from_secs(600),
            Arc::new(Metrics::default()),
        );
        f.dispatch = Dispatch::new(&config, 16);
        let now = Instant::now();
        for (i, (id, north_m)) in vehicles.iter().enumerate() {
            let p = Position {
                seq: 1,
                time_ms: 1,
                lat_e6: ((PICKUP.0 + north_m / 111_195.0) * 1e6) as i32,
                lon_e6: (PICKUP.1 * 1e6) as i32,
                speed_cm_s: 0,
                heading: 0,
                flags: flags::FIX_VALID,
                odometer_m: None,
            };
            let mut out = Vec::new();
            f.apply_position(
                &VehicleId::parse(id).unwrap(),
                &p,
                true,
                now,
                i as u64,
                &mut out,
            );
        }
        (f, now)
    }

    fn create(f: &mut Fleet, now: Instant) -> Result<RequestView, DispatchError> {
        let mut out = Vec::new();
        f.with_dispatch(&mut out, |d, s, o| {
            d.create(PICKUP.0, PICKUP.1, s, now, 0, o)
        })
    }

    fn tick(f: &mut Fleet, now: Instant) -> Vec<RequestView> {
        let mut out = Vec::new();
        f.with_dispatch(&mut out, |d, s, o| d.tick(s, now, 0, o));
        views(&out)
    }

    fn views(out: &[Update]) -> Vec<RequestView> {
        out.iter()
            .filter_map(|u| match u {
                Update::Dispatch(d) => Some(d.request.clone()),
                _ => None,
            })
            .collect()
    }

    fn vehicle(r: &RequestView) -> Option<&str> {
        r.vehicle_id.as_ref().map(|v| v.as_str())
    }

    #[test]
    fn the_nearest_free_vehicle_is_reserved_and_no_one_else_gets_it() {
        let (mut f, now) = fleet(
            DispatchConfig::default(),
            &[("far", 600.0), ("near", 100.0)],
        );
        let first = create(&mut f, now).unwrap();
        assert_eq!(
            (first.state, vehicle(&first)),
            (RequestState::Assigned, Some("near"))
        );
        let second = create(&mut f, now).unwrap();
        assert_eq!(
            vehicle(&second),
            Some("far"),
            "the reserved one is out of the search"
        );
        let third = create(&mut f, now).unwrap();
        assert_eq!(third.state, RequestState::Searching);
        // plain nearest searches leave reserved vehicles out too
        let mut top = crate::fleet::nearest::TopK::new(10);
        f.nearest(PICKUP.0, PICKUP.1, 5_000.0, 10, false, &mut top);
        assert!(top.as_slice().is_empty());
        f.nearest(PICKUP.0, PICKUP.1, 5_000.0, 10, true, &mut top);
        assert_eq!(top.as_slice().len(), 2);
    }

    #[test]
    fn the_search_widens_on_its_interval_until_a_vehicle_is_in_reach() {
        let (mut f, t0) = fleet(DispatchConfig::default(), &[("out-of-town", 3_000.0)]);
        let r = create(&mut f, t0).unwrap();
        assert_eq!((r.state, r.radius_m), (RequestState::Searching, 1_000.0));
        assert!(
            tick(&mut f, t0 + Duration::from_secs(29)).is_empty(),
            "not due yet"
        );
        assert!(
            tick(&mut f, t0 + Duration::from_secs(30)).is_empty(),
            "2 km: still out of reach"
        );
        let found = tick(&mut f, t0 + Duration::from_secs(60));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].radius_m, vehicle(&found[0])),
            (4_000.0, Some("out-of-town"))
        );
    }

    #[test]
    fn a_request_without_a_vehicle_expires_and_a_lease_ends() {
        let (mut f, t0) = fleet(DispatchConfig::default(), &[("v1", 50.0)]);
        let held = create(&mut f, t0).unwrap();
        let waiting = create(&mut f, t0).unwrap();
        assert_eq!(waiting.state, RequestState::Searching);
        let ended = tick(&mut f, t0 + Duration::from_secs(240));
        assert!(ended
            .iter()
            .any(|r| r.request_id == waiting.request_id && r.state == RequestState::Expired));
        let ended = tick(&mut f, t0 + Duration::from_secs(300));
        assert!(ended
            .iter()
            .any(|r| r.request_id == held.request_id && r.state == RequestState::LeaseEnded));
        assert!(!f.dispatch.is_reserved(0), "free again");
    }

    #[test]
    fn a_freed_vehicle_goes_to_a_waiting_request_at_once() {
        let (mut f, t0) = fleet(DispatchConfig::default(), &[("v1", 50.0)]);
        let first = create(&mut f, t0).unwrap();
        let second = create(&mut f, t0).unwrap();
        let mut out = Vec::new();
        let cancelled = f
            .with_dispatch(&mut out, |d, s, o| d.cancel(first.request_id, s, t0, 0, o))
            .unwrap();
        assert_eq!(cancelled.state, RequestState::Cancelled);
        let next = views(&out);
        assert!(
            next.iter()
                .any(|r| r.request_id == second.request_id && vehicle(r) == Some("v1")),
            "{next:?}"
        );
        // an ended request can no longer change; a searching one has nothing to release
        let err = f.with_dispatch(&mut out, |d, s, o| d.cancel(first.request_id, s, t0, 0, o));
        assert!(matches!(
            err,
            Err(DispatchError::Ended(_, RequestState::Cancelled))
        ));
        let released = f.with_dispatch(&mut out, |d, s, o| {
            d.release(second.request_id, s, t0, 0, o)
        });
        assert_eq!(released.unwrap().state, RequestState::Released);
        let third = create(&mut f, t0).unwrap();
        assert_eq!(
            vehicle(&third),
            Some("v1"),
            "released: free for the next one"
        );
    }

    #[test]
    fn open_requests_are_bounded() {
        let config = DispatchConfig {
            max_open_requests: std::num::NonZeroUsize::new(2).unwrap(),
            ..DispatchConfig::default()
        };
        let (mut f, t0) = fleet(config, &[]);
        create(&mut f, t0).unwrap();
        create(&mut f, t0).unwrap();
        assert!(matches!(create(&mut f, t0), Err(DispatchError::Full(2))));
    }
}
