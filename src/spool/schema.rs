//! The spool's on-disk schema, its version and the checks made on open.
//!
//! The file is marked with `PRAGMA application_id` = [`APPLICATION_ID`] ("mtrd") and versioned
//! with `PRAGMA user_version` = [`SCHEMA_VERSION`]. A database with another application id, or a
//! newer version, is refused with [`SpoolError::Schema`]. An older version is migrated on open,
//! in one transaction: a new spool is created as version 1 and migrated like an old one, so
//! every migration runs on every first start.

use std::path::Path;

use rusqlite::Connection;

use super::SpoolError;

/// `PRAGMA application_id` of a meterd spool: the bytes "mtrd".
pub const APPLICATION_ID: i32 = 0x6d74_7264;

/// The schema version this code writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 5;

/// Version 1. `outbox.row_id` is a plain rowid alias (no AUTOINCREMENT: that rewrites
/// `sqlite_sequence`, one more page per commit); `Spool` keeps row ids increasing for its
/// lifetime itself. `meters` is never pruned, so `last_seq` survives a full drain.
pub(crate) const SCHEMA_V1: &str = "
CREATE TABLE outbox (
    row_id   INTEGER PRIMARY KEY,  -- publish order; the uplink's cursor and ack key
    meter    TEXT    NOT NULL,
    seq      INTEGER NOT NULL,     -- per-meter, from meters.last_seq
    id       TEXT    NOT NULL,     -- {gateway}/{meter}/{seq}, the dedup key
    read_at  TEXT    NOT NULL,     -- RFC 3339, the batch's read_at
    bytes    INTEGER NOT NULL,     -- length(payload), what max_bytes bounds
    payload  BLOB    NOT NULL      -- the meterd.reading.v1 JSON, as published
);
CREATE TABLE meters (
    meter           TEXT    PRIMARY KEY,
    last_seq        INTEGER NOT NULL,   -- last seq handed out; never decreases
    dropped_batches INTEGER NOT NULL DEFAULT 0,  -- overflow drops of this meter's batches
    dropped_bytes   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE last_good (
    meter    TEXT NOT NULL,
    quantity TEXT NOT NULL,        -- energy.* quantities only
    value    TEXT NOT NULL,        -- exact decimal text, as published
    read_at  TEXT NOT NULL,
    PRIMARY KEY (meter, quantity)
) WITHOUT ROWID;
";

/// Version 2: payloads may be kept compressed (see `super::packing`). Rows of a version 1 spool
/// keep their JSON as it is (encoding 0). Adding a column with a constant default rewrites no
/// row, so the migration takes the same time for an empty spool and a full one.
const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE outbox ADD COLUMN encoding INTEGER NOT NULL DEFAULT 0;  -- 0: JSON, 1: LZ4 block
";

/// Version 3: readings dropped from the daemon's memory before they could be stored (the disk
/// failed for too long), counted per meter. They never had a `seq`, so they are not `seq` gaps;
/// this counter is how they are seen. A constant default again rewrites no row.
const MIGRATE_V2_TO_V3: &str = "
ALTER TABLE meters ADD COLUMN dropped_in_memory INTEGER NOT NULL DEFAULT 0;
";

/// Version 4: the outbox carries freeze records (`meterd.freeze.v1`) beside readings, told
/// apart by `kind` (their `seq` is 0: a freeze is keyed by its stamp, not numbered), and the
/// completeness ledger says, per meter and freeze kind and stamp, whether the record is stored
/// (waiting for its PUBACK), delivered, or lost (fell out of the meter's history unread).
/// Rows of a version 3 spool are readings (`kind` 0).
const MIGRATE_V3_TO_V4: &str = "
ALTER TABLE outbox ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;  -- 0: reading, 1: freeze record
CREATE TABLE ledger (
    meter      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,   -- daily | monthly | hourly
    stamp      TEXT    NOT NULL,   -- the meter's stamp as in the record id: 2026-12-07T00:00+08:00
    state      INTEGER NOT NULL,   -- 1 stored, 2 delivered, 3 lost
    id         TEXT    NOT NULL,   -- the record id (for a lost one: the id it would have had)
    updated_at TEXT    NOT NULL,   -- RFC 3339, gateway time of the last change
    detail     TEXT,               -- why lost
    PRIMARY KEY (meter, kind, stamp)
) WITHOUT ROWID;
CREATE INDEX ledger_by_id ON ledger (id);
";

/// Version 5: the outbox carries meter events (`meterd.event.v1`, `kind` 2, `seq` 0), and
/// `event_counters` keeps, per meter and event type, the last counter value stored (the
/// meter's own counter; for gateway-made events, type `gateway`, the gateway's last event
/// number). It is written in the transaction that stores the events, so an event is in the
/// outbox exactly when its counter is here. No row of a version 4 spool changes.
///
/// Also in version 5: fee-control commands (`meterd.command.v1`) and their audit. `commands` holds
/// every command whose signature verified, by `command_id`, until well past its `not_after`
/// (the replay memory), with its state: 1 in flight (recorded before its frame may leave: after
/// a crash it is read back, never sent again), 2 finished, 3 rejected. `audit` is the
/// append-only trail: every command received (rejections included) and every frame. Results
/// go through the outbox as `kind` 3 (2 is taken by meter events).
const MIGRATE_V4_TO_V5: &str = "
CREATE TABLE event_counters (
    meter      TEXT    NOT NULL,
    type       TEXT    NOT NULL,   -- cover_open | power_down | … | gateway
    last_n     INTEGER NOT NULL,   -- last counter value stored (or first seen: the baseline)
    updated_at TEXT    NOT NULL,   -- RFC 3339, gateway time of the last change
    PRIMARY KEY (meter, type)
) WITHOUT ROWID;
CREATE TABLE commands (
    command_id  TEXT    PRIMARY KEY,
    meter       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    received_ms INTEGER NOT NULL,   -- Unix ms, gateway clock
    not_after_ms INTEGER NOT NULL,  -- the command's not_after; kept until past it
    state       INTEGER NOT NULL,   -- 1 in flight, 2 finished, 3 rejected
    outcome     TEXT,               -- done | failed | unknown | rejected
    reason      TEXT,
    relay_word  INTEGER,            -- status word 3 as read back
    finished_ms INTEGER,
    body        TEXT    NOT NULL    -- the signed body, exactly as received
) WITHOUT ROWID;
CREATE INDEX commands_by_meter ON commands (meter, received_ms);
CREATE TABLE audit (
    n          INTEGER PRIMARY KEY,
    at         TEXT    NOT NULL,    -- RFC 3339, gateway clock
    meter      TEXT    NOT NULL,
    command_id TEXT,
    what       TEXT    NOT NULL,    -- received | rejected | accepted | sent | received-frame | result | recovered
    detail     TEXT    NOT NULL
);
CREATE INDEX audit_by_meter ON audit (meter, n);
";

/// Checks the identity and version of an opened database, creates the schema in an empty one
/// and migrates an older one (each in one transaction, so a crash leaves the file as it was
/// or fully done). Returns whether the schema was created now.
pub(crate) fn ensure(conn: &mut Connection, path: &Path) -> Result<bool, SpoolError> {
    let sql = |e| SpoolError::sqlite(path, e);
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql)?;

    if app == 0 && version == 0 && tables == 0 {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(SCHEMA_V1).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
        tx.pragma_update(None, "user_version", 1).map_err(sql)?;
        tx.commit().map_err(sql)?;
        migrate(conn, path, 1)?;
        return Ok(true);
    }
    if app != APPLICATION_ID {
        return Err(SpoolError::Schema {
            path: path.to_path_buf(),
            detail: format!(
                "not a meterd spool (application_id {app:#010x}, expected {APPLICATION_ID:#010x}, \
                 {tables} schema objects); point the spool at another path"
            ),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(SpoolError::Schema {
            path: path.to_path_buf(),
            detail: format!(
                "spool schema version {version} is newer than this meterd understands \
                 ({SCHEMA_VERSION}); run the newer meterd, or drain it with one before downgrading"
            ),
        });
    }
    if version < 1 {
        return Err(SpoolError::Schema {
            path: path.to_path_buf(),
            detail: format!("unknown spool schema version {version} (expected {SCHEMA_VERSION})"),
        });
    }
    migrate(conn, path, version)?;
    Ok(false)
}

/// Brings a spool of schema `version` (≥ 1) to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path, mut version: i32) -> Result<(), SpoolError> {
    let sql = |e| SpoolError::sqlite(path, e);
    while version < SCHEMA_VERSION {
        let step = match version {
            1 => MIGRATE_V1_TO_V2,
            2 => MIGRATE_V2_TO_V3,
            3 => MIGRATE_V3_TO_V4,
            4 => MIGRATE_V4_TO_V5,
            _ => {
                return Err(SpoolError::Schema {
                    path: path.to_path_buf(),
                    detail: format!("no migration from spool schema version {version}"),
                });
            }
        };
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(step).map_err(sql)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        version += 1;
    }
    Ok(())
}
