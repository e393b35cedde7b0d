//! The tools that load and measure fleetgate and other MQTT brokers. They
//! depend on the product ([`fleetgate`], for the bridge bench that starts
//! the gateway in-process), on the device side ([`firmware_sim`]) and on
//! the contract ([`fleetgate_wire`]); nothing depends on them.
//!
//! In: command-line arguments, a broker or a gateway on loopback. Out:
//! human summaries on stderr and one JSON result line per run on stdout
//! (their schema: [`results`]); a Markdown table and an SVG chart of a
//! comparison. Bound: each module bounds itself in its own docs; every run
//! stops by itself.
//!
//! # Layout
//!
//! - [`bench`](mod@bench) (a folder: configuration, payloads, publishers, subscribers,
//!   measured steps, report): the broker load tool behind
//!   `benches/compare.sh` (`loadgen bench`).
//! - [`idle_conn`]: many idle MQTT connections, the broker's memory per
//!   connection and its connect rate (`loadgen idle-conn`).
//! - [`churn`]: clients that come and go with fresh ids and new filters:
//!   cycles/s, refusals, the broker's growth per client, and whether a new
//!   client still subscribes and receives (`loadgen churn`).
//! - [`conformance`]: MQTT 3.1.1's MUST-close rules tried one by one, how
//!   many the broker closes (`loadgen conformance`).
//! - [`ws_watch`] (a folder: reading and stalled clients, histogram,
//!   report): a client of the gateway's WebSocket feed (`loadgen ws-watch`).
//! - [`report`] and [`chart`] (a folder: grid, panels, axes, formatting,
//!   SVG writing): the side-by-side table and SVG chart of a comparison run
//!   (`loadgen bench-report`).
//! - [`smq_put`]: `/put` → SMQ consumer throughput and latency, with
//!   producers and consumers speaking as the seed's do (`loadgen smq-put`).
//! - [`ws_fanout`]: `/message` fan-out to many WebSocket subscribers:
//!   deliveries/s, losses, latency percentiles (`loadgen ws-fanout`).
//! - [`search_load`]: `POST /search` end to end while `POST /tracking`
//!   keeps a large fleet moving: searches/s and round-trip percentiles
//!   (`loadgen search-load`).
//! - [`http1`]: the minimal HTTP/1.1 keep-alive client of `smq-put` and
//!   `search-load`.
//! - [`stamp`]: the sequence number and send time those two put in each
//!   message.
//! - [`results`] (a folder: the MQTT tools' lines, the HTTP-side ones): the serde schema of every result line the tools write and
//!   the report and chart read ([`results::ResultLine`]).
//! - [`mqtt`]: hand-written MQTT 3.1.1 packets for the raw-socket clients.
//! - [`procfs`]: a process's RSS and CPU time from `/proc`.
//! - `bin/bridge_bench/` (a binary: arguments, rig, load, dashboard,
//!   counters, phases): the AMQP bridge's two figures against a real
//!   RabbitMQ, with the gateway in-process (`bridge_bench`).
//! - `main.rs`: the `loadgen` command line over these modules.
//! - `tests/bench_report.rs`: golden tests of the table and the chart of
//!   `benches/results/2026-11-22.jsonl`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod chart;
pub mod churn;
pub mod conformance;
pub mod http1;
pub mod idle_conn;
pub mod mqtt;
pub mod procfs;
pub mod report;
pub mod results;
pub mod search_load;
pub mod smq_put;
pub mod stamp;
pub mod ws_fanout;
pub mod ws_watch;
