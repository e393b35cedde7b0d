//! amqp_sink: the consumer a deployment has, for a benchmark that runs the
//! gateway with its bridge on against a real RabbitMQ.
//!
//! ```sh
//! amqp_sink --amqp-url amqp://guest:guest@127.0.0.1:5672/%2f \
//!     [--exchange amq.topic] [--binding 'fleet.#'] [--ready-file PATH]
//! ```
//!
//! In: RabbitMQ's URL, an exchange and binding keys. Out: an exclusive,
//! auto-deleted queue bound to the exchange with each key, consumed with
//! auto-ack (RabbitMQ forgets a message once it is delivered, so nothing
//! piles up); `--ready-file` is written once the queue is bound, so a
//! script can wait for it instead of sleeping. On SIGTERM or SIGINT it
//! prints one JSON line, `{"received": N, "bytes": B}`, and exits; the queue
//! goes with its connection. Bound: RabbitMQ's prefetch (`--prefetch`
//! deliveries unread at once) and lapin's buffers.
//!
//! Without such a consumer every `mandatory` publish of the gateway is
//! returned as unroutable and stays in its spool (BENCHMARKS.md, fourth
//! session); `benches/compare.sh`'s `pipeline` runs one.

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(
    about = "Consume what the gateway publishes upstream: one queue bound to an exchange, auto-ack, counted"
)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The exchange the gateway publishes to (`bridge.exchange`).
    #[arg(long, default_value = "amq.topic")]
    exchange: String,
    /// Binding keys (repeat the flag for more).
    #[arg(long, default_value = "fleet.#")]
    binding: Vec<String>,
    /// Deliveries RabbitMQ sends ahead of what was read.
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Written (empty) once the queue is bound and consumed.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let connection = Connection::connect(&args.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", args.amqp_url))?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in &args.binding {
        channel
            .queue_bind(
                queue.name().clone(),
                args.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {key} on {}", args.exchange))?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "amqp_sink".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"").with_context(|| format!("writing {}", path.display()))?;
    }
    let (mut received, mut bytes) = (0u64, 0u64);
    loop {
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(d)) => {
                    received += 1;
                    bytes += d.data.len() as u64;
                }
                Some(Err(e)) => return Err(e).context("the consumer failed"),
                None => anyhow::bail!("RabbitMQ closed the consumer"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    println!(
        "{}",
        serde_json::json!({ "received": received, "bytes": bytes })
    );
    Ok(())
}
