//! `meterd scan`: find the meters on a bus.
//!
//! DL/T 645: read-address (`13`) to `AAAAAAAAAAAA` finds the lone meter of a point-to-point
//! bus; `--addresses` probes a list or a range with a cheap read (any valid reply, an error
//! reply included, means "present"). Modbus RTU: a unit sweep with one cheap read per unit (an
//! exception reply also means "present"), on a serial port or a raw TCP device server; Modbus
//! TCP: the same sweep through a Modbus TCP gateway, on a new connection after every probe that
//! timed out. Replies are matched by address or unit id (and, on Modbus TCP, the connection),
//! so a late reply from one probe is never credited to the next.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meter_protocols::dlt645::{Address, DataIdentifier, Request, Response, Version};
use meter_protocols::modbus::rtu::{self, ReadFunction};
use serde::Serialize;

use super::identify::{Wire, identify, lines};
use super::{LineArgs, ProtocolArg, Target, fail, parse_duration, runtime};
use crate::bus::exchange::{ExchangeError, ExchangeTiming, exchange};
use crate::bus::trace::FrameTap;
use crate::bus::transport::modbus_tcp::{ModbusTcpClient, TcpFailure};
use crate::bus::transport::{Link, LinkSettings};
use crate::config::{ProfileSet, Protocol};
use crate::hex_input::to_hex;
use crate::meter::contract::{Framing, Reply};
use crate::meter::identify::{Identity, ModbusIdentifier};
use crate::serial_port::SerialSettings;

/// Arguments of `meterd scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Where the bus is.
    #[command(flatten)]
    pub target: Target,
    /// Serial settings.
    #[command(flatten)]
    pub line: LineArgs,
    /// The protocol to scan for (modbus-tcp sweeps the units behind a Modbus TCP gateway,
    /// with `--tcp`).
    #[arg(long, value_enum)]
    pub protocol: ProtocolArg,
    /// DL/T 645 addresses to probe: `A,B,…` or a range `000000000001-000000000050`
    /// (without it, one read-address to AAAAAAAAAAAA).
    #[arg(long)]
    pub addresses: Option<String>,
    /// Modbus units to sweep: `1-247`, `1,3,5`.
    #[arg(long, default_value = "1-247")]
    pub units: String,
    /// Modbus probe read: `fc03:0:1` (function, address, count).
    #[arg(long, default_value = "fc03:0:1")]
    pub register: String,
    /// Per-probe timeout [default: 1s for DL/T 645 (a meter may take 500 ms, plus the frame's
    /// wire time at 1200-2400 baud), 200ms for Modbus].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Skip identification (by default every meter found is asked who it is: DL/T 645-2007
    /// identity items; for Modbus, the profiles' `[identify]` registers and first points).
    #[arg(long)]
    pub no_identify: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One meter that answered.
#[derive(Debug, Serialize)]
pub struct Found {
    /// DL/T 645 address or Modbus unit id.
    pub address: String,
    /// What it answered (`read-address`, `value`, `exception 02 illegal data address`).
    pub answer: String,
    /// The reply frame (hex).
    pub frame: String,
    /// What identification found (model, asset number, profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

impl Found {
    /// What a probe's reply says; printed at once as a table line unless the output is JSON.
    fn new(label: &str, reply: &Reply, raw: &[u8], json: bool) -> Self {
        let (address, answer) = describe(label, reply);
        let frame = to_hex(raw);
        if !json {
            println!("{address}  {answer}  {frame}");
        }
        Self {
            address,
            answer,
            frame,
            identity: None,
        }
    }

    /// Asks the meter who it is (unless `--no-identify`) and prints the answer under its line.
    async fn identify(
        &mut self,
        args: &ScanArgs,
        wire: &mut Wire<'_>,
        modbus: &ModbusIdentifier,
        tap: &FrameTap,
    ) -> Result<(), String> {
        if args.no_identify {
            return Ok(());
        }
        let protocol: Protocol = args.protocol.into();
        self.identity = identify(wire, protocol, &self.address, modbus, tap).await?;
        if let (Some(identity), false) = (&self.identity, args.json) {
            print!("{}", lines(identity, !protocol.is_dlt645()));
        }
        Ok(())
    }
}

/// Runs `meterd scan`: 0 when something answered, 1 when nothing did, 2 for bad arguments or
/// a dead/busy port.
pub fn run(args: &ScanArgs) -> ExitCode {
    let protocol: Protocol = args.protocol.into();
    if protocol == Protocol::ModbusTcp {
        return scan_modbus_tcp(args);
    }
    let probes = match probes(args, protocol) {
        Ok(p) => p,
        Err(e) => return fail("scan", &e, 2),
    };
    let profiles = match ProfileSet::builtin() {
        Ok(p) => p,
        Err(e) => return fail("scan", &e.to_string(), 2),
    };
    let line = args.line.serial(protocol);
    let settings = match (&args.target.port, &args.target.tcp) {
        (Some(path), _) => LinkSettings::Serial(SerialSettings {
            path: path.clone(),
            baud: line.baud,
            parity: line.parity.into(),
            data_bits: line.data_bits,
            stop_bits: line.stop_bits,
            rs485: None,
        }),
        (None, Some(host)) => LinkSettings::Tcp {
            address: host.clone(),
        },
        (None, None) => return fail("scan", "give --port PATH or --tcp HOST:PORT", 2),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("scan", &e, 2),
    };
    let identifier = ModbusIdentifier::new(&profiles);
    rt.block_on(async {
        let mut link = match Link::open(&settings, Duration::from_secs(3)).await {
            Ok(l) => l,
            Err(e) => return fail("scan", &e.to_string(), 2),
        };
        let tap = FrameTap::silent("scan");
        let timeout = args.timeout.unwrap_or(if protocol.is_dlt645() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        });
        let timing = ExchangeTiming {
            response_timeout: timeout,
            inter_byte_timeout: timeout.min(Duration::from_millis(500)),
            echo: false,
            char_time: crate::bus::exchange::char_time(
                line.baud,
                line.data_bits,
                line.parity != crate::config::Parity::None,
                line.stop_bits,
            ),
        };
        let mut found = Vec::new();
        let mut garbled = false;
        for (label, bytes, framing) in &probes {
            // Transceiver turnaround; also more than t3.5 at any Modbus baud rate.
            tokio::time::sleep(Duration::from_millis(20)).await;
            match exchange(&mut link, bytes, framing, timing, &tap).await {
                Ok(x) => {
                    let mut f = Found::new(label, &x.reply, &x.raw, args.json);
                    let mut wire = Wire::Link {
                        link: &mut link,
                        timing,
                    };
                    if let Err(e) = f.identify(args, &mut wire, &identifier, &tap).await {
                        return fail("scan", &e, 2);
                    }
                    found.push(f);
                }
                Err(ExchangeError::Timeout { partial, stats, .. }) => {
                    garbled |= !partial.is_empty() || stats.rx_bytes > 0;
                }
                Err(ExchangeError::Link { source, .. }) => {
                    return fail("scan", &format!("link failed: {source}"), 2);
                }
            }
        }
        if found.is_empty() && protocol.is_dlt645() && args.addresses.is_none() {
            return fail("scan", &wildcard_unanswered(garbled, timeout), 1);
        }
        report(&found, probes.len(), args.json)
    })
}

/// `meterd scan --protocol modbus-tcp --tcp HOST:PORT`: one read per unit through the
/// gateway (tokio-modbus). A unit that does not answer in time costs a reconnect, so that its
/// late reply cannot be taken for the next unit's.
fn scan_modbus_tcp(args: &ScanArgs) -> ExitCode {
    let Some(host) = &args.target.tcp else {
        return fail("scan", "modbus-tcp needs --tcp HOST:PORT", 2);
    };
    if let Err(e) = args.line.refuse_for_modbus_tcp() {
        return fail("scan", &e, 2);
    }
    let request = match register(&args.register).and_then(|(function, address, count)| {
        let r = rtu::Request::read(function, address, count);
        r.validate().map_err(|e| format!("--register: {e}"))?;
        Ok(r)
    }) {
        Ok(r) => r,
        Err(e) => return fail("scan", &e, 2),
    };
    let units = match units(&args.units) {
        Ok(u) => u,
        Err(e) => return fail("scan", &e, 2),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("scan", &e, 2),
    };
    let timeout = args.timeout.unwrap_or(Duration::from_millis(200));
    let connect = Duration::from_secs(3);
    let identifier = match ProfileSet::builtin() {
        Ok(p) => ModbusIdentifier::new(&p),
        Err(e) => return fail("scan", &e.to_string(), 2),
    };
    rt.block_on(async {
        let tap = FrameTap::silent("scan");
        let mut client = match ModbusTcpClient::connect(host, connect).await {
            Ok(c) => c,
            Err(e) => return fail("scan", &e, 2),
        };
        let mut found = Vec::new();
        for unit in &units {
            match client.call(*unit, &request, timeout, &tap).await {
                Ok((reply, raw)) => {
                    let mut f = Found::new(&unit.to_string(), &reply, &raw, args.json);
                    let mut wire = Wire::ModbusTcp {
                        client: &mut client,
                        host,
                        timeout,
                    };
                    if let Err(e) = f.identify(args, &mut wire, &identifier, &tap).await {
                        return fail("scan", &e, 2);
                    }
                    found.push(f);
                }
                Err(TcpFailure::Timeout) => {
                    client = match ModbusTcpClient::connect(host, connect).await {
                        Ok(c) => c,
                        Err(e) => return fail("scan", &e, 2),
                    };
                }
                Err(TcpFailure::Link(e)) => {
                    return fail("scan", &format!("link failed: {e}"), 2);
                }
            }
        }
        report(&found, units.len(), args.json)
    })
}

/// Prints what answered; exit status 0 when something did, 1 when nothing did.
fn report(found: &[Found], probes: usize, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(found) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail("scan", &format!("cannot print JSON: {e}"), 2),
        }
    }
    if found.is_empty() {
        return fail("scan", &format!("no answer to {probes} probes"), 1);
    }
    if !json {
        println!("{} found", found.len());
    }
    ExitCode::SUCCESS
}

/// Why a read-address to `AAAAAAAAAAAA` can go unanswered, and what to do: every meter on
/// the bus answers it at once, so with several meters the replies collide (garbage, or
/// nothing the exchange can use).
fn wildcard_unanswered(garbled: bool, timeout: Duration) -> String {
    let what = if garbled {
        "only garbled bytes came back"
    } else {
        "nothing came back"
    };
    format!(
        "no answer to read-address (AAAAAAAAAAAA) within {}: {what}. Every meter on the bus \
         answers this probe at once, so with several meters their replies collide; probe the \
         addresses one by one with --addresses FROM-TO (e.g. 000000000001-000000000050), or \
         check the wiring, baud rate and parity if only one meter is connected",
        humantime::format_duration(timeout)
    )
}

type Probe = (String, Vec<u8>, Framing);

fn probes(args: &ScanArgs, protocol: Protocol) -> Result<Vec<Probe>, String> {
    let mut out = Vec::new();
    if protocol.is_dlt645() {
        let (version, di) = if protocol == Protocol::Dlt645_2007 {
            (Version::V2007, DataIdentifier::V2007(0x0001_0000))
        } else {
            (Version::V1997, DataIdentifier::V1997(0x9010))
        };
        let _ = version;
        match &args.addresses {
            None => {
                let r = Request::ReadAddress;
                out.push((
                    "AAAAAAAAAAAA".into(),
                    r.to_frame(Address::WILDCARD).to_bytes(4),
                    Framing::Dlt645 {
                        address: Address::WILDCARD,
                        function: r.function(),
                        di: None,
                    },
                ));
            }
            Some(list) => {
                for a in addresses(list)? {
                    let r = Request::ReadData { di, extra: vec![] };
                    out.push((
                        a.to_string(),
                        r.to_frame(a).to_bytes(4),
                        Framing::Dlt645 {
                            address: a,
                            function: r.function(),
                            di: Some(di),
                        },
                    ));
                }
            }
        }
    } else {
        let (function, address, count) = register(&args.register)?;
        let request = rtu::Request::read(function, address, count);
        request.validate().map_err(|e| format!("--register: {e}"))?;
        for unit in units(&args.units)? {
            let mut bytes = Vec::new();
            rtu::encode_request(unit, &request, &mut bytes).map_err(|e| e.to_string())?;
            out.push((
                unit.to_string(),
                bytes,
                Framing::ModbusRtu(request.expectation(unit)),
            ));
        }
    }
    Ok(out)
}

fn describe(label: &str, reply: &Reply) -> (String, String) {
    match reply {
        Reply::Dlt645(frame) => {
            let version = if frame.control.code() < 0x08 {
                Version::V1997
            } else {
                Version::V2007
            };
            let answer = match Response::from_frame(frame, version) {
                Ok(Response::Address(a)) => return (a.to_string(), "read-address".into()),
                Ok(Response::Abnormal { error, .. }) => format!("present (error reply {error})"),
                Ok(_) => "present (answered a read)".into(),
                Err(e) => format!("present (odd reply: {e})"),
            };
            (frame.address.to_string(), answer)
        }
        Reply::ModbusRtu(rtu::Response::Exception { code, .. }) => {
            (label.to_owned(), format!("present (exception {code})"))
        }
        Reply::ModbusRtu(_) => (label.to_owned(), "present (answered the read)".into()),
        Reply::None => (label.to_owned(), "?".into()),
    }
}

/// Most probes one scan sends.
const MAX_PROBES: u64 = 10_000;

fn addresses(list: &str) -> Result<Vec<Address>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let parse = |s: &str| {
                if s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()) {
                    s.parse::<u64>().map_err(|e| e.to_string())
                } else {
                    Err(format!("expected 12 digits, found {s:?}"))
                }
            };
            let (lo, hi) = (parse(a)?, parse(b)?);
            if hi < lo || hi - lo >= MAX_PROBES {
                return Err(format!(
                    "range {part}: must go up and hold at most {MAX_PROBES} addresses"
                ));
            }
            for n in lo..=hi {
                out.push(
                    format!("{n:012}")
                        .parse::<Address>()
                        .map_err(|e| e.to_string())?,
                );
            }
        } else {
            out.push(Address::parse_full(part).map_err(|e| format!("--addresses: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("--addresses is empty".into());
    }
    Ok(out)
}

fn units(list: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u8>()
                .ok()
                .filter(|u| (1..=247).contains(u))
                .ok_or_else(|| format!("--units: expected unit ids 1 to 247, found {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (parse(a)?, parse(b)?);
                out.extend(lo..=hi);
            }
            None => out.push(parse(part)?),
        }
    }
    if out.is_empty() {
        return Err("--units is empty".into());
    }
    Ok(out)
}

fn register(s: &str) -> Result<(ReadFunction, u16, u16), String> {
    let bad =
        || format!("--register: expected FUNCTION:ADDRESS:COUNT such as fc03:0:1, found {s:?}");
    let mut it = s.split(':');
    let (Some(f), Some(a), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let code = u8::from_str_radix(f.trim_start_matches("fc").trim_start_matches("FC"), 16)
        .map_err(|_| bad())?;
    let function = ReadFunction::from_code(code).ok_or_else(bad)?;
    let num = |t: &str| {
        t.strip_prefix("0x")
            .map_or_else(
                || t.parse::<u16>().ok(),
                |h| u16::from_str_radix(h, 16).ok(),
            )
            .ok_or_else(bad)
    };
    Ok((function, num(a)?, num(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists_parse() {
        assert_eq!(units("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert!(units("0-3").is_err());
        assert!(units("248").is_err());
        let a = addresses("000000000009-000000000011").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[2].to_string(), "000000000011");
        assert!(addresses("000000000001-999999999999").is_err());
        assert_eq!(
            register("fc04:0x48:2").unwrap(),
            (ReadFunction::InputRegisters, 0x48, 2)
        );
        assert!(register("fc05:0:1").is_err());
    }
}
