//! Spool throughput, as an ignored test that prints figures. Run in release:
//!
//! ```text
//! cargo test --release -p meterd --lib spool::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Bytes come from `/proc/self/io` `write_bytes` (what this process sent to the storage layer,
//! fsyncs included); CPU from this thread's CPU clock (user and kernel, fsync included, the
//! wait for the disk not). The temporary spool is in the system temp dir (override with `TMPDIR`):
//! put that on the storage you want to measure.

use std::time::Instant;

use super::tests::batch;
use super::*;

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this thread has used, in µs (the test thread does all the spool's work).
fn thread_cpu_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

struct Figure {
    what: String,
    per_batch_us: f64,
    cpu_per_batch_us: f64,
    bytes_per_batch: f64,
}

fn measure(what: String, batches: u64, f: impl FnOnce()) -> Figure {
    let w0 = write_bytes();
    let c0 = thread_cpu_us();
    let t0 = Instant::now();
    f();
    let us = t0.elapsed().as_secs_f64() * 1e6;
    let cpu = thread_cpu_us() - c0;
    let w = write_bytes() - w0;
    Figure {
        what,
        per_batch_us: us / batches as f64,
        cpu_per_batch_us: cpu / batches as f64,
        bytes_per_batch: w as f64 / batches as f64,
    }
}

fn run(synchronous_full: bool) -> Vec<Figure> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let opts = SpoolOptions {
        synchronous_full,
        ..SpoolOptions::new(1 << 30)
    };
    let mut s = Spool::open(&path, opts).unwrap();
    let sync = if synchronous_full { "FULL" } else { "NORMAL" };
    let mut figures = Vec::new();
    let one_json = serde_json::to_vec(&batch("000000123456", 25, "12345.67"))
        .unwrap()
        .len();

    const SINGLES: u64 = 500;
    figures.push(measure(
        format!("append 1 batch x 25 values per tx ({one_json} B JSON), {sync}"),
        SINGLES,
        || {
            for i in 0..SINGLES {
                let m = format!("{:012}", i % 50);
                s.append("gw-01", vec![batch(&m, 25, "12345.67")]).unwrap();
            }
        },
    ));
    const CYCLES: u64 = 40;
    figures.push(measure(
        format!("append 50 batches x 25 values per tx, {sync}"),
        CYCLES * 50,
        || {
            for _ in 0..CYCLES {
                let bs = (0..50)
                    .map(|m| batch(&format!("{m:012}"), 25, "12345.67"))
                    .collect();
                s.append("gw-01", bs).unwrap();
            }
        },
    ));
    // The daemon's own cycle (`SpoolWriter::store`): a group of new batches in the transaction
    // that also deletes the group the broker acknowledged since.
    const GROUP: u64 = 32;
    let mut previous: Vec<i64> = Vec::new();
    figures.push(measure(
        format!("append {GROUP} batches + ack the previous {GROUP} per tx, {sync}"),
        CYCLES * GROUP,
        || {
            for _ in 0..CYCLES {
                let mut bs: Vec<ReadingBatch> = (0..GROUP)
                    .map(|m| batch(&format!("{:012}", 100 + m), 25, "12345.67"))
                    .collect();
                let rows = s.append_rows_acking("gw-01", &mut bs, &previous).unwrap();
                previous = rows.rows.iter().map(|p| p.rowid).collect();
            }
        },
    ));
    s.ack_many(&previous).unwrap();
    let total = SINGLES + CYCLES * 50;
    figures.push(measure(
        format!("pending: read all {total} in pages of 50, {sync}"),
        total,
        || {
            let mut cursor = None;
            while let Some(last) = s.pending(cursor, 50).unwrap().last() {
                cursor = Some(last.rowid);
            }
        },
    ));
    let rows: Vec<i64> = s
        .pending(None, usize::MAX)
        .unwrap()
        .iter()
        .map(|p| p.rowid)
        .collect();
    let (singles, rest) = rows.split_at(SINGLES as usize);
    figures.push(measure(
        format!("ack 1 per tx, {sync}"),
        singles.len() as u64,
        || {
            for &r in singles {
                assert!(s.ack(r).unwrap());
            }
        },
    ));
    figures.push(measure(
        format!("ack_many 50 per tx, {sync}"),
        rest.len() as u64,
        || {
            for chunk in rest.chunks(50) {
                assert_eq!(s.ack_many(chunk).unwrap(), chunk.len());
            }
        },
    ));
    figures
}

/// Lower bounds for any spool of this kind, not meterd's: (1) encoding a batch's JSON, which
/// is what gets published, and (2) the least SQLite can do to keep a group durable before it
/// is published, one row holding the whole group's JSON, inserted in a WAL transaction with
/// `synchronous=FULL` that also deletes the previous group's row (no per-batch rows, seq
/// counters or registers). Per batch.
fn floors() -> Vec<Figure> {
    const GROUP: usize = 32;
    const CYCLES: u64 = 100;
    let one = batch("000000123456", 25, "12345.67");
    let mut buf = Vec::with_capacity(4096);
    let mut figures = vec![measure(
        "floor: JSON of 1 batch x 25 values".into(),
        CYCLES * GROUP as u64,
        || {
            for _ in 0..CYCLES * GROUP as u64 {
                buf.clear();
                serde_json::to_writer(&mut buf, &one).unwrap();
                std::hint::black_box(&buf);
            }
        },
    )];
    let group: Vec<u8> = buf.repeat(GROUP);
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("floor.db")).unwrap();
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
        .unwrap();
    conn.execute_batch("CREATE TABLE g (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        .unwrap();
    figures.push(measure(
        format!(
            "floor: 1 row of {GROUP} batches' JSON ({} B) + delete the previous per tx, FULL",
            group.len()
        ),
        CYCLES * GROUP as u64,
        || {
            for i in 0..CYCLES as i64 {
                let tx = conn.transaction().unwrap();
                tx.prepare_cached("INSERT INTO g (id, payload) VALUES (?1, ?2)")
                    .unwrap()
                    .execute(params![i, group])
                    .unwrap();
                tx.prepare_cached("DELETE FROM g WHERE id = ?1")
                    .unwrap()
                    .execute([i - 1])
                    .unwrap();
                tx.commit().unwrap();
            }
        },
    ));
    figures
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn spool_throughput() {
    let mut all = run(true);
    all.extend(run(false));
    all.extend(floors());
    println!(
        "{:<66} {:>10} {:>14} {:>20}",
        "", "us/batch", "CPU us/batch", "bytes written/batch"
    );
    for f in all {
        println!(
            "{:<66} {:>10.1} {:>14.1} {:>20.0}",
            f.what, f.per_batch_us, f.cpu_per_batch_us, f.bytes_per_batch
        );
    }
}
