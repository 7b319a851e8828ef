//! The spool as the uplink's outbox: acks committed in groups, and fresh readings handed over
//! in memory.
//!
//! The spool stays the source of truth: [`FreshRows`] is only a copy of what the last appends
//! stored, used when it is exactly what [`Spool::pending`] would return (the rows right after
//! the uplink's cursor, in rowid order). Anything else — a reconnect (cursor `None`), a
//! backlog, rows dropped by the overflow policy, a full handoff queue — reads the file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

// A panic while holding the spool's lock cannot leave SQLite half-written (transactions), so
// the spool is still usable after one: `lock` takes a poisoned lock as it is.
use super::outbox::{Outbox, Pending};
use crate::spool::{AppendedRows, Spool, SpoolError};
use crate::sync::lock;

/// Most rows kept for the handoff (their payloads are ~1–3 KB each). The uplink takes them a
/// publish window at a time; when it falls further behind (a poll burst of hundreds of meters,
/// a broker outage) it reads the file instead, so that a burst is not held in memory twice.
const FRESH_MAX: usize = 128;

/// A group of acks is committed when it holds this many.
const ACK_GROUP: usize = 64;
/// ... or when its oldest ack is this old and the uplink next reads the outbox.
const ACK_MAX_AGE: Duration = Duration::from_secs(1);

/// Rows just appended, shared by the spool writer (which adds) and the outbox (which takes).
#[derive(Clone, Default)]
pub struct FreshRows(Arc<Mutex<VecDeque<Pending>>>);

impl FreshRows {
    fn rows(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // Only plain pushes and pops happen under the lock: a poisoned queue is still whole.
        lock(&self.0)
    }

    /// Called after each successful append, with what it stored.
    pub fn add(&self, appended: AppendedRows) {
        let mut rows = self.rows();
        if appended.dropped > 0 {
            // The overflow policy deleted older rows, perhaps some of these: from now on the
            // file alone says what is pending, until the queue holds only newer rows.
            rows.clear();
        }
        if rows.len() + appended.rows.len() > FRESH_MAX {
            // The uplink is not taking them (disconnected): it will read the file.
            rows.clear();
            return;
        }
        rows.extend(appended.rows);
    }

    /// The rows after `after_rowid`, up to `limit`, if the queue holds exactly those; `None`
    /// when the file must be read. Rows at or before the cursor are discarded either way.
    fn take(&self, after_rowid: Option<i64>, limit: usize) -> Option<Vec<Pending>> {
        let mut rows = self.rows();
        let Some(cursor) = after_rowid else {
            // A re-read from the start (after a CONNACK): the file, which has everything.
            rows.clear();
            return None;
        };
        while rows.front().is_some_and(|r| r.rowid <= cursor) {
            rows.pop_front();
        }
        // Row ids of one spool are consecutive, so the next pending row is `cursor + 1`
        // unless it was deleted — acked (only rows at or before the cursor are) or dropped
        // by the overflow policy (which clears the queue).
        if rows.front()?.rowid != cursor + 1 {
            return None;
        }
        let mut out = Vec::with_capacity(limit.min(rows.len()));
        let mut next = cursor + 1;
        while out.len() < limit && rows.front().is_some_and(|r| r.rowid == next) {
            if let Some(r) = rows.pop_front() {
                out.push(r);
            }
            next += 1;
        }
        Some(out)
    }

    /// Forgets rows at or before `rowid` (the uplink read them from the file).
    fn discard_through(&self, rowid: i64) {
        let mut rows = self.rows();
        while rows.front().is_some_and(|r| r.rowid <= rowid) {
            rows.pop_front();
        }
    }
}

/// Runs `f`, which waits for the spool (its lock, its disk), telling a multi-threaded tokio
/// runtime first (`block_in_place`) so that the worker's other tasks move to another thread:
/// the uplink calls the outbox on a worker, and a writer's fsync can hold the spool for
/// seconds; with two workers, one waiting here and one elsewhere stopped the whole daemon.
/// Elsewhere (a current-thread runtime in tests, no runtime) it just runs `f`.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Acknowledged rows not deleted yet, shared by the outbox (which adds them and commits them
/// when due) and the spool writer (which deletes them in its next append's transaction).
#[derive(Clone, Default)]
pub struct HeldAcks(Arc<Mutex<AckGroup>>);

#[derive(Default)]
struct AckGroup {
    rowids: Vec<i64>,
    /// When the oldest of `rowids` arrived.
    oldest: Option<Instant>,
}

impl HeldAcks {
    fn group(&self) -> MutexGuard<'_, AckGroup> {
        // Only pushes and takes happen under the lock: a poisoned group is still whole.
        lock(&self.0)
    }

    /// Holds one more; returns how many are held.
    fn push(&self, rowid: i64) -> usize {
        let mut g = self.group();
        g.rowids.push(rowid);
        g.oldest.get_or_insert_with(Instant::now);
        g.rowids.len()
    }

    /// Takes every ack held (to delete them).
    pub fn take(&self) -> Vec<i64> {
        let mut g = self.group();
        g.oldest = None;
        std::mem::take(&mut g.rowids)
    }

    /// Gives back acks whose deletion failed (before newer ones: order does not matter to a
    /// delete, only that none is lost).
    pub fn put_back(&self, mut rowids: Vec<i64>) {
        if rowids.is_empty() {
            return;
        }
        let mut g = self.group();
        rowids.append(&mut g.rowids);
        g.rowids = rowids;
        g.oldest.get_or_insert_with(Instant::now);
    }

    /// Whether they should be committed now: [`ACK_GROUP`] of them, or the oldest
    /// [`ACK_MAX_AGE`] old.
    fn due(&self) -> bool {
        let g = self.group();
        g.rowids.len() >= ACK_GROUP || g.oldest.is_some_and(|t| t.elapsed() >= ACK_MAX_AGE)
    }
}

/// The spool as the uplink's outbox. Acks are held and deleted in groups: a delete that is
/// not yet durable can only cause a re-send with the same id after a crash, which the
/// contract allows, while a durable delete per PUBACK would cost one fsync per reading.
///
/// Held acks are deleted by the spool writer's next append, in its transaction
/// ([`Spool::append_rows_acking`]); the outbox commits them itself, in a transaction of their
/// own, when there are [`ACK_GROUP`] of them, when the oldest is [`ACK_MAX_AGE`] old at the
/// next outbox read (no append came: a backlog drains), when the uplink re-reads the outbox
/// from the start (after a CONNACK, so that nothing acked is sent again), and at stop.
/// Committing on every read instead cost one fsync per reading (the uplink reads the outbox
/// once per stored batch), and a transaction of their own each second was a tenth of the
/// daemon's CPU at 10 readings/s (benches/pipeline.rs, docs/benchmarks.md).
pub struct SpoolOutbox {
    spool: Arc<Mutex<Spool>>,
    fresh: FreshRows,
    acks: HeldAcks,
}

impl SpoolOutbox {
    /// The outbox over `spool`, serving `fresh` rows from memory and holding acks in `acks`.
    pub fn new(spool: Arc<Mutex<Spool>>, fresh: FreshRows, acks: HeldAcks) -> Self {
        Self { spool, fresh, acks }
    }

    /// Commits the acks held (one transaction); on error they stay held.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        off_the_runtime(|| self.flush_now())
    }

    fn flush_now(&mut self) -> Result<(), SpoolError> {
        // The spool first, then the acks: the writer takes them under the spool's lock, so a
        // flush never sees a group the writer is deleting half-way.
        let mut spool = lock(&self.spool);
        let acks = self.acks.take();
        if acks.is_empty() {
            return Ok(());
        }
        match spool.ack_many(&acks) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.acks.put_back(acks);
                Err(e)
            }
        }
    }

    /// Whether the acks held should be committed before the next outbox read.
    fn flush_due(&self, after_rowid: Option<i64>) -> bool {
        after_rowid.is_none() || self.acks.due()
    }
}

impl Outbox for SpoolOutbox {
    type Error = SpoolError;

    fn pending(
        &mut self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, SpoolError> {
        if self.flush_due(after_rowid) {
            self.flush()?;
        }
        if let Some(rows) = self.fresh.take(after_rowid, limit) {
            return Ok(rows);
        }
        let rows = off_the_runtime(|| lock(&self.spool).pending(after_rowid, limit))?;
        if let Some(last) = rows.last() {
            self.fresh.discard_through(last.rowid);
        }
        Ok(rows)
    }

    fn ack(&mut self, rowid: i64) -> Result<bool, SpoolError> {
        if self.acks.push(rowid) >= ACK_GROUP {
            self.flush()?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::ReadingBatch;
    use crate::spool::SpoolOptions;

    fn setup(max_bytes: u64) -> (tempfile::TempDir, Arc<Mutex<Spool>>, FreshRows, SpoolOutbox) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(
            dir.path().join("spool.sqlite"),
            SpoolOptions::numbered_from_one(max_bytes),
        )
        .unwrap();
        let spool = Arc::new(Mutex::new(spool));
        let fresh = FreshRows::default();
        let outbox = SpoolOutbox::new(spool.clone(), fresh.clone(), HeldAcks::default());
        (dir, spool, fresh, outbox)
    }

    /// The uplink reads the outbox on a runtime worker: while the spool is held (a writer's
    /// long fsync), the worker's other tasks move on instead of waiting with it. With two
    /// workers and both stuck on the spool, `/api/status` stopped answering.
    #[test]
    fn waiting_for_the_spool_does_not_stall_the_runtime() {
        let (_dir, spool, _fresh, mut outbox) = setup(1 << 20);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let spool = spool.clone();
            std::thread::spawn(move || {
                let _s = lock(&spool);
                held_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(2));
            })
        };
        held_rx.recv().unwrap();
        let ticked_after = rt.block_on(async move {
            let t0 = tokio::time::Instant::now();
            // One worker: without block_in_place the reader holds it, and the ticker cannot
            // run until the spool is free (2 s).
            let reader = tokio::spawn(async move { outbox.pending(None, 10).map(|r| r.len()) });
            tokio::task::yield_now().await;
            let ticker = tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                t0.elapsed()
            });
            let ticked = ticker.await.unwrap();
            assert_eq!(reader.await.unwrap().unwrap(), 0);
            ticked
        });
        holder.join().unwrap();
        assert!(
            ticked_after < std::time::Duration::from_secs(1),
            "another task waited {ticked_after:?} for the spool's holder"
        );
    }

    /// From a blocking-pool thread of a multi-threaded runtime, too, the outbox just works
    /// (`block_in_place` is allowed there).
    #[test]
    fn the_outbox_works_from_a_blocking_thread() {
        let (_dir, _spool, _fresh, mut outbox) = setup(1 << 20);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let n = rt
            .block_on(async move {
                tokio::task::spawn_blocking(move || {
                    outbox.flush().unwrap();
                    outbox.pending(None, 10).unwrap().len()
                })
                .await
            })
            .unwrap();
        assert_eq!(n, 0);
    }

    fn append(spool: &Mutex<Spool>, fresh: &FreshRows, meters: &[&str]) {
        let mut batches: Vec<_> = meters
            .iter()
            .map(|m| ReadingBatch::new("x", m, "modbus-tcp", 0, crate::clock::now()))
            .collect();
        let rows = lock(spool).append_rows("gw", &mut batches).unwrap();
        fresh.add(rows);
    }

    fn ids(rows: &[Pending]) -> Vec<String> {
        rows.iter().map(|r| r.id.clone()).collect()
    }

    /// Whatever the handoff serves equals what the file holds after the same cursor.
    fn check_same_as_file(outbox: &mut SpoolOutbox, spool: &Mutex<Spool>, after: Option<i64>) {
        let file = lock(spool).pending(after, 100).unwrap();
        let got = outbox.pending(after, 100).unwrap();
        assert_eq!(got, file, "after {after:?}");
    }

    #[test]
    fn fresh_rows_are_served_from_memory_exactly_as_the_file_has_them() {
        let (_d, spool, fresh, mut outbox) = setup(1 << 20);
        append(&spool, &fresh, &["a", "b"]);
        // The start after a CONNACK reads the file and empties the queue.
        check_same_as_file(&mut outbox, &spool, None);
        assert!(fresh.rows().is_empty());
        append(&spool, &fresh, &["a", "b", "c"]);
        let mem = fresh.take(Some(2), 2).expect("served from memory");
        assert_eq!(ids(&mem), ["gw/a/2", "gw/b/2"]);
        assert_eq!(mem, lock(&spool).pending(Some(2), 2).unwrap());
        // The rest, then nothing.
        check_same_as_file(&mut outbox, &spool, Some(4));
        check_same_as_file(&mut outbox, &spool, Some(5));
    }

    #[test]
    fn a_backlog_before_the_fresh_rows_is_read_from_the_file() {
        let (_d, spool, fresh, mut outbox) = setup(1 << 20);
        // Stored while nobody listened to the handoff (e.g. before a restart).
        lock(&spool)
            .append_rows(
                "gw",
                &mut [ReadingBatch::new(
                    "x",
                    "a",
                    "modbus-tcp",
                    0,
                    crate::clock::now(),
                )],
            )
            .unwrap();
        append(&spool, &fresh, &["b"]);
        assert!(fresh.take(Some(0), 10).is_none());
        check_same_as_file(&mut outbox, &spool, Some(0));
        // The file read covered the fresh row too: it is not served again.
        assert!(fresh.rows().is_empty());
    }

    #[test]
    fn overflow_drops_send_the_outbox_back_to_the_file() {
        let one = serde_json::to_vec(&ReadingBatch::new(
            "gw",
            "a",
            "modbus-tcp",
            1,
            crate::clock::now(),
        ))
        .unwrap()
        .len() as u64;
        // Room for about three batches: the fourth append drops the oldest.
        let (_d, spool, fresh, mut outbox) = setup(one * 3 + one / 2);
        append(&spool, &fresh, &["a", "b", "c"]);
        append(&spool, &fresh, &["d"]);
        assert!(fresh.take(Some(0), 10).is_none(), "row 1 was dropped");
        check_same_as_file(&mut outbox, &spool, Some(0));
    }

    #[test]
    fn a_full_queue_is_cleared_rather_than_grown() {
        let (_d, spool, fresh, _outbox) = setup(64 << 20);
        let meters: Vec<String> = (0..FRESH_MAX + 1).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = meters.iter().map(String::as_str).collect();
        append(&spool, &fresh, &refs);
        assert!(fresh.rows().is_empty());
    }
}
