//! `meterd`: the smart-meter gateway daemon and the technician's command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Smart-meter data acquisition gateway: DL/T 645 and Modbus meters to MQTT.
#[derive(Debug, Parser)]
#[command(name = "meterd", version, about, long_about = None, after_help = meterd::cli::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: poll every configured meter and publish readings over MQTT.
    Run(meterd::cli::run::RunArgs),
    /// The embedded default: simulated meters, embedded broker and the daemon, printing readings.
    Demo(meterd::cli::demo::DemoArgs),
    /// Decode a DL/T 645, Modbus RTU or Modbus TCP frame and explain it field by field.
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Decode(meterd::cli::decode::DecodeArgs),
    /// Simulated meters on serial ports / TCP, with wire-time emulation and fault injection.
    Simulate(meterd::sim::cli::SimulateArgs),
    /// Read one meter once and print its values (a table, or the reading batch with --json).
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Read(meterd::cli::read::ReadArgs),
    /// Find the meters on a bus (DL/T 645 read-address or address probing; Modbus unit sweep).
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Scan(meterd::cli::scan::ScanArgs),
    /// Run the buses of a configuration and print every frame both ways, decoded.
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Trace(meterd::cli::trace::TraceArgs),
    /// Commissioning: read every configured meter once and give each a verdict (ok, degraded,
    /// wrong address, no reply, wrong protocol edition, wrong word order, echo); exit 1 if any
    /// meter failed.
    Test(meterd::cli::commission::TestArgs),
    /// Health of every bus and meter of the running daemon (its local diagnostics service).
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Status(meterd::cli::status::StatusArgs),
    /// Validate a configuration and print the effective settings and Modbus request plans.
    #[command(after_help = meterd::cli::EXIT_CODES)]
    CheckConfig(meterd::cli::check_config::CheckConfigArgs),
    /// Print the readings a stopped daemon's spool still holds (JSON lines) and its counters.
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Spool(meterd::cli::spool::SpoolArgs),
    /// Print the fee-control audit trail of a stopped daemon's spool: commands, rejections,
    /// frames and results.
    #[command(after_help = meterd::cli::EXIT_CODES)]
    Audit(meterd::cli::audit::AuditArgs),
}

/// Commands that print results die quietly when their reader goes away (`meterd read | head`),
/// like other Unix tools, instead of panicking on a broken pipe. The long-running commands keep
/// Rust's default (SIGPIPE ignored), so a closed socket is an error they handle, never a kill.
fn die_quietly_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at start-up, before any other
    // thread exists, is what every C program starts with.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Tunes glibc's malloc for the long-running commands (`MALLOC_ARENA_MAX` and
/// `MALLOC_TRIM_THRESHOLD_` in the environment win):
/// - One arena. By default glibc gives threads their own arenas (up to 8 per core), each
///   keeping its freed memory; with the runtime's workers and the spool's blocking threads each
///   holding a few MB the daemon's heap was 1.5–2× its live data (docs/benchmarks.md,
///   scenario 3). Its threads mostly wait on I/O, so sharing one arena costs no measurable time.
/// - A trim threshold of [`MALLOC_TRIM_THRESHOLD`]. With glibc's 128 KiB every spool commit
///   gave back the ~150 KiB SQLite's statement journals had just used and took it again on the
///   next one: two `brk` calls per reading and ~50 page faults a second in scenario 1, 12–15 %
///   of the daemon's CPU there. Peak memory is unchanged: this only keeps what was used.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a malloc parameter; called at start-up, before any
            // other thread exists. A failure (0) leaves glibc's default, only less frugal.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
            }
        }
    }
}

/// Arenas for the daemon (see [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

/// Free memory at the top of the heap kept for reuse before it is given back (see
/// [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_THRESHOLD: libc::c_int = 1 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Decode(_)
            | Command::Read(_)
            | Command::Scan(_)
            | Command::Trace(_)
            | Command::Test(_)
            | Command::CheckConfig(_)
            | Command::Spool(_)
            | Command::Audit(_)
    ) {
        die_quietly_on_broken_pipe();
    }
    if matches!(cli.command, Command::Run(_) | Command::Demo(_)) {
        tune_malloc();
    }
    match cli.command {
        Command::Run(args) => meterd::cli::run::run(&args),
        Command::Demo(args) => meterd::cli::demo::run(&args),
        Command::Decode(args) => meterd::cli::decode::run(&args),
        Command::Simulate(args) => meterd::sim::cli::run(&args),
        Command::Read(args) => meterd::cli::read::run(&args),
        Command::Scan(args) => meterd::cli::scan::run(&args),
        Command::Trace(args) => meterd::cli::trace::run(&args),
        Command::Test(args) => meterd::cli::commission::run(&args),
        Command::Status(args) => meterd::cli::status::run(&args),
        Command::CheckConfig(args) => meterd::cli::check_config::run(&args),
        Command::Spool(args) => meterd::cli::spool::run(&args),
        Command::Audit(args) => meterd::cli::audit::run(&args),
    }
}
