//! A simulated fleet (firmware-sim's runner, the reference device) against
//! the in-process gateway: every sequence number arrives at a dashboard.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::common::*;
use firmware_sim::runner::{run_fleet, FleetConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const VEHICLES: usize = 300;
const POSITIONS_EACH: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_300_vehicles_delivers_every_sequence_number() {
    let mut config = test_config();
    // The watcher's filter log must hold the whole run even if it lags.
    config.broker.max_segment_size_bytes = NonZeroUsize::new(1 << 20).unwrap();
    let gw = gateway_with(config).await;

    let mut opts = MqttOptions::new("watcher", "127.0.0.1", gw.mqtt_addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe("fleet/+/position", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("watcher could not subscribe: {other:?}"),
        }
    }
    let expected = VEHICLES * POSITIONS_EACH as usize;
    // Shared so a timeout can say what is missing.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        HashMap::<String, BTreeSet<u64>>::new(),
    ));
    let seen_by_watcher = seen.clone();
    let watcher = tokio::spawn(async move {
        let seen = seen_by_watcher;
        let mut total = 0;
        while total < expected {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let vid = json["vehicle_id"].as_str().unwrap().to_string();
                    let seq = json["seq"].as_u64().unwrap();
                    if seen.lock().unwrap().entry(vid).or_default().insert(seq) {
                        total += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("watcher lost its connection: {e}"),
            }
        }
    });

    let fleet = FleetConfig {
        broker: gw.mqtt_addr.to_string(),
        vehicles: VEHICLES,
        rate_hz: 5.0,
        qos: 1,
        positions_per_vehicle: Some(POSITIONS_EACH),
        connect_rate_per_s: 2_000,
        progress: false,
        ..FleetConfig::default()
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_fleet(fleet, std::future::pending()),
    )
    .await
    .expect("fleet finishes")
    .expect("fleet runs");
    assert_eq!(summary.vehicles_connected, VEHICLES, "{summary:?}");
    assert_eq!(summary.sent, expected as u64, "{summary:?}");
    // Acks cover every position plus each connect's QoS 1 "online" status.
    assert_eq!(
        summary.acknowledged,
        expected as u64 + summary.connects,
        "{summary:?}"
    );
    assert_eq!(
        summary.dropped + summary.unsent_at_end + summary.errors,
        0,
        "{summary:?}"
    );

    if tokio::time::timeout(DEADLINE, watcher).await.is_err() {
        let seen = seen.lock().unwrap().clone();
        let have: usize = seen.values().map(|s| s.len()).sum();
        let short: Vec<String> = seen
            .iter()
            .filter(|(_, s)| s.len() < POSITIONS_EACH as usize)
            .take(10)
            .map(|(v, s)| format!("{v}: {s:?}"))
            .collect();
        let mut counters = String::new();
        for series in [
            "fleetgate_messages_decoded_total{kind=\"position\"}",
            "fleetgate_positions_duplicate_total",
            "fleetgate_messages_published_total",
            "fleetgate_broker_publish_dropped_total",
            "fleetgate_fanout_dropped_total",
            "fleetgate_ingest_dropped_total",
        ] {
            counters.push_str(&format!("{series} = {}\n", metric(&gw, series).await));
        }
        panic!(
            "the watcher got {have} of {expected} positions ({} vehicles seen); some short ones: {short:#?}\n{counters}",
            seen.len()
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), VEHICLES);
    for (vid, seqs) in &seen {
        let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
        assert_eq!(seqs.len() as u32, POSITIONS_EACH, "{vid}: {seqs:?}");
        assert_eq!(
            last - first + 1,
            u64::from(POSITIONS_EACH),
            "{vid} has a gap: {seqs:?}"
        );
    }
    assert_eq!(metric(&gw, "fleetgate_messages_malformed_total").await, 0);
    assert_eq!(
        metric(&gw, "fleetgate_broker_publish_dropped_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_fleet_reports_only_after_its_offline_rings_are_sent() {
    let gw = gateway().await;
    // The link goes down after 1 s and comes back after the run's 3 s are
    // over: at the end every vehicle's ring holds positions. With a drain,
    // they are sent (and acknowledged) before the summary.
    let fleet = FleetConfig {
        broker: gw.mqtt_addr.to_string(),
        vehicles: 5,
        rate_hz: 10.0,
        qos: 1,
        duration: Some(Duration::from_secs(3)),
        outage: Some(firmware_sim::runner::Outage {
            after: Duration::from_secs(1),
            length: Duration::from_secs(3),
        }),
        connect_rate_per_s: 0,
        drain: Some(Duration::from_secs(20)),
        ..FleetConfig::default()
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_fleet(fleet, std::future::pending()),
    )
    .await
    .expect("fleet finishes")
    .expect("fleet runs");
    assert!(
        summary.buffered > 0,
        "the outage filled the rings: {summary:?}"
    );
    assert_eq!(summary.unsent_at_end, 0, "{summary:?}");
    assert_eq!(
        summary.sent,
        summary.produced - summary.dropped,
        "{summary:?}"
    );
}
