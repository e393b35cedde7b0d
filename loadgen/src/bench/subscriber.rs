//! A bench subscriber: subscribes, reads every PUBLISH, acks QoS 1, and
//! records each stamp's latency and sequence (losses and duplicates).
//!
//! In: a socket to the broker, the run's phase. Out: [`SubscriberStats`]
//! (a latency histogram per step, duplicates) and per-step received and
//! late counts in [`Shared`]. Bound: a [`READ_BUFFER`] read buffer, a
//! sequence cursor per publisher (at most 10 000 001), one histogram per step.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::bail;
use firmware_sim::clock::now_unix_ns;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::config::{BenchConfig, Mode};
use super::payload::{attribution_ns, parse_stamp};
use super::report::{new_histogram, MAX_LATENCY_US};
use super::shared::{Phase, Shared};
use super::READ_BUFFER;
use crate::mqtt::{connect_packet, handshake, next_frame, publish_parts, subscribe_packet};

pub(super) async fn subscribe(
    addr: SocketAddr,
    cfg: &BenchConfig,
    n: usize,
) -> anyhow::Result<TcpStream> {
    let client_id = format!("{}s{n}", cfg.id_prefix);
    let mut stream = handshake(addr, &connect_packet(&client_id, 0, None, None)).await?;
    let filter = match &cfg.share_group {
        Some(group) => format!("$share/{group}/{}", cfg.sub_topic),
        None => cfg.sub_topic.clone(),
    };
    stream
        .write_all(&subscribe_packet(&filter, cfg.qos))
        .await?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).await?;
    // SUBACK: 0x90, length 3, packet id 1, one return code (0x80 = refused).
    if suback[0] != 0x90 || suback[1] != 0x03 {
        bail!("expected a SUBACK for {filter}, got {suback:02x?}");
    }
    if suback[4] == 0x80 {
        bail!("the broker refused the subscription to {filter}");
    }
    Ok(stream)
}

#[derive(Default)]
pub(super) struct SubscriberStats {
    /// Latency per step (index = step).
    pub(super) histograms: Vec<Option<Histogram<u32>>>,
    pub(super) duplicates: u64,
}

impl SubscriberStats {
    pub(super) fn merge(&mut self, other: SubscriberStats) {
        self.duplicates += other.duplicates;
        if self.histograms.len() < other.histograms.len() {
            self.histograms.resize_with(other.histograms.len(), || None);
        }
        for (mine, theirs) in self.histograms.iter_mut().zip(other.histograms) {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => {
                    let _ = m.add(&t);
                }
                (None, Some(t)) => *mine = Some(t),
                _ => {}
            }
        }
    }
}

/// Reads until the run is done; acks QoS 1; records every stamp (unless `slow`).
pub(super) async fn read_messages(
    mut stream: TcpStream,
    cfg: &BenchConfig,
    shared: &Shared,
    slow: bool,
    mut phase: watch::Receiver<Phase>,
) -> SubscriberStats {
    let mut stats = SubscriberStats {
        histograms: (0..shared.steps.len()).map(|_| None).collect(),
        duplicates: 0,
    };
    // Next expected sequence number per publisher (grown on demand).
    let mut next_seq: Vec<u32> = Vec::new();
    let limit_us = match cfg.mode {
        Mode::Search { p99_limit_us, .. } => p99_limit_us,
        Mode::Fixed { .. } => u64::MAX,
    };
    let mut buf = bytes::BytesMut::with_capacity(READ_BUFFER);
    let mut acks = Vec::with_capacity(1024);
    // Per-step (received, late) counts of one read, published in one go.
    let mut counts = vec![(0u64, 0u64); shared.steps.len()];
    loop {
        if slow
            && shared.current_step.load(Relaxed) != usize::MAX
            && shared.current_step.load(Relaxed) >= cfg.slow_from_step
        {
            // Stop reading, keep the connection: the broker's queues fill.
            while !matches!(*phase.borrow_and_update(), Phase::Done) {
                if phase.changed().await.is_err() {
                    break;
                }
            }
            return stats;
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    shared.subscribers_lost.fetch_add(1, Relaxed);
                    shared.note_error("a subscriber's connection was closed by the broker");
                    return stats;
                }
                Ok(_) => {}
            },
            changed = phase.changed() => {
                if changed.is_err() || matches!(*phase.borrow(), Phase::Done) {
                    return stats;
                }
                continue;
            }
        }
        let now_ns = now_unix_ns();
        let mut consumed = 0;
        loop {
            let frame = match next_frame(&buf[consumed..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    shared.note_error(format!("subscriber: {e:#}"));
                    return stats;
                }
            };
            let packet = &buf[consumed..consumed + frame.len];
            consumed += frame.len;
            if frame.header >> 4 != 3 {
                continue; // PINGRESP and the like.
            }
            let Some((topic, pkid, payload)) =
                publish_parts(frame.header, &packet[frame.body_start..])
            else {
                continue;
            };
            if pkid != 0 {
                acks.extend_from_slice(&[0x40, 0x02]);
                acks.extend_from_slice(&pkid.to_be_bytes());
            }
            if slow {
                continue;
            }
            let Some(stamp) = parse_stamp(cfg.payload, &cfg.id_prefix, topic, payload) else {
                continue;
            };
            if cfg.share_group.is_none() {
                if next_seq.len() <= stamp.publisher {
                    if stamp.publisher > 10_000_000 {
                        continue;
                    }
                    next_seq.resize(stamp.publisher + 1, 0);
                }
                let next = &mut next_seq[stamp.publisher];
                if stamp.seq < *next {
                    stats.duplicates += 1;
                    continue;
                }
                *next = stamp.seq.wrapping_add(1);
            }
            let step = shared.step_of(attribution_ns(cfg.payload, stamp.sent_ns));
            let latency_us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
            if let Some(slot) = stats.histograms.get_mut(step) {
                if slot.is_none() {
                    *slot = new_histogram();
                }
                if let Some(h) = slot {
                    let _ = h.record(latency_us.clamp(1, MAX_LATENCY_US));
                }
            }
            if let Some(c) = counts.get_mut(step) {
                c.0 += 1;
                c.1 += u64::from(latency_us > limit_us);
            }
        }
        let _ = buf.split_to(consumed);
        for (k, c) in counts.iter_mut().enumerate() {
            if c.0 > 0 {
                shared.steps[k].received.fetch_add(c.0, Relaxed);
                shared.steps[k].late.fetch_add(c.1, Relaxed);
                *c = (0, 0);
            }
        }
        if !acks.is_empty() {
            if stream.write_all(&acks).await.is_err() {
                shared.subscribers_lost.fetch_add(1, Relaxed);
                return stats;
            }
            acks.clear();
        }
    }
}
