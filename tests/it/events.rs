//! The events a tracking system's users expect, end to end: a truck that
//! switches on, drives through a 30 km/h zone at 50 km/h and parks makes
//! `ignition_on`, `motion_start`, `geofence_enter`, `overspeed` (naming the
//! zone), `geofence_exit`, `ignition_off` and `motion_stop`, each once, and
//! each with the same `event_id` on MQTT `fleet/events/<kind>`, the
//! WebSocket feed, `GET /events` and upstream (AMQP `message_id`
//! `<gateway_id>-event-<event_id>`, on real RabbitMQ). Dispatch
//! transitions are numbered the same way, on MQTT, the live feed and
//! `GET /events`.

use crate::common::*;
use fleetgate::config::geofence::FenceConfig;
use fleetgate_wire::{flags, Position};
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

/// `north_m` metres north of home at `t_s` seconds, `kmh`, ignition on or off.
fn at(seq: u32, t_s: u64, north_m: f64, kmh: f64, ignition: bool) -> Position {
    Position {
        seq,
        time_ms: T0_MS + t_s * 1000,
        lat_e6: HOME_E6.0 + (north_m / 0.111_195).round() as i32,
        lon_e6: HOME_E6.1,
        speed_cm_s: (kmh / 0.036).round() as u16,
        heading: 0,
        flags: flags::FIX_VALID | if ignition { flags::IGNITION } else { 0 },
        odometer_m: None,
    }
}

/// The drive, one event at most per fix: what each fix should make.
fn drive_through_the_zone() -> Vec<(Position, Option<&'static str>)> {
    vec![
        (at(1, 1, -1000.0, 0.0, false), Some("status_changed")),
        (at(2, 2, -1000.0, 0.0, true), Some("ignition_on")),
        (at(3, 3, -900.0, 50.0, true), None),
        (at(4, 4, -750.0, 50.0, true), Some("motion_start")), // 250 m from the stop
        (at(5, 5, -600.0, 50.0, true), None),
        (at(6, 6, -450.0, 50.0, true), None),
        (at(7, 7, -250.0, 50.0, true), Some("geofence_enter")), // the 300 m zone
        (at(8, 8, -100.0, 50.0, true), None),
        (at(9, 9, 0.0, 50.0, true), Some("overspeed")), // above 30 for 2 s
        (at(10, 10, 150.0, 50.0, true), None),
        (at(11, 11, 400.0, 50.0, true), Some("geofence_exit")), // past 300 + 25 m
        (at(12, 12, 550.0, 0.0, false), Some("ignition_off")),
        // within 200 m of the fix at 400 m for 180 s
        (at(13, 191, 550.0, 0.0, false), Some("motion_stop")),
    ]
}

fn zone_config(mut config: fleetgate::Config) -> fleetgate::Config {
    config.geofence.fences.push(FenceConfig {
        speed_limit_kmh: Some(30.0),
        ..fence_at_home("school zone", 300.0)
    });
    config.events.overspeed.minimal_duration_s = 2;
    config
}

async fn subscribed(gw: &fleetgate::Gateway, filter: &str) -> RawClient {
    let mut c = RawClient::mqtt(gw.mqtt_addr, "dashboard", 30).await;
    c.send(Packet::Subscribe(Subscribe::new(filter, QoS::AtMostOnce)))
        .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// The next `n` events on `fleet/events/+`: (kind from the topic, JSON).
async fn mqtt_events(dashboard: &mut RawClient, n: usize) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    while events.len() < n {
        match dashboard.recv().await {
            Some(Packet::Publish(p)) => {
                let kind = p.topic.strip_prefix("fleet/events/").unwrap().to_owned();
                events.push((kind, serde_json::from_slice(&p.payload).unwrap()));
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
    events
}

/// Events from the live feed's frames until there are `n`.
async fn ws_events(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let frame = next_json(ws).await;
        if let Some(list) = frame["events"].as_array() {
            events.extend(list.iter().cloned());
        }
    }
    events
}

fn ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["event_id"].as_u64().expect("every event has an event_id"))
        .collect()
}

async fn get_events(gw: &fleetgate::Gateway, query: &str) -> Value {
    let (code, body) = http_get(gw.http_addr, &format!("/events?{query}")).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_through_a_speed_zone_makes_each_event_once_with_one_id_everywhere() {
    let t = tag("events");
    let truck = format!("{t}-truck");
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = amqp().await;
    let (exchange, config) = config_with_own_exchange(&channel, &t, dir.path()).await;
    let mut upstream = consumer_on(&channel, &exchange, &["fleet.events.#".to_string()]).await;
    let gw = gateway_with(zone_config(config)).await;
    let mut dashboard = subscribed(&gw, "fleet/events/+").await;
    let mut ws = ws_connect(gw.http_addr, &format!("/ws?vehicles={truck}")).await;
    assert_eq!(next_json(&mut ws).await["snapshot"], true);

    let drive = drive_through_the_zone();
    let mut device = RawClient::mqtt(gw.mqtt_addr, &truck, 30).await;
    for (p, _) in &drive {
        let mut publish =
            Publish::from_bytes(format!("v/{truck}/pos"), QoS::AtLeastOnce, encoded(p));
        publish.pkid = p.seq as u16;
        device.send(Packet::Publish(publish)).await;
        assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
    }
    let expected: Vec<&str> = drive.iter().filter_map(|(_, kind)| *kind).collect();
    let n = expected.len();

    // MQTT: each kind once, in order, on its own topic, ids increasing
    let on_mqtt = mqtt_events(&mut dashboard, n).await;
    let kinds: Vec<&str> = on_mqtt.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, expected);
    for (kind, e) in &on_mqtt {
        assert_eq!(e["vehicle_id"], truck.as_str());
        assert_eq!(e["type"], kind.as_str(), "the topic names the type");
    }
    let bodies: Vec<Value> = on_mqtt.into_iter().map(|(_, e)| e).collect();
    let id_list = ids(&bodies);
    assert!(id_list.windows(2).all(|w| w[0] < w[1]), "{id_list:?}");
    let overspeed = &bodies[expected.iter().position(|k| *k == "overspeed").unwrap()];
    assert_eq!(overspeed["fence"], 1, "{overspeed}");
    assert_eq!(overspeed["limit_kmh"], 30.0);
    assert_eq!(overspeed["limit_from"], "fence");
    assert_eq!(overspeed["speed_kmh"], 50.0);
    assert_eq!(overspeed["time_ms"], T0_MS + 9_000, "at the 2 s mark");

    // the live feed: the same events with the same ids
    assert_eq!(ids(&ws_events(&mut ws, n).await), id_list);

    // GET /events: the same again, oldest first; paged by since and limit
    let all = get_events(&gw, &format!("vehicle={truck}")).await;
    assert_eq!(ids(all["events"].as_array().unwrap()), id_list);
    assert_eq!(all["missed"], false);
    assert_eq!(all["more"], false);
    let first3 = get_events(&gw, &format!("vehicle={truck}&limit=3")).await;
    assert_eq!(ids(first3["events"].as_array().unwrap()), id_list[..3]);
    assert_eq!(first3["more"], true);
    assert_eq!(first3["next_since"].as_u64(), Some(id_list[2]));
    let rest = get_events(&gw, &format!("vehicle={truck}&since={}", id_list[2])).await;
    assert_eq!(ids(rest["events"].as_array().unwrap()), id_list[3..]);
    let none = get_events(&gw, &format!("vehicle={truck}&since={}", id_list[n - 1])).await;
    assert_eq!(none["events"].as_array().unwrap().len(), 0);
    assert_eq!(none["next_since"].as_u64(), Some(id_list[n - 1]));
    // by time: the two last fixes' events, and the status change (stamped
    // with the gateway's clock, not a fix time)
    let since_ms = T0_MS + 12_000;
    let late = get_events(&gw, &format!("vehicle={truck}&since_ms={since_ms}")).await;
    let expected_late: Vec<u64> = bodies
        .iter()
        .filter(|e| e["time_ms"].as_u64().unwrap() >= since_ms)
        .map(|e| e["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(expected_late.len(), 3, "{bodies:?}");
    assert_eq!(ids(late["events"].as_array().unwrap()), expected_late);

    // upstream: every event, keyed by kind, message_id from its event_id
    let mut seen = Vec::new();
    while seen.len() < n {
        let m = next(&mut upstream).await;
        if m.body["vehicle_id"] != truck.as_str() {
            continue;
        }
        let id = m.body["event_id"].as_u64().unwrap();
        assert_eq!(
            m.properties.message_id().as_ref().map(|s| s.to_string()),
            Some(format!("gw-{t}-event-{id}"))
        );
        assert_eq!(
            m.routing_key,
            format!("fleet.events.{}", m.body["type"].as_str().unwrap())
        );
        seen.push(id);
    }
    assert_eq!(seen, id_list);
}

#[tokio::test]
async fn dispatch_transitions_are_numbered_events_too() {
    let gw = gateway().await;
    let mut dashboard = subscribed(&gw, "fleet/events/dispatch").await;
    let mut ws = ws_connect(gw.http_addr, "/ws").await;
    assert_eq!(next_json(&mut ws).await["snapshot"], true);
    drive(gw.mqtt_addr, "cab-1", 1..=1).await;
    let (lat, lng) = (f64::from(HOME_E6.0) / 1e6, f64::from(HOME_E6.1) / 1e6);
    let body = format!(r#"{{"lat":{lat},"lng":{lng}}}"#);
    let (code, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
    assert_eq!(code, 200, "{answer}");
    let on_mqtt = mqtt_events(&mut dashboard, 2).await;
    let (_, assigned) = &on_mqtt[1];
    assert_eq!(assigned["type"], "dispatch");
    assert_eq!(assigned["state"], "assigned");
    let id = assigned["event_id"].as_u64().unwrap();
    assert!(on_mqtt[0].1["event_id"].as_u64().unwrap() < id);
    // the live feed: the same transitions, with the same ids
    let mut on_ws = Vec::new();
    while on_ws.len() < 2 {
        let frame = next_json(&mut ws).await;
        on_ws.extend(frame["dispatch"].as_array().cloned().unwrap_or_default());
    }
    assert_eq!(on_ws[1]["event_id"].as_u64(), Some(id), "{on_ws:?}");
    assert_eq!(on_ws[1]["type"], "dispatch");
    // the cab's events: its status change, then the transition assigning it
    let page = get_events(&gw, "vehicle=cab-1").await;
    let events = page["events"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["event_id"].as_u64()),
        (Some("dispatch"), Some(id))
    );
    assert_eq!(last["vehicle_id"], "cab-1");
}

#[tokio::test]
async fn bad_event_queries_get_a_400_naming_the_parameter() {
    let gw = gateway().await;
    for (query, field) in [
        ("since=yesterday", "since"),
        ("since_ms=-5", "since_ms"),
        ("limit=0", "limit"),
        ("vehicle=a%2Fb", "vehicle"),
        ("vehicles=a", "query"),
    ] {
        let (code, body) = http_get(gw.http_addr, &format!("/events?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["field"], field, "{query}: {body}");
        assert!(error["error"].as_str().unwrap().contains(field), "{body}");
    }
    let page = get_events(&gw, "").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
}
