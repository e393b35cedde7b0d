//! The load: raw MQTT QoS 1 publishers, pipelined, pushing a backlog as
//! fast as the gateway acks it or live traffic at a fixed rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use firmware_sim::clock::now_ms;
use fleetgate_wire::{encode, flags, Position, MAX_ENCODED_LEN};
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::args::Args;

pub(super) struct Pusher {
    pub(super) writer: OwnedWriteHalf,
    pub(super) permits: Arc<Semaphore>,
    pub(super) window: usize,
    pub(super) out: BytesMut,
    pub(super) pkid: u16,
}

impl Pusher {
    pub(super) async fn connect(
        addr: SocketAddr,
        client_id: &str,
        window: usize,
        acked: Arc<AtomicU64>,
    ) -> anyhow::Result<Pusher> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 120;
        let mut out = BytesMut::new();
        Packet::Connect(connect).write(&mut out, usize::MAX)?;
        stream.write_all(&out).await?;
        out.clear();
        let mut buf = BytesMut::new();
        loop {
            match Packet::read(&mut buf, 1 << 16) {
                Ok(Packet::ConnAck(_)) => break,
                Ok(other) => bail!("expected CONNACK, got {other:?}"),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("bad CONNACK: {e:?}"),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("the gateway closed the connection before CONNACK");
            }
        }
        let (mut reader, writer) = stream.into_split();
        let permits = Arc::new(Semaphore::new(window));
        let (p2, a2) = (permits.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                loop {
                    match Packet::read(&mut buf, 1 << 16) {
                        Ok(Packet::PubAck(_)) => {
                            a2.fetch_add(1, Ordering::Relaxed);
                            p2.add_permits(1);
                        }
                        Ok(_) => {}
                        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                        Err(_) => return,
                    }
                }
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        Ok(Pusher {
            writer,
            permits,
            window,
            out,
            pkid: 0,
        })
    }

    pub(super) async fn publish(
        &mut self,
        topic: String,
        position: &Position,
    ) -> anyhow::Result<()> {
        let permits = self.permits.clone();
        match permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => {
                self.flush().await?;
                permits.acquire().await?.forget();
            }
        }
        let mut payload = [0u8; MAX_ENCODED_LEN];
        let encoded = encode(position, &mut payload)?;
        let mut publish =
            Publish::from_bytes(topic, QoS::AtLeastOnce, Bytes::copy_from_slice(encoded));
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        publish.pkid = self.pkid;
        Packet::Publish(publish).write(&mut self.out, usize::MAX)?;
        if self.out.len() >= 32 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes, waits for every ack, disconnects.
    pub(super) async fn finish(mut self, deadline: Duration) -> anyhow::Result<()> {
        self.flush().await?;
        tokio::time::timeout(deadline, self.permits.acquire_many(self.window as u32))
            .await
            .context("publishes not acked in time")??
            .forget();
        Packet::Disconnect.write(&mut self.out, usize::MAX)?;
        self.flush().await?;
        Ok(())
    }
}

pub(super) fn position(seq: u32, lat_e6: i32, lon_e6: i32) -> Position {
    Position {
        seq,
        time_ms: now_ms(),
        lat_e6,
        lon_e6,
        speed_cm_s: 1389,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

/// `per_vehicle` positions for each of `vehicles` vehicles `<prefix>NNNNN`
/// over `connections` connections, as fast as acked. Returns the acked
/// count and the time from the first publish to the last ack.
pub(super) async fn push_bulk(
    addr: SocketAddr,
    prefix: &str,
    vehicles: u64,
    per_vehicle: u32,
    args: &Args,
) -> anyhow::Result<(u64, Duration)> {
    let acked = Arc::new(AtomicU64::new(0));
    let connections = args.connections.max(1) as u64;
    let mut pushers = Vec::new();
    for c in 0..connections {
        pushers.push(
            Pusher::connect(addr, &format!("{prefix}c{c}"), args.window, acked.clone()).await?,
        );
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(args.timeout_s);
    let mut tasks = Vec::new();
    for (c, mut pusher) in pushers.into_iter().enumerate() {
        let mine: Vec<String> = (0..vehicles)
            .filter(|v| v % connections == c as u64)
            .map(|v| format!("v/{prefix}{v:05}/pos"))
            .collect();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=per_vehicle {
                for (i, topic) in mine.iter().enumerate() {
                    let p = position(seq, 52_300_000 + i as i32 * 100, 4_800_000 + seq as i32);
                    pusher.publish(topic.clone(), &p).await?;
                }
            }
            pusher.finish(deadline).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((acked.load(Ordering::Relaxed), started.elapsed()))
}

/// `rate` positions/s from `vehicles` vehicles on one connection until
/// `stop`; counts acks in `acked`.
pub(super) async fn live_traffic(
    addr: SocketAddr,
    prefix: String,
    vehicles: u64,
    rate: u64,
    window: usize,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut pusher = Pusher::connect(addr, &format!("{prefix}live"), window, acked).await?;
    let topics: Vec<String> = (0..vehicles)
        .map(|v| format!("v/{prefix}{v:05}/pos"))
        .collect();
    let mut seqs = vec![0u32; topics.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            seqs[next] += 1;
            // Paris, far from the bulk vehicles.
            let p = position(seqs[next], 48_850_000 + next as i32 * 100, 2_350_000);
            pusher.publish(topics[next].clone(), &p).await?;
            next = (next + 1) % topics.len();
            sent += 1;
        }
        pusher.flush().await?;
    }
    pusher.finish(Duration::from_secs(10)).await
}
