//! The edge: fleetgate's one MQTT 3.1.1 port, for vehicles and everyone else.
//!
//! In: TCP connections on `mqtt.listen`, and TLS connections on
//! `tls.mqtt_listen` once their handshake is done (`crate::tls`; both served
//! alike through [`stream::ClientStream`]). Out: vehicle publishes to
//! ingest; every other client
//! spliced to the embedded rumqttd. Bound: at most `mqtt.max_connections`
//! connections (one more is closed at accept, counted). An idle vehicle
//! connection holds its task (512 bytes: a future of about 410 bytes,
//! tested below, plus tokio's header), tokio's registration of its socket
//! (256 bytes), its `JoinSet` entry and its CONNECT's bytes — ~1.1 KiB —
//! and no read buffer; while packets are being read, a buffer that grows
//! only to the largest frame allowed (`mqtt.max_packet_size_bytes`); a
//! command queue of at most `mqtt.vehicle_command_queue`.
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
//! client to rumqttd**: the edge opens an in-process connection into
//! rumqttd, replays the client's CONNECT (and its `v/<vid>/cmd`
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
//!
//! # Path
//!
//! First stage: nothing before it but the network. After it: ingest (every
//! vehicle publish) and the broker (handed-off clients, and the mirrored
//! command subscription). The way back ends here: the broker's `v/<vid>/cmd`
//! forwards reach a vehicle's connection through [`registry`].

mod codec;
pub mod conformance;
pub mod filters;
pub mod frame_pool;
pub mod handoff;
mod hello;
pub mod rate;
pub mod registry;
pub mod retained;
pub mod sources;
pub mod stream;
mod vehicle;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::auth::{Auth, Credentials};
use crate::broker::{BrokerPublisher, InternalBroker};
use crate::config::{BrokerConfig, MqttConfig};
use crate::ingest::IngestSender;
use crate::metrics::Metrics;
use filters::FilterBudget;
use registry::VehicleRegistry;
use stream::{ClientStream, TlsClient};

/// Largest CONNECT the edge reads before it knows who is talking.
const MAX_CONNECT_BYTES: usize = 8 * 1024;

/// What every connection task shares.
pub struct EdgeContext {
    pub mqtt: MqttConfig,
    pub metrics: Arc<Metrics>,
    pub ingest: IngestSender,
    pub publisher: BrokerPublisher,
    pub registry: Arc<VehicleRegistry>,
    /// Who may connect, and what each client may do.
    pub auth: Arc<Auth>,
    /// rumqttd, reached in-process; the edge logs in with its own login in
    /// place of the client's (which the edge has checked).
    pub broker: InternalBroker,
    /// Filters held in rumqttd now, at most `broker.max_filters`.
    pub filters: FilterBudget,
    /// Distinct retained topics admitted into rumqttd.
    pub retained: retained::RetainedTopics,
    /// Room for the large partial frames of vehicle connections.
    pub frames: frame_pool::FramePool,
    next_client_number: AtomicU64,
    /// Connections open now, at most `mqtt.max_connections`.
    open: AtomicUsize,
    /// Connections over the limit being answered now ([`Refusal`]).
    refusing: AtomicUsize,
    /// Connections per source address, and bans.
    sources: sources::SourceTable,
    /// Each client's message and byte rates.
    pub rate: rate::ClientRate,
    /// When the edge started: connections keep times as ms since then.
    started: tokio::time::Instant,
}

/// The stages and services the edge hands work to.
pub struct EdgeLinks {
    pub metrics: Arc<Metrics>,
    pub ingest: IngestSender,
    pub publisher: BrokerPublisher,
    pub registry: Arc<VehicleRegistry>,
    pub internal: InternalBroker,
    pub auth: Arc<Auth>,
}

impl EdgeContext {
    pub fn new(mqtt: &MqttConfig, broker: &BrokerConfig, links: EdgeLinks) -> Self {
        let EdgeLinks {
            metrics,
            ingest,
            publisher,
            registry,
            internal,
            auth,
        } = links;
        let keep_retained_sources = auth.check_retain_source();
        EdgeContext {
            mqtt: mqtt.clone(),
            metrics: metrics.clone(),
            ingest,
            publisher,
            registry,
            auth,
            broker: internal,
            filters: FilterBudget::new(
                broker.max_filters.get(),
                broker.max_persistent_sessions.get(),
                metrics,
            ),
            retained: retained::RetainedTopics::new(
                broker.max_retained_topics.get(),
                keep_retained_sources,
            ),
            frames: frame_pool::FramePool::new(mqtt.large_frame_pool_bytes.get()),
            next_client_number: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            sources: sources::SourceTable::new(mqtt),
            rate: rate::ClientRate::new(mqtt),
            started: tokio::time::Instant::now(),
        }
    }

    fn max_packet_size(&self) -> usize {
        self.mqtt.max_packet_size_bytes.get()
    }

    /// Milliseconds since the edge started (see [`clock_start`](Self::clock_start)).
    fn clock_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Microseconds since the edge started, for the rate limits.
    fn clock_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Charges a client's packet to its rate (`edge::rate`), counting the
    /// packet that puts it over.
    fn charge_rate(&self, tat_us: &mut u64, raw_len: usize, publish: bool) {
        let before = *tat_us;
        let now = self.clock_us();
        if self.rate.charge(tat_us, now, raw_len, publish).is_some()
            && self.rate.resume_at(before, now).is_none()
        {
            Metrics::inc(&self.metrics.clients_throttled_total);
        }
    }

    /// When a client over its rate may be read again; `None`: now.
    fn over_rate(&self, tat_us: u64) -> Option<tokio::time::Instant> {
        if !self.rate.is_limited() {
            return None;
        }
        let resume_us = self.rate.resume_at(tat_us, self.clock_us())?;
        self.started.checked_add(Duration::from_micros(resume_us))
    }

    fn clock_start(&self) -> tokio::time::Instant {
        self.started
    }

    /// A client id for a client that sent an empty one (rumqttd needs one).
    fn generated_client_id(&self) -> String {
        let n = self.next_client_number.fetch_add(1, Ordering::Relaxed);
        format!("fleetgate-anon-{n}")
    }
}

/// Accepts connections until `shutdown` resolves; then closes them all.
/// With `tls`, each connection's TLS handshake comes first (the MQTT TLS
/// port); the same edge serves both ports.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<EdgeContext>,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Some((stream, peer)) = crate::accept::or_back_off(accepted, "mqtt").await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match ctx.sources.admit(peer.ip(), ctx.clock_ms()) {
                    sources::Admission::Admit => {}
                    sources::Admission::Untracked => Metrics::inc(&ctx.metrics.sources_untracked_total),
                    admission => {
                        if admission == sources::Admission::BannedNow {
                            Metrics::inc(&ctx.metrics.sources_banned_total);
                            tracing::warn!(%peer, limit = ctx.mqtt.max_connects_per_source_per_minute, ban_s = ctx.mqtt.source_ban_s, "source banned: too many connections in a minute");
                        }
                        Metrics::inc(&ctx.metrics.connections_refused_total_source_banned);
                        drop(stream);
                        continue;
                    }
                }
                let Some(slot) = Slot::take(&ctx) else {
                    Metrics::inc(&ctx.metrics.connections_refused_total_limit);
                    // Over TLS, CONNACK 3 would cost a handshake: closed.
                    if let (None, Some(refusal)) = (&tls, Refusal::take(&ctx)) {
                        connections.spawn(refuse_over_limit(stream, refusal));
                    }
                    continue;
                };
                Metrics::inc(&ctx.metrics.connections_accepted_total);
                match &tls {
                    None => {
                        connections.spawn(connection(stream, slot));
                    }
                    Some(tls) => {
                        connections.spawn(tls_connection(stream, slot, tls.clone()));
                    }
                }
            }
        }
    }
    connections.shutdown().await;
}

/// A connection's place under `mqtt.max_connections`, and its handle on
/// the context: one pointer in the connection's task, where a semaphore
/// permit and an `Arc` would be three.
struct Slot(Arc<EdgeContext>);

impl Slot {
    fn take(ctx: &Arc<EdgeContext>) -> Option<Slot> {
        let max = ctx.mqtt.max_connections.get();
        ctx.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(ctx.clone()))
    }
}

impl std::ops::Deref for Slot {
    type Target = EdgeContext;
    fn deref(&self) -> &EdgeContext {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections over `mqtt.max_connections` answered at once: each waits
/// for its CONNECT (at most [`REFUSAL_WAIT`]) to be told CONNACK 3. Past
/// these the socket is closed unanswered (still counted as refused): a
/// flood must not buy itself tasks.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// A place among the [`MAX_REFUSALS_IN_FLIGHT`].
struct Refusal(Arc<EdgeContext>);

impl Refusal {
    fn take(ctx: &Arc<EdgeContext>) -> Option<Refusal> {
        ctx.refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_REFUSALS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Refusal(ctx.clone()))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The global connection limit answered as MQTT 3.1.1 says, not by a
/// silent close: read the CONNECT (so closing does not reset the
/// connection before the client has read the answer), then CONNACK 3
/// "server unavailable".
async fn refuse_over_limit(mut stream: TcpStream, _place: Refusal) {
    let mut buf = BytesMut::new();
    let read = codec::read_raw_frame(&mut stream, &mut buf, MAX_CONNECT_BYTES);
    if let Ok(Ok(raw)) = tokio::time::timeout(REFUSAL_WAIT, read).await {
        if raw.raw.first().is_some_and(|b| b >> 4 == 1) {
            let _ = refuse(&mut stream, ConnectReturnCode::ServiceUnavailable).await;
        }
    }
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

/// One connection's task; `ctx` holds its place under `mqtt.max_connections`.
///
/// Its future is allocated once per connection and is as large as its
/// largest state, so what is large, rare or short-lived is boxed (reading
/// the CONNECT, the hand-off) and only the idle vehicle session stays
/// inline (size tested below). Not an `async fn`, which would keep a second
/// copy of each argument in its state.
#[allow(clippy::manual_async_fn)]
fn connection<S: ClientStream>(mut stream: S, ctx: Slot) -> impl Future<Output = ()> + Send {
    async move {
        let mut buf = BytesMut::new();
        let Some(hello) = Box::pin(read_connect(&mut stream, &mut buf, &ctx)).await else {
            return;
        };
        let handoff = if hello.clean_session {
            let _vehicle = Gauge::enter(&ctx.metrics.connections_vehicle);
            match vehicle::serve(&mut stream, &mut buf, &hello, &ctx).await {
                vehicle::Outcome::HandOff(handoff) => handoff,
                vehicle::Outcome::Closed => return,
            }
        } else {
            // Only rumqttd keeps sessions: a client that asks for one is handed
            // over at once and gets rumqttd's CONNACK (with session_present),
            // since on resuming it will not SUBSCRIBE again.
            Box::new(vehicle::HandOff {
                trigger: None,
                command_subscription: None,
            })
        };
        if let Some(splice) = hand_off(stream, buf, &hello, handoff, &ctx) {
            splice.await;
        };
    }
}

/// A connection on the MQTT TLS port: its handshake (boxed: rustls' state
/// is large and short-lived), then the same session as on the plain port.
async fn tls_connection(stream: TcpStream, ctx: Slot, tls: Arc<crate::tls::Tls>) {
    let listener = crate::tls::Listener::Mqtt;
    let Some(accepted) = Box::pin(tls.accept(stream, listener)).await else {
        return;
    };
    connection(TlsClient::new(accepted, tls.identity_is_username()), ctx).await;
}

/// The hand-off to rumqttd, boxed: its state (two sockets, two buffers, the
/// decoded CONNECT, and rumqttd's own connection future, polled beside the
/// proxy) is for the few clients that are not vehicles.
fn hand_off<'a, S: ClientStream>(
    stream: S,
    buf: BytesMut,
    hello: &'a vehicle::Hello,
    handoff: Box<vehicle::HandOff>,
    ctx: &'a EdgeContext,
) -> Option<Pin<Box<impl Future<Output = ()> + Send + 'a>>> {
    let connect = hello.connect()?;
    Metrics::inc(&ctx.metrics.handoffs_total);
    Some(Box::pin(async move {
        let _handed = Gauge::enter(&ctx.metrics.connections_handed_off);
        handoff::splice(stream, buf, connect, hello.principal(), *handoff, ctx).await;
    }))
}

/// Reads and checks the CONNECT under `mqtt.connect_timeout_ms`; `None`
/// when the connection is refused or gone (counted, answered where 3.1.1
/// says so). Bytes after the CONNECT stay in `buf`.
async fn read_connect<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    ctx: &EdgeContext,
) -> Option<vehicle::Hello> {
    let _pending = Gauge::enter(&ctx.metrics.connections_pending);
    let timeout = Duration::from_millis(ctx.mqtt.connect_timeout_ms);
    let max = MAX_CONNECT_BYTES.min(ctx.max_packet_size());
    let raw = match tokio::time::timeout(timeout, codec::read_raw_frame(stream, buf, max)).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(codec::FrameError::Closed)) => return None,
        Ok(Err(e)) => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(peer = ?stream.peer_addr(), error = %e, "bad first packet");
            return None;
        }
        Err(_) => {
            Metrics::inc(&ctx.metrics.connections_refused_total_connect_timeout);
            tracing::debug!(peer = ?stream.peer_addr(), "no CONNECT in time");
            return None;
        }
    };
    let is_connect = raw.raw.first().is_some_and(|b| b >> 4 == 1);
    match codec::connect_protocol_level(&raw.raw) {
        Some(4) if is_connect => {}
        Some(3 | 5) if is_connect => {
            // MQTT 3.1 or 5: say so, as 3.1.1 prescribes, and close.
            Metrics::inc(&ctx.metrics.connections_refused_total_protocol_version);
            let _ = refuse(stream, ConnectReturnCode::RefusedProtocolVersion).await;
            return None;
        }
        _ => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(peer = ?stream.peer_addr(), "first packet is not an MQTT 3.1.1 CONNECT");
            return None;
        }
    }
    if let Err(violation) = conformance::check_connect(&raw.raw) {
        ctx.metrics.violation(violation);
        Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
        tracing::debug!(peer = ?stream.peer_addr(), %violation, "CONNECT breaks MQTT 3.1.1; closing");
        return None;
    }
    let (connect, raw) = match raw.decode() {
        Ok(codec::Frame {
            packet: Packet::Connect(c),
            raw,
        }) => (c, raw),
        _ => {
            Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
            tracing::debug!(peer = ?stream.peer_addr(), "malformed CONNECT");
            return None;
        }
    };
    if connect.client_id.is_empty() && !connect.clean_session {
        Metrics::inc(&ctx.metrics.connections_refused_total_bad_connect);
        let _ = refuse(stream, ConnectReturnCode::BadClientId).await;
        return None;
    }
    // Who it is, checked before anything is answered; an empty client id
    // (clean session only) gets one of the gateway's, which the ACL's %c
    // then sees.
    let client_id = match connect.client_id.as_str() {
        "" => ctx.generated_client_id(),
        id => id.to_owned(),
    };
    let credentials = Credentials {
        client_id: &client_id,
        username: connect.login.as_ref().map(|l| l.username.as_str()),
        password: connect.login.as_ref().map(|l| l.password.as_bytes()),
        will_topic: connect.last_will.as_ref().map(|w| w.topic.as_str()),
        certificate: stream.certificate_identity(),
    };
    let principal = match ctx.auth.authenticate(&credentials).await {
        Ok(principal) => principal,
        Err(code) => {
            tracing::debug!(peer = ?stream.peer_addr(), client_id, ?code, "CONNECT refused");
            let _ = refuse(stream, code).await;
            return None;
        }
    };
    Some(vehicle::Hello::new(&raw, &connect, principal))
}

async fn refuse<S: ClientStream>(stream: &mut S, code: ConnectReturnCode) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    if codec::encode(&Packet::ConnAck(ConnAck::new(code, false)), &mut out).is_ok() {
        write::write_all_timed(stream, &out).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one idle vehicle connection costs is mostly its task: its
    /// future plus tokio's 104-byte header, rounded up to 128 bytes. At most
    /// 408 bytes of future keep the task at 512; this (debug) build's
    /// `TcpStream` is 8 bytes larger than a release build's. Rare, large
    /// states (the CONNECT, the hand-off) must stay boxed.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let metrics = Arc::new(Metrics::default());
        let (ingest, _rx) = IngestSender::detached(8, metrics.clone());
        let (publisher, _broker) = BrokerPublisher::detached(8, metrics.clone());
        let registry = VehicleRegistry::new(8, metrics.clone());
        let ctx = Arc::new(EdgeContext::new(
            &MqttConfig::default(),
            &BrokerConfig::default(),
            EdgeLinks {
                auth: Arc::new(Auth::open(metrics.clone())),
                metrics,
                ingest,
                publisher,
                registry,
                internal: InternalBroker::for_tests(),
            },
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let slot = Slot::take(&ctx).unwrap();
        let task = connection(stream, slot);
        let size = std::mem::size_of_val(&task);
        println!("connection task future: {size} bytes");
        let max = if cfg!(debug_assertions) { 416 } else { 408 };
        assert!(size <= max, "connection task future is {size} bytes");
    }
}
