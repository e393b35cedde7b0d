//! The gateway's own link into rumqttd.
//!
//! In: the gateway's publishes ([`BrokerPublisher::publish`]: dashboard JSON
//! from the republisher, device payloads mirrored by ingest), and rumqttd's
//! forwards of `v/<vid>/cmd`. Out: those publishes into rumqttd's router,
//! and each command to the [`CommandSink`] (the edge's vehicle registry).
//!
//! Bound: `broker.publish_queue` publishes wait for the link thread (drop
//! newest when full, counted), and at most as many more in rumqttd's own
//! queue for this link (dropped past it, counted); two OS threads, because
//! rumqttd's `LinkTx` blocks on its router channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::Notification;
use std::sync::mpsc;

use super::BrokerError;
use crate::metrics::Metrics;
use crate::topics::command_vehicle;

/// Where commands for devices go: `v/<vid>/cmd` publishes seen by the broker.
pub trait CommandSink: Send + Sync + 'static {
    /// Delivers the raw command payload to the vehicle's connection, if any.
    fn deliver(&self, vehicle_id: &str, payload: Bytes);
}

pub(super) struct Outgoing {
    topic: Bytes,
    payload: Bytes,
}

/// Publishes into rumqttd without ever blocking the caller.
///
/// The queue is std's bounded `sync_channel`: a ring allocated once, so a
/// publish allocates nothing (tokio's mpsc allocates blocks under backlog),
/// and its consumer is a thread of its own anyway.
#[derive(Clone)]
pub struct BrokerPublisher {
    queue: mpsc::SyncSender<Outgoing>,
    metrics: Arc<Metrics>,
}

impl BrokerPublisher {
    /// Queues a publish; when the queue is full the publish is dropped
    /// (`drop_newest`), counted in `broker_publish_dropped_total`.
    pub fn publish(&self, topic: impl Into<Bytes>, payload: Bytes) -> bool {
        let item = Outgoing {
            topic: topic.into(),
            payload,
        };
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                Metrics::inc(&self.metrics.broker_publish_dropped_total);
                false
            }
        }
    }
}

/// The receiving end of a detached [`BrokerPublisher`]: for benchmarks
/// and tests that run the pipeline without a broker.
pub struct DetachedBroker {
    queue: mpsc::Receiver<Outgoing>,
}

impl DetachedBroker {
    /// Discards what was published; returns how many publishes that was.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.queue.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

impl BrokerPublisher {
    /// A publisher connected to no broker, with a queue of `capacity`.
    pub fn detached(capacity: usize, metrics: Arc<Metrics>) -> (BrokerPublisher, DetachedBroker) {
        let (queue, rx) = mpsc::sync_channel(capacity.max(1));
        (
            BrokerPublisher { queue, metrics },
            DetachedBroker { queue: rx },
        )
    }
}

impl BrokerPublisher {
    pub(super) fn new(queue: mpsc::SyncSender<Outgoing>, metrics: Arc<Metrics>) -> BrokerPublisher {
        BrokerPublisher { queue, metrics }
    }
}

/// What bounds the gateway's own link into rumqttd.
pub(super) struct LinkTxLimits {
    /// Publishes rumqttd may hold in the link's queue before the router
    /// takes them (`broker.publish_queue`).
    pub(super) backlog: usize,
    pub(super) metrics: Arc<Metrics>,
}

pub(super) fn spawn_link_threads(
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    outgoing: mpsc::Receiver<Outgoing>,
    limits: LinkTxLimits,
    commands: Arc<dyn CommandSink>,
    stop: Arc<AtomicBool>,
) -> Result<(), BrokerError> {
    // Publishing: blocks on rumqttd's bounded router channel, so it gets a
    // thread of its own; ends when every BrokerPublisher is dropped.
    //
    // rumqttd's LinkTx queues into an unbounded VecDeque and only sends the
    // router a wake-up token (bounded channel). A router that stops taking
    // this link's data (seen once in a compare.sh pipeline run: dashboards
    // got nothing and RSS grew to 310 MiB) would grow that queue without
    // end, so a publish past `backlog` queued there is dropped and counted.
    std::thread::Builder::new()
        .name("broker-link-tx".into())
        .spawn(move || {
            let mut stalled_log = crate::log_limit::RateLimit::new(1);
            while let Ok(item) = outgoing.recv() {
                let queued = link_tx.buffer().len();
                if queued >= limits.backlog {
                    Metrics::inc(&limits.metrics.broker_publish_dropped_total);
                    if let Some(suppressed) = stalled_log.allow() {
                        tracing::error!(queued, suppressed, "the embedded broker is not taking the gateway's publishes; dropping them (broker_publish_dropped_total)");
                    }
                    continue;
                }
                if let Err(e) = link_tx.publish(item.topic, item.payload) {
                    tracing::error!(error = ?e, "embedded broker link closed; gateway publishes stop");
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;

    // Receiving: commands for devices. After an `Unschedule` the router
    // pauses this link until `ready()`; without it the downlink would stall.
    std::thread::Builder::new()
        .name("broker-link-rx".into())
        .spawn(move || loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            match link_rx.recv_deadline(deadline) {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = forward.publish.topic;
                    match command_vehicle(&topic) {
                        Some(vid) => commands.deliver(vid, forward.publish.payload),
                        None => tracing::debug!(?topic, "ignoring non-command forward"),
                    }
                }
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.ready().is_err() {
                        break;
                    }
                }
                Ok(Some(Notification::Disconnect(..))) => {
                    tracing::error!("the embedded broker disconnected the gateway's link: dashboards get no updates, commands stop");
                    break;
                }
                Ok(Some(_)) | Ok(None) => {}
                // flume folds "disconnected" into the timeout error: only
                // an error at or after the deadline is a timeout. Anything
                // earlier means the router let go of this link, and waiting
                // again would spin.
                Err(rumqttd::local::LinkError::RecvTimeout(_)) if std::time::Instant::now() >= deadline => {}
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        tracing::error!(error = ?e, "embedded broker downlink closed; commands to devices stop");
                    }
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}
