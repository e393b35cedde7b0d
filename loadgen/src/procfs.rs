//! What the tools read of a process from Linux's `/proc`: resident memory
//! and CPU time, of the broker under test or of the tool itself.
//!
//! In: a pid, or a `/proc/…/stat` path. Out: VmRSS in KiB; utime + stime in
//! clock ticks ([`TICKS_PER_S`] a second), with the command name. `None`
//! when the process is gone or the file does not parse. Bound: one file
//! read per call.

/// Linux reports process CPU times in USER_HZ ticks, 100 per second on
/// every architecture the kernel exposes to user space this way.
pub const TICKS_PER_S: f64 = 100.0;

/// VmRSS of process `pid` in KiB, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of `pid` in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat")).map(|(_, ticks)| ticks)
}

/// The command name and utime + stime in clock ticks of a `stat` file
/// (`/proc/<pid>/stat` or `/proc/self/task/<tid>/stat`).
pub fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After ')': state(3) ... utime is field 14, stime 15 → indices 11, 12 here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn cpu_ticks_of_this_process_parse() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
