//! Geofences: circles and polygons, and which vehicles are in them.
//!
//! In: fence definitions (the config file's `[[geofences]]`, and edits over
//! REST), and each vehicle's newest valid fix, by slot
//! ([`Geofences::evaluate`], called by the fleet table). Out:
//! [`EventKind::GeofenceEnter`] / [`EventKind::GeofenceExit`] events, one
//! per transition, appended for the fan-out (so they reach
//! `fleet/events/geofence_enter|exit`, the live feed and upstream); and the
//! lowest `speed_limit_kmh` of the fences the vehicle is in, for overspeed
//! (`super::driving`).
//!
//! Hysteresis: a vehicle counts as inside from the fix that crosses the
//! boundary until one more than the fence's `exit_buffer_m` outside it, so
//! GPS noise at a boundary does not flap. Dwell: with `dwell_s`, the enter
//! is reported only once the vehicle has counted as inside for that long
//! (by fix time, judged at its fixes); leaving before then is silent, and
//! so is the exit of an enter never reported. Restart: membership lives in
//! memory; after a start, each vehicle's first fix sets its membership
//! silently, dwell counted as done (a vehicle already inside does not
//! enter twice; a transition while the gateway was down is not reported).
//!
//! Bound: at most `geofence.max_fences` fences of at most
//! `geofence.max_vertices` vertices (a config past either does not start,
//! `crate::config::geofence`); per vehicle at most [`MAX_MEMBERSHIPS`]
//! fences at once, waiting dwells included, in a fixed array (one more is
//! counted, `geofence_memberships_refused_total`, and ignored); the index
//! holds each fence once per coarse cell its box covers, at most
//! [`MAX_INDEX_CELLS_PER_FENCE`], rebuilt on each edit (a larger fence is
//! looked at for every fix instead). Evaluation allocates nothing and looks
//! only at the fences indexed in the fix's coarse cell, each first by its
//! box (four comparisons) and only then by its shape.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use heapless::Vec as FixedVec;

mod shape;

use super::{EventKind, FleetEvent, Slot, Update};
use crate::config::geofence::{FenceConfig, GeofenceConfig};
use crate::metrics::Metrics;
use crate::topics::VehicleId;
use shape::{Candidate, Shape};

/// Fences one vehicle can be in at once.
pub const MAX_MEMBERSHIPS: usize = 8;
/// One vehicle's fences, in a fixed array with a one-byte length (72
/// bytes with the `Option` that says whether it is known yet).
pub type Memberships = FixedVec<Member, MAX_MEMBERSHIPS, u8>;
/// Index cells, in degrees (about 5.5 km north–south).
const INDEX_DEG: f64 = 0.05;
/// A fence whose box covers more index cells (about 20 × 15 km) is kept
/// out of the index and looked at for every fix (its box first, so that
/// costs four comparisons): the index stays at most this many entries per
/// fence.
pub const MAX_INDEX_CELLS_PER_FENCE: i64 = 16;
const M_PER_DEG: f64 = 111_195.0;

/// A fence's id: its position in the config, from 1.
pub type FenceId = u32;

/// One fence a vehicle is in (or waiting out its dwell in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub fence: FenceId,
    /// 0 once the enter counted; else the fix time, in whole seconds since
    /// the epoch, from which it counts (the dwell still running).
    dwell_until_s: u32,
}

impl Member {
    /// Whether its enter was reported (no dwell left).
    pub fn entered(&self) -> bool {
        self.dwell_until_s == 0
    }
}

/// The speed limit a fence sets, and which fence set it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FenceLimit {
    pub kmh: f64,
    pub fence: FenceId,
}

#[derive(Debug, Clone)]
struct Fence {
    id: FenceId,
    name: String,
    /// As it was given, for `GET /geofences`.
    config: FenceConfig,
    shape: Shape,
    exit_buffer_m: f64,
    dwell_ms: u64,
    speed_limit_kmh: Option<f64>,
}

impl Fence {
    /// A fence from its config, which `GeofenceConfig::check` validated at
    /// start; `None` for one it would have refused.
    fn from_config(id: FenceId, c: &FenceConfig, limits: &GeofenceConfig) -> Option<Fence> {
        let shape = Shape::of(c)?;
        Some(Fence {
            id,
            name: c.name.clone(),
            config: c.clone(),
            shape,
            exit_buffer_m: c.exit_buffer_m.unwrap_or(limits.exit_buffer_m).max(0.0),
            dwell_ms: c.dwell_s.unwrap_or(limits.dwell_s).saturating_mul(1000),
            speed_limit_kmh: c.speed_limit_kmh,
        })
    }

    fn bounds(&self, pad_m: f64) -> (f64, f64, f64, f64) {
        self.shape.bounds(pad_m)
    }

    fn outside_m(&self, lat: f64, lon: f64) -> f64 {
        self.shape.outside_m(lat, lon)
    }

    /// A new member at a fix of `time_ms`: entered at once without a dwell
    /// (or when `silent`, the first fix after a start), else waiting.
    fn member(&self, time_ms: u64, silent: bool) -> Member {
        let dwell_until_s = if self.dwell_ms == 0 || silent {
            0
        } else {
            u32::try_from(time_ms.saturating_add(self.dwell_ms).div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1)
        };
        Member {
            fence: self.id,
            dwell_until_s,
        }
    }
}

fn index_cell(lat: f64, lon: f64) -> (i32, i32) {
    (
        (lat / INDEX_DEG).floor() as i32,
        (lon / INDEX_DEG).floor() as i32,
    )
}

/// Hashes an index cell with one multiply: the keys are the fences' cells,
/// set by the operator, so a position cannot make the table degrade; the
/// default SipHash costs more than the rest of a lookup.
#[derive(Default, Clone, Copy)]
struct CellHasher(u64);

impl Hasher for CellHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Which fences may hold a vehicle at (lat, lon), and which vehicle is in
/// which fence.
pub struct Geofences {
    /// By id; ids are never reused, so an event's fence id names one fence.
    fences: BTreeMap<FenceId, Fence>,
    next_id: FenceId,
    limits: GeofenceConfig,
    /// Coarse cell → the fences whose box meets it.
    index: HashMap<(i32, i32), Vec<Candidate>, BuildHasherDefault<CellHasher>>,
    /// Fences too big to index cell by cell: looked at for every fix.
    large: Vec<Candidate>,
    /// Per slot: the fences it is in; `None` until its first fix after start.
    members: Vec<Option<Memberships>>,
    metrics: Arc<Metrics>,
}

/// A fence as `GET /geofences` shows it: its id and its definition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FenceView {
    pub id: FenceId,
    #[serde(flatten)]
    pub fence: FenceConfig,
}

/// Why a fence edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum FenceEditError {
    #[error("{0}")]
    Invalid(String),
    #[error("at most geofence.max_fences = {0} fences")]
    Full(usize),
    #[error("no geofence {0}")]
    NotFound(FenceId),
}

fn event(slot: Slot, vehicle: &VehicleId, time_ms: u64, kind: EventKind) -> Update {
    Update::Event(FleetEvent::new(slot, vehicle, time_ms, kind))
}

impl Geofences {
    /// The fences of a checked config (ids from 1, in file order), for
    /// `capacity` vehicles.
    pub fn new(config: &GeofenceConfig, capacity: usize, metrics: Arc<Metrics>) -> Geofences {
        let mut geofences = Geofences {
            fences: BTreeMap::new(),
            next_id: 1,
            limits: GeofenceConfig {
                fences: Vec::new(),
                ..config.clone()
            },
            index: HashMap::default(),
            large: Vec::new(),
            members: vec![None; capacity],
            metrics,
        };
        for c in config.fences.iter().take(config.max_fences.get()) {
            let id = geofences.next_id;
            geofences.next_id += 1;
            if let Some(fence) = Fence::from_config(id, c, config) {
                geofences.fences.insert(id, fence);
            }
        }
        geofences.reindex();
        geofences
    }

    /// Rebuilds the index (at start and after an edit: fences change
    /// rarely, positions all the time).
    fn reindex(&mut self) {
        self.index.clear();
        self.large.clear();
        for (&id, fence) in &self.fences {
            let bounds = fence.bounds(0.0);
            let candidate = Candidate::new(bounds, id);
            let (s, w, n, e) = bounds;
            let ((r0, c0), (r1, c1)) = (index_cell(s, w), index_cell(n, e));
            let cells = (i64::from(r1) - i64::from(r0) + 1) * (i64::from(c1) - i64::from(c0) + 1);
            if cells > MAX_INDEX_CELLS_PER_FENCE {
                self.large.push(candidate);
                continue;
            }
            for r in r0..=r1 {
                for c in c0..=c1 {
                    self.index.entry((r, c)).or_default().push(candidate);
                }
            }
        }
        // what the memory budget counts: no spare capacity left behind
        self.index.values_mut().for_each(Vec::shrink_to_fit);
        self.index.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The name of fence `id`.
    pub fn name(&self, id: FenceId) -> Option<&str> {
        self.fences.get(&id).map(|f| f.name.as_str())
    }

    /// Every fence, by id.
    pub fn list(&self) -> Vec<FenceView> {
        self.fences
            .values()
            .map(|f| FenceView {
                id: f.id,
                fence: f.config.clone(),
            })
            .collect()
    }

    pub fn get(&self, id: FenceId) -> Option<FenceView> {
        self.fences.get(&id).map(|f| FenceView {
            id,
            fence: f.config.clone(),
        })
    }

    /// Creates (`id: None`) or replaces a fence; then the caller settles
    /// the vehicles against it ([`Geofences::settle`]).
    pub fn put(
        &mut self,
        id: Option<FenceId>,
        config: FenceConfig,
    ) -> Result<FenceId, FenceEditError> {
        self.limits
            .check_fence(&config)
            .map_err(FenceEditError::Invalid)?;
        let id = match id {
            Some(id) if self.fences.contains_key(&id) => id,
            Some(id) => return Err(FenceEditError::NotFound(id)),
            None if self.fences.len() >= self.limits.max_fences.get() => {
                return Err(FenceEditError::Full(self.limits.max_fences.get()))
            }
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.saturating_add(1);
                id
            }
        };
        let fence = Fence::from_config(id, &config, &self.limits)
            .ok_or_else(|| FenceEditError::Invalid("not a valid fence".into()))?;
        self.fences.insert(id, fence);
        self.reindex();
        Ok(id)
    }

    /// Deletes a fence; then the caller settles its members (they exit).
    pub fn delete(&mut self, id: FenceId) -> Result<(), FenceEditError> {
        self.fences
            .remove(&id)
            .ok_or(FenceEditError::NotFound(id))?;
        self.reindex();
        Ok(())
    }

    /// After an edit of fence `id`: the transition it implies for a vehicle
    /// whose membership is known, with its newest fix at (lat, lon) taken
    /// at `fix_ms` — enter (or start the dwell) if now inside, exit if it
    /// was a member and is now past the buffer (or the fence is gone) — as
    /// at most one event, stamped `now_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn settle(
        &mut self,
        id: FenceId,
        slot: Slot,
        vehicle: &VehicleId,
        (lat, lon): (f64, f64),
        fix_ms: u64,
        now_ms: u64,
        out: &mut Vec<Update>,
    ) {
        let Some(Some(members)) = self.members.get_mut(slot as usize) else {
            return;
        };
        let was = members.iter().position(|m| m.fence == id);
        let fence = self.fences.get(&id);
        let kind = match (fence, was) {
            (None, Some(i)) => members
                .swap_remove(i)
                .entered()
                .then_some(EventKind::GeofenceExit { fence: id }),
            (Some(f), Some(i)) if f.outside_m(lat, lon) > f.exit_buffer_m => members
                .swap_remove(i)
                .entered()
                .then_some(EventKind::GeofenceExit { fence: id }),
            (Some(f), None) if f.outside_m(lat, lon) <= 0.0 => {
                let member = f.member(fix_ms, false);
                match members.push(member) {
                    Ok(()) => member
                        .entered()
                        .then_some(EventKind::GeofenceEnter { fence: id }),
                    Err(_) => {
                        Metrics::inc(&self.metrics.geofence_memberships_refused_total);
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(event(slot, vehicle, now_ms, kind));
        }
    }

    /// The fences slot is in, waiting dwells included (empty before its
    /// first fix).
    pub fn memberships(&self, slot: Slot) -> &[Member] {
        self.members
            .get(slot as usize)
            .and_then(|m| m.as_ref())
            .map_or(&[], |m| m.as_slice())
    }

    /// A vehicle's newest valid fix: the transitions it makes, into `out`;
    /// returns the lowest speed limit of the fences it is now in.
    pub fn evaluate(
        &mut self,
        slot: Slot,
        vehicle: &VehicleId,
        lat: f64,
        lon: f64,
        time_ms: u64,
        out: &mut Vec<Update>,
    ) -> Option<FenceLimit> {
        let members = self.members.get_mut(slot as usize)?;
        // known from now on, even with no fences yet: a fence created
        // later settles this vehicle at once
        let first_fix = members.is_none();
        let members = members.get_or_insert_with(FixedVec::new);
        if self.fences.is_empty() {
            return None;
        }
        let mut limit = None::<FenceLimit>;
        let mut lower = |f: &Fence| {
            if let Some(kmh) = f.speed_limit_kmh {
                if limit.is_none_or(|l| kmh < l.kmh) {
                    limit = Some(FenceLimit { kmh, fence: f.id });
                }
            }
        };
        let now_s = time_ms / 1000;
        // exits and dwells: every fence it is in, candidate or not (one
        // not indexed here is farther than its buffer)
        let mut i = 0;
        while i < members.len() {
            let member = &mut members[i];
            let fence = self.fences.get(&member.fence);
            match fence {
                Some(f) if f.outside_m(lat, lon) <= f.exit_buffer_m => {
                    if !member.entered() && now_s >= u64::from(member.dwell_until_s) {
                        member.dwell_until_s = 0;
                        out.push(event(
                            slot,
                            vehicle,
                            time_ms,
                            EventKind::GeofenceEnter { fence: f.id },
                        ));
                    }
                    lower(f);
                    i += 1;
                }
                _ => {
                    let gone = members.swap_remove(i);
                    if gone.entered() {
                        out.push(event(
                            slot,
                            vehicle,
                            time_ms,
                            EventKind::GeofenceExit { fence: gone.fence },
                        ));
                    }
                }
            }
        }
        let candidates: &[Candidate] = self
            .index
            .get(&index_cell(lat, lon))
            .map_or(&[], |v| v.as_slice());
        for candidate in candidates.iter().chain(&self.large) {
            if !candidate.holds(lat, lon) || members.iter().any(|m| m.fence == candidate.id) {
                continue;
            }
            let Some(fence) = self.fences.get(&candidate.id) else {
                continue;
            };
            if fence.outside_m(lat, lon) > 0.0 {
                continue;
            }
            let member = fence.member(time_ms, first_fix);
            if members.push(member).is_err() {
                Metrics::inc(&self.metrics.geofence_memberships_refused_total);
                continue;
            }
            lower(fence);
            if member.entered() && !first_fix {
                out.push(event(
                    slot,
                    vehicle,
                    time_ms,
                    EventKind::GeofenceEnter { fence: fence.id },
                ));
            }
        }
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::geofence::Circle;

    const DEPOT: (f64, f64) = (52.3731, 4.8922);

    fn circle(name: &str, radius_m: f64) -> FenceConfig {
        FenceConfig {
            name: name.into(),
            circle: Some(Circle {
                lat: DEPOT.0,
                lon: DEPOT.1,
                radius_m,
            }),
            ..Default::default()
        }
    }

    fn fences(list: Vec<FenceConfig>) -> (Geofences, Arc<Metrics>) {
        let config = GeofenceConfig {
            fences: list,
            ..Default::default()
        };
        config.check().unwrap();
        let metrics = Arc::new(Metrics::default());
        (Geofences::new(&config, 4, metrics.clone()), metrics)
    }

    /// A point `north_m` metres north and `east_m` east of the depot.
    fn at(north_m: f64, east_m: f64) -> (f64, f64) {
        (
            DEPOT.0 + north_m / M_PER_DEG,
            DEPOT.1 + east_m / (M_PER_DEG * DEPOT.0.to_radians().cos()),
        )
    }

    fn kinds(out: &[Update]) -> Vec<EventKind> {
        out.iter()
            .filter_map(|u| match u {
                Update::Event(e) => Some(e.kind),
                _ => None,
            })
            .collect()
    }

    fn step(g: &mut Geofences, at: (f64, f64)) -> Vec<EventKind> {
        step_at(g, at, 0)
    }

    fn step_at(g: &mut Geofences, (lat, lon): (f64, f64), time_ms: u64) -> Vec<EventKind> {
        let mut out = Vec::new();
        g.evaluate(
            0,
            &VehicleId::parse("v1").unwrap(),
            lat,
            lon,
            time_ms,
            &mut out,
        );
        kinds(&out)
    }

    #[test]
    fn one_enter_and_one_exit_past_the_buffer() {
        let (mut g, _) = fences(vec![circle("depot", 100.0)]);
        assert_eq!(
            step(&mut g, at(500.0, 0.0)),
            vec![],
            "first fix: outside, silent"
        );
        assert_eq!(
            step(&mut g, at(99.0, 0.0)),
            vec![EventKind::GeofenceEnter { fence: 1 }]
        );
        assert_eq!(step(&mut g, at(0.0, 0.0)), vec![]);
        assert_eq!(
            step(&mut g, at(120.0, 0.0)),
            vec![],
            "outside, but within the 25 m buffer"
        );
        assert_eq!(
            step(&mut g, at(130.0, 0.0)),
            vec![EventKind::GeofenceExit { fence: 1 }]
        );
        assert_eq!(step(&mut g, at(3_000.0, 0.0)), vec![]);
        assert_eq!(g.memberships(0), &[]);
    }

    /// Parked on the boundary for an hour at 1 Hz with ±15 m of GPS noise:
    /// one enter, no flaps.
    #[test]
    fn gps_noise_at_the_boundary_makes_no_flaps() {
        let (mut g, _) = fences(vec![circle("depot", 100.0)]);
        step(&mut g, at(400.0, 0.0));
        let mut seed = 11u64;
        let mut noise = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 30.0
        };
        let mut events = Vec::new();
        for _ in 0..3600 {
            let p = at(100.0 + noise(), noise());
            events.extend(step(&mut g, p));
        }
        assert_eq!(events, vec![EventKind::GeofenceEnter { fence: 1 }]);
    }

    fn noise(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 30.0
    }

    /// With a dwell: the enter comes once the vehicle has been inside for
    /// `dwell_s`; a vehicle that drives through quicker enters nothing and
    /// exits nothing; one parked on the boundary with ±15 m of noise for
    /// an hour enters once, after the dwell, and never flaps.
    #[test]
    fn a_dwell_delays_the_enter_and_a_quick_pass_makes_no_events() {
        let (mut g, _) = fences(vec![FenceConfig {
            dwell_s: Some(30),
            ..circle("depot", 100.0)
        }]);
        const T: u64 = 1_795_341_600_000;
        let s = |t: u64| T + t * 1000;
        step_at(&mut g, at(500.0, 0.0), s(0));
        // south at 25 m/s: in at t = 16, out past the buffer at t = 26
        let mut events = Vec::new();
        for t in 1..=40 {
            let north = 500.0 - t as f64 * 25.0;
            events.extend(step_at(&mut g, at(north, 0.0), s(t)));
        }
        assert_eq!(events, vec![], "a pass quicker than the dwell");
        assert_eq!(g.memberships(0), &[]);

        // parked on the boundary for an hour
        let mut seed = 5u64;
        let mut at_s = Vec::new();
        for t in 100..3700 {
            let p = at(100.0 + noise(&mut seed), noise(&mut seed));
            for e in step_at(&mut g, p, s(t)) {
                at_s.push((t, e));
            }
        }
        assert_eq!(at_s.len(), 1, "{at_s:?}");
        let (t, e) = at_s[0];
        assert_eq!(e, EventKind::GeofenceEnter { fence: 1 });
        assert!(t >= 130, "entered at {t}, before the 30 s dwell");
    }

    #[test]
    fn a_dwell_counts_only_while_inside_and_the_exit_follows_the_enter() {
        let (mut g, _) = fences(vec![FenceConfig {
            dwell_s: Some(10),
            ..circle("depot", 100.0)
        }]);
        const T: u64 = 1_795_341_600_000;
        let s = |t: u64| T + t * 1000;
        step_at(&mut g, at(500.0, 0.0), s(0));
        assert_eq!(step_at(&mut g, at(0.0, 0.0), s(1)), vec![]);
        assert_eq!(step_at(&mut g, at(0.0, 0.0), s(10)), vec![]);
        assert_eq!(
            step_at(&mut g, at(0.0, 0.0), s(11)),
            vec![EventKind::GeofenceEnter { fence: 1 }]
        );
        assert_eq!(step_at(&mut g, at(0.0, 0.0), s(12)), vec![]);
        assert_eq!(
            step_at(&mut g, at(500.0, 0.0), s(13)),
            vec![EventKind::GeofenceExit { fence: 1 }]
        );
        // leaving past the buffer restarts the dwell
        step_at(&mut g, at(0.0, 0.0), s(20));
        step_at(&mut g, at(500.0, 0.0), s(25));
        assert_eq!(step_at(&mut g, at(0.0, 0.0), s(29)), vec![]);
        assert_eq!(step_at(&mut g, at(0.0, 0.0), s(38)), vec![]);
        assert_eq!(
            step_at(&mut g, at(0.0, 0.0), s(39)),
            vec![EventKind::GeofenceEnter { fence: 1 }]
        );
    }

    #[test]
    fn the_lowest_limit_of_the_fences_it_is_in_is_returned() {
        let (mut g, _) = fences(vec![
            FenceConfig {
                speed_limit_kmh: Some(50.0),
                ..circle("zone", 1_000.0)
            },
            FenceConfig {
                speed_limit_kmh: Some(30.0),
                ..circle("school", 100.0)
            },
            circle("no limit", 2_000.0),
        ]);
        let vehicle = VehicleId::parse("v1").unwrap();
        let mut limit_at =
            |(lat, lon): (f64, f64)| g.evaluate(0, &vehicle, lat, lon, 0, &mut Vec::new());
        assert_eq!(limit_at(at(5_000.0, 0.0)), None);
        assert_eq!(limit_at(at(1_500.0, 0.0)), None);
        assert_eq!(
            limit_at(at(500.0, 0.0)),
            Some(FenceLimit {
                kmh: 50.0,
                fence: 1
            })
        );
        assert_eq!(
            limit_at(at(0.0, 0.0)),
            Some(FenceLimit {
                kmh: 30.0,
                fence: 2
            })
        );
    }

    #[test]
    fn polygons_in_geojson_order_with_an_exit_buffer() {
        let ring = vec![
            [4.880, 52.370],
            [4.900, 52.370],
            [4.900, 52.380],
            [4.880, 52.380],
            [4.880, 52.370],
        ];
        let (mut g, _) = fences(vec![FenceConfig {
            name: "centre".into(),
            circle: None,
            polygon: Some(ring),
            exit_buffer_m: Some(40.0),
            ..Default::default()
        }]);
        assert_eq!(step(&mut g, (52.365, 4.890)), vec![]);
        assert_eq!(
            step(&mut g, (52.371, 4.890)),
            vec![EventKind::GeofenceEnter { fence: 1 }]
        );
        // 30 m south of the southern edge: inside the buffer
        assert_eq!(step(&mut g, (52.370 - 30.0 / M_PER_DEG, 4.890)), vec![]);
        assert_eq!(
            step(&mut g, (52.370 - 50.0 / M_PER_DEG, 4.890)),
            vec![EventKind::GeofenceExit { fence: 1 }]
        );
        assert_eq!(g.name(1), Some("centre"));
    }

    #[test]
    fn the_first_fix_after_start_sets_membership_silently() {
        let (mut g, _) = fences(vec![circle("depot", 100.0)]);
        assert_eq!(
            step(&mut g, at(10.0, 0.0)),
            vec![],
            "already inside: no second enter"
        );
        assert_eq!(
            g.memberships(0),
            &[Member {
                fence: 1,
                dwell_until_s: 0
            }]
        );
        assert_eq!(
            step(&mut g, at(400.0, 0.0)),
            vec![EventKind::GeofenceExit { fence: 1 }]
        );
    }

    #[test]
    fn a_fence_too_big_to_index_is_still_evaluated() {
        let (mut g, _) = fences(vec![circle("region", 200_000.0), circle("depot", 100.0)]);
        assert_eq!(g.large.len(), 1);
        step(&mut g, at(300_000.0, 0.0));
        assert_eq!(
            step(&mut g, at(150_000.0, 0.0)),
            vec![EventKind::GeofenceEnter { fence: 1 }]
        );
        let mut both = step(&mut g, at(0.0, 0.0));
        both.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(both, vec![EventKind::GeofenceEnter { fence: 2 }]);
    }

    #[test]
    fn more_fences_at_once_than_a_vehicle_holds_are_counted() {
        let list = (0..MAX_MEMBERSHIPS + 2)
            .map(|i| circle(&format!("f{i}"), 100.0))
            .collect();
        let (mut g, metrics) = fences(list);
        step(&mut g, at(1_000.0, 0.0));
        let entered = step(&mut g, at(0.0, 0.0));
        assert_eq!(entered.len(), MAX_MEMBERSHIPS);
        let refused = metrics
            .geofence_memberships_refused_total
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(refused, 2);
    }

    #[test]
    fn bad_fences_refuse_the_start_by_name() {
        let mut bad = circle("depot", -1.0);
        let config = GeofenceConfig {
            fences: vec![bad.clone()],
            ..Default::default()
        };
        let err = config.check().unwrap_err();
        assert!(
            err.contains("\"depot\"") && err.contains("radius_m"),
            "{err}"
        );
        bad.circle = None;
        bad.polygon = Some(vec![[52.0, 120.0], [4.0, 52.0], [4.1, 52.1]]);
        let config = GeofenceConfig {
            fences: vec![bad],
            ..Default::default()
        };
        let err = config.check().unwrap_err();
        assert!(err.contains("GeoJSON order"), "{err}");
    }
}
