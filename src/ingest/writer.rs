//! The pipeline's blocking half: validates batches and appends them to the spool, several per
//! transaction, with the uplink's held acknowledgements deleted in the same transaction.
//!
//! A batch handed to [`SpoolWriter::store`] is never lost by a failed append: it stays in
//! memory, validated once, until an append takes it (or the memory bound of the pipeline drops
//! it, counted). Never talks to a meter or the broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::register_memory::RegisterMemory;
use super::spool_outbox::HeldAcks;
use crate::config::ValidationConfig;
use crate::health::SuccessBook;
use crate::reading::ReadingBatch;
use crate::spool::{AppendedRows, Spool, SpoolError};
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
    /// Where each meter's last stored batch is kept for the diagnostics service.
    pub(super) book: Option<Arc<Mutex<SuccessBook>>>,
    /// The uplink's acks, deleted in each append's transaction.
    pub(super) acks: HeldAcks,
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
        Self {
            spool,
            gateway: gateway.to_owned(),
            validation,
            registers: RegisterMemory::default(),
            unstored: Vec::new(),
            validated: 0,
            book,
            acks,
        }
    }

    /// Forgets the `n` oldest unstored batches (memory bound while the spool fails).
    pub(super) fn drop_oldest(&mut self, n: usize) {
        let n = n.min(self.unstored.len());
        self.unstored.drain(..n);
        self.validated = self.validated.saturating_sub(n);
    }

    /// Validates `new` and appends it, after any batches a failed call left, in one
    /// transaction. On error everything stays in `unstored` for the next call; what was
    /// validated is not validated again.
    pub fn store(&mut self, new: Vec<ReadingBatch>) -> Result<AppendedRows, SpoolError> {
        // Taken in before anything that can fail, so a failure below cannot lose them.
        self.unstored.extend(new);
        let mut s = lock(&self.spool);
        let now = SystemTime::now();
        while self.validated < self.unstored.len() {
            let batch = &mut self.unstored[self.validated];
            let known = self.registers.load(&*s, batch)?;
            self.validation.validate(batch, |q| known.last_good(q), now);
            // The next batch of this meter (in this group or later) compares with this one:
            // it is taken, stored now or, if the spool fails, on a retry.
            known.remember(batch);
            self.validated += 1;
        }
        // Taken under the spool's lock (see `SpoolOutbox::flush`), given back if the append
        // fails: its transaction deleted nothing then.
        let acks = self.acks.take();
        let rows = match s.append_rows_acking(&self.gateway, &mut self.unstored, &acks) {
            Ok(rows) => rows,
            Err(e) => {
                self.acks.put_back(acks);
                return Err(e);
            }
        };
        drop(s);
        self.validated = 0;
        self.keep_newest_in_book();
        self.unstored.clear();
        Ok(rows)
    }

    /// Hands each meter's newest batch of the group, as stored (stamped and validated in
    /// place), to the book, taken apart rather than copied: the batches are dropped next.
    fn keep_newest_in_book(&mut self) {
        let Some(book) = &self.book else { return };
        let mut newest = Vec::new();
        let mut seen = HashSet::new();
        for (i, batch) in self.unstored.iter().enumerate().rev() {
            if seen.insert(batch.meter.as_str()) {
                newest.push(i);
            }
        }
        let mut book = lock(book);
        for i in newest {
            if let Some(batch) = self.unstored.get_mut(i) {
                book.keep_last_taken(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ExactNumber, Quality, ReadingValue, ValueData};
    use std::path::Path;

    use crate::ingest::{FreshRows, SpoolOutbox};
    use crate::spool::SpoolOptions;

    fn batch(meter: &str, energy: &str) -> ReadingBatch {
        let mut b = ReadingBatch::new("x", meter, "dlt645-2007", 0, SystemTime::now());
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
        let mut too_big = batch("b", "3.00");
        too_big.frames = vec!["00".repeat(1 << 20)];
        assert!(w.store(vec![too_big]).is_err());
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
        // Too small for two batches in one transaction: the spool refuses the group.
        let one = serde_json::to_vec(&batch("a", "10.00")).unwrap().len() as u64;
        let mut w = writer(dir.path(), one + one / 2);
        w.store(vec![batch("a", "10.00")]).unwrap();
        let err = w.store(vec![batch("a", "9.00"), batch("a", "11.00")]);
        assert!(matches!(err, Err(SpoolError::TooLarge { .. })), "{err:?}");
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
        w.drop_oldest(2);
        assert_eq!((w.unstored.len(), w.validated), (1, 1));
    }
}
