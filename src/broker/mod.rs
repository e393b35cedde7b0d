//! The embedded rumqttd: routing for dashboards and other MQTT clients.
//!
//! In: clients the edge hands over (in-process connections, through
//! [`InternalBroker::connections`]), and the gateway's own publishes through
//! [`BrokerPublisher`].
//! Out: rumqttd's deliveries to those clients, and commands published to
//! `v/<vid>/cmd` by anyone, passed to a [`CommandSink`] (the edge's vehicle
//! registry).
//!
//! Bound: rumqttd (vendored and patched, `vendor/rumqttd/PATCHES.md`) keeps
//! one commit log per subscription filter some client holds, of at most
//! `(max_segment_count + 1) × max_segment_size_bytes` bytes, freed when no
//! client holds it; the edge admits at most `broker.max_filters` live filters
//! (`edge::filters`), so the logs stay under [`BrokerConfig::log_bound_bytes`].
//! It keeps at most `broker.max_persistent_sessions` disconnected persistent
//! sessions (the one disconnected longest ago is evicted first) and nothing
//! of a clean session once it is gone. Messages it skips for a subscriber
//! that fell too far behind are counted in rumqttd and copied into
//! `broker_lagged_messages_total` once a second by a task of this module. The gateway's own
//! publishes wait in a queue of `broker.publish_queue` entries (drop newest
//! when full, counted); rumqttd's per-link buffers behind it hold
//! `broker.link_capacity` messages (vendor patch 6), its router channel
//! 1000 events.
//!
//! Threads: rumqttd's router runs as a task of the gateway's runtime
//! (vendor patch 9: each hop to a router thread was a wake-up and a context
//! switch on both sides), so nothing here may block a worker on it: links
//! are opened with `build_async`, and threads of their own (`broker-link`
//! and the local clients') own the local links, because `LinkTx::publish`
//! blocks on the router channel. The router ends with the runtime; the
//! threads when the gateway drops its last handle. This is the only
//! module, with the edge's hand-off, that knows rumqttd.
//!
//! # Layout
//!
//! - [`link`]: the gateway's own link into rumqttd: [`BrokerPublisher`] in,
//!   commands for devices out to a [`CommandSink`].
//! - `login`: the login only the edge knows, replayed with every
//!   handed-off CONNECT.
//! - [`republish`]: the fan-out's consumer for MQTT dashboards.
//! - [`local`]: in-process clients of rumqttd with their own subscriptions
//!   ([`Broker::local_client`]; the SMQ queue is one).
//!
//! Before it: the edge (handed-off clients) and the fan-out (through the
//! republisher). After it: dashboards' subscriptions. The way back, the
//! downlink: `v/<vid>/cmd` publishes → the edge's vehicle registry
//! (`edge::registry`) → the device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::{ConnectionSettings, Router, RouterConfig, RouterTx, Server, ServerSettings};
use std::sync::mpsc;

use crate::config::{BrokerConfig, MqttConfig};
use crate::metrics::Metrics;
use crate::topics::COMMAND_FILTER;

pub mod link;
pub mod local;
mod login;
pub mod republish;

use link::{spawn_link_threads, LinkTxLimits};
pub use link::{BrokerPublisher, CommandSink, DetachedBroker};
pub use login::InternalLogin;

/// rumqttd, as the edge reaches it.
#[derive(Clone)]
pub struct InternalBroker {
    /// Serves a handed-off client's in-process connection (see
    /// `edge::handoff`): rumqttd's own connection task over a pipe.
    pub connections: rumqttd::InProcess<rumqttd::protocol::v4::V4>,
    /// What the edge logs in with; nobody else knows it.
    pub login: InternalLogin,
}

impl InternalBroker {
    /// An `InternalBroker` whose connections go to a router with no listener,
    /// for tests that need an `EdgeContext` but never hand a client off.
    #[cfg(test)]
    pub(crate) fn for_tests() -> InternalBroker {
        let config = RouterConfig {
            max_connections: 4,
            ..RouterConfig::default()
        };
        let settings = ServerSettings {
            name: "fleetgate-test".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 1)),
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                connection_timeout_ms: 5_000,
                max_payload_size: 1024,
                max_inflight_count: 10,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let router = Router::new(0, config).spawn();
        let server = Server::new(settings, router, rumqttd::protocol::v4::V4);
        InternalBroker {
            connections: server.in_process(),
            login: InternalLogin::generate(),
        }
    }
}

impl std::fmt::Debug for InternalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalBroker")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot open the gateway's local link to the embedded broker: {0}")]
    Link(String),
    #[error("cannot start the broker link thread: {0}")]
    Thread(std::io::Error),
}

/// The running embedded broker.
pub struct Broker {
    /// Where and how the edge hands clients to rumqttd.
    pub internal: InternalBroker,
    pub publisher: BrokerPublisher,
    lag_task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// The router's queue, for another local link ([`Broker::local_client`]).
    router_tx: RouterTx,
}

/// Opens a local link into the router, by client id. Awaited, never
/// blocking: the router is a task of this runtime (vendor patch 9), so a
/// worker blocked on it could be the worker it needs.
async fn open_link(name: &str, router_tx: RouterTx) -> Result<(LinkTx, LinkRx), BrokerError> {
    LinkBuilder::new(name, router_tx)
        .clean_session(true)
        .build_async()
        .await
        .map(|(tx, rx, _connack)| (tx, rx))
        .map_err(|e| BrokerError::Link(format!("{e:?}")))
}

/// In-process clients the router makes room for besides the gateway's own
/// link ([`Broker::local_client`]): the SMQ queue, the pub/sub proxy.
pub const LOCAL_CLIENTS: usize = 2;

impl Drop for Broker {
    fn drop(&mut self) {
        self.lag_task.abort();
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The filter the gateway's local link subscribes to for the downlink.
impl Broker {
    /// Starts the router, the in-process connection handler and the
    /// gateway's local link. Must be called inside a tokio runtime.
    ///
    /// rumqttd listens on no socket at all: the edge hands clients over
    /// through in-process pipes (vendor patch 8), so nothing but the edge
    /// can reach it, and there is no port to race for.
    pub async fn start(
        broker: &BrokerConfig,
        mqtt: &MqttConfig,
        metrics: Arc<Metrics>,
        commands: Arc<dyn CommandSink>,
    ) -> Result<Broker, BrokerError> {
        let router_config = RouterConfig {
            // +2: the gateway's local link, and slack for a hand-off racing a close.
            // + LOCAL_CLIENTS: in-process clients such as the SMQ queue.
            max_connections: broker.max_connections.get() + 2 + LOCAL_CLIENTS,
            max_outgoing_packet_count: 200,
            max_segment_size: broker.max_segment_size_bytes.get().max(1024),
            max_segment_count: broker.max_segment_count.get(),
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
            max_persistent_sessions: Some(broker.max_persistent_sessions.get()),
            lagged_messages: Default::default(),
            link_capacity: Some(broker.link_capacity.get()),
        };
        let lagged = Arc::clone(&router_config.lagged_messages);
        let router_tx = Router::new(0, router_config).spawn_task();

        let internal_login = InternalLogin::generate();
        let settings = ServerSettings {
            name: "fleetgate-internal".into(),
            // never bound: the server is only used in-process
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                // The edge already enforced its own CONNECT timeout.
                connection_timeout_ms: 5_000,
                max_payload_size: mqtt.max_packet_size_bytes.get(),
                // Despite its name, how many packets rumqttd parses from one
                // client's socket before handing them to the router: bigger
                // batches, fewer router wake-ups (fan-in-max at QoS 1: 15 k
                // → 22 k msg/s sustained, p99 at 15 k 36 → 4 ms). The packets
                // are slices of bytes already read, so the memory bound is
                // the read buffer, not this count.
                max_inflight_count: 1000,
                // Only the edge connects (in-process); the login stays as
                // a second lock should a listener ever be started.
                // rumqttd compares in constant time.
                auth: Some(HashMap::from([(
                    internal_login.username.clone(),
                    internal_login.password.clone(),
                )])),
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let server = Server::new(settings, router_tx.clone(), rumqttd::protocol::v4::V4);
        let connections = server.in_process();

        let (mut link_tx, link_rx) = open_link("fleetgate-gateway", router_tx.clone()).await?;
        link_tx
            .subscribe(COMMAND_FILTER)
            .map_err(|e| BrokerError::Link(format!("{e:?}")))?;

        let (queue, rx) = mpsc::sync_channel(broker.publish_queue.get());
        let stop = Arc::new(AtomicBool::new(false));
        let backlog_limit = broker.publish_queue.get();
        spawn_link_threads(
            link_tx,
            link_rx,
            rx,
            LinkTxLimits {
                backlog: backlog_limit,
                metrics: Arc::clone(&metrics),
            },
            commands,
            stop.clone(),
        )?;

        let lag_task = tokio::spawn(copy_lag(lagged, Arc::clone(&metrics)));

        tracing::info!(
            log_bound_bytes = broker.log_bound_bytes(),
            "embedded rumqttd ready (in-process only)"
        );
        Ok(Broker {
            internal: InternalBroker {
                connections,
                login: internal_login,
            },
            publisher: BrokerPublisher::new(queue, metrics),
            lag_task,
            stop,
            router_tx,
        })
    }

    /// A new in-process client of the router with its own subscriptions:
    /// requests go in order through a queue of `queue` entries, deliveries
    /// to `sink` (see [`local`]). At most [`LOCAL_CLIENTS`] are expected.
    pub async fn local_client(
        &self,
        name: &str,
        queue: usize,
        sink: Arc<dyn local::LocalSink>,
        metrics: Arc<Metrics>,
    ) -> Result<local::LocalClient, BrokerError> {
        let link = open_link(name, self.router_tx.clone()).await?;
        local::spawn(name, link, queue.max(1), sink, metrics, self.stop.clone())
    }
}

/// How often rumqttd's lag counter is copied into the metrics.
const LAG_COPY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// At most one log line about lagging subscribers per this long, with what
/// was skipped since the last one (rumqttd's own line per skip is off with
/// the rest of its logs by default, and would flood when on).
const LAG_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Copies rumqttd's count of messages skipped for lagging subscribers into
/// `broker_lagged_messages_total`, every [`LAG_COPY_INTERVAL`] (the router
/// counts in its own task, and `/metrics` shows it at most that late), and
/// logs new skips at most once per [`LAG_LOG_INTERVAL`].
async fn copy_lag(lagged: Arc<AtomicU64>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(LAG_COPY_INTERVAL);
    let mut logged_total = 0;
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let total = lagged.load(Ordering::Relaxed);
        metrics
            .broker_lagged_messages_total
            .store(total, Ordering::Relaxed);
        let may_log = last_log.is_none_or(|at| at.elapsed() >= LAG_LOG_INTERVAL);
        if total > logged_total && may_log {
            tracing::warn!(
                skipped = total - logged_total,
                total,
                "broker: subscribers fell behind their filters' logs and skipped the oldest messages \
                 (broker.link_capacity, broker.max_segment_size_bytes; broker_lagged_messages_total)"
            );
            logged_total = total;
            last_log = Some(tokio::time::Instant::now());
        }
    }
}
