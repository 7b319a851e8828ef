//! `meterd decode`: explain a DL/T 645, Modbus RTU or Modbus TCP frame field by field.
//!
//! For technicians holding a hex dump from a handheld, a log or a sniffer. The decoder detects
//! the protocol (or takes `--protocol`), names every field in the standard's terms, decodes
//! values with their unit and format, and checks the checksum or CRC. A broken frame still
//! shows what could be read, then exits 2 with a one-line reason. `--json` prints one object.
//!
//! This module owns the command: its arguments, the hex input, printing and exit codes. The
//! explanation itself is [`crate::meter::explain`].

use std::process::ExitCode;

use clap::ValueEnum;

use crate::hex_input::parse_hex;
use crate::meter::explain::{FrameProtocol, explain};

/// Which protocol to decode as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecodeProtocol {
    /// Detect from the bytes.
    Auto,
    /// DL/T 645-2007.
    #[value(name = "dlt645-2007")]
    Dlt645_2007,
    /// DL/T 645-1997.
    #[value(name = "dlt645-1997")]
    Dlt645_1997,
    /// Modbus RTU.
    #[value(name = "modbus-rtu")]
    ModbusRtu,
    /// Modbus TCP (MBAP header, then the PDU).
    #[value(name = "modbus-tcp")]
    ModbusTcp,
}

impl From<DecodeProtocol> for FrameProtocol {
    fn from(p: DecodeProtocol) -> Self {
        match p {
            DecodeProtocol::Auto => FrameProtocol::Auto,
            DecodeProtocol::Dlt645_2007 => FrameProtocol::Dlt645_2007,
            DecodeProtocol::Dlt645_1997 => FrameProtocol::Dlt645_1997,
            DecodeProtocol::ModbusRtu => FrameProtocol::ModbusRtu,
            DecodeProtocol::ModbusTcp => FrameProtocol::ModbusTcp,
        }
    }
}

/// Arguments of `meterd decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The frame in hex: spaces, commas, colons and 0x prefixes are allowed.
    #[arg(required = true, value_name = "HEX")]
    pub hex: Vec<String>,
    /// Protocol to decode as.
    #[arg(long, value_enum, default_value_t = DecodeProtocol::Auto)]
    pub protocol: DecodeProtocol,
    /// Print one JSON object instead of the field table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `meterd decode`: 0 when the frame is valid, 2 when the input is not a valid frame.
pub fn run(args: &DecodeArgs) -> ExitCode {
    let bytes = match parse_hex(&args.hex) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meterd decode: {e}");
            return ExitCode::from(2);
        }
    };
    let decoded = match explain(&bytes, args.protocol.into()) {
        Ok(d) => d,
        Err(reason) => {
            eprintln!("meterd decode: {reason}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&decoded.json) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("meterd decode: cannot print JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", decoded.text);
    }
    match decoded.problem {
        None => ExitCode::SUCCESS,
        Some(reason) => {
            eprintln!("meterd decode: {reason}");
            ExitCode::from(2)
        }
    }
}
