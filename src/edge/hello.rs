//! A client's CONNECT as its connection keeps it, and its will.
//!
//! In: the CONNECT's raw frame and who the client turned out to be. Out: the
//! CONNECT again when it is needed (a hand-off, a will to fire), and the
//! will published when a client vanishes. Bound: the raw frame (at most
//! 8 KiB, usually a few dozen bytes) and the principal, boxed together.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Connect, Packet};

use super::codec::{self, Frame};
use super::EdgeContext;
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::ingest::VehiclePublish;
use crate::metrics::Metrics;
use crate::topics::VehicleTopic;

/// A client's CONNECT as the session keeps it: the raw frame, exactly sized,
/// decoded again only when it is needed (a will to fire, a hand-off), and
/// who the client is. A decoded `Connect` would hold five separately
/// allocated strings for the whole life of the connection; the box keeps
/// the connection's task one pointer, not a fat one, larger.
pub struct Hello {
    kept: Box<Kept>,
    pub keep_alive: u16,
    pub clean_session: bool,
}

struct Kept {
    raw: Box<[u8]>,
    principal: Principal,
}

impl Hello {
    /// `raw` must be the frame `connect` was decoded from.
    pub fn new(raw: &[u8], connect: &Connect, principal: Principal) -> Hello {
        Hello {
            kept: Box::new(Kept {
                raw: raw.into(),
                principal,
            }),
            keep_alive: connect.keep_alive,
            clean_session: connect.clean_session,
        }
    }

    /// Who the client is (its client id, generated if it sent none).
    pub fn principal(&self) -> &Principal {
        &self.kept.principal
    }

    /// The CONNECT again (it decoded once, so it decodes again), with the
    /// client id the gateway uses for it.
    pub fn connect(&self) -> Option<Connect> {
        let mut buf = BytesMut::from(&self.kept.raw[..]);
        match codec::next_frame(&mut buf, usize::MAX) {
            Ok(Some(Frame {
                packet: Packet::Connect(mut connect),
                ..
            })) => {
                connect.client_id = self.kept.principal.client_id.to_string();
                Some(connect)
            }
            _ => None,
        }
    }
}

/// Publishes a vanished vehicle's last will: a device topic goes through
/// ingest like any publish; any other topic straight into the broker. It
/// was checked at CONNECT and is checked again now, against the tables in
/// force (a reload may have taken the right away).
pub fn fire_will(ctx: &EdgeContext, who: &Principal, topic: &str, payload: Bytes) {
    if !ctx.auth.may_publish(who, topic).allowed() {
        Metrics::inc(&ctx.metrics.acl_denied_total);
        tracing::debug!(client_id = %who.client_id, topic, "will denied by the ACL");
        return;
    }
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
