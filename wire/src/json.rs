//! JSON forms of the messages (feature `std`).
//!
//! In: JSON payloads from people testing with `mosquitto_pub` and from devices
//! that cannot do postcard, or any payload via the `decode_*_any` functions
//! (which tell JSON from postcard by the first byte, see [`Format::detect`]).
//! Out: the same typed [`Position`], [`Status`] and [`Command`] the postcard
//! decoder yields, with every value range-checked and converted to wire units
//! (degrees → 1e-6°, km/h → cm/s, degrees → 1/256 turn); and the reverse, for
//! printing a message as a person reads it.
//!
//! Bound: one allocation per decoded JSON document (serde_json's parse of a
//! payload the transport already limits in size); nothing is kept.
//!
//! Unknown fields are rejected, so a typo (`"latitude"`) is an error rather
//! than a silently missing value. Missing optional fields take the defaults
//! documented on each field.

use serde::{Deserialize, Serialize};

use crate::{
    decode, flags, Command, Error, FirmwareVersion, Format, Position, Status, MAX_TEXT_LEN,
};

/// Largest speed the wire carries, in km/h (`u16::MAX` cm/s ≈ 2359 km/h).
const MAX_SPEED_KMH: f64 = u16::MAX as f64 * 0.036;

/// A [`Position`] as JSON: `{"lat":52.3731,"lon":4.8922}` is the smallest valid one.
/// A [`Position`] as JSON, in degrees and km/h: what a person types into
/// `mosquitto_pub`; only `lat` and `lon` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionJson {
    /// Latitude in degrees, −90..=90.
    pub lat: f64,
    /// Longitude in degrees, −180..=180.
    pub lon: f64,
    /// Sequence number; missing means 0 (a hand-typed fix is never deduplicated
    /// against a device's own numbering in practice, since devices start at 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// Fix time in ms since the Unix epoch; missing means "now" (the receiver's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Ground speed in km/h, ≥ 0; above the wire's maximum it is clamped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    /// Heading in degrees clockwise from north; any finite value, taken modulo 360.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Missing means true: a person typing a position means it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_valid: Option<bool>,
    /// Missing means false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition: Option<bool>,
    /// Odometer in metres; missing means "not sent with this fix".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<u32>,
    /// The fix was buffered while offline and is sent late; missing means false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
}

impl PositionJson {
    /// The JSON form of a wire position.
    pub fn from_position(p: &Position) -> Self {
        Self {
            lat: p.lat_deg(),
            lon: p.lon_deg(),
            seq: Some(p.seq),
            time_ms: Some(p.time_ms),
            // cm/s × 0.036 has at most three decimals; rounding to them prints
            // 0.54 rather than 0.5399999999999999, and still converts back exactly.
            speed_kmh: Some((p.speed_kmh() * 1000.0).round() / 1000.0),
            heading_deg: Some(p.heading_deg()),
            fix_valid: Some(p.fix_valid()),
            ignition: Some(p.ignition()),
            odometer_m: p.odometer_m,
            // Only said when true, so a live fix's JSON stays short.
            replayed: (p.flags & flags::REPLAYED != 0).then_some(true),
        }
    }

    /// Converts to wire units; `now_ms` stands in for a missing `time_ms`.
    pub fn to_position(&self, now_ms: u64) -> Result<Position, Error> {
        let lat_e6 = degrees_to_e6(self.lat, 90.0, "latitude")?;
        let lon_e6 = degrees_to_e6(self.lon, 180.0, "longitude")?;
        let speed_cm_s = match self.speed_kmh {
            None => 0,
            Some(kmh) if kmh.is_nan() || kmh < 0.0 => return Err(Error::OutOfRange("speed")),
            // `as` saturates, so +∞ and anything above the maximum clamp to u16::MAX.
            Some(kmh) => (kmh.min(MAX_SPEED_KMH) / 0.036).round() as u16,
        };
        let heading = match self.heading_deg {
            None => 0,
            Some(deg) if !deg.is_finite() => return Err(Error::OutOfRange("heading")),
            // 360° rounds to 256, which is 0 again: wrap after rounding.
            Some(deg) => ((deg.rem_euclid(360.0) * 256.0 / 360.0).round() as u32 % 256) as u8,
        };
        let mut bits = 0;
        if self.fix_valid.unwrap_or(true) {
            bits |= flags::FIX_VALID;
        }
        if self.ignition.unwrap_or(false) {
            bits |= flags::IGNITION;
        }
        if self.replayed.unwrap_or(false) {
            bits |= flags::REPLAYED;
        }
        Ok(Position {
            seq: self.seq.unwrap_or(0),
            time_ms: self.time_ms.unwrap_or(now_ms),
            lat_e6,
            lon_e6,
            speed_cm_s,
            heading,
            flags: bits,
            odometer_m: self.odometer_m,
        })
    }
}

fn degrees_to_e6(deg: f64, limit: f64, what: &'static str) -> Result<i32, Error> {
    // NaN fails the range check too, since every comparison with NaN is false.
    if !(-limit..=limit).contains(&deg) {
        return Err(Error::OutOfRange(what));
    }
    // Within ±180e6 this always fits an i32.
    Ok((deg * 1e6).round() as i32)
}

/// A [`Status`] as JSON: `{}` is a valid one (online now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusJson {
    /// Missing means true.
    #[serde(default = "default_online")]
    pub online: bool,
    /// Missing means false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition: Option<bool>,
    /// Missing means "not measured" (0 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_mv: Option<u16>,
    /// `"major.minor.patch"`, e.g. `"1.2.3"`; missing means 0.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Missing means "now" (the receiver's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
}

fn default_online() -> bool {
    true
}

impl StatusJson {
    /// The JSON form of a wire status.
    pub fn from_status(s: &Status) -> Self {
        let fw = s.firmware;
        Self {
            online: s.online,
            ignition: Some(s.ignition),
            supply_mv: Some(s.supply_mv),
            firmware: Some(format!("{}.{}.{}", fw.major, fw.minor, fw.patch)),
            time_ms: Some(s.time_ms),
        }
    }

    /// Converts to the wire form; `now_ms` stands in for a missing `time_ms`.
    pub fn to_status(&self, now_ms: u64) -> Result<Status, Error> {
        let firmware = match &self.firmware {
            None => FirmwareVersion::default(),
            Some(text) => parse_firmware(text).ok_or(Error::OutOfRange("firmware"))?,
        };
        Ok(Status {
            time_ms: self.time_ms.unwrap_or(now_ms),
            online: self.online,
            ignition: self.ignition.unwrap_or(false),
            supply_mv: self.supply_mv.unwrap_or(0),
            firmware,
        })
    }
}

fn parse_firmware(text: &str) -> Option<FirmwareVersion> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(FirmwareVersion {
        major,
        minor,
        patch,
    })
}

/// A [`Command`] as JSON, tagged by `"type"`:
/// `{"type":"set_report_interval","interval_ms":5000}`, `{"type":"request_position"}`,
/// `{"type":"text","text":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandJson {
    /// [`Command::SetReportInterval`].
    SetReportInterval {
        /// Milliseconds between positions.
        interval_ms: u32,
    },
    /// [`Command::RequestPosition`].
    // A struct variant, not a unit one: serde ignores `deny_unknown_fields`
    // for unit variants of an internally tagged enum.
    RequestPosition {},
    /// [`Command::Text`].
    Text {
        /// The message for the driver, at most [`crate::MAX_TEXT_LEN`] bytes.
        text: String,
    },
}

impl From<&Command> for CommandJson {
    fn from(c: &Command) -> Self {
        match c {
            Command::SetReportInterval { interval_ms } => CommandJson::SetReportInterval {
                interval_ms: *interval_ms,
            },
            Command::RequestPosition => CommandJson::RequestPosition {},
            Command::Text(text) => CommandJson::Text {
                text: text.as_str().to_owned(),
            },
        }
    }
}

impl TryFrom<CommandJson> for Command {
    type Error = Error;

    /// Fails with [`Error::OutOfRange`] for a text longer than
    /// [`MAX_TEXT_LEN`] bytes or a zero report interval.
    fn try_from(c: CommandJson) -> Result<Self, Error> {
        match c {
            CommandJson::SetReportInterval { interval_ms: 0 } => {
                Err(Error::OutOfRange("interval_ms"))
            }
            CommandJson::SetReportInterval { interval_ms } => {
                Ok(Command::SetReportInterval { interval_ms })
            }
            CommandJson::RequestPosition {} => Ok(Command::RequestPosition),
            CommandJson::Text { text } => heapless::String::<MAX_TEXT_LEN>::try_from(text.as_str())
                .map(Command::Text)
                .map_err(|_| Error::OutOfRange("text")),
        }
    }
}

/// Decodes a position payload in either format; `now_ms` fills a JSON
/// position's missing time. Bad JSON is [`Error::Malformed`].
pub fn decode_position_any(payload: &[u8], now_ms: u64) -> Result<Position, Error> {
    match Format::detect(payload)? {
        Format::Postcard => decode::<Position>(payload),
        Format::Json => parse_json::<PositionJson>(payload)?.to_position(now_ms),
    }
}

/// Decodes a status payload in either format; `now_ms` fills a JSON status's missing time.
pub fn decode_status_any(payload: &[u8], now_ms: u64) -> Result<Status, Error> {
    match Format::detect(payload)? {
        Format::Postcard => decode::<Status>(payload),
        Format::Json => parse_json::<StatusJson>(payload)?.to_status(now_ms),
    }
}

/// Decodes a command payload in either format.
pub fn decode_command_any(payload: &[u8]) -> Result<Command, Error> {
    match Format::detect(payload)? {
        Format::Postcard => decode::<Command>(payload),
        Format::Json => Command::try_from(parse_json::<CommandJson>(payload)?),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(payload).map_err(|_| Error::Malformed)
}
