//! A vehicle's session at the edge.
//!
//! In: the client's packets after its CONNECT. Out: publishes to ingest,
//! commands to the device, and the decision to hand the client to rumqttd
//! when it does something a vehicle does not. Bound: while idle, no read
//! buffer (the task waits for the socket to be readable; a buffer is
//! allocated for a burst of packets and freed when the burst has been
//! handled, unless it ends mid-frame), the CONNECT kept as its raw bytes
//! (at most 8 KiB, usually a few dozen), a task future of about 410 bytes
//! (tested in `edge::tests`); while reading, one frame of at most
//! `mqtt.max_packet_size_bytes`; `mqtt.max_qos2_inflight` QoS 2 packet ids
//! awaiting PUBREL, and the command queue of its [`Registration`].
//!
//! Replies are written straight from the stack when the socket takes them
//! (it almost always does); only a write that has to wait, or a QoS 1/2
//! publish that has to wait for room in ingest, boxes its waiting state, so
//! the task's future stays small for the idle case that dominates.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::time::Instant;

use super::codec::{self, Frame, Reply};
use super::conformance::Violation;
use super::frame_pool::SMALL_FRAME_BYTES;
pub use super::hello::{fire_will, Hello};
use super::registry::Registration;
use super::stream::ClientStream;
pub use super::write::send;
use super::write::{write_all_timed, write_now, WriteRest};
use super::EdgeContext;
use crate::acks::{Ack, PendingAcks};
use crate::auth::{Decision, Principal};
use crate::clock::now_ms;
use crate::ingest::{AckRequest, IngestClosed, VehiclePublish};
use crate::metrics::Metrics;
use crate::topics::{command_topic, VehicleId, VehicleTopic};

/// Bytes reserved for each read: a position publish is ~50 bytes, so this
/// holds a few without a second read.
const READ_CHUNK: usize = 256;

/// How a vehicle session ended.
pub enum Outcome {
    Closed,
    HandOff(Box<HandOff>),
}

/// What the hand-off must replay to rumqttd.
pub struct HandOff {
    /// The packet that showed the client is not a vehicle; `None` for a
    /// client handed over at its CONNECT, which still awaits its CONNACK.
    pub trigger: Option<Frame>,
    /// The vehicle's command subscription, served at the edge until now.
    pub command_subscription: Option<VehicleId>,
}

enum End {
    /// DISCONNECT: the will is discarded.
    Graceful,
    /// Anything else: the will fires.
    Lost(&'static str),
    HandOff(Box<HandOff>),
}

/// Ingest's queue was full: the wait for room, boxed (it is rare).
type WaitForIngest<'a> = Pin<Box<dyn Future<Output = Result<(), IngestClosed>> + Send + 'a>>;

/// What handling one packet leaves to do.
enum Step<'a> {
    Continue,
    Reply(Reply),
    /// Wait for room in ingest (the acknowledgement follows when it is due).
    Wait(WaitForIngest<'a>),
    End(End),
}

/// What ended an idle wait.
enum Wake {
    /// Bytes read into the buffer (0: closed by the peer).
    Read(std::io::Result<usize>),
    Command(Bytes),
    /// Acknowledgements came due: the publishes they answer are kept.
    Acks,
    Silent,
}

/// Acknowledgements written with one syscall at most.
const ACKS_PER_WRITE: usize = 16;

/// The session, from the CONNACK to its end.
///
/// Its future is stored in every vehicle connection's task, so every await
/// in it holds only small values: a large one (a decoded frame, a publish
/// waiting for ingest) kept in scope across an await would be stored in
/// every task, idle or not. Not an `async fn`, which keeps a second copy of
/// each argument in its state: an `async move` block uses its captures in
/// place.
#[allow(clippy::manual_async_fn)]
pub fn serve<'a, S: ClientStream>(
    stream: &'a mut S,
    buf: &'a mut BytesMut,
    hello: &'a Hello,
    ctx: &'a EdgeContext,
) -> impl Future<Output = Outcome> + Send + 'a {
    async move {
        match write_now(stream, Reply::CONNACK_ACCEPTED.as_bytes()) {
            Ok(None) => {}
            Ok(Some(rest)) => {
                if rest.await.is_err() {
                    return Outcome::Closed;
                }
            }
            Err(_) => return Outcome::Closed,
        }
        let mut session = Session {
            ctx,
            registration: None,
            acks: None,
            frame_room: 0,
            rate_tat_us: 0,
        };
        // In ms since the edge started: 8 bytes in every task, not 16.
        let mut last_heard = ctx.clock_ms();
        // Set once, and moved on only when it fires early (packets came in
        // the meantime), not on every packet.
        let mut timer =
            pin!(keep_alive_deadline(ctx, last_heard, hello.keep_alive)
                .map(tokio::time::sleep_until));
        let end = loop {
            let ready = match codec::frame_ready(buf, ctx.max_packet_size()) {
                Ok(codec::Buffered::Frame) => true,
                Ok(codec::Buffered::Partial { frame_len }) => {
                    if !session.room_for(frame_len) {
                        Metrics::inc(&ctx.metrics.connections_closed_frame_pool_total);
                        tracing::debug!(frame_len, "closing vehicle connection: its frame does not fit mqtt.large_frame_pool_bytes");
                        break End::Lost("no room for its frame");
                    }
                    false
                }
                Err(e) => {
                    Metrics::inc(&ctx.metrics.connections_closed_malformed_total);
                    tracing::debug!(error = %e, "closing vehicle connection");
                    break End::Lost("malformed packet");
                }
            };
            // Over its rate: nothing more is read or handled until it is
            // back within it (boxed: rare, and kept out of the idle task).
            if let Some(resume) = ctx.over_rate(session.rate_tat_us) {
                Box::pin(tokio::time::sleep_until(resume)).await;
            }
            // Too many acknowledgements waiting for the spool: read nothing
            // more from this client until some go out.
            let held_back = session.acks_full();
            if !ready || held_back {
                if buf.is_empty() && buf.capacity() > 0 {
                    // Idle again: hold no read buffer while waiting.
                    *buf = BytesMut::new();
                }
                let session_now = &session;
                // Commands, acknowledgements, then the socket, then the
                // timer, each through its waker slot: no waiter state in
                // this future.
                // A write the socket could not take at once: one await point
                // for commands and acknowledgements alike keeps the task small.
                let pending: WriteRest<'_> = match poll_fn(|cx| {
                    if let Some(Poll::Ready(command)) = session_now
                        .registration
                        .as_ref()
                        .map(|r| r.poll_command(cx))
                    {
                        return Poll::Ready(Wake::Command(command));
                    }
                    let through = session_now.ctx.ingest.durable_through();
                    if let Some(Poll::Ready(())) =
                        session_now.acks.as_ref().map(|a| a.poll_due(cx, through))
                    {
                        return Poll::Ready(Wake::Acks);
                    }
                    if session_now.acks_full() {
                        return Poll::Pending;
                    }
                    if let Poll::Ready(read) = stream.poll_read_some(cx, buf, READ_CHUNK) {
                        return Poll::Ready(Wake::Read(read));
                    }
                    match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                        Some(Poll::Ready(())) => Poll::Ready(Wake::Silent),
                        _ => Poll::Pending,
                    }
                })
                .await
                {
                    Wake::Read(Ok(0)) => break End::Lost("closed by peer"),
                    Wake::Read(Ok(_)) => continue,
                    Wake::Read(Err(_)) => break End::Lost("socket error"),
                    Wake::Acks => match session.write_due_acks(stream) {
                        Ok(None) => continue,
                        // Rare: the socket is full; the rest is boxed.
                        Ok(Some(rest)) => rest,
                        Err(_) => break End::Lost("write failed"),
                    },
                    // Rare: the whole write is boxed.
                    Wake::Command(command) => match session.encode_command(command) {
                        Some(out) => Box::pin(write_all_timed(stream, out)),
                        None => continue,
                    },
                    Wake::Silent => {
                        let deadline = keep_alive_deadline(ctx, last_heard, hello.keep_alive);
                        match (deadline, timer.as_mut().as_pin_mut()) {
                            (Some(deadline), Some(t)) if deadline > Instant::now() => {
                                t.reset(deadline);
                                continue;
                            }
                            _ => {
                                Metrics::inc(&ctx.metrics.connections_closed_keepalive_total);
                                break End::Lost("keep-alive expired");
                            }
                        }
                    }
                };
                if pending.await.is_err() {
                    break End::Lost("write failed");
                }
                continue;
            }
            let step = match codec::next_client_frame(buf, ctx.max_packet_size()) {
                Ok(Some(frame)) => {
                    last_heard = ctx.clock_ms();
                    session.release_frame_room();
                    let publish = matches!(frame.packet, Packet::Publish(_));
                    ctx.charge_rate(&mut session.rate_tat_us, frame.raw.len(), publish);
                    session.handle(frame, hello.principal())
                }
                // `frame_ready` said a whole, well-formed header is there.
                Ok(None) => continue,
                Err(codec::FrameError::Violation(violation)) => {
                    ctx.metrics.violation(violation);
                    tracing::debug!(%violation, "closing vehicle connection: MQTT 3.1.1 violation");
                    break End::Lost("protocol violation");
                }
                Err(e) => {
                    Metrics::inc(&ctx.metrics.connections_closed_malformed_total);
                    tracing::debug!(error = %e, "closing vehicle connection");
                    break End::Lost("malformed packet");
                }
            };
            let reply = match step {
                Step::Continue => continue,
                Step::Reply(reply) => reply,
                Step::Wait(wait) => {
                    if wait.await.is_err() {
                        break End::Lost("gateway stopping");
                    }
                    continue;
                }
                Step::End(end) => break end,
            };
            let written = match write_now(stream, reply.as_bytes()) {
                Ok(None) => true,
                Ok(Some(rest)) => rest.await.is_ok(),
                Err(_) => false,
            };
            if !written {
                break End::Lost("write failed");
            }
        };
        match end {
            End::Graceful => Outcome::Closed,
            End::Lost(why) => {
                if let Some(connect) = hello.connect() {
                    tracing::debug!(client_id = %connect.client_id, why, "vehicle connection lost");
                    if let Some(will) = connect.last_will {
                        fire_will(ctx, hello.principal(), &will.topic, will.message);
                    }
                }
                Outcome::Closed
            }
            End::HandOff(handoff) => Outcome::HandOff(handoff),
        }
    }
}

struct Session<'a> {
    ctx: &'a EdgeContext,
    registration: Option<Registration>,
    /// Acknowledgements waiting for the spool; made at the first QoS 1/2
    /// publish, so a QoS 0 vehicle holds none.
    acks: Option<Arc<PendingAcks>>,
    /// Bytes taken from the edge's frame pool for the large frame being
    /// read (0 for a small one); given back when it is whole, or at the end.
    frame_room: u32,
    /// Where this client stands against its rates (`edge::rate`).
    rate_tat_us: u64,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.release_frame_room();
    }
}

impl<'a> Session<'a> {
    /// Handles one packet, without waiting for anything.
    fn handle(&mut self, frame: Frame, who: &Principal) -> Step<'a> {
        match &frame.packet {
            Packet::Publish(publish) => match VehicleTopic::parse(&publish.topic) {
                Some(VehicleTopic::Uplink(vehicle, kind)) => {
                    let item = match self.ctx.auth.may_publish(who, &publish.topic) {
                        Decision::Allow => Some(VehiclePublish {
                            vehicle,
                            kind,
                            payload: publish.payload.clone(),
                            received_ms: now_ms(),
                        }),
                        // 3.1.1 has no negative PUBACK: acknowledged, dropped
                        // and counted, as Mosquitto does.
                        Decision::Deny => {
                            Metrics::inc(&self.ctx.metrics.acl_denied_total);
                            tracing::debug!(client_id = %who.client_id, topic = %publish.topic, "publish denied by the ACL");
                            None
                        }
                        Decision::Revoked => return self.revoked(),
                    };
                    self.accept_publish(publish, item)
                }
                _ => Step::End(self.hand_off(frame)),
            },
            Packet::PubRel(rel) => {
                if let Some(acks) = &self.acks {
                    acks.qos2_release(rel.pkid);
                }
                Step::Reply(Reply::pubcomp(rel.pkid))
            }
            Packet::Subscribe(subscribe) => {
                let own = match subscribe.filters.as_slice() {
                    [only] => match VehicleTopic::parse(&only.path) {
                        Some(VehicleTopic::Command(vid)) => Some(vid),
                        _ => None,
                    },
                    _ => None,
                };
                if let (Some(_), [only]) = (&own, subscribe.filters.as_slice()) {
                    match self.ctx.auth.may_subscribe(who, &only.path) {
                        Decision::Allow => {}
                        Decision::Deny => {
                            Metrics::inc(&self.ctx.metrics.acl_denied_total);
                            tracing::debug!(client_id = %who.client_id, filter = %only.path, "subscription denied by the ACL");
                            return Step::Reply(Reply::suback_failure(subscribe.pkid));
                        }
                        Decision::Revoked => return self.revoked(),
                    }
                }
                match (own, &self.registration) {
                    (Some(vid), Some(r)) if r.vehicle() == &vid => {}
                    (Some(vid), None) => self.registration = Some(self.ctx.registry.register(vid)),
                    _ => return Step::End(self.hand_off(frame)),
                }
                // Commands go out at QoS 0, so that is what is granted.
                Step::Reply(Reply::suback_qos0(subscribe.pkid))
            }
            Packet::Unsubscribe(unsubscribe) => {
                let own = self
                    .registration
                    .as_ref()
                    .map(|r| command_topic(r.vehicle()));
                if unsubscribe.topics.iter().any(|t| Some(t) == own.as_ref()) {
                    self.registration = None;
                }
                Step::Reply(Reply::unsuback(unsubscribe.pkid))
            }
            Packet::PingReq => Step::Reply(Reply::PINGRESP),
            Packet::Disconnect => Step::End(End::Graceful),
            // Commands go out at QoS 0: a vehicle owes no acknowledgement.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                self.ctx.metrics.violation(Violation::UnsolicitedAck);
                Step::End(End::Lost("protocol violation"))
            }
            p => {
                debug_assert!(codec::is_client_violation(p));
                Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                Step::End(End::Lost("protocol violation"))
            }
        }
    }

    /// The client's user left the password file (a reload): the session ends.
    fn revoked(&self) -> Step<'a> {
        Metrics::inc(&self.ctx.metrics.connections_closed_revoked_total);
        Step::End(End::Lost("credentials revoked"))
    }

    /// Takes a device publish into ingest (`None`: denied, only answered).
    /// A QoS 1/2 publish is answered (PUBACK, PUBREC) once it is kept: when
    /// the spool has it, in order with the publishes before it.
    fn accept_publish(&mut self, publish: &Publish, mut item: Option<VehiclePublish>) -> Step<'a> {
        let ack = match publish.qos {
            QoS::AtMostOnce => {
                if let Some(item) = item {
                    self.ctx.ingest.offer(item);
                }
                return Step::Continue;
            }
            QoS::AtLeastOnce => Ack::PubAck(publish.pkid),
            QoS::ExactlyOnce => {
                // Deliver on PUBLISH, remember the id until PUBREL so a
                // redelivery (DUP) is not ingested twice: it is answered
                // again, behind the original's answer.
                let acks = self.acks.get_or_insert_with(PendingAcks::new);
                match acks.qos2_receive(publish.pkid, self.ctx.mqtt.max_qos2_inflight.get()) {
                    Ok(true) => {}
                    Ok(false) => item = None,
                    Err(_) => {
                        Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                        return Step::End(End::Lost("too many QoS 2 publishes awaiting PUBREL"));
                    }
                }
                Ack::PubRec(publish.pkid)
            }
        };
        let to = self.acks.get_or_insert_with(PendingAcks::new).clone();
        match self.ctx.ingest.try_deliver(item, AckRequest { to, ack }) {
            Ok(None) => Step::Continue,
            Ok(Some(waiting)) => {
                let ingest = &self.ctx.ingest;
                Step::Wait(Box::pin(ingest.wait_deliver(waiting)))
            }
            Err(_) => Step::End(End::Lost("gateway stopping")),
        }
    }

    /// Whether a partial frame of `frame_len` bytes may be buffered: a small
    /// one always; a large one once it has room in the edge's frame pool.
    fn room_for(&mut self, frame_len: usize) -> bool {
        if frame_len <= SMALL_FRAME_BYTES || self.frame_room > 0 {
            return true;
        }
        let Ok(bytes) = u32::try_from(frame_len) else {
            return false;
        };
        if !self.ctx.frames.take(frame_len) {
            return false;
        }
        self.frame_room = bytes;
        true
    }

    fn release_frame_room(&mut self) {
        if self.frame_room > 0 {
            self.ctx.frames.give(self.frame_room as usize);
            self.frame_room = 0;
        }
    }

    fn acks_full(&self) -> bool {
        self.acks
            .as_ref()
            .is_some_and(|a| a.len() >= self.ctx.mqtt.max_pending_acks.get())
    }

    /// Writes every acknowledgement that is due, a few per syscall, from
    /// the stack. Not async, so the connection's task holds none of it: if
    /// the socket cannot take them all, the rest is returned as a boxed
    /// write that owns its bytes (rare).
    fn write_due_acks<'s, S: ClientStream>(
        &self,
        stream: &'s mut S,
    ) -> std::io::Result<Option<WriteRest<'s>>> {
        let Some(acks) = &self.acks else {
            return Ok(None);
        };
        loop {
            let mut due = heapless::Vec::<Ack, ACKS_PER_WRITE>::new();
            if acks.take_due(self.ctx.ingest.durable_through(), &mut due) == 0 {
                return Ok(None);
            }
            let mut bytes = [0u8; ACKS_PER_WRITE * 4];
            let mut len = 0;
            for ack in &due {
                let reply = match *ack {
                    Ack::PubAck(pkid) => Reply::puback(pkid),
                    Ack::PubRec(pkid) => Reply::pubrec(pkid),
                };
                let encoded = reply.as_bytes();
                bytes[len..len + encoded.len()].copy_from_slice(encoded);
                len += encoded.len();
            }
            let written = stream.try_write_now(&bytes[..len])?;
            if written < len || stream.needs_flush() {
                let rest = bytes[written..len].to_vec();
                return Ok(Some(Box::pin(write_all_timed(stream, rest))));
            }
        }
    }

    fn hand_off(&mut self, trigger: Frame) -> End {
        End::HandOff(Box::new(HandOff {
            trigger: Some(trigger),
            command_subscription: self.registration.take().map(|r| r.vehicle().clone()),
        }))
    }

    /// A command for the device as a QoS 0 PUBLISH on its command topic.
    fn encode_command(&self, payload: Bytes) -> Option<BytesMut> {
        let registration = self.registration.as_ref()?;
        let topic = command_topic(registration.vehicle());
        let publish = Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, payload));
        let mut out = BytesMut::new();
        match codec::encode(&publish, &mut out) {
            Ok(()) => Some(out),
            Err(e) => {
                tracing::debug!(error = ?e, "command not encodable");
                None
            }
        }
    }
}

/// MQTT 3.1.1 §3.1.2.10: silent for 1.5 × keep-alive means gone; 0 means never.
fn keep_alive_deadline(
    ctx: &EdgeContext,
    last_heard_ms: u64,
    keep_alive_s: u16,
) -> Option<Instant> {
    let allowed_ms = u64::from(keep_alive_s) * 1500;
    (keep_alive_s > 0)
        .then(|| {
            ctx.clock_start().checked_add(Duration::from_millis(
                last_heard_ms.saturating_add(allowed_ms),
            ))
        })
        .flatten()
}
