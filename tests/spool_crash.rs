//! A real crash: a child process appends to the bridge spool with
//! `FsyncPolicy::Always`, printing every id `append` returned; the parent
//! SIGKILLs it mid-stream, reopens the spool, and checks that every
//! acknowledged record is there, intact, in order. The child is this test
//! binary run again with an environment variable naming the spool.

// Test code: a failed assumption is a failed test. The workspace denies
// these outside tests, and clippy does not count an integration test's
// helpers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::btree_map::{BTreeMap, Entry};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fleetgate::bridge::spool::{FsyncPolicy, RecordClass, Spool, SpoolConfig};

const CHILD_DIR: &str = "FLEETGATE_SPOOL_CRASH_CHILD_DIR";

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        segment_bytes: 8192,
        fsync: FsyncPolicy::Always,
        persisted_ranges: 512,
    }
}

/// The n-th record's payload: its number, then filler of varying length.
fn payload(n: u64) -> Vec<u8> {
    let mut p = format!("n={n};").into_bytes();
    p.extend(std::iter::repeat_n(
        b'a' + (n % 26) as u8,
        (n * 37 % 700) as usize,
    ));
    p
}

fn parse_payload(p: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(p).ok()?;
    s.strip_prefix("n=")?.split(';').next()?.parse().ok()
}

/// The child's body; without the variable it does nothing.
#[test]
fn spool_crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (mut spool, _) = Spool::open(config(Path::new(&dir))).expect("child: open");
    let start: u64 = std::env::var("FLEETGATE_SPOOL_CRASH_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for n in start.. {
        let class = RecordClass::ALL[(n % 4) as usize];
        let id = spool.append(class, &payload(n)).expect("child: append");
        writeln!(out, "acked {id} {n}").expect("child: stdout");
        out.flush().expect("child: stdout");
    }
}

#[test]
fn killed_writer_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // id -> record number, for every append a child acknowledged.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_n = 0u64;
    for (round, kill_after) in [150usize, 401, 777].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "spool_crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env("FLEETGATE_SPOOL_CRASH_FIRST", next_n.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut seen = 0;
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            // libtest may print its own "test ... " before the first line.
            let Some(rest) = line.find("acked ").map(|at| &line[at + 6..]) else {
                continue;
            };
            let mut parts = rest.split(' ').map(|s| s.parse::<u64>().expect("a number"));
            let (id, n) = (parts.next().expect("id"), parts.next().expect("n"));
            assert!(
                acked.insert(id, n).is_none(),
                "round {round}: id {id} reused"
            );
            next_n = n + 1;
            seen += 1;
            if seen == kill_after && !killed {
                child.kill().expect("SIGKILL the writer");
                killed = true;
            }
        }
        let status = child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the writer was killed ({status})"
        );
        assert!(seen >= kill_after, "round {round}: {seen} acks");

        // Parent: everything acknowledged is there, intact, in order.
        let (mut spool, report) = Spool::open(config(dir.path())).expect("reopen");
        let mut back = Vec::new();
        while spool.read_unsent(100, &mut back).expect("read") > 0 {}
        let on_disk: BTreeMap<u64, u64> = back
            .iter()
            .map(|r| {
                let n = parse_payload(&r.payload).expect("a payload we wrote");
                assert_eq!(
                    r.payload,
                    payload(n),
                    "round {round}: record {} garbled",
                    r.id
                );
                assert_eq!(r.class, RecordClass::ALL[(n % 4) as usize]);
                (r.id, n)
            })
            .collect();
        assert!(
            back.windows(2).all(|w| w[0].id < w[1].id),
            "round {round}: order"
        );
        for (id, n) in &acked {
            assert_eq!(
                on_disk.get(id),
                Some(n),
                "round {round}: acknowledged id {id} lost"
            );
        }
        // At most the one append in progress at the kill is beyond the acks.
        assert!(
            on_disk.len() <= acked.len() + 1,
            "round {round}: {} on disk, {} acked, {seen} seen; not acked: {:?}",
            on_disk.len(),
            acked.len(),
            on_disk
                .iter()
                .filter(|(id, _)| !acked.contains_key(id))
                .collect::<Vec<_>>()
        );
        if let Some((&id, &n)) = on_disk.iter().next_back() {
            if let Entry::Vacant(slot) = acked.entry(id) {
                slot.insert(n);
                next_n = n + 1;
            }
        }
        eprintln!(
            "round {round}: {} acknowledged so far, {} on disk, recovery cut {} bytes ({} corrupt)",
            acked.len(),
            on_disk.len(),
            report.truncated_bytes,
            report.corrupt_records
        );
    }
}
