//! `loadgen ws-fanout`: the pub/sub proxy (seed 003) fanning out, as its
//! own clients use it — N WebSockets at `/message` each send
//! `{"action":"subscribe","topic":T}`, one more sends
//! `{"action":"publish","topic":T,"message":M}` at a rate, and every
//! subscriber times each `{"action":"publish",…}` frame it receives.
//!
//! In: a [`WsFanoutConfig`] (from [`WsFanoutArgs`]). Out: a
//! [`WsFanoutReport`]: publishes sent, deliveries (one per subscriber per
//! publish) received, lost (the proxy's `drop_oldest` for a slow socket,
//! by sequence number), error frames, deliveries per second, and the
//! publish → subscriber latency percentiles over every delivery; printed as
//! a human block and one JSON line ([`crate::results::WsFanoutLine`]).
//!
//! Before measuring, the publisher sends warm-up messages until every
//! subscriber has one (the seed answers a subscribe with nothing, so that
//! is how a client knows it is subscribed); they are not counted.
//!
//! Bound: one histogram and one bit per publish per subscriber; every wait
//! bounded ([`WARMUP_TIMEOUT`], [`DRAIN_IDLE`]); the run stops by itself.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{new_histogram, Latency};
use crate::results::WsFanoutLine;
use crate::stamp::{error_line, merge, micros_since, per_s, stamped, Clock, SeqSet};

/// Every subscriber must have a warm-up message within this.
pub const WARMUP_TIMEOUT: Duration = Duration::from_secs(20);
/// After the last publish, subscribers read until this passes without a frame.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct WsFanoutArgs {
    #[arg(long, default_value = "ws://127.0.0.1:8080/message")]
    pub url: String,
    /// Subscribing WebSockets (the gateway's `pubsub.max_connections` must
    /// allow them and the publisher).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    #[arg(long, default_value = "bench/fanout")]
    pub topic: String,
    /// Publishes per second; 0: as fast as the publisher's socket takes them.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Message size (at least the stamp, ~24 bytes).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Name of the system under test, recorded in the JSON line.
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WsFanoutConfig {
    pub url: String,
    pub subscribers: usize,
    pub topic: String,
    pub rate: u64,
    pub duration: Duration,
    pub payload_bytes: usize,
}

impl WsFanoutArgs {
    pub fn to_config(&self) -> WsFanoutConfig {
        WsFanoutConfig {
            url: self.url.clone(),
            subscribers: self.subscribers.max(1),
            topic: self.topic.clone(),
            rate: self.rate,
            duration: Duration::from_secs(self.duration_s.max(1)),
            payload_bytes: self.payload_bytes,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WsFanoutReport {
    pub subscribers: usize,
    pub payload_bytes: usize,
    pub offered_per_s: u64,
    pub published: u64,
    /// Publishes the proxy answered with an error frame (its queue into
    /// the broker was full).
    pub publish_refused: u64,
    /// From the first measured publish to the last.
    pub publish_elapsed: Duration,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub error_frames: u64,
    /// From the first measured publish to the last delivery.
    pub deliver_elapsed: Duration,
    pub latency: Latency,
    pub first_error: Option<String>,
}

impl WsFanoutReport {
    pub fn published_per_s(&self) -> f64 {
        per_s(self.published, self.publish_elapsed)
    }
    pub fn delivered_per_s(&self) -> f64 {
        per_s(self.delivered, self.deliver_elapsed)
    }

    pub fn to_line(&self, label: Option<&str>) -> WsFanoutLine {
        WsFanoutLine {
            tool: "loadgen ws-fanout".into(),
            scenario: "ws-fanout".into(),
            broker: label.map(str::to_owned),
            subscribers: self.subscribers,
            payload_bytes: self.payload_bytes,
            offered_per_s: self.offered_per_s,
            published: self.published,
            published_per_s: self.published_per_s(),
            publish_refused: self.publish_refused,
            expected: (self.published - self.publish_refused) * self.subscribers as u64,
            delivered: self.delivered,
            delivered_per_s: self.delivered_per_s(),
            lost: self.lost,
            duplicates: self.duplicates,
            error_frames: self.error_frames,
            latency_us: self.latency.to_line(),
            first_error: self.first_error.clone(),
        }
    }

    pub fn to_human(&self) -> String {
        format!(
            "ws-fanout: {} subscribers, {} B messages, offered {}\n  \
             published {} ({:.0}/s, {} refused); delivered {} of {} ({:.0}/s), {} lost, {} duplicates, {} error frames\n  \
             publish → subscriber: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n{}",
            self.subscribers,
            self.payload_bytes,
            match self.offered_per_s {
                0 => "flat out".to_owned(),
                r => format!("{r} publishes/s"),
            },
            self.published,
            self.published_per_s(),
            self.publish_refused,
            self.delivered,
            (self.published - self.publish_refused) * self.subscribers as u64,
            self.delivered_per_s(),
            self.lost,
            self.duplicates,
            self.error_frames,
            self.latency.p50,
            self.latency.p99,
            self.latency.p999,
            self.latency.max,
            error_line(&self.first_error)
        )
    }
}

/// What one subscriber received.
struct Received {
    seqs: Vec<u64>,
    warm: bool,
    error_frames: u64,
    last: Option<Instant>,
    latency: Option<Histogram<u32>>,
    error: Option<String>,
}

/// The message of a publish frame, if `text` is one.
fn message_of(text: &str) -> Option<(bool, String)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    match frame["action"].as_str()? {
        "publish" => Some((true, frame["message"].as_str()?.to_owned())),
        _ => Some((false, String::new())),
    }
}

pub async fn ws_fanout(cfg: WsFanoutConfig) -> anyhow::Result<WsFanoutReport> {
    let clock = Clock::start();
    let subscribe = json!({"action": "subscribe", "topic": cfg.topic}).to_string();
    let (warm_tx, warm_rx) = tokio::sync::mpsc::channel::<()>(cfg.subscribers);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscribers = Vec::new();
    for i in 0..cfg.subscribers {
        let (mut ws, _) = tokio_tungstenite::connect_async(cfg.url.as_str())
            .await
            .with_context(|| format!("subscriber {i}: cannot open {}", cfg.url))?;
        ws.send(Message::text(subscribe.clone())).await?;
        subscribers.push(tokio::spawn(subscriber(
            ws,
            clock,
            warm_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(warm_tx);
    let (publisher, _) = tokio_tungstenite::connect_async(cfg.url.as_str())
        .await
        .with_context(|| format!("publisher: cannot open {}", cfg.url))?;
    // The publisher's socket is read too: error frames (a publish the
    // proxy refused: its queue into the broker was full) are counted, and
    // pings answered.
    let (mut publisher, mut answers) = publisher.split();
    let refusals = tokio::spawn(async move {
        let mut refused = 0u64;
        while let Some(Ok(frame)) = answers.next().await {
            if let Message::Text(text) = frame {
                refused += u64::from(message_of(&text).is_some_and(|(publish, _)| !publish));
            }
        }
        refused
    });
    let publish = |message: String| {
        Message::text(
            json!({"action": "publish", "topic": cfg.topic, "message": message}).to_string(),
        )
    };

    // Warm-up: until every subscriber has had a message.
    let mut warm_rx = warm_rx;
    let mut warm = 0;
    let warm_deadline = Instant::now() + WARMUP_TIMEOUT;
    while warm < cfg.subscribers {
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "only {warm} of {} subscribers had a message within {WARMUP_TIMEOUT:?}",
            cfg.subscribers
        );
        publisher.send(publish("warm-up".into())).await?;
        let until = Instant::now() + Duration::from_millis(50);
        while let Ok(Some(())) = tokio::time::timeout_at(until, warm_rx.recv()).await {
            warm += 1;
        }
    }

    // Measured: seqs from 0, at the rate.
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut ticker = (cfg.rate > 0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate as f64)));
    let mut published = 0u64;
    let mut first_error = None;
    while Instant::now() < deadline {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let body = stamped(
            published,
            micros_since(clock.base, Instant::now()),
            cfg.payload_bytes,
        );
        if let Err(e) = publisher.send(publish(body)).await {
            first_error = Some(format!("publisher: {e}"));
            break;
        }
        published += 1;
    }
    let publish_elapsed = start.elapsed();
    stop_tx.send(true).ok();

    let mut report = WsFanoutReport {
        subscribers: cfg.subscribers,
        payload_bytes: cfg.payload_bytes,
        offered_per_s: cfg.rate,
        published,
        publish_elapsed,
        first_error,
        ..WsFanoutReport::default()
    };
    let mut latency = new_histogram();
    let mut last = start;
    for s in subscribers {
        let r = s.await?;
        let mut seen = SeqSet::new(published);
        for seq in r.seqs {
            match seen.insert(seq) {
                true => report.delivered += 1,
                false => report.duplicates += 1,
            }
        }
        report.lost += published - seen.count();
        report.error_frames += r.error_frames;
        merge(&mut latency, &r.latency);
        last = last.max(r.last.unwrap_or(start));
        report.first_error = report.first_error.take().or(r.error);
        if !r.warm {
            report
                .first_error
                .get_or_insert("a subscriber was never warm".into());
        }
    }
    report.deliver_elapsed = last - start;
    report.latency = latency.as_ref().map(Latency::of).unwrap_or_default();
    publisher.close().await.ok();
    report.publish_refused = refusals.await.unwrap_or(0);
    // A refused publish reached nobody: not a loss of the fan-out.
    report.lost = report
        .lost
        .saturating_sub(report.publish_refused * cfg.subscribers as u64);
    Ok(report)
}

async fn subscriber(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    clock: Clock,
    warm_tx: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut out = Received {
        seqs: Vec::new(),
        warm: false,
        error_frames: 0,
        last: None,
        latency: new_histogram(),
        error: None,
    };
    loop {
        let stopping = *stop.borrow();
        let wait = if stopping { DRAIN_IDLE } else { WARMUP_TIMEOUT };
        let frame = tokio::select! {
            frame = tokio::time::timeout(wait, ws.next()) => frame,
            _ = stop.changed(), if !stopping => continue,
        };
        let text = match frame {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => {
                out.error.get_or_insert(format!("subscriber: {e}"));
                break;
            }
            Ok(None) => {
                out.error
                    .get_or_insert("subscriber: the gateway closed the socket".into());
                break;
            }
            Err(_) if stopping => break,
            Err(_) => continue,
        };
        let now = Instant::now();
        match message_of(&text) {
            Some((true, message)) => match crate::stamp::parse(message.as_bytes()) {
                Some((seq, sent_us)) => {
                    out.seqs.push(seq);
                    out.last = Some(now);
                    if let Some(h) = out.latency.as_mut() {
                        h.saturating_record(
                            micros_since(clock.base, now).saturating_sub(sent_us).max(1),
                        );
                    }
                }
                None if !out.warm => {
                    out.warm = true;
                    warm_tx.send(()).await.ok();
                }
                None => {}
            },
            _ => out.error_frames += 1,
        }
    }
    ws.close(None).await.ok();
    out
}
