//! `firmware-sim ws-watch` (feature `runner`): a client of the gateway's
//! live WebSocket feed (`GET /ws`), for load runs.
//!
//! In: a `ws://` URL, a duration and a mode. A **reading** client takes
//! every frame and measures what it gets: frames/s, positions/s, distinct
//! vehicles, and the freshness of each position, `now − received_ms` (age
//! since the gateway decoded it) and `now − time_ms` (age since the device
//! took the fix), as p50/p99/max; the feed's `lagged` counts; the longest
//! gap between frames; whether the server disconnected it. A **stalled**
//! client (`--stall`) completes the handshake and never reads again, as a
//! browser tab whose machine froze; it can only learn that the server
//! closed it by reading at the end (it drains what is buffered, then sees
//! the close or not), or, with `--metrics-url`, by watching the gateway's
//! `fleetgate_ws_stalled_disconnects_total` go up while it sleeps.
//!
//! Out: a progress line per window on stderr and a [`WsWatchReport`] (one
//! JSON line on stdout from the binary).
//!
//! Bound: one frame at a time (tungstenite's message size limit, set to
//! [`MAX_MESSAGE_BYTES`]); two fixed histograms of 1-ms buckets up to
//! [`HISTOGRAM_MAX_MS`] plus one per window; the set of distinct vehicle ids
//! is capped at [`MAX_DISTINCT_VEHICLES`]; one summary per window
//! (duration / window entries). Nothing from the network is unwrapped: a
//! frame that does not parse is counted in `parse_errors`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use firmware_sim::clock::now_ms;

/// Largest frame the watcher accepts (a snapshot of 10 000 vehicles is ~3 MB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Freshness above this lands in the last bucket (its max is still exact).
pub const HISTOGRAM_MAX_MS: u64 = 60_000;
/// Distinct vehicle ids remembered; the gateway's own table is smaller.
pub const MAX_DISTINCT_VEHICLES: usize = 1 << 20;
/// How long the stalled client reads at the end to find the server's close.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);
/// How often the stalled client polls `--metrics-url`.
const METRICS_POLL: Duration = Duration::from_millis(250);
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// `/metrics` answers larger than this are cut.
const MAX_METRICS_BYTES: u64 = 4 << 20;
/// The gateway's counter of clients it disconnected for not reading.
pub const STALLED_SERIES: &str = "fleetgate_ws_stalled_disconnects_total";

#[derive(Debug, Clone, PartialEq)]
pub struct WsWatchConfig {
    /// `ws://host:port/ws`, optionally with `?vehicles=` or `?bbox=`.
    pub url: String,
    pub duration: Duration,
    /// Connect, then never read until the end.
    pub stall: bool,
    /// `http://host:port/metrics` of the gateway, polled by a stalled
    /// client to time its disconnection.
    pub metrics_url: Option<String>,
    /// Progress and per-window figures every this long.
    pub window: Duration,
    pub connect_timeout: Duration,
    /// Print a progress line per window to stderr.
    pub progress: bool,
}

impl Default for WsWatchConfig {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws".to_owned(),
            duration: Duration::from_secs(10),
            stall: false,
            metrics_url: None,
            window: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// The arguments of `firmware-sim ws-watch` (here, not in `cli`, so the
/// subcommand stays in one file).
#[derive(Debug, clap::Args)]
pub struct WsWatchArgs {
    /// The gateway's feed, e.g. ws://127.0.0.1:8080/ws (query ?vehicles= or ?bbox= allowed).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Seconds to watch.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Connect, then never read again (a client that stopped reading); read
    /// at the end to see whether the server closed it.
    #[arg(long)]
    pub stall: bool,
    /// The gateway's /metrics (http://host:port/metrics): a stalled client
    /// polls it to time when the gateway counted it as stalled.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Seconds per progress line and per-window figures.
    #[arg(long, default_value_t = 10.0)]
    pub window_s: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl WsWatchArgs {
    pub fn to_config(&self) -> anyhow::Result<WsWatchConfig> {
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds"))
        };
        if !self.url.starts_with("ws://") {
            anyhow::bail!("--url must be ws://host:port/path, not {:?}", self.url);
        }
        Ok(WsWatchConfig {
            url: self.url.clone(),
            duration: seconds(self.duration_s, "--duration-s")?,
            stall: self.stall,
            metrics_url: self.metrics_url.clone(),
            window: seconds(self.window_s, "--window-s")?,
            progress: !self.quiet,
            ..WsWatchConfig::default()
        })
    }
}

/// Counts of milliseconds in 1-ms buckets, `0..=HISTOGRAM_MAX_MS`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; HISTOGRAM_MAX_MS as usize + 1],
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        let bucket = ms.min(HISTOGRAM_MAX_MS) as usize;
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.n += 1;
        self.max = self.max.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// The smallest value with at least `q` of the samples at or below it
    /// (`q` in 0..=1); the exact max for the last bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((ms as u64).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.n = 0;
        self.max = 0;
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n,
            "p50_ms": self.quantile(0.50),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.max(),
        })
    }
}

/// What one window of a reading client saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// End of the window, seconds after connecting.
    pub end_s: f64,
    pub frames: u64,
    pub positions: u64,
    pub positions_per_s: f64,
    /// Freshness against `received_ms` within the window.
    pub fresh_p99_ms: Option<u64>,
    pub fresh_max_ms: Option<u64>,
}

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
    /// The server closed the connection (or it broke) before our deadline.
    pub disconnected: bool,
    pub disconnected_after_s: Option<f64>,
    pub disconnect_reason: Option<String>,
    /// Stalled client: the server had closed it when we finally read.
    pub server_closed: Option<bool>,
    /// Stalled client: frames still buffered when we read at the end.
    pub drained_frames: u64,
    /// Stalled client with `--metrics-url`: when the gateway's stalled
    /// counter first rose above its value at our connect (unix ms).
    pub stalled_counter_rose_at_ms: Option<u64>,
    pub stalled_counter_before: Option<u64>,
    pub stalled_counter_after: Option<u64>,
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
        self.stalled_counter_rose_at_ms
            .map(|t| t.saturating_sub(self.connected_at_ms) as f64 / 1000.0)
    }

    pub fn to_json_line(&self) -> String {
        let windows: Vec<_> = self
            .windows
            .iter()
            .map(|w| {
                serde_json::json!({
                    "end_s": w.end_s,
                    "frames": w.frames,
                    "positions": w.positions,
                    "positions_per_s": w.positions_per_s,
                    "fresh_p99_ms": w.fresh_p99_ms,
                    "fresh_max_ms": w.fresh_max_ms,
                })
            })
            .collect();
        serde_json::json!({
            "mode": if self.stall { "stall" } else { "read" },
            "url": self.url,
            "connected_at_ms": self.connected_at_ms,
            "handshake_ms": self.handshake_ms,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "frames": self.frames,
            "frames_per_s": self.frames_per_s(),
            "bytes": self.bytes,
            "snapshot_vehicles": self.snapshot_vehicles,
            "positions": self.positions,
            "positions_per_s": self.positions_per_s(),
            "statuses": self.statuses,
            "events": self.events,
            "lagged": self.lagged,
            "lagged_frames": self.lagged_frames,
            "parse_errors": self.parse_errors,
            "distinct_vehicles": self.distinct_vehicles,
            "fresh_received": self.fresh_received.to_json(),
            "fresh_fix": self.fresh_fix.to_json(),
            "negative_freshness": self.negative_freshness,
            "max_frame_gap_ms": self.max_frame_gap_ms,
            "windows": windows,
            "disconnected": self.disconnected,
            "disconnected_after_s": self.disconnected_after_s,
            "disconnect_reason": self.disconnect_reason,
            "server_closed": self.server_closed,
            "drained_frames": self.drained_frames,
            "stalled_counter_before": self.stalled_counter_before,
            "stalled_counter_after": self.stalled_counter_after,
            "stalled_counter_rose_at_ms": self.stalled_counter_rose_at_ms,
            "stalled_disconnect_after_s": self.stalled_disconnect_after_s(),
        })
        .to_string()
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
        match &self.disconnect_reason {
            Some(reason) => {
                s += &format!(
                    "  disconnected         after {:.1} s: {reason}\n",
                    self.disconnected_after_s.unwrap_or(0.0)
                )
            }
            None => s += "  disconnected         no\n",
        }
        if self.stall {
            s += &format!(
                "  server closed it     {} ({} frames were still buffered)\n",
                match self.server_closed {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                },
                self.drained_frames
            );
            if let Some(after) = self.stalled_disconnect_after_s() {
                s += &format!(
                    "  stalled counter rose {after:.1} s after the last read ({} -> {})\n",
                    opt(self.stalled_counter_before),
                    opt(self.stalled_counter_after)
                );
            }
        }
        s
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn per_s(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The parts of a feed frame the watcher reads; everything else is skipped.
#[derive(Deserialize)]
struct FrameIn<'a> {
    #[serde(default, borrow)]
    positions: Vec<PositionIn<'a>>,
    #[serde(default)]
    statuses: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    events: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    lagged: u64,
    #[serde(default)]
    snapshot: bool,
    #[serde(default, borrow)]
    vehicles: Option<Vec<VehicleIn<'a>>>,
}

#[derive(Deserialize)]
struct PositionIn<'a> {
    #[serde(borrow)]
    vehicle_id: Cow<'a, str>,
    time_ms: u64,
    received_ms: u64,
}

#[derive(Deserialize)]
struct VehicleIn<'a> {
    #[serde(borrow)]
    vehicle_id: Cow<'a, str>,
}

/// Connects and watches for `cfg.duration`; errors only when the
/// connection cannot be made.
pub async fn ws_watch(cfg: WsWatchConfig) -> anyhow::Result<WsWatchReport> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let started = Instant::now();
    let (ws, _response) = timeout(
        cfg.connect_timeout,
        tokio_tungstenite::connect_async_with_config(cfg.url.as_str(), Some(ws_config), true),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no WebSocket handshake with {} in time", cfg.url))?
    .with_context(|| format!("cannot open a WebSocket to {}", cfg.url))?;
    let mut report = WsWatchReport {
        url: cfg.url.clone(),
        stall: cfg.stall,
        connected_at_ms: now_ms(),
        handshake_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..WsWatchReport::default()
    };
    let connected = Instant::now();
    let deadline = connected + cfg.duration;
    if cfg.stall {
        stall(ws, &cfg, &mut report, connected, deadline).await;
    } else {
        read(ws, &cfg, &mut report, connected, deadline).await;
    }
    Ok(report)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn read(
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
    if !report.disconnected {
        // Say goodbye, but do not wait long for the server's echo.
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

fn disconnected(report: &mut WsWatchReport, connected: Instant, why: String) {
    report.disconnected = true;
    report.disconnected_after_s = Some(connected.elapsed().as_secs_f64());
    report.disconnect_reason = Some(why);
}

async fn stall(
    mut ws: Ws,
    cfg: &WsWatchConfig,
    report: &mut WsWatchReport,
    connected: Instant,
    deadline: Instant,
) {
    // Never read until the deadline; meanwhile, maybe watch the gateway count us.
    if let Some(url) = &cfg.metrics_url {
        report.stalled_counter_before = fetch_metric(url, STALLED_SERIES).await;
        let mut poll = tokio::time::interval(METRICS_POLL);
        loop {
            tokio::select! {
                () = sleep_until(deadline) => break,
                _ = poll.tick() => {}
            }
            let Some(now) = fetch_metric(url, STALLED_SERIES).await else {
                continue;
            };
            report.stalled_counter_after = Some(now);
            if report.stalled_counter_rose_at_ms.is_none()
                && report
                    .stalled_counter_before
                    .is_some_and(|before| now > before)
            {
                report.stalled_counter_rose_at_ms = Some(now_ms());
                if cfg.progress {
                    eprintln!(
                        "[{:>6.1}s] ws-watch --stall: the gateway counted a stalled disconnect ({STALLED_SERIES} {} -> {now})",
                        connected.elapsed().as_secs_f64(),
                        opt(report.stalled_counter_before),
                    );
                }
            }
        }
    } else {
        sleep_until(deadline).await;
    }
    report.elapsed = connected.elapsed();
    // Now read: what was buffered, then the server's close, if it closed us.
    let drain_deadline = Instant::now() + DRAIN_BUDGET;
    let closed = loop {
        let message = tokio::select! {
            () = sleep_until(drain_deadline) => break false,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                report.drained_frames += 1;
                report.bytes += text.len() as u64;
            }
            Some(Ok(Message::Close(_))) => {
                report.disconnect_reason = Some("close frame".to_owned());
                break true;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.disconnect_reason = Some(format!("error: {e}"));
                break true;
            }
            None => {
                report.disconnect_reason = Some("connection closed".to_owned());
                break true;
            }
        }
    };
    report.server_closed = Some(closed);
    report.disconnected = closed;
    if !closed {
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

/// GETs `url` (plain `http://host:port/path`) and returns the value of
/// `series`; `None` on any failure.
pub async fn fetch_metric(url: &str, series: &str) -> Option<u64> {
    let rest = url.strip_prefix("http://")?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let body = timeout(METRICS_TIMEOUT, async {
        let mut stream = TcpStream::connect(host_port).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(MAX_METRICS_BYTES)
            .read_to_end(&mut response)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&response).into_owned())
    })
    .await
    .ok()??;
    metric_value(&body, series)
}

/// The value of `series` (exact name, labels included) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_max() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms);
        }
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.max(), Some(100));
        h.record(HISTOGRAM_MAX_MS * 3);
        assert_eq!(h.max(), Some(HISTOGRAM_MAX_MS * 3));
        assert_eq!(h.quantile(1.0), Some(HISTOGRAM_MAX_MS));
        h.clear();
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn frames_parse_and_unknown_fields_are_skipped() {
        let text = r#"{"positions":[{"vehicle_id":"truck-1","seq":3,"time_ms":10,"lat":52.0,"lon":4.0,"speed_kmh":1.0,"received_ms":12}],"statuses":[{"x":1}],"events":[],"lagged":4}"#;
        let f: FrameIn = serde_json::from_str(text).unwrap();
        assert_eq!(f.positions.len(), 1);
        assert_eq!(f.positions[0].vehicle_id, "truck-1");
        assert_eq!(
            (f.positions[0].time_ms, f.positions[0].received_ms),
            (10, 12)
        );
        assert_eq!((f.statuses.len(), f.lagged, f.snapshot), (1, 4, false));
        let snap = r#"{"snapshot":true,"vehicles":[{"vehicle_id":"a","status":"online","position":null}],"positions":[],"statuses":[],"events":[]}"#;
        let f: FrameIn = serde_json::from_str(snap).unwrap();
        assert!(f.snapshot);
        assert_eq!(f.vehicles.map(|v| v.len()), Some(1));
    }

    #[test]
    fn metric_values_are_found_by_exact_series() {
        let text = "# HELP x\nfleetgate_ws_clients 2\nfleetgate_ws_stalled_disconnects_total 1\nfleetgate_messages_decoded_total{kind=\"position\"} 12345\n";
        assert_eq!(metric_value(text, STALLED_SERIES), Some(1));
        assert_eq!(metric_value(text, "fleetgate_ws_clients"), Some(2));
        assert_eq!(
            metric_value(text, "fleetgate_messages_decoded_total{kind=\"position\"}"),
            Some(12345)
        );
        assert_eq!(metric_value(text, "fleetgate_ws"), None);
    }
}
