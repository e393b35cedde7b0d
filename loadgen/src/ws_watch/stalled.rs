//! The stalled client, and the gateway counter it watches.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

use super::report::opt;
use super::*;

pub(super) async fn stall(
    mut ws: Ws,
    cfg: &WsWatchConfig,
    report: &mut WsWatchReport,
    connected: Instant,
    deadline: Instant,
) {
    // Never read until the deadline; meanwhile, maybe watch the gateway count us.
    if let Some(url) = &cfg.metrics_url {
        report.end.stalled_counter_before = fetch_metric(url, STALLED_SERIES).await;
        let mut poll = tokio::time::interval(METRICS_POLL);
        loop {
            tokio::select! {
                () = sleep_until(deadline) => break,
                _ = poll.tick() => {}
            }
            let Some(now) = fetch_metric(url, STALLED_SERIES).await else {
                continue;
            };
            report.end.stalled_counter_after = Some(now);
            if report.end.stalled_counter_rose_at_ms.is_none()
                && report
                    .end
                    .stalled_counter_before
                    .is_some_and(|before| now > before)
            {
                report.end.stalled_counter_rose_at_ms = Some(now_ms());
                if cfg.progress {
                    eprintln!(
                        "[{:>6.1}s] ws-watch --stall: the gateway counted a stalled disconnect ({STALLED_SERIES} {} -> {now})",
                        connected.elapsed().as_secs_f64(),
                        opt(report.end.stalled_counter_before),
                    );
                }
            }
        }
    } else {
        sleep_until(deadline).await;
    }
    report.elapsed = connected.elapsed();
    // Now read: what was buffered, then the server's close, if it closed us.
    let drain_deadline = Instant::now() + DRAIN_BUDGET;
    let closed = loop {
        let message = tokio::select! {
            () = sleep_until(drain_deadline) => break false,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                report.end.drained_frames += 1;
                report.bytes += text.len() as u64;
            }
            Some(Ok(Message::Close(_))) => {
                report.end.disconnect_reason = Some("close frame".to_owned());
                break true;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.end.disconnect_reason = Some(format!("error: {e}"));
                break true;
            }
            None => {
                report.end.disconnect_reason = Some("connection closed".to_owned());
                break true;
            }
        }
    };
    report.end.server_closed = Some(closed);
    report.end.disconnected = closed;
    if !closed {
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

/// GETs `url` (plain `http://host:port/path`) and returns the value of
/// `series`; `None` on any failure.
pub async fn fetch_metric(url: &str, series: &str) -> Option<u64> {
    let rest = url.strip_prefix("http://")?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let body = timeout(METRICS_TIMEOUT, async {
        let mut stream = TcpStream::connect(host_port).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(MAX_METRICS_BYTES)
            .read_to_end(&mut response)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&response).into_owned())
    })
    .await
    .ok()??;
    metric_value(&body, series)
}

/// The value of `series` (exact name, labels included) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
    })
}
