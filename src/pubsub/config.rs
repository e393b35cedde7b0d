//! `[pubsub]`: the WebSocket pub/sub proxy's bounds and the memory they
//! give.

use std::num::NonZeroUsize;

use serde::Deserialize;

use super::filter::MAX_TOPIC_BYTES;
use crate::config::budget::Item;

/// The pub/sub proxy (seed 003's contract) at `GET /message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubConfig {
    /// Off: `GET /message` answers 404 and the proxy has no broker link.
    pub enabled: bool,
    /// WebSocket connections at once; one more is answered 429.
    pub max_connections: NonZeroUsize,
    /// Filters one connection holds at once; one more subscribe gets an
    /// error frame.
    pub max_topics_per_connection: NonZeroUsize,
    /// Distinct filters over all connections. The link's subscriptions
    /// (at most this many) also count in `broker.max_filters`.
    pub max_filters: NonZeroUsize,
    /// Frames waiting for one connection; one more drops that connection's
    /// oldest (`drop_oldest`, `pubsub_dropped_total{reason="queue_full"}`).
    pub queue: NonZeroUsize,
    /// Longest `message`, in bytes of UTF-8. A longer publish gets an
    /// error frame; a longer MQTT publish is not forwarded to WebSockets
    /// (`reason="too_large"`). A text frame over [`Self::max_frame_bytes`]
    /// closes the connection (1009, message too big).
    pub max_message_bytes: NonZeroUsize,
    /// Publishes and (un)subscriptions waiting for the broker link; past
    /// it a publish gets an error frame ("busy").
    pub publish_queue: NonZeroUsize,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        PubSubConfig {
            enabled: true,
            max_connections: nz(8),
            max_topics_per_connection: nz(8),
            max_filters: nz(32),
            queue: nz(8),
            max_message_bytes: nz(4 * 1024),
            publish_queue: nz(8),
        }
    }
}

const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// What a frame holds besides its message and topic: the JSON envelope.
pub const ENVELOPE_BYTES: usize = 64;
/// The WebSocket read buffer of one connection.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

impl PubSubConfig {
    /// The largest text frame a client may send: a message and a topic
    /// with room for JSON escapes of the message.
    pub fn max_frame_bytes(&self) -> usize {
        2 * self.max_message_bytes.get() + MAX_TOPIC_BYTES + 1024
    }

    /// The largest frame the proxy sends: `{"action":"publish",…}` with
    /// room for escapes (`"` and `\` double); a message whose frame is
    /// larger (control characters escape to 6 bytes) is not sent
    /// (`reason="too_large"`).
    pub fn max_out_frame_bytes(&self) -> usize {
        2 * self.max_message_bytes.get() + 2 * MAX_TOPIC_BYTES + ENVELOPE_BYTES
    }

    /// The proxy's lines of the memory budget (none when it is off).
    pub fn budget_items(&self, link_capacity: usize, max_packet: usize) -> Vec<Item> {
        if !self.enabled {
            return Vec::new();
        }
        let conns = self.max_connections.get() as u64;
        let out = self.max_out_frame_bytes() as u64;
        let per_conn = self.queue.get() as u64 * out
            + self.max_frame_bytes() as u64
            + READ_BUFFER_BYTES as u64
            + out
            + 1024
            + self.max_topics_per_connection.get() as u64 * (MAX_TOPIC_BYTES as u64 + 64);
        let body = self.max_message_bytes.get() as u64;
        let link = 2 * self.publish_queue.get() as u64 * (body + MAX_TOPIC_BYTES as u64 + 64)
            + (link_capacity * max_packet) as u64
            + self.max_filters.get() as u64 * 2 * (MAX_TOPIC_BYTES as u64 + 128);
        vec![
            Item {
                name: "pub/sub WebSockets",
                bytes: conns * per_conn,
                why: format!(
                    "pubsub.max_connections = {conns} × (pubsub.queue = {} frames of ≤ {out} bytes, an incoming frame of ≤ {}, a {READ_BUFFER_BYTES}-byte read buffer, the frame being written, pubsub.max_topics_per_connection = {} filters)",
                    self.queue,
                    self.max_frame_bytes(),
                    self.max_topics_per_connection
                ),
            },
            Item {
                name: "pub/sub broker link",
                bytes: link,
                why: format!(
                    "2 × pubsub.publish_queue = {} (ours and rumqttd's) publishes of ≤ {body} bytes, broker.link_capacity = {link_capacity} forwards of ≤ {max_packet}, pubsub.max_filters = {} filters and covers",
                    self.publish_queue, self.max_filters
                ),
            },
        ]
    }
}
