//! The memory bound the configuration gives, computed rather than guessed.
//!
//! In: a [`Config`]. Out: a [`MemoryBudget`]: each bounded structure of the
//! gateway with its worst-case size in bytes, from its configured capacity
//! and the size of what it holds. `fleetgate check-config` prints it, the
//! gateway logs it at start and exports the total as
//! `fleetgate_memory_bound_bytes`.
//!
//! What it does not cover: the allocator's overhead and fragmentation, the
//! binary and thread stacks, tokio's and axum's fixed costs, and the kernel's
//! socket buffers (not the process's RSS). Per-connection figures are worst
//! cases (a client holding a partial packet of the maximum size); an idle
//! connection costs far less (see BENCHMARKS.md).

use std::fmt;
use std::mem::size_of;

use crate::bridge::mailboxes::MAX_NOTIFICATION_BYTES;
use crate::bridge::unroutable::{MAX_HELD_KEYS, MAX_HELD_TABLE_BYTES};
use crate::config::Config;
use crate::edge::frame_pool::SMALL_FRAME_BYTES;
use crate::edge::handoff::BROKER_PIPE_BYTES as HANDOFF_PIPE_BYTES;
use crate::edge::handoff::READ_CHUNK as HANDOFF_READ_CHUNK;
use crate::fanout::WhenFull;
use crate::fleet::driving::Track;
use crate::fleet::events::Recent;
use crate::fleet::geofence::{Memberships, MAX_INDEX_CELLS_PER_FENCE, MAX_MEMBERSHIPS};
use crate::fleet::nearest::Grid;
use crate::fleet::packages::{Package, MAX_PLACE_LEN};
use crate::fleet::{Update, VehicleState};
use crate::ingest::{VehiclePublish, MAX_DEVICE_PAYLOAD};
use crate::topics::VehicleId;

/// A disconnected persistent session saved by rumqttd, without its
/// subscriptions: client id, tracker, its last 10 connection events (~0.6 KiB
/// measured per client id), 100 slots of unacked PUBRELs; rounded up.
const RUMQTTD_SESSION_BYTES: u64 = 1024;
/// One subscription of a saved session: its filter in the session's set and
/// in its `DataRequest`, with the request's fields (filter up to 64 bytes).
const RUMQTTD_SUBSCRIPTION_BYTES: u64 = 256;

/// One bounded structure and its worst case.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: &'static str,
    pub bytes: u64,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct MemoryBudget {
    pub items: Vec<Item>,
}

impl MemoryBudget {
    pub fn total(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }
}

/// Bytes of one fan-out queue of `capacity` under `policy`.
fn queue_bytes(policy: WhenFull, capacity: usize, max_vehicles: usize, events: usize) -> u64 {
    let update = size_of::<Update>() as u64;
    match policy {
        WhenFull::Conflate => {
            // slab + order + free list + index by (slot, kind) + events FIFO
            capacity as u64 * (size_of::<Option<Update>>() as u64 + 8)
                + max_vehicles as u64 * 2 * 4
                + events as u64 * update
        }
        _ => capacity as u64 * update,
    }
}

impl Config {
    pub fn memory_budget(&self) -> MemoryBudget {
        let max_vehicles = self.fleet.max_vehicles.get();
        let connections = self.mqtt.max_connections.get() as u64;
        let packet = self.mqtt.max_packet_size_bytes.get() as u64;
        let mirror_topics = 2 * (4 + VehicleId::MAX_LEN as u64 + 32);
        // HashMap: key + value + control byte, at most 8/7 load.
        let index = (size_of::<VehicleId>() as u64 + 4 + 1) * 8 / 7;
        let ws_clients = (self.fanout.max_subscribers.get() as u64).saturating_sub(1);
        let mut items = vec![
            Item {
                name: "fleet table and spatial index",
                bytes: max_vehicles as u64 * (size_of::<VehicleState>() as u64 + mirror_topics + index)
                    + Grid::bytes_for(max_vehicles) as u64,
                why: format!("fleet.max_vehicles = {max_vehicles}, a 64-byte index block each at worst"),
            },
            Item {
                name: "ingest queue",
                bytes: self.ingest.queue.get() as u64 * (size_of::<VehiclePublish>() + MAX_DEVICE_PAYLOAD + 64) as u64,
                why: format!("ingest.queue = {} publishes of at most {MAX_DEVICE_PAYLOAD} bytes", self.ingest.queue),
            },
            Item {
                name: "MQTT republisher queue",
                bytes: queue_bytes(self.fanout.mqtt_when_full, self.fanout.mqtt_queue.get(), max_vehicles, self.fanout.events_queue.get()),
                why: format!("fanout.mqtt_queue = {} ({:?})", self.fanout.mqtt_queue, self.fanout.mqtt_when_full),
            },
            Item {
                name: "WebSocket queues",
                bytes: ws_clients
                    * queue_bytes(self.http.ws_when_full, self.http.ws_queue.get(), max_vehicles, self.fanout.events_queue.get()),
                why: format!(
                    "up to fanout.max_subscribers - 1 = {ws_clients} clients × http.ws_queue = {} ({:?})",
                    self.http.ws_queue, self.http.ws_when_full
                ),
            },
            Item {
                // Each track socket is a fan-out subscriber, already counted
                // under "WebSocket queues" at http.ws_queue; this is what a
                // larger http.package_track_queue would add (0 by default).
                name: "package track sockets",
                bytes: ws_clients
                    * queue_bytes(WhenFull::Conflate, self.http.package_track_queue.get(), max_vehicles, self.fanout.events_queue.get())
                        .saturating_sub(queue_bytes(self.http.ws_when_full, self.http.ws_queue.get(), max_vehicles, self.fanout.events_queue.get())),
                why: format!(
                    "counted under WebSocket queues; http.package_track_queue = {} (conflate) beyond http.ws_queue",
                    self.http.package_track_queue
                ),
            },
            Item {
                name: "package registry",
                bytes: self.fleet.max_packages.get() as u64
                    * (size_of::<Package>() as u64 + 2 * MAX_PLACE_LEN as u64 + 2 * VehicleId::MAX_LEN as u64 + index),
                why: format!("fleet.max_packages = {}", self.fleet.max_packages),
            },
            Item {
                name: "dispatch requests",
                bytes: 2 * self.dispatch.max_open_requests.get() as u64 * 512 + max_vehicles as u64 * 16,
                why: format!(
                    "dispatch.max_open_requests = {} open and as many ended, ~512 bytes each, and a reservation per vehicle",
                    self.dispatch.max_open_requests
                ),
            },
            Item {
                name: "geofences",
                bytes: self.geofence.max_fences.get() as u64
                    * (self.geofence.max_vertices.get() as u64 * 16
                        + 256
                        // a 20-byte entry, and the cell's key and Vec if alone in it
                        + MAX_INDEX_CELLS_PER_FENCE as u64 * 64)
                    + max_vehicles as u64 * size_of::<Option<Memberships>>() as u64,
                why: format!(
                    "geofence.max_fences = {} × (max_vertices = {} × 16 bytes + {MAX_INDEX_CELLS_PER_FENCE} index cells), and {MAX_MEMBERSHIPS} memberships per vehicle",
                    self.geofence.max_fences, self.geofence.max_vertices
                ),
            },
            Item {
                name: "recent events and driving state",
                bytes: self.events.ring.get() as u64 * size_of::<Recent>() as u64
                    + max_vehicles as u64 * size_of::<Track>() as u64
                    + self.events.overspeed.vehicles.len() as u64 * (size_of::<VehicleId>() as u64 + 8) * 8 / 7,
                why: format!(
                    "events.ring = {} events of {} bytes, a {}-byte track per vehicle, {} listed speed limits",
                    self.events.ring,
                    size_of::<Recent>(),
                    size_of::<Track>(),
                    self.events.overspeed.vehicles.len()
                ),
            },
            Item {
                name: "bridge feed queue and clock",
                bytes: if self.bridge.enabled {
                    self.bridge.feed_queue.get() as u64 * size_of::<Update>() as u64 + max_vehicles as u64 * 16
                } else {
                    0
                },
                why: format!(
                    "bridge.feed_queue = {} (block), one timestamp per vehicle; the spool itself is on disk (bridge.spool_max_bytes)",
                    self.bridge.feed_queue
                ),
            },
            Item {
                name: "unroutable keys held for probing",
                bytes: if self.bridge.enabled { MAX_HELD_TABLE_BYTES as u64 } else { 0 },
                why: format!(
                    "{MAX_HELD_KEYS} routing keys at most (a fixed bound) × {} bytes; past it a returned key is re-sent whole at each retry",
                    MAX_HELD_TABLE_BYTES / MAX_HELD_KEYS
                ),
            },
            Item {
                name: "notification mailboxes",
                bytes: self.bridge.max_mailboxes.get() as u64
                    * self.bridge.mailbox_per_user.get() as u64
                    * (MAX_NOTIFICATION_BYTES as u64 + 32),
                why: format!(
                    "bridge.max_mailboxes = {} × mailbox_per_user = {} × at most {MAX_NOTIFICATION_BYTES} bytes",
                    self.bridge.max_mailboxes, self.bridge.mailbox_per_user
                ),
            },
            Item {
                name: "broker publish queues",
                bytes: 2 * self.broker.publish_queue.get() as u64 * (128 + MAX_DEVICE_PAYLOAD as u64),
                why: format!(
                    "2 × broker.publish_queue = {} (ours, and rumqttd's link queue, held to the same length; JSON views and mirrored device payloads, at most {MAX_DEVICE_PAYLOAD} bytes)",
                    self.broker.publish_queue
                ),
            },
            Item {
                name: "rumqttd filter logs",
                bytes: self.broker.log_bound_bytes() as u64,
                why: format!(
                    "broker.max_filters = {} live filters × (max_segment_count + 1 = {}) × max_segment_size_bytes = {} (a log is freed when no client holds its filter)",
                    self.broker.max_filters,
                    self.broker.max_segment_count.get() + 1,
                    self.broker.max_segment_size_bytes
                ),
            },
            Item {
                name: "rumqttd retained messages",
                bytes: self.broker.max_retained_topics.get() as u64 * packet,
                why: format!(
                    "broker.max_retained_topics = {} × a publish of up to {packet} bytes",
                    self.broker.max_retained_topics
                ),
            },
            Item {
                name: "rumqttd persistent sessions",
                bytes: self.broker.max_persistent_sessions.get() as u64
                    * (RUMQTTD_SESSION_BYTES + self.broker.max_filters.get() as u64 * RUMQTTD_SUBSCRIPTION_BYTES),
                why: format!(
                    "broker.max_persistent_sessions = {} × ({RUMQTTD_SESSION_BYTES} + broker.max_filters = {} subscriptions × {RUMQTTD_SUBSCRIPTION_BYTES}), the worst case of every session holding every filter",
                    self.broker.max_persistent_sessions, self.broker.max_filters
                ),
            },
            Item {
                name: "rumqttd link buffers (worst case)",
                bytes: self.broker.max_connections.get() as u64 * self.broker.link_capacity.get() as u64 * packet,
                why: format!(
                    "broker.max_connections = {} handed-off clients × broker.link_capacity = {} messages of up to {packet} bytes",
                    self.broker.max_connections, self.broker.link_capacity
                ),
            },
            Item {
                name: "edge connections (worst case)",
                bytes: connections * (SMALL_FRAME_BYTES as u64 + 2 * 1024)
                    + self.mqtt.large_frame_pool_bytes.get() as u64,
                why: format!(
                    "mqtt.max_connections = {connections} × (a partial frame of at most {SMALL_FRAME_BYTES} bytes + state), and mqtt.large_frame_pool_bytes = {} shared by the larger ones",
                    self.mqtt.large_frame_pool_bytes
                ),
            },
            Item {
                name: "hand-off proxies (worst case)",
                bytes: self.broker.max_connections.get() as u64
                    * (2 * (HANDOFF_READ_CHUNK + HANDOFF_PIPE_BYTES) as u64 + 2 * packet),
                why: format!(
                    "broker.max_connections = {} handed-off clients × 2 sides × (a {HANDOFF_READ_CHUNK}-byte read + {HANDOFF_PIPE_BYTES} bytes in the pipe to rumqttd + a partial packet of up to {packet} bytes)",
                    self.broker.max_connections
                ),
            },
        ];
        items.extend(
            self.smq
                .budget_items(self.broker.link_capacity.get(), packet as usize),
        );
        items.extend(
            self.pubsub
                .budget_items(self.broker.link_capacity.get(), packet as usize),
        );
        items.extend(self.auth.budget_items());
        if self.auth.check_retain_source && self.auth.enforced() {
            // A publisher is a client id and a user name from its CONNECT,
            // itself at most 8 KiB (`edge`'s MAX_CONNECT_BYTES).
            let topics = self.broker.max_retained_topics.get() as u64;
            items.push(Item {
                name: "retained messages' publishers",
                bytes: topics * 8 * 1024,
                why: format!(
                    "auth.check_retain_source: broker.max_retained_topics = {topics} × a publisher of up to 8 KiB"
                ),
            });
        }
        items.extend(self.tls.budget_items(
            self.http.max_connections.get(),
            self.mqtt.max_connections.get(),
        ));
        items.push(Item {
            name: "HTTP connections",
            bytes: self.http.max_connections.get() as u64 * (crate::api::serve::MAX_BUF_BYTES as u64 + 4096),
            why: format!(
                "http.max_connections = {} × (a request-head buffer of {} bytes + state); a body, at most http.max_body_bytes, is read while its request is handled and not counted here",
                self.http.max_connections,
                crate::api::serve::MAX_BUF_BYTES
            ),
        });
        items.push(Item {
            name: "per-source connection counts",
            bytes: self.mqtt.max_tracked_sources.get() as u64 * 64,
            why: format!(
                "mqtt.max_tracked_sources = {} addresses × 64 bytes",
                self.mqtt.max_tracked_sources
            ),
        });
        MemoryBudget { items }
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(
                f,
                "  {:<32} {:>10.1} MiB  ({})",
                item.name,
                mib(item.bytes),
                item.why
            )?;
        }
        write!(f, "  {:<32} {:>10.1} MiB", "total", mib(self.total()))
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn every_capacity_moves_the_bound() {
        let base = Config::default().memory_budget().total();
        let mut bigger = Config::default();
        bigger.fleet.max_vehicles = NonZeroUsize::new(20_000).unwrap();
        assert!(bigger.memory_budget().total() > base);
        let mut fewer = Config::default();
        fewer.mqtt.max_connections = NonZeroUsize::new(10).unwrap();
        assert!(fewer.memory_budget().total() < base);
    }
}
