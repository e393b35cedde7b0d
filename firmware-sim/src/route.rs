//! Plausible vehicle movement through central Amsterdam (feature `std`:
//! it needs `f64` trigonometry).
//!
//! In: a seed and the passing of time (each [`FixSource::sample`] advances
//! the vehicle to the asked time). Out: [`Fix`]es of a van driving a random
//! walk over a small embedded road graph: Damrak, Rokin, Vijzelstraat, the
//! Singel/Herengracht/Prinsengracht canal rings, Raadhuisstraat,
//! Leidsestraat, Stadhouderskade, Sarphatistraat, Weesperstraat,
//! Wibautstraat, Prins Hendrikkade towards the IJ tunnel, Valkenburgerstraat.
//! Coordinates are real street points, rounded to about 10 m.
//!
//! Movement: each street has a speed limit (15–50 km/h) and the driver keeps
//! 75–100 % of it (a speeder, [`RouteSim::with_pace`], that share of a
//! faster pace); acceleration is at most 1.5 m/s², braking 2 m/s²;
//! junctions are taken at ≤ 18 km/h. At the end of some legs the vehicle
//! stops: usually for 10–45 s with the engine running (lights, traffic), at
//! times for 2–8 minutes with the ignition off (a delivery). Heading follows
//! the leg; the odometer adds up the distance driven.
//!
//! Bound: a few dozen bytes per vehicle; the graph is `static`.

use crate::device::{Fix, FixSource};
use crate::prng::SplitMix64;

/// A street corner: latitude and longitude in degrees.
#[derive(Debug, Clone, Copy)]
struct Node {
    lat: f64,
    lon: f64,
}

const fn node(lat: f64, lon: f64) -> Node {
    Node { lat, lon }
}

// Node indices, named so the street list below reads as a map.
const CENTRAAL: usize = 0;
const DAMRAK_NORTH: usize = 1;
const DAM: usize = 2;
const ROKIN_MID: usize = 3;
const MUNTPLEIN: usize = 4;
const VIJZEL_HERENGRACHT: usize = 5;
const VIJZELGRACHT_WETERINGSCHANS: usize = 6;
const STADHOUDERSKADE_RIJKSMUSEUM: usize = 7;
const LEIDSEPLEIN: usize = 8;
const STADHOUDERSKADE_FERDINAND_BOL: usize = 9;
const STADHOUDERSKADE_VAN_WOUSTRAAT: usize = 10;
const HOGE_SLUIS: usize = 11;
const WEESPERPLEIN: usize = 12;
const MR_VISSERPLEIN: usize = 13;
const WIBAUTSTRAAT_MID: usize = 14;
const WIBAUTSTRAAT_SOUTH: usize = 15;
const PRINS_HENDRIKKADE_EAST: usize = 16;
const IJ_TUNNEL_APPROACH: usize = 17;
const BLAUWBRUG: usize = 18;
const HERENGRACHT_BROUWERSGRACHT: usize = 19;
const HERENGRACHT_RAADHUISSTRAAT: usize = 20;
const HERENGRACHT_LEIDSESTRAAT: usize = 21;
const HERENGRACHT_AMSTEL: usize = 22;
const WESTERMARKT: usize = 23;
const PRINSENGRACHT_BROUWERSGRACHT: usize = 24;
const PRINSENGRACHT_LEIDSEGRACHT: usize = 25;
const PRINSENGRACHT_LEIDSESTRAAT: usize = 26;
const PRINSENGRACHT_VIJZELSTRAAT: usize = 27;
const PRINSENGRACHT_UTRECHTSESTRAAT: usize = 28;
const PRINSENGRACHT_AMSTEL: usize = 29;
const SINGEL_NORTH: usize = 30;
const SINGEL_RAADHUISSTRAAT: usize = 31;
const SINGEL_SPUI: usize = 32;

static NODES: [Node; 33] = [
    node(52.378_80, 4.900_10), // Centraal station, front
    node(52.376_60, 4.896_40), // Damrak, north end
    node(52.373_10, 4.893_00), // Dam
    node(52.370_00, 4.891_80), // Rokin, middle
    node(52.367_00, 4.893_50), // Muntplein
    node(52.364_80, 4.891_90), // Vijzelstraat × Herengracht
    node(52.359_80, 4.890_10), // Vijzelgracht × Weteringschans
    node(52.360_60, 4.885_10), // Stadhouderskade at the Rijksmuseum
    node(52.363_80, 4.882_40), // Leidseplein
    node(52.357_70, 4.891_90), // Stadhouderskade × Ferdinand Bolstraat
    node(52.355_80, 4.900_50), // Stadhouderskade × Van Woustraat
    node(52.359_00, 4.904_20), // Hoge Sluis (Amstel × Sarphatistraat)
    node(52.361_00, 4.907_50), // Weesperplein
    node(52.367_60, 4.904_00), // Mr. Visserplein
    node(52.354_00, 4.912_50), // Wibautstraat, middle
    node(52.346_50, 4.916_00), // Wibautstraat, towards Amstel station
    node(52.375_80, 4.907_20), // Prins Hendrikkade, east
    node(52.374_00, 4.909_50), // IJ tunnel approach
    node(52.366_60, 4.900_00), // Blauwbrug
    node(52.380_80, 4.889_00), // Herengracht × Brouwersgracht
    node(52.374_20, 4.887_90), // Herengracht × Raadhuisstraat
    node(52.366_40, 4.888_50), // Herengracht × Leidsestraat
    node(52.365_60, 4.899_70), // Herengracht at the Amstel
    node(52.374_70, 4.884_00), // Westermarkt (Prinsengracht × Raadhuisstraat)
    node(52.382_20, 4.885_20), // Prinsengracht × Brouwersgracht
    node(52.367_20, 4.883_00), // Prinsengracht × Leidsegracht
    node(52.364_70, 4.885_00), // Prinsengracht × Leidsestraat
    node(52.363_20, 4.890_80), // Prinsengracht × Vijzelstraat
    node(52.362_40, 4.896_40), // Prinsengracht × Utrechtsestraat
    node(52.362_60, 4.901_50), // Prinsengracht at the Amstel
    node(52.378_50, 4.894_00), // Singel, north end
    node(52.373_70, 4.890_50), // Singel × Raadhuisstraat
    node(52.369_00, 4.889_50), // Singel at the Spui
];

/// A street: the corners it passes, and its speed limit.
struct Street {
    #[allow(dead_code)] // documents the map; shown in debug output only
    name: &'static str,
    limit_kmh: f64,
    corners: &'static [usize],
}

static STREETS: &[Street] = &[
    Street {
        name: "Damrak",
        limit_kmh: 30.0,
        corners: &[CENTRAAL, DAMRAK_NORTH, DAM],
    },
    Street {
        name: "Rokin",
        limit_kmh: 30.0,
        corners: &[DAM, ROKIN_MID, MUNTPLEIN],
    },
    Street {
        name: "Vijzelstraat",
        limit_kmh: 30.0,
        corners: &[
            MUNTPLEIN,
            VIJZEL_HERENGRACHT,
            PRINSENGRACHT_VIJZELSTRAAT,
            VIJZELGRACHT_WETERINGSCHANS,
        ],
    },
    Street {
        name: "Stadhouderskade",
        limit_kmh: 50.0,
        corners: &[
            LEIDSEPLEIN,
            STADHOUDERSKADE_RIJKSMUSEUM,
            VIJZELGRACHT_WETERINGSCHANS,
            STADHOUDERSKADE_FERDINAND_BOL,
            STADHOUDERSKADE_VAN_WOUSTRAAT,
            HOGE_SLUIS,
        ],
    },
    Street {
        name: "Sarphatistraat",
        limit_kmh: 50.0,
        corners: &[HOGE_SLUIS, WEESPERPLEIN],
    },
    Street {
        name: "Weesperstraat",
        limit_kmh: 50.0,
        corners: &[MR_VISSERPLEIN, WEESPERPLEIN],
    },
    Street {
        name: "Wibautstraat",
        limit_kmh: 50.0,
        corners: &[WEESPERPLEIN, WIBAUTSTRAAT_MID, WIBAUTSTRAAT_SOUTH],
    },
    Street {
        name: "Prins Hendrikkade",
        limit_kmh: 50.0,
        corners: &[CENTRAAL, PRINS_HENDRIKKADE_EAST, IJ_TUNNEL_APPROACH],
    },
    Street {
        name: "Valkenburgerstraat",
        limit_kmh: 50.0,
        corners: &[IJ_TUNNEL_APPROACH, MR_VISSERPLEIN],
    },
    Street {
        name: "Amstel",
        limit_kmh: 30.0,
        corners: &[MUNTPLEIN, BLAUWBRUG, MR_VISSERPLEIN],
    },
    Street {
        name: "Amstel east bank",
        limit_kmh: 30.0,
        corners: &[HERENGRACHT_AMSTEL, BLAUWBRUG],
    },
    Street {
        name: "Amstel, Prinsengracht to Hoge Sluis",
        limit_kmh: 30.0,
        corners: &[PRINSENGRACHT_AMSTEL, HOGE_SLUIS],
    },
    Street {
        name: "Herengracht",
        limit_kmh: 20.0,
        corners: &[
            HERENGRACHT_BROUWERSGRACHT,
            HERENGRACHT_RAADHUISSTRAAT,
            HERENGRACHT_LEIDSESTRAAT,
            VIJZEL_HERENGRACHT,
            HERENGRACHT_AMSTEL,
        ],
    },
    Street {
        name: "Prinsengracht",
        limit_kmh: 20.0,
        corners: &[
            PRINSENGRACHT_BROUWERSGRACHT,
            WESTERMARKT,
            PRINSENGRACHT_LEIDSEGRACHT,
            PRINSENGRACHT_LEIDSESTRAAT,
            PRINSENGRACHT_VIJZELSTRAAT,
            PRINSENGRACHT_UTRECHTSESTRAAT,
            PRINSENGRACHT_AMSTEL,
        ],
    },
    Street {
        name: "Singel",
        limit_kmh: 20.0,
        corners: &[SINGEL_NORTH, SINGEL_RAADHUISSTRAAT, SINGEL_SPUI, MUNTPLEIN],
    },
    Street {
        name: "Raadhuisstraat",
        limit_kmh: 30.0,
        corners: &[
            DAM,
            SINGEL_RAADHUISSTRAAT,
            HERENGRACHT_RAADHUISSTRAAT,
            WESTERMARKT,
        ],
    },
    Street {
        name: "Leidsestraat",
        limit_kmh: 15.0,
        corners: &[
            HERENGRACHT_LEIDSESTRAAT,
            PRINSENGRACHT_LEIDSESTRAAT,
            LEIDSEPLEIN,
        ],
    },
    Street {
        name: "Brouwersgracht and Martelaarsgracht",
        limit_kmh: 20.0,
        corners: &[
            CENTRAAL,
            SINGEL_NORTH,
            HERENGRACHT_BROUWERSGRACHT,
            PRINSENGRACHT_BROUWERSGRACHT,
        ],
    },
];

/// The box the whole graph lies in (degrees), for tests and sanity checks.
pub const AREA_LAT: (f64, f64) = (52.345, 52.384);
pub const AREA_LON: (f64, f64) = (4.881, 4.918);

const EARTH_RADIUS_M: f64 = 6_371_000.0;
const ACCEL_M_S2: f64 = 1.5;
const BRAKE_M_S2: f64 = 2.0;
const JUNCTION_SPEED_M_S: f64 = 5.0;
/// Speed kept while closing in on a stop line, so braking ends in finite time.
const CREEP_SPEED_M_S: f64 = 1.0;
/// The simulation advances in steps of at most this many seconds.
const MAX_STEP_S: f64 = 0.5;
/// A sample asked for after a longer gap advances at most this far (a
/// device that slept for a day resumes, it does not replay the day).
const MAX_CATCH_UP_S: f64 = 600.0;

/// One directed leg between two adjacent corners.
#[derive(Debug, Clone, Copy)]
struct Leg {
    from: usize,
    to: usize,
    limit_m_s: f64,
}

/// Every leg leaving `corner` (streets are two-way here), written into `out`; returns how many.
fn legs_from(corner: usize, out: &mut [Leg; 8]) -> usize {
    let mut n = 0;
    for street in STREETS {
        for pair in street.corners.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let next = if a == corner {
                b
            } else if b == corner {
                a
            } else {
                continue;
            };
            if let Some(slot) = out.get_mut(n) {
                *slot = Leg {
                    from: corner,
                    to: next,
                    limit_m_s: street.limit_kmh / 3.6,
                };
                n += 1;
            }
        }
    }
    n
}

fn distance_m(a: Node, b: Node) -> f64 {
    // Equirectangular: exact to well under 0.1 % over a few kilometres.
    let mean_lat = ((a.lat + b.lat) / 2.0).to_radians();
    let dx = (b.lon - a.lon).to_radians() * mean_lat.cos();
    let dy = (b.lat - a.lat).to_radians();
    (dx * dx + dy * dy).sqrt() * EARTH_RADIUS_M
}

/// Bearing from `a` to `b` in 1/256 turn, 0 = north, 64 = east.
fn heading_256(a: Node, b: Node) -> u8 {
    let mean_lat = ((a.lat + b.lat) / 2.0).to_radians();
    let east = (b.lon - a.lon) * mean_lat.cos();
    let north = b.lat - a.lat;
    let turns = east.atan2(north).to_degrees().rem_euclid(360.0) / 360.0;
    ((turns * 256.0).round() as u32 % 256) as u8
}

#[derive(Debug, Clone, Copy)]
enum Motion {
    Driving,
    /// Standing still until the given simulation time (s).
    Stopped {
        until_s: f64,
    },
}

/// One simulated van. Implements [`FixSource`].
#[derive(Debug, Clone)]
pub struct RouteSim {
    rng: SplitMix64,
    leg: Leg,
    leg_length_m: f64,
    along_m: f64,
    speed_m_s: f64,
    /// Speed the driver aims for on this leg.
    cruise_m_s: f64,
    /// How the driver takes the limits: 1 keeps 75–100 % of each street's
    /// limit; a speeder's pace above 1 multiplies that.
    pace: f64,
    /// Whether the vehicle will stop at the end of this leg.
    stop_at_end: bool,
    motion: Motion,
    ignition: bool,
    odometer_m: f64,
    /// Simulation clock, seconds since the first sample.
    clock_s: f64,
    last_sample_ms: Option<u64>,
}

impl RouteSim {
    /// A vehicle placed on a random leg, chosen by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let start = rng.below(NODES.len());
        let mut sim = Self {
            rng,
            leg: Leg {
                from: start,
                to: start,
                limit_m_s: 0.0,
            },
            leg_length_m: 0.0,
            along_m: 0.0,
            speed_m_s: 0.0,
            cruise_m_s: 0.0,
            pace: 1.0,
            stop_at_end: false,
            motion: Motion::Driving,
            ignition: true,
            odometer_m: 0.0,
            clock_s: 0.0,
            last_sample_ms: None,
        };
        sim.start_next_leg();
        // Start somewhere along the leg, not always at a corner.
        sim.along_m = sim.rng.range_f64(0.0, sim.leg_length_m * 0.8);
        sim
    }

    /// The same vehicle with a driver who keeps `pace` times the usual
    /// speed (1.3: 98–130 % of each limit, so over it on most legs). The
    /// demo's speeders, for overspeed events.
    pub fn with_pace(mut self, pace: f64) -> Self {
        let pace = if pace.is_finite() && pace > 0.0 {
            pace
        } else {
            1.0
        };
        self.cruise_m_s *= pace / self.pace;
        self.pace = pace;
        self
    }

    /// Advances the simulation by `dt_s` seconds.
    pub fn advance(&mut self, dt_s: f64) {
        let mut left = dt_s.clamp(0.0, MAX_CATCH_UP_S);
        while left > 0.0 {
            let step = left.min(MAX_STEP_S);
            self.step(step);
            left -= step;
        }
    }

    pub fn speed_kmh(&self) -> f64 {
        self.speed_m_s * 3.6
    }
    pub fn odometer_m(&self) -> f64 {
        self.odometer_m
    }
    pub fn ignition(&self) -> bool {
        self.ignition
    }

    /// Current latitude and longitude in degrees.
    pub fn position_deg(&self) -> (f64, f64) {
        let (a, b) = (NODES[self.leg.from], NODES[self.leg.to]);
        let t = if self.leg_length_m > 0.0 {
            (self.along_m / self.leg_length_m).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (a.lat + (b.lat - a.lat) * t, a.lon + (b.lon - a.lon) * t)
    }

    /// The fix at simulation time `time_ms`, without advancing.
    pub fn fix(&self, time_ms: u64) -> Fix {
        let (lat, lon) = self.position_deg();
        Fix {
            time_ms,
            lat_e6: (lat * 1e6).round() as i32,
            lon_e6: (lon * 1e6).round() as i32,
            speed_cm_s: (self.speed_m_s * 100.0).round() as u16,
            heading: heading_256(NODES[self.leg.from], NODES[self.leg.to]),
            fix_valid: true,
            ignition: self.ignition,
            odometer_m: self.odometer_m as u32,
        }
    }

    fn step(&mut self, dt: f64) {
        self.clock_s += dt;
        if let Motion::Stopped { until_s } = self.motion {
            if self.clock_s < until_s {
                return;
            }
            self.motion = Motion::Driving;
            self.ignition = true;
            self.start_next_leg();
        }
        let remaining = (self.leg_length_m - self.along_m).max(0.0);
        let end_speed = if self.stop_at_end {
            0.0
        } else {
            JUNCTION_SPEED_M_S
        };
        // The fastest speed from which the driver can still brake to `end_speed` in time.
        let brake_limit = (end_speed * end_speed + 2.0 * BRAKE_M_S2 * remaining).sqrt();
        let goal = self.cruise_m_s.min(brake_limit).max(CREEP_SPEED_M_S);
        self.speed_m_s = if goal > self.speed_m_s {
            (self.speed_m_s + ACCEL_M_S2 * dt).min(goal)
        } else {
            (self.speed_m_s - BRAKE_M_S2 * dt).max(goal)
        };
        let moved = self.speed_m_s * dt;
        self.odometer_m += moved.min(remaining);
        self.along_m += moved;
        if self.along_m >= self.leg_length_m {
            let overshoot = self.along_m - self.leg_length_m;
            if self.stop_at_end {
                self.along_m = self.leg_length_m;
                self.speed_m_s = 0.0;
                self.begin_stop();
            } else {
                self.start_next_leg();
                self.along_m = overshoot.min(self.leg_length_m);
                self.odometer_m += self.along_m;
            }
        }
    }

    fn begin_stop(&mut self) {
        let delivery = self.rng.chance(0.3);
        let duration_s = if delivery {
            self.rng.range_f64(120.0, 480.0)
        } else {
            self.rng.range_f64(10.0, 45.0)
        };
        // Drivers switch the engine off for a delivery, not at a red light.
        self.ignition = !delivery;
        self.motion = Motion::Stopped {
            until_s: self.clock_s + duration_s,
        };
    }

    /// Picks the next leg from the current corner, avoiding a U-turn unless
    /// the corner is a dead end.
    fn start_next_leg(&mut self) {
        let here = self.leg.to;
        let came_from = self.leg.from;
        let mut legs = [Leg {
            from: here,
            to: here,
            limit_m_s: 0.0,
        }; 8];
        let count = legs_from(here, &mut legs);
        let forward = legs[..count].iter().filter(|l| l.to != came_from).count();
        let next = if forward > 0 {
            let pick = self.rng.below(forward);
            legs[..count].iter().filter(|l| l.to != came_from).nth(pick)
        } else {
            legs[..count].first()
        };
        if let Some(&leg) = next {
            self.leg = leg;
        }
        self.leg_length_m = distance_m(NODES[self.leg.from], NODES[self.leg.to]);
        self.along_m = 0.0;
        self.cruise_m_s = self.leg.limit_m_s * self.rng.range_f64(0.75, 1.0) * self.pace;
        self.stop_at_end = self.rng.chance(0.2);
    }
}

impl FixSource for RouteSim {
    /// Advances the vehicle to `now_ms` (the first call only sets the clock)
    /// and reports where it is.
    fn sample(&mut self, now_ms: u64) -> Option<Fix> {
        if let Some(last) = self.last_sample_ms {
            let dt_s = now_ms.saturating_sub(last) as f64 / 1000.0;
            self.advance(dt_s);
        }
        self.last_sample_ms = Some(now_ms);
        Some(self.fix(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_corner_is_reachable_and_legs_are_short_city_blocks() {
        for corner in 0..NODES.len() {
            let mut legs = [Leg {
                from: 0,
                to: 0,
                limit_m_s: 0.0,
            }; 8];
            let n = legs_from(corner, &mut legs);
            assert!(n >= 1, "corner {corner} has no street");
            for leg in &legs[..n] {
                let d = distance_m(NODES[leg.from], NODES[leg.to]);
                assert!((50.0..1500.0).contains(&d), "leg {leg:?} is {d:.0} m");
            }
        }
        for n in NODES.iter() {
            assert!((AREA_LAT.0..AREA_LAT.1).contains(&n.lat));
            assert!((AREA_LON.0..AREA_LON.1).contains(&n.lon));
        }
    }

    #[test]
    fn headings_point_the_right_way() {
        // Damrak runs from Centraal south-west to the Dam.
        let h = heading_256(NODES[CENTRAAL], NODES[DAM]);
        assert!((130..180).contains(&h), "Damrak heading {h}");
        // Wibautstraat runs south-south-east from the Weesperplein.
        let h = heading_256(NODES[WEESPERPLEIN], NODES[WIBAUTSTRAAT_SOUTH]);
        assert!((96..128).contains(&h), "Wibautstraat heading {h}");
        assert_eq!(heading_256(node(52.0, 4.0), node(52.1, 4.0)), 0);
        assert_eq!(heading_256(node(52.0, 4.0), node(52.0, 4.1)), 64);
    }

    #[test]
    fn an_hour_of_driving_stays_in_town_at_city_speeds() {
        for seed in 0..20 {
            let mut sim = RouteSim::new(seed);
            let mut max_kmh: f64 = 0.0;
            let mut moving_s = 0.0;
            let mut ignition_off_s = 0.0;
            let mut last_odo = sim.odometer_m();
            for second in 0..3600 {
                let fix = sim.sample(second * 1000).unwrap_or_else(|| unreachable!());
                let (lat, lon) = sim.position_deg();
                assert!(
                    (AREA_LAT.0..AREA_LAT.1).contains(&lat),
                    "seed {seed}: lat {lat}"
                );
                assert!(
                    (AREA_LON.0..AREA_LON.1).contains(&lon),
                    "seed {seed}: lon {lon}"
                );
                let kmh = f64::from(fix.speed_cm_s) * 0.036;
                max_kmh = max_kmh.max(kmh);
                if kmh > 1.0 {
                    moving_s += 1.0;
                }
                if !fix.ignition {
                    ignition_off_s += 1.0;
                    assert_eq!(fix.speed_cm_s, 0, "moving with the ignition off");
                }
                let odo = sim.odometer_m();
                let step = odo - last_odo;
                assert!(
                    (0.0..=50.0 / 3.6 + 0.01).contains(&step),
                    "seed {seed}: {step} m in 1 s"
                );
                last_odo = odo;
            }
            assert!(max_kmh <= 50.0, "seed {seed}: {max_kmh} km/h");
            assert!(
                max_kmh >= 15.0,
                "seed {seed}: never faster than {max_kmh} km/h"
            );
            assert!(
                moving_s > 600.0,
                "seed {seed}: moved only {moving_s} s in an hour"
            );
            let avg_kmh = sim.odometer_m() / 1000.0;
            assert!(
                (5.0..45.0).contains(&avg_kmh),
                "seed {seed}: average {avg_kmh} km/h"
            );
            let _ = ignition_off_s;
        }
    }

    #[test]
    fn vehicles_stop_and_some_switch_the_engine_off() {
        let mut stopped = 0;
        let mut ignition_off = 0;
        for seed in 0..10 {
            let mut sim = RouteSim::new(seed);
            for second in 0..3600 {
                let fix = sim.sample(second * 1000).unwrap_or_else(|| unreachable!());
                if fix.speed_cm_s == 0 {
                    stopped += 1;
                }
                if !fix.ignition {
                    ignition_off += 1;
                }
            }
        }
        assert!(stopped > 100, "never stopped");
        assert!(ignition_off > 100, "never switched off");
    }

    #[test]
    fn a_speeder_drives_over_the_limit_where_others_keep_under_it() {
        let mut over_s = [0u32; 2];
        for (i, pace) in [1.0, 1.3].into_iter().enumerate() {
            for seed in 0..10 {
                let mut sim = RouteSim::new(seed).with_pace(pace);
                for second in 0..3600 {
                    let fix = sim.sample(second * 1000).unwrap_or_else(|| unreachable!());
                    let limit_kmh = sim.leg.limit_m_s * 3.6;
                    // 5 km/h of slack: a junction is taken at up to 18 km/h, over
                    // the slowest street's 15.
                    if f64::from(fix.speed_cm_s) * 0.036 > limit_kmh + 5.0 {
                        over_s[i] += 1;
                    }
                }
            }
        }
        // A usual driver is over only for moments, braking into a slower street.
        assert!(
            over_s[0] < 36,
            "usual drivers were over the limit {} s in 10 h",
            over_s[0]
        );
        assert!(
            over_s[1] > 3_000,
            "speeders were over the limit only {} s in 10 h",
            over_s[1]
        );
    }

    #[test]
    fn the_same_seed_drives_the_same_route() {
        let mut a = RouteSim::new(42);
        let mut b = RouteSim::new(42);
        let mut c = RouteSim::new(43);
        let mut differs = false;
        for second in 0..600 {
            let (fa, fb, fc) = (
                a.sample(second * 1000),
                b.sample(second * 1000),
                c.sample(second * 1000),
            );
            assert_eq!(fa, fb);
            differs |= fa != fc;
        }
        assert!(differs);
    }
}
