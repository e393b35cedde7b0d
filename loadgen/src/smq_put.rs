//! `loadgen smq-put`: the SMQ (seed 002) end to end, as its own clients
//! use it — producers `POST /put?topic=T` over HTTP/1.1 keep-alive
//! connections, consumers on the SMQ TCP port sharing one channel
//! (`SUB T C`, then `GET`, the frame, `FIN <id>` in a loop).
//!
//! In: an [`SmqPutConfig`] (from [`SmqPutArgs`]): where the gateway's HTTP
//! and SMQ ports are, how many producers and consumers, a total rate (0:
//! each producer sends its next `/put` as soon as the last one was
//! answered), how long, the message size. Out: an [`SmqPutReport`]:
//! `/put`s sent, answered `OK`, refused (by status); messages consumed,
//! lost and duplicated (by sequence number); throughput; the `/put` round
//! trip and the end-to-end latency (`/put` sent → consumer read it)
//! percentiles; printed as a human block and one JSON line
//! ([`crate::results::SmqPutLine`]).
//!
//! Bound: one histogram per task (fixed size) and one bit per message sent
//! to tell duplicates; every wait is bounded ([`IO_TIMEOUT`], the drain
//! after the run); the run stops by itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bench::{new_histogram, Latency};
use crate::http1::Http1;
use crate::results::SmqPutLine;
use crate::stamp::{add_status, error_line, merge, micros_since, per_s, Clock, SeqSet};

/// The longest one read or write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A frame longer than this is a broken stream, not a message.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// After the last `/put`, consumers keep reading until this passes without a message.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct SmqPutArgs {
    /// The gateway's HTTP port (for `/put`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// The gateway's SMQ consumer port (`smq.listen`).
    #[arg(long, default_value = "127.0.0.1:5151")]
    pub smq: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// HTTP connections sending `/put`s.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Consumers of the one channel.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// `/put`s per second over all producers; 0: each as soon as the last was answered.
    #[arg(long, default_value_t = 0)]
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
pub struct SmqPutConfig {
    pub http: String,
    pub smq: String,
    pub topic: String,
    pub channel: String,
    pub producers: usize,
    pub consumers: usize,
    pub rate: u64,
    pub duration: Duration,
    pub payload_bytes: usize,
}

impl SmqPutArgs {
    pub fn to_config(&self) -> SmqPutConfig {
        SmqPutConfig {
            http: self.http.clone(),
            smq: self.smq.clone(),
            topic: self.topic.clone(),
            channel: self.channel.clone(),
            producers: self.producers.max(1),
            consumers: self.consumers.max(1),
            rate: self.rate,
            duration: Duration::from_secs(self.duration_s.max(1)),
            payload_bytes: self.payload_bytes,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SmqPutReport {
    pub producers: usize,
    pub consumers: usize,
    pub payload_bytes: usize,
    pub offered_per_s: u64,
    pub sent: u64,
    pub accepted: u64,
    /// `/put`s answered with another status than 200, by status.
    pub refused: Vec<(u16, u64)>,
    pub received: u64,
    pub duplicates: u64,
    /// Accepted, never consumed (dropped by a bound, or still queued at the end).
    pub lost: u64,
    /// From the first `/put` to the last `/put` answered.
    pub put_elapsed: Duration,
    /// From the first `/put` to the last message consumed.
    pub consume_elapsed: Duration,
    pub put_latency: Latency,
    pub end_to_end: Latency,
    pub first_error: Option<String>,
}

impl SmqPutReport {
    pub fn accepted_per_s(&self) -> f64 {
        per_s(self.accepted, self.put_elapsed)
    }
    pub fn received_per_s(&self) -> f64 {
        per_s(self.received, self.consume_elapsed)
    }

    pub fn to_line(&self, label: Option<&str>) -> SmqPutLine {
        SmqPutLine {
            tool: "loadgen smq-put".into(),
            scenario: "smq-put".into(),
            broker: label.map(str::to_owned),
            producers: self.producers,
            consumers: self.consumers,
            payload_bytes: self.payload_bytes,
            offered_per_s: self.offered_per_s,
            sent: self.sent,
            accepted: self.accepted,
            refused: self
                .refused
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            received: self.received,
            duplicates: self.duplicates,
            lost: self.lost,
            accepted_per_s: self.accepted_per_s(),
            received_per_s: self.received_per_s(),
            put_latency_us: self.put_latency.to_line(),
            end_to_end_latency_us: self.end_to_end.to_line(),
            first_error: self.first_error.clone(),
        }
    }

    pub fn to_human(&self) -> String {
        let l = |x: &Latency| {
            format!(
                "p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                x.p50, x.p99, x.p999, x.max
            )
        };
        format!(
            "smq-put: {} producers, {} consumers, {} B messages, offered {}\n  \
             /put: {} sent, {} OK ({:.0}/s), refused {:?}; round trip {}\n  \
             consumed: {} ({:.0}/s), {} lost, {} duplicates; /put → consumer {}\n{}",
            self.producers,
            self.consumers,
            self.payload_bytes,
            match self.offered_per_s {
                0 => "flat out".to_owned(),
                r => format!("{r}/s"),
            },
            self.sent,
            self.accepted,
            self.accepted_per_s(),
            self.refused,
            l(&self.put_latency),
            self.received,
            self.received_per_s(),
            self.lost,
            self.duplicates,
            l(&self.end_to_end),
            error_line(&self.first_error)
        )
    }
}

/// What one producer did.
#[derive(Default)]
struct Produced {
    sent: u64,
    accepted: u64,
    refused: Vec<(u16, u64)>,
    last_answer: Option<Instant>,
    latency: Option<Histogram<u32>>,
    error: Option<String>,
}

/// What one consumer read.
struct Consumed {
    seqs: Vec<u64>,
    last_read: Option<Instant>,
    latency: Option<Histogram<u32>>,
    error: Option<String>,
}

pub async fn smq_put(cfg: SmqPutConfig) -> anyhow::Result<SmqPutReport> {
    let clock = Clock::start();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    for _ in 0..cfg.consumers {
        let mut conn = TcpStream::connect(&cfg.smq)
            .await
            .with_context(|| format!("cannot reach the SMQ port {}", cfg.smq))?;
        conn.set_nodelay(true)?;
        conn.write_all(format!("SUB {} {}\n", cfg.topic, cfg.channel).as_bytes())
            .await?;
        consumers.push(tokio::spawn(consume(conn, clock, stop_rx.clone())));
    }
    let next_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = clock.base + cfg.duration;
    let mut producers = Vec::new();
    for _ in 0..cfg.producers {
        let conn = Http1::connect(&cfg.http)
            .await
            .with_context(|| format!("cannot reach the HTTP port {}", cfg.http))?;
        let per_producer = (cfg.rate > 0).then(|| cfg.producers as f64 / cfg.rate as f64);
        producers.push(tokio::spawn(produce(
            conn,
            cfg.clone(),
            clock,
            deadline,
            per_producer.map(Duration::from_secs_f64),
            next_seq.clone(),
        )));
    }
    let mut report = SmqPutReport {
        producers: cfg.producers,
        consumers: cfg.consumers,
        payload_bytes: cfg.payload_bytes,
        offered_per_s: cfg.rate,
        ..SmqPutReport::default()
    };
    let mut put_latency = new_histogram();
    let mut last_answer = clock.base;
    for p in producers {
        let p = p.await?;
        report.sent += p.sent;
        report.accepted += p.accepted;
        for (status, n) in p.refused {
            add_status(&mut report.refused, status, n);
        }
        merge(&mut put_latency, &p.latency);
        last_answer = last_answer.max(p.last_answer.unwrap_or(clock.base));
        report.first_error = report.first_error.or(p.error);
    }
    report.put_elapsed = last_answer - clock.base;
    // Producers are done: consumers drain until idle for DRAIN_IDLE.
    stop_tx.send(true).ok();
    let mut seen = SeqSet::new(next_seq.load(std::sync::atomic::Ordering::Relaxed));
    let mut end_to_end = new_histogram();
    let mut last_read = clock.base;
    for c in consumers {
        let c = c.await?;
        for seq in c.seqs {
            report.received += 1;
            if !seen.insert(seq) {
                report.duplicates += 1;
            }
        }
        merge(&mut end_to_end, &c.latency);
        last_read = last_read.max(c.last_read.unwrap_or(clock.base));
        report.first_error = report.first_error.or(c.error);
    }
    report.consume_elapsed = last_read - clock.base;
    report.lost = report.accepted.saturating_sub(seen.count());
    report.put_latency = put_latency.as_ref().map(Latency::of).unwrap_or_default();
    report.end_to_end = end_to_end.as_ref().map(Latency::of).unwrap_or_default();
    Ok(report)
}

async fn produce(
    mut conn: Http1,
    cfg: SmqPutConfig,
    clock: Clock,
    deadline: Instant,
    pace: Option<Duration>,
    next_seq: Arc<std::sync::atomic::AtomicU64>,
) -> Produced {
    let mut out = Produced {
        latency: new_histogram(),
        ..Produced::default()
    };
    let mut ticker = pace.map(tokio::time::interval);
    let path = format!("/put?topic={}", cfg.topic);
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let seq = next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent_at = Instant::now();
        let body = crate::stamp::stamped(seq, micros_since(clock.base, sent_at), cfg.payload_bytes);
        out.sent += 1;
        let status = tokio::time::timeout(
            IO_TIMEOUT,
            conn.send("POST", &path, body.as_bytes(), &mut answer),
        )
        .await;
        match status {
            Ok(Ok(200)) => out.accepted += 1,
            Ok(Ok(status)) => add_status(&mut out.refused, status, 1),
            Ok(Err(e)) => {
                out.error.get_or_insert(format!("/put: {e}"));
                break;
            }
            Err(_) => {
                out.error
                    .get_or_insert("/put: no answer within 10 s".into());
                break;
            }
        }
        let now = Instant::now();
        out.last_answer = Some(now);
        if let Some(h) = out.latency.as_mut() {
            h.saturating_record(micros_since(sent_at, now).max(1));
        }
    }
    out
}

async fn consume(conn: TcpStream, clock: Clock, mut stop: watch::Receiver<bool>) -> Consumed {
    let mut out = Consumed {
        seqs: Vec::new(),
        last_read: None,
        latency: new_histogram(),
        error: None,
    };
    // Frames are read by a task of their own, so giving up on a wait never
    // cuts a frame in half.
    let (read_half, mut write_half) = conn.into_split();
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut read_half = BufReader::new(read_half);
        loop {
            let frame = read_frame(&mut read_half).await;
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    'consuming: loop {
        if let Err(e) = write_half.write_all(b"GET\n").await {
            out.error.get_or_insert(format!("SMQ GET: {e}"));
            break;
        }
        // Wait for the message; once the producers stopped, DRAIN_IDLE at most.
        let frame = loop {
            let stopping = *stop.borrow();
            let wait = if stopping { DRAIN_IDLE } else { IO_TIMEOUT };
            tokio::select! {
                frame = tokio::time::timeout(wait, frames.recv()) => match frame {
                    Ok(Some(frame)) => break frame,
                    Ok(None) => break 'consuming,
                    Err(_) if stopping => break 'consuming,
                    Err(_) => continue,
                },
                _ = stop.changed(), if !stopping => continue,
            }
        };
        let payload = match frame {
            Ok(payload) => payload,
            Err(e) => {
                out.error.get_or_insert(format!("SMQ frame: {e}"));
                break;
            }
        };
        let now = Instant::now();
        if payload.len() < 16 || payload.starts_with(b"E_") {
            out.error.get_or_insert(format!(
                "SMQ answered {:?}",
                String::from_utf8_lossy(&payload)
            ));
            break;
        }
        let (id, body) = payload.split_at(16);
        if let Some((seq, sent_us)) = crate::stamp::parse(body) {
            out.seqs.push(seq);
            if let Some(h) = out.latency.as_mut() {
                h.saturating_record(micros_since(clock.base, now).saturating_sub(sent_us).max(1));
            }
        }
        out.last_read = Some(now);
        let fin = format!("FIN {}\n", uuid_text(id));
        if let Err(e) = write_half.write_all(fin.as_bytes()).await {
            out.error.get_or_insert(format!("SMQ FIN: {e}"));
            break;
        }
    }
    reader.abort();
    out
}

/// One reply: a 4-byte big-endian length, then the payload.
async fn read_frame(
    conn: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!("a {len}-byte frame")));
    }
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await?;
    Ok(payload)
}

/// The id as `FIN` takes it: `8-4-4-4-12` lowercase hex.
pub fn uuid_text(id: &[u8]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    match hex.len() {
        32 => format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ),
        _ => hex,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_fin_takes_them() {
        let id: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_text(&id), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
