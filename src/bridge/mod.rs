//! The upstream bridge: fleet updates to central RabbitMQ over AMQP 0-9-1,
//! through a durable disk spool; commands and notifications back down.
//!
//! In: fleet updates from the bridge's fan-out queue (policy `block`: the
//! spool is on disk, so the bridge never loses an update it was given);
//! deliveries from RabbitMQ's command and notification queues. Out: AMQP
//! publishes (persistent, `mandatory`, with confirms); commands as postcard
//! on `v/<vid>/cmd`; notifications to users' WebSockets.
//!
//! - [`feeder`]: update → [`record::UplinkRecord`] → spool. Positions are
//!   downsampled per vehicle (`bridge.position_interval_ms`); statuses,
//!   events and package changes always go.
//! - [`uplink`]: the supervisor: connect, declare, publish from the spool
//!   with a window of `bridge.confirm_window` unconfirmed publishes, confirm
//!   records as RabbitMQ acks them, reconnect with jittered exponential
//!   backoff. A record leaves the spool only after its confirm.
//! - [`spool`]: the on-disk log; its `//!` is the storage design.
//! - [`downlink`]: the command and notification consumers.
//! - [`mailboxes`]: per-user notification mailboxes, read by `GET
//!   /notification`.
//!
//! Before it: the fan-out (the feeder's queue). After it: RabbitMQ. The ways
//! back start here: commands → the broker (`v/<vid>/cmd`) → the edge's
//! vehicle registry; notifications → [`mailboxes`] →
//! `api::notifications`.
//!
//! Bound: the spool's `bridge.spool_max_bytes` on disk; in memory the
//! fan-out queue (`bridge.feed_queue`), one window of records, and the
//! per-vehicle downsampling clock (`fleet.max_vehicles` × 8 bytes).

pub mod downlink;
pub mod feeder;
pub mod mailboxes;
pub mod record;
pub mod spool;
pub mod unroutable;
pub mod uplink;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::broker::BrokerPublisher;
use crate::config::{Config, FsyncMode};
use crate::fanout::{Fanout, FanoutError, Filter, SubscribeOptions, WhenFull};
use crate::metrics::Metrics;
use mailboxes::Mailboxes;
use spool::{FsyncPolicy, Spool, SpoolConfig, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot open the bridge spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot lock the spool directory {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the spool directory {0} is in use by another fleetgate process (each gateway needs its own data_dir)")]
    InUse(std::path::PathBuf),
    #[error(transparent)]
    Fanout(#[from] FanoutError),
}

/// The spool, shared by the feeder (appends) and the uplink (reads,
/// confirms); every call that may touch the disk runs on a blocking thread.
#[derive(Clone)]
pub struct SharedSpool {
    spool: Arc<Mutex<Spool>>,
    /// Held while the spool is open: a second gateway on the same
    /// directory would interleave two logs.
    _lock: Arc<std::fs::File>,
    /// Something was appended: the uplink may have work.
    appended: Arc<Notify>,
}

impl SharedSpool {
    /// Runs `f` on the spool on a blocking thread.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || f(&mut spool.lock()))
            .await
            .ok()
    }
}

/// The bridge's running tasks.
pub struct BridgeTasks {
    /// Ends by itself after ingest stops, once the fan-out is drained into
    /// the spool and fsynced: awaited at shutdown.
    pub feeder: JoinHandle<()>,
    /// Run until aborted: the uplink and the stats reporter. Whatever they
    /// had in flight is unconfirmed, so it is resent after a restart.
    pub others: Vec<JoinHandle<()>>,
}

/// Starts the bridge's tasks. Returns at once: the uplink connects (and
/// reconnects) in the background, and the gateway serves meanwhile.
pub fn start(
    config: &Config,
    fanout: &Fanout,
    metrics: Arc<Metrics>,
    broker: BrokerPublisher,
    mailboxes: Arc<Mailboxes>,
    durable: Arc<crate::acks::Durable>,
) -> Result<BridgeTasks, BridgeError> {
    let bridge = &config.bridge;
    let spool_dir = config.data_dir.0.join("spool");
    let lock = lock_dir(&spool_dir)?;
    let (spool, report) = Spool::open(SpoolConfig {
        dir: spool_dir.clone(),
        max_bytes: bridge.spool_max_bytes,
        segment_bytes: bridge.spool_segment_bytes,
        fsync: match bridge.spool_fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::IntervalMs(bridge.spool_fsync_interval_ms),
        },
        // Each publish in flight can split one range of confirms from the
        // next: a window's worth keeps every confirm across a restart.
        persisted_ranges: bridge.confirm_window.get(),
    })?;
    log_recovery(&spool_dir, &report);
    metrics
        .bridge_spool_recovered_cut_bytes
        .store(report.truncated_bytes, Ordering::Relaxed);
    let shared = SharedSpool {
        spool: Arc::new(Mutex::new(spool)),
        _lock: Arc::new(lock),
        appended: Arc::new(Notify::new()),
    };
    let subscription = fanout.subscribe(SubscribeOptions {
        name: "bridge",
        policy: WhenFull::Block,
        capacity: bridge.feed_queue.get(),
        filter: Filter::All,
    })?;
    let feeder = tokio::spawn(feeder::run(
        subscription,
        shared.clone(),
        bridge.clone(),
        config.gateway_id.0.clone(),
        config.fleet.max_vehicles.get(),
        metrics.clone(),
        durable,
    ));
    let others = vec![
        tokio::spawn(uplink::run(
            shared.clone(),
            bridge.clone(),
            config.gateway_id.0.clone(),
            metrics.clone(),
            downlink::Downlink {
                config: bridge.clone(),
                broker,
                mailboxes,
                metrics: metrics.clone(),
            },
        )),
        tokio::spawn(report_stats(shared, metrics)),
    ];
    Ok(BridgeTasks { feeder, others })
}

/// An exclusive lock on `dir/LOCK`, released when the process ends.
fn lock_dir(dir: &Path) -> Result<std::fs::File, BridgeError> {
    let io = |source| BridgeError::Lock {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BridgeError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn log_recovery(dir: &Path, report: &spool::RecoveryReport) {
    if report.truncated_bytes > 0 || report.corrupt_records > 0 {
        tracing::warn!(
            dir = %dir.display(),
            records = report.records,
            cut_bytes = report.truncated_bytes,
            corrupt_records = report.corrupt_records,
            "spool recovered: a torn or corrupt tail was cut"
        );
    } else {
        tracing::info!(dir = %dir.display(), records = report.records, segments = report.segments, "spool opened");
    }
    if report.unconfirmed > 0 || report.confirmed_out_of_order > 0 {
        // Once, at start: what this run will send of what the last one
        // left (counted as sent in bridge_spool_resent_after_recovery_total).
        tracing::info!(
            to_send = report.unconfirmed,
            skipped_confirmed_out_of_order = report.confirmed_out_of_order,
            confirmed_through = report.confirmed_through,
            "spool: unconfirmed records from the last run will be sent (again)"
        );
    }
}

/// Copies the spool's figures into `/metrics` once a second.
async fn report_stats(spool: SharedSpool, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(stats) = spool.with(|s| s.stats()).await else {
            continue;
        };
        let now = crate::clock::now_ms();
        metrics
            .bridge_spool_bytes
            .store(stats.bytes, Ordering::Relaxed);
        metrics
            .bridge_spool_records
            .store(stats.unconfirmed, Ordering::Relaxed);
        metrics.bridge_spool_oldest_age_ms.store(
            stats
                .oldest_unconfirmed_ms
                .map_or(0, |t| now.saturating_sub(t)),
            Ordering::Relaxed,
        );
        metrics
            .bridge_spool_dropped_total_position
            .store(stats.dropped[0], Ordering::Relaxed);
        metrics
            .bridge_spool_dropped_total_status
            .store(stats.dropped[1], Ordering::Relaxed);
        metrics
            .bridge_spool_dropped_total_event
            .store(stats.dropped[2], Ordering::Relaxed);
        metrics
            .bridge_spool_dropped_total_package
            .store(stats.dropped[3], Ordering::Relaxed);
        metrics
            .bridge_spool_resent_after_recovery_total
            .store(stats.resent_after_recovery, Ordering::Relaxed);
    }
}
