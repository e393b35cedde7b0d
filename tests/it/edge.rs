//! The edge under misbehaving clients: every failure stays with the
//! connection that caused it.

use crate::common::*;
use fleetgate_wire::{encode, MAX_ENCODED_LEN};
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, LastWill, Packet, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;

#[tokio::test]
async fn keep_alive_zero_is_accepted_and_never_times_out() {
    let gw = gateway().await;
    let mut c = RawClient::mqtt(gw.mqtt_addr, "ka0", 0).await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    assert_eq!(
        metric(&gw, "fleetgate_connections{kind=\"vehicle\"}").await,
        1
    );
}

#[tokio::test]
async fn keep_alive_closes_a_silent_vehicle_and_spares_one_that_talks() {
    let gw = gateway().await;
    // keep-alive 1 s: silent for 1.5 s means gone.
    let mut silent = RawClient::mqtt(gw.mqtt_addr, "ka-silent", 1).await;
    let mut talking = RawClient::mqtt(gw.mqtt_addr, "ka-talking", 1).await;
    let talk = async {
        // A PINGREQ every 0.4 s for 2.4 s, well past the first 1.5 s
        // deadline: the edge must move its deadline on, not close.
        for _ in 0..6 {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            talking.send(Packet::PingReq).await;
            assert_eq!(talking.recv().await, Some(Packet::PingResp));
        }
    };
    let (_, closed) = tokio::join!(talk, silent.recv());
    assert_eq!(closed, None, "the silent vehicle is closed");
    assert_eq!(
        metric(&gw, "fleetgate_connections_closed_keepalive_total").await,
        1
    );
    assert_eq!(
        metric(&gw, "fleetgate_connections{kind=\"vehicle\"}").await,
        1,
        "the talking vehicle is still connected"
    );
}

#[tokio::test]
async fn silent_connection_does_not_block_another_clients_connect() {
    let mut config = test_config();
    config.mqtt.connect_timeout_ms = 300;
    let gw = gateway_with(config).await;
    let mut silent = RawClient::connect(gw.mqtt_addr).await;
    // The second client's CONNACK arrives while the first is still silent.
    let _second = RawClient::mqtt(gw.mqtt_addr, "second", 30).await;
    // And the silent one is closed once its CONNECT time is up.
    assert_eq!(silent.recv().await, None);
    assert_eq!(
        metric(
            &gw,
            "fleetgate_connections_refused_total{reason=\"connect_timeout\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn malformed_packet_closes_only_its_own_connection() {
    let gw = gateway().await;
    let mut good = RawClient::mqtt(gw.mqtt_addr, "good", 30).await;
    let mut bad = RawClient::mqtt(gw.mqtt_addr, "bad", 30).await;
    // A PUBLISH whose remaining length says 5 but whose topic length says 300.
    bad.send_raw(&[0x30, 0x05, 0x01, 0x2c, b'a', b'b', b'c'])
        .await;
    assert_eq!(bad.recv().await, None, "the bad client is closed");
    await_metric(&gw, "fleetgate_connections_closed_malformed_total", 1).await;
    good.send(Packet::PingReq).await;
    assert_eq!(
        good.recv().await,
        Some(Packet::PingResp),
        "the good client is served"
    );
}

#[tokio::test]
async fn oversized_packet_closes_its_connection() {
    let mut config = test_config();
    config.mqtt.max_packet_size_bytes = std::num::NonZeroUsize::new(1024).unwrap();
    let gw = gateway_with(config).await;
    let mut c = RawClient::mqtt(gw.mqtt_addr, "big", 30).await;
    c.send(Packet::Publish(Publish::new(
        "v/t/pos",
        QoS::AtMostOnce,
        vec![0u8; 4096],
    )))
    .await;
    assert_eq!(c.recv().await, None);
}

#[tokio::test]
async fn mqtt5_connect_gets_unacceptable_protocol_version() {
    let gw = gateway().await;
    let mut c = RawClient::connect(gw.mqtt_addr).await;
    // CONNECT, protocol "MQTT" level 5, clean start, keep-alive 60, no properties, id "x".
    c.send_raw(&[
        0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x',
    ])
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, ConnectReturnCode::RefusedProtocolVersion)
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
}

#[tokio::test]
async fn first_packet_that_is_not_connect_is_refused() {
    let gw = gateway().await;
    let mut c = RawClient::connect(gw.mqtt_addr).await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, None);
    assert_eq!(
        metric(
            &gw,
            "fleetgate_connections_refused_total{reason=\"bad_connect\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn connection_limit_refuses_one_more_and_counts_it() {
    let mut config = test_config();
    config.mqtt.max_connections = std::num::NonZeroUsize::new(2).unwrap();
    let gw = gateway_with(config).await;
    let _a = RawClient::mqtt(gw.mqtt_addr, "a", 30).await;
    let _b = RawClient::mqtt(gw.mqtt_addr, "b", 30).await;
    // Told so, as 3.1.1 says (CONNACK 3, server unavailable), then closed.
    let mut c = RawClient::connect(gw.mqtt_addr).await;
    c.send(Packet::Connect(rumqttc::mqttbytes::v4::Connect::new("c")))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.code,
            rumqttc::mqttbytes::v4::ConnectReturnCode::ServiceUnavailable
        ),
        other => panic!("expected CONNACK 3, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    // The one over the limit is refused, not everyone after it.
    drop(_a);
    let mut attempts = 0;
    let _d = loop {
        attempts += 1;
        assert!(attempts < 1000, "a freed place never admitted a new client");
        let mut d = RawClient::connect(gw.mqtt_addr).await;
        d.send(Packet::Connect(rumqttc::mqttbytes::v4::Connect::new("d")))
            .await;
        if let Some(Packet::ConnAck(ack)) = d.recv().await {
            if ack.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success {
                break d;
            }
        }
    };
    assert!(metric(&gw, "fleetgate_connections_refused_total{reason=\"limit\"}").await >= 1);
}

#[tokio::test]
async fn vehicle_qos1_and_qos2_publishes_are_acked_and_decoded_once() {
    let gw = gateway().await;
    let mut v = RawClient::mqtt(gw.mqtt_addr, "truck-1", 30).await;
    let mut p1 = Publish::from_bytes("v/truck-1/pos", QoS::AtLeastOnce, position(1));
    p1.pkid = 7;
    v.send(Packet::Publish(p1)).await;
    assert!(matches!(v.recv().await, Some(Packet::PubAck(a)) if a.pkid == 7));

    let mut p2 = Publish::from_bytes("v/truck-1/pos", QoS::ExactlyOnce, position(2));
    p2.pkid = 8;
    v.send(Packet::Publish(p2.clone())).await;
    assert!(matches!(v.recv().await, Some(Packet::PubRec(a)) if a.pkid == 8));
    p2.dup = true; // a redelivery before PUBREL must not be ingested twice
    v.send(Packet::Publish(p2)).await;
    assert!(matches!(v.recv().await, Some(Packet::PubRec(a)) if a.pkid == 8));
    v.send(Packet::PubRel(rumqttc::mqttbytes::v4::PubRel::new(8)))
        .await;
    assert!(matches!(v.recv().await, Some(Packet::PubComp(a)) if a.pkid == 8));

    await_metric(
        &gw,
        "fleetgate_messages_decoded_total{kind=\"position\"}",
        2,
    )
    .await;
    v.send(Packet::PingReq).await;
    assert_eq!(v.recv().await, Some(Packet::PingResp));
    assert_eq!(
        metric(&gw, "fleetgate_messages_decoded_total{kind=\"position\"}").await,
        2
    );
}

#[tokio::test]
async fn malformed_payload_is_counted_and_the_gateway_keeps_serving() {
    let gw = gateway().await;
    let mut dash = RawClient::mqtt(gw.mqtt_addr, "dash", 30).await;
    dash.send(Packet::Subscribe(Subscribe::new(
        "fleet/+/position",
        QoS::AtMostOnce,
    )))
    .await;
    assert!(matches!(dash.recv().await, Some(Packet::SubAck(_))));

    let mut v = RawClient::mqtt(gw.mqtt_addr, "truck-2", 30).await;
    for (pkid, garbage) in [(1, &b"\x11garbage"[..]), (2, &b"{\"lat\":1000}"[..])] {
        let mut p = Publish::new("v/truck-2/pos", QoS::AtLeastOnce, garbage.to_vec());
        p.pkid = pkid;
        v.send(Packet::Publish(p)).await;
        assert!(
            matches!(v.recv().await, Some(Packet::PubAck(_))),
            "acked: ingest took it"
        );
    }
    await_metric(&gw, "fleetgate_messages_malformed_total", 2).await;

    v.send(Packet::Publish(Publish::from_bytes(
        "v/truck-2/pos",
        QoS::AtMostOnce,
        position(3),
    )))
    .await;
    match dash.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "fleet/truck-2/position");
            let json: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(
                json["seq"], 3,
                "only the good position is forwarded: {json}"
            );
        }
        other => panic!("expected the good position, got {other:?}"),
    }
}

#[tokio::test]
async fn last_will_of_a_vanished_vehicle_reaches_dashboards_as_offline() {
    let gw = gateway().await;
    let mut dash = RawClient::mqtt(gw.mqtt_addr, "dash", 30).await;
    dash.send(Packet::Subscribe(Subscribe::new(
        "fleet/+/status",
        QoS::AtMostOnce,
    )))
    .await;
    assert!(matches!(dash.recv().await, Some(Packet::SubAck(_))));

    let will = fleetgate_wire::Status {
        time_ms: 0,
        online: false,
        ignition: false,
        supply_mv: 0,
        firmware: Default::default(),
    };
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let will = encode(&will, &mut buf).unwrap().to_vec();
    let mut c = RawClient::connect(gw.mqtt_addr).await;
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("truck-3");
    connect.keep_alive = 30;
    connect.last_will = Some(LastWill::new(
        "v/truck-3/status",
        will,
        QoS::AtLeastOnce,
        false,
    ));
    c.send(Packet::Connect(connect)).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    drop(c); // no DISCONNECT: the will fires

    match dash.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "fleet/truck-3/status");
            let json: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(json["online"], false);
        }
        other => panic!("expected the will, got {other:?}"),
    }
}

#[tokio::test]
async fn sys_subscription_is_refused_without_dropping_the_client() {
    let gw = gateway().await;
    let mut c = RawClient::mqtt(gw.mqtt_addr, "curious", 30).await;
    c.send(Packet::Subscribe(Subscribe::new("$SYS/#", QoS::AtMostOnce)))
        .await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure])
        }
        other => panic!("expected a refusing SUBACK, got {other:?}"),
    }
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn clients_cannot_forge_the_gateways_fleet_topics() {
    let gw = gateway().await;
    let mut dash = RawClient::mqtt(gw.mqtt_addr, "dash", 30).await;
    dash.send(Packet::Subscribe(Subscribe::new(
        "fleet/#",
        QoS::AtMostOnce,
    )))
    .await;
    assert!(matches!(dash.recv().await, Some(Packet::SubAck(_))));
    let mut forger = RawClient::mqtt(gw.mqtt_addr, "forger", 30).await;
    let mut p = Publish::new("fleet/truck-9/position", QoS::AtLeastOnce, b"{}".to_vec());
    p.pkid = 1;
    forger.send(Packet::Publish(p)).await;
    assert!(matches!(forger.recv().await, Some(Packet::PubAck(_))));
    await_metric(&gw, "fleetgate_acl_denied_total", 1).await;
    // The next thing the dashboard sees is a real position, not the forgery.
    let mut v = RawClient::mqtt(gw.mqtt_addr, "truck-9", 30).await;
    v.send(Packet::Publish(Publish::from_bytes(
        "v/truck-9/pos",
        QoS::AtMostOnce,
        position(1),
    )))
    .await;
    match dash.recv().await {
        Some(Packet::Publish(p)) => assert!(p.payload.len() > 2, "got {:?}", p.payload),
        other => panic!("expected a position, got {other:?}"),
    }
}

#[tokio::test]
async fn command_published_by_a_dashboard_reaches_the_vehicle_at_the_edge() {
    let gw = gateway().await;
    let mut v = RawClient::mqtt(gw.mqtt_addr, "truck-4", 30).await;
    v.send(Packet::Subscribe(Subscribe::new(
        "v/truck-4/cmd",
        QoS::AtLeastOnce,
    )))
    .await;
    assert!(matches!(v.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(
        metric(&gw, "fleetgate_handoffs_total").await,
        0,
        "the vehicle stays at the edge"
    );

    let mut ops = RawClient::mqtt(gw.mqtt_addr, "ops", 30).await;
    let command = b"\x13\x01".to_vec(); // Command::RequestPosition
    let mut p = Publish::new("v/truck-4/cmd", QoS::AtLeastOnce, command.clone());
    p.pkid = 3;
    ops.send(Packet::Publish(p)).await;
    assert!(matches!(ops.recv().await, Some(Packet::PubAck(_))));
    match v.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "v/truck-4/cmd");
            assert_eq!(p.payload.as_ref(), command.as_slice());
        }
        other => panic!("expected the command, got {other:?}"),
    }
}

#[tokio::test]
async fn handed_off_keep_alive_zero_client_is_kept_alive_by_the_edge() {
    let gw = gateway().await;
    let mut dash = RawClient::mqtt(gw.mqtt_addr, "dash-ka0", 0).await;
    dash.send(Packet::Subscribe(Subscribe::new(
        "fleet/#",
        QoS::AtMostOnce,
    )))
    .await;
    assert!(matches!(dash.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(
        metric(&gw, "fleetgate_connections{kind=\"handed_off\"}").await,
        1
    );
    dash.send(Packet::PingReq).await;
    assert_eq!(dash.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn persistent_session_client_is_handed_over_at_connect_and_resumes_its_session() {
    let gw = gateway().await;
    let connect = |present: bool| async move {
        let mut c = RawClient::connect(gw.mqtt_addr).await;
        let mut connect = rumqttc::mqttbytes::v4::Connect::new("dash-persistent");
        connect.keep_alive = 30;
        connect.clean_session = false;
        c.send(Packet::Connect(connect)).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                assert_eq!(
                    ack.session_present, present,
                    "rumqttd's CONNACK reaches the client"
                );
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    };
    let mut first = connect(false).await;
    let mut subscribe = Subscribe::new("alerts/depot", QoS::AtLeastOnce);
    subscribe.pkid = 1;
    first.send(Packet::Subscribe(subscribe)).await;
    assert!(matches!(first.recv().await, Some(Packet::SubAck(_))));
    first.send(Packet::Disconnect).await;
    assert_eq!(first.recv().await, None);

    // Published while the dashboard is away.
    let mut ops = RawClient::mqtt(gw.mqtt_addr, "ops", 30).await;
    let mut alert = Publish::new("alerts/depot", QoS::AtLeastOnce, b"gate 3 open".to_vec());
    alert.pkid = 1;
    ops.send(Packet::Publish(alert)).await;
    assert!(matches!(ops.recv().await, Some(Packet::PubAck(_))));

    // Back, without subscribing again: the session brings the alert.
    let mut back = connect(true).await;
    match back.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "alerts/depot");
            assert_eq!(p.payload.as_ref(), b"gate 3 open");
        }
        other => panic!("expected the queued alert, got {other:?}"),
    }
}

/// A PUBLISH to `v/<vid>/pos` whose payload is `len` bytes, split in two:
/// the header and the first `first` bytes, then the rest.
fn large_publish(vid: &str, len: usize, first: usize) -> (Vec<u8>, Vec<u8>) {
    let topic = format!("v/{vid}/pos");
    let remaining = 2 + topic.len() + len;
    let mut frame = vec![0x30];
    let mut n = remaining;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        frame.push(byte);
        if n == 0 {
            break;
        }
    }
    frame.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    frame.extend_from_slice(topic.as_bytes());
    frame.extend(std::iter::repeat_n(b'x', len));
    let cut = frame.len() - len + first;
    let rest = frame.split_off(cut);
    (frame, rest)
}

#[tokio::test]
async fn a_large_frame_that_does_not_fit_the_pool_closes_only_its_connection() {
    let mut config = test_config();
    config.mqtt.large_frame_pool_bytes = std::num::NonZeroUsize::new(20_000).unwrap();
    let gw = gateway_with(config).await;
    // A takes 15 000 bytes of the pool and sends its frame slowly.
    let mut a = RawClient::mqtt(gw.mqtt_addr, "slow-a", 30).await;
    let (a_head, a_rest) = large_publish("slow-a", 15_000, 100);
    a.send_raw(&a_head).await;
    // B's frame does not fit beside it: B is closed, and counted.
    let mut b = RawClient::mqtt(gw.mqtt_addr, "slow-b", 30).await;
    let (b_head, _) = large_publish("slow-b", 15_000, 100);
    b.send_raw(&b_head).await;
    assert_eq!(b.recv().await, None, "the one that did not fit is closed");
    await_metric(&gw, "fleetgate_connections_closed_frame_pool_total", 1).await;
    // Small frames never need the pool: a vehicle is served meanwhile.
    let mut c = RawClient::mqtt(gw.mqtt_addr, "small-c", 30).await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    // A finishes its frame and is still served; its room goes back, so a
    // new large frame fits.
    a.send_raw(&a_rest).await;
    a.send(Packet::PingReq).await;
    assert_eq!(a.recv().await, Some(Packet::PingResp));
    let mut d = RawClient::mqtt(gw.mqtt_addr, "slow-d", 30).await;
    let (d_head, d_rest) = large_publish("slow-d", 15_000, 100);
    d.send_raw(&d_head).await;
    d.send_raw(&d_rest).await;
    d.send(Packet::PingReq).await;
    assert_eq!(d.recv().await, Some(Packet::PingResp));
    assert_eq!(
        metric(&gw, "fleetgate_connections_closed_frame_pool_total").await,
        1
    );
}

/// A source that reconnects too often is banned, and only it: a client from
/// another address is served as before.
#[tokio::test]
async fn a_flapping_source_is_banned_and_other_sources_are_not() {
    let mut config = test_config();
    config.mqtt.max_connects_per_source_per_minute = 3;
    config.mqtt.limit_loopback_sources = true;
    let gw = gateway_with(config).await;
    for i in 0..3 {
        let c = RawClient::mqtt(gw.mqtt_addr, &format!("flap-{i}"), 30).await;
        drop(c);
    }
    let mut fourth = RawClient::connect(gw.mqtt_addr).await;
    fourth
        .send(Packet::Connect(rumqttc::mqttbytes::v4::Connect::new(
            "flap-3",
        )))
        .await;
    assert_eq!(
        fourth.recv().await,
        None,
        "the fourth connection in a minute is refused"
    );
    assert_eq!(
        metric(
            &gw,
            "fleetgate_connections_refused_total{reason=\"source_banned\"}"
        )
        .await,
        1
    );
    assert_eq!(metric(&gw, "fleetgate_sources_banned_total").await, 1);
    // Another address (127.0.0.2 is loopback too, and its own source).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(gw.mqtt_addr).await.unwrap();
    let mut other = RawClient::from_stream(stream);
    other
        .send(Packet::Connect(rumqttc::mqttbytes::v4::Connect::new(
            "elsewhere",
        )))
        .await;
    match other.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success)
        }
        other => panic!("another source was refused too: {other:?}"),
    }
}

/// A client over its message rate is slowed to it, not disconnected: every
/// publish of a burst three times its allowance is acknowledged, and the
/// throttle was applied (counted).
#[tokio::test]
async fn a_client_over_its_message_rate_is_slowed_not_cut() {
    let mut config = test_config();
    config.mqtt.max_messages_per_s_per_client = 50;
    config.mqtt.rate_burst_ms = 200;
    let gw = gateway_with(config).await;
    for (vid, handed_off) in [("fast-1", false), ("fast-2", true)] {
        let mut c = RawClient::mqtt(gw.mqtt_addr, vid, 30).await;
        if handed_off {
            // A subscription no vehicle makes: the client goes to rumqttd.
            c.send(Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe::new(
                "elsewhere/#",
                QoS::AtMostOnce,
            )))
            .await;
            assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
        }
        let before = metric(&gw, "fleetgate_clients_throttled_total").await;
        for seq in 1..=30u32 {
            let mut p =
                Publish::from_bytes(format!("v/{vid}/pos"), QoS::AtLeastOnce, position(seq));
            p.pkid = seq as u16;
            c.send(Packet::Publish(p)).await;
        }
        for seq in 1..=30u16 {
            match c.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.pkid, seq, "{vid}"),
                other => panic!("{vid}: expected PUBACK {seq}, got {other:?}"),
            }
        }
        let after = metric(&gw, "fleetgate_clients_throttled_total").await;
        assert!(after > before, "{vid}: the rate was never applied");
    }
}

/// Slowloris: an HTTP client that opens a connection and sends nothing, or
/// dribbles a request head, is closed after http.header_read_timeout_ms;
/// requests keep being served meanwhile.
#[tokio::test]
async fn a_silent_http_client_is_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.http.header_read_timeout_ms = 300;
    let gw = gateway_with(config).await;
    let mut silent = tokio::net::TcpStream::connect(gw.http_addr).await.unwrap();
    let mut dribbling = tokio::net::TcpStream::connect(gw.http_addr).await.unwrap();
    dribbling
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (status, _) = http_get(gw.http_addr, "/healthz").await;
    assert_eq!(status, 200, "others are served meanwhile");
    for stream in [&mut silent, &mut dribbling] {
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the connection was never closed");
    }
    assert!(
        metric(
            &gw,
            "fleetgate_http_refused_total{reason=\"header_timeout\"}"
        )
        .await
            >= 1
    );
}
