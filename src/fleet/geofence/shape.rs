//! A fence's shape: circle or polygon, its box, and how far a point is
//! outside it; and the compact box the index keeps per fence.
//!
//! In: a checked fence config. Out: distances in metres (≤ 0 inside) and
//! boxes in degrees. Bound: a polygon holds its vertices
//! (`geofence.max_vertices`); nothing here allocates after construction.

use super::{FenceId, M_PER_DEG};
use crate::config::geofence::{polygon_vertices, FenceConfig};
use crate::fleet::haversine_m;

#[derive(Debug, Clone)]
pub(super) enum Shape {
    Circle {
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
    /// (lat, lon) vertices; the ring closes itself.
    Polygon(Vec<(f64, f64)>),
}

impl Shape {
    /// The shape of a fence's config; `None` for one the check refuses.
    pub(super) fn of(c: &FenceConfig) -> Option<Shape> {
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
        Some(shape)
    }

    /// (south, west, north, east) in degrees, widened by `pad_m` and a
    /// hair (so that rounding never shuts out a point on the boundary).
    pub(super) fn bounds(&self, pad_m: f64) -> (f64, f64, f64, f64) {
        let (s, w, n, e, lat) = match self {
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
        // 1 % more, and 1 m: the circle's box above is from a mean
        // metres-per-degree, the haversine check from a sphere
        let pad_lat = (pad_m + 1.0) / M_PER_DEG;
        let pad_lon = pad_lat / lat.to_radians().cos().max(0.01);
        let (dlat, dlon) = ((n - s) * 0.01 + pad_lat, (e - w) * 0.01 + pad_lon);
        (s - dlat, w - dlon, n + dlat, e + dlon)
    }

    /// Metres outside the fence (≤ 0 inside).
    pub(super) fn outside_m(&self, lat: f64, lon: f64) -> f64 {
        match self {
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

/// A fence as the index holds it: its box (south, west, north, east, in
/// degrees, rounded outwards to `f32`: 20 bytes an entry), checked before
/// its shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    bounds: [f32; 4],
    pub(super) id: FenceId,
}

impl Candidate {
    pub(super) fn new((s, w, n, e): (f64, f64, f64, f64), id: FenceId) -> Candidate {
        let down = |x: f64| {
            let y = x as f32;
            if f64::from(y) > x {
                y.next_down()
            } else {
                y
            }
        };
        let up = |x: f64| {
            let y = x as f32;
            if f64::from(y) < x {
                y.next_up()
            } else {
                y
            }
        };
        Candidate {
            bounds: [down(s), down(w), up(n), up(e)],
            id,
        }
    }

    pub(super) fn holds(&self, lat: f64, lon: f64) -> bool {
        let [s, w, n, e] = self.bounds.map(f64::from);
        lat >= s && lat <= n && lon >= w && lon <= e
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
