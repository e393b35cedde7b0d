//! The MQTT republisher: the fan-out's consumer for MQTT dashboards.
//!
//! In: fleet updates from its own fan-out queue (`fanout.mqtt_queue`,
//! policy `fanout.mqtt_when_full`, by default `drop_oldest`: a dashboard
//! topic is a stream, and at normal load nothing is lost). Out: JSON on
//! `fleet/<vid>/position`, `fleet/<vid>/status`, `fleet/events/<kind>` and
//! `fleet/events/package`,
//! through the broker publisher. Bound: its queue, one batch buffer and one
//! JSON buffer, reused.
//!
//! Before it: the fan-out. After it: rumqttd, and the dashboards subscribed
//! there.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::broker::BrokerPublisher;
use crate::config::FanoutConfig;
use crate::fanout::{Fanout, FanoutError, Filter, SubscribeOptions};
use crate::fleet::Update;
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;
use crate::topics::{
    dashboard_topic, event_topic, DeviceTopicKind, DISPATCH_EVENT_KIND, PACKAGE_EVENTS_TOPIC,
};
use crate::views::{DispatchEventView, EventView, PositionView, StatusView};

pub fn spawn(
    fanout: &Fanout,
    config: &FanoutConfig,
    broker: BrokerPublisher,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, FanoutError> {
    let mut subscription = fanout.subscribe(SubscribeOptions {
        name: "mqtt",
        policy: config.mqtt_when_full,
        capacity: config.mqtt_queue.get(),
        filter: Filter::All,
    })?;
    Ok(tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut json = Vec::with_capacity(512);
        let mut lag_log = RateLimit::new(1);
        loop {
            let lagged = subscription.recv(&mut batch).await;
            if lagged > 0 {
                if let Some(suppressed) = lag_log.allow() {
                    tracing::warn!(
                        lagged,
                        suppressed,
                        "MQTT republisher fell behind; oldest updates dropped"
                    );
                }
            }
            for update in batch.drain(..) {
                let topic = match &update {
                    Update::Checkpoint(_) => continue,
                    Update::Position(p) => dashboard_topic(&p.vehicle, DeviceTopicKind::Position),
                    Update::Status(s) => dashboard_topic(&s.vehicle, DeviceTopicKind::Status),
                    Update::Event(e) => event_topic(e.kind.topic_name()),
                    Update::Package(_) => PACKAGE_EVENTS_TOPIC.to_owned(),
                    Update::Dispatch(_) => event_topic(DISPATCH_EVENT_KIND),
                };
                json.clear();
                let rendered = match &update {
                    Update::Position(p) => write_json(&mut json, &PositionView::of(p)),
                    Update::Status(s) => write_json(&mut json, &StatusView::of(s)),
                    Update::Event(e) => write_json(&mut json, &EventView::of(e)),
                    Update::Package(p) => write_json(&mut json, &p.package),
                    Update::Dispatch(d) => write_json(&mut json, &DispatchEventView::of(d)),
                    Update::Checkpoint(_) => false,
                };
                if rendered && broker.publish(topic, Bytes::copy_from_slice(&json)) {
                    Metrics::inc(&metrics.messages_published_total);
                }
            }
        }
    }))
}

fn write_json(out: &mut Vec<u8>, value: &impl Serialize) -> bool {
    match serde_json::to_writer(out, value) {
        Ok(()) => true,
        Err(e) => {
            // Only non-finite floats could do this, and decoding rejects them.
            tracing::error!(error = %e, "cannot render dashboard JSON");
            false
        }
    }
}
