//! The reading client: takes every frame and measures it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use firmware_sim::clock::now_ms;

use super::report::opt;
use super::Window;
use super::{Histogram, Ws, WsWatchConfig, WsWatchReport, MAX_DISTINCT_VEHICLES};

/// The parts of a feed frame the watcher reads; everything else is skipped.
#[derive(Deserialize)]
pub(super) struct FrameIn<'a> {
    #[serde(default, borrow)]
    pub(super) positions: Vec<PositionIn<'a>>,
    #[serde(default)]
    pub(super) statuses: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) events: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) lagged: u64,
    #[serde(default)]
    pub(super) snapshot: bool,
    #[serde(default, borrow)]
    pub(super) vehicles: Option<Vec<VehicleIn<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct PositionIn<'a> {
    #[serde(borrow)]
    pub(super) vehicle_id: Cow<'a, str>,
    pub(super) time_ms: u64,
    pub(super) received_ms: u64,
}

#[derive(Deserialize)]
pub(super) struct VehicleIn<'a> {
    #[serde(borrow)]
    pub(super) vehicle_id: Cow<'a, str>,
}

pub(super) async fn read(
    mut ws: Ws,
    cfg: &WsWatchConfig,
    report: &mut WsWatchReport,
    connected: Instant,
    deadline: Instant,
) {
    let mut vehicles: HashSet<String> = HashSet::new();
    let mut window_hist = Histogram::default();
    let window = cfg.window.max(Duration::from_millis(100));
    let mut window_end = connected + window;
    let (mut window_frames, mut window_positions) = (0u64, 0u64);
    let mut last_frame: Option<Instant> = None;
    let mut positions_started = false;

    loop {
        let next = tokio::select! {
            biased;
            () = sleep_until(deadline) => break,
            () = sleep_until(window_end) => None,
            message = ws.next() => Some(message),
        };
        let Some(message) = next else {
            let secs = window.as_secs_f64();
            let w = Window {
                end_s: window_end.duration_since(connected).as_secs_f64(),
                frames: window_frames,
                positions: window_positions,
                positions_per_s: window_positions as f64 / secs,
                fresh_p99_ms: window_hist.quantile(0.99),
                fresh_max_ms: window_hist.max(),
            };
            if cfg.progress {
                eprintln!(
                    "[{:>6.1}s] ws-watch: frames +{} ({:.1}/s), positions +{} ({:.0}/s), vehicles {}, freshness p99 {} max {} ms, lagged {}",
                    w.end_s,
                    w.frames,
                    w.frames as f64 / secs,
                    w.positions,
                    w.positions_per_s,
                    vehicles.len(),
                    opt(w.fresh_p99_ms),
                    opt(w.fresh_max_ms),
                    report.lagged
                );
            }
            report.windows.push(w);
            window_hist.clear();
            window_frames = 0;
            window_positions = 0;
            window_end += window;
            continue;
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(bytes))) => {
                report.bytes += bytes.len() as u64;
                report.parse_errors += 1;
                continue;
            }
            // Pings are answered by tungstenite as we read.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(
                    || "close frame".to_owned(),
                    |f| format!("close frame {} {:?}", u16::from(f.code), f.reason.as_str()),
                );
                disconnected(report, connected, why);
                break;
            }
            Some(Err(e)) => {
                disconnected(report, connected, format!("error: {e}"));
                break;
            }
            None => {
                disconnected(report, connected, "connection closed".to_owned());
                break;
            }
        };
        let arrived = Instant::now();
        if positions_started {
            if let Some(last) = last_frame {
                let gap = arrived.duration_since(last).as_millis();
                report.max_frame_gap_ms = report
                    .max_frame_gap_ms
                    .max(u64::try_from(gap).unwrap_or(u64::MAX));
            }
        }
        last_frame = Some(arrived);
        report.frames += 1;
        window_frames += 1;
        report.bytes += text.len() as u64;
        let Ok(frame) = serde_json::from_str::<FrameIn>(text.as_str()) else {
            report.parse_errors += 1;
            continue;
        };
        let now = now_ms();
        if frame.lagged > 0 {
            report.lagged += frame.lagged;
            report.lagged_frames += 1;
        }
        report.statuses += frame.statuses.len() as u64;
        report.events += frame.events.len() as u64;
        let mut remember = |id: &str| {
            if vehicles.len() < MAX_DISTINCT_VEHICLES && !vehicles.contains(id) {
                vehicles.insert(id.to_owned());
            }
        };
        if frame.snapshot {
            for v in frame.vehicles.iter().flatten() {
                report.snapshot_vehicles += 1;
                remember(&v.vehicle_id);
            }
        }
        for p in &frame.positions {
            remember(&p.vehicle_id);
            let mut age = |t: u64| {
                if t > now {
                    report.negative_freshness += 1;
                    0
                } else {
                    now - t
                }
            };
            let received = age(p.received_ms);
            let fix = age(p.time_ms);
            report.fresh_received.record(received);
            report.fresh_fix.record(fix);
            window_hist.record(received);
        }
        if !frame.positions.is_empty() {
            positions_started = true;
        }
        report.positions += frame.positions.len() as u64;
        window_positions += frame.positions.len() as u64;
    }
    report.elapsed = connected.elapsed();
    report.distinct_vehicles = vehicles.len();
    if !report.end.disconnected {
        // Say goodbye, but do not wait long for the server's echo.
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

pub(super) fn disconnected(report: &mut WsWatchReport, connected: Instant, why: String) {
    report.end.disconnected = true;
    report.end.disconnected_after_s = Some(connected.elapsed().as_secs_f64());
    report.end.disconnect_reason = Some(why);
}
