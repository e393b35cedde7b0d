//! A bench publisher: PUBLISHes at the phase's rate (or flat out), in
//! batches, within a QoS 1 window, each payload stamped.
//!
//! In: a socket to the broker, the run's phase. Out: PUBLISH packets, and
//! per-step sent counts in [`Shared`]. Bound: one reused output buffer of
//! at most [`MAX_BATCH`] packets, `inflight` QoS 1 permits, a 4 KiB buffer
//! for the PUBACKs.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use firmware_sim::clock::now_unix_ns;
use fleetgate_wire::MAX_ENCODED_LEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, Instant};

use super::config::{BenchConfig, PayloadKind};
use super::payload::{attribution_ns, bench_payload, vehicle_id, vehicle_payload, Stamp};
use super::shared::{Phase, Shared};
use super::MAX_BATCH;
use crate::mqtt::{next_frame, put_publish};

/// Publishes at the phase's rate until the run is done.
pub(super) async fn publish_messages(
    stream: TcpStream,
    n: usize,
    cfg: &BenchConfig,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    let (read_half, mut write_half) = stream.into_split();
    let window = Arc::new(Semaphore::new(if cfg.qos > 0 { cfg.inflight } else { 0 }));
    let closed = Arc::new(AtomicBool::new(false));
    let acks = tokio::spawn(read_acks(
        read_half,
        Arc::clone(&window),
        Arc::clone(&closed),
    ));
    let topic = match cfg.payload {
        PayloadKind::Bench => format!("bench/{n}"),
        PayloadKind::Vehicle => format!("v/{}/pos", vehicle_id(&cfg.id_prefix, n)),
    };
    let mut out =
        Vec::with_capacity(MAX_BATCH * (cfg.payload_bytes.max(MAX_ENCODED_LEN) + topic.len() + 8));
    let mut payload = Vec::with_capacity(cfg.payload_bytes.max(MAX_ENCODED_LEN));
    let mut seq: u32 = 0;
    let mut pkid: u16 = 0;
    // Messages of one batch by the step their stamp belongs to.
    let mut sent_per_step = vec![0u64; shared.steps.len()];
    let result = 'run: loop {
        let current = *phase.borrow_and_update();
        let rate = match current {
            Phase::Done => break Ok(()),
            Phase::Run { rate, .. } => rate,
            Phase::Paused => {
                if phase.changed().await.is_err() {
                    break Ok(());
                }
                continue;
            }
        };
        let start = Instant::now();
        // Fixed-rate publishers are spread over one period (golden-ratio
        // offsets), as a real fleet's reports are, not all at once.
        let offset = if rate > 0.0 {
            Duration::from_secs_f64(((n as f64 * 0.618_033_988_75).fract() / rate).min(1.0))
        } else {
            Duration::ZERO
        };
        let mut sent_here: u64 = 0;
        loop {
            if closed.load(Relaxed) {
                break 'run Err(anyhow::anyhow!("the broker closed the connection"));
            }
            if phase.has_changed().unwrap_or(true) {
                continue 'run;
            }
            let mut batch = MAX_BATCH as u64;
            if rate > 0.0 {
                let elapsed = start.elapsed().saturating_sub(offset).as_secs_f64();
                let due = if start.elapsed() < offset {
                    0
                } else {
                    (elapsed * rate) as u64 + 1
                };
                batch = due.saturating_sub(sent_here).min(MAX_BATCH as u64);
                if batch == 0 {
                    let next = start + offset + Duration::from_secs_f64(sent_here as f64 / rate);
                    tokio::select! {
                        () = sleep_until(next) => {}
                        _ = phase.changed() => continue 'run,
                    }
                    continue;
                }
            }
            if cfg.qos > 0 {
                let permit = tokio::select! {
                    permit = window.acquire() => permit,
                    _ = phase.changed() => continue 'run,
                };
                let Ok(permit) = permit else {
                    break 'run Err(anyhow::anyhow!("the broker closed the connection"));
                };
                permit.forget();
                let mut taken = 1;
                while taken < batch {
                    match window.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            taken += 1;
                        }
                        Err(_) => break,
                    }
                }
                batch = taken;
            }
            out.clear();
            sent_per_step.iter_mut().for_each(|c| *c = 0);
            for _ in 0..batch {
                payload.clear();
                let stamp = Stamp {
                    publisher: n,
                    seq,
                    sent_ns: now_unix_ns(),
                };
                match cfg.payload {
                    PayloadKind::Bench => bench_payload(&mut payload, cfg.payload_bytes, stamp),
                    PayloadKind::Vehicle => vehicle_payload(&mut payload, n, stamp),
                }
                let at = shared.step_of(attribution_ns(cfg.payload, stamp.sent_ns));
                if let Some(c) = sent_per_step.get_mut(at) {
                    *c += 1;
                }
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                put_publish(&mut out, topic.as_bytes(), cfg.qos, pkid, &payload);
                seq = seq.wrapping_add(1);
            }
            if let Err(e) = write_half.write_all(&out).await {
                break 'run Err(e.into());
            }
            for (c, &n) in shared.steps.iter().zip(&sent_per_step) {
                if n > 0 {
                    c.sent.fetch_add(n, Relaxed);
                }
            }
            sent_here += batch;
        }
    };
    // Outstanding PUBACKs are not waited for: every subscriber's count says what arrived.
    let _ = write_half.write_all(&[0xe0, 0x00]).await; // DISCONNECT
    acks.abort();
    result
}

/// Returns a QoS 1 permit for each PUBACK; marks `closed` when the broker hangs up.
pub(super) async fn read_acks(
    mut read_half: OwnedReadHalf,
    window: Arc<Semaphore>,
    closed: Arc<AtomicBool>,
) {
    let mut buf = bytes::BytesMut::with_capacity(4096);
    loop {
        match read_half.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut consumed = 0;
        while let Ok(Some(frame)) = next_frame(&buf[consumed..]) {
            if frame.header >> 4 == 4 {
                window.add_permits(1);
            }
            consumed += frame.len;
        }
        let _ = buf.split_to(consumed);
    }
    closed.store(true, Relaxed);
    window.close();
}
