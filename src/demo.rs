//! `fleetgate demo`: the gateway plus a simulated fleet, in one process.
//!
//! In: the gateway's configuration and a fleet size. Out: a running gateway
//! with firmware-sim vehicles driving around Amsterdam against its own MQTT
//! port, and a few lines telling the person where to look. Bound: the
//! fleet's size, chosen on the command line.

use std::future::Future;
use std::time::Duration;

use firmware_sim::runner::{run_fleet, FleetConfig};

use crate::{start, Config, Listeners};

pub async fn run(
    config: Config,
    listeners: Listeners,
    vehicles: usize,
    rate_hz: f64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let gateway = start(config, listeners).await?;
    let mqtt = gateway.mqtt_addr;
    let http = gateway.http_addr;
    let host = if mqtt.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        mqtt.ip().to_string()
    };
    println!(
        "fleetgate demo: {vehicles} simulated vehicles driving around Amsterdam.\n\
         \n  dashboards:  mosquitto_sub -h {host} -p {port} -t 'fleet/#' -v\n\
         \x20 raw device:  mosquitto_sub -h {host} -p {port} -t 'v/+/status' -v\n\
         \x20 metrics:     curl http://{host}:{http_port}/metrics\n\
         \n  Ctrl-C stops the demo.\n",
        port = mqtt.port(),
        http_port = http.port(),
    );
    let fleet = FleetConfig {
        broker: format!("{host}:{}", mqtt.port()),
        vehicles,
        rate_hz,
        progress: false,
        ..FleetConfig::default()
    };
    let (stop_fleet, fleet_stopped) = tokio::sync::oneshot::channel::<()>();
    let fleet_task = tokio::spawn(run_fleet(fleet, async {
        let _ = fleet_stopped.await;
    }));
    shutdown.await;
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
