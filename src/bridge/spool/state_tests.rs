//! The state file's confirmed ranges (see *The state file* in the
//! [module documentation](super)): out-of-order confirms survive a reopen,
//! a torn or corrupt slot falls back to the state before it without losing
//! an unconfirmed record, version-1 files still load, and the bound on
//! ranges costs duplicates, never records. Against real files, with the
//! helpers of `tests.rs`.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{STATE_FILE, STATE_MAGIC, STATE_SLOT_BYTES};
use super::tests::{append_n, config, ids, open, read_all};
use super::*;

fn open_keeping(dir: &Path, persisted_ranges: usize) -> (Spool, RecoveryReport) {
    let cfg = SpoolConfig {
        persisted_ranges,
        ..config(dir, 1 << 20)
    };
    match Spool::open(cfg) {
        Ok(x) => x,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn state_bytes(dir: &Path) -> Vec<u8> {
    fs::read(dir.join(STATE_FILE)).expect("read state")
}

/// The seq of the slot at `at`, as the file holds it (valid or not).
fn seq_at(state: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&state[at + 12..at + 20]);
    u64::from_le_bytes(b)
}

/// The offset of the slot written last: the one with the higher seq.
fn newest_slot(dir: &Path) -> usize {
    let state = state_bytes(dir);
    if state.len() > STATE_SLOT_BYTES && seq_at(&state, STATE_SLOT_BYTES) > seq_at(&state, 0) {
        STATE_SLOT_BYTES
    } else {
        0
    }
}

/// A version-1 slot, byte for byte as that format wrote it.
fn v1_slot(seq: u64, confirmed_through: u64, id_floor: u64) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[..8].copy_from_slice(&STATE_MAGIC);
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..20].copy_from_slice(&seq.to_le_bytes());
    b[20..28].copy_from_slice(&confirmed_through.to_le_bytes());
    b[28..36].copy_from_slice(&id_floor.to_le_bytes());
    let crc = crc32fast::hash(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn out_of_order_confirms_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 1000, |_| RecordClass::Position);
    read_all(&mut spool);
    // The first record is stuck (returned, say); the window behind it is
    // confirmed, out of order, but for two still in flight.
    spool.confirm_all(
        appended[1..]
            .iter()
            .copied()
            .filter(|&id| id != appended[500] && id != appended[998]),
    );
    assert_eq!(spool.stats().confirmed_through, appended[0] - 1);
    assert_eq!(spool.stats().unconfirmed, 3);
    assert_eq!(spool.stats().confirmed_ranges, 3);
    drop(spool); // no flush: a process kill

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.unconfirmed, 3);
    assert_eq!(report.confirmed_out_of_order, 997);
    let back = read_all(&mut spool);
    assert_eq!(ids(&back), [appended[0], appended[500], appended[998]]);
    // And the watermark takes the ranges once the front is confirmed.
    spool.confirm_all([appended[0], appended[500]]);
    assert_eq!(spool.stats().confirmed_through, appended[997]);
    assert_eq!(spool.stats().unconfirmed, 1);
    assert_eq!(spool.stats().resent_after_recovery, 3);
}

#[test]
fn a_torn_or_corrupt_state_write_falls_back_to_the_previous_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 20, |_| RecordClass::Status);
    read_all(&mut spool);
    spool.confirm_all([appended[3], appended[4], appended[9]]);
    drop(spool);
    // The state before the last write, and the last write itself.
    let before = state_bytes(dir.path());
    let (mut spool, _) = open(dir.path(), 1 << 20);
    spool.confirm_all([appended[12], appended[0]]);
    drop(spool);
    let at = newest_slot(dir.path());
    let after = state_bytes(dir.path());
    let new_slot = &after[at..];

    // Torn inside the head, inside the ranges; then bit rot in the ranges.
    for (case, keep_new) in [("torn head", 30), ("torn ranges", 60), ("bit rot", 0)] {
        let mut slot = before.get(at..).map(<[u8]>::to_vec).unwrap_or_default();
        slot.resize(new_slot.len(), 0);
        slot[..keep_new].copy_from_slice(&new_slot[..keep_new]);
        if keep_new == 0 {
            slot.copy_from_slice(new_slot);
            slot[50] ^= 0x40;
        }
        let mut file = after.clone();
        file[at..at + slot.len()].copy_from_slice(&slot);
        fs::write(dir.path().join(STATE_FILE), &file).expect("write state");

        let (mut spool, report) = open(dir.path(), 1 << 20);
        assert!(!report.state_reset, "{case}: the other slot is valid");
        // The state before the last write: 3, 4 and 9 confirmed, 0 and 12
        // not. Every record not confirmed then comes back (0 and 12 again:
        // duplicates, not losses).
        let expected: Vec<u64> = appended
            .iter()
            .copied()
            .filter(|id| ![appended[3], appended[4], appended[9]].contains(id))
            .collect();
        assert_eq!(ids(&read_all(&mut spool)), expected, "{case}");
        drop(spool);
        fs::write(dir.path().join(STATE_FILE), &after).expect("restore state");
    }

    // Both slots unreadable: W = 0, everything is sent again.
    fs::write(dir.path().join(STATE_FILE), vec![0xAB; after.len()]).expect("garble");
    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert!(report.state_reset);
    assert_eq!(ids(&read_all(&mut spool)), appended);
}

#[test]
fn a_version_1_state_file_still_loads_and_is_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let appended = append_n(&mut spool, 10, |_| RecordClass::Event);
    let floor = spool.stats().next_id + 4096;
    drop(spool);
    // The file a version-1 spool leaves: two 40-byte slots, the newer
    // (seq 8) at 0 with W at the 4th record, the older at 40.
    let mut v1 = v1_slot(8, appended[3], floor).to_vec();
    v1.extend_from_slice(&v1_slot(7, appended[1], floor));
    fs::write(dir.path().join(STATE_FILE), &v1).expect("write v1 state");

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert!(!report.state_reset);
    assert_eq!(report.confirmed_through, appended[3]);
    assert_eq!(report.unconfirmed, 6);
    assert_eq!(ids(&read_all(&mut spool)), appended[4..]);
    // The upgrade went to the second slot: the version-1 slots are whole.
    assert_eq!(state_bytes(dir.path())[..80], v1[..]);
    assert!(spool.append(RecordClass::Event, b"x").expect("append") >= floor);
    spool.confirm(appended[6]);
    drop(spool);

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(
        report.confirmed_out_of_order, 1,
        "ranges kept after the upgrade"
    );
    let back = ids(&read_all(&mut spool));
    assert_eq!(back[..2], [appended[4], appended[5]]);
    assert!(!back.contains(&appended[6]));
}

#[test]
fn a_newer_state_version_is_an_error_not_a_wipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    append_n(&mut spool, 3, |_| RecordClass::Status);
    drop(spool);
    let mut slot = v1_slot(99, 2, 5000);
    slot[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&slot[..36]);
    slot[36..40].copy_from_slice(&crc.to_le_bytes());
    OpenOptions::new()
        .write(true)
        .open(dir.path().join(STATE_FILE))
        .and_then(|f| f.write_all_at(&slot, 0))
        .expect("write");
    let Err(err) = Spool::open(config(dir.path(), 1 << 20)) else {
        panic!("a state file of version 3 must not open");
    };
    assert!(
        matches!(err, SpoolError::UnsupportedVersion { found: 3, .. }),
        "{err}"
    );
}

#[test]
fn ranges_past_the_persisted_bound_are_resent_never_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open_keeping(dir.path(), 2);
    let appended = append_n(&mut spool, 10, |_| RecordClass::Status);
    read_all(&mut spool);
    // Three ranges behind an unconfirmed first record; two are kept.
    spool.confirm_all([appended[2], appended[3], appended[5], appended[7]]);
    assert_eq!(spool.stats().confirmed_ranges, 3);
    drop(spool);
    let (mut spool, report) = open_keeping(dir.path(), 2);
    assert_eq!(report.confirmed_out_of_order, 3);
    let back = ids(&read_all(&mut spool));
    assert_eq!(
        back,
        [0, 1, 4, 6, 7, 8, 9].map(|i| appended[i]),
        "the third range is sent again"
    );
}

#[test]
fn what_is_sent_after_recovery_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    append_n(&mut spool, 10, |_| RecordClass::Status);
    drop(spool);
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let mut out = Vec::new();
    spool.read_unsent(4, &mut out).expect("read");
    spool.rewind(); // an uplink loss: sent again, not counted again
    read_all(&mut spool);
    append_n(&mut spool, 3, |_| RecordClass::Status);
    read_all(&mut spool);
    assert_eq!(spool.stats().resent_after_recovery, 10);
}
