//! SMQ: the small NSQ-like queue (seed 002) that fleetgate replaces, with
//! its contract kept, riding on the embedded broker.
//!
//! In: `/put?topic=T` bodies (HTTP, [`http`]) and every MQTT publish to an
//! SMQ topic, by anyone. Out: messages to consumers on `smq.listen`
//! ([`tcp`]: `SUB <topic> <channel>`, `GET`, `FIN <id>`, `REQ <id>`), and
//! `/put`s to MQTT subscribers of T (`mosquitto_sub -t T`).
//!
//! How it rides the broker: an SMQ topic is a topic of the embedded
//! rumqttd. The SMQ has one in-process client of the router
//! ([`crate::broker::local`], no TCP hop) that subscribes to each SMQ
//! topic while it exists (the filter counts in `broker.max_filters`, like
//! any client's) and publishes every `/put` there; it does not deliver a
//! `/put` to the channels itself. Whatever the router forwards for T, the
//! `/put`s coming back and MQTT clients' publishes alike, is one message
//! for every channel of T ([`hub`]). A topic's subscription is queued
//! before the first publish to it on the same link, so the first `/put`
//! comes back too. Publishing under `fleet/` or to `$` topics is refused,
//! as the edge refuses it to MQTT clients; a consumer may `SUB` to a
//! `fleet/…` topic (reading is allowed).
//!
//! Why not a `$share` group per channel with QoS 1 (the idea in
//! `notes/source-systems.md`): MQTT 3.1.1 has no requeue, no per-message
//! timeout and no redelivery to another group member, and rumqttd would
//! hold a link of buffers per consumer; the channels live here instead,
//! bounded.
//!
//! Bound, and who loses what (`queue`, [`hub`]): each channel (and a
//! topic without channels yet) holds at most `smq.mem_queue_size`
//! messages, `drop_oldest` past it (`smq_dropped_total{reason="queue_full"}`);
//! all queues share `smq.max_bytes`, `drop_newest` past it
//! (`reason="memory_full"`); an MQTT publish over `smq.max_message_bytes`
//! is dropped (`reason="too_large"`); every drop is logged, rate-limited.
//! `smq.max_topics`, `smq.max_channels`, `smq.max_consumers` bound the
//! tables; past them an idle topic or channel gives its place, else the new
//! one is refused (`smq_refused_total{reason}`, `E_TOO_MANY_…`, 429).
//! Nothing is on disk: messages queued when the gateway stops are lost,
//! as in the seed's memory queue.
//!
//! # Layout
//!
//! - [`config`]: `[smq]` and its lines of the memory budget.
//! - [`protocol`]: lines, frames, ids and the seed's error strings.
//! - `queue`: one bounded queue and the shared byte pool.
//! - [`hub`]: topics, channels, in-flight counts, stats.
//! - [`tcp`]: the consumer port.
//! - [`http`]: `/ping`, `/put`, `/stats`.
//!
//! Before it: the broker (forwards), the HTTP server. After it: consumers,
//! and the broker's subscribers.

pub mod config;
pub mod http;
pub mod hub;
pub mod protocol;
mod queue;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::SmqConfig;
use hub::Hub;

use crate::broker::Broker;
use crate::edge::filters::LocalFilters;
use crate::edge::EdgeContext;
use crate::metrics::Metrics;

/// The running SMQ.
pub struct Smq {
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Opens the SMQ's link into the broker and serves consumers on `listener`.
pub async fn start(
    config: &SmqConfig,
    broker: &Broker,
    edge: Arc<EdgeContext>,
    metrics: Arc<Metrics>,
    listener: TcpListener,
) -> Result<Smq, crate::StartError> {
    let auth = edge.auth.clone();
    let filters = Arc::new(LocalFilters::new(edge));
    let hub = Arc::new(Hub::new(config.clone(), metrics.clone(), filters, auth));
    let link = broker
        .local_client(
            "fleetgate-smq",
            config.publish_queue.get(),
            hub.clone(),
            metrics,
        )
        .await?;
    hub.attach(link);
    let addr = listener
        .local_addr()
        .map_err(crate::StartError::LocalAddr)?;
    let task = tokio::spawn(tcp::serve(listener, hub.clone(), std::future::pending()));
    tracing::info!(%addr, "smq consumer port serving");
    Ok(Smq { hub, addr, task })
}
