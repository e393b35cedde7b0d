//! Ingest: vehicle publishes in, decoded messages out.
//!
//! In: [`VehiclePublish`]es from the edge (vehicles at the edge, and
//! `v/<vid>/pos|status` publishes of handed-off clients), through a bounded
//! queue of `ingest.queue` entries. Out: for each payload that decodes, the
//! raw payload mirrored to `v/<vid>/…` and its JSON form on
//! `fleet/<vid>/position|status`, through the broker publisher.
//!
//! Policy when the queue is full: a QoS 0 publish is dropped and counted
//! (`ingest_dropped_total`); a QoS 1/2 publish waits, which pauses only the
//! connection that sent it (its PUBACK goes out once ingest has it). A
//! payload that does not decode is counted (`messages_malformed_total`),
//! logged at most `ingest.malformed_log_per_s` times a second, and never
//! forwarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fleetgate_wire::json::{decode_position_any, decode_status_any};
use fleetgate_wire::{Position, Status};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::broker::BrokerPublisher;
use crate::config::IngestConfig;
use crate::metrics::Metrics;
use crate::topics::{dashboard_topic, device_topic, DeviceTopicKind, VehicleId};

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

/// Ingest has stopped (the gateway is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("ingest has stopped")]
pub struct IngestClosed;

impl IngestSender {
    /// For QoS 0: never waits; a full queue drops the publish (counted).
    pub fn offer(&self, publish: VehiclePublish) {
        Metrics::inc(&self.metrics.messages_received_total);
        if self.queue.try_send(publish).is_err() {
            Metrics::inc(&self.metrics.ingest_dropped_total);
        }
    }

    /// For QoS 1 and 2: waits for room, so the PUBACK means "ingest has it".
    pub async fn deliver(&self, publish: VehiclePublish) -> Result<(), IngestClosed> {
        Metrics::inc(&self.metrics.messages_received_total);
        self.queue.send(publish).await.map_err(|_| IngestClosed)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the ingest task.
pub fn spawn(
    config: &IngestConfig,
    metrics: Arc<Metrics>,
    publisher: BrokerPublisher,
) -> (IngestSender, tokio::task::JoinHandle<()>) {
    let (queue, mut rx) = mpsc::channel(config.queue.get());
    let mut ingest = Ingest {
        metrics: metrics.clone(),
        publisher,
        malformed_log: RateLimit::new(config.malformed_log_per_s),
    };
    let task = tokio::spawn(async move {
        while let Some(publish) = rx.recv().await {
            ingest.handle(publish);
        }
    });
    (IngestSender { queue, metrics }, task)
}

struct Ingest {
    metrics: Arc<Metrics>,
    publisher: BrokerPublisher,
    malformed_log: RateLimit,
}

impl Ingest {
    fn handle(&mut self, publish: VehiclePublish) {
        let json = match publish.kind {
            DeviceTopicKind::Position => {
                match decode_position_any(&publish.payload, publish.received_ms) {
                    Ok(p) => {
                        Metrics::inc(&self.metrics.messages_decoded_total_position);
                        serde_json::to_vec(&PositionView::new(
                            &publish.vehicle,
                            &p,
                            publish.received_ms,
                        ))
                    }
                    Err(e) => return self.malformed(&publish, e),
                }
            }
            DeviceTopicKind::Status => {
                match decode_status_any(&publish.payload, publish.received_ms) {
                    Ok(s) => {
                        Metrics::inc(&self.metrics.messages_decoded_total_status);
                        serde_json::to_vec(&StatusView::new(
                            &publish.vehicle,
                            &s,
                            publish.received_ms,
                        ))
                    }
                    Err(e) => return self.malformed(&publish, e),
                }
            }
        };
        let json = match json {
            Ok(json) => json,
            Err(e) => {
                // Only non-finite floats could do this, and decoding rejects them.
                tracing::error!(error = %e, "cannot render dashboard JSON");
                return;
            }
        };
        self.publisher.publish(
            device_topic(&publish.vehicle, publish.kind),
            publish.payload,
        );
        if self.publisher.publish(
            dashboard_topic(&publish.vehicle, publish.kind),
            Bytes::from(json),
        ) {
            Metrics::inc(&self.metrics.messages_published_total);
        }
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

/// The JSON a dashboard sees on `fleet/<vid>/position`.
#[derive(Debug, Serialize)]
pub struct PositionView<'a> {
    pub vehicle_id: &'a str,
    pub seq: u32,
    pub time_ms: u64,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub heading_deg: f64,
    pub fix_valid: bool,
    pub ignition: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<u32>,
    pub received_ms: u64,
}

impl<'a> PositionView<'a> {
    pub fn new(vehicle: &'a VehicleId, p: &Position, received_ms: u64) -> Self {
        PositionView {
            vehicle_id: vehicle.as_str(),
            seq: p.seq,
            time_ms: p.time_ms,
            lat: p.lat_deg(),
            lon: p.lon_deg(),
            speed_kmh: (p.speed_kmh() * 10.0).round() / 10.0,
            heading_deg: (p.heading_deg() * 10.0).round() / 10.0,
            fix_valid: p.fix_valid(),
            ignition: p.ignition(),
            odometer_m: p.odometer_m,
            received_ms,
        }
    }
}

/// The JSON a dashboard sees on `fleet/<vid>/status`.
#[derive(Debug, Serialize)]
pub struct StatusView<'a> {
    pub vehicle_id: &'a str,
    pub online: bool,
    pub ignition: bool,
    pub supply_mv: u16,
    pub firmware: String,
    pub time_ms: u64,
}

impl<'a> StatusView<'a> {
    pub fn new(vehicle: &'a VehicleId, s: &Status, received_ms: u64) -> Self {
        let f = s.firmware;
        StatusView {
            vehicle_id: vehicle.as_str(),
            online: s.online,
            ignition: s.ignition,
            supply_mv: s.supply_mv,
            firmware: format!("{}.{}.{}", f.major, f.minor, f.patch),
            time_ms: if s.time_ms == 0 {
                received_ms
            } else {
                s.time_ms
            },
        }
    }
}

/// At most `per_s` events a second; reports how many it suppressed since
/// the last one it allowed.
pub struct RateLimit {
    per_s: u32,
    window_s: u64,
    used: u32,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub fn new(per_s: u32) -> Self {
        RateLimit {
            per_s,
            window_s: 0,
            used: 0,
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn allow(&mut self) -> Option<u64> {
        let now_s = now_ms() / 1000;
        if now_s != self.window_s {
            self.window_s = now_s;
            self.used = 0;
        }
        if self.used < self.per_s {
            self.used += 1;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
