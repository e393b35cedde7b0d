//! The embedded rumqttd: routing for dashboards and other MQTT clients.
//!
//! In: clients the edge hands over (TCP to an internal listener on
//! 127.0.0.1), and the gateway's own publishes through [`BrokerPublisher`].
//! Out: rumqttd's deliveries to those clients, and commands published to
//! `v/<vid>/cmd` by anyone, passed to a [`CommandSink`] (the edge's vehicle
//! registry).
//!
//! Bound: rumqttd keeps one commit log per distinct subscription filter of at
//! most `(max_segment_count + 1) × max_segment_size_bytes` bytes and never
//! frees it; the edge admits at most `broker.max_filters` distinct filters, so
//! the logs stay under [`BrokerConfig::log_bound_bytes`]. The gateway's own
//! publishes wait in a queue of `broker.publish_queue` entries (drop newest
//! when full, counted); rumqttd's per-link buffers behind it are hard-coded
//! (200 entries per link, 1000 on the router channel).
//!
//! Threads: rumqttd's router runs on its own OS thread (`router-0`); one more
//! thread (`broker-link`) owns the gateway's local link, because
//! `LinkTx::publish` blocks on the router channel and must not block a tokio
//! worker. Both end when the gateway drops its last handle. This is the only
//! module, with the edge's hand-off, that knows rumqttd.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::{ConnectionSettings, Notification, Router, RouterConfig, Server, ServerSettings};
use std::sync::mpsc;

use crate::config::{BrokerConfig, MqttConfig};
use crate::metrics::Metrics;

/// Where commands for devices go: `v/<vid>/cmd` publishes seen by the broker.
pub trait CommandSink: Send + Sync + 'static {
    /// Delivers the raw command payload to the vehicle's connection, if any.
    fn deliver(&self, vehicle_id: &str, payload: Bytes);
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reserve a loopback port for the embedded broker: {0}")]
    Port(std::io::Error),
    #[error("cannot open the gateway's local link to the embedded broker: {0}")]
    Link(String),
    #[error("cannot start the broker link thread: {0}")]
    Thread(std::io::Error),
    #[error("the embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// One publish from the gateway into rumqttd (QoS 0, not retained).
struct Outgoing {
    topic: Bytes,
    payload: Bytes,
}

/// Publishes into rumqttd without ever blocking the caller.
///
/// The queue is std's bounded `sync_channel`: a ring allocated once, so a
/// publish allocates nothing (tokio's mpsc allocates blocks under backlog),
/// and its consumer is a thread of its own anyway.
#[derive(Clone)]
pub struct BrokerPublisher {
    queue: mpsc::SyncSender<Outgoing>,
    metrics: Arc<Metrics>,
}

impl BrokerPublisher {
    /// Queues a publish; when the queue is full the publish is dropped
    /// (`drop_newest`), counted in `broker_publish_dropped_total`.
    pub fn publish(&self, topic: impl Into<Bytes>, payload: Bytes) -> bool {
        let item = Outgoing {
            topic: topic.into(),
            payload,
        };
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                Metrics::inc(&self.metrics.broker_publish_dropped_total);
                false
            }
        }
    }
}

/// The receiving end of a detached [`BrokerPublisher`]: for benchmarks
/// and tests that run the pipeline without a broker.
pub struct DetachedBroker {
    queue: mpsc::Receiver<Outgoing>,
}

impl DetachedBroker {
    /// Discards what was published; returns how many publishes that was.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.queue.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

impl BrokerPublisher {
    /// A publisher connected to no broker, with a queue of `capacity`.
    pub fn detached(capacity: usize, metrics: Arc<Metrics>) -> (BrokerPublisher, DetachedBroker) {
        let (queue, rx) = mpsc::sync_channel(capacity.max(1));
        (
            BrokerPublisher { queue, metrics },
            DetachedBroker { queue: rx },
        )
    }
}

/// The running embedded broker.
pub struct Broker {
    /// The internal listener the edge hands clients to (loopback only).
    pub internal_addr: SocketAddr,
    pub publisher: BrokerPublisher,
    server_task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.server_task.abort();
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The filter the gateway's local link subscribes to for the downlink.
const COMMAND_FILTER: &str = "v/+/cmd";

impl Broker {
    /// Starts the router, the internal listener and the gateway's local
    /// link. Must be called inside a tokio runtime.
    pub async fn start(
        broker: &BrokerConfig,
        mqtt: &MqttConfig,
        metrics: Arc<Metrics>,
        commands: Arc<dyn CommandSink>,
    ) -> Result<Broker, BrokerError> {
        // The port handed to rumqttd was free a moment ago, but another
        // process may take it before rumqttd binds it; then start again on
        // a new port (and a new router) rather than fail.
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            match Self::start_once(broker, mqtt, metrics.clone(), commands.clone()).await {
                Ok(started) => return Ok(started),
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "embedded broker did not start; retrying on another port");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(
        broker: &BrokerConfig,
        mqtt: &MqttConfig,
        metrics: Arc<Metrics>,
        commands: Arc<dyn CommandSink>,
    ) -> Result<Broker, BrokerError> {
        let router_config = RouterConfig {
            // +2: the gateway's local link, and slack for a hand-off racing a close.
            max_connections: broker.max_connections.get() + 2,
            max_outgoing_packet_count: 200,
            max_segment_size: broker.max_segment_size_bytes.get().max(1024),
            max_segment_count: broker.max_segment_count.get(),
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        let router_tx = Router::new(0, router_config).spawn();

        let internal_addr = internal_port().map_err(BrokerError::Port)?;
        let settings = ServerSettings {
            name: "fleetgate-internal".into(),
            listen: internal_addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                // The edge already enforced its own CONNECT timeout.
                connection_timeout_ms: 5_000,
                max_payload_size: mqtt.max_packet_size_bytes.get(),
                // Despite its name, how many packets rumqttd parses from one
                // client's socket before handing them to the router: bigger
                // batches, fewer router wake-ups (fan-in-max at QoS 1: 15 k
                // → 22 k msg/s sustained, p99 at 15 k 36 → 4 ms). The packets
                // are slices of bytes already read, so the memory bound is
                // the read buffer, not this count.
                max_inflight_count: 1000,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let mut server = Server::new(settings, router_tx.clone(), rumqttd::protocol::v4::V4);
        let server_task = tokio::spawn(async move {
            if let Err(e) = server.start(rumqttd::LinkType::Remote).await {
                tracing::error!(error = ?e, "embedded broker listener stopped");
            }
        });
        wait_until_listening(internal_addr).await?;
        // A listener answered; if rumqttd's own bind failed, its task has
        // ended and the answer came from whoever took the port.
        tokio::task::yield_now().await;
        if server_task.is_finished() {
            return Err(BrokerError::NotListening(internal_addr));
        }
        if !set_nodelay_on_listener(internal_addr) {
            tracing::warn!(%internal_addr, "could not turn Nagle off on the embedded broker's listener: handed-off clients may see 40 ms stalls");
        }

        let (mut link_tx, link_rx, _connack) = LinkBuilder::new("fleetgate-gateway", router_tx)
            .clean_session(true)
            .build()
            .map_err(|e| BrokerError::Link(format!("{e:?}")))?;
        link_tx
            .subscribe(COMMAND_FILTER)
            .map_err(|e| BrokerError::Link(format!("{e:?}")))?;

        let (queue, rx) = mpsc::sync_channel(broker.publish_queue.get());
        let stop = Arc::new(AtomicBool::new(false));
        let backlog_limit = broker.publish_queue.get();
        spawn_link_threads(
            link_tx,
            link_rx,
            rx,
            LinkTxLimits {
                backlog: backlog_limit,
                metrics: Arc::clone(&metrics),
            },
            commands,
            stop.clone(),
        )?;

        tracing::info!(%internal_addr, log_bound_bytes = broker.log_bound_bytes(), "embedded rumqttd ready");
        Ok(Broker {
            internal_addr,
            publisher: BrokerPublisher { queue, metrics },
            server_task,
            stop,
        })
    }
}

/// Turns Nagle's algorithm off on rumqttd's internal listener, found among
/// this process's sockets by its address; Linux gives every socket it
/// accepts the listener's TCP_NODELAY. rumqttd never sets TCP_NODELAY, so
/// its small writes to the edge (PUBACKs, publishes to a dashboard) waited
/// for the edge's delayed ACK: p99 of 30–45 ms at 10 000 msg/s with the
/// gateway at 40 % CPU (benches/compare.sh, fan-in-max). Returns whether
/// the listener was found.
fn set_nodelay_on_listener(addr: SocketAddr) -> bool {
    use std::os::fd::BorrowedFd;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` is an open socket of this process, listed just now,
        // and is only borrowed for the two calls below. rumqttd's listener
        // lives as long as the process; were another socket closed and its
        // number reused in between, the address check below skips it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let bound_here = socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr);
        let listening = socket.is_listener().unwrap_or(false);
        if bound_here && listening {
            return socket.set_tcp_nodelay(true).is_ok();
        }
    }
    false
}

/// A free loopback port for rumqttd's internal listener.
///
/// rumqttd binds its listener itself and cannot report the port it got, so
/// the port must be chosen before it binds. Taken from port 0 (the
/// ephemeral range), it could be handed to any other socket bound to port 0
/// in the moment between our check and rumqttd's bind — and then clients
/// would be spliced to someone else's listener. So the port is drawn at
/// random from below the ephemeral range, where port-0 binds never land,
/// and checked free.
fn internal_port() -> std::io::Result<SocketAddr> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..64 {
            // RandomState is seeded per instance: a random number without a crate.
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = LOWEST + (random % span) as u16;
            if let Ok(listener) = StdTcpListener::bind(("127.0.0.1", port)) {
                return listener.local_addr();
            }
        }
    }
    // No room below the ephemeral range: fall back to an ephemeral port.
    StdTcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr())
}

/// Waits until rumqttd answers a CONNECT on `addr` (then says goodbye
/// properly, so rumqttd logs no error for the probe).
async fn wait_until_listening(addr: SocketAddr) -> Result<(), BrokerError> {
    use rumqttc::mqttbytes::v4::{Connect, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut hello = bytes::BytesMut::new();
    let mut connect = Connect::new("fleetgate-startup-probe");
    connect.keep_alive = 10;
    let encoded = Packet::Connect(connect)
        .write(&mut hello, usize::MAX)
        .and_then(|_| Packet::Disconnect.write(&mut hello, usize::MAX));
    if encoded.is_err() {
        return Err(BrokerError::NotListening(addr));
    }
    for _ in 0..200 {
        if let Ok(mut probe) = tokio::net::TcpStream::connect(addr).await {
            let mut connack = [0u8; 4];
            let answered = async {
                probe.write_all(&hello[..hello.len() - 2]).await?;
                probe.read_exact(&mut connack).await?;
                probe.write_all(&hello[hello.len() - 2..]).await
            };
            if tokio::time::timeout(Duration::from_secs(2), answered)
                .await
                .is_ok_and(|r| r.is_ok())
                && connack[0] == 0x20
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BrokerError::NotListening(addr))
}

/// What bounds the gateway's own link into rumqttd.
struct LinkTxLimits {
    /// Publishes rumqttd may hold in the link's queue before the router
    /// takes them (`broker.publish_queue`).
    backlog: usize,
    metrics: Arc<Metrics>,
}

fn spawn_link_threads(
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    outgoing: mpsc::Receiver<Outgoing>,
    limits: LinkTxLimits,
    commands: Arc<dyn CommandSink>,
    stop: Arc<AtomicBool>,
) -> Result<(), BrokerError> {
    // Publishing: blocks on rumqttd's bounded router channel, so it gets a
    // thread of its own; ends when every BrokerPublisher is dropped.
    //
    // rumqttd's LinkTx queues into an unbounded VecDeque and only sends the
    // router a wake-up token (bounded channel). A router that stops taking
    // this link's data (seen once in a compare.sh pipeline run: dashboards
    // got nothing and RSS grew to 310 MiB) would grow that queue without
    // end, so a publish past `backlog` queued there is dropped and counted.
    std::thread::Builder::new()
        .name("broker-link-tx".into())
        .spawn(move || {
            let mut stalled_log = crate::log_limit::RateLimit::new(1);
            while let Ok(item) = outgoing.recv() {
                let queued = link_tx.buffer().len();
                if queued >= limits.backlog {
                    Metrics::inc(&limits.metrics.broker_publish_dropped_total);
                    if let Some(suppressed) = stalled_log.allow() {
                        tracing::error!(queued, suppressed, "the embedded broker is not taking the gateway's publishes; dropping them (broker_publish_dropped_total)");
                    }
                    continue;
                }
                if let Err(e) = link_tx.publish(item.topic, item.payload) {
                    tracing::error!(error = ?e, "embedded broker link closed; gateway publishes stop");
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;

    // Receiving: commands for devices. After an `Unschedule` the router
    // pauses this link until `ready()`; without it the downlink would stall.
    std::thread::Builder::new()
        .name("broker-link-rx".into())
        .spawn(move || loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            match link_rx.recv_deadline(deadline) {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = forward.publish.topic;
                    match command_vehicle(&topic) {
                        Some(vid) => commands.deliver(vid, forward.publish.payload),
                        None => tracing::debug!(?topic, "ignoring non-command forward"),
                    }
                }
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.ready().is_err() {
                        break;
                    }
                }
                Ok(Some(Notification::Disconnect(..))) => {
                    tracing::error!("the embedded broker disconnected the gateway's link: dashboards get no updates, commands stop");
                    break;
                }
                Ok(Some(_)) | Ok(None) => {}
                // flume folds "disconnected" into the timeout error: only
                // an error at or after the deadline is a timeout. Anything
                // earlier means the router let go of this link, and waiting
                // again would spin.
                Err(rumqttd::local::LinkError::RecvTimeout(_)) if std::time::Instant::now() >= deadline => {}
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        tracing::error!(error = ?e, "embedded broker downlink closed; commands to devices stop");
                    }
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}

/// `v/<vid>/cmd` → `<vid>`.
fn command_vehicle(topic: &[u8]) -> Option<&str> {
    let topic = std::str::from_utf8(topic).ok()?;
    let rest = topic.strip_prefix("v/")?;
    let vid = rest.strip_suffix("/cmd")?;
    (!vid.is_empty() && !vid.contains('/')).then_some(vid)
}

#[cfg(test)]
mod tests {
    use super::command_vehicle;

    #[test]
    fn command_topic_names_one_vehicle() {
        assert_eq!(command_vehicle(b"v/truck-7/cmd"), Some("truck-7"));
        assert_eq!(command_vehicle(b"v//cmd"), None);
        assert_eq!(command_vehicle(b"v/a/b/cmd"), None);
        assert_eq!(command_vehicle(b"v/truck-7/pos"), None);
    }
}
