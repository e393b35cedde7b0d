//! `firmware-sim`: run a simulated fleet, or encode or decode one payload.
//! See `firmware_sim::cli` for the arguments and `firmware_sim::runner` for
//! what a run does. The load and measuring tools are `loadgen`'s.

use std::io::{Read, Write};

use anyhow::Context as _;
use clap::Parser as _;
use firmware_sim::cli::{
    decode_to_json, encode_bytes, init_tracing, Cli, CliCommand, MAX_DECODE_INPUT,
};
use firmware_sim::clock::now_ms;
use firmware_sim::runner::run_fleet;
use firmware_sim::wire::Error as WireError;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
    }
}
