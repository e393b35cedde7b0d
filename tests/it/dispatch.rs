//! Dispatch requests, called as the nearest-driver service's Go client calls
//! them (`POST /v2/search`, `POST /v2/cancel` with a string id): the nearest
//! free vehicle is reserved and told, and the requester learns the outcome
//! from `GET /v2/requests/{id}`, its notifications and `fleet/events/dispatch`.

use crate::common::*;
use fleetgate_wire::{decode, Command};
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

async fn next_dispatch_event(dashboard: &mut RawClient) -> Value {
    loop {
        match dashboard.recv().await {
            Some(Packet::Publish(p)) if p.topic == "fleet/events/dispatch" => {
                return serde_json::from_slice(&p.payload).unwrap();
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected a dispatch event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_reserves_the_nearest_vehicle_and_everyone_learns_of_it() {
    let mut config = test_config();
    config.dispatch.max_open_requests = std::num::NonZeroUsize::new(2).unwrap();
    let gw = gateway_with(config).await;
    let mut dashboard = RawClient::mqtt(gw.mqtt_addr, "dashboard", 30).await;
    dashboard
        .send(Packet::Subscribe(Subscribe::new(
            "fleet/events/dispatch",
            QoS::AtMostOnce,
        )))
        .await;
    assert!(matches!(dashboard.recv().await, Some(Packet::SubAck(_))));
    // a cab ~110 m north of the pickup (the fixtures' home)
    let mut cab = RawClient::mqtt(gw.mqtt_addr, "cab-1", 30).await;
    cab.send(Packet::Subscribe(Subscribe::new(
        "v/cab-1/cmd",
        QoS::AtLeastOnce,
    )))
    .await;
    assert!(matches!(cab.recv().await, Some(Packet::SubAck(_))));
    let fix = position_at(1, HOME_E6.0 + 1_000, HOME_E6.1);
    cab.send(Packet::Publish(Publish::from_bytes(
        "v/cab-1/pos",
        QoS::AtLeastOnce,
        fix,
    )))
    .await;
    assert!(matches!(cab.recv().await, Some(Packet::PubAck(_))));

    let (lat, lng) = (f64::from(HOME_E6.0) / 1e6, f64::from(HOME_E6.1) / 1e6);
    let body = format!(r#"{{"lat":{lat},"lng":{lng}}}"#);
    let (code, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
    assert_eq!(code, 200, "{answer}");
    let id = json(&answer)["request_id"].as_u64().expect("a number");

    // the dashboards: created (searching), then assigned
    assert_eq!(
        next_dispatch_event(&mut dashboard).await["state"],
        "searching"
    );
    let assigned = next_dispatch_event(&mut dashboard).await;
    assert_eq!(
        (assigned["state"].as_str(), assigned["vehicle_id"].as_str()),
        (Some("assigned"), Some("cab-1"))
    );
    // the cab is told, as a command on its own connection
    match cab.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "v/cab-1/cmd");
            match decode::<Command>(&p.payload).unwrap() {
                Command::Text(text) => assert!(
                    text.starts_with(&format!("dispatch {id}: pick up")),
                    "{text}"
                ),
                other => panic!("expected a text, got {other:?}"),
            }
        }
        other => panic!("expected the command, got {other:?}"),
    }
    // the requester's REST view and notifications
    let (code, view) = http_get(gw.http_addr, &format!("/v2/requests/{id}")).await;
    assert_eq!(code, 200);
    let view = json(&view);
    assert_eq!(
        (view["state"].as_str(), view["vehicle_id"].as_str()),
        (Some("assigned"), Some("cab-1"))
    );
    assert!(view["distance_m"].as_f64().unwrap() > 100.0);
    let mut inbox = ws_connect(
        gw.http_addr,
        &format!("/notification?userId=requestor_{id}"),
    )
    .await;
    assert_eq!(json(&next_text(&mut inbox).await)["state"], "searching");
    assert_eq!(json(&next_text(&mut inbox).await)["state"], "assigned");

    // a second request finds no free vehicle: the cab is held
    let (_, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
    let second = json(&answer)["request_id"].as_u64().unwrap();
    let (_, view) = http_get(gw.http_addr, &format!("/v2/requests/{second}")).await;
    assert_eq!(json(&view)["state"], "searching");
    // and a third is one too many
    let (code, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
    assert_eq!(code, 429, "{answer}");

    // cancelling the first (the seed's string id) frees the cab for the second at once
    let (code, answer) = http_post_json(
        gw.http_addr,
        "/v2/cancel",
        &format!(r#"{{"request_id":"{id}"}}"#),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(json(&answer)["state"], "cancelled");
    let (_, view) = http_get(gw.http_addr, &format!("/v2/requests/{second}")).await;
    assert_eq!(json(&view)["vehicle_id"], "cab-1");
    let (code, _) = http_post_json(
        gw.http_addr,
        "/v2/cancel",
        &format!(r#"{{"request_id":{id}}}"#),
    )
    .await;
    assert_eq!(code, 409, "an ended request cannot change");
    let (code, answer) = http_request(
        gw.http_addr,
        "POST",
        &format!("/v2/requests/{second}/release"),
        None,
    )
    .await;
    assert_eq!(
        (code, json(&answer)["state"].as_str()),
        (200, Some("released"))
    );
}

#[tokio::test]
async fn bad_dispatch_calls_get_json_errors() {
    let gw = gateway().await;
    for (path, body, field) in [
        ("/v2/search", r#"{"lat":1}"#, "lng"),
        ("/v2/search", "nope", "body"),
        ("/v2/cancel", r#"{}"#, "request_id"),
        ("/v2/cancel", r#"{"request_id":"x"}"#, "request_id"),
    ] {
        let (code, answer) = http_post_json(gw.http_addr, path, body).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        assert_eq!(json(&answer)["field"], field, "{path} {body}: {answer}");
    }
    let (code, _) = http_get(gw.http_addr, "/v2/requests/99").await;
    assert_eq!(code, 404);
    let (code, _) = http_post_json(gw.http_addr, "/v2/cancel", r#"{"request_id":"99"}"#).await;
    assert_eq!(code, 404);
    let (code, _) = http_get(gw.http_addr, "/v2/search").await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn a_new_live_feed_client_learns_the_open_requests_from_its_snapshot() {
    let gw = gateway().await;
    let mut cab = RawClient::mqtt(gw.mqtt_addr, "cab-1", 30).await;
    cab.send(Packet::Publish(Publish::from_bytes(
        "v/cab-1/pos",
        QoS::AtLeastOnce,
        position(1),
    )))
    .await;
    assert!(matches!(cab.recv().await, Some(Packet::PubAck(_))));
    let (lat, lng) = (f64::from(HOME_E6.0) / 1e6, f64::from(HOME_E6.1) / 1e6);
    let search = |lat: f64, lng: f64| format!(r#"{{"lat":{lat},"lng":{lng}}}"#);
    // one takes the cab; one, far from any vehicle, keeps searching; one ends
    let mut ids = Vec::new();
    for body in [search(lat, lng), search(10.0, 10.0), search(-10.0, -10.0)] {
        let (code, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
        assert_eq!(code, 200, "{answer}");
        ids.push(json(&answer)["request_id"].as_u64().unwrap());
    }
    let cancel = format!(r#"{{"request_id":{}}}"#, ids[2]);
    let (code, answer) = http_post_json(gw.http_addr, "/v2/cancel", &cancel).await;
    assert_eq!(code, 200, "{answer}");

    let mut feed = ws_connect(gw.http_addr, "/ws").await;
    let snapshot = next_json(&mut feed).await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    let open: Vec<(u64, &str, Option<&str>)> = snapshot["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no requests in the snapshot: {snapshot}"))
        .iter()
        .map(|r| {
            (
                r["request_id"].as_u64().unwrap(),
                r["state"].as_str().unwrap(),
                r["vehicle_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        open,
        [
            (ids[0], "assigned", Some("cab-1")),
            (ids[1], "searching", None)
        ],
        "open requests, oldest first, the ended one left out"
    );
}
