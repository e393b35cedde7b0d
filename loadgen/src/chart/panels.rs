//! The legend and the two panels, throughput and latency, drawn into an
//! [`Svg`] from a [`Table`]; each returns where the next content may start.

use super::axes::{LinearAxis, LogAxis};
use super::format::{format_count, format_micros, format_rate};
use super::svg::{shorten, text_width, Fill, Svg};
use super::table::{Latency, Table};
use super::*;

/// One distinct colour per broker: fleetgate teal and mosquitto purple (the
/// first broker whose name contains either), the rest from [`PALETTE`], then
/// from hues spread around the colour wheel.
pub(super) fn broker_colors(brokers: &[String]) -> Vec<String> {
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
pub(super) fn spread_color(n: usize) -> String {
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
pub(super) fn broker_legend(svg: &mut Svg, brokers: &[String], colors: &[String], y: f64) -> f64 {
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
pub(super) fn panel_heading(svg: &mut Svg, y: f64, heading: &str) -> f64 {
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
pub(super) fn groups_height(scenarios: usize, brokers: usize) -> f64 {
    scenarios as f64 * (GROUP_HEADER + brokers as f64 * ROW_HEIGHT + GROUP_GAP)
}

/// The scenario name above a group whose first bar starts at `top`, and the
/// broker names in front of its bars.
pub(super) fn group_labels(svg: &mut Svg, scenario: &str, brokers: &[String], top: f64) {
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
pub(super) fn throughput_panel(
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
pub(super) fn latency_panel(
    svg: &mut Svg,
    table: &Table,
    colors: &[String],
    rows: &[usize],
    y: f64,
) -> f64 {
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
pub(super) fn latency_row(
    svg: &mut Svg,
    axis: &LogAxis,
    latency: &Latency,
    color: &str,
    bar_y: f64,
    tooltip: &str,
) {
    let mut start = PLOT_LEFT;
    for (value, (_, opacity)) in latency.percentiles.iter().zip(PERCENTILES) {
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
pub(super) fn latency_text(latency: &Latency) -> String {
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
pub(super) fn percentile_legend(svg: &mut Svg, y: f64) {
    let mut x = MARGIN_LEFT;
    for (label, opacity) in PERCENTILES {
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

pub(super) fn no_data_line(svg: &mut Svg, heading: f64) -> f64 {
    svg.text(
        MARGIN_LEFT,
        heading + 22.0,
        &format!(r#"font-size="12" fill="{MUTED}""#),
        "no data",
    );
    heading + 36.0
}

pub(super) fn no_value(svg: &mut Svg, x: f64, y: f64) {
    svg.text(
        x,
        y,
        &format!(r#"font-size="11" fill="{MUTED}""#),
        "no data",
    );
}
