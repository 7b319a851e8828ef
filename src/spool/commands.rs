//! Fee-control commands in the spool: the replay memory, the in-flight record that makes a
//! command at most once across crashes, the audit trail, and results in the outbox (`kind` 3).
//!
//! - [`Spool::accept_command`] records a verified, accepted command as *in flight* in one
//!   durable transaction **before** it is handed to the bus: after a crash or power cut such a
//!   command is found by [`Spool::in_flight_commands`] and only read back, never sent again.
//! - [`Spool::store_command_result`] finishes it (or records a rejection), writes its audit
//!   lines (frames included) and puts the `meterd.command-result.v1` message in the outbox, all
//!   in one transaction: the result is then delivered like a reading (deleted on PUBACK) and is
//!   never dropped by the overflow policy.
//! - A `command_id` stays in `commands` until [`Spool::prune_commands`] removes it, well after
//!   its `not_after` (after which the command would be refused as expired anyway).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{AppendedRows, MessageKind, Pending, Spool, SpoolError, to_i64, to_u64};

/// A command about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// Its id.
    pub command_id: String,
    /// The meter.
    pub meter: String,
    /// The action's contract name.
    pub action: String,
    /// The key that signed it.
    pub key_id: String,
    /// When it arrived, Unix ms.
    pub received_ms: i64,
    /// Its `not_after`, Unix ms.
    pub not_after_ms: i64,
    /// The signed body, as received.
    pub body: String,
}

/// A result to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    /// The meter (topic level of the result).
    pub meter: String,
    /// The command's id when known.
    pub command_id: Option<String>,
    /// The outbox row's id (`{gateway}/{meter}/command-result/{command_id}`).
    pub id: String,
    /// `done`, `failed`, `unknown` or `rejected`.
    pub outcome: String,
    /// Why.
    pub reason: Option<String>,
    /// Status word 3 as read back.
    pub relay_word: Option<u16>,
    /// When, Unix ms.
    pub at_ms: i64,
    /// When, RFC 3339.
    pub at: String,
    /// The `meterd.command-result.v1` JSON; empty: audit lines only, nothing to publish.
    pub payload: Vec<u8>,
    /// A verified command refused before it was accepted: remembered (state rejected) so that
    /// its `command_id` cannot be used again.
    pub remember: Option<CommandRecord>,
    /// Audit lines: (RFC 3339 time, what, detail).
    pub audit: Vec<(String, String, String)>,
}

/// A command recorded in flight and never finished (found after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Its id.
    pub command_id: String,
    /// The meter.
    pub meter: String,
    /// The action's contract name.
    pub action: String,
    /// Its `not_after`, Unix ms.
    pub not_after_ms: i64,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditLine {
    /// Order of writing.
    pub n: i64,
    /// Gateway time, RFC 3339.
    pub at: String,
    /// The meter.
    pub meter: String,
    /// The command's id, when known.
    pub command_id: Option<String>,
    /// `received`, `rejected`, `accepted`, `frame-sent`, `frame-received`, `result`,
    /// `recovered`.
    pub what: String,
    /// The details (a reason, a frame in hex, the body).
    pub detail: String,
}

/// A meter's latest finished or rejected command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCommand {
    /// The meter.
    pub meter: String,
    /// Its id.
    pub command_id: String,
    /// The action.
    pub action: String,
    /// The outcome.
    pub outcome: String,
    /// Status word 3 as last read back with a command, if any.
    pub relay_word: Option<u16>,
    /// When it finished, Unix ms.
    pub finished_ms: i64,
}

/// Most audit lines kept: older lines go first (at ~10 lines per command, 200,000 lines are
/// the last ~20,000 commands).
pub const AUDIT_KEEP: i64 = 200_000;

fn audit(
    tx: &rusqlite::Transaction<'_>,
    at: &str,
    meter: &str,
    command_id: Option<&str>,
    what: &str,
    detail: &str,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO audit (at, meter, command_id, what, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at, meter, command_id, what, detail])?;
    Ok(())
}

impl Spool {
    /// Whether `command_id` was recorded (accepted, finished or rejected after verification).
    pub fn command_seen(&self, command_id: &str) -> Result<bool, SpoolError> {
        self.conn
            .prepare_cached("SELECT 1 FROM commands WHERE command_id = ?1")
            .and_then(|mut s| s.exists([command_id]))
            .map_err(|e| SpoolError::sqlite(&self.path, e))
    }

    /// What the policy needs of `meter`'s history: the latest `alarm`/`alarm_release` done
    /// (when, and whether it was an alarm), and how many commands other than restores were
    /// accepted since `since_ms`.
    pub fn command_facts(
        &self,
        meter: &str,
        since_ms: i64,
    ) -> Result<(Option<(i64, bool)>, u32), SpoolError> {
        let sql = |e| SpoolError::sqlite(&self.path, e);
        let warning = self
            .conn
            .prepare_cached(
                "SELECT finished_ms, action = 'alarm' FROM commands WHERE meter = ?1 \
                 AND action IN ('alarm', 'alarm_release') AND outcome = 'done' \
                 ORDER BY finished_ms DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([meter], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))
                    .optional()
            })
            .map_err(sql)?;
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM commands WHERE meter = ?1 AND received_ms >= ?2 \
                 AND state IN (1, 2) AND action NOT IN ('close', 'close_allow')",
            )
            .and_then(|mut s| s.query_row(params![meter, since_ms], |r| r.get(0)))
            .map_err(sql)?;
        Ok((warning, u32::try_from(count).unwrap_or(u32::MAX)))
    }

    /// Records `command` as in flight, durable when this returns, with its audit line.
    /// `false` (and nothing written) when its `command_id` is already recorded.
    pub fn accept_command(
        &mut self,
        command: &CommandRecord,
        at: &str,
    ) -> Result<bool, SpoolError> {
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e| SpoolError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO commands (command_id, meter, action, key_id, received_ms, \
                 not_after_ms, state, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    command.command_id,
                    command.meter,
                    command.action,
                    command.key_id,
                    command.received_ms,
                    command.not_after_ms,
                    command.body
                ])
            })
            .map_err(sql)?;
        if inserted == 0 {
            return Ok(false);
        }
        audit(
            &tx,
            at,
            &command.meter,
            Some(&command.command_id),
            "accepted",
            &format!("{} (key {}); in flight", command.body, command.key_id),
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(true)
    }

    /// Stores a command's result (see the module doc): durable when this returns; the row to
    /// publish is returned like an append's.
    pub fn store_command_result(&mut self, r: &ResultRecord) -> Result<AppendedRows, SpoolError> {
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e| SpoolError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        if let Some(c) = &r.remember {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO commands (command_id, meter, action, key_id, received_ms, \
                 not_after_ms, state, outcome, reason, finished_ms, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 3, 'rejected', ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    c.command_id,
                    c.meter,
                    c.action,
                    c.key_id,
                    c.received_ms,
                    c.not_after_ms,
                    r.reason,
                    r.at_ms,
                    c.body
                ])
            })
            .map_err(sql)?;
        } else if let Some(id) = &r.command_id {
            tx.prepare_cached(
                "UPDATE commands SET state = 2, outcome = ?2, reason = ?3, relay_word = ?4, \
                 finished_ms = ?5 WHERE command_id = ?1 AND state = 1",
            )
            .and_then(|mut s| s.execute(params![id, r.outcome, r.reason, r.relay_word, r.at_ms]))
            .map_err(sql)?;
        }
        for (at, what, detail) in &r.audit {
            audit(&tx, at, &r.meter, r.command_id.as_deref(), what, detail).map_err(sql)?;
        }
        tx.prepare_cached("DELETE FROM audit WHERE n <= (SELECT max(n) FROM audit) - ?1")
            .and_then(|mut s| s.execute([AUDIT_KEEP]))
            .map_err(sql)?;
        if r.payload.is_empty() {
            tx.commit().map_err(sql)?;
            return Ok(AppendedRows::default());
        }
        let rowid = self.next_rowid;
        let bytes = r.payload.len() as u64;
        let (encoding, stored) = self.packer.pack(&r.payload);
        tx.prepare_cached(
            "INSERT INTO outbox (row_id, meter, seq, id, read_at, bytes, encoding, payload, kind) \
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, 3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                rowid,
                r.meter,
                r.id,
                r.at,
                to_i64(bytes),
                encoding,
                stored
            ])
        })
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.next_rowid = rowid + 1;
        self.depth += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        Ok(AppendedRows {
            rows: vec![Pending {
                rowid,
                meter: r.meter.clone(),
                seq: 0,
                id: r.id.clone(),
                payload: r.payload.clone(),
                kind: MessageKind::CommandResult,
            }],
            dropped: 0,
            acked: 0,
        })
    }

    /// Commands recorded in flight and never finished, oldest first.
    pub fn in_flight_commands(&self) -> Result<Vec<InFlight>, SpoolError> {
        let sql = |e| SpoolError::sqlite(&self.path, e);
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT command_id, meter, action, not_after_ms FROM commands WHERE state = 1 \
                 ORDER BY received_ms",
            )
            .map_err(sql)?;
        let rows = s
            .query_map([], |r| {
                Ok(InFlight {
                    command_id: r.get(0)?,
                    meter: r.get(1)?,
                    action: r.get(2)?,
                    not_after_ms: r.get(3)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    /// Forgets finished and rejected commands whose `not_after` is before `before_ms`; how
    /// many. In-flight ones are kept whatever their age.
    pub fn prune_commands(&mut self, before_ms: i64) -> Result<usize, SpoolError> {
        self.conn
            .prepare_cached("DELETE FROM commands WHERE state != 1 AND not_after_ms < ?1")
            .and_then(|mut s| s.execute([before_ms]))
            .map_err(|e| SpoolError::sqlite(&self.path, e))
    }

    /// The audit trail, oldest first: the last `limit` lines, of `meter` only when given.
    pub fn audit_lines(
        &self,
        meter: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditLine>, SpoolError> {
        let sql = |e| SpoolError::sqlite(&self.path, e);
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT n, at, meter, command_id, what, detail FROM (SELECT * FROM audit \
                 WHERE ?1 IS NULL OR meter = ?1 ORDER BY n DESC LIMIT ?2) ORDER BY n",
            )
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = s
            .query_map(params![meter, limit], |r| {
                Ok(AuditLine {
                    n: r.get(0)?,
                    at: r.get(1)?,
                    meter: r.get(2)?,
                    command_id: r.get(3)?,
                    what: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    /// Each meter's latest finished or rejected command (for the status page after a start).
    pub fn last_commands(&self) -> Result<Vec<LastCommand>, SpoolError> {
        let sql = |e| SpoolError::sqlite(&self.path, e);
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT meter, command_id, action, outcome, relay_word, finished_ms FROM \
                 commands c WHERE state IN (2, 3) AND finished_ms = (SELECT max(finished_ms) \
                 FROM commands d WHERE d.meter = c.meter AND d.state IN (2, 3)) ORDER BY meter",
            )
            .map_err(sql)?;
        let rows = s
            .query_map([], |r| {
                Ok(LastCommand {
                    meter: r.get(0)?,
                    command_id: r.get(1)?,
                    action: r.get(2)?,
                    outcome: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    relay_word: r
                        .get::<_, Option<i64>>(4)?
                        .and_then(|w| u16::try_from(to_u64(w)).ok()),
                    finished_ms: r.get(5)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolOptions;

    fn open(dir: &tempfile::TempDir) -> Spool {
        Spool::open(dir.path().join("s.sqlite"), SpoolOptions::new(1 << 20)).unwrap()
    }

    fn cmd(id: &str, action: &str, at: i64) -> CommandRecord {
        CommandRecord {
            command_id: id.into(),
            meter: "m1".into(),
            action: action.into(),
            key_id: "k".into(),
            received_ms: at,
            not_after_ms: at + 600_000,
            body: format!("{{\"command_id\":\"{id}\"}}"),
        }
    }

    fn result(id: &str, outcome: &str, at: i64) -> ResultRecord {
        ResultRecord {
            meter: "m1".into(),
            command_id: Some(id.into()),
            id: format!("gw/m1/command-result/{id}"),
            outcome: outcome.into(),
            reason: None,
            relay_word: Some(0x10),
            at_ms: at,
            at: "2026-12-07T08:00:00.000Z".into(),
            payload: format!("{{\"command_id\":\"{id}\"}}").into_bytes(),
            remember: None,
            audit: vec![("t".into(), "result".into(), outcome.into())],
        }
    }

    #[test]
    fn a_command_is_in_flight_until_its_result_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        assert!(!s.command_seen("c1").unwrap());
        assert!(s.accept_command(&cmd("c1", "alarm", 1_000), "t").unwrap());
        assert!(
            !s.accept_command(&cmd("c1", "alarm", 2_000), "t").unwrap(),
            "same id twice"
        );
        assert!(s.command_seen("c1").unwrap());
        drop(s);
        let mut s = open(&dir);
        let inflight = s.in_flight_commands().unwrap();
        assert_eq!(inflight.len(), 1);
        assert_eq!(
            (inflight[0].command_id.as_str(), inflight[0].action.as_str()),
            ("c1", "alarm")
        );
        let stored = s
            .store_command_result(&result("c1", "done", 5_000))
            .unwrap();
        assert_eq!(stored.rows[0].kind, MessageKind::CommandResult);
        assert!(s.in_flight_commands().unwrap().is_empty());
        let pending = s.pending(None, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].kind, MessageKind::CommandResult);
        assert_eq!(pending[0].payload, b"{\"command_id\":\"c1\"}");
        assert_eq!(s.command_facts("m1", 0).unwrap(), (Some((5_000, true)), 1));
        let last = s.last_commands().unwrap();
        assert_eq!(
            (last[0].outcome.as_str(), last[0].relay_word),
            ("done", Some(0x10))
        );
        assert!(s.ack(stored.rows[0].rowid).unwrap());
        let lines = s.audit_lines(Some("m1"), 10).unwrap();
        assert_eq!(
            lines.iter().map(|l| l.what.as_str()).collect::<Vec<_>>(),
            ["accepted", "result"]
        );
        assert!(s.audit_lines(Some("other"), 10).unwrap().is_empty());
    }

    #[test]
    fn facts_follow_the_latest_warning_and_count_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        for (id, action, at) in [
            ("a", "alarm", 1_000),
            ("b", "alarm_release", 2_000),
            ("c", "close", 3_000),
        ] {
            s.accept_command(&cmd(id, action, at), "t").unwrap();
            s.store_command_result(&result(id, "done", at + 10))
                .unwrap();
        }
        // Released since: not a warning any more. close is not counted.
        assert_eq!(s.command_facts("m1", 0).unwrap(), (Some((2_010, false)), 2));
        assert_eq!(s.command_facts("m1", 1_500).unwrap().1, 1);
        // A failed alarm is no warning.
        s.accept_command(&cmd("d", "alarm", 4_000), "t").unwrap();
        s.store_command_result(&result("d", "failed", 4_010))
            .unwrap();
        assert_eq!(s.command_facts("m1", 0).unwrap().0, Some((2_010, false)));
    }

    #[test]
    fn a_verified_rejection_burns_its_id_and_results_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&crate::spool::tests::batch("m2", 5, "1.00"))
            .unwrap()
            .len() as u64;
        let mut s = Spool::open(
            dir.path().join("s.sqlite"),
            SpoolOptions::new((one * 3).max(65_536)),
        )
        .unwrap();
        let mut r = result("x", "rejected", 1_000);
        r.remember = Some(cmd("x", "trip", 1_000));
        let stored = s.store_command_result(&r).unwrap();
        assert!(s.command_seen("x").unwrap());
        assert!(s.in_flight_commands().unwrap().is_empty());
        // Readings overflow the spool many times over: the oldest readings go, the result
        // (older than all of them) stays.
        for _ in 0..(3 * 65_536 / one + 10) {
            s.append("gw", vec![crate::spool::tests::batch("m2", 5, "1.00")])
                .unwrap();
        }
        assert!(s.stats().unwrap().dropped_batches > 0);
        let first = &s.pending(None, 1).unwrap()[0];
        assert_eq!(
            (first.rowid, first.kind),
            (stored.rows[0].rowid, MessageKind::CommandResult)
        );
        assert_eq!(s.prune_commands(1_000 + 600_001).unwrap(), 1);
        assert!(!s.command_seen("x").unwrap());
        // Audit only: nothing to publish.
        let mut quiet = result("z", "rejected", 3_000);
        quiet.payload.clear();
        assert!(s.store_command_result(&quiet).unwrap().rows.is_empty());
        assert!(
            s.pending(None, 100)
                .unwrap()
                .iter()
                .all(|p| p.id != quiet.id)
        );
        assert_eq!(s.audit_lines(None, 1).unwrap()[0].detail, "rejected");
    }

    #[test]
    fn a_version_4_spool_gets_the_command_tables_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let mut s = Spool::open(&path, SpoolOptions::new(1 << 20)).unwrap();
            s.append("gw", vec![crate::spool::tests::batch("m1", 3, "1")])
                .unwrap();
            drop(s);
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "DROP TABLE event_counters; DROP TABLE commands; DROP TABLE audit; \
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        let mut s = Spool::open(&path, SpoolOptions::new(1 << 20)).unwrap();
        assert_eq!(s.pending(None, 10).unwrap().len(), 1);
        assert!(s.accept_command(&cmd("c", "alarm", 1), "t").unwrap());
        drop(s);
        let c = rusqlite::Connection::open(&path).unwrap();
        let v: i32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, crate::spool::schema::SCHEMA_VERSION);
    }
}
