//! Hand-written MQTT 3.1.1 packets, for the tools' raw-socket clients: a
//! socket and a few bytes per connection cost far less than a client
//! library's event loop, so a load tool measures the broker, not itself.
//!
//! In: client ids, credentials, topics, payloads; bytes from a broker. Out:
//! CONNECT, PUBLISH (QoS 0 and 1) and SUBSCRIBE packets; a CONNACK-checked
//! connection ([`handshake`]); the packet at the front of a read buffer
//! ([`next_frame`]) and a PUBLISH's parts. Bound: a packet from the broker
//! above [`MAX_PACKET`] bytes is an error, never an allocation.

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet a subscriber accepts.
pub const MAX_PACKET: usize = 1024 * 1024;

/// Appends an MQTT remaining length (1 to 4 bytes, 7 bits each).
pub fn put_remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// A minimal MQTT 3.1.1 CONNECT (clean session), written by hand: a raw
/// socket per connection costs far less than a rumqttc event loop, so the
/// probe measures the broker, not itself.
pub fn connect_packet(
    client_id: &str,
    keep_alive_s: u16,
    username: Option<&str>,
    password: Option<&str>,
) -> Vec<u8> {
    let mut flags = 0x02; // clean session
    let mut body = Vec::with_capacity(32 + client_id.len());
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]);
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    for field in [Some(client_id), username, password].into_iter().flatten() {
        // MQTT strings are at most 65535 bytes; ids and credentials here are short.
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
    }
    let mut packet = vec![0x10];
    put_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// The first address of a `host:port` broker.
pub async fn resolve(broker: &str) -> anyhow::Result<std::net::SocketAddr> {
    tokio::net::lookup_host(broker)
        .await
        .with_context(|| format!("cannot resolve {broker}"))?
        .next()
        .with_context(|| format!("no address for {broker}"))
}

/// TCP connect, then CONNECT and a successful CONNACK.
pub async fn handshake(addr: std::net::SocketAddr, connect: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(connect).await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    // CONNACK: type 0x20, length 2, session-present flags, return code 0 = accepted.
    if connack[0] != 0x20 || connack[1] != 0x02 || connack[3] != 0x00 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("CONNACK {connack:02x?}"),
        ));
    }
    Ok(stream)
}

/// Appends one MQTT PUBLISH (QoS 0 or 1) to `out`.
pub fn put_publish(out: &mut Vec<u8>, topic: &[u8], qos: u8, pkid: u16, payload: &[u8]) {
    out.push(0x30 | (qos.min(1) << 1));
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    put_remaining_length(out, remaining);
    out.extend_from_slice(&u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(topic);
    if qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

pub fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut out = vec![0x82];
    put_remaining_length(&mut out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(
        &u16::try_from(filter.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(filter.as_bytes());
    out.push(qos.min(1));
    out
}

/// UNSUBSCRIBE (packet id 2) of one filter.
pub fn unsubscribe_packet(filter: &str) -> Vec<u8> {
    let mut out = vec![0xa2];
    put_remaining_length(&mut out, 2 + 2 + filter.len());
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(
        &u16::try_from(filter.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(filter.as_bytes());
    out
}

/// One MQTT packet at the front of `buf`: (first byte, body range end = total length, body start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    pub header: u8,
    pub body_start: usize,
    pub len: usize,
}

/// Finds the packet at the front of `buf`: `Ok(None)` when more bytes are needed.
pub fn next_frame(buf: &[u8]) -> anyhow::Result<Option<FrameAt>> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let body_start = 2 + i;
            if remaining > MAX_PACKET {
                bail!("broker sent a {remaining}-byte packet (limit {MAX_PACKET})");
            }
            let len = body_start + remaining;
            return Ok((buf.len() >= len).then_some(FrameAt {
                header,
                body_start,
                len,
            }));
        }
    }
    bail!("malformed remaining length from the broker")
}

/// The topic, packet id (0 for QoS 0) and payload of a PUBLISH body.
pub fn publish_parts(header: u8, body: &[u8]) -> Option<(&[u8], u16, &[u8])> {
    let topic_len = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let topic = body.get(2..2 + topic_len)?;
    let mut rest = 2 + topic_len;
    let mut pkid = 0;
    if (header >> 1) & 0x03 > 0 {
        pkid = u16::from_be_bytes(body.get(rest..rest + 2)?.try_into().ok()?);
        rest += 2;
    }
    Some((topic, pkid, body.get(rest..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_matches_the_mqtt_spec_example_layout() {
        let p = connect_packet("ab", 60, None, None);
        assert_eq!(
            p,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b']
        );
        let with_auth = connect_packet("a", 60, Some("u"), Some("p"));
        assert_eq!(with_auth[9], 0xc2);
        assert!(with_auth.ends_with(&[0, 1, b'a', 0, 1, b'u', 0, 1, b'p']));
        let long = connect_packet(&"x".repeat(200), 60, None, None);
        assert_eq!(
            &long[1..3],
            &[0xd4, 0x01],
            "remaining length 212 takes two bytes"
        );
    }

    #[test]
    fn publish_frames_parse_back() {
        let mut out = Vec::new();
        put_publish(&mut out, b"bench/1", 1, 513, &[7u8; 200]);
        put_publish(&mut out, b"bench/2", 0, 0, b"hi");
        let first = next_frame(&out)
            .ok()
            .flatten()
            .map(|f| (f.header, f.body_start, f.len));
        assert_eq!(first, Some((0x32, 3, 3 + 2 + 7 + 2 + 200)));
        let f = next_frame(&out).ok().flatten().unwrap_or(FrameAt {
            header: 0,
            body_start: 0,
            len: 0,
        });
        let (topic, pkid, payload) =
            publish_parts(f.header, &out[f.body_start..f.len]).unwrap_or_default();
        assert_eq!((topic, pkid, payload.len()), (&b"bench/1"[..], 513, 200));
        let rest = &out[f.len..];
        let g = next_frame(rest).ok().flatten().unwrap_or(FrameAt {
            header: 0,
            body_start: 0,
            len: 0,
        });
        assert_eq!(
            publish_parts(g.header, &rest[g.body_start..g.len]),
            Some((&b"bench/2"[..], 0, &b"hi"[..]))
        );
        // Split anywhere: more bytes needed, never an error.
        for cut in 0..f.len {
            assert!(matches!(next_frame(&out[..cut]), Ok(None)), "cut at {cut}");
        }
        assert!(next_frame(&[0x30, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
