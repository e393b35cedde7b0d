//! Ingest: vehicle publishes in, fleet updates out.
//!
//! In: [`VehiclePublish`]es from the edge (vehicles at the edge, and
//! `v/<vid>/pos|status` publishes of handed-off clients), through a bounded
//! queue of `ingest.queue` entries. Out: the fleet's [`Update`]s, published
//! once to the fan-out per batch; each payload that decodes is also mirrored
//! as sent to `v/<vid>/…` in the broker; answers to [`FleetQueries`].
//!
//! Policy when the queue is full: a QoS 0 publish is dropped and counted
//! (`ingest_dropped_total`); a QoS 1/2 publish waits, which pauses only the
//! connection that sent it (its PUBACK goes out once ingest has it). A
//! payload that does not decode is counted (`messages_malformed_total`),
//! logged at most `ingest.malformed_log_per_s` times a second, and never
//! forwarded.
//!
//! The task owns the [`Fleet`] alone, so the hot path — decode, state
//! update, fan-out — takes no lock per message and allocates nothing
//! (`tests/alloc_free.rs` counts). It drains up to [`BATCH`] publishes at a
//! time and hands the fan-out one batch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate_wire::json::{decode_status_any, PositionJson};
use fleetgate_wire::{Format, Position};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::broker::BrokerPublisher;
use crate::clock::now_ms;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::fleet::packages::{Package, PackageError, PackageId, PackageUpdate};
use crate::fleet::{Fleet, Outcome, Update, VehicleState};
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;
use crate::topics::{DeviceTopicKind, VehicleId};

/// One publish by a device, as the edge received it.
#[derive(Debug, Clone)]
pub struct VehiclePublish {
    pub vehicle: VehicleId,
    pub kind: DeviceTopicKind,
    pub payload: Bytes,
    /// Receive time at the edge, ms since the Unix epoch.
    pub received_ms: u64,
}

/// The edge's handle on the ingest queue.
#[derive(Clone)]
pub struct IngestSender {
    queue: mpsc::Sender<VehiclePublish>,
    metrics: Arc<Metrics>,
}

/// A publish counted and checked by ingest, waiting for room in its queue.
pub struct Admitted(VehiclePublish);

/// Ingest has stopped (the gateway is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("ingest has stopped")]
pub struct IngestClosed;

/// Largest device payload ingest takes. An encoded message is at most
/// `fleetgate_wire::MAX_ENCODED_LEN` bytes and its JSON form a few hundred;
/// anything larger is malformed, and refusing it keeps every queued
/// publish small.
pub const MAX_DEVICE_PAYLOAD: usize = 1024;

impl IngestSender {
    /// A sender onto a queue of `capacity` that no ingest task reads: for
    /// the edge's unit tests.
    #[cfg(test)]
    pub(crate) fn detached(
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (IngestSender, mpsc::Receiver<VehiclePublish>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        (IngestSender { queue, metrics }, rx)
    }

    /// For QoS 0: never waits; a full queue drops the publish (counted).
    pub fn offer(&self, publish: VehiclePublish) {
        let Some(publish) = self.admit(publish) else {
            return;
        };
        if self.queue.try_send(publish).is_err() {
            Metrics::inc(&self.metrics.ingest_dropped_total);
        }
    }

    /// For QoS 1 and 2: waits for room, so the PUBACK means "ingest has it"
    /// (or that it was refused as malformed, which is final too).
    pub async fn deliver(&self, publish: VehiclePublish) -> Result<(), IngestClosed> {
        match self.try_deliver(publish)? {
            None => Ok(()),
            Some(waiting) => self.wait_deliver(waiting).await,
        }
    }

    /// [`deliver`](Self::deliver) without waiting: `None` when ingest took
    /// the publish (or refused it as malformed), `Some` when the queue is
    /// full; then [`wait_deliver`](Self::wait_deliver) finishes the job.
    /// The edge uses the two steps so that the common case holds no
    /// waiting state in its connection tasks.
    pub fn try_deliver(&self, publish: VehiclePublish) -> Result<Option<Admitted>, IngestClosed> {
        let Some(publish) = self.admit(publish) else {
            return Ok(None);
        };
        match self.queue.try_send(publish) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(publish)) => Ok(Some(Admitted(publish))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(IngestClosed),
        }
    }

    /// Waits for room for a publish [`try_deliver`](Self::try_deliver) could
    /// not queue.
    pub async fn wait_deliver(&self, publish: Admitted) -> Result<(), IngestClosed> {
        self.queue.send(publish.0).await.map_err(|_| IngestClosed)
    }

    /// Counts the publish, refuses an oversized payload (counted as
    /// malformed), and copies the payload out of the connection's read
    /// buffer, so a queued publish holds its own few bytes and not the
    /// buffer it arrived in.
    fn admit(&self, mut publish: VehiclePublish) -> Option<VehiclePublish> {
        Metrics::inc(&self.metrics.messages_received_total);
        if publish.payload.len() > MAX_DEVICE_PAYLOAD {
            Metrics::inc(&self.metrics.messages_malformed_total);
            tracing::debug!(vehicle = %publish.vehicle, bytes = publish.payload.len(), "oversized device payload refused");
            return None;
        }
        publish.payload = Bytes::copy_from_slice(&publish.payload);
        Some(publish)
    }
}

/// Publishes drained from the queue at once; one fan-out batch.
pub const BATCH: usize = 256;

/// A question or a package change for the fleet's owner; handled between
/// batches.
enum Query {
    All(oneshot::Sender<Vec<VehicleState>>),
    One(VehicleId, oneshot::Sender<Option<VehicleState>>),
    Package(
        PackageChange,
        oneshot::Sender<Result<Package, PackageError>>,
    ),
}

/// The internal interface that changes packages; each change goes out as an
/// [`Update::Package`] (to the bridge's `package_status` queue and dashboards).
#[derive(Debug, Clone)]
pub enum PackageChange {
    Assign {
        id: PackageId,
        from: String,
        to: String,
        vehicle: VehicleId,
    },
    Move {
        id: PackageId,
        vehicle: VehicleId,
    },
    Deliver {
        id: PackageId,
    },
}

/// Read access to the fleet for the API: copies, made by the ingest task.
#[derive(Clone)]
pub struct FleetQueries {
    queries: mpsc::Sender<Query>,
}

/// The fleet could not answer: the gateway is stopping, or too many
/// questions are queued (at most 64).
#[derive(Debug, thiserror::Error)]
#[error("the fleet state is busy or stopping")]
pub struct FleetUnavailable;

impl FleetQueries {
    pub async fn all(&self) -> Result<Vec<VehicleState>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::All(tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    pub async fn one(&self, id: VehicleId) -> Result<Option<VehicleState>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::One(id, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// Applies a package change; waits for room rather than failing when
    /// questions are queued, since a change must not be lost.
    pub async fn package(
        &self,
        change: PackageChange,
    ) -> Result<Result<Package, PackageError>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Package(change, tx))
            .await
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }
}

/// Starts the ingest task, which owns the fleet state.
pub fn spawn(
    config: &Config,
    metrics: Arc<Metrics>,
    mirror: BrokerPublisher,
    fanout: &Fanout,
) -> (IngestSender, FleetQueries, tokio::task::JoinHandle<()>) {
    let (queue, mut rx) = mpsc::channel(config.ingest.queue.get());
    let (queries, mut query_rx) = mpsc::channel::<Query>(64);
    let mut pipeline = Pipeline::new(config, metrics.clone(), mirror);
    let mut publisher = fanout.publisher();
    let sweep_every = Duration::from_millis(config.fleet.sweep_interval_ms);
    let task = tokio::spawn(async move {
        let mut inbox = Vec::with_capacity(BATCH);
        let mut updates = Vec::with_capacity(BATCH * 4);
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut inbox, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for publish in inbox.drain(..) {
                        pipeline.handle(publish, now, &mut updates);
                    }
                }
                _ = sweep.tick() => pipeline.fleet.sweep(Instant::now(), now_ms(), &mut updates),
                Some(query) = query_rx.recv() => {
                    match query {
                        Query::All(reply) => { let _ = reply.send(pipeline.fleet.iter().cloned().collect()); }
                        Query::One(id, reply) => { let _ = reply.send(pipeline.fleet.get(&id).cloned()); }
                        Query::Package(change, reply) => {
                            let result = pipeline.change_package(change, now_ms(), &mut updates);
                            let _ = reply.send(result);
                        }
                    }
                }
            }
            publisher.publish(&updates).await;
            updates.clear();
        }
    });
    (
        IngestSender { queue, metrics },
        FleetQueries { queries },
        task,
    )
}

/// Decode → fleet state → updates: everything ingest does to one publish.
pub struct Pipeline {
    pub fleet: Fleet,
    metrics: Arc<Metrics>,
    mirror: BrokerPublisher,
    malformed_log: RateLimit,
}

impl Pipeline {
    pub fn new(config: &Config, metrics: Arc<Metrics>, mirror: BrokerPublisher) -> Pipeline {
        Pipeline {
            fleet: Fleet::new(
                config.fleet.max_vehicles.get(),
                config.fleet.max_packages.get(),
                Duration::from_secs(config.fleet.unknown_after_s),
                metrics.clone(),
            ),
            metrics,
            mirror,
            malformed_log: RateLimit::new(config.ingest.malformed_log_per_s),
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
        let package = match change {
            PackageChange::Assign {
                id,
                from,
                to,
                vehicle,
            } => packages.assign(id, &from, &to, &vehicle)?,
            PackageChange::Move { id, vehicle } => packages.move_to(&id, &vehicle)?,
            PackageChange::Deliver { id } => packages.deliver(&id)?,
        };
        out.push(Update::Package(Box::new(PackageUpdate {
            package: package.clone(),
            time_ms: now_ms,
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
