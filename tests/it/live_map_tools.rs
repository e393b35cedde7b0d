//! The live map's tools in a real headless Chromium (`common::browser`):
//! it draws the geofences `GET /geofences` gives and follows their edits,
//! lists events as they happen (any kind, fences by name), marks dispatch
//! requests and the vehicles they reserve, lists the nearest vehicles to a
//! click, and looks a package up (its vehicle highlighted, where it goes).
//!
//! What is drawn is read from the canvas's pixels at points the page
//! projects (`window.fleetmap.toScreen`); lists from the page's DOM. Each
//! check fails on a page without the feature. Screenshots are left in
//! `$CARGO_TARGET_TMPDIR/live_map_tools/`.

use crate::common::*;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::{json, Value};

/// A point as (latitude, longitude) in degrees.
type Point = (f64, f64);

fn e6((lat, lon): Point) -> (i32, i32) {
    ((lat * 1e6).round() as i32, (lon * 1e6).round() as i32)
}

/// Publishes fix `seq` of `vid` at `at` on the vehicle's own connection.
async fn fix_at(device: &mut RawClient, vid: &str, seq: u32, at: Point) {
    let (lat, lon) = e6(at);
    device
        .send(Packet::Publish(Publish::new(
            format!("v/{vid}/pos"),
            QoS::AtMostOnce,
            position_at(seq, lat, lon),
        )))
        .await;
}

/// Vehicles connected for the whole test, each with a first fix.
async fn fleet(gw: &fleetgate::Gateway, vehicles: &[(&str, Point)]) -> Vec<RawClient> {
    let mut devices = Vec::new();
    for (vid, at) in vehicles {
        let mut device = RawClient::mqtt(gw.mqtt_addr, vid, 30).await;
        fix_at(&mut device, vid, 1, *at).await;
        devices.push(device);
    }
    await_metric(
        gw,
        "fleetgate_messages_decoded_total{kind=\"position\"}",
        vehicles.len() as u64,
    )
    .await;
    devices
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

async fn create_fence(gw: &fleetgate::Gateway, fence: Value) -> u64 {
    let (code, body) = http_post_json(gw.http_addr, "/geofences", &fence.to_string()).await;
    assert_eq!(code, 201, "{body}");
    json_of(&body)["id"].as_u64().unwrap()
}

/// The page's lists, and how blue the canvas is at each of `POINTS` (the
/// mean of blue minus red over 5×5 pixels: the background is 10, under a
/// fence's fill about 33). `null` until the page has a view.
const PAGE_STATE: &str = r##"(() => {
  if (!window.fleetmap || !fleetmap.toScreen(0, 0)) return null;
  const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
  const c = document.getElementById("map"), rect = c.getBoundingClientRect();
  const dpr = c.width / c.clientWidth, ctx = c.getContext("2d");
  const tint = ([lat, lon]) => {
    const [x, y] = fleetmap.toScreen(lat, lon);
    const d = ctx.getImageData(Math.round((x - rect.left) * dpr) - 2, Math.round((y - rect.top) * dpr) - 2, 5, 5).data;
    let s = 0;
    for (let i = 0; i < d.length; i += 4) s += d[i + 2] - d[i];
    return Math.round(s / 25);
  };
  const pkg = document.getElementById("package");
  return {
    vehicles: all("tr[data-vehicle]", tr => tr.dataset.vehicle),
    fences: all("#fences li[data-fence]", li => li.dataset.name),
    events: all("#events div[data-kind]", d => ({ kind: d.dataset.kind, vehicle: d.dataset.vehicle || null, text: d.textContent })),
    nearest: all("#nearest li[data-vehicle]", li => ({ id: li.dataset.vehicle, m: +li.dataset.distance })),
    requests: all("#requests li[data-request]", li => ({ id: +li.dataset.request, state: li.dataset.state, vehicle: li.dataset.vehicle || null })),
    reserved: all("tr[data-reserved]", tr => tr.dataset.vehicle),
    carrying: all("tr.package", tr => tr.dataset.vehicle),
    package: { vehicle: pkg.dataset.vehicle || null, to: pkg.dataset.to || null, text: pkg.textContent },
    tints: POINTS.map(tint),
    errors: fleetmap.errors,
  };
})()"##;

fn page_state(points: &[Point]) -> String {
    let points: Vec<[f64; 2]> = points.iter().map(|&(lat, lon)| [lat, lon]).collect();
    PAGE_STATE.replace("POINTS", &json!(points).to_string())
}

/// Inside a fence's fill, by [`PAGE_STATE`]'s tint; outside is below 20.
const FENCE_TINT: i64 = 26;

fn tint(s: &Value, i: usize) -> i64 {
    s["tints"][i].as_i64().unwrap_or(0)
}

fn names(s: &Value, key: &str) -> Vec<String> {
    s[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn has_event(s: &Value, kind: &str, vehicle: &str, text: &str) -> bool {
    s["events"].as_array().is_some_and(|events| {
        events.iter().any(|e| {
            e["kind"] == kind
                && e["vehicle"] == vehicle
                && e["text"].as_str().is_some_and(|t| t.contains(text))
        })
    })
}

/// Clicks the map at `at`, where the page projects it.
async fn click_on_map(browser: &mut Browser, session: &str, (lat, lon): Point) {
    let xy = browser
        .eval(session, &format!("fleetmap.toScreen({lat}, {lon})"))
        .await;
    let (x, y) = (xy[0].as_f64().unwrap(), xy[1].as_f64().unwrap());
    browser.click(session, x, y).await;
}

/// Types `id` into the package field and clicks its button, as a person does.
async fn look_up(browser: &mut Browser, session: &str, id: &str) {
    browser
        .eval(
            session,
            r#"(() => { const i = document.getElementById("package-id"); i.value = ""; i.focus(); })()"#,
        )
        .await;
    browser.type_text(session, id).await;
    let xy = browser
        .eval(
            session,
            r#"(() => { const r = document.getElementById("package-find").getBoundingClientRect();
               return [r.left + r.width / 2, r.top + r.height / 2]; })()"#,
        )
        .await;
    browser
        .click(session, xy[0].as_f64().unwrap(), xy[1].as_f64().unwrap())
        .await;
}

const DAM: Point = (52.3731, 4.8922);
/// Rokin's block, `[lon, lat]` corners (GeoJSON order).
const ROKIN: [[f64; 2]; 4] = [
    [4.889, 52.366],
    [4.895, 52.366],
    [4.895, 52.369],
    [4.889, 52.369],
];
const CENTRAAL: Point = (52.3790, 4.9000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_draws_the_fences_follows_their_edits_and_lists_events_as_they_happen() {
    let gw = gateway().await;
    let dam = create_fence(
        &gw,
        json!({ "name": "Dam", "circle": { "lat": DAM.0, "lon": DAM.1, "radius_m": 200 } }),
    )
    .await;
    let rokin = create_fence(&gw, json!({ "name": "Rokin block", "polygon": ROKIN })).await;
    // Both vans outside every fence; truck-1 111 m north of where Centraal will be.
    let truck_1: Point = (52.3800, 4.9000);
    let truck_2: Point = (52.3600, 4.8850);
    let mut devices = fleet(&gw, &[("truck-1", truck_1), ("truck-2", truck_2)]).await;

    // Probes: inside Dam (100 m south of its centre, clear of its label),
    // inside Rokin's block (by its south-west corner), inside Centraal (80 m
    // south of its centre), and a point outside every fence.
    let probes = [
        (DAM.0 - 0.0009, DAM.1),
        (52.3665, 4.8895),
        (CENTRAAL.0 - 0.00072, CENTRAAL.1),
        (52.3770, 4.8860),
    ];
    let state = page_state(&probes);
    let tmp = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(tmp.path()).await;
    let session = browser.open(&format!("http://{}/", gw.http_addr)).await;

    let s = browser
        .await_page(&session, &state, "both fences drawn and listed", |s| {
            names(s, "fences") == ["Dam", "Rokin block"]
                && tint(s, 0) >= FENCE_TINT
                && tint(s, 1) >= FENCE_TINT
        })
        .await;
    assert!(
        tint(&s, 2) < 20 && tint(&s, 3) < 20,
        "no fill where there is no fence: {s:#}"
    );

    // A fence created now, around truck-1: its enter event names it, and
    // the page draws it without a reload.
    let centraal = create_fence(
        &gw,
        json!({ "name": "Centraal", "circle": { "lat": CENTRAAL.0, "lon": CENTRAAL.1, "radius_m": 150 } }),
    )
    .await;
    browser
        .await_page(
            &session,
            &state,
            "the new fence, and truck-1 entering it",
            |s| {
                names(s, "fences").contains(&"Centraal".to_owned())
                    && tint(s, 2) >= FENCE_TINT
                    && has_event(s, "geofence_enter", "truck-1", "Centraal")
            },
        )
        .await;

    // A fence deleted (no vehicle inside, so no event): it goes from the
    // map within the page's poll.
    let (code, body) =
        http_request(gw.http_addr, "DELETE", &format!("/geofences/{rokin}"), None).await;
    assert_eq!(code, 204, "{body}");
    browser
        .await_page(&session, &state, "the deleted fence gone", |s| {
            names(s, "fences") == ["Dam", "Centraal"] && tint(s, 1) < 20
        })
        .await;

    // truck-2 drives into the Dam and out again: one line each, as they happen.
    let device = &mut devices[1];
    fix_at(device, "truck-2", 2, (DAM.0 - 0.0005, DAM.1)).await;
    browser
        .await_page(&session, &state, "truck-2 entering the Dam", |s| {
            has_event(s, "geofence_enter", "truck-2", "Dam")
        })
        .await;
    fix_at(device, "truck-2", 3, truck_2).await;
    let s = browser
        .await_page(&session, &state, "truck-2 leaving the Dam", |s| {
            has_event(s, "geofence_exit", "truck-2", "Dam")
        })
        .await;
    assert_eq!(
        s["events"][0]["kind"], "geofence_exit",
        "the newest event first: {s:#}"
    );

    // Any other kind is listed too, by its fields (the page knows no
    // `overspeed`: other helpers add kinds to the feed).
    browser
        .eval(
            &session,
            &format!(
                r#"eventArrived({{ type: "overspeed", vehicle_id: "truck-2", time_ms: Date.now(),
                   speed_kmh: 71.26, limit_kmh: 50, fence: {dam} }})"#
            ),
        )
        .await;
    let s = browser
        .await_page(&session, &state, "an overspeed line", |s| {
            has_event(
                s,
                "overspeed",
                "truck-2",
                "speed_kmh 71.3, limit_kmh 50, Dam",
            )
        })
        .await;

    assert_eq!(s["errors"], json!([]), "the page had errors");
    let path = browser
        .screenshot(&session, "live_map_tools", "fences")
        .await;
    eprintln!(
        "fences {:?} (Centraal is {centraal}), {} events listed; screenshot at {}",
        names(&s, "fences"),
        s["events"].as_array().map_or(0, Vec::len),
        path.display()
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_lists_the_nearest_free_vehicles_and_a_package_lookup_shows_its_vehicle() {
    let gw = gateway().await;
    create_fence(
        &gw,
        json!({ "name": "Centraal", "circle": { "lat": CENTRAAL.0, "lon": CENTRAAL.1, "radius_m": 150 } }),
    )
    .await;
    // truck-2 is ~500 m east of truck-1, truck-3 2 km south.
    let truck_2: Point = (DAM.0, 4.8996);
    let truck_3: Point = (52.3551, DAM.1);
    let _devices = fleet(
        &gw,
        &[("truck-1", DAM), ("truck-2", truck_2), ("truck-3", truck_3)],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(tmp.path()).await;
    let url = format!("http://{}/", gw.http_addr);
    let session = browser.open(&url).await;
    let state = page_state(&[]);
    browser
        .await_page(&session, &state, "three vehicles and the fence", |s| {
            names(s, "vehicles").len() == 3 && names(s, "fences") == ["Centraal"]
        })
        .await;

    // A click ~115 m west of truck-1 lists all three, nearest first.
    let click: Point = (DAM.0, 4.8905);
    click_on_map(&mut browser, &session, click).await;
    let s = browser
        .await_page(&session, &state, "the nearest three", |s| {
            s["nearest"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    let nearest: Vec<(String, f64)> = s["nearest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["m"].as_f64().unwrap(),
            )
        })
        .collect();
    let order: Vec<&str> = nearest.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(order, ["truck-1", "truck-2", "truck-3"], "{s:#}");
    assert!(
        (70.0..160.0).contains(&nearest[0].1),
        "truck-1 is ~115 m from the click: {nearest:?}"
    );
    assert!(
        nearest.windows(2).all(|w| w[0].1 <= w[1].1),
        "nearest first: {nearest:?}"
    );

    // A dispatch request by truck-3 reserves it: the map marks both, and
    // the next click leaves the reserved vehicle out.
    let body = json!({ "lat": truck_3.0, "lng": truck_3.1 }).to_string();
    let (code, answer) = http_post_json(gw.http_addr, "/v2/search", &body).await;
    assert_eq!(code, 200, "{answer}");
    let request = json_of(&answer)["request_id"].as_u64().unwrap();
    let assigned = json!([{ "id": request, "state": "assigned", "vehicle": "truck-3" }]);
    browser
        .await_page(
            &session,
            &state,
            "the request and its reserved vehicle",
            |s| s["requests"] == assigned && names(s, "reserved") == ["truck-3"],
        )
        .await;
    click_on_map(&mut browser, &session, click).await;
    browser
        .await_page(&session, &state, "the nearest free two", |s| {
            s["nearest"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && n.iter().all(|v| v["id"] != "truck-3"))
        })
        .await;

    // A package on truck-2, going to Centraal: typed in, looked up.
    let package =
        json!({ "id": "pkg-42", "from": "Depot", "to": "Centraal", "vehicleId": "truck-2" });
    let (code, body) = http_post_json(gw.http_addr, "/packages", &package.to_string()).await;
    assert_eq!(code, 201, "{body}");
    look_up(&mut browser, &session, "pkg-42").await;
    let s = browser
        .await_page(&session, &state, "pkg-42 on truck-2, to Centraal", |s| {
            s["package"]["vehicle"] == "truck-2"
                && s["package"]["to"] == "Centraal"
                && names(s, "carrying") == ["truck-2"]
        })
        .await;
    assert!(
        s["package"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Depot") && t.contains("in transit on truck-2")),
        "{s:#}"
    );
    // On the canvas: the package's colour (`PAINT.pkg`) rings truck-2.
    let ring = format!(
        r#"(() => {{
      const [x, y] = fleetmap.toScreen({}, {});
      const c = document.getElementById("map"), rect = c.getBoundingClientRect(), dpr = c.width / c.clientWidth;
      const d = c.getContext("2d").getImageData(Math.round((x - rect.left) * dpr) - 20, Math.round((y - rect.top) * dpr) - 20, 40, 40).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] === 0xff && d[i + 1] === 0xd1 && d[i + 2] === 0x66) n++;
      return n;
    }})()"#,
        truck_2.0, truck_2.1
    );
    browser
        .await_page(
            &session,
            &ring,
            "truck-2 ringed in the package's colour",
            |n| n.as_u64().unwrap_or(0) >= 30,
        )
        .await;

    // The package moves to truck-1: the open lookup follows it.
    let (code, body) = http_post_json(
        gw.http_addr,
        "/packages/pkg-42/move",
        r#"{"vehicleId":"truck-1"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    browser
        .await_page(&session, &state, "pkg-42 now on truck-1", |s| {
            s["package"]["vehicle"] == "truck-1" && names(s, "carrying") == ["truck-1"]
        })
        .await;
    let path = browser
        .screenshot(&session, "live_map_tools", "tools")
        .await;

    // An unknown package: the gateway's answer, said.
    look_up(&mut browser, &session, "nope").await;
    browser
        .await_page(&session, &state, "the unknown package refused", |s| {
            s["package"]["vehicle"].is_null()
                && s["package"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("unknown package"))
        })
        .await;

    // A page opened now learns of the request from the feed's snapshot.
    // (Last: the first page, in the background from now on, gets no
    // animation frames, so its canvas would stand still.)
    let second = browser.open(&url).await;
    browser
        .await_page(&second, &state, "the open request, on a new page", |s| {
            s["requests"] == assigned && names(s, "reserved") == ["truck-3"]
        })
        .await;
    for page in [&session, &second] {
        let errors = browser.eval(page, "fleetmap.errors").await;
        assert_eq!(errors, json!([]), "the page had errors");
    }
    eprintln!("nearest {nearest:?}; screenshot at {}", path.display());
    browser.close().await;
}
