//! `loadgen idle-conn`: a connection-count and memory probe for any MQTT
//! 3.1.1 broker.
//!
//! In: an [`IdleConnConfig`] (from [`IdleConnArgs`]): how many connections,
//! how fast, how long to hold them, and optionally the broker's pid. Out:
//! an [`IdleConnReport`]: connected and failed counts, the connect rate,
//! connections the broker dropped while they were held, and the broker's
//! RSS before and after (so its memory per idle connection), printed as a
//! human line and one JSON line ([`crate::results::IdleConnLine`]).
//!
//! Each connection is a raw socket with a hand-written CONNECT
//! ([`crate::mqtt`]), pinged at half its keep-alive: far cheaper than a
//! client library's event loop, so the probe measures the broker, not
//! itself. Bound: [`IDLE_CONNECT_CONCURRENCY`] handshakes in flight, then
//! per connection one socket, a 64-byte read buffer and one small task;
//! every wait is bounded (`IDLE_HANDSHAKE_TIMEOUT`, the hold, 10 s to close).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use firmware_sim::runner::raise_open_files_limit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::mqtt::{connect_packet, handshake, resolve};
use crate::procfs::rss_kib;
use crate::results::IdleConnLine;

#[derive(Debug, Args)]
pub struct IdleConnArgs {
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Connections opened per second (0: as fast as possible, bounded concurrency).
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u32,
    /// Seconds to hold the connections once all are up.
    #[arg(long, default_value_t = 5.0)]
    pub hold_s: f64,
    /// Report this process's resident memory (e.g. the broker's) before and after.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long, default_value = "idle-")]
    pub id_prefix: String,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// Name of the broker under test, recorded in the JSON line (with `"scenario": "idle-conn"`).
    #[arg(long)]
    pub label: Option<String>,
}

impl IdleConnArgs {
    pub fn to_config(&self) -> anyhow::Result<IdleConnConfig> {
        Ok(IdleConnConfig {
            broker: self.broker.clone(),
            connections: self.connections,
            connect_rate_per_s: self.connect_rate,
            hold: Duration::try_from_secs_f64(self.hold_s).map_err(|_| {
                anyhow::anyhow!("--hold-s must be a non-negative number of seconds")
            })?,
            pid: self.pid,
            id_prefix: self.id_prefix.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            keep_alive_s: 60,
        })
    }
}

/// What [`idle_connections`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleConnConfig {
    pub broker: String,
    pub connections: usize,
    /// New connections per second; 0 = as fast as possible with
    /// [`IDLE_CONNECT_CONCURRENCY`] handshakes in flight.
    pub connect_rate_per_s: u32,
    pub hold: Duration,
    /// Process whose VmRSS to report (e.g. the gateway's).
    pub pid: Option<u32>,
    pub id_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_s: u16,
}

/// Handshakes in flight at once when ramping "as fast as possible".
pub const IDLE_CONNECT_CONCURRENCY: usize = 256;
const IDLE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdleConnReport {
    pub attempted: usize,
    /// Connections that got a successful CONNACK.
    pub connected: usize,
    pub failed: usize,
    /// From the first attempt to the last CONNACK.
    pub connect_elapsed: Duration,
    /// Connections that closed while being held.
    pub dropped_while_held: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl IdleConnReport {
    pub fn connects_per_s(&self) -> f64 {
        let secs = self.connect_elapsed.as_secs_f64();
        if secs > 0.0 {
            self.connected as f64 / secs
        } else {
            0.0
        }
    }
    /// (RSS after − RSS before) / connections, in KiB.
    pub fn kib_per_connection(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.connected > 0).then(|| (after as f64 - before as f64) / self.connected as f64)
    }
    /// The result line; `label` names the broker under test (with
    /// `"scenario": "idle-conn"`).
    pub fn to_line(&self, label: Option<&str>) -> IdleConnLine {
        IdleConnLine {
            scenario: label.map(|_| "idle-conn".to_owned()),
            broker: label.map(str::to_owned),
            attempted: self.attempted,
            connected: Some(self.connected),
            failed: self.failed,
            connect_elapsed_s: self.connect_elapsed.as_secs_f64(),
            connects_per_s: Some(self.connects_per_s()),
            dropped_while_held: self.dropped_while_held,
            rss_before_kib: self.rss_before_kib,
            rss_after_kib: self.rss_after_kib,
            kib_per_connection: self.kib_per_connection(),
        }
    }
}

/// Opens `connections` idle MQTT connections, measures the connect rate and
/// (with `pid`) the broker's memory per connection, holds them, then closes them.
pub async fn idle_connections(cfg: IdleConnConfig) -> anyhow::Result<IdleConnReport> {
    raise_open_files_limit();
    let addr = resolve(&cfg.broker).await?;
    let mut report = IdleConnReport {
        attempted: cfg.connections,
        rss_before_kib: cfg.pid.and_then(rss_kib),
        ..IdleConnReport::default()
    };
    let handshakes = Arc::new(Semaphore::new(IDLE_CONNECT_CONCURRENCY));
    let (release_tx, release_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<bool>(cfg.connections.max(1));
    let dropped = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..cfg.connections {
        if cfg.connect_rate_per_s > 0 {
            sleep_until(
                start + Duration::from_secs_f64(i as f64 / f64::from(cfg.connect_rate_per_s)),
            )
            .await;
        }
        let permit = Arc::clone(&handshakes).acquire_owned().await?;
        let packet = connect_packet(
            &format!("{}{i:06}", cfg.id_prefix),
            cfg.keep_alive_s,
            cfg.username.as_deref(),
            cfg.password.as_deref(),
        );
        let (done, release, dropped) = (done_tx.clone(), release_rx.clone(), Arc::clone(&dropped));
        // Ping at half the keep-alive, well inside the broker's 1.5× grace.
        let keep_alive = Duration::from_secs(u64::from(cfg.keep_alive_s.max(2)) / 2);
        tasks.spawn(async move {
            let stream = timeout(IDLE_HANDSHAKE_TIMEOUT, handshake(addr, &packet)).await;
            drop(permit);
            let Ok(Ok(stream)) = stream else {
                let _ = done.send(false).await;
                return;
            };
            let _ = done.send(true).await;
            if !hold_connection(stream, keep_alive, release).await {
                dropped.fetch_add(1, Relaxed);
            }
        });
    }
    drop(done_tx);
    let mut last_connack = start;
    for _ in 0..cfg.connections {
        match done_rx.recv().await {
            Some(true) => {
                report.connected += 1;
                last_connack = Instant::now();
            }
            Some(false) => report.failed += 1,
            None => break,
        }
    }
    report.connect_elapsed = last_connack - start;
    // Let the broker settle (lazy allocations after CONNACK) before measuring.
    sleep(Duration::from_millis(500)).await;
    report.rss_after_kib = cfg.pid.and_then(rss_kib);
    sleep(cfg.hold).await;
    let _ = release_tx.send(true);
    let _ = timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    report.dropped_while_held = dropped.load(Relaxed);
    Ok(report)
}

/// Keeps a connection open with PINGREQs until `release`; false if the broker closed it first.
async fn hold_connection(
    mut stream: TcpStream,
    ping_every: Duration,
    mut release: watch::Receiver<bool>,
) -> bool {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            _ = release.changed() => {
                // DISCONNECT, so the broker does not count a dropped client.
                let _ = stream.write_all(&[0xe0, 0x00]).await;
                return true;
            }
            _ = ping.tick() => {
                if stream.write_all(&[0xc0, 0x00]).await.is_err() {
                    return false;
                }
            }
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return false,
                Ok(_) => {} // PINGRESP
            },
        }
    }
}
