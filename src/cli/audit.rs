//! `meterd audit PATH`: the fee-control audit trail a stopped daemon's spool holds (PATH: the
//! spool file or the data directory): every command received, every rejection with its reason,
//! every frame sent and received, every result. Oldest first; one line each, or JSON lines.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::fail;
use super::spool::spool_file;
use crate::spool::{Spool, SpoolError, SpoolOptions};

/// Arguments of `meterd audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The spool file, or the daemon's `data_dir` that holds it. meterd must be stopped: it
    /// holds the file exclusively while it runs.
    pub path: PathBuf,
    /// Only this meter's lines.
    #[arg(long)]
    pub meter: Option<String>,
    /// The last this many lines (default 1000).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// One JSON object per line (n, at, meter, command_id, what, detail).
    #[arg(long)]
    pub json: bool,
}

/// Runs `meterd audit`: 0 after printing; 2 when the file is missing, held by a running
/// daemon or cannot be read.
pub fn run(args: &AuditArgs) -> ExitCode {
    match print(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("audit", &e, 2),
    }
}

fn print(args: &AuditArgs) -> Result<(), String> {
    let path = spool_file(&args.path)?;
    let spool = Spool::open(&path, SpoolOptions::new(u64::MAX)).map_err(|e| match e {
        SpoolError::Locked { .. } => format!("{e}; stop meterd first (systemctl stop meterd)"),
        e => e.to_string(),
    })?;
    let lines = spool
        .audit_lines(args.meter.as_deref(), args.limit)
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for l in &lines {
        let text = if args.json {
            serde_json::to_string(l).map_err(|e| e.to_string())?
        } else {
            format!(
                "{} {} {} {} {}",
                l.at,
                l.meter,
                l.command_id.as_deref().unwrap_or("-"),
                l.what,
                l.detail
            )
        };
        writeln!(out, "{text}").map_err(|e| format!("stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}
