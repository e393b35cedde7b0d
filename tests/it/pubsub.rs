//! The WebSocket pub/sub proxy's contract (seed 003), driven by a client
//! that talks as the seed's own does: connect to `/message`, send
//! `{"action":"subscribe","topic":T}`, then `{"action":"publish",…}`, read
//! `{"action":"publish","topic":T,"message":M}` frames. Its topics are the
//! broker's: `mosquitto_sub` and `mosquitto_pub` meet it there.

use serde_json::{json, Value};

use fleetgate::Config;

use crate::common::*;

fn config_with(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    edit(&mut config);
    config
}

const SUBSCRIPTIONS: &str = "fleetgate_pubsub_subscriptions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_client_gets_what_it_publishes_to_its_topic_verbatim() {
    let gw = gateway().await;
    let mut c = SeedPubSub::connect(&gw).await;
    c.subscribe("booked").await;
    let message = "seat 12A, \"window\" — ✓ {not json}";
    c.publish("booked", message).await;
    let frame = next_text(&mut c.ws).await;
    let message_json = serde_json::to_string(message).unwrap();
    assert_eq!(
        frame,
        format!(r#"{{"action":"publish","topic":"booked","message":{message_json}}}"#),
        "the seed's frame, keys in its order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_both_get_a_publish() {
    let gw = gateway().await;
    let mut a = SeedPubSub::connect(&gw).await;
    let mut b = SeedPubSub::connect(&gw).await;
    a.subscribe("booked").await;
    b.subscribe("booked").await;
    await_metric(&gw, SUBSCRIPTIONS, 2).await;
    let mut p = SeedPubSub::connect(&gw).await;
    p.publish("booked", "flight 7").await;
    assert_eq!(a.next().await, publish_frame("booked", "flight 7"));
    assert_eq!(b.next().await, publish_frame("booked", "flight 7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let gw = gateway().await;
    // One wildcard subscriber first: the others' filters share its cover,
    // so what comes through arrives in the order it was published.
    let mut all = SeedPubSub::connect(&gw).await;
    all.subscribe("news/#").await;
    let mut a = SeedPubSub::connect(&gw).await;
    a.subscribe("news/a").await;
    a.subscribe("news/b").await;
    await_metric(&gw, SUBSCRIPTIONS, 3).await;
    a.unsubscribe("news/a").await;
    await_metric_at_most(&gw, SUBSCRIPTIONS, 2).await;
    let mut p = SeedPubSub::connect(&gw).await;
    p.publish("news/a", "x").await;
    p.publish("news/b", "y").await;
    assert_eq!(all.next().await, publish_frame("news/a", "x"));
    assert_eq!(all.next().await, publish_frame("news/b", "y"));
    assert_eq!(
        a.next().await,
        publish_frame("news/b", "y"),
        "news/a was unsubscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_topics_on_one_connection_and_wildcards() {
    let gw = gateway().await;
    let mut c = SeedPubSub::connect(&gw).await;
    for topic in ["booked", "cancelled", "gates/+/open"] {
        c.subscribe(topic).await;
    }
    await_metric(&gw, SUBSCRIPTIONS, 3).await;
    let mut p = SeedPubSub::connect(&gw).await;
    p.publish("booked", "b").await;
    p.publish("cancelled", "c").await;
    p.publish("gates/12/open", "g").await;
    p.publish("unrelated", "u").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.next().await);
    }
    got.sort_by_key(|v| v["topic"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        vec![
            publish_frame("booked", "b"),
            publish_frame("cancelled", "c"),
            publish_frame("gates/12/open", "g"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_an_error_frame_and_the_connection_stays_usable() {
    let gw = gateway().await;
    let mut c = SeedPubSub::connect(&gw).await;
    let long = "x".repeat(gw_max_message() + 1);
    let cases = [
        ("not json".to_owned(), 400, "JSON"),
        (r#"{"action":"shout","topic":"t"}"#.to_owned(), 400, "shout"),
        (r#"["subscribe"]"#.to_owned(), 400, "object"),
        (r#"{"topic":"t"}"#.to_owned(), 400, "`action`"),
        (r#"{"action":"subscribe"}"#.to_owned(), 400, "`topic`"),
        (
            r#"{"action":"subscribe","topic":"a/#/b"}"#.to_owned(),
            400,
            "`topic`",
        ),
        (
            r#"{"action":"publish","topic":"t","message":5}"#.to_owned(),
            400,
            "`message`",
        ),
        (
            json!({"action":"publish","topic":"t","message":long}).to_string(),
            413,
            "max_message_bytes",
        ),
    ];
    for (text, status, needle) in &cases {
        c.send_text(text).await;
        let frame = c.next().await;
        assert_eq!(frame["action"], "error", "{text}: {frame}");
        assert_eq!(frame["status"], *status, "{text}: {frame}");
        let error = frame["error"].as_str().unwrap();
        assert!(error.contains(needle), "{text}: {error}");
    }
    c.sync("still/usable").await;
    assert_eq!(
        metric(&gw, "fleetgate_pubsub_errors_total").await,
        cases.len() as u64
    );
}

fn gw_max_message() -> usize {
    Config::default().pubsub.max_message_bytes.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_reaches_mosquitto_sub_and_mosquitto_pub_reaches_message() {
    let gw = gateway().await;
    let port = gw.mqtt_addr.port();
    let sub = tokio::task::spawn_blocking(move || {
        let sub = MosquittoSub::start(port, "booked/mqtt");
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    let mut c = SeedPubSub::connect(&gw).await;
    c.publish("booked/mqtt", "to mqtt").await;
    let line = tokio::task::spawn_blocking(move || sub.await_line("booked/mqtt "))
        .await
        .unwrap();
    assert_eq!(line, "booked/mqtt to mqtt");

    c.subscribe("booked/mqtt").await;
    c.sync("booked/probe").await;
    let published =
        tokio::task::spawn_blocking(move || mosquitto_pub_text(port, "booked/mqtt", "from mqtt"))
            .await
            .unwrap();
    assert!(published);
    assert_eq!(c.next().await, publish_frame("booked/mqtt", "from mqtt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_under_fleet_is_refused_and_reading_it_is_allowed() {
    let gw = gateway().await;
    let mut c = SeedPubSub::connect(&gw).await;
    for topic in ["fleet/truck-7/position", "fleet", "$SYS/broker"] {
        c.publish(topic, "forged").await;
        let frame = c.next().await;
        assert_eq!(frame["action"], "error", "{topic}: {frame}");
        assert_eq!(frame["status"], 400, "{topic}: {frame}");
        assert!(frame["error"].as_str().unwrap().contains("`topic`"));
    }
    c.subscribe("$SYS/#").await;
    assert_eq!(c.next().await["action"], "error");
    assert_eq!(metric(&gw, "fleetgate_pubsub_published_total").await, 0);

    c.subscribe("fleet/#").await;
    c.sync("probe").await;
    drive(gw.mqtt_addr, "truck-7", 1..=1).await;
    let frame = loop {
        let frame = c.next().await;
        assert_eq!(frame["action"], "publish", "{frame}");
        if frame["topic"] == "fleet/truck-7/position" {
            break frame;
        }
    };
    let position: Value = serde_json::from_str(frame["message"].as_str().unwrap()).unwrap();
    assert_eq!(position["vehicle_id"], "truck-7", "{position}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_its_oldest_counted_without_growing_memory() {
    const QUEUE: u64 = 4;
    const N: usize = 4000;
    let gw = gateway_with(config_with(|c| {
        c.pubsub.queue = std::num::NonZeroUsize::new(QUEUE as usize).unwrap();
        c.http.ws_stall_timeout_ms = 120_000;
    }))
    .await;
    let mut slow = SeedPubSub::connect(&gw).await;
    slow.subscribe("flood").await;
    let mut p = SeedPubSub::connect(&gw).await;
    p.subscribe("flood").await;
    await_metric(&gw, SUBSCRIPTIONS, 2).await;
    // The publisher reads its own copy back before the next: the slow
    // reader's queue is the only one that can fill.
    let pad = "p".repeat(3_900);
    for i in 0..N {
        p.publish("flood", &format!("{i} {pad}")).await;
        let frame = p.next().await;
        assert!(frame["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{i} ")));
        if i % 200 == 0 {
            let queued = metric(&gw, "fleetgate_pubsub_queued_frames").await;
            assert!(queued <= QUEUE, "{queued} frames queued, at most {QUEUE}");
        }
    }
    let dropped = metric(&gw, "fleetgate_pubsub_dropped_total{reason=\"queue_full\"}").await;
    assert!(dropped > 0, "a reader that took nothing lost nothing");

    // It still gets the newest; what it lost is what it does not get.
    let mut received = 0;
    loop {
        let frame = slow.next().await;
        received += 1;
        if frame["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} ", N - 1))
        {
            break;
        }
    }
    assert!(received < N, "received {received} of {N}");
    assert_eq!(
        received as u64 + dropped,
        N as u64,
        "every message received or counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_and_counted() {
    let gw = gateway_with(config_with(|c| c.http.ws_stall_timeout_ms = 300)).await;
    let mut c = SeedPubSub::connect(&gw).await;
    c.subscribe("quiet").await;
    await_metric(&gw, SUBSCRIPTIONS, 1).await;
    // It reads nothing from here on, so answers no ping.
    await_metric(&gw, "fleetgate_pubsub_stalled_total", 1).await;
    await_metric_at_most(&gw, "fleetgate_pubsub_connections", 0).await;
    await_metric_at_most(&gw, SUBSCRIPTIONS, 0).await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_refused_with_429() {
    let gw = gateway_with(config_with(|c| {
        c.pubsub.max_connections = std::num::NonZeroUsize::new(1).unwrap();
    }))
    .await;
    let _first = SeedPubSub::connect(&gw).await;
    let url = format!("ws://{}/message", gw.http_addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(
        metric(
            &gw,
            "fleetgate_pubsub_refused_total{reason=\"max_connections\"}"
        )
        .await,
        1
    );
}
