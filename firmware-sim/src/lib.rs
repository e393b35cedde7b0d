//! The device side of fleetgate: what runs on a vehicle, and a simulated
//! fleet built from it.
//!
//! In: GNSS fixes (real or simulated), link state, downlink commands. Out:
//! the wire crate's tagged postcard payloads, over MQTT or COBS-framed serial.
//! Bound: the `no_std` core ([`device`], [`serial`], [`prng`]) uses no
//! allocator; its memory is the offline ring's fixed capacity plus a few
//! hundred bytes. The std parts bound themselves in their own docs.
//!
//! # Layout
//!
//! - [`device`]: the vehicle logic: sequence numbers, report interval,
//!   offline ring (keeps the newest), ordered replay, command handling.
//! - [`serial`]: an [`Uplink`] writing COBS frames to any
//!   `embedded_io::Write`.
//! - [`prng`]: a seedable SplitMix64, so simulations repeat exactly.
//! - `route` (feature `std`): vans driving a road graph of central Amsterdam.
//! - `runner` (feature `runner`): many simulated vehicles over MQTT
//!   (rumqttc), the load generator, and an idle-connection tester.
//! - `cli` (feature `runner`): the byte builders behind `firmware-sim encode`/`decode`.
//! - `bench` (feature `runner`): the broker load tool behind
//!   `benches/compare.sh` (`firmware-sim bench`).
//! - `report` and `chart` (feature `runner`): the side-by-side table and
//!   SVG chart of a comparison run (`firmware-sim bench-report`).
//! - `ws_watch` (feature `runner`): a reading or stalled client of the
//!   gateway's WebSocket feed, for load runs (`firmware-sim ws-watch`).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

// The unit tests use Vec even when the library itself is built without std.
#[cfg(all(test, not(feature = "std")))]
extern crate std;

pub mod device;
pub mod prng;
pub mod serial;

#[cfg(feature = "std")]
pub mod route;

#[cfg(feature = "runner")]
pub mod bench;
#[cfg(feature = "runner")]
pub mod chart;
#[cfg(feature = "runner")]
pub mod cli;
#[cfg(feature = "runner")]
pub mod report;
#[cfg(feature = "runner")]
pub mod runner;
#[cfg(feature = "runner")]
pub mod ws_watch;

pub use device::{Counters, Delivery, Device, DeviceConfig, Fix, FixSource, OfflineRing, Uplink};
pub use fleetgate_wire as wire;
