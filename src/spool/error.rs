//! The spool's errors: each names the file and says what the daemon or the operator can do.

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The file is damaged or is not a database at all. The spool refuses to start over it: an
    /// operator moves it aside ([`Spool::quarantine`](super::Spool::quarantine)) or restores it.
    #[error(
        "spool {path}: the file is corrupt or not a database ({detail}); meterd will not start a \
         new empty spool over it: move it aside (rename it and its -wal file, e.g. to \
         *.corrupt) or restore it from a copy, then start again"
    )]
    Corrupt {
        /// The spool file.
        path: PathBuf,
        /// What SQLite or the check found.
        detail: String,
    },
    /// The disk is full (SQLITE_FULL / ENOSPC). Nothing of the failed call was stored (or, for
    /// an ack, deleted); what was stored before is intact. Keep the batch (or the ack) in memory
    /// and retry later.
    #[error(
        "spool {path}: disk full; the batch was not stored (earlier batches are intact), retry later"
    )]
    DiskFull {
        /// The spool file.
        path: PathBuf,
    },
    /// The file or file system is read-only.
    #[error("spool {path}: read-only ({detail}); the spool needs a writable file system")]
    ReadOnly {
        /// The spool file.
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// Another process holds the spool (each spool has one owner: a second daemon would send
    /// every reading twice and fight over `seq`).
    #[error(
        "spool {path}: locked by another process (is a second meterd running with the same spool?)"
    )]
    Locked {
        /// The spool file.
        path: PathBuf,
    },
    /// An I/O error other than a full disk.
    #[error("spool {path}: I/O error: {detail}")]
    Io {
        /// The spool file (or its directory).
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// One call's batches are larger than the whole spool may hold; nothing was stored.
    #[error(
        "spool: {bytes} bytes of readings in one append exceed the spool's limit of {max_bytes} \
         bytes; nothing was stored (raise spool max_bytes)"
    )]
    TooLarge {
        /// Encoded size of the call's batches.
        bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// The configured `max_bytes` cannot hold one reading of a configured meter (checked at
    /// start): every such reading would be dropped.
    #[error(
        "spool max_bytes = {max_bytes} cannot hold one reading of meter {meter} (up to \
         {needed} bytes of JSON with its frames); raise spool max_bytes to at least {needed}"
    )]
    TooSmall {
        /// The configured limit.
        max_bytes: u64,
        /// The largest reading estimated for `meter`.
        needed: u64,
        /// The meter whose readings are largest.
        meter: String,
    },
    /// The file is a database but not a spool this version understands.
    #[error("spool {path}: {detail}")]
    Schema {
        /// The spool file.
        path: PathBuf,
        /// Expected and found.
        detail: String,
    },
    /// Any other SQLite failure (a bug or a misuse, not the disk).
    #[error("spool {path}: sqlite: {detail}")]
    Internal {
        /// The spool file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
}

impl SpoolError {
    /// From a SQLite error on the spool at `path`.
    pub(crate) fn sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        let detail = match &e {
            rusqlite::Error::SqliteFailure(f, _) => {
                format!("{e} (sqlite extended code {})", f.extended_code)
            }
            _ => e.to_string(),
        };
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => SpoolError::DiskFull { path },
            Some(ErrorCode::ReadOnly) => SpoolError::ReadOnly { path, detail },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                SpoolError::Corrupt { path, detail }
            }
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SpoolError::Locked { path }
            }
            Some(
                ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::NoLargeFileSupport
                | ErrorCode::FileLockingProtocolFailed,
            ) => SpoolError::Io { path, detail },
            _ => SpoolError::Internal { path, detail },
        }
    }

    /// From an OS error on `path`.
    pub(crate) fn io(path: &Path, e: io::Error) -> Self {
        let path = path.to_path_buf();
        match e.kind() {
            io::ErrorKind::StorageFull => SpoolError::DiskFull { path },
            io::ErrorKind::ReadOnlyFilesystem => SpoolError::ReadOnly {
                path,
                detail: e.to_string(),
            },
            _ => SpoolError::Io {
                path,
                detail: e.to_string(),
            },
        }
    }
}
