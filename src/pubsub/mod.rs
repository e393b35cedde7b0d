//! The WebSocket pub/sub proxy (seed 003) that fleetgate replaces, with
//! its contract kept, riding on the embedded broker.
//!
//! In: WebSocket requests at `GET /message` ([`ws`]):
//! `{"action":"subscribe","topic":F}`, `{"action":"unsubscribe","topic":F}`,
//! `{"action":"publish","topic":T,"message":M}`; and every MQTT publish, by
//! anyone, to a topic some connection's filter matches. Out: to every
//! connection with a filter matching T, `{"action":"publish","topic":T,
//! "message":M}`; a `/message` publish to MQTT subscribers of T
//! (`mosquitto_sub -t T`) as the payload M.
//!
//! The contract's choices:
//! - M is a JSON string, as the seed's; its UTF-8 bytes are the MQTT
//!   payload, and an MQTT payload that is UTF-8 is M as a string (one that
//!   is not is not forwarded: `pubsub_dropped_total{reason="not_utf8"}`).
//!   A non-string `message` gets an error frame.
//! - Topics are the broker's topics, so a subscribe topic is an MQTT
//!   filter: `+` and `#` work as in MQTT (`fleet/#` sees the gateway's own
//!   JSON; reading it is allowed). Publishing under `fleet/` or to a `$`
//!   topic is refused with an error frame, as the edge refuses it to MQTT
//!   clients; subscribing to a `$` filter is refused too. A publish to
//!   `v/<vid>/pos` reaches the broker's subscribers, not ingest (as SMQ's
//!   `/put`): devices publish over MQTT.
//! - A connection whose filters overlap (`a/#` and `a/b`) gets a message
//!   matching both once: the proxy routes each message to a connection
//!   once, not once per filter.
//!
//! How it rides the broker: like the SMQ ([`crate::smq`]), one in-process
//! client of the router ([`crate::broker::local`]) whose subscriptions, the
//! **covers** of the connections' filters ([`hub`]), count in
//! `broker.max_filters` ([`crate::edge::filters::LocalFilters`]). A
//! `/message` publish goes into the broker and comes back through the link
//! like anyone's; the proxy never delivers it to its subscribers itself.
//! A subscription is queued on the link before any later publish on it, so
//! a connection's own publish after its subscribe comes back to it.
//!
//! Bound, and who loses what: each connection's queue holds
//! `pubsub.queue` frames, `drop_oldest` past it (the slow client loses its
//! oldest, `pubsub_dropped_total{reason="queue_full"}`, logged
//! rate-limited); a client that takes nothing for `http.ws_stall_timeout_ms`
//! is cut; `pubsub.max_connections` (429), `pubsub.max_topics_per_connection`,
//! `pubsub.max_filters` (error frames, status 429), `pubsub.max_message_bytes`
//! (error frame, status 413; an MQTT publish over it, or whose frame is
//! over `max_out_frame_bytes`, is not forwarded, `reason="too_large"`). Nothing is kept for a topic no one is subscribed
//! to, as in the seed.
//!
//! # Layout
//!
//! - [`config`]: `[pubsub]` and its lines of the memory budget.
//! - [`filter`]: topic and filter checks, matching, covers' algebra.
//! - [`hub`]: connections, filters, covers, outgoing queues.
//! - [`ws`]: `GET /message`, requests and error frames.
//!
//! Before it: the broker (forwards), the HTTP server. After it: WebSocket
//! clients, and the broker's subscribers.

pub mod config;
pub use crate::topic_filter as filter;
pub mod hub;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

pub use config::PubSubConfig;
use hub::Hub;

use crate::broker::Broker;
use crate::edge::filters::LocalFilters;
use crate::edge::EdgeContext;
use crate::metrics::Metrics;

/// Opens the proxy's link into the broker; [`router`] serves it.
pub async fn start(
    config: &PubSubConfig,
    broker: &Broker,
    edge: Arc<EdgeContext>,
    metrics: Arc<Metrics>,
) -> Result<Arc<Hub>, crate::StartError> {
    let auth = edge.auth.clone();
    let budget = Arc::new(LocalFilters::new(edge));
    let hub = Arc::new(Hub::new(config.clone(), metrics.clone(), budget, auth));
    let link = broker
        .local_client(
            "fleetgate-pubsub",
            config.publish_queue.get(),
            hub.clone(),
            metrics,
        )
        .await?;
    hub.attach(link);
    Ok(hub)
}

/// `GET /message` on `hub`, merged into the gateway's route table.
pub fn router<S: Clone + Send + Sync + 'static>(
    hub: Arc<Hub>,
    stall: Duration,
) -> utoipa_axum::router::OpenApiRouter<S> {
    ws::routes().with_state(ws::Ctx { hub, stall })
}

/// The stateless table behind [`router`] (for the OpenAPI checks).
pub fn routes() -> utoipa_axum::router::OpenApiRouter<ws::Ctx> {
    ws::routes()
}
