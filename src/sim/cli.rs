//! `meterd simulate --config FILE [--truth FILE]`: run the simulator until Ctrl-C.
//!
//! This module owns the command's arguments, its start-up report (one line per port) and its
//! exit codes: 0 after Ctrl-C or SIGTERM, 2 for a bad configuration, 1 when a port cannot be opened or
//! bound. It never serves a meter itself; [`Simulator`](super::Simulator) does.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{SimConfig, SimError, Simulator};

/// Arguments of `meterd simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The simulator configuration (TOML; see config/sim-demo.toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Write the ground-truth log (JSON lines, one per reply) here; overrides `truth`.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// The first line of a message (config errors add the source line and a caret below it).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            eprintln!("meterd simulate: cannot watch SIGTERM ({e}); Ctrl-C still stops");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the command; prints one-line errors to stderr.
pub fn run(args: &SimulateArgs) -> ExitCode {
    let mut config = match SimConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meterd simulate: {}", first_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    if let Some(truth) = &args.truth {
        config.truth = Some(truth.clone());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meterd simulate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match Simulator::start(config.clone()).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("meterd simulate: {}", first_line(&e.to_string()));
                return match e {
                    SimError::Config(_) => ExitCode::from(2),
                    _ => ExitCode::FAILURE,
                };
            }
        };
        for port in handle.ports() {
            println!("{}", port.describe());
        }
        if let Some(truth) = &config.truth {
            println!("ground truth: {}", truth.display());
        }
        println!("serving; Ctrl-C stops");
        wait_for_stop_signal().await;
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}
