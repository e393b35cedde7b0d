//! `loadgen churn`: clients that come and go, each with a fresh id and a
//! filter no one used before, against any MQTT 3.1.1 broker — the way a
//! dashboard that subscribes per vehicle, or a fleet of scripts, uses a
//! broker over its life.
//!
//! In: a [`ChurnConfig`] (from [`ChurnArgs`]). Out: a [`ChurnReport`]:
//! cycles per second, subscriptions the broker refused (SUBACK 0x80),
//! failures, the broker's RSS after a warm-up and at the end (so its growth
//! per client), and whether a new client can still subscribe and receive
//! afterwards (the lockout check); printed as a human line and one JSON
//! line ([`crate::results::ChurnLine`]).
//!
//! A cycle: TCP connect, CONNECT (clean session) with id `<prefix><n>`,
//! SUBSCRIBE to `<prefix>/<n>/#` (QoS 0), its SUBACK, DISCONNECT, close.
//! With `--one-connection` (many distinct filters over time, the way a
//! long-lived dashboard subscribes per vehicle), each worker keeps one
//! connection and a cycle is SUBSCRIBE to a new filter, its SUBACK,
//! UNSUBSCRIBE, its UNSUBACK.
//! Bound: `concurrency` cycles in flight, each a socket and a few bytes;
//! every wait is bounded by [`CHURN_TIMEOUT`].

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::mqtt::{
    connect_packet, handshake, put_publish, resolve, subscribe_packet, unsubscribe_packet,
};
use crate::procfs::rss_kib;
use crate::results::ChurnLine;

/// The longest any one step of a cycle may take.
pub const CHURN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ChurnArgs {
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Measured cycles, after the warm-up.
    #[arg(long, default_value_t = 20_000)]
    pub cycles: usize,
    /// Cycles run first and not measured (the broker's pools fill).
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Report this process's resident memory (the broker's) after the
    /// warm-up and at the end.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long, default_value = "churn-")]
    pub id_prefix: String,
    /// Each worker keeps one connection; a cycle subscribes to a new filter
    /// and unsubscribes it again.
    #[arg(long)]
    pub one_connection: bool,
    /// The scenario recorded in the JSON line.
    #[arg(long, default_value = "churn")]
    pub scenario: String,
    /// Name of the broker under test, recorded in the JSON line (with `"scenario": "churn"`).
    #[arg(long)]
    pub label: Option<String>,
}

/// What [`churn`] does.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    pub broker: String,
    pub cycles: usize,
    pub warmup: usize,
    pub concurrency: usize,
    pub pid: Option<u32>,
    pub id_prefix: String,
    pub one_connection: bool,
}

impl ChurnArgs {
    pub fn to_config(&self) -> ChurnConfig {
        ChurnConfig {
            broker: self.broker.clone(),
            cycles: self.cycles,
            warmup: self.warmup,
            concurrency: self.concurrency.max(1),
            pid: self.pid,
            id_prefix: self.id_prefix.clone(),
            one_connection: self.one_connection,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChurnReport {
    /// Measured cycles that completed (SUBACK received).
    pub completed: usize,
    /// Of those, subscriptions the broker refused (SUBACK 0x80).
    pub refused: usize,
    /// Cycles that failed (connect, CONNACK, SUBACK missing or late).
    pub failed: usize,
    pub elapsed: Duration,
    pub rss_warm_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// After all cycles, a new client subscribed to a new topic and
    /// received what was published to it.
    pub still_delivers: bool,
}

impl ChurnReport {
    pub fn cycles_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    pub fn growth_kib_per_1000(&self) -> Option<f64> {
        let (warm, after) = (self.rss_warm_kib?, self.rss_after_kib?);
        (self.completed > 0).then(|| (after as f64 - warm as f64) * 1000.0 / self.completed as f64)
    }

    pub fn to_line(&self, scenario: &str, label: Option<&str>) -> ChurnLine {
        ChurnLine {
            scenario: label.map(|_| scenario.to_owned()),
            broker: label.map(str::to_owned),
            connected: self.completed,
            refused: self.refused,
            failed: self.failed,
            cycles_per_s: self.cycles_per_s(),
            rss_warm_kib: self.rss_warm_kib,
            rss_after_kib: self.rss_after_kib,
            growth_kib_per_1000: self.growth_kib_per_1000(),
            still_delivers: self.still_delivers,
        }
    }

    pub fn to_human(&self) -> String {
        let rss = match (self.rss_warm_kib, self.rss_after_kib) {
            (Some(w), Some(a)) => format!(
                "; broker RSS {w} KiB after the warm-up, {a} KiB at the end ({:+.1} KiB per 1 000 clients)",
                self.growth_kib_per_1000().unwrap_or(0.0)
            ),
            _ => String::new(),
        };
        format!(
            "churn: {} cycles in {:.2} s ({:.0}/s), {} subscriptions refused, {} failed{rss}; a new client {}\n",
            self.completed,
            self.elapsed.as_secs_f64(),
            self.cycles_per_s(),
            self.refused,
            self.failed,
            if self.still_delivers { "still subscribes and receives" } else { "could NOT subscribe and receive" },
        )
    }
}

/// Outcome of one cycle.
enum Cycle {
    Subscribed,
    Refused,
}

async fn cycle(addr: std::net::SocketAddr, prefix: &str, n: usize) -> std::io::Result<Cycle> {
    let connect = connect_packet(&format!("{prefix}{n}"), 30, None, None);
    let mut stream = timeout(CHURN_TIMEOUT, handshake(addr, &connect)).await??;
    let subscribe = subscribe_packet(&format!("{prefix}/{n}/#"), 0);
    stream.write_all(&subscribe).await?;
    // SUBACK for one filter: 0x90 0x03, packet id, return code.
    let mut suback = [0u8; 5];
    timeout(CHURN_TIMEOUT, stream.read_exact(&mut suback)).await??;
    if suback[0] != 0x90 {
        return Err(std::io::Error::other(format!(
            "expected SUBACK, got {suback:02x?}"
        )));
    }
    stream.write_all(&[0xe0, 0x00]).await?;
    let _ = stream.shutdown().await;
    Ok(if suback[4] == 0x80 {
        Cycle::Refused
    } else {
        Cycle::Subscribed
    })
}

/// SUBSCRIBE to a new filter and UNSUBSCRIBE it, on a connection kept open.
async fn filter_cycle(stream: &mut TcpStream, prefix: &str, n: usize) -> std::io::Result<Cycle> {
    let filter = format!("{prefix}/{n}/#");
    stream.write_all(&subscribe_packet(&filter, 0)).await?;
    let mut suback = [0u8; 5];
    timeout(CHURN_TIMEOUT, stream.read_exact(&mut suback)).await??;
    if suback[0] != 0x90 {
        return Err(std::io::Error::other(format!(
            "expected SUBACK, got {suback:02x?}"
        )));
    }
    stream.write_all(&unsubscribe_packet(&filter)).await?;
    let mut unsuback = [0u8; 4];
    timeout(CHURN_TIMEOUT, stream.read_exact(&mut unsuback)).await??;
    if unsuback[0] != 0xb0 {
        return Err(std::io::Error::other(format!(
            "expected UNSUBACK, got {unsuback:02x?}"
        )));
    }
    Ok(if suback[4] == 0x80 {
        Cycle::Refused
    } else {
        Cycle::Subscribed
    })
}

/// One worker's connection in `--one-connection` mode, opened on first use
/// and again after a failed cycle.
async fn kept_connection<'a>(
    addr: std::net::SocketAddr,
    prefix: &str,
    worker: usize,
    kept: &'a mut Option<TcpStream>,
) -> std::io::Result<&'a mut TcpStream> {
    if kept.is_none() {
        let connect = connect_packet(&format!("{prefix}w{worker}"), 30, None, None);
        *kept = Some(timeout(CHURN_TIMEOUT, handshake(addr, &connect)).await??);
    }
    kept.as_mut()
        .ok_or_else(|| std::io::Error::other("no connection"))
}

/// Runs `count` cycles numbered from `first`, `concurrency` at a time.
async fn run_cycles(
    addr: std::net::SocketAddr,
    prefix: &Arc<str>,
    first: usize,
    count: usize,
    concurrency: usize,
    one_connection: bool,
) -> (usize, usize, usize) {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency.min(count.max(1)) {
        let (next, prefix) = (Arc::clone(&next), Arc::clone(prefix));
        workers.spawn(async move {
            let (mut ok, mut refused, mut failed) = (0, 0, 0);
            let mut kept = None;
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= end {
                    return (ok, refused, failed);
                }
                let outcome = if one_connection {
                    match kept_connection(addr, &prefix, worker, &mut kept).await {
                        Ok(stream) => filter_cycle(stream, &prefix, n).await,
                        Err(e) => Err(e),
                    }
                } else {
                    cycle(addr, &prefix, n).await
                };
                match outcome {
                    Ok(Cycle::Subscribed) => ok += 1,
                    Ok(Cycle::Refused) => refused += 1,
                    Err(_) => {
                        failed += 1;
                        kept = None;
                    }
                }
            }
        });
    }
    let mut totals = (0, 0, 0);
    while let Some(done) = workers.join_next().await {
        if let Ok((ok, refused, failed)) = done {
            totals = (totals.0 + ok, totals.1 + refused, totals.2 + failed);
        }
    }
    totals
}

/// After the churn: a new subscriber on a new topic, and a publish to it.
async fn still_delivers(addr: std::net::SocketAddr, prefix: &str) -> anyhow::Result<bool> {
    let topic = format!("{prefix}/check/{}", std::process::id());
    let connect = connect_packet(&format!("{prefix}check-sub"), 30, None, None);
    let mut sub = timeout(CHURN_TIMEOUT, handshake(addr, &connect)).await??;
    sub.write_all(&subscribe_packet(&topic, 0)).await?;
    let mut suback = [0u8; 5];
    timeout(CHURN_TIMEOUT, sub.read_exact(&mut suback)).await??;
    if suback[4] == 0x80 {
        return Ok(false);
    }
    let connect = connect_packet(&format!("{prefix}check-pub"), 30, None, None);
    let mut publisher = timeout(CHURN_TIMEOUT, handshake(addr, &connect)).await??;
    let mut publish = Vec::new();
    put_publish(&mut publish, topic.as_bytes(), 0, 0, b"still here");
    publisher.write_all(&publish).await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + CHURN_TIMEOUT;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match timeout(deadline - Instant::now(), sub.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(10).any(|w| w == b"still here") {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

pub async fn churn(cfg: ChurnConfig) -> anyhow::Result<ChurnReport> {
    let addr = resolve(&cfg.broker).await?;
    let prefix: Arc<str> = Arc::from(cfg.id_prefix.as_str());
    let _ = run_cycles(
        addr,
        &prefix,
        0,
        cfg.warmup,
        cfg.concurrency,
        cfg.one_connection,
    )
    .await;
    let rss_warm_kib = cfg.pid.and_then(rss_kib);
    let started = Instant::now();
    let (completed_ok, refused, failed) = run_cycles(
        addr,
        &prefix,
        cfg.warmup,
        cfg.cycles,
        cfg.concurrency,
        cfg.one_connection,
    )
    .await;
    let elapsed = started.elapsed();
    let rss_after_kib = cfg.pid.and_then(rss_kib);
    let still_delivers = still_delivers(addr, &prefix).await.unwrap_or(false);
    Ok(ChurnReport {
        completed: completed_ok + refused,
        refused,
        failed,
        elapsed,
        rss_warm_kib,
        rss_after_kib,
        still_delivers,
    })
}
