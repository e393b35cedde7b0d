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
//!
//! # Layout
//!
//! - this file: the queue in ([`IngestSender`]) and the task that owns the
//!   fleet ([`spawn`]).
//! - [`pipeline`]: decode → fleet state → updates, for one publish.
//! - [`queries`]: questions and package changes from the API, answered by
//!   the task between batches.
//!
//! Before it: the edge (vehicles' publishes, and `v/<vid>/…` publishes of
//! handed-off clients). After it: the fleet state ([`crate::fleet`]), which
//! it owns, and the fan-out ([`crate::fanout`]), which it feeds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::acks::{Ack, Durable, PendingAcks};
use crate::bridge::mailboxes::Mailboxes;
use crate::broker::BrokerPublisher;
use crate::clock::now_ms;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::fleet::Update;
use crate::metrics::Metrics;
use crate::topics::{DeviceTopicKind, VehicleId};

mod dispatch;
pub mod pipeline;
pub mod queries;

pub use pipeline::Pipeline;
pub use queries::{
    DispatchOp, FleetQueries, FleetUnavailable, Nearby, NearestQuery, PackageChange, PackageLookup,
};

/// One publish by a device, as the edge received it.
#[derive(Debug, Clone)]
pub struct VehiclePublish {
    pub vehicle: VehicleId,
    pub kind: DeviceTopicKind,
    pub payload: Bytes,
    /// Receive time at the edge, ms since the Unix epoch.
    pub received_ms: u64,
}

/// The acknowledgement a QoS 1/2 publish is owed, and where to send it once
/// the publish is kept (`crate::acks`).
pub struct AckRequest {
    pub to: Arc<PendingAcks>,
    pub ack: Ack,
}

/// One entry of ingest's queue: a publish (`None` when it was refused at
/// the door, or for a QoS 2 redelivery ingest must not see twice), and the
/// acknowledgement owed for it. Queued together so a connection's
/// acknowledgements keep the order of its publishes.
pub struct Queued {
    publish: Option<VehiclePublish>,
    ack: Option<AckRequest>,
}

/// The edge's handle on the ingest queue.
#[derive(Clone)]
pub struct IngestSender {
    queue: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    durable: Arc<Durable>,
}

/// A publish counted and checked by ingest, waiting for room in its queue.
pub struct Admitted(Queued);

/// Ingest's queue is full (or the gateway is stopping), or the payload was
/// refused as oversized.
#[derive(Debug, thiserror::Error)]
#[error("ingest is busy")]
pub struct IngestBusy;

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
    ) -> (IngestSender, mpsc::Receiver<Queued>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let durable = Durable::new(1);
        (
            IngestSender {
                queue,
                metrics,
                durable,
            },
            rx,
        )
    }

    /// Every publish up to this ticket is kept: a connection may send the
    /// acknowledgements due at it (`crate::acks`).
    pub fn durable_through(&self) -> u64 {
        self.durable.through()
    }

    /// For QoS 0: never waits; a full queue drops the publish (counted).
    pub fn offer(&self, publish: VehiclePublish) {
        let Some(publish) = self.admit(publish) else {
            return;
        };
        let queued = Queued {
            publish: Some(publish),
            ack: None,
        };
        if self.queue.try_send(queued).is_err() {
            Metrics::inc(&self.metrics.ingest_dropped_total);
        }
    }

    /// For an HTTP caller (`POST /tracking`): never waits, and says whether
    /// ingest took it, so the caller can answer 503 rather than lose it
    /// silently. A refused publish is counted as dropped
    /// (`ingest_dropped_total`), as every publish ingest did not take is.
    pub fn submit(&self, publish: VehiclePublish) -> Result<(), IngestBusy> {
        let publish = self.admit(publish).ok_or(IngestBusy)?;
        let queued = Queued {
            publish: Some(publish),
            ack: None,
        };
        self.queue.try_send(queued).map_err(|_| {
            Metrics::inc(&self.metrics.ingest_dropped_total);
            IngestBusy
        })
    }

    /// For QoS 1 and 2: waits for room. `ack` reaches its connection once
    /// the publish is kept (in the spool, or handled when the bridge is
    /// off), or once it was refused as malformed (which is final too).
    pub async fn deliver(
        &self,
        publish: Option<VehiclePublish>,
        ack: AckRequest,
    ) -> Result<(), IngestClosed> {
        match self.try_deliver(publish, ack)? {
            None => Ok(()),
            Some(waiting) => self.wait_deliver(waiting).await,
        }
    }

    /// [`deliver`](Self::deliver) without waiting: `None` when ingest took
    /// it, `Some` when the queue is full; then
    /// [`wait_deliver`](Self::wait_deliver) finishes the job. The edge uses
    /// the two steps so that the common case holds no waiting state in its
    /// connection tasks. `publish: None` queues the acknowledgement alone
    /// (a QoS 2 redelivery), behind the connection's earlier ones.
    pub fn try_deliver(
        &self,
        publish: Option<VehiclePublish>,
        ack: AckRequest,
    ) -> Result<Option<Admitted>, IngestClosed> {
        let queued = Queued {
            publish: publish.and_then(|p| self.admit(p)),
            ack: Some(ack),
        };
        match self.queue.try_send(queued) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(queued)) => Ok(Some(Admitted(queued))),
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

/// The running ingest task and its handles.
pub struct Ingest {
    /// For the edge: publishes in.
    pub sender: IngestSender,
    /// For the API: questions and package changes.
    pub queries: FleetQueries,
    /// Tells the task to drain its queue and end (see [`Ingest::task`]).
    pub stop: oneshot::Sender<()>,
    /// Ends after `stop`, once every publish queued before it went through
    /// the pipeline and into the fan-out; the fan-out's producer goes with
    /// it, which ends the bridge feeder's drain.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the ingest task, which owns the fleet state.
pub fn spawn(
    config: &Config,
    metrics: Arc<Metrics>,
    mirror: BrokerPublisher,
    fanout: &Fanout,
    durable: Arc<Durable>,
    mailboxes: Arc<Mailboxes>,
) -> Ingest {
    // With the bridge on, a publish is kept once the feeder has appended it
    // (it advances the watermark at each checkpoint); without, once handled.
    let feeder_keeps = config.bridge.enabled;
    let (queue, mut rx) = mpsc::channel::<Queued>(config.ingest.queue.get());
    let (stop, mut stopped) = oneshot::channel::<()>();
    let (queries, mut query_rx) = queries::channel();
    let mut pipeline = Pipeline::new(config, metrics.clone(), mirror);
    pipeline.notify = Some(mailboxes);
    let mut publisher = fanout.publisher();
    let sweep_every = Duration::from_millis(config.fleet.sweep_interval_ms);
    let sender_durable = durable.clone();
    let task = tokio::spawn(async move {
        let mut inbox = Vec::with_capacity(BATCH);
        let mut updates = Vec::with_capacity(BATCH * 4);
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        // Tickets handed out so far; the last one given to the fan-out or
        // the watermark.
        let mut ticket = 0u64;
        let mut checkpointed = 0u64;
        loop {
            tokio::select! {
                // Stopping: take no more, but everything already queued (the
                // edge has acknowledged it) still goes through.
                _ = &mut stopped, if !draining => {
                    draining = true;
                    rx.close();
                }
                n = rx.recv_many(&mut inbox, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for queued in inbox.drain(..) {
                        if let Some(publish) = queued.publish {
                            pipeline.handle(publish, now, &mut updates);
                        }
                        if let Some(AckRequest { to, ack }) = queued.ack {
                            ticket += 1;
                            to.push(ticket, ack, &durable);
                        }
                    }
                }
                _ = sweep.tick() => {
                    pipeline.fleet.sweep(Instant::now(), now_ms(), &mut updates);
                    pipeline.dispatch_effects(&updates);
                }
                Some(query) = query_rx.recv() => {
                    query.answer(&mut pipeline, now_ms(), &mut updates);
                    pipeline.dispatch_effects(&updates);
                }
            }
            let checkpoint = ticket > checkpointed;
            if checkpoint && feeder_keeps {
                updates.push(Update::Checkpoint(ticket));
            }
            // every event numbered and kept for GET /events before anyone sees it
            pipeline.fleet.events.record(&mut updates);
            publisher.publish(&updates).await;
            updates.clear();
            if checkpoint {
                checkpointed = ticket;
                if !feeder_keeps {
                    durable.advance(ticket);
                }
            }
        }
    });
    Ingest {
        sender: IngestSender {
            queue,
            metrics,
            durable: sender_durable,
        },
        queries,
        stop,
        task,
    }
}
