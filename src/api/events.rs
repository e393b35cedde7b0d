//! `GET /events?vehicle=…&since=…&since_ms=…&limit=…`: the recent events,
//! from the ring the ingest task keeps (`crate::fleet::events`).
//!
//! In: the query string, every parameter optional: `vehicle` (a vehicle
//! id: only its events, and the dispatch transitions that assign it),
//! `since` (an `event_id`: only later events, exclusive — pass the last
//! answer's `next_since` to read on without repeats), `since_ms` (only
//! events at or after this time, ms since the Unix epoch), `limit` (1 to
//! [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]). Out: `{"events": […],
//! "next_since": N, "more": bool, "missed": bool}`, oldest first, each
//! event in the shape `fleet/events/<kind>` carries; `more` says the limit
//! cut the answer short, `missed` that events after `since` already left
//! the ring (`events.ring`), so a poller knows it lost some.
//!
//! Bound: one copy of at most `limit` events per request, made by the
//! ingest task (a full question queue is answered 503). A bad or unknown
//! parameter is a 400 naming it.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ErrorBody;
use super::{schemas, ApiError, AppState};
use crate::fleet::events::EventQuery;
use crate::topics::VehicleId;
use crate::views::RecentView;

/// Events per answer without `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Events per answer at most.
pub const MAX_LIMIT: usize = 1000;

fn whole(params: &HashMap<String, String>, field: &'static str) -> Result<Option<u64>, ApiError> {
    params
        .get(field)
        .map(|raw| {
            raw.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::field(field, format!("{raw:?} is not a whole number")))
        })
        .transpose()
}

/// What `GET /events` answers.
#[derive(Serialize)]
struct EventsAnswer<'a> {
    events: Vec<RecentView<'a>>,
    next_since: u64,
    more: bool,
    missed: bool,
}

fn parse(params: &HashMap<String, String>) -> Result<EventQuery, ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "vehicle" | "since" | "since_ms" | "limit"))
    {
        return Err(ApiError::BadField {
            field: "query",
            message: format!(
                "query: unknown parameter {unknown:?} (vehicle, since, since_ms, limit)"
            ),
        });
    }
    let vehicle = params
        .get("vehicle")
        .map(|raw| {
            VehicleId::parse(raw).ok_or_else(|| {
                ApiError::field(
                    "vehicle",
                    format!("{raw:?} is not a vehicle id (1-64 of A-Z a-z 0-9 . _ -)"),
                )
            })
        })
        .transpose()?;
    let limit = match whole(params, "limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::field(
                "limit",
                format!("must be from 1 to {MAX_LIMIT}"),
            ))
        }
    };
    Ok(EventQuery {
        vehicle,
        since: whole(params, "since")?,
        since_ms: whole(params, "since_ms")?,
        limit,
    })
}

/// The recent events, oldest first.
#[utoipa::path(get, path = "/events", tag = "fleet",
    params(
        ("vehicle" = Option<String>, Query, description = "Only this vehicle's events, and the dispatch transitions that assign it"),
        ("since" = Option<u64>, Query, description = "Only events with a higher event_id (exclusive): the last answer's next_since"),
        ("since_ms" = Option<u64>, Query, description = "Only events at or after this time, ms since the Unix epoch"),
        ("limit" = Option<u32>, Query, description = "At most this many, 1 to 1000 (100)"),
    ),
    responses(
        (status = 200, description = "Oldest first", body = schemas::EventsPage),
        (status = 400, description = "A bad or unknown parameter, named in `field`", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = parse(&params)?;
    let page = state
        .fleet
        .events(query)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let answer = EventsAnswer {
        events: page.events.iter().map(RecentView::of).collect(),
        next_since: page.next_since,
        more: page.more,
        missed: page.missed,
    };
    Ok(Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn field_of(e: ApiError) -> &'static str {
        match e {
            ApiError::BadField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let q = parse(&params(&[
            ("vehicle", "van-7"),
            ("since", "42"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(q.vehicle.unwrap().as_str(), "van-7");
        assert_eq!((q.since, q.since_ms, q.limit), (Some(42), None, 5));
        assert_eq!(parse(&params(&[])).unwrap().limit, DEFAULT_LIMIT);
        for (bad, field) in [
            (("vehicle", "a/b"), "vehicle"),
            (("since", "-1"), "since"),
            (("since_ms", "soon"), "since_ms"),
            (("limit", "0"), "limit"),
            (("limit", "1001"), "limit"),
            (("sinse", "1"), "query"),
        ] {
            assert_eq!(field_of(parse(&params(&[bad])).unwrap_err()), field);
        }
    }
}
