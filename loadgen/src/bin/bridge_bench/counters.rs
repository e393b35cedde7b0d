//! What is measured: the consumer's counts of this run's messages, samples
//! of the gateway's metrics, and CPU time per thread group from `/proc`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use fleetgate::metrics::Metrics;
use loadgen::results::CpuSplitLine;

/// What the consumer received of this run's messages.
#[derive(Default)]
pub(super) struct Received {
    pub(super) positions: AtomicU64,
    pub(super) events: AtomicU64,
    /// Messages of other runs or other gateways (not counted above).
    pub(super) foreign: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) spooled: u64,
    pub(super) confirmed: u64,
    pub(super) received: u64,
    pub(super) spool_records: u64,
    pub(super) connected: u64,
}

pub(super) fn sample(m: &Metrics, r: &Received) -> Sample {
    Sample {
        at: Instant::now(),
        spooled: m.bridge_records_spooled_total.load(Ordering::Relaxed),
        confirmed: m.bridge_confirmed_total.load(Ordering::Relaxed),
        received: r.positions.load(Ordering::Relaxed) + r.events.load(Ordering::Relaxed),
        spool_records: m.bridge_spool_records.load(Ordering::Relaxed),
        connected: m.bridge_connected.load(Ordering::Relaxed),
    }
}

/// The rate of `value` between the samples where it first reached 10 % and
/// 90 % of its rise from `samples[0]` to `total` (ramp-up and tail left out).
pub(super) fn rate_10_90(
    samples: &[Sample],
    total: u64,
    value: impl Fn(&Sample) -> u64,
) -> Option<f64> {
    let base = value(samples.first()?);
    let lo = base + total / 10;
    let hi = base + total * 9 / 10;
    let a = samples.iter().find(|s| value(s) >= lo)?;
    let b = samples.iter().find(|s| value(s) >= hi)?;
    let dt = b.at.duration_since(a.at).as_secs_f64();
    (dt > 0.0).then(|| (value(b) - value(a)) as f64 / dt)
}

/// CPU seconds per thread group (`gw`, `bench`, …) of this process, and
/// RabbitMQ's (`beam.smp`), from /proc.
#[derive(Clone, Debug, Default)]
pub(super) struct Cpu {
    pub(super) groups: BTreeMap<String, f64>,
    pub(super) rabbit: f64,
    pub(super) machine_busy: f64,
    pub(super) machine_total: f64,
}

pub(super) const TICKS_PER_S: f64 = 100.0; // USER_HZ on Linux

/// The lapin threads that exist before the gateway starts: the bench's.
pub(crate) static BENCH_LAPIN_TIDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub(super) fn lapin_tids() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("lapin"))
                })
                .map(|t| t.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn stat_ticks(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // fields[0] is state (field 3); utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_S))
}

pub(super) fn rabbit_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(name)
    })
}

pub(super) fn cpu_now(rabbit: &Option<String>) -> Cpu {
    let mut cpu = Cpu::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let path = format!("{}/stat", t.path().display());
            if let Some((comm, s)) = stat_ticks(&path) {
                let mut group = comm
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                    .to_string();
                // lapin runs each connection's socket on a thread of its
                // own: the bench consumer's started before the gateway.
                if group.starts_with("lapin") {
                    let tid = t.file_name().to_string_lossy().into_owned();
                    let bench = BENCH_LAPIN_TIDS.get().is_some_and(|b| b.contains(&tid));
                    group = format!("{}/{group}", if bench { "bench" } else { "gw" });
                }
                *cpu.groups.entry(group).or_default() += s;
            }
        }
    }
    if let Some(pid) = rabbit {
        cpu.rabbit = stat_ticks(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, s)| s);
    }
    if let Ok(text) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = text.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            cpu.machine_total = total / TICKS_PER_S;
            cpu.machine_busy = (total - idle) / TICKS_PER_S;
        }
    }
    cpu
}

/// CPU use between two readings over `secs` of wall time, in % of one core.
pub(super) fn cpu_split(a: &Cpu, b: &Cpu, secs: f64) -> CpuSplitLine {
    let pct = |x: f64| (x / secs * 1000.0).round() / 10.0;
    let mut groups = BTreeMap::new();
    for (g, v) in &b.groups {
        let d = v - a.groups.get(g).copied().unwrap_or(0.0);
        if d > 0.005 * secs {
            groups.insert(g.clone(), pct(d));
        }
    }
    let total = b.machine_total - a.machine_total;
    CpuSplitLine {
        threads_pct_of_core: groups,
        rabbitmq_pct_of_core: pct(b.rabbit - a.rabbit),
        machine_busy_pct: if total > 0.0 {
            ((b.machine_busy - a.machine_busy) / total * 1000.0).round() / 10.0
        } else {
            0.0
        },
    }
}
