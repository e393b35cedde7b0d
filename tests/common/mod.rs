//! Shared helpers for the integration tests: start the gateway in-process on
//! loopback port 0, talk HTTP and raw MQTT to it, await conditions.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fleetgate::{Config, Gateway, Listeners};
use rumqttc::mqttbytes::v4::{Connect, Packet};
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
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
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

/// The value of one series in `/metrics`, e.g. `fleetgate_messages_malformed_total`.
pub async fn metric(gw: &Gateway, series: &str) -> u64 {
    let (_, body) = http_get(gw.http_addr, "/metrics").await;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
}

/// Polls `/metrics` until `series` reaches `at_least`; fails after [`DEADLINE`].
pub async fn await_metric(gw: &Gateway, series: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = metric(gw, series).await;
        if v >= at_least {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, expected >= {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw MQTT 3.1.1 client: exactly the bytes a test chooses.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The last packet id [`RawClient::send`] chose.
    last_pkid: u16,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.expect("tcp connect"),
            buf: BytesMut::new(),
            last_pkid: 0,
        }
    }

    /// TCP connect, CONNECT with `keep_alive`, expect a successful CONNACK.
    pub async fn mqtt(addr: SocketAddr, client_id: &str, keep_alive: u16) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = keep_alive;
        c.send(Packet::Connect(connect)).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// Sends `packet` as a client library would: a SUBSCRIBE, UNSUBSCRIBE
    /// or QoS 1/2 PUBLISH left with packet id 0 (rumqttc's constructors'
    /// default, which MQTT 3.1.1 forbids) gets the next free one.
    pub async fn send(&mut self, mut packet: Packet) {
        let pkid = match &mut packet {
            Packet::Subscribe(s) => Some(&mut s.pkid),
            Packet::Unsubscribe(u) => Some(&mut u.pkid),
            Packet::Publish(p) if p.qos != rumqttc::mqttbytes::QoS::AtMostOnce => Some(&mut p.pkid),
            _ => None,
        };
        if let Some(pkid) = pkid.filter(|id| **id == 0) {
            self.last_pkid = self.last_pkid % 60_000 + 1;
            *pkid = self.last_pkid;
        }
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent a malformed packet: {e:?}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no packet and no close before the deadline")
    }
}

/// Fails with a clear message when a command-line tool the test needs is
/// missing: these tests use the real tools, never a stand-in.
pub fn require_tool(name: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: run `bash scripts/test.sh`, which installs it (Debian: mosquitto-clients)"
    );
}
