//! The simulated fleet (feature `runner`): many [`Device`]s driving
//! [`RouteSim`] routes, each over its own MQTT connection.
//!
//! In: a [`FleetConfig`] and a shutdown future. Out: MQTT traffic to the
//! broker (`v/<vid>/status` online on connect, `v/<vid>/pos` at the
//! configured rate, a last will of `Status{online:false}`), commands from
//! `v/<vid>/cmd` applied to each device, a progress line per second on
//! stderr if asked, and a [`Summary`].
//!
//! Per vehicle: one rumqttc `AsyncClient` and its `EventLoop`, polled in a
//! task of its own (rumqttc's event loop must be polled for anything to
//! happen, and must not be starved by the driver), and one driver task that
//! owns the [`Device`]. The two talk through an atomic "connected" flag and
//! a 4-slot channel (connect notices and commands). Publishes use
//! `try_publish`: a full request queue is backpressure, and the position
//! goes to the offline ring like any unsent one.
//!
//! Bound: per vehicle, rumqttc's request queue ([`REQUEST_QUEUE`] entries),
//! its packet buffers (max packet [`MAX_PACKET_BYTES`]), a [`BoundedRing`]
//! of at most `ring_capacity` positions (allocated only as it fills), and
//! two small tasks. Nothing grows with the number of messages; the only
//! per-message allocations are the owned topic and payload that rumqttc's
//! `try_publish` takes (JSON mode adds the JSON text).
//!
//! Outages ([`Outage`]) are simulated at the client: at `after` every event
//! loop drops its socket (`EventLoop::clean`) and stops polling for
//! `length`, so the broker sees the link die (and publishes the will) and
//! the devices buffer; after it they reconnect and replay.
//!
//! # Layout
//!
//! - this file: [`FleetConfig`], [`Outage`], [`Summary`] and [`run_fleet`],
//!   which starts the vehicles and stops them;
//! - `vehicle`: one vehicle's driver task and event-loop task;
//! - `uplink`: the MQTT client as a device [`Uplink`](crate::Uplink), and
//!   the payloads it sends;
//! - `counters`: the fleet's live totals behind the [`Summary`].
//!
//! [`Device`]: crate::Device
//! [`RouteSim`]: crate::route::RouteSim
//! [`BoundedRing`]: crate::device::BoundedRing

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::QoS;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

mod counters;
#[cfg(test)]
mod tests;
mod uplink;
mod vehicle;

use counters::FleetCounters;
use vehicle::run_vehicle;

/// rumqttc request queue per vehicle: room for a replay burst between two
/// polls; when full, positions wait in the offline ring.
pub const REQUEST_QUEUE: usize = 64;
/// Largest MQTT packet a vehicle sends or accepts (our payloads are < 200 bytes).
pub const MAX_PACKET_BYTES: usize = 2048;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While the ring holds positions the link could take, retry this often
/// rather than waiting for the next report.
const REPLAY_RETRY: Duration = Duration::from_millis(20);
/// How long a stopping vehicle waits for outstanding PubAcks.
const ACK_GRACE: Duration = Duration::from_secs(3);
/// How long the fleet waits for vehicles to say goodbye after a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Every link drops at `after` (from the start of the run) and comes back `length` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub after: Duration,
    pub length: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// `host:port` of the MQTT broker, e.g. "127.0.0.1:1883".
    pub broker: String,
    pub vehicles: usize,
    /// Vehicle ids are `{id_prefix}{n:04}`, n from `first_id`.
    pub id_prefix: String,
    pub first_id: usize,
    /// Positions per second per vehicle.
    pub rate_hz: f64,
    /// 0 or 1 (anything above is taken as 1).
    pub qos: u8,
    /// Stop after this long (None: until `shutdown` or all vehicles are done).
    pub duration: Option<Duration>,
    /// Each vehicle stops after this many positions (tests).
    pub positions_per_vehicle: Option<u32>,
    /// New connections per second while ramping up; 0 = all at once.
    pub connect_rate_per_s: u32,
    pub outage: Option<Outage>,
    /// Positions each vehicle keeps while offline (the newest win).
    pub ring_capacity: usize,
    /// Send positions and statuses as JSON instead of postcard.
    pub json: bool,
    pub seed: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// After the run, each vehicle keeps sending what its offline ring
    /// holds (reconnecting if it must) for at most this long before it
    /// leaves, so the summary's counts are final, not "still unsent".
    pub drain: Option<Duration>,
    /// Share of the fleet (0 to 1, spread evenly over the ids) whose
    /// drivers speed: a pace of 1.2–1.4 ([`RouteSim::with_pace`]).
    ///
    /// [`RouteSim::with_pace`]: crate::route::RouteSim::with_pace
    pub speeders: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".to_owned(),
            vehicles: 10,
            id_prefix: "truck-".to_owned(),
            first_id: 1,
            rate_hz: 1.0,
            qos: 0,
            duration: None,
            positions_per_vehicle: None,
            connect_rate_per_s: 100,
            outage: None,
            ring_capacity: 1000,
            json: false,
            seed: 1,
            progress: false,
            drain: None,
            speeders: 0.0,
        }
    }
}

/// What a run did. Counts are totals over all vehicles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Vehicles that got a CONNACK at least once.
    pub vehicles_connected: usize,
    /// Positions handed to the MQTT client (live and replayed).
    pub sent: u64,
    /// PubAcks received (QoS 1): for positions AND the online status sent on
    /// every connect, so a clean QoS 1 run ends with
    /// `acknowledged == sent + connects`. (The goodbye status goes at QoS 0:
    /// the client disconnects right after it.)
    pub acknowledged: u64,
    /// Positions put into an offline ring (link down or queue full).
    pub buffered: u64,
    /// Buffered positions evicted by newer ones.
    pub dropped: u64,
    /// Connection errors (refused, reset, timed out), each followed by a backoff.
    pub errors: u64,
    pub elapsed: Duration,
    /// Of `sent`, positions sent late from an offline ring (flagged REPLAYED).
    pub replayed: u64,
    /// Positions created (sent + still buffered + dropped).
    pub produced: u64,
    /// Positions still in offline rings at the end.
    pub unsent_at_end: u64,
    /// Status messages handed to the client (online on every connect, offline at the end).
    pub status_sent: u64,
    /// CONNACKs received: first connects plus reconnects.
    pub connects: u64,
    /// Times a publish found the client's request queue full.
    pub queue_full: u64,
    /// Commands received and applied, and those that did not decode.
    pub commands: u64,
    pub bad_commands: u64,
}

impl Summary {
    /// Positions handed to the client per second of the run.
    pub fn positions_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }

    /// One line of JSON, for scripts.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "vehicles_connected": self.vehicles_connected,
            "produced": self.produced,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "buffered": self.buffered,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "unsent_at_end": self.unsent_at_end,
            "status_sent": self.status_sent,
            "connects": self.connects,
            "queue_full": self.queue_full,
            "errors": self.errors,
            "commands": self.commands,
            "bad_commands": self.bad_commands,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "positions_per_s": self.positions_per_s(),
        })
        .to_string()
    }

    /// A block for people.
    pub fn to_human(&self) -> String {
        format!(
            "fleet summary\n  vehicles connected  {}\n  elapsed             {:.1} s\n  positions produced  {}\n  sent                {} ({:.1}/s, {} replayed)\n  acknowledged        {} (positions + {} online statuses)\n  buffered            {}\n  dropped (ring full) {}\n  unsent at end       {}\n  queue full          {}\n  connection errors   {}\n  commands            {} ({} bad)\n",
            self.vehicles_connected,
            self.elapsed.as_secs_f64(),
            self.produced,
            self.sent,
            self.positions_per_s(),
            self.replayed,
            self.acknowledged,
            self.connects,
            self.buffered,
            self.dropped,
            self.unsent_at_end,
            self.queue_full,
            self.errors,
            self.commands,
            self.bad_commands,
        )
    }
}

/// What every vehicle task shares.
struct Fleet {
    cfg: FleetConfig,
    host: String,
    port: u16,
    qos: QoS,
    interval_ms: u32,
    start: Instant,
    counters: FleetCounters,
}

impl Fleet {
    /// When the outage window starts and ends, if there is one.
    fn outage_window(&self) -> Option<(Instant, Instant)> {
        self.cfg
            .outage
            .map(|o| (self.start + o.after, self.start + o.after + o.length))
    }
}

/// Raises the soft limit on open files to the hard limit: every vehicle
/// (or idle connection) is a socket, and the usual soft limit is 1024.
/// Failure is not fatal: small fleets do not need it.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Runs the fleet until `shutdown` completes, `cfg.duration` passes, or
/// every vehicle has sent `positions_per_vehicle`. Each vehicle then waits
/// briefly for outstanding acknowledgements, publishes `Status{online:false}`
/// and disconnects.
pub async fn run_fleet(
    cfg: FleetConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Summary> {
    let (host, port) = split_host_port(&cfg.broker)?;
    if !(cfg.rate_hz.is_finite() && cfg.rate_hz > 0.0) {
        anyhow::bail!("rate_hz must be positive, not {}", cfg.rate_hz);
    }
    raise_open_files_limit();
    // Rates above 10 Hz are clamped by the device's minimum interval.
    let interval_ms = (1000.0 / cfg.rate_hz)
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32;
    let fleet = Arc::new(Fleet {
        qos: if cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        host,
        port,
        interval_ms,
        start: Instant::now(),
        counters: FleetCounters::default(),
        cfg,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = fleet
        .cfg
        .progress
        .then(|| tokio::spawn(print_progress(Arc::clone(&fleet), stop_rx.clone())));

    let mut vehicles = JoinSet::new();
    {
        let fleet = Arc::clone(&fleet);
        let work = async {
            for i in 0..fleet.cfg.vehicles {
                if fleet.cfg.connect_rate_per_s > 0 {
                    let offset =
                        Duration::from_secs_f64(i as f64 / f64::from(fleet.cfg.connect_rate_per_s));
                    sleep_until(fleet.start + offset).await;
                }
                vehicles.spawn(run_vehicle(i, Arc::clone(&fleet), stop_rx.clone()));
            }
            while vehicles.join_next().await.is_some() {}
        };
        let deadline = async {
            match fleet.cfg.duration {
                Some(d) => sleep_until(fleet.start + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown => {}
            () = deadline => {}
        }
    }
    let _ = stop_tx.send(true);
    let grace = STOP_GRACE + fleet.cfg.drain.unwrap_or_default();
    let drained = timeout(grace, async {
        while vehicles.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} vehicles did not stop in time; aborting them",
            vehicles.len()
        );
        vehicles.abort_all();
    }
    if let Some(task) = progress {
        task.abort();
    }
    Ok(fleet.counters.summary(fleet.start.elapsed()))
}

fn split_host_port(broker: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = broker
        .rsplit_once(':')
        .with_context(|| format!("broker address {broker:?} is not host:port"))?;
    let port = port
        .parse()
        .with_context(|| format!("bad port in broker address {broker:?}"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

async fn print_progress(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_sent = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let c = &fleet.counters;
        let sent = c.sent.load(Relaxed);
        eprintln!(
            "[{:>6.1}s] connected {}/{}  sent {} (+{}/s)  acked {}  buffered {}  dropped {}  errors {}",
            fleet.start.elapsed().as_secs_f64(),
            c.connected_now.load(Relaxed),
            fleet.cfg.vehicles,
            sent,
            sent - last_sent,
            c.acknowledged.load(Relaxed),
            c.buffered.load(Relaxed),
            c.dropped.load(Relaxed),
            c.errors.load(Relaxed),
        );
        last_sent = sent;
    }
}
