//! fleetgate: an edge gateway for vehicle telematics.
//!
//! Vehicles publish compact postcard positions over MQTT to the gateway's
//! edge; the gateway decodes them, keeps the fleet's live state, fans
//! updates out to dashboards (MQTT through an embedded rumqttd, WebSockets,
//! the live map) and upstream to RabbitMQ through a durable disk spool.
//! `main` parses configuration and calls [`run`]; tests call [`start`] with
//! listeners bound to `127.0.0.1:0`.
//!
//! # Layout
//!
//! The stages, in the order the data flows:
//!
//! - [`edge`]: the one MQTT port; vehicles stay here, other clients are
//!   handed to the broker.
//! - [`ingest`]: decodes vehicle payloads; owns the fleet state.
//! - [`fleet`]: the live state: vehicles, sequence numbers, status,
//!   packages, events.
//! - [`fanout`]: the bounded-memory fan-out with named full-queue policies.
//! - The consumers, each with its own fan-out queue:
//!   - [`broker`]: the embedded rumqttd, and its republisher
//!     ([`broker::republish`]) that feeds MQTT dashboards;
//!   - [`api`]: HTTP: the live map, the WebSocket feed ([`api::live`]),
//!     REST, health, metrics;
//!   - [`bridge`]: the feeder ([`bridge::feeder`]) into a durable disk
//!     spool, and AMQP 0-9-1 to RabbitMQ.
//! - [`smq`]: the NSQ-like queue the gateway replaces (seed 002), its
//!   consumer port and `/put`, riding on the broker through a local link.
//! - [`pubsub`]: the WebSocket pub/sub proxy the gateway replaces (seed
//!   003) at `GET /message`, riding on the broker the same way.
//!
//! The two ways back:
//!
//! - commands: the bridge's downlink ([`bridge::downlink`]) → the broker
//!   (`v/<vid>/cmd`) → the edge's vehicle registry ([`edge::registry`]) →
//!   the device;
//! - notifications: the bridge's downlink → a user's mailbox
//!   ([`bridge::mailboxes`]) → `GET /notification` ([`api::notifications`]).
//!
//! Shared vocabulary, used by every stage and owning no task:
//!
//! - [`config`]: the TOML configuration, every field optional, and the
//!   memory bound it gives ([`config::budget`]).
//! - [`topics`]: the topic scheme, AMQP routing keys and vehicle ids;
//!   [`topic_filter`]: MQTT filter matching.
//! - [`auth`]: who may connect and what each client may publish, subscribe
//!   to and receive (password file, ACL file, roles), asked by the edge and
//!   the HTTP API.
//! - [`views`]: the JSON shapes dashboards see.
//! - [`metrics`]: every counter, rendered for `/metrics`.
//! - [`acks`]: acknowledgements that mean "kept" — the third way back,
//!   from the bridge feeder (spool appended) to the edge (PUBACK sent).
//! - [`clock`]: wall-clock milliseconds.
//! - [`log_limit`]: the log-line rate limiter.
//! - [`accept`]: the accept step (with its back-off) every listener shares;
//!   [`tls`]: the TLS handshake (under a timeout) for the MQTT TLS port and
//!   HTTPS, and client certificates as identity.
//!
//! Entry points: [`start`] and [`run`] here, `main.rs`, and `demo` (the
//! gateway plus a simulated fleet, for `fleetgate demo`; feature `demo`,
//! on by default).

// The stages, in the order the data flows (as listed above).
pub mod edge;

pub mod ingest;

pub mod fleet;

pub mod fanout;

// The consumers, and the services riding on the broker.
pub mod broker;

pub mod api;

pub mod bridge;

pub mod smq;

pub mod pubsub;

// Shared vocabulary: used by every stage, owning no task.
pub mod accept;
pub mod acks;
pub mod auth;
pub mod clock;
pub mod config;
pub mod log_limit;
pub mod metrics;
pub mod tls;
pub mod topic_filter;
pub mod topics;
pub mod views;

#[cfg(feature = "demo")]
pub mod demo;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;
use metrics::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("listener has no local address: {0}")]
    LocalAddr(std::io::Error),
    #[error(transparent)]
    Fanout(#[from] fanout::FanoutError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error("refusing to start: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("refusing to start: {0}")]
    Tls(#[from] tls::TlsError),
}

/// The sockets the gateway serves on, bound before it starts so that a
/// caller (a test, systemd socket activation) can choose them.
pub struct Listeners {
    pub mqtt: TcpListener,
    pub http: TcpListener,
    /// The SMQ consumer port; `None` when `smq.enabled` is off.
    pub smq: Option<TcpListener>,
    /// The MQTT TLS port; used when `tls.mqtt_listen` is set.
    pub mqtt_tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Listeners {
            mqtt: bind(config.mqtt.listen).await?,
            http: bind(config.http.listen).await?,
            smq: match config.smq.enabled {
                true => Some(bind(config.smq.listen).await?),
                false => None,
            },
            mqtt_tls: match config.tls.mqtt_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }

    /// Binds each on `127.0.0.1:0`, for tests.
    pub async fn loopback() -> Result<Listeners, StartError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = || async move {
            TcpListener::bind(any)
                .await
                .map_err(|source| StartError::Bind { addr: any, source })
        };
        Ok(Listeners {
            mqtt: bind().await?,
            http: bind().await?,
            smq: Some(bind().await?),
            mqtt_tls: Some(bind().await?),
        })
    }
}

/// A running gateway. Dropping it stops it too, less gracefully than
/// [`Gateway::shutdown`].
pub struct Gateway {
    pub mqtt_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The SMQ consumer port, when `smq.enabled`.
    pub smq_addr: Option<SocketAddr>,
    /// The MQTT TLS port, when `tls.mqtt_listen` is set.
    pub mqtt_tls_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// Who may connect and do what; [`auth::Auth::reload`] re-reads its
    /// files (SIGHUP in [`run`]).
    pub auth: Arc<auth::Auth>,
    /// The TLS certificates in force, when TLS is on; [`tls::Tls::reload`]
    /// re-reads them (SIGHUP in [`run`]).
    pub tls: Option<Arc<tls::Tls>>,
    /// Tell the servers to stop: the edge (each port) and the HTTP server.
    stop_servers: Vec<oneshot::Sender<()>>,
    /// Stop when told: the edge (each port) and the HTTP server.
    servers: Vec<JoinHandle<()>>,
    /// Drain when told, in this order: ingest (its queue), then the bridge
    /// feeder (the fan-out, into the spool).
    stop_ingest: Option<oneshot::Sender<()>>,
    draining: Vec<JoinHandle<()>>,
    /// Run until aborted: the republisher, the uplink, the stats.
    background: Vec<JoinHandle<()>>,
    /// The fleet's owner, for questions and package changes.
    pub fleet: ingest::FleetQueries,
    _broker: broker::Broker,
}

/// How long a shutdown waits for ingest and the bridge feeder to drain
/// before it gives up on them (logged): a stuck disk must not hang a
/// SIGTERM forever. What was not drained is what a SIGKILL would lose.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Gateway {
    /// Stops in the order the data flows, so nothing acknowledged is lost:
    /// the edge stops accepting and closes every connection (a publish not
    /// yet acknowledged is resent by its client), the HTTP server stops;
    /// ingest drains its queue into the fan-out; the bridge feeder drains
    /// the fan-out into the spool and fsyncs it; then the rest is stopped.
    /// The spool keeps what the uplink had not had confirmed; it is resent
    /// after a restart.
    pub async fn shutdown(mut self) {
        for stop in self.stop_servers.drain(..) {
            let _ = stop.send(());
        }
        for task in self.servers.drain(..) {
            let _ = task.await;
        }
        if let Some(stop) = self.stop_ingest.take() {
            let _ = stop.send(());
        }
        for task in self.draining.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, task).await.is_err() {
                tracing::error!(
                    timeout_s = DRAIN_TIMEOUT.as_secs(),
                    "shutdown: a drain did not finish in time; what it held is lost"
                );
                abort.abort();
            }
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        tracing::info!("gateway stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in self
            .servers
            .iter()
            .chain(&self.draining)
            .chain(&self.background)
        {
            task.abort();
        }
    }
}

/// Starts every part of the gateway on the given listeners and returns once
/// it serves.
pub async fn start(config: Config, listeners: Listeners) -> Result<Gateway, StartError> {
    let metrics = Arc::new(Metrics::default());
    let budget = config.memory_budget();
    metrics
        .memory_bound_bytes
        .store(budget.total(), std::sync::atomic::Ordering::Relaxed);
    tracing::info!("memory bound from the configuration:\n{budget}");
    // First: a bad security file refuses to start before anything listens.
    let auth = Arc::new(auth::Auth::new(&config.auth, metrics.clone())?);
    if auth.enforced() {
        tracing::info!(
            password_file = ?config.auth.password_file,
            acl_file = ?config.auth.acl_file,
            allow_anonymous = config.auth.anonymous_allowed(),
            "authentication and ACLs on"
        );
    }
    let tls = tls::Tls::new(&config.tls, metrics.clone())?;
    let mqtt_addr = listeners.mqtt.local_addr().map_err(StartError::LocalAddr)?;
    let http_addr = listeners.http.local_addr().map_err(StartError::LocalAddr)?;

    let registry = edge::registry::VehicleRegistry::new(
        config.mqtt.vehicle_command_queue.get(),
        metrics.clone(),
    );
    let broker = broker::Broker::start(
        &config.broker,
        &config.mqtt,
        metrics.clone(),
        registry.clone(),
    )
    .await?;
    let fanout = fanout::Fanout::new(
        config.fanout.max_subscribers.get(),
        config.fleet.max_vehicles.get(),
        config.fanout.events_queue.get(),
        metrics.clone(),
    );
    let republisher = broker::republish::spawn(
        &fanout,
        &config.fanout,
        broker.publisher.clone(),
        metrics.clone(),
    )?;
    let durable = acks::Durable::new(config.mqtt.max_connections.get());
    let mailboxes = bridge::mailboxes::Mailboxes::new(
        config.bridge.mailbox_per_user.get(),
        config.bridge.max_mailboxes.get(),
        metrics.clone(),
    );
    let ingest = ingest::spawn(
        &config,
        metrics.clone(),
        broker.publisher.clone(),
        &fanout,
        durable.clone(),
        mailboxes.clone(),
    );
    let fleet_queries = ingest.queries.clone();
    let mut draining = vec![ingest.task];
    let mut background = vec![republisher];
    if config.bridge.enabled {
        let bridge = bridge::start(
            &config,
            &fanout,
            metrics.clone(),
            broker.publisher.clone(),
            mailboxes.clone(),
            durable,
        )?;
        draining.push(bridge.feeder);
        background.extend(bridge.others);
    }

    let http_ingest = ingest.sender.clone();
    let ctx = Arc::new(edge::EdgeContext::new(
        &config.mqtt,
        &config.broker,
        edge::EdgeLinks {
            metrics: metrics.clone(),
            ingest: ingest.sender,
            publisher: broker.publisher.clone(),
            registry,
            internal: broker.internal.clone(),
            auth: auth.clone(),
        },
    ));
    let smq = match (config.smq.enabled, listeners.smq) {
        (true, Some(listener)) => {
            Some(smq::start(&config.smq, &broker, ctx.clone(), metrics.clone(), listener).await?)
        }
        _ => None,
    };
    let pubsub = match config.pubsub.enabled {
        true => Some(pubsub::start(&config.pubsub, &broker, ctx.clone(), metrics.clone()).await?),
        false => None,
    };
    let mut stop_servers = Vec::new();
    let mut servers = Vec::new();
    let mut serve_edge = |listener, tls| {
        let (stop, stopped) = oneshot::channel::<()>();
        stop_servers.push(stop);
        servers.push(tokio::spawn(edge::serve(
            listener,
            ctx.clone(),
            tls,
            async {
                let _ = stopped.await;
            },
        )));
    };
    serve_edge(listeners.mqtt, None);
    let mut mqtt_tls_addr = None;
    if let (Some(listener), Some(tls), Some(_)) = (listeners.mqtt_tls, &tls, config.tls.mqtt_listen)
    {
        mqtt_tls_addr = Some(listener.local_addr().map_err(StartError::LocalAddr)?);
        serve_edge(listener, Some(tls.clone()));
    }

    let (stop_http, http_stopped) = oneshot::channel::<()>();
    stop_servers.push(stop_http);
    let mut table = api::routes().with_state(api::AppState {
        metrics: metrics.clone(),
        fanout,
        fleet: fleet_queries.clone(),
        ingest: http_ingest,
        mailboxes,
        http: Arc::new(config.http.clone()),
    });
    if let Some(smq) = &smq {
        table = table.merge(smq::http::router(smq.hub.clone()));
    }
    if let Some(hub) = pubsub {
        let stall = std::time::Duration::from_millis(config.http.ws_stall_timeout_ms);
        table = table.merge(pubsub::router(hub, stall));
    }
    let app = api::openapi::app(table, config.http.max_body_bytes);
    // Outermost: with a password file, every route but the page and
    // /healthz needs a token (api::auth).
    let app = app.layer(axum::middleware::from_fn_with_state(
        api::auth::HttpAuth {
            auth: auth.clone(),
            metrics: metrics.clone(),
        },
        api::auth::require_token,
    ));
    let smq_addr = smq.as_ref().map(|s| s.addr);
    background.extend(smq.map(|s| s.task));
    let http_config = config.http.clone();
    let http_metrics = metrics.clone();
    let https = tls.clone().filter(|_| config.tls.https);
    servers.push(tokio::spawn(async move {
        let stopped = async {
            let _ = http_stopped.await;
        };
        api::serve::serve(
            listeners.http,
            app,
            &http_config,
            https,
            http_metrics,
            stopped,
        )
        .await;
    }));

    tracing::info!(%mqtt_addr, %http_addr, gateway_id = %config.gateway_id.0, "fleetgate serving");
    Ok(Gateway {
        mqtt_addr,
        http_addr,
        smq_addr,
        mqtt_tls_addr,
        metrics,
        auth,
        tls,
        stop_servers,
        servers,
        stop_ingest: Some(ingest.stop),
        draining,
        background,
        fleet: fleet_queries,
        _broker: broker,
    })
}

/// Runs the gateway until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let gateway = start(config, listeners).await?;
    let reloads = tokio::spawn(reload_on_sighup(gateway.auth.clone(), gateway.tls.clone()));
    shutdown.await;
    reloads.abort();
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

/// Re-reads the password and ACL files, and the TLS certificates, on every
/// SIGHUP (`systemctl reload`). A bad file keeps what is in force and says
/// why.
pub async fn reload_on_sighup(auth: Arc<auth::Auth>, tls: Option<Arc<tls::Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: no reloads");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match auth.reload() {
                Ok(()) => tracing::info!("SIGHUP: password and ACL files reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: reload refused; the files in force stay")
                }
            }
            match tls.as_deref().map(tls::Tls::reload) {
                None => {}
                Some(Ok(())) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                Some(Err(e)) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS reload refused; the certificates in force stay"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    drop((auth, tls));
}
