//! One HTTP API: every route, old and new, follows the same rules. The
//! routes are taken from the gateway's own `/openapi.json`, so a route
//! added later is probed too: an oversized body is 413 JSON naming
//! `http.max_body_bytes`, bad JSON is 400 naming `body`, a method a path
//! does not take is 405 JSON, garbage is never a 500, and every bound
//! answers 429 naming its key.

use serde_json::Value;

use crate::common::*;

/// The test's body limit: small, so an oversized body is one read for the
/// server (no half-read body to reset the connection over).
const LIMIT: usize = 1024;

async fn api_gateway(edit: impl FnOnce(&mut fleetgate::Config)) -> fleetgate::Gateway {
    let mut config = test_config();
    config.http.max_body_bytes = LIMIT;
    edit(&mut config);
    gateway_with(config).await
}

/// Every operation the document lists: (method in capitals, path template).
async fn operations(gw: &fleetgate::Gateway) -> (Value, Vec<(String, String)>) {
    let reply = http_exchange(gw.http_addr, "GET /openapi.json HTTP/1.1", b"").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let doc = reply.json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(ops.len() > 25, "{ops:?}");
    (doc, ops)
}

/// A path template with each `{param}` as `value`.
fn concrete(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(value);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

fn takes_json_body(doc: &Value, method: &str, path: &str) -> bool {
    doc["paths"][path][method.to_lowercase()]["requestBody"]["content"]
        .get("application/json")
        .is_some()
}

/// The shape every error has: JSON with a string `error`.
fn assert_json_error(what: &str, reply: &HttpReply) -> Value {
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: not JSON: {reply:?}"
    );
    let json = reply.json();
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {json}"
    );
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_taking_a_body_refuses_an_oversized_one_with_413_json() {
    let gw = api_gateway(|_| {}).await;
    let (_, ops) = operations(&gw).await;
    let big = vec![b'x'; LIMIT + 1];
    let mut probed = 0;
    for (method, path) in ops.iter().filter(|(m, _)| m == "POST" || m == "PUT") {
        let target = if path == "/put" {
            "/put?topic=t".into()
        } else {
            concrete(path, "1")
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            big.len()
        );
        let reply = http_exchange(gw.http_addr, &head, &big).await;
        assert_eq!(reply.status, 413, "{method} {path}: {reply:?}");
        let json = assert_json_error(&format!("{method} {path}"), &reply);
        assert_eq!(json["bound"], "http.max_body_bytes", "{method} {path}");
        probed += 1;
    }
    assert!(probed >= 11, "only {probed} routes take a body");

    // A chunked body carries no length: it is held to the limit as it is read.
    let chunked = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n",
        LIMIT + 10,
        "y".repeat(LIMIT + 10)
    );
    for target in ["/packages", "/v2/search", "/put?topic=t"] {
        let head =
            format!("POST {target} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked");
        let reply = http_exchange(gw.http_addr, &head, chunked.as_bytes()).await;
        assert_eq!(reply.status, 413, "{target}: {reply:?}");
        assert!(assert_json_error(target, &reply)["bound"].is_string());
    }
    // Just under the limit is read (and judged on what it says).
    let fits = format!(
        r#"{{"from":"A","to":"B","vehicleId":"v1","note":"{}"}}"#,
        "b".repeat(900)
    );
    assert!(fits.len() < LIMIT);
    let (status, body) = http_post_json(gw.http_addr, "/packages", &fits).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_route_answers_bad_json_with_400_naming_the_body() {
    let gw = api_gateway(|_| {}).await;
    let (doc, ops) = operations(&gw).await;
    let json_ops: Vec<_> = ops
        .iter()
        .filter(|(m, p)| takes_json_body(&doc, m, p))
        .collect();
    assert!(json_ops.len() >= 8, "{json_ops:?}");
    for bad in [&b"{not json"[..], b"[1,2]", b"", b"\xff\xfe"] {
        for (method, path) in &json_ops {
            let head = format!(
                "{method} {} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
                concrete(path, "1"),
                bad.len()
            );
            let reply = http_exchange(gw.http_addr, &head, bad).await;
            let what = format!("{method} {path} {:?}", String::from_utf8_lossy(bad));
            assert_eq!(reply.status, 400, "{what}: {reply:?}");
            assert_eq!(assert_json_error(&what, &reply)["field"], "body", "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_answers_a_method_it_does_not_take_with_405_json() {
    let gw = api_gateway(|_| {}).await;
    let (_, ops) = operations(&gw).await;
    let mut paths: Vec<&String> = ops.iter().map(|(_, p)| p).collect();
    paths.dedup();
    for path in paths {
        let taken: Vec<&str> = ops
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        for method in ["PATCH", "DELETE", "PUT", "POST"] {
            if taken.contains(&method) {
                continue;
            }
            let head = format!(
                "{method} {} HTTP/1.1\r\nContent-Length: 0",
                concrete(path, "1")
            );
            let reply = http_exchange(gw.http_addr, &head, b"").await;
            assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
            assert_json_error(&format!("{method} {path}"), &reply);
            let allow = reply.header("allow").unwrap_or_default().to_uppercase();
            assert!(
                taken.iter().all(|m| allow.contains(m)),
                "{method} {path}: Allow {allow:?} should list {taken:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_answers_garbage_with_a_500_or_a_body_not_json() {
    let gw = api_gateway(|_| {}).await;
    let (_, ops) = operations(&gw).await;
    let params = ["%FF", "..", &"z".repeat(300), "-1", "0", "%00"];
    let queries = [
        "",
        "?lat=abc&lon=1e999&k=-1",
        "?vehicles=,,&bbox=1,2",
        "?topic=%ZZ&format=xml&userId=",
    ];
    let bodies: [&[u8]; 3] = [
        b"",
        b"\x00\x01",
        br#"{"lat":"x","lng":null,"id":[],"vehicleId":7,"from":{}}"#,
    ];
    let mut probed = 0;
    for (method, path) in &ops {
        for (i, param) in params.iter().enumerate() {
            let query = queries[i % queries.len()];
            let body = bodies[i % bodies.len()];
            let head = format!(
                "{method} {}{query} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
                concrete(path, param),
                body.len()
            );
            let reply = http_exchange(gw.http_addr, &head, body).await;
            let what = format!("{method} {path} with {param:?}{query}");
            assert!(
                reply.status != 0 && reply.status < 500 || reply.status == 503,
                "{what}: {reply:?}"
            );
            if reply.status >= 400 {
                assert_json_error(&what, &reply);
            }
            probed += 1;
        }
    }
    assert!(probed > 150);

    // No route at all, and the WebSocket routes asked without an upgrade.
    let reply = http_exchange(gw.http_addr, "GET /no/such/thing HTTP/1.1", b"").await;
    assert_eq!(reply.status, 404);
    assert_json_error("unknown path", &reply);
    for target in [
        "/ws",
        "/message",
        "/packages/track/van-1",
        "/notification?userId=u",
    ] {
        let reply = http_exchange(gw.http_addr, &format!("GET {target} HTTP/1.1"), b"").await;
        assert!((400..500).contains(&reply.status), "{target}: {reply:?}");
        assert_json_error(target, &reply);
    }
    // A bad query parameter is named.
    let (status, body) = http_get(gw.http_addr, "/vehicles/nearest?lat=north&lon=4").await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["field"],
        "lat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bound_reached_answers_429_naming_it() {
    let gw = api_gateway(|c| {
        c.geofence.max_fences = std::num::NonZeroUsize::new(1).unwrap();
        c.fleet.max_packages = std::num::NonZeroUsize::new(1).unwrap();
        c.dispatch.max_open_requests = std::num::NonZeroUsize::new(1).unwrap();
        c.pubsub.max_connections = std::num::NonZeroUsize::new(1).unwrap();
        c.fanout.max_subscribers = std::num::NonZeroUsize::new(2).unwrap();
    })
    .await;
    let fence = r#"{"name":"depot","circle":{"lat":52.0,"lon":4.0,"radius_m":100}}"#;
    let package = r#"{"from":"A","to":"B","vehicleId":"van-1"}"#;
    let search = r#"{"lat":52.0,"lng":4.0}"#;
    for (path, body, bound) in [
        ("/geofences", fence, "geofence.max_fences"),
        ("/packages", package, "fleet.max_packages"),
        ("/v2/search", search, "dispatch.max_open_requests"),
    ] {
        let (first, answer) = http_post_json(gw.http_addr, path, body).await;
        assert!(first == 200 || first == 201, "{path}: {answer}");
        let (status, answer) = http_post_json(gw.http_addr, path, body).await;
        assert_eq!(status, 429, "{path}: {answer}");
        let json: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["bound"], bound, "{path}: {json}");
    }

    // The sockets: one pub/sub socket, and the fan-out's one slot left
    // after the republisher's (a track socket takes it).
    let _proxy = ws_connect(gw.http_addr, "/message").await;
    let _track = ws_connect(gw.http_addr, "/packages/track/van-1").await;
    for (target, bound) in [
        ("/message", "pubsub.max_connections"),
        ("/ws", "fanout.max_subscribers"),
    ] {
        let head = format!(
            "GET {target} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
        );
        let reply = http_exchange(gw.http_addr, &head, b"").await;
        assert_eq!(reply.status, 429, "{target}: {reply:?}");
        assert_eq!(assert_json_error(target, &reply)["bound"], bound);
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
}
