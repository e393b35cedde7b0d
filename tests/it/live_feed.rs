//! The dashboards' side of the fan-out, end to end: the WebSocket live feed
//! and the REST API against a simulated fleet on the in-process gateway.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::common::*;
use firmware_sim::runner::{run_fleet, FleetConfig};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;

/// The `vehicle_id`s of a frame's `positions` or `vehicles` array, in order.
fn vehicle_ids(frame: &serde_json::Value, key: &str) -> Vec<String> {
    frame[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {frame}"))
        .iter()
        .map(|v| v["vehicle_id"].as_str().unwrap().to_string())
        .collect()
}

async fn publish_positions(gw: &fleetgate::Gateway, fixes: &[(&str, u32, i32)]) {
    let mut v = RawClient::mqtt(gw.mqtt_addr, "publisher", 30).await;
    let before = metric(gw, "fleetgate_messages_decoded_total{kind=\"position\"}").await;
    for (vid, seq, lat) in fixes {
        v.send(Packet::Publish(Publish::from_bytes(
            format!("v/{vid}/pos"),
            QoS::AtMostOnce,
            position_at(*seq, *lat, HOME_E6.1),
        )))
        .await;
    }
    await_metric(
        gw,
        "fleetgate_messages_decoded_total{kind=\"position\"}",
        before + fixes.len() as u64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_client_sees_every_vehicles_latest_position_while_a_stalled_one_is_cut_off() {
    let mut config = test_config();
    config.http.ws_stall_timeout_ms = 1_000;
    config.http.ws_frame_interval_ms = 20;
    let gw = gateway_with(config).await;

    // Connected first, then never read again: its queue conflates, the
    // gateway pings it, and it never answers.
    let _stalled = ws_connect(gw.http_addr, "/ws").await;
    let mut reader = ws_connect(gw.http_addr, "/ws").await;
    assert_eq!(next_json(&mut reader).await["snapshot"], true);

    let fleet = FleetConfig {
        broker: gw.mqtt_addr.to_string(),
        vehicles: 200,
        rate_hz: 10.0,
        qos: 1,
        positions_per_vehicle: Some(8),
        connect_rate_per_s: 2_000,
        progress: false,
        ..FleetConfig::default()
    };
    let fleet = tokio::spawn(run_fleet(fleet, std::future::pending()));

    // Read while the fleet drives; keep each vehicle's highest seq seen.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let collect = |frame: &serde_json::Value, seen: &mut HashMap<String, u64>| {
        for p in frame["positions"].as_array().into_iter().flatten() {
            let vid = p["vehicle_id"].as_str().unwrap().to_string();
            let seq = p["seq"].as_u64().unwrap();
            let e = seen.entry(vid).or_insert(seq);
            *e = (*e).max(seq);
        }
    };
    while !fleet.is_finished() {
        tokio::select! {
            f = next_json(&mut reader) => collect(&f, &mut seen),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let summary = fleet.await.unwrap().unwrap();
    assert_eq!(summary.vehicles_connected, 200, "{summary:?}");

    // What the fleet holds now is what the reader must end up with.
    let (status, body) = http_get(gw.http_addr, "/vehicles").await;
    assert_eq!(status, 200);
    let latest: HashMap<String, u64> = serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["vehicle_id"].as_str().unwrap().to_string(),
                v["position"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(latest.len(), 200);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while latest.iter().any(|(vid, seq)| seen.get(vid) != Some(seq)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader is missing latest positions"
        );
        let f = next_json(&mut reader).await;
        collect(&f, &mut seen);
    }

    // The stalled client was disconnected, and the reader kept being served.
    await_metric(&gw, "fleetgate_ws_stalled_disconnects_total", 1).await;
    assert_eq!(metric(&gw, "fleetgate_ws_clients").await, 1);
}

#[tokio::test]
async fn feed_narrowed_to_vehicle_ids_streams_only_those() {
    let gw = gateway().await;
    let mut only_b = ws_connect(gw.http_addr, "/ws?vehicles=b").await;
    assert_eq!(next_json(&mut only_b).await["snapshot"], true);
    publish_positions(
        &gw,
        &[
            ("a", 1, 52_000_000),
            ("b", 1, 52_000_000),
            ("c", 1, 52_000_000),
        ],
    )
    .await;
    let f = next_json(&mut only_b).await;
    let ids = vehicle_ids(&f, "positions");
    assert_eq!(ids, vec!["b"], "{f}");
}

#[tokio::test]
async fn feed_narrowed_to_a_bounding_box_streams_positions_inside_it() {
    let gw = gateway().await;
    let mut amsterdam = ws_connect(gw.http_addr, "/ws?bbox=4.7,52.2,5.1,52.5").await;
    assert_eq!(next_json(&mut amsterdam).await["snapshot"], true);
    publish_positions(
        &gw,
        &[("inside", 1, 52_370_000), ("outside", 1, 48_850_000)],
    )
    .await;
    let f = next_json(&mut amsterdam).await;
    let ids = vehicle_ids(&f, "positions");
    assert_eq!(ids, vec!["inside"], "{f}");

    // A client connecting later gets the same view as its snapshot.
    let mut late = ws_connect(gw.http_addr, "/ws?bbox=4.7,52.2,5.1,52.5").await;
    let snapshot = next_json(&mut late).await;
    let ids = vehicle_ids(&snapshot, "vehicles");
    assert_eq!(ids, vec!["inside"], "{snapshot}");
}

#[tokio::test]
async fn bad_feed_parameters_get_a_json_400() {
    let gw = gateway().await;
    for query in ["?bbox=1,2", "?bbox=0,0,200,1", "?vehicles=a/b"] {
        let url = format!("ws://{}/ws{query}", gw.http_addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{query}");
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{query}: {body}"
                );
            }
            other => panic!("{query}: expected a 400, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_client_past_max_subscribers_gets_429_and_others_keep_their_feed() {
    let mut config = test_config();
    // One place goes to the MQTT republisher.
    config.fanout.max_subscribers = NonZeroUsize::new(2).unwrap();
    let gw = gateway_with(config).await;
    let mut first = ws_connect(gw.http_addr, "/ws").await;
    assert_eq!(next_json(&mut first).await["snapshot"], true);
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.http_addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(
        metric(&gw, "fleetgate_fanout_subscribers_refused_total").await,
        1
    );
    publish_positions(&gw, &[("a", 1, 1)]).await;
    assert_eq!(
        next_json(&mut first).await["positions"][0]["vehicle_id"],
        "a"
    );
}

#[tokio::test]
async fn rest_lists_vehicles_and_answers_unknown_ones_with_json_errors() {
    let gw = gateway().await;
    publish_positions(
        &gw,
        &[("truck-2", 7, 52_100_000), ("truck-1", 3, 52_000_000)],
    )
    .await;

    let (status, body) = http_get(gw.http_addr, "/vehicles").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vehicle_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["truck-1", "truck-2"], "sorted by id");
    assert_eq!(list[1]["status"], "online");
    assert_eq!(list[1]["position"]["seq"], 7);

    let (status, body) = http_get(gw.http_addr, "/vehicles/truck-2").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        (v["position"]["lat"].as_f64().unwrap() - 52.1).abs() < 1e-9,
        "{v}"
    );

    let (status, body) = http_get(gw.http_addr, "/vehicles/nobody").await;
    assert_eq!(status, 404);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );

    let (status, body) = http_get(gw.http_addr, "/vehicles/a%2Fb").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http_get(gw.http_addr, "/no/such/endpoint").await;
    assert_eq!(status, 404);
}
