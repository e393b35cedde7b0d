//! `[bridge]`: the RabbitMQ uplink, its spool and its mailboxes.

use std::num::NonZeroUsize;

use serde::Deserialize;

use super::{nz, UnroutablePolicy};

/// The RabbitMQ nodes the bridge may use, in order of preference: one URL
/// (`url = "amqp://…"`) or several (`url = ["amqp://a…", "amqp://b…"]`), the
/// nodes of one cluster. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpNodes(Vec<String>);

impl AmqpNodes {
    /// The URLs, in order of preference.
    pub fn urls(&self) -> &[String] {
        &self.0
    }
}

impl From<String> for AmqpNodes {
    fn from(url: String) -> Self {
        AmqpNodes(vec![url])
    }
}

impl From<&str> for AmqpNodes {
    fn from(url: &str) -> Self {
        AmqpNodes(vec![url.to_owned()])
    }
}

impl From<Vec<String>> for AmqpNodes {
    fn from(urls: Vec<String>) -> Self {
        AmqpNodes(urls)
    }
}

impl<'de> Deserialize<'de> for AmqpNodes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let urls = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        };
        if urls.is_empty() || urls.iter().any(|u| u.trim().is_empty()) {
            return Err(serde::de::Error::custom(
                "bridge.url needs at least one RabbitMQ URL, none of them empty",
            ));
        }
        Ok(AmqpNodes(urls))
    }
}

/// When the spool fsyncs what it appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// After every append batch: nothing the spool took is lost to a power cut.
    Always,
    /// Every `spool_fsync_interval_ms`: a power cut loses at most that much;
    /// a process kill loses nothing (the page cache has it).
    Interval,
}

/// The upstream AMQP 0-9-1 bridge to RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Off: nothing is spooled or sent upstream.
    pub enabled: bool,
    /// `amqp://user:pass@host:port/vhost` (`%2f` is the default vhost), or a
    /// list of them: the nodes of one cluster, tried in order; the uplink
    /// fails over to the next when one cannot be reached or drops it.
    pub url: AmqpNodes,
    /// A node that has not completed the AMQP handshake in this long counts
    /// as unreachable, so a silent node cannot hold the uplink.
    pub connect_timeout_ms: u64,
    /// Positions, statuses and events go to this topic exchange with keys
    /// `fleet.<vid>.position|status`, `fleet.events.<kind>`.
    pub exchange: String,
    /// Package changes go to this durable queue on the default exchange,
    /// `message_id` = the carrying vehicle's id (the package-tracking contract).
    pub package_queue: String,
    /// At most one position per vehicle per interval goes upstream (0: all).
    pub position_interval_ms: u64,
    /// Publishes awaiting RabbitMQ's confirm at once.
    pub confirm_window: NonZeroUsize,
    /// Reconnect backoff: doubles from min to max, with jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A returned (unroutable) or nacked record is retried after this long.
    pub retry_failed_ms: u64,
    /// What happens to a record no queue is bound for (see
    /// `bridge::unroutable`): `retry_then_drop` or `retry`.
    pub unroutable: UnroutablePolicy,
    /// With `retry_then_drop`: how old (since spooled) an unroutable record
    /// may get before it is dropped.
    pub unroutable_keep_s: u64,
    /// The spool: bounded on disk; when full the oldest positions go first.
    pub spool_max_bytes: u64,
    pub spool_segment_bytes: u64,
    pub spool_fsync: FsyncMode,
    pub spool_fsync_interval_ms: u64,
    /// The bridge's fan-out queue (policy `block`: the spool is on disk).
    pub feed_queue: NonZeroUsize,
    /// Queue of JSON commands for devices (`{"vehicle_id":…,"command":{…}}`).
    pub command_queue: String,
    /// Queue of `{"userId":…,"content":…}` notifications for WebSocket users.
    pub notification_queue: String,
    /// Notifications kept per user not connected, oldest dropped first.
    pub mailbox_per_user: NonZeroUsize,
    /// Users with a mailbox at once; past it the longest-idle mailbox goes.
    pub max_mailboxes: NonZeroUsize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            enabled: true,
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            connect_timeout_ms: 10_000,
            exchange: "amq.topic".into(),
            package_queue: "package_status".into(),
            position_interval_ms: 10_000,
            confirm_window: nz(512),
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            retry_failed_ms: 5_000,
            unroutable: UnroutablePolicy::RetryThenDrop,
            unroutable_keep_s: 600,
            spool_max_bytes: 64 * 1024 * 1024,
            spool_segment_bytes: 4 * 1024 * 1024,
            spool_fsync: FsyncMode::Interval,
            spool_fsync_interval_ms: 200,
            feed_queue: nz(4_096),
            command_queue: "fleetgate.commands".into(),
            notification_queue: "notifications".into(),
            mailbox_per_user: nz(16),
            max_mailboxes: nz(120),
        }
    }
}
