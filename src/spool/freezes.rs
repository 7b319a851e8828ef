//! Freeze records in the spool, and the completeness ledger.
//!
//! A freeze record (`meterd.freeze.v1`) goes through the same outbox as readings: durable when
//! [`Spool::append_freezes`] returns, deleted on its PUBACK, re-sent under the same id after
//! a restart. Unlike a reading it has no `seq`: it is keyed by the meter's stamp, so a record
//! read twice (back-fill after a crash, a second read of the same day) has the same id and
//! the consumer keeps one.
//!
//! The ledger keeps, per (meter, kind, stamp), what became of the record:
//! - **stored**: in the outbox, waiting for its PUBACK;
//! - **delivered**: the broker acknowledged it (set in the same transaction as the delete);
//! - **lost**: it fell out of the meter's history before it could be read, with why.
//!
//! A stamp with no ledger row is *missing*: expected and not read yet, which is what back-fill
//! works through. A stored record that the overflow policy drops goes back to missing (the
//! meter still holds it), never to delivered: nothing is reported delivered that the broker
//! did not acknowledge.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{AppendedRows, MessageKind, Pending, Spool, SpoolError, drop_oldest, to_i64};
use crate::clock::rfc3339_millis;
use crate::reading::freeze::FreezeRecord;

/// What became of one expected freeze record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    /// Read and stored; not acknowledged by the broker yet.
    Stored,
    /// Acknowledged by the broker.
    Delivered,
    /// Fell out of the meter's history unread.
    Lost,
}

impl LedgerState {
    /// The `ledger.state` column: 1 stored, 2 delivered, 3 lost (the SQL here writes them).
    fn from_column(v: i64) -> Option<LedgerState> {
        match v {
            1 => Some(LedgerState::Stored),
            2 => Some(LedgerState::Delivered),
            3 => Some(LedgerState::Lost),
            _ => None,
        }
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Meter id.
    pub meter: String,
    /// `daily`, `monthly`, `hourly` or `load_profile`.
    pub kind: String,
    /// The stamp as in the record id (`2026-12-07T00:00+08:00`).
    pub stamp: String,
    /// What became of it.
    pub state: LedgerState,
    /// The record id.
    pub id: String,
    /// Gateway time of the last change.
    pub updated_at: String,
    /// Why it was lost.
    pub detail: Option<String>,
}

/// The stamp part of a freeze record id (`{gateway}/{meter}/{kind}/{stamp}`).
fn stamp_of(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(_, stamp)| stamp)
}

/// Marks the record of outbox row `rowid` delivered within `tx` (its PUBACK arrived; the row
/// is deleted next).
pub(super) fn mark_delivered(
    tx: &rusqlite::Transaction<'_>,
    rowid: i64,
    at: &str,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE ledger SET state = 2, updated_at = ?2 \
         WHERE id = (SELECT id FROM outbox WHERE row_id = ?1) AND state = 1",
    )?
    .execute(params![rowid, at])?;
    Ok(())
}

/// Forgets that the record `id` is stored (the overflow policy dropped it unsent): missing
/// again, so back-fill reads it once more.
pub(super) fn forget_stored(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("DELETE FROM ledger WHERE id = ?1 AND state = 1")?
        .execute([id])?;
    Ok(())
}

impl Spool {
    /// Stores freeze records in one transaction, durable when this returns, and notes each as
    /// stored in the ledger. A record the ledger already has as delivered is stored again all
    /// the same (its id is the same, the consumer keeps one) and stays delivered. Drops the
    /// oldest stored rows first if the records would not fit (see the module doc).
    pub fn append_freezes(&mut self, records: &[FreezeRecord]) -> Result<AppendedRows, SpoolError> {
        if records.is_empty() {
            return Ok(AppendedRows::default());
        }
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        let mut payloads = Vec::with_capacity(records.len());
        let mut new_bytes: u64 = 0;
        for r in records {
            let payload = serde_json::to_vec(r).map_err(|e| SpoolError::Internal {
                path: path.clone(),
                detail: format!("encoding freeze record {}: {e}", r.id),
            })?;
            new_bytes = new_bytes.saturating_add(payload.len() as u64);
            payloads.push(payload);
        }
        if new_bytes > self.opts.max_bytes {
            return Err(SpoolError::TooLarge {
                bytes: new_bytes,
                max_bytes: self.opts.max_bytes,
            });
        }
        let now = rfc3339_millis(crate::clock::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let need = self.bytes.saturating_add(new_bytes);
        let freed = drop_oldest(&tx, need, self.opts.max_bytes).map_err(sql)?;
        let mut rowid = self.next_rowid;
        let mut stored = Vec::with_capacity(records.len());
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO outbox (row_id, meter, seq, id, read_at, bytes, encoding, \
                     payload, kind) VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, 1)",
                )
                .map_err(sql)?;
            let mut note = tx
                .prepare_cached(
                    "INSERT INTO ledger (meter, kind, stamp, state, id, updated_at) \
                     VALUES (?1, ?2, ?3, 1, ?4, ?5) ON CONFLICT (meter, kind, stamp) \
                     DO UPDATE SET state = 1, updated_at = excluded.updated_at, detail = NULL \
                     WHERE state <> 2",
                )
                .map_err(sql)?;
            for (r, payload) in records.iter().zip(payloads) {
                let bytes = payload.len() as u64;
                let (encoding, packed) = self.packer.pack(&payload);
                ins.execute(params![
                    rowid,
                    r.meter,
                    r.id,
                    r.read_at,
                    to_i64(bytes),
                    encoding,
                    packed
                ])
                .map_err(sql)?;
                note.execute(params![r.meter, r.kind, stamp_of(&r.id), r.id, now])
                    .map_err(sql)?;
                stored.push(Pending {
                    rowid,
                    meter: r.meter.clone(),
                    seq: 0,
                    id: r.id.clone(),
                    payload,
                    kind: MessageKind::Freeze,
                });
                rowid += 1;
            }
        }
        tx.commit().map_err(sql)?;
        self.ledger_changed();
        let dropped = self.note_appended(rowid, stored.len(), need, freed);
        Ok(AppendedRows {
            rows: stored,
            // Any row deleted to make room: an in-memory queue of fresh rows must be dropped.
            dropped,
            acked: 0,
        })
    }

    /// Notes that the record of `meter`, `kind`, `stamp` fell out of the meter's history
    /// unread (`id`: the id it would have had), with why. A record already stored or
    /// delivered stays so.
    pub fn mark_lost(
        &mut self,
        meter: &str,
        kind: &str,
        id: &str,
        detail: &str,
    ) -> Result<(), SpoolError> {
        self.restore_synchronous()?;
        let now = rfc3339_millis(crate::clock::now());
        self.conn
            .prepare_cached(
                "INSERT INTO ledger (meter, kind, stamp, state, id, updated_at, detail) \
                 VALUES (?1, ?2, ?3, 3, ?4, ?5, ?6) ON CONFLICT (meter, kind, stamp) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![meter, kind, stamp_of(id), id, now, detail]))
            .map_err(|e| SpoolError::sqlite(&self.path, e))?;
        self.ledger_changed();
        Ok(())
    }

    /// The ledger rows of `kind` with a stamp at or after `from_stamp` (string order, which
    /// is time order for one meter's zone), by meter and stamp.
    pub fn ledger(&self, kind: &str, from_stamp: &str) -> Result<Vec<LedgerEntry>, SpoolError> {
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT meter, kind, stamp, state, id, updated_at, detail FROM ledger \
                 WHERE kind = ?1 AND stamp >= ?2 ORDER BY meter, stamp",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![kind, from_stamp], |r| {
                Ok((
                    LedgerEntry {
                        meter: r.get(0)?,
                        kind: r.get(1)?,
                        stamp: r.get(2)?,
                        state: LedgerState::Stored,
                        id: r.get(4)?,
                        updated_at: r.get(5)?,
                        detail: r.get(6)?,
                    },
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql)?;
        rows.map(|row| {
            let (mut entry, state) = row.map_err(sql)?;
            entry.state = LedgerState::from_column(state).ok_or_else(|| SpoolError::Corrupt {
                path: self.path.clone(),
                detail: format!("ledger row {} has state {state}", entry.id),
            })?;
            Ok(entry)
        })
        .collect()
    }

    /// The ledger state of one record, if it has a row.
    pub fn ledger_state(
        &self,
        meter: &str,
        kind: &str,
        stamp: &str,
    ) -> Result<Option<LedgerState>, SpoolError> {
        let state: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT state FROM ledger WHERE meter = ?1 AND kind = ?2 AND stamp = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![meter, kind, stamp], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| SpoolError::sqlite(&self.path, e))?;
        Ok(state.and_then(LedgerState::from_column))
    }
}

#[cfg(test)]
mod tests;
