//! Driving events: `overspeed`, `motion_start` / `motion_stop` and
//! `ignition_on` / `ignition_off`, derived from each vehicle's newest fix.
//!
//! In: per slot, the vehicle's newest position and the one before it, and
//! the lowest speed limit of the fences it is in (`super::geofence`), from
//! the fleet table ([`Driving::observe`]). Out: [`EventKind`] events, at
//! most one of each family per fix, appended for the fan-out. Late fixes
//! (older than the newest) make none.
//!
//! - Ignition: from the position's [`flags::IGNITION`] bit; an event when
//!   it flips between two newest positions (with or without a valid fix).
//! - Motion (Traccar's rule, judged on valid fixes): a stopped vehicle
//!   starts moving once a fix is `events.motion.distance_m` from where it
//!   stopped; a moving one stops once every fix for
//!   `events.motion.stop_after_s` stays within that distance of the first
//!   of them (where it stopped). A vehicle that stops sending is judged at
//!   its next fix.
//! - Overspeed: the limit is the lowest of the vehicle's own
//!   (`events.overspeed.vehicles`, else `default_limit_kmh`) and the
//!   fences' (`speed_limit_kmh`); one event per episode, once speed has
//!   stayed above limit × `multiplier` for `minimal_duration_s` (by fix
//!   time); the episode ends when speed falls below limit −
//!   `hysteresis_kmh` (or to 0). The event names the fence that set the
//!   limit, if one did.
//!
//! Restart: this state lives in memory. The first fix after a start sets
//! motion silently (moving at or above `start_speed_kmh`), ignition has
//! nothing to flip from, and an overspeed episode starts afresh (a vehicle
//! speeding across a restart is reported again after
//! `minimal_duration_s`).
//!
//! Bound: one [`Track`] per slot (`fleet.max_vehicles`), allocated at
//! start; the per-vehicle limits the config lists. Nothing allocates per
//! position.

use std::collections::HashMap;

use fleetgate_wire::{flags, Position};
use serde::Serialize;

use super::geofence::FenceLimit;
use super::{haversine_m, EventKind, FleetEvent, Slot, Update};
use crate::config::events::EventsConfig;
use crate::topics::VehicleId;

/// Which limit an overspeed event applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// `events.overspeed.vehicles.<id>`.
    Vehicle,
    /// `events.overspeed.default_limit_kmh`.
    Default,
    /// A geofence's `speed_limit_kmh`; the event's `fence` names it.
    Fence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Motion {
    /// No valid fix since the start.
    Unknown,
    Moving,
    Stopped,
}

/// One vehicle's driving state: 32 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// Motion: where it stopped, or the first fix of the quiet window
    /// (millionths of a degree, as the fix gave it).
    anchor_e6: (i32, i32),
    anchor_ms: u64,
    /// Overspeed: fix time since which it has been above the threshold;
    /// [`NOT_ABOVE`] when it is not.
    above_since_ms: u64,
    /// Its own limit in km/h (listed, or the default); NaN for none.
    own_limit_kmh: f32,
    own_limit_from: LimitSource,
    motion: Motion,
    speeding: bool,
}

const NOT_ABOVE: u64 = u64::MAX;

const IDLE: Track = Track {
    anchor_e6: (0, 0),
    anchor_ms: 0,
    above_since_ms: NOT_ABOVE,
    own_limit_kmh: f32::NAN,
    own_limit_from: LimitSource::Default,
    motion: Motion::Unknown,
    speeding: false,
};

pub struct Driving {
    tracks: Vec<Track>,
    listed: HashMap<VehicleId, f64>,
    default_limit_kmh: Option<f64>,
    multiplier: f64,
    minimal_duration_ms: u64,
    hysteresis_kmh: f64,
    distance_m: f64,
    stop_after_ms: u64,
    start_speed_kmh: f64,
}

impl Driving {
    /// For slots `0..capacity`, with a checked config.
    pub fn new(config: &EventsConfig, capacity: usize) -> Driving {
        let o = &config.overspeed;
        let m = &config.motion;
        Driving {
            tracks: vec![IDLE; capacity],
            listed: o
                .vehicles
                .iter()
                .filter_map(|(id, &kmh)| Some((VehicleId::parse(id)?, kmh)))
                .collect(),
            default_limit_kmh: o.default_limit_kmh,
            multiplier: o.multiplier,
            minimal_duration_ms: o.minimal_duration_s.saturating_mul(1000),
            hysteresis_kmh: o.hysteresis_kmh,
            distance_m: m.distance_m,
            stop_after_ms: m.stop_after_s.saturating_mul(1000),
            start_speed_kmh: m.start_speed_kmh,
        }
    }

    /// A new vehicle in `slot`: looks up its own limit once, so a fix
    /// never hashes its id.
    pub fn add_vehicle(&mut self, slot: Slot, id: &VehicleId) {
        let (own_limit_kmh, own_limit_from) = match self.listed.get(id) {
            Some(&kmh) => (kmh as f32, LimitSource::Vehicle),
            None => (
                self.default_limit_kmh.map_or(f32::NAN, |kmh| kmh as f32),
                LimitSource::Default,
            ),
        };
        if let Some(track) = self.tracks.get_mut(slot as usize) {
            *track = Track {
                own_limit_kmh,
                own_limit_from,
                ..IDLE
            };
        }
    }

    /// The newest position `p` of `slot` (after `prev`, the newest before
    /// it), inside fences whose lowest limit is `fence_limit`: its events
    /// into `out`.
    pub fn observe(
        &mut self,
        slot: Slot,
        vehicle: &VehicleId,
        prev: Option<&Position>,
        p: &Position,
        fence_limit: Option<FenceLimit>,
        out: &mut Vec<Update>,
    ) {
        let Some(track) = self.tracks.get_mut(slot as usize) else {
            return;
        };
        let mut emit = |kind| {
            out.push(Update::Event(FleetEvent::new(
                slot, vehicle, p.time_ms, kind,
            )))
        };
        if let Some(prev) = prev {
            match (prev.flags & flags::IGNITION != 0, p.ignition()) {
                (false, true) => emit(EventKind::IgnitionOn),
                (true, false) => emit(EventKind::IgnitionOff),
                _ => {}
            }
        }
        if !p.fix_valid() {
            return;
        }
        let here = (p.lat_e6, p.lon_e6);
        let speed_kmh = p.speed_kmh();
        match track.motion {
            Motion::Unknown => {
                track.motion = if speed_kmh >= self.start_speed_kmh {
                    Motion::Moving
                } else {
                    Motion::Stopped
                };
                (track.anchor_e6, track.anchor_ms) = (here, p.time_ms);
            }
            motion => {
                let deg = |e6: i32| f64::from(e6) / 1e6;
                let (a, b) = (track.anchor_e6, here);
                let away = haversine_m(deg(a.0), deg(a.1), deg(b.0), deg(b.1)) > self.distance_m;
                if away {
                    (track.anchor_e6, track.anchor_ms) = (here, p.time_ms);
                    if motion == Motion::Stopped {
                        track.motion = Motion::Moving;
                        emit(EventKind::MotionStart);
                    }
                } else if motion == Motion::Moving
                    && p.time_ms.saturating_sub(track.anchor_ms) >= self.stop_after_ms
                {
                    track.motion = Motion::Stopped;
                    emit(EventKind::MotionStop);
                }
            }
        }
        let own = (!track.own_limit_kmh.is_nan())
            .then(|| (f64::from(track.own_limit_kmh), track.own_limit_from));
        let limit = match (own, fence_limit) {
            (Some((kmh, from)), Some(f)) if kmh <= f.kmh => Some((kmh, from, None)),
            (_, Some(f)) => Some((f.kmh, LimitSource::Fence, Some(f.fence))),
            (Some((kmh, from)), None) => Some((kmh, from, None)),
            (None, None) => None,
        };
        let Some((limit_kmh, limit_from, fence)) = limit else {
            track.speeding = false;
            track.above_since_ms = NOT_ABOVE;
            return;
        };
        if track.speeding {
            if speed_kmh < limit_kmh - self.hysteresis_kmh || speed_kmh <= 0.0 {
                track.speeding = false;
                track.above_since_ms = NOT_ABOVE;
            }
        } else if speed_kmh > limit_kmh * self.multiplier {
            if track.above_since_ms == NOT_ABOVE {
                track.above_since_ms = p.time_ms;
            }
            if p.time_ms.saturating_sub(track.above_since_ms) >= self.minimal_duration_ms {
                track.speeding = true;
                emit(EventKind::Overspeed {
                    speed_kmh: round1(speed_kmh) as f32,
                    limit_kmh: limit_kmh as f32,
                    limit_from,
                    fence,
                });
            }
        } else {
            track.above_since_ms = NOT_ABOVE;
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_341_600_000;

    fn driving(f: impl FnOnce(&mut EventsConfig)) -> Driving {
        let mut config = EventsConfig::default();
        f(&mut config);
        config.check().unwrap();
        let mut d = Driving::new(&config, 2);
        d.add_vehicle(0, &VehicleId::parse("van-7").unwrap());
        d
    }

    /// A fix `north_m` north of a point in Amsterdam at `t_s` seconds.
    fn fix(t_s: u64, north_m: f64, kmh: f64, ignition: bool) -> Position {
        Position {
            seq: t_s as u32,
            time_ms: T0 + t_s * 1000,
            lat_e6: 52_370_000 + (north_m / 0.111_195) as i32,
            lon_e6: 4_890_000,
            speed_cm_s: (kmh / 0.036).round() as u16,
            heading: 0,
            flags: flags::FIX_VALID | if ignition { flags::IGNITION } else { 0 },
            odometer_m: None,
        }
    }

    /// Runs the fixes, each inside fences with `limit` (if any); the
    /// events with the second they came at.
    fn run(d: &mut Driving, fixes: &[(Position, Option<FenceLimit>)]) -> Vec<(u64, EventKind)> {
        let vehicle = VehicleId::parse("van-7").unwrap();
        let mut out = Vec::new();
        let mut prev = None;
        for (p, limit) in fixes {
            d.observe(0, &vehicle, prev.as_ref(), p, *limit, &mut out);
            prev = Some(*p);
        }
        out.iter()
            .filter_map(|u| match u {
                Update::Event(e) => Some(((e.time_ms - T0) / 1000, e.kind)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ignition_flips_make_one_event_each_and_the_first_fix_none() {
        let mut d = driving(|_| {});
        let fixes: Vec<_> = [true, true, false, false, true]
            .iter()
            .enumerate()
            .map(|(t, &on)| (fix(t as u64, 0.0, 0.0, on), None))
            .collect();
        let events = run(&mut d, &fixes);
        assert_eq!(
            events,
            vec![(2, EventKind::IgnitionOff), (4, EventKind::IgnitionOn)]
        );
    }

    #[test]
    fn motion_starts_200_m_from_the_stop_and_stops_after_180_s_within_200_m() {
        let mut d = driving(|_| {});
        let mut fixes = vec![(fix(0, 0.0, 0.0, true), None)];
        // GPS noise while parked: no start
        for t in 1..60 {
            fixes.push((
                fix(t, if t % 2 == 0 { 15.0 } else { -15.0 }, 0.0, true),
                None,
            ));
        }
        // drives north at 12 m/s for a minute
        for t in 60..120 {
            fixes.push((fix(t, (t - 59) as f64 * 12.0, 43.2, true), None));
        }
        // parks at 720 m, with noise, for five minutes
        for t in 120..420 {
            let noise = if t % 2 == 0 { 15.0 } else { -15.0 };
            fixes.push((fix(t, 720.0 + noise, 0.0, true), None));
        }
        let events = run(&mut d, &fixes);
        // 204 m from the stop at t = 76: moving. The window restarts at each
        // fix more than 200 m from its first: t = 76 (204 m), t = 93
        // (408 m), t = 110 (612 m); parked at 720 ± 15 m stays within
        // 200 m of 612 m, so the stop comes 180 s after t = 110.
        assert_eq!(
            events,
            vec![(76, EventKind::MotionStart), (290, EventKind::MotionStop)]
        );
    }

    #[test]
    fn a_vehicle_moving_at_the_first_fix_does_not_start_again() {
        let mut d = driving(|_| {});
        let fixes: Vec<_> = (0..60)
            .map(|t| (fix(t, t as f64 * 10.0, 36.0, true), None))
            .collect();
        assert_eq!(run(&mut d, &fixes), vec![]);
    }

    fn limit(kmh: f64, fence: u32) -> Option<FenceLimit> {
        Some(FenceLimit { kmh, fence })
    }

    #[test]
    fn overspeed_once_per_episode_after_the_minimal_duration_ending_below_the_hysteresis() {
        let mut d = driving(|c| {
            c.overspeed.default_limit_kmh = Some(50.0);
            c.overspeed.minimal_duration_s = 5;
        });
        let speeds = [
            40.0, 60.0, 60.0, 49.0, // 3 s above, then under: no event
            60.0, 60.0, 60.0, 60.0, 60.0, 60.0, // 5 s above at t = 9: the event
            47.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0, // not below 45: same episode
            44.0, // ends
            60.0, 60.0, 60.0, 60.0, 60.0, 60.0, // a second episode at t = 23
        ];
        let fixes: Vec<_> = speeds
            .iter()
            .enumerate()
            .map(|(t, &kmh)| (fix(t as u64, t as f64 * 15.0, kmh, true), None))
            .collect();
        let events: Vec<_> = run(&mut d, &fixes)
            .into_iter()
            .filter(|(_, k)| matches!(k, EventKind::Overspeed { .. }))
            .collect();
        let at: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![9, 23]);
        assert_eq!(
            events[0].1,
            EventKind::Overspeed {
                speed_kmh: 60.0,
                limit_kmh: 50.0,
                limit_from: LimitSource::Default,
                fence: None
            }
        );
    }

    #[test]
    fn the_lowest_limit_wins_and_the_event_names_its_fence() {
        // van-7 has its own 80; a fence of 30 is lower; the default is ignored
        let mut d = driving(|c| {
            c.overspeed.default_limit_kmh = Some(20.0);
            c.overspeed.vehicles.insert("van-7".into(), 80.0);
            c.overspeed.minimal_duration_s = 0;
        });
        let events = run(
            &mut d,
            &[
                (fix(0, 0.0, 50.0, true), None),
                (fix(1, 15.0, 50.0, true), limit(30.0, 4)),
                (fix(2, 30.0, 90.0, true), limit(100.0, 5)),
            ],
        );
        let overspeeds: Vec<_> = events
            .iter()
            .filter(|(_, k)| matches!(k, EventKind::Overspeed { .. }))
            .map(|(_, k)| *k)
            .collect();
        // 50 under its own 80 at t = 0; over the fence's 30 at t = 1; at
        // t = 2 still the same episode (90 is not below 80 − 5)
        assert_eq!(
            overspeeds,
            vec![EventKind::Overspeed {
                speed_kmh: 50.0,
                limit_kmh: 30.0,
                limit_from: LimitSource::Fence,
                fence: Some(4)
            }]
        );
    }

    #[test]
    fn no_limit_anywhere_means_no_overspeed() {
        let mut d = driving(|c| c.overspeed.minimal_duration_s = 0);
        let fixes: Vec<_> = (0..10)
            .map(|t| (fix(t, t as f64 * 50.0, 180.0, true), None))
            .collect();
        assert!(run(&mut d, &fixes)
            .iter()
            .all(|(_, k)| !matches!(k, EventKind::Overspeed { .. })));
    }
}
