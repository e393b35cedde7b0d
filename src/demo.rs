//! `fleetgate demo`: the gateway plus a simulated fleet, in one process.
//!
//! In: the gateway's configuration and a fleet size. Out: a running gateway
//! with firmware-sim vehicles driving around Amsterdam against its own MQTT
//! port, and a few lines telling the person where to look. So that the
//! live map has something to show with no setup, the demo also brings:
//!
//! - a few geofences on the fleet's streets ([`DEMO_FENCES`]), when the
//!   configuration has none of its own: vehicles drive in and out, and two
//!   of them carry a speed limit that part of the fleet breaks;
//! - speeders: a fifth of the drivers keep 1.2–1.4 times the usual pace
//!   (over the streets' limits), for `overspeed` events;
//! - a few packages on the first vehicles, going to a fence or a point
//!   (the map's package lookup: `demo-1` …);
//! - a dispatch request every [`REQUEST_EVERY`] at the centre of one of
//!   the circular fences, released [`REQUEST_HELD_FOR`] later (reserved
//!   vehicles on the map).
//!
//! Bound: the fleet's size, chosen on the command line; at most
//! `REQUEST_HELD_FOR / REQUEST_EVERY + 1` demo requests open at once.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use firmware_sim::runner::{run_fleet, FleetConfig};
use serde_json::{json, Value};

use crate::config::geofence::FenceConfig;
use crate::fleet::dispatch::{RequestId, RequestState};
use crate::ingest::{DispatchOp, FleetQueries, PackageChange};
use crate::topics::VehicleId;
use crate::{start, Config, Listeners};

/// Share of the simulated drivers who speed.
pub const SPEEDERS: f64 = 0.2;
/// A demo dispatch request this often…
pub const REQUEST_EVERY: Duration = Duration::from_secs(40);
/// …held (its vehicle reserved) this long, then released.
pub const REQUEST_HELD_FOR: Duration = Duration::from_secs(120);

/// The demo's fences, in the config file's shape (`[[geofence.fences]]`),
/// on the streets firmware-sim's vans drive (`firmware_sim::route`).
/// `speed_limit_kmh` is the limit inside, for `overspeed`.
pub const DEMO_FENCES: &[(&str, &str)] = &[
    (
        "Centraal Station",
        r#"{"circle": {"lat": 52.3788, "lon": 4.9001, "radius_m": 200}}"#,
    ),
    (
        "Dam Square",
        r#"{"circle": {"lat": 52.3731, "lon": 4.8930, "radius_m": 120}}"#,
    ),
    (
        "Leidseplein",
        r#"{"circle": {"lat": 52.3638, "lon": 4.8824, "radius_m": 150}}"#,
    ),
    // Herengracht, Prinsengracht and Raadhuisstraat between Westermarkt
    // and Leidsestraat: 20 km/h, which Raadhuisstraat's traffic (30) breaks.
    (
        "Canal ring, 20 km/h",
        r#"{"polygon": [[4.8828, 52.3756], [4.8900, 52.3753], [4.8900, 52.3658],
                        [4.8850, 52.3638], [4.8820, 52.3668]],
            "speed_limit_kmh": 20}"#,
    ),
    // Wibautstraat from the Weesperplein south: 50 km/h, as its street,
    // which only the speeders break.
    (
        "Wibautstraat, 50 km/h",
        r#"{"polygon": [[4.9060, 52.3615], [4.9095, 52.3620], [4.9180, 52.3460],
                        [4.9145, 52.3455]],
            "speed_limit_kmh": 50}"#,
    ),
];

/// Packages put on the first vehicles: (id, from, to). A `to` that names a
/// fence, or reads "lat,lon", is drawn on the map.
const DEMO_PACKAGES: [(&str, &str, &str); 3] = [
    ("demo-1", "Depot Westpoort", "Centraal Station"),
    ("demo-2", "Depot Westpoort", "Leidseplein"),
    ("demo-3", "Dam Square", "52.3465,4.9160"),
];

/// The demo's fences, parsed; a fence that does not parse is left out,
/// and the demo's test fails on it (every fence is driven through). A
/// limit for every vehicle would be `[events.overspeed]
/// default_limit_kmh` (not set here: the fences' limits and the speeders
/// are enough to show the events).
pub fn demo_fences() -> Vec<FenceConfig> {
    DEMO_FENCES
        .iter()
        .filter_map(|(name, shape)| {
            let mut fence: Value = serde_json::from_str(shape).ok()?;
            fence["name"] = json!(name);
            serde_json::from_value(fence).ok()
        })
        .collect()
}

pub async fn run(
    mut config: Config,
    listeners: Listeners,
    vehicles: usize,
    rate_hz: f64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let own_fences = !config.geofence.fences.is_empty();
    if !own_fences {
        config.geofence.fences = demo_fences();
        config
            .geofence
            .check()
            .map_err(|e| anyhow::anyhow!("the demo's geofences: {e}"))?;
    }
    let pickups = pickups(&config.geofence.fences);
    let gateway = start(config, listeners).await?;
    let mqtt = gateway.mqtt_addr;
    let http = gateway.http_addr;
    let host = if mqtt.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        mqtt.ip().to_string()
    };
    let packages = put_packages(&gateway.fleet, vehicles).await;
    println!(
        "fleetgate demo: {vehicles} simulated vehicles driving around Amsterdam{fences}.\n\
         \n  live map:    http://{host}:{http_port}/   (package lookup: {packages})\n\
         \x20 dashboards:  mosquitto_sub -h {host} -p {port} -t 'fleet/#' -v\n\
         \x20 events:      mosquitto_sub -h {host} -p {port} -t 'fleet/events/+' -v\n\
         \x20 raw device:  mosquitto_sub -h {host} -p {port} -t 'v/+/status' -v\n\
         \x20 metrics:     curl http://{host}:{http_port}/metrics\n\
         \n  Ctrl-C stops the demo.\n",
        fences = if own_fences {
            ", with the configured geofences"
        } else {
            ", through a few geofences"
        },
        packages = if packages.is_empty() {
            "none".to_owned()
        } else {
            packages.join(", ")
        },
        port = mqtt.port(),
        http_port = http.port(),
    );
    let fleet = FleetConfig {
        broker: format!("{host}:{}", mqtt.port()),
        vehicles,
        rate_hz,
        progress: false,
        speeders: SPEEDERS,
        ..FleetConfig::default()
    };
    let (stop_fleet, fleet_stopped) = tokio::sync::oneshot::channel::<()>();
    let fleet_task = tokio::spawn(run_fleet(fleet, async {
        let _ = fleet_stopped.await;
    }));
    let dispatcher = tokio::spawn(dispatch_now_and_then(gateway.fleet.clone(), pickups));
    shutdown.await;
    dispatcher.abort();
    let _ = stop_fleet.send(());
    match tokio::time::timeout(Duration::from_secs(5), fleet_task).await {
        Ok(Ok(Ok(summary))) => println!("fleet summary: {summary:?}"),
        Ok(Ok(Err(e))) => eprintln!("simulated fleet failed: {e:#}"),
        Ok(Err(e)) => eprintln!("simulated fleet task failed: {e}"),
        Err(_) => eprintln!("simulated fleet did not stop in time"),
    }
    gateway.shutdown().await;
    Ok(())
}

/// Puts [`DEMO_PACKAGES`] on the first vehicles (as many as there are);
/// returns the ids it could.
async fn put_packages(fleet: &FleetQueries, vehicles: usize) -> Vec<&'static str> {
    let mut done = Vec::new();
    for (n, (id, from, to)) in DEMO_PACKAGES.iter().take(vehicles).enumerate() {
        let (Some(package), Some(vehicle)) = (
            VehicleId::parse(id),
            VehicleId::parse(&format!("truck-{:04}", n + 1)),
        ) else {
            continue;
        };
        let change = PackageChange::Assign {
            id: package,
            from: (*from).to_owned(),
            to: (*to).to_owned(),
            vehicle,
        };
        match fleet.package(change).await {
            Ok(Ok(_)) => done.push(*id),
            Ok(Err(e)) => tracing::warn!(package = %id, error = %e, "demo package refused"),
            Err(e) => tracing::warn!(package = %id, error = %e, "demo package not placed"),
        }
    }
    done
}

/// Where the demo's dispatch requests pick up: the circles' centres.
fn pickups(fences: &[FenceConfig]) -> Vec<(f64, f64)> {
    fences
        .iter()
        .filter_map(|f| f.circle.map(|c| (c.lat, c.lon)))
        .collect()
}

/// Every [`REQUEST_EVERY`], a dispatch request at the next pickup point;
/// each is released (or cancelled, if it found no vehicle) after
/// [`REQUEST_HELD_FOR`]. Runs until aborted (at once without pickups).
async fn dispatch_now_and_then(fleet: FleetQueries, pickups: Vec<(f64, f64)>) {
    let mut held: VecDeque<(RequestId, tokio::time::Instant)> = VecDeque::new();
    let mut every = tokio::time::interval(REQUEST_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is at once: let the fleet connect first
    for pickup in pickups.iter().cycle() {
        every.tick().await;
        while let Some(&(id, since)) = held.front() {
            if since.elapsed() < REQUEST_HELD_FOR {
                break;
            }
            held.pop_front();
            end_request(&fleet, id).await;
        }
        let (lat, lon) = *pickup;
        match fleet.dispatch(DispatchOp::Create { lat, lon }).await {
            Ok(Ok(request)) => held.push_back((request.request_id, tokio::time::Instant::now())),
            Ok(Err(e)) => tracing::info!(error = %e, "demo dispatch request refused"),
            Err(e) => tracing::info!(error = %e, "demo dispatch request not made"),
        }
    }
}

async fn end_request(fleet: &FleetQueries, id: RequestId) {
    let op = match fleet.dispatch(DispatchOp::Get(id)).await {
        Ok(Ok(r)) if r.state == RequestState::Assigned => DispatchOp::Release(id),
        Ok(Ok(r)) if r.state == RequestState::Searching => DispatchOp::Cancel(id),
        _ => return,
    };
    let _ = fleet.dispatch(op).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fences_parse_and_pass_the_config_check() {
        let fences = demo_fences();
        assert_eq!(fences.len(), DEMO_FENCES.len(), "every demo fence parses");
        let mut config = Config::default();
        config.geofence.fences = fences;
        assert_eq!(config.geofence.check(), Ok(()));
    }

    /// Inside a demo fence (a circle, or a polygon by ray casting).
    fn inside(fence: &FenceConfig, (lat, lon): (f64, f64)) -> bool {
        if let Some(c) = fence.circle {
            let k = c.lat.to_radians().cos();
            let (dy, dx) = ((lat - c.lat) * 111_320.0, (lon - c.lon) * 111_320.0 * k);
            return dx.hypot(dy) <= c.radius_m;
        }
        let ring = fence.polygon.as_deref().unwrap_or_default();
        let mut odd = false;
        for (i, a) in ring.iter().enumerate() {
            let b = ring[(i + 1) % ring.len()];
            if (a[1] > lat) != (b[1] > lat)
                && lon < a[0] + (lat - a[1]) / (b[1] - a[1]) * (b[0] - a[0])
            {
                odd = !odd;
            }
        }
        odd
    }

    /// An hour of the demo's default fleet (50 vans, a fifth speeding):
    /// every fence is driven through, and in each fence with a limit some
    /// van is over it for at least 10 s running (the default
    /// `minimal_duration_s` of an overspeed episode).
    #[test]
    fn the_demo_fleet_drives_through_every_fence_and_over_the_limits() {
        use firmware_sim::device::FixSource;
        use firmware_sim::route::RouteSim;
        let fences = demo_fences();
        let limits: Vec<Option<f64>> = DEMO_FENCES
            .iter()
            .map(|(_, shape)| {
                let v: Value = serde_json::from_str(shape).unwrap();
                v["speed_limit_kmh"].as_f64()
            })
            .collect();
        let mut entered = vec![0u32; fences.len()];
        let mut longest_over_s = vec![0u32; fences.len()];
        for van in 0..50u64 {
            let mut sim = RouteSim::new(van);
            if (van + 1) % 5 == 0 {
                sim = sim.with_pace(1.3);
            }
            let mut was_in = vec![false; fences.len()];
            let mut over_s = vec![0u32; fences.len()];
            for second in 0..3600 {
                let fix = sim.sample(second * 1000).unwrap();
                let at = (f64::from(fix.lat_e6) / 1e6, f64::from(fix.lon_e6) / 1e6);
                let kmh = f64::from(fix.speed_cm_s) * 0.036;
                for (i, fence) in fences.iter().enumerate() {
                    let is_in = inside(fence, at);
                    if is_in && !was_in[i] {
                        entered[i] += 1;
                    }
                    was_in[i] = is_in;
                    over_s[i] = match limits[i] {
                        Some(limit) if is_in && kmh > limit => over_s[i] + 1,
                        _ => 0,
                    };
                    longest_over_s[i] = longest_over_s[i].max(over_s[i]);
                }
            }
        }
        for (i, fence) in fences.iter().enumerate() {
            assert!(
                entered[i] >= 5,
                "{}: entered {} times in an hour",
                fence.name,
                entered[i]
            );
            if limits[i].is_some() {
                assert!(
                    longest_over_s[i] >= 10,
                    "{}: over its limit for {} s running at most",
                    fence.name,
                    longest_over_s[i]
                );
            }
        }
    }
}
