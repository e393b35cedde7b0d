//! Geofences from the config file: a vehicle driving in and out over MQTT
//! makes one `geofence_enter` and one `geofence_exit` on
//! `fleet/events/geofence_enter|exit`, and one already inside when the
//! gateway restarts does not enter twice.

use crate::common::*;
use fleetgate::config::Config;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

/// A 150 m circle around the fixtures' home (the Dam).
fn config_with_depot() -> Config {
    let mut config = test_config();
    config.geofence.fences.push(fence_at_home("depot", 150.0));
    config
}

async fn dashboard(gw: &fleetgate::Gateway) -> RawClient {
    let mut c = RawClient::mqtt(gw.mqtt_addr, "dashboard", 30).await;
    c.send(Packet::Subscribe(Subscribe::new(
        "fleet/events/+",
        QoS::AtMostOnce,
    )))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// One fix at `north_e6` millionths of a degree north of home.
async fn fix(device: &mut RawClient, seq: u32, north_e6: i32) {
    let payload = position_at(seq, HOME_E6.0 + north_e6, HOME_E6.1);
    device
        .send(Packet::Publish(Publish::from_bytes(
            "v/truck-1/pos",
            QoS::AtLeastOnce,
            payload,
        )))
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
}

/// The next geofence event the dashboard gets (status events skipped).
async fn next_fence_event(dashboard: &mut RawClient) -> (String, Value) {
    loop {
        match dashboard.recv().await {
            Some(Packet::Publish(p)) if p.topic.starts_with("fleet/events/geofence_") => {
                let json: Value = serde_json::from_slice(&p.payload).unwrap();
                return (p.topic, json);
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn driving_in_and_out_makes_one_enter_and_one_exit_and_a_restart_no_second_enter() {
    let config = config_with_depot();
    let gw = gateway_with(config.clone()).await;
    let mut watch = dashboard(&gw).await;
    let mut truck = RawClient::mqtt(gw.mqtt_addr, "truck-1", 30).await;
    fix(&mut truck, 1, 5_000).await; // ~560 m north: outside
    fix(&mut truck, 2, 500).await; // ~56 m: inside
    fix(&mut truck, 3, 0).await;
    let (topic, event) = next_fence_event(&mut watch).await;
    assert_eq!(topic, "fleet/events/geofence_enter");
    assert_eq!(event["type"], "geofence_enter");
    assert_eq!(event["fence"], 1);
    assert_eq!(event["vehicle_id"], "truck-1");
    drop(truck);
    drop(watch);
    gw.shutdown().await;

    // A new gateway: the truck is still inside, then leaves.
    let gw = gateway_with(config).await;
    let mut watch = dashboard(&gw).await;
    let mut truck = RawClient::mqtt(gw.mqtt_addr, "truck-1", 30).await;
    fix(&mut truck, 4, 100).await; // inside: no second enter
    fix(&mut truck, 5, 1_500).await; // ~167 m: outside, within the 25 m buffer
    fix(&mut truck, 6, 3_000).await; // ~334 m: out
    let (topic, event) = next_fence_event(&mut watch).await;
    assert_eq!(
        topic, "fleet/events/geofence_exit",
        "the first event after the restart: {event}"
    );
    assert_eq!(event["fence"], 1);
}

#[test]
fn a_bad_fence_in_the_config_file_refuses_to_start_naming_it() {
    let text =
        "[[geofence.fences]]\nname = \"yard\"\ncircle = { lat = 52.0, lon = 4.0, radius_m = 0 }\n";
    let err = Config::from_toml(text, std::path::Path::new("g.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"yard\"") && err.contains("radius_m"),
        "{err}"
    );
    let text = "[[geofence.fences]]\nname = \"yard\"\n";
    let err = Config::from_toml(text, std::path::Path::new("g.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one of circle or polygon"), "{err}");
}

/// Fences managed over REST; each edit emits, at once, the transitions it
/// implies for vehicles already placed.
#[tokio::test]
async fn geofences_over_rest_and_each_edit_emits_the_transitions_it_implies() {
    let mut config = test_config();
    config.geofence.max_fences = std::num::NonZeroUsize::new(1).unwrap();
    let gw = gateway_with(config).await;
    let mut watch = dashboard(&gw).await;
    let mut truck = RawClient::mqtt(gw.mqtt_addr, "truck-1", 30).await;
    fix(&mut truck, 1, 500).await; // ~56 m north of home, no fence yet

    let (lat, lon) = (f64::from(HOME_E6.0) / 1e6, f64::from(HOME_E6.1) / 1e6);
    let depot =
        format!(r#"{{"name":"depot","circle":{{"lat":{lat},"lon":{lon},"radius_m":150}}}}"#);
    let (code, body) = http_post_json(gw.http_addr, "/geofences", &depot).await;
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["name"], "depot");
    let (topic, event) = next_fence_event(&mut watch).await;
    assert_eq!(
        (topic.as_str(), event["fence"].as_u64()),
        ("fleet/events/geofence_enter", Some(id))
    );

    let (code, body) = http_get(gw.http_addr, "/geofences").await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["id"].as_u64(),
        Some(id)
    );
    // the bound: one fence (429 naming it, as every bound of the API)
    let (code, body) = http_post_json(gw.http_addr, "/geofences", &depot).await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("geofence.max_fences"), "{body}");

    // shrink it to 10 m: the truck, 56 m out, is past the 25 m buffer
    let small = depot.replace("\"radius_m\":150", "\"radius_m\":10");
    let (code, body) = http_request(
        gw.http_addr,
        "PUT",
        &format!("/geofences/{id}"),
        Some(&small),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (topic, event) = next_fence_event(&mut watch).await;
    assert_eq!(
        (topic.as_str(), event["fence"].as_u64()),
        ("fleet/events/geofence_exit", Some(id))
    );

    let (code, _) = http_request(gw.http_addr, "DELETE", &format!("/geofences/{id}"), None).await;
    assert_eq!(code, 204);
    let (code, body) = http_get(gw.http_addr, &format!("/geofences/{id}")).await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test]
async fn bad_geofences_get_json_errors() {
    let gw = gateway().await;
    for body in [
        r#"{"name":"x"}"#,
        r#"{"name":"x","circle":{"lat":1,"lon":2,"radius_m":0}}"#,
        r#"{"name":"x","polygon":[[1,2],[3,4]]}"#,
        r#"{"name":"x","circle":{"lat":1,"lon":2,"radius_m":5},"colour":"red"}"#,
        "not json",
    ] {
        let (code, answer) = http_post_json(gw.http_addr, "/geofences", body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        let error: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(error["field"], "body", "{body}: {answer}");
    }
    let fence = r#"{"name":"x","circle":{"lat":1,"lon":2,"radius_m":5}}"#;
    let (code, _) = http_request(gw.http_addr, "PUT", "/geofences/999", Some(fence)).await;
    assert_eq!(code, 404);
    let (code, answer) = http_get(gw.http_addr, "/geofences/abc").await;
    assert_eq!(code, 400, "{answer}");
}
