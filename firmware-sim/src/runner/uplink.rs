//! A vehicle's MQTT client as a device [`Uplink`]: the link state its two
//! tasks share, and the payloads (postcard, or JSON in JSON mode).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use fleetgate_wire::json::{PositionJson, StatusJson};
use fleetgate_wire::{decode, encode, Command, Kind, Position, Status, MAX_ENCODED_LEN};
use rumqttc::{AsyncClient, ClientError, QoS};

use crate::device::Uplink;

use super::Fleet;

/// Link state shared by a vehicle's two tasks.
#[derive(Debug, Default)]
pub(super) struct Link {
    pub(super) connected: AtomicBool,
    /// PubAcks for this vehicle, so it can wait for its own before leaving.
    pub(super) acknowledged: AtomicU64,
    /// QoS 1 publishes handed to the client (positions and statuses).
    pub(super) awaiting_ack: AtomicU64,
}

/// From the event-loop task to the driver.
#[derive(Debug)]
pub(super) enum LinkNews {
    Connected,
    Command(Command),
}

/// The driver's view of the MQTT client, as a device [`Uplink`].
pub(super) struct MqttUplink<'a> {
    pub(super) client: &'a AsyncClient,
    pub(super) link: &'a Link,
    pub(super) fleet: &'a Fleet,
    pub(super) pos_topic: &'a str,
    pub(super) status_topic: &'a str,
}

#[derive(Debug)]
pub(super) enum MqttUplinkError {
    QueueFull,
    Closed,
    Encode,
}

impl Uplink for MqttUplink<'_> {
    type Error = MqttUplinkError;

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), MqttUplinkError> {
        let topic = match kind {
            Kind::Position => self.pos_topic,
            Kind::Status => self.status_topic,
            Kind::Command => return Err(MqttUplinkError::Encode),
        };
        let bytes = if self.fleet.cfg.json {
            json_form(kind, payload).ok_or(MqttUplinkError::Encode)?
        } else {
            payload.to_vec()
        };
        match self.client.try_publish(topic, self.fleet.qos, false, bytes) {
            Ok(()) => {
                if self.fleet.qos == QoS::AtLeastOnce {
                    self.link.awaiting_ack.fetch_add(1, Relaxed);
                }
                Ok(())
            }
            Err(ClientError::TryRequest(_)) => {
                self.fleet.counters.queue_full.fetch_add(1, Relaxed);
                Err(MqttUplinkError::QueueFull)
            }
            Err(_) => Err(MqttUplinkError::Closed),
        }
    }

    fn is_connected(&self) -> bool {
        self.link.connected.load(Relaxed)
    }
}

/// Re-encodes a postcard payload in its JSON form.
pub(super) fn json_form(kind: Kind, payload: &[u8]) -> Option<Vec<u8>> {
    match kind {
        Kind::Position => serde_json::to_vec(&PositionJson::from_position(
            &decode::<Position>(payload).ok()?,
        ))
        .ok(),
        Kind::Status => {
            serde_json::to_vec(&StatusJson::from_status(&decode::<Status>(payload).ok()?)).ok()
        }
        Kind::Command => None,
    }
}

pub(super) fn postcard_bytes<M: fleetgate_wire::WireMessage>(msg: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    // Our messages always fit MAX_ENCODED_LEN; an empty payload would be
    // rejected by the gateway and counted there, never a crash here.
    encode(msg, &mut buf)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}
