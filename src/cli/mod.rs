//! The technician's commands: `meterd read`, `scan`, `trace`, `status`, `check-config` and
//! `spool`.
//!
//! Each command parses its arguments (clap), builds the same bus and driver objects the daemon
//! uses, and reports every failure (dead port, busy port, no answer, bad configuration) as one
//! line on stderr with a non-zero exit code. This module owns argument handling and printing
//! only: talking to meters is [`crate::bus`] and [`crate::meter`].

pub mod check_config;
pub mod decode;
pub mod demo;
mod identify;
pub mod read;
pub mod run;
pub mod scan;
pub mod spool;
pub mod status;
pub mod trace;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::build::SerialLine;
use crate::config::{BusConfig, Parity, Protocol};

/// Where the bus is: a serial port or a TCP address (each command checks that one is given:
/// `meterd read --daemon` needs neither).
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct Target {
    /// Serial port (e.g. /dev/ttyUSB0).
    #[arg(long, value_name = "PATH")]
    pub port: Option<String>,
    /// TCP `host:port`: a serial device server (dlt645, modbus-rtu) or a Modbus TCP device.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
}

/// Serial line settings.
#[derive(Debug, Clone, Args)]
pub struct LineArgs {
    /// Baud rate (default 2400 for DL/T 645, 9600 for Modbus).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Parity.
    #[arg(long, value_enum, default_value_t = ParityArg::Even)]
    pub parity: ParityArg,
    /// Data bits.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(5..=8))]
    pub data_bits: u8,
    /// Stop bits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
}

/// Parity on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParityArg {
    /// No parity.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

impl From<ParityArg> for Parity {
    fn from(p: ParityArg) -> Self {
        match p {
            ParityArg::None => Parity::None,
            ParityArg::Even => Parity::Even,
            ParityArg::Odd => Parity::Odd,
        }
    }
}

/// Protocol on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// DL/T 645-2007.
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    /// DL/T 645-1997.
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
    /// Modbus RTU (serial, or raw TCP through a device server).
    #[value(name = "modbus-rtu")]
    ModbusRtu,
    /// Modbus TCP.
    #[value(name = "modbus-tcp")]
    ModbusTcp,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Dlt645_2007 => Protocol::Dlt645_2007,
            ProtocolArg::Dlt645_1997 => Protocol::Dlt645_1997,
            ProtocolArg::ModbusRtu => Protocol::ModbusRtu,
            ProtocolArg::ModbusTcp => Protocol::ModbusTcp,
        }
    }
}

/// Parses `500ms`, `2s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. \"500ms\", \"2s\")"))
}

/// The bus of a command-line target, without meters or timing: a serial port (`--port`), a
/// serial device server (`--tcp`), or a Modbus TCP device (`--tcp` with modbus-tcp).
pub(crate) fn bus_config(
    name: &str,
    target: &Target,
    line: &LineArgs,
    protocol: Protocol,
) -> Result<BusConfig, String> {
    let serial = SerialLine {
        baud: line
            .baud
            .unwrap_or(if protocol.is_dlt645() { 2400 } else { 9600 }),
        parity: line.parity.into(),
        data_bits: line.data_bits,
        stop_bits: line.stop_bits,
    };
    match (&target.port, &target.tcp) {
        (Some(port), _) => {
            if protocol == Protocol::ModbusTcp {
                return Err("modbus-tcp needs --tcp HOST:PORT, not --port".into());
            }
            Ok(BusConfig::serial(name, port, serial))
        }
        (None, Some(host)) => {
            if !host.contains(':') {
                return Err(format!("--tcp: expected HOST:PORT, found {host:?}"));
            }
            if protocol == Protocol::ModbusTcp {
                Ok(BusConfig::modbus_tcp(name, host, serial))
            } else {
                Ok(BusConfig::tcp(name, host, serial))
            }
        }
        (None, None) => Err("give --port PATH or --tcp HOST:PORT".into()),
    }
}

/// `meterd CMD: reason` on stderr, exit code `code`.
pub(crate) fn fail(cmd: &str, reason: &str, code: u8) -> ExitCode {
    eprintln!("meterd {cmd}: {reason}");
    ExitCode::from(code)
}

/// A current-thread runtime for a command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
