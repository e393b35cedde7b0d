//! `loadgen`: load any MQTT broker (`bench`), print and chart a comparison
//! (`bench-report`), watch the gateway's WebSocket feed (`ws-watch`), or
//! probe a broker with idle connections (`idle-conn`) or with clients that
//! come and go (`churn`); measure the gateway's SMQ (`smq-put`) and its
//! pub/sub proxy's fan-out (`ws-fanout`), and `POST /search` under load
//! (`search-load`). See the modules of
//! the `loadgen` library for what each does.

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use firmware_sim::cli::init_tracing;
use loadgen::bench::{run_bench, BenchArgs};
use loadgen::churn::{churn, ChurnArgs};
use loadgen::conformance::{conformance, ConformanceArgs};
use loadgen::idle_conn::{idle_connections, IdleConnArgs};
use loadgen::search_load::{search_load, SearchLoadArgs};
use loadgen::smq_put::{smq_put, SmqPutArgs};
use loadgen::ws_fanout::{ws_fanout, WsFanoutArgs};
use loadgen::ws_watch::{ws_watch, WsWatchArgs};
use loadgen::{chart, report, results};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load and measure fleetgate and other MQTT brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load any MQTT broker: publishers and subscribers, latency percentiles, losses, the broker's RSS and CPU.
    Bench(BenchArgs),
    /// Print the side-by-side table of bench results (JSON lines) and draw their chart.
    BenchReport(ReportArgs),
    /// Watch the gateway's WebSocket feed: freshness and rate of positions, or a client that stalls.
    WsWatch(WsWatchArgs),
    /// Open many idle MQTT connections and measure connect rate and memory.
    IdleConn(IdleConnArgs),
    /// Clients that come and go (fresh id, a new filter each): cycles/s, refusals, the broker's growth, and whether a new client still receives.
    Churn(ChurnArgs),
    /// MQTT 3.1.1's MUST-close rules, one case per connection: how many the broker closes.
    Conformance(ConformanceArgs),
    /// The gateway's SMQ: `/put` producers to consumers on the SMQ port, throughput and latency.
    SmqPut(SmqPutArgs),
    /// The gateway's `/message` proxy: one publisher, many WebSocket subscribers, deliveries/s and latency.
    WsFanout(WsFanoutArgs),
    /// `POST /search` end to end from keep-alive clients while `POST /tracking` keeps a large fleet moving: searches/s and latency.
    SearchLoad(SearchLoadArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => run_bench_command(&args),
        Command::BenchReport(args) => run_report(&args),
        Command::WsWatch(args) => run_ws_watch(&args),
        Command::IdleConn(args) => run_idle_conn(&args),
        Command::Churn(args) => run_churn(&args),
        Command::Conformance(args) => run_conformance(&args),
        Command::SmqPut(args) => {
            init_tracing();
            let report = multi_thread()?.block_on(smq_put(args.to_config()))?;
            print_report(&report.to_human(), &report.to_line(args.label.as_deref()));
            Ok(())
        }
        Command::WsFanout(args) => {
            init_tracing();
            let report = multi_thread()?.block_on(ws_fanout(args.to_config()))?;
            print_report(&report.to_human(), &report.to_line(args.label.as_deref()));
            Ok(())
        }
        Command::SearchLoad(args) => {
            init_tracing();
            let report = multi_thread()?.block_on(search_load(args.to_config()))?;
            print_report(&report.to_human(), &report.to_line(args.label.as_deref()));
            Ok(())
        }
    }
}

/// A run's human block on stderr, its JSON line on stdout.
fn print_report<L: serde::Serialize>(human: &str, line: &L) {
    eprint!("{human}");
    println!("{}", results::to_line(line));
}

fn run_bench_command(args: &BenchArgs) -> anyhow::Result<()> {
    init_tracing();
    let cfg = args.to_config()?;
    let report = multi_thread()?.block_on(run_bench(cfg))?;
    eprint!("{}", report.to_human());
    let line = report.to_json_line();
    println!("{line}");
    if let Some(path) = &args.json_out {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// JSON lines from `loadgen bench`, `idle-conn` and the wrapped records of `benches/compare.sh`.
    #[arg(long)]
    results: std::path::PathBuf,
    /// Write the chart (SVG) here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    #[arg(long, default_value = "fleetgate and Mosquitto, side by side")]
    title: String,
}

fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("cannot read {}", args.results.display()))?;
    let runs = report::parse_lines(&text);
    anyhow::ensure!(!runs.is_empty(), "no results in {}", args.results.display());
    print!("{}", report::comparison_table(&runs));
    if let Some(svg) = &args.svg {
        std::fs::write(svg, chart::render_svg(&runs, &args.title))
            .with_context(|| format!("cannot write {}", svg.display()))?;
    }
    Ok(())
}

fn run_ws_watch(args: &WsWatchArgs) -> anyhow::Result<()> {
    init_tracing();
    let cfg = args.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(ws_watch(cfg))?;
    eprint!("{}", report.to_human());
    println!("{}", report.to_json_line());
    Ok(())
}

fn run_idle_conn(args: &IdleConnArgs) -> anyhow::Result<()> {
    init_tracing();
    let cfg = args.to_config()?;
    let report = multi_thread()?.block_on(idle_connections(cfg))?;
    eprintln!(
        "idle connections: {}/{} connected in {:.2} s ({:.0}/s), {} failed, {} dropped while held",
        report.connected,
        report.attempted,
        report.connect_elapsed.as_secs_f64(),
        report.connects_per_s(),
        report.failed,
        report.dropped_while_held
    );
    if let (Some(before), Some(after)) = (report.rss_before_kib, report.rss_after_kib) {
        eprintln!(
            "broker RSS: {before} KiB before, {after} KiB after, {:.2} KiB per connection",
            report.kib_per_connection().unwrap_or(0.0)
        );
    }
    println!(
        "{}",
        results::to_line(&report.to_line(args.label.as_deref()))
    );
    Ok(())
}

fn run_churn(args: &ChurnArgs) -> anyhow::Result<()> {
    init_tracing();
    let report = multi_thread()?.block_on(churn(args.to_config()))?;
    eprint!("{}", report.to_human());
    println!(
        "{}",
        results::to_line(&report.to_line(&args.scenario, args.label.as_deref()))
    );
    Ok(())
}

fn run_conformance(args: &ConformanceArgs) -> anyhow::Result<()> {
    init_tracing();
    let report = multi_thread()?.block_on(conformance(args.to_config()))?;
    eprint!("{}", report.to_human());
    println!(
        "{}",
        results::to_line(&report.to_line(args.label.as_deref()))
    );
    Ok(())
}

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
