//! `firmware-sim`: run a simulated fleet, encode or decode one payload,
//! probe a broker with idle connections, load any broker (`bench`), or
//! watch the gateway's WebSocket feed. See `firmware_sim::cli` for the arguments, `firmware_sim::runner`
//! for what a run does and `firmware_sim::ws_watch` for `ws-watch`.

use std::io::{Read, Write};

use anyhow::Context as _;
use clap::{Args as _, CommandFactory as _, FromArgMatches as _};
use firmware_sim::bench::{run_bench, BenchArgs};
use firmware_sim::cli::{decode_to_json, encode_bytes, now_ms, Cli, CliCommand, MAX_DECODE_INPUT};
use firmware_sim::runner::{idle_connections, run_fleet};
use firmware_sim::wire::Error as WireError;
use firmware_sim::ws_watch::{ws_watch, WsWatchArgs};
use firmware_sim::{chart, report};

fn main() -> anyhow::Result<()> {
    // `ws-watch` lives in its own module; the other subcommands in `cli`.
    let matches = Cli::command()
        .subcommand(
            WsWatchArgs::augment_args(clap::Command::new("ws-watch")).about(
                "Watch the gateway's WebSocket feed: freshness and rate of positions, or a client that stalls",
            ),
        )
        .subcommand(BenchArgs::augment_args(clap::Command::new("bench")).about(
            "Load any MQTT broker: publishers and subscribers, latency percentiles, losses, the broker's RSS and CPU",
        ))
        .subcommand(
            ReportArgs::augment_args(clap::Command::new("bench-report"))
                .about("Print the side-by-side table of bench results (JSON lines) and draw their chart"),
        )
        .get_matches();
    match matches.subcommand() {
        Some(("bench-report", sub)) => {
            let args = ReportArgs::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
            return run_report(&args);
        }
        Some(("ws-watch", sub)) => {
            let args = WsWatchArgs::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
            return run_ws_watch(args);
        }
        Some(("bench", sub)) => {
            let args = BenchArgs::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
            return run_bench_command(args);
        }
        _ => {}
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        CliCommand::Encode(args) => {
            let bytes = encode_bytes(&args, now_ms()).context("cannot encode")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
            Ok(())
        }
        CliCommand::Decode => {
            let mut input = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_DECODE_INPUT as u64)
                .read_to_end(&mut input)?;
            // mosquitto_sub and shells add a trailing newline to JSON; postcard has none to strip.
            if input.first() == Some(&b'{') {
                while input.last().is_some_and(u8::is_ascii_whitespace) {
                    input.pop();
                }
            }
            let mut decoded = decode_to_json(&input, now_ms());
            // `mosquitto_sub` ends each message with a newline (unless -N):
            // one extra newline after a postcard payload is that, not payload.
            if decoded == Err(WireError::TrailingBytes(1)) && input.last() == Some(&b'\n') {
                input.pop();
                decoded = decode_to_json(&input, now_ms());
            }
            println!("{}", decoded.context("cannot decode")?);
            Ok(())
        }
        CliCommand::Run(args) => {
            init_tracing();
            let cfg = args.to_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let summary = runtime.block_on(run_fleet(cfg, async {
                let _ = tokio::signal::ctrl_c().await;
            }))?;
            eprint!("{}", summary.to_human());
            println!("{}", summary.to_json_line());
            Ok(())
        }
        CliCommand::IdleConn(args) => {
            init_tracing();
            let cfg = args.to_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(idle_connections(cfg))?;
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
            let mut line: serde_json::Value = serde_json::from_str(&report.to_json_line())?;
            if let Some(label) = &args.label {
                line["scenario"] = "idle-conn".into();
                line["broker"] = label.as_str().into();
            }
            println!("{line}");
            Ok(())
        }
    }
}

fn run_ws_watch(args: WsWatchArgs) -> anyhow::Result<()> {
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

fn run_bench_command(args: BenchArgs) -> anyhow::Result<()> {
    init_tracing();
    let cfg = args.to_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run_bench(cfg))?;
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
    /// JSON lines from `firmware-sim bench`, `idle-conn` and the wrapped records of `benches/compare.sh`.
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
