//! The command line of bridge_bench: sizes of the two phases, the
//! RabbitMQ to use, and the bound of every wait.

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Measures the AMQP bridge: sustained confirmed publish rate, and backlog drain under live traffic"
)]
pub(super) struct Args {
    /// RabbitMQ (reached through an in-process TCP proxy that phase B cuts).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub(super) amqp_url: String,
    /// Phase A: positions pushed as fast as the gateway takes them.
    #[arg(long, default_value_t = 200_000)]
    pub(super) sustained: u64,
    /// Vehicles of each bulk push (phase A, and the phase B backlog).
    #[arg(long, default_value_t = 1_000)]
    pub(super) vehicles: u64,
    /// MQTT connections of each bulk push.
    #[arg(long, default_value_t = 4)]
    pub(super) connections: usize,
    /// Unacked QoS 1 publishes per MQTT connection.
    #[arg(long, default_value_t = 256)]
    pub(super) window: usize,
    /// Phase B: positions spooled while the link is cut.
    #[arg(long, default_value_t = 100_000)]
    pub(super) backlog: u64,
    /// Phase B: live positions per second during the drain.
    #[arg(long, default_value_t = 1_000)]
    pub(super) live_rate: u64,
    /// Phase B: vehicles sending the live traffic.
    #[arg(long, default_value_t = 200)]
    pub(super) live_vehicles: u64,
    /// Phase B: seconds of live traffic measured before the link is restored.
    #[arg(long, default_value_t = 10.0)]
    pub(super) before_s: f64,
    /// Phase B: seconds of live traffic measured after the drain.
    #[arg(long, default_value_t = 5.0)]
    pub(super) after_s: f64,
    /// The bench queue is durable (persistent messages go to RabbitMQ's disk).
    #[arg(long)]
    pub(super) durable_queue: bool,
    /// Bind the bench queue but do not consume it (messages pile up in
    /// RabbitMQ until the queue is deleted): shows what the consumer's CPU
    /// costs the other figures on a small machine.
    #[arg(long)]
    pub(super) no_consume: bool,
    /// `bridge.confirm_window` (default: the gateway's default).
    #[arg(long)]
    pub(super) confirm_window: Option<usize>,
    /// `bridge.spool_max_bytes`.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub(super) spool_max_bytes: u64,
    /// Which phases to run: `a`, `b` or `ab`.
    #[arg(long, default_value = "ab")]
    pub(super) phases: String,
    /// Upper bound of every wait, seconds.
    #[arg(long, default_value_t = 180)]
    pub(super) timeout_s: u64,
}
