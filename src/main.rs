//! The `fleetgate` binary: parse flags and config, then hand over to the
//! library (`fleetgate::run`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fleetgate::{Config, Listeners};

/// mimalloc, without transparent huge pages: glibc's arena lock showed in
/// the profile of clients coming and going (freed on another worker than
/// the one that allocated), and with huge pages an idle gateway was 55 MiB
/// resident instead of ~17 (README, "Memory bound").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fleetgate",
    version,
    about = "Edge gateway for vehicle telematics"
)]
struct Cli {
    /// TOML config file; without one, embedded defaults are used.
    #[arg(long, short, env = "FLEETGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// MQTT listen address (overrides `mqtt.listen`).
    #[arg(long, global = true)]
    mqtt_listen: Option<SocketAddr>,
    /// HTTP listen address (overrides `http.listen`).
    #[arg(long, global = true)]
    http_listen: Option<SocketAddr>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter (overrides `log.level`; RUST_LOG overrides both).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Run the gateway with a simulated fleet driving around Amsterdam.
    #[cfg(feature = "demo")]
    Demo {
        /// Simulated vehicles.
        #[arg(long, default_value_t = 50)]
        vehicles: usize,
        /// Positions per second per vehicle.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
    },
    /// Parse the configuration, print the effective values and the memory
    /// bound they give, and exit.
    CheckConfig,
    /// Print one encoded device message to stdout, to pipe into
    /// `mosquitto_pub -s` (the same encoder as `firmware-sim encode`).
    #[cfg(feature = "demo")]
    Encode(firmware_sim::cli::EncodeArgs),
    /// Manage a password file (`auth.password_file`), like mosquitto_passwd:
    /// `add FILE NAME [--role R]` (password from stdin), `remove`, `list`.
    Passwd(fleetgate::auth::cli::PasswdArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    #[cfg(feature = "demo")]
    if let Some(Command::Encode(args)) = &cli.command {
        use std::io::Write as _;
        let bytes = firmware_sim::cli::encode_bytes(args, firmware_sim::cli::now_ms())
            .context("cannot encode")?;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        return Ok(out.flush()?);
    }
    if let Some(Command::Passwd(args)) = cli.command {
        return fleetgate::auth::cli::run(args);
    }
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = cli.mqtt_listen {
        config.mqtt.listen = addr;
    }
    if let Some(addr) = cli.http_listen {
        config.http.listen = addr;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir.0 = dir;
    }
    if let Some(level) = cli.log_level {
        config.log.level = level;
    }
    config.validate()?;
    init_logging(&config.log.level)?;

    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("{config:#?}");
        println!(
            "\nmemory bound from this configuration:\n{}",
            config.memory_budget()
        );
        return Ok(());
    }
    // Each connection is a file descriptor; the usual soft limit of 1024
    // would cap the edge far below `mqtt.max_connections`.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        match cli.command {
            #[cfg(feature = "demo")]
            Some(Command::Demo { vehicles, rate }) => {
                fleetgate::demo::run(config, listeners, vehicles, rate, shutdown_signal()).await
            }
            _ => Ok(fleetgate::run(config, listeners, shutdown_signal()).await?),
        }
    })
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .with_context(|| format!("bad log filter {level:?}"))?;
    // Logs go to stderr (stdout is the demo's and encode's), coloured only
    // on a terminal, so journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
