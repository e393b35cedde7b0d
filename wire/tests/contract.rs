//! The wire contract, pinned: round trips, golden bytes, format detection,
//! hostile input, COBS framing. Needs the `std` feature (JSON forms, Vec).

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "std")]

use fleetgate_wire::frame::{
    max_frame_len, write_frame, write_payload_frame, FeedResult, FrameAccumulator, FrameDefect,
};
use fleetgate_wire::json::{
    decode_command_any, decode_position_any, decode_status_any, CommandJson, PositionJson,
    StatusJson,
};
use fleetgate_wire::{
    decode, encode, flags, peek_kind, Command, Error, FirmwareVersion, Format, Kind, Position,
    Status, WireMessage, MAX_ENCODED_LEN, MAX_TEXT_LEN,
};

/// 2026-11-22T10:00:00Z.
const NOV_22_2026_MS: u64 = 1_795_341_600_000;

/// Amsterdam, Dam square area, 50 km/h heading east, ignition on, valid fix.
fn typical_position() -> Position {
    Position {
        seq: 1234,
        time_ms: NOV_22_2026_MS,
        lat_e6: 52_373_100,
        lon_e6: 4_892_200,
        speed_cm_s: 1389, // 50 km/h
        heading: 64,      // east
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

fn all_positions() -> Vec<Position> {
    vec![
        typical_position(),
        Position {
            seq: u32::MAX,
            time_ms: u64::MAX,
            lat_e6: -90_000_000,
            lon_e6: 180_000_000,
            speed_cm_s: u16::MAX,
            heading: 255,
            flags: flags::REPLAYED,
            odometer_m: Some(u32::MAX),
        },
        Position {
            seq: 0,
            time_ms: 0,
            lat_e6: 0,
            lon_e6: -180_000_000,
            speed_cm_s: 0,
            heading: 0,
            flags: 0,
            odometer_m: Some(0),
        },
    ]
}

fn all_statuses() -> Vec<Status> {
    vec![
        Status {
            time_ms: 0,
            online: false,
            ignition: false,
            supply_mv: 0,
            firmware: FirmwareVersion::default(),
        },
        Status {
            time_ms: NOV_22_2026_MS,
            online: true,
            ignition: true,
            supply_mv: 12_600,
            firmware: FirmwareVersion {
                major: 1,
                minor: 2,
                patch: 300,
            },
        },
    ]
}

fn all_commands() -> Vec<Command> {
    let longest: String = "x".repeat(MAX_TEXT_LEN);
    vec![
        Command::SetReportInterval { interval_ms: 5000 },
        Command::RequestPosition,
        Command::Text(heapless::String::try_from("hi").unwrap()),
        Command::Text(heapless::String::try_from("Ünïcödé ✓").unwrap()),
        Command::Text(heapless::String::try_from(longest.as_str()).unwrap()),
    ]
}

fn encoded<M: WireMessage>(msg: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    encode(msg, &mut buf).unwrap().to_vec()
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_message_round_trips_through_postcard() {
    for p in all_positions() {
        assert_eq!(decode::<Position>(&encoded(&p)), Ok(p));
    }
    for s in all_statuses() {
        assert_eq!(decode::<Status>(&encoded(&s)), Ok(s));
    }
    for c in all_commands() {
        assert_eq!(decode::<Command>(&encoded(&c)), Ok(c));
    }
}

#[test]
fn every_message_round_trips_through_json() {
    for p in all_positions() {
        let text = serde_json::to_vec(&PositionJson::from_position(&p)).unwrap();
        assert_eq!(
            decode_position_any(&text, 1),
            Ok(p),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    for s in all_statuses() {
        let text = serde_json::to_vec(&StatusJson::from_status(&s)).unwrap();
        assert_eq!(
            decode_status_any(&text, 1),
            Ok(s),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    for c in all_commands() {
        let text = serde_json::to_vec(&CommandJson::from(&c)).unwrap();
        assert_eq!(
            decode_command_any(&text),
            Ok(c),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
}

#[test]
fn the_any_decoders_accept_postcard_too() {
    let p = typical_position();
    assert_eq!(decode_position_any(&encoded(&p), 0), Ok(p));
    let s = all_statuses()[1];
    assert_eq!(decode_status_any(&encoded(&s), 0), Ok(s));
    let c = Command::RequestPosition;
    assert_eq!(decode_command_any(&encoded(&c)), Ok(c));
}

#[test]
fn the_largest_messages_fit_max_encoded_len() {
    let longest_text = all_commands().pop().unwrap();
    assert!(encoded(&longest_text).len() <= MAX_ENCODED_LEN);
    assert!(encoded(&all_positions()[1]).len() <= MAX_ENCODED_LEN);
}

// --------------------------------------------------------------- golden bytes
//
// These vectors ARE the protocol. A test failing here means the encoding of
// a message changed: that is a protocol version bump (PROTOCOL_VERSION and
// the tag), never a quiet edit of the expected bytes.

#[test]
fn golden_typical_position() {
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x11,                               // tag: version 1, kind position
        0xd2, 0x09,                         // seq 1234 (varint)
        0x80, 0x8a, 0xcb, 0x95, 0xa0, 0x34, // time_ms 1795341600000 (varint)
        0xd8, 0x99, 0xf9, 0x31,             // lat_e6 52373100 (zigzag varint)
        0xd0, 0x98, 0xd5, 0x04,             // lon_e6 4892200 (zigzag varint)
        0xed, 0x0a,                         // speed_cm_s 1389
        0x40,                               // heading 64 (east)
        0x03,                               // flags FIX_VALID | IGNITION
        0x00,                               // odometer_m None
    ];
    assert_eq!(encoded(&typical_position()), expected);
}

#[test]
fn golden_position_with_odometer_and_negative_coordinates() {
    let p = Position {
        seq: 1,
        time_ms: 1,
        lat_e6: -1,
        lon_e6: -64,
        speed_cm_s: 0,
        heading: 0,
        flags: flags::REPLAYED,
        odometer_m: Some(300),
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x11,
        0x01,       // seq 1
        0x01,       // time_ms 1
        0x01,       // lat_e6 -1 → zigzag 1
        0x7f,       // lon_e6 -64 → zigzag 127
        0x00,       // speed 0
        0x00,       // heading 0
        0x04,       // flags REPLAYED
        0x01, 0xac, 0x02, // odometer Some(300)
    ];
    assert_eq!(encoded(&p), expected);
}

#[test]
fn golden_last_will_status() {
    let will = Status {
        time_ms: 0,
        online: false,
        ignition: false,
        supply_mv: 0,
        firmware: FirmwareVersion::default(),
    };
    // tag, time_ms 0, online false, ignition false, supply 0, firmware 0.0.0
    let expected: &[u8] = &[0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    assert_eq!(encoded(&will), expected);
}

#[test]
fn golden_commands() {
    // SetReportInterval is variant 0, interval 5000 = varint 0x88 0x27.
    assert_eq!(
        encoded(&Command::SetReportInterval { interval_ms: 5000 }),
        [0x13, 0x00, 0x88, 0x27]
    );
    assert_eq!(encoded(&Command::RequestPosition), [0x13, 0x01]);
    assert_eq!(
        encoded(&Command::Text(heapless::String::try_from("hi").unwrap())),
        [0x13, 0x02, 0x02, b'h', b'i']
    );
}

#[test]
fn golden_json_forms() {
    assert_eq!(
        serde_json::to_string(&CommandJson::from(&Command::SetReportInterval {
            interval_ms: 5000
        }))
        .unwrap(),
        r#"{"type":"set_report_interval","interval_ms":5000}"#
    );
    assert_eq!(
        serde_json::to_string(&CommandJson::from(&Command::RequestPosition)).unwrap(),
        r#"{"type":"request_position"}"#
    );
    assert_eq!(
        serde_json::to_string(&PositionJson::from_position(&typical_position())).unwrap(),
        r#"{"lat":52.3731,"lon":4.8922,"seq":1234,"time_ms":1795341600000,"speed_kmh":50.004,"heading_deg":90.0,"fix_valid":true,"ignition":true}"#
    );
}

#[test]
fn typical_position_size() {
    let p = typical_position();
    let postcard_len = encoded(&p).len();
    let json_len = serde_json::to_vec(&PositionJson::from_position(&p))
        .unwrap()
        .len();
    println!("typical position: postcard {postcard_len} bytes, JSON {json_len} bytes");
    assert!(
        postcard_len <= 24,
        "postcard encoding grew to {postcard_len} bytes"
    );
}

// ------------------------------------------------------------ format & kind

#[test]
fn json_and_postcard_are_told_apart_by_the_first_byte() {
    assert_eq!(
        Format::detect(&encoded(&typical_position())),
        Ok(Format::Postcard)
    );
    assert_eq!(Format::detect(br#"{"lat":1,"lon":2}"#), Ok(Format::Json));
    assert_eq!(Format::detect(b" \n\t{}"), Ok(Format::Json));
    assert_eq!(Format::detect(b""), Err(Error::Empty));
    assert_eq!(Format::detect(b"   "), Err(Error::Empty));
    // No tag of protocol versions 1..7 is `{` or white space (kind 0 is
    // never assigned: version 2's kind 0 would be 0x20, a space).
    for version in 1..7u8 {
        for kind in 1..16u8 {
            let tag = (version << 4) | kind;
            assert_ne!(tag, b'{');
            assert!(!tag.is_ascii_whitespace());
        }
    }
    assert_eq!(decode::<Position>(br#"{"lat":1}"#), Err(Error::WrongFormat));
}

#[test]
fn kinds_and_versions_are_checked() {
    let pos = encoded(&typical_position());
    assert_eq!(peek_kind(&pos), Ok(Kind::Position));
    assert_eq!(
        decode::<Status>(&pos),
        Err(Error::WrongKind {
            expected: Kind::Status,
            found: Kind::Position as u8
        })
    );
    let mut future = pos.clone();
    future[0] = 0x21;
    assert_eq!(decode::<Position>(&future), Err(Error::UnknownVersion(2)));
    let mut unknown_kind = pos.clone();
    unknown_kind[0] = 0x1f;
    assert_eq!(peek_kind(&unknown_kind), Err(Error::Malformed));
    let mut trailing = pos;
    trailing.push(0);
    assert_eq!(decode::<Position>(&trailing), Err(Error::TrailingBytes(1)));
}

// ---------------------------------------------------------------- JSON rules

#[test]
fn json_position_defaults_and_unit_conversion() {
    let p = decode_position_any(br#"{"lat":52.3731,"lon":4.8922}"#, 77).unwrap();
    assert_eq!(p.time_ms, 77, "missing time means now");
    assert_eq!(p.seq, 0);
    assert_eq!(p.flags, flags::FIX_VALID, "missing fix_valid means true");
    assert_eq!((p.lat_e6, p.lon_e6), (52_373_100, 4_892_200));

    let p = decode_position_any(
        br#"{"lat":0.0000005,"lon":-0.0000015,"speed_kmh":36,"heading_deg":-90,"fix_valid":false,"ignition":true,"odometer_m":5}"#,
        0,
    )
    .unwrap();
    assert_eq!(
        (p.lat_e6, p.lon_e6),
        (1, -2),
        "degrees round to the nearest 1e-6"
    );
    assert_eq!(p.speed_cm_s, 1000);
    assert_eq!(p.heading, 192, "-90° is west");
    assert_eq!(p.flags, flags::IGNITION);
    assert_eq!(p.odometer_m, Some(5));

    // Every speed the wire can carry prints tidily and converts back exactly.
    for cm_s in (0..=u16::MAX).step_by(7) {
        let p = Position {
            speed_cm_s: cm_s,
            ..typical_position()
        };
        let form = PositionJson::from_position(&p);
        let text = serde_json::to_string(&form).unwrap();
        assert!(!text.contains("999999"), "{text}");
        assert_eq!(form.to_position(0).map(|q| q.speed_cm_s), Ok(cm_s));
    }

    let fast = decode_position_any(br#"{"lat":0,"lon":0,"speed_kmh":1e9}"#, 0).unwrap();
    assert_eq!(fast.speed_cm_s, u16::MAX, "speed is clamped");
    let almost_north = decode_position_any(br#"{"lat":0,"lon":0,"heading_deg":359.9}"#, 0).unwrap();
    assert_eq!(almost_north.heading, 0);
}

#[test]
fn json_position_rejects_bad_values_and_unknown_fields() {
    let cases: &[(&[u8], Error)] = &[
        (br#"{"lat":90.5,"lon":0}"#, Error::OutOfRange("latitude")),
        (br#"{"lat":0,"lon":-181}"#, Error::OutOfRange("longitude")),
        (
            br#"{"lat":0,"lon":0,"speed_kmh":-1}"#,
            Error::OutOfRange("speed"),
        ),
        (br#"{"lat":0,"lon":0,"latitude":1}"#, Error::Malformed),
        (br#"{"lon":0}"#, Error::Malformed),
        (br#"{"lat":"52","lon":0}"#, Error::Malformed),
        (br#"{"lat":0,"lon":0"#, Error::Malformed),
        (br#"{"lat":NaN,"lon":0}"#, Error::Malformed),
    ];
    for (input, expected) in cases {
        assert_eq!(
            decode_position_any(input, 0),
            Err(*expected),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    // NaN cannot come from JSON text, but can from a caller building the struct.
    let nan = PositionJson {
        lat: f64::NAN,
        lon: 0.0,
        seq: None,
        time_ms: None,
        speed_kmh: Some(f64::NAN),
        heading_deg: None,
        fix_valid: None,
        ignition: None,
        odometer_m: None,
        replayed: None,
    };
    assert_eq!(nan.to_position(0), Err(Error::OutOfRange("latitude")));
    let nan_speed = PositionJson {
        lat: 0.0,
        ..nan.clone()
    };
    assert_eq!(nan_speed.to_position(0), Err(Error::OutOfRange("speed")));
    let inf_heading = PositionJson {
        lat: 0.0,
        speed_kmh: None,
        heading_deg: Some(f64::INFINITY),
        ..nan
    };
    assert_eq!(
        inf_heading.to_position(0),
        Err(Error::OutOfRange("heading"))
    );
}

#[test]
fn json_status_defaults_and_firmware() {
    let s = decode_status_any(b"{}", 42).unwrap();
    assert!(s.online, "missing online means true");
    assert_eq!(s.time_ms, 42);
    let s = decode_status_any(
        br#"{"online":false,"firmware":"1.2.300","supply_mv":12000}"#,
        0,
    )
    .unwrap();
    assert!(!s.online);
    assert_eq!(
        s.firmware,
        FirmwareVersion {
            major: 1,
            minor: 2,
            patch: 300
        }
    );
    for bad in [
        r#"{"firmware":"1.2"}"#,
        r#"{"firmware":"1.2.3.4"}"#,
        r#"{"firmware":"256.0.0"}"#,
    ] {
        assert_eq!(
            decode_status_any(bad.as_bytes(), 0),
            Err(Error::OutOfRange("firmware")),
            "{bad}"
        );
    }
    assert_eq!(
        decode_status_any(br#"{"onlin":true}"#, 0),
        Err(Error::Malformed)
    );
}

#[test]
fn json_commands() {
    assert_eq!(
        decode_command_any(br#"{"type":"set_report_interval","interval_ms":5000}"#),
        Ok(Command::SetReportInterval { interval_ms: 5000 })
    );
    assert_eq!(
        decode_command_any(br#"{"type":"request_position"}"#),
        Ok(Command::RequestPosition)
    );
    assert_eq!(
        decode_command_any(br#"{"type":"set_report_interval","interval_ms":0}"#),
        Err(Error::OutOfRange("interval_ms"))
    );
    let too_long = format!(
        r#"{{"type":"text","text":"{}"}}"#,
        "y".repeat(MAX_TEXT_LEN + 1)
    );
    assert_eq!(
        decode_command_any(too_long.as_bytes()),
        Err(Error::OutOfRange("text"))
    );
    assert_eq!(
        decode_command_any(br#"{"type":"reboot"}"#),
        Err(Error::Malformed)
    );
    assert_eq!(
        decode_command_any(br#"{"type":"request_position","extra":1}"#),
        Err(Error::Malformed)
    );
}

// ------------------------------------------------------------ hostile input

#[test]
fn every_truncation_is_an_error() {
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    payloads.extend(all_positions().iter().map(encoded));
    payloads.extend(all_statuses().iter().map(encoded));
    payloads.extend(all_commands().iter().map(encoded));
    for full in &payloads {
        for cut in 0..full.len() {
            let prefix = &full[..cut];
            let err = match peek_kind(full).unwrap() {
                Kind::Position => decode::<Position>(prefix).err(),
                Kind::Status => decode::<Status>(prefix).err(),
                Kind::Command => decode::<Command>(prefix).err(),
            };
            assert!(err.is_some(), "prefix {prefix:02x?} of {full:02x?} decoded");
        }
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a crate.
struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut acc = FrameAccumulator::<64>::new();
    for round in 0..20_000 {
        let len = (rng.next() % 48) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the time, start with a valid tag so the postcard decoder is exercised.
        if round % 2 == 0 && !bytes.is_empty() {
            bytes[0] = [0x11, 0x12, 0x13][round % 3];
        }
        let _ = decode::<Position>(&bytes);
        let _ = decode::<Status>(&bytes);
        let _ = decode::<Command>(&bytes);
        let _ = decode_position_any(&bytes, 0);
        let _ = decode_status_any(&bytes, 0);
        let _ = decode_command_any(&bytes);
        let mut window = bytes.as_slice();
        while !window.is_empty() {
            window = match acc.feed(window) {
                FeedResult::Consumed => break,
                FeedResult::Frame { payload, remaining } => {
                    let _ = decode::<Position>(payload);
                    remaining
                }
                FeedResult::Defect { remaining, .. } => remaining,
            };
        }
    }
    // Flipping any single byte of a valid payload never panics either.
    for full in all_positions().iter().map(encoded) {
        for i in 0..full.len() {
            for bit in 0..8 {
                let mut bent = full.clone();
                bent[i] ^= 1 << bit;
                let _ = decode::<Position>(&bent);
            }
        }
    }
}

// ------------------------------------------------------------------- framing

fn frame_of<M: WireMessage>(msg: &M) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = [0u8; MAX_ENCODED_LEN];
    write_frame(&mut out, msg, &mut scratch).unwrap();
    out
}

/// Feeds `chunks` in order and collects every decoded payload and defect.
fn feed_all<const N: usize>(
    acc: &mut FrameAccumulator<N>,
    chunks: &[&[u8]],
) -> (Vec<Vec<u8>>, Vec<FrameDefect>) {
    let mut frames = Vec::new();
    let mut defects = Vec::new();
    for chunk in chunks {
        let mut window = *chunk;
        while !window.is_empty() {
            window = match acc.feed(window) {
                FeedResult::Consumed => break,
                FeedResult::Frame { payload, remaining } => {
                    frames.push(payload.to_vec());
                    remaining
                }
                FeedResult::Defect { defect, remaining } => {
                    defects.push(defect);
                    remaining
                }
            };
        }
    }
    (frames, defects)
}

#[test]
fn golden_frame_of_request_position() {
    // payload 13 01 has no zero: one block of 2 data bytes → code 03.
    assert_eq!(
        frame_of(&Command::RequestPosition),
        [0x03, 0x13, 0x01, 0x00]
    );
    // payload 13 00 88 27: the zero splits it into blocks [13] and [88 27].
    assert_eq!(
        frame_of(&Command::SetReportInterval { interval_ms: 5000 }),
        [0x02, 0x13, 0x03, 0x88, 0x27, 0x00]
    );
}

#[test]
fn frames_contain_no_zero_before_the_delimiter() {
    for p in all_positions() {
        let frame = frame_of(&p);
        assert_eq!(frame.last(), Some(&0));
        assert!(!frame[..frame.len() - 1].contains(&0));
        assert!(frame.len() <= max_frame_len(encoded(&p).len()));
    }
}

#[test]
fn frames_survive_every_split_point() {
    let messages: Vec<Vec<u8>> = vec![
        frame_of(&typical_position()),
        frame_of(&all_statuses()[0]),
        frame_of(&all_commands()[4]),
    ];
    let stream: Vec<u8> = messages.concat();
    let expected: Vec<Vec<u8>> = vec![
        encoded(&typical_position()),
        encoded(&all_statuses()[0]),
        encoded(&all_commands()[4]),
    ];
    for split in 0..=stream.len() {
        let mut acc = FrameAccumulator::<{ MAX_ENCODED_LEN }>::new();
        let (frames, defects) = feed_all(&mut acc, &[&stream[..split], &stream[split..]]);
        assert_eq!(frames, expected, "split at {split}");
        assert!(defects.is_empty());
    }
    // Byte by byte, too.
    let mut acc = FrameAccumulator::<{ MAX_ENCODED_LEN }>::new();
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(feed_all(&mut acc, &chunks).0, expected);
    assert_eq!(decode::<Position>(&expected[0]), Ok(typical_position()));
}

#[test]
fn payloads_with_zeros_and_long_runs_round_trip() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0],
        vec![0, 0, 0],
        vec![1, 0],
        vec![0, 1],
        (1..=253).collect(),
        (1..=254).collect(),
        (0..=255).collect(),
        std::iter::repeat_n(0xAA, 600).collect(),
        std::iter::repeat_n(0xAA, 508).chain([0]).collect(),
    ];
    for payload in cases {
        let mut frame = Vec::new();
        write_payload_frame(&mut frame, &payload).unwrap();
        assert!(!frame[..frame.len() - 1].contains(&0));
        assert!(frame.len() <= max_frame_len(payload.len()));
        let mut acc = FrameAccumulator::<1024>::new();
        let (frames, defects) = feed_all(&mut acc, &[&frame]);
        assert_eq!(frames, vec![payload.clone()], "{} bytes", payload.len());
        assert!(defects.is_empty());
    }
}

#[test]
fn an_oversized_frame_is_reported_and_the_next_one_decodes() {
    let mut big = Vec::new();
    write_payload_frame(&mut big, &[0x55; 40]).unwrap();
    let good = frame_of(&Command::RequestPosition);
    let mut acc = FrameAccumulator::<16>::new();
    let (frames, defects) = feed_all(&mut acc, &[&big, &good]);
    assert_eq!(defects, vec![FrameDefect::Oversized { limit: 16 }]);
    assert_eq!(frames, vec![encoded(&Command::RequestPosition)]);
}

#[test]
fn line_noise_and_empty_frames_are_skipped() {
    let good = frame_of(&Command::RequestPosition);
    let mut acc = FrameAccumulator::<16>::new();
    // Leading delimiters, then a frame whose last block claims more bytes than it has.
    let noisy: &[u8] = &[0, 0, 0, 0x05, 0x41, 0x00];
    let (frames, defects) = feed_all(&mut acc, &[noisy, &good, &[0x01, 0x00]]);
    assert_eq!(defects, vec![FrameDefect::BadCobs]);
    assert_eq!(frames, vec![encoded(&Command::RequestPosition)]);
    // A long flood of zeros must not recurse or allocate.
    let zeros = vec![0u8; 1 << 20];
    assert_eq!(feed_all(&mut acc, &[&zeros]), (vec![], vec![]));
}
