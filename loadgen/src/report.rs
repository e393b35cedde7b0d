//! `firmware-sim bench-report`: the side-by-side table of a comparison run.
//!
//! In: the JSON lines `benches/compare.sh` collected: `firmware-sim bench`
//! results, `firmware-sim idle-conn` results, and wrapped records
//! (`{"scenario", "broker", "ws": …}` from `ws-watch`, `{"scenario",
//! "broker", "bridge_bench": …}` from the bridge benchmark). Lines that are
//! not JSON objects with a `scenario` and a `broker` are skipped. Out: a
//! Markdown table (metric, one column per broker in order of appearance,
//! and the ratio of the second broker to the first when there are two) and,
//! through [`crate::chart`], an SVG chart. Bound: the records given.

use serde_json::Value;

/// Whether a bigger value of a metric is better (for the reader, shown in its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    Neither,
}

/// One row of the table for one broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub better: Better,
    pub value: Option<f64>,
    /// How to print it.
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    PerSecond,
    Micros,
    Millis,
    Count,
    KiB,
    MiB,
    Percent,
    Ratio,
    Seconds,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut at = v;
    for key in path {
        at = at.get(key)?;
    }
    at.as_f64().filter(|x| x.is_finite())
}

fn metric(name: impl Into<String>, better: Better, unit: Unit, value: Option<f64>) -> Metric {
    Metric {
        name: name.into(),
        better,
        value,
        unit,
    }
}

/// The rows one record contributes, by the kind of record it is.
pub fn metrics_of(run: &Value) -> Vec<Metric> {
    use Better::{Higher, Lower, Neither};
    let mut rows = Vec::new();
    if let Some(ws) = run.get("ws") {
        rows.push(metric(
            "WebSocket positions/s",
            Higher,
            Unit::PerSecond,
            num(ws, &["positions_per_s"]),
        ));
        rows.push(metric(
            "WebSocket freshness p50 (now − received_ms)",
            Lower,
            Unit::Millis,
            num(ws, &["fresh_received", "p50_ms"]),
        ));
        rows.push(metric(
            "WebSocket freshness p99",
            Lower,
            Unit::Millis,
            num(ws, &["fresh_received", "p99_ms"]),
        ));
        rows.push(metric(
            "WebSocket device → browser p99 (now − time_ms)",
            Lower,
            Unit::Millis,
            num(ws, &["fresh_fix", "p99_ms"]),
        ));
        rows.push(metric(
            "WebSocket frames lagged",
            Lower,
            Unit::Count,
            num(ws, &["lagged"]),
        ));
        return rows;
    }
    if let Some(b) = run.get("bridge_bench").and_then(|b| b.get("phase_b")) {
        rows.push(metric(
            "backlog records",
            Neither,
            Unit::Count,
            num(b, &["backlog_records"]),
        ));
        rows.push(metric(
            "drain rate, records/s",
            Higher,
            Unit::PerSecond,
            num(b, &["drain_per_s"]),
        ));
        rows.push(metric(
            "drain time from restore",
            Lower,
            Unit::Seconds,
            num(b, &["drain_s_from_restore"]),
        ));
        rows.push(metric(
            "drain rate ÷ live rate",
            Higher,
            Unit::Ratio,
            num(b, &["drain_over_live"]),
        ));
        rows.push(metric(
            "dashboard p99 before the outage ends",
            Lower,
            Unit::Millis,
            num(b, &["latency_before", "p99_ms"]),
        ));
        rows.push(metric(
            "dashboard p99 during the drain",
            Lower,
            Unit::Millis,
            num(b, &["latency_during_drain", "p99_ms"]),
        ));
        return rows;
    }
    if run.get("kib_per_connection").is_some() {
        let connected = num(run, &["connected"]);
        rows.push(metric("connections held", Neither, Unit::Count, connected));
        rows.push(metric(
            "RSS per idle connection",
            Lower,
            Unit::KiB,
            num(run, &["kib_per_connection"]),
        ));
        rows.push(metric(
            "connects/s",
            Higher,
            Unit::PerSecond,
            num(run, &["connects_per_s"]),
        ));
        rows.push(metric(
            "RSS idle",
            Lower,
            Unit::MiB,
            num(run, &["rss_before_kib"]).map(|k| k / 1024.0),
        ));
        rows.push(metric(
            "RSS with the connections",
            Lower,
            Unit::MiB,
            num(run, &["rss_after_kib"]).map(|k| k / 1024.0),
        ));
        return rows;
    }
    let steps: Vec<&Value> = run
        .get("steps")
        .and_then(Value::as_array)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let mode = run.get("mode").and_then(Value::as_str).unwrap_or("");
    let rss_max = num(run, &["rss_kib", "max"]).map(|k| k / 1024.0);
    if mode == "search" {
        rows.push(metric(
            "max sustained msg/s delivered (no loss, p99 under the limit)",
            Higher,
            Unit::PerSecond,
            num(run, &["max_sustained_per_s"]),
        ));
        rows.push(metric(
            "p50 at max sustained",
            Lower,
            Unit::Micros,
            num(run, &["max_sustained_latency_us", "p50"]),
        ));
        rows.push(metric(
            "p99 at max sustained",
            Lower,
            Unit::Micros,
            num(run, &["max_sustained_latency_us", "p99"]),
        ));
        rows.push(metric(
            "p99.9 at max sustained",
            Lower,
            Unit::Micros,
            num(run, &["max_sustained_latency_us", "p999"]),
        ));
        rows.push(metric(
            "messages lost over the whole search",
            Lower,
            Unit::Count,
            num(run, &["lost"]),
        ));
        rows.push(metric(
            "broker CPU over the search (100 = a core)",
            Neither,
            Unit::Percent,
            num(run, &["cpu_pct"]),
        ));
        rows.push(metric("broker RSS max", Lower, Unit::MiB, rss_max));
        return rows;
    }
    let slow = num(run, &["slow_subscribers"]).unwrap_or(0.0) > 0.0;
    if slow && steps.len() >= 2 {
        rows.push(metric(
            "readers' p99 before the stall",
            Lower,
            Unit::Micros,
            num(steps[0], &["latency_us", "p99"]),
        ));
        rows.push(metric(
            "readers' p99 while one subscriber stalls",
            Lower,
            Unit::Micros,
            num(steps[steps.len() - 1], &["latency_us", "p99"]),
        ));
        rows.push(metric(
            "readers' messages lost",
            Lower,
            Unit::Count,
            num(run, &["lost"]),
        ));
        let before = num(steps[0], &["rss_max_kib"]);
        let during = num(steps[steps.len() - 1], &["rss_max_kib"]);
        rows.push(metric(
            "broker RSS before the stall",
            Lower,
            Unit::MiB,
            before.map(|k| k / 1024.0),
        ));
        rows.push(metric(
            "broker RSS max while stalled",
            Lower,
            Unit::MiB,
            during.map(|k| k / 1024.0),
        ));
        rows.push(metric(
            "delivered msg/s",
            Higher,
            Unit::PerSecond,
            num(run, &["received_per_s"]),
        ));
        return rows;
    }
    rows.push(metric(
        "delivered msg/s",
        Higher,
        Unit::PerSecond,
        num(run, &["received_per_s"]),
    ));
    rows.push(metric(
        "latency p50",
        Lower,
        Unit::Micros,
        num(run, &["latency_us", "p50"]),
    ));
    rows.push(metric(
        "latency p99",
        Lower,
        Unit::Micros,
        num(run, &["latency_us", "p99"]),
    ));
    rows.push(metric(
        "latency p99.9",
        Lower,
        Unit::Micros,
        num(run, &["latency_us", "p999"]),
    ));
    rows.push(metric(
        "latency max",
        Lower,
        Unit::Micros,
        num(run, &["latency_us", "max"]),
    ));
    rows.push(metric(
        "messages lost",
        Lower,
        Unit::Count,
        num(run, &["lost"]),
    ));
    rows.push(metric(
        "publisher connects/s",
        Higher,
        Unit::PerSecond,
        num(run, &["connects_per_s"]),
    ));
    rows.push(metric(
        "broker CPU (100 = a core)",
        Lower,
        Unit::Percent,
        num(run, &["cpu_pct"]),
    ));
    rows.push(metric(
        "broker RSS idle, before the run",
        Lower,
        Unit::MiB,
        num(run, &["rss_kib", "before"]).map(|k| k / 1024.0),
    ));
    rows.push(metric("broker RSS max", Lower, Unit::MiB, rss_max));
    rows
}

/// A value for people: 12 345/s, 1.8 ms, 4.56 KiB …
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::PerSecond => format!("{}/s", group_thousands(value.round())),
        Unit::Micros if value >= 10_000.0 => format!("{:.0} ms", value / 1000.0),
        Unit::Micros if value >= 1_000.0 => format!("{:.1} ms", value / 1000.0),
        Unit::Micros => format!("{value:.0} µs"),
        Unit::Millis => format!("{value:.0} ms"),
        Unit::Count => group_thousands(value.round()),
        Unit::KiB => format!("{value:.2} KiB"),
        Unit::MiB => format!("{value:.1} MiB"),
        Unit::Percent => format!("{value:.0} %"),
        Unit::Ratio => format!("{value:.1}×"),
        Unit::Seconds => format!("{value:.1} s"),
    }
}

fn group_thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// The Markdown table of every scenario, brokers side by side.
pub fn comparison_table(runs: &[Value]) -> String {
    let mut brokers: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    for run in runs {
        let (Some(s), Some(b)) = (
            run.get("scenario").and_then(Value::as_str),
            run.get("broker").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !scenarios.iter().any(|x| x == s) {
            scenarios.push(s.to_owned());
        }
        if !brokers.iter().any(|x| x == b) {
            brokers.push(b.to_owned());
        }
    }
    if brokers.is_empty() {
        return "no results\n".to_owned();
    }
    let with_ratio = brokers.len() == 2;
    let mut out = String::from("| scenario | metric |");
    for b in &brokers {
        out.push_str(&format!(" {b} |"));
    }
    if with_ratio {
        out.push_str(&format!(" {} ÷ {} |", brokers[1], brokers[0]));
    }
    out.push_str("\n|---|---|");
    for _ in &brokers {
        out.push_str("---:|");
    }
    if with_ratio {
        out.push_str("---:|");
    }
    out.push('\n');
    for scenario in &scenarios {
        // The last record of each broker for this scenario wins.
        let per_broker: Vec<Option<Vec<Metric>>> = brokers
            .iter()
            .map(|b| {
                runs.iter()
                    .rev()
                    .find(|r| {
                        r.get("scenario").and_then(Value::as_str) == Some(scenario)
                            && r.get("broker").and_then(Value::as_str) == Some(b)
                    })
                    .map(metrics_of)
            })
            .collect();
        let Some(names) = per_broker.iter().flatten().next().cloned() else {
            continue;
        };
        for (i, row) in names.iter().enumerate() {
            let hint = match row.better {
                Better::Higher => " (↑)",
                Better::Lower => " (↓)",
                Better::Neither => "",
            };
            out.push_str(&format!("| {scenario} | {}{hint} |", row.name));
            let values: Vec<Option<f64>> = per_broker
                .iter()
                .map(|m| {
                    m.as_ref()
                        .and_then(|m| m.get(i))
                        .filter(|m| m.name == row.name)
                        .and_then(|m| m.value)
                })
                .collect();
            for v in &values {
                let cell = v.map_or_else(|| "–".to_owned(), |v| format_value(v, row.unit));
                out.push_str(&format!(" {cell} |"));
            }
            if with_ratio {
                let ratio = match (values[0], values[1]) {
                    (Some(a), Some(b)) if a != 0.0 && row.unit != Unit::Count => {
                        format!("{:.2}", b / a)
                    }
                    _ => "–".to_owned(),
                };
                out.push_str(&format!(" {ratio} |"));
            }
            out.push('\n');
        }
    }
    let ends: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let why = search_end(r)?;
            let scenario = r.get("scenario").and_then(Value::as_str)?;
            let broker = r.get("broker").and_then(Value::as_str)?;
            Some(format!("- {scenario}, {broker}: {why}\n"))
        })
        .collect();
    if !ends.is_empty() {
        out.push_str("\nWhere each search stopped (the step after the max sustained rate):\n\n");
        out.extend(ends);
    }
    out
}

/// Why a search run stopped: its failing step's reason, or that it ran out of steps.
pub fn search_end(run: &Value) -> Option<String> {
    if run.get("mode").and_then(Value::as_str) != Some("search") {
        return None;
    }
    let steps = run.get("steps").and_then(Value::as_array)?;
    let failed = steps.iter().find_map(|s| {
        let why = s.get("failed_because").and_then(Value::as_str)?;
        let offered = num(s, &["offered_per_s"]).unwrap_or(0.0);
        Some(format!(
            "at {} offered, {why}",
            format_value(offered, Unit::PerSecond)
        ))
    });
    Some(
        failed
            .unwrap_or_else(|| "every step passed (raise --max-steps to search higher)".to_owned()),
    )
}

/// Parses JSON lines, skipping blanks and anything that is not an object.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan_in(broker: &str, rate: f64, p99: u64) -> Value {
        serde_json::json!({"scenario": "fan-in", "broker": broker, "mode": "fixed", "received_per_s": rate,
            "latency_us": {"p50": 100, "p99": p99, "p999": p99 * 2, "max": p99 * 3}, "lost": 0, "steps": [{}]})
    }

    #[test]
    fn table_puts_brokers_side_by_side_with_the_ratio() {
        let runs = vec![
            fan_in("mosquitto", 10_000.0, 2_000),
            fan_in("fleetgate", 25_000.0, 1_000),
            serde_json::json!({"scenario": "idle-conn", "broker": "fleetgate", "connected": 100, "kib_per_connection": 0.9, "connects_per_s": 5000.0}),
            serde_json::json!("not a record"),
        ];
        let table = comparison_table(&runs);
        assert!(
            table.starts_with(
                "| scenario | metric | mosquitto | fleetgate | fleetgate ÷ mosquitto |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| fan-in | delivered msg/s (↑) | 10\u{202f}000/s | 25\u{202f}000/s | 2.50 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| fan-in | latency p99 (↓) | 2.0 ms | 1.0 ms | 0.50 |"),
            "{table}"
        );
        // A scenario only one broker ran shows a dash for the other.
        assert!(
            table.contains("| idle-conn | RSS per idle connection (↓) | – | 0.90 KiB | – |"),
            "{table}"
        );
    }

    #[test]
    fn search_runs_report_the_max_sustained_rate_and_why_the_search_ended() {
        let run = serde_json::json!({"scenario": "fan-out", "broker": "b", "mode": "search", "max_sustained_per_s": 75_000.0,
            "max_sustained_latency_us": {"p50": 900, "p99": 11_000, "p999": 13_000, "max": 16_000},
            "steps": [{"failed_because": null}, {"failed_because": "p99 above 50 ms"}]});
        let rows = metrics_of(&run);
        assert_eq!(rows[0].value, Some(75_000.0));
        assert!(rows.iter().all(|r| !r.name.contains("ended")));
        let table = comparison_table(&[run]);
        assert!(
            table.contains("- fan-out, b: at 0/s offered, p99 above 50 ms"),
            "{table}"
        );
    }

    #[test]
    fn lines_that_are_not_objects_are_skipped() {
        assert_eq!(parse_lines("{\"a\":1}\n\nRESULT x\n[1]\n").len(), 1);
        assert_eq!(comparison_table(&[]), "no results\n");
    }
}
