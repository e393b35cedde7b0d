//! The bridge's feeder: fleet updates in, spool records out.
//!
//! In: the bridge's fan-out subscription (policy `block`). Out: one spool
//! record per update that goes upstream, appended in order; a wake-up for
//! the uplink. Positions are downsampled to at most one per vehicle per
//! `bridge.position_interval_ms` (the dropped ones are counted in
//! `bridge_positions_downsampled_total`); statuses, events and package
//! changes always go. An event's record carries the AMQP `message_id`
//! `<gateway_id>-event-<event_id>` (`crate::fleet::events`), the same for
//! every resend, so a consumer dedupes by it; other records get theirs from
//! the uplink. Bound: one batch of records, and one timestamp per vehicle
//! slot (`fleet.max_vehicles`).
//!
//! Acknowledgements: after each append it advances the durable watermark
//! to the last [`Update::Checkpoint`] appended (`crate::acks`), so the edge
//! acknowledges a device's QoS 1/2 publish only once the spool has it.
//!
//! At shutdown it drains: once ingest has stopped and the fan-out's
//! producer is gone, it appends what is left, fsyncs the spool and ends, so
//! a SIGTERM loses nothing the edge acknowledged.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::record::{Target, UplinkRecord};
use super::spool::RecordClass;
use super::SharedSpool;
use crate::acks::Durable;
use crate::config::{BridgeConfig, FsyncMode};
use crate::fanout::Subscription;
use crate::fleet::Update;
use crate::metrics::Metrics;
use crate::topics::{upstream_event_key, upstream_key, DeviceTopicKind, DISPATCH_EVENT_KIND};
use crate::views::{DispatchEventView, EventView, PositionView, StatusView};

pub async fn run(
    mut subscription: Subscription,
    spool: SharedSpool,
    config: BridgeConfig,
    gateway_id: String,
    max_vehicles: usize,
    metrics: Arc<Metrics>,
    durable: Arc<Durable>,
) {
    let mut last_sent_ms = vec![None::<u64>; max_vehicles];
    let mut batch = Vec::new();
    let fsync_every = Duration::from_millis(config.spool_fsync_interval_ms.max(1));
    let mut fsync_tick = tokio::time::interval(fsync_every);
    let mut dirty = false;
    loop {
        tokio::select! {
            received = subscription.recv_until_closed(&mut batch) => {
                if received.is_none() {
                    // Ingest has stopped and everything it published is
                    // appended: make it durable, and end.
                    if let Some(Err(e)) = spool.with(|s| s.flush()).await {
                        tracing::error!(error = %e, "spool fsync at shutdown failed");
                    }
                    tracing::info!("bridge feeder drained into the spool");
                    return;
                }
            }
            _ = fsync_tick.tick(), if dirty && config.spool_fsync == FsyncMode::Interval => {
                dirty = false;
                if let Some(Err(e)) = spool.with(|s| s.flush()).await {
                    tracing::error!(error = %e, "spool fsync failed");
                }
                continue;
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        // The highest checkpoint in this batch: once what came before it is
        // appended, the publishes up to it are kept.
        let mut checkpoint = None;
        for update in batch.drain(..) {
            if let Update::Checkpoint(ticket) = update {
                checkpoint = Some(ticket);
            } else if let Some(record) =
                to_record(&update, &config, &gateway_id, &mut last_sent_ms, &metrics)
            {
                records.push(record);
            }
        }
        if records.is_empty() {
            if let Some(ticket) = checkpoint {
                durable.advance(ticket);
            }
            continue;
        }
        let always = config.spool_fsync == FsyncMode::Always;
        let appended = spool
            .with(move |s| {
                let mut appended = 0u64;
                let mut failed = None;
                for (class, payload) in &records {
                    match s.append(*class, payload) {
                        Ok(_) => appended += 1,
                        Err(e) => failed = Some(e),
                    }
                }
                let flushed = if always { s.flush().err() } else { None };
                (appended, records.len() as u64 - appended, failed, flushed)
            })
            .await;
        match appended {
            Some((ok, lost, failed, flushed)) => {
                metrics
                    .bridge_records_spooled_total
                    .fetch_add(ok, std::sync::atomic::Ordering::Relaxed);
                if lost > 0 {
                    metrics
                        .bridge_spool_append_failed_total
                        .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(e) = failed {
                    // A full disk, most likely: counted, logged, and the gateway serves on.
                    tracing::error!(error = %e, lost, "spool append failed; records dropped");
                }
                if let Some(e) = flushed {
                    tracing::error!(error = %e, "spool fsync failed");
                }
                dirty = !always;
                spool.appended.notify_one();
            }
            None => tracing::error!("spool task failed"),
        }
        // Appended (in the page cache, or on disk with fsync "always"), or
        // counted as lost: either way nothing more will come of them.
        if let Some(ticket) = checkpoint {
            durable.advance(ticket);
        }
    }
}

/// One update as a spool record, or `None` when it does not go upstream.
fn to_record(
    update: &Update,
    config: &BridgeConfig,
    gateway_id: &str,
    last_sent_ms: &mut [Option<u64>],
    metrics: &Metrics,
) -> Option<(RecordClass, Vec<u8>)> {
    let (class, target, routing_key, message_id, timestamp_ms, body) = match update {
        Update::Position(p) => {
            let last = last_sent_ms.get_mut(p.slot as usize)?;
            let due = config.position_interval_ms == 0
                || last
                    .is_none_or(|t| p.received_ms.saturating_sub(t) >= config.position_interval_ms);
            if !due {
                Metrics::inc(&metrics.bridge_positions_downsampled_total);
                return None;
            }
            *last = Some(p.received_ms);
            (
                RecordClass::Position,
                Target::TopicExchange,
                upstream_key(&p.vehicle, DeviceTopicKind::Position),
                None,
                p.received_ms,
                json(&PositionView::of(p))?,
            )
        }
        Update::Status(s) => (
            RecordClass::Status,
            Target::TopicExchange,
            upstream_key(&s.vehicle, DeviceTopicKind::Status),
            None,
            s.received_ms,
            json(&StatusView::of(s))?,
        ),
        Update::Event(e) => (
            RecordClass::Event,
            Target::TopicExchange,
            upstream_event_key(e.kind.topic_name()),
            event_message_id(gateway_id, e.id),
            e.time_ms,
            json(&EventView::of(e))?,
        ),
        Update::Checkpoint(_) => return None,
        Update::Dispatch(d) => (
            RecordClass::Event,
            Target::TopicExchange,
            upstream_event_key(DISPATCH_EVENT_KIND),
            event_message_id(gateway_id, d.event_id),
            d.time_ms,
            json(&DispatchEventView::of(d))?,
        ),
        Update::Package(p) => (
            RecordClass::Package,
            Target::PackageQueue,
            String::new(),
            // The package-tracking consumers pick messages by message_id.
            Some(p.package.vehicle_id.clone()),
            p.time_ms,
            json(&p.package)?,
        ),
    };
    let record = UplinkRecord {
        target,
        routing_key,
        message_id,
        timestamp_ms,
        body,
    };
    match record.encode() {
        Ok(payload) => Some((class, payload)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a spool record");
            None
        }
    }
}

/// `<gateway_id>-event-<event_id>`; `None` (the uplink's spool-id form) for
/// an event that never went through the event log.
fn event_message_id(gateway_id: &str, event_id: u64) -> Option<String> {
    (event_id != 0).then(|| format!("{gateway_id}-event-{event_id}"))
}

fn json(value: &impl Serialize) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}
