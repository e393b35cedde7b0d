//! The gateway's integration tests, one module per subject, linked into
//! one test binary: each separate file under `tests/` is its own binary
//! that links the whole gateway, and on a 2-core machine the links
//! dominated a rebuild (see the commit that made this file for the numbers).
//! A test's name is its module and function: `bridge::outage_mid_stream_…`.
//!
//! Two tests stay binaries of their own: `tests/alloc_free.rs` installs a
//! counting global allocator, and `tests/spool_crash.rs` re-executes its
//! own binary as the child it kills.

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests. Unbounded channels are fine here too: what a test
// collects is bounded by the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bench_smoke;
mod bridge;
mod broker_lifecycle;
mod conformance;
mod dispatch;
mod edge;
mod events;
mod fleet;
mod fuzz;
mod geofence;
mod http_api;
mod live_feed;
mod live_map_page;
mod live_map_tools;
mod mosquitto_interop;
mod nearest;
mod openapi;
mod packages;
mod pubsub;
mod shutdown_auth;
mod smq;
mod tls;
mod unroutable;
