//! Meter events in the spool, and the counters that make them exactly-once on the gateway.
//!
//! An event (`meterd.event.v1`) goes through the same outbox as readings (`kind` 2): durable
//! when [`Spool::append_events`] returns, deleted on its PUBACK, re-sent under the same id
//! after a restart, and never dropped by the overflow policy (see `drop_oldest`).
//!
//! `event_counters` holds, per meter and type, the last counter value stored. It is written
//! in the transaction that stores the events, so after a crash the gateway asks the meter for
//! exactly the occurrences it has not stored. A meter event whose counter is not above the
//! stored one is skipped (a second read of the same occurrence). A gateway-made event
//! (`clock_drift`, `time_sync`) gets the next number of the meter's `gateway` row here.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{AppendedRows, MessageKind, Pending, Spool, SpoolError, drop_oldest, to_i64};
use crate::clock::rfc3339_millis;
use crate::reading::event::{EventNote, is_gateway_type};

/// The `event_counters.type` of a meter's gateway event numbers.
pub const GATEWAY_COUNTER: &str = "gateway";

impl Spool {
    /// Stores events and baselines in one transaction, durable when this returns (see the
    /// module doc). Returns the stored rows (gateway events renumbered in their payload).
    pub fn append_events(&mut self, notes: &[EventNote]) -> Result<AppendedRows, SpoolError> {
        if notes.is_empty() {
            return Ok(AppendedRows::default());
        }
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        let now = rfc3339_millis(crate::clock::now());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let mut rowid = self.next_rowid;
        let mut stored = Vec::new();
        let mut new_bytes: u64 = 0;
        {
            let mut last = tx
                .prepare_cached("SELECT last_n FROM event_counters WHERE meter = ?1 AND type = ?2")
                .map_err(sql)?;
            let mut set = tx
                .prepare_cached(
                    "INSERT INTO event_counters (meter, type, last_n, updated_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (meter, type) \
                     DO UPDATE SET last_n = excluded.last_n, updated_at = excluded.updated_at",
                )
                .map_err(sql)?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO outbox (row_id, meter, seq, id, read_at, bytes, encoding, \
                     payload, kind) VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, 2)",
                )
                .map_err(sql)?;
            for note in notes {
                let mut event = match note {
                    EventNote::Baseline { meter, ty, n } => {
                        set.execute(params![meter, ty, to_i64(*n), now])
                            .map_err(sql)?;
                        continue;
                    }
                    EventNote::Event(e) => e.clone(),
                    EventNote::ClockChecked { .. } => continue,
                };
                let gateway = is_gateway_type(&event.ty);
                let key = if gateway {
                    GATEWAY_COUNTER.to_owned()
                } else {
                    event.ty.clone()
                };
                let prev: Option<i64> = last
                    .query_row(params![event.meter, key], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                let prev = prev.map_or(0, |v| u64::try_from(v).unwrap_or(0));
                if gateway {
                    event.renumber(prev + 1);
                } else if event.n <= prev {
                    continue;
                }
                let payload = serde_json::to_vec(&event).map_err(|e| SpoolError::Internal {
                    path: path.clone(),
                    detail: format!("encoding event {}: {e}", event.id),
                })?;
                let bytes = payload.len() as u64;
                let (encoding, packed) = self.packer.pack(&payload);
                ins.execute(params![
                    rowid,
                    event.meter,
                    event.id,
                    event.read_at,
                    to_i64(bytes),
                    encoding,
                    packed
                ])
                .map_err(sql)?;
                set.execute(params![event.meter, key, to_i64(event.n), now])
                    .map_err(sql)?;
                new_bytes = new_bytes.saturating_add(bytes);
                stored.push(Pending {
                    rowid,
                    meter: event.meter.clone(),
                    seq: 0,
                    id: event.id.clone(),
                    payload,
                    kind: MessageKind::Event,
                });
                rowid += 1;
            }
        }
        // Room for the new rows: older readings and freeze records give way (never events).
        let need = self.bytes.saturating_add(new_bytes);
        let freed = drop_oldest(&tx, need, self.opts.max_bytes).map_err(sql)?;
        tx.commit().map_err(sql)?;
        if !freed.requeued.is_empty() {
            self.ledger_changed();
        }
        let dropped = self.note_appended(rowid, stored.len(), need, freed);
        Ok(AppendedRows {
            rows: stored,
            // Any row deleted to make room: an in-memory queue of fresh rows must be dropped.
            dropped,
            acked: 0,
        })
    }

    /// Every stored counter: (meter, type) → last value (the `gateway` rows included).
    pub fn event_counters(&self) -> Result<HashMap<(String, String), u64>, SpoolError> {
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT meter, type, last_n FROM event_counters")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            })
            .map_err(sql)?;
        rows.map(|r| r.map_err(sql)).collect()
    }
}

#[cfg(test)]
mod tests;
