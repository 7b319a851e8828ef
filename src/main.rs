//! `meterd`: the smart-meter gateway daemon and the technician's command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Smart-meter data acquisition gateway: DL/T 645 and Modbus meters to MQTT.
#[derive(Debug, Parser)]
#[command(name = "meterd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a DL/T 645 or Modbus RTU frame and explain it field by field.
    Decode(meterd::decode::DecodeArgs),
    /// Simulated meters on serial ports / TCP, with wire-time emulation and fault injection.
    Simulate(meterd::sim::cli::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode(args) => meterd::decode::run(&args),
        Command::Simulate(args) => meterd::sim::cli::run(&args),
    }
}
