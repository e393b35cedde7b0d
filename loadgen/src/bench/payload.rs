//! What a bench publisher sends and a subscriber reads back: the [`Stamp`]
//! (publisher, sequence, send time) inside a `bench` payload, a postcard
//! `Position`, or the gateway's dashboard JSON.
//!
//! In: a stamp (sending), a topic and payload (reading). Out: payload bytes
//! appended to a reused buffer; the stamp again, or `None` for anything
//! that is not ours. Bound: one payload of at most `max(payload_bytes,
//! MAX_ENCODED_LEN)` bytes; nothing kept.

use fleetgate_wire::{decode, encode, flags, Position, MAX_ENCODED_LEN};
use serde::Deserialize;

use super::config::PayloadKind;

/// send time (u64 ns) + publisher (u32) + sequence (u32).
pub const BENCH_HEADER: usize = 16;

/// One message as a subscriber reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: usize,
    pub seq: u32,
    /// Send time, ns since the Unix epoch.
    pub sent_ns: u64,
}

/// The `bench` payload: header then zeros up to `len`.
pub fn bench_payload(out: &mut Vec<u8>, len: usize, stamp: Stamp) {
    let start = out.len();
    out.extend_from_slice(&stamp.sent_ns.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(stamp.publisher)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.resize(start + len.max(BENCH_HEADER), 0);
}

/// The id a vehicle publisher `n` uses (`<prefix><n:05>`).
pub fn vehicle_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:05}")
}

/// Reads a stamp back from a payload: a `bench` header, a postcard
/// `Position` (vehicle from the topic `v/<id>/pos`) or the JSON a
/// dashboard topic carries (`vehicle_id`, `seq`, `time_ms`).
pub fn parse_stamp(kind: PayloadKind, prefix: &str, topic: &[u8], payload: &[u8]) -> Option<Stamp> {
    match kind {
        PayloadKind::Bench => {
            let header = payload.get(..BENCH_HEADER)?;
            Some(Stamp {
                sent_ns: u64::from_le_bytes(header[0..8].try_into().ok()?),
                publisher: u32::from_le_bytes(header[8..12].try_into().ok()?) as usize,
                seq: u32::from_le_bytes(header[12..16].try_into().ok()?),
            })
        }
        PayloadKind::Vehicle if payload.first() == Some(&b'{') => {
            #[derive(Deserialize)]
            struct Dashboard<'a> {
                #[serde(borrow)]
                vehicle_id: &'a str,
                seq: u32,
                time_ms: u64,
            }
            let json: Dashboard = serde_json::from_slice(payload).ok()?;
            Some(Stamp {
                publisher: vehicle_number(prefix, json.vehicle_id)?,
                seq: json.seq,
                sent_ns: json.time_ms.saturating_mul(1_000_000),
            })
        }
        PayloadKind::Vehicle => {
            let p: Position = decode(payload).ok()?;
            let topic = std::str::from_utf8(topic).ok()?;
            let id = topic.strip_prefix("v/")?.strip_suffix("/pos")?;
            Some(Stamp {
                publisher: vehicle_number(prefix, id)?,
                seq: p.seq,
                sent_ns: p.time_ms.saturating_mul(1_000_000),
            })
        }
    }
}

pub(super) fn vehicle_number(prefix: &str, id: &str) -> Option<usize> {
    id.strip_prefix(prefix)?.parse().ok()
}

/// Size of the postcard positions vehicle publishers send (for the report).
pub(super) const TYPICAL_POSITION_BYTES: usize = 22;

/// The instant that decides a message's step, computed alike by publisher
/// and subscriber from what the payload carries: a vehicle's `time_ms` is
/// whole milliseconds, so it counts at the end of its millisecond (it was
/// sent within it; steps in search mode are at least `STEP_GAP` apart).
pub(super) fn attribution_ns(kind: PayloadKind, sent_ns: u64) -> u64 {
    match kind {
        PayloadKind::Bench => sent_ns,
        PayloadKind::Vehicle => (sent_ns / 1_000_000)
            .saturating_mul(1_000_000)
            .saturating_add(999_999),
    }
}

/// A postcard position from vehicle `n`, fix time = now.
pub(super) fn vehicle_payload(out: &mut Vec<u8>, n: usize, stamp: Stamp) {
    let step = i32::try_from(stamp.seq % 1000).unwrap_or(0);
    let lane = i32::try_from(n % 1000).unwrap_or(0);
    let position = Position {
        seq: stamp.seq,
        time_ms: stamp.sent_ns / 1_000_000,
        // Central Amsterdam, a lane per vehicle, moving east.
        lat_e6: 52_360_000 + lane * 30,
        lon_e6: 4_880_000 + step * 20,
        speed_cm_s: 1_100,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    };
    let mut buf = [0u8; MAX_ENCODED_LEN];
    if let Ok(bytes) = encode(&position, &mut buf) {
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_payload_round_trips_and_pads() {
        let stamp = Stamp {
            publisher: 7,
            seq: 42,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut out = Vec::new();
        bench_payload(&mut out, 32, stamp);
        assert_eq!(out.len(), 32);
        assert_eq!(
            parse_stamp(PayloadKind::Bench, "x", b"bench/7", &out),
            Some(stamp)
        );
        assert_eq!(
            parse_stamp(PayloadKind::Bench, "x", b"bench/7", &out[..15]),
            None
        );
    }

    #[test]
    fn vehicle_payload_reads_back_from_postcard_topic_and_dashboard_json() {
        let stamp = Stamp {
            publisher: 123,
            seq: 9,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut out = Vec::new();
        vehicle_payload(&mut out, 123, stamp);
        let id = vehicle_id("bench-", 123);
        let topic = format!("v/{id}/pos");
        let back = parse_stamp(PayloadKind::Vehicle, "bench-", topic.as_bytes(), &out);
        assert_eq!(
            back,
            Some(Stamp {
                sent_ns: 1_700_000_000_123_000_000,
                ..stamp
            })
        );
        let json = format!(r#"{{"vehicle_id":"{id}","seq":9,"time_ms":1700000000123,"lat":52.3}}"#);
        let back = parse_stamp(
            PayloadKind::Vehicle,
            "bench-",
            b"fleet/x/position",
            json.as_bytes(),
        );
        assert_eq!(
            back,
            Some(Stamp {
                sent_ns: 1_700_000_000_123_000_000,
                ..stamp
            })
        );
        // Another fleet's vehicle is not ours.
        assert_eq!(
            parse_stamp(PayloadKind::Vehicle, "other-", topic.as_bytes(), &out),
            None
        );
    }
}
