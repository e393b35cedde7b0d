//! A client handed from the edge to the embedded rumqttd.
//!
//! In: the client's socket (with any bytes already buffered), its CONNECT
//! and the packet that triggered the hand-off (none for a client with a
//! persistent session, handed over at CONNECT: it then gets rumqttd's
//! CONNACK). Out: an in-process connection into rumqttd (a pipe that
//! rumqttd's connection future serves, as it would an accepted socket,
//! polled in this same task beside the proxy) carrying the
//! client's packets — each checked against the ACL below — and rumqttd's
//! packets copied back, whole frames only, one write per side per pass.
//! Bound: per side a read buffer of [`READ_CHUNK`] plus one partial frame,
//! an output buffer of at most what one read held, and the pipe's
//! [`BROKER_PIPE_BYTES`] each way.
//!
//! # ACL (client → broker)
//!
//! - PUBLISH to `v/<vid>/pos|status` goes to ingest, acked by the edge;
//!   ingest mirrors it into the broker, so `v/#` subscribers see it once.
//! - PUBLISH to `fleet/…` (the gateway's namespace) or to a `$` topic is
//!   dropped, acked (3.1.1 has no negative PUBACK) and counted in
//!   `acl_denied_total`.
//! - A retained PUBLISH to a new topic past `broker.max_retained_topics` is
//!   forwarded without its retain flag (`retained_refused_total`): rumqttd's
//!   retained map has no limit of its own.
//! - SUBSCRIBE to a `$` filter other than `$share/<group>/<filter>` is
//!   refused in the SUBACK (rumqttd would drop the client on `$SYS`), and so
//!   is a filter that would take the live filters past `broker.max_filters`
//!   (`filters_refused_total`): rumqttd keeps a log per live filter
//!   (`edge::filters` counts them; UNSUBSCRIBE and the end of a hand-off let
//!   them go).
//!
//! # Conformance
//!
//! Every client packet is checked against the MQTT 3.1.1 rules that say the
//! server MUST close the connection (`edge::conformance`) before it is
//! decoded or forwarded; so is every acknowledgement, against the QoS 1/2
//! publishes and PUBRELs rumqttd sent this client ([`OwedAcks`]). A breach
//! closes both sides, counted by rule.
//!
//! Keep-alive 0, which rumqttd refuses, is replayed as [`PROXY_KEEP_ALIVE_S`]
//! with the edge sending PINGREQs on the client's behalf and swallowing the
//! PINGRESPs.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PubAck, PubRec, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::codec::{self, Frame, FrameError};
use super::conformance::OwedAcks;
use super::stream::ClientStream;
use super::vehicle::{fire_will, send, HandOff};
use super::write::write_all_timed;
use super::EdgeContext;
use crate::acks::{Ack, PendingAcks};
use crate::auth::{Decision, Principal};
use crate::metrics::Metrics;
use crate::topics::command_topic;

mod checks;

/// Keep-alive given to rumqttd for a client that asked for none.
pub const PROXY_KEEP_ALIVE_S: u16 = 120;
/// Bytes read per syscall at most, each way: with the frames they hold, the
/// most one pass of the proxy forwards and buffers.
pub const READ_CHUNK: usize = 16 * 1024;
/// Packet id of the SUBSCRIBE the edge replays for a vehicle's command topic.
const REPLAY_PKID: u16 = u16::MAX;
/// How long rumqttd may take to answer the replayed CONNECT.
const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes the in-process pipe to rumqttd holds each way before its writer
/// waits: what the edge reads per pass, so a pass never waits on the pipe
/// for data it could not forward anyway.
pub const BROKER_PIPE_BYTES: usize = READ_CHUNK;

pub async fn splice<S: ClientStream>(
    client: S,
    client_buf: BytesMut,
    connect: Connect,
    who: &Principal,
    handoff: HandOff,
    ctx: &EdgeContext,
) {
    let (broker, rumqttd_side) = tokio::io::duplex(BROKER_PIPE_BYTES);
    // rumqttd's side of the connection runs in this task, beside the
    // proxy, not as a task of its own: each packet's hop through the pipe
    // then wakes the task that is already running instead of scheduling
    // another (churn: a spawn and about five cross-task wake-ups fewer per
    // client). When the proxy ends it drops its end of the pipe; rumqttd
    // sees the connection close (and fires the will unless it got a
    // DISCONNECT) and its side ends too.
    let broker_side = ctx.broker.connections.serve(rumqttd_side);
    let edge_side = proxy_session(client, client_buf, connect, who, handoff, ctx, broker);
    tokio::join!(broker_side, edge_side);
}

async fn proxy_session<S: ClientStream>(
    mut client: S,
    client_buf: BytesMut,
    mut connect: Connect,
    who: &Principal,
    handoff: HandOff,
    ctx: &EdgeContext,
    broker: DuplexStream,
) {
    let will = connect.last_will.clone();
    let ping_for_client = connect.keep_alive == 0;
    if ping_for_client {
        connect.keep_alive = PROXY_KEEP_ALIVE_S;
    }
    let at_connect = handoff.trigger.is_none();
    let (broker, broker_buf) = match open_broker_session(broker, &connect, ctx).await {
        Ok((broker, broker_buf, connack)) => {
            // Handed over at CONNECT: rumqttd's CONNACK is the client's.
            if at_connect && write_all_timed(&mut client, &connack).await.is_err() {
                return;
            }
            (broker, broker_buf)
        }
        Err(e) => {
            if at_connect {
                let code = match &e {
                    HandOffError::Refused(code) => *code,
                    _ => ConnectReturnCode::ServiceUnavailable,
                };
                let connack = Packet::ConnAck(rumqttc::mqttbytes::v4::ConnAck::new(code, false));
                let _ = send(&mut client, &mut BytesMut::new(), &connack).await;
            }
            Metrics::inc(&ctx.metrics.connections_refused_total_broker_unavailable);
            tracing::warn!(client_id = %connect.client_id, error = %e, "hand-off to the embedded broker failed");
            if let Some(will) = will {
                fire_will(ctx, who, &will.topic, will.message);
            }
            let _ = client.shutdown().await;
            return;
        }
    };
    // Counted from here: rumqttd has the session now.
    let hold = ctx.filters.open(&connect.client_id, connect.clean_session);
    let mut proxy = Proxy {
        ctx,
        who,
        hold,
        broker_owned_qos2: Vec::new(),
        out: BytesMut::new(),
        edge_owned_qos2: Vec::new(),
        pingresps_owed: 0,
        swallow_suback: handoff.command_subscription.as_ref().map(|_| REPLAY_PKID),
        owed: OwedAcks::default(),
        acks: PendingAcks::new(),
        rate_tat_us: 0,
    };
    let mut broker = broker;
    if let Some(vid) = &handoff.command_subscription {
        let filter = command_topic(vid);
        if proxy.hold.admit(&filter) {
            let mut replay = Subscribe::new(filter, QoS::AtMostOnce);
            replay.pkid = REPLAY_PKID;
            if send(&mut broker, &mut proxy.out, &Packet::Subscribe(replay))
                .await
                .is_err()
            {
                return;
            }
        } else {
            Metrics::inc(&ctx.metrics.filters_refused_total);
            tracing::debug!(
                filter,
                live_filters = ctx.filters.live(),
                "command subscription not replayed: broker.max_filters live filters are held"
            );
            proxy.swallow_suback = None;
        }
    }
    proxy
        .run(
            client,
            client_buf,
            broker,
            broker_buf,
            handoff.trigger,
            ping_for_client,
        )
        .await;
}

#[derive(Debug, thiserror::Error)]
enum HandOffError {
    #[error("cannot write to the embedded broker: {0}")]
    Connect(std::io::Error),
    #[error("the embedded broker did not answer the CONNECT in time")]
    Timeout,
    #[error("the embedded broker refused the CONNECT: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the embedded broker answered the CONNECT with {0}")]
    Protocol(String),
}

/// Replays the CONNECT into rumqttd over the in-process pipe — served by
/// rumqttd's connection future beside this one (see [`splice`]), so no
/// second TCP connection, accept or syscall; returns the pipe, any bytes
/// that came after the CONNACK in the same read (a resumed session's
/// queued messages, which belong to the client), and the CONNACK itself.
async fn open_broker_session(
    mut broker: DuplexStream,
    connect: &Connect,
    ctx: &EdgeContext,
) -> Result<(DuplexStream, BytesMut, Bytes), HandOffError> {
    let attempt = async {
        let mut out = BytesMut::new();
        // rumqttd admits the edge alone: the client's own login was the
        // edge's to check, and is replaced by the edge's.
        let mut replayed = connect.clone();
        replayed.set_login(&ctx.broker.login.username, &ctx.broker.login.password);
        send(&mut broker, &mut out, &Packet::Connect(replayed))
            .await
            .map_err(HandOffError::Connect)?;
        let mut buf = BytesMut::new();
        match codec::read_raw_frame(&mut broker, &mut buf, 64)
            .await
            .and_then(|f| f.decode())
        {
            Ok(Frame {
                packet: Packet::ConnAck(ack),
                raw,
            }) if ack.code == ConnectReturnCode::Success => Ok((broker, buf, raw)),
            Ok(Frame {
                packet: Packet::ConnAck(ack),
                ..
            }) => Err(HandOffError::Refused(ack.code)),
            Ok(other) => Err(HandOffError::Protocol(format!("{:?}", other.packet))),
            Err(e) => Err(HandOffError::Protocol(e.to_string())),
        }
    };
    tokio::time::timeout(BROKER_CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(HandOffError::Timeout))
}

struct Proxy<'a> {
    ctx: &'a EdgeContext,
    /// Who the client is: every packet and every delivery is checked for it.
    who: &'a Principal,
    /// QoS 2 packet ids of deliveries the client may not read, which the
    /// edge answered to rumqttd (PUBREC) in its place: their PUBREL is
    /// answered here too (PUBCOMP) and never reaches the client.
    broker_owned_qos2: Vec<u16>,
    /// This client's filters in the live-filter budget.
    hold: super::filters::FilterHold<'a>,
    out: BytesMut,
    /// QoS 2 packet ids the edge answered itself (intercepted or denied), so
    /// their PUBREL is answered here too and never reaches rumqttd.
    edge_owned_qos2: Vec<u16>,
    /// PINGREQs the edge sent for a keep-alive-0 client.
    pingresps_owed: u32,
    /// The SUBACK of the replayed command subscription, not for the client.
    swallow_suback: Option<u16>,
    /// What the client must acknowledge, from rumqttd's frames to it.
    owed: OwedAcks,
    /// The edge's own answers to this client's device publishes, waiting
    /// for the spool.
    acks: Arc<PendingAcks>,
    /// Where this client stands against its rates (`edge::rate`).
    rate_tat_us: u64,
}

/// What to do with one client packet.
enum Verdict {
    Forward(Bytes),
    Reply(Packet),
    /// Forward, then end the session (DISCONNECT).
    ForwardAndClose(Bytes),
    Drop,
    /// Protocol violation: close both sides.
    Close,
}

impl Proxy<'_> {
    async fn run<S: ClientStream>(
        &mut self,
        mut client: S,
        mut client_buf: BytesMut,
        mut broker: DuplexStream,
        mut broker_buf: BytesMut,
        trigger: Option<Frame>,
        ping_for_client: bool,
    ) {
        let max = self.ctx.max_packet_size();
        // rumqttd may send whatever its clients publish; its own limit is ours.
        let max_from_broker = max.saturating_add(64 * 1024);
        // First due one period from now. Not `interval` and a first
        // `tick().await`: that tick completes only at the timer's next
        // turn, and added up to 1 ms to every hand-off (the SUBACK of a
        // connect-subscribe-disconnect client waited for it).
        let ping_period = Duration::from_secs(u64::from(PROXY_KEEP_ALIVE_S / 2));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_period, ping_period);

        let mut pending = trigger;
        // What one pass forwards each way, written with one syscall per side.
        let mut to_broker = BytesMut::new();
        let mut to_client = BytesMut::new();
        let acks = self.acks.clone();
        loop {
            to_broker.clear();
            to_client.clear();
            // The edge's answers that came due (their publishes are kept).
            let mut due = heapless::Vec::<Ack, 64>::new();
            while acks.take_due(self.ctx.ingest.durable_through(), &mut due) > 0 {
                for ack in due.drain(..) {
                    let packet = match ack {
                        Ack::PubAck(pkid) => Packet::PubAck(PubAck::new(pkid)),
                        Ack::PubRec(pkid) => Packet::PubRec(PubRec::new(pkid)),
                    };
                    if codec::encode(&packet, &mut to_client).is_err() {
                        return;
                    }
                }
            }
            // Client → broker: every whole frame already buffered.
            loop {
                let frame = match pending.take() {
                    Some(f) => f,
                    None => match codec::next_client_frame(&mut client_buf, max) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(FrameError::Violation(violation)) => {
                            self.ctx.metrics.violation(violation);
                            tracing::debug!(%violation, "closing handed-off client: MQTT 3.1.1 violation");
                            return;
                        }
                        Err(e) => {
                            Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                            tracing::debug!(error = %e, "closing handed-off client");
                            return;
                        }
                    },
                };
                let publish = matches!(frame.packet, Packet::Publish(_));
                self.ctx
                    .charge_rate(&mut self.rate_tat_us, frame.raw.len(), publish);
                match self.check(frame).await {
                    Verdict::Forward(raw) => to_broker.extend_from_slice(&raw),
                    Verdict::ForwardAndClose(raw) => {
                        to_broker.extend_from_slice(&raw);
                        let _ = write_all_timed(&mut client, &to_client).await;
                        let _ = write_all_timed(&mut broker, &to_broker).await;
                        return;
                    }
                    Verdict::Reply(packet) => {
                        if codec::encode(&packet, &mut to_client).is_err() {
                            return;
                        }
                    }
                    Verdict::Drop => {}
                    Verdict::Close => return,
                }
            }
            if !to_broker.is_empty() && write_all_timed(&mut broker, &to_broker).await.is_err() {
                return;
            }
            // Broker → client: copy frames, minus the ones the edge caused
            // and the deliveries the client may not read (answered to
            // rumqttd here, in to_broker).
            to_broker.clear();
            loop {
                match codec::next_raw_frame(&mut broker_buf, max_from_broker) {
                    Ok(Some(frame)) => {
                        if self.is_for_edge(&frame) {
                            continue;
                        }
                        match self.check_delivery(&frame.raw, &mut to_broker) {
                            Decision::Allow => {}
                            Decision::Deny => continue,
                            Decision::Revoked => {
                                Metrics::inc(&self.ctx.metrics.connections_closed_revoked_total);
                                return;
                            }
                        }
                        self.owed.server_sent(&frame.raw);
                        to_client.extend_from_slice(&frame.raw);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable packet from the embedded broker");
                        return;
                    }
                }
            }
            if !to_broker.is_empty() && write_all_timed(&mut broker, &to_broker).await.is_err() {
                return;
            }
            if !to_client.is_empty() && write_all_timed(&mut client, &to_client).await.is_err() {
                return;
            }
            // Over its rate: rumqttd's side is still served, the client's
            // is not read until it is back within its rate.
            let over_rate = self.ctx.over_rate(self.rate_tat_us);
            let mut ping_due = false;
            tokio::select! {
                _ = tokio::time::sleep_until(over_rate.unwrap_or_else(tokio::time::Instant::now)), if over_rate.is_some() => {}
                r = fill_chunk(&mut client, &mut client_buf), if over_rate.is_none() => if let Err(e) = r {
                    // Without a DISCONNECT first, dropping the broker side
                    // makes rumqttd fire the client's will, as it should.
                    if !matches!(e, FrameError::Closed) { tracing::debug!(error = %e, "handed-off client read failed"); }
                    return;
                },
                r = fill_chunk(&mut broker, &mut broker_buf) => if r.is_err() {
                    return;
                },
                _ = std::future::poll_fn(|cx| acks.poll_due(cx, self.ctx.ingest.durable_through())) => {}
                _ = ping.tick(), if ping_for_client => ping_due = true,
            }
            // Written here, not in the branch: the pipe is read in another.
            if ping_due {
                if send(&mut broker, &mut self.out, &Packet::PingReq)
                    .await
                    .is_err()
                {
                    return;
                }
                self.pingresps_owed += 1;
            }
        }
    }
}

/// Reads what the socket has, up to [`READ_CHUNK`] more bytes: a busy
/// dashboard gets many publishes per syscall (vehicles, which send one
/// small packet now and then, read in smaller steps in `codec::fill`).
async fn fill_chunk<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<(), FrameError> {
    buf.reserve(READ_CHUNK);
    match tokio::io::AsyncReadExt::read_buf(reader, buf).await? {
        0 => Err(FrameError::Closed),
        _ => Ok(()),
    }
}
