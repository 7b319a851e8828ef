//! `meterd read --register FC:ADDRESS:TYPE[:ORDER]`: raw Modbus registers without a profile,
//! for a meter whose map is not written down yet (or to check one that is).
//!
//! Each `--register` is one read of exactly the registers its type occupies, decoded with the
//! protocols crate's decoders and the profiles' type and order names; nothing is scaled or
//! converted. It goes through the daemon's transport (serial, device server, Modbus TCP).

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use meter_protocols::modbus::rtu::{self, ReadFunction};
use meter_protocols::modbus::values::{self, RawValue};
use serde::Serialize;

use super::read::ReadArgs;
use super::{bus_config, fail, runtime};
use crate::bus::exchange::{ExchangeTiming, char_time};
use crate::bus::trace::FrameTap;
use crate::bus::transport::{TransactError, Transport};
use crate::config::Protocol;
use crate::config::profile::{RegisterType, WordOrder};
use crate::meter::contract::Reply;
use crate::meter::identify::modbus_step;
use crate::reading::ExactNumber;

/// One `--register`: what to read and how to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSpec {
    /// FC01-FC04.
    pub function: ReadFunction,
    /// First register (PDU address, 0-based).
    pub address: u16,
    /// Value type (`bit` for coils and discrete inputs).
    pub ty: RegisterType,
    /// Byte/word order.
    pub order: WordOrder,
}

const TYPES: [RegisterType; 9] = [
    RegisterType::U16,
    RegisterType::I16,
    RegisterType::U32,
    RegisterType::I32,
    RegisterType::U64,
    RegisterType::I64,
    RegisterType::F32,
    RegisterType::F64,
    RegisterType::Bit,
];
const ORDERS: [WordOrder; 4] = [
    WordOrder::Abcd,
    WordOrder::Cdab,
    WordOrder::Badc,
    WordOrder::Dcba,
];

impl RegisterSpec {
    /// Registers (or bits) read.
    fn count(&self) -> u16 {
        self.ty.registers()
    }

    fn request(&self) -> rtu::Request {
        rtu::Request::read(self.function, self.address, self.count())
    }
}

impl fmt::Display for RegisterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fc{:02}:{:#06x}:{}",
            self.function.code(),
            self.address,
            self.ty.name()
        )?;
        if self.ty.registers() > 1 {
            write!(f, ":{}", self.order.name())?;
        }
        Ok(())
    }
}

/// Parses `fc04:0x0000:f32`, `fc03:40:u32:cdab`, `fc01:5:bit`.
pub fn parse_register(s: &str) -> Result<RegisterSpec, String> {
    let expected =
        "expected FUNCTION:ADDRESS:TYPE[:ORDER] such as fc04:0x0000:f32 or fc03:40:u32:cdab";
    let parts: Vec<&str> = s.split(':').collect();
    let (f, a, t, o) = match parts.as_slice() {
        [f, a, t] => (*f, *a, *t, None),
        [f, a, t, o] => (*f, *a, *t, Some(*o)),
        _ => return Err(format!("{expected}, found {s:?}")),
    };
    let function = f
        .to_ascii_lowercase()
        .strip_prefix("fc")
        .and_then(|c| c.parse::<u8>().ok())
        .and_then(ReadFunction::from_code)
        .ok_or_else(|| format!("{expected}: function {f:?} is not fc01, fc02, fc03 or fc04"))?;
    let address = match a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16).ok(),
        None => a.parse::<u16>().ok(),
    }
    .ok_or_else(|| format!("{expected}: address {a:?} is not 0-65535 (decimal or 0x hex)"))?;
    let ty = TYPES
        .into_iter()
        .find(|ty| ty.name().eq_ignore_ascii_case(t))
        .ok_or_else(|| {
            format!("{expected}: type {t:?} is not one of u16 i16 u32 i32 u64 i64 f32 f64 bit")
        })?;
    let bitwise = matches!(function, ReadFunction::Coils | ReadFunction::DiscreteInputs);
    if bitwise != (ty == RegisterType::Bit) {
        return Err(format!(
            "{expected}: coils and discrete inputs (fc01, fc02) are type bit, registers (fc03, fc04) are not"
        ));
    }
    let order = match o {
        None => WordOrder::Abcd,
        Some(o) => ORDERS
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(o))
            .ok_or_else(|| format!("{expected}: order {o:?} is not abcd, cdab, badc or dcba"))?,
    };
    if u32::from(address) + u32::from(ty.registers()) > 65_536 {
        return Err(format!("{s}: the value runs past register 65535"));
    }
    Ok(RegisterSpec {
        function,
        address,
        ty,
        order,
    })
}

/// One register read, as printed and as `--json`.
#[derive(Debug, Serialize)]
struct Row {
    /// The spec, normalised (`fc04:0x0000:f32:abcd`).
    register: String,
    /// The decoded value (exact: floats in their shortest round-trip form).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<ExactNumber>,
    /// The registers (or bits) as read.
    raw: Vec<u16>,
    /// Why there is no value.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The value of `spec` in the reply's words.
fn decode(spec: &RegisterSpec, words: &[u16]) -> Result<ExactNumber, String> {
    let raw = values::decode(
        words,
        spec.ty.value_type(Some(0)),
        spec.order.register_order(),
    )
    .map_err(|e| e.to_string())?;
    match raw {
        // An integer's digits are already a JSON number.
        RawValue::Unsigned(v) => Ok(ExactNumber::from_kept_text(&v.to_string())),
        RawValue::Signed(v) => Ok(ExactNumber::from_kept_text(&v.to_string())),
        RawValue::Float32(v) => {
            ExactNumber::from_f32(v).ok_or_else(|| format!("{v} is not a number"))
        }
        RawValue::Float64(v) => {
            ExactNumber::from_f64(v).ok_or_else(|| format!("{v} is not a number"))
        }
    }
}

/// The row a reply (or its absence) gives.
fn row(spec: &RegisterSpec, reply: Result<Reply, String>) -> Row {
    let (raw, error) = match reply {
        Ok(Reply::ModbusRtu(
            rtu::Response::HoldingRegisters(r) | rtu::Response::InputRegisters(r),
        )) => (r, None),
        Ok(Reply::ModbusRtu(rtu::Response::Coils(b) | rtu::Response::DiscreteInputs(b))) => {
            (b.iter().take(1).map(|b| u16::from(*b)).collect(), None)
        }
        Ok(Reply::ModbusRtu(rtu::Response::Exception { code, .. })) => {
            (Vec::new(), Some(format!("exception {code}")))
        }
        Ok(_) => (Vec::new(), Some("unexpected reply".into())),
        Err(e) => (Vec::new(), Some(e)),
    };
    let (value, error) = match error {
        Some(e) => (None, Some(e)),
        None => match decode(spec, &raw) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        },
    };
    Row {
        register: spec.to_string(),
        value,
        raw,
        error,
    }
}

/// Runs `meterd read --register …`: 0 when every register gave a value, 1 when the meter did
/// not answer or refused one, 2 for a bad request or a dead/busy port.
pub fn run(args: &ReadArgs) -> ExitCode {
    let Some(protocol) = args.protocol.map(Protocol::from) else {
        return fail("read", "give --protocol", 2);
    };
    if protocol.is_dlt645() {
        return fail(
            "read",
            "--register reads Modbus registers: give --protocol modbus-rtu or modbus-tcp",
            2,
        );
    }
    let Some(unit) = args.unit else {
        return fail("read", "a Modbus read needs --unit N", 2);
    };
    let bus = match bus_config("cli", &args.target, &args.line, protocol) {
        Ok(b) => b,
        Err(e) => return fail("read", &e, 2),
    };
    let line = args.line.serial(protocol);
    let timing = ExchangeTiming {
        response_timeout: args.timeout,
        inter_byte_timeout: args.timeout.min(Duration::from_millis(500)),
        echo: false,
        char_time: char_time(
            line.baud,
            line.data_bits,
            line.parity != crate::config::Parity::None,
            line.stop_bits,
        ),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("read", &e, 2),
    };
    rt.block_on(async {
        let mut transport = Transport::for_bus(&bus, None);
        if let Err(e) = transport.open(Duration::from_secs(3)).await {
            return fail("read", &format!("{}: {e}", transport.describe()), 2);
        }
        let tap = FrameTap::silent("read");
        let mut rows = Vec::new();
        for spec in &args.registers {
            let Some(step) = modbus_step(unit, &spec.request()) else {
                return fail("read", &format!("{spec}: cannot encode the request"), 2);
            };
            let mut reply = Err("no reply".to_owned());
            for _ in 0..=args.retries {
                // Transceiver turnaround; also more than t3.5 at any Modbus baud rate.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if !transport.is_open()
                    && let Err(e) = transport.open(Duration::from_secs(3)).await
                {
                    return fail("read", &e, 2);
                }
                match transport
                    .transact(&step, &step.bytes, timing, &tap)
                    .await
                    .result
                {
                    Ok(x) => {
                        reply = Ok(x.reply);
                        break;
                    }
                    Err(TransactError::Timeout(note)) => {
                        reply = Err(format!("no reply within {:?}{note}", args.timeout));
                    }
                    Err(TransactError::CutOff(reason)) => reply = Err(reason),
                    Err(TransactError::Link(reason)) => {
                        return fail("read", &format!("link failed: {reason}"), 2);
                    }
                }
            }
            rows.push(row(spec, reply));
        }
        print(&rows, unit, args.json)
    })
}

fn print(rows: &[Row], unit: u8, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(rows) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail("read", &format!("cannot print JSON: {e}"), 2),
        }
    } else {
        let cells: Vec<[String; 3]> = rows
            .iter()
            .map(|r| {
                [
                    r.register.clone(),
                    r.value
                        .as_ref()
                        .map_or_else(|| "-".into(), |v| v.as_str().to_owned()),
                    match &r.error {
                        Some(e) => e.clone(),
                        None => r
                            .raw
                            .iter()
                            .map(|w| format!("{w:04X}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    },
                ]
            })
            .collect();
        let head = ["register", "value", "raw"].map(String::from);
        let w0 = cells
            .iter()
            .chain([&head])
            .map(|c| c[0].len())
            .max()
            .unwrap_or(0);
        let w1 = cells
            .iter()
            .chain([&head])
            .map(|c| c[1].len())
            .max()
            .unwrap_or(0);
        println!("unit {unit}");
        for c in [&head].into_iter().chain(cells.iter()) {
            println!("{:<w0$}  {:>w1$}  {}", c[0], c[1], c[2]);
        }
    }
    let failed = rows.iter().filter(|r| r.value.is_none()).count();
    if failed == 0 {
        return ExitCode::SUCCESS;
    }
    let reason = rows
        .iter()
        .find_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.register)))
        .unwrap_or_default();
    fail(
        "read",
        &format!(
            "{failed} of {} registers have no value ({reason})",
            rows.len()
        ),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_specs_parse_with_the_profiles_names() {
        let s = parse_register("fc04:0x0000:f32").unwrap();
        assert_eq!(s.function, ReadFunction::InputRegisters);
        assert_eq!(
            (s.address, s.ty, s.order),
            (0, RegisterType::F32, WordOrder::Abcd)
        );
        assert_eq!(s.to_string(), "fc04:0x0000:f32:abcd");
        let s = parse_register("FC03:40:u32:CDAB").unwrap();
        assert_eq!(
            (s.address, s.ty, s.order),
            (40, RegisterType::U32, WordOrder::Cdab)
        );
        assert_eq!(
            parse_register("fc01:7:bit").unwrap().to_string(),
            "fc01:0x0007:bit"
        );
        for (bad, says) in [
            ("fc04:0", "found"),
            ("fc05:0:u16", "not fc01"),
            ("fc03:70000:u16", "not 0-65535"),
            ("fc03:0:f16", "not one of"),
            ("fc03:0:bit", "type bit"),
            ("fc01:0:u16", "type bit"),
            ("fc03:0:f32:abdc", "not abcd"),
            ("fc03:0xFFFF:u32", "past register 65535"),
        ] {
            let e = parse_register(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn each_order_decodes_its_own_layout() {
        // 229.8f32 = 0x4365CCCD.
        for (order, regs) in [
            ("abcd", [0x4365, 0xCCCD]),
            ("cdab", [0xCCCD, 0x4365]),
            ("badc", [0x6543, 0xCDCC]),
            ("dcba", [0xCDCC, 0x6543]),
        ] {
            let spec = parse_register(&format!("fc03:0:f32:{order}")).unwrap();
            assert_eq!(decode(&spec, &regs).unwrap().as_str(), "229.8", "{order}");
        }
        let spec = parse_register("fc03:0:i16").unwrap();
        assert_eq!(decode(&spec, &[0xFFFE]).unwrap().as_str(), "-2");
        let r = row(&spec, Err("no reply".into()));
        assert_eq!((r.value, r.error.as_deref()), (None, Some("no reply")));
    }
}
