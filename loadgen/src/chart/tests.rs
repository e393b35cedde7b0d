use super::axes::{nice_step, LinearAxis, LogAxis};
use super::format::{format_count, format_micros, format_rate};
use super::panels::broker_colors;
use super::svg::escape;
use super::table::Table;
use super::*;
use serde_json::{json, Value};

/// The records as a results file holds them; what is not one is skipped.
fn lines(values: &[Value]) -> Vec<ResultLine> {
    values
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// Checks the shape of the document: one `<svg>` root, every tag closed
/// in order, no stray `<` or `&` in text.
fn assert_well_formed(svg: &str) {
    assert!(svg.starts_with("<svg"), "starts with: {:?}", &svg[..20]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start]);
        let Some(len) = rest[start..].find('>') else {
            panic!("unclosed tag at {:?}", &rest[start..]);
        };
        let tag = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "mismatched </{name}>");
            continue;
        }
        let name = tag.split_whitespace().next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad tag name in <{tag}>"
        );
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        assert!(!tag.contains('<'), "'<' inside <{tag}>");
        if open.is_empty() {
            roots += 1;
        }
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    check_text(rest);
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert_eq!(roots, 1, "one root element");
}

/// Text between tags: every `&` starts a known entity.
fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "bare & in {text:?}"
        );
    }
}

fn sample() -> Vec<Value> {
    vec![
        json!({"scenario": "fan-in", "broker": "mosquitto", "received_per_s": 9950.0,
               "max_sustained_per_s": null,
               "latency_us": {"p50": 210, "p99": 1800, "p999": 5200, "max": 9100}}),
        json!({"scenario": "fan-in", "broker": "fleetgate", "received_per_s": 9990.0,
               "max_sustained_per_s": 48000.0,
               "latency_us": {"p50": 150, "p99": 900, "p999": 2100, "max": 4000}}),
        json!({"scenario": "fan-out", "broker": "fleetgate", "received_per_s": 1_200_000.0,
               "latency_us": {"p50": 80, "p99": 400, "p999": 1200, "max": 30000}}),
        json!({"scenario": "fan-out", "broker": "mosquitto", "received_per_s": 640_000.0}),
    ]
}

#[test]
fn renders_every_scenario_and_broker_in_a_well_formed_document() {
    let svg = render_svg(&lines(&sample()), "fleetgate vs mosquitto");
    assert_well_formed(&svg);
    for name in [
        "fan-in",
        "fan-out",
        "fleetgate",
        "mosquitto",
        "fleetgate vs mosquitto",
    ] {
        assert!(svg.contains(name), "missing {name}");
    }
    assert!(svg.contains("Throughput (messages/s delivered)"));
    assert!(svg.contains("Latency, publish → subscriber (log scale)"));
    // max_sustained_per_s wins over received_per_s.
    assert!(svg.contains(">48 k/s<"));
    assert!(svg.contains(">9.95 k/s<"));
    assert!(svg.contains(">1.2 M/s<"));
    assert!(svg.contains(FLEETGATE_COLOR) && svg.contains(MOSQUITTO_COLOR));
    // Axis from 10 µs (below the 80 µs p50) to 100 ms (above the 30 ms max).
    assert!(svg.contains(">10 µs<") && svg.contains(">100 ms<"));
    assert!(!svg.contains(">1 µs<") && !svg.contains(">1 s<"));
}

#[test]
fn escapes_names_and_title() {
    let runs = [json!({"scenario": "a<b&c", "broker": "\"q\" 'b' >x",
                       "received_per_s": 5.0})];
    let svg = render_svg(&lines(&runs), "<script>&");
    assert_well_formed(&svg);
    assert!(svg.contains("a&lt;b&amp;c"));
    assert!(!svg.contains("a<b"));
    assert!(svg.contains("&quot;q&quot; &apos;b&apos; &gt;x"));
    assert!(svg.contains("&lt;script&gt;&amp;"));
    assert!(!svg.contains("<script"));
    assert_eq!(escape("x\u{1}y"), "x\u{fffd}y");
}

#[test]
fn no_data_is_a_valid_document_saying_so() {
    for runs in [
        vec![],
        vec![json!({"broker": "mosquitto", "received_per_s": 1.0})],
        vec![json!({"scenario": "s", "received_per_s": 1.0})],
        vec![json!({"scenario": 3, "broker": null})],
        vec![json!("not an object"), json!(null)],
        vec![
            json!({"scenario": "s", "broker": "b", "received_per_s": null,
                    "latency_us": {"p50": 0, "p99": -3, "max": "slow"}}),
        ],
    ] {
        let svg = render_svg(&lines(&runs), "empty");
        assert_well_formed(&svg);
        assert!(svg.contains(">no data<"), "{svg}");
        assert!(!svg.contains("Throughput"));
    }
}

#[test]
fn odd_values_are_skipped_or_drawn_without_panicking() {
    let runs = [
        json!({"scenario": "zero", "broker": "only", "received_per_s": 0.0,
               "latency_us": {"p50": 0, "p99": 3, "p999": null, "max": -1}}),
        json!({"scenario": "negative", "broker": "only", "received_per_s": -5.0,
               "max_sustained_per_s": "fast"}),
        json!({"scenario": "huge", "broker": "only", "max_sustained_per_s": 1e300,
               "latency_us": {"p50": 1e-3, "p99": 1e300}}),
    ];
    let svg = render_svg(&lines(&runs), "single broker");
    assert_well_formed(&svg);
    assert!(svg.contains(">0/s<"));
    // A scenario without any value is left out of the panel.
    assert!(!svg.contains(">negative<"));
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn one_panel_without_data_says_so() {
    let runs = [json!({"scenario": "s", "broker": "b", "received_per_s": 10.0})];
    let svg = render_svg(&lines(&runs), "t");
    assert_well_formed(&svg);
    assert!(svg.contains(">10/s<"));
    assert_eq!(svg.matches(">no data<").count(), 1, "latency panel: {svg}");
}

#[test]
fn brokers_get_distinct_colours_in_order_of_appearance() {
    let brokers: Vec<String> = ["emqx", "Fleetgate-edge", "mosquitto", "fleetgate-2"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain((0..12).map(|i| format!("b{i}")))
        .collect();
    let colors = broker_colors(&brokers);
    assert_eq!(colors.len(), brokers.len());
    assert_eq!(colors.get(1).map(String::as_str), Some(FLEETGATE_COLOR));
    assert_eq!(colors.get(2).map(String::as_str), Some(MOSQUITTO_COLOR));
    let mut unique = colors.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), colors.len(), "{colors:?}");
    assert!(colors.iter().all(|c| c.len() == 7 && c.starts_with('#')));

    let runs: Vec<Value> = brokers
        .iter()
        .map(|b| json!({"scenario": "s", "broker": b, "received_per_s": 1.0}))
        .collect();
    let svg = render_svg(&lines(&runs), "many");
    assert_well_formed(&svg);
    let emqx = svg.find(">emqx<");
    let fleetgate = svg.find(">Fleetgate-edge<");
    assert!(emqx.is_some() && emqx < fleetgate);
}

#[test]
fn later_records_override_earlier_values() {
    let runs = [
        json!({"scenario": "s", "broker": "b", "received_per_s": 10.0,
               "latency_us": {"p50": 100, "max": 900}}),
        json!({"scenario": "s", "broker": "b", "received_per_s": 20.0,
               "latency_us": {"p50": 200}}),
    ];
    let table = Table::from_runs(&lines(&runs));
    let cell = table.cells.first().and_then(|r| r.first()).copied();
    let cell = cell.unwrap_or_default();
    assert_eq!(cell.throughput, Some(20.0));
    let latency = cell.latency.unwrap_or_default();
    assert_eq!(latency.percentiles, [Some(200.0), None, None]);
    assert_eq!(latency.max, Some(900.0));
}

#[test]
fn formats_rates_and_latencies() {
    assert_eq!(format_rate(9950.0), "9.95 k/s");
    assert_eq!(format_rate(1_200_000.0), "1.2 M/s");
    assert_eq!(format_rate(950.0), "950/s");
    assert_eq!(format_rate(999.7), "1 k/s");
    assert_eq!(format_rate(123_456.0), "123 k/s");
    assert_eq!(format_count(0.0), "0");
    assert_eq!(format_micros(100.0), "100 µs");
    assert_eq!(format_micros(1000.0), "1 ms");
    assert_eq!(format_micros(10_000.0), "10 ms");
    assert_eq!(format_micros(1800.0), "1.8 ms");
    assert_eq!(format_micros(2_500_000.0), "2.5 s");
    assert_eq!(format_micros(4.5), "4.5 µs");
}

#[test]
fn log_axis_spans_powers_of_ten_from_at_least_10_us() {
    let axis = LogAxis::new(210.0, 9100.0, 0.0, 100.0);
    assert_eq!((axis.low_exp, axis.high_exp), (2, 4));
    let axis = LogAxis::new(3.0, 10.0, 0.0, 100.0);
    assert_eq!((axis.low_exp, axis.high_exp), (1, 2));
    let axis = LogAxis::new(1000.0, 1000.0, 0.0, 100.0);
    assert_eq!((axis.low_exp, axis.high_exp), (3, 4));
    assert!((axis.x(1000.0) - 0.0).abs() < 1e-9);
    assert!((axis.x(10_000.0) - 100.0).abs() < 1e-9);
    assert!((axis.x(0.0) - 0.0).abs() < 1e-9);
}

#[test]
fn linear_axis_ends_on_a_round_number() {
    let axis = LinearAxis::new(48_000.0, 0.0, 100.0);
    assert_eq!(axis.top, 50_000.0);
    assert_eq!(axis.ticks().count(), 6);
    assert_eq!(nice_step(1.3), 2.0);
    assert_eq!(nice_step(0.0), 1.0);
}
