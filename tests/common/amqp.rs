//! RabbitMQ for the bridge's tests: the broker `scripts/test.sh` started
//! (URL in `FLEETGATE_TEST_AMQP_URL`), names of a test's own, a bridge
//! config using them, consumers, and a TCP proxy that makes an outage
//! without touching RabbitMQ or other tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fleetgate::Config;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::DEADLINE;

/// The broker's URL; fails saying how to get one when it is unset.
pub fn amqp_url() -> String {
    std::env::var("FLEETGATE_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("FLEETGATE_TEST_AMQP_URL is not set: run `bash scripts/test.sh`, which starts RabbitMQ on loopback")
    })
}

/// A short unique tag for this test's names.
pub fn tag(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}{}", nanos % 1_000_000_000)
}

/// A bridge config whose gateway id, queues and data directory are the
/// test's own, with short reconnect delays.
pub fn bridge_config(tag: &str, url: &str, data_dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.gateway_id.0 = format!("gw-{tag}");
    config.data_dir.0 = data_dir.to_path_buf();
    config.bridge.url = url.into();
    config.bridge.package_queue = format!("package_status-{tag}");
    config.bridge.command_queue = format!("commands-{tag}");
    config.bridge.notification_queue = format!("notifications-{tag}");
    config.bridge.position_interval_ms = 0;
    config.bridge.reconnect_min_ms = 50;
    config.bridge.reconnect_max_ms = 500;
    config.bridge.retry_failed_ms = 200;
    config
}

/// A connection and channel of the test's own.
pub async fn amqp() -> (Connection, Channel) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers on loopback");
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// An exclusive queue bound to `amq.topic` with each of `bindings`.
pub async fn topic_consumer(channel: &Channel, bindings: &[String]) -> Consumer {
    consumer_on(channel, "amq.topic", bindings).await
}

/// A topic exchange of the test's own (not durable, deleted when unused),
/// so what it routes or returns cannot be changed by the queues other tests
/// bind to `amq.topic` at the same time.
pub async fn own_exchange(channel: &Channel, name: &str) {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// The bridge config of [`bridge_config`] publishing to an exchange of the
/// test's own (`fleet-<tag>`, declared here); returns its name too.
pub async fn config_with_own_exchange(
    channel: &Channel,
    tag: &str,
    data_dir: &std::path::Path,
) -> (String, fleetgate::Config) {
    let exchange = format!("fleet-{tag}");
    own_exchange(channel, &exchange).await;
    let mut config = bridge_config(tag, &amqp_url(), data_dir);
    config.bridge.exchange = exchange.clone();
    (exchange, config)
}

/// An exclusive queue bound to `exchange` with each of `bindings`.
pub async fn consumer_on(channel: &Channel, exchange: &str, bindings: &[String]) -> Consumer {
    let q = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for binding in bindings {
        channel
            .queue_bind(
                q.name().clone(),
                exchange.into(),
                binding.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    channel
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// One delivery, as the tests look at it.
pub struct Received {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: serde_json::Value,
}

/// The next delivery, acked, its body parsed as JSON.
pub async fn next(consumer: &mut Consumer) -> Received {
    let delivery = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a message from RabbitMQ in time")
        .expect("consumer open")
        .expect("delivery");
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    Received {
        routing_key: delivery.routing_key.to_string(),
        properties: delivery.properties.clone(),
        body: serde_json::from_slice(&delivery.data).expect("JSON body"),
    }
}

/// A TCP proxy the test can cut (every connection dropped, new ones refused)
/// and restore.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `amqp://…@<proxy>/…` from the real URL.
    pub fn url(&self) -> String {
        let url = amqp_url();
        let at = url
            .rfind('@')
            .map_or(url.find("://").unwrap() + 3, |i| i + 1);
        let rest = &url[at..];
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{}{}{}", &url[..at], self.addr, path)
    }
}

/// RabbitMQ's address, for a [`Proxy`] in front of it.
pub fn rabbit_addr() -> SocketAddr {
    let url = amqp_url();
    let at = url
        .rfind('@')
        .map_or(url.find("://").unwrap() + 3, |i| i + 1);
    let host_port = url[at..].split('/').next().unwrap();
    host_port
        .parse()
        .expect("FLEETGATE_TEST_AMQP_URL host:port is an IP address")
}

/// Reads until every seq in `1..=n` of each vehicle was seen; checks that
/// first occurrences come in order per vehicle and that a duplicate carries
/// the message_id of its first copy.
pub async fn expect_every_seq(consumer: &mut Consumer, vehicles: &[String], n: u64) {
    expect_every_update(consumer, vehicles, n, &[]).await;
}

/// What [`expect_every_update`] saw.
#[derive(Debug, Default)]
pub struct Delivered {
    pub messages: u64,
    /// Copies past the first, counted by `message_id`.
    pub duplicates: u64,
}

/// Reads until every position seq in `1..=n` of each vehicle and every
/// status number in `statuses` (of [`super::status_fix`]) of each vehicle
/// was seen. Checks that first copies come in order per vehicle and kind,
/// positions with no gap, and that a duplicate (same vehicle, kind and
/// number) carries the `message_id` of its first copy and no other update
/// does. Returns how many copies came past the first, by `message_id`.
pub async fn expect_every_update(
    consumer: &mut Consumer,
    vehicles: &[String],
    n: u64,
    statuses: &[u32],
) -> Delivered {
    // (vehicle, is a status) → the numbers seen, in order of first copy.
    let mut seen: HashMap<(String, bool), Vec<u64>> = HashMap::new();
    let mut ids: HashMap<(String, bool, u64), String> = HashMap::new();
    let mut copies: HashMap<String, u64> = HashMap::new();
    let mut delivered = Delivered::default();
    let done = |seen: &HashMap<(String, bool), Vec<u64>>| {
        vehicles.iter().all(|v| {
            let got = |status: bool| seen.get(&(v.clone(), status)).map_or(0, Vec::len);
            got(false) as u64 == n && got(true) == statuses.len()
        })
    };
    while !done(&seen) {
        let m = next(consumer).await;
        delivered.messages += 1;
        let vid = m.body["vehicle_id"].as_str().unwrap().to_string();
        let is_status = m.routing_key.ends_with(".status");
        let number = if is_status {
            let time_ms = m.body["time_ms"].as_u64().unwrap();
            u64::from(super::status_number(time_ms).expect("a fixture status"))
        } else {
            m.body["seq"].as_u64().unwrap()
        };
        let message_id = m.properties.message_id().as_ref().unwrap().to_string();
        let count = copies.entry(message_id.clone()).or_default();
        *count += 1;
        if *count > 1 {
            delivered.duplicates += 1;
        }
        let key = (vid.clone(), is_status, number);
        match ids.get(&key) {
            Some(first) => assert_eq!(
                first, &message_id,
                "a duplicate carries the same message_id"
            ),
            None => {
                assert_eq!(*count, 1, "{message_id} names two different updates");
                ids.insert(key, message_id);
                let s = seen.entry((vid.clone(), is_status)).or_default();
                if is_status {
                    let expected = statuses.get(s.len()).map(|&k| u64::from(k));
                    assert_eq!(
                        expected,
                        Some(number),
                        "{vid}: status first copies arrive in order, none missing"
                    );
                } else {
                    assert_eq!(
                        s.last().map_or(1, |l| l + 1),
                        number,
                        "{vid}: first copies arrive in order, no gap"
                    );
                }
                s.push(number);
            }
        }
    }
    delivered
}
