//! Unit tests of the spool: one behaviour each, on real files.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::reading::{ExactNumber, Quality, ReadingBatch, ReadingValue, ValueData};

/// A batch of `n` values for `meter`; the first value is `energy.active.import.total` = `energy`.
pub(super) fn batch(meter: &str, n: usize, energy: &str) -> ReadingBatch {
    let t = UNIX_EPOCH + Duration::from_millis(1_795_777_201_234);
    let mut b = ReadingBatch::new("ignored", meter, "dlt645-2007", 0, t);
    for i in 0..n {
        let (quantity, value) = if i == 0 {
            ("energy.active.import.total".to_owned(), energy.to_owned())
        } else {
            (format!("voltage.l{i}"), format!("229.{i}"))
        };
        b.values.push(ReadingValue {
            quantity: quantity.into(),
            value: Some(ValueData::Number(
                serde_json::from_str::<ExactNumber>(&value).unwrap(),
            )),
            unit: "kWh".into(),
            obis: Some("1-0:1.8.0".into()),
            source: "dlt645:00010000".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        });
    }
    b.frames
        .push("68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16".into());
    b
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("spool").join("spool.db")
}

fn open(path: &Path) -> Spool {
    Spool::open(path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap()
}

/// The row ids of everything stored, in order.
fn pending_rowids(s: &Spool) -> Vec<i64> {
    s.pending(None, usize::MAX)
        .unwrap()
        .iter()
        .map(|p| p.rowid)
        .collect()
}

#[test]
fn seq_continues_across_reopen_and_full_drain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    let a = s
        .append(
            "gw-01",
            vec![batch("m1", 3, "1.00"), batch("m2", 3, "2.00")],
        )
        .unwrap();
    assert_eq!(
        a.iter()
            .map(|a| (a.meter.as_str(), a.seq))
            .collect::<Vec<_>>(),
        [("m1", 1), ("m2", 1)]
    );
    assert_eq!(a[0].id, "gw-01/m1/1");
    let b = s.append("gw-01", vec![batch("m1", 3, "1.01")]).unwrap();
    assert_eq!(b[0].seq, 2);
    // Drain everything, reopen: numbering goes on.
    let all = pending_rowids(&s);
    assert_eq!(s.ack_many(&all).unwrap(), 3);
    drop(s);
    let mut s = open(&path);
    assert_eq!(s.stats().unwrap().depth, 0);
    let c = s
        .append(
            "gw-01",
            vec![batch("m1", 3, "1.02"), batch("m1", 3, "1.03")],
        )
        .unwrap();
    assert_eq!(c.iter().map(|a| a.seq).collect::<Vec<_>>(), [3, 4]);
    let p = s.pending(None, 10).unwrap();
    let stored: ReadingBatch = serde_json::from_slice(&p[1].payload).unwrap();
    assert_eq!(
        (stored.seq, stored.id.as_str(), stored.gateway.as_str()),
        (4, "gw-01/m1/4", "gw-01")
    );
    assert_eq!(p[1].id, "gw-01/m1/4");
}

#[test]
fn pending_pages_in_order_and_ack_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&db(&dir));
    let mut all = Vec::new();
    for cycle in 0..5 {
        let bs = (0..4).map(|m| batch(&format!("m{m}"), 2, &format!("{cycle}.5")));
        all.extend(s.append("gw", bs.collect()).unwrap());
    }
    // Page through in threes.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.pending(cursor, 3).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = page.last().map(|p| p.rowid);
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|p| p.rowid).collect::<Vec<_>>(),
        all.iter().map(|a| a.rowid).collect::<Vec<_>>()
    );
    assert!(seen.windows(2).all(|w| w[0].rowid < w[1].rowid));
    // Ack one in the middle: gone; acking it again is false.
    let mid = all[7].rowid;
    assert!(s.ack(mid).unwrap());
    assert!(!s.ack(mid).unwrap());
    let left = s.pending(None, 100).unwrap();
    assert_eq!(left.len(), 19);
    assert!(left.iter().all(|p| p.rowid != mid));
    let st = s.stats().unwrap();
    assert_eq!(st.depth, 19);
    assert_eq!(
        st.bytes,
        all.iter()
            .filter(|a| a.rowid != mid)
            .map(|a| a.bytes)
            .sum::<u64>()
    );
    assert_eq!(
        st.oldest_read_at.as_deref(),
        Some("2026-11-27T11:00:01.234Z")
    );
}

#[test]
fn overflow_drops_the_oldest_and_counts_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let one = serde_json::to_vec(&{
        let mut b = batch("m1", 5, "1.00");
        b.gateway = "gw".into();
        b.seq = 1;
        b.id = "gw/m1/1".into();
        b
    })
    .unwrap()
    .len() as u64;
    // Room for three and a half batches.
    let max = one * 7 / 2;
    let mut s = Spool::open(&path, SpoolOptions::numbered_from_one(max)).unwrap();
    let mut appended = Vec::new();
    for i in 0..3 {
        appended.extend(
            s.append(
                "gw",
                vec![batch(if i == 1 { "m2" } else { "m1" }, 5, "1.00")],
            )
            .unwrap(),
        );
    }
    assert_eq!(s.stats().unwrap().dropped_batches, 0);
    // Two more: the two oldest (m1/1, m2/1) go.
    appended.extend(
        s.append("gw", vec![batch("m1", 5, "1.00"), batch("m1", 5, "1.00")])
            .unwrap(),
    );
    let st = s.stats().unwrap();
    assert!(st.bytes <= max, "{} > {max}", st.bytes);
    assert_eq!(st.depth, 3);
    assert_eq!(st.dropped_batches, 2);
    assert_eq!(st.dropped_bytes, appended[0].bytes + appended[1].bytes);
    let ids: Vec<String> = s
        .pending(None, 10)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["gw/m1/2", "gw/m1/3", "gw/m1/4"]);
    drop(s);
    let s = Spool::open(&path, SpoolOptions::numbered_from_one(max)).unwrap();
    let st2 = s.stats().unwrap();
    assert_eq!(st2, st);
    let meters = s.meters().unwrap();
    assert_eq!(
        meters
            .iter()
            .map(|m| (
                m.meter.as_str(),
                m.last_seq,
                m.dropped_batches,
                m.dropped_bytes
            ))
            .collect::<Vec<_>>(),
        [
            ("m1", 4, 1, appended[0].bytes),
            ("m2", 1, 1, appended[1].bytes)
        ]
    );
    // Acked batches are not drops.
    let mut s = s;
    let first = s.pending(None, 1).unwrap()[0].rowid;
    assert!(s.ack(first).unwrap());
    assert_eq!(s.stats().unwrap().dropped_batches, 2);
}

#[test]
fn a_call_larger_than_the_spool_is_an_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = Spool::open(&path, SpoolOptions::numbered_from_one(2_000)).unwrap();
    s.append("gw", vec![batch("m1", 1, "1.00")]).unwrap();
    let before = s.stats().unwrap();
    let err = s.append("gw", vec![batch("m1", 40, "2.00")]).unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::TooLarge {
                max_bytes: 2_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.stats().unwrap(), before);
    assert_eq!(
        s.last_good("m1", "energy.active.import.total")
            .unwrap()
            .as_deref(),
        Some("1.00")
    );
    // The refused call used up no seq.
    assert_eq!(
        s.append("gw", vec![batch("m1", 1, "3.00")]).unwrap()[0].seq,
        2
    );
}

#[test]
fn last_good_energy_values_persist_with_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    let mut b = batch("m1", 3, "12345.670");
    // A suspect and a bad energy value are not remembered.
    b.values.push(ReadingValue {
        quantity: "energy.active.export.total".into(),
        value: Some(ValueData::Number(serde_json::from_str("5.5").unwrap())),
        unit: "kWh".into(),
        obis: None,
        source: "x".into(),
        quality: Quality::Suspect,
        reason: Some("went backwards".into()),
        meter_time: None,
    });
    b.values.push(ReadingValue {
        quantity: "energy.active.import.t1".into(),
        value: None,
        unit: "kWh".into(),
        obis: None,
        source: "x".into(),
        quality: Quality::Bad,
        reason: Some("timeout".into()),
        meter_time: None,
    });
    s.append("gw", vec![b]).unwrap();
    s.append("gw", vec![batch("m2", 1, "7")]).unwrap();
    drop(s);
    let mut s = open(&path);
    let q = "energy.active.import.total";
    assert_eq!(s.last_good("m1", q).unwrap().as_deref(), Some("12345.670"));
    assert_eq!(s.last_good("m2", q).unwrap().as_deref(), Some("7"));
    assert_eq!(
        s.last_good("m1", "energy.active.export.total").unwrap(),
        None
    );
    assert_eq!(s.last_good("m1", "energy.active.import.t1").unwrap(), None);
    assert_eq!(s.last_good("m1", "voltage.l1").unwrap(), None);
    assert_eq!(s.last_good("m3", q).unwrap(), None);
    s.append("gw", vec![batch("m1", 1, "12345.68")]).unwrap();
    assert_eq!(s.last_good("m1", q).unwrap().as_deref(), Some("12345.68"));
}

#[test]
fn newer_schema_and_foreign_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(open(&path));
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");

    let other = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let err = Spool::open(&other, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("not a meterd spool"), "{err}");
}

#[test]
fn a_corrupt_file_is_refused_and_can_be_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("move it aside"),
        "{msg}"
    );
    // Untouched: no new spool was started over it.
    assert_eq!(std::fs::read(&path).unwrap(), garbage);

    let moved = Spool::quarantine(&path).unwrap();
    assert!(!path.exists());
    assert!(
        moved.to_string_lossy().contains(".corrupt-"),
        "{}",
        moved.display()
    );
    assert_eq!(std::fs::read(&moved).unwrap(), garbage);
    let mut s = open(&path);
    assert_eq!(s.append("gw", vec![batch("m", 1, "1")]).unwrap()[0].seq, 1);
}

#[test]
fn a_damaged_page_is_found_by_quick_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    for _ in 0..40 {
        s.append("gw", vec![batch("m1", 25, "1.5")]).unwrap();
    }
    drop(s); // checkpoints the WAL into the main file on close
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 4 * 4096, "{}", bytes.len());
    // Scribble over the middle of page 3 (a b-tree page), keep the header intact.
    for b in &mut bytes[2 * 4096 + 8..2 * 4096 + 600] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
}

#[test]
fn a_wal_without_its_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(with_suffix(&path, "-wal"), b"not empty").unwrap();
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
}

#[test]
fn a_second_owner_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let _s = open(&path);
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
}

#[test]
fn synchronous_normal_is_selectable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let opts = SpoolOptions {
        synchronous_full: false,
        ..SpoolOptions::numbered_from_one(1 << 20)
    };
    let mut s = Spool::open(&path, opts).unwrap();
    let level: i64 = s
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(level, 1); // NORMAL
    s.append("gw", vec![batch("m", 1, "1")]).unwrap();
    drop(s);
    let s = open(&path);
    let level: i64 = s
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(level, 2); // FULL
    assert_eq!(s.stats().unwrap().depth, 1);
}

/// Skips (printing why), or fails under `METERD_REQUIRE_PARTS=1` (hil-tests/run, CI).
fn skip_part(why: &str) {
    if std::env::var("METERD_REQUIRE_PARTS").is_ok_and(|v| v == "1") {
        panic!("required part missing: {why}");
    }
    eprintln!("SKIP {why}");
}

/// Mounts a 256 KiB tmpfs; `None` (with the reason printed) where that is not permitted.
fn small_fs(dir: &Path) -> Option<Mount> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(o) => {
            skip_part(&format!(
                "disk-full test: mount -t tmpfs not permitted: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            None
        }
        Err(e) => {
            skip_part(&format!("disk-full test: cannot run mount: {e}"));
            None
        }
    }
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_distinct_and_loses_nothing_taken() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = small_fs(dir.path()) else {
        return;
    };
    let path = dir.path().join("spool.db");
    let mut s = open(&path);
    let mut taken = Vec::new();
    let mut full = None;
    for i in 0..10_000 {
        match s.append("gw", vec![batch(&format!("m{}", i % 3), 25, "1.25")]) {
            Ok(a) => taken.extend(a),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("a 256 KiB file system never filled up");
    assert!(matches!(err, SpoolError::DiskFull { .. }), "{err}");
    assert!(taken.len() > 10, "only {} batches fitted", taken.len());
    eprintln!("disk full after {} batches: {err}", taken.len());
    // Everything taken is readable now, from this connection…
    let stored: Vec<i64> = s
        .pending(None, usize::MAX)
        .unwrap()
        .iter()
        .map(|p| p.rowid)
        .collect();
    assert_eq!(stored, taken.iter().map(|a| a.rowid).collect::<Vec<_>>());
    assert_eq!(s.stats().unwrap().depth, taken.len() as u64);
    // …and keeps failing cleanly.
    let again = s.append("gw", vec![batch("m0", 25, "1.25")]);
    assert!(
        matches!(again, Err(SpoolError::DiskFull { .. })),
        "{again:?}"
    );
    drop(s);
    // …and after a reopen, every batch taken is there, whole, with its seq.
    let s = open(&path);
    let p = s.pending(None, usize::MAX).unwrap();
    assert_eq!(p.len(), taken.len());
    for (p, a) in p.iter().zip(&taken) {
        assert_eq!(
            (p.rowid, &p.meter, p.seq, &p.id),
            (a.rowid, &a.meter, a.seq, &a.id)
        );
        let b: ReadingBatch = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(b.id, a.id);
    }
    // Acks free room: appends go on where they stopped, with no seq reused.
    let mut s = s;
    let half: Vec<i64> = taken[..taken.len() / 2].iter().map(|a| a.rowid).collect();
    match s.ack_many(&half) {
        Ok(n) => {
            assert_eq!(n, half.len());
            let last_m0 = taken
                .iter()
                .filter(|a| a.meter == "m0")
                .map(|a| a.seq)
                .max();
            let next = s.append("gw", vec![batch("m0", 25, "1.25")]).unwrap();
            assert_eq!(Some(next[0].seq), last_m0.map(|s| s + 1));
        }
        Err(e) => eprintln!("note: acking on the full file system failed too: {e}"),
    }
}

#[test]
fn a_read_only_file_system_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = small_fs(dir.path()) else {
        return;
    };
    let path = dir.path().join("spool.db");
    let mut s = open(&path);
    s.append("gw", vec![batch("m1", 2, "1.5")]).unwrap();
    drop(s);
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_part("read-only test: remount,ro not permitted");
        return;
    }
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::ReadOnly { .. }), "{err:?}");
    eprintln!("{err}");
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, "x").unwrap();
    let err = Spool::open(
        file.join("spool.db"),
        SpoolOptions::numbered_from_one(1 << 20),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not a directory") && msg.contains(&file.display().to_string()),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn a_new_spool_on_a_read_only_file_system_is_read_only() {
    // No spool file yet: SQLite alone says "unable to open database file" (HIL found it).
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = small_fs(dir.path()) else {
        return;
    };
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_part("read-only test: remount,ro not permitted");
        return;
    }
    let path = dir.path().join("spool.db");
    let err = Spool::open(&path, SpoolOptions::numbered_from_one(64 * 1024 * 1024)).unwrap_err();
    assert!(matches!(err, SpoolError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("writable"), "{err}");
}

#[test]
fn a_new_spool_never_repeats_the_ids_of_a_lost_one() {
    let dir = tempfile::tempdir().unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old = dir.path().join("old.db");
    let mut s = Spool::open(&old, SpoolOptions::new(1 << 20)).unwrap();
    let first = s.append("gw", vec![batch("m1", 1, "1.00")]).unwrap()[0].seq;
    assert!(
        first >= before,
        "seq {first} starts at the clock ({before} ms)"
    );
    let mut last = first;
    for _ in 0..20 {
        // The guarantee's premise: a meter is polled at most every 100 ms (the configuration
        // enforces it), so its seq grows slower than the clock. 2 ms apart keeps that here.
        std::thread::sleep(std::time::Duration::from_millis(2));
        last = s.append("gw", vec![batch("m1", 1, "1.00")]).unwrap()[0].seq;
    }
    assert_eq!(last, first + 20, "then it grows by one per batch");
    drop(s);
    // The spool is lost; a new one starts above every seq the old one issued.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut fresh = Spool::open(dir.path().join("new.db"), SpoolOptions::new(1 << 20)).unwrap();
    let again = fresh.append("gw", vec![batch("m1", 1, "1.00")]).unwrap()[0].seq;
    assert!(
        again > last,
        "new spool's seq {again} must exceed the lost spool's {last}"
    );
}

#[test]
fn an_ack_is_not_fsynced_on_its_own_but_the_next_append_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&db(&dir));
    let level = |s: &Spool| -> i64 {
        s.conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    };
    let a = s
        .append("gw", vec![batch("m", 1, "1"), batch("m", 1, "2")])
        .unwrap();
    assert_eq!(s.ack_many(&[a[0].rowid]).unwrap(), 1);
    // Restored at once: an append right after commits with its fsync.
    assert_eq!(level(&s), 2);
    s.relaxed = true;
    s.conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    s.append("gw", vec![batch("m", 1, "3")]).unwrap();
    assert_eq!(
        level(&s),
        2,
        "an append restores FULL before its transaction"
    );
    drop(s);
    let s = open(&db(&dir));
    assert_eq!(s.stats().unwrap().depth, 2);
}

#[test]
fn acking_a_run_that_covers_acked_and_unknown_ids_counts_only_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&db(&dir));
    let all = s
        .append(
            "gw",
            (0..6).map(|m| batch(&format!("m{m}"), 2, "1.5")).collect(),
        )
        .unwrap();
    let ids: Vec<i64> = all.iter().map(|a| a.rowid).collect();
    assert!(s.ack(ids[2]).unwrap());
    let run: Vec<i64> = (ids[0] - 5..=ids[3]).chain([ids[1], ids[3]]).collect();
    assert_eq!(s.ack_many(&run).unwrap(), 3);
    assert_eq!(pending_rowids(&s), ids[4..].to_vec());
    let st = s.stats().unwrap();
    assert_eq!(st.depth, 2);
    assert_eq!(st.bytes, all[4..].iter().map(|a| a.bytes).sum::<u64>());
}

#[test]
fn payloads_are_stored_compressed_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    let stored = s
        .append("gw", vec![batch("m1", 25, "1.5"), batch("m2", 0, "2")])
        .unwrap();
    let sent = s.pending(None, 10).unwrap();
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(i64, i64, i64, i64)> = c
        .prepare("SELECT row_id, bytes, encoding, length(payload) FROM outbox ORDER BY row_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (_, bytes, encoding, len) = rows[0];
    assert_eq!(encoding, packing::LZ4);
    assert_eq!(bytes, stored[0].bytes as i64, "bytes counts the JSON");
    assert!(len * 2 < bytes, "{len} of {bytes}");
    drop(c);

    // What the uplink reads after a restart is the JSON that was appended, byte for byte.
    let s = open(&path);
    let again = s.pending(None, 10).unwrap();
    assert_eq!(again, sent);
    let doc: serde_json::Value = serde_json::from_slice(&again[0].payload).unwrap();
    assert_eq!(doc["values"].as_array().unwrap().len(), 25);
}

#[test]
fn a_row_that_does_not_decompress_is_corrupt_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    let a = s.append("gw", vec![batch("m1", 25, "1.5")]).unwrap();
    drop(s);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute(
            "UPDATE outbox SET payload = x'F0FFFFFF00' WHERE row_id = ?1",
            [a[0].rowid],
        )
        .unwrap();
    }
    let s = open(&path);
    let err = s.pending(None, 10).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("row {}", a[0].rowid)) && text.contains(&a[0].id),
        "{text}"
    );
}

#[test]
fn a_version_1_spool_is_migrated_and_its_rows_are_sent_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let old_json = serde_json::to_vec(&batch("m1", 3, "5")).unwrap();
    {
        // The file meterd 0.1 (schema version 1) left: one unacknowledged reading, seq 7.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .unwrap();
        c.execute_batch(schema::SCHEMA_V1).unwrap();
        c.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO outbox (row_id, meter, seq, id, read_at, bytes, payload) \
             VALUES (1, 'm1', 7, 'gw/m1/7', '2026-11-27T10:00:00.000Z', ?1, ?2)",
            rusqlite::params![old_json.len() as i64, old_json],
        )
        .unwrap();
        c.execute("INSERT INTO meters (meter, last_seq) VALUES ('m1', 7)", [])
            .unwrap();
    }
    let mut s = open(&path);
    let version: i32 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    let a = s.append("gw", vec![batch("m1", 25, "6")]).unwrap();
    assert_eq!(a[0].seq, 8, "numbering goes on");
    let p = s.pending(None, 10).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].rowid, p[0].id.as_str()), (1, "gw/m1/7"));
    assert_eq!(
        p[0].payload, old_json,
        "the old row is sent as it was stored"
    );
    assert_eq!(p[1].id, "gw/m1/8");
    assert_eq!(s.stats().unwrap().depth, 2);
    drop(s);
    // Opening a migrated spool again changes nothing.
    let s = open(&path);
    assert_eq!(s.pending(None, 10).unwrap(), p);
}

#[test]
fn a_version_2_spool_gets_an_in_memory_drop_counter_and_keeps_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let mut s = open(&path);
        s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
        drop(s);
        // Back to what meterd with schema version 2 left: no dropped_in_memory column.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "ALTER TABLE meters DROP COLUMN dropped_in_memory; \
             ALTER TABLE outbox DROP COLUMN kind; DROP TABLE ledger; DROP TABLE event_counters; \
             DROP TABLE commands; DROP TABLE audit; \
             UPDATE meters SET dropped_batches = 4, dropped_bytes = 400; \
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let mut s = open(&path);
    let m = &s.meters().unwrap()[0];
    assert_eq!(
        (m.last_seq, m.dropped_batches, m.dropped_in_memory),
        (1, 4, 0)
    );
    s.note_memory_drops("m1", 2);
    s.append("gw", vec![batch("m1", 3, "2")]).unwrap();
    drop(s);
    let s = open(&path);
    assert_eq!(s.meter_drops("m1").unwrap(), (4, 2));
    assert_eq!(s.stats().unwrap().dropped_in_memory, 2);
    assert_eq!(
        s.meters().unwrap()[0].last_seq,
        2,
        "memory drops use no seq"
    );
}

#[test]
fn memory_drops_of_a_meter_never_stored_are_kept_and_do_not_move_its_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = open(&path);
    s.note_memory_drops("new", 3);
    s.note_memory_drops("new", 0);
    // Seen at once, before anything is written.
    assert_eq!(s.meter_drops("new").unwrap(), (0, 3));
    assert_eq!(s.meter_drops("other").unwrap(), (0, 0));
    assert_eq!(s.stats().unwrap().dropped_in_memory, 3);
    // Written by the next transaction that commits, even one that stores another meter only.
    s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
    drop(s);
    let mut s = open(&path);
    assert_eq!(s.meter_drops("new").unwrap(), (0, 3));
    let a = s.append("gw", vec![batch("new", 3, "1")]).unwrap();
    assert_eq!(a[0].seq, 1, "the meter starts where it would have");
    // A reading larger than the whole spool: numbered, counted, gone.
    let seq = s.drop_unstorable("new", 1 << 30).unwrap();
    assert_eq!(seq, 2);
    assert_eq!(s.meter_drops("new").unwrap(), (1, 3));
    let a = s.append("gw", vec![batch("new", 3, "2")]).unwrap();
    assert_eq!(a[0].seq, 3, "the consumer sees seq 2 as a gap");
    assert_eq!(s.stats().unwrap().dropped_batches, 1);
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_data_dir_is_created_0700_and_the_spool_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var").join("meterd");
    let path = data.join("spool.sqlite");
    let mut s = open(&path);
    s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&path), 0o600);
    let wal = with_suffix(&path, "-wal");
    assert!(wal.exists());
    assert_eq!(
        mode(&wal),
        0o600,
        "SQLite gives the WAL the database's mode"
    );
    assert!(data_dir_warning(&data).is_none());
}

#[test]
fn an_older_spool_readable_by_others_is_narrowed_and_a_wide_data_dir_only_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join("spool.sqlite");
    let mut s = open(&path);
    s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
    drop(s);
    let wal = with_suffix(&path, "-wal");
    let wide = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    wide(&data, 0o755).unwrap();
    wide(&path, 0o644).unwrap();
    if wal.exists() {
        wide(&wal, 0o644).unwrap();
    }
    let mut s = open(&path);
    s.append("gw", vec![batch("m1", 3, "2")]).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&wal), 0o600);
    // The operator's directory is theirs: left as it is, with a warning.
    assert_eq!(mode(&data), 0o755);
    let warning = data_dir_warning(&data).expect("a warning");
    assert!(
        warning.contains("0755") && warning.contains("data"),
        "{warning}"
    );
}

#[test]
fn a_version_3_spool_keeps_its_readings_and_gets_the_freeze_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let mut s = open(&path);
        s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
        drop(s);
        // Back to what meterd with schema version 3 left: no kind column, no ledger.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "ALTER TABLE outbox DROP COLUMN kind; DROP TABLE ledger; DROP TABLE event_counters; \
             DROP TABLE commands; DROP TABLE audit; PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let s = open(&path);
    let pending = s.pending(None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, MessageKind::Reading);
    assert_eq!(s.ledger("daily", "").unwrap(), []);
}

#[test]
fn a_version_4_spool_keeps_its_rows_and_gets_the_event_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let mut s = open(&path);
        s.append("gw", vec![batch("m1", 3, "1")]).unwrap();
        drop(s);
        // Back to what meterd with schema version 4 left: no event counters.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP TABLE event_counters; DROP TABLE commands; DROP TABLE audit; \
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let mut s = open(&path);
    let pending = s.pending(None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, MessageKind::Reading);
    assert!(s.event_counters().unwrap().is_empty());
    let note = crate::reading::event::EventNote::Baseline {
        meter: "m1".into(),
        ty: "power_down".into(),
        n: 2,
    };
    s.append_events(&[note]).unwrap();
    assert_eq!(s.event_counters().unwrap().len(), 1);
}
