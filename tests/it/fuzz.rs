//! Fuzz targets that run on stable Rust, in CI, for a bounded number of
//! cases: proptest mutates the seed corpus kept in `tests/fuzz-corpus/<target>/`
//! (bit flips, overwritten, inserted and deleted bytes, truncation, splices
//! of two seeds) and each target asserts what must hold for any input.
//!
//! - `mqtt`: raw bytes on a fresh connection to a running gateway (the
//!   edge's framing, CONNECT checks, the vehicle session and the hand-off's
//!   state machine); the gateway must close or answer, never hang or fall
//!   over, and a well-behaved client must still be served afterwards.
//! - `wire`: the device payload decoders (postcard and JSON, positions,
//!   statuses, commands) and the COBS frame accumulator.
//! - `config`, `passwd`, `acl`: the parsers of the files an operator writes;
//!   whatever they accept must round-trip or answer questions without panic.
//!
//! Cases per target: `FLEETGATE_FUZZ_CASES` (default 200; `.ci/run` runs a
//! longer pass). A failure prints the shrunk input; add it to the corpus
//! once fixed, so it is tried first from then on.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn cases() -> u32 {
    std::env::var("FLEETGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        // Failures are shrunk and printed; the corpus is where they stay.
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// The seeds of one target, in name order.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(s, i)| Mutation::Splice(s, i)),
    ]
}

/// A seed, mutated a few times; sometimes the seed as it is.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (0..n, proptest::collection::vec(mutation(), 0..6)).prop_map(move |(pick, ops)| {
        let mut input = seeds[pick].clone();
        for op in ops {
            let len = input.len().max(1);
            match op {
                Mutation::FlipBit(i, b) if !input.is_empty() => input[i % len] ^= 1 << b,
                Mutation::Set(i, v) if !input.is_empty() => input[i % len] = v,
                Mutation::Insert(i, bytes) => {
                    let at = i % (input.len() + 1);
                    input.splice(at..at, bytes);
                }
                Mutation::Delete(i, count) if !input.is_empty() => {
                    let at = i % len;
                    let end = (at + count).min(input.len());
                    input.drain(at..end);
                }
                Mutation::Truncate(i) => input.truncate(i % (input.len() + 1)),
                Mutation::Splice(s, i) => {
                    let other = &seeds[s % n];
                    let at = i % (input.len() + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[(i % (other.len() + 1))..]);
                }
                _ => {}
            }
        }
        input
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn wire_decoders_take_any_bytes() {
    runner()
        .run(&mutated(corpus("wire")), |input| {
            let now = 1_700_000_000_000;
            // Decoding and validating are separate steps, as in ingest.
            if let Ok(p) = fleetgate_wire::json::decode_position_any(&input, now) {
                let _ = p.validate();
            }
            let _ = fleetgate_wire::json::decode_status_any(&input, now);
            let _ = fleetgate_wire::json::decode_command_any(&input);
            let mut frames = fleetgate_wire::frame::FrameAccumulator::<64>::new();
            let mut rest: &[u8] = &input;
            loop {
                rest = match frames.feed(rest) {
                    fleetgate_wire::frame::FeedResult::Consumed => break,
                    fleetgate_wire::frame::FeedResult::Frame { payload, remaining } => {
                        let _ = fleetgate_wire::json::decode_position_any(payload, now);
                        remaining
                    }
                    fleetgate_wire::frame::FeedResult::Defect { remaining, .. } => remaining,
                };
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_config_parser_takes_any_text() {
    runner()
        .run(&mutated(corpus("config")), |input| {
            if let Ok(config) = fleetgate::Config::from_toml(&text(&input), "fuzz.toml".as_ref()) {
                let _ = config.validate();
                let _ = config.memory_budget().total();
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_password_file_parser_takes_any_text_and_round_trips_what_it_accepts() {
    use fleetgate::auth::passwd::PasswordFile;
    runner()
        .run(&mutated(corpus("passwd")), |input| {
            if let Ok(file) = PasswordFile::parse(&text(&input)) {
                let again = PasswordFile::parse(&file.render());
                prop_assert!(again.is_ok(), "rendered file does not parse: {again:?}");
                let again = again.unwrap();
                prop_assert_eq!(again.len(), file.len());
                for (name, entry) in file.iter() {
                    prop_assert_eq!(again.get(name), Some(entry));
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_acl_parser_takes_any_text_and_answers_any_question() {
    use fleetgate::auth::{Acl, Asker, Want};
    runner()
        .run(&mutated(corpus("acl")), |input| {
            if let Ok(acl) = Acl::parse(&text(&input)) {
                for username in [None, Some("alice"), Some("+")] {
                    let who = Asker {
                        username,
                        client_id: "#",
                    };
                    for topic in ["sensors/a", "v/alice/cmd", "$SYS/x", "a//b", ""] {
                        let _ = acl.allows(&who, topic, Want::Read);
                        let _ = acl.allows(&who, topic, Want::Write);
                    }
                    for filter in ["#", "+/+", "sensors/#", "v/+/cmd"] {
                        let _ = acl.allows_subscribe(&who, filter);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// What the edge does with arbitrary bytes from a client: every case is a
/// fresh connection that sends the bytes and then ends its half (EOF), and
/// the gateway must close the connection in time whatever it answered. After
/// all cases, a well-behaved client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_takes_any_bytes_from_a_client_and_keeps_serving() {
    let mut config = test_config();
    config.mqtt.connect_timeout_ms = 2_000;
    let gw = gateway_with(config).await;
    let addr = gw.mqtt_addr;
    let mut inputs = Vec::new();
    let mut runner = runner();
    let strategy = mutated(corpus("mqtt"));
    for _ in 0..cases() {
        let tree = strategy.new_tree(&mut runner).unwrap();
        inputs.push(proptest::strategy::ValueTree::current(&tree));
    }
    for input in inputs {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The gateway may close before it has read everything: fine.
        let _ = stream.write_all(&input).await;
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "the edge kept a connection open after the client's EOF; input {input:02x?}"
        );
    }
    let accepted = gw
        .metrics
        .connections_accepted_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        accepted >= u64::from(cases()),
        "{accepted} connections for {} cases",
        cases()
    );
    // Still serving: a device's publish reaches a dashboard.
    let port = gw.mqtt_addr.port();
    let sub = MosquittoSub::start(port, "fleet/fuzz-after/position");
    let sub = tokio::task::spawn_blocking(move || {
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    drive(addr, "fuzz-after", 1..=1).await;
    let line = tokio::task::spawn_blocking(move || sub.await_line("fleet/fuzz-after/position {"))
        .await
        .unwrap();
    assert!(line.contains("\"seq\":1"), "{line}");
}
