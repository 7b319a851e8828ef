//! The technician's commands: `meterd read`, `scan`, `trace`, `test`, `status`,
//! `check-config` and `spool`.
//!
//! Each command parses its arguments (clap), builds the same bus and driver objects the daemon
//! uses, and reports every failure (dead port, busy port, no answer, bad configuration) as one
//! line on stderr with a non-zero exit code. This module owns argument handling and printing
//! only: talking to meters is [`crate::bus`] and [`crate::meter`].

pub mod audit;
pub mod check_config;
pub mod commission;
pub mod decode;
pub mod demo;
mod identify;
pub mod read;
pub mod read_freeze;
pub mod read_load_profile;
pub mod read_register;
pub mod run;
pub mod scan;
pub mod spool;
pub mod status;
pub mod trace;

use std::process::ExitCode;
use std::time::Duration;

/// The exit codes of the technician's commands, for their `--help` (README.md, "Exit codes",
/// has the same table). Every failure is also one line on stderr saying why.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (read: at least one value not bad; scan: something answered; trace: stopped by
     --duration or Ctrl-C; decode: a valid frame)
  1  the meter failed the job: no answer, or every value bad (read); nothing answered
     (scan); the daemon refused or failed the request (--daemon)
  2  the job could not start: bad arguments or configuration, an unknown --bus, --meter,
     --profile or --quantity, a dead, busy or missing port or spool file, no daemon
     answering; decode: not a valid frame";

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

/// Serial line settings (a serial port, or the serial side of a device server with `--tcp`;
/// refused with `--protocol modbus-tcp`, which has no serial line).
#[derive(Debug, Clone, Args)]
pub struct LineArgs {
    /// All four in one: `BAUD-DPS` such as `2400-8E1` or `9600-8N1` (data bits 5-8, parity
    /// N/E/O, stop bits 1-2), instead of --baud, --parity, --data-bits and --stop-bits.
    #[arg(
        long = "line",
        id = "line",
        value_name = "BAUD-DPS",
        value_parser = parse_line,
        conflicts_with_all = ["baud", "parity", "data_bits", "stop_bits"]
    )]
    pub spec: Option<SerialLine>,
    /// Baud rate (default 2400 for DL/T 645, 9600 for Modbus).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Parity [default: even].
    #[arg(long, value_enum)]
    pub parity: Option<ParityArg>,
    /// Data bits [default: 8].
    #[arg(long, value_parser = clap::value_parser!(u8).range(5..=8))]
    pub data_bits: Option<u8>,
    /// Stop bits [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: Option<u8>,
}

impl LineArgs {
    /// The parity given, or even.
    pub fn parity(&self) -> ParityArg {
        self.parity.unwrap_or(ParityArg::Even)
    }

    /// The data bits given, or 8.
    pub fn data_bits(&self) -> u8 {
        self.data_bits.unwrap_or(8)
    }

    /// The stop bits given, or 1.
    pub fn stop_bits(&self) -> u8 {
        self.stop_bits.unwrap_or(1)
    }

    /// `Err` naming the serial flags given, for a target that has no serial line (Modbus TCP):
    /// a technician who set them believes they matter, and they would be ignored.
    pub fn refuse_for_modbus_tcp(&self) -> Result<(), String> {
        let given: Vec<&str> = [
            ("--line", self.spec.is_some()),
            ("--baud", self.baud.is_some()),
            ("--parity", self.parity.is_some()),
            ("--data-bits", self.data_bits.is_some()),
            ("--stop-bits", self.stop_bits.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if given.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} would be ignored: modbus-tcp has no serial line here (the gateway's own \
             settings decide its serial side); drop {}, or give --protocol modbus-rtu for a \
             serial device server",
            given.join(", "),
            if given.len() == 1 { "it" } else { "them" }
        ))
    }
}

impl LineArgs {
    /// The line in force: `--line`, or the four flags (the baud rate defaults to 2400 for
    /// DL/T 645, 9600 for Modbus).
    pub fn serial(&self, protocol: Protocol) -> SerialLine {
        self.spec.unwrap_or(SerialLine {
            baud: self
                .baud
                .unwrap_or(if protocol.is_dlt645() { 2400 } else { 9600 }),
            parity: self.parity().into(),
            data_bits: self.data_bits(),
            stop_bits: self.stop_bits(),
        })
    }
}

/// Parses `--line`: `2400-8E1` is 2400 baud, 8 data bits, even parity, 1 stop bit.
pub fn parse_line(s: &str) -> Result<SerialLine, String> {
    let expected = "expected BAUD-DPS such as 2400-8E1 or 9600-8N1";
    let (baud, dps) = s
        .split_once('-')
        .ok_or_else(|| format!("{expected}, found {s:?}"))?;
    let baud: u32 = baud
        .parse()
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{expected}: {baud:?} is not a baud rate"))?;
    let [d, p, st] = dps.as_bytes() else {
        return Err(format!(
            "{expected}: {dps:?} is not data bits, parity and stop bits (three characters)"
        ));
    };
    let data_bits = match d {
        b'5'..=b'8' => d - b'0',
        _ => {
            return Err(format!(
                "{expected}: data bits must be 5 to 8, found {:?}",
                char::from(*d)
            ));
        }
    };
    let parity = match p.to_ascii_uppercase() {
        b'N' => Parity::None,
        b'E' => Parity::Even,
        b'O' => Parity::Odd,
        _ => {
            return Err(format!(
                "{expected}: parity must be N, E or O, found {:?}",
                char::from(*p)
            ));
        }
    };
    let stop_bits = match st {
        b'1' | b'2' => st - b'0',
        _ => {
            return Err(format!(
                "{expected}: stop bits must be 1 or 2, found {:?}",
                char::from(*st)
            ));
        }
    };
    Ok(SerialLine {
        baud,
        parity,
        data_bits,
        stop_bits,
    })
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
    let serial = line.serial(protocol);
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
                line.refuse_for_modbus_tcp()?;
                Ok(BusConfig::modbus_tcp(name, host, serial))
            } else {
                Ok(BusConfig::tcp(name, host, serial))
            }
        }
        (None, None) => Err("give --port PATH or --tcp HOST:PORT".into()),
    }
}

pub(crate) use crate::suggest::did_you_mean;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_flags_are_refused_only_when_given() {
        let mut line = LineArgs {
            spec: None,
            baud: None,
            parity: None,
            data_bits: None,
            stop_bits: None,
        };
        assert!(line.refuse_for_modbus_tcp().is_ok());
        assert_eq!(
            (line.parity(), line.data_bits(), line.stop_bits()),
            (ParityArg::Even, 8, 1)
        );
        line.stop_bits = Some(2);
        let e = line.refuse_for_modbus_tcp().unwrap_err();
        assert!(e.starts_with("--stop-bits would be ignored"), "{e}");
        assert!(e.contains("drop it,"), "{e}");
    }

    #[test]
    fn a_line_is_baud_then_data_bits_parity_stop_bits() {
        let l = parse_line("2400-8E1").unwrap();
        assert_eq!(
            (l.baud, l.parity, l.data_bits, l.stop_bits),
            (2400, Parity::Even, 8, 1)
        );
        let l = parse_line("9600-7n2").unwrap();
        assert_eq!(
            (l.baud, l.parity, l.data_bits, l.stop_bits),
            (9600, Parity::None, 7, 2)
        );
        assert_eq!(parse_line("1200-8O1").unwrap().parity, Parity::Odd);
        for (bad, says) in [
            ("2400", "found \"2400\""),
            ("fast-8E1", "\"fast\" is not a baud rate"),
            ("0-8E1", "\"0\" is not a baud rate"),
            ("2400-8E", "three characters"),
            ("2400-9E1", "data bits must be 5 to 8"),
            ("2400-8X1", "parity must be N, E or O"),
            ("2400-8E3", "stop bits must be 1 or 2"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.starts_with("expected BAUD-DPS such as 2400-8E1"), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_line_flag_wins_over_the_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            line: LineArgs,
        }
        let cli = Cli::try_parse_from(["t", "--line", "4800-8N2"]).unwrap();
        let l = cli.line.serial(Protocol::Dlt645_2007);
        assert_eq!((l.baud, l.parity, l.stop_bits), (4800, Parity::None, 2));
        let cli = Cli::try_parse_from(["t"]).unwrap();
        let l = cli.line.serial(Protocol::ModbusRtu);
        assert_eq!((l.baud, l.parity, l.data_bits), (9600, Parity::Even, 8));
        let e = Cli::try_parse_from(["t", "--line", "4800-8N2", "--parity", "odd"])
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
