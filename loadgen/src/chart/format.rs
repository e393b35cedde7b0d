//! Numbers for people, to three significant digits: rates, counts, latencies.

/// A rate with a metric prefix: "950/s", "9.95 k/s", "1.2 M/s".
pub(super) fn format_rate(per_s: f64) -> String {
    format!("{}/s", format_count(per_s))
}

/// A count to three significant digits with a metric prefix: "950",
/// "9.95 k", "1.2 M".
pub(super) fn format_count(value: f64) -> String {
    for (scale, prefix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if value >= scale * 0.9995 {
            return format!("{} {prefix}", significant(value / scale));
        }
    }
    significant(value)
}

/// A latency in µs as µs, ms or s: "210 µs", "1.8 ms", "10 ms", "1.5 s".
pub(super) fn format_micros(micros: f64) -> String {
    if micros >= 999_500.0 {
        format!("{} s", significant(micros / 1e6))
    } else if micros >= 999.5 {
        format!("{} ms", significant(micros / 1e3))
    } else {
        format!("{} µs", significant(micros))
    }
}

/// Three significant digits (more decimals below 1), without trailing zeros.
pub(super) fn significant(value: f64) -> String {
    let decimals = match value.abs() {
        v if v >= 99.95 => 0,
        v if v >= 9.995 => 1,
        v if v >= 0.9995 => 2,
        _ => 3,
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}
