use fleetgate_wire::{Kind, Position};

use super::split_host_port;
use super::uplink::{json_form, postcard_bytes};
use super::vehicle::is_speeder;

#[test]
fn broker_addresses_split() {
    assert_eq!(
        split_host_port("127.0.0.1:1883").ok(),
        Some(("127.0.0.1".to_owned(), 1883))
    );
    assert_eq!(
        split_host_port("[::1]:1884").ok(),
        Some(("::1".to_owned(), 1884))
    );
    assert!(split_host_port("localhost").is_err());
    assert!(split_host_port("localhost:x").is_err());
}

#[test]
fn json_mode_reencodes_positions() {
    let p = Position {
        seq: 3,
        time_ms: 5,
        lat_e6: 1,
        lon_e6: 2,
        speed_cm_s: 0,
        heading: 0,
        flags: 0,
        odometer_m: None,
    };
    let json = json_form(Kind::Position, &postcard_bytes(&p)).unwrap_or_default();
    assert!(json.starts_with(br#"{"lat":1e-6"#) || json.starts_with(br#"{"lat":0.000001"#));
}

#[test]
fn speeders_are_the_share_asked_for_spread_over_the_fleet() {
    let speeders: Vec<usize> = (0..20).filter(|&i| is_speeder(i, 0.2)).collect();
    assert_eq!(speeders, [4, 9, 14, 19]);
    assert!(!(0..100).any(|i| is_speeder(i, 0.0)));
    assert!((0..100).all(|i| is_speeder(i, 1.0)));
}
