//! In-process clients of rumqttd: a local link with its own subscriptions,
//! for parts of the gateway that are MQTT clients of the embedded broker
//! without a TCP hop (the SMQ queue, `crate::smq`; the WebSocket pub/sub
//! proxy, `crate::pubsub`). Their filters count in the broker's filter
//! budget through [`TopicFilters`].
//!
//! In: [`LocalRequest`]s (subscribe, unsubscribe, publish), processed in the
//! order they were queued, so a subscribe queued before a publish is in
//! place when the router takes the publish. Out: every publish the router
//! forwards for this link's filters, handed to a [`LocalSink`] on the link's
//! receiving thread (the sink must not block).
//!
//! Bound: `queue` requests wait for the link's sending thread (a full queue
//! hands the request back: the caller refuses whatever asked for it), and
//! at most as many more in rumqttd's queue for this link: when that is full
//! the sending thread waits for the router, so our queue fills and callers
//! are refused, and nothing a caller was told is taken is dropped (only at
//! shutdown, counted in `broker_publish_dropped_total`). Two OS threads per client, because rumqttd's
//! `LinkTx` and `LinkRx` block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::Notification;

use super::BrokerError;
use crate::metrics::Metrics;

/// Where a local client's deliveries go.
pub trait LocalSink: Send + Sync + 'static {
    /// One publish the router forwarded for this client's filters. Called
    /// on the link's receiving thread: must not block. `retained` is true
    /// for a retained message replayed at subscribe time.
    fn deliver(&self, topic: &[u8], payload: &Bytes, retained: bool);
}

/// The broker's filter budget (`broker.max_filters`), as a local client's
/// subscriptions see it: a filter is admitted before the client subscribes
/// to it and released after it unsubscribes, so rumqttd's logs for local
/// clients count like any client's (`crate::edge::filters::LocalFilters`).
pub trait TopicFilters: Send + Sync + 'static {
    fn admit(&self, filter: &str) -> bool;
    fn release(&self, filter: &str);
}

/// What a local client asks of the broker.
#[derive(Debug)]
pub enum LocalRequest {
    Subscribe(String),
    Unsubscribe(String),
    Publish { topic: Bytes, payload: Bytes },
}

/// The sending side of a local client; cheap to clone.
#[derive(Clone)]
pub struct LocalClient {
    queue: mpsc::SyncSender<LocalRequest>,
}

impl LocalClient {
    /// Queues a request without blocking; a full queue (or a closed link)
    /// hands it back.
    pub fn request(&self, request: LocalRequest) -> Result<(), LocalRequest> {
        self.queue.try_send(request).map_err(|e| match e {
            mpsc::TrySendError::Full(r) | mpsc::TrySendError::Disconnected(r) => r,
        })
    }
}

pub(super) fn spawn(
    name: &str,
    (mut link_tx, mut link_rx): (LinkTx, LinkRx),
    queue: usize,
    sink: Arc<dyn LocalSink>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<LocalClient, BrokerError> {
    let (tx, requests) = mpsc::sync_channel::<LocalRequest>(queue);
    let backlog = queue;
    let stop_tx = stop.clone();
    let client = name.to_owned();
    std::thread::Builder::new()
        .name(format!("{name}-tx"))
        .spawn(move || {
            let mut stalled_log = crate::log_limit::RateLimit::new(1);
            while let Ok(request) = requests.recv() {
                let sent = match request {
                    LocalRequest::Subscribe(filter) => link_tx.subscribe(filter).map(drop),
                    LocalRequest::Unsubscribe(filter) => link_tx.unsubscribe(filter).map(drop),
                    LocalRequest::Publish { topic, payload } => {
                        // rumqttd's queue for this link is full: wait for the
                        // router rather than drop what the caller was told
                        // is taken (an SMQ `/put` answered OK). Meanwhile our
                        // queue fills and callers are refused (429), which is
                        // the backpressure they can act on.
                        let mut queued = link_tx.buffer().len();
                        while queued >= backlog && !stop_tx.load(Ordering::Relaxed) {
                            if let Some(suppressed) = stalled_log.allow() {
                                tracing::warn!(client, queued, suppressed, "the embedded broker is slow to take a local client's publishes; holding them (callers are refused while our queue is full)");
                            }
                            std::thread::sleep(Duration::from_millis(1));
                            queued = link_tx.buffer().len();
                        }
                        if queued >= backlog {
                            // Stopping: what is left is dropped, and counted.
                            Metrics::inc(&metrics.broker_publish_dropped_total);
                            continue;
                        }
                        link_tx.publish(topic, payload).map(drop)
                    }
                };
                if let Err(e) = sent {
                    tracing::error!(client, error = ?e, "embedded broker link closed; a local client stops");
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;

    let client = name.to_owned();
    std::thread::Builder::new()
        .name(format!("{name}-rx"))
        .spawn(move || loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            match link_rx.recv_deadline(deadline) {
                Ok(Some(Notification::Forward(forward))) => {
                    let publish = forward.publish;
                    sink.deliver(&publish.topic, &publish.payload, publish.retain);
                }
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.ready().is_err() {
                        break;
                    }
                }
                Ok(Some(Notification::Disconnect(..))) => {
                    tracing::error!(client, "the embedded broker disconnected a local client");
                    break;
                }
                Ok(Some(_)) | Ok(None) => {}
                // As in `link`: only an error at or after the deadline is a timeout.
                Err(rumqttd::local::LinkError::RecvTimeout(_))
                    if std::time::Instant::now() >= deadline => {}
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        tracing::error!(client, error = ?e, "a local client's link closed");
                    }
                    break;
                }
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(LocalClient { queue: tx })
}
