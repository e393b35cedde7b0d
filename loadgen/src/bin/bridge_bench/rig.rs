//! The rig around the gateway: a TCP proxy to RabbitMQ that can be cut and
//! restored, the run's own RabbitMQ queue and its consumer, and bounded
//! waits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::counters::Received;

pub(super) struct Proxy {
    pub(super) addr: SocketAddr,
    pub(super) up: Arc<AtomicBool>,
    pub(super) cut: Arc<Notify>,
}

impl Proxy {
    pub(super) async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let _ = client.set_nodelay(true);
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up, cut })
    }

    pub(super) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub(super) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `(scheme://user:pass@, host:port, /vhost)` of an AMQP URL.
pub(super) fn split_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let scheme = url.find("://").context("no scheme in the AMQP URL")? + 3;
    let at = url.rfind('@').map_or(scheme, |i| i + 1);
    let rest = &url[at..];
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Ok((url[..at].to_string(), host.to_string(), path.to_string()))
}

pub(super) async fn bench_queue(
    channel: &Channel,
    name: &str,
    durable: bool,
    tag: &str,
    received: Arc<Received>,
    consume: bool,
) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                exclusive: !durable,
                auto_delete: !durable,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in ["fleet.*.position", "fleet.events.#"] {
        channel
            .queue_bind(
                name.into(),
                "amq.topic".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    if !consume {
        return Ok(());
    }
    let mut consumer = channel
        .basic_consume(
            name.into(),
            format!("bench-{tag}").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let needle = format!("\"{tag}-").into_bytes();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let mine = delivery
                .data
                .windows(needle.len())
                .any(|w| w == needle.as_slice());
            let counter = match (mine, delivery.routing_key.as_str().ends_with(".position")) {
                (false, _) => &received.foreign,
                (true, true) => &received.positions,
                (true, false) => &received.events,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(())
}

pub(super) async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
