//! The SMQ contract (seed 002), driven by a client that talks as the
//! seed's own does (`common::smq::SeedClient`: SUB, then a GET loop, FIN),
//! against the gateway in-process; `/put` and MQTT reach the same topics.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;

use fleetgate::{Config, Gateway};

use crate::common::*;

fn smq_addr(gw: &Gateway) -> std::net::SocketAddr {
    gw.smq_addr.expect("smq is on by default")
}

async fn seed_consumer(gw: &Gateway, topic: &str, channel: &str) -> SeedClient {
    let mut c = SeedClient::connect(smq_addr(gw)).await;
    c.subscribe(topic, channel).await;
    c
}

fn config_with(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    edit(&mut config);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reaches_a_seed_consumer_and_stats_list_the_topic() {
    let gw = gateway().await;
    let (status, body) = http_get(gw.http_addr, "/ping").await;
    assert_eq!((status, body.as_str()), (200, "OK"));

    // Before any channel exists: the topic keeps it for its first channel.
    put_ok(&gw, "test", "hello").await;
    let mut consumer = seed_consumer(&gw, "test", "ch").await;
    let msg = consumer.get().await;
    assert_eq!(msg.text(), "hello");
    consumer.finish(&msg).await;

    // And once it exists.
    put_ok(&gw, "test", "again").await;
    let msg = consumer.get().await;
    assert_eq!(msg.text(), "again");
    consumer.finish(&msg).await;
    await_metric(&gw, "fleetgate_smq_finished_total", 2).await;

    put_ok(&gw, "other", "x").await;
    let (status, body) = http_get(gw.http_addr, "/stats").await;
    assert_eq!((status, body.as_str()), (200, "other\ntest\n"));
    let stats = smq_stats(&gw).await;
    let ch = channel_stats(&stats, "test", "ch").expect("channel ch in /stats");
    assert_eq!(ch["depth"], 0, "{stats}");
    assert_eq!(ch["in_flight"], 0, "{stats}");
    assert_eq!(ch["consumers"], 1, "{stats}");
    assert_eq!(stats["dropped"]["queue_full"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_of_a_topic_gets_every_message() {
    let gw = gateway().await;
    let mut a = seed_consumer(&gw, "orders", "billing").await;
    let mut b = seed_consumer(&gw, "orders", "shipping").await;
    await_consumers(&gw, "orders", "billing", 1).await;
    await_consumers(&gw, "orders", "shipping", 1).await;
    for i in 0..3 {
        put_ok(&gw, "orders", &format!("order-{i}")).await;
    }
    for consumer in [&mut a, &mut b] {
        for i in 0..3 {
            let msg = consumer.get().await;
            assert_eq!(msg.text(), format!("order-{i}"));
            consumer.finish(&msg).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_channel_share_its_messages() {
    let gw = gateway().await;
    let mut a = seed_consumer(&gw, "jobs", "workers").await;
    let mut b = seed_consumer(&gw, "jobs", "workers").await;
    await_consumers(&gw, "jobs", "workers", 2).await;
    let got_a = tokio::spawn(async move { (a.get().await, a) });
    let got_b = tokio::spawn(async move { (b.get().await, b) });
    put_ok(&gw, "jobs", "job-1").await;
    put_ok(&gw, "jobs", "job-2").await;
    let (ma, mut a) = got_a.await.unwrap();
    let (mb, mut b) = got_b.await.unwrap();
    let bodies: BTreeSet<String> = [ma.text(), mb.text()].into();
    assert_eq!(bodies, ["job-1".to_string(), "job-2".to_string()].into());
    assert_ne!(ma.uuid, mb.uuid);
    a.finish(&ma).await;
    b.finish(&mb).await;
    await_metric(&gw, "fleetgate_smq_finished_total", 2).await;
    let ch = channel_stats(&smq_stats(&gw).await, "jobs", "workers").unwrap();
    assert_eq!(
        (ch["depth"].as_u64(), ch["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_puts_the_message_back_at_once() {
    let gw = gateway().await;
    let mut c = seed_consumer(&gw, "retry", "ch").await;
    put_ok(&gw, "retry", "try me").await;
    let first = c.get().await;
    c.requeue(&first).await;
    let again = c.get().await;
    assert_eq!(again, first, "the same message, id and body");
    c.finish(&again).await;
    await_metric(&gw, "fleetgate_smq_requeued_total{reason=\"req\"}", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_finished_in_time_goes_to_another_consumer() {
    let gw = gateway_with(config_with(|c| c.smq.msg_timeout_s = 1)).await;
    let mut slow = seed_consumer(&gw, "t", "ch").await;
    let mut other = seed_consumer(&gw, "t", "ch").await;
    await_consumers(&gw, "t", "ch", 2).await;
    put_ok(&gw, "t", "m1").await;
    let held = slow.get().await;
    // The other consumer's GET waits until the held message times out.
    let redelivered = other.get().await;
    assert_eq!(redelivered, held);
    assert_eq!(
        metric(&gw, "fleetgate_smq_requeued_total{reason=\"timeout\"}").await,
        1
    );
    other.finish(&redelivered).await;

    // The slow consumer's late FIN is taken without an answer, and it may
    // GET again (the seed left it stuck in its FIN state).
    slow.finish(&held).await;
    put_ok(&gw, "t", "m2").await;
    let next = slow.get().await;
    assert_eq!(next.text(), "m2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_drops_its_oldest_and_counts_each() {
    let gw = gateway_with(config_with(|c| {
        c.smq.mem_queue_size = NonZeroUsize::new(3).unwrap();
    }))
    .await;
    let mut c = seed_consumer(&gw, "burst", "ch").await;
    await_consumers(&gw, "burst", "ch", 1).await;
    for i in 1..=5 {
        put_ok(&gw, "burst", &format!("m{i}")).await;
    }
    await_metric(&gw, "fleetgate_smq_received_total", 5).await;
    assert_eq!(
        metric(&gw, "fleetgate_smq_dropped_total{reason=\"queue_full\"}").await,
        2
    );
    let stats = smq_stats(&gw).await;
    assert_eq!(channel_stats(&stats, "burst", "ch").unwrap()["dropped"], 2);
    assert_eq!(stats["dropped"]["queue_full"], 2);
    for i in 3..=5 {
        let msg = c.get().await;
        assert_eq!(msg.text(), format!("m{i}"), "drop_oldest keeps the newest");
        c.finish(&msg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reaches_mosquitto_sub_on_the_same_topic() {
    let gw = gateway().await;
    let port = gw.mqtt_addr.port();
    let sub = tokio::task::spawn_blocking(move || {
        let sub = MosquittoSub::start(port, "smq/demo");
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    put_ok(&gw, "smq/demo", "hello mqtt").await;
    let line = tokio::task::spawn_blocking(move || sub.await_line("smq/demo "))
        .await
        .unwrap();
    assert_eq!(line, "smq/demo hello mqtt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_publish_reaches_a_channel() {
    let gw = gateway().await;
    let mut c = seed_consumer(&gw, "sensors/door", "audit").await;
    await_consumers(&gw, "sensors/door", "audit", 1).await;
    let port = gw.mqtt_addr.port();
    let published =
        tokio::task::spawn_blocking(move || mosquitto_pub_text(port, "sensors/door", "open"))
            .await
            .unwrap();
    assert!(published);
    let msg = c.get().await;
    assert_eq!(msg.text(), "open");
    c.finish(&msg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_under_fleet_or_to_dollar_topics_is_refused() {
    let gw = gateway().await;
    for topic in ["fleet/truck-7/position", "fleet", "%24SYS/x"] {
        let (status, body) = smq_put(gw.http_addr, &format!("topic={topic}"), b"forged").await;
        assert_eq!(status, 400, "{topic}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("topic"), "{body}");
    }
    let (status, body) = smq_put(gw.http_addr, "", b"x").await;
    assert_eq!(status, 400);
    assert!(body.contains("`topic`"), "names the field: {body}");
    let mut c = SeedClient::connect(smq_addr(&gw)).await;
    c.subscribe("$SYS/broker", "ch").await;
    assert_eq!(c.read_error().await, "E_BAD_TOPIC");
    assert_eq!(metric(&gw, "fleetgate_smq_put_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_get_the_seeds_errors_and_never_take_the_port_down() {
    let gw = gateway().await;
    let mut c = SeedClient::connect(smq_addr(&gw)).await;
    c.write_command("GET", &[]).await;
    assert_eq!(c.read_error().await, "E_INVALID", "GET before SUB");
    c.write_command("BOGUS", &[]).await;
    assert_eq!(c.read_error().await, "E_INVALID");
    c.write_command("SUB", &["only-topic"]).await;
    assert_eq!(c.read_error().await, "E_INVALID");
    c.send_raw(b"SUB  ch\n").await;
    assert_eq!(c.read_error().await, "E_BAD_TOPIC");
    c.send_raw(b"SUB t \n").await;
    assert_eq!(c.read_error().await, "E_BAD_CHANNEL");
    c.send_raw(b"\xff\xfe\n").await;
    assert_eq!(c.read_error().await, "E_INVALID");
    c.subscribe("t", "ch").await;
    c.write_command("FIN", &["00000000-0000-0000-0000-000000000000"])
        .await;
    assert_eq!(c.read_error().await, "E_INVALID", "FIN with nothing held");
    put_ok(&gw, "t", "m").await;
    let msg = c.get().await;
    c.write_command("FIN", &["00000000-0000-0000-0000-000000000000"])
        .await;
    assert_eq!(c.read_error().await, "UUID not in flight");
    c.finish(&msg).await;

    // An endless line: E_INVALID, then the connection is closed.
    let mut long = SeedClient::connect(smq_addr(&gw)).await;
    long.send_raw(&vec![b'A'; 8 * 1024]).await;
    assert_eq!(long.read_error().await, "E_INVALID");
    assert!(long.closed().await);
    assert_eq!(
        metric(
            &gw,
            "fleetgate_smq_connections_closed_total{reason=\"line_too_long\"}"
        )
        .await,
        1
    );
    // The port still serves.
    put_ok(&gw, "t", "still here").await;
    assert_eq!(c.get().await.text(), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_refuse_with_clear_errors_and_count() {
    let gw = gateway_with(config_with(|c| {
        c.smq.max_consumers = NonZeroUsize::new(1).unwrap();
        c.smq.max_topics = NonZeroUsize::new(1).unwrap();
        c.smq.max_message_bytes = NonZeroUsize::new(64).unwrap();
    }))
    .await;
    let mut first = seed_consumer(&gw, "only", "ch").await;
    await_consumers(&gw, "only", "ch", 1).await;
    let mut second = SeedClient::connect(smq_addr(&gw)).await;
    assert_eq!(second.read_error().await, "E_TOO_MANY_CONSUMERS");
    assert!(second.closed().await);
    assert_eq!(
        metric(&gw, "fleetgate_smq_refused_total{reason=\"max_consumers\"}").await,
        1
    );

    // "only" has a consumer, so it is not idle: a second topic is refused.
    let (status, body) = smq_put(gw.http_addr, "topic=another", b"x").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("smq.max_topics"), "{body}");
    let (status, body) = smq_put(gw.http_addr, "topic=only", &[b'x'; 65]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("smq.max_message_bytes"), "{body}");

    put_ok(&gw, "only", "fits").await;
    assert_eq!(first.get().await.text(), "fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smq_off_serves_no_port_and_no_endpoints() {
    let gw = gateway_with(config_with(|c| c.smq.enabled = false)).await;
    assert!(gw.smq_addr.is_none());
    let (status, _) = http_get(gw.http_addr, "/ping").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let gw = gateway_with(config_with(|c| c.smq.handshake_timeout_ms = 200)).await;
    let mut silent = SeedClient::connect(smq_addr(&gw)).await;
    assert!(silent.closed().await, "closed without a line");
    await_metric(
        &gw,
        "fleetgate_smq_connections_closed_total{reason=\"handshake_timeout\"}",
        1,
    )
    .await;
    await_metric_at_most(&gw, "fleetgate_smq_consumers", 0).await;
}
