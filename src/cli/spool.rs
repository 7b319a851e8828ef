//! `meterd spool PATH`: what a stopped daemon's spool holds (PATH: the spool file or the
//! daemon's data directory), for a technician or an operator.
//!
//! The payloads are compressed in the file (see [`crate::spool`]), so `sqlite3` shows the
//! counters but not the readings; this prints the readings as they will be published, oldest
//! first, one JSON document per line on stdout (for `jq`), and a summary on stderr.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::fail;
use crate::spool::{FILE_NAME, Spool, SpoolError, SpoolOptions};

/// Arguments of `meterd spool`.
#[derive(Debug, Args)]
pub struct SpoolArgs {
    /// The spool file, or the daemon's `data_dir` that holds it (`spool.sqlite`). meterd must
    /// be stopped: it holds the file exclusively while it runs.
    pub path: PathBuf,
    /// Print at most this many readings (the oldest); 0 prints only the summary.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Readings read from the file per query.
const PAGE: usize = 256;

/// Runs `meterd spool`: 0 after printing; 2 when the file is missing, held by a running
/// daemon or cannot be read (like a dead or busy port for the bus commands).
pub fn run(args: &SpoolArgs) -> ExitCode {
    match print(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("spool", &e, 2),
    }
}

/// The spool file `given` names: itself, or `spool.sqlite` in the data directory it names.
pub(crate) fn spool_file(given: &Path) -> Result<PathBuf, String> {
    if given.is_file() {
        return Ok(given.to_owned());
    }
    if given.is_dir() {
        let inside = given.join(FILE_NAME);
        if inside.is_file() {
            return Ok(inside);
        }
        return Err(format!(
            "{}: a directory without a spool file ({FILE_NAME}): give the daemon's data_dir \
             (see `data_dir` in meterd.toml) or the spool file itself",
            given.display()
        ));
    }
    Err(format!(
        "{}: no spool file there (nothing at that path): give the daemon's data_dir (see \
         `data_dir` in meterd.toml) or its {FILE_NAME}",
        given.display()
    ))
}

fn print(args: &SpoolArgs) -> Result<(), String> {
    // Opening creates a missing file; an inspection must not.
    let path = spool_file(&args.path)?;
    // The bound only matters for appends, and this appends nothing. Opening an older spool
    // migrates it, as starting the daemon would.
    let spool = Spool::open(&path, SpoolOptions::new(u64::MAX)).map_err(|e| match e {
        SpoolError::Locked { .. } => format!("{e}; stop meterd first (systemctl stop meterd)"),
        e => e.to_string(),
    })?;
    let stats = spool.stats().map_err(|e| e.to_string())?;
    eprintln!(
        "{}: {} readings not yet acknowledged ({} bytes of JSON), oldest read at {}; \
         {} dropped on overflow ({} bytes), {} dropped from memory before they had a seq",
        path.display(),
        stats.depth,
        stats.bytes,
        stats.oldest_read_at.as_deref().unwrap_or("-"),
        stats.dropped_batches,
        stats.dropped_bytes,
        stats.dropped_in_memory
    );
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut cursor = None;
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let page = spool
            .pending(cursor, PAGE.min(left))
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.rowid);
        left -= page.len();
        for p in &page {
            out.write_all(&p.payload)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| format!("stdout: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}
