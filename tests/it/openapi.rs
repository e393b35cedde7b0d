//! `GET /openapi.json`: the document lists what the gateway serves (every
//! operation in it reaches a handler, none is the router's 404 or 405; the
//! other direction, every served route in the document, is
//! `api::openapi::tests`), and live answers have the shapes its schemas
//! give (every key documented, every required key present).

use serde_json::{Map, Value};

use crate::common::*;

async fn document(gw: &fleetgate::Gateway) -> Value {
    let reply = http_exchange(gw.http_addr, "GET /openapi.json HTTP/1.1", b"").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let gw = gateway().await;
    let doc = document(&gw).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "fleetgate");
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(
        description.contains("smq.listen"),
        "the SMQ port is documented"
    );
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/",
        "/ws",
        "/vehicles/{id}",
        "/packages/track/{vehicleId}",
        "/put",
        "/stats",
        "/ping",
        "/message",
        "/notification",
        "/v2/search",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} is not in the document"
        );
    }
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let head = format!(
                "{} {} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2",
                method.to_uppercase(),
                concrete(path)
            );
            let reply = http_exchange(gw.http_addr, &head, b"{}").await;
            let what = format!("{method} {path}: {reply:?}");
            assert_ne!(reply.status, 405, "{what}");
            if reply.status == 404 {
                let error = reply.json()["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(!error.starts_with("no such endpoint"), "{what}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_turned_off_leaves_the_document_too() {
    let mut config = test_config();
    config.smq.enabled = false;
    config.pubsub.enabled = false;
    let gw = gateway_with(config).await;
    let doc = document(&gw).await;
    for gone in ["/put", "/ping", "/stats", "/message"] {
        assert!(
            doc["paths"].get(gone).is_none(),
            "{gone} is off but documented"
        );
        assert_eq!(http_get(gw.http_addr, gone).await.0, 404);
    }
}

/// `schema` with its `$ref` followed.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The properties and required keys of an object schema, `allOf` merged.
fn object_shape(doc: &Value, schema: &Value) -> Option<(Map<String, Value>, Vec<String>)> {
    let schema = resolve(doc, schema);
    let mut properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            let (p, r) = object_shape(doc, part)?;
            properties.extend(p);
            required.extend(r);
        }
    }
    (!properties.is_empty()).then_some((properties, required))
}

/// Where `value` does not fit `schema`: undocumented keys, missing
/// required ones, an array where no array is said.
fn misfits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fits: Vec<Vec<String>> = options.iter().map(|o| misfits(doc, o, value, at)).collect();
        return match fits.iter().any(Vec::is_empty) {
            true => Vec::new(),
            false => fits.concat(),
        };
    }
    if value.is_null() {
        return Vec::new();
    }
    if let Some(items) = schema.get("items") {
        return match value.as_array() {
            Some(values) => values
                .iter()
                .enumerate()
                .flat_map(|(i, v)| misfits(doc, items, v, &format!("{at}[{i}]")))
                .collect(),
            None => vec![format!("{at}: not an array")],
        };
    }
    let Some((properties, required)) = object_shape(doc, schema) else {
        return Vec::new();
    };
    let Some(object) = value.as_object() else {
        return vec![format!("{at}: not an object")];
    };
    let mut out: Vec<String> = required
        .iter()
        .filter(|k| !object.contains_key(*k))
        .map(|k| format!("{at}.{k}: required, missing"))
        .collect();
    for (key, v) in object {
        match properties.get(key) {
            Some(s) => out.extend(misfits(doc, s, v, &format!("{at}.{key}"))),
            None => out.push(format!("{at}.{key}: not in the schema")),
        }
    }
    out
}

/// The answer of `method path` with `status` fits its documented schema.
async fn assert_fits(
    gw: &fleetgate::Gateway,
    doc: &Value,
    method: &str,
    path: &str,
    real: &str,
    body: Option<&str>,
) {
    let (status, answer) = http_request(gw.http_addr, &method.to_uppercase(), real, body).await;
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} → {status}: no schema documented ({answer})"
    );
    let value: Value =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{real}: {e}: {answer}"));
    let wrong = misfits(doc, schema, &value, real);
    assert!(
        wrong.is_empty(),
        "{method} {real} → {status} does not fit its schema: {wrong:#?}\n{value:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_have_the_documented_shapes() {
    let gw = gateway().await;
    let doc = document(&gw).await;
    // A vehicle with a position (QoS 1: acked once ingest has it).
    drive(gw.mqtt_addr, "van-9", 1..=1).await;
    await_metric(&gw, "fleetgate_fleet_vehicles", 1).await;
    let (lat, lon) = (HOME_E6.0 as f64 / 1e6, HOME_E6.1 as f64 / 1e6);
    let nearest = format!("/vehicles/nearest?lat={lat}&lon={lon}");
    let search = format!(r#"{{"lat":{lat},"lng":{lon},"limit":5}}"#);
    let (_, found) = http_get(gw.http_addr, &nearest).await;
    assert!(found.contains("van-9"), "{found}");

    let cases: [(&str, &str, &str, Option<&str>); 15] = [
        ("get", "/vehicles", "/vehicles", None),
        ("get", "/vehicles/{id}", "/vehicles/van-9", None),
        ("get", "/vehicles/{id}", "/vehicles/nobody", None),
        ("get", "/vehicles/nearest", &nearest, None),
        (
            "post",
            "/packages",
            "/packages",
            Some(r#"{"id":"p1","from":"A","to":"B","vehicleId":"van-9"}"#),
        ),
        ("get", "/packages/{id}", "/packages/p1", None),
        ("get", "/packages", "/packages?vehicleId=van-9", None),
        (
            "post",
            "/packages",
            "/packages",
            Some(r#"{"from":"","to":"B","vehicleId":"van-9"}"#),
        ),
        (
            "post",
            "/geofences",
            "/geofences",
            Some(r#"{"name":"d","circle":{"lat":52.37,"lon":4.89,"radius_m":200}}"#),
        ),
        ("get", "/geofences", "/geofences", None),
        (
            "post",
            "/v2/search",
            "/v2/search",
            Some(r#"{"lat":52.37,"lng":4.89}"#),
        ),
        ("get", "/v2/requests/{id}", "/v2/requests/1", None),
        ("post", "/search", "/search", Some(&search)),
        ("get", "/healthz", "/healthz", None),
        // after the geofence and the dispatch request: status, geofence
        // and dispatch events
        ("get", "/events", "/events", None),
    ];
    for (method, path, real, body) in cases {
        assert_fits(&gw, &doc, method, path, real, body).await;
    }
}
