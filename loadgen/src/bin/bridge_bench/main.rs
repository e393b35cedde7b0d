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
//! Prints a table and one `RESULT {json}` line
//! ([`loadgen::results::BridgeBenchLine`]). Loopback only; every wait
//! is bounded (`--timeout-s`), so it stops by itself.
//!
//! # Layout
//!
//! - this file: `main` (the two runtimes) and the run: the RabbitMQ queue,
//!   the proxy, the gateway, the phases, the clean-up and the result line;
//! - `args`: the command line;
//! - `rig`: the cuttable proxy to RabbitMQ, the run's queue and consumer,
//!   bounded waits;
//! - `load`: the raw MQTT publishers (backlog and live traffic);
//! - `dashboard`: the WebSocket client and its latency percentiles;
//! - `counters`: the consumer's counts, metric samples, CPU per thread group;
//! - `phases`: phase A and phase B, each a table and its part of the result.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use firmware_sim::clock::now_ms;
use fleetgate::Config;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use loadgen::results::{to_line, BridgeBenchConfigLine, MachineLine};

mod args;
mod counters;
mod dashboard;
mod load;
mod phases;
mod rig;

use args::Args;
use counters::{lapin_tids, rabbit_pid, Received, BENCH_LAPIN_TIDS};
use phases::phases;
use rig::{bench_queue, split_url, wait_for, Proxy};

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
    result.machine = machine();
    result.command = std::env::args().collect::<Vec<_>>().join(" ");
    result.config = BridgeBenchConfigLine {
        sustained: args.sustained,
        vehicles: args.vehicles,
        connections: args.connections,
        window: args.window,
        backlog: args.backlog,
        live_rate: args.live_rate,
        live_vehicles: args.live_vehicles,
        durable_queue: args.durable_queue,
        no_consume: args.no_consume,
        confirm_window,
        spool_max_bytes: args.spool_max_bytes,
    };
    result.foreign_messages = received.foreign.load(Ordering::Relaxed);
    println!("{table}");
    println!("RESULT {}", to_line(&result));
    Ok(())
}

fn machine() -> MachineLine {
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
    let read_trimmed = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    MachineLine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: model,
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        rustc,
        loadavg_at_start: read_trimmed("/proc/loadavg"),
    }
}
