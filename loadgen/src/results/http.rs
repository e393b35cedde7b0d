//! The HTTP-side benches' result lines (`loadgen smq-put`, `ws-fanout`,
//! `search-load`), each told by its `tool`; kept apart from the MQTT
//! tools' lines so each file holds one family.
//!
//! In: a report of one of those tools. Out: its line (serde). Bound: one line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::LatencyLine;

/// One `loadgen smq-put` result (`tool` tells it): `/put` → SMQ consumer;
/// `refused` counts other answers than 200 by status; rates are 0 when flat out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmqPutLine {
    pub tool: String,
    pub scenario: String,
    pub broker: Option<String>,
    pub producers: usize,
    pub consumers: usize,
    pub payload_bytes: usize,
    pub offered_per_s: u64,
    pub sent: u64,
    pub accepted: u64,
    pub refused: BTreeMap<String, u64>,
    pub received: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub accepted_per_s: f64,
    pub received_per_s: f64,
    pub put_latency_us: Option<LatencyLine>,
    pub end_to_end_latency_us: Option<LatencyLine>,
    pub first_error: Option<String>,
}

/// One `loadgen ws-fanout` result (`tool` tells it): `/message` to many
/// subscribers; `expected` = accepted publishes × subscribers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsFanoutLine {
    pub tool: String,
    pub scenario: String,
    pub broker: Option<String>,
    pub subscribers: usize,
    pub payload_bytes: usize,
    pub offered_per_s: u64,
    pub published: u64,
    pub published_per_s: f64,
    pub publish_refused: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub error_frames: u64,
    pub latency_us: Option<LatencyLine>,
    pub first_error: Option<String>,
}

/// One `loadgen search-load` result (`tool` tells it): `POST /search`
/// answered while `POST /tracking` keeps moving the fleet; `refused`
/// counts searches answered with another status than 200, by status;
/// `short_answers` those with fewer than `limit` vehicles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchLoadLine {
    pub tool: String,
    pub scenario: String,
    pub broker: Option<String>,
    pub vehicles: usize,
    pub area_km: f64,
    pub clients: usize,
    pub limit: usize,
    pub duration_s: f64,
    pub seed_s: f64,
    pub searches: u64,
    pub answered: u64,
    pub refused: BTreeMap<String, u64>,
    pub short_answers: u64,
    pub searches_per_s: f64,
    pub latency_us: Option<LatencyLine>,
    pub publishers: usize,
    pub offered_positions_per_s: u64,
    pub positions_sent: u64,
    pub positions_refused: u64,
    pub positions_per_s: f64,
    pub first_error: Option<String>,
}
