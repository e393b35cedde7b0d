//! The edge: fleetgate's one MQTT 3.1.1 port, for vehicles and everyone else.
//!
//! In: TCP connections. Out: vehicle publishes to ingest; every other client
//! spliced to the embedded rumqttd. Bound: at most `mqtt.max_connections`
//! connections (one more is closed at accept, counted); per connection a
//! read buffer that grows only to the largest frame allowed
//! (`mqtt.max_packet_size_bytes`) and a command queue of
//! `mqtt.vehicle_command_queue`.
//!
//! Why an edge of our own in front of rumqttd: measured on a 2-core machine,
//! bare rumqttd 0.20 holds ~44 KiB per idle connection and accepts ~135
//! connections/s, rejects keep-alive 0, has no ACLs and no CONNECT timeout.
//!
//! # Classification (no authentication configured)
//!
//! Every client starts as a **vehicle**, served here with lean state:
//! PUBLISH to `v/<vid>/pos|status` (QoS 0, 1 and 2) goes to ingest; a
//! SUBSCRIBE to exactly one `v/<vid>/cmd` is served from the gateway's local
//! link to the broker. The first packet a vehicle would not send — a
//! SUBSCRIBE to any other filter, a PUBLISH to any other topic — **hands the
//! client to rumqttd**: the edge opens a connection to rumqttd's internal
//! listener, replays the client's CONNECT (and its `v/<vid>/cmd`
//! subscription, if any), then forwards that packet and every later one,
//! still checked against the ACL in [`handoff`]. So `mosquitto_pub -t
//! v/truck-7/pos` stays at the edge, and `mosquitto_sub -t 'fleet/#'` is
//! handed off on its SUBSCRIBE. A client that connects with
//! `clean_session = false` is handed off at its CONNECT: only rumqttd keeps
//! sessions, and a resuming client does not subscribe again.
//!
//! # Failure containment
//!
//! The CONNECT is read under `mqtt.connect_timeout_ms`; a malformed packet
//! or a protocol violation closes that connection only (counted); keep-alive
//! is enforced at 1.5× the client's value, and keep-alive 0 (no timeout) is
//! accepted — for handed-off clients the edge pings rumqttd on their behalf,
//! since rumqttd refuses keep-alive 0.

mod codec;
mod handoff;
pub mod registry;
mod vehicle;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::BrokerPublisher;
use crate::config::{BrokerConfig, MqttConfig};
use crate::ingest::IngestSender;
use crate::metrics::Metrics;
use registry::VehicleRegistry;

/// Largest CONNECT the edge reads before it knows who is talking.
const MAX_CONNECT_BYTES: usize = 8 * 1024;

/// What every connection task shares.
pub struct EdgeContext {
    pub mqtt: MqttConfig,
    pub metrics: Arc<Metrics>,
    pub ingest: IngestSender,
    pub publisher: BrokerPublisher,
    pub registry: Arc<VehicleRegistry>,
    pub broker_addr: SocketAddr,
    /// Distinct filters admitted into rumqttd (its logs are never freed).
    pub filters: Budget,
    /// Distinct retained topics admitted into rumqttd.
    pub retained: Budget,
    next_client_number: AtomicU64,
}

impl EdgeContext {
    pub fn new(
        mqtt: &MqttConfig,
        broker: &BrokerConfig,
        metrics: Arc<Metrics>,
        ingest: IngestSender,
        publisher: BrokerPublisher,
        registry: Arc<VehicleRegistry>,
        broker_addr: SocketAddr,
    ) -> Self {
        EdgeContext {
            mqtt: mqtt.clone(),
            metrics,
            ingest,
            publisher,
            registry,
            broker_addr,
            filters: Budget::new(broker.max_filters.get()),
            retained: Budget::new(broker.max_retained_topics.get()),
            next_client_number: AtomicU64::new(1),
        }
    }

    fn max_packet_size(&self) -> usize {
        self.mqtt.max_packet_size_bytes.get()
    }

    /// A client id for a client that sent an empty one (rumqttd needs one).
    fn generated_client_id(&self) -> String {
        let n = self.next_client_number.fetch_add(1, Ordering::Relaxed);
        format!("fleetgate-anon-{n}")
    }
}

/// A set of distinct names with a fixed capacity, for what rumqttd keeps
/// forever. Admitting a name already in the set always succeeds.
pub struct Budget {
    names: Mutex<HashSet<String>>,
    capacity: usize,
}

impl Budget {
    pub fn new(capacity: usize) -> Self {
        Budget {
            names: Mutex::new(HashSet::new()),
            capacity,
        }
    }

    pub fn admit(&self, name: &str) -> bool {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(name) {
            return true;
        }
        if names.len() >= self.capacity {
            return false;
        }
        names.insert(name.to_owned());
        true
    }
}

/// Accepts connections until `shutdown` resolves; then closes them all.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<EdgeContext>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(ctx.mqtt.max_connections.get()));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    Metrics::inc(&ctx.metrics.connections_refused_total_limit);
                    drop(stream);
                    continue;
                };
                Metrics::inc(&ctx.metrics.connections_accepted_total);
                let ctx = ctx.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    connection(stream, peer, ctx).await;
                });
            }
        }
    }
    connections.shutdown().await;
}

/// Holds a connection's place in one of the `connections{kind}` gauges.
struct Gauge<'a>(&'a AtomicU64);
impl<'a> Gauge<'a> {
    fn enter(g: &'a AtomicU64) -> Self {
        Metrics::inc(g);
        Gauge(g)
    }
}
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        Metrics::dec(self.0);
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<EdgeContext>) {
    let _ = stream.set_nodelay(true);
    let pending = Gauge::enter(&ctx.metrics.connections_pending);
    let mut buf = BytesMut::new();
    let timeout = Duration::from_millis(ctx.mqtt.connect_timeout_ms);
    let max = MAX_CONNECT_BYTES.min(ctx.max_packet_size());
    let raw = match tokio::time::timeout(timeout, codec::read_raw_frame(&mut stream, &mut buf, max))
        .await
    {
        Ok(Ok(raw)) => raw,
        Ok(Err(codec::FrameError::Closed)) => return,
        Ok(Err(e)) => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(%peer, error = %e, "bad first packet");
            return;
        }
        Err(_) => {
            Metrics::inc(&ctx.metrics.connections_refused_total_connect_timeout);
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    let is_connect = raw.raw.first().is_some_and(|b| b >> 4 == 1);
    match codec::connect_protocol_level(&raw.raw) {
        Some(4) if is_connect => {}
        Some(3 | 5) if is_connect => {
            // MQTT 3.1 or 5: say so, as 3.1.1 prescribes, and close.
            Metrics::inc(&ctx.metrics.connections_refused_total_protocol_version);
            let _ = refuse(&mut stream, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        _ => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(%peer, "first packet is not an MQTT 3.1.1 CONNECT");
            return;
        }
    }
    let mut connect = match raw.decode() {
        Ok(codec::Frame {
            packet: Packet::Connect(c),
            ..
        }) => c,
        _ => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(%peer, "malformed CONNECT");
            return;
        }
    };
    if connect.client_id.is_empty() {
        if !connect.clean_session {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            let _ = refuse(&mut stream, ConnectReturnCode::BadClientId).await;
            return;
        }
        connect.client_id = ctx.generated_client_id();
    }
    drop(pending);
    let handoff = if connect.clean_session {
        let outcome = {
            let _vehicle = Gauge::enter(&ctx.metrics.connections_vehicle);
            vehicle::serve(&mut stream, &mut buf, &connect, &ctx).await
        };
        match outcome {
            vehicle::Outcome::HandOff(handoff) => *handoff,
            vehicle::Outcome::Closed => return,
        }
    } else {
        // Only rumqttd keeps sessions: a client that asks for one is handed
        // over at once and gets rumqttd's CONNACK (with session_present),
        // since on resuming it will not SUBSCRIBE again.
        vehicle::HandOff {
            trigger: None,
            command_subscription: None,
        }
    };
    Metrics::inc(&ctx.metrics.handoffs_total);
    let _handed = Gauge::enter(&ctx.metrics.connections_handed_off);
    handoff::splice(stream, buf, connect, handoff, &ctx).await;
}

async fn refuse(stream: &mut TcpStream, code: ConnectReturnCode) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    if codec::encode(&Packet::ConnAck(ConnAck::new(code, false)), &mut out).is_ok() {
        stream.write_all(&out).await?;
    }
    stream.shutdown().await
}
