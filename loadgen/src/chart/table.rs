//! The records as a scenario × broker grid: what the chart draws, read
//! leniently (a missing or odd value is left out, never a panic).

use crate::results::{LatencyLine, ResultLine};

/// Latencies of one run, µs; only values above zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Latency {
    /// p50, p99, p99.9, in the order of [`PERCENTILES`](super::PERCENTILES).
    pub(super) percentiles: [Option<f64>; 3],
    pub(super) max: Option<f64>,
}

impl Latency {
    /// The `latency_us` of a record, if it has any usable value.
    pub(super) fn from_line(line: &LatencyLine) -> Option<Self> {
        let latency = Latency {
            percentiles: [line.p50, line.p99, line.p999].map(positive),
            max: positive(line.max),
        };
        let any = latency.values().next().is_some();
        any.then_some(latency)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.percentiles
            .iter()
            .chain([&self.max])
            .flatten()
            .copied()
    }

    /// Later values replace earlier ones where they exist.
    pub(super) fn merge(&mut self, later: &Latency) {
        for (mine, theirs) in self.percentiles.iter_mut().zip(later.percentiles) {
            *mine = theirs.or(*mine);
        }
        self.max = later.max.or(self.max);
    }
}

/// What is known of one scenario against one broker.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cell {
    /// Messages/s delivered.
    pub(super) throughput: Option<f64>,
    pub(super) latency: Option<Latency>,
}

/// The records as a scenario × broker grid, both in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) scenarios: Vec<String>,
    pub(super) brokers: Vec<String>,
    /// `cells[scenario][broker]`.
    pub(super) cells: Vec<Vec<Cell>>,
}

impl Table {
    pub(super) fn from_runs(runs: &[ResultLine]) -> Self {
        let mut table = Table::default();
        for run in runs {
            let (Some(scenario), Some(broker)) = (named(run.scenario()), named(run.broker()))
            else {
                continue;
            };
            // Only bench lines have throughput and latency; the others
            // still name their scenario and broker.
            let (throughput, latency) = match run {
                ResultLine::Bench(line) => (
                    non_negative(line.max_sustained_per_s)
                        .or_else(|| non_negative(line.received_per_s)),
                    // A search's overall latency includes the steps that failed:
                    // show the latency at its max sustained rate, as the throughput does.
                    line.max_sustained_latency_us
                        .as_ref()
                        .and_then(Latency::from_line)
                        .or_else(|| line.latency_us.as_ref().and_then(Latency::from_line)),
                ),
                _ => (None, None),
            };

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

    pub(super) fn scenario_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.scenarios.iter().position(|s| s == name) {
            return i;
        }
        self.scenarios.push(name.to_owned());
        self.cells.push(vec![Cell::default(); self.brokers.len()]);
        self.scenarios.len() - 1
    }

    pub(super) fn broker_index(&mut self, name: &str) -> usize {
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
    pub(super) fn throughput_rows(&self) -> Vec<usize> {
        self.rows_where(|cell| cell.throughput.is_some())
    }

    /// Scenarios (indices) where at least one broker has a latency.
    pub(super) fn latency_rows(&self) -> Vec<usize> {
        self.rows_where(|cell| cell.latency.is_some())
    }

    pub(super) fn rows_where(&self, has: impl Fn(&Cell) -> bool) -> Vec<usize> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().any(&has))
            .map(|(i, _)| i)
            .collect()
    }

    /// Cells of the given scenarios, every broker's.
    pub(super) fn cells_of<'a>(&'a self, rows: &'a [usize]) -> impl Iterator<Item = &'a Cell> + 'a {
        rows.iter().filter_map(|&s| self.cells.get(s)).flatten()
    }
}

/// A name that is not blank.
fn named(name: Option<&str>) -> Option<&str> {
    name.filter(|s| !s.trim().is_empty())
}

/// A finite number ≥ 0.
fn non_negative(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

/// A number > 0 (drawable on a log axis).
fn positive(value: Option<u64>) -> Option<f64> {
    value.filter(|v| *v > 0).map(|v| v as f64)
}
