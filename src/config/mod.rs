//! Configuration: a TOML file whose every field is optional.
//!
//! In: nothing (embedded defaults), or the text of a TOML file, then CLI
//! overrides. Out: a validated [`Config`]. Every capacity that bounds memory
//! lives here, with its unit in its name; `fleetgate.example.toml` at the
//! repository root is the annotated reference, and a test parses it.
//!
//! Unknown fields are rejected: a typo in a config must not silently fall back
//! to a default. The error names the field, the line and the column.

pub mod bridge;
pub mod budget;
pub mod dispatch;
pub mod events;
pub mod geofence;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use bridge::{AmqpNodes, BridgeConfig, FsyncMode};

pub use crate::bridge::unroutable::UnroutablePolicy;
pub use crate::fanout::policy::WhenFull;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identifies this gateway upstream (AMQP `app_id`) and in logs.
    pub gateway_id: GatewayId,
    pub mqtt: MqttConfig,
    pub broker: BrokerConfig,
    pub ingest: IngestConfig,
    pub fleet: FleetConfig,
    pub geofence: geofence::GeofenceConfig,
    pub dispatch: dispatch::DispatchConfig,
    pub events: events::EventsConfig,
    pub fanout: FanoutConfig,
    pub bridge: BridgeConfig,
    pub http: HttpConfig,
    /// The SMQ queue (seed 002): consumer port and bounds (`crate::smq`).
    pub smq: crate::smq::SmqConfig,
    /// The WebSocket pub/sub proxy (seed 003) at `GET /message` (`crate::pubsub`).
    pub pubsub: crate::pubsub::PubSubConfig,
    /// Who may connect and what each client may do (`crate::auth`).
    pub auth: crate::auth::AuthConfig,
    /// MQTT over TLS and HTTPS (`crate::tls`).
    pub tls: crate::tls::TlsConfig,
    pub log: LogConfig,
    /// Where the gateway keeps state that must survive a restart.
    pub data_dir: DataDir,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct GatewayId(pub String);
impl Default for GatewayId {
    fn default() -> Self {
        GatewayId("fleetgate".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DataDir(pub PathBuf);
impl Default for DataDir {
    fn default() -> Self {
        DataDir(PathBuf::from("./data"))
    }
}

/// The edge: the one MQTT port vehicles and dashboards connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Loopback by default: reachable from other machines only with
    /// `auth.password_file` set or `auth.allow_anonymous = true`.
    pub listen: SocketAddr,
    /// Connections at once, vehicles and handed-off clients together; one
    /// more is closed straight after accept and counted as refused.
    pub max_connections: NonZeroUsize,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout_ms: u64,
    /// Largest MQTT packet accepted from a client (remaining length, bytes);
    /// a larger one closes that connection.
    pub max_packet_size_bytes: NonZeroUsize,
    /// Commands queued for one vehicle connection that is not reading;
    /// past it the newest command is dropped and counted.
    pub vehicle_command_queue: NonZeroUsize,
    /// QoS 2 publishes a vehicle may have awaiting PUBREL at once.
    pub max_qos2_inflight: NonZeroUsize,
    /// QoS 1/2 publishes of one connection whose acknowledgement waits for
    /// the spool; a connection with this many waiting is not read until
    /// some go out (backpressure, as a full ingest queue does).
    pub max_pending_acks: NonZeroUsize,
    /// Bytes all vehicle connections together may hold for partial frames
    /// longer than 1 KiB (`edge::frame_pool`); a connection whose frame
    /// does not fit is closed, and only it.
    pub large_frame_pool_bytes: NonZeroUsize,
    /// Connections one address may open per minute; one more bans it for
    /// `source_ban_s` (`edge::sources`, EMQX's flapping detection). 0: no limit.
    pub max_connects_per_source_per_minute: u32,
    pub source_ban_s: u64,
    /// Addresses whose connection rate is tracked at once; past it a new
    /// address is admitted untracked (counted).
    pub max_tracked_sources: NonZeroUsize,
    /// Apply the per-source limit to loopback addresses too (off: tools on
    /// the box may connect as fast as they like).
    pub limit_loopback_sources: bool,
    /// PUBLISHes per second one client may send; a faster client is not
    /// read until it is back within its rate (`edge::rate`). 0: no limit.
    pub max_messages_per_s_per_client: u32,
    /// Bytes per second one client may send, likewise. 0: no limit.
    pub max_bytes_per_s_per_client: u32,
    /// How far ahead of its rates a client may run (a burst), in ms.
    pub rate_burst_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: nz(6_000),
            connect_timeout_ms: 5_000,
            max_packet_size_bytes: nz(16 * 1024),
            vehicle_command_queue: nz(8),
            max_qos2_inflight: nz(16),
            max_pending_acks: nz(256),
            large_frame_pool_bytes: nz(8 * 1024 * 1024),
            max_connects_per_source_per_minute: 120,
            source_ban_s: 300,
            max_tracked_sources: nz(4096),
            limit_loopback_sources: false,
            max_messages_per_s_per_client: 0,
            max_bytes_per_s_per_client: 0,
            rate_burst_ms: 1000,
        }
    }
}

/// The embedded rumqttd that routes for dashboards and other MQTT clients.
///
/// Its memory: each subscription filter held by a client gets a commit log of
/// at most `(max_segment_count + 1) × max_segment_size_bytes` bytes, freed
/// when no client holds the filter any more (our patched rumqttd, see
/// `vendor/rumqttd/PATCHES.md`), so the edge admits at most `max_filters`
/// live filters; and each disconnected persistent session is kept, up to
/// `max_persistent_sessions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Clients handed to rumqttd at once (dashboards, tools).
    pub max_connections: NonZeroUsize,
    /// Messages rumqttd queues for one client before it stops reading logs
    /// for that client until the client has taken them (rumqttd's own was a
    /// hard-coded 200; vendor patch 6). A client slower than its filters'
    /// logs loses the oldest (counted, `broker_lagged_messages_total`).
    pub link_capacity: NonZeroUsize,
    pub max_segment_size_bytes: NonZeroUsize,
    pub max_segment_count: NonZeroUsize,
    /// Distinct subscription filters held at once, over all clients handed
    /// to rumqttd (`edge::filters`); a new one past it is refused in its
    /// SUBACK (0x80) and counted (`filters_refused_total`), until clients
    /// let filters go (UNSUBSCRIBE, disconnect, end of a persistent session).
    pub max_filters: NonZeroUsize,
    /// Disconnected persistent sessions (`clean_session = false`) rumqttd
    /// keeps; one more evicts the session disconnected longest ago (it
    /// resumes with `session_present = false`), and its filters are let go.
    /// A persistent session's filters count in `max_filters` until it ends.
    pub max_persistent_sessions: NonZeroUsize,
    /// Distinct retained topics admitted from clients; past it a retained
    /// publish is forwarded without its retain flag and counted.
    pub max_retained_topics: NonZeroUsize,
    /// Publishes queued for rumqttd's router from the gateway; past it the
    /// newest is dropped and counted (`broker_publish_dropped_total`).
    pub publish_queue: NonZeroUsize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_connections: nz(64),
            link_capacity: nz(16),
            max_segment_size_bytes: nz(64 * 1024),
            max_segment_count: nz(2),
            max_filters: nz(128),
            max_persistent_sessions: nz(200),
            max_retained_topics: nz(256),
            publish_queue: nz(2_048),
        }
    }
}

impl BrokerConfig {
    /// Upper bound of rumqttd's commit logs in bytes (payload + topic bytes).
    pub fn log_bound_bytes(&self) -> usize {
        self.max_filters
            .get()
            .saturating_mul(self.max_segment_count.get() + 1)
            .saturating_mul(self.max_segment_size_bytes.get())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Vehicle publishes waiting to be decoded. When full, a QoS 0 publish
    /// is dropped (counted) and a QoS 1/2 publish waits, pausing only the
    /// connection that sent it.
    pub queue: NonZeroUsize,
    /// At most this many malformed-payload log lines per second.
    pub malformed_log_per_s: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue: nz(4_096),
            malformed_log_per_s: 5,
        }
    }
}

/// The fleet's live state.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Vehicles the table holds, allocated at start-up. A new vehicle past
    /// it is refused (`refuse_new`), counted; known vehicles keep working.
    pub max_vehicles: NonZeroUsize,
    /// Packages the registry holds; past it an assignment is refused unless
    /// a delivered package can make room.
    pub max_packages: NonZeroUsize,
    /// Silent this long, an online vehicle becomes `unknown` (Traccar: 600 s).
    pub unknown_after_s: u64,
    /// How often silence is checked.
    pub sweep_interval_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            max_vehicles: nz(5_000),
            max_packages: nz(5_000),
            unknown_after_s: 600,
            sweep_interval_ms: 1_000,
        }
    }
}

/// The fan-out: every consumer's own bounded queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutConfig {
    /// Subscribers at once (MQTT republisher, WebSockets, bridge feeder).
    pub max_subscribers: NonZeroUsize,
    /// Events kept per conflating subscriber, oldest dropped first.
    pub events_queue: NonZeroUsize,
    /// The MQTT republisher (`fleet/...` topics): queue and policy.
    pub mqtt_queue: NonZeroUsize,
    pub mqtt_when_full: WhenFull,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            max_subscribers: nz(16),
            events_queue: nz(256),
            mqtt_queue: nz(8_192),
            mqtt_when_full: WhenFull::DropOldest,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Loopback by default, as `mqtt.listen`.
    pub listen: SocketAddr,
    /// Updates queued per WebSocket client, and its policy when full.
    pub ws_queue: NonZeroUsize,
    pub ws_when_full: WhenFull,
    /// A WebSocket frame batches what changed during this interval.
    pub ws_frame_interval_ms: u64,
    /// A WebSocket client that takes longer than this to accept a frame is
    /// disconnected (counted in `ws_stalled_disconnects_total`).
    pub ws_stall_timeout_ms: u64,
    /// `/packages/track/{vehicleId}`: at most one position frame per
    /// package per this interval as the vehicle moves (changes go at once).
    pub package_track_interval_ms: u64,
    /// Updates queued per track socket (conflated: one vehicle's latest
    /// position, its package changes in order).
    pub package_track_queue: NonZeroUsize,
    /// The largest request body any endpoint reads (SMQ `/put` included):
    /// one more byte is 413. Bodies are read one per request as it is
    /// handled and dropped with it.
    pub max_body_bytes: usize,
    /// HTTP connections at once (WebSockets included); one more is closed
    /// at accept and counted.
    pub max_connections: NonZeroUsize,
    /// A request head (line and headers) must arrive within this, or the
    /// connection is closed (Slowloris).
    pub header_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // One entry per vehicle: a full-fleet view conflates, never drops.
            ws_queue: nz(5_000),
            ws_when_full: WhenFull::Conflate,
            ws_frame_interval_ms: 100,
            ws_stall_timeout_ms: 10_000,
            package_track_interval_ms: 1_000,
            package_track_queue: nz(4),
            // A 256-vertex polygon fence is ~7 KiB of JSON, an SMQ message
            // at most smq.max_message_bytes (16 KiB).
            max_body_bytes: 64 * 1024,
            max_connections: nz(32),
            header_read_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `fleetgate=debug,rumqttd=warn`, …
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info,rumqttd=off,lapin=error".into(),
        }
    }
}

/// `http.max_body_bytes` must let a package or a geofence through, and
/// stay small next to the memory bound.
const MIN_BODY_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(crate) const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

impl Config {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mqtt.connect_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "mqtt.connect_timeout_ms must be above 0".into(),
            ));
        }
        if self.http.header_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "http.header_read_timeout_ms must be above 0".into(),
            ));
        }
        if self.fleet.sweep_interval_ms == 0 || self.http.ws_frame_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "fleet.sweep_interval_ms and http.ws_frame_interval_ms must be above 0".into(),
            ));
        }
        if self.fanout.mqtt_when_full == WhenFull::Block {
            return Err(ConfigError::Invalid(
                "fanout.mqtt_when_full = \"block\" would let dashboards stall ingest; block is only for the disk-backed bridge".into(),
            ));
        }
        if self.http.ws_when_full == WhenFull::Block {
            return Err(ConfigError::Invalid(
                "http.ws_when_full = \"block\" would let one browser stall ingest; block is only for the disk-backed bridge".into(),
            ));
        }
        if self.bridge.spool_segment_bytes < 4096
            || self.bridge.spool_max_bytes < 2 * self.bridge.spool_segment_bytes
        {
            return Err(ConfigError::Invalid(
                "bridge.spool_segment_bytes must be at least 4096 and bridge.spool_max_bytes at least twice that".into(),
            ));
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.http.max_body_bytes) {
            return Err(ConfigError::Invalid(format!(
                "http.max_body_bytes = {} must be from {MIN_BODY_BYTES} to {MAX_BODY_BYTES}",
                self.http.max_body_bytes
            )));
        }
        self.check_fleet_services().map_err(ConfigError::Invalid)?;
        self.smq.validate()?;
        let mut listeners = vec![
            ("mqtt.listen", self.mqtt.listen),
            ("http.listen", self.http.listen),
        ];
        if self.smq.enabled {
            listeners.push(("smq.listen", self.smq.listen));
        }
        self.tls.validate()?;
        if let Some(addr) = self.tls.mqtt_listen {
            listeners.push(("tls.mqtt_listen", addr));
        }
        self.auth.validate(&listeners)?;
        if self.gateway_id.0.is_empty() {
            return Err(ConfigError::Invalid("gateway_id must not be empty".into()));
        }
        Ok(())
    }
}

/// toml's message already names the field; this adds the line and column in
/// the words an operator reads first.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rfind('\n')
                .map_or(before.len(), |i| before.len() - i - 1)
                + 1;
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {column}: {message} (in `{source_line}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_defaults() {
        let c = Config::from_toml("", Path::new("empty.toml")).unwrap();
        assert_eq!(c.mqtt.listen.port(), 1883);
        assert_eq!(c.http.listen.port(), 8080);
    }

    #[test]
    fn annotated_example_parses_and_differs_from_nothing_unknown() {
        let text = include_str!("../../fleetgate.example.toml");
        let c = Config::from_toml(text, Path::new("fleetgate.example.toml")).unwrap();
        assert_eq!(c.gateway_id.0, "depot-1");
    }

    /// The bound for a small box; README's table is this budget.
    #[test]
    fn the_default_memory_bound_fits_a_small_box() {
        let total = Config::default().memory_budget().total();
        assert!(total <= 128 << 20, "default bound {} MiB", total >> 20);
    }

    /// The example's header states its bound: keep the two in step.
    #[test]
    fn the_example_costs_what_its_header_says() {
        let text = include_str!("../../fleetgate.example.toml");
        let c = Config::from_toml(text, Path::new("fleetgate.example.toml")).unwrap();
        assert_eq!(c.fleet.max_vehicles.get(), 100_000);
        let mib = format!(
            "{:.1} MiB",
            c.memory_budget().total() as f64 / (1 << 20) as f64
        );
        assert!(
            text.contains(&format!("The memory bound of this file is {mib}")),
            "{mib}"
        );
        let default = Config::default().memory_budget().total();
        let default = format!("{:.1} MiB", default as f64 / (1 << 20) as f64);
        assert!(
            text.contains(&format!("a memory bound of {default}")),
            "{default}"
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_field_and_line() {
        let text = "[mqtt]\nlisten = \"127.0.0.1:1883\"\nmax_conections = 5\n";
        let err = Config::from_toml(text, Path::new("bad.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_conections"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");
    }

    #[test]
    fn block_is_refused_for_dashboards() {
        let err = Config::from_toml("[http]\nws_when_full = \"block\"\n", Path::new("b.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("bridge"), "{err}");
        let err = Config::from_toml("[http]\nws_when_full = \"fastest\"\n", Path::new("b.toml"))
            .unwrap_err();
        assert!(
            err.to_string().contains("conflate"),
            "names the valid policies: {err}"
        );
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let err = Config::from_toml("[ingest]\nqueue = 0\n", Path::new("z.toml")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
