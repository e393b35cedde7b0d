//! `loadgen conformance`: the MQTT 3.1.1 rules that say the server MUST
//! close the network connection, tried one by one against any broker.
//!
//! In: a [`ConformanceConfig`] (from [`ConformanceArgs`]). Out: a
//! [`ConformanceReport`]: how many of the cases the broker closed, and the
//! rules of those it did not; printed as a human line and one JSON line
//! ([`crate::results::ConformanceLine`]). The cases are [`violations`]
//! (after a valid CONNECT) and [`bad_connects`] (instead of it); fleetgate's
//! own conformance tests send the same bytes.
//!
//! A case: TCP connect, (CONNECT, CONNACK,) the offending bytes, then read
//! until the broker closes or [`CLOSE_TIMEOUT`] passes (anything it answers
//! first is read and ignored). Bound: one socket at a time, a 256-byte read
//! buffer; the run stops by itself.

use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::mqtt::{connect_packet, handshake, resolve};
use crate::results::ConformanceLine;

/// How long a broker has to close after a violation.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    #[arg(long, default_value = "conf-")]
    pub id_prefix: String,
    /// Name of the broker under test, recorded in the JSON line (with `"scenario": "conformance"`).
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConformanceConfig {
    pub broker: String,
    pub id_prefix: String,
}

impl ConformanceArgs {
    pub fn to_config(&self) -> ConformanceConfig {
        ConformanceConfig {
            broker: self.broker.clone(),
            id_prefix: self.id_prefix.clone(),
        }
    }
}

/// One MQTT packet of a body shorter than 128 bytes.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first, body.len().min(127) as u8];
    out.extend_from_slice(body);
    out
}

/// An MQTT string: 2-byte big-endian length, then the bytes.
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len().min(u16::MAX as usize) as u16)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(s);
    out
}

/// A PUBLISH with `first` as its fixed-header byte and a `{}` payload.
pub fn publish(first: u8, topic: &[u8], pkid: Option<u16>) -> Vec<u8> {
    let mut body = string(topic);
    if let Some(id) = pkid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(b"{}");
    frame(first, &body)
}

/// A SUBSCRIBE (packet id 7) of one filter.
pub fn subscribe(first: u8, filter: &[u8], qos: u8) -> Vec<u8> {
    let mut body = 7u16.to_be_bytes().to_vec();
    body.extend(string(filter));
    body.push(qos);
    frame(first, &body)
}

/// A CONNECT (protocol level 4, keep-alive 30 s) with these connect flags
/// and payload fields after the client id.
pub fn connect_with_flags(flags: u8, client_id: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[4, flags, 0, 30]);
    body.extend(string(client_id));
    for field in rest {
        body.extend(string(field));
    }
    frame(0x10, &body)
}

/// Each case: the rule it breaks (fleetgate's `protocol_violations_total`
/// reason), and the bytes a client sends after its CONNECT.
pub fn violations() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("reserved_flags", frame(0xc1, &[])),
        ("reserved_flags", subscribe(0x80, b"a", 0)),
        ("reserved_flags", frame(0x60, &[0, 1])),
        ("publish_qos3", publish(0x36, b"v/t1/pos", Some(1))),
        ("dup_at_qos0", publish(0x38, b"v/t1/pos", None)),
        ("empty_topic", publish(0x30, b"", None)),
        ("wildcard_in_topic", publish(0x30, b"a/+", None)),
        ("wildcard_in_topic", publish(0x32, b"a/#", Some(1))),
        ("bad_utf8", publish(0x30, b"a\0b", None)),
        ("bad_utf8", publish(0x30, b"\xc3\x28", None)),
        ("packet_id_zero", publish(0x32, b"v/t1/pos", Some(0))),
        (
            "packet_id_zero",
            subscribe(0x82, b"a", 0)
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 2 || i == 3 { 0 } else { b })
                .collect(),
        ),
        ("no_filters", frame(0x82, &[0, 7])),
        ("no_filters", frame(0xa2, &[0, 7])),
        ("bad_filter", subscribe(0x82, b"a/#/b", 0)),
        ("bad_filter", subscribe(0x82, b"a+/b", 0)),
        ("bad_requested_qos", subscribe(0x82, b"a", 3)),
        ("malformed", frame(0xa2, &[0, 7, 0, 9, b'a'])),
        ("malformed", frame(0xe0, &[0])),
        ("second_connect", connect_with_flags(0x02, b"again", &[])),
        ("server_packet", frame(0x20, &[0, 0])),
        ("server_packet", frame(0x90, &[0, 7, 0])),
        ("reserved_packet_type", frame(0xf0, &[])),
        ("unsolicited_ack", frame(0x40, &[0, 9])),
        ("unsolicited_ack", frame(0x50, &[0, 9])),
    ]
}

/// Each case: the rule, and a CONNECT that breaks it (sent as the first
/// packet). 3.1.1 §3.1.2: the server MUST close, without CONNACK or after
/// a refusing one.
pub fn bad_connects() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // §3.1.2-3: the reserved flag must be 0
        ("connect_reserved_flag", connect_with_flags(0x03, b"r", &[])),
        // §3.1.2-13: will QoS without the will flag
        (
            "connect_will_qos_without_will",
            connect_with_flags(0x0a, b"w", &[]),
        ),
        // §3.1.2-14: will QoS 3
        (
            "connect_will_qos3",
            connect_with_flags(0x1e, b"w", &[b"t", b"m"]),
        ),
        // §3.1.2-22: a password without a user name
        (
            "connect_password_without_user",
            connect_with_flags(0x42, b"p", &[b"pw"]),
        ),
        // §3.1.0-1: the first packet must be CONNECT
        ("first_packet_not_connect", frame(0xc0, &[])),
    ]
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConformanceReport {
    pub cases: usize,
    pub closed: usize,
    /// The rule (and first byte) of every case the broker left open.
    pub not_closed: Vec<String>,
}

impl ConformanceReport {
    pub fn to_line(&self, label: Option<&str>) -> ConformanceLine {
        ConformanceLine {
            scenario: label.map(|_| "conformance".to_owned()),
            broker: label.map(str::to_owned),
            cases: self.cases,
            closed: self.closed,
            not_closed: self.not_closed.clone(),
        }
    }

    pub fn to_human(&self) -> String {
        let open = if self.not_closed.is_empty() {
            String::new()
        } else {
            format!("; left open: {}", self.not_closed.join(", "))
        };
        format!(
            "conformance: {} of {} MUST-close cases closed{open}\n",
            self.closed, self.cases
        )
    }
}

/// Reads until the peer closes (true) or `CLOSE_TIMEOUT` passes (false).
async fn closes(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

pub async fn conformance(cfg: ConformanceConfig) -> anyhow::Result<ConformanceReport> {
    let addr = resolve(&cfg.broker).await?;
    let mut report = ConformanceReport::default();
    for (n, (rule, bytes)) in violations().into_iter().enumerate() {
        let connect = connect_packet(&format!("{}{n}", cfg.id_prefix), 30, None, None);
        let mut stream = timeout(CLOSE_TIMEOUT, handshake(addr, &connect)).await??;
        // A broker may close while we write: that is a close too.
        let closed = stream.write_all(&bytes).await.is_err() || closes(&mut stream).await;
        report.record(rule, &bytes, closed);
    }
    for (rule, bytes) in bad_connects() {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let closed = stream.write_all(&bytes).await.is_err() || closes(&mut stream).await;
        report.record(rule, &bytes, closed);
    }
    Ok(report)
}

impl ConformanceReport {
    fn record(&mut self, rule: &str, bytes: &[u8], closed: bool) {
        self.cases += 1;
        if closed {
            self.closed += 1;
        } else {
            let first = bytes.first().copied().unwrap_or(0);
            self.not_closed.push(format!("{rule} (0x{first:02x})"));
        }
    }
}
