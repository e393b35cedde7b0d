//! The MQTT 3.1.1 rules whose breach MUST close the network connection,
//! checked on every packet a client sends: vehicles at the edge and clients
//! handed to rumqttd alike.
//!
//! In: a whole frame from a client, as its raw bytes, before it is decoded;
//! for handed-off clients also the server's frames to it, to know which
//! acknowledgements it owes. Out: `Ok`, or the [`Violation`] that closes the
//! connection; the caller counts it by reason
//! (`protocol_violations_total{reason}`) and closes without answering.
//! Bound: no allocation; [`OwedAcks`] holds at most [`OwedAcks::CAPACITY`]
//! packet ids (rumqttd sends at most 100 unacknowledged publishes per
//! client).
//!
//! Why on the raw bytes: the codec the edge decodes with
//! (`rumqttc::mqttbytes::v4`) is lenient — it ignores reserved flag bits,
//! accepts QoS 1 publishes with packet id 0, a DUP flag at QoS 0, wildcards
//! in topic names, NUL in strings, trailing bytes in CONNECT — and rumqttd
//! behind it is no stricter. Each rule below names its section of the
//! standard (OASIS MQTT 3.1.1, the `[MQTT-x.y.z-n]` statements).

use crate::metrics::Metrics;

// Here rather than in `metrics`: the counters are the metrics' vocabulary,
// the rules are the edge's, and vocabulary does not import a stage.
impl Metrics {
    /// Counts a connection closed for `violation`: by rule, and among all
    /// connections closed for a violation or a malformed packet.
    pub fn violation(&self, violation: Violation) {
        use Violation as V;
        let counter = match violation {
            V::SecondConnect => &self.protocol_violations_total_second_connect,
            V::ServerPacket => &self.protocol_violations_total_server_packet,
            V::ReservedPacketType => &self.protocol_violations_total_reserved_packet_type,
            V::ReservedFlags => &self.protocol_violations_total_reserved_flags,
            V::PublishQos3 => &self.protocol_violations_total_publish_qos3,
            V::DupAtQos0 => &self.protocol_violations_total_dup_at_qos0,
            V::EmptyTopic => &self.protocol_violations_total_empty_topic,
            V::WildcardInTopic => &self.protocol_violations_total_wildcard_in_topic,
            V::BadFilter => &self.protocol_violations_total_bad_filter,
            V::BadUtf8 => &self.protocol_violations_total_bad_utf8,
            V::PacketIdZero => &self.protocol_violations_total_packet_id_zero,
            V::NoFilters => &self.protocol_violations_total_no_filters,
            V::BadRequestedQos => &self.protocol_violations_total_bad_requested_qos,
            V::ConnectFlags => &self.protocol_violations_total_connect_flags,
            V::Malformed => &self.protocol_violations_total_malformed,
            V::UnsolicitedAck => &self.protocol_violations_total_unsolicited_ack,
        };
        Metrics::inc(counter);
        Metrics::inc(&self.connections_closed_malformed_total);
    }
}

/// A breach of a MUST-close rule. Each variant is one `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A second CONNECT on a connection [MQTT-3.1.0-2].
    SecondConnect,
    /// A packet only a server sends: CONNACK, SUBACK, UNSUBACK, PINGRESP.
    ServerPacket,
    /// Packet type 0 or 15, reserved [MQTT-2.2.1].
    ReservedPacketType,
    /// Fixed-header flag bits other than the ones the type prescribes
    /// [MQTT-2.2.2-2].
    ReservedFlags,
    /// A PUBLISH with both QoS bits set [MQTT-3.3.1-4].
    PublishQos3,
    /// A QoS 0 PUBLISH with the DUP flag [MQTT-3.3.1-2].
    DupAtQos0,
    /// An empty topic name or filter [MQTT-4.7.3-1].
    EmptyTopic,
    /// `+` or `#` in a topic name (PUBLISH, will) [MQTT-3.3.2-2, 4.7.1-1].
    WildcardInTopic,
    /// A topic filter with a misplaced wildcard [MQTT-4.7.1-2, 4.7.1-3].
    BadFilter,
    /// A string that is not UTF-8, or holds U+0000 [MQTT-1.5.3-1, 1.5.3-2].
    BadUtf8,
    /// Packet identifier 0 where one is required [MQTT-2.3.1-1].
    PacketIdZero,
    /// A SUBSCRIBE or UNSUBSCRIBE with no topic filter [MQTT-3.8.3-3,
    /// 3.10.3-2].
    NoFilters,
    /// A requested QoS above 2, or reserved bits set in its byte
    /// [MQTT-3.8.3-4].
    BadRequestedQos,
    /// CONNECT flags that contradict each other or set the reserved bit
    /// [MQTT-3.1.2-3, 3.1.2-11, 3.1.2-13, 3.1.2-14, 3.1.2-22].
    ConnectFlags,
    /// Lengths that do not add up: an ack that is not 2 bytes, fields that
    /// overrun the packet or leave bytes after it.
    Malformed,
    /// A PUBACK, PUBREC or PUBCOMP for nothing the server sent.
    UnsolicitedAck,
}

impl Violation {
    /// Every variant, in the order `/metrics` lists them.
    pub const ALL: [Violation; 16] = [
        Violation::SecondConnect,
        Violation::ServerPacket,
        Violation::ReservedPacketType,
        Violation::ReservedFlags,
        Violation::PublishQos3,
        Violation::DupAtQos0,
        Violation::EmptyTopic,
        Violation::WildcardInTopic,
        Violation::BadFilter,
        Violation::BadUtf8,
        Violation::PacketIdZero,
        Violation::NoFilters,
        Violation::BadRequestedQos,
        Violation::ConnectFlags,
        Violation::Malformed,
        Violation::UnsolicitedAck,
    ];

    /// The `reason` label in `/metrics` and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::SecondConnect => "second_connect",
            Violation::ServerPacket => "server_packet",
            Violation::ReservedPacketType => "reserved_packet_type",
            Violation::ReservedFlags => "reserved_flags",
            Violation::PublishQos3 => "publish_qos3",
            Violation::DupAtQos0 => "dup_at_qos0",
            Violation::EmptyTopic => "empty_topic",
            Violation::WildcardInTopic => "wildcard_in_topic",
            Violation::BadFilter => "bad_filter",
            Violation::BadUtf8 => "bad_utf8",
            Violation::PacketIdZero => "packet_id_zero",
            Violation::NoFilters => "no_filters",
            Violation::BadRequestedQos => "bad_requested_qos",
            Violation::ConnectFlags => "connect_flags",
            Violation::Malformed => "malformed",
            Violation::UnsolicitedAck => "unsolicited_ack",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// The body of a frame (after the fixed header), read front to back.
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    /// Splits a whole frame into its first byte and its body. The frame's
    /// remaining length was checked when it was split off the socket.
    fn of(raw: &'a [u8]) -> Result<(u8, Body<'a>), Violation> {
        let first = *raw.first().ok_or(Violation::Malformed)?;
        let mut at = 1;
        while raw.get(at).ok_or(Violation::Malformed)? & 0x80 != 0 {
            at += 1;
        }
        let rest = raw.get(at + 1..).ok_or(Violation::Malformed)?;
        Ok((first, Body { rest }))
    }

    fn u8(&mut self) -> Result<u8, Violation> {
        let (&b, rest) = self.rest.split_first().ok_or(Violation::Malformed)?;
        self.rest = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Violation> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    /// Length-prefixed bytes.
    fn bytes(&mut self) -> Result<&'a [u8], Violation> {
        let len = usize::from(self.u16()?);
        if self.rest.len() < len {
            return Err(Violation::Malformed);
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }

    /// A UTF-8 string as 3.1.1 defines it: well-formed, no U+0000.
    fn string(&mut self) -> Result<&'a str, Violation> {
        let s = std::str::from_utf8(self.bytes()?).map_err(|_| Violation::BadUtf8)?;
        if s.contains('\0') {
            return Err(Violation::BadUtf8);
        }
        Ok(s)
    }

    fn packet_id(&mut self) -> Result<u16, Violation> {
        match self.u16()? {
            0 => Err(Violation::PacketIdZero),
            id => Ok(id),
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn end(&self) -> Result<(), Violation> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Violation::Malformed)
        }
    }
}

/// A topic name: non-empty, no wildcards.
fn topic_name(topic: &str) -> Result<(), Violation> {
    if topic.is_empty() {
        return Err(Violation::EmptyTopic);
    }
    if topic.contains(['+', '#']) {
        return Err(Violation::WildcardInTopic);
    }
    Ok(())
}

/// A topic filter: non-empty; `+` fills a whole level; `#` fills the last.
pub fn topic_filter(filter: &str) -> Result<(), Violation> {
    if filter.is_empty() {
        return Err(Violation::EmptyTopic);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match level {
            "#" => last,
            "+" => true,
            other => !other.contains(['+', '#']),
        };
        if !ok {
            return Err(Violation::BadFilter);
        }
    }
    Ok(())
}

/// Checks a CONNECT frame whose protocol name and level were already found
/// to be MQTT 3.1.1's.
pub fn check_connect(raw: &[u8]) -> Result<(), Violation> {
    let (first, mut body) = Body::of(raw)?;
    if first & 0x0f != 0 {
        return Err(Violation::ReservedFlags);
    }
    if body.string()? != "MQTT" {
        return Err(Violation::Malformed);
    }
    let _level = body.u8()?;
    let flags = body.u8()?;
    let _keep_alive = body.u16()?;
    let username = flags & 0x80 != 0;
    let password = flags & 0x40 != 0;
    let will_retain = flags & 0x20 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will = flags & 0x04 != 0;
    let reserved = flags & 0x01 != 0;
    let contradictory = reserved
        || (!will && (will_qos != 0 || will_retain))
        || will_qos == 3
        || (password && !username);
    if contradictory {
        return Err(Violation::ConnectFlags);
    }
    let _client_id = body.string()?;
    if will {
        topic_name(body.string()?)?;
        let _message = body.bytes()?;
    }
    if username {
        let _username = body.string()?;
    }
    if password {
        let _password = body.bytes()?;
    }
    body.end()
}

/// Checks one frame a client sent after its CONNECT against every
/// stateless MUST-close rule. Acknowledgements are checked against what
/// was sent by the caller ([`OwedAcks`], or none owed at all for a vehicle,
/// whose commands go out at QoS 0).
pub fn check_frame(raw: &[u8]) -> Result<(), Violation> {
    let (first, mut body) = Body::of(raw)?;
    let flags = first & 0x0f;
    match first >> 4 {
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(Violation::PublishQos3);
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(Violation::DupAtQos0);
            }
            topic_name(body.string()?)?;
            if qos > 0 {
                body.packet_id()?;
            }
            Ok(())
        }
        PUBACK | PUBREC | PUBCOMP => {
            fixed_flags(flags, 0)?;
            body.packet_id()?;
            body.end()
        }
        PUBREL => {
            fixed_flags(flags, 0b0010)?;
            body.packet_id()?;
            body.end()
        }
        SUBSCRIBE => {
            fixed_flags(flags, 0b0010)?;
            body.packet_id()?;
            if body.is_empty() {
                return Err(Violation::NoFilters);
            }
            while !body.is_empty() {
                topic_filter(body.string()?)?;
                if body.u8()? > 2 {
                    return Err(Violation::BadRequestedQos);
                }
            }
            Ok(())
        }
        UNSUBSCRIBE => {
            fixed_flags(flags, 0b0010)?;
            body.packet_id()?;
            if body.is_empty() {
                return Err(Violation::NoFilters);
            }
            while !body.is_empty() {
                topic_filter(body.string()?)?;
            }
            Ok(())
        }
        PINGREQ | DISCONNECT => {
            fixed_flags(flags, 0)?;
            body.end()
        }
        CONNECT => Err(Violation::SecondConnect),
        CONNACK | SUBACK | UNSUBACK | PINGRESP => Err(Violation::ServerPacket),
        _ => Err(Violation::ReservedPacketType),
    }
}

fn fixed_flags(flags: u8, required: u8) -> Result<(), Violation> {
    if flags == required {
        Ok(())
    } else {
        Err(Violation::ReservedFlags)
    }
}

/// What a handed-off client owes the server: the packet ids of QoS 1 and 2
/// publishes rumqttd sent it and of the PUBRELs that followed, so an ack
/// for anything else is a violation.
#[derive(Debug, Default)]
pub struct OwedAcks {
    owed: Vec<(u16, Owed)>,
    /// More were outstanding than [`OwedAcks::CAPACITY`]: from then on acks
    /// are not checked on this connection, rather than refused wrongly.
    overflowed: bool,
}

/// Which acknowledgement a packet id awaits from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// PUBACK, for a QoS 1 publish.
    Ack,
    /// PUBREC, for a QoS 2 publish.
    Rec,
    /// PUBCOMP, for the server's PUBREL.
    Comp,
}

impl OwedAcks {
    /// rumqttd 0.20 keeps at most 100 unacknowledged publishes per client
    /// (hard-coded); room for that and slack.
    pub const CAPACITY: usize = 256;

    /// Notes a frame the server sends the client.
    pub fn server_sent(&mut self, raw: &[u8]) {
        let Ok((first, mut body)) = Body::of(raw) else {
            return;
        };
        let owed = match first >> 4 {
            PUBLISH => {
                let qos = (first >> 1) & 0b11;
                if body.bytes().is_err() {
                    return;
                }
                match qos {
                    1 => Owed::Ack,
                    2 => Owed::Rec,
                    _ => return,
                }
            }
            PUBREL => Owed::Comp,
            _ => return,
        };
        let Ok(id) = body.u16() else {
            return;
        };
        if let Some(entry) = self.owed.iter_mut().find(|(owed_id, _)| *owed_id == id) {
            entry.1 = owed;
        } else if self.owed.len() < Self::CAPACITY {
            self.owed.push((id, owed));
        } else {
            self.overflowed = true;
        }
    }

    /// Checks an acknowledgement from the client (a frame that passed
    /// [`check_frame`]); anything that is not an ack passes.
    pub fn client_sent(&mut self, raw: &[u8]) -> Result<(), Violation> {
        let Ok((first, mut body)) = Body::of(raw) else {
            return Ok(());
        };
        let answers = match first >> 4 {
            PUBACK => Owed::Ack,
            PUBREC => Owed::Rec,
            PUBCOMP => Owed::Comp,
            _ => return Ok(()),
        };
        let id = body.u16()?;
        let at = self.owed.iter().position(|&(owed_id, owed)| {
            owed_id == id
                // A PUBREC again, after the server's PUBREL, is a repeat.
                && (owed == answers || (answers == Owed::Rec && owed == Owed::Comp))
        });
        match at {
            Some(i) => {
                if answers != Owed::Rec {
                    self.owed.swap_remove(i);
                }
                Ok(())
            }
            None if self.overflowed => Ok(()),
            None => Err(Violation::UnsolicitedAck),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    fn publish(first: u8, topic: &[u8], pkid: Option<u16>) -> Vec<u8> {
        let mut body = string(topic);
        if let Some(id) = pkid {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(b"payload");
        frame(first, &body)
    }

    fn subscribe(first: u8, filters: &[(&[u8], u8)]) -> Vec<u8> {
        let mut body = 7u16.to_be_bytes().to_vec();
        for (f, qos) in filters {
            body.extend(string(f));
            body.push(*qos);
        }
        frame(first, &body)
    }

    fn connect(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
        let mut body = string(b"MQTT");
        body.extend_from_slice(&[4, flags, 0, 60]);
        for p in payload {
            body.extend(string(p));
        }
        frame(0x10, &body)
    }

    #[test]
    fn well_formed_packets_pass() {
        for raw in [
            publish(0x30, b"a/b", None),
            publish(0x32, b"a/b", Some(1)),
            publish(0x3d, b"a/b", Some(1)),
            frame(0x40, &[0, 1]),
            frame(0x62, &[0, 1]),
            subscribe(0x82, &[(b"a/+/c", 1), (b"#", 0), (b"$share/g/a/#", 2)]),
            frame(0xa2, &[&[0, 7][..], &string(b"a/#")[..]].concat()),
            frame(0xc0, &[]),
            frame(0xe0, &[]),
        ] {
            assert_eq!(check_frame(&raw), Ok(()), "{raw:02x?}");
        }
        assert_eq!(check_connect(&connect(0x02, &[b"c"])), Ok(()));
        assert_eq!(
            check_connect(&connect(0xee, &[b"c", b"will/t", b"bye", b"user", b"pw"])),
            Ok(())
        );
    }

    #[test]
    fn each_must_close_rule_names_its_reason() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (publish(0x36, b"a", Some(1)), Violation::PublishQos3),
            (publish(0x38, b"a", None), Violation::DupAtQos0),
            (publish(0x30, b"", None), Violation::EmptyTopic),
            (publish(0x30, b"a/+", None), Violation::WildcardInTopic),
            (publish(0x30, b"a/#", None), Violation::WildcardInTopic),
            (publish(0x30, b"a\0b", None), Violation::BadUtf8),
            (publish(0x30, b"\xff\xfe", None), Violation::BadUtf8),
            (publish(0x32, b"a", Some(0)), Violation::PacketIdZero),
            (frame(0x41, &[0, 1]), Violation::ReservedFlags),
            (frame(0x40, &[0, 0]), Violation::PacketIdZero),
            (frame(0x40, &[0, 1, 0]), Violation::Malformed),
            (frame(0x60, &[0, 1]), Violation::ReservedFlags),
            (subscribe(0x80, &[(b"a", 0)]), Violation::ReservedFlags),
            (frame(0x82, &[0, 7]), Violation::NoFilters),
            (subscribe(0x82, &[(b"a/#/b", 0)]), Violation::BadFilter),
            (subscribe(0x82, &[(b"a+", 0)]), Violation::BadFilter),
            (subscribe(0x82, &[(b"", 0)]), Violation::EmptyTopic),
            (subscribe(0x82, &[(b"a", 3)]), Violation::BadRequestedQos),
            (subscribe(0x82, &[(b"a", 0x41)]), Violation::BadRequestedQos),
            (frame(0xa2, &[0, 7]), Violation::NoFilters),
            (
                frame(0xa0, &[&[0, 7][..], &string(b"a")[..]].concat()),
                Violation::ReservedFlags,
            ),
            (frame(0xa2, &[0, 7, 0, 9, b'a']), Violation::Malformed),
            (frame(0xc1, &[]), Violation::ReservedFlags),
            (frame(0xe0, &[0]), Violation::Malformed),
            (connect(0x02, &[b"c"]), Violation::SecondConnect),
            (frame(0x20, &[0, 0]), Violation::ServerPacket),
            (frame(0xd0, &[]), Violation::ServerPacket),
            (frame(0x00, &[]), Violation::ReservedPacketType),
            (frame(0xf0, &[]), Violation::ReservedPacketType),
        ];
        for (raw, expected) in cases {
            assert_eq!(check_frame(&raw), Err(expected), "{raw:02x?}");
        }
    }

    #[test]
    fn contradictory_connect_flags_are_refused() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (connect(0x03, &[b"c"]), Violation::ConnectFlags),
            (connect(0x0a, &[b"c"]), Violation::ConnectFlags),
            (connect(0x22, &[b"c"]), Violation::ConnectFlags),
            (connect(0x1e, &[b"c", b"t", b"m"]), Violation::ConnectFlags),
            (connect(0x42, &[b"c", b"pw"]), Violation::ConnectFlags),
            (
                connect(0x06, &[b"c", b"t/#", b"m"]),
                Violation::WildcardInTopic,
            ),
            (connect(0x06, &[b"c", b"", b"m"]), Violation::EmptyTopic),
            (connect(0x82, &[b"c\0", b"u"]), Violation::BadUtf8),
            (connect(0x02, &[b"c", b"extra"]), Violation::Malformed),
        ];
        for (raw, expected) in cases {
            assert_eq!(check_connect(&raw), Err(expected), "{raw:02x?}");
        }
        let mut flagged = connect(0x02, &[b"c"]);
        flagged[0] = 0x11;
        assert_eq!(check_connect(&flagged), Err(Violation::ReservedFlags));
    }

    #[test]
    fn acks_must_answer_what_the_server_sent() {
        let mut owed = OwedAcks::default();
        let puback = |id: u16| frame(0x40, &id.to_be_bytes());
        let pubrec = |id: u16| frame(0x50, &id.to_be_bytes());
        let pubcomp = |id: u16| frame(0x70, &id.to_be_bytes());
        assert_eq!(owed.client_sent(&puback(1)), Err(Violation::UnsolicitedAck));
        owed.server_sent(&publish(0x32, b"a", Some(1)));
        owed.server_sent(&publish(0x34, b"a", Some(2)));
        assert_eq!(owed.client_sent(&pubrec(1)), Err(Violation::UnsolicitedAck));
        assert_eq!(owed.client_sent(&puback(1)), Ok(()));
        assert_eq!(owed.client_sent(&puback(1)), Err(Violation::UnsolicitedAck));
        assert_eq!(
            owed.client_sent(&pubcomp(2)),
            Err(Violation::UnsolicitedAck)
        );
        assert_eq!(owed.client_sent(&pubrec(2)), Ok(()));
        owed.server_sent(&frame(0x62, &2u16.to_be_bytes()));
        assert_eq!(owed.client_sent(&pubrec(2)), Ok(()), "a repeated PUBREC");
        assert_eq!(owed.client_sent(&pubcomp(2)), Ok(()));
        assert_eq!(
            owed.client_sent(&pubcomp(2)),
            Err(Violation::UnsolicitedAck)
        );
        // Not an ack: not this check's business.
        assert_eq!(owed.client_sent(&frame(0xc0, &[])), Ok(()));
    }

    #[test]
    fn too_many_outstanding_stops_checking_rather_than_refusing_wrongly() {
        let mut owed = OwedAcks::default();
        for id in 1..=(OwedAcks::CAPACITY as u16 + 1) {
            owed.server_sent(&publish(0x32, b"a", Some(id)));
        }
        let last = OwedAcks::CAPACITY as u16 + 1;
        assert_eq!(owed.client_sent(&frame(0x40, &last.to_be_bytes())), Ok(()));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut owed = OwedAcks::default();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 20) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let _ = check_frame(&bytes);
            let _ = check_connect(&bytes);
            owed.server_sent(&bytes);
            let _ = owed.client_sent(&bytes);
        }
    }
}
