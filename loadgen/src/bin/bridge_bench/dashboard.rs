//! The WebSocket dashboard: a client of `/ws` that records the latency of
//! each live position, and its percentiles over a time range.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use firmware_sim::clock::now_ms;
use futures_util::StreamExt;
use loadgen::results::DrainLatencyLine;

#[derive(Default)]
pub(super) struct Dashboard {
    /// (now_ms at receipt, latency ms) of each live position.
    pub(super) samples: Mutex<Vec<(u64, u64)>>,
    pub(super) lagged: AtomicU64,
    pub(super) frames: AtomicU64,
}

pub(super) async fn watch_ws(
    url: String,
    prefix: String,
    dash: Arc<Dashboard>,
) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else {
            continue;
        };
        let at = now_ms();
        dash.frames.fetch_add(1, Ordering::Relaxed);
        let frame: serde_json::Value = serde_json::from_str(text.as_str())?;
        if frame.get("snapshot").is_some() {
            continue;
        }
        if let Some(n) = frame.get("lagged").and_then(|v| v.as_u64()) {
            dash.lagged.fetch_add(n, Ordering::Relaxed);
        }
        let Some(positions) = frame.get("positions").and_then(|p| p.as_array()) else {
            continue;
        };
        // A poisoned lock only means another reader panicked; the samples are intact.
        let mut samples = dash
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in positions {
            let mine = p
                .get("vehicle_id")
                .and_then(|v| v.as_str())
                .is_some_and(|v| v.starts_with(&prefix));
            if let (true, Some(received)) = (mine, p.get("received_ms").and_then(|v| v.as_u64())) {
                samples.push((at, at.saturating_sub(received)));
            }
        }
    }
    Ok(())
}

/// p50, p99, max and count of the latencies received in `[from, to)` (ms),
/// the percentiles from an HDR histogram (exact below 2 048 ms).
pub(super) fn latency(dash: &Dashboard, from: u64, to: u64) -> DrainLatencyLine {
    let samples = dash
        .samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).ok();
    let (mut count, mut max) = (0usize, None);
    for (_, l) in samples.iter().filter(|(at, _)| *at >= from && *at < to) {
        if let Some(h) = histogram.as_mut() {
            h.saturating_record(*l);
        }
        count += 1;
        max = max.max(Some(*l));
    }
    let pct = |q: f64| -> Option<u64> {
        histogram
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q))
    };
    DrainLatencyLine {
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: max,
        count,
    }
}
