//! What a watch saw: [`WsWatchReport`], for people and as one JSON line.

use std::time::Duration;

use super::Histogram;
use super::Window;
use crate::results::{to_line, WsEndLine, WsWatchLine};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WsWatchReport {
    pub url: String,
    pub stall: bool,
    /// Unix ms when the handshake completed; for a stalled client also its last read.
    pub connected_at_ms: u64,
    pub handshake_ms: f64,
    pub elapsed: Duration,
    /// Text frames taken, the snapshot included.
    pub frames: u64,
    pub bytes: u64,
    pub snapshot_vehicles: u64,
    pub positions: u64,
    pub statuses: u64,
    pub events: u64,
    /// Sum of the frames' `lagged` (updates the server's queue dropped for us).
    pub lagged: u64,
    pub lagged_frames: u64,
    pub parse_errors: u64,
    pub distinct_vehicles: usize,
    /// now − received_ms of each position (ms).
    pub fresh_received: Histogram,
    /// now − time_ms of each position (ms).
    pub fresh_fix: Histogram,
    /// Positions stamped in the future (clock skew), counted as 0 ms.
    pub negative_freshness: u64,
    /// Longest time between two frames after the first position arrived.
    pub max_frame_gap_ms: u64,
    pub windows: Vec<Window>,
    /// How the connection ended (as the result line has it).
    pub end: WsEndLine,
}

impl WsWatchReport {
    pub fn frames_per_s(&self) -> f64 {
        per_s(self.frames, self.elapsed)
    }

    pub fn positions_per_s(&self) -> f64 {
        per_s(self.positions, self.elapsed)
    }

    /// Seconds from the stalled client's last read (its connect) to the
    /// gateway counting a stalled disconnect.
    pub fn stalled_disconnect_after_s(&self) -> Option<f64> {
        self.end
            .stalled_counter_rose_at_ms
            .map(|t| t.saturating_sub(self.connected_at_ms) as f64 / 1000.0)
    }

    /// The result line ([`WsWatchLine`]).
    pub fn to_line(&self) -> WsWatchLine {
        WsWatchLine {
            mode: if self.stall { "stall" } else { "read" }.to_owned(),
            url: self.url.clone(),
            connected_at_ms: self.connected_at_ms,
            handshake_ms: self.handshake_ms,
            elapsed_s: self.elapsed.as_secs_f64(),
            frames: self.frames,
            frames_per_s: self.frames_per_s(),
            bytes: self.bytes,
            snapshot_vehicles: self.snapshot_vehicles,
            positions: self.positions,
            positions_per_s: Some(self.positions_per_s()),
            statuses: self.statuses,
            events: self.events,
            lagged: Some(self.lagged),
            lagged_frames: self.lagged_frames,
            parse_errors: self.parse_errors,
            distinct_vehicles: self.distinct_vehicles,
            fresh_received: Some(self.fresh_received.to_line()),
            fresh_fix: Some(self.fresh_fix.to_line()),
            negative_freshness: self.negative_freshness,
            max_frame_gap_ms: self.max_frame_gap_ms,
            windows: self.windows.clone(),
            end: self.end.clone(),
            stalled_disconnect_after_s: self.stalled_disconnect_after_s(),
        }
    }

    /// The result line as one line of JSON with sorted keys.
    pub fn to_json_line(&self) -> String {
        to_line(&self.to_line())
    }

    /// A block for people.
    pub fn to_human(&self) -> String {
        let q = |h: &Histogram| {
            format!(
                "p50 {} / p99 {} / max {} ms",
                opt(h.quantile(0.5)),
                opt(h.quantile(0.99)),
                opt(h.max())
            )
        };
        let mut s = format!(
            "ws-watch ({}) {}\n  elapsed              {:.1} s\n  frames               {} ({:.1}/s, {} bytes)\n  positions            {} ({:.0}/s), {} distinct vehicles\n  lagged               {} in {} frames\n  freshness (received) {}\n  freshness (fix)      {}\n  max frame gap        {} ms\n",
            if self.stall { "stalled" } else { "reading" },
            self.url,
            self.elapsed.as_secs_f64(),
            self.frames,
            self.frames_per_s(),
            self.bytes,
            self.positions,
            self.positions_per_s(),
            self.distinct_vehicles,
            self.lagged,
            self.lagged_frames,
            q(&self.fresh_received),
            q(&self.fresh_fix),
            self.max_frame_gap_ms,
        );
        match &self.end.disconnect_reason {
            Some(reason) => {
                s += &format!(
                    "  disconnected         after {:.1} s: {reason}\n",
                    self.end.disconnected_after_s.unwrap_or(0.0)
                )
            }
            None => s += "  disconnected         no\n",
        }
        if self.stall {
            s += &format!(
                "  server closed it     {} ({} frames were still buffered)\n",
                match self.end.server_closed {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                },
                self.end.drained_frames
            );
            if let Some(after) = self.stalled_disconnect_after_s() {
                s += &format!(
                    "  stalled counter rose {after:.1} s after the last read ({} -> {})\n",
                    opt(self.end.stalled_counter_before),
                    opt(self.end.stalled_counter_after)
                );
            }
        }
        s
    }
}

pub(super) fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

pub(super) fn per_s(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
