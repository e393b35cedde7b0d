//! The result lines the tools write and `bench-report` reads: one serde
//! schema, so a writer and the reader cannot drift apart.
//!
//! In: a tool's report (writing), or a line of a results file such as
//! `benches/results/*.jsonl` (reading). Out: one JSON object per line.
//! Keys come out sorted (every line goes through [`serde_json::Value`],
//! whose map is ordered), as the stored results have them. Bound: one line.

use serde::{Deserialize, Serialize};

/// One `loadgen idle-conn` result; with `--label` also the `scenario`
/// (`"idle-conn"`) and the `broker`, as `benches/compare.sh` records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdleConnLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub attempted: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_elapsed_s: f64,
    pub connects_per_s: f64,
    pub dropped_while_held: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub kib_per_connection: Option<f64>,
}

/// `line` as one line of JSON with sorted keys (no newline).
pub fn to_line<T: Serialize>(line: &T) -> String {
    serde_json::to_value(line).map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |v| v.to_string())
}
