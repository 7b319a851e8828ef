//! The durable spool: the store-and-forward queue between a meter's reply and the broker's
//! PUBACK. It owns the readings that are taken but not yet acknowledged by the billing core,
//! each meter's `seq` counter, and the per-meter validation state (last good energy registers).
//! It never talks to the network: the uplink reads [`Spool::pending`] and calls [`Spool::ack`].
//!
//! # Guarantee
//!
//! - **Durable on return.** When [`Spool::append`] returns `Ok`, its batches are on disk (SQLite
//!   WAL, `synchronous=FULL`: the WAL is fsynced before the commit returns). That is the moment
//!   a reading counts as taken. One call is one transaction: after any crash either all of its
//!   batches (with their `seq` numbers and last-good values) are there, or none are.
//!   With [`SpoolOptions::synchronous_full`] off (`synchronous=NORMAL`) a process crash still
//!   loses nothing, but a power cut may lose the last commits (the file stays consistent).
//! - **`seq` never repeats.** Each batch gets its meter's last `seq` + 1, kept in the `meters`
//!   table in the same transaction; rows of that table are never deleted, so numbering goes on
//!   across restarts, full drains and overflow drops. `id` is `{gateway}/{meter}/{seq}`.
//! - **Ack means gone.** [`Spool::ack`] deletes a batch (call it on PUBACK): at once for a
//!   process crash, and for a power cut once the next append is committed (an ack is not
//!   fsynced on its own; a lost delete means a re-send under the same `id`). Anything not
//!   acked is returned again by [`Spool::pending`] after any restart, so the uplink re-sends
//!   everything unacked on every CONNACK; the consumer deduplicates by `id`. Delivery is
//!   at-least-once, never at-most-once.
//! - **Order.** `pending` returns batches in `rowid` order, which is append order and therefore
//!   `seq` order per meter. Row ids increase for the life of a [`Spool`]; after a reopen of an
//!   empty spool they may start again from 1, so an uplink's cursor must not outlive the `Spool`.
//! - **Bounded by bytes; drops the oldest.** The stored payload bytes (the JSON as published)
//!   never exceed [`SpoolOptions::max_bytes`]. An append that would exceed it first deletes the
//!   oldest batches, whatever their meter, in the same transaction, and counts each drop
//!   durably (totals in [`SpoolStats`], per meter in [`Spool::meters`]); a consumer sees the
//!   drop as a `seq` gap. One call larger than `max_bytes` is refused with
//!   [`SpoolError::TooLarge`], never dropped silently; a caller with a single batch larger
//!   than `max_bytes` (which can never be stored) gives it up with [`Spool::drop_unstorable`]:
//!   it takes its `seq` and is counted as dropped, a gap like an overflow drop.
//!   Fee-command results (`kind` 3, [`commands`]) are the exception: never dropped (a result
//!   says what was done to a customer's supply; they are few and small), so with many of
//!   them unacknowledged the bytes may exceed `max_bytes` by their size.
//! - **Drops before a `seq`.** Readings the daemon had to drop from memory before they reached
//!   the spool (the disk could not be written for too long) are noted with
//!   [`Spool::note_memory_drops`]: counted at once in memory (no I/O, so it works while the
//!   disk fails) and written per meter (`meters.dropped_in_memory`) by the next transaction
//!   that commits. They are not `seq` gaps; these counters are their only trace. The file holds the payloads compressed
//!   (a reading's JSON takes ~40 % of its size), in SQLite's 4 KiB pages with their indexes;
//!   the WAL grows to about 4 MiB between checkpoints (1000 pages) and is truncated to 4 MiB
//!   after one; freed pages are reused, the file does not shrink. Size the file system for
//!   `max_bytes` plus the WAL: the bound counts the JSON, not its compressed size.
//! - **Power loss.** On open, SQLite replays the WAL: committed transactions are there, an
//!   uncommitted one is not. This is only as good as the storage's fsync: flash that
//!   acknowledges writes before they are on the medium can lose the last commits.
//! - **Never** starts a new empty spool over a file it cannot read: a corrupt or foreign file
//!   is [`SpoolError::Corrupt`] / [`SpoolError::Schema`] naming the path; the operator moves it
//!   aside with [`Spool::quarantine`]. A full disk is [`SpoolError::DiskFull`], distinct, and
//!   leaves everything stored before intact. Acks need room too (a delete is written to the
//!   WAL first): on a full disk `ack` fails with `DiskFull` as well; the caller keeps the ack
//!   and retries, and meanwhile the batch may be re-sent (same `id`). It never panics and
//!   never rewrites a stored payload. One process owns a spool at a time (SQLite exclusive
//!   locking mode): a second opener gets [`SpoolError::Locked`]; inspect the file with
//!   `sqlite3` only while meterd is stopped.
//! - **Payloads at rest** are kept LZ4-compressed (`packing`; the `encoding` column says how
//!   each row is kept). `pending` returns each one's JSON exactly as it was appended; a row
//!   that does not decompress is [`SpoolError::Corrupt`] naming the row.
//!
//! # Validation state
//!
//! For each appended batch, every value of a cumulative register
//! ([`crate::reading::is_cumulative`]) whose quality is `good` and whose value is a number is remembered as that meter's last good value of that
//! quantity ([`Spool::last_good`]), in the same transaction as the batch. So after a restart the
//! validator compares the next reading with the last one that was actually taken.
//!
//! # Use
//!
//! Every call is synchronous and an `append` or `ack` waits for an fsync (milliseconds on
//! flash): call the spool from one blocking thread (`spawn_blocking` or a dedicated thread), not
//! from an async task's poll. [`Spool`] is `Send`, not `Sync`. Ack in groups where possible: one
//! ack per transaction writes about as much as one append (see [`Spool::ack_many`]).
//!
//! The on-disk schema is in [`schema`].

pub mod commands;
mod error;
mod events;
pub mod freezes;
mod packing;
pub mod schema;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use error::SpoolError;

/// The spool file's name in the daemon's `data_dir`.
pub const FILE_NAME: &str = "spool.sqlite";

use crate::clock::rfc3339_millis;
use crate::reading::{Quality, ReadingBatch, ValueData};

/// SQLite's page cache per spool, in KiB (SQLite's default is 2,000 KiB). The spool is written
/// at its end and read from its start, so a small cache serves it; pages it misses come from
/// the kernel's page cache, and on a 256 MB gateway the difference is resident memory.
const PAGE_CACHE_KIB: i64 = 128;

/// How to open a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Upper bound of the stored payload bytes (the readings' JSON); the oldest batches are
    /// dropped to stay under it.
    pub max_bytes: u64,
    /// `synchronous=FULL` (the default): every append and ack is on disk when it returns.
    /// Off: `synchronous=NORMAL`, faster, but a power cut may lose the last commits.
    pub synchronous_full: bool,
    /// Where a meter's `seq` starts the first time this spool sees the meter.
    pub first_seq: FirstSeq,
}

/// Where a meter's `seq` starts in a spool that has never seen the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSeq {
    /// At the gateway's clock in milliseconds since the Unix epoch (the default). When a spool
    /// is lost or quarantined and a new one starts, its ids can then never repeat ids the
    /// billing core has already seen (which it would discard as duplicates): seq grows by one
    /// per poll, at most ten per second, so it stays below the clock, and the new spool
    /// starts above every seq issued before. The consumer sees a gap, which is the truth.
    ClockMillis,
    /// At 1 (tests, and tools that want small numbers).
    One,
}

impl SpoolOptions {
    /// Options with this byte bound, `synchronous=FULL`, seq from the clock.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            synchronous_full: true,
            first_seq: FirstSeq::ClockMillis,
        }
    }

    /// As [`SpoolOptions::new`], but every meter's seq starts at 1.
    pub fn numbered_from_one(max_bytes: u64) -> Self {
        Self {
            first_seq: FirstSeq::One,
            ..Self::new(max_bytes)
        }
    }

    fn first_seq_value(&self) -> i64 {
        match self.first_seq {
            FirstSeq::One => 1,
            FirstSeq::ClockMillis => crate::clock::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)),
        }
    }
}

impl Default for SpoolOptions {
    /// 64 MiB, `synchronous=FULL`.
    fn default() -> Self {
        Self::new(64 * 1024 * 1024)
    }
}

/// A batch as stored by [`Spool::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position in the outbox: the key for [`Spool::ack`].
    pub rowid: i64,
    /// Meter id.
    pub meter: String,
    /// The `seq` given to the batch.
    pub seq: u64,
    /// The batch's `id`, `{gateway}/{meter}/{seq}`.
    pub id: String,
    /// Stored payload size.
    pub bytes: u64,
}

impl From<Pending> for Appended {
    /// What was stored, without the payload.
    fn from(p: Pending) -> Self {
        Appended {
            bytes: p.payload.len() as u64,
            rowid: p.rowid,
            meter: p.meter,
            seq: p.seq,
            id: p.id,
        }
    }
}

/// What [`Spool::append_rows`] stored.
#[derive(Debug, Clone, Default)]
pub struct AppendedRows {
    /// The stored batches, in rowid order, as [`Spool::pending`] would return them.
    pub rows: Vec<Pending>,
    /// How many older batches the overflow policy deleted to make room.
    pub dropped: u64,
    /// How many of the acknowledged rows given to [`Spool::append_rows_acking`] were stored
    /// (and are deleted now).
    pub acked: usize,
}

/// What a stored message is (the uplink publishes each kind on its own topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A reading batch (`meterd.reading.v1`), numbered by `seq`.
    #[default]
    Reading,
    /// A freeze record (`meterd.freeze.v1`), keyed by its stamp; `seq` is 0.
    Freeze,
    /// A meter event (`meterd.event.v1`), keyed by its counter; `seq` is 0.
    Event,
    /// A fee-command result (`meterd.command-result.v1`), column value 3; `seq` is 0. Never
    /// dropped by the overflow policy: a result says what was done to a customer's supply.
    CommandResult,
}

impl MessageKind {
    fn from_column(v: i64) -> MessageKind {
        match v {
            1 => MessageKind::Freeze,
            2 => MessageKind::Event,
            3 => MessageKind::CommandResult,
            _ => MessageKind::Reading,
        }
    }
}

/// A stored message not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Position in the outbox: the key for [`Spool::ack`].
    pub rowid: i64,
    /// Meter id (for the topic).
    pub meter: String,
    /// The batch's `seq` (0 for a freeze record).
    pub seq: u64,
    /// The message's `id`.
    pub id: String,
    /// The JSON to publish.
    pub payload: Vec<u8>,
    /// Reading or freeze record.
    pub kind: MessageKind,
}

/// Spool totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Batches stored and not acknowledged.
    pub depth: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Batches dropped by the overflow policy, ever.
    pub dropped_batches: u64,
    /// Their payload bytes.
    pub dropped_bytes: u64,
    /// `read_at` of the oldest stored batch.
    pub oldest_read_at: Option<String>,
    /// Readings dropped from the daemon's memory before they had a `seq` (the spool could not
    /// be written for too long), ever: those recorded in the file plus those noted since and
    /// not recorded yet ([`Spool::note_memory_drops`]).
    pub dropped_in_memory: u64,
}

/// One meter's durable counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSpoolRecord {
    /// Meter id.
    pub meter: String,
    /// The last `seq` handed out.
    pub last_seq: u64,
    /// This meter's batches dropped by the overflow policy, ever.
    pub dropped_batches: u64,
    /// Their payload bytes.
    pub dropped_bytes: u64,
    /// This meter's readings dropped from memory before they had a `seq`, ever (recorded in
    /// the file or noted and not recorded yet).
    pub dropped_in_memory: u64,
}

/// The durable spool (see the module doc for the guarantee).
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    path: PathBuf,
    opts: SpoolOptions,
    depth: u64,
    bytes: u64,
    dropped_batches: u64,
    dropped_bytes: u64,
    /// In-memory drops recorded in the file (sum of `meters.dropped_in_memory`).
    dropped_in_memory: u64,
    /// In-memory drops noted and not recorded in the file yet, per meter: written by the next
    /// transaction that commits (an append, or [`Spool::drop_unstorable`]).
    memory_drops: BTreeMap<String, u64>,
    next_rowid: i64,
    /// `synchronous` is NORMAL for an ack transaction and must be FULL again before an append.
    relaxed: bool,
    /// Encoding buffer for payloads.
    scratch: Vec<u8>,
    /// Compresses payloads for the file.
    packer: packing::Packer,
    /// Counts changes of the freeze ledger (stored, delivered, lost, sent back to missing),
    /// so a reader can tell cheaply, without the spool's lock, whether to read it again.
    ledger_changes: Arc<AtomicU64>,
    /// Ids of freeze records the overflow policy dropped unsent since the last
    /// [`Spool::take_requeued`]: missing again, for the ledger's in-memory mirrors to forget.
    requeued: Vec<String>,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Deletes the rows `rowids` (acknowledged) within `tx`: how many were stored, and their bytes.
fn delete_rows(
    tx: &rusqlite::Transaction<'_>,
    rowids: &[i64],
) -> Result<(usize, u64, usize), rusqlite::Error> {
    if rowids.is_empty() {
        return Ok((0, 0, 0));
    }
    let mut n = 0usize;
    let mut freed: u64 = 0;
    // A lookup and a plain delete rather than `DELETE … RETURNING`: RETURNING builds and
    // drops a temporary table per statement (see `append_rows_acking`).
    // The id is looked up only for a freeze row (by its row id, in SQL): a reading's ack, the
    // hot path, allocates nothing more than before freeze records existed.
    let mut size = tx.prepare_cached("SELECT bytes, kind FROM outbox WHERE row_id = ?1")?;
    let mut del = tx.prepare_cached("DELETE FROM outbox WHERE row_id = ?1")?;
    let mut delivered: Option<String> = None;
    let mut freezes_delivered = 0;
    for rowid in rowids {
        let Some((b, kind)) = size
            .query_row([rowid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .optional()?
        else {
            continue;
        };
        if MessageKind::from_column(kind) == MessageKind::Freeze {
            let at = delivered.get_or_insert_with(|| rfc3339_millis(crate::clock::now()));
            freezes::mark_delivered(tx, *rowid, at)?;
            freezes_delivered += 1;
        }
        del.execute([rowid])?;
        freed += to_u64(b);
        n += 1;
    }
    Ok((n, freed, freezes_delivered))
}

/// What [`drop_oldest`] deleted.
#[derive(Debug, Default)]
struct Freed {
    /// Rows of any kind, and their bytes.
    rows: u64,
    bytes: u64,
    /// Reading batches among them (counted as drops per meter), and their bytes.
    batches: u64,
    batch_bytes: u64,
    /// Freeze records among them (sent back to missing in the ledger), by id.
    requeued: Vec<String>,
}

/// The overflow policy within `tx`: deletes the oldest rows until `need` bytes fit in
/// `max_bytes`. A dropped reading is counted per meter (a `seq` gap); a dropped freeze record
/// goes back to "not delivered" in the ledger, so back-fill reads it from the meter again.
fn drop_oldest(
    tx: &rusqlite::Transaction<'_>,
    need: u64,
    max_bytes: u64,
) -> Result<Freed, rusqlite::Error> {
    let mut freed = Freed::default();
    if need <= max_bytes {
        return Ok(freed);
    }
    let mut per_meter: HashMap<String, (u64, u64)> = HashMap::new();
    let mut victims = Vec::new();
    let mut requeued: Vec<String> = Vec::new();
    {
        let mut oldest = tx.prepare_cached(
            // Command results are never dropped (see `MessageKind::CommandResult`).
            "SELECT row_id, meter, bytes, kind, id FROM outbox WHERE kind != 3 ORDER BY row_id",
        )?;
        let mut it = oldest.query([])?;
        while need.saturating_sub(freed.bytes) > max_bytes {
            let Some(r) = it.next()? else {
                break;
            };
            let bytes = to_u64(r.get(2)?);
            let kind = MessageKind::from_column(r.get(3)?);
            // An event is never dropped: its counter is stored with it, so the meter would
            // not be asked for it again, and events are few and small.
            if kind == MessageKind::Event {
                continue;
            }
            victims.push(r.get::<_, i64>(0)?);
            freed.rows += 1;
            freed.bytes += bytes;
            if kind == MessageKind::Freeze {
                requeued.push(r.get(4)?);
                continue;
            }
            freed.batches += 1;
            freed.batch_bytes += bytes;
            let e = per_meter.entry(r.get(1)?).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
    }
    let mut del = tx.prepare_cached("DELETE FROM outbox WHERE row_id = ?1")?;
    for rowid in victims {
        del.execute([rowid])?;
    }
    for id in &requeued {
        freezes::forget_stored(tx, id)?;
    }
    if !requeued.is_empty() {
        tracing::warn!(
            records = requeued.len(),
            "spool full: the oldest freeze records were dropped unsent; back-fill reads them again"
        );
    }
    let mut count = tx.prepare_cached(
        "UPDATE meters SET dropped_batches = dropped_batches + ?2, \
         dropped_bytes = dropped_bytes + ?3 WHERE meter = ?1",
    )?;
    for (meter, (n, b)) in &per_meter {
        count.execute(params![meter, to_i64(*n), to_i64(*b)])?;
    }
    freed.requeued = requeued;
    Ok(freed)
}

/// Adds the noted in-memory drops to `meters` within `tx` (a meter not numbered yet gets the
/// row it would get at its first append, `last_seq` = `first_seq` - 1); returns their sum.
fn record_memory_drops(
    tx: &rusqlite::Transaction<'_>,
    drops: &BTreeMap<String, u64>,
    first_seq: i64,
) -> Result<u64, rusqlite::Error> {
    if drops.is_empty() {
        return Ok(0);
    }
    let mut add = tx.prepare_cached(
        "INSERT INTO meters (meter, last_seq, dropped_in_memory) VALUES (?1, ?2, ?3) \
         ON CONFLICT (meter) DO UPDATE SET \
         dropped_in_memory = dropped_in_memory + excluded.dropped_in_memory",
    )?;
    let mut total: u64 = 0;
    for (meter, n) in drops {
        add.execute(params![meter, first_seq.saturating_sub(1), to_i64(*n)])?;
        total = total.saturating_add(*n);
    }
    Ok(total)
}

/// `path` with `suffix` appended to its file name (`spool.db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// fsync a directory so that a created or renamed entry in it survives power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Mode of the spool files (`spool.sqlite`, `-wal`, `-shm`): the owner only.
const FILE_MODE: u32 = 0o600;
/// Mode of a data directory meterd creates: the owner only.
const DIR_MODE: u32 = 0o700;

/// Creates `dir` with mode [`DIR_MODE`] (its missing parents with the default mode).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        // Made by someone else meanwhile: theirs, left as it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Sets an existing spool file to [`FILE_MODE`] if its mode gives group or others anything.
fn narrow_file_mode(file: &Path) -> std::io::Result<()> {
    match fs::metadata(file) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(file, fs::Permissions::from_mode(FILE_MODE))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A warning when an existing data directory lets group or others in (the operator made it,
/// so meterd does not change it; the spool files in it are 0600 either way).
pub(crate) fn data_dir_warning(dir: &Path) -> Option<String> {
    let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "data directory {} has mode {mode:04o}: group or others can list it (meterd \
             creates it 0700; consider chmod 700)",
            dir.display()
        )
    })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Spool {
    /// Opens the spool at `path`, creating it (and its directory) if it does not exist.
    ///
    /// Checks the file with `PRAGMA quick_check` and its schema version; a damaged file is
    /// [`SpoolError::Corrupt`] and is left untouched.
    pub fn open(path: impl AsRef<Path>, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        let path = path.as_ref().to_path_buf();
        let dir = parent_dir(&path).to_path_buf();
        if dir.exists() && !dir.is_dir() {
            // create_dir_all would only say "File exists".
            return Err(SpoolError::Io {
                path: dir,
                detail: "not a directory (data_dir must name a directory)".into(),
            });
        }
        if dir.is_dir() {
            if let Some(warning) = data_dir_warning(&dir) {
                tracing::warn!("{warning}");
            }
        } else {
            create_private_dir(&dir).map_err(|e| SpoolError::io(&dir, e))?;
        }
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);

        let wal = with_suffix(&path, "-wal");
        if !path.exists() && fs::metadata(&wal).map(|m| m.len() > 0).unwrap_or(false) {
            return Err(SpoolError::Corrupt {
                path: path.clone(),
                detail: format!(
                    "the database file is missing but its write-ahead log {} is not",
                    wal.display()
                ),
            });
        }

        // SQLite opens a file it cannot write read-only and later says "disk I/O error", and
        // fails to create one with "unable to open database file": ask the OS first (creating
        // the empty file SQLite would create), so that a read-only file system or a missing
        // permission is named as such.
        // Readable by meterd's user only (the readings are billing data): created 0600, and an
        // older file set of ours with wider permissions is narrowed. SQLite creates the WAL
        // (and a -shm, which exclusive locking does not use) with the database file's mode.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| SpoolError::io(&path, e))?;
        for file in [path.clone(), wal.clone(), with_suffix(&path, "-shm")] {
            if let Err(e) = narrow_file_mode(&file) {
                // Not ours to change (another owner): said, not fatal.
                tracing::warn!(path = %file.display(), error = %e, "cannot set the spool file to mode 0600");
            }
        }

        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        // Exclusive before the first WAL access: one owner, and no -shm file.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(sql)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SpoolError::Io {
                path,
                detail: format!("cannot use write-ahead logging here (journal_mode is {mode})"),
            });
        }
        let sync = if opts.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
            .map_err(sql)?;
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(sql)?;

        let mut problems = Vec::new();
        conn.pragma_query(None, "quick_check", |r| {
            let line: String = r.get(0)?;
            if line != "ok" && problems.len() < 5 {
                problems.push(line);
            }
            Ok(())
        })
        .map_err(sql)?;
        if !problems.is_empty() {
            return Err(SpoolError::Corrupt {
                path,
                detail: format!("quick_check: {}", problems.join("; ")),
            });
        }

        let created = schema::ensure(&mut conn, &path)?;
        // Take the write lock now (exclusive mode keeps it until close), so that a second
        // daemon fails at open rather than at its first append.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(sql)?;
        if created {
            sync_dir(&dir).map_err(|e| SpoolError::io(&dir, e))?;
        }

        let (depth, bytes, max_rowid): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(bytes), 0), coalesce(max(row_id), 0) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql)?;
        let (dropped_batches, dropped_bytes, dropped_in_memory): (i64, i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(dropped_batches), 0), coalesce(sum(dropped_bytes), 0), \
                 coalesce(sum(dropped_in_memory), 0) FROM meters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql)?;
        Ok(Spool {
            conn,
            path,
            opts,
            depth: to_u64(depth),
            bytes: to_u64(bytes),
            dropped_batches: to_u64(dropped_batches),
            dropped_bytes: to_u64(dropped_bytes),
            dropped_in_memory: to_u64(dropped_in_memory),
            memory_drops: BTreeMap::new(),
            next_rowid: max_rowid.saturating_add(1),
            relaxed: false,
            scratch: Vec::new(),
            packer: packing::Packer::default(),
            ledger_changes: Arc::new(AtomicU64::new(0)),
            requeued: Vec::new(),
        })
    }

    /// Renames the spool file set (`path`, `path-wal`, `path-shm`) to
    /// `path.corrupt-<unix time>` (+ `-wal`, `-shm`), so that an operator can keep or inspect it
    /// and the daemon can start with a new spool. Returns the new main file's path.
    /// The spool must not be open.
    ///
    /// Caution: a new spool numbers every meter from `seq` 1 again, so its first ids
    /// (`{gateway}/{meter}/1`, …) repeat ids the billing core may already have seen and would
    /// take as duplicates. Until the contract settles this, the operator should be told.
    pub fn quarantine(path: impl AsRef<Path>) -> Result<PathBuf, SpoolError> {
        let path = path.as_ref();
        let secs = crate::clock::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut target = with_suffix(path, &format!(".corrupt-{secs}"));
        let mut n = 1;
        while target.exists() {
            target = with_suffix(path, &format!(".corrupt-{secs}.{n}"));
            n += 1;
        }
        for suffix in ["-wal", "-shm", ""] {
            let from = with_suffix(path, suffix);
            if from.exists() {
                fs::rename(&from, with_suffix(&target, suffix))
                    .map_err(|e| SpoolError::io(&from, e))?;
            }
        }
        let dir = parent_dir(path);
        sync_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
        Ok(target)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> SpoolOptions {
        self.opts
    }

    /// Stores one poll cycle's batches in one transaction, durable when this returns.
    ///
    /// Stamps each batch with `gateway`, its meter's next `seq` and `id` =
    /// `{gateway}/{meter}/{seq}`, and remembers its good cumulative register values (see the module doc).
    /// Drops the oldest stored batches first if the new ones would not fit in `max_bytes`.
    /// On any error nothing of this call is stored and no `seq` is used up.
    pub fn append(
        &mut self,
        gateway: &str,
        mut batches: Vec<ReadingBatch>,
    ) -> Result<Vec<Appended>, SpoolError> {
        Ok(self
            .append_rows(gateway, &mut batches)?
            .rows
            .into_iter()
            .map(Appended::from)
            .collect())
    }

    /// [`Spool::append`] without giving up the batches, handing back what it stored as the
    /// uplink reads it ([`Spool::pending`] rows, payloads included). The batches are stamped
    /// in place (`gateway`, `seq`, `id`), so a caller can keep them for a retry after an error
    /// (the next call stamps them again) without copying them first, and the uplink can
    /// publish fresh readings without reading them back from the file.
    pub fn append_rows(
        &mut self,
        gateway: &str,
        batches: &mut [ReadingBatch],
    ) -> Result<AppendedRows, SpoolError> {
        self.append_rows_acking(gateway, batches, &[])
    }

    /// [`Spool::append_rows`] that also deletes the acknowledged rows `acks` in the same
    /// transaction, before the overflow check (so they make room first): the daemon's writer
    /// carries the uplink's held acks this way, one transaction and one fsync for both
    /// instead of a separate ack transaction every second. On any error nothing of this call
    /// is stored and nothing is deleted.
    pub fn append_rows_acking(
        &mut self,
        gateway: &str,
        batches: &mut [ReadingBatch],
        acks: &[i64],
    ) -> Result<AppendedRows, SpoolError> {
        if batches.is_empty() && acks.is_empty() && self.memory_drops.is_empty() {
            return Ok(AppendedRows::default());
        }
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;

        // 0. In-memory drops noted since the last commit (before numbering: a meter first
        // seen here starts its seq where it would have).
        let first_seq = self.opts.first_seq_value();
        let memory_dropped =
            record_memory_drops(&tx, &self.memory_drops, first_seq).map_err(sql)?;

        // 1. seq numbers and payloads.
        let mut rows = Vec::with_capacity(batches.len());
        let mut new_bytes: u64 = 0;
        {
            // A lookup and an upsert with the new value, not one upsert `… RETURNING last_seq`:
            // SQLite runs RETURNING through a temporary table built and dropped per statement,
            // which made this loop ~20 % of a commit's CPU (spool bench, "append 32 + ack").
            let mut last_seq = tx
                .prepare_cached("SELECT last_seq FROM meters WHERE meter = ?1")
                .map_err(sql)?;
            let mut set_seq = tx
                .prepare_cached(
                    "INSERT INTO meters (meter, last_seq) VALUES (?1, ?2) \
                     ON CONFLICT (meter) DO UPDATE SET last_seq = excluded.last_seq",
                )
                .map_err(sql)?;
            for batch in batches.iter_mut() {
                let seq: i64 = match last_seq
                    .query_row([&batch.meter], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(sql)?
                {
                    Some(last) => last + 1,
                    None => first_seq,
                };
                set_seq.execute(params![batch.meter, seq]).map_err(sql)?;
                gateway.clone_into(&mut batch.gateway);
                batch.seq = to_u64(seq);
                batch.id = format!("{gateway}/{}/{seq}", batch.meter);
                // Encoded into a reused buffer, then copied out at its exact size: encoding
                // straight into a new Vec grew it by doubling (five reallocations for a 3 KB
                // reading) and left up to twice its size allocated while it waited.
                self.scratch.clear();
                serde_json::to_writer(&mut self.scratch, &*batch).map_err(|e| {
                    SpoolError::Internal {
                        path: path.clone(),
                        detail: format!("encoding batch {}: {e}", batch.id),
                    }
                })?;
                let payload = self.scratch.clone();
                new_bytes = new_bytes.saturating_add(payload.len() as u64);
                rows.push((batch, payload));
            }
        }
        if new_bytes > self.opts.max_bytes {
            return Err(SpoolError::TooLarge {
                bytes: new_bytes,
                max_bytes: self.opts.max_bytes,
            });
        }

        // 2. Acknowledged rows go, then overflow: drop the oldest until the new batches fit.
        let (acked, acked_bytes, delivered) = delete_rows(&tx, acks).map_err(sql)?;
        let need = self
            .bytes
            .saturating_sub(acked_bytes)
            .saturating_add(new_bytes);
        let freed = drop_oldest(&tx, need, self.opts.max_bytes).map_err(sql)?;

        // 3. Insert, and remember good energy registers.
        let mut appended = Vec::with_capacity(rows.len());
        let mut rowid = self.next_rowid;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO outbox (row_id, meter, seq, id, read_at, bytes, encoding, \
                     payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql)?;
            let mut good = tx
                .prepare_cached(
                    "INSERT INTO last_good (meter, quantity, value, read_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (meter, quantity) \
                     DO UPDATE SET value = excluded.value, read_at = excluded.read_at",
                )
                .map_err(sql)?;
            for (batch, payload) in rows {
                let bytes = payload.len() as u64;
                let (encoding, stored) = self.packer.pack(&payload);
                ins.execute(params![
                    rowid,
                    batch.meter,
                    to_i64(batch.seq),
                    batch.id,
                    batch.read_at,
                    to_i64(bytes),
                    encoding,
                    stored
                ])
                .map_err(sql)?;
                for v in &batch.values {
                    if let (true, Quality::Good, Some(ValueData::Number(n))) = (
                        crate::reading::is_cumulative(&v.quantity),
                        v.quality,
                        &v.value,
                    ) {
                        good.execute(params![batch.meter, v.quantity, n.as_str(), batch.read_at])
                            .map_err(sql)?;
                    }
                }
                appended.push(Pending {
                    rowid,
                    meter: batch.meter.clone(),
                    seq: batch.seq,
                    id: batch.id.clone(),
                    payload,
                    kind: MessageKind::Reading,
                });
                rowid += 1;
            }
        }
        tx.commit().map_err(sql)?;

        // Committed: now the in-memory mirror.
        if delivered > 0 || !freed.requeued.is_empty() {
            self.ledger_changed();
        }
        self.requeued.extend(freed.requeued);
        self.next_rowid = rowid;
        self.depth = self
            .depth
            .saturating_sub(acked as u64)
            .saturating_sub(freed.rows)
            + appended.len() as u64;
        self.bytes = need.saturating_sub(freed.bytes);
        self.dropped_batches += freed.batches;
        self.dropped_bytes += freed.batch_bytes;
        self.dropped_in_memory += memory_dropped;
        self.memory_drops.clear();
        Ok(AppendedRows {
            rows: appended,
            dropped: freed.batches,
            acked,
        })
    }

    /// Up to `limit` stored batches with `rowid > after_rowid` (all when `None`), in rowid order.
    pub fn pending(
        &self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, SpoolError> {
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT row_id, meter, seq, id, bytes, encoding, payload, kind FROM outbox \
                 WHERE row_id > ?1 ORDER BY row_id LIMIT ?2",
            )
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after_rowid.unwrap_or(i64::MIN), limit], |r| {
                let rowid: i64 = r.get(0)?;
                let id: String = r.get(3)?;
                // Decompressed straight from SQLite's buffer (no owned copy of the stored form).
                let stored = r.get_ref(6)?.as_blob()?;
                let payload = match packing::unpack(r.get(5)?, stored, r.get(4)?) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(format!("outbox row {rowid} ({id}): {e}"))),
                };
                Ok(Ok(Pending {
                    rowid,
                    meter: r.get(1)?,
                    seq: to_u64(r.get(2)?),
                    id,
                    payload,
                    kind: MessageKind::from_column(r.get(7)?),
                }))
            })
            .map_err(sql)?;
        rows.map(|row| {
            row.map_err(sql)?.map_err(|detail| SpoolError::Corrupt {
                path: self.path.clone(),
                detail,
            })
        })
        .collect()
    }

    /// Deletes one batch (its PUBACK arrived); durable when this returns. `false` if it was not
    /// stored (acked before, or dropped by the overflow policy).
    pub fn ack(&mut self, rowid: i64) -> Result<bool, SpoolError> {
        Ok(self.ack_many(&[rowid])? == 1)
    }

    /// Deletes several batches in one transaction; returns how many were stored. One commit
    /// for all of them: prefer it to [`Spool::ack`] when PUBACKs arrive in bursts.
    ///
    /// The commit is not fsynced on its own (`synchronous=NORMAL` for this transaction): it
    /// survives a process crash at once, and a power cut once the next [`Spool::append`]
    /// fsyncs the write-ahead log, which holds this commit before that one. A delete lost to a
    /// power cut only means the batch is sent again under the same `id`, which the contract
    /// allows; an fsync per ack group cost as much as the appends themselves at low rates.
    pub fn ack_many(&mut self, rowids: &[i64]) -> Result<usize, SpoolError> {
        if rowids.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        if self.opts.synchronous_full {
            self.relaxed = true;
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql)?;
        }
        let deleted = self.delete_acked(rowids);
        self.restore_synchronous()?;
        deleted
    }

    /// Back to `synchronous=FULL` after [`Spool::ack_many`]; every append checks it first, so
    /// an append is never committed without its fsync even if restoring failed here.
    /// The freeze records dropped unsent (overflow) since the last call, by id: missing again.
    pub fn take_requeued(&mut self) -> Vec<String> {
        std::mem::take(&mut self.requeued)
    }

    /// A counter that moves whenever the freeze ledger changes (see [`freezes`]).
    pub fn ledger_changes(&self) -> Arc<AtomicU64> {
        self.ledger_changes.clone()
    }

    /// The in-memory figures after a committed transaction that appended `added` rows (the
    /// next row id is `next_rowid`) and freed `freed` to fit `need` bytes; returns how many
    /// rows were freed. Freed freeze records are queued to become missing again.
    fn note_appended(&mut self, next_rowid: i64, added: usize, need: u64, freed: Freed) -> u64 {
        self.requeued.extend(freed.requeued);
        self.next_rowid = next_rowid;
        self.depth = self.depth.saturating_sub(freed.rows) + added as u64;
        self.bytes = need.saturating_sub(freed.bytes);
        self.dropped_batches += freed.batches;
        self.dropped_bytes += freed.batch_bytes;
        freed.rows
    }

    fn ledger_changed(&self) {
        self.ledger_changes.fetch_add(1, Ordering::Relaxed);
    }

    fn restore_synchronous(&mut self) -> Result<(), SpoolError> {
        if self.relaxed {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(|e| SpoolError::sqlite(&self.path, e))?;
            self.relaxed = false;
        }
        Ok(())
    }

    /// The transaction of [`Spool::ack_many`].
    fn delete_acked(&mut self, rowids: &[i64]) -> Result<usize, SpoolError> {
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let (n, freed, delivered) = delete_rows(&tx, rowids).map_err(sql)?;
        tx.commit().map_err(sql)?;
        if delivered > 0 {
            self.ledger_changed();
        }
        self.depth = self.depth.saturating_sub(n as u64);
        self.bytes = self.bytes.saturating_sub(freed);
        Ok(n)
    }

    /// Depth, bytes, drop totals and the oldest stored batch's `read_at`.
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        let oldest_read_at = self
            .conn
            .prepare_cached("SELECT read_at FROM outbox ORDER BY row_id LIMIT 1")
            .and_then(|mut s| {
                let mut rows = s.query([])?;
                rows.next()?.map(|r| r.get(0)).transpose()
            })
            .map_err(|e| SpoolError::sqlite(&self.path, e))?;
        Ok(SpoolStats {
            depth: self.depth,
            bytes: self.bytes,
            dropped_batches: self.dropped_batches,
            dropped_bytes: self.dropped_bytes,
            oldest_read_at,
            dropped_in_memory: self
                .dropped_in_memory
                .saturating_add(self.memory_drops.values().sum()),
        })
    }

    /// Every meter the spool has numbered, with its last `seq` and drop counts.
    pub fn meters(&self) -> Result<Vec<MeterSpoolRecord>, SpoolError> {
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT meter, last_seq, dropped_batches, dropped_bytes, dropped_in_memory \
                 FROM meters ORDER BY meter",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(MeterSpoolRecord {
                    meter: r.get(0)?,
                    last_seq: to_u64(r.get(1)?),
                    dropped_batches: to_u64(r.get(2)?),
                    dropped_bytes: to_u64(r.get(3)?),
                    dropped_in_memory: to_u64(r.get(4)?),
                })
            })
            .map_err(sql)?;
        let mut records = rows.collect::<Result<Vec<_>, _>>().map_err(sql)?;
        // Drops noted and not recorded yet count as well (a meter may not be in the file yet).
        for (meter, n) in &self.memory_drops {
            match records.binary_search_by(|r| r.meter.as_str().cmp(meter)) {
                Ok(i) => records[i].dropped_in_memory += n,
                Err(i) => records.insert(
                    i,
                    MeterSpoolRecord {
                        meter: meter.clone(),
                        last_seq: 0,
                        dropped_batches: 0,
                        dropped_bytes: 0,
                        dropped_in_memory: *n,
                    },
                ),
            }
        }
        Ok(records)
    }

    /// Test hook: while `fail` is on, every transaction that writes `outbox` or `meters`
    /// fails inside SQLite (as an unwritable disk would) and is rolled back. Temporary
    /// triggers: nothing of this reaches the file.
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self, fail: bool) {
        let sql = if fail {
            "CREATE TEMP TRIGGER IF NOT EXISTS fail_outbox BEFORE INSERT ON main.outbox \
               BEGIN SELECT RAISE(ABORT, 'test: storage unwritable'); END; \
             CREATE TEMP TRIGGER IF NOT EXISTS fail_meters_in BEFORE INSERT ON main.meters \
               BEGIN SELECT RAISE(ABORT, 'test: storage unwritable'); END; \
             CREATE TEMP TRIGGER IF NOT EXISTS fail_meters_up BEFORE UPDATE ON main.meters \
               BEGIN SELECT RAISE(ABORT, 'test: storage unwritable'); END;"
        } else {
            "DROP TRIGGER IF EXISTS temp.fail_outbox; DROP TRIGGER IF EXISTS temp.fail_meters_in; \
             DROP TRIGGER IF EXISTS temp.fail_meters_up;"
        };
        if let Err(e) = self.conn.execute_batch(sql) {
            panic!("test hook fail_writes({fail}): {e}");
        }
    }

    /// One meter's drop counters: (dropped with a `seq`, dropped from memory without one),
    /// ever, the noted in-memory drops included; zeros for a meter never seen. One lookup.
    pub fn meter_drops(&self, meter: &str) -> Result<(u64, u64), SpoolError> {
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&self.path, e);
        let (dropped, in_memory): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT dropped_batches, dropped_in_memory FROM meters WHERE meter = ?1",
            )
            .map_err(sql)?
            .query_row([meter], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql)?
            .unwrap_or((0, 0));
        let noted = self.memory_drops.get(meter).copied().unwrap_or(0);
        Ok((to_u64(dropped), to_u64(in_memory).saturating_add(noted)))
    }

    /// Notes `n` readings of `meter` dropped from memory before they could be stored (they
    /// have no `seq`). Kept in memory (no I/O here, so it works while the disk fails) and
    /// recorded in the file by the next transaction that commits; counted in
    /// [`SpoolStats::dropped_in_memory`] and [`Spool::meters`] at once. Lost only if the
    /// process ends before the spool can be written again.
    pub fn note_memory_drops(&mut self, meter: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.memory_drops.get_mut(meter) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.memory_drops.insert(meter.to_owned(), n);
            }
        }
    }

    /// Gives a batch that can never be stored (its JSON alone, `bytes`, is larger than
    /// `max_bytes`) its `seq` and counts it as dropped, like an overflow drop, in one
    /// transaction (with any in-memory drops noted): the consumer sees the gap, the
    /// counters say why. Returns the `seq` it had. Nothing of the batch is kept.
    pub fn drop_unstorable(&mut self, meter: &str, bytes: u64) -> Result<u64, SpoolError> {
        self.restore_synchronous()?;
        let path = self.path.clone();
        let sql = |e: rusqlite::Error| SpoolError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let first_seq = self.opts.first_seq_value();
        let memory_dropped =
            record_memory_drops(&tx, &self.memory_drops, first_seq).map_err(sql)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_seq FROM meters WHERE meter = ?1",
                [meter],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        let seq = last.map_or(first_seq, |l| l.saturating_add(1));
        tx.execute(
            "INSERT INTO meters (meter, last_seq, dropped_batches, dropped_bytes) \
             VALUES (?1, ?2, 1, ?3) ON CONFLICT (meter) DO UPDATE SET \
             last_seq = excluded.last_seq, dropped_batches = dropped_batches + 1, \
             dropped_bytes = dropped_bytes + excluded.dropped_bytes",
            params![meter, seq, to_i64(bytes)],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.dropped_batches += 1;
        self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
        self.dropped_in_memory += memory_dropped;
        self.memory_drops.clear();
        Ok(to_u64(seq))
    }

    /// The last good value (exact decimal text) of a cumulative register of a meter, as taken
    /// by [`Spool::append`].
    pub fn last_good(&self, meter: &str, quantity: &str) -> Result<Option<String>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM last_good WHERE meter = ?1 AND quantity = ?2")
            .map_err(|e| SpoolError::sqlite(&self.path, e))?;
        let mut rows = stmt
            .query(params![meter, quantity])
            .map_err(|e| SpoolError::sqlite(&self.path, e))?;
        rows.next()
            .and_then(|r| r.map(|r| r.get(0)).transpose())
            .map_err(|e| SpoolError::sqlite(&self.path, e))
    }
}
