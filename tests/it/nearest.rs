//! Nearest-vehicle search: fleetgate's `GET /vehicles/nearest` over vehicles
//! that publish over MQTT, and the nearest-driver service's `POST /tracking`
//! and `POST /search`, called the way its Go client calls them
//! (`http.Post(url, "application/json", body)`, JSON in, JSON out).

use crate::common::*;
use fleetgate_wire::{encode, MAX_ENCODED_LEN};
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

/// A vehicle at (`lat_e6`, `lon_e6`) publishes one fix at QoS 1; its
/// PUBACK means ingest has applied it.
async fn place(gw: &fleetgate::Gateway, vid: &str, lat_e6: i32, lon_e6: i32) -> RawClient {
    let mut c = RawClient::mqtt(gw.mqtt_addr, &format!("dev-{vid}"), 30).await;
    let p = Publish::from_bytes(
        format!("v/{vid}/pos"),
        QoS::AtLeastOnce,
        position_at(1, lat_e6, lon_e6),
    );
    c.send(Packet::Publish(p)).await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    c
}

/// The vehicle says goodbye (`online: false`, as its last will would).
async fn go_offline(c: &mut RawClient, vid: &str) {
    let mut st = status_fix(2);
    st.online = false;
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let payload = bytes::Bytes::copy_from_slice(encode(&st, &mut buf).unwrap());
    c.send(Packet::Publish(Publish::from_bytes(
        format!("v/{vid}/status"),
        QoS::AtLeastOnce,
        payload,
    )))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn ids(answer: &Value, key: &str) -> Vec<String> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("an array: {answer}"))
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn nearest_lists_online_vehicles_nearest_first_within_the_radius() {
    let gw = gateway().await;
    // Around the Dam in Amsterdam: ~110 m, ~330 m and ~1.1 km north, one
    // in Utrecht (35 km), and one offline right at the point.
    let _a = place(&gw, "near", 52_374_100, 4_892_200).await;
    let _b = place(&gw, "middle", 52_376_100, 4_892_200).await;
    let _c = place(&gw, "far", 52_383_100, 4_892_200).await;
    let _d = place(&gw, "utrecht", 52_090_700, 5_121_400).await;
    let mut gone = place(&gw, "parked", 52_373_100, 4_892_200).await;
    go_offline(&mut gone, "parked").await;

    let (code, body) = http_get(
        gw.http_addr,
        "/vehicles/nearest?lat=52.3731&lon=4.8922&k=10&radius_m=2000",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(ids(&answer, "vehicle_id"), ["near", "middle", "far"]);
    let d: Vec<f64> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["distance_m"].as_f64().unwrap())
        .collect();
    assert!(
        (d[0] - 111.2).abs() < 2.0 && (d[2] - 1111.9).abs() < 5.0,
        "{d:?}"
    );
    assert_eq!(answer[0]["status"], "online");
    assert!(answer[0]["position"]["lat"].is_number(), "{answer}");

    // k bounds the answer; all=true brings the offline one back.
    let (_, body) = http_get(
        gw.http_addr,
        "/vehicles/nearest?lat=52.3731&lon=4.8922&k=2&all=true",
    )
    .await;
    assert_eq!(ids(&json(&body), "vehicle_id"), ["parked", "near"]);
    // the default radius (5 km) leaves Utrecht out; 50 km takes it in
    let (_, body) = http_get(gw.http_addr, "/vehicles/nearest?lat=52.3731&lon=4.8922").await;
    assert!(!ids(&json(&body), "vehicle_id").contains(&"utrecht".to_string()));
    let (_, body) = http_get(
        gw.http_addr,
        "/vehicles/nearest?lat=52.3731&lon=4.8922&radius_m=50000",
    )
    .await;
    assert_eq!(
        ids(&json(&body), "vehicle_id").last().map(String::as_str),
        Some("utrecht")
    );
    // nowhere near anything
    let (code, body) = http_get(gw.http_addr, "/vehicles/nearest?lat=-33.4&lon=-70.6").await;
    assert_eq!((code, body.as_str()), (200, "[]"));
}

#[tokio::test]
async fn nearest_refuses_bad_parameters_naming_the_field() {
    let gw = gateway().await;
    for (query, field) in [
        ("lon=4.9", "lat"),
        ("lat=52.3", "lon"),
        ("lat=abc&lon=4.9", "lat"),
        ("lat=95&lon=4.9", "lat"),
        ("lat=52&lon=4.9&k=0", "k"),
        ("lat=52&lon=4.9&k=2.5", "k"),
        ("lat=52&lon=4.9&radius_m=-1", "radius_m"),
        ("lat=52&lon=4.9&all=maybe", "all"),
    ] {
        let (code, body) = http_get(gw.http_addr, &format!("/vehicles/nearest?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(json(&body)["field"], field, "{query}: {body}");
    }
}

/// Drivers tracked by `POST /tracking` are found by `POST /search`, in the
/// seed's shape, nearest first; what Redis would answer for GeoHash.
#[tokio::test]
async fn the_seed_client_tracks_drivers_and_finds_the_nearest() {
    let gw = gateway().await;
    // Santiago, as in the seed's README: three drivers, one 20 km out.
    for (id, lat, lng) in [
        ("1", -33.44091, -70.6301),
        ("2", -33.44500, -70.6301),
        ("3", -33.46000, -70.6500),
        ("4", -33.62000, -70.6301),
    ] {
        let body = format!(r#"{{"id":"{id}","lat":{lat},"lng":{lng}}}"#);
        let (code, answer) = http_post_json(gw.http_addr, "/tracking", &body).await;
        assert_eq!((code, answer.as_str()), (200, ""), "POST /tracking {body}");
    }
    // Ingest applies them between batches: wait until the last one is in.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (code, _) = http_get(gw.http_addr, "/vehicles/4").await;
        if code == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tracked drivers never appeared"
        );
        tokio::task::yield_now().await;
    }

    let (code, body) = http_post_json(
        gw.http_addr,
        "/search",
        r#"{"lat":-33.44091,"lng":-70.6301,"limit":5}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(
        ids(&answer, "Name"),
        ["1", "2", "3"],
        "within 15 km, nearest first: {answer}"
    );
    let first = &answer[0];
    assert_eq!(first["Dist"].as_f64(), Some(0.0));
    assert!((first["Latitude"].as_f64().unwrap() + 33.44091).abs() < 1e-6);
    assert!((first["Longitude"].as_f64().unwrap() + 70.6301).abs() < 1e-6);
    assert_eq!(
        first["GeoHash"].as_u64(),
        Some(fleetgate::api::nearest::redis_geohash(-33.44091, -70.6301))
    );
    let second = answer[1]["Dist"].as_f64().unwrap();
    assert!((second - 0.4557).abs() < 0.001, "km, 4 decimals: {second}");

    let (_, body) = http_post_json(
        gw.http_addr,
        "/search",
        r#"{"lat":-33.44091,"lng":-70.6301,"limit":1}"#,
    )
    .await;
    assert_eq!(ids(&json(&body), "Name"), ["1"]);
    let (code, body) = http_post_json(
        gw.http_addr,
        "/search",
        r#"{"lat":52.37,"lng":4.89,"limit":5}"#,
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "[]"));
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field_and_other_methods_405() {
    let gw = gateway().await;
    for (path, body, field) in [
        ("/tracking", "not json", "body"),
        ("/tracking", "[1,2]", "body"),
        ("/tracking", r#"{"lat":1,"lng":2}"#, "id"),
        ("/tracking", r#"{"id":"a/b","lat":1,"lng":2}"#, "id"),
        ("/tracking", r#"{"id":"1","lat":91,"lng":2}"#, "lat"),
        ("/tracking", r#"{"id":"1","lat":"x","lng":2}"#, "lat"),
        ("/tracking", r#"{"id":"1","lat":1}"#, "lng"),
        ("/search", r#"{"lng":2}"#, "lat"),
        ("/search", r#"{"lat":1,"lng":2,"limit":-1}"#, "limit"),
    ] {
        let (code, answer) = http_post_json(gw.http_addr, path, body).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        assert_eq!(json(&answer)["field"], field, "{path} {body}: {answer}");
    }
    for path in ["/tracking", "/search"] {
        let (code, answer) = http_get(gw.http_addr, path).await;
        assert_eq!(code, 405, "GET {path}: {answer}");
        assert!(json(&answer)["error"].is_string());
    }
}

/// A tracked position is a position like a device's: the dashboards'
/// `fleet/<vid>/position` topic gets it.
#[tokio::test]
async fn a_tracked_position_reaches_the_dashboards() {
    let gw = gateway().await;
    let mut dashboard = RawClient::mqtt(gw.mqtt_addr, "dashboard", 30).await;
    dashboard
        .send(Packet::Subscribe(Subscribe::new(
            "fleet/+/position",
            QoS::AtMostOnce,
        )))
        .await;
    assert!(matches!(dashboard.recv().await, Some(Packet::SubAck(_))));

    let (code, _) = http_post_json(
        gw.http_addr,
        "/tracking",
        r#"{"id":"taxi-7","lat":-33.44091,"lng":-70.6301}"#,
    )
    .await;
    assert_eq!(code, 200);
    match dashboard.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "fleet/taxi-7/position");
            let view = json(std::str::from_utf8(&p.payload).unwrap());
            assert!(
                (view["lat"].as_f64().unwrap() + 33.44091).abs() < 1e-6,
                "{view}"
            );
        }
        other => panic!("expected the position, got {other:?}"),
    }
}
