//! The embedded broker's state lives as long as its clients need it: filters
//! are freed when their last client leaves (no lifetime budget to exhaust),
//! clean sessions leave nothing, persistent sessions are bounded, and a
//! subscriber gets min(published QoS, granted QoS). See
//! `vendor/rumqttd/PATCHES.md` for the rumqttd side.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;

/// Concurrent clients in the churn test.
const CONCURRENCY: usize = 32;

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Polls `/metrics` until `series` is at most `at_most`; fails after [`DEADLINE`].
async fn await_metric_at_most(gw: &fleetgate::Gateway, series: &str, at_most: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = metric(gw, series).await;
        if v <= at_most {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, expected <= {at_most}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CONNECT with `clean_session`; returns the client and the CONNACK's
/// session-present flag.
async fn connect(addr: SocketAddr, client_id: &str, clean_session: bool) -> (RawClient, bool) {
    let mut c = RawClient::connect(addr).await;
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 30;
    connect.clean_session = clean_session;
    c.send(Packet::Connect(connect)).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
            (c, ack.session_present)
        }
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
}

/// SUBSCRIBE to one filter; the SUBACK's return code.
async fn subscribe(c: &mut RawClient, filter: &str, qos: QoS) -> SubscribeReasonCode {
    c.send(Packet::Subscribe(Subscribe::new(filter, qos))).await;
    loop {
        match c.recv().await {
            Some(Packet::SubAck(ack)) => return ack.return_codes[0],
            Some(_) => continue,
            None => panic!("closed before SUBACK for {filter}"),
        }
    }
}

/// DISCONNECT, then wait for the server to close.
async fn leave(mut c: RawClient) {
    c.send(Packet::Disconnect).await;
    while c.recv().await.is_some() {}
}

/// The next PUBLISH this client receives.
async fn next_publish(c: &mut RawClient) -> Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => continue,
            None => panic!("closed before a PUBLISH arrived"),
        }
    }
}

/// `count` clients with fresh ids, `CONCURRENCY` at a time: each connects
/// with a clean session, subscribes to a filter of its own, and leaves.
async fn churn(addr: SocketAddr, prefix: &str, count: usize) {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let prefix = prefix.to_owned();
        workers.spawn(async move {
            for i in (worker..count).step_by(CONCURRENCY) {
                let (mut c, _) = connect(addr, &format!("{prefix}-{i}"), true).await;
                let code =
                    subscribe(&mut c, &format!("churn/{prefix}/{i}"), QoS::AtLeastOnce).await;
                assert_eq!(
                    code,
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    "client {i} refused"
                );
                leave(c).await;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("churn worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_short_lived_subscribers_do_not_lock_anyone_out() {
    let gw = gateway().await;
    assert_eq!(fleetgate::Config::default().broker.max_filters.get(), 128);

    // Warm up until the allocator's high-water mark for this many clients
    // in flight is reached: since hand-offs are in-process (and accepted
    // without rumqttd's 1 ms pause), the first 10 000 clients after a
    // 1 000-client warm-up raised RSS by 3.8 MiB (debug build), and each
    // further 10 000 by 0.3, 0.25, -0.05 and 0.15 MiB: a plateau, not a
    // cost per client. Measured from there, per-client growth still fails.
    // Since the router runs on the runtime's workers (rumqttd patch 9) and
    // a hand-off no longer waits a timer tick, clients come and go twice as
    // fast and the plateau is reached later: release, 4 × 50 000 cycles
    // grew 3.8, 0.5, 0.2, 0.1 MiB. Hence 15 000 of warm-up.
    churn(gw.mqtt_addr, "warmup", 15_000).await;
    await_metric_at_most(&gw, "fleetgate_broker_filters_live", 0).await;
    let before = vm_rss_kib();

    churn(gw.mqtt_addr, "life", 10_000).await;
    await_metric_at_most(&gw, "fleetgate_broker_filters_live", 0).await;
    let after = vm_rss_kib();
    println!(
        "VmRSS after 15 000 warm-up clients: {before} KiB; after 10 000 more: {after} KiB ({:+} KiB)",
        after as i64 - before as i64
    );
    assert_eq!(metric(&gw, "fleetgate_filters_refused_total").await, 0);

    // A new client, a new topic: subscribed, and it gets what is published.
    let (mut sub, _) = connect(gw.mqtt_addr, "after-the-churn", true).await;
    assert_eq!(
        subscribe(&mut sub, "after/churn", QoS::AtMostOnce).await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    let (mut publisher, _) = connect(gw.mqtt_addr, "after-the-churn-pub", true).await;
    publisher
        .send(Packet::Publish(Publish::new(
            "after/churn",
            QoS::AtMostOnce,
            "hello",
        )))
        .await;
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic, "after/churn");
    assert_eq!(&got.payload[..], b"hello");

    // Generous (measured: +0.2 MiB, debug build), yet 0.4 KiB per client
    // would fail it: the graveyard kept 0.6 KiB per client id before, and a
    // filter log per client is more.
    assert!(
        after < before + 4 * 1024,
        "RSS grew {} KiB over 10 000 clients",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_are_bounded_and_the_oldest_are_evicted() {
    let mut config = test_config();
    config.broker.max_persistent_sessions = std::num::NonZeroUsize::new(5).unwrap();
    let gw = gateway_with(config).await;

    for i in 0..20 {
        let (mut c, present) = connect(gw.mqtt_addr, &format!("keep-{i}"), false).await;
        assert!(!present, "keep-{i} is new");
        let code = subscribe(&mut c, &format!("keep/{i}"), QoS::AtLeastOnce).await;
        assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
        leave(c).await;
    }
    // the five kept sessions hold their filters, the evicted ones do not
    await_metric_at_most(&gw, "fleetgate_broker_filters_live", 5).await;
    assert_eq!(metric(&gw, "fleetgate_broker_filters_live").await, 5);

    let (oldest, present) = connect(gw.mqtt_addr, "keep-0", false).await;
    assert!(!present, "keep-0 was evicted: no session");
    leave(oldest).await;

    let (mut recent, present) = connect(gw.mqtt_addr, "keep-19", false).await;
    assert!(present, "keep-19 was kept");
    // its subscription came back with the session
    let (mut publisher, _) = connect(gw.mqtt_addr, "keep-pub", true).await;
    publisher
        .send(Packet::Publish(Publish::new(
            "keep/19",
            QoS::AtMostOnce,
            "again",
        )))
        .await;
    let got = next_publish(&mut recent).await;
    assert_eq!(got.topic, "keep/19");
}

#[tokio::test]
async fn a_qos2_subscriber_gets_a_qos0_publish_at_qos0() {
    let gw = gateway().await;
    let (mut sub, _) = connect(gw.mqtt_addr, "qos-sub", true).await;
    assert_eq!(
        subscribe(&mut sub, "qos/min", QoS::ExactlyOnce).await,
        SubscribeReasonCode::Success(QoS::ExactlyOnce)
    );
    let (mut publisher, _) = connect(gw.mqtt_addr, "qos-pub", true).await;

    publisher
        .send(Packet::Publish(Publish::new(
            "qos/min",
            QoS::AtMostOnce,
            "zero",
        )))
        .await;
    let got = next_publish(&mut sub).await;
    assert_eq!(&got.payload[..], b"zero");
    assert_eq!(got.qos, QoS::AtMostOnce, "min(0, 2) = 0");

    publisher
        .send(Packet::Publish(Publish::new(
            "qos/min",
            QoS::AtLeastOnce,
            "one",
        )))
        .await;
    let got = next_publish(&mut sub).await;
    assert_eq!(&got.payload[..], b"one");
    assert_eq!(got.qos, QoS::AtLeastOnce, "min(1, 2) = 1");
    sub.send(Packet::PubAck(PubAck::new(got.pkid))).await;
}
