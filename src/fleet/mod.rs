//! The fleet's live state.
//!
//! In: decoded positions and statuses from ingest, and the clock (a sweep
//! marks silent vehicles `unknown`). Out: [`Update`]s — the positions it
//! accepted and the events its state changes produced — appended to a
//! caller's buffer, for the fan-out.
//!
//! Bound: `fleet.max_vehicles` vehicles, allocated at start-up and never
//! grown: the table, its index and each vehicle's mirror topic. A new vehicle
//! past the capacity is refused by the `refuse_new` policy: its messages are
//! dropped and counted (`fleet_vehicles_refused_total`); known vehicles keep
//! working. A vehicle's slot is never reused, so a slot number names one
//! vehicle for the gateway's lifetime.
//!
//! Single writer: only the ingest task owns a [`Fleet`]; readers (REST) get
//! copies through [`crate::ingest::FleetQueries`], so no lock is taken per
//! message.
//!
//! Before it: ingest, whose task owns it. After it: the fan-out, which gets
//! the [`Update`]s it appends.

pub mod dispatch;
pub mod driving;
pub mod events;
pub mod geofence;
pub mod nearest;
pub mod packages;
mod seq;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate_wire::{Position, Status};
use serde::Serialize;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::topics::{device_topic, DeviceTopicKind, VehicleId};
pub use events::{EventKind, FleetEvent};
pub use seq::{SeqVerdict, SeqWindow};

/// Index of a vehicle in the table; stable for the gateway's lifetime.
pub type Slot = u32;

/// Whether a vehicle is reachable, as Traccar's users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Heard from within `fleet.unknown_after_s`.
    Online,
    /// Said goodbye: a status with `online: false`, usually its last will.
    Offline,
    /// Silent for longer than `fleet.unknown_after_s`.
    Unknown,
}

/// What changed, for the fan-out. Clone copies inline data only (no heap).
#[derive(Debug, Clone)]
pub enum Update {
    Position(PositionUpdate),
    Status(StatusUpdate),
    Event(FleetEvent),
    /// Boxed: a package carries place names, and is rare next to positions.
    Package(Box<packages::PackageUpdate>),
    /// A dispatch request's transition (boxed: rare, and carries its view).
    Dispatch(Box<dispatch::DispatchUpdate>),
    /// Not a change: ingest's mark that every publish up to this ticket
    /// has been handled (`crate::acks`). Only a consumer that keeps things
    /// (the bridge feeder, policy `block`) receives it; it advances the
    /// durable watermark once what came before it is in the spool.
    Checkpoint(u64),
}

impl Update {
    /// The vehicle's slot; `None` for a package update (keyed by package).
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Update::Position(p) => Some(p.slot),
            Update::Status(s) => Some(s.slot),
            Update::Event(e) => Some(e.slot),
            Update::Package(_) | Update::Dispatch(_) | Update::Checkpoint(_) => None,
        }
    }
    pub fn vehicle_id(&self) -> &str {
        match self {
            Update::Position(p) => p.vehicle.as_str(),
            Update::Status(s) => s.vehicle.as_str(),
            Update::Event(e) => e.vehicle.as_str(),
            Update::Package(p) => &p.package.vehicle_id,
            Update::Dispatch(d) => d.request.vehicle_id.as_ref().map_or("", |v| v.as_str()),
            Update::Checkpoint(_) => "",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PositionUpdate {
    pub slot: Slot,
    pub vehicle: VehicleId,
    pub position: Position,
    pub received_ms: u64,
    /// Distance driven, summed over valid fixes, in metres.
    pub odometer_m: f64,
    /// Arrived after a newer fix: forwarded upstream, not the latest.
    pub late: bool,
}

#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub slot: Slot,
    pub vehicle: VehicleId,
    pub status: Status,
    pub received_ms: u64,
}

/// One vehicle's state.
#[derive(Debug, Clone)]
pub struct VehicleState {
    pub id: VehicleId,
    pub presence: Presence,
    /// The newest fix (by sequence number, or by fix time for unsequenced
    /// JSON positions).
    pub position: Option<Position>,
    pub position_received_ms: u64,
    pub status: Option<Status>,
    pub last_heard_ms: u64,
    pub odometer_m: f64,
    last_heard: Instant,
    seq: SeqWindow,
    /// `v/<vid>/pos`, made once so mirroring a payload allocates nothing.
    pub mirror_topic_pos: Bytes,
    pub mirror_topic_status: Bytes,
}

/// What the table said about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// The vehicle is new and the table is full (`refuse_new`).
    Refused,
}

pub struct Fleet {
    pub packages: packages::Packages,
    vehicles: Vec<VehicleState>,
    /// Where each vehicle's newest valid fix is, for nearest searches.
    grid: nearest::Grid,
    /// The configured fences and who is in them.
    pub geofences: geofence::Geofences,
    /// Dispatch requests and the vehicles they reserve.
    pub dispatch: dispatch::Dispatch,
    /// Overspeed, motion and ignition, per vehicle.
    pub driving: driving::Driving,
    /// Event ids, and the recent events `GET /events` reads.
    pub events: events::EventLog,
    index: HashMap<VehicleId, Slot>,
    capacity: usize,
    unknown_after: Duration,
    metrics: Arc<Metrics>,
}

impl Fleet {
    pub fn new(
        capacity: usize,
        max_packages: usize,
        unknown_after: Duration,
        metrics: Arc<Metrics>,
    ) -> Fleet {
        Fleet {
            packages: packages::Packages::new(max_packages),
            vehicles: Vec::with_capacity(capacity),
            grid: nearest::Grid::new(capacity),
            geofences: geofence::Geofences::new(&Default::default(), capacity, metrics.clone()),
            dispatch: dispatch::Dispatch::new(&Default::default(), capacity),
            driving: driving::Driving::new(&Default::default(), capacity),
            events: events::EventLog::new(
                crate::config::events::EventsConfig::default().ring.get(),
                events::first_event_id(crate::clock::now_ms()),
                metrics.clone(),
            ),
            index: HashMap::with_capacity(capacity),
            capacity,
            unknown_after,
            metrics,
        }
    }

    pub fn len(&self) -> usize {
        self.vehicles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vehicles.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&self, id: &VehicleId) -> Option<&VehicleState> {
        self.index
            .get(id)
            .map(|&slot| &self.vehicles[slot as usize])
    }

    pub fn vehicle(&self, slot: Slot) -> Option<&VehicleState> {
        self.vehicles.get(slot as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &VehicleState> {
        self.vehicles.iter()
    }

    /// The vehicle's slot, adding it if there is room.
    fn slot_for(&mut self, id: &VehicleId, now: Instant, now_ms: u64) -> Option<Slot> {
        if let Some(&slot) = self.index.get(id) {
            return Some(slot);
        }
        if self.vehicles.len() >= self.capacity {
            Metrics::inc(&self.metrics.fleet_vehicles_refused_total);
            return None;
        }
        let slot = self.vehicles.len() as Slot;
        self.vehicles.push(VehicleState {
            id: id.clone(),
            presence: Presence::Unknown,
            position: None,
            position_received_ms: 0,
            status: None,
            last_heard_ms: now_ms,
            odometer_m: 0.0,
            last_heard: now,
            seq: SeqWindow::default(),
            mirror_topic_pos: Bytes::from(device_topic(id, DeviceTopicKind::Position)),
            mirror_topic_status: Bytes::from(device_topic(id, DeviceTopicKind::Status)),
        });
        self.index.insert(id.clone(), slot);
        self.driving.add_vehicle(slot, id);
        Metrics::inc(&self.metrics.fleet_vehicles);
        Some(slot)
    }

    /// Applies one position. `sequenced` is false for JSON positions sent
    /// without `seq`: those are ordered by fix time alone.
    pub fn apply_position(
        &mut self,
        id: &VehicleId,
        position: &Position,
        sequenced: bool,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Update>,
    ) -> Outcome {
        let Some(slot) = self.slot_for(id, now, now_ms) else {
            return Outcome::Refused;
        };
        let metrics = &*self.metrics;
        let vehicle = &mut self.vehicles[slot as usize];
        let newest = if sequenced {
            match vehicle.seq.observe(position.seq) {
                SeqVerdict::Newest { missing } => {
                    if missing > 0 {
                        metrics
                            .seq_gaps_total
                            .fetch_add(u64::from(missing), std::sync::atomic::Ordering::Relaxed);
                    }
                    true
                }
                SeqVerdict::Late => {
                    Metrics::inc(&metrics.positions_late_total);
                    false
                }
                SeqVerdict::Duplicate => {
                    Metrics::inc(&metrics.positions_duplicate_total);
                    return Outcome::Duplicate;
                }
            }
        } else {
            true
        };
        // A fix older than the latest never overwrites it.
        let newest = newest
            && vehicle
                .position
                .is_none_or(|p| p.time_ms <= position.time_ms);
        let prev = vehicle.position;
        if newest {
            if let (Some(prev), true) = (vehicle.position, position.fix_valid()) {
                if prev.fix_valid() {
                    vehicle.odometer_m += distance_m(&prev, position);
                }
            }
            vehicle.position = Some(*position);
            vehicle.position_received_ms = now_ms;
            if position.fix_valid() {
                self.grid
                    .update(slot, position.lat_deg(), position.lon_deg());
            }
        }
        let fenced = newest && position.fix_valid();
        let odometer_m = vehicle.odometer_m;
        heard(vehicle, slot, now, now_ms, out);
        out.push(Update::Position(PositionUpdate {
            slot,
            vehicle: id.clone(),
            position: *position,
            received_ms: now_ms,
            odometer_m,
            late: !newest,
        }));
        let fence_limit = if fenced {
            let (lat, lon) = (position.lat_deg(), position.lon_deg());
            self.geofences
                .evaluate(slot, id, lat, lon, position.time_ms, out)
        } else {
            None
        };
        if newest {
            self.driving
                .observe(slot, id, prev.as_ref(), position, fence_limit, out);
        }
        Outcome::Accepted
    }

    /// Applies a device status; `online: false` (the last will) makes the
    /// vehicle `offline`.
    pub fn apply_status(
        &mut self,
        id: &VehicleId,
        status: &Status,
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Update>,
    ) -> Outcome {
        let Some(slot) = self.slot_for(id, now, now_ms) else {
            return Outcome::Refused;
        };
        let vehicle = &mut self.vehicles[slot as usize];
        vehicle.status = Some(*status);
        if status.online {
            heard(vehicle, slot, now, now_ms, out);
        } else {
            vehicle.last_heard = now;
            vehicle.last_heard_ms = now_ms;
            set_presence(vehicle, slot, Presence::Offline, now_ms, out);
        }
        out.push(Update::Status(StatusUpdate {
            slot,
            vehicle: id.clone(),
            status: *status,
            received_ms: now_ms,
        }));
        Outcome::Accepted
    }

    /// The nearest vehicles with a valid fix to (`lat`, `lon`) within
    /// `radius_m`, into `out` (at most `k`, nearest first). Only `online`
    /// vehicles no dispatch request holds, unless `include_all`. Allocates
    /// nothing.
    pub fn nearest(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        k: usize,
        include_all: bool,
        out: &mut nearest::TopK,
    ) {
        let vehicles = &self.vehicles;
        let dispatch = &self.dispatch;
        let accept = |slot: Slot| {
            include_all
                || (!dispatch.is_reserved(slot)
                    && vehicles
                        .get(slot as usize)
                        .is_some_and(|v| v.presence == Presence::Online))
        };
        self.grid.nearest(lat, lon, radius_m, k, accept, out);
    }

    /// Creates (`id: None`), replaces or (`fence: None`) deletes a
    /// geofence, and appends the enter/exit events the edit implies for
    /// every vehicle with a known membership (not only on its next fix).
    pub fn edit_fence(
        &mut self,
        id: Option<geofence::FenceId>,
        fence: Option<crate::config::geofence::FenceConfig>,
        now_ms: u64,
        out: &mut Vec<Update>,
    ) -> Result<geofence::FenceId, geofence::FenceEditError> {
        let id = match (id, fence) {
            (id, Some(fence)) => self.geofences.put(id, fence)?,
            (Some(id), None) => {
                self.geofences.delete(id)?;
                id
            }
            (None, None) => {
                return Err(geofence::FenceEditError::Invalid("nothing to edit".into()))
            }
        };
        for (slot, vehicle) in self.vehicles.iter().enumerate() {
            if let Some(p) = vehicle.position.filter(|p| p.fix_valid()) {
                self.geofences.settle(
                    id,
                    slot as Slot,
                    &vehicle.id,
                    (p.lat_deg(), p.lon_deg()),
                    p.time_ms,
                    now_ms,
                    out,
                );
            }
        }
        Ok(id)
    }

    /// Runs a dispatch operation with the fleet as its search, and appends
    /// its transitions for the fan-out.
    pub fn with_dispatch<T>(
        &mut self,
        out: &mut Vec<Update>,
        op: impl FnOnce(
            &mut dispatch::Dispatch,
            &FleetSearch<'_>,
            &mut Vec<dispatch::DispatchUpdate>,
        ) -> T,
    ) -> T {
        let search = FleetSearch {
            grid: &self.grid,
            vehicles: &self.vehicles,
        };
        let mut updates = Vec::new();
        let result = op(&mut self.dispatch, &search, &mut updates);
        out.extend(updates.into_iter().map(|u| Update::Dispatch(Box::new(u))));
        result
    }

    /// Marks vehicles silent for longer than `unknown_after` as `unknown`,
    /// and runs dispatch's clock.
    pub fn sweep(&mut self, now: Instant, now_ms: u64, out: &mut Vec<Update>) {
        self.with_dispatch(out, |d, search, updates| {
            d.tick(search, now, now_ms, updates)
        });
        for (slot, vehicle) in self.vehicles.iter_mut().enumerate() {
            if vehicle.presence == Presence::Online
                && now.duration_since(vehicle.last_heard) >= self.unknown_after
            {
                set_presence(vehicle, slot as Slot, Presence::Unknown, now_ms, out);
            }
        }
    }
}

/// The fleet as dispatch searches it: online vehicles with a valid fix that
/// no request holds.
pub struct FleetSearch<'a> {
    grid: &'a nearest::Grid,
    vehicles: &'a [VehicleState],
}

impl dispatch::FindVehicle for FleetSearch<'_> {
    fn nearest_free(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        reserved: &[Option<dispatch::RequestId>],
    ) -> Option<(Slot, VehicleId, f64)> {
        let mut top = nearest::TopK::new(1);
        let accept = |slot: Slot| {
            reserved.get(slot as usize).is_some_and(Option::is_none)
                && self
                    .vehicles
                    .get(slot as usize)
                    .is_some_and(|v| v.presence == Presence::Online)
        };
        self.grid.nearest(lat, lon, radius_m, 1, accept, &mut top);
        let &(distance_m, slot) = top.as_slice().first()?;
        let vehicle = self.vehicles.get(slot as usize)?.id.clone();
        Some((slot, vehicle, distance_m))
    }
}

fn heard(vehicle: &mut VehicleState, slot: Slot, now: Instant, now_ms: u64, out: &mut Vec<Update>) {
    vehicle.last_heard = now;
    vehicle.last_heard_ms = now_ms;
    set_presence(vehicle, slot, Presence::Online, now_ms, out);
}

fn set_presence(
    vehicle: &mut VehicleState,
    slot: Slot,
    to: Presence,
    now_ms: u64,
    out: &mut Vec<Update>,
) {
    if vehicle.presence == to {
        return;
    }
    let from = vehicle.presence;
    vehicle.presence = to;
    out.push(Update::Event(FleetEvent::new(
        slot,
        &vehicle.id,
        now_ms,
        EventKind::StatusChanged { from, to },
    )));
}

/// Great-circle distance in metres (haversine; plenty for odometry).
pub fn distance_m(a: &Position, b: &Position) -> f64 {
    haversine_m(a.lat_deg(), a.lon_deg(), b.lat_deg(), b.lon_deg())
}

pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_wire::flags;

    fn fix(seq: u32, time_ms: u64, lat_e6: i32) -> Position {
        Position {
            seq,
            time_ms,
            lat_e6,
            lon_e6: 4_892_200,
            speed_cm_s: 0,
            heading: 0,
            flags: flags::FIX_VALID,
            odometer_m: None,
        }
    }

    fn fleet(capacity: usize) -> (Fleet, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (
            Fleet::new(capacity, 16, Duration::from_secs(600), m.clone()),
            m,
        )
    }

    fn id(s: &str) -> VehicleId {
        VehicleId::parse(s).unwrap()
    }

    /// Every fan-out queue's entry is an `Update`: an event must not make
    /// it bigger than a position (the memory budget counts it).
    #[test]
    fn an_event_is_no_bigger_than_a_position() {
        use std::mem::size_of;
        assert!(size_of::<FleetEvent>() <= size_of::<PositionUpdate>());
        assert_eq!(size_of::<Update>(), size_of::<PositionUpdate>());
        assert_eq!(size_of::<driving::Track>(), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_are_dropped_and_counted_gaps_counted_late_fixes_do_not_overwrite() {
        let (mut f, m) = fleet(4);
        let mut out = Vec::new();
        let now = Instant::now();
        let t = id("t");
        assert_eq!(
            f.apply_position(&t, &fix(1, 1000, 52_000_000), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert_eq!(
            f.apply_position(&t, &fix(4, 4000, 52_000_300), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert_eq!(Metrics::get(&m.seq_gaps_total), 2);
        assert_eq!(
            f.apply_position(&t, &fix(4, 4000, 52_000_300), true, now, 0, &mut out),
            Outcome::Duplicate
        );
        assert_eq!(
            f.apply_position(&t, &fix(1, 1000, 52_000_000), true, now, 0, &mut out),
            Outcome::Duplicate
        );
        assert_eq!(Metrics::get(&m.positions_duplicate_total), 2);
        // 3 arrives late: forwarded (late = true) but the latest stays 4.
        out.clear();
        assert_eq!(
            f.apply_position(&t, &fix(3, 3000, 52_000_200), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert!(matches!(&out[..], [Update::Position(p)] if p.late && p.position.seq == 3));
        assert_eq!(f.get(&t).unwrap().position.unwrap().seq, 4);
        assert_eq!(Metrics::get(&m.positions_late_total), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unsequenced_fix_older_than_the_latest_does_not_overwrite_it() {
        let (mut f, _) = fleet(4);
        let mut out = Vec::new();
        let t = id("t");
        f.apply_position(&t, &fix(0, 5000, 1), false, Instant::now(), 0, &mut out);
        f.apply_position(&t, &fix(0, 4000, 2), false, Instant::now(), 0, &mut out);
        assert_eq!(f.get(&t).unwrap().position.unwrap().lat_e6, 1);
        f.apply_position(&t, &fix(0, 6000, 3), false, Instant::now(), 0, &mut out);
        assert_eq!(f.get(&t).unwrap().position.unwrap().lat_e6, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn odometer_sums_valid_fixes_only() {
        let (mut f, _) = fleet(4);
        let mut out = Vec::new();
        let t = id("t");
        let now = Instant::now();
        f.apply_position(&t, &fix(1, 1, 52_000_000), true, now, 0, &mut out);
        f.apply_position(&t, &fix(2, 2, 52_001_000), true, now, 0, &mut out); // ~111 m north
        let mut invalid = fix(3, 3, 53_000_000);
        invalid.flags = 0;
        f.apply_position(&t, &invalid, true, now, 0, &mut out);
        let odo = f.get(&t).unwrap().odometer_m;
        assert!((odo - 111.2).abs() < 0.5, "{odo}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_refuses_new_vehicles_and_keeps_known_ones() {
        let (mut f, m) = fleet(2);
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(
            f.apply_position(&id("a"), &fix(1, 1, 0), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert_eq!(
            f.apply_position(&id("b"), &fix(1, 1, 0), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert_eq!(
            f.apply_position(&id("c"), &fix(1, 1, 0), true, now, 0, &mut out),
            Outcome::Refused
        );
        assert_eq!(
            f.apply_position(&id("a"), &fix(2, 2, 0), true, now, 0, &mut out),
            Outcome::Accepted
        );
        assert_eq!(Metrics::get(&m.fleet_vehicles_refused_total), 1);
        assert_eq!(f.len(), 2);
    }

    fn presences(out: &[Update]) -> Vec<(Presence, Presence)> {
        out.iter()
            .filter_map(|u| match u {
                Update::Event(FleetEvent {
                    kind: EventKind::StatusChanged { from, to },
                    ..
                }) => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn status_goes_online_unknown_after_silence_and_offline_on_last_will() {
        use Presence::*;
        let (mut f, _) = fleet(4);
        let mut out = Vec::new();
        let t = id("t");
        f.apply_position(&t, &fix(1, 1, 0), true, Instant::now(), 0, &mut out);
        assert_eq!(presences(&out), vec![(Unknown, Online)]);

        out.clear();
        tokio::time::advance(Duration::from_secs(599)).await;
        f.sweep(Instant::now(), 0, &mut out);
        assert!(
            presences(&out).is_empty(),
            "still online before the timeout"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        f.sweep(Instant::now(), 0, &mut out);
        assert_eq!(presences(&out), vec![(Online, Unknown)]);
        f.sweep(Instant::now(), 0, &mut out);
        assert_eq!(presences(&out).len(), 1, "one event per transition");

        out.clear();
        f.apply_position(&t, &fix(2, 2, 0), true, Instant::now(), 0, &mut out);
        let will = Status {
            time_ms: 0,
            online: false,
            ignition: false,
            supply_mv: 0,
            firmware: Default::default(),
        };
        f.apply_status(&t, &will, Instant::now(), 0, &mut out);
        assert_eq!(presences(&out), vec![(Unknown, Online), (Online, Offline)]);
        assert_eq!(f.get(&t).unwrap().presence, Offline);

        // Offline stays offline through the sweep: the will said so.
        out.clear();
        tokio::time::advance(Duration::from_secs(3600)).await;
        f.sweep(Instant::now(), 0, &mut out);
        assert!(presences(&out).is_empty());
    }
}
