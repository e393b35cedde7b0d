//! `loadgen ws-watch`: a client of the gateway's live WebSocket feed
//! (`GET /ws`), for load runs.
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
//! JSON line on stdout from the binary: [`crate::results::WsWatchLine`]).
//!
//! Bound: one frame at a time (tungstenite's message size limit, set to
//! [`MAX_MESSAGE_BYTES`]); two fixed-size [`Histogram`]s (HDR, exact to the
//! ms below 32 s, capped at [`HISTOGRAM_MAX_MS`]) plus one per window; the
//! set of distinct vehicle ids is capped at [`MAX_DISTINCT_VEHICLES`]; one
//! summary per window (duration / window entries). Nothing from the
//! network is unwrapped: a frame that does not parse is counted in
//! `parse_errors`.
//!
//! # Layout
//!
//! - this file: the configuration, the arguments and [`ws_watch`];
//! - `reading`: the reading client and the frames it parses;
//! - `stalled`: the stalled client and the gateway counter it polls;
//! - `histogram`: freshness in bounded memory;
//! - `report`: [`WsWatchReport`], for people and as a result line.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use firmware_sim::clock::now_ms;

mod histogram;
mod reading;
mod report;
mod stalled;
#[cfg(test)]
mod tests;

/// What one window of a reading client saw.
pub use crate::results::WsWindowLine as Window;
pub use histogram::Histogram;
pub use report::WsWatchReport;
pub use stalled::{fetch_metric, metric_value};

/// Largest frame the watcher accepts (a snapshot of 10 000 vehicles is ~3 MB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Freshness above this is counted at this value (its max is still exact).
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

/// The arguments of `loadgen ws-watch` (here, not in `main.rs`, so the
/// subcommand stays in its module).
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
        stalled::stall(ws, &cfg, &mut report, connected, deadline).await;
    } else {
        reading::read(ws, &cfg, &mut report, connected, deadline).await;
    }
    Ok(report)
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;
