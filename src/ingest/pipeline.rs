//! Everything ingest does to one publish: decode, update the fleet state,
//! append what changed, mirror the raw payload into the broker.
//!
//! In: one [`VehiclePublish`] at a time. Out: [`Update`]s appended to the
//! caller's buffer; the raw payload to `v/<vid>/pos|status` in the broker.
//! Bound: the fleet's own (`fleet.max_vehicles`, `fleet.max_packages`); no
//! allocation per postcard position (`tests/alloc_free.rs`).

use std::sync::Arc;
use std::time::Duration;

use fleetgate_wire::json::{decode_status_any, PositionJson};
use fleetgate_wire::{Format, Position};
use tokio::time::Instant;

use super::{PackageChange, VehiclePublish};
use crate::broker::BrokerPublisher;
use crate::config::Config;
use crate::fleet::packages::{Package, PackageError, PackageUpdate};
use crate::fleet::{Fleet, Outcome, Update};
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;
use crate::topics::DeviceTopicKind;

/// Decode → fleet state → updates: everything ingest does to one publish.
pub struct Pipeline {
    pub fleet: Fleet,
    pub(super) metrics: Arc<Metrics>,
    pub(super) mirror: BrokerPublisher,
    malformed_log: RateLimit,
    /// Where dispatch outcomes reach their requesters (`/notification`).
    pub notify: Option<Arc<crate::bridge::mailboxes::Mailboxes>>,
}

impl Pipeline {
    pub fn new(config: &Config, metrics: Arc<Metrics>, mirror: BrokerPublisher) -> Pipeline {
        let mut fleet = Fleet::new(
            config.fleet.max_vehicles.get(),
            config.fleet.max_packages.get(),
            Duration::from_secs(config.fleet.unknown_after_s),
            metrics.clone(),
        );
        fleet.geofences = crate::fleet::geofence::Geofences::new(
            &config.geofence,
            config.fleet.max_vehicles.get(),
            metrics.clone(),
        );
        fleet.dispatch = crate::fleet::dispatch::Dispatch::new(
            &config.dispatch,
            config.fleet.max_vehicles.get(),
        );
        fleet.driving =
            crate::fleet::driving::Driving::new(&config.events, config.fleet.max_vehicles.get());
        fleet.events = crate::fleet::events::EventLog::new(
            config.events.ring.get(),
            crate::fleet::events::first_event_id(crate::clock::now_ms()),
            metrics.clone(),
        );
        Pipeline {
            fleet,
            metrics,
            mirror,
            malformed_log: RateLimit::new(config.ingest.malformed_log_per_s),
            notify: None,
        }
    }

    /// Handles one publish, appending what changed to `out`. Takes it by
    /// value: its payload moves on to the mirror (cloning a `Bytes` made
    /// from a `Vec` would allocate its refcount).
    pub fn handle(&mut self, publish: VehiclePublish, now: Instant, out: &mut Vec<Update>) {
        let (outcome, slot_of) = match publish.kind {
            DeviceTopicKind::Position => {
                match decode_position(&publish.payload, publish.received_ms) {
                    Ok((position, sequenced)) => {
                        Metrics::inc(&self.metrics.messages_decoded_total_position);
                        let outcome = self.fleet.apply_position(
                            &publish.vehicle,
                            &position,
                            sequenced,
                            now,
                            publish.received_ms,
                            out,
                        );
                        (outcome, DeviceTopicKind::Position)
                    }
                    Err(e) => return self.malformed(&publish, e),
                }
            }
            DeviceTopicKind::Status => {
                match decode_status_any(&publish.payload, publish.received_ms) {
                    Ok(status) => {
                        Metrics::inc(&self.metrics.messages_decoded_total_status);
                        let outcome = self.fleet.apply_status(
                            &publish.vehicle,
                            &status,
                            now,
                            publish.received_ms,
                            out,
                        );
                        (outcome, DeviceTopicKind::Status)
                    }
                    Err(e) => return self.malformed(&publish, e),
                }
            }
        };
        if outcome != Outcome::Accepted {
            return;
        }
        // Mirror the payload as the device sent it, so `v/#` stays
        // subscribable; the topic was made once per vehicle.
        if let Some(vehicle) = self.fleet.get(&publish.vehicle) {
            let topic = match slot_of {
                DeviceTopicKind::Position => vehicle.mirror_topic_pos.clone(),
                DeviceTopicKind::Status => vehicle.mirror_topic_status.clone(),
            };
            self.mirror.publish(topic, publish.payload);
        }
    }

    pub fn change_package(
        &mut self,
        change: PackageChange,
        now_ms: u64,
        out: &mut Vec<Update>,
    ) -> Result<Package, PackageError> {
        let packages = &mut self.fleet.packages;
        let (package, left) = match change {
            PackageChange::Assign {
                id,
                from,
                to,
                vehicle,
            } => (packages.assign(id, &from, &to, &vehicle)?, None),
            PackageChange::Move { id, vehicle } => packages.move_to(&id, &vehicle)?,
            PackageChange::Deliver { id } => (packages.deliver(&id)?, None),
        };
        out.push(Update::Package(Box::new(PackageUpdate {
            package: package.clone(),
            time_ms: now_ms,
            left,
        })));
        Ok(package)
    }

    fn malformed(&mut self, publish: &VehiclePublish, error: fleetgate_wire::Error) {
        Metrics::inc(&self.metrics.messages_malformed_total);
        if let Some(suppressed) = self.malformed_log.allow() {
            tracing::warn!(
                vehicle = %publish.vehicle,
                kind = ?publish.kind,
                bytes = publish.payload.len(),
                %error,
                suppressed,
                "malformed payload dropped"
            );
        }
    }
}

/// A position and whether it carries a sequence number (JSON may not).
fn decode_position(payload: &[u8], now_ms: u64) -> Result<(Position, bool), fleetgate_wire::Error> {
    match Format::detect(payload)? {
        Format::Postcard => fleetgate_wire::decode::<Position>(payload)
            .and_then(|p| p.validate().map(|()| (p, true))),
        Format::Json => {
            let json: PositionJson =
                serde_json::from_slice(payload).map_err(|_| fleetgate_wire::Error::Malformed)?;
            Ok((json.to_position(now_ms)?, json.seq.is_some()))
        }
    }
}
