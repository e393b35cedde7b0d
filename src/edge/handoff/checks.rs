//! The hand-off's checks: what a handed-off client may send (each packet
//! against the ACL and the edge's rules, see the parent's `//!`) and what
//! it may be sent (each delivery against the ACL, per message).
//!
//! In: one client frame, or one raw frame from rumqttd. Out: a [`Verdict`]
//! for the client's frame; allow or deny for a delivery, with the
//! acknowledgement the edge owes rumqttd for a denied one. Bound: the QoS 2
//! ids the edge answered in the client's or rumqttd's place (at most
//! `mqtt.max_qos2_inflight` for the client's; rumqttd's are bounded by its
//! inflight window).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    Packet, PubAck, PubComp, PubRec, Publish, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{PacketType, QoS};

use super::{Proxy, Verdict};
use crate::acks::Ack;
use crate::auth::Decision;
use crate::clock::now_ms;
use crate::edge::codec::{self, Frame};
use crate::ingest::{AckRequest, VehiclePublish};
use crate::metrics::Metrics;
use crate::topics::{is_gateway_namespace, VehicleTopic};

impl Proxy<'_> {
    /// "Read" is checked per delivered message, not only at SUBSCRIBE, so
    /// a `#` subscription receives only what the client may read, and a
    /// reload applies to live subscriptions, retained messages and resumed
    /// sessions alike. A refused delivery is acknowledged to rumqttd in the
    /// client's place (appended to `to_broker`), so rumqttd's inflight
    /// window for the client does not fill with messages it will never
    /// acknowledge.
    pub(super) fn check_delivery(&mut self, raw: &[u8], to_broker: &mut BytesMut) -> Decision {
        let first = raw.first().copied().unwrap_or(0);
        // PUBREL for a delivery the edge took (QoS 2): answered here.
        if first == 0x62 {
            let pkid = raw.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
            if let Some(pkid) = pkid.filter(|id| self.broker_owned_qos2.contains(id)) {
                self.broker_owned_qos2.retain(|&id| id != pkid);
                let _ = codec::encode(&Packet::PubComp(PubComp::new(pkid)), to_broker);
                return Decision::Deny;
            }
            return Decision::Allow;
        }
        if !self.ctx.auth.enforced() {
            return Decision::Allow;
        }
        let Some(meta) = codec::publish_meta(raw) else {
            return Decision::Allow;
        };
        let mut decision = self.ctx.auth.may_read(self.who, meta.topic);
        if decision == Decision::Allow && meta.retain && !self.retained_source_may_write(meta.topic)
        {
            Metrics::inc(&self.ctx.metrics.retained_source_denied_total);
            decision = Decision::Deny;
        } else if decision == Decision::Deny {
            Metrics::inc(&self.ctx.metrics.acl_read_denied_total);
        }
        if decision == Decision::Deny {
            let answer = match meta.qos {
                1 => Some(Packet::PubAck(PubAck::new(meta.pkid))),
                2 => {
                    if !self.broker_owned_qos2.contains(&meta.pkid) {
                        self.broker_owned_qos2.push(meta.pkid);
                    }
                    Some(Packet::PubRec(PubRec::new(meta.pkid)))
                }
                _ => None,
            };
            if let Some(answer) = answer {
                let _ = codec::encode(&answer, to_broker);
            }
        }
        decision
    }

    /// `auth.check_retain_source`: may the client that published this
    /// retained message still write its topic? (Yes when sources are not
    /// kept, or the topic's publisher is not known.)
    fn retained_source_may_write(&self, topic: &str) -> bool {
        if !self.ctx.retained.keeps_sources() {
            return true;
        }
        match self.ctx.retained.source(topic) {
            Some(publisher) => self.ctx.auth.may_publish(&publisher, topic).allowed(),
            None => true,
        }
    }

    pub(super) fn is_for_edge(&mut self, frame: &codec::RawFrame) -> bool {
        match frame.header.packet_type() {
            Ok(PacketType::PingResp) if self.pingresps_owed > 0 => {
                self.pingresps_owed -= 1;
                true
            }
            Ok(PacketType::SubAck) if self.swallow_suback.is_some() => {
                let raw = frame.raw.as_ref();
                // SUBACK: fixed header (2 bytes here), then the packet id.
                let pkid = raw.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
                if pkid == self.swallow_suback {
                    self.swallow_suback = None;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    pub(super) async fn check(&mut self, frame: Frame) -> Verdict {
        match &frame.packet {
            Packet::Publish(publish) => self.check_publish(publish, frame.raw.clone()).await,
            Packet::PubRel(rel) if self.edge_owned_qos2.contains(&rel.pkid) => {
                self.edge_owned_qos2.retain(|&id| id != rel.pkid);
                Verdict::Reply(Packet::PubComp(PubComp::new(rel.pkid)))
            }
            Packet::Subscribe(subscribe) => self.check_subscribe(subscribe, frame.raw.clone()),
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    self.hold.release(filter);
                }
                Verdict::Forward(frame.raw)
            }
            Packet::Disconnect => Verdict::ForwardAndClose(frame.raw),
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                match self.owed.client_sent(&frame.raw) {
                    Ok(()) => Verdict::Forward(frame.raw),
                    Err(violation) => {
                        self.ctx.metrics.violation(violation);
                        tracing::debug!(%violation, "closing handed-off client: MQTT 3.1.1 violation");
                        Verdict::Close
                    }
                }
            }
            p if codec::is_client_violation(p) => {
                Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                Verdict::Close
            }
            _ => Verdict::Forward(frame.raw),
        }
    }

    async fn check_publish(&mut self, publish: &Publish, raw: Bytes) -> Verdict {
        let topic = publish.topic.as_str();
        match self.ctx.auth.may_publish(self.who, topic) {
            Decision::Allow => {}
            Decision::Deny => {
                Metrics::inc(&self.ctx.metrics.acl_denied_total);
                tracing::debug!(client_id = %self.who.client_id, topic, "publish denied by the ACL");
                return self.ack_here(publish, None).await;
            }
            Decision::Revoked => {
                Metrics::inc(&self.ctx.metrics.connections_closed_revoked_total);
                return Verdict::Close;
            }
        }
        if let Some(VehicleTopic::Uplink(vehicle, kind)) = VehicleTopic::parse(topic) {
            let item = VehiclePublish {
                vehicle,
                kind,
                payload: publish.payload.clone(),
                received_ms: now_ms(),
            };
            return match publish.qos {
                QoS::AtMostOnce => {
                    self.ctx.ingest.offer(item);
                    Verdict::Drop
                }
                QoS::AtLeastOnce | QoS::ExactlyOnce => {
                    let duplicate = publish.qos == QoS::ExactlyOnce
                        && self.edge_owned_qos2.contains(&publish.pkid);
                    self.ack_here(publish, (!duplicate).then_some(item)).await
                }
            };
        }
        // Wildcards and empty topics never get here: conformance closed the
        // connection for them.
        let denied = topic.starts_with('$') || is_gateway_namespace(topic);
        if denied {
            Metrics::inc(&self.ctx.metrics.acl_denied_total);
            tracing::debug!(topic, "publish denied by the edge ACL");
            return self.ack_here(publish, None).await;
        }
        if publish.retain
            && !publish.payload.is_empty()
            && !self.ctx.retained.admit(topic, self.who)
        {
            Metrics::inc(&self.ctx.metrics.retained_refused_total);
            let mut unretained = publish.clone();
            unretained.retain = false;
            let mut out = BytesMut::new();
            return match codec::encode(&Packet::Publish(unretained), &mut out) {
                Ok(()) => Verdict::Forward(out.freeze()),
                Err(_) => Verdict::Close,
            };
        }
        Verdict::Forward(raw)
    }

    /// The edge answers a QoS 1/2 publish that never reaches rumqttd: a
    /// device publish (`item`), once the spool has it, or a denied one; both
    /// through ingest's queue, so the answers keep the publishes' order.
    async fn ack_here(&mut self, publish: &Publish, item: Option<VehiclePublish>) -> Verdict {
        let ack = match publish.qos {
            QoS::AtMostOnce => return Verdict::Drop,
            QoS::AtLeastOnce => Ack::PubAck(publish.pkid),
            QoS::ExactlyOnce => {
                if !self.edge_owned_qos2.contains(&publish.pkid) {
                    if self.edge_owned_qos2.len() >= self.ctx.mqtt.max_qos2_inflight.get() {
                        Metrics::inc(&self.ctx.metrics.connections_closed_malformed_total);
                        return Verdict::Close;
                    }
                    self.edge_owned_qos2.push(publish.pkid);
                }
                Ack::PubRec(publish.pkid)
            }
        };
        let request = AckRequest {
            to: self.acks.clone(),
            ack,
        };
        match self.ctx.ingest.deliver(item, request).await {
            Ok(()) => Verdict::Drop,
            Err(_) => Verdict::Close,
        }
    }

    fn check_subscribe(&mut self, subscribe: &Subscribe, raw: Bytes) -> Verdict {
        let mut refused = false;
        let mut revoked = false;
        // Admitted by this SUBSCRIBE, let go again if the packet is refused.
        let mut taken = Vec::new();
        for filter in &subscribe.filters {
            let path = filter.path.as_str();
            let inner = match path.strip_prefix("$share/") {
                Some(rest) => rest.split_once('/').map(|(_, f)| f),
                None => Some(path),
            };
            let allowed = inner.is_some_and(|f| {
                !f.is_empty()
                    && !f.starts_with('$')
                    && match self.ctx.auth.may_subscribe(self.who, f) {
                        Decision::Allow => true,
                        Decision::Deny => false,
                        Decision::Revoked => {
                            revoked = true;
                            false
                        }
                    }
            });
            if revoked {
                Metrics::inc(&self.ctx.metrics.connections_closed_revoked_total);
                return Verdict::Close;
            }
            if !allowed {
                Metrics::inc(&self.ctx.metrics.acl_denied_total);
                refused = true;
            } else if self.hold.holds(path) {
                // a re-subscription: nothing new to count
            } else if self.hold.admit(path) {
                taken.push(path);
            } else {
                Metrics::inc(&self.ctx.metrics.filters_refused_total);
                tracing::debug!(
                    filter = path,
                    live_filters = self.ctx.filters.live(),
                    "subscription refused: broker.max_filters live filters are held"
                );
                refused = true;
            }
        }
        if refused {
            for path in taken {
                self.hold.release(path);
            }
            tracing::debug!(filters = ?subscribe.filters, "subscription refused by the edge");
            let codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
            return Verdict::Reply(Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
        }
        Verdict::Forward(raw)
    }
}
