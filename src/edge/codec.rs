//! MQTT 3.1.1 framing on top of `rumqttc::mqttbytes::v4`.
//!
//! In: bytes read from a socket into a `BytesMut`. Out: whole frames, each
//! as its fixed header, its raw bytes (so a frame can be forwarded to
//! rumqttd untouched) and the decoded [`Packet`]. Bound: a frame larger than
//! the caller's `max_packet_size` is an error before its body is buffered.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, Packet, PubAck, PubComp, PubRec, PubRel, Publish, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{check, Error as MqttError, FixedHeader, PacketType};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::conformance::{self, Violation};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by peer")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT packet: {0:?}")]
    Malformed(MqttError),
    #[error("MQTT 3.1.1 violation: {0}")]
    Violation(Violation),
}

/// One MQTT control packet as it arrived.
pub struct Frame {
    pub raw: Bytes,
    pub packet: Packet,
}

/// A frame split off the buffer but not decoded yet.
pub struct RawFrame {
    pub header: FixedHeader,
    pub raw: Bytes,
}

impl RawFrame {
    pub fn decode(self) -> Result<Frame, FrameError> {
        let packet = decode(self.header, self.raw.clone()).map_err(FrameError::Malformed)?;
        Ok(Frame {
            raw: self.raw,
            packet,
        })
    }
}

/// Splits the next whole frame off `buf`, or `None` if more bytes are needed.
pub fn next_raw_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<RawFrame>, FrameError> {
    let header = match check(buf.iter(), max_packet_size) {
        Ok(header) => header,
        Err(MqttError::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(FrameError::Malformed(e)),
    };
    let raw = buf.split_to(header.frame_length()).freeze();
    Ok(Some(RawFrame { header, raw }))
}

/// How much of the next frame is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffered {
    /// A whole frame.
    Frame,
    /// Part of one; `frame_len` is its whole length once its header is in
    /// (a few bytes while the header itself is still partial).
    Partial { frame_len: usize },
}

/// Whether a whole frame is buffered (its header is checked, as
/// [`next_raw_frame`] would: an error here is the same error there).
pub fn frame_ready(buf: &BytesMut, max_packet_size: usize) -> Result<Buffered, FrameError> {
    match check(buf.iter(), max_packet_size) {
        Ok(_) => Ok(Buffered::Frame),
        Err(MqttError::InsufficientBytes(missing)) => Ok(Buffered::Partial {
            frame_len: buf.len().saturating_add(missing),
        }),
        Err(e) => Err(FrameError::Malformed(e)),
    }
}

/// [`next_raw_frame`], decoded.
pub fn next_frame(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Frame>, FrameError> {
    next_raw_frame(buf, max_packet_size)?
        .map(RawFrame::decode)
        .transpose()
}

/// The next whole frame from a client, checked against the MQTT 3.1.1
/// rules that say the server MUST close the connection (in
/// [`conformance`]) before it is decoded.
pub fn next_client_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Frame>, FrameError> {
    let Some(raw) = next_raw_frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    conformance::check_frame(&raw.raw).map_err(FrameError::Violation)?;
    raw.decode().map(Some)
}

/// Reads until one whole frame is buffered, and returns it undecoded.
pub async fn read_raw_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<RawFrame, FrameError> {
    loop {
        if let Some(frame) = next_raw_frame(buf, max_packet_size)? {
            return Ok(frame);
        }
        fill(reader, buf).await?;
    }
}

/// Reads more bytes into `buf`; `Closed` at end of stream.
pub async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<(), FrameError> {
    // A position publish is ~50 bytes; 256 holds a few without a second read.
    buf.reserve(256);
    match reader.read_buf(buf).await? {
        0 => Err(FrameError::Closed),
        _ => Ok(()),
    }
}

/// `Packet::read` from a frame already split off, without copying it.
fn decode(header: FixedHeader, raw: Bytes) -> Result<Packet, MqttError> {
    let packet_type = header.packet_type()?;
    // `remaining_len` is private in mqttbytes: it is zero exactly when every
    // length byte after the first carries no value bits.
    let remaining_is_zero = raw.iter().skip(1).all(|b| b & 0x7f == 0);
    if remaining_is_zero {
        return match packet_type {
            PacketType::PingReq => Ok(Packet::PingReq),
            PacketType::PingResp => Ok(Packet::PingResp),
            PacketType::Disconnect => Ok(Packet::Disconnect),
            _ => Err(MqttError::PayloadRequired),
        };
    }
    Ok(match packet_type {
        PacketType::Connect => Packet::Connect(Connect::read(header, raw)?),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::read(header, raw)?),
        PacketType::Publish => Packet::Publish(Publish::read(header, raw)?),
        PacketType::PubAck => Packet::PubAck(PubAck::read(header, raw)?),
        PacketType::PubRec => Packet::PubRec(PubRec::read(header, raw)?),
        PacketType::PubRel => Packet::PubRel(PubRel::read(header, raw)?),
        PacketType::PubComp => Packet::PubComp(PubComp::read(header, raw)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::read(header, raw)?),
        PacketType::SubAck => Packet::SubAck(SubAck::read(header, raw)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(header, raw)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(header, raw)?),
        // Zero-length-only packet types with a body are malformed.
        PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect => {
            return Err(MqttError::IncorrectPacketFormat)
        }
    })
}

/// The protocol level byte of a CONNECT frame, read before a full decode so
/// a v5 or 3.1 client gets the right CONNACK instead of a parse error.
pub fn connect_protocol_level(raw: &[u8]) -> Option<u8> {
    // fixed header (1 + 1..4 length bytes), then 0x00 0x04 "MQTT" level.
    let mut i = 1;
    while *raw.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*raw.get(i + 1)?, *raw.get(i + 2)?]));
    raw.get(i + 3 + name_len).copied()
}

/// Packets only a server sends (or a second CONNECT): from a client they
/// are a protocol violation that closes its connection.
pub fn is_client_violation(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
    )
}

/// A reply the edge writes itself — an ack, PINGRESP, a one-filter SUBACK,
/// the accepting CONNACK — encoded on the stack, so answering a packet
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    bytes: [u8; 5],
    len: u8,
}

impl Reply {
    /// CONNACK: accepted, no session present.
    pub const CONNACK_ACCEPTED: Reply = Reply {
        bytes: [0x20, 0x02, 0x00, 0x00, 0],
        len: 4,
    };
    pub const PINGRESP: Reply = Reply {
        bytes: [0xd0, 0x00, 0, 0, 0],
        len: 2,
    };

    const fn ack(first_byte: u8, pkid: u16) -> Reply {
        let [hi, lo] = pkid.to_be_bytes();
        Reply {
            bytes: [first_byte, 0x02, hi, lo, 0],
            len: 4,
        }
    }
    pub const fn puback(pkid: u16) -> Reply {
        Reply::ack(0x40, pkid)
    }
    pub const fn pubrec(pkid: u16) -> Reply {
        Reply::ack(0x50, pkid)
    }
    pub const fn pubcomp(pkid: u16) -> Reply {
        Reply::ack(0x70, pkid)
    }
    pub const fn unsuback(pkid: u16) -> Reply {
        Reply::ack(0xb0, pkid)
    }
    /// SUBACK for one filter, granted at QoS 0.
    pub const fn suback_qos0(pkid: u16) -> Reply {
        let [hi, lo] = pkid.to_be_bytes();
        Reply {
            bytes: [0x90, 0x03, hi, lo, 0x00],
            len: 5,
        }
    }

    /// SUBACK refusing one filter (0x80).
    pub const fn suback_failure(pkid: u16) -> Reply {
        let [hi, lo] = pkid.to_be_bytes();
        Reply {
            bytes: [0x90, 0x03, hi, lo, 0x80],
            len: 5,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What the edge needs of a PUBLISH it forwards to a client, read from its
/// raw frame without decoding the payload.
pub struct PublishMeta<'a> {
    pub topic: &'a str,
    pub qos: u8,
    /// The retain flag: rumqttd sets it on a retained message it delivers.
    pub retain: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
}

/// The topic, QoS and packet id of a raw PUBLISH frame; `None` if it is
/// not one or is cut short.
pub fn publish_meta(raw: &[u8]) -> Option<PublishMeta<'_>> {
    let first = *raw.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    // The remaining length: 1 to 4 bytes, the last without its top bit.
    let mut at = 1;
    while raw.get(at)? & 0x80 != 0 {
        at += 1;
        if at > 4 {
            return None;
        }
    }
    at += 1;
    let len = usize::from(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]));
    let topic = std::str::from_utf8(raw.get(at + 2..at + 2 + len)?).ok()?;
    let pkid = if qos > 0 {
        let p = at + 2 + len;
        u16::from_be_bytes([*raw.get(p)?, *raw.get(p + 1)?])
    } else {
        0
    };
    Some(PublishMeta {
        topic,
        qos,
        retain: first & 1 == 1,
        pkid,
    })
}

/// Encodes `packet` into `out` (appended).
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), MqttError> {
    packet.write(out, usize::MAX).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_meta_reads_topic_qos_and_id_from_the_raw_frame() {
        let mut wire = BytesMut::new();
        let mut publish = Publish::new("a/b", rumqttc::mqttbytes::QoS::ExactlyOnce, vec![7u8; 300]);
        publish.pkid = 513;
        encode(&Packet::Publish(publish), &mut wire).unwrap();
        let meta = publish_meta(&wire).unwrap();
        assert_eq!((meta.topic, meta.qos, meta.pkid), ("a/b", 2, 513));
        let mut wire = BytesMut::new();
        encode(
            &Packet::Publish(Publish::new(
                "t",
                rumqttc::mqttbytes::QoS::AtMostOnce,
                vec![],
            )),
            &mut wire,
        )
        .unwrap();
        let meta = publish_meta(&wire).unwrap();
        assert_eq!((meta.topic, meta.qos, meta.pkid), ("t", 0, 0));
        assert!(publish_meta(&wire[..3]).is_none());
        assert!(publish_meta(&[0x40, 2, 0, 1]).is_none());
    }

    #[test]
    fn frames_split_at_every_byte_come_out_whole() {
        let mut wire = BytesMut::new();
        let mut publish = Publish::new(
            "v/a/pos",
            rumqttc::mqttbytes::QoS::AtLeastOnce,
            vec![1, 2, 3],
        );
        publish.pkid = 1;
        encode(&Packet::Publish(publish), &mut wire).unwrap();
        encode(&Packet::PingReq, &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut frames = Vec::new();
            while let Some(f) = next_frame(&mut buf, 1024).unwrap() {
                frames.push(f.packet);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = next_frame(&mut buf, 1024).unwrap() {
                frames.push(f.packet);
            }
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0x03][..]);
        assert!(matches!(
            next_frame(&mut buf, 1024),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = next_frame(&mut buf, 1024) {}
            let _ = connect_protocol_level(&bytes);
        }
    }

    #[test]
    fn replies_encode_as_mqttbytes_does() {
        use rumqttc::mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};
        use rumqttc::mqttbytes::QoS;
        let pkid = 0x1234;
        let cases = [
            (
                Reply::CONNACK_ACCEPTED,
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
            ),
            (Reply::PINGRESP, Packet::PingResp),
            (Reply::puback(pkid), Packet::PubAck(PubAck::new(pkid))),
            (Reply::pubrec(pkid), Packet::PubRec(PubRec::new(pkid))),
            (Reply::pubcomp(pkid), Packet::PubComp(PubComp::new(pkid))),
            (Reply::unsuback(pkid), Packet::UnsubAck(UnsubAck::new(pkid))),
            (
                Reply::suback_qos0(pkid),
                Packet::SubAck(SubAck::new(
                    pkid,
                    vec![SubscribeReasonCode::Success(QoS::AtMostOnce)],
                )),
            ),
        ];
        for (reply, packet) in cases {
            let mut out = BytesMut::new();
            encode(&packet, &mut out).unwrap();
            assert_eq!(reply.as_bytes(), &out[..], "{packet:?}");
        }
    }

    #[test]
    fn protocol_level_is_read_from_the_variable_header() {
        let mut out = BytesMut::new();
        encode(&Packet::Connect(Connect::new("c")), &mut out).unwrap();
        assert_eq!(connect_protocol_level(&out), Some(4));
    }
}
