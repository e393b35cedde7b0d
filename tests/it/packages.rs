//! Packages (seed 000): REST and its errors, the tracking socket as the
//! seed's clients use it, and a change reaching RabbitMQ's `package_status`.

use crate::common::*;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The package-tracking seed's client, as its contract
/// (`notes/source-systems.md`) has it talk: it dials
/// `/packages/track/{vehicleId}`, never writes (no subscribe message),
/// and decodes each text frame as one `Package {from, to, vehicleId}`,
/// ignoring keys it does not know, as Go's `encoding/json` does.
struct SeedTracker {
    ws: Ws,
}

/// The seed's `Package` struct: only these three fields.
#[derive(Debug, Deserialize, PartialEq)]
struct SeedPackage {
    from: String,
    to: String,
    #[serde(rename = "vehicleId")]
    vehicle_id: String,
}

impl SeedTracker {
    async fn dial(http: std::net::SocketAddr, vehicle: &str) -> SeedTracker {
        SeedTracker {
            ws: ws_connect(http, &format!("/packages/track/{vehicle}")).await,
        }
    }

    /// `conn.ReadMessage()` then `json.Unmarshal`: the frame must be one
    /// compact JSON text frame. Returns the seed's view and the whole object.
    async fn read(&mut self) -> (SeedPackage, Value) {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket stays open")
                .expect("a WebSocket message");
            match message {
                Message::Text(text) => {
                    assert!(!text.contains('\n'), "one compact object per frame: {text}");
                    let seed: SeedPackage = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("not the seed's Package ({e}): {text}"));
                    return (seed, serde_json::from_str(&text).unwrap());
                }
                // Answered by the WebSocket library, as gorilla's does.
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }
}

fn seed(from: &str, to: &str, vehicle: &str) -> SeedPackage {
    SeedPackage {
        from: from.into(),
        to: to.into(),
        vehicle_id: vehicle.into(),
    }
}

async fn create(gw: &fleetgate::Gateway, id: &str, from: &str, to: &str, vehicle: &str) -> Value {
    let body = serde_json::json!({"id": id, "from": from, "to": to, "vehicleId": vehicle});
    let (status, text) = http_post_json(gw.http_addr, "/packages", &body.to_string()).await;
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A device publishes fix `seq` at `(lat_e6, lon_e6)` at QoS 1.
async fn publish_at(gw: &fleetgate::Gateway, vehicle: &str, seq: u32, lat_e6: i32, lon_e6: i32) {
    let mut device = RawClient::mqtt(gw.mqtt_addr, &format!("dev-{vehicle}-{seq}"), 30).await;
    let mut p = Publish::from_bytes(
        format!("v/{vehicle}/pos"),
        QoS::AtLeastOnce,
        position_at(seq, lat_e6, lon_e6),
    );
    p.pkid = 1;
    device.send(Packet::Publish(p)).await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
    device.send(Packet::Disconnect).await;
}

/// Waits until the fleet holds fix `seq` for `vehicle` (GET /vehicles/{id}).
async fn await_fix(gw: &fleetgate::Gateway, vehicle: &str, seq: u64) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get(gw.http_addr, &format!("/vehicles/{vehicle}")).await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["position"]["seq"].as_u64() == Some(seq) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fix {seq} of {vehicle} never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_tracker_gets_current_packages_then_each_change_then_the_vehicle_moving() {
    let mut config = test_config();
    // One position frame now, the next not within the test: pacing shows.
    config.http.package_track_interval_ms = 60_000;
    let gw = gateway_with(config).await;
    create(&gw, "p1", "Depot Noord", "Dam 1", "van-1").await;
    create(&gw, "p2", "Depot Zuid", "Kalverstraat 5", "van-1").await;
    create(&gw, "other", "Depot", "Elsewhere", "truck-9").await;

    // On connect: the vehicle's current packages, and only its own.
    let mut tracker = SeedTracker::dial(gw.http_addr, "van-1").await;
    let (a, _) = tracker.read().await;
    let (b, _) = tracker.read().await;
    assert_eq!(a, seed("Depot Noord", "Dam 1", "van-1"));
    assert_eq!(b, seed("Depot Zuid", "Kalverstraat 5", "van-1"));

    // Every change, at once: a new package, one moved away, one delivered.
    create(&gw, "p3", "Depot", "Spui 2", "van-1").await;
    assert_eq!(tracker.read().await.0, seed("Depot", "Spui 2", "van-1"));
    let (status, _) = http_post_json(
        gw.http_addr,
        "/packages/p1/move",
        r#"{"vehicleId":"truck-9"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (moved, _) = tracker.read().await;
    assert_eq!(
        moved,
        seed("Depot Noord", "Dam 1", "truck-9"),
        "the move away is news too"
    );
    let (status, _) = http_post_json(gw.http_addr, "/packages/p3/deliver", "").await;
    assert_eq!(status, 200);
    let (delivered, full) = tracker.read().await;
    assert_eq!(delivered, seed("Depot", "Spui 2", "van-1"));
    assert_eq!(full["status"], "delivered");

    // The vehicle moves: its one package in transit again, with the position.
    publish_at(&gw, "van-1", 1, 52_370_000, 4_890_000).await;
    let (p2, moving) = tracker.read().await;
    assert_eq!(p2, seed("Depot Zuid", "Kalverstraat 5", "van-1"));
    assert_eq!(moving["lat"], 52.37);
    assert_eq!(moving["lon"], 4.89);
    assert_eq!(moving["speed_kmh"], 50.0);

    // Paced: a fix within the interval waits; a change meanwhile does not.
    publish_at(&gw, "van-1", 2, 52_380_000, 4_900_000).await;
    await_fix(&gw, "van-1", 2).await;
    create(&gw, "p4", "Depot", "Rokin 9", "van-1").await;
    let (next, full) = tracker.read().await;
    assert_eq!(next, seed("Depot", "Rokin 9", "van-1"));
    assert!(
        full.get("lat").is_none(),
        "a change, not the held fix: {full}"
    );
    assert_eq!(metric(&gw, "fleetgate_package_track_clients").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_creates_reads_lists_moves_and_delivers_with_the_carriers_live_state() {
    let gw = gateway().await;
    let mut dashboard = ws_connect(gw.http_addr, "/ws?vehicles=van-2").await;
    assert_eq!(next_json(&mut dashboard).await["snapshot"], true);

    let made = create(&gw, "box-7", "Depot Noord", "Dam 1", "van-2").await;
    assert_eq!(made["id"], "box-7");
    assert_eq!(made["status"], "in_transit");
    // Dashboards see the change in their live feed.
    let frame = next_json(&mut dashboard).await;
    assert_eq!(frame["packages"][0]["id"], "box-7", "{frame}");

    // Without an id, one is made.
    let (status, body) = http_post_json(
        gw.http_addr,
        "/packages",
        r#"{"from":"A","to":"B","vehicleId":"van-2"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let anonymous: Value = serde_json::from_str(&body).unwrap();
    let made_id = anonymous["id"].as_str().unwrap().to_owned();
    assert!(!made_id.is_empty());

    // Read: not heard from yet, then with its live position and status.
    let (status, body) = http_get(gw.http_addr, "/packages/box-7").await;
    assert_eq!(status, 200);
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["vehicleId"], "van-2");
    assert!(read["vehicle"].is_null(), "{read}");
    publish_at(&gw, "van-2", 1, 52_360_000, 4_880_000).await;
    await_fix(&gw, "van-2", 1).await;
    let (_, body) = http_get(gw.http_addr, "/packages/box-7").await;
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["vehicle"]["status"], "online", "{read}");
    assert_eq!(read["vehicle"]["position"]["lat"], 52.36);

    // List by vehicle, sorted by id.
    let (status, body) = http_get(gw.http_addr, "/packages?vehicleId=van-2").await;
    assert_eq!(status, 200);
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = list.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let mut expected = vec!["box-7", made_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);

    // Move, then deliver.
    let (status, body) = http_post_json(
        gw.http_addr,
        "/packages/box-7/move",
        r#"{"vehicleId":"van-3"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["vehicleId"],
        "van-3"
    );
    let (_, body) = http_get(gw.http_addr, "/packages?vehicleId=van-3").await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 1);
    let (status, body) = http_post_json(gw.http_addr, "/packages/box-7/deliver", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "delivered"
    );
}

/// `(status, body as JSON)` of a request.
async fn call(
    gw: &fleetgate::Gateway,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http_request(gw.http_addr, method, path, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_a_json_error() {
    let mut config = test_config();
    config.fleet.max_packages = std::num::NonZeroUsize::new(2).unwrap();
    let gw = gateway_with(config).await;
    let post = |body: &'static str| call(&gw, "POST", "/packages", Some(body));

    // 400, naming the field.
    for (body, field) in [
        (r#"{"to":"B","vehicleId":"v"}"#, "from"),
        (r#"{"from":"","to":"B","vehicleId":"v"}"#, "from"),
        (r#"{"from":"A","to":7,"vehicleId":"v"}"#, "to"),
        (r#"{"from":"A","to":"B"}"#, "vehicleId"),
        (
            r#"{"from":"A","to":"B","vehicleId":"no spaces"}"#,
            "vehicleId",
        ),
        (r#"{"from":"A","to":"B","vehicleId":"v","id":"a/b"}"#, "id"),
        ("not json", "body"),
        ("[1,2]", "body"),
    ] {
        let (status, json) = post(body).await;
        assert_eq!(
            (status, json["field"].as_str()),
            (400, Some(field)),
            "{body}: {json}"
        );
        assert!(json["error"].is_string());
    }
    let long = format!(
        r#"{{"from":"{}","to":"B","vehicleId":"v"}}"#,
        "x".repeat(129)
    );
    let (status, json) = call(&gw, "POST", "/packages", Some(&long)).await;
    assert_eq!((status, json["field"].as_str()), (400, Some("from")));
    let (status, json) = call(&gw, "GET", "/packages", None).await;
    assert_eq!((status, json["field"].as_str()), (400, Some("vehicleId")));
    let (status, json) = call(&gw, "POST", "/packages/p1/move", Some("{}")).await;
    assert_eq!((status, json["field"].as_str()), (400, Some("vehicleId")));
    let (status, json) = call(&gw, "GET", "/packages/track/bad%20id", None).await;
    assert_eq!((status, json["field"].as_str()), (400, Some("vehicleId")));

    // 404.
    assert_eq!(call(&gw, "GET", "/packages/nope", None).await.0, 404);
    assert_eq!(
        call(
            &gw,
            "POST",
            "/packages/nope/move",
            Some(r#"{"vehicleId":"v"}"#)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(&gw, "POST", "/packages/nope/deliver", None).await.0,
        404
    );

    // 409: an id in transit again, and any change to a delivered package.
    assert_eq!(
        post(r#"{"id":"p1","from":"A","to":"B","vehicleId":"v"}"#)
            .await
            .0,
        201
    );
    assert_eq!(
        post(r#"{"id":"p1","from":"A","to":"B","vehicleId":"w"}"#)
            .await
            .0,
        409
    );
    assert_eq!(call(&gw, "POST", "/packages/p1/deliver", None).await.0, 200);
    let (status, json) = call(&gw, "POST", "/packages/p1/deliver", None).await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(
        call(
            &gw,
            "POST",
            "/packages/p1/move",
            Some(r#"{"vehicleId":"w"}"#)
        )
        .await
        .0,
        409
    );

    // 429 once fleet.max_packages are in transit (a delivered one makes room).
    assert_eq!(
        post(r#"{"id":"p2","from":"A","to":"B","vehicleId":"v"}"#)
            .await
            .0,
        201
    );
    assert_eq!(
        post(r#"{"id":"p3","from":"A","to":"B","vehicleId":"v"}"#)
            .await
            .0,
        201
    );
    let (status, json) = post(r#"{"id":"p4","from":"A","to":"B","vehicleId":"v"}"#).await;
    assert_eq!(status, 429, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("fleet.max_packages"),
        "{json}"
    );

    // 405 for another method (413 past the body limit, on every route:
    // http_api::every_route_taking_a_body_refuses_an_oversized_one_with_413_json).
    assert_eq!(call(&gw, "DELETE", "/packages/p2", None).await.0, 405);
    assert_eq!(call(&gw, "PUT", "/packages", Some("{}")).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_client_that_stops_reading_is_cut_and_counted() {
    let mut config = test_config();
    config.http.ws_stall_timeout_ms = 300;
    let gw = gateway_with(config).await;
    // Connected, then never read: no pong goes back.
    let _stalled = ws_connect(gw.http_addr, "/packages/track/van-4").await;
    await_metric(&gw, "fleetgate_package_track_clients", 1).await;
    await_metric(&gw, "fleetgate_ws_stalled_disconnects_total", 1).await;
    await_metric_at_most(&gw, "fleetgate_package_track_clients", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_changes_reach_the_package_status_queue_by_vehicle_message_id() {
    let t = tag("pkgrest");
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_config(&t, &amqp_url(), dir.path());
    let queue = config.bridge.package_queue.clone();
    let (_conn, channel) = amqp().await;
    // Declared as the package-tracking consumers declare it.
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: false,
                exclusive: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the contract's declaration");
    let gw = gateway_with(config).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;

    let van = format!("{t}-van");
    let truck = format!("{t}-truck");
    create(&gw, "parcel", "Depot Noord", "Dam 1", &van).await;
    let move_body = format!(r#"{{"vehicleId":"{truck}"}}"#);
    assert_eq!(
        http_post_json(gw.http_addr, "/packages/parcel/move", &move_body)
            .await
            .0,
        200
    );
    assert_eq!(
        http_post_json(gw.http_addr, "/packages/parcel/deliver", "")
            .await
            .0,
        200
    );

    // Manual ack; the message_id is the carrying vehicle's id.
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let id = d.properties.message_id().as_ref().map(|m| m.to_string());
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        got.push((id, body));
    }
    assert_eq!(got[0].0.as_deref(), Some(van.as_str()));
    assert_eq!(got[0].1["from"], "Depot Noord");
    assert_eq!(got[0].1["to"], "Dam 1");
    assert_eq!(got[0].1["vehicleId"], van.as_str());
    assert_eq!(
        got[1].0.as_deref(),
        Some(truck.as_str()),
        "a move is the new carrier's"
    );
    assert_eq!(got[1].1["vehicleId"], truck.as_str());
    assert_eq!(got[2].1["status"], "delivered");
}
