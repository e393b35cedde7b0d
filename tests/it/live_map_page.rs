//! The live map page (`GET /`) in a real browser: Debian's headless
//! Chromium loads it from an in-process gateway, the page opens `/ws`, and
//! the vehicles the gateway knows show up in its table, its counters and as
//! dots on its canvas; a vehicle that appears later arrives live. A
//! screenshot is left in `$CARGO_TARGET_TMPDIR/live_map_page/map.png` for
//! people to look at.
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-separated JSON on fds 3 and 4), in real
//! time. `--virtual-time-budget` with `--dump-dom` is not enough: it lets
//! the page's WebSocket deliver the snapshot frame, but virtual time runs
//! ahead of the socket, so later frames never arrive before the dump.
//!
//! Chromium is required, never stubbed: without it this test fails and says
//! to run `bash scripts/test.sh`, which installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

/// Three vans in central Amsterdam, far enough apart to be told apart on the map.
const VEHICLES: [(&str, i32, i32); 3] = [
    ("truck-101", 52_373_100, 4_892_200),
    ("truck-102", 52_360_000, 4_885_000),
    ("truck-103", 52_380_000, 4_910_000),
];
/// Joins after the page has loaded: it can only arrive through a live frame.
const LATE: (&str, i32, i32) = ("truck-104", 52_366_000, 4_900_000);

/// The longest one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The page's canvas colour for an online vehicle (`canvasColors.online`).
const ONLINE_RGB: [u8; 3] = [0x3d, 0xdc, 0x84];

/// The browser to use: `FLEETGATE_TEST_CHROMIUM` (set by scripts/test.sh),
/// else /usr/bin/chromium. Panics, saying what to do, when there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("FLEETGATE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium not found at {} (FLEETGATE_TEST_CHROMIUM unset or wrong): this test needs a \
         real headless browser. Run `bash scripts/test.sh`, which installs Debian's `chromium` \
         and sets FLEETGATE_TEST_CHROMIUM.",
        path.display()
    );
    path
}

/// A headless Chromium driven over `--remote-debugging-pipe`.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    log: PathBuf,
}

impl Browser {
    async fn launch(browser: &Path, dir: &Path) -> Browser {
        let log = dir.join("chromium.log");
        // The pipe is fds 3 (commands in) and 4 (answers out): the shell maps
        // our stdin and stdout there, and Chromium's own stdout to its log.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 1>&2"#)
            .arg(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            to,
            from,
            next_id: 0,
            log,
        }
    }

    /// Sends one DevTools command (to a page when `session` is given) and
    /// returns its result, skipping the events that arrive meanwhile.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            self.to.write_all(&bytes).await?;
            self.to.flush().await?;
            loop {
                let mut buf = Vec::new();
                if self.from.read_until(0, &mut buf).await? == 0 {
                    return Err(std::io::Error::other("chromium closed the DevTools pipe"));
                }
                buf.pop();
                let v: Value = serde_json::from_slice(&buf).map_err(std::io::Error::other)?;
                if v["id"] == json!(id) {
                    return Ok(v);
                }
            }
        })
        .await;
        let answer = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("DevTools {method}: {e}; chromium log:\n{}", self.log_tail()),
            Err(_) => panic!(
                "DevTools {method}: no answer within {CALL_TIMEOUT:?}; chromium log:\n{}",
                self.log_tail()
            ),
        };
        assert!(
            answer.get("error").is_none(),
            "DevTools {method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value (by value).
    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "page threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call(None, "Browser.close", json!({})),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// What the page shows: counters, the table's rows, and the canvas's
/// online-coloured blobs (dots with their heading lines), found by
/// flood-filling pixels of exactly that colour. `null` until the page loaded.
const PAGE_STATE: &str = r#"(() => {
  if (!document.getElementById("map") || !document.getElementById("vehicle-count")) return null;
  const text = id => document.getElementById(id).textContent;
  const rows = [...document.querySelectorAll("tr[data-vehicle]")]
    .map(tr => ({ id: tr.dataset.vehicle, text: tr.textContent }));
  const c = document.getElementById("map");
  const w = c.width, h = c.height;
  const d = c.getContext("2d").getImageData(0, 0, w, h).data;
  const [r, g, b] = RGB;
  const on = new Uint8Array(w * h);
  let pixels = 0;
  for (let i = 0; i < w * h; i++) {
    if (d[4 * i] === r && d[4 * i + 1] === g && d[4 * i + 2] === b) { on[i] = 1; pixels++; }
  }
  const blobs = [];
  for (let i = 0; i < w * h; i++) {
    if (on[i] !== 1) continue;
    let n = 0, sx = 0, sy = 0;
    const stack = [i];
    on[i] = 2;
    while (stack.length) {
      const j = stack.pop(), x = j % w, y = (j - x) / w;
      n++; sx += x; sy += y;
      for (const k of [x > 0 ? j - 1 : -1, x < w - 1 ? j + 1 : -1, y > 0 ? j - w : -1, y < h - 1 ? j + w : -1]) {
        if (k >= 0 && on[k] === 1) { on[k] = 2; stack.push(k); }
      }
    }
    if (n >= 20) blobs.push({ n, x: Math.round(sx / n), y: Math.round(sy / n) });
  }
  return { count: text("vehicle-count"), online: text("online-count"), frames: +text("frame-count"),
           conn: text("conn"), rows, pixels, blobs, width: w, height: h };
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_map_page_shows_the_fleet_in_headless_chromium() {
    let chromium = chromium();
    let gw = gateway().await;

    // Three vehicles, each with one position, connected for the whole test.
    let mut devices = Vec::new();
    for (seq, (id, lat, lon)) in VEHICLES.iter().enumerate() {
        let mut device = RawClient::mqtt(gw.mqtt_addr, id, 30).await;
        device
            .send(Packet::Publish(Publish::new(
                format!("v/{id}/pos"),
                QoS::AtMostOnce,
                position_at(seq as u32 + 1, *lat, *lon),
            )))
            .await;
        devices.push(device);
    }
    await_metric(
        &gw,
        "fleetgate_messages_decoded_total{kind=\"position\"}",
        VEHICLES.len() as u64,
    )
    .await;

    let tmp = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(&chromium, tmp.path()).await;
    let target = browser
        .call(
            None,
            "Target.createTarget",
            json!({ "url": format!("http://{}/", gw.http_addr) }),
        )
        .await;
    let attached = browser
        .call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let page_state = PAGE_STATE.replace("RGB", &format!("{ONLINE_RGB:?}"));

    // Polls the page until `done` holds for its state; fails after DEADLINE.
    macro_rules! await_page {
        ($what:expr, |$s:ident| $done:expr) => {{
            let deadline = Instant::now() + DEADLINE;
            loop {
                let $s: Value = browser.eval(&session, &page_state).await;
                if $done {
                    break $s;
                }
                assert!(
                    Instant::now() < deadline,
                    "the page never showed {}; it shows {:#}",
                    $what,
                    $s
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }};
    }

    // The snapshot: three vehicles in the table and on the canvas.
    let state = await_page!("the three vehicles", |s| s["count"] == "3"
        && s["rows"].as_array().is_some_and(|r| r.len() == 3)
        && s["blobs"].as_array().is_some_and(|b| b.len() == 3));
    for (id, lat, lon) in VEHICLES {
        let row = state["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no row for {id}: {state:#}"));
        let text = row["text"].as_str().unwrap();
        let coords = format!("{:.5}, {:.5}", lat as f64 / 1e6, lon as f64 / 1e6);
        assert!(text.contains(&coords), "row of {id} lacks {coords}: {text}");
        assert!(
            text.contains("50 km/h"),
            "row of {id} lacks its speed: {text}"
        );
    }
    assert_eq!(state["online"], "3", "all three are online: {state:#}");
    assert_eq!(state["conn"], "live", "the page says its feed is live");
    // The dots sit where the vehicles are: north is up, east is right.
    let blobs = state["blobs"].as_array().unwrap();
    let at = |i: usize| {
        (
            blobs[i]["x"].as_i64().unwrap(),
            blobs[i]["y"].as_i64().unwrap(),
        )
    };
    let mut by_y: Vec<(i64, i64)> = (0..3).map(at).collect();
    by_y.sort_by_key(|&(_, y)| y);
    // truck-103 is the northernmost and easternmost, truck-102 the southernmost and westernmost.
    assert!(
        by_y[0].0 > by_y[2].0,
        "the northern dot should be east of the southern one: {by_y:?}"
    );

    // A vehicle that joins now reaches the open page through a live frame.
    let (id, lat, lon) = LATE;
    let mut late = RawClient::mqtt(gw.mqtt_addr, id, 30).await;
    late.send(Packet::Publish(Publish::new(
        format!("v/{id}/pos"),
        QoS::AtMostOnce,
        position_at(1, lat, lon),
    )))
    .await;
    devices.push(late);
    let state = await_page!("the late vehicle", |s| s["count"] == "4"
        && s["blobs"].as_array().is_some_and(|b| b.len() == 4));
    assert!(
        state["frames"].as_u64().unwrap_or(0) >= 2,
        "snapshot plus a live frame: {state:#}"
    );

    // A screenshot, for people (and CI artifacts) to look at.
    let shot = browser
        .call(
            Some(&session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live_map_page");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("map.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!(
        "live map shows {} vehicles as {} canvas dots after {} frames; screenshot at {}",
        state["count"],
        state["blobs"].as_array().map_or(0, Vec::len),
        state["frames"],
        path.display()
    );

    browser.close().await;
    assert!(metric(&gw, "fleetgate_ws_frames_sent_total").await >= 2);
}

/// Standard base64 (DevTools sends screenshots so).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
