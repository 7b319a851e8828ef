//! Log set-up: tracing-subscriber with `RUST_LOG`-style filters, human or JSON lines.
//!
//! `RUST_LOG=meterd=trace` shows every frame on the wire in hex (see `bus::trace`). Logs go to
//! stderr so that commands printing results (`read --json`, `decode --json`) keep stdout clean.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (for journald/log shippers).
    Json,
}

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG` is unset or empty.
/// The embedded broker's own logs (rumqttd) are off by default: it logs an ERROR for every
/// client that disconnects, its readiness probe included, and broker trouble shows up as the
/// uplink's connection errors anyway. `RUST_LOG=rumqttd=info` brings them back.
pub fn init(format: LogFormat, default_filter: &str) {
    let default = format!("{default_filter},rumqttd=off");
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env {
        Some(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("RUST_LOG={spec:?} is not a valid filter ({e}); using {default:?}");
            EnvFilter::new(&default)
        }),
        None => EnvFilter::new(&default),
    };
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
