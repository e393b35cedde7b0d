//! The one position fixture: a valid fix that tests vary by sequence
//! number and, where a place matters, by coordinates; and the one status
//! fixture, numbered the same way.

use bytes::Bytes;
use fleetgate::config::geofence::{Circle, FenceConfig};
use fleetgate_wire::{encode, flags, FirmwareVersion, Position, Status, MAX_ENCODED_LEN};

/// Where a fixture vehicle is unless a test places it: Amsterdam, by the
/// Dam (latitude, longitude in millionths of a degree).
pub const HOME_E6: (i32, i32) = (52_373_100, 4_892_200);
/// The time of fix 0, ms since the Unix epoch; fix n is n seconds later.
pub const T0_MS: u64 = 1_795_000_000_000;

/// A valid fix: sequence number `seq`, at `(lat_e6, lon_e6)`, 50 km/h
/// (1 389 cm/s) heading 64, fix valid, ignition on, `seq` seconds after
/// [`T0_MS`].
pub fn fix(seq: u32, (lat_e6, lon_e6): (i32, i32)) -> Position {
    Position {
        seq,
        time_ms: T0_MS + u64::from(seq) * 1000,
        lat_e6,
        lon_e6,
        speed_cm_s: 1_389,
        heading: 64,
        flags: flags::FIX_VALID | flags::IGNITION,
        odometer_m: None,
    }
}

/// A circular geofence of `radius_m` centred on [`HOME_E6`].
pub fn fence_at_home(name: &str, radius_m: f64) -> FenceConfig {
    FenceConfig {
        name: name.into(),
        circle: Some(Circle {
            lat: f64::from(HOME_E6.0) / 1e6,
            lon: f64::from(HOME_E6.1) / 1e6,
            radius_m,
        }),
        ..Default::default()
    }
}

/// `p` as the postcard payload a device publishes on `v/<vid>/pos`.
pub fn encoded(p: &Position) -> Bytes {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    Bytes::copy_from_slice(encode(p, &mut buf).expect("a fixture position encodes"))
}

/// Fix `seq` at [`HOME_E6`], encoded.
pub fn position(seq: u32) -> Bytes {
    encoded(&fix(seq, HOME_E6))
}

/// Fix `seq` at `(lat_e6, lon_e6)`, encoded.
pub fn position_at(seq: u32, lat_e6: i32, lon_e6: i32) -> Bytes {
    encoded(&fix(seq, (lat_e6, lon_e6)))
}

/// Status number `k` of a vehicle: online, ignition on, half a second after
/// fix `k`, which is how a consumer tells it apart ([`status_number`]).
pub fn status_fix(k: u32) -> Status {
    Status {
        time_ms: T0_MS + u64::from(k) * 1000 + 500,
        online: true,
        ignition: true,
        supply_mv: 12_000 + (k % 1000) as u16,
        firmware: FirmwareVersion {
            major: 0,
            minor: 1,
            patch: 0,
        },
    }
}

/// Status `k` as the postcard payload a device publishes on `v/<vid>/status`.
pub fn status(k: u32) -> Bytes {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    Bytes::copy_from_slice(encode(&status_fix(k), &mut buf).expect("a fixture status encodes"))
}

/// The `k` of a [`status_fix`] from the `time_ms` the gateway reports.
pub fn status_number(time_ms: u64) -> Option<u32> {
    let since = time_ms.checked_sub(T0_MS + 500)?;
    (since % 1000 == 0).then(|| u32::try_from(since / 1000).ok())?
}
