//! MQTT 3.1.1 conformance at the edge: every rule that says the server MUST
//! close the network connection closes it, for a vehicle served at the edge
//! and for a client handed to rumqttd alike, and is counted by rule; the
//! clients around it keep being served.

use crate::common::{await_metric, gateway, metric, RawClient};
use fleetgate::Gateway;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
// The cases `loadgen conformance` tries against any broker (benches/compare.sh).
use loadgen::conformance::{connect_with_flags, violations};

fn series(reason: &str) -> String {
    format!("fleetgate_protocol_violations_total{{reason=\"{reason}\"}}")
}

/// A client the edge has handed to rumqttd: it subscribed to `fleet/#`.
async fn handed_off(gw: &Gateway, id: &str) -> RawClient {
    let mut client = RawClient::mqtt(gw.mqtt_addr, id, 30).await;
    let mut sub = Subscribe::new("fleet/#", QoS::AtMostOnce);
    sub.pkid = 1;
    client.send(Packet::Subscribe(sub)).await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.pkid, 1),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
}

#[tokio::test]
async fn every_must_close_rule_closes_a_vehicle_and_is_counted() {
    let gw = gateway().await;
    let mut bystander = RawClient::mqtt(gw.mqtt_addr, "bystander", 30).await;
    for (i, (reason, bytes)) in violations().into_iter().enumerate() {
        let before = metric(&gw, &series(reason)).await;
        let mut client = RawClient::mqtt(gw.mqtt_addr, &format!("t{i}"), 30).await;
        client.send_raw(&bytes).await;
        client
            .expect_closed(&format!("vehicle, {reason} {bytes:02x?}"))
            .await;
        await_metric(&gw, &series(reason), before + 1).await;
    }
    bystander.send(Packet::PingReq).await;
    assert_eq!(bystander.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn every_must_close_rule_closes_a_handed_off_client_and_is_counted() {
    let gw = gateway().await;
    let mut bystander = handed_off(&gw, "bystander").await;
    for (i, (reason, bytes)) in violations().into_iter().enumerate() {
        let before = metric(&gw, &series(reason)).await;
        let mut client = handed_off(&gw, &format!("h{i}")).await;
        client.send_raw(&bytes).await;
        client
            .expect_closed(&format!("handed-off, {reason} {bytes:02x?}"))
            .await;
        await_metric(&gw, &series(reason), before + 1).await;
    }
    // The bystander, subscribed to fleet/#, still receives what a vehicle
    // publishes (the gateway's decoded status).
    let mut vehicle = RawClient::mqtt(gw.mqtt_addr, "truck-ok", 30).await;
    let mut status = Publish::new("v/truck-ok/status", QoS::AtLeastOnce, b"{}".to_vec());
    status.pkid = 1;
    vehicle.send(Packet::Publish(status)).await;
    assert!(matches!(vehicle.recv().await, Some(Packet::PubAck(_))));
    loop {
        match bystander.recv().await {
            Some(Packet::Publish(p)) if p.topic == "fleet/truck-ok/status" => break,
            Some(_) => continue,
            None => panic!("the bystander was disconnected"),
        }
    }
}

#[tokio::test]
async fn a_connect_with_contradictory_flags_is_closed_without_connack() {
    let gw = gateway().await;
    // Password without user name [MQTT-3.1.2-22], will QoS without a will
    // [MQTT-3.1.2-13], the reserved flag [MQTT-3.1.2-3], a will topic with a
    // wildcard, trailing bytes.
    let cases: [(u8, &[&[u8]], &str); 5] = [
        (0x42, &[b"c1", b"pw"], "connect_flags"),
        (0x0a, &[b"c2"], "connect_flags"),
        (0x03, &[b"c3"], "connect_flags"),
        (0x06, &[b"c4", b"will/#", b"bye"], "wildcard_in_topic"),
        (0x02, &[b"c5", b"extra"], "malformed"),
    ];
    for (flags, payload, reason) in cases {
        let before = metric(&gw, &series(reason)).await;
        let mut client = RawClient::connect(gw.mqtt_addr).await;
        let connect = connect_with_flags(flags, payload[0], &payload[1..]);
        client.send_raw(&connect).await;
        assert_eq!(
            client.recv().await,
            None,
            "flags {flags:#04x}: closed, no CONNACK"
        );
        await_metric(&gw, &series(reason), before + 1).await;
    }
    // A proper client right after is served.
    let mut good = RawClient::mqtt(gw.mqtt_addr, "good", 30).await;
    good.send(Packet::PingReq).await;
    assert_eq!(good.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn acknowledgements_of_what_rumqttd_sent_are_accepted() {
    let gw = gateway().await;
    // A handed-off subscriber at QoS 1 acks each delivery: no violation.
    let mut sub = handed_off(&gw, "qos1-sub").await;
    let mut s = Subscribe::new("plain/topic", QoS::AtLeastOnce);
    s.pkid = 2;
    sub.send(Packet::Subscribe(s)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = handed_off(&gw, "qos1-pub").await;
    for pkid in 1..=5u16 {
        let mut p = Publish::new("plain/topic", QoS::AtLeastOnce, b"m".to_vec());
        p.pkid = pkid;
        publisher.send(Packet::Publish(p)).await;
    }
    let mut acked = 0;
    while acked < 5 {
        match sub.recv().await {
            Some(Packet::Publish(p)) if p.topic == "plain/topic" => {
                assert!(p.pkid != 0);
                sub.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
                    .await;
                acked += 1;
            }
            Some(_) => {}
            None => panic!("closed after {acked} acks"),
        }
    }
    sub.send(Packet::PingReq).await;
    loop {
        match sub.recv().await {
            Some(Packet::PingResp) => break,
            Some(_) => continue,
            None => panic!("an ack of a real delivery closed the connection"),
        }
    }
    assert_eq!(metric(&gw, &series("unsolicited_ack")).await, 0);
}

/// The TCP ports this process listens on (nextest runs each test in a
/// process of its own, so they are this gateway's): the LISTEN sockets of
/// /proc/self/net/tcp{,6} whose inodes are among this process's fds.
fn own_listening_ports() -> std::collections::BTreeSet<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// rumqttd is reached in-process only: the gateway listens on the ports it
/// was given and no other, so there is no side door around the edge.
#[tokio::test]
async fn the_internal_broker_has_no_port_to_reach_it_by() {
    let gw = gateway().await;
    let mut expected: std::collections::BTreeSet<u16> = [gw.mqtt_addr.port(), gw.http_addr.port()]
        .into_iter()
        .collect();
    expected.extend(gw.smq_addr.map(|a| a.port()));
    assert_eq!(own_listening_ports(), expected);
    // Through the edge, a client is served.
    let mut client = handed_off(&gw, "side-door").await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
}
