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
//! - `clock` (feature `std`): the wall clock in ms and ns since the epoch,
//!   shared vocabulary of the runner, the CLI and the tools.
//! - `route` (feature `std`): vans driving a road graph of central Amsterdam.
//! - `runner` (feature `runner`): many simulated vehicles over MQTT
//!   (rumqttc), each a [`Device`] on a route; the demo fleet and the load
//!   generator of `firmware-sim run`.
//! - `cli` (feature `runner`): the command line of `firmware-sim` and the
//!   byte builders behind `firmware-sim encode`/`decode`.
//!
//! The tools that load and measure a broker or the gateway (`bench`,
//! `bench-report`, `ws-watch`, `idle-conn`, `bridge_bench`) are the
//! `loadgen` crate's: they depend on this crate and on the gateway, never
//! the other way round.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

// The unit tests use Vec even when the library itself is built without std.
#[cfg(all(test, not(feature = "std")))]
extern crate std;

pub mod device;
pub mod prng;
pub mod serial;

#[cfg(feature = "std")]
pub mod clock;
#[cfg(feature = "std")]
pub mod route;

#[cfg(feature = "runner")]
pub mod cli;
#[cfg(feature = "runner")]
pub mod runner;

pub use device::{Counters, Delivery, Device, DeviceConfig, Fix, FixSource, OfflineRing, Uplink};
pub use fleetgate_wire as wire;
