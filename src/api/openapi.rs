//! `GET /openapi.json`, and the one router the HTTP port serves, made from
//! the route tables.
//!
//! In: the route tables (`api::routes`, `smq::http::routes`,
//! `pubsub::routes`), each an `OpenApiRouter` whose every route was
//! registered with its `#[utoipa::path]` entry, and `http.max_body_bytes`.
//! Out: the axum router with the API's rules applied to every route alike
//! (JSON 404 and 405 fallbacks, the body limit, extractor errors as JSON:
//! [`super::error`]), and the OpenAPI 3.1 document generated from the same
//! tables, so a route and its entry cannot drift apart; `tests` below hold
//! the served paths to the document's. Bound: the document, serialised
//! once at start (tens of KiB), shared by every request.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Router};
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{Info, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{json_errors, limit_body, method_not_allowed, not_found};

/// What the document says of the API as a whole: the rules every route
/// follows, and what is not HTTP.
const DESCRIPTION: &str = "\
fleetgate's HTTP API: its own endpoints and those of the five systems it replaces \
(seeds 000-004; README's HTTP section maps each old endpoint onto these).

Every endpoint follows the same rules. An error is JSON `{\"error\": \"...\"}` with the \
right status: 400 with `field` naming the bad field, 404, 405 for a method the path does not \
take, 409 for a change the state forbids, 413 for a body over `http.max_body_bytes` (or an \
SMQ or pub/sub message over its own bound), 429 with `bound` naming the configuration key \
when a bound is reached, 503 when the fleet state is busy (retry). Never 500 for bad input.

With `auth.password_file` set, every route but `GET /` and `GET /healthz` needs a token \
(`Authorization: Bearer <user>:<password>`, HTTP Basic, or `?access_token=` for a browser's \
WebSocket): 401 without one, 403 for a role that may not (reads: dashboard, service, admin; \
writes and `/message`: service, admin).

WebSocket endpoints (`/ws`, `/notification`, `/packages/track/{vehicleId}`, `/message`) \
answer a GET with an upgrade (101) and then speak JSON text frames, as their descriptions say.

Not HTTP: the SMQ consumer protocol (seed 002: `SUB`, `GET`, `FIN`, `REQ` lines, \
length-prefixed frames) is served on its own TCP port, `smq.listen` (0.0.0.0:5151 by \
default); its producers use `/put` here. MQTT 3.1.1 is on `mqtt.listen` (1883).";

/// The document's tags: one per source system, and fleetgate's own.
const TAGS: &[(&str, &str)] = &[
    (
        "fleet",
        "fleetgate's own: the fleet's live state, the live map and feed, geofences",
    ),
    (
        "seed 000 packages",
        "The package-tracking service: packages over REST and their tracking socket",
    ),
    (
        "seed 001 notifications",
        "The notification service: a user's notifications over a WebSocket",
    ),
    (
        "seed 002 smq",
        "The NSQ-like queue's producer endpoints; consumers use the TCP port smq.listen",
    ),
    (
        "seed 003 pubsub",
        "The WebSocket pub/sub proxy, on the broker's topics",
    ),
    (
        "seed 004 nearest-driver",
        "The nearest-driver service: positions, search, dispatch requests",
    ),
    ("operator", "Health, metrics and this document"),
];

/// The serialised document, shared by every `GET /openapi.json`.
#[derive(Clone)]
struct Document(Arc<str>);

/// This document (OpenAPI 3.1, generated from the route tables).
#[utoipa::path(get, path = "/openapi.json", tag = "operator",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route served", body = serde_json::Value)))]
async fn openapi_json(Extension(Document(text)): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        text.to_string(),
    )
        .into_response()
}

/// The table with `/openapi.json` added, split into the router and the
/// document, before the API's rules are layered on.
pub fn assemble<S: Clone + Send + Sync + 'static>(table: OpenApiRouter<S>) -> (Router<S>, OpenApi) {
    let (router, mut doc) = table.routes(routes!(openapi_json)).split_for_parts();
    doc.info = Info::builder()
        .title("fleetgate")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .build();
    doc.tags = Some(
        TAGS.iter()
            .map(|(name, what)| Tag::builder().name(*name).description(Some(*what)).build())
            .collect(),
    );
    (router, doc)
}

/// The router the HTTP port serves: every route of `table`, its document
/// at `/openapi.json`, and the API's rules on every route.
pub fn app(table: OpenApiRouter, max_body_bytes: usize) -> Router {
    let (router, doc) = assemble(table);
    let text: Arc<str> = match doc.to_json() {
        Ok(text) => text.into(),
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document cannot be serialised");
            "{}".into()
        }
    };
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(Document(text)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(max_body_bytes, limit_body))
        .layer(middleware::from_fn_with_state(max_body_bytes, json_errors))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The paths an axum router serves, read from its `Debug` (axum keeps
    /// no other list): `Node { paths: {RouteId(n): "/path", …} }`.
    fn served_paths<S>(router: &Router<S>) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let start = debug
            .find("node: Node { paths: {")
            .expect("axum's Router Debug lists its paths");
        let mut rest = &debug[start + "node: Node { paths: {".len()..];
        let mut paths = BTreeSet::new();
        // Entries `RouteId(n): "/path"`, separated by `, `, ended by `}`.
        while let Some(entry) = rest.strip_prefix("RouteId(") {
            let open = entry.find('"').expect("a quoted path");
            let close = open + 1 + entry[open + 1..].find('"').expect("its closing quote");
            paths.insert(entry[open + 1..close].to_owned());
            rest = entry[close + 1..].trim_start_matches(", ");
        }
        assert!(rest.starts_with('}'), "the path map ends: {rest:.40}");
        paths
    }

    fn documented_paths(doc: &OpenApi) -> BTreeSet<String> {
        doc.paths.paths.keys().cloned().collect()
    }

    /// Each table as the gateway serves it: what its router serves is
    /// exactly what its document lists. A route added with a plain
    /// `.route(…)` (no `#[utoipa::path]`, not through `routes!`) fails here.
    #[test]
    fn every_served_route_is_in_the_document() {
        let (router, doc) = assemble(crate::api::routes());
        let served = served_paths(&router);
        assert!(
            served.contains("/healthz") && served.contains("/openapi.json") && served.len() > 15,
            "reading the served paths failed: {served:?}"
        );
        assert_eq!(served, documented_paths(&doc), "served (left) vs documented (right): add a #[utoipa::path] and register the handler with .routes(routes!(…))");

        let (router, doc) = crate::smq::http::routes().split_for_parts();
        assert_eq!(served_paths(&router), documented_paths(&doc));
        assert_eq!(served_paths(&router).len(), 3);

        let (router, doc) = crate::pubsub::routes().split_for_parts();
        assert_eq!(served_paths(&router), documented_paths(&doc));
        assert_eq!(served_paths(&router).len(), 1);
    }

    #[test]
    fn a_route_without_an_entry_is_caught() {
        let table = crate::api::routes().route("/undocumented", axum::routing::get(|| async {}));
        let (router, doc) = assemble(table);
        let missing: Vec<_> = served_paths(&router)
            .difference(&documented_paths(&doc))
            .cloned()
            .collect();
        assert_eq!(missing, ["/undocumented"]);
    }

    #[test]
    fn the_document_is_openapi_3_with_every_operation_tagged_and_named_once() {
        let (_, mut doc) = assemble(crate::api::routes());
        doc.merge(crate::smq::http::routes().into_openapi());
        doc.merge(crate::pubsub::routes().into_openapi());
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        let mut ids = BTreeSet::new();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        let tags: BTreeSet<&str> = TAGS.iter().map(|(n, _)| *n).collect();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let tag = op["tags"][0].as_str().unwrap_or_default();
                assert!(tags.contains(tag), "{method} {path}: tag {tag:?}");
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.insert(id.to_owned()),
                    "{method} {path}: operationId {id:?} twice"
                );
            }
        }
    }
}
