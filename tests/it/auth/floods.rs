//! Floods and malformed packets from clients that logged in: a password
//! gets nobody past the edge's rate limits or its MQTT 3.1.1 checks. Each
//! attack, then a well-behaved client's connect–publish–receive.

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::QoS;
// The same cases as tests/it/conformance.rs and `loadgen conformance`.
use loadgen::conformance::{connect_with_flags, violations};

use super::{connect_as, secured, secured_with, well_behaved_still_works, Secured};
use crate::common::*;

/// The two paths through the edge with auth on: a device stays a vehicle
/// at the edge, a service user is handed to rumqttd.
const LOGINS: [(&str, (&str, &str), &str); 2] = [
    ("device", ("truck-7", "pw7"), "v/truck-7/pos"),
    ("service", ("alice", "secret"), "sensors/flood"),
];

fn violation(reason: &str) -> String {
    format!("fleetgate_protocol_violations_total{{reason=\"{reason}\"}}")
}

const MALFORMED: &str = "fleetgate_connections_closed_malformed_total";

impl Secured {
    /// The sum of some series of `/metrics`.
    async fn sum(&self, series: &[&str]) -> u64 {
        let mut total = 0;
        for one in series {
            total += self.metric(one).await;
        }
        total
    }

    /// Polls `/metrics` (with a token) until the sum of `series` reaches
    /// `at_least`.
    async fn await_metric(&self, series: &[&str], at_least: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let v = self.sum(series).await;
            if v >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series:?} stayed at {v}, expected >= {at_least}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A client far over `mqtt.max_messages_per_s_per_client` is slowed down
/// to it (not read), not cut: every publish is acknowledged in order, it
/// still answers a ping, the throttle shows in `/metrics`, and another
/// client is served meanwhile.
#[tokio::test]
async fn an_authenticated_message_flood_is_slowed_not_cut() {
    let s = secured_with(|config| {
        config.mqtt.max_messages_per_s_per_client = 100;
        config.mqtt.rate_burst_ms = 100;
    })
    .await;
    const FLOOD: u16 = 100;
    for (path, login, topic) in LOGINS {
        let before = s.metric("fleetgate_clients_throttled_total").await;
        let (code, mut c) = connect_as(&s.gw, &format!("flood-{path}"), Some(login), None).await;
        assert_eq!(code, ConnectReturnCode::Success, "{path}");
        // All at once: ten times the burst the rate allows.
        for pkid in 1..=FLOOD {
            let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, position(u32::from(pkid)));
            p.pkid = pkid;
            c.send(Packet::Publish(p)).await;
        }
        for pkid in 1..=FLOOD {
            match c.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.pkid, pkid, "{path}"),
                other => panic!("{path}: expected PUBACK {pkid}, got {other:?}"),
            }
        }
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp), "{path}: cut");
        let after = s.metric("fleetgate_clients_throttled_total").await;
        assert!(after > before, "{path}: the rate was never applied");
    }
    well_behaved_still_works(&s, "after-flood").await;
}

/// Every MUST-close case of the conformance tests, sent by a client with a
/// good login on each path, closes that connection and is counted by rule;
/// so do lengths that do not add up, and CONNECTs whose flags contradict
/// each other though their login is right.
#[tokio::test]
async fn every_malformed_packet_from_an_authenticated_client_closes_it_and_is_counted() {
    let s = secured().await;
    for (path, login, _) in LOGINS {
        for (i, (reason, bytes)) in violations().into_iter().enumerate() {
            let series = violation(reason);
            let before = s.metric(&series).await;
            let (code, mut c) = connect_as(&s.gw, &format!("{path}-{i}"), Some(login), None).await;
            assert_eq!(code, ConnectReturnCode::Success, "{path}");
            c.send_raw(&bytes).await;
            c.expect_closed(&format!("{path}, {reason} {bytes:02x?}"))
                .await;
            s.await_metric(&[&series], before + 1).await;
        }
        // A topic length past the packet's end; a remaining length of five
        // bytes (NanoMQ CVE-2026-21888).
        let lengths: [&[u8]; 2] = [
            &[0x30, 0x05, 0x01, 0x2c, b'a', b'b', b'c'],
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ];
        let counted = [MALFORMED, &violation("malformed")];
        for bytes in lengths {
            let before = s.sum(&counted).await;
            let (_, mut c) = connect_as(&s.gw, &format!("{path}-len"), Some(login), None).await;
            c.send_raw(bytes).await;
            c.expect_closed(&format!("{path}, length {bytes:02x?}"))
                .await;
            s.await_metric(&counted, before + 1).await;
        }
    }
    // CONNECT flags: user name and password right, and the reserved bit
    // set [MQTT-3.1.2-3]; or a will QoS without a will [MQTT-3.1.2-13].
    for flags in [0xc3u8, 0xca] {
        let series = violation("connect_flags");
        let before = s.metric(&series).await;
        let mut c = RawClient::connect(s.gw.mqtt_addr).await;
        c.send_raw(&connect_with_flags(
            flags,
            b"alice-1",
            &[b"alice", b"secret"],
        ))
        .await;
        assert_eq!(
            c.recv().await,
            None,
            "flags {flags:#04x}: closed, no CONNACK"
        );
        s.await_metric(&[&series], before + 1).await;
    }
    well_behaved_still_works(&s, "after-malformed").await;
}
