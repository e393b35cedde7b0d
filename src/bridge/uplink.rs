//! The uplink supervisor: the spool's records to RabbitMQ, confirmed.
//!
//! In: unconfirmed spool records, oldest first. Out: AMQP publishes —
//! persistent, `mandatory`, `message_id` stable across retries
//! (`<gateway_id>-<spool id>`; `<gateway_id>-event-<event_id>` for events;
//! the vehicle id for package records, by contract), `timestamp`,
//! `content_type`, `app_id` = the gateway's id — and confirms back into the
//! spool. Bound: `bridge.confirm_window` records in flight; the held-key
//! table of `bridge::unroutable` (at most `MAX_HELD_KEYS` keys, 384 KiB);
//! lapin's buffers of 2 × 32 frames of at most 8 KiB (unless `bridge.url`
//! sets `frame_max`).
//!
//! Delivery: at least once, in order. A record is confirmed in the spool
//! (and so may leave it) only when RabbitMQ acks it. A nack is a failure:
//! counted, logged, kept, and retried at the next retry pass, one
//! `bridge.retry_failed_ms` later (records behind it keep flowing, so a
//! retried one may arrive after newer ones — with the same `message_id`).
//! A return (unroutable under `mandatory`) holds its routing key: the
//! key's records stay in the spool unsent, each retry pass sends only its
//! oldest as a probe, and once a probe is routed the rest follow in spool
//! order; until then the `bridge.unroutable` policy may drop them unsent
//! (`bridge::unroutable`). A retry pass re-reads the spool from its oldest
//! unconfirmed record (`bridge_retry_passes_total`); held records are read
//! there, not sent (`bridge_publishes_total` counts what is). A lost
//! connection rewinds to the oldest unconfirmed record and resends from
//! there after reconnecting (jittered exponential backoff from
//! `reconnect_min_ms` to `reconnect_max_ms`), so a consumer may see a
//! duplicate, never a gap; the held keys are kept across sessions and
//! probed again at once.
//!
//! Failover: `bridge.url` may name several nodes of one cluster. A session
//! starts on the node that last worked; when it cannot be reached (within
//! `bridge.connect_timeout_ms`) or drops the session, the next node is
//! tried at once, and the backoff applies only after every node has failed
//! in a row (`bridge_failovers_total` counts the moves).
//!
//! Each session also (re)declares the topology the contracts fix — the
//! durable `package_status` queue with no arguments — and starts the
//! downlink consumers on a channel of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::Instant;

use super::downlink::Downlink;
use super::record::{Target, UplinkRecord};
use super::spool::Record;
use super::unroutable::{KeyId, Read, Unroutable, Verdict};
use super::SharedSpool;
use crate::clock::now_ms;
use crate::config::BridgeConfig;
use crate::log_limit::RateLimit;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the spool failed: {0}")]
    Spool(String),
    #[error("the connection is gone")]
    Disconnected,
    #[error("no AMQP handshake within bridge.connect_timeout_ms")]
    ConnectTimeout,
}

pub async fn run(
    spool: SharedSpool,
    config: BridgeConfig,
    gateway_id: String,
    metrics: Arc<Metrics>,
    downlink: Downlink,
) {
    let mut backoff = Duration::from_millis(config.reconnect_min_ms.max(1));
    let max_backoff =
        Duration::from_millis(config.reconnect_max_ms.max(config.reconnect_min_ms).max(1));
    let nodes = config.url.urls();
    let mut node = 0;
    // Nodes that failed in a row since a session last lasted.
    let mut failed_in_a_row = 0;
    // Kept across sessions: a reconnect probes the held keys, it does not
    // re-send their backlogs.
    let mut unroutable = Unroutable::new(config.unroutable, config.unroutable_keep_s);
    loop {
        let started = Instant::now();
        let url = nodes.get(node).map_or("", String::as_str);
        let link = Link {
            spool: &spool,
            config: &config,
            gateway_id: &gateway_id,
            metrics: &metrics,
        };
        let outcome = session(url, link, &mut unroutable, &downlink).await;
        metrics.bridge_connected.store(0, Ordering::Relaxed);
        // Whatever was in flight is unconfirmed: send it again, in order.
        // The pass was cut short, and the next session is a retry.
        unroutable.rewound(true, false);
        spool.with(|s| s.rewind()).await;
        // A session that lasted is a fresh start for the backoff.
        if started.elapsed() > max_backoff {
            backoff = Duration::from_millis(config.reconnect_min_ms.max(1));
            failed_in_a_row = 0;
        }
        failed_in_a_row += 1;
        if let Err(e) = &outcome {
            Metrics::inc(&metrics.bridge_disconnects_total);
            tracing::warn!(node = %redact(url), error = %e, "uplink to RabbitMQ down; spooling");
        }
        if nodes.len() > 1 {
            node = (node + 1) % nodes.len();
            Metrics::inc(&metrics.bridge_failovers_total);
            if failed_in_a_row < nodes.len() {
                tracing::info!(next = %redact(&nodes[node]), "uplink fails over to the next RabbitMQ node");
                continue;
            }
        }
        failed_in_a_row = 0;
        tracing::info!(
            retry_in_ms = backoff.as_millis() as u64,
            "no RabbitMQ node reachable; retrying after a backoff"
        );
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// 50–100 % of `d`, so gateways that lost the same RabbitMQ do not all
/// come back at the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// The AMQP frame size asked for when `bridge.url` sets no `frame_max`.
/// lapin keeps 32 frames of receive and of send buffer per connection,
/// zero-filled: at RabbitMQ's default frame_max (128 KiB) that is 8 MiB
/// resident, more than the rest of an idle gateway. The bridge's messages
/// are a few KiB at most (a notification is at most 4 KiB) and a larger one
/// is split into several body frames by the protocol, so 8 KiB frames cost
/// nothing but make the buffers 512 KiB in all.
const DEFAULT_FRAME_MAX: u32 = 8 * 1024;

fn with_small_frames(mut uri: AMQPUri) -> AMQPUri {
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    uri
}

/// What a session works with, borrowed from [`run`].
#[derive(Clone, Copy)]
struct Link<'a> {
    spool: &'a SharedSpool,
    config: &'a BridgeConfig,
    gateway_id: &'a str,
    metrics: &'a Arc<Metrics>,
}

async fn session(
    url: &str,
    link: Link<'_>,
    unroutable: &mut Unroutable,
    downlink: &Downlink,
) -> Result<(), UplinkError> {
    let Link {
        spool,
        config,
        gateway_id,
        metrics,
    } = link;
    let properties = ConnectionProperties::default();
    let connect = async {
        match url.parse::<AMQPUri>() {
            Ok(uri) => Connection::connect_uri(with_small_frames(uri), properties).await,
            // lapin reports a bad URL as it always has.
            Err(_) => Connection::connect(url, properties).await,
        }
    };
    let connection = tokio::time::timeout(
        Duration::from_millis(config.connect_timeout_ms.max(1)),
        connect,
    )
    .await
    .map_err(|_| UplinkError::ConnectTimeout)??;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_package_queue(&channel, &config.package_queue).await?;
    let _consumers = downlink.start(&connection).await?;
    Metrics::inc(&metrics.bridge_connects_total);
    metrics.bridge_connected.store(1, Ordering::Relaxed);
    tracing::info!(url = %redact(url), "uplink to RabbitMQ up");

    let window = config.confirm_window.get();
    let retry_after = Duration::from_millis(config.retry_failed_ms);
    let mut in_flight = FuturesUnordered::new();
    let mut settled = Settled::with_capacity(window);
    let mut failed_at: Option<Instant> = None;
    let mut failure_log = RateLimit::new(1);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Fill the window from the spool, reading past held records: a
        // read that held everything it got reads on.
        while in_flight.len() < window {
            let want = window - in_flight.len();
            let read = spool
                .with(move |s| {
                    let mut out = Vec::with_capacity(want);
                    s.read_unsent(want, &mut out).map(|_| out)
                })
                .await
                .ok_or_else(|| UplinkError::Spool("spool task failed".into()))?
                .map_err(|e| UplinkError::Spool(e.to_string()))?;
            let exhausted = read.len() < want;
            let now = now_ms();
            for record in read {
                let uplink = decode(&record)?;
                let (exchange, routing_key) = destination(config, &uplink);
                let key = unroutable.key(exchange, routing_key);
                match unroutable.on_read(key, record.id, record.appended_ms, now) {
                    Read::Hold => continue,
                    Read::Drop => {
                        settled.dropped.push(record.id);
                        continue;
                    }
                    Read::Probe => Metrics::inc(&metrics.bridge_unroutable_probes_total),
                    Read::Send => {}
                }
                let (id, appended_ms) = (record.id, record.appended_ms);
                let confirm = publish(&channel, config, gateway_id, metrics, id, &uplink).await?;
                in_flight.push(async move { (id, appended_ms, key, confirm.await) });
            }
            // Held records the reads dropped unsent leave the spool a
            // window at a time, so the list stays bounded.
            if settled.dropped.len() >= window {
                settled.flush(spool, metrics).await;
            }
            if exhausted {
                unroutable.reached_end();
                break;
            }
        }
        settled.flush(spool, metrics).await;
        report_held(unroutable, metrics);
        tokio::select! {
            Some(first) = in_flight.next() => {
                // Take every confirm already in, then one trip to the spool.
                let mut next = Some(first);
                while let Some((id, appended_ms, key, result)) = next.take() {
                    match outcome(metrics, &mut failure_log, unroutable, key, id, appended_ms, result?) {
                        Outcome::Delivered => settled.confirmed.push(id),
                        Outcome::Dropped => {
                            settled.dropped.push(id);
                            // Its key's held records are dropped or probed
                            // at the next pass.
                            failed_at.get_or_insert_with(Instant::now);
                        }
                        Outcome::Failed => {
                            failed_at.get_or_insert_with(Instant::now);
                        }
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
                settled.flush(spool, metrics).await;
            }
            _ = spool.appended.notified(), if in_flight.len() < window => {}
            _ = sleep_until(failed_at.map(|t| t + retry_after)), if in_flight.is_empty() && failed_at.is_some() => {
                // Nothing in flight, so the reads reached the spool's end:
                // the pass is whole.
                failed_at = None;
                Metrics::inc(&metrics.bridge_retry_passes_total);
                unroutable.rewound(true, true);
                spool.with(|s| s.rewind()).await;
            }
            () = std::future::ready(()), if in_flight.is_empty() && unroutable.release_pending() => {
                // A probe was routed: its key's held records go now, in
                // spool order, from the oldest unconfirmed record on.
                unroutable.rewound(false, true);
                spool.with(|s| s.rewind()).await;
            }
            _ = health.tick() => {
                if !connection.status().connected() {
                    return Err(UplinkError::Disconnected);
                }
            }
        }
    }
}

use futures_util::FutureExt as _;

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records done with, confirmed in the spool in one trip: routed and
/// acked, or dropped by the unroutable policy. Bound: a window of each
/// (the drops found by one read are at most a window more).
struct Settled {
    window: usize,
    confirmed: Vec<u64>,
    dropped: Vec<u64>,
}

impl Settled {
    fn with_capacity(window: usize) -> Settled {
        Settled {
            window,
            confirmed: Vec::with_capacity(window),
            dropped: Vec::new(),
        }
    }

    async fn flush(&mut self, spool: &SharedSpool, metrics: &Metrics) {
        if self.confirmed.is_empty() && self.dropped.is_empty() {
            return;
        }
        let ids = std::mem::replace(&mut self.confirmed, Vec::with_capacity(self.window));
        let gone = std::mem::take(&mut self.dropped);
        let (n, d) = (ids.len() as u64, gone.len() as u64);
        // A dropped record is confirmed too: it leaves the spool.
        // One call, so one state write for the whole batch.
        spool
            .with(move |s| s.confirm_all(ids.into_iter().chain(gone)))
            .await;
        metrics
            .bridge_confirmed_total
            .fetch_add(n, Ordering::Relaxed);
        metrics
            .bridge_unroutable_dropped_total
            .fetch_add(d, Ordering::Relaxed);
    }
}

fn report_held(unroutable: &Unroutable, metrics: &Metrics) {
    metrics
        .bridge_unroutable_held_keys
        .store(unroutable.held_keys() as u64, Ordering::Relaxed);
    metrics
        .bridge_unroutable_held_records
        .store(unroutable.held_records(), Ordering::Relaxed);
}

/// What became of one publish.
enum Outcome {
    /// RabbitMQ routed and acked it: confirm it in the spool.
    Delivered,
    /// Nacked, or returned and still within the unroutable policy: retry.
    Failed,
    /// Returned, and the unroutable policy gave up on it: confirm it in the
    /// spool (it leaves) and count it dropped.
    Dropped,
}

/// A nack is a failure, counted and logged at most once a second (with how
/// many were not logged); a return goes to the unroutable policy, which
/// holds its key and logs once per routing key per minute, so an exchange
/// with no queue bound cannot flood the log.
fn outcome(
    metrics: &Metrics,
    nack_log: &mut RateLimit,
    unroutable: &mut Unroutable,
    key: KeyId,
    id: u64,
    appended_ms: u64,
    confirmation: lapin::Confirmation,
) -> Outcome {
    let nack = confirmation.is_nack();
    let returned = confirmation.take_message();
    if nack {
        Metrics::inc(&metrics.bridge_nacks_total);
        unroutable.on_nack(key, id);
        if let Some(suppressed) = nack_log.allow() {
            tracing::warn!(
                record = id,
                suppressed,
                "RabbitMQ nacked a message; it stays spooled and will be retried"
            );
        }
        return Outcome::Failed;
    }
    let Some(returned) = returned else {
        unroutable.on_delivered(key);
        return Outcome::Delivered;
    };
    Metrics::inc(&metrics.bridge_returns_total);
    let routing_key = returned.delivery.routing_key.as_str();
    let (verdict, held) =
        unroutable.on_return(key, id, appended_ms, routing_key, now_ms(), Instant::now());
    if !held {
        Metrics::inc(&metrics.bridge_unroutable_untracked_total);
    }
    match verdict {
        Verdict::Retry => Outcome::Failed,
        Verdict::Drop => Outcome::Dropped,
    }
}

/// The `package_status` queue exactly as the package-tracking consumers
/// declare it (another declaration would make RabbitMQ refuse).
pub async fn declare_package_queue(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: false,
                exclusive: false,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
}

/// A spool record's AMQP publish, as the feeder encoded it.
fn decode(record: &Record) -> Result<UplinkRecord, UplinkError> {
    UplinkRecord::decode(&record.payload).map_err(|e| {
        // Checksummed on disk, so only a format change could do this.
        tracing::error!(record = record.id, error = %e, "undecodable spool record skipped");
        UplinkError::Spool(format!("record {} undecodable: {e}", record.id))
    })
}

/// The exchange and routing key a record is published with.
fn destination<'a>(config: &'a BridgeConfig, uplink: &'a UplinkRecord) -> (&'a str, &'a str) {
    match uplink.target {
        Target::TopicExchange => (config.exchange.as_str(), uplink.routing_key.as_str()),
        Target::PackageQueue => ("", config.package_queue.as_str()),
    }
}

async fn publish(
    channel: &Channel,
    config: &BridgeConfig,
    gateway_id: &str,
    metrics: &Metrics,
    id: u64,
    uplink: &UplinkRecord,
) -> Result<lapin::PublisherConfirm, UplinkError> {
    let (exchange, routing_key) = destination(config, uplink);
    let message_id = uplink
        .message_id
        .clone()
        .unwrap_or_else(|| format!("{gateway_id}-{id}"));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_timestamp(uplink.timestamp_ms / 1000)
        .with_app_id(gateway_id.into());
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    Metrics::inc(&metrics.bridge_publishes_total);
    metrics
        .bridge_published_body_bytes_total
        .fetch_add(uplink.body.len() as u64, Ordering::Relaxed);
    Ok(channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            &uplink.body,
            properties,
        )
        .await?)
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host"), "amqp://host");
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        let d = Duration::from_millis(1000);
        for _ in 0..100 {
            let j = jitter(d);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
    }
}
