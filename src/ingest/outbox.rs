//! The outbox the uplink drains: durable readings waiting for their PUBACK.
//!
//! Defined here, below the uplink, so that the uplink depends on ingest and never the other
//! way. The spool (through [`super::SpoolOutbox`]) implements [`Outbox`]; [`MemoryOutbox`] is the in-memory implementation
//! used by tests and by `meterd demo`. The uplink only ever reads rows in rowid order and deletes
//! a row when the broker has acknowledged it; it never writes or reorders rows.

use std::collections::BTreeMap;
use std::convert::Infallible;

/// One reading waiting in the outbox: the spool's own row type, so rows pass from the spool
/// to the uplink unchanged.
pub use crate::spool::{MessageKind, Pending};

/// A store of readings not yet acknowledged by the broker.
///
/// Both calls are made from the uplink task and should return quickly (a single indexed query).
pub trait Outbox: Send + 'static {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `limit` rows with `rowid > after_rowid` (all rows when `None`), in rowid order.
    fn pending(
        &mut self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, Self::Error>;

    /// Delete the row: the broker acknowledged it. `Ok(false)` if it was already gone (a
    /// duplicate acknowledgement after a resend), which is not an error.
    fn ack(&mut self, rowid: i64) -> Result<bool, Self::Error>;
}

/// An in-memory [`Outbox`] (tests, demo). Not durable.
#[derive(Debug, Default, Clone)]
pub struct MemoryOutbox {
    rows: BTreeMap<i64, Pending>,
    next_rowid: i64,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a reading; returns its rowid.
    pub fn push(&mut self, meter: &str, seq: u64, id: &str, payload: Vec<u8>) -> i64 {
        self.next_rowid += 1;
        let rowid = self.next_rowid;
        self.rows.insert(
            rowid,
            Pending {
                rowid,
                meter: meter.to_owned(),
                seq,
                id: id.to_owned(),
                payload,
                kind: MessageKind::Reading,
            },
        );
        rowid
    }

    /// Append a freeze record (`meterd.freeze.v1` JSON, keyed by `id`); returns its rowid.
    pub fn push_freeze(&mut self, meter: &str, id: &str, payload: Vec<u8>) -> i64 {
        let rowid = self.push(meter, 0, id, payload);
        if let Some(row) = self.rows.get_mut(&rowid) {
            row.kind = MessageKind::Freeze;
        }
        rowid
    }

    /// Append a meter event (`meterd.event.v1` JSON, keyed by `id`); returns its rowid.
    pub fn push_event(&mut self, meter: &str, id: &str, payload: Vec<u8>) -> i64 {
        let rowid = self.push(meter, 0, id, payload);
        if let Some(row) = self.rows.get_mut(&rowid) {
            row.kind = MessageKind::Event;
        }
        rowid
    }

    /// Rows not yet acknowledged.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows waiting.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Total payload bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.rows.values().map(|p| p.payload.len() as u64).sum()
    }
}

impl Outbox for MemoryOutbox {
    type Error = Infallible;

    fn pending(
        &mut self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, Infallible> {
        let start = after_rowid.map_or(i64::MIN, |r| r.saturating_add(1));
        Ok(self
            .rows
            .range(start..)
            .take(limit)
            .map(|(_, p)| p.clone())
            .collect())
    }

    fn ack(&mut self, rowid: i64) -> Result<bool, Infallible> {
        Ok(self.rows.remove(&rowid).is_some())
    }
}

/// A shared outbox: the producer pushes while the uplink drains (tests, demo).
impl<O: Outbox> Outbox for std::sync::Arc<std::sync::Mutex<O>> {
    type Error = O::Error;

    fn pending(
        &mut self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, O::Error> {
        crate::sync::lock(self).pending(after_rowid, limit)
    }

    fn ack(&mut self, rowid: i64) -> Result<bool, O::Error> {
        crate::sync::lock(self).ack(rowid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_pages_in_rowid_order_and_ack_deletes_once() {
        let mut o = MemoryOutbox::new();
        let a = o.push("m1", 1, "g/m1/1", b"a".to_vec());
        let b = o.push("m2", 1, "g/m2/1", b"b".to_vec());
        let c = o.push("m1", 2, "g/m1/2", b"c".to_vec());
        let first = o.pending(None, 2).unwrap();
        assert_eq!(first.iter().map(|p| p.rowid).collect::<Vec<_>>(), [a, b]);
        let rest = o.pending(Some(b), 10).unwrap();
        assert_eq!(rest.iter().map(|p| p.rowid).collect::<Vec<_>>(), [c]);
        assert!(o.ack(b).unwrap());
        assert!(!o.ack(b).unwrap());
        assert_eq!(o.pending(None, 10).unwrap().len(), 2);
    }
}
