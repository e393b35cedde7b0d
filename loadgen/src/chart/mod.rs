//! The chart of a comparison (`loadgen bench-report --svg`): result lines
//! in, one SVG document out.
//!
//! In: the [`ResultLine`]s of a results file, one per run of a scenario
//! against a broker (their schema: [`crate::results`]). Every line's
//! `scenario` and `broker` count (for the order of scenarios and the
//! brokers' colours); only bench lines ([`crate::results::BenchLine`]) are
//! drawn: `max_sustained_per_s` and `received_per_s` (messages/s), and
//! `max_sustained_latency_us` or `latency_us` (`p50`, `p99`, `p999` and
//! `max`, in µs). Any field may be missing or null; a line without a
//! non-blank `scenario` or `broker` is ignored, and so is a value that
//! cannot be drawn (a rate that is not a finite number ≥ 0, a latency that
//! is not above zero). Several lines for the same scenario and broker
//! merge: the later one's values win where it has them.
//!
//! Out: [`render_svg`], a self-contained SVG document (UTF-8 text, no
//! external fonts, CSS or scripts; `font-family="sans-serif"`), 900 px wide,
//! as tall as the number of scenarios and brokers needs:
//!
//! - the title and a legend of brokers, each in its own colour (fleetgate
//!   teal, mosquitto purple, any others from a small palette), in order of
//!   first appearance;
//! - "Throughput": one group of horizontal bars per scenario, one bar per
//!   broker, of `max_sustained_per_s` if it is a number, else
//!   `received_per_s`, each labelled with its value ("9.95 k/s");
//! - "Latency": per scenario with latencies, one row per broker on a log10
//!   axis (powers of ten, from at least 10 µs): a bar in three shades of the
//!   broker's colour up to p50, p99 and p99.9, a dark tick at the maximum,
//!   and the values as text beside the row.
//!
//! Scenarios keep their order of first appearance. With nothing to draw at
//! all the document says "no data". All text from the records is escaped
//! for XML; names too long for their column are shortened with "…" and kept
//! whole in the element's tooltip (`<title>`).
//!
//! Bound: the output grows linearly with scenarios × brokers (a few hundred
//! bytes per bar); nothing in the records can make it panic.
//!
//! # Layout
//!
//! - this file: [`render_svg`], the layout's constants and colours;
//! - `table`: the lines as a scenario × broker grid of what can be drawn;
//! - `panels`: the legend and the throughput and latency panels;
//! - `axes`: the linear and log10 axes;
//! - `format`: numbers for people ("9.95 k/s", "1.8 ms");
//! - `svg`: the elements of the document, XML escaping, shortened names.

use crate::results::ResultLine;

mod axes;
mod format;
mod panels;
mod svg;
mod table;
#[cfg(test)]
mod tests;

use panels::{broker_colors, broker_legend, latency_panel, throughput_panel};
use svg::{shorten, Svg};
use table::Table;

/// Width of the document, px.
const WIDTH: f64 = 900.0;
/// Left edge of titles, scenario names and legends.
const MARGIN_LEFT: f64 = 20.0;
/// Right edge of broker names in front of each bar.
const ROW_LABEL_RIGHT: f64 = 132.0;
/// Left edge of both plots.
const PLOT_LEFT: f64 = 140.0;
/// Right edge of the throughput plot; its bar labels go to the right of it.
const THROUGHPUT_RIGHT: f64 = 800.0;
/// Right edge of the latency plot; the values are written to the right of it.
const LATENCY_RIGHT: f64 = 640.0;
/// Left edge of the latency values column.
const LATENCY_TEXT_LEFT: f64 = 652.0;
/// Vertical space of one broker's bar.
const ROW_HEIGHT: f64 = 18.0;
/// Height of one bar inside its row.
const BAR_HEIGHT: f64 = 13.0;
/// Space above the first bar of a group, with the scenario name in it.
const GROUP_HEADER: f64 = 20.0;
/// Space below the last bar of a group.
const GROUP_GAP: f64 = 6.0;

/// Colours of brokers that are neither fleetgate nor mosquitto, in order.
const PALETTE: [&str; 6] = [
    "#2563eb", "#d97706", "#dc2626", "#db2777", "#65a30d", "#475569",
];
const FLEETGATE_COLOR: &str = "#0f766e";
const MOSQUITTO_COLOR: &str = "#7c3aed";
/// The maximum-latency tick, and the percentile legend's swatches.
const INK: &str = "#1f2937";
const MUTED: &str = "#6b7280";
const GRID: &str = "#e5e7eb";

/// The latency percentiles drawn as shaded bar segments, p50, p99 and
/// p99.9: legend label, fill opacity.
const PERCENTILES: [(&str, f64); 3] = [("p50", 1.0), ("p99", 0.55), ("p99.9", 0.25)];

/// One SVG document with two panels, throughput and latency, comparing the
/// brokers in `runs` per scenario (see the module docs for the record format
/// and the layout). Always a well-formed document: with nothing to draw it
/// says "no data". It starts with `<svg` and ends with `</svg>` and a newline.
pub fn render_svg(runs: &[ResultLine], title: &str) -> String {
    let table = Table::from_runs(runs);
    let colors = broker_colors(&table.brokers);
    let throughput = table.throughput_rows();
    let latency = table.latency_rows();

    let mut body = Svg::default();
    body.text(
        MARGIN_LEFT,
        30.0,
        r#"font-size="18" font-weight="bold""#,
        &shorten(title, 80),
    );
    if throughput.is_empty() && latency.is_empty() {
        body.text(
            WIDTH / 2.0,
            90.0,
            &format!(r#"font-size="16" text-anchor="middle" fill="{MUTED}""#),
            "no data",
        );
        return body.finish(130.0);
    }
    let mut y = broker_legend(&mut body, &table.brokers, &colors, 54.0);
    y = throughput_panel(&mut body, &table, &colors, &throughput, y);
    y = latency_panel(&mut body, &table, &colors, &latency, y);
    body.finish(y + 10.0)
}
