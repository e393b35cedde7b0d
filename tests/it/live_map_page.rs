//! The live map page (`GET /`) in a real browser: Debian's headless
//! Chromium loads it from an in-process gateway, the page opens `/ws`, and
//! the vehicles the gateway knows show up in its table, its counters and as
//! dots on its canvas; a vehicle that appears later arrives live. A
//! screenshot is left in `$CARGO_TARGET_TMPDIR/live_map_page/map.png` for
//! people to look at.
//!
//! Chromium is driven as `common::browser` says, and required, never
//! stubbed. The map's fences, events, requests, nearest list and package
//! lookup are tested in `live_map_tools`.

use crate::common::*;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;

/// Three vans in central Amsterdam, far enough apart to be told apart on the map.
const VEHICLES: [(&str, i32, i32); 3] = [
    ("truck-101", 52_373_100, 4_892_200),
    ("truck-102", 52_360_000, 4_885_000),
    ("truck-103", 52_380_000, 4_910_000),
];
/// Joins after the page has loaded: it can only arrive through a live frame.
const LATE: (&str, i32, i32) = ("truck-104", 52_366_000, 4_900_000);

/// The page's canvas colour for an online vehicle (`canvasColors.online`).
const ONLINE_RGB: [u8; 3] = [0x3d, 0xdc, 0x84];

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
    let mut browser = Browser::launch(tmp.path()).await;
    let session = browser.open(&format!("http://{}/", gw.http_addr)).await;
    let page_state = PAGE_STATE.replace("RGB", &format!("{ONLINE_RGB:?}"));

    // The snapshot: three vehicles in the table and on the canvas.
    let state = browser
        .await_page(&session, &page_state, "the three vehicles", |s| {
            s["count"] == "3"
                && s["rows"].as_array().is_some_and(|r| r.len() == 3)
                && s["blobs"].as_array().is_some_and(|b| b.len() == 3)
        })
        .await;
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
    let state = browser
        .await_page(&session, &page_state, "the late vehicle", |s| {
            s["count"] == "4" && s["blobs"].as_array().is_some_and(|b| b.len() == 4)
        })
        .await;
    assert!(
        state["frames"].as_u64().unwrap_or(0) >= 2,
        "snapshot plus a live frame: {state:#}"
    );

    // A screenshot, for people (and CI artifacts) to look at.
    let path = browser.screenshot(&session, "live_map_page", "map").await;
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
