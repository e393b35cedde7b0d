//! HTTP authentication: a token from the password file for every request
//! that reads or changes the gateway's state, when a password file is set.
//!
//! In: each HTTP request (its method, path, `Authorization` header or
//! `access_token` query parameter). Out: the request passed on, or a JSON
//! error: 401 (no token, or a wrong one; with `WWW-Authenticate`), 403 (a
//! token whose role may not do this), each counted in
//! `fleetgate_http_refused_total{reason}`. Bound: none of its own; the
//! password check is [`Auth::authenticate_token`]'s (cached, off the
//! runtime).
//!
//! A token is a user of the password file: `Authorization: Bearer
//! <user>:<password>`, HTTP Basic with the same pair, or
//! `?access_token=<user>:<password>` where a header cannot be set (a
//! browser's WebSocket). `fleetgate passwd add FILE NAME --role dashboard
//! --generate` makes one.
//!
//! | request | roles admitted |
//! |---|---|
//! | `GET /healthz`, `GET /` (the map page itself, no data) | anyone |
//! | other reads (`GET`, `HEAD`), the read-only WebSockets (`/ws`, `/notification`, `/packages/track/…`), and `/message` | dashboard, service, admin |
//! | writes (`POST`, `PUT`, `PATCH`, `DELETE`) | service, admin |
//!
//! Devices have no HTTP access: they speak MQTT. A request let through
//! carries its caller as a [`Principal`] extension (the token's user), so
//! the endpoints that publish or subscribe to topics check the ACL as MQTT
//! does for that user: `/put` and `/message`'s publishes as a write of
//! their topic, `/message`'s subscriptions as an MQTT SUBSCRIBE and each
//! message it delivers as a read (`smq::http`, `pubsub::ws`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::auth::{Auth, Principal, Role};
use crate::metrics::Metrics;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    Read,
    Write,
}

fn needs(method: &Method, path: &str) -> Needs {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/" | "/healthz") => Needs::Nothing,
        // Its publishes and subscriptions are checked per topic.
        (&Method::GET, "/message") => Needs::Read,
        (&Method::GET | &Method::HEAD | &Method::OPTIONS, _) => Needs::Read,
        _ => Needs::Write,
    }
}

fn admits(needs: Needs, role: Role) -> bool {
    match needs {
        Needs::Nothing => true,
        Needs::Read => matches!(role, Role::Dashboard | Role::Service | Role::Admin),
        Needs::Write => matches!(role, Role::Service | Role::Admin),
    }
}

/// The layer's state: who decides, and where refusals are counted.
#[derive(Clone)]
pub struct HttpAuth {
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn require_token(
    State(state): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.auth.checks_passwords() {
        return next.run(request).await;
    }
    let needs = needs(request.method(), request.uri().path());
    if needs == Needs::Nothing {
        return next.run(request).await;
    }
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let Some((user, password)) = token(request.headers(), &query) else {
        Metrics::inc(&state.metrics.http_refused_total_no_token);
        return unauthorized(
            "this endpoint needs a token: Authorization: Bearer <user>:<password>",
        );
    };
    match state.auth.authenticate_token(&user, &password).await {
        None => {
            Metrics::inc(&state.metrics.http_refused_total_bad_token);
            unauthorized("the token's user name or password is wrong")
        }
        Some(role) if admits(needs, role) => {
            request.extensions_mut().insert(Principal::user(&user));
            next.run(request).await
        }
        Some(role) => {
            Metrics::inc(&state.metrics.http_refused_total_forbidden);
            let what = if needs == Needs::Write {
                "change"
            } else {
                "read"
            };
            (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({ "error": format!("a {role} token may not {what} this") })),
            )
                .into_response()
        }
    }
}

/// `<user>:<password>` from the header (Bearer or Basic) or the query.
fn token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<(String, String)> {
    let pair = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => {
            let (scheme, rest) = value.split_once(' ')?;
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => rest.trim().to_owned(),
                "basic" => String::from_utf8(BASE64.decode(rest.trim()).ok()?).ok()?,
                _ => return None,
            }
        }
        None => query.get("access_token")?.clone(),
    };
    let (user, password) = pair.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"fleetgate\"")],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_the_open_pages() {
        assert_eq!(needs(&Method::GET, "/healthz"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/vehicles"), Needs::Read);
        assert_eq!(needs(&Method::GET, "/ws"), Needs::Read);
        assert_eq!(needs(&Method::GET, "/message"), Needs::Read);
        assert_eq!(needs(&Method::POST, "/packages"), Needs::Write);
        assert_eq!(needs(&Method::DELETE, "/geofences/1"), Needs::Write);
        assert!(!admits(Needs::Read, Role::Device));
        assert!(admits(Needs::Read, Role::Dashboard));
        assert!(!admits(Needs::Write, Role::Dashboard));
        assert!(admits(Needs::Write, Role::Service));
    }

    #[test]
    fn tokens_come_from_bearer_basic_or_the_query() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer dash:pw:with:colons".parse().unwrap(),
        );
        assert_eq!(
            token(&h, &HashMap::new()),
            Some(("dash".into(), "pw:with:colons".into()))
        );
        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", BASE64.encode("ops:s3cret"));
        h.insert(header::AUTHORIZATION, basic.parse().unwrap());
        assert_eq!(
            token(&h, &HashMap::new()),
            Some(("ops".into(), "s3cret".into()))
        );
        let q = HashMap::from([("access_token".to_owned(), "a:b".to_owned())]);
        assert_eq!(token(&HeaderMap::new(), &q), Some(("a".into(), "b".into())));
        assert_eq!(token(&HeaderMap::new(), &HashMap::new()), None);
    }
}
