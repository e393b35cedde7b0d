//! Geofences: circles and polygons, and which vehicles are in them.
//!
//! In: fence definitions (the config file's `[[geofences]]`), and each
//! vehicle's newest valid fix, by slot ([`Geofences::evaluate`], called by
//! the fleet table). Out: [`EventKind::GeofenceEnter`] / [`EventKind::GeofenceExit`]
//! events, one per transition, appended for the fan-out (so they reach
//! `fleet/events/geofence_enter|exit`, the live feed and upstream).
//!
//! Hysteresis: a vehicle enters at the boundary, and exits only once it is
//! more than the fence's `exit_buffer_m` outside it, so GPS noise at a
//! boundary does not flap. Restart: membership lives in memory; after a
//! start, each vehicle's first fix sets its membership silently (a vehicle
//! already inside does not enter twice; a transition while the gateway was
//! down is not reported).
//!
//! Bound: at most `geofence.max_fences` fences of at most
//! `geofence.max_vertices` vertices (a config past either does not start,
//! `crate::config::geofence`); per
//! vehicle at most [`MAX_MEMBERSHIPS`] fences at once, in a fixed array
//! (one more is counted, `geofence_memberships_refused_total`, and
//! ignored); the index holds each fence once per coarse cell its box
//! (with the buffer) covers, at most [`MAX_INDEX_CELLS_PER_FENCE`], built
//! once (a larger fence is looked at for every fix instead). Evaluation allocates nothing and
//! looks only at the fences indexed in the fix's coarse cell.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use heapless::Vec as FixedVec;

use super::{haversine_m, EventKind, FleetEvent, Slot, Update};
use crate::config::geofence::{polygon_vertices, FenceConfig, GeofenceConfig};
use crate::metrics::Metrics;
use crate::topics::VehicleId;

/// Fences one vehicle can be in at once.
pub const MAX_MEMBERSHIPS: usize = 8;
/// Index cells, in degrees (about 5.5 km north–south).
const INDEX_DEG: f64 = 0.05;
/// A fence whose box covers more index cells (about 60 × 60 km) is kept
/// out of the index and looked at for every fix: the index stays at most
/// this many entries per fence.
pub const MAX_INDEX_CELLS_PER_FENCE: i64 = 128;
const M_PER_DEG: f64 = 111_195.0;

/// A fence's id: its position in the config, from 1.
pub type FenceId = u32;

#[derive(Debug, Clone)]
enum Shape {
    Circle {
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
    /// (lat, lon) vertices; the ring closes itself.
    Polygon(Vec<(f64, f64)>),
}

#[derive(Debug, Clone)]
struct Fence {
    id: FenceId,
    name: String,
    /// As it was given, for `GET /geofences`.
    config: FenceConfig,
    shape: Shape,
    exit_buffer_m: f64,
}

impl Fence {
    /// A fence from its config, which `GeofenceConfig::check` validated at
    /// start; `None` for one it would have refused.
    fn from_config(id: FenceId, c: &FenceConfig, limits: &GeofenceConfig) -> Option<Fence> {
        let shape = match (&c.circle, &c.polygon) {
            (Some(circle), None) => Shape::Circle {
                lat: circle.lat,
                lon: circle.lon,
                radius_m: circle.radius_m,
            },
            (None, Some(ring)) => {
                let vertices = polygon_vertices(ring);
                if vertices.len() < 3 {
                    return None;
                }
                Shape::Polygon(vertices)
            }
            _ => return None,
        };
        Some(Fence {
            id,
            name: c.name.clone(),
            config: c.clone(),
            shape,
            exit_buffer_m: c.exit_buffer_m.unwrap_or(limits.exit_buffer_m).max(0.0),
        })
    }

    /// (south, west, north, east) in degrees, widened by the exit buffer.
    fn bounds(&self) -> (f64, f64, f64, f64) {
        let (s, w, n, e, lat) = match &self.shape {
            Shape::Circle { lat, lon, radius_m } => {
                let dlat = radius_m / M_PER_DEG;
                let dlon = dlat / lat.to_radians().cos().max(0.01);
                (lat - dlat, lon - dlon, lat + dlat, lon + dlon, *lat)
            }
            Shape::Polygon(v) => {
                let fold = |f: fn(f64, f64) -> f64, pick: fn(&(f64, f64)) -> f64, init| {
                    v.iter().map(pick).fold(init, f)
                };
                let s = fold(f64::min, |p| p.0, f64::INFINITY);
                let n = fold(f64::max, |p| p.0, f64::NEG_INFINITY);
                let w = fold(f64::min, |p| p.1, f64::INFINITY);
                let e = fold(f64::max, |p| p.1, f64::NEG_INFINITY);
                (s, w, n, e, (s + n) / 2.0)
            }
        };
        let pad_lat = self.exit_buffer_m / M_PER_DEG;
        let pad_lon = pad_lat / lat.to_radians().cos().max(0.01);
        (s - pad_lat, w - pad_lon, n + pad_lat, e + pad_lon)
    }

    /// Metres outside the fence (≤ 0 inside).
    fn outside_m(&self, lat: f64, lon: f64) -> f64 {
        match &self.shape {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => haversine_m(lat, lon, *clat, *clon) - radius_m,
            Shape::Polygon(v) => {
                if contains(v, lat, lon) {
                    0.0
                } else {
                    edge_distance_m(v, lat, lon)
                }
            }
        }
    }
}

/// Even-odd ray casting on (lat, lon) vertices.
fn contains(v: &[(f64, f64)], lat: f64, lon: f64) -> bool {
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (yi, xi) = v[i];
        let (yj, xj) = v[j];
        if (yi > lat) != (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Distance to the nearest edge, on a flat projection around the point
/// (fences are small next to the Earth).
fn edge_distance_m(v: &[(f64, f64)], lat: f64, lon: f64) -> f64 {
    let kx = M_PER_DEG * lat.to_radians().cos();
    let to_xy = |(a, o): (f64, f64)| ((o - lon) * kx, (a - lat) * M_PER_DEG);
    let mut best = f64::INFINITY;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (ax, ay) = to_xy(v[j]);
        let (bx, by) = to_xy(v[i]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 {
            (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (px, py) = (ax + t * dx, ay + t * dy);
        best = best.min((px * px + py * py).sqrt());
        j = i;
    }
    best
}

fn index_cell(lat: f64, lon: f64) -> (i32, i32) {
    (
        (lat / INDEX_DEG).floor() as i32,
        (lon / INDEX_DEG).floor() as i32,
    )
}

/// Which fences may hold a vehicle at (lat, lon), and which vehicle is in
/// which fence.
pub struct Geofences {
    /// By id; ids are never reused, so an event's fence id names one fence.
    fences: BTreeMap<FenceId, Fence>,
    next_id: FenceId,
    limits: GeofenceConfig,
    /// Coarse cell → the fences whose widened box meets it.
    index: HashMap<(i32, i32), Vec<FenceId>>,
    /// Fences too big to index cell by cell: looked at for every fix.
    large: Vec<FenceId>,
    /// Per slot: the fences it is in; `None` until its first fix after start.
    members: Vec<Option<FixedVec<FenceId, MAX_MEMBERSHIPS>>>,
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
            index: HashMap::new(),
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
            let (s, w, n, e) = fence.bounds();
            let ((r0, c0), (r1, c1)) = (index_cell(s, w), index_cell(n, e));
            let cells = (i64::from(r1) - i64::from(r0) + 1) * (i64::from(c1) - i64::from(c0) + 1);
            if cells > MAX_INDEX_CELLS_PER_FENCE {
                self.large.push(id);
                continue;
            }
            for r in r0..=r1 {
                for c in c0..=c1 {
                    self.index.entry((r, c)).or_default().push(id);
                }
            }
        }
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
    /// at (lat, lon) whose membership is known — enter if now inside, exit
    /// if it was a member and is now past the buffer (or the fence is
    /// gone) — as one event.
    #[allow(clippy::too_many_arguments)]
    pub fn settle(
        &mut self,
        id: FenceId,
        slot: Slot,
        vehicle: &VehicleId,
        lat: f64,
        lon: f64,
        time_ms: u64,
        out: &mut Vec<Update>,
    ) {
        let Some(Some(members)) = self.members.get_mut(slot as usize) else {
            return;
        };
        let was = members.iter().position(|&m| m == id);
        let event = |kind| {
            Update::Event(FleetEvent {
                slot,
                vehicle: vehicle.clone(),
                time_ms,
                kind,
            })
        };
        match (self.fences.get(&id), was) {
            (None, Some(i)) => {
                members.swap_remove(i);
                out.push(event(EventKind::GeofenceExit { fence: id }));
            }
            (Some(f), Some(i)) if f.outside_m(lat, lon) > f.exit_buffer_m => {
                members.swap_remove(i);
                out.push(event(EventKind::GeofenceExit { fence: id }));
            }
            (Some(f), None) if f.outside_m(lat, lon) <= 0.0 => {
                if members.push(id).is_err() {
                    Metrics::inc(&self.metrics.geofence_memberships_refused_total);
                } else {
                    out.push(event(EventKind::GeofenceEnter { fence: id }));
                }
            }
            _ => {}
        }
    }

    /// The fences slot is in (empty before its first fix).
    pub fn memberships(&self, slot: Slot) -> &[FenceId] {
        self.members
            .get(slot as usize)
            .and_then(|m| m.as_ref())
            .map_or(&[], |m| m.as_slice())
    }

    /// A vehicle's newest valid fix: the transitions it makes, into `out`.
    pub fn evaluate(
        &mut self,
        slot: Slot,
        vehicle: &VehicleId,
        lat: f64,
        lon: f64,
        time_ms: u64,
        out: &mut Vec<Update>,
    ) {
        let Some(members) = self.members.get_mut(slot as usize) else {
            return;
        };
        // known from now on, even with no fences yet: a fence created
        // later settles this vehicle at once
        let first_fix = members.is_none();
        let members = members.get_or_insert_with(FixedVec::new);
        if self.fences.is_empty() {
            return;
        }
        let candidates: &[FenceId] = self
            .index
            .get(&index_cell(lat, lon))
            .map_or(&[], |v| v.as_slice());
        let event = |kind| {
            Update::Event(FleetEvent {
                slot,
                vehicle: vehicle.clone(),
                time_ms,
                kind,
            })
        };
        // exits: every fence it is in, candidate or not (a fence not
        // indexed here is farther than its buffer)
        let mut i = 0;
        while i < members.len() {
            let id = members[i];
            let outside = match self.fences.get(&id) {
                Some(f) => f.outside_m(lat, lon) > f.exit_buffer_m,
                None => true,
            };
            if outside {
                members.swap_remove(i);
                out.push(event(EventKind::GeofenceExit { fence: id }));
            } else {
                i += 1;
            }
        }
        for id in candidates.iter().chain(&self.large) {
            let Some(fence) = self.fences.get(id) else {
                continue;
            };
            if members.contains(&fence.id) || fence.outside_m(lat, lon) > 0.0 {
                continue;
            }
            if members.push(fence.id).is_err() {
                Metrics::inc(&self.metrics.geofence_memberships_refused_total);
                continue;
            }
            if !first_fix {
                out.push(event(EventKind::GeofenceEnter { fence: fence.id }));
            }
        }
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
            polygon: None,
            exit_buffer_m: None,
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

    fn step(g: &mut Geofences, (lat, lon): (f64, f64)) -> Vec<EventKind> {
        let mut out = Vec::new();
        g.evaluate(0, &VehicleId::parse("v1").unwrap(), lat, lon, 0, &mut out);
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
        assert_eq!(g.memberships(0), &[] as &[FenceId]);
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
        assert_eq!(g.memberships(0), &[1]);
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
