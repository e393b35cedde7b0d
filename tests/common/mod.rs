//! Shared helpers for the integration tests, a small library: each test
//! file keeps its tests and the helpers only it needs; what two files share
//! lives here.
//!
//! - this file: start the gateway in-process on loopback port 0, HTTP
//!   requests, `/metrics`, awaiting conditions;
//! - [`mqtt`]: a raw MQTT 3.1.1 client and a device that publishes fixes;
//! - [`amqp`]: RabbitMQ (URL, bridge config, consumers, an outage proxy);
//! - [`ws`]: WebSocket clients of the gateway's feeds;
//! - [`browser`]: a real headless Chromium, for the web page;
//! - [`process`]: the gateway binary as a child process, command-line tools;
//! - [`smq`]: a consumer that talks as the SMQ seed's client does, `/put`;
//! - [`fixtures`]: the one position fixture every test builds on.
//!
//! Every helper fails the test with a message that says what to do, and
//! every wait is bounded by [`DEADLINE`].
#![allow(dead_code)]

pub mod amqp;
pub mod browser;
pub mod fixtures;
pub mod mqtt;
pub mod process;
pub mod smq;
pub mod ws;

// Each test file uses a few of these: the rest is unused there.
#[allow(unused_imports)]
pub use {amqp::*, browser::*, fixtures::*, mqtt::*, process::*, smq::*, ws::*};

use std::net::SocketAddr;
use std::time::Duration;

use fleetgate::{Config, Gateway, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any awaited event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The defaults, less what a test must not share: the bridge is off (the
/// bridge tests turn it on with their own names), and the data directory
/// is the test's own.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.bridge.enabled = false;
    config
}

pub async fn gateway() -> Gateway {
    gateway_with(test_config()).await
}

/// Starts the gateway on loopback port 0. A config that kept the default
/// data directory gets a fresh temporary one (kept until the process ends).
pub async fn gateway_with(mut config: Config) -> Gateway {
    // The gateway's logs go to the test's captured output: shown when it fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,rumqttd=warn,lapin=error")
        .with_test_writer()
        .try_init();
    if config.data_dir.0 == Config::default().data_dir.0 {
        let dir = tempfile::tempdir().expect("temp dir");
        config.data_dir.0 = dir.keep();
    }
    let listeners = Listeners::loopback().await.expect("bind loopback");
    fleetgate::start(config, listeners)
        .await
        .expect("gateway starts")
}

/// GET `path`, returning status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).await
}

/// POST `body` as `application/json`, as the source systems' Go clients do
/// (`http.Post(url, "application/json", …)`): status code and body.
pub async fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, Some(body)).await
}

/// One HTTP/1.1 request on a fresh connection: status code and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> (u16, String) {
    http_request_with(addr, method, path, &[], json_body).await
}

/// [`http_request`] with extra header lines (`"Authorization: Bearer …"`).
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    json_body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        req.push_str(header);
        req.push_str("\r\n");
    }
    if let Some(body) = json_body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An HTTP answer: status, head (lower-cased header lines) and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }

    /// The body as JSON, failing the test with the answer when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body` on a fresh connection, closed after the answer.
pub async fn http_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut resp))
        .await
        .expect("an answer within the deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    HttpReply {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// The value of one series in the `/metrics` served at `http`, or `None`
/// when the page does not have it.
pub async fn metric_at(http: SocketAddr, series: &str) -> Option<u64> {
    let (_, body) = http_get(http, "/metrics").await;
    series_value(&body, series)
}

/// The value of `series` in a `/metrics` page.
pub fn series_value(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// The value of one series in `/metrics`, e.g. `fleetgate_messages_malformed_total`.
pub async fn metric(gw: &Gateway, series: &str) -> u64 {
    let (_, body) = http_get(gw.http_addr, "/metrics").await;
    series_value(&body, series).unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
}

/// Polls `/metrics` until `series` reaches `at_least`; fails after [`DEADLINE`].
pub async fn await_metric(gw: &Gateway, series: &str, at_least: u64) -> u64 {
    await_metric_at(gw.http_addr, series, at_least).await
}

/// [`await_metric`] for the gateway serving HTTP at `http` (a
/// [`GatewayProcess`], say).
pub async fn await_metric_at(http: SocketAddr, series: &str, at_least: u64) -> u64 {
    await_metric_where(http, series, |v| v >= at_least, &format!(">= {at_least}")).await
}

/// Polls `/metrics` until `series` falls to `at_most` (a gauge emptying, a
/// connection seen lost); fails after [`DEADLINE`].
pub async fn await_metric_at_most(gw: &Gateway, series: &str, at_most: u64) -> u64 {
    await_metric_where(
        gw.http_addr,
        series,
        |v| v <= at_most,
        &format!("<= {at_most}"),
    )
    .await
}

async fn await_metric_where(
    http: SocketAddr,
    series: &str,
    ok: impl Fn(u64) -> bool,
    expected: &str,
) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = metric_at(http, series)
            .await
            .unwrap_or_else(|| panic!("no series {series} in /metrics"));
        if ok(v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
