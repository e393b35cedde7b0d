//! A vehicle's session at the edge.
//!
//! In: the client's packets after its CONNECT. Out: publishes to ingest,
//! commands to the device, and the decision to hand the client to rumqttd
//! when it does something a vehicle does not. Bound: the read buffer (one
//! frame of at most `mqtt.max_packet_size_bytes`), `mqtt.max_qos2_inflight`
//! QoS 2 packet ids awaiting PUBREL, and the command queue of its
//! [`Registration`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::codec::{self, Frame, FrameError};
use super::registry::Registration;
use super::EdgeContext;
use crate::ingest::{now_ms, VehiclePublish};
use crate::metrics::Metrics;
use crate::topics::{VehicleId, VehicleTopic};

/// A write to a client that takes longer than this closes the connection:
/// a client that stops reading must not hold its task forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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

pub async fn serve(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    connect: &Connect,
    ctx: &EdgeContext,
) -> Outcome {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false));
    if send(stream, &mut out, &connack).await.is_err() {
        return Outcome::Closed;
    }
    let mut session = Session {
        ctx,
        registration: None,
        qos2_awaiting_release: Vec::new(),
        out,
    };
    let end = session.run(stream, buf, connect.keep_alive).await;
    match end {
        End::Graceful => Outcome::Closed,
        End::Lost(why) => {
            tracing::debug!(client_id = %connect.client_id, why, "vehicle connection lost");
            if let Some(will) = &connect.last_will {
                fire_will(ctx, &will.topic, will.message.clone());
            }
            Outcome::Closed
        }
        End::HandOff(handoff) => Outcome::HandOff(handoff),
    }
}

struct Session<'a> {
    ctx: &'a EdgeContext,
    registration: Option<Registration>,
    qos2_awaiting_release: Vec<u16>,
    out: BytesMut,
}

impl Session<'_> {
    async fn run(&mut self, stream: &mut TcpStream, buf: &mut BytesMut, keep_alive_s: u16) -> End {
        // MQTT 3.1.1 §3.1.2.10: silent for 1.5 × keep-alive means gone; 0 means never.
        let allowed_silence =
            (keep_alive_s > 0).then(|| Duration::from_millis(u64::from(keep_alive_s) * 1500));
        let mut last_heard = Instant::now();
        let max = self.ctx.max_packet_size();
        loop {
            let frame = match codec::next_frame(buf, max) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    let (mut reader, mut writer) = stream.split();
                    tokio::select! {
                        read = codec::fill(&mut reader, buf) => match read {
                            Ok(()) => continue,
                            Err(FrameError::Closed) => return End::Lost("closed by peer"),
                            Err(_) => return End::Lost("socket error"),
                        },
                        Some(command) = next_command(&mut self.registration) => {
                            if self.deliver_command(&mut writer, command).await.is_err() {
                                return End::Lost("write failed");
                            }
                            continue;
                        }
                        _ = silence(allowed_silence, last_heard) => {
                            Metrics::inc(&self.ctx.metrics.connections_closed_keepalive_total);
                            return End::Lost("keep-alive expired");
                        }
                    }
                }
                Err(e) => {
                    Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                    tracing::debug!(error = %e, "closing vehicle connection");
                    return End::Lost("malformed packet");
                }
            };
            last_heard = Instant::now();
            match self.handle(stream, frame).await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(_) => return End::Lost("write failed"),
            }
        }
    }

    /// Handles one packet; `Some` ends the session.
    async fn handle(
        &mut self,
        stream: &mut TcpStream,
        frame: Frame,
    ) -> std::io::Result<Option<End>> {
        let reply = match &frame.packet {
            Packet::Publish(publish) => match VehicleTopic::parse(&publish.topic) {
                Some(VehicleTopic::Uplink(vehicle, kind)) => {
                    let item = VehiclePublish {
                        vehicle,
                        kind,
                        payload: publish.payload.clone(),
                        received_ms: now_ms(),
                    };
                    match self.accept_publish(publish, item).await {
                        Ok(reply) => reply,
                        Err(end) => return Ok(Some(end)),
                    }
                }
                _ => return Ok(Some(self.hand_off(frame))),
            },
            Packet::PubRel(rel) => {
                self.qos2_awaiting_release.retain(|&id| id != rel.pkid);
                Some(Packet::PubComp(PubComp::new(rel.pkid)))
            }
            Packet::Subscribe(subscribe) => {
                let own = match subscribe.filters.as_slice() {
                    [only] => match VehicleTopic::parse(&only.path) {
                        Some(VehicleTopic::Command(vid)) => Some(vid),
                        _ => None,
                    },
                    _ => None,
                };
                match (own, &self.registration) {
                    (Some(vid), Some(r)) if r.vehicle() == &vid => {}
                    (Some(vid), None) => self.registration = Some(self.ctx.registry.register(vid)),
                    _ => return Ok(Some(self.hand_off(frame))),
                }
                // Commands go out at QoS 0, so that is what is granted.
                let granted = SubscribeReasonCode::Success(QoS::AtMostOnce);
                Some(Packet::SubAck(SubAck::new(subscribe.pkid, vec![granted])))
            }
            Packet::Unsubscribe(unsubscribe) => {
                let own = self
                    .registration
                    .as_ref()
                    .map(|r| format!("v/{}/cmd", r.vehicle()));
                if unsubscribe.topics.iter().any(|t| Some(t) == own.as_ref()) {
                    self.registration = None;
                }
                Some(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => return Ok(Some(End::Graceful)),
            // Acks for QoS 1/2 downlink: commands go out at QoS 0, nothing to do.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => None,
            p => {
                debug_assert!(codec::is_client_violation(p));
                Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                return Ok(Some(End::Lost("protocol violation")));
            }
        };
        if let Some(reply) = reply {
            send(stream, &mut self.out, &reply).await?;
        }
        Ok(None)
    }

    /// Takes a device publish into ingest and says what to answer.
    async fn accept_publish(
        &mut self,
        publish: &Publish,
        item: VehiclePublish,
    ) -> Result<Option<Packet>, End> {
        match publish.qos {
            QoS::AtMostOnce => {
                self.ctx.ingest.offer(item);
                Ok(None)
            }
            QoS::AtLeastOnce => {
                self.ctx
                    .ingest
                    .deliver(item)
                    .await
                    .map_err(|_| End::Lost("gateway stopping"))?;
                Ok(Some(Packet::PubAck(PubAck::new(publish.pkid))))
            }
            QoS::ExactlyOnce => {
                // Deliver on PUBLISH, remember the id until PUBREL so a
                // redelivery (DUP) is not ingested twice.
                if !self.qos2_awaiting_release.contains(&publish.pkid) {
                    if self.qos2_awaiting_release.len() >= self.ctx.mqtt.max_qos2_inflight.get() {
                        Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                        return Err(End::Lost("too many QoS 2 publishes awaiting PUBREL"));
                    }
                    self.ctx
                        .ingest
                        .deliver(item)
                        .await
                        .map_err(|_| End::Lost("gateway stopping"))?;
                    self.qos2_awaiting_release.push(publish.pkid);
                }
                Ok(Some(Packet::PubRec(PubRec::new(publish.pkid))))
            }
        }
    }

    fn hand_off(&mut self, trigger: Frame) -> End {
        End::HandOff(Box::new(HandOff {
            trigger: Some(trigger),
            command_subscription: self.registration.take().map(|r| r.vehicle().clone()),
        }))
    }

    async fn deliver_command<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        payload: Bytes,
    ) -> std::io::Result<()> {
        let Some(registration) = &self.registration else {
            return Ok(());
        };
        let topic = format!("v/{}/cmd", registration.vehicle());
        let publish = Packet::Publish(Publish::from_bytes(topic, QoS::AtMostOnce, payload));
        send(writer, &mut self.out, &publish).await
    }
}

async fn next_command(registration: &mut Option<Registration>) -> Option<Bytes> {
    match registration {
        Some(r) => r.commands.recv().await,
        None => std::future::pending().await,
    }
}

async fn silence(allowed: Option<Duration>, last_heard: Instant) {
    match allowed {
        Some(d) => tokio::time::sleep_until(last_heard + d).await,
        None => std::future::pending().await,
    }
}

/// Encodes and writes one packet, under [`WRITE_TIMEOUT`].
pub async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    packet: &Packet,
) -> std::io::Result<()> {
    out.clear();
    codec::encode(packet, out).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(out)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Publishes a vanished vehicle's last will: a device topic goes through
/// ingest like any publish; any other topic straight into the broker.
pub fn fire_will(ctx: &EdgeContext, topic: &str, payload: Bytes) {
    Metrics::inc(&ctx.metrics.wills_published_total);
    match VehicleTopic::parse(topic) {
        Some(VehicleTopic::Uplink(vehicle, kind)) => ctx.ingest.offer(VehiclePublish {
            vehicle,
            kind,
            payload,
            received_ms: now_ms(),
        }),
        _ if !crate::topics::is_gateway_namespace(topic) && !topic.starts_with('$') => {
            ctx.publisher.publish(topic.to_owned(), payload);
        }
        _ => Metrics::inc(&ctx.metrics.acl_denied_total),
    }
}
