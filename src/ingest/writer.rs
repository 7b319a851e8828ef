//! The pipeline's blocking half: validates batches and appends them to the spool, several per
//! transaction, with the uplink's held acknowledgements deleted in the same transaction.
//!
//! A batch handed to [`SpoolWriter::store`] is never lost by a failed append: it stays in
//! memory, validated once, until an append takes it (or the memory bound of the pipeline drops
//! it, counted per meter in the spool: [`Spool::note_memory_drops`]). Never talks to a meter or
//! the broker.
//!
//! What waits is appended in chunks, each one transaction of at most [`super::MAX_GROUP`]
//! batches and about a quarter of the spool's `max_bytes` ([`CHUNK_FRACTION`]): a backlog left
//! by a long storage outage can be far larger than the spool, and one transaction for all of
//! it would be refused (`TooLarge`) on every retry, for ever. A chunk fits, and the spool's
//! overflow policy drops the oldest stored batches (counted, seen as `seq` gaps) to make room
//! for the newest. A single batch larger than the whole spool can never be stored: it is
//! given its `seq` and counted as dropped ([`Spool::drop_unstorable`]) with an error log that
//! says why, and is not retried.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use super::register_memory::RegisterMemory;
use super::spool_outbox::HeldAcks;
use crate::config::ValidationConfig;
use crate::health::SuccessBook;
use crate::reading::ReadingBatch;
use crate::spool::{AppendedRows, Spool, SpoolError};

/// A chunk's estimated JSON is at most `max_bytes / CHUNK_FRACTION`: a chunk then fits the
/// spool even if the estimate is off by that factor (and a chunk the spool still refuses is
/// stored one batch at a time).
pub const CHUNK_FRACTION: u64 = 4;

/// Rows of one [`SpoolWriter::store`] handed back for the in-memory handoff (the uplink's
/// `FreshRows` keeps no more; beyond it the uplink reads the file, so a recovery from a long
/// outage does not hold every stored payload in memory at once).
const HANDBACK_ROWS: usize = 128;

/// A cheap upper-bound estimate of a batch's `meterd.reading.v1` JSON in bytes, without
/// encoding it: the fixed keys of the envelope and of each value, plus the lengths of the
/// strings and frames (escaping aside: meter ids, quantities and hex frames need none). Within
/// a few percent above the real size for ordinary batches.
pub fn estimated_json_bytes(b: &ReadingBatch) -> u64 {
    /// `{"schema":"meterd.reading.v1","id":"","gateway":"","meter":"","protocol":"",
    /// "seq":,"read_at":"","values":[],"frames":[]}`, a 64-byte gateway id and a 20-digit seq.
    const ENVELOPE: usize = 260;
    /// `{"quantity":"","value":,"unit":"","obis":"","source":"","quality":"suspect",
    /// "reason":"","meter_time":""},` and quotes around a text value.
    const PER_VALUE: usize = 120;
    let mut n = ENVELOPE + 2 * b.meter.len() + b.protocol.len() + b.read_at.len();
    for v in &b.values {
        n += PER_VALUE + v.quantity.len() + v.unit.len() + v.source.len();
        n += v.obis.as_ref().map_or(0, |o| o.len());
        n += v.reason.as_ref().map_or(0, String::len);
        n += v.meter_time.as_ref().map_or(0, String::len);
        n += match &v.value {
            Some(crate::reading::ValueData::Number(x)) => x.as_str().len(),
            Some(crate::reading::ValueData::Text(t)) => t.len(),
            None => 4,
        };
    }
    for f in &b.frames {
        n += f.len() + 3;
    }
    n as u64
}
use super::events::ClockMarks;
use super::validation::ClockView;
use crate::clock::gateway::ClockTrust;
use crate::sync::lock;

/// Validates batches and appends them to the spool.
pub struct SpoolWriter {
    pub(super) spool: Arc<Mutex<Spool>>,
    gateway: String,
    validation: ValidationConfig,
    /// Each meter's last good cumulative registers, as in the spool.
    registers: RegisterMemory,
    /// Batches not stored yet (the spool failed); first in, first stored.
    pub(super) unstored: Vec<ReadingBatch>,
    /// How many of `unstored`, from the front, are validated.
    pub(super) validated: usize,
    /// [`estimated_json_bytes`] of `unstored`.
    pub(super) unstored_bytes: u64,
    /// The spool's `max_bytes`.
    pub(super) spool_max_bytes: u64,
    /// Where each meter's last stored batch is kept for the diagnostics service.
    pub(super) book: Option<Arc<Mutex<SuccessBook>>>,
    /// The uplink's acks, deleted in each append's transaction.
    pub(super) acks: HeldAcks,
    /// Whether the gateway's clock counts as synchronised, and the meters whose last clock
    /// check found them off; `None`: the gateway clock is taken as right, no checks known.
    clock: Option<(ClockTrust, Arc<ClockMarks>)>,
}

impl SpoolWriter {
    /// A writer appending to `spool` for `gateway`; `book` (if any) is given each meter's
    /// newest stored batch; `acks` are the uplink's, deleted with each append.
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        gateway: &str,
        validation: ValidationConfig,
        book: Option<Arc<Mutex<SuccessBook>>>,
        acks: HeldAcks,
    ) -> Self {
        let spool_max_bytes = lock(&spool).options().max_bytes;
        Self {
            spool_max_bytes,
            spool,
            gateway: gateway.to_owned(),
            validation,
            registers: RegisterMemory::default(),
            unstored: Vec::new(),
            validated: 0,
            unstored_bytes: 0,
            book,
            acks,
            clock: None,
        }
    }

    /// Compares meter clocks only while `trust` says the gateway's clock is synchronised, and
    /// marks the time stamps of meters `marks` knows to be off (see `validation`).
    pub fn with_clock(mut self, trust: ClockTrust, marks: Arc<ClockMarks>) -> Self {
        self.clock = Some((trust, marks));
        self
    }

    /// Takes the `n` oldest unstored batches out.
    fn take_oldest(&mut self, n: usize) -> Vec<ReadingBatch> {
        let n = n.min(self.unstored.len());
        let taken: Vec<ReadingBatch> = self.unstored.drain(..n).collect();
        for b in &taken {
            self.unstored_bytes = self.unstored_bytes.saturating_sub(estimated_json_bytes(b));
        }
        self.validated = self.validated.saturating_sub(n);
        taken
    }

    /// Bounds what waits in memory while the spool cannot be written: while the unstored
    /// batches and `arrived` (the next group) together are more than `max_batches` or their
    /// estimated JSON more than `max_bytes`, the oldest go (unstored first, then the oldest of
    /// `arrived`). Each drop is counted for its meter in the spool
    /// ([`Spool::note_memory_drops`]: in memory until the file can be written, then durable).
    /// Returns how many were dropped. Without a backlog (the last store succeeded) nothing is
    /// dropped: `arrived` is then a group about to be stored, not readings kept waiting.
    pub(super) fn bound_backlog(
        &mut self,
        arrived: &mut Vec<ReadingBatch>,
        max_batches: usize,
        max_bytes: u64,
    ) -> u64 {
        if self.unstored.is_empty() {
            return 0;
        }
        let mut arrived_bytes: u64 = arrived.iter().map(estimated_json_bytes).sum();
        let mut count = self.unstored.len() + arrived.len();
        let mut bytes = self.unstored_bytes.saturating_add(arrived_bytes);
        if count <= max_batches && bytes <= max_bytes {
            return 0;
        }
        let mut per_meter: BTreeMap<String, u64> = BTreeMap::new();
        let mut from_writer = 0;
        while (count > max_batches || bytes > max_bytes) && from_writer < self.unstored.len() {
            let b = &self.unstored[from_writer];
            bytes = bytes.saturating_sub(estimated_json_bytes(b));
            *per_meter.entry(b.meter.clone()).or_default() += 1;
            count -= 1;
            from_writer += 1;
        }
        drop(self.take_oldest(from_writer));
        let mut from_arrived = 0;
        while (count > max_batches || bytes > max_bytes) && from_arrived < arrived.len() {
            let b = &arrived[from_arrived];
            let est = estimated_json_bytes(b);
            bytes = bytes.saturating_sub(est);
            arrived_bytes = arrived_bytes.saturating_sub(est);
            *per_meter.entry(b.meter.clone()).or_default() += 1;
            count -= 1;
            from_arrived += 1;
        }
        arrived.drain(..from_arrived);
        let mut s = lock(&self.spool);
        let mut total = 0;
        for (meter, n) in &per_meter {
            s.note_memory_drops(meter, *n);
            total += n;
        }
        total
    }

    /// Validates `new` and appends it after any batches a failed call left, in chunks of at
    /// most [`super::MAX_GROUP`] batches and `max_bytes / CHUNK_FRACTION` estimated bytes, one
    /// transaction each (the held acks go with the first). What a failed chunk and the ones
    /// after it hold stays in `unstored` for the next call, and what was validated is not
    /// validated again; chunks committed before the failure are stored (the uplink finds them
    /// in the file). Hands back at most [`HANDBACK_ROWS`] stored rows: beyond that, none (the
    /// uplink reads the file).
    pub fn store(&mut self, new: Vec<ReadingBatch>) -> Result<AppendedRows, SpoolError> {
        // Taken in before anything that can fail, so a failure below cannot lose them.
        for b in &new {
            self.unstored_bytes = self.unstored_bytes.saturating_add(estimated_json_bytes(b));
        }
        self.unstored.extend(new);
        let spool = self.spool.clone();
        let s = lock(&spool);
        let now = crate::clock::now();
        // Asked once per group (one system call under the kernel's trust).
        let synchronised = self
            .clock
            .as_ref()
            .is_none_or(|(trust, _)| trust.state().is_synchronised());
        while self.validated < self.unstored.len() {
            let batch = &mut self.unstored[self.validated];
            let known = self.registers.load(&*s, batch)?;
            let clock = ClockView {
                gateway_synchronised: synchronised,
                known_off_ms: self
                    .clock
                    .as_ref()
                    .and_then(|(_, marks)| marks.off_ms(&batch.meter)),
            };
            self.validation
                .validate_with_clock(batch, |q| known.last_good(q), now, clock);
            // The next batch of this meter (in this group or later) compares with this one:
            // it is taken, stored now or, if the spool fails, on a retry.
            known.remember(batch);
            self.validated += 1;
        }
        let chunk_bytes = (self.spool_max_bytes / CHUNK_FRACTION).max(1);
        drop(s);
        let mut acks: Option<Vec<i64>> = None;
        let mut out = AppendedRows::default();
        let mut handing_back = true;
        let mut one_at_a_time = false;
        while !self.unstored.is_empty() {
            // The lock is taken per chunk (one transaction, one fsync), so that the uplink's
            // outbox is not kept waiting while a long backlog is written.
            let mut s = lock(&spool);
            // Taken under the spool's lock (see `SpoolOutbox::flush`) for the first chunk,
            // given back if its append fails: its transaction deleted nothing then.
            let acks = acks.get_or_insert_with(|| self.acks.take());
            let n = if one_at_a_time {
                1
            } else {
                chunk_len(&self.unstored, super::MAX_GROUP, chunk_bytes)
            };
            match s.append_rows_acking(&self.gateway, &mut self.unstored[..n], acks) {
                Ok(rows) => {
                    drop(s);
                    acks.clear();
                    out.acked += rows.acked;
                    out.dropped += rows.dropped;
                    if handing_back && out.rows.len() + rows.rows.len() <= HANDBACK_ROWS {
                        out.rows.extend(rows.rows);
                    } else {
                        handing_back = false;
                        out.rows = Vec::new();
                    }
                    let stored = self.take_oldest(n);
                    self.keep_newest_in_book(stored);
                }
                Err(SpoolError::TooLarge { .. }) if n > 1 => {
                    // The estimate was off (text needing escapes): one at a time from here.
                    one_at_a_time = true;
                }
                Err(SpoolError::TooLarge { bytes, max_bytes }) if n == 1 => {
                    let meter = self.unstored[0].meter.clone();
                    match s.drop_unstorable(&meter, bytes) {
                        Ok(seq) => {
                            tracing::error!(
                                meter = %meter,
                                seq,
                                bytes,
                                max_bytes,
                                "reading larger than the whole spool (spool max_bytes): \
                                 dropped, counted, its seq left as a gap"
                            );
                            // Not in `out.dropped` (older stored rows deleted): it never
                            // had a row; the spool's counters have it.
                            drop(self.take_oldest(1));
                        }
                        Err(e) => {
                            self.acks.put_back(std::mem::take(acks));
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    self.acks.put_back(std::mem::take(acks));
                    return Err(e);
                }
            }
        }
        if let Some(acks) = acks.filter(|a| !a.is_empty()) {
            // Nothing was stored to carry them (cannot happen: `store` always has batches).
            self.acks.put_back(acks);
        }
        Ok(out)
    }

    /// Hands each meter's newest batch of `stored` (stamped and validated in place) to the
    /// book, taken apart rather than copied: the batches are dropped next.
    fn keep_newest_in_book(&self, mut stored: Vec<ReadingBatch>) {
        let Some(book) = &self.book else { return };
        let mut newest = Vec::new();
        let mut seen = HashSet::new();
        for (i, batch) in stored.iter().enumerate().rev() {
            if seen.insert(batch.meter.as_str()) {
                newest.push(i);
            }
        }
        let mut book = lock(book);
        for i in newest {
            if let Some(batch) = stored.get_mut(i) {
                book.keep_last_taken(batch);
            }
        }
    }
}

/// How many of `batches`, from the front, make the next chunk: at most `max_batches` and
/// `max_bytes` estimated, and at least one.
fn chunk_len(batches: &[ReadingBatch], max_batches: usize, max_bytes: u64) -> usize {
    let mut bytes: u64 = 0;
    let mut n = 0;
    for b in batches.iter().take(max_batches.max(1)) {
        bytes = bytes.saturating_add(estimated_json_bytes(b));
        if n > 0 && bytes > max_bytes {
            break;
        }
        n += 1;
    }
    n.max(1).min(batches.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ExactNumber, Quality, ReadingValue, ValueData};
    use std::path::Path;

    use crate::ingest::{FreshRows, SpoolOutbox};
    use crate::spool::SpoolOptions;

    fn batch(meter: &str, energy: &str) -> ReadingBatch {
        let mut b = ReadingBatch::new("x", meter, "dlt645-2007", 0, crate::clock::now());
        b.values.push(ReadingValue {
            quantity: "energy.active.import.total".into(),
            value: Some(ValueData::Number(
                serde_json::from_str::<ExactNumber>(energy).unwrap(),
            )),
            unit: "kWh".into(),
            obis: None,
            source: "dlt645:00010000".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        });
        b
    }

    fn writer(dir: &Path, max_bytes: u64) -> SpoolWriter {
        let spool = Spool::open(
            dir.join("spool.sqlite"),
            SpoolOptions::numbered_from_one(max_bytes),
        )
        .unwrap();
        SpoolWriter::new(
            Arc::new(Mutex::new(spool)),
            "gw",
            ValidationConfig::default(),
            None,
            HeldAcks::default(),
        )
    }

    fn stored(w: &SpoolWriter) -> Vec<(String, u64, String)> {
        lock(&w.spool)
            .pending(None, 100)
            .unwrap()
            .into_iter()
            .map(|p| {
                let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                (
                    p.meter,
                    p.seq,
                    doc["values"][0]["quality"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn held_acks_are_deleted_by_the_next_append_and_kept_if_it_fails() {
        use crate::ingest::Outbox;
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        let mut outbox = SpoolOutbox::new(w.spool.clone(), FreshRows::default(), w.acks.clone());
        w.store(vec![batch("a", "1.00"), batch("b", "1.00")])
            .unwrap();
        let sent = outbox.pending(None, 10).unwrap();
        assert_eq!(sent.len(), 2);
        for row in &sent {
            assert!(outbox.ack(row.rowid).unwrap());
        }
        // Held, not deleted yet.
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 2);
        // The next append deletes them in its transaction.
        let rows = w.store(vec![batch("a", "2.00")]).unwrap();
        assert_eq!(rows.acked, 2);
        assert_eq!(stored(&w), [("a".to_owned(), 2, "good".to_owned())]);
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 1);
        assert!(w.acks.take().is_empty());

        // A failed append deletes nothing and gives the acks back.
        let last = outbox.pending(Some(sent[1].rowid), 10).unwrap();
        assert!(outbox.ack(last[0].rowid).unwrap());
        lock(&w.spool).fail_writes(true);
        assert!(w.store(vec![batch("b", "3.00")]).is_err());
        assert_eq!(w.acks.take(), [last[0].rowid]);
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 1);
    }

    #[test]
    fn a_group_is_validated_against_its_own_earlier_batches_and_stored_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![
            batch("a", "10.00"),
            batch("b", "5.00"),
            batch("a", "9.99"),
        ])
        .unwrap();
        assert_eq!(
            stored(&w),
            [
                ("a".into(), 1, "good".into()),
                ("b".into(), 1, "good".into()),
                ("a".into(), 2, "suspect".into()),
            ]
        );
        // The suspect value is not a new last good value: 9.995 > 9.99 but < 10.00.
        w.store(vec![batch("a", "9.995")]).unwrap();
        assert_eq!(stored(&w)[3], ("a".into(), 3, "suspect".into()));
    }

    #[test]
    fn the_book_keeps_each_meters_last_stored_batch_as_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        let book = Arc::new(Mutex::new(SuccessBook::new([("bus", "a")])));
        w.book = Some(book.clone());
        w.store(vec![batch("a", "10.00"), batch("a", "9.00")])
            .unwrap();
        let book = lock(&book);
        let last = book.last_batch("a").expect("kept");
        assert_eq!(last.seq, 2);
        assert_eq!(last.values[0].quality, Quality::Suspect);
    }

    #[test]
    fn the_last_good_value_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = writer(dir.path(), 1 << 20);
            w.store(vec![batch("a", "10.00")]).unwrap();
        }
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![batch("a", "9.00"), batch("a", "10.50")])
            .unwrap();
        let q: Vec<_> = stored(&w).into_iter().map(|(_, seq, q)| (seq, q)).collect();
        assert_eq!(
            q,
            [
                (1, "good".into()),
                (2, "suspect".into()),
                (3, "good".into())
            ]
        );
    }

    #[test]
    fn a_failed_store_keeps_every_batch_validated_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![batch("a", "10.00")]).unwrap();
        lock(&w.spool).fail_writes(true);
        let err = w.store(vec![batch("a", "9.00"), batch("a", "11.00")]);
        assert!(err.is_err(), "{err:?}");
        assert_eq!(w.unstored.len(), 2);
        assert_eq!(w.validated, 2);
        let reasons = |w: &SpoolWriter| -> Vec<Option<String>> {
            w.unstored
                .iter()
                .map(|b| b.values[0].reason.clone())
                .collect()
        };
        let before = reasons(&w);
        assert!(before[0].is_some() && before[1].is_none(), "{before:?}");
        // A retry with one more batch validates only the new one.
        let _ = w.store(vec![batch("a", "10.50")]);
        assert_eq!(w.unstored.len(), 3);
        assert_eq!(reasons(&w)[..2], before[..]);
        // 10.50 < 11.00, the last good value taken (though not stored yet).
        assert_eq!(w.unstored[2].values[0].quality, Quality::Suspect);
        drop(w.take_oldest(2));
        assert_eq!((w.unstored.len(), w.validated), (1, 1));
    }

    /// A batch whose `frames` make it `bytes` long (roughly).
    fn padded(meter: &str, energy: &str, bytes: usize) -> ReadingBatch {
        let mut b = batch(meter, energy);
        b.frames = vec!["00".repeat(bytes / 2)];
        b
    }

    #[test]
    fn the_estimate_is_close_above_the_real_size() {
        for b in [
            batch("000000123456", "12345.67"),
            padded("m", "1.00", 3_000),
        ] {
            let real = serde_json::to_vec(&b).unwrap().len() as u64;
            let est = estimated_json_bytes(&b);
            assert!(est >= real && est <= real + 400, "{est} vs {real}");
        }
    }

    #[test]
    fn the_writer_recovers_after_an_outage_with_a_backlog_larger_than_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let mut w = writer(dir.path(), max);
        let mut outbox = SpoolOutbox::new(w.spool.clone(), FreshRows::default(), w.acks.clone());
        w.store(vec![padded("a", "1.00", 1_000)]).unwrap();
        let first = outbox.pending(None, 10).unwrap();
        use crate::ingest::Outbox;
        assert!(outbox.ack(first[0].rowid).unwrap());
        // The disk fails; 200 batches of ~1.2 KB (three times the spool) pile up.
        lock(&w.spool).fail_writes(true);
        for i in 0..20 {
            let group: Vec<_> = (0..10)
                .map(|j| padded(["a", "b"][j % 2], &format!("{}.00", 2 + i * 10 + j), 1_000))
                .collect();
            assert!(w.store(group).is_err());
        }
        assert_eq!(w.unstored.len(), 200);
        assert!(w.unstored_bytes > 3 * max, "{}", w.unstored_bytes);
        // It recovers: the next store takes everything, in chunks, and keeps the newest.
        lock(&w.spool).fail_writes(false);
        let rows = w.store(Vec::new()).expect("stored after the outage");
        assert!(w.unstored.is_empty() && w.unstored_bytes == 0);
        assert_eq!(rows.acked, 1, "the held ack went with the first chunk");
        let s = lock(&w.spool);
        let stats = s.stats().unwrap();
        assert!(stats.bytes <= max && stats.bytes > max / 2, "{stats:?}");
        // Nothing silently lost: every batch was stored or is counted as an overflow drop
        // (a seq gap), and the newest are the ones kept.
        assert_eq!(stats.depth + stats.dropped_batches, 200, "{stats:?}");
        let meters = s.meters().unwrap();
        assert_eq!(meters[0].last_seq, 101);
        assert_eq!(meters[1].last_seq, 100);
        let kept = s.pending(None, 1000).unwrap();
        assert_eq!(
            kept.last().map(|p| (p.meter.as_str(), p.seq)),
            Some(("b", 100))
        );
        assert!(kept.windows(2).all(|p| p[0].rowid + 1 == p[1].rowid));
    }

    #[test]
    fn a_batch_larger_than_the_spool_is_counted_as_dropped_and_never_retried() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let mut w = writer(dir.path(), max);
        let rows = w
            .store(vec![
                batch("a", "1.00"),
                padded("a", "2.00", 100_000),
                batch("a", "3.00"),
            ])
            .expect("the others are stored");
        assert!(w.unstored.is_empty());
        assert_eq!(
            (rows.rows.len(), rows.dropped),
            (2, 0),
            "no stored row was deleted"
        );
        // The consumer sees seq 2 missing; the counters say it was dropped, and why in the log.
        let seqs: Vec<u64> = stored(&w).into_iter().map(|(_, seq, _)| seq).collect();
        assert_eq!(seqs, [1, 3]);
        let s = lock(&w.spool);
        let m = &s.meters().unwrap()[0];
        assert_eq!((m.last_seq, m.dropped_batches), (3, 1));
        assert!(m.dropped_bytes > max, "{m:?}");
        assert_eq!(s.stats().unwrap().dropped_batches, 1);
    }

    #[test]
    fn memory_drops_are_counted_per_meter_and_recorded_once_the_spool_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![batch("a", "1.00")]).unwrap();
        // No backlog (the spool is fine): a group about to be stored is never dropped.
        let mut group = vec![padded("a", "1.00", 1_000), padded("a", "1.00", 1_000)];
        assert_eq!(w.bound_backlog(&mut group, 1, 1), 0);
        assert_eq!(group.len(), 2);
        assert_eq!(
            (
                crate::ingest::memory_backlog_bytes(64 << 10),
                crate::ingest::memory_backlog_bytes(1 << 30)
            ),
            (2 << 20, crate::ingest::MEMORY_BACKLOG_BYTES)
        );
        lock(&w.spool).fail_writes(true);
        let one = estimated_json_bytes(&padded("a", "2.00", 1_000));
        assert!(
            w.store(
                (0..6)
                    .map(|i| padded(["a", "b"][i % 2], "2.00", 1_000))
                    .collect()
            )
            .is_err()
        );
        // The bound is by bytes: room for four of the eight.
        let mut arrived = vec![padded("c", "1.00", 1_000), padded("c", "1.00", 1_000)];
        let dropped = w.bound_backlog(&mut arrived, 1_000, 4 * one);
        assert_eq!(dropped, 4);
        assert_eq!((w.unstored.len(), arrived.len()), (2, 2));
        // Counted at once, though the disk cannot be written: a, b, a, b went.
        let counts = |s: &Spool| -> Vec<(String, u64)> {
            s.meters()
                .unwrap()
                .into_iter()
                .map(|m| (m.meter, m.dropped_in_memory))
                .collect()
        };
        let want = vec![("a".to_owned(), 2), ("b".to_owned(), 2)];
        assert_eq!(counts(&lock(&w.spool)), want);
        assert_eq!(lock(&w.spool).stats().unwrap().dropped_in_memory, 4);
        // Recorded by the first append that commits, and kept across a restart.
        lock(&w.spool).fail_writes(false);
        w.store(arrived).unwrap();
        drop(w);
        let w = writer(dir.path(), 1 << 20);
        let s = lock(&w.spool);
        let got: Vec<_> = counts(&s).into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, want);
        assert_eq!(s.stats().unwrap().dropped_in_memory, 4);
        // A meter's seq is not touched by its memory drops: "a" stored one before and one
        // after its two drops, seq 1 and 2, no gap (which is why the counter must be seen).
        let a = s
            .meters()
            .unwrap()
            .into_iter()
            .find(|m| m.meter == "a")
            .unwrap();
        assert_eq!(a.last_seq, 2);
    }
}
