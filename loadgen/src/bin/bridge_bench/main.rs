//! bridge_bench: the two figures of the AMQP bridge, measured end to end on
//! loopback against a real RabbitMQ.
//!
//! ```sh
//! cargo run --release -p loadgen --bin bridge_bench -- [--sustained 200000] \
//!     [--backlog 100000] [--live-rate 1000] [--durable-queue] ...
//! ```
//! (`--help` lists every knob.)
//!
//! The gateway runs in-process (`fleetgate::start`, bridge on,
//! `position_interval_ms = 0`, a temporary `data_dir`, a 512 MiB spool) on a
//! tokio runtime of its own (threads `gw-*`); the load — raw MQTT QoS 1
//! publishers, the RabbitMQ consumer, the WebSocket dashboard and a TCP proxy
//! between the gateway and RabbitMQ — runs on another (`bench-*`), so the
//! CPU split between gateway, load and RabbitMQ is reported per thread group.
//!
//! - Phase A (sustained rate): with the link up, `--sustained` positions
//!   from `--vehicles` vehicles over `--connections` MQTT connections as
//!   fast as the gateway acks them (QoS 1, `--window` unacked per
//!   connection). Rates (10 %→90 % of the run): ingest (acked by the edge),
//!   spooled (`fleetgate_bridge_records_spooled_total`), confirmed by
//!   RabbitMQ (`fleetgate_bridge_confirmed_total`), received by the consumer.
//! - Phase B (backlog drain under live traffic): the proxy is cut,
//!   `--backlog` positions are pushed into the spool, live traffic starts at
//!   `--live-rate` positions/s from `--live-vehicles` other vehicles, and a
//!   WebSocket client on `/ws` measures dashboard latency (now − the
//!   position's `received_ms`) for `--before-s` seconds; then the link is
//!   restored and the drain (everything spooled before the restore
//!   confirmed) is timed, with the latency during the drain and
//!   `--after-s` seconds after it.
//!
//! RabbitMQ side: one queue of this run (`bridge-bench-<tag>`, exclusive,
//! or durable with `--durable-queue` so RabbitMQ writes the persistent
//! messages to disk as for a real durable consumer queue) bound to
//! `amq.topic` with `fleet.*.position` and `fleet.events.#`, consumed with
//! auto-ack; only messages naming this run's vehicles are counted. The
//! queue and the gateway's per-run queues are deleted at the end.
//!
//! Prints a table and one `RESULT {json}` line. Loopback only; every wait
//! is bounded (`--timeout-s`), so it stops by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use firmware_sim::clock::now_ms;
use fleetgate::metrics::Metrics;
use fleetgate::Config;
use fleetgate_wire::{encode, flags, Position, MAX_ENCODED_LEN};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Measures the AMQP bridge: sustained confirmed publish rate, and backlog drain under live traffic"
)]
struct Args {
    /// RabbitMQ (reached through an in-process TCP proxy that phase B cuts).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Phase A: positions pushed as fast as the gateway takes them.
    #[arg(long, default_value_t = 200_000)]
    sustained: u64,
    /// Vehicles of each bulk push (phase A, and the phase B backlog).
    #[arg(long, default_value_t = 1_000)]
    vehicles: u64,
    /// MQTT connections of each bulk push.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Unacked QoS 1 publishes per MQTT connection.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Phase B: positions spooled while the link is cut.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Phase B: live positions per second during the drain.
    #[arg(long, default_value_t = 1_000)]
    live_rate: u64,
    /// Phase B: vehicles sending the live traffic.
    #[arg(long, default_value_t = 200)]
    live_vehicles: u64,
    /// Phase B: seconds of live traffic measured before the link is restored.
    #[arg(long, default_value_t = 10.0)]
    before_s: f64,
    /// Phase B: seconds of live traffic measured after the drain.
    #[arg(long, default_value_t = 5.0)]
    after_s: f64,
    /// The bench queue is durable (persistent messages go to RabbitMQ's disk).
    #[arg(long)]
    durable_queue: bool,
    /// Bind the bench queue but do not consume it (messages pile up in
    /// RabbitMQ until the queue is deleted): shows what the consumer's CPU
    /// costs the other figures on a small machine.
    #[arg(long)]
    no_consume: bool,
    /// `bridge.confirm_window` (default: the gateway's default).
    #[arg(long)]
    confirm_window: Option<usize>,
    /// `bridge.spool_max_bytes`.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    spool_max_bytes: u64,
    /// Which phases to run: `a`, `b` or `ab`.
    #[arg(long, default_value = "ab")]
    phases: String,
    /// Upper bound of every wait, seconds.
    #[arg(long, default_value_t = 180)]
    timeout_s: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,lapin=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let gateway_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("gw")
        .enable_all()
        .build()?;
    let bench_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench")
        .enable_all()
        .build()?;
    let result = bench_rt.block_on(run(args, gateway_rt.handle().clone()));
    gateway_rt.shutdown_timeout(Duration::from_secs(2));
    bench_rt.shutdown_timeout(Duration::from_secs(2));
    result
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

/// What the consumer received of this run's messages.
#[derive(Default)]
struct Received {
    positions: AtomicU64,
    events: AtomicU64,
    /// Messages of other runs or other gateways (not counted above).
    foreign: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    spooled: u64,
    confirmed: u64,
    received: u64,
    spool_records: u64,
    connected: u64,
}

fn sample(m: &Metrics, r: &Received) -> Sample {
    Sample {
        at: Instant::now(),
        spooled: m.bridge_records_spooled_total.load(Ordering::Relaxed),
        confirmed: m.bridge_confirmed_total.load(Ordering::Relaxed),
        received: r.positions.load(Ordering::Relaxed) + r.events.load(Ordering::Relaxed),
        spool_records: m.bridge_spool_records.load(Ordering::Relaxed),
        connected: m.bridge_connected.load(Ordering::Relaxed),
    }
}

/// The rate of `value` between the samples where it first reached 10 % and
/// 90 % of its rise from `samples[0]` to `total` (ramp-up and tail left out).
fn rate_10_90(samples: &[Sample], total: u64, value: impl Fn(&Sample) -> u64) -> Option<f64> {
    let base = value(samples.first()?);
    let lo = base + total / 10;
    let hi = base + total * 9 / 10;
    let a = samples.iter().find(|s| value(s) >= lo)?;
    let b = samples.iter().find(|s| value(s) >= hi)?;
    let dt = b.at.duration_since(a.at).as_secs_f64();
    (dt > 0.0).then(|| (value(b) - value(a)) as f64 / dt)
}

/// CPU seconds per thread group (`gw`, `bench`, …) of this process, and
/// RabbitMQ's (`beam.smp`), from /proc.
#[derive(Clone, Debug, Default)]
struct Cpu {
    groups: BTreeMap<String, f64>,
    rabbit: f64,
    machine_busy: f64,
    machine_total: f64,
}

const TICKS_PER_S: f64 = 100.0; // USER_HZ on Linux

/// The lapin threads that exist before the gateway starts: the bench's.
static BENCH_LAPIN_TIDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn lapin_tids() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("lapin"))
                })
                .map(|t| t.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn stat_ticks(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // fields[0] is state (field 3); utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_S))
}

fn rabbit_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(name)
    })
}

fn cpu_now(rabbit: &Option<String>) -> Cpu {
    let mut cpu = Cpu::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let path = format!("{}/stat", t.path().display());
            if let Some((comm, s)) = stat_ticks(&path) {
                let mut group = comm
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                    .to_string();
                // lapin runs each connection's socket on a thread of its
                // own: the bench consumer's started before the gateway.
                if group.starts_with("lapin") {
                    let tid = t.file_name().to_string_lossy().into_owned();
                    let bench = BENCH_LAPIN_TIDS.get().is_some_and(|b| b.contains(&tid));
                    group = format!("{}/{group}", if bench { "bench" } else { "gw" });
                }
                *cpu.groups.entry(group).or_default() += s;
            }
        }
    }
    if let Some(pid) = rabbit {
        cpu.rabbit = stat_ticks(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, s)| s);
    }
    if let Ok(text) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = text.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            cpu.machine_total = total / TICKS_PER_S;
            cpu.machine_busy = (total - idle) / TICKS_PER_S;
        }
    }
    cpu
}

/// CPU use between two readings over `secs` of wall time, in % of one core.
fn cpu_split(a: &Cpu, b: &Cpu, secs: f64) -> serde_json::Value {
    let pct = |x: f64| (x / secs * 1000.0).round() / 10.0;
    let mut groups = serde_json::Map::new();
    for (g, v) in &b.groups {
        let d = v - a.groups.get(g).copied().unwrap_or(0.0);
        if d > 0.005 * secs {
            groups.insert(g.clone(), json!(pct(d)));
        }
    }
    let total = b.machine_total - a.machine_total;
    json!({
        "threads_pct_of_core": groups,
        "rabbitmq_pct_of_core": pct(b.rabbit - a.rabbit),
        "machine_busy_pct": if total > 0.0 {
            ((b.machine_busy - a.machine_busy) / total * 1000.0).round() / 10.0
        } else { 0.0 },
    })
}

// ---------------------------------------------------------------------------
// A TCP proxy between the gateway and RabbitMQ that can be cut and restored
// ---------------------------------------------------------------------------

struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let _ = client.set_nodelay(true);
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up, cut })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `(scheme://user:pass@, host:port, /vhost)` of an AMQP URL.
fn split_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let scheme = url.find("://").context("no scheme in the AMQP URL")? + 3;
    let at = url.rfind('@').map_or(scheme, |i| i + 1);
    let rest = &url[at..];
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Ok((url[..at].to_string(), host.to_string(), path.to_string()))
}

// ---------------------------------------------------------------------------
// Raw MQTT QoS 1 publisher, pipelined
// ---------------------------------------------------------------------------

struct Pusher {
    writer: OwnedWriteHalf,
    permits: Arc<Semaphore>,
    window: usize,
    out: BytesMut,
    pkid: u16,
}

impl Pusher {
    async fn connect(
        addr: SocketAddr,
        client_id: &str,
        window: usize,
        acked: Arc<AtomicU64>,
    ) -> anyhow::Result<Pusher> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 120;
        let mut out = BytesMut::new();
        Packet::Connect(connect).write(&mut out, usize::MAX)?;
        stream.write_all(&out).await?;
        out.clear();
        let mut buf = BytesMut::new();
        loop {
            match Packet::read(&mut buf, 1 << 16) {
                Ok(Packet::ConnAck(_)) => break,
                Ok(other) => bail!("expected CONNACK, got {other:?}"),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("bad CONNACK: {e:?}"),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("the gateway closed the connection before CONNACK");
            }
        }
        let (mut reader, writer) = stream.into_split();
        let permits = Arc::new(Semaphore::new(window));
        let (p2, a2) = (permits.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                loop {
                    match Packet::read(&mut buf, 1 << 16) {
                        Ok(Packet::PubAck(_)) => {
                            a2.fetch_add(1, Ordering::Relaxed);
                            p2.add_permits(1);
                        }
                        Ok(_) => {}
                        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                        Err(_) => return,
                    }
                }
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        Ok(Pusher {
            writer,
            permits,
            window,
            out,
            pkid: 0,
        })
    }

    async fn publish(&mut self, topic: String, position: &Position) -> anyhow::Result<()> {
        let permits = self.permits.clone();
        match permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => {
                self.flush().await?;
                permits.acquire().await?.forget();
            }
        }
        let mut payload = [0u8; MAX_ENCODED_LEN];
        let encoded = encode(position, &mut payload)?;
        let mut publish =
            Publish::from_bytes(topic, QoS::AtLeastOnce, Bytes::copy_from_slice(encoded));
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        publish.pkid = self.pkid;
        Packet::Publish(publish).write(&mut self.out, usize::MAX)?;
        if self.out.len() >= 32 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes, waits for every ack, disconnects.
    async fn finish(mut self, deadline: Duration) -> anyhow::Result<()> {
        self.flush().await?;
        tokio::time::timeout(deadline, self.permits.acquire_many(self.window as u32))
            .await
            .context("publishes not acked in time")??
            .forget();
        Packet::Disconnect.write(&mut self.out, usize::MAX)?;
        self.flush().await?;
        Ok(())
    }
}

fn position(seq: u32, lat_e6: i32, lon_e6: i32) -> Position {
    Position {
        seq,
        time_ms: now_ms(),
        lat_e6,
        lon_e6,
        speed_cm_s: 1389,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

/// `per_vehicle` positions for each of `vehicles` vehicles `<prefix>NNNNN`
/// over `connections` connections, as fast as acked. Returns the acked
/// count and the time from the first publish to the last ack.
async fn push_bulk(
    addr: SocketAddr,
    prefix: &str,
    vehicles: u64,
    per_vehicle: u32,
    args: &Args,
) -> anyhow::Result<(u64, Duration)> {
    let acked = Arc::new(AtomicU64::new(0));
    let connections = args.connections.max(1) as u64;
    let mut pushers = Vec::new();
    for c in 0..connections {
        pushers.push(
            Pusher::connect(addr, &format!("{prefix}c{c}"), args.window, acked.clone()).await?,
        );
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(args.timeout_s);
    let mut tasks = Vec::new();
    for (c, mut pusher) in pushers.into_iter().enumerate() {
        let mine: Vec<String> = (0..vehicles)
            .filter(|v| v % connections == c as u64)
            .map(|v| format!("v/{prefix}{v:05}/pos"))
            .collect();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=per_vehicle {
                for (i, topic) in mine.iter().enumerate() {
                    let p = position(seq, 52_300_000 + i as i32 * 100, 4_800_000 + seq as i32);
                    pusher.publish(topic.clone(), &p).await?;
                }
            }
            pusher.finish(deadline).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((acked.load(Ordering::Relaxed), started.elapsed()))
}

/// `rate` positions/s from `vehicles` vehicles on one connection until
/// `stop`; counts acks in `acked`.
async fn live_traffic(
    addr: SocketAddr,
    prefix: String,
    vehicles: u64,
    rate: u64,
    window: usize,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut pusher = Pusher::connect(addr, &format!("{prefix}live"), window, acked).await?;
    let topics: Vec<String> = (0..vehicles)
        .map(|v| format!("v/{prefix}{v:05}/pos"))
        .collect();
    let mut seqs = vec![0u32; topics.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            seqs[next] += 1;
            // Paris, far from the bulk vehicles.
            let p = position(seqs[next], 48_850_000 + next as i32 * 100, 2_350_000);
            pusher.publish(topics[next].clone(), &p).await?;
            next = (next + 1) % topics.len();
            sent += 1;
        }
        pusher.flush().await?;
    }
    pusher.finish(Duration::from_secs(10)).await
}

// ---------------------------------------------------------------------------
// WebSocket dashboard
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Dashboard {
    /// (now_ms at receipt, latency ms) of each live position.
    samples: Mutex<Vec<(u64, u64)>>,
    lagged: AtomicU64,
    frames: AtomicU64,
}

async fn watch_ws(url: String, prefix: String, dash: Arc<Dashboard>) -> anyhow::Result<()> {
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
fn latency(dash: &Dashboard, from: u64, to: u64) -> serde_json::Value {
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
    json!({"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": max, "count": count})
}

// ---------------------------------------------------------------------------
// RabbitMQ side
// ---------------------------------------------------------------------------

async fn bench_queue(
    channel: &Channel,
    name: &str,
    durable: bool,
    tag: &str,
    received: Arc<Received>,
    consume: bool,
) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                exclusive: !durable,
                auto_delete: !durable,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in ["fleet.*.position", "fleet.events.#"] {
        channel
            .queue_bind(
                name.into(),
                "amq.topic".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    if !consume {
        return Ok(());
    }
    let mut consumer = channel
        .basic_consume(
            name.into(),
            format!("bench-{tag}").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let needle = format!("\"{tag}-").into_bytes();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let mine = delivery
                .data
                .windows(needle.len())
                .any(|w| w == needle.as_slice());
            let counter = match (mine, delivery.routing_key.as_str().ends_with(".position")) {
                (false, _) => &received.foreign,
                (true, true) => &received.positions,
                (true, false) => &received.events,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn run(args: Args, gateway_rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    let tag = format!("bb{}", now_ms() % 1_000_000);
    let rabbit = rabbit_pid();
    let (creds, host, vhost) = split_url(&args.amqp_url)?;
    let target: SocketAddr = tokio::net::lookup_host(host.as_str())
        .await?
        .next()
        .context("RabbitMQ host does not resolve")?;

    // RabbitMQ side first, so nothing the gateway sends is unroutable.
    let conn = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| {
            format!(
                "RabbitMQ does not answer at {host} (start it: bash scripts/lib-services.sh start)"
            )
        })?;
    let channel = conn.create_channel().await?;
    let queue = format!("bridge-bench-{tag}");
    let received = Arc::new(Received::default());
    bench_queue(
        &channel,
        &queue,
        args.durable_queue,
        &tag,
        received.clone(),
        !args.no_consume,
    )
    .await?;
    let _ = BENCH_LAPIN_TIDS.set(lapin_tids());

    let proxy = Proxy::start(target).await?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.gateway_id.0 = format!("gw-{tag}");
    config.data_dir.0 = dir.path().to_path_buf();
    config.bridge.url = format!("{creds}{}{vhost}", proxy.addr).into();
    config.bridge.package_queue = format!("package_status-{tag}");
    config.bridge.command_queue = format!("commands-{tag}");
    config.bridge.notification_queue = format!("notifications-{tag}");
    config.bridge.position_interval_ms = 0;
    config.bridge.reconnect_min_ms = 50;
    config.bridge.reconnect_max_ms = 500;
    config.bridge.retry_failed_ms = 200;
    config.bridge.spool_max_bytes = args.spool_max_bytes;
    if let Some(w) = args.confirm_window.and_then(std::num::NonZeroUsize::new) {
        config.bridge.confirm_window = w;
    }
    let confirm_window = config.bridge.confirm_window.get();
    let gateway_queues = [
        config.bridge.package_queue.clone(),
        config.bridge.command_queue.clone(),
        config.bridge.notification_queue.clone(),
    ];
    let gw = gateway_rt
        .spawn(async move {
            let listeners = fleetgate::Listeners::loopback().await?;
            fleetgate::start(config, listeners).await
        })
        .await??;
    let metrics = gw.metrics.clone();
    let m = &*metrics;
    wait_for("the uplink to connect", timeout, || {
        m.bridge_connected.load(Ordering::Relaxed) == 1
    })
    .await?;

    let outcome = phases(&args, &tag, &gw, &proxy, &received, &rabbit).await;

    // Clean up whatever happened.
    let _ = gateway_rt.spawn(async move { gw.shutdown().await }).await;
    for q in gateway_queues.iter().chain(std::iter::once(&queue)) {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bench done".into()).await;
    drop(dir);

    let (table, mut result) = outcome?;
    result["machine"] = machine();
    result["command"] = json!(std::env::args().collect::<Vec<_>>().join(" "));
    result["config"] = json!({
        "sustained": args.sustained, "vehicles": args.vehicles,
        "connections": args.connections, "window": args.window,
        "backlog": args.backlog, "live_rate": args.live_rate,
        "live_vehicles": args.live_vehicles, "durable_queue": args.durable_queue, "no_consume": args.no_consume,
        "confirm_window": confirm_window, "spool_max_bytes": args.spool_max_bytes,
    });
    result["foreign_messages"] = json!(received.foreign.load(Ordering::Relaxed));
    println!("{table}");
    println!("RESULT {result}");
    Ok(())
}

fn machine() -> serde_json::Value {
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    });
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "rustc": rustc,
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
    })
}

async fn phases(
    args: &Args,
    tag: &str,
    gw: &fleetgate::Gateway,
    proxy: &Proxy,
    received: &Arc<Received>,
    rabbit: &Option<String>,
) -> anyhow::Result<(String, serde_json::Value)> {
    let timeout = Duration::from_secs(args.timeout_s);
    let m = &*gw.metrics;
    let mut table = String::new();
    let mut result = json!({"tag": tag});
    let fmt_rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.0}", r));

    if args.phases.contains('a') {
        eprintln!("phase A: {} positions as fast as acked…", args.sustained);
        let per_vehicle = (args.sustained / args.vehicles.max(1)).max(1) as u32;
        let total = per_vehicle as u64 * args.vehicles;
        let base = sample(m, received);
        let cpu0 = cpu_now(rabbit);
        let mut samples = vec![base];
        let push = {
            let addr = gw.mqtt_addr;
            let prefix = format!("{tag}-a");
            let args = args.clone();
            tokio::spawn(async move {
                push_bulk(addr, &prefix, args.vehicles, per_vehicle, &args).await
            })
        };
        // Sample until every pushed position is spooled, confirmed and received.
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = sample(m, received);
            samples.push(s);
            let spooled = s.spooled - base.spooled;
            if push.is_finished()
                && spooled >= total
                && s.confirmed >= s.spooled
                && (args.no_consume || s.received - base.received >= spooled)
            {
                break;
            }
            if Instant::now() > deadline {
                timed_out = true;
                break;
            }
        }
        let end = samples.last().copied().unwrap_or(base);
        let cpu1 = cpu_now(rabbit);
        let (acked, push_time) = push.await??;
        let secs = end.at.duration_since(base.at).as_secs_f64();
        let confirmed = end.confirmed - base.confirmed;
        let r_ingest = acked as f64 / push_time.as_secs_f64();
        let r_spooled = rate_10_90(&samples, total, |s| s.spooled);
        let r_confirmed = rate_10_90(&samples, total, |s| s.confirmed);
        let r_received = rate_10_90(&samples, total, |s| s.received);
        let overall = confirmed as f64 / secs;
        let cpu = cpu_split(&cpu0, &cpu1, secs);
        let verdict = match r_confirmed {
            Some(r) if r >= 20_000.0 => "met",
            _ => "NOT met",
        };
        table += &format!(
            "Phase A: sustained publish rate, link up ({acked} positions, {} vehicles, {} connections, QoS 1)\n\
             | rate | messages/s |\n|---|---:|\n\
             | ingest (edge acked) | {:.0} |\n\
             | spooled | {} |\n\
             | confirmed by RabbitMQ | {} |\n\
             | received by the consumer | {} |\n\
             | confirmed, first push → last confirm | {:.0} |\n\
             target ≥ 20 000 confirmed/s: {verdict}{}\n\
             CPU (% of one core): {cpu}\n\n",
            args.vehicles,
            args.connections,
            r_ingest,
            fmt_rate(r_spooled),
            fmt_rate(r_confirmed),
            fmt_rate(r_received),
            overall,
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        result["phase_a"] = json!({
            "positions": acked,
            "records_confirmed": confirmed,
            "ingest_per_s": r_ingest.round(),
            "spooled_per_s": r_spooled.map(f64::round),
            "confirmed_per_s": r_confirmed.map(f64::round),
            "received_per_s": r_received.map(f64::round),
            "confirmed_per_s_overall": overall.round(),
            "seconds": round1(secs),
            "target_20000_met": verdict == "met",
            "timed_out": timed_out,
            "cpu": cpu,
        });
    }

    if args.phases.contains('b') {
        eprintln!(
            "phase B: link cut, {} positions into the spool…",
            args.backlog
        );
        proxy.cut();
        wait_for("the uplink to notice the cut", timeout, || {
            m.bridge_connected.load(Ordering::Relaxed) == 0
        })
        .await?;
        let base = sample(m, received);
        let per_vehicle = (args.backlog / args.vehicles.max(1)).max(1) as u32;
        let total = per_vehicle as u64 * args.vehicles;
        let (_, backlog_push) = push_bulk(
            gw.mqtt_addr,
            &format!("{tag}-b"),
            args.vehicles,
            per_vehicle,
            args,
        )
        .await?;
        wait_for("the backlog to be spooled", timeout, || {
            m.bridge_records_spooled_total.load(Ordering::Relaxed) - base.spooled >= total
        })
        .await?;
        let backlog_spooled = m.bridge_records_spooled_total.load(Ordering::Relaxed) - base.spooled;

        // The dashboard, then the live traffic.
        let dash = Arc::new(Dashboard::default());
        let live_prefix = format!("{tag}-l");
        let ws = tokio::spawn(watch_ws(
            format!("ws://{}/ws", gw.http_addr),
            live_prefix.clone(),
            dash.clone(),
        ));
        let live_acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let live = tokio::spawn(live_traffic(
            gw.mqtt_addr,
            live_prefix,
            args.live_vehicles,
            args.live_rate,
            args.window,
            live_acked.clone(),
            stop.clone(),
        ));
        eprintln!(
            "phase B: backlog spooled ({backlog_spooled} records); live traffic, {} s before the restore…",
            args.before_s
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up: vehicles come online
        let before_from = now_ms();
        let live_before0 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        let cpu_before0 = cpu_now(rabbit);
        tokio::time::sleep(Duration::from_secs_f64(args.before_s)).await;
        let live_before1 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        let cpu_before1 = cpu_now(rabbit);

        // Restore, and time the drain: every record spooled before the
        // restore confirmed (the spool is FIFO).
        let restore_ms = now_ms();
        let at_restore = sample(m, received);
        let cpu_drain0 = cpu_before1.clone();
        eprintln!(
            "phase B: restoring the link ({} records in the spool)…",
            at_restore.spooled - at_restore.confirmed
        );
        proxy.restore();
        let mut samples = vec![at_restore];
        let mut connected_at = None;
        let mut gauge_low_at = None;
        let live_level = (args.live_rate * 2).max(1_000);
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let drained = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let s = sample(m, received);
            samples.push(s);
            if connected_at.is_none() && s.connected == 1 {
                connected_at = Some(s.at);
            }
            if gauge_low_at.is_none()
                && s.spool_records <= live_level
                && s.at > at_restore.at + Duration::from_millis(1100)
            {
                gauge_low_at = Some(s.at);
            }
            if s.confirmed >= at_restore.spooled {
                break s;
            }
            if Instant::now() > deadline {
                timed_out = true;
                break s;
            }
        };
        let drained_ms = now_ms();
        let cpu_drain1 = cpu_now(rabbit);
        let live_drain1 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        // Wait for the gauge (updated once a second) too, bounded.
        let gauge_deadline = Instant::now() + Duration::from_secs(3);
        while gauge_low_at.is_none() && Instant::now() < gauge_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = sample(m, received);
            if s.spool_records <= live_level {
                gauge_low_at = Some(s.at);
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(args.after_s)).await;
        let after_to = now_ms();
        stop.store(true, Ordering::Relaxed);
        let live_result = live.await?;
        ws.abort();

        let drain_records = drained.confirmed - at_restore.confirmed;
        let from_restore = drained.at.duration_since(at_restore.at).as_secs_f64();
        let from_connect = connected_at.map(|c| drained.at.duration_since(c).as_secs_f64());
        let drain_rate = from_connect.map(|s| drain_records as f64 / s);
        let drain_rate_restore = drain_records as f64 / from_restore;
        let live_rate_before = (live_before1.1 - live_before0.1) as f64
            / live_before1.0.duration_since(live_before0.0).as_secs_f64();
        let live_rate_drain = (live_drain1.1 - live_before1.1) as f64
            / live_drain1.0.duration_since(live_before1.0).as_secs_f64();
        let ratio = drain_rate.map(|d| d / live_rate_drain);
        let lat_before = latency(&dash, before_from, restore_ms);
        let lat_drain = latency(&dash, restore_ms, drained_ms);
        let lat_after = latency(&dash, drained_ms, after_to);
        let cpu_before = cpu_split(&cpu_before0, &cpu_before1, args.before_s);
        let cpu_drain = cpu_split(&cpu_drain0, &cpu_drain1, from_restore);
        let ratio_met = ratio.is_some_and(|r| r >= 5.0) && !timed_out;
        let p99 = |v: &serde_json::Value| v["p99_ms"].as_u64();
        let p50 = |v: &serde_json::Value| v["p50_ms"].as_u64();
        let show = |v: Option<u64>| v.map_or("-".into(), |x| x.to_string());
        table += &format!(
            "Phase B: drain of a {backlog_spooled}-record backlog under live traffic ({} positions/s from {} vehicles)\n\
             | figure | value |\n|---|---:|\n\
             | backlog pushed into the spool (link cut) | {backlog_spooled} records in {:.1} s |\n\
             | records in the spool at restore | {} |\n\
             | restore → uplink connected | {} s |\n\
             | drain time, connected → all confirmed | {} s |\n\
             | drain time, restore → all confirmed | {:.2} s |\n\
             | spool gauge back to live level (≤ {live_level}) after restore | {} s |\n\
             | drain rate (confirmed/s from connect) | {} |\n\
             | drain rate (confirmed/s from restore) | {:.0} |\n\
             | live rate before / during drain (acked/s) | {:.0} / {:.0} |\n\
             | drain / live | {} |\n\
             | dashboard latency p50 / p99 / max, before | {} / {} / {} ms ({} samples) |\n\
             | dashboard latency p50 / p99 / max, during drain | {} / {} / {} ms ({} samples) |\n\
             | dashboard latency p50 / p99 / max, after | {} / {} / {} ms ({} samples) |\n\
             | WebSocket lagged (dropped updates) | {} |\n\
             target drain ≥ 5 × live: {}{}\n\
             CPU before (% of one core): {cpu_before}\n\
             CPU during drain (% of one core): {cpu_drain}\n",
            args.live_rate,
            args.live_vehicles,
            backlog_push.as_secs_f64(),
            at_restore.spooled - at_restore.confirmed,
            connected_at.map_or("-".into(), |c| format!("{:.2}", c.duration_since(at_restore.at).as_secs_f64())),
            from_connect.map_or("-".into(), |s| format!("{s:.2}")),
            from_restore,
            gauge_low_at.map_or("-".into(), |g| format!("{:.1}", g.duration_since(at_restore.at).as_secs_f64())),
            fmt_rate(drain_rate),
            drain_rate_restore,
            live_rate_before,
            live_rate_drain,
            ratio.map_or("-".into(), |r| format!("{r:.1}")),
            show(p50(&lat_before)), show(p99(&lat_before)), lat_before["max_ms"], lat_before["count"],
            show(p50(&lat_drain)), show(p99(&lat_drain)), lat_drain["max_ms"], lat_drain["count"],
            show(p50(&lat_after)), show(p99(&lat_after)), lat_after["max_ms"], lat_after["count"],
            dash.lagged.load(Ordering::Relaxed),
            if ratio_met { "met" } else { "NOT met" },
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        result["phase_b"] = json!({
            "backlog_records": backlog_spooled,
            "backlog_push_s": round1(backlog_push.as_secs_f64()),
            "spool_records_at_restore": at_restore.spooled - at_restore.confirmed,
            "reconnect_s": connected_at.map(|c| round2(c.duration_since(at_restore.at).as_secs_f64())),
            "drain_s_from_connect": from_connect.map(round2),
            "drain_s_from_restore": round2(from_restore),
            "spool_gauge_low_s": gauge_low_at.map(|g| round1(g.duration_since(at_restore.at).as_secs_f64())),
            "drain_per_s": drain_rate.map(f64::round),
            "drain_per_s_from_restore": drain_rate_restore.round(),
            "live_per_s_before": live_rate_before.round(),
            "live_per_s_during_drain": live_rate_drain.round(),
            "drain_over_live": ratio.map(|r| (r * 10.0).round() / 10.0),
            "latency_before": lat_before,
            "latency_during_drain": lat_drain,
            "latency_after": lat_after,
            "ws_lagged": dash.lagged.load(Ordering::Relaxed),
            "ws_frames": dash.frames.load(Ordering::Relaxed),
            "target_5x_met": ratio_met,
            "timed_out": timed_out,
            "live_traffic_error": live_result.err().map(|e| e.to_string()),
            "cpu_before": cpu_before,
            "cpu_during_drain": cpu_drain,
        });
    }
    Ok((table, result))
}
