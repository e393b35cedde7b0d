//! Broker comparison charts (feature `runner`): benchmark results in, one
//! SVG document out.
//!
//! In: benchmark result records as JSON objects, one per run of a scenario
//! against a broker: `scenario` and `broker` (strings), `max_sustained_per_s`
//! and `received_per_s` (messages/s) and `latency_us` (an object with `p50`,
//! `p99`, `p999` and `max`, in µs). Any field may be missing or null; a
//! record without a `scenario` or `broker` string is ignored, and so is a
//! value that is not a finite number (a rate below zero, a latency at or
//! below zero). Several records for the same scenario and broker merge: the
//! later one's values win where it has them.
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

use std::fmt::Write as _;

use serde_json::Value;

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

/// The latency percentiles drawn as shaded bar segments: record key, legend
/// label, fill opacity.
const PERCENTILES: [(&str, &str, f64); 3] = [
    ("p50", "p50", 1.0),
    ("p99", "p99", 0.55),
    ("p999", "p99.9", 0.25),
];

/// One SVG document with two panels, throughput and latency, comparing the
/// brokers in `runs` per scenario (see the module docs for the record format
/// and the layout). Always a well-formed document: with nothing to draw it
/// says "no data". It starts with `<svg` and ends with `</svg>` and a newline.
pub fn render_svg(runs: &[Value], title: &str) -> String {
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

/// Latencies of one run, µs; only values above zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Latency {
    /// p50, p99, p99.9, in the order of [`PERCENTILES`].
    percentiles: [Option<f64>; 3],
    max: Option<f64>,
}

impl Latency {
    /// The `latency_us` object of a record, if it has any usable value.
    fn from_json(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let get = |key: &str| object.get(key).and_then(positive);
        let latency = Latency {
            percentiles: PERCENTILES.map(|(key, _, _)| get(key)),
            max: get("max"),
        };
        let any = latency.values().next().is_some();
        any.then_some(latency)
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.percentiles
            .iter()
            .chain([&self.max])
            .flatten()
            .copied()
    }

    /// Later values replace earlier ones where they exist.
    fn merge(&mut self, later: &Latency) {
        for (mine, theirs) in self.percentiles.iter_mut().zip(later.percentiles) {
            *mine = theirs.or(*mine);
        }
        self.max = later.max.or(self.max);
    }
}

/// What is known of one scenario against one broker.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Messages/s delivered.
    throughput: Option<f64>,
    latency: Option<Latency>,
}

/// The records as a scenario × broker grid, both in order of first appearance.
#[derive(Debug, Default)]
struct Table {
    scenarios: Vec<String>,
    brokers: Vec<String>,
    /// `cells[scenario][broker]`.
    cells: Vec<Vec<Cell>>,
}

impl Table {
    fn from_runs(runs: &[Value]) -> Self {
        let mut table = Table::default();
        for run in runs {
            let name = |key: &str| {
                run.get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
            };
            let (Some(scenario), Some(broker)) = (name("scenario"), name("broker")) else {
                continue;
            };
            let throughput = run
                .get("max_sustained_per_s")
                .and_then(non_negative)
                .or_else(|| run.get("received_per_s").and_then(non_negative));
            // A search's overall latency includes the steps that failed:
            // show the latency at its max sustained rate, as the throughput does.
            let latency = run
                .get("max_sustained_latency_us")
                .and_then(Latency::from_json)
                .or_else(|| run.get("latency_us").and_then(Latency::from_json));

            let s = table.scenario_index(scenario);
            let b = table.broker_index(broker);
            let Some(cell) = table.cells.get_mut(s).and_then(|row| row.get_mut(b)) else {
                continue;
            };
            cell.throughput = throughput.or(cell.throughput);
            match (&mut cell.latency, latency) {
                (Some(old), Some(new)) => old.merge(&new),
                (old, new) => *old = new.or(*old),
            }
        }
        table
    }

    fn scenario_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.scenarios.iter().position(|s| s == name) {
            return i;
        }
        self.scenarios.push(name.to_owned());
        self.cells.push(vec![Cell::default(); self.brokers.len()]);
        self.scenarios.len() - 1
    }

    fn broker_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.brokers.iter().position(|b| b == name) {
            return i;
        }
        self.brokers.push(name.to_owned());
        for row in &mut self.cells {
            row.push(Cell::default());
        }
        self.brokers.len() - 1
    }

    /// Scenarios (indices) where at least one broker has a throughput.
    fn throughput_rows(&self) -> Vec<usize> {
        self.rows_where(|cell| cell.throughput.is_some())
    }

    /// Scenarios (indices) where at least one broker has a latency.
    fn latency_rows(&self) -> Vec<usize> {
        self.rows_where(|cell| cell.latency.is_some())
    }

    fn rows_where(&self, has: impl Fn(&Cell) -> bool) -> Vec<usize> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().any(&has))
            .map(|(i, _)| i)
            .collect()
    }

    /// Cells of the given scenarios, every broker's.
    fn cells_of<'a>(&'a self, rows: &'a [usize]) -> impl Iterator<Item = &'a Cell> + 'a {
        rows.iter().filter_map(|&s| self.cells.get(s)).flatten()
    }
}

/// A finite number ≥ 0.
fn non_negative(value: &Value) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite() && *v >= 0.0)
}

/// A finite number > 0 (drawable on a log axis).
fn positive(value: &Value) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite() && *v > 0.0)
}

/// One distinct colour per broker: fleetgate teal and mosquitto purple (the
/// first broker whose name contains either), the rest from [`PALETTE`], then
/// from hues spread around the colour wheel.
fn broker_colors(brokers: &[String]) -> Vec<String> {
    let mut fixed: Vec<Option<&str>> = vec![None; brokers.len()];
    for (name, color) in [
        ("fleetgate", FLEETGATE_COLOR),
        ("mosquitto", MOSQUITTO_COLOR),
    ] {
        let first = brokers
            .iter()
            .enumerate()
            .find(|(i, b)| {
                fixed.get(*i).is_some_and(Option::is_none) && b.to_lowercase().contains(name)
            })
            .map(|(i, _)| i);
        if let Some(slot) = first.and_then(|i| fixed.get_mut(i)) {
            *slot = Some(color);
        }
    }
    let mut next = 0_usize;
    fixed
        .into_iter()
        .map(|color| match color {
            Some(color) => color.to_owned(),
            None => {
                let color = PALETTE
                    .get(next)
                    .map_or_else(|| spread_color(next), |c| (*c).to_owned());
                next += 1;
                color
            }
        })
        .collect()
}

/// A colour for the `n`th broker beyond the palette: golden-angle hues at a
/// fixed saturation and lightness, as `#rrggbb`.
fn spread_color(n: usize) -> String {
    let hue = (n as f64 * 137.508) % 360.0;
    let (s, l) = (0.6, 0.42);
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

/// The legend of brokers from `y` (baseline), wrapping at the right edge;
/// returns where the next content may start.
fn broker_legend(svg: &mut Svg, brokers: &[String], colors: &[String], y: f64) -> f64 {
    let mut x = MARGIN_LEFT;
    let mut y = y;
    for (broker, color) in brokers.iter().zip(colors) {
        let label = shorten(broker, 40);
        let width = 18.0 + text_width(&label, 12.0) + 20.0;
        if x > MARGIN_LEFT && x + width > WIDTH - MARGIN_LEFT {
            x = MARGIN_LEFT;
            y += 20.0;
        }
        svg.rect(x, y - 10.0, 12.0, 12.0, Fill::solid(color), Some(broker));
        svg.text(x + 18.0, y, r#"font-size="12""#, &label);
        x += width;
    }
    y + 12.0
}

/// A panel heading at `y` (top of the panel); returns the baseline below it.
fn panel_heading(svg: &mut Svg, y: f64, heading: &str) -> f64 {
    let baseline = y + 30.0;
    svg.text(
        MARGIN_LEFT,
        baseline,
        r#"font-size="15" font-weight="bold""#,
        heading,
    );
    baseline
}

/// Height of the groups of `scenarios` groups of `brokers` bars each.
fn groups_height(scenarios: usize, brokers: usize) -> f64 {
    scenarios as f64 * (GROUP_HEADER + brokers as f64 * ROW_HEIGHT + GROUP_GAP)
}

/// The scenario name above a group whose first bar starts at `top`, and the
/// broker names in front of its bars.
fn group_labels(svg: &mut Svg, scenario: &str, brokers: &[String], top: f64) {
    svg.text(
        MARGIN_LEFT,
        top - 6.0,
        r#"font-size="12" font-weight="bold""#,
        &shorten(scenario, 110),
    );
    for (i, broker) in brokers.iter().enumerate() {
        svg.text(
            ROW_LABEL_RIGHT,
            top + i as f64 * ROW_HEIGHT + 10.5,
            &format!(r#"font-size="11" text-anchor="end" fill="{MUTED}""#),
            &shorten(broker, 18),
        );
    }
}

/// The throughput panel from `y`; returns the bottom of what it drew.
fn throughput_panel(
    svg: &mut Svg,
    table: &Table,
    colors: &[String],
    rows: &[usize],
    y: f64,
) -> f64 {
    let heading = panel_heading(svg, y, "Throughput (messages/s delivered)");
    if rows.is_empty() {
        return no_data_line(svg, heading);
    }
    let max = table
        .cells_of(rows)
        .filter_map(|c| c.throughput)
        .fold(0.0, f64::max);
    let axis = LinearAxis::new(max, PLOT_LEFT, THROUGHPUT_RIGHT);

    let top = heading + 12.0;
    let bottom = top + groups_height(rows.len(), table.brokers.len());
    for tick in axis.ticks() {
        let x = axis.x(tick);
        svg.line(x, top, x, bottom, GRID, 1.0);
        svg.text(
            x,
            bottom + 14.0,
            &format!(r#"font-size="10" text-anchor="middle" fill="{MUTED}""#),
            &format_count(tick),
        );
    }
    svg.line(PLOT_LEFT, top, PLOT_LEFT, bottom, MUTED, 1.0);

    let mut group_top = top;
    for &s in rows {
        let (Some(scenario), Some(cells)) = (table.scenarios.get(s), table.cells.get(s)) else {
            continue;
        };
        let bars_top = group_top + GROUP_HEADER;
        group_labels(svg, scenario, &table.brokers, bars_top);
        for (i, ((cell, broker), color)) in cells.iter().zip(&table.brokers).zip(colors).enumerate()
        {
            let bar_y = bars_top + i as f64 * ROW_HEIGHT;
            let label_y = bar_y + 10.5;
            match cell.throughput {
                Some(rate) => {
                    let end = axis.x(rate);
                    let label = format_rate(rate);
                    let tooltip = format!("{scenario} · {broker}: {label}");
                    svg.rect(
                        PLOT_LEFT,
                        bar_y,
                        end - PLOT_LEFT,
                        BAR_HEIGHT,
                        Fill::solid(color),
                        Some(&tooltip),
                    );
                    svg.text(end + 5.0, label_y, r#"font-size="11""#, &label);
                }
                None => no_value(svg, PLOT_LEFT + 5.0, label_y),
            }
        }
        group_top = bars_top + table.brokers.len() as f64 * ROW_HEIGHT + GROUP_GAP;
    }
    bottom + 20.0
}

/// The latency panel from `y`; returns the bottom of what it drew.
fn latency_panel(svg: &mut Svg, table: &Table, colors: &[String], rows: &[usize], y: f64) -> f64 {
    let heading = panel_heading(svg, y, "Latency, publish → subscriber (log scale)");
    if rows.is_empty() {
        return no_data_line(svg, heading);
    }
    let values = || {
        table
            .cells_of(rows)
            .filter_map(|c| c.latency)
            .flat_map(|l| l.values().collect::<Vec<_>>())
    };
    let min = values().fold(f64::INFINITY, f64::min);
    let max = values().fold(0.0, f64::max);
    let axis = LogAxis::new(min, max, PLOT_LEFT, LATENCY_RIGHT);

    let legend_y = heading + 22.0;
    percentile_legend(svg, legend_y);
    let top = legend_y + 12.0;
    let bottom = top + groups_height(rows.len(), table.brokers.len());
    for (value, major) in axis.grid() {
        let x = axis.x(value);
        svg.line(x, top, x, bottom, GRID, if major { 1.0 } else { 0.5 });
        if major {
            svg.text(
                x,
                bottom + 14.0,
                &format!(r#"font-size="10" text-anchor="middle" fill="{MUTED}""#),
                &format_micros(value),
            );
        }
    }
    svg.line(PLOT_LEFT, top, PLOT_LEFT, bottom, MUTED, 1.0);

    let mut group_top = top;
    for &s in rows {
        let (Some(scenario), Some(cells)) = (table.scenarios.get(s), table.cells.get(s)) else {
            continue;
        };
        let bars_top = group_top + GROUP_HEADER;
        group_labels(svg, scenario, &table.brokers, bars_top);
        for (i, ((cell, broker), color)) in cells.iter().zip(&table.brokers).zip(colors).enumerate()
        {
            let bar_y = bars_top + i as f64 * ROW_HEIGHT;
            match &cell.latency {
                Some(latency) => {
                    let tooltip = format!("{scenario} · {broker}: {}", latency_text(latency));
                    latency_row(svg, &axis, latency, color, bar_y, &tooltip);
                }
                None => no_value(svg, PLOT_LEFT + 5.0, bar_y + 10.5),
            }
        }
        group_top = bars_top + table.brokers.len() as f64 * ROW_HEIGHT + GROUP_GAP;
    }
    bottom + 20.0
}

/// One broker's latencies: shaded segments up to p50, p99 and p99.9, a tick
/// at the maximum, and the values as text to the right of the plot.
fn latency_row(
    svg: &mut Svg,
    axis: &LogAxis,
    latency: &Latency,
    color: &str,
    bar_y: f64,
    tooltip: &str,
) {
    let mut start = PLOT_LEFT;
    for (value, (_, _, opacity)) in latency.percentiles.iter().zip(PERCENTILES) {
        let Some(value) = value else { continue };
        // A value below the axis still shows as a sliver.
        let end = axis.x(*value).max(PLOT_LEFT + 2.0);
        if end > start {
            svg.rect(
                start,
                bar_y,
                end - start,
                BAR_HEIGHT,
                Fill { color, opacity },
                Some(tooltip),
            );
            start = end;
        }
    }
    if let Some(max) = latency.max {
        let x = axis.x(max).max(PLOT_LEFT + 1.0);
        svg.line(x, bar_y - 2.0, x, bar_y + BAR_HEIGHT + 2.0, INK, 2.0);
    }
    svg.text(
        LATENCY_TEXT_LEFT,
        bar_y + 10.5,
        r#"font-size="10""#,
        &latency_text(latency),
    );
}

/// "210 µs / 1.8 ms / 5.2 ms, max 9.1 ms"; "–" for a missing percentile.
fn latency_text(latency: &Latency) -> String {
    let percentiles: Vec<String> = latency
        .percentiles
        .iter()
        .map(|v| v.map_or_else(|| "–".to_owned(), format_micros))
        .collect();
    let mut text = percentiles.join(" / ");
    if let Some(max) = latency.max {
        text.push_str(", max ");
        text.push_str(&format_micros(max));
    }
    text
}

/// The shades of the percentiles and the max tick, on one line at `y`, and
/// the header of the values column.
fn percentile_legend(svg: &mut Svg, y: f64) {
    let mut x = MARGIN_LEFT;
    for (_, label, opacity) in PERCENTILES {
        svg.rect(
            x,
            y - 10.0,
            22.0,
            12.0,
            Fill {
                color: INK,
                opacity,
            },
            None,
        );
        svg.text(x + 27.0, y, r#"font-size="11""#, &format!("≤ {label}"));
        x += 80.0;
    }
    svg.line(x + 6.0, y - 12.0, x + 6.0, y + 4.0, INK, 2.0);
    svg.text(x + 14.0, y, r#"font-size="11""#, "max");
    svg.text(
        LATENCY_TEXT_LEFT,
        y,
        &format!(r#"font-size="10" fill="{MUTED}""#),
        "p50 / p99 / p99.9, max",
    );
}

fn no_data_line(svg: &mut Svg, heading: f64) -> f64 {
    svg.text(
        MARGIN_LEFT,
        heading + 22.0,
        &format!(r#"font-size="12" fill="{MUTED}""#),
        "no data",
    );
    heading + 36.0
}

fn no_value(svg: &mut Svg, x: f64, y: f64) {
    svg.text(
        x,
        y,
        &format!(r#"font-size="11" fill="{MUTED}""#),
        "no data",
    );
}

/// A linear axis from 0 to a round number at or above the largest value.
struct LinearAxis {
    step: f64,
    top: f64,
    left: f64,
    right: f64,
}

impl LinearAxis {
    fn new(max: f64, left: f64, right: f64) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / 5.0);
        let top = (max / step).ceil().max(1.0) * step;
        LinearAxis {
            step,
            top,
            left,
            right,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.top / self.step).round() as usize;
        (0..=n).map(move |i| i as f64 * self.step)
    }

    fn x(&self, value: f64) -> f64 {
        let fraction = (value / self.top).clamp(0.0, 1.0);
        self.left + fraction * (self.right - self.left)
    }
}

/// The smallest of 1, 2, 5 × a power of ten at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// A log10 axis between two powers of ten: the largest at or below the
/// smallest value (at least 10¹ µs) and the smallest at or above the largest.
struct LogAxis {
    low_exp: i32,
    high_exp: i32,
    left: f64,
    right: f64,
}

impl LogAxis {
    fn new(min: f64, max: f64, left: f64, right: f64) -> Self {
        let exponent = |v: f64, round: fn(f64) -> f64, default: i32| {
            if v.is_finite() && v > 0.0 {
                round(v.log10()) as i32
            } else {
                default
            }
        };
        let low_exp = exponent(min, f64::floor, 1).max(1);
        let high_exp = exponent(max, f64::ceil, low_exp + 1).max(low_exp + 1);
        LogAxis {
            low_exp,
            high_exp,
            left,
            right,
        }
    }

    /// Grid lines as (value, is a power of ten): every power of ten (every
    /// few when there are many decades), and 2…9 × each when there are few.
    fn grid(&self) -> Vec<(f64, bool)> {
        let decades = self.high_exp - self.low_exp;
        let every = (decades + 9) / 10;
        let mut lines = Vec::new();
        for exp in (self.low_exp..=self.high_exp).step_by(every.max(1) as usize) {
            let power = 10_f64.powi(exp);
            lines.push((power, true));
            if decades <= 6 && exp < self.high_exp {
                lines.extend((2..10).map(|m| (f64::from(m) * power, false)));
            }
        }
        lines
    }

    fn x(&self, value: f64) -> f64 {
        let span = f64::from(self.high_exp - self.low_exp);
        let fraction = ((value.log10() - f64::from(self.low_exp)) / span).clamp(0.0, 1.0);
        let fraction = if fraction.is_nan() { 0.0 } else { fraction };
        self.left + fraction * (self.right - self.left)
    }
}

/// A rate with a metric prefix: "950/s", "9.95 k/s", "1.2 M/s".
fn format_rate(per_s: f64) -> String {
    format!("{}/s", format_count(per_s))
}

/// A count to three significant digits with a metric prefix: "950",
/// "9.95 k", "1.2 M".
fn format_count(value: f64) -> String {
    for (scale, prefix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if value >= scale * 0.9995 {
            return format!("{} {prefix}", significant(value / scale));
        }
    }
    significant(value)
}

/// A latency in µs as µs, ms or s: "210 µs", "1.8 ms", "10 ms", "1.5 s".
fn format_micros(micros: f64) -> String {
    if micros >= 999_500.0 {
        format!("{} s", significant(micros / 1e6))
    } else if micros >= 999.5 {
        format!("{} ms", significant(micros / 1e3))
    } else {
        format!("{} µs", significant(micros))
    }
}

/// Three significant digits (more decimals below 1), without trailing zeros.
fn significant(value: f64) -> String {
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

/// Rough width of `text` in a sans-serif font of `size` px.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.58
}

/// `text` cut to at most `max_chars` characters, ending in "…" if cut.
fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// `text` escaped for XML character data and attribute values; characters
/// XML 1.0 does not allow become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A fill colour (`#rrggbb`) and its opacity, 0 to 1.
#[derive(Clone, Copy)]
struct Fill<'a> {
    color: &'a str,
    opacity: f64,
}

impl<'a> Fill<'a> {
    fn solid(color: &'a str) -> Self {
        Fill {
            color,
            opacity: 1.0,
        }
    }
}

/// The elements of an SVG document; [`Svg::finish`] wraps them in `<svg>`.
#[derive(Default)]
struct Svg {
    body: String,
}

impl Svg {
    /// Text whose baseline starts at (`x`, `y`); `attributes` are trusted
    /// (constants of this module), `content` is escaped.
    fn text(&mut self, x: f64, y: f64, attributes: &str, content: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" {attributes}>{}</text>"#,
            escape(content)
        );
    }

    fn rect(
        &mut self,
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        fill: Fill<'_>,
        tooltip: Option<&str>,
    ) {
        let width = width.max(0.0);
        let _ = write!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="{}""#,
            fill.color
        );
        if fill.opacity < 1.0 {
            let _ = write!(self.body, r#" fill-opacity="{:.2}""#, fill.opacity);
        }
        match tooltip {
            Some(tooltip) => {
                let _ = writeln!(self.body, "><title>{}</title></rect>", escape(tooltip));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
        );
    }

    /// The document, `height` px tall, on a white background.
    fn finish(self, height: f64) -> String {
        let height = height.ceil();
        format!(
            concat!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" "#,
                r##"viewBox="0 0 {w} {h}" font-family="sans-serif" fill="#111827">"##,
                "\n",
                r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##,
                "\n{body}</svg>\n"
            ),
            w = WIDTH,
            h = height,
            body = self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let svg = render_svg(&sample(), "fleetgate vs mosquitto");
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
        let svg = render_svg(&runs, "<script>&");
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
            let svg = render_svg(&runs, "empty");
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
        let svg = render_svg(&runs, "single broker");
        assert_well_formed(&svg);
        assert!(svg.contains(">0/s<"));
        // A scenario without any value is left out of the panel.
        assert!(!svg.contains(">negative<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn one_panel_without_data_says_so() {
        let runs = [json!({"scenario": "s", "broker": "b", "received_per_s": 10.0})];
        let svg = render_svg(&runs, "t");
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
        let svg = render_svg(&runs, "many");
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
        let table = Table::from_runs(&runs);
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
}
