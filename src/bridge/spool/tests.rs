//! The spool's unit tests: every case of the design documentation, against
//! real files in a temporary directory. The state file's confirmed ranges
//! are tested in `state_tests.rs`, with these helpers; crash tests with a
//! real process kill are in `tests/spool_crash.rs`.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::format::{segment_header, STATE_FILE, STATE_SLOT_BYTES};
use super::*;

pub(super) const SEG: u64 = 4096;

pub(super) fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes: SEG,
        fsync: FsyncPolicy::IntervalMs(1000),
        persisted_ranges: 512,
    }
}

pub(super) fn open(dir: &Path, max_bytes: u64) -> (Spool, RecoveryReport) {
    match Spool::open(config(dir, max_bytes)) {
        Ok(x) => x,
        Err(e) => panic!("open failed: {e}"),
    }
}

pub(super) fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("record {i:>6} ").into_bytes();
    p.resize(100, b'.');
    p
}

pub(super) fn append_n(spool: &mut Spool, n: u64, class: impl Fn(u64) -> RecordClass) -> Vec<u64> {
    (0..n)
        .map(|i| spool.append(class(i), &payload(i)).expect("append"))
        .collect()
}

pub(super) fn read_all(spool: &mut Spool) -> Vec<Record> {
    let mut out = Vec::new();
    while spool.read_unsent(7, &mut out).expect("read_unsent") > 0 {}
    out
}

pub(super) fn ids(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn bytes_on_disk(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| fs::metadata(p).expect("metadata").len())
        .sum()
}

#[test]
fn records_come_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert!(report.state_reset);
    let classes = |i: u64| RecordClass::ALL[(i % 4) as usize];
    let appended = append_n(&mut spool, 200, classes);
    assert!(appended.windows(2).all(|w| w[0] < w[1]));
    assert!(segment_files(dir.path()).len() > 3, "several segments");
    let first = read_all(&mut spool);
    assert_eq!(ids(&first), appended);
    drop(spool);

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.records, 200);
    assert_eq!(report.unconfirmed, 200);
    assert_eq!((report.corrupt_records, report.truncated_bytes), (0, 0));
    let again = read_all(&mut spool);
    assert_eq!(again, first);
    for (i, r) in again.iter().enumerate() {
        assert_eq!(r.payload, payload(i as u64));
        assert_eq!(r.class, classes(i as u64));
    }
}

#[test]
fn restart_resends_unconfirmed_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 100, |_| RecordClass::Status);
    assert_eq!(read_all(&mut spool).len(), 100);
    // Out of order, gap filled last: the watermark ends at the 30th.
    for &i in [4, 2, 0, 1, 3].iter().chain(&(5..30).collect::<Vec<_>>()) {
        spool.confirm(appended[i]);
    }
    spool.confirm(appended[7]); // a repeat
    assert_eq!(spool.stats().confirmed_through, appended[29]);
    assert_eq!(spool.stats().unconfirmed, 70);
    drop(spool); // no flush

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.unconfirmed, 70);
    let back = read_all(&mut spool);
    assert_eq!(ids(&back), appended[30..]);
    assert_eq!(back[0].payload, payload(30));
}

#[test]
fn confirmed_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 300, |_| RecordClass::Status);
    let segments = segment_files(dir.path()).len();
    assert!(segments > 5);
    assert_eq!(spool.stats().segments, segments);
    assert_eq!(spool.stats().bytes, bytes_on_disk(dir.path()));
    read_all(&mut spool);
    for &id in &appended[..150] {
        spool.confirm(id);
    }
    let half = segment_files(dir.path()).len();
    assert!(half < segments && half > 1, "{half} of {segments}");
    for &id in appended[150..].iter().rev() {
        spool.confirm(id);
    }
    let stats = spool.stats();
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the active segment"
    );
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.unconfirmed, 0);
    assert_eq!(stats.oldest_unconfirmed_ms, None);
    assert_eq!(stats.confirmed_through, appended[299]);
    assert_eq!(stats.bytes, bytes_on_disk(dir.path()));
    spool.flush().expect("flush");
    drop(spool);
    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.unconfirmed, 0);
    assert!(read_all(&mut spool).is_empty());
}

#[test]
fn torn_tail_is_cut_and_never_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 50, |_| RecordClass::Status);
    drop(spool);
    let last = segment_files(dir.path()).pop().expect("a segment");
    let len = fs::metadata(&last).expect("metadata").len();
    let f = OpenOptions::new().write(true).open(&last).expect("open");
    f.set_len(len - 40).expect("truncate mid-record");
    f.write_all_at(&[0xA5; 7], len - 47).expect("garble");
    f.write_all_at(&[0; 9], len - 40).expect("append zeros");
    drop(f);

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.truncated_bytes, 125 - 40 + 9);
    assert_eq!(report.records, 49);
    let back = read_all(&mut spool);
    assert_eq!(ids(&back), appended[..49]);
    assert!(back
        .iter()
        .enumerate()
        .all(|(i, r)| r.payload == payload(i as u64)));

    let id = spool
        .append(RecordClass::Event, b"after recovery")
        .expect("append");
    assert!(id > appended[49], "ids are never reused");
    let mut out = Vec::new();
    spool.read_unsent(10, &mut out).expect("read");
    assert_eq!(ids(&out), [id]);
    assert_eq!(out[0].payload, b"after recovery");
    drop(spool);
    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!((report.corrupt_records, report.truncated_bytes), (0, 0));
    let mut want = appended[..49].to_vec();
    want.push(id);
    assert_eq!(ids(&read_all(&mut spool)), want);
}

#[test]
fn corrupt_record_in_an_older_segment_skips_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 100, |_| RecordClass::Status);
    drop(spool);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3);
    let per_segment = (SEG - SEGMENT_HEADER_BYTES) / 125;
    // Flip one payload byte of the 5th record of the first segment.
    let f = OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .expect("open");
    f.write_all_at(b"X", SEGMENT_HEADER_BYTES + 4 * 125 + 60)
        .expect("flip");
    drop(f);

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.truncated_bytes, (per_segment - 4) * 125);
    let mut want = appended[..4].to_vec();
    want.extend_from_slice(&appended[per_segment as usize..]);
    let back = read_all(&mut spool);
    assert_eq!(ids(&back), want);
    assert!(back
        .iter()
        .all(|r| r.payload == payload(r.id - appended[0])));
}

#[test]
fn full_spool_drops_oldest_positions_first_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = 4 * SEG;
    let (mut spool, _) = open(dir.path(), max);
    let class = |i: u64| {
        if i.is_multiple_of(10) {
            RecordClass::Status
        } else {
            RecordClass::Position
        }
    };
    let mut by_id = HashMap::new();
    for i in 0..1000 {
        let id = spool.append(class(i), &payload(i)).expect("append");
        by_id.insert(id, i);
        assert!(spool.stats().bytes <= max);
        if i % 50 == 0 {
            assert!(bytes_on_disk(dir.path()) <= max);
        }
    }
    assert!(bytes_on_disk(dir.path()) <= max);
    let stats = spool.stats();
    let back = read_all(&mut spool);
    let statuses: Vec<u64> = back
        .iter()
        .filter(|r| r.class == RecordClass::Status)
        .map(|r| by_id[&r.id])
        .collect();
    assert_eq!(
        statuses,
        (0..1000).step_by(10).collect::<Vec<_>>(),
        "every status survives"
    );
    let positions: Vec<u64> = back
        .iter()
        .filter(|r| r.class == RecordClass::Position)
        .map(|r| by_id[&r.id])
        .collect();
    let all_positions: Vec<u64> = (0..1000).filter(|i| i % 10 != 0).collect();
    assert!(!positions.is_empty());
    assert_eq!(
        positions,
        all_positions[all_positions.len() - positions.len()..],
        "the newest positions survive"
    );
    assert_eq!(
        stats.dropped_of(RecordClass::Position),
        (900 - positions.len()) as u64
    );
    assert_eq!(stats.dropped[1..], [0, 0, 0]);
    assert_eq!(stats.records, back.len() as u64);
    assert!(back.windows(2).all(|w| w[0].id < w[1].id), "in order");
    assert!(back.iter().all(|r| r.payload == payload(by_id[&r.id])));

    // Everything read is confirmed: the watermark passes the dropped ids.
    for r in &back {
        spool.confirm(r.id);
    }
    let stats = spool.stats();
    assert_eq!(stats.unconfirmed, 0);
    assert_eq!(stats.confirmed_through, stats.next_id - 1);
    assert_eq!(stats.segments, 1);
}

#[test]
fn full_spool_of_precious_records_drops_oldest_segment_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = 3 * SEG;
    let (mut spool, _) = open(dir.path(), max);
    let mut sent = Vec::new();
    // Some were sent (in flight) before they were dropped.
    let appended = append_n(&mut spool, 20, |_| RecordClass::Event);
    spool.read_unsent(10, &mut sent).expect("read");
    let more = append_n(&mut spool, 480, |i| RecordClass::ALL[1 + (i % 3) as usize]);
    assert!(bytes_on_disk(dir.path()) <= max);
    let stats = spool.stats();
    let dropped: u64 = stats.dropped.iter().sum();
    assert!(dropped > 0);
    assert_eq!(stats.dropped_of(RecordClass::Position), 0);
    let back = read_all(&mut spool);
    assert_eq!(back.len() as u64 + dropped, 500);
    let all: Vec<u64> = appended.iter().chain(&more).copied().collect();
    assert_eq!(
        ids(&back),
        all[dropped as usize..],
        "the newest survive, in order"
    );
    // A late confirm of a dropped record is harmless.
    spool.confirm(sent[0].id);
    spool.rewind();
    assert_eq!(ids(&read_all(&mut spool)), ids(&back));
}

#[test]
fn rewind_resends_in_order_after_an_uplink_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 20, |_| RecordClass::Status);
    let mut sent = Vec::new();
    spool.read_unsent(10, &mut sent).expect("read");
    assert_eq!(ids(&sent), appended[..10]);
    for i in [0, 1, 2, 4] {
        spool.confirm(appended[i]);
    }
    spool.rewind();
    let again = read_all(&mut spool);
    let mut want = vec![appended[3]];
    want.extend_from_slice(&appended[5..]);
    assert_eq!(ids(&again), want);
    assert!(read_all(&mut spool).is_empty());
    spool.rewind();
    assert_eq!(ids(&read_all(&mut spool)), want);
}

#[test]
fn ids_keep_increasing_across_restarts_even_when_everything_was_confirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut last = 0;
    for round in 0..4 {
        let (mut spool, _) = open(dir.path(), 1 << 20);
        assert!(read_all(&mut spool).is_empty(), "round {round}");
        let appended = append_n(&mut spool, 40, |_| RecordClass::Status);
        assert!(
            appended[0] > last,
            "round {round}: {} after {last}",
            appended[0]
        );
        last = appended[39];
        for r in read_all(&mut spool) {
            spool.confirm(r.id);
        }
        assert_eq!(spool.stats().unconfirmed, 0);
        if round % 2 == 0 {
            spool.flush().expect("flush");
        }
    }
    // Even with every segment and the state file gone but the last.
    fs::remove_file(dir.path().join(STATE_FILE)).expect("remove state");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let id = spool.append(RecordClass::Status, b"x").expect("append");
    assert!(id > last);
}

#[test]
fn random_bytes_over_a_segment_never_panic_and_never_replay_garbage() {
    // SPOOL_FUZZ_ROUNDS / SPOOL_FUZZ_SEED for a longer run.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut rng = env("SPOOL_FUZZ_SEED").unwrap_or(0x9E37_79B9_7F4A_7C15) | 1;
    let rounds = env("SPOOL_FUZZ_ROUNDS").unwrap_or(60);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let mut by_id = HashMap::new();
        for i in 0..80 {
            let id = spool
                .append(RecordClass::ALL[(i % 4) as usize], &payload(i))
                .expect("append");
            by_id.insert(id, i);
        }
        drop(spool);
        let mut files = segment_files(dir.path());
        files.push(dir.path().join(STATE_FILE));
        let mut state_damaged = false;
        for _ in 0..1 + next() % 3 {
            let path = &files[(next() % files.len() as u64) as usize];
            state_damaged |= path.ends_with(STATE_FILE);
            let len = fs::metadata(path).expect("metadata").len();
            let f = OpenOptions::new().write(true).open(path).expect("open");
            match next() % 4 {
                0 => f.set_len(next() % (len + 1)).expect("truncate"),
                1 => f.set_len(len + next() % 200).expect("extend with zeros"),
                _ => {
                    let mut junk = vec![0u8; 1 + (next() % 300) as usize];
                    junk.iter_mut().for_each(|b| *b = next() as u8);
                    f.write_all_at(&junk, next() % (len + 1)).expect("garble");
                }
            }
        }
        let (mut spool, _) = match Spool::open(config(dir.path(), 1 << 20)) {
            Ok(x) => x,
            Err(e) => panic!("round {round}: file content must not fail open: {e}"),
        };
        let back = read_all(&mut spool);
        assert!(
            back.windows(2).all(|w| w[0].id < w[1].id),
            "round {round}: in order"
        );
        for r in &back {
            let i = by_id.get(&r.id).copied();
            assert_eq!(
                Some(&r.payload),
                i.map(payload).as_ref(),
                "round {round}: id {}",
                r.id
            );
        }
        let id = spool.append(RecordClass::Status, b"after").expect("append");
        // With the state file and the tail both damaged, nothing is
        // left to tell which ids were handed out.
        assert!(
            state_damaged || by_id.keys().all(|&k| k < id),
            "round {round}: id reused"
        );
        drop(spool);
        let (_, report) = open(dir.path(), 1 << 20);
        assert_eq!(
            report.corrupt_records, 0,
            "round {round}: recovery is final"
        );
    }
}

#[test]
fn a_damaged_state_slot_loses_no_id_reservation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 10, |_| RecordClass::Status);
    drop(spool);
    let state = OpenOptions::new()
        .write(true)
        .open(dir.path().join(STATE_FILE))
        .expect("open state");
    for slot in [0, STATE_SLOT_BYTES as u64] {
        // Either slot garbled, and the records' tail lost (a power cut
        // under the interval policy): the ids must not come back.
        state.write_all_at(&[0xEE; 16], slot + 12).expect("garble");
        let last = segment_files(dir.path()).pop().expect("segment");
        OpenOptions::new()
            .write(true)
            .open(&last)
            .and_then(|f| f.set_len(SEGMENT_HEADER_BYTES))
            .expect("truncate");
        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert!(!report.state_reset);
        let id = spool.append(RecordClass::Status, b"x").expect("append");
        assert!(id > appended[9], "{id} reuses an id");
    }
}

#[test]
fn unknown_format_version_is_an_error_not_a_wipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    append_n(&mut spool, 3, |_| RecordClass::Status);
    drop(spool);
    let seg = segment_files(dir.path()).remove(0);
    let mut header = segment_header(1);
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    let f = OpenOptions::new().write(true).open(&seg).expect("open");
    f.write_all_at(&header, 0).expect("write");
    let Err(err) = Spool::open(config(dir.path(), 1 << 20)) else {
        panic!("a segment of format version 2 must not open");
    };
    assert!(
        matches!(err, SpoolError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(".seg"), "{err}");
}

#[test]
fn oversized_payload_and_bad_config_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let max = (SEG - SEGMENT_HEADER_BYTES - FRAME_OVERHEAD_BYTES) as usize;
    assert!(spool.append(RecordClass::Status, &vec![1; max]).is_ok());
    let err = spool
        .append(RecordClass::Status, &vec![1; max + 1])
        .expect_err("too large");
    assert!(matches!(err, SpoolError::TooLarge { .. }), "{err}");
    assert!(
        Spool::open(config(dir.path(), SEG)).is_err(),
        "max_bytes < 2 segments"
    );
}

#[test]
fn spool_is_send() {
    fn send<T: Send>() {}
    send::<Spool>();
}

/// `cargo nextest run -p fleetgate --run-ignored only -E 'test(spool_append_throughput)' --no-capture`
#[test]
#[ignore = "a measurement, not a check"]
fn spool_append_throughput_with_each_fsync_policy() {
    for (policy, n) in [
        (FsyncPolicy::IntervalMs(200), 200_000u64),
        (FsyncPolicy::Always, 2_000),
    ] {
        let dir = tempfile::tempdir_in(
            std::env::var("SPOOL_BENCH_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        )
        .expect("tempdir");
        let (mut spool, _) = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 256 << 20,
            segment_bytes: 4 << 20,
            fsync: policy,
            persisted_ranges: 512,
        })
        .expect("open");
        let body = [7u8; 200];
        let start = Instant::now();
        for _ in 0..n {
            spool.append(RecordClass::Position, &body).expect("append");
        }
        spool.flush().expect("flush");
        let append_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut out = Vec::with_capacity(1000);
        let mut read = 0;
        loop {
            out.clear();
            let k = spool.read_unsent(1000, &mut out).expect("read");
            if k == 0 {
                break;
            }
            read += k;
            for r in &out {
                spool.confirm(r.id);
            }
        }
        let read_s = start.elapsed().as_secs_f64();
        println!(
            "{policy:?}: append {:.0} records/s ({n} x 200-byte payloads); read+confirm {:.0} records/s ({read})",
            n as f64 / append_s,
            read as f64 / read_s
        );
    }
}
