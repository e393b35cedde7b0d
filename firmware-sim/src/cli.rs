//! The command line of the `firmware-sim` binary (`run`, `encode`,
//! `decode`), and the byte builders behind `encode` and `decode` (here, not
//! in `main`, so they are tested).
//!
//! In: command-line arguments; for `decode`, a payload on stdin. Out: an
//! encoded payload (postcard, or JSON with `--json`), or a payload printed as
//! JSON. Bound: one payload of at most [`MAX_ENCODED_LEN`] bytes (postcard)
//! or its JSON text; `decode` reads at most [`MAX_DECODE_INPUT`] bytes.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fleetgate_wire::json::{
    decode_command_any, decode_position_any, decode_status_any, CommandJson, PositionJson,
    StatusJson,
};
use fleetgate_wire::{
    encode, peek_kind, Command, Error as WireError, Format, Kind, WireMessage, MAX_ENCODED_LEN,
};

use crate::runner::{FleetConfig, Outage};

/// The gateway's own `encode` subcommand stamps payloads with this clock.
pub use crate::clock::now_ms;

/// `decode` reads at most this much from stdin; a payload is far smaller.
pub const MAX_DECODE_INPUT: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "firmware-sim",
    version,
    about = "Simulated fleetgate vehicles: fleet runner, payload encoder and decoder"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Drive a simulated fleet over MQTT.
    Run(RunArgs),
    /// Write one encoded message to stdout (no newline), e.g. for `mosquitto_pub -s`.
    Encode(EncodeArgs),
    /// Read one payload (postcard or JSON) from stdin and print it as JSON.
    Decode,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, default_value_t = 10)]
    pub vehicles: usize,
    /// Positions per second per vehicle.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Stop each vehicle after this many positions.
    #[arg(long)]
    pub positions_per_vehicle: Option<u32>,
    /// Drop every link this many seconds after the start...
    #[arg(long, requires = "outage_for_s")]
    pub outage_after_s: Option<f64>,
    /// ...for this many seconds, buffering positions in each vehicle's offline ring.
    #[arg(long, requires = "outage_after_s")]
    pub outage_for_s: Option<f64>,
    /// Send the JSON form instead of postcard.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "truck-")]
    pub id_prefix: String,
    #[arg(long, default_value_t = 1)]
    pub first_id: usize,
    /// New connections per second while ramping up (0: all at once).
    #[arg(long, default_value_t = 100)]
    pub connect_rate: u32,
    /// Positions each vehicle keeps while offline.
    #[arg(long, default_value_t = 1000)]
    pub ring_capacity: usize,
    /// At the end (duration reached or Ctrl-C), keep sending what the
    /// offline rings hold for at most this many seconds before reporting,
    /// so "unsent at end" is 0 unless the gateway stayed unreachable.
    #[arg(long)]
    pub drain_s: Option<f64>,
    /// Share of the fleet (0 to 1) whose drivers speed, at 1.2–1.4 times
    /// the usual pace.
    #[arg(long, default_value_t = 0.0)]
    pub speeders: f64,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    pub fn to_config(&self) -> anyhow::Result<FleetConfig> {
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds"))
        };
        let outage = match (self.outage_after_s, self.outage_for_s) {
            (Some(after), Some(length)) => Some(Outage {
                after: seconds(after, "--outage-after-s")?,
                length: seconds(length, "--outage-for-s")?,
            }),
            _ => None,
        };
        if !(self.rate.is_finite() && self.rate > 0.0) {
            anyhow::bail!("--rate must be a positive number of positions per second");
        }
        if !(0.0..=1.0).contains(&self.speeders) {
            anyhow::bail!("--speeders must be a share from 0 to 1");
        }
        Ok(FleetConfig {
            broker: self.broker.clone(),
            vehicles: self.vehicles,
            id_prefix: self.id_prefix.clone(),
            first_id: self.first_id,
            rate_hz: self.rate,
            qos: self.qos,
            duration: self
                .duration_s
                .map(|s| seconds(s, "--duration-s"))
                .transpose()?,
            positions_per_vehicle: self.positions_per_vehicle,
            connect_rate_per_s: self.connect_rate,
            outage,
            ring_capacity: self.ring_capacity,
            json: self.json,
            seed: self.seed,
            progress: !self.quiet,
            drain: self.drain_s.map(|s| seconds(s, "--drain-s")).transpose()?,
            speeders: self.speeders,
        })
    }
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Print the JSON form instead of postcard bytes.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub message: EncodeMessage,
}

#[derive(Debug, Subcommand)]
pub enum EncodeMessage {
    Position(PositionArgs),
    Status(StatusArgs),
    Command {
        #[command(subcommand)]
        command: CommandArgs,
    },
}

#[derive(Debug, Args)]
pub struct PositionArgs {
    #[arg(long, allow_negative_numbers = true)]
    pub lat: f64,
    #[arg(long, allow_negative_numbers = true)]
    pub lon: f64,
    /// Sequence number (default: the current time in seconds, so each run
    /// is newer than the last and the gateway never drops it as a duplicate).
    #[arg(long)]
    pub seq: Option<u32>,
    /// Fix time in ms since the epoch (default: now).
    #[arg(long)]
    pub time_ms: Option<u64>,
    #[arg(long, default_value_t = 0.0)]
    pub speed_kmh: f64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub heading_deg: f64,
    #[arg(long)]
    pub ignition: bool,
    /// Mark the fix invalid (no GNSS lock).
    #[arg(long)]
    pub no_fix: bool,
    #[arg(long)]
    pub replayed: bool,
    #[arg(long)]
    pub odometer_m: Option<u32>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, conflicts_with = "offline")]
    pub online: bool,
    #[arg(long)]
    pub offline: bool,
    #[arg(long)]
    pub ignition: bool,
    #[arg(long)]
    pub supply_mv: Option<u16>,
    /// "major.minor.patch"
    #[arg(long)]
    pub firmware: Option<String>,
    /// Default: now for --online, 0 ("receiver's time", as in a last will) for --offline.
    #[arg(long)]
    pub time_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    SetReportInterval { interval_ms: u32 },
    RequestPosition,
    Text { text: String },
}

/// Logs to stderr at `RUST_LOG`'s level (default `warn`), for the
/// binaries of the simulator and of the tools.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The bytes `firmware-sim encode …` writes; values are validated as the
/// gateway would (a latitude of 91 is an error here, not on the gateway).
pub fn encode_bytes(args: &EncodeArgs, now_ms: u64) -> Result<Vec<u8>, WireError> {
    match &args.message {
        EncodeMessage::Position(p) => {
            let form = PositionJson {
                lat: p.lat,
                lon: p.lon,
                seq: Some(p.seq.unwrap_or((now_ms / 1000) as u32)),
                time_ms: Some(p.time_ms.unwrap_or(now_ms)),
                speed_kmh: Some(p.speed_kmh),
                heading_deg: Some(p.heading_deg),
                fix_valid: Some(!p.no_fix),
                ignition: Some(p.ignition),
                odometer_m: p.odometer_m,
                replayed: p.replayed.then_some(true),
            };
            let position = form.to_position(now_ms)?;
            if args.json {
                to_json(&PositionJson::from_position(&position))
            } else {
                to_postcard(&position)
            }
        }
        EncodeMessage::Status(s) => {
            let online = !s.offline;
            let form = StatusJson {
                online,
                ignition: Some(s.ignition),
                supply_mv: s.supply_mv,
                firmware: s.firmware.clone(),
                time_ms: Some(s.time_ms.unwrap_or(if online { now_ms } else { 0 })),
            };
            let status = form.to_status(now_ms)?;
            if args.json {
                to_json(&StatusJson::from_status(&status))
            } else {
                to_postcard(&status)
            }
        }
        EncodeMessage::Command { command } => {
            let form = match command {
                CommandArgs::SetReportInterval { interval_ms } => CommandJson::SetReportInterval {
                    interval_ms: *interval_ms,
                },
                CommandArgs::RequestPosition => CommandJson::RequestPosition {},
                CommandArgs::Text { text } => CommandJson::Text { text: text.clone() },
            };
            let command = Command::try_from(form)?;
            if args.json {
                to_json(&CommandJson::from(&command))
            } else {
                to_postcard(&command)
            }
        }
    }
}

fn to_postcard<M: WireMessage>(msg: &M) -> Result<Vec<u8>, WireError> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    Ok(encode(msg, &mut buf)?.to_vec())
}

fn to_json<T: serde::Serialize>(form: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(form).map_err(|_| WireError::Malformed)
}

/// What `firmware-sim decode` prints for `payload`: `{"kind":"position","message":{…}}`.
/// A postcard payload's kind comes from its tag; a JSON one is tried as a
/// position, then a status, then a command.
pub fn decode_to_json(payload: &[u8], now_ms: u64) -> Result<String, WireError> {
    let (kind, message) = match Format::detect(payload)? {
        Format::Postcard => match peek_kind(payload)? {
            Kind::Position => ("position", position_value(payload, now_ms)?),
            Kind::Status => ("status", status_value(payload, now_ms)?),
            Kind::Command => ("command", command_value(payload)?),
        },
        Format::Json => {
            if let Ok(v) = position_value(payload, now_ms) {
                ("position", v)
            } else if let Ok(v) = command_value(payload) {
                ("command", v)
            } else {
                ("status", status_value(payload, now_ms)?)
            }
        }
    };
    let out = serde_json::json!({ "kind": kind, "message": message });
    Ok(out.to_string())
}

fn position_value(payload: &[u8], now_ms: u64) -> Result<serde_json::Value, WireError> {
    let p = decode_position_any(payload, now_ms)?;
    serde_json::to_value(PositionJson::from_position(&p)).map_err(|_| WireError::Malformed)
}
fn status_value(payload: &[u8], now_ms: u64) -> Result<serde_json::Value, WireError> {
    let s = decode_status_any(payload, now_ms)?;
    serde_json::to_value(StatusJson::from_status(&s)).map_err(|_| WireError::Malformed)
}
fn command_value(payload: &[u8]) -> Result<serde_json::Value, WireError> {
    let c = decode_command_any(payload)?;
    serde_json::to_value(CommandJson::from(&c)).map_err(|_| WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_wire::{decode, flags, Position, Status};

    fn encode_cli(args: &[&str]) -> Result<Vec<u8>, WireError> {
        let cli = Cli::try_parse_from(std::iter::once("firmware-sim").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            CliCommand::Encode(e) => encode_bytes(&e, 1_000),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn encode_position_builds_the_wire_bytes() {
        let bytes = encode_cli(&[
            "encode",
            "position",
            "--lat",
            "52.3731",
            "--lon",
            "4.8922",
            "--seq",
            "7",
            "--speed-kmh",
            "36",
            "--heading-deg",
            "90",
            "--ignition",
            "--odometer-m",
            "100",
        ])
        .unwrap_or_default();
        let p: Position = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p,
            Position {
                seq: 7,
                time_ms: 1_000,
                lat_e6: 52_373_100,
                lon_e6: 4_892_200,
                speed_cm_s: 1000,
                heading: 64,
                flags: flags::FIX_VALID | flags::IGNITION,
                odometer_m: Some(100),
            }
        );
    }

    #[test]
    fn encode_rejects_what_the_gateway_would_reject() {
        assert_eq!(
            encode_cli(&["encode", "position", "--lat", "91", "--lon", "0"]),
            Err(WireError::OutOfRange("latitude"))
        );
        let long = "x".repeat(200);
        assert_eq!(
            encode_cli(&["encode", "command", "text", &long]),
            Err(WireError::OutOfRange("text"))
        );
    }

    #[test]
    fn encode_negative_coordinates_and_json_form() {
        let bytes = encode_cli(&[
            "encode", "--json", "position", "--lat", "-33.9", "--lon", "-70.6",
        ])
        .unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert!(
            text.starts_with(r#"{"lat":-33.9,"lon":-70.6,"seq":1,"time_ms":1000"#),
            "{text}"
        );
    }

    #[test]
    fn encode_status_and_commands() {
        let will: Status =
            decode(&encode_cli(&["encode", "status", "--offline"]).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(!will.online);
        assert_eq!(will.time_ms, 0);
        let online: Status = decode(
            &encode_cli(&[
                "encode",
                "status",
                "--online",
                "--ignition",
                "--firmware",
                "1.2.3",
            ])
            .unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(online.online && online.ignition);
        assert_eq!(online.firmware.patch, 3);
        assert_eq!(
            encode_cli(&["encode", "command", "set-report-interval", "5000"]),
            Ok(vec![0x13, 0x00, 0x88, 0x27])
        );
        assert_eq!(
            encode_cli(&["encode", "command", "request-position"]),
            Ok(vec![0x13, 0x01])
        );
        assert_eq!(
            encode_cli(&["encode", "command", "text", "hi"]),
            Ok(vec![0x13, 0x02, 0x02, b'h', b'i'])
        );
        assert_eq!(
            encode_cli(&["encode", "--json", "command", "request-position"]),
            Ok(br#"{"type":"request_position"}"#.to_vec())
        );
    }

    #[test]
    fn decode_prints_either_format_as_json() {
        assert_eq!(
            decode_to_json(&[0x13, 0x00, 0x88, 0x27], 0),
            Ok(
                r#"{"kind":"command","message":{"interval_ms":5000,"type":"set_report_interval"}}"#
                    .to_owned()
            )
        );
        let from_json = decode_to_json(br#"{"lat":1.5,"lon":2}"#, 5).unwrap_or_default();
        assert!(from_json.contains(r#""kind":"position""#), "{from_json}");
        assert!(from_json.contains(r#""lat":1.5"#), "{from_json}");
        assert_eq!(
            decode_to_json(br#"{"online":false}"#, 5).map(|s| s.contains("status")),
            Ok(true)
        );
        assert_eq!(decode_to_json(&[0x13, 0x09], 0), Err(WireError::Malformed));
        assert_eq!(decode_to_json(b"", 0), Err(WireError::Empty));
    }
}
