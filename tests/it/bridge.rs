//! The upstream bridge against a real RabbitMQ on loopback (started by
//! `scripts/test.sh`, URL in `FLEETGATE_TEST_AMQP_URL`).
//!
//! Each test names its vehicles, queues and routing keys with a tag of its
//! own, so tests running side by side never see each other's messages. An
//! outage is a TCP proxy between the gateway and RabbitMQ that the test cuts
//! and restores; RabbitMQ itself and other tests are untouched.

use crate::common::*;
use fleetgate::ingest::PackageChange;
use fleetgate::topics::VehicleId;
use fleetgate_wire::Command;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_statuses_and_events_arrive_with_the_contracted_properties() {
    let t = tag("flow");
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = amqp().await;
    // An exchange of the test's own, so whether its event is returned does
    // not depend on the queues other tests bind to amq.topic.
    let (exchange, config) = config_with_own_exchange(&channel, &t, dir.path()).await;
    let mut consumer = consumer_on(&channel, &exchange, &[format!("fleet.{t}-truck.#")]).await;
    let gw = gateway_with(config).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;

    drive(gw.mqtt_addr, &format!("{t}-truck"), 1..=3).await;
    for seq in 1..=3 {
        let m = next(&mut consumer).await;
        assert_eq!(m.routing_key, format!("fleet.{t}-truck.position"));
        assert_eq!(m.body["seq"], seq);
        assert_eq!(m.body["vehicle_id"], format!("{t}-truck"));
        let p = &m.properties;
        assert_eq!(p.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.app_id().as_ref().map(|s| s.as_str()),
            Some(format!("gw-{t}").as_str())
        );
        assert!(p
            .message_id()
            .as_ref()
            .is_some_and(|id| id.as_str().starts_with(&format!("gw-{t}-"))));
        assert!(p.timestamp().is_some_and(|ts| ts > 1_700_000_000));
    }

    // The vehicle's online event went to fleet.events.status_changed, which
    // no queue was bound to: returned, counted, kept in the spool. Once a
    // consumer binds, the retry delivers it: nothing was lost.
    await_metric(&gw, "fleetgate_bridge_returns_total", 1).await;
    let mut events = consumer_on(
        &channel,
        &exchange,
        &["fleet.events.status_changed".to_string()],
    )
    .await;
    loop {
        let m = next(&mut events).await;
        if m.body["vehicle_id"] == format!("{t}-truck") {
            assert_eq!(m.body["type"], "status_changed");
            assert_eq!(m.body["to"], "online");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_changes_reach_a_consumer_written_like_the_package_tracking_contract() {
    let t = tag("pkg");
    let dir = tempfile::tempdir().unwrap();
    let mut config = bridge_config(&t, &amqp_url(), dir.path());
    // The contract's own queue name: the gateway must declare it exactly as
    // the existing consumers do, or RabbitMQ would refuse one of them.
    config.bridge.package_queue = "package_status".into();
    let (_conn, channel) = amqp().await;
    channel
        .queue_declare(
            "package_status".into(),
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

    let vehicle = VehicleId::parse(&format!("{t}-van")).unwrap();
    let id = VehicleId::parse(&format!("{t}-parcel")).unwrap();
    gw.fleet
        .package(PackageChange::Assign {
            id: id.clone(),
            from: "Depot Noord".into(),
            to: "Dam 1".into(),
            vehicle: vehicle.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    gw.fleet
        .package(PackageChange::Deliver { id })
        .await
        .unwrap()
        .unwrap();

    // Like the source's consumer: manual ack, pick by message_id = vehicle id.
    let mut consumer = channel
        .basic_consume(
            "package_status".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut mine = Vec::new();
    while mine.len() < 2 {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        let for_me = d
            .properties
            .message_id()
            .as_ref()
            .is_some_and(|m| m.as_str() == vehicle.as_str());
        if for_me {
            assert_eq!(
                d.properties.content_type().as_ref().map(|s| s.as_str()),
                Some("application/json")
            );
            assert_eq!(d.exchange.as_str(), "", "default exchange");
            mine.push(serde_json::from_slice::<serde_json::Value>(&d.data).unwrap());
            d.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            // Not this test's: leave it for its owner.
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    assert_eq!(mine[0]["from"], "Depot Noord");
    assert_eq!(mine[0]["to"], "Dam 1");
    assert_eq!(mine[0]["vehicleId"], vehicle.as_str());
    assert_eq!(mine[1]["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_mid_stream_loses_nothing_and_keeps_order_per_vehicle() {
    let t = tag("outage");
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(rabbit_addr()).await;
    let (_conn, channel) = amqp().await;
    let vehicles: Vec<String> = (1..=3).map(|i| format!("{t}-v{i}")).collect();
    let bindings: Vec<String> = vehicles
        .iter()
        .map(|v| format!("fleet.{v}.position"))
        .collect();
    let mut consumer = topic_consumer(&channel, &bindings).await;
    let gw = gateway_with(bridge_config(&t, &proxy.url(), dir.path())).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;

    for v in &vehicles {
        drive(gw.mqtt_addr, v, 1..=50).await;
    }
    proxy.cut();
    for v in &vehicles {
        drive(gw.mqtt_addr, v, 51..=150).await;
    }
    await_metric(&gw, "fleetgate_bridge_records_spooled_total", 450).await;
    // The outage is seen (the uplink notices a dropped socket at its next
    // publish or health check, within a second).
    await_metric_at_most(&gw, "fleetgate_bridge_connected", 0).await;
    proxy.restore();
    expect_every_seq(&mut consumer, &vehicles, 150).await;
    assert!(
        metric(&gw, "fleetgate_bridge_connects_total").await >= 2,
        "reconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_rabbitmq_reach_a_device_subscribed_at_the_edge() {
    let t = tag("cmd");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_with(bridge_config(&t, &amqp_url(), dir.path())).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;
    let vid = format!("{t}-truck");
    let mut device = RawClient::mqtt(gw.mqtt_addr, &vid, 30).await;
    device
        .send(Packet::Subscribe(Subscribe::new(
            format!("v/{vid}/cmd"),
            QoS::AtMostOnce,
        )))
        .await;
    assert!(matches!(device.recv().await, Some(Packet::SubAck(_))));

    let (_conn, channel) = amqp().await;
    let body = serde_json::json!({"vehicle_id": vid, "command": {"type": "set_report_interval", "interval_ms": 5000}});
    channel
        .basic_publish(
            "".into(),
            format!("commands-{t}").as_str().into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    match device.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, format!("v/{vid}/cmd"));
            let command: Command = fleetgate_wire::decode(&p.payload).unwrap();
            assert_eq!(command, Command::SetReportInterval { interval_ms: 5000 });
        }
        other => panic!("expected the command, got {other:?}"),
    }
    // Garbage is rejected, counted, and does not stop the consumer.
    channel
        .basic_publish(
            "".into(),
            format!("commands-{t}").as_str().into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    await_metric(&gw, "fleetgate_bridge_downlink_rejected_total", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_users_websockets_also_when_they_connect_later() {
    let t = tag("note");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_with(bridge_config(&t, &amqp_url(), dir.path())).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;
    let (_conn, channel) = amqp().await;
    let queue = format!("notifications-{t}");
    let send = |user: &'static str, content: &'static str| {
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            let body = serde_json::json!({"userId": user, "content": content}).to_string();
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };

    // Sent while nobody is connected: waits in the mailbox.
    send("ana", "your parcel is on its way").await;
    await_metric(&gw, "fleetgate_bridge_notifications_total", 1).await;
    let mut ana = ws_connect(gw.http_addr, "/notification?userId=ana").await;
    let mut ana2 = ws_connect(gw.http_addr, "/notification?userId=ana").await;
    assert_eq!(next_text(&mut ana).await, "your parcel is on its way");
    await_metric(&gw, "fleetgate_notification_clients", 2).await;

    // Sent while connected: every socket of the user gets it.
    send("ana", "delivered").await;
    assert_eq!(next_text(&mut ana).await, "delivered");
    assert_eq!(next_text(&mut ana2).await, "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_during_an_outage_resends_everything_after_restart() {
    let t = tag("crash");
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(rabbit_addr()).await;
    proxy.cut();
    let config_path = process_config(&t, dir.path(), &proxy.url(), "");
    let (_conn, channel) = amqp().await;
    let vehicles: Vec<String> = (1..=2).map(|i| format!("{t}-v{i}")).collect();
    let bindings: Vec<String> = vehicles
        .iter()
        .map(|v| format!("fleet.{v}.position"))
        .collect();
    let mut consumer = topic_consumer(&channel, &bindings).await;

    let first = GatewayProcess::start(&config_path);
    for v in &vehicles {
        drive(first.mqtt, v, 1..=200).await;
    }
    // Every position is in the spool (the default fsync policy is an
    // interval: a process kill loses nothing, the page cache has it).
    await_metric_at(first.http, "fleetgate_bridge_records_spooled_total", 400).await;
    first.sigkill();

    proxy.restore();
    let second = GatewayProcess::start(&config_path);
    expect_every_seq(&mut consumer, &vehicles, 200).await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_the_oldest_positions_first_and_counts_them() {
    let t = tag("full");
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(rabbit_addr()).await;
    let mut config = bridge_config(&t, &proxy.url(), dir.path());
    config.bridge.spool_max_bytes = 64 * 1024;
    config.bridge.spool_segment_bytes = 8 * 1024;
    proxy.cut();
    let (_conn, channel) = amqp().await;
    let vid = format!("{t}-truck");
    let mut positions = topic_consumer(&channel, &[format!("fleet.{vid}.position")]).await;
    let mut statuses = topic_consumer(&channel, &[format!("fleet.{vid}.status")]).await;
    let gw = gateway_with(config).await;

    // A status first, then far more positions than 64 KiB holds.
    let mut c = RawClient::mqtt(gw.mqtt_addr, "dev", 30).await;
    let mut status = Publish::new(
        format!("v/{vid}/status"),
        QoS::AtLeastOnce,
        br#"{"online":true,"supply_mv":12800}"#.to_vec(),
    );
    status.pkid = 1;
    c.send(Packet::Publish(status)).await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    drive(gw.mqtt_addr, &vid, 1..=1500).await;
    let dropped = await_metric(
        &gw,
        "fleetgate_bridge_spool_dropped_total{class=\"position\"}",
        1,
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "fleetgate_bridge_spool_dropped_total{class=\"status\"}"
        )
        .await,
        0
    );

    proxy.restore();
    let s = next(&mut statuses).await;
    assert_eq!(
        s.body["supply_mv"], 12800,
        "the status outlived the positions"
    );
    // The newest positions survive; the first one to arrive is past the dropped ones.
    let first = next(&mut positions).await.body["seq"].as_u64().unwrap();
    assert!(
        first > 1,
        "the oldest positions were dropped (first = {first}, dropped = {dropped})"
    );
    loop {
        if next(&mut positions).await.body["seq"] == 1500 {
            break;
        }
    }
}

#[tokio::test]
async fn a_second_gateway_on_the_same_data_dir_is_refused_clearly() {
    let t = tag("lock");
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_config(&t, &amqp_url(), dir.path());
    let _first = gateway_with(config.clone()).await;
    let listeners = fleetgate::Listeners::loopback().await.unwrap();
    let err = fleetgate::start(config, listeners)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("in use by another fleetgate process"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_node_fails_over_to_the_next() {
    let t = tag("failover");
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = amqp().await;
    let mut consumer = topic_consumer(&channel, &[format!("fleet.{t}-truck.position")]).await;
    // Two nodes that cannot serve: one that never answers the handshake (a
    // listener nobody accepts on), one that refuses the connection (a port
    // just closed). Then the real one.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = bridge_config(&t, &amqp_url(), dir.path());
    config.bridge.url = vec![
        format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap()),
        format!("amqp://guest:guest@{closed}/%2f"),
        amqp_url(),
    ]
    .into();
    config.bridge.connect_timeout_ms = 300;
    // A backoff longer than the test: only failing over, not retrying the
    // first node after a sleep, can reach the third node in time.
    config.bridge.reconnect_min_ms = 60_000;
    config.bridge.reconnect_max_ms = 60_000;
    let gw = gateway_with(config).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;
    assert!(metric(&gw, "fleetgate_bridge_failovers_total").await >= 2);
    drive(gw.mqtt_addr, &format!("{t}-truck"), 1..=3).await;
    for seq in 1..=3 {
        assert_eq!(next(&mut consumer).await.body["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_records_are_dropped_after_their_keep_time_and_free_the_spool() {
    let t = tag("unroutable");
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = amqp().await;
    // Positions have a consumer; the events (status_changed) have none. On
    // an exchange of the test's own: on amq.topic another test's queue for
    // events could route them.
    let (exchange, mut config) = config_with_own_exchange(&channel, &t, dir.path()).await;
    let positions_key = format!("fleet.{t}-truck.position");
    let mut positions = consumer_on(&channel, &exchange, &[positions_key]).await;
    config.bridge.unroutable_keep_s = 1;
    let gw = gateway_with(config).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;
    drive(gw.mqtt_addr, &format!("{t}-truck"), 1..=3).await;
    for seq in 1..=3 {
        assert_eq!(next(&mut positions).await.body["seq"], seq);
    }
    // The vehicle's online event was returned, retried, then dropped once a
    // second old; nothing stays in the spool.
    await_metric(&gw, "fleetgate_bridge_returns_total", 1).await;
    await_metric(&gw, "fleetgate_bridge_unroutable_dropped_total", 1).await;
    await_metric_at_most(&gw, "fleetgate_bridge_spool_records", 0).await;
}

/// Writes the config file a gateway process of this test runs with (its
/// own names, bridge to `url`, every position upstream) into `dir`;
/// `bridge_extra` are more `[bridge]` lines. Returns its path.
fn process_config(
    t: &str,
    dir: &std::path::Path,
    url: &str,
    bridge_extra: &str,
) -> std::path::PathBuf {
    let config = format!(
        "gateway_id = \"gw-{t}\"\ndata_dir = {data:?}\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [smq]\nlisten = \"127.0.0.1:0\"\n\
         [bridge]\nurl = {url:?}\nposition_interval_ms = 0\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n{bridge_extra}\
         package_queue = \"package_status-{t}\"\ncommand_queue = \"commands-{t}\"\nnotification_queue = \"notifications-{t}\"\n",
        data = dir.join("data"),
    );
    let path = dir.join("fleetgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// What a stopped-and-restarted gateway process runs against: RabbitMQ
/// behind a proxy that starts cut, an exchange of the test's own, and the
/// config file ([`process_config`], `spool_fsync = "always"`) naming both.
pub(crate) struct StopRig {
    pub proxy: Proxy,
    /// Held open for the channel's sake.
    _conn: lapin::Connection,
    pub channel: lapin::Channel,
    pub exchange: String,
    pub config_path: std::path::PathBuf,
}

pub(crate) async fn stop_rig(t: &str, dir: &std::path::Path) -> StopRig {
    let proxy = Proxy::start(rabbit_addr()).await;
    proxy.cut();
    let (conn, channel) = amqp().await;
    let exchange = format!("fleet-{t}");
    own_exchange(&channel, &exchange).await;
    let extra = format!("spool_fsync = \"always\"\nexchange = {exchange:?}\n");
    let config_path = process_config(t, dir, &proxy.url(), &extra);
    StopRig {
        proxy,
        _conn: conn,
        channel,
        exchange,
        config_path,
    }
}

/// How the first gateway process ends.
#[derive(Clone, Copy)]
enum Stop {
    Sigterm,
    Sigkill,
}

/// Publishes per half: positions, and a status after every 10th.
const HALF: u32 = 1500;
const STATUS_EVERY: u32 = 10;
/// The issue's load: 5 000 publishes a second.
const PUBLISHES_PER_S: u32 = 5000;
/// `bridge.confirm_window`'s default, which these processes run with.
const CONFIRM_WINDOW: u64 = 512;

/// One vehicle publishes 3000 QoS 1 positions and a status after every
/// 10th at 5 000 a second, pipelined, in two halves: the first with the
/// uplink down; then the uplink comes up until RabbitMQ has confirmed that
/// half, all of it behind the vehicle's online event, which is returned
/// (nothing binds events on this test's exchange) and so holds the
/// watermark back, as any stuck record does: every confirm after it is out
/// of order. The second half goes with the uplink down again, and the
/// gateway is stopped by `stop` right after the last PUBACK, then
/// restarted with the uplink up.
///
/// Every acknowledged position and status must arrive (position_interval_ms
/// is 0: the downsampler chooses every position). fsync "always" makes the
/// feeder slow, so at the stop much of the stream has passed the edge but
/// not yet the spool: only a drain at SIGTERM, and acknowledgements that
/// wait for the spool at SIGKILL, keep it. Duplicates, counted by
/// message_id, must stay within the confirm window (what can be in flight
/// when a process dies): without the out-of-order confirms in the state
/// file, the restart would resend the whole confirmed first half.
async fn acknowledged_updates_survive(stop: Stop) {
    let t = tag(match stop {
        Stop::Sigterm => "sigterm",
        Stop::Sigkill => "sigkill",
    });
    let dir = tempfile::tempdir().unwrap();
    let rig = stop_rig(&t, dir.path()).await;
    let (proxy, config_path) = (&rig.proxy, &rig.config_path);
    let vehicle = format!("{t}-v1");
    let bindings = ["position", "status"].map(|kind| format!("fleet.{vehicle}.{kind}"));
    let mut consumer = consumer_on(&rig.channel, &rig.exchange, &bindings).await;

    let first = GatewayProcess::start(config_path);
    let publish = |seqs| drive_pipelined(first.mqtt, &vehicle, seqs, STATUS_EVERY, PUBLISHES_PER_S);
    let mut acked = publish(1..=HALF).await;
    let first_half = (acked.positions.len() + acked.statuses.len()) as u64;
    assert_eq!(first_half, u64::from(HALF + HALF / STATUS_EVERY));
    proxy.restore();
    await_metric_at(first.http, "fleetgate_bridge_returns_total", 1).await;
    await_metric_at(first.http, "fleetgate_bridge_confirmed_total", first_half).await;
    proxy.cut();
    let second_half = publish(HALF + 1..=2 * HALF).await;
    let second_half_records = (second_half.positions.len() + second_half.statuses.len()) as u64;
    acked.positions.extend(second_half.positions);
    acked.statuses.extend(second_half.statuses);
    assert_eq!(acked.positions.len() as u32, 2 * HALF);
    assert_eq!(acked.statuses.len() as u32, 2 * HALF / STATUS_EVERY);
    match stop {
        Stop::Sigterm => first.sigterm(),
        Stop::Sigkill => first.sigkill(),
    }

    proxy.restore();
    let second = GatewayProcess::start(config_path);
    let delivered = expect_every_update(
        &mut consumer,
        std::slice::from_ref(&vehicle),
        u64::from(2 * HALF),
        &acked.statuses,
    )
    .await;
    // At least the second half was left unconfirmed (the gauge is copied
    // once a second, so it is awaited).
    let resent = await_metric_at(
        second.http,
        "fleetgate_bridge_spool_resent_after_recovery_total",
        second_half_records,
    )
    .await;
    println!(
        "{t}: {} messages, {} duplicates by message_id; the restart sent {resent} of what the first run left",
        delivered.messages, delivered.duplicates
    );
    assert!(
        delivered.duplicates <= CONFIRM_WINDOW,
        "{} duplicates after the restart: more than the confirm window ({CONFIRM_WINDOW})",
        delivered.duplicates
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_vehicles_publish_loses_nothing_acknowledged() {
    acknowledged_updates_survive(Stop::Sigterm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_the_last_puback_loses_nothing_acknowledged() {
    acknowledged_updates_survive(Stop::Sigkill).await;
}
