//! `meterd run --config FILE`: the daemon, until SIGTERM/SIGINT; SIGHUP reloads the file.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon::reload::Signals;
use crate::daemon::{Daemon, DaemonError, RunOptions};
use crate::logging::{self, LogFormat};
use crate::uplink::UplinkConfigError;

/// Arguments of `meterd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// A multi-threaded runtime sized for a small gateway.
pub(crate) fn daemon_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Runs the daemon; exit 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration error, 1
/// when it cannot start otherwise or when a critical task (a bus, ingest, the uplink, the
/// health forwarder) ended on its own — the rest is stopped cleanly first.
pub fn run(args: &RunArgs) -> ExitCode {
    logging::init(args.log_format, "info");
    let rt = match daemon_runtime() {
        Ok(rt) => rt,
        Err(e) => return super::fail("run", &e, 1),
    };
    rt.block_on(async {
        // Before the start: SIGHUP's default action would kill a daemon still starting.
        let signals = Signals::new();
        let options = RunOptions {
            release_startup_code: true,
            ..RunOptions::default()
        };
        match Daemon::start(&args.config, options).await {
            Ok(d) => match d.run_until(signals).await {
                Ok(()) => ExitCode::SUCCESS,
                // A critical task ended on its own: exit 1 so that systemd restarts us.
                Err(e) => super::fail("run", &e.to_string(), 1),
            },
            // A configuration the daemon cannot run with: exit 2, like a parse error.
            Err(
                e @ (DaemonError::Config(_) | DaemonError::Uplink(UplinkConfigError::Setting(_))),
            ) => {
                eprintln!("meterd run: {e}");
                ExitCode::from(2)
            }
            Err(e) => super::fail("run", &e.to_string(), 1),
        }
    })
}
