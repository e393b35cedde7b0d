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
//! its packet buffers (max packet [`MAX_PACKET_BYTES`]), a [`BoundedRing`] of
//! at most `ring_capacity` positions (allocated only as it fills), and two
//! small tasks. Nothing grows with the number of messages; the only
//! per-message allocations are the owned topic and payload that rumqttc's
//! `try_publish` takes (JSON mode adds the JSON text).
//!
//! Outages ([`Outage`]) are simulated at the client: at `after` every event
//! loop drops its socket (`EventLoop::clean`) and stops polling for
//! `length`, so the broker sees the link die (and publishes the will) and
//! the devices buffer; after it they reconnect and replay.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetgate_wire::json::{decode_command_any, PositionJson, StatusJson};
use fleetgate_wire::{
    decode, encode, Command, FirmwareVersion, Kind, Position, Status, MAX_ENCODED_LEN,
};
use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::clock::now_ms;
use crate::device::{BoundedRing, Counters, Device, DeviceConfig, Uplink};
use crate::prng::SplitMix64;
use crate::route::RouteSim;

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

/// Live totals, shared by all vehicle tasks (relaxed atomics: these are
/// statistics, not synchronisation).
#[derive(Debug, Default)]
struct FleetCounters {
    ever_connected: AtomicUsize,
    connected_now: AtomicUsize,
    produced: AtomicU64,
    sent: AtomicU64,
    replayed: AtomicU64,
    buffered: AtomicU64,
    dropped: AtomicU64,
    unsent_at_end: AtomicU64,
    acknowledged: AtomicU64,
    status_sent: AtomicU64,
    connects: AtomicU64,
    queue_full: AtomicU64,
    errors: AtomicU64,
    commands: AtomicU64,
    bad_commands: AtomicU64,
}

impl FleetCounters {
    /// Adds what a device did since `before`.
    fn add_device_delta(&self, before: &Counters, now: &Counters) {
        self.produced
            .fetch_add(now.produced - before.produced, Relaxed);
        self.sent.fetch_add(
            (now.sent + now.replayed) - (before.sent + before.replayed),
            Relaxed,
        );
        self.replayed
            .fetch_add(now.replayed - before.replayed, Relaxed);
        self.buffered
            .fetch_add(now.buffered - before.buffered, Relaxed);
        self.dropped
            .fetch_add(now.dropped_oldest - before.dropped_oldest, Relaxed);
        self.commands
            .fetch_add(now.commands - before.commands, Relaxed);
    }

    fn summary(&self, elapsed: Duration) -> Summary {
        Summary {
            vehicles_connected: self.ever_connected.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            elapsed,
            replayed: self.replayed.load(Relaxed),
            produced: self.produced.load(Relaxed),
            unsent_at_end: self.unsent_at_end.load(Relaxed),
            status_sent: self.status_sent.load(Relaxed),
            connects: self.connects.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            commands: self.commands.load(Relaxed),
            bad_commands: self.bad_commands.load(Relaxed),
        }
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
    let drained = timeout(STOP_GRACE, async {
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

/// Link state shared by a vehicle's two tasks.
#[derive(Debug, Default)]
struct Link {
    connected: AtomicBool,
    /// PubAcks for this vehicle, so it can wait for its own before leaving.
    acknowledged: AtomicU64,
    /// QoS 1 publishes handed to the client (positions and statuses).
    awaiting_ack: AtomicU64,
}

/// From the event-loop task to the driver.
#[derive(Debug)]
enum LinkNews {
    Connected,
    Command(Command),
}

/// The driver's view of the MQTT client, as a device [`Uplink`].
struct MqttUplink<'a> {
    client: &'a AsyncClient,
    link: &'a Link,
    fleet: &'a Fleet,
    pos_topic: &'a str,
    status_topic: &'a str,
}

#[derive(Debug)]
enum MqttUplinkError {
    QueueFull,
    Closed,
    Encode,
}

impl Uplink for MqttUplink<'_> {
    type Error = MqttUplinkError;

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), MqttUplinkError> {
        let topic = match kind {
            Kind::Position => self.pos_topic,
            Kind::Status => self.status_topic,
            Kind::Command => return Err(MqttUplinkError::Encode),
        };
        let bytes = if self.fleet.cfg.json {
            json_form(kind, payload).ok_or(MqttUplinkError::Encode)?
        } else {
            payload.to_vec()
        };
        match self.client.try_publish(topic, self.fleet.qos, false, bytes) {
            Ok(()) => {
                if self.fleet.qos == QoS::AtLeastOnce {
                    self.link.awaiting_ack.fetch_add(1, Relaxed);
                }
                Ok(())
            }
            Err(ClientError::TryRequest(_)) => {
                self.fleet.counters.queue_full.fetch_add(1, Relaxed);
                Err(MqttUplinkError::QueueFull)
            }
            Err(_) => Err(MqttUplinkError::Closed),
        }
    }

    fn is_connected(&self) -> bool {
        self.link.connected.load(Relaxed)
    }
}

/// Re-encodes a postcard payload in its JSON form.
fn json_form(kind: Kind, payload: &[u8]) -> Option<Vec<u8>> {
    match kind {
        Kind::Position => serde_json::to_vec(&PositionJson::from_position(
            &decode::<Position>(payload).ok()?,
        ))
        .ok(),
        Kind::Status => {
            serde_json::to_vec(&StatusJson::from_status(&decode::<Status>(payload).ok()?)).ok()
        }
        Kind::Command => None,
    }
}

fn postcard_bytes<M: fleetgate_wire::WireMessage>(msg: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    // Our messages always fit MAX_ENCODED_LEN; an empty payload would be
    // rejected by the gateway and counted there, never a crash here.
    encode(msg, &mut buf)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

const FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 0,
    minor: 1,
    patch: 0,
};

async fn run_vehicle(index: usize, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let vid = format!("{}{:04}", fleet.cfg.id_prefix, fleet.cfg.first_id + index);
    let pos_topic = format!("v/{vid}/pos");
    let status_topic = format!("v/{vid}/status");
    let seed = fleet.cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut device = Device::new(
        DeviceConfig {
            report_interval_ms: fleet.interval_ms,
            firmware: FIRMWARE,
            ..DeviceConfig::default()
        },
        BoundedRing::with_capacity(fleet.cfg.ring_capacity),
    );
    let mut route = RouteSim::new(seed);

    let mut options = MqttOptions::new(vid.clone(), fleet.host.clone(), fleet.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(32)
        .set_last_will(LastWill::new(
            status_topic.clone(),
            will_payload(&device.last_will(), fleet.cfg.json),
            QoS::AtLeastOnce,
            false,
        ));
    let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    let link = Arc::new(Link::default());
    let (news_tx, mut news_rx) = mpsc::channel(4);
    let (loop_stop_tx, loop_stop_rx) = watch::channel(false);
    let event_task = tokio::spawn(poll_events(
        eventloop,
        client.clone(),
        Arc::clone(&link),
        Arc::clone(&fleet),
        news_tx,
        loop_stop_rx,
        vid.clone(),
        seed,
    ));

    // Spread first reports over one interval so a fleet does not publish in lockstep.
    let mut rng = SplitMix64::new(seed);
    let mut next_wake =
        Instant::now() + Duration::from_millis(rng.below(fleet.interval_ms as usize + 1) as u64);
    let mut reported = Counters::default();
    let limit = fleet.cfg.positions_per_vehicle.map(u64::from);
    loop {
        if limit.is_some_and(|n| device.counters().produced >= n) {
            break;
        }
        tokio::select! {
            () = sleep_until(next_wake) => {}
            news = news_rx.recv() => match news {
                Some(LinkNews::Connected) => {}
                Some(LinkNews::Command(command)) => device.handle_command(&command),
                None => break,
            },
            _ = stop.changed() => break,
        }
        let mut uplink = MqttUplink {
            client: &client,
            link: &link,
            fleet: &fleet,
            pos_topic: &pos_topic,
            status_topic: &status_topic,
        };
        let now = now_ms();
        device.flush(&mut uplink);
        device.tick(now, &mut route, &mut uplink);
        fleet
            .counters
            .add_device_delta(&reported, device.counters());
        reported = *device.counters();
        let until_due = device
            .next_due_ms()
            .map_or(0, |due| due.saturating_sub(now_ms()));
        let mut wait = Duration::from_millis(until_due);
        if device.buffered_len() > 0 && uplink.is_connected() {
            wait = wait.min(REPLAY_RETRY);
        }
        next_wake = Instant::now() + wait;
    }

    // Leaving: let outstanding QoS 1 publishes be acknowledged, then say
    // goodbye explicitly (a clean DISCONNECT suppresses the last will).
    let ack_deadline = Instant::now() + ACK_GRACE;
    while link.connected.load(Relaxed)
        && link.acknowledged.load(Relaxed) < link.awaiting_ack.load(Relaxed)
        && Instant::now() < ack_deadline
    {
        sleep(Duration::from_millis(10)).await;
    }
    if link.connected.load(Relaxed) {
        let offline = Status {
            time_ms: now_ms(),
            ..device.last_will()
        };
        let payload = will_payload(&offline, fleet.cfg.json);
        if client
            .try_publish(&status_topic, QoS::AtMostOnce, false, payload)
            .is_ok()
        {
            fleet.counters.status_sent.fetch_add(1, Relaxed);
        }
        let _ = client.try_disconnect();
    }
    fleet
        .counters
        .unsent_at_end
        .fetch_add(device.buffered_len() as u64, Relaxed);
    let _ = loop_stop_tx.send(true);
    let mut event_task = event_task;
    if timeout(Duration::from_secs(2), &mut event_task)
        .await
        .is_err()
    {
        // Dropping a JoinHandle does not stop the task: abort it, or it
        // would go on reconnecting after the run.
        tracing::debug!(%vid, "event loop did not finish after disconnect");
        event_task.abort();
    }
}

fn will_payload(status: &Status, json: bool) -> Vec<u8> {
    if json {
        serde_json::to_vec(&StatusJson::from_status(status)).unwrap_or_default()
    } else {
        postcard_bytes(status)
    }
}

/// Polls one vehicle's event loop: tracks the link, answers CONNACK with a
/// subscription and an online status, forwards commands, counts PubAcks,
/// backs off after errors, and plays the outage.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn poll_events(
    mut eventloop: EventLoop,
    client: AsyncClient,
    link: Arc<Link>,
    fleet: Arc<Fleet>,
    news: mpsc::Sender<LinkNews>,
    mut stop: watch::Receiver<bool>,
    vid: String,
    seed: u64,
) {
    let cmd_topic = format!("v/{vid}/cmd");
    let status_topic = format!("v/{vid}/status");
    let counters = &fleet.counters;
    let mut rng = SplitMix64::new(seed.rotate_left(17));
    let mut backoff = FIRST_BACKOFF;
    let mut outage_done = fleet.cfg.outage.is_none();
    let set_connected = |up: bool| {
        if link.connected.swap(up, Relaxed) != up {
            if up {
                counters.connected_now.fetch_add(1, Relaxed);
            } else {
                counters.connected_now.fetch_sub(1, Relaxed);
            }
        }
    };
    let mut ever_connected = false;
    loop {
        if !outage_done {
            if let Some((from, until)) = fleet.outage_window() {
                if Instant::now() >= from {
                    outage_done = true;
                    eventloop.clean();
                    set_connected(false);
                    tokio::select! {
                        () = sleep_until(until) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            }
        }
        let outage_start = fleet
            .outage_window()
            .filter(|_| !outage_done)
            .map(|(from, _)| from);
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = sleep_until(outage_start.unwrap_or_else(Instant::now)), if outage_start.is_some() => continue,
            _ = stop.changed(), if !link.connected.load(Relaxed) => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = FIRST_BACKOFF;
                set_connected(true);
                counters.connects.fetch_add(1, Relaxed);
                if !ever_connected {
                    ever_connected = true;
                    counters.ever_connected.fetch_add(1, Relaxed);
                }
                // Clean session: the subscription is gone after every reconnect.
                let _ = client.try_subscribe(cmd_topic.as_str(), QoS::AtLeastOnce);
                let online = Status {
                    time_ms: now_ms(),
                    online: true,
                    ignition: true,
                    supply_mv: DeviceConfig::default().supply_mv,
                    firmware: FIRMWARE,
                };
                if client
                    .try_publish(
                        status_topic.as_str(),
                        fleet.qos,
                        false,
                        will_payload(&online, fleet.cfg.json),
                    )
                    .is_ok()
                {
                    counters.status_sent.fetch_add(1, Relaxed);
                    if fleet.qos == QoS::AtLeastOnce {
                        link.awaiting_ack.fetch_add(1, Relaxed);
                    }
                }
                let _ = news.try_send(LinkNews::Connected);
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) if publish.topic == cmd_topic => {
                match decode_command_any(&publish.payload) {
                    Ok(command) => {
                        // A full queue means the driver is behind; dropping a
                        // command then is what a busy device would do too.
                        let _ = news.try_send(LinkNews::Command(command));
                    }
                    Err(_) => {
                        counters.bad_commands.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                counters.acknowledged.fetch_add(1, Relaxed);
                link.acknowledged.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                set_connected(false);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                set_connected(false);
                if *stop.borrow() {
                    break;
                }
                counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(%vid, error = %e, "connection error; backing off {backoff:?}");
                // rumqttc would reconnect at once on the next poll: wait first,
                // with jitter so a fleet does not reconnect in lockstep.
                let jittered = backoff.mul_f64(rng.range_f64(0.5, 1.0));
                tokio::select! {
                    () = sleep(jittered) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    set_connected(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_split() {
        assert_eq!(
            split_host_port("127.0.0.1:1883").ok(),
            Some(("127.0.0.1".to_owned(), 1883))
        );
        assert_eq!(
            split_host_port("[::1]:1884").ok(),
            Some(("::1".to_owned(), 1884))
        );
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port("localhost:x").is_err());
    }

    #[test]
    fn json_mode_reencodes_positions() {
        let p = Position {
            seq: 3,
            time_ms: 5,
            lat_e6: 1,
            lon_e6: 2,
            speed_cm_s: 0,
            heading: 0,
            flags: 0,
            odometer_m: None,
        };
        let json = json_form(Kind::Position, &postcard_bytes(&p)).unwrap_or_default();
        assert!(json.starts_with(br#"{"lat":1e-6"#) || json.starts_with(br#"{"lat":0.000001"#));
    }
}
