//! The device ↔ gateway contract.
//!
//! In: bytes from a device (an MQTT payload or a COBS frame from a serial
//! link). Out: typed [`Position`], [`Status`] and [`Command`] values, and the
//! reverse. Bound: every encoding fits a caller-supplied `[u8; N]`
//! ([`MAX_ENCODED_LEN`] always suffices); nothing here allocates unless the
//! `std` feature's JSON forms are used.
//!
//! # Payload layout
//!
//! ```text
//! byte 0      tag = (PROTOCOL_VERSION << 4) | kind     (0x11 position, 0x12 status, 0x13 command)
//! bytes 1..   postcard encoding of the message struct (varints, zigzag for signed)
//! ```
//!
//! The tag can never be `{` (0x7B) nor ASCII white space: [`PROTOCOL_VERSION`]
//! stays in 1..7 and kind 0 is never assigned (version 2's kind 0 would be a
//! space), so a JSON payload and a postcard payload are told apart by their
//! first byte ([`Format::detect`]). Field order and types below are the format: the
//! golden-byte tests pin them, and changing one is a protocol version bump.
//!
//! A typical [`Position`] (no odometer, sequence < 2²¹) encodes to at most 24
//! bytes: the `typical_position_size` test prints 22 bytes for a fix in
//! Amsterdam at 50 km/h, against 134 bytes for its JSON form.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub mod frame;
#[cfg(feature = "std")]
pub mod json;

/// Version of the binary layout, carried in the high nibble of the tag byte.
pub const PROTOCOL_VERSION: u8 = 1;

/// A buffer of this many bytes holds any encoded message (tag included).
pub const MAX_ENCODED_LEN: usize = 1 + 5 + MAX_TEXT_LEN + 16;

/// Longest text in a [`Command::Text`], in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 160;

/// What went wrong turning bytes into a message (or a message into bytes).
///
/// `#[non_exhaustive]`: a later protocol version may add ways to fail
/// without breaking a device or gateway that matches on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No bytes at all.
    Empty,
    /// The first byte is JSON's `{` where postcard was required, or vice versa.
    WrongFormat,
    /// The tag's version nibble is not [`PROTOCOL_VERSION`].
    UnknownVersion(u8),
    /// The tag names another message kind than the one asked for.
    WrongKind {
        /// The kind the caller asked to decode.
        expected: Kind,
        /// The kind nibble the tag carried.
        found: u8,
    },
    /// The payload ended before the message did.
    Truncated,
    /// Bytes left over after a complete message.
    TrailingBytes(usize),
    /// The bytes are not a valid encoding (bad varint, bad enum tag, bad UTF-8, …).
    Malformed,
    /// The output buffer is too small for the encoding.
    BufferFull,
    /// A value is outside its documented range (e.g. latitude beyond ±90°).
    OutOfRange(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Empty => f.write_str("empty payload"),
            Error::WrongFormat => f.write_str("payload is in the wrong format (JSON vs postcard)"),
            Error::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Error::WrongKind { expected, found } => {
                write!(f, "expected a {expected:?} message, found kind {found}")
            }
            Error::Truncated => f.write_str("payload truncated"),
            Error::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
            Error::Malformed => f.write_str("malformed payload"),
            Error::BufferFull => f.write_str("output buffer too small"),
            Error::OutOfRange(what) => write!(f, "{what} out of range"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => Error::Truncated,
            postcard::Error::SerializeBufferFull => Error::BufferFull,
            _ => Error::Malformed,
        }
    }
}

/// Which message a tag announces (the low nibble of the tag byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// A [`Position`], device → gateway.
    Position = 1,
    /// A [`Status`], device → gateway (also its last will).
    Status = 2,
    /// A [`Command`], gateway → device.
    Command = 3,
}

impl Kind {
    /// The tag byte that starts every payload of this kind.
    pub const fn tag(self) -> u8 {
        (PROTOCOL_VERSION << 4) | self as u8
    }
}

/// How a payload is encoded, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The tagged postcard layout of this crate.
    Postcard,
    /// The JSON forms in [`json`] (feature `std`), for people testing by hand.
    Json,
}

impl Format {
    /// `{` (after optional ASCII white space) means JSON; anything else is
    /// taken as postcard and checked by the decoder.
    pub fn detect(payload: &[u8]) -> Result<Format, Error> {
        match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Err(Error::Empty),
            Some(b'{') => Ok(Format::Json),
            Some(_) => Ok(Format::Postcard),
        }
    }
}

/// Bit flags carried by a [`Position`].
pub mod flags {
    /// The receiver has a valid fix; positions without it are not used for
    /// odometer or geofences.
    pub const FIX_VALID: u8 = 1 << 0;
    /// Ignition is on.
    pub const IGNITION: u8 = 1 << 1;
    /// The position was buffered while offline and is sent late.
    pub const REPLAYED: u8 = 1 << 2;
}

/// One GNSS fix from a vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Per-device sequence number, +1 for each position; wraps at `u32::MAX`.
    pub seq: u32,
    /// Fix time, milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
    /// Latitude in millionths of a degree (1e-6°, about 11 cm), −90e6..=90e6.
    pub lat_e6: i32,
    /// Longitude in millionths of a degree, −180e6..=180e6.
    pub lon_e6: i32,
    /// Ground speed in centimetres per second.
    pub speed_cm_s: u16,
    /// Heading in 1/256 of a full turn (0 = north, 64 = east).
    pub heading: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Odometer in metres, sent every so often rather than with every fix.
    pub odometer_m: Option<u32>,
}

impl Position {
    /// Latitude in degrees.
    pub fn lat_deg(&self) -> f64 {
        f64::from(self.lat_e6) / 1e6
    }
    /// Longitude in degrees.
    pub fn lon_deg(&self) -> f64 {
        f64::from(self.lon_e6) / 1e6
    }
    /// Speed in km/h.
    pub fn speed_kmh(&self) -> f64 {
        f64::from(self.speed_cm_s) * 0.036
    }
    /// Heading in degrees, 0..360.
    pub fn heading_deg(&self) -> f64 {
        f64::from(self.heading) * 360.0 / 256.0
    }
    /// Whether the receiver had a valid fix ([`flags::FIX_VALID`]).
    pub fn fix_valid(&self) -> bool {
        self.flags & flags::FIX_VALID != 0
    }
    /// Whether the ignition was on ([`flags::IGNITION`]).
    pub fn ignition(&self) -> bool {
        self.flags & flags::IGNITION != 0
    }

    /// Checks the ranges that the types alone do not.
    pub fn validate(&self) -> Result<(), Error> {
        if !(-90_000_000..=90_000_000).contains(&self.lat_e6) {
            return Err(Error::OutOfRange("latitude"));
        }
        if !(-180_000_000..=180_000_000).contains(&self.lon_e6) {
            return Err(Error::OutOfRange("longitude"));
        }
        Ok(())
    }
}

/// Firmware version of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirmwareVersion {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions.
    pub minor: u8,
    /// Fixes.
    pub patch: u16,
}

/// A device's health report. With `online: false` it is also the device's
/// MQTT last will, so it is valid without a fix or a clock: `time_ms` 0 means
/// "the gateway's receive time".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Milliseconds since the Unix epoch, or 0 when unknown.
    pub time_ms: u64,
    /// Whether the device is connected; `false` in its last will.
    pub online: bool,
    /// Whether the ignition is on.
    pub ignition: bool,
    /// Supply voltage in millivolts (0 when not measured).
    pub supply_mv: u16,
    /// The firmware the device runs.
    pub firmware: FirmwareVersion,
}

/// Downlink from the gateway to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Report a position every `interval_ms` while moving.
    SetReportInterval {
        /// Milliseconds between positions.
        interval_ms: u32,
    },
    /// Send a position now.
    RequestPosition,
    /// Show a text message to the driver.
    Text(heapless::String<MAX_TEXT_LEN>),
}

/// A message that has a tag and a postcard encoding.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The kind its tag byte announces.
    const KIND: Kind;
}
impl WireMessage for Position {
    const KIND: Kind = Kind::Position;
}
impl WireMessage for Status {
    const KIND: Kind = Kind::Status;
}
impl WireMessage for Command {
    const KIND: Kind = Kind::Command;
}

/// Encodes `msg` (tag + postcard) into `buf`, returning the used prefix.
pub fn encode<'b, M: WireMessage>(msg: &M, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    let (tag, body) = buf.split_first_mut().ok_or(Error::BufferFull)?;
    *tag = M::KIND.tag();
    let used = postcard::to_slice(msg, body)?.len();
    Ok(&mut buf[..=used])
}

/// Reads the tag of a postcard payload: its kind, or why it is not one of ours.
pub fn peek_kind(payload: &[u8]) -> Result<Kind, Error> {
    let &tag = payload.first().ok_or(Error::Empty)?;
    if tag == b'{' {
        return Err(Error::WrongFormat);
    }
    let version = tag >> 4;
    if version != PROTOCOL_VERSION {
        return Err(Error::UnknownVersion(version));
    }
    match tag & 0x0f {
        1 => Ok(Kind::Position),
        2 => Ok(Kind::Status),
        3 => Ok(Kind::Command),
        _ => Err(Error::Malformed),
    }
}

/// Decodes a postcard payload of kind `M` (tag checked, no trailing bytes).
pub fn decode<M: WireMessage>(payload: &[u8]) -> Result<M, Error> {
    let kind = peek_kind(payload)?;
    if kind != M::KIND {
        return Err(Error::WrongKind {
            expected: M::KIND,
            found: kind as u8,
        });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(&payload[1..])?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes(rest.len()));
    }
    Ok(msg)
}
