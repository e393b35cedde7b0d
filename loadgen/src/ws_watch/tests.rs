use super::reading::FrameIn;
use super::*;

#[test]
fn histogram_quantiles_and_max() {
    let mut h = Histogram::default();
    assert_eq!(h.quantile(0.5), None);
    for ms in 1..=100 {
        h.record(ms);
    }
    assert_eq!(h.quantile(0.5), Some(50));
    assert_eq!(h.quantile(0.99), Some(99));
    assert_eq!(h.max(), Some(100));
    h.record(HISTOGRAM_MAX_MS * 3);
    assert_eq!(h.max(), Some(HISTOGRAM_MAX_MS * 3));
    assert_eq!(h.quantile(1.0), Some(HISTOGRAM_MAX_MS));
    h.clear();
    assert_eq!(h.count(), 0);
}

#[test]
fn frames_parse_and_unknown_fields_are_skipped() {
    let text = r#"{"positions":[{"vehicle_id":"truck-1","seq":3,"time_ms":10,"lat":52.0,"lon":4.0,"speed_kmh":1.0,"received_ms":12}],"statuses":[{"x":1}],"events":[],"lagged":4}"#;
    let f: FrameIn = serde_json::from_str(text).unwrap();
    assert_eq!(f.positions.len(), 1);
    assert_eq!(f.positions[0].vehicle_id, "truck-1");
    assert_eq!(
        (f.positions[0].time_ms, f.positions[0].received_ms),
        (10, 12)
    );
    assert_eq!((f.statuses.len(), f.lagged, f.snapshot), (1, 4, false));
    let snap = r#"{"snapshot":true,"vehicles":[{"vehicle_id":"a","status":"online","position":null}],"positions":[],"statuses":[],"events":[]}"#;
    let f: FrameIn = serde_json::from_str(snap).unwrap();
    assert!(f.snapshot);
    assert_eq!(f.vehicles.map(|v| v.len()), Some(1));
}

#[test]
fn metric_values_are_found_by_exact_series() {
    let text = "# HELP x\nfleetgate_ws_clients 2\nfleetgate_ws_stalled_disconnects_total 1\nfleetgate_messages_decoded_total{kind=\"position\"} 12345\n";
    assert_eq!(metric_value(text, STALLED_SERIES), Some(1));
    assert_eq!(metric_value(text, "fleetgate_ws_clients"), Some(2));
    assert_eq!(
        metric_value(text, "fleetgate_messages_decoded_total{kind=\"position\"}"),
        Some(12345)
    );
    assert_eq!(metric_value(text, "fleetgate_ws"), None);
}
