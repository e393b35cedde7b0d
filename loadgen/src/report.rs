//! `loadgen bench-report`: the side-by-side table of a comparison run.
//!
//! In: the [`ResultLine`]s `benches/compare.sh` collected ([`parse_lines`]
//! reads them; their schema is [`crate::results`]): `loadgen bench` and
//! `loadgen idle-conn` results, and the records it wraps (`{"scenario",
//! "broker", "ws": …}` from `ws-watch`, `{"scenario", "broker",
//! "bridge_bench": …}` from the bridge benchmark). Lines that are not JSON
//! objects are skipped, and so are lines without a `scenario` and a
//! `broker`; a value a line lacks is a "–".
//!
//! Out: a Markdown table (metric, one column per broker in order of
//! appearance, and the ratio of the second broker to the first when there
//! are two) and, through [`crate::chart`], an SVG chart. Bound: the lines
//! given; the table has a fixed number of rows per scenario.

pub use crate::results::parse_lines;
use crate::results::{
    BenchLine, ChurnLine, DrainLatencyLine, IdleConnLine, LatencyLine, PhaseBLine, ResultLine,
    StepLine, WsWatchLine,
};

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

/// A finite value (a missing one, or NaN, is none).
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// A count or an integer figure as a number for the table.
fn int<T: Into<u64>>(v: Option<T>) -> Option<f64> {
    v.map(|x| x.into() as f64)
}

fn kib_to_mib(v: Option<u64>) -> Option<f64> {
    int(v).map(|k| k / 1024.0)
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
pub fn metrics_of(run: &ResultLine) -> Vec<Metric> {
    match run {
        ResultLine::Ws(record) => ws_metrics(record.ws.as_ref()),
        ResultLine::BridgeBench(record) => drain_metrics(record.bridge_bench.phase_b.as_ref()),
        ResultLine::IdleConn(line) => idle_metrics(line),
        ResultLine::Churn(line) => churn_metrics(line),
        ResultLine::Conformance(line) => vec![
            metric(
                "MUST-close cases closed",
                Better::Higher,
                Unit::Count,
                Some(line.closed as f64),
            ),
            metric(
                "MUST-close cases tried",
                Better::Neither,
                Unit::Count,
                Some(line.cases as f64),
            ),
        ],
        ResultLine::Bench(line) => bench_metrics(line),
        ResultLine::SmqPut(line) => vec![
            metric(
                "SMQ: /put → consumer messages/s",
                Better::Higher,
                Unit::PerSecond,
                finite(Some(line.received_per_s)),
            ),
            metric(
                "SMQ: messages lost",
                Better::Lower,
                Unit::Count,
                Some(line.lost as f64),
            ),
        ],
        ResultLine::WsFanout(line) => vec![
            metric(
                "/message fan-out: deliveries/s",
                Better::Higher,
                Unit::PerSecond,
                finite(Some(line.delivered_per_s)),
            ),
            metric(
                "/message fan-out: deliveries lost",
                Better::Lower,
                Unit::Count,
                Some(line.lost as f64),
            ),
        ],
        ResultLine::SearchLoad(line) => vec![
            metric(
                "POST /search under load: searches/s",
                Better::Higher,
                Unit::PerSecond,
                finite(Some(line.searches_per_s)),
            ),
            metric(
                "POST /search under load: latency p99",
                Better::Lower,
                Unit::Micros,
                int(line.latency_us.as_ref().and_then(|l| l.p99)),
            ),
        ],
        ResultLine::Other(_) => bench_metrics(&BenchLine::default()),
    }
}

fn ws_metrics(ws: Option<&WsWatchLine>) -> Vec<Metric> {
    use Better::Lower;
    let received = ws.and_then(|w| w.fresh_received.as_ref());
    let fix = ws.and_then(|w| w.fresh_fix.as_ref());
    vec![
        metric(
            "WebSocket positions/s",
            Better::Higher,
            Unit::PerSecond,
            finite(ws.and_then(|w| w.positions_per_s)),
        ),
        metric(
            "WebSocket freshness p50 (now − received_ms)",
            Lower,
            Unit::Millis,
            int(received.and_then(|f| f.p50_ms)),
        ),
        metric(
            "WebSocket freshness p99",
            Lower,
            Unit::Millis,
            int(received.and_then(|f| f.p99_ms)),
        ),
        metric(
            "WebSocket device → browser p99 (now − time_ms)",
            Lower,
            Unit::Millis,
            int(fix.and_then(|f| f.p99_ms)),
        ),
        metric(
            "WebSocket frames lagged",
            Lower,
            Unit::Count,
            int(ws.and_then(|w| w.lagged)),
        ),
    ]
}

fn drain_metrics(b: Option<&PhaseBLine>) -> Vec<Metric> {
    use Better::{Higher, Lower, Neither};
    let p99 = |l: Option<&DrainLatencyLine>| int(l.and_then(|l| l.p99_ms));
    vec![
        metric(
            "backlog records",
            Neither,
            Unit::Count,
            int(b.and_then(|b| b.backlog_records)),
        ),
        metric(
            "drain rate, records/s",
            Higher,
            Unit::PerSecond,
            finite(b.and_then(|b| b.drain_per_s)),
        ),
        metric(
            "drain time from restore",
            Lower,
            Unit::Seconds,
            finite(b.and_then(|b| b.drain_s_from_restore)),
        ),
        metric(
            "drain rate ÷ live rate",
            Higher,
            Unit::Ratio,
            finite(b.and_then(|b| b.drain_over_live)),
        ),
        metric(
            "dashboard p99 before the outage ends",
            Lower,
            Unit::Millis,
            p99(b.and_then(|b| b.latency_before.as_ref())),
        ),
        metric(
            "dashboard p99 during the drain",
            Lower,
            Unit::Millis,
            p99(b.and_then(|b| b.latency_during_drain.as_ref())),
        ),
    ]
}

fn churn_metrics(run: &ChurnLine) -> Vec<Metric> {
    use Better::{Higher, Lower};
    // `many-filters` is the same tool with one connection per worker.
    let (rate, per) = if run.scenario.as_deref() == Some("many-filters") {
        ("subscribe + unsubscribe/s (a new filter each)", "filters")
    } else {
        ("churn: clients/s (fresh id, new filter each)", "clients")
    };
    vec![
        metric(
            rate,
            Higher,
            Unit::PerSecond,
            finite(Some(run.cycles_per_s)),
        ),
        metric(
            "subscriptions refused",
            Lower,
            Unit::Count,
            Some(run.refused as f64),
        ),
        metric(
            format!("RSS growth per 1 000 {per}"),
            Lower,
            Unit::KiB,
            finite(run.growth_kib_per_1000),
        ),
        metric(
            "a new client still receives (1 = yes)",
            Higher,
            Unit::Count,
            Some(if run.still_delivers { 1.0 } else { 0.0 }),
        ),
    ]
}

fn idle_metrics(run: &IdleConnLine) -> Vec<Metric> {
    use Better::{Higher, Lower, Neither};
    vec![
        metric(
            "connections held",
            Neither,
            Unit::Count,
            run.connected.map(|c| c as f64),
        ),
        metric(
            "RSS per idle connection",
            Lower,
            Unit::KiB,
            finite(run.kib_per_connection),
        ),
        metric(
            "connects/s",
            Higher,
            Unit::PerSecond,
            finite(run.connects_per_s),
        ),
        metric("RSS idle", Lower, Unit::MiB, kib_to_mib(run.rss_before_kib)),
        metric(
            "RSS with the connections",
            Lower,
            Unit::MiB,
            kib_to_mib(run.rss_after_kib),
        ),
    ]
}

/// CPU time per delivered message: `cpu_pct` % of a core over the run,
/// divided by the messages delivered per second.
fn cpu_per_message_us(cpu_pct: Option<f64>, per_s: Option<f64>) -> Option<f64> {
    let (cpu, rate) = (finite(cpu_pct)?, finite(per_s)?);
    (rate > 0.0).then(|| cpu / 100.0 * 1e6 / rate)
}

fn bench_metrics(run: &BenchLine) -> Vec<Metric> {
    use Better::{Higher, Lower, Neither};
    let steps: &[StepLine] = run.steps.as_deref().unwrap_or_default();
    let rss = run.rss_kib.as_ref();
    let rss_max = kib_to_mib(rss.and_then(|r| r.max));
    let latency =
        |l: Option<&LatencyLine>, pick: fn(&LatencyLine) -> Option<u64>| int(l.and_then(pick));
    if run.mode.as_deref() == Some("search") {
        let at_max = run.max_sustained_latency_us.as_ref();
        return vec![
            metric(
                "max sustained msg/s delivered (no loss, p99 under the limit)",
                Higher,
                Unit::PerSecond,
                finite(run.max_sustained_per_s),
            ),
            metric(
                "p50 at max sustained",
                Lower,
                Unit::Micros,
                latency(at_max, |l| l.p50),
            ),
            metric(
                "p99 at max sustained",
                Lower,
                Unit::Micros,
                latency(at_max, |l| l.p99),
            ),
            metric(
                "p99.9 at max sustained",
                Lower,
                Unit::Micros,
                latency(at_max, |l| l.p999),
            ),
            metric(
                "messages lost over the whole search",
                Lower,
                Unit::Count,
                int(run.lost),
            ),
            metric(
                "broker CPU over the search (100 = a core)",
                Neither,
                Unit::Percent,
                finite(run.cpu_pct),
            ),
            metric("broker RSS max", Lower, Unit::MiB, rss_max),
        ];
    }
    let slow = run.slow_subscribers.unwrap_or(0) > 0;
    if let (true, [first, .., last]) = (slow, steps) {
        return vec![
            metric(
                "readers' p99 before the stall",
                Lower,
                Unit::Micros,
                latency(first.latency_us.as_ref(), |l| l.p99),
            ),
            metric(
                "readers' p99 while one subscriber stalls",
                Lower,
                Unit::Micros,
                latency(last.latency_us.as_ref(), |l| l.p99),
            ),
            metric("readers' messages lost", Lower, Unit::Count, int(run.lost)),
            metric(
                "broker RSS before the stall",
                Lower,
                Unit::MiB,
                kib_to_mib(first.rss_max_kib),
            ),
            metric(
                "broker RSS max while stalled",
                Lower,
                Unit::MiB,
                kib_to_mib(last.rss_max_kib),
            ),
            metric(
                "delivered msg/s",
                Higher,
                Unit::PerSecond,
                finite(run.received_per_s),
            ),
        ];
    }
    let all = run.latency_us.as_ref();
    vec![
        metric(
            "delivered msg/s",
            Higher,
            Unit::PerSecond,
            finite(run.received_per_s),
        ),
        metric("latency p50", Lower, Unit::Micros, latency(all, |l| l.p50)),
        metric("latency p99", Lower, Unit::Micros, latency(all, |l| l.p99)),
        metric(
            "latency p99.9",
            Lower,
            Unit::Micros,
            latency(all, |l| l.p999),
        ),
        metric("latency max", Lower, Unit::Micros, latency(all, |l| l.max)),
        metric("messages lost", Lower, Unit::Count, int(run.lost)),
        metric(
            "publisher connects/s",
            Higher,
            Unit::PerSecond,
            finite(run.connects_per_s),
        ),
        metric(
            "broker CPU (100 = a core)",
            Lower,
            Unit::Percent,
            finite(run.cpu_pct),
        ),
        metric(
            "broker CPU per delivered message",
            Lower,
            Unit::Micros,
            cpu_per_message_us(run.cpu_pct, run.received_per_s),
        ),
        metric(
            "broker RSS idle, before the run",
            Lower,
            Unit::MiB,
            kib_to_mib(rss.and_then(|r| r.before)),
        ),
        metric("broker RSS max", Lower, Unit::MiB, rss_max),
    ]
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
pub fn comparison_table(runs: &[ResultLine]) -> String {
    let mut brokers: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    for run in runs {
        let (Some(s), Some(b)) = (run.scenario(), run.broker()) else {
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
                    .find(|r| r.scenario() == Some(scenario) && r.broker() == Some(b))
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
            let scenario = r.scenario()?;
            let broker = r.broker()?;
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
pub fn search_end(run: &ResultLine) -> Option<String> {
    let ResultLine::Bench(run) = run else {
        return None;
    };
    if run.mode.as_deref() != Some("search") {
        return None;
    }
    let steps = run.steps.as_ref()?;
    let failed = steps.iter().find_map(|s| {
        let why = s.failed_because.as_deref()?;
        let offered = finite(s.offered_per_s).unwrap_or(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The records as a results file holds them; what is not one is skipped.
    fn lines(values: Vec<Value>) -> Vec<ResultLine> {
        values
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    fn fan_in(broker: &str, rate: f64, p99: u64) -> Value {
        serde_json::json!({"scenario": "fan-in", "broker": broker, "mode": "fixed", "received_per_s": rate,
            "latency_us": {"p50": 100, "p99": p99, "p999": p99 * 2, "max": p99 * 3}, "lost": 0, "steps": [{}]})
    }

    #[test]
    fn table_puts_brokers_side_by_side_with_the_ratio() {
        let runs = lines(vec![
            fan_in("mosquitto", 10_000.0, 2_000),
            fan_in("fleetgate", 25_000.0, 1_000),
            serde_json::json!({"scenario": "idle-conn", "broker": "fleetgate", "connected": 100, "kib_per_connection": 0.9, "connects_per_s": 5000.0}),
            serde_json::json!("not a record"),
        ]);
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
        let runs = lines(vec![run]);
        let rows = runs.first().map(metrics_of).unwrap_or_default();
        assert_eq!(rows[0].value, Some(75_000.0));
        assert!(rows.iter().all(|r| !r.name.contains("ended")));
        let table = comparison_table(&runs);
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
