//! The walking skeleton, as a person would drive it: the real
//! `mosquitto_pub` and `mosquitto_sub` against the in-process gateway.

use std::process::{Command, Stdio};

use crate::common::*;

fn mosquitto_pub(port: u16, topic: &str, message: MessageSource) {
    require_tool("mosquitto_pub");
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        topic,
        "-q",
        "1",
    ]);
    let status = match message {
        MessageSource::Text(m) => cmd.args(["-m", m]).status().expect("run mosquitto_pub"),
        MessageSource::Stdin(bytes) => {
            cmd.arg("-s").stdin(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn mosquitto_pub");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&bytes)
                .expect("pipe bytes");
            child.wait().expect("wait mosquitto_pub")
        }
    };
    assert!(status.success(), "mosquitto_pub failed: {status}");
}

enum MessageSource<'a> {
    Text(&'a str),
    Stdin(Vec<u8>),
}

/// `fleetgate encode position …`: the encoder CLI a person pipes into
/// `mosquitto_pub -s` (the gateway binary, which cargo builds for these tests).
fn encoder_cli(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .arg("encode")
        .args(args)
        .output()
        .expect("run the encoder CLI");
    assert!(
        out.status.success(),
        "encoder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn position_json(line: &str, topic: &str) -> serde_json::Value {
    let json = line
        .strip_prefix(topic)
        .map(str::trim)
        .unwrap_or_else(|| panic!("line does not start with {topic}: {line}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

/// `mosquitto_sub` on `filter`; once it has its SUBACK, `mosquitto_pub`
/// sends `message` to `topic`; returns the first line with `needle`.
async fn publish_and_watch(
    port: u16,
    filter: &'static str,
    topic: &'static str,
    message: MessageSource<'static>,
    needle: &'static str,
) -> String {
    tokio::task::spawn_blocking(move || {
        let sub = MosquittoSub::start_at_qos(port, filter, 1);
        sub.await_line("SUBACK");
        mosquitto_pub(port, topic, message);
        sub.await_line(needle)
    })
    .await
    .unwrap()
}

fn assert_near(json: &serde_json::Value, key: &str, expected: f64, tolerance: f64) {
    let got = json[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {json}"));
    assert!(
        (got - expected).abs() < tolerance,
        "{key} = {got}, expected {expected}: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postcard_position_from_the_encoder_cli_reaches_mosquitto_sub_as_json() {
    let gw = gateway().await;
    let bytes = encoder_cli(&[
        "position",
        "--lat",
        "52.3731",
        "--lon",
        "4.8922",
        "--seq",
        "42",
        "--speed-kmh",
        "36",
    ]);
    assert!(
        bytes.len() <= 24,
        "a typical position is at most 24 bytes, got {}",
        bytes.len()
    );
    let line = publish_and_watch(
        gw.mqtt_addr.port(),
        "fleet/#",
        "v/truck-7/pos",
        MessageSource::Stdin(bytes),
        "fleet/truck-7/position ",
    )
    .await;
    let json = position_json(&line, "fleet/truck-7/position");
    assert_eq!(json["vehicle_id"], "truck-7");
    assert_eq!(json["seq"], 42);
    assert_near(&json, "lat", 52.3731, 1e-6);
    assert_near(&json, "lon", 4.8922, 1e-6);
    assert_near(&json, "speed_kmh", 36.0, 0.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_position_from_mosquitto_pub_reaches_mosquitto_sub() {
    let gw = gateway().await;
    let line = publish_and_watch(
        gw.mqtt_addr.port(),
        "fleet/+/position",
        "v/truck-7/pos",
        MessageSource::Text(r#"{"lat":52.3731,"lon":4.8922}"#),
        "fleet/truck-7/position ",
    )
    .await;
    let json = position_json(&line, "fleet/truck-7/position");
    assert_near(&json, "lat", 52.3731, 1e-6);
    assert_near(&json, "lon", 4.8922, 1e-6);
    assert_eq!(json["fix_valid"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_device_payloads_stay_subscribable_under_v() {
    let gw = gateway().await;
    let line = publish_and_watch(
        gw.mqtt_addr.port(),
        "v/+/pos",
        "v/van-1/pos",
        MessageSource::Text(r#"{"lat":1.5,"lon":2.5}"#),
        "v/van-1/pos {",
    )
    .await;
    assert!(
        line.contains("\"lat\":1.5"),
        "mirrored as the device sent it: {line}"
    );
}
