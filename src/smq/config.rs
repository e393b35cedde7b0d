//! `[smq]`: the SMQ queue's configuration and the memory it may hold.

use std::mem::size_of;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use serde::Deserialize;

use super::queue::Entry;
use super::tcp::{MAX_LINE_BYTES, READ_BUFFER_BYTES};
use crate::config::budget::Item;
use crate::config::ConfigError;

/// The SMQ queue (seed 002's contract): its consumer port and its bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmqConfig {
    /// Off: no consumer port, and `/ping`, `/put`, `/stats` answer 404.
    pub enabled: bool,
    /// The consumer protocol's TCP port (the seed's was 5151).
    pub listen: SocketAddr,
    /// Messages one channel (or a topic without channels yet) holds; one
    /// more drops that queue's oldest (`drop_oldest`, counted in
    /// `smq_dropped_total{reason="queue_full"}`). The seed's
    /// `mem-queue-size`.
    pub mem_queue_size: NonZeroUsize,
    /// Bytes all SMQ queues together may hold: every queued message's body
    /// (once per queue it waits in) and every queue's slots. Past it a new
    /// message is dropped for the queue it does not fit (`drop_newest`,
    /// `smq_dropped_total{reason="memory_full"}`).
    pub max_bytes: NonZeroUsize,
    /// Largest message body; a larger `/put` is answered 413, a larger MQTT
    /// publish to an SMQ topic is dropped and counted (`too_large`).
    pub max_message_bytes: NonZeroUsize,
    /// Topics at once. Each is a subscription of the SMQ's local link in
    /// rumqttd and counts in `broker.max_filters`. One more evicts an idle
    /// topic (no consumers, nothing queued or in flight), else is refused.
    pub max_topics: NonZeroUsize,
    /// Channels at once, over all topics; one more evicts an idle channel,
    /// else is refused.
    pub max_channels: NonZeroUsize,
    /// Consumer connections at once; one more gets `E_TOO_MANY_CONSUMERS`.
    pub max_consumers: NonZeroUsize,
    /// A message taken by `GET` and neither `FIN`ed nor `REQ`ed within this
    /// is requeued (the seed's 60 s).
    pub msg_timeout_s: u64,
    /// A new connection must send its first line within this.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long while the gateway
    /// waits for a command is closed (a blocked `GET` is not idle).
    pub idle_timeout_s: u64,
    /// A consumer that does not take a reply within this is closed, and
    /// what it held is requeued.
    pub write_timeout_ms: u64,
    /// `/put` publishes waiting for the broker link; past it `/put`
    /// answers 429.
    pub publish_queue: NonZeroUsize,
}

impl Default for SmqConfig {
    fn default() -> Self {
        SmqConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 5151)),
            mem_queue_size: nz(10_000),
            max_bytes: nz(4 * 1024 * 1024),
            max_message_bytes: nz(16 * 1024),
            max_topics: nz(16),
            max_channels: nz(32),
            max_consumers: nz(32),
            msg_timeout_s: 60,
            handshake_timeout_ms: 10_000,
            idle_timeout_s: 300,
            write_timeout_ms: 10_000,
            publish_queue: nz(64),
        }
    }
}

const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// A topic's longest name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 200;
/// A channel's longest name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 64;
/// A queue's slots it keeps however empty it gets (`queue::MsgQueue`).
pub const MIN_QUEUE_SLOTS: usize = 16;

impl SmqConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.msg_timeout_s == 0
            || self.handshake_timeout_ms == 0
            || self.idle_timeout_s == 0
            || self.write_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "smq.msg_timeout_s, handshake_timeout_ms, idle_timeout_s and write_timeout_ms must be above 0".into(),
            ));
        }
        Ok(())
    }

    /// The SMQ lines of the memory budget (none when it is off).
    pub fn budget_items(&self, link_capacity: usize, max_packet: usize) -> Vec<Item> {
        if !self.enabled {
            return Vec::new();
        }
        let body = self.max_message_bytes.get() as u64;
        let topics = self.max_topics.get() as u64;
        let channels = self.max_channels.get() as u64;
        let consumers = self.max_consumers.get() as u64;
        let slot = size_of::<Entry>() as u64;
        // names, maps, a queue's minimum slots: per topic and per channel
        let table = topics * (MAX_TOPIC_BYTES as u64 + 256 + MIN_QUEUE_SLOTS as u64 * slot)
            + channels * (MAX_CHANNEL_BYTES as u64 + 256 + MIN_QUEUE_SLOTS as u64 * slot);
        let link = 2 * self.publish_queue.get() as u64 * (body + MAX_TOPIC_BYTES as u64 + 64)
            + (link_capacity * max_packet) as u64;
        vec![
            Item {
                name: "SMQ queues",
                bytes: self.max_bytes.get() as u64 + table,
                why: format!(
                    "smq.max_bytes = {} for every queued body and slot (each queue ≤ smq.mem_queue_size = {}), smq.max_topics = {topics}, smq.max_channels = {channels}",
                    self.max_bytes, self.mem_queue_size
                ),
            },
            Item {
                name: "SMQ consumers (worst case)",
                bytes: consumers * (2 * (body + 20) + READ_BUFFER_BYTES as u64 + 1024),
                why: format!(
                    "smq.max_consumers = {consumers} × (the message in flight and its frame, up to smq.max_message_bytes = {body}, + a {READ_BUFFER_BYTES}-byte read buffer for lines of ≤ {MAX_LINE_BYTES})"
                ),
            },
            Item {
                name: "SMQ broker link",
                bytes: link,
                why: format!(
                    "2 × smq.publish_queue = {} (ours and rumqttd's) `/put`s of ≤ {body} bytes, and broker.link_capacity = {link_capacity} forwards of ≤ {max_packet}",
                    self.publish_queue
                ),
            },
        ]
    }
}
