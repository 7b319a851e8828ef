//! `meterd decode`: explain a DL/T 645 or Modbus RTU frame field by field.
//!
//! For technicians holding a hex dump from a handheld, a log or a sniffer. The decoder detects
//! the protocol (or takes `--protocol`), names every field in the standard's terms, decodes
//! values with their unit and format, and checks the checksum or CRC. A broken frame still
//! shows what could be read, then exits 2 with a one-line reason. `--json` prints one object.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use meter_protocols::dlt645::catalog::{self, DiInfo};
use meter_protocols::dlt645::format::Value;
use meter_protocols::dlt645::{
    self, DataIdentifier, FrameInspection, Function, Request, Response, Version,
};
use meter_protocols::modbus::rtu::{self, InspectedPdu, RtuInspection};
use serde::Serialize;

use crate::hex_input::{parse_hex, to_hex};
use crate::reading::{ExactNumber, ValueData};

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
    let decoded = match decode(&bytes, args.protocol) {
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

/// The result of decoding: a field table, a JSON object, and what is wrong with the frame.
#[derive(Debug)]
pub struct Decoded {
    /// Human-readable explanation, one field per line.
    pub text: String,
    /// The JSON object.
    pub json: DecodedJson,
    /// Why the frame is not valid (bad checksum, bad end byte), if it is not.
    pub problem: Option<String>,
}

/// The `--json` object.
#[derive(Debug, Serialize)]
pub struct DecodedJson {
    /// `dlt645-2007`, `dlt645-1997` or `modbus-rtu`.
    pub protocol: &'static str,
    /// `request`, `response` (or for Modbus, `request or its echo`).
    pub direction: String,
    /// DL/T 645 address (12 digits), or the Modbus unit id as text.
    pub address: String,
    /// Control / function.
    pub control: ControlJson,
    /// Data identifier (DL/T 645 reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub di: Option<String>,
    /// Decoded values.
    pub values: Vec<ValueJson>,
    /// Other fields of the frame, by name (address/count for Modbus reads, time for time sync…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldJson>,
    /// Error reported by the meter (abnormal reply or Modbus exception).
    pub error: Option<String>,
    /// Checksum (DL/T 645) or CRC (Modbus) check.
    pub checksum: ChecksumJson,
    /// The unmasked data field in hex (DL/T 645).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Control field in JSON.
#[derive(Debug, Serialize)]
pub struct ControlJson {
    /// Function name in the standard's terms.
    pub function: String,
    /// Function code in hex.
    pub code: String,
    /// Direction bit set (a reply).
    pub response: bool,
    /// Abnormal (error) reply.
    pub abnormal: bool,
    /// More frames follow (DL/T 645 D5).
    pub more_follows: bool,
}

/// One value in JSON.
#[derive(Debug, Serialize)]
pub struct ValueJson {
    /// Quantity name.
    pub quantity: String,
    /// The value (exact), or null when invalid.
    pub value: Option<ValueData>,
    /// Unit.
    pub unit: String,
    /// OBIS code.
    pub obis: Option<String>,
    /// Format in the standard's notation (`XXXXXX.XX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The meter's time stamp for the value (max demand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_time: Option<String>,
    /// Why the value is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A named field in JSON.
#[derive(Debug, Serialize)]
pub struct FieldJson {
    /// Field name.
    pub name: String,
    /// Field value as text.
    pub value: String,
}

/// Checksum check in JSON.
#[derive(Debug, Serialize)]
pub struct ChecksumJson {
    /// Computed equals carried.
    pub ok: bool,
    /// Computed over the received bytes (hex).
    pub expected: String,
    /// Carried by the frame (hex).
    pub found: String,
}

/// Decodes `bytes` as `protocol` (or detects it). `Err` is a one-line reason when nothing
/// frame-like could be read at all.
pub fn decode(bytes: &[u8], protocol: DecodeProtocol) -> Result<Decoded, String> {
    match protocol {
        DecodeProtocol::Dlt645_2007 => decode_dlt645(bytes, Some(Version::V2007)),
        DecodeProtocol::Dlt645_1997 => decode_dlt645(bytes, Some(Version::V1997)),
        DecodeProtocol::ModbusRtu => decode_modbus(bytes),
        DecodeProtocol::Auto => {
            let first = bytes.iter().position(|b| *b != 0xFE);
            let looks_dlt = first
                .is_some_and(|i| bytes.get(i) == Some(&0x68) && bytes.get(i + 7) == Some(&0x68));
            if looks_dlt {
                return decode_dlt645(bytes, None);
            }
            match rtu::inspect(bytes) {
                Ok(i) if i.crc.is_ok() => decode_modbus(bytes),
                _ => match dlt645::frame::inspect(bytes) {
                    Ok(_) => decode_dlt645(bytes, None),
                    Err(dlt_err) => match rtu::inspect(bytes) {
                        Ok(_) => decode_modbus(bytes),
                        Err(rtu_err) => Err(format!(
                            "not a DL/T 645 frame ({dlt_err}) nor a Modbus RTU frame ({rtu_err})"
                        )),
                    },
                },
            }
        }
    }
}

/// A one-line summary of a frame for live traces: protocol, function, address or unit, DI,
/// values or error, and a bad checksum; `?` plus the reason when the bytes are no frame.
pub fn one_line(bytes: &[u8]) -> String {
    let d = match decode(bytes, DecodeProtocol::Auto) {
        Ok(d) => d,
        Err(reason) => return format!("? {reason}"),
    };
    let j = &d.json;
    let mut out = format!("{} {} {}", j.protocol, j.control.function, j.address);
    if let Some(di) = &j.di {
        let _ = write!(out, " di={di}");
    }
    for v in j.values.iter().take(6) {
        let shown = match &v.value {
            Some(ValueData::Number(n)) => n.to_string(),
            Some(ValueData::Text(t)) => t.clone(),
            None => format!("null ({})", v.reason.as_deref().unwrap_or("invalid")),
        };
        let _ = write!(
            out,
            " {}={shown}{}",
            v.quantity,
            if v.unit.is_empty() { "" } else { " " }
        );
        out.push_str(&v.unit);
    }
    if j.values.len() > 6 {
        let _ = write!(out, " (+{} more)", j.values.len() - 6);
    }
    for f in j.fields.iter().take(3) {
        let _ = write!(out, " {}={}", f.name, f.value);
    }
    if let Some(e) = &j.error {
        let _ = write!(out, " error: {e}");
    }
    if let Some(p) = &d.problem {
        let _ = write!(out, " [{p}]");
    }
    out.trim_end().to_owned()
}

/// The edition a frame most likely belongs to, from its function code and data length.
fn guess_version(fi: &FrameInspection) -> Version {
    let code = fi.control.code();
    match code {
        0x01 | 0x02 | 0x04 | 0x0A | 0x0C | 0x0F | 0x10 => Version::V1997,
        // 03 is "security" in 2007 and "re-read" in 1997; a 1997 re-read carries a 2-byte DI.
        0x03 if fi.data.len() == 2 => Version::V1997,
        _ => Version::V2007,
    }
}

fn line(out: &mut String, name: &str, bytes: &str, meaning: &str) {
    let _ = writeln!(out, "  {name:<10} {bytes:<26} {meaning}");
}

fn decode_dlt645(bytes: &[u8], version: Option<Version>) -> Result<Decoded, String> {
    let fi = dlt645::frame::inspect(bytes).map_err(|e| format!("not a DL/T 645 frame: {e}"))?;
    let version = version.unwrap_or_else(|| guess_version(&fi));
    let function = Function::from_code(version, fi.control.code());
    let fname = function.map_or_else(
        || format!("unknown function {:02X}", fi.control.code()),
        |f| f.name().to_owned(),
    );
    let direction = if fi.control.is_response() {
        "response"
    } else {
        "request"
    };
    let mut text = String::new();
    let protocol = version.name();
    let kind = if fi.control.is_abnormal() {
        " (abnormal)"
    } else {
        ""
    };
    let _ = writeln!(
        text,
        "DL/T 645-{} {direction}: {fname}{kind}, meter {}",
        if version == Version::V2007 {
            "2007"
        } else {
            "1997"
        },
        fi.address
    );
    let _ = writeln!(text, "  {:<10} {}", "bytes", to_hex(bytes));
    if fi.noise() > 0 {
        line(
            &mut text,
            "noise",
            &to_hex(bytes.get(..fi.noise()).unwrap_or(&[])),
            &format!("{} bytes before the frame, ignored", fi.noise()),
        );
    }
    if fi.preamble > 0 {
        let pre = bytes.get(fi.noise()..fi.start).unwrap_or(&[]);
        line(
            &mut text,
            "preamble",
            &to_hex(pre),
            &format!("{} wake-up bytes, not in the checksum", fi.preamble),
        );
    }
    let s = fi.start;
    let wire_addr = to_hex(&fi.address.to_wire());
    line(&mut text, "start", "68", "frame start");
    let addr_note = if fi.address.is_broadcast() {
        format!("{} (broadcast; no reply expected)", fi.address)
    } else if fi.address.has_wildcard() {
        format!("{} (AA = wildcard)", fi.address)
    } else {
        format!("{} (low byte first)", fi.address)
    };
    line(&mut text, "address", &wire_addr, &addr_note);
    line(&mut text, "start", "68", "second frame start");
    let c = fi.control;
    line(
        &mut text,
        "control",
        &format!("{:02X}", c.byte()),
        &format!(
            "D7={} {}, D6={} {}, D5={} {}, function {:02X} {fname}",
            u8::from(c.is_response()),
            if c.is_response() {
                "response"
            } else {
                "command"
            },
            u8::from(c.is_abnormal()),
            if c.is_abnormal() {
                "abnormal"
            } else {
                "normal"
            },
            u8::from(c.more_follows()),
            if c.more_follows() {
                "more frames follow"
            } else {
                "no follow-up"
            },
            c.code()
        ),
    );
    line(
        &mut text,
        "length",
        &format!("{:02X}", fi.length),
        &format!("{} data bytes", fi.length),
    );
    if !fi.data.is_empty() {
        let wire: Vec<u8> = fi
            .data
            .iter()
            .map(|b| b.wrapping_add(dlt645::DATA_OFFSET))
            .collect();
        line(
            &mut text,
            "data",
            &to_hex(&wire),
            &format!("minus 0x33: {}", to_hex(&fi.data)),
        );
    }

    let mut values = Vec::new();
    let mut fields = Vec::new();
    let mut di_text = None;
    let mut error = None;
    let frame = dlt645::Dlt645Frame {
        address: fi.address,
        control: fi.control,
        data: fi.data.clone(),
    };
    if c.is_response() {
        match Response::from_frame(&frame, version) {
            Ok(
                Response::ReadData { di, payload, .. } | Response::ReadFollowUp { di, payload, .. },
            ) => {
                di_line(&mut text, di);
                di_text = Some(di.to_string());
                values = explain_payload(&mut text, di, &payload);
            }
            Ok(Response::Address(a)) => {
                line(
                    &mut text,
                    "meter",
                    &to_hex(&a.to_wire()),
                    &format!("communication address {a}"),
                );
                fields.push(FieldJson {
                    name: "meter_address".into(),
                    value: a.to_string(),
                });
            }
            Ok(Response::Abnormal { error: e, .. }) => {
                let reasons: Vec<&str> = e.reasons().collect();
                let msg = format!("error word {:02X}: {}", e.0, reasons.join(", "));
                line(
                    &mut text,
                    "error",
                    &format!("{:02X}", e.0),
                    &reasons.join(", "),
                );
                error = Some(msg);
            }
            Ok(Response::SecurityAbnormal { error: e, .. }) => {
                let reasons: Vec<&str> = e.reasons().collect();
                line(
                    &mut text,
                    "error",
                    &to_hex(&e.0),
                    &format!("security error: {}", reasons.join(", ")),
                );
                error = Some(format!(
                    "security error word {}: {}",
                    to_hex(&e.0),
                    reasons.join(", ")
                ));
            }
            Ok(other) => {
                line(&mut text, "reply", "", &format!("{other:?}"));
            }
            Err(e) => line(
                &mut text,
                "reply",
                "",
                &format!("not a well-formed reply: {e}"),
            ),
        }
    } else {
        match Request::from_frame(&frame, version) {
            Ok(Request::ReadData { di, extra }) => {
                di_line(&mut text, di);
                di_text = Some(di.to_string());
                item_names(&mut text, di);
                if !extra.is_empty() {
                    line(
                        &mut text,
                        "extra",
                        &to_hex(&extra),
                        "block count / start time (load profile)",
                    );
                }
            }
            Ok(Request::ReadFollowUp { di, seq }) => {
                di_line(&mut text, di);
                di_text = Some(di.to_string());
                line(
                    &mut text,
                    "seq",
                    &format!("{seq:02X}"),
                    "follow-up frame number",
                );
                fields.push(FieldJson {
                    name: "seq".into(),
                    value: seq.to_string(),
                });
            }
            Ok(Request::BroadcastTimeSync { time }) => {
                line(
                    &mut text,
                    "time",
                    "",
                    &format!("set clock to 20{time} (ss mm hh DD MM YY on the wire)"),
                );
                fields.push(FieldJson {
                    name: "time".into(),
                    value: time.to_string(),
                });
            }
            Ok(req) => {
                line(&mut text, "command", "", &format!("{req:?}"));
            }
            Err(e) => line(
                &mut text,
                "command",
                "",
                &format!("not a well-formed command: {e}"),
            ),
        }
    }
    let cs = fi.checksum;
    let cs_note = if cs.ok {
        format!(
            "ok (sum from 68 through data, mod 256 = {:02X})",
            cs.expected
        )
    } else {
        format!(
            "WRONG: expected {:02X}, found {:02X}",
            cs.expected, cs.found
        )
    };
    line(
        &mut text,
        "checksum",
        &format!("{:02X}", cs.found),
        &cs_note,
    );
    line(
        &mut text,
        "end",
        &format!("{:02X}", fi.end.found),
        if fi.end.ok {
            "ok"
        } else {
            "WRONG: expected 16"
        },
    );
    if fi.trailing > 0 {
        let tail_start = s + 12 + usize::from(fi.length);
        line(
            &mut text,
            "trailing",
            &to_hex(bytes.get(tail_start..).unwrap_or(&[])),
            &format!("{} bytes after the frame, ignored", fi.trailing),
        );
    }
    let problem = if !cs.ok {
        Some(format!(
            "checksum mismatch: expected {:02X}, found {:02X}",
            cs.expected, cs.found
        ))
    } else if !fi.end.ok {
        Some(format!("end byte: expected 16, found {:02X}", fi.end.found))
    } else {
        None
    };
    let json = DecodedJson {
        protocol,
        direction: direction.to_owned(),
        address: fi.address.to_string(),
        control: ControlJson {
            function: fname,
            code: format!("{:02X}", c.code()),
            response: c.is_response(),
            abnormal: c.is_abnormal(),
            more_follows: c.more_follows(),
        },
        di: di_text,
        values,
        fields,
        error,
        checksum: ChecksumJson {
            ok: cs.ok,
            expected: format!("{:02X}", cs.expected),
            found: format!("{:02X}", cs.found),
        },
        data: Some(to_hex(&fi.data)),
    };
    Ok(Decoded {
        text,
        json,
        problem,
    })
}

fn di_line(text: &mut String, di: DataIdentifier) {
    let (wire, n) = di.to_wire();
    let what = match catalog::lookup(di) {
        Some(DiInfo::Item(spec)) => spec.description.to_owned(),
        Some(DiInfo::Block { items, .. }) => format!("data block of {} items", items.len()),
        None => "not in the catalogue (value shown raw)".to_owned(),
    };
    line(
        text,
        "DI",
        &to_hex(wire.get(..n).unwrap_or(&[])),
        &format!("{di}: {what}"),
    );
}

fn item_names(text: &mut String, di: DataIdentifier) {
    match catalog::lookup(di) {
        Some(DiInfo::Item(spec)) => line(
            text,
            "asks for",
            "",
            &format!("{} [{}] {}", spec.quantity, spec.format, spec.unit),
        ),
        Some(DiInfo::Block { items, .. }) => {
            let names: Vec<String> = items.iter().map(|s| s.quantity.to_string()).collect();
            line(text, "asks for", "", &names.join(", "));
        }
        None => {}
    }
}

fn explain_payload(text: &mut String, di: DataIdentifier, payload: &[u8]) -> Vec<ValueJson> {
    let formats: Vec<String> = match catalog::lookup(di) {
        Some(DiInfo::Item(spec)) => vec![spec.format.to_string()],
        Some(DiInfo::Block { items, .. }) => items.iter().map(|s| s.format.to_string()).collect(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for (i, v) in catalog::decode_payload(di, payload).into_iter().enumerate() {
        let format = formats.get(i).or(formats.last()).cloned();
        let (value, meter_time, reason) = value_json(&v.value);
        let shown = match (&value, &reason) {
            (Some(ValueData::Number(n)), _) => format!("{n} {}", v.unit),
            (Some(ValueData::Text(t)), _) => t.clone(),
            (None, Some(r)) => format!("no value: {r}"),
            (None, None) => "no value".to_owned(),
        };
        let when = meter_time
            .as_ref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        let fmt_note = format
            .as_ref()
            .map(|f| format!("  [{f}]"))
            .unwrap_or_default();
        line(
            text,
            "value",
            "",
            &format!("{} = {}{when}{fmt_note}", v.quantity, shown.trim_end()),
        );
        out.push(ValueJson {
            quantity: v.quantity.to_string(),
            value,
            unit: v.unit.to_owned(),
            obis: v.obis.map(|o| o.to_string()),
            format,
            meter_time,
            reason,
        });
    }
    out
}

/// A DL/T 645 value as (JSON value, meter time, reason it is missing).
pub fn value_json(v: &Value) -> (Option<ValueData>, Option<String>, Option<String>) {
    match v {
        Value::Number(d) => (
            Some(ValueData::Number(ExactNumber::from_decimal(*d))),
            None,
            None,
        ),
        Value::Demand { value, time } => (
            Some(ValueData::Number(ExactNumber::from_decimal(*value))),
            Some(time.to_string()),
            None,
        ),
        Value::Time(t) => (Some(ValueData::Text(t.to_string())), None, None),
        Value::Text(s) => (Some(ValueData::Text(s.clone())), None, None),
        Value::Bits(b) => (Some(ValueData::Text(format!("0x{b:04X}"))), None, None),
        Value::Raw(r) => (Some(ValueData::Text(to_hex(r))), None, None),
        Value::Invalid { raw, reason } => (None, None, Some(format!("{reason} ({})", to_hex(raw)))),
    }
}

fn decode_modbus(bytes: &[u8]) -> Result<Decoded, String> {
    let i: RtuInspection =
        rtu::inspect(bytes).map_err(|e| format!("not a Modbus RTU frame: {e}"))?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Modbus RTU {}: function {:02X} {}, unit {}",
        i.direction, i.function, i.function_name, i.unit
    );
    let _ = writeln!(text, "  {:<10} {}", "bytes", to_hex(bytes));
    line(
        &mut text,
        "unit",
        &format!("{:02X}", i.unit),
        &format!("unit id {}", i.unit),
    );
    line(
        &mut text,
        "function",
        &format!("{:02X}", i.function),
        i.function_name,
    );
    let mut fields = Vec::new();
    let mut error = None;
    let describe = |pdu: &InspectedPdu,
                    text: &mut String,
                    fields: &mut Vec<FieldJson>,
                    error: &mut Option<String>| match pdu {
        InspectedPdu::ReadRequest { address, count } => {
            line(
                text,
                "address",
                &format!("{address:04X}"),
                &format!("first register/bit {address} (0-based PDU address)"),
            );
            line(
                text,
                "count",
                &format!("{count:04X}"),
                &format!("{count} registers/bits"),
            );
            fields.push(FieldJson {
                name: "address".into(),
                value: address.to_string(),
            });
            fields.push(FieldJson {
                name: "count".into(),
                value: count.to_string(),
            });
        }
        InspectedPdu::RegistersResponse {
            byte_count,
            registers,
        } => {
            line(
                text,
                "bytes",
                &format!("{byte_count:02X}"),
                &format!("{byte_count} data bytes = {} registers", registers.len()),
            );
            for (n, r) in registers.iter().enumerate() {
                line(
                    text,
                    &format!("reg +{n}"),
                    &format!("{r:04X}"),
                    &format!("{r} (u16)"),
                );
            }
            fields.push(FieldJson {
                name: "registers".into(),
                value: registers
                    .iter()
                    .map(|r| format!("{r:04X}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        InspectedPdu::BitsResponse { byte_count, data } => {
            line(
                text,
                "bytes",
                &format!("{byte_count:02X}"),
                &format!("{byte_count} bytes of bits, LSB first"),
            );
            line(text, "bits", &to_hex(data), "");
            fields.push(FieldJson {
                name: "bits".into(),
                value: to_hex(data),
            });
        }
        InspectedPdu::WriteSingle { address, value } => {
            line(
                text,
                "address",
                &format!("{address:04X}"),
                &address.to_string(),
            );
            line(text, "value", &format!("{value:04X}"), &value.to_string());
            fields.push(FieldJson {
                name: "address".into(),
                value: address.to_string(),
            });
            fields.push(FieldJson {
                name: "value".into(),
                value: value.to_string(),
            });
        }
        InspectedPdu::WriteMultipleRequest {
            address,
            count,
            byte_count,
            data,
        } => {
            line(
                text,
                "address",
                &format!("{address:04X}"),
                &address.to_string(),
            );
            line(text, "count", &format!("{count:04X}"), &count.to_string());
            line(text, "bytes", &format!("{byte_count:02X}"), &to_hex(data));
            fields.push(FieldJson {
                name: "address".into(),
                value: address.to_string(),
            });
            fields.push(FieldJson {
                name: "count".into(),
                value: count.to_string(),
            });
        }
        InspectedPdu::WriteMultipleResponse { address, count } => {
            line(
                text,
                "address",
                &format!("{address:04X}"),
                &address.to_string(),
            );
            line(
                text,
                "count",
                &format!("{count:04X}"),
                &format!("{count} written"),
            );
            fields.push(FieldJson {
                name: "address".into(),
                value: address.to_string(),
            });
            fields.push(FieldJson {
                name: "count".into(),
                value: count.to_string(),
            });
        }
        InspectedPdu::Exception { code } => {
            line(
                text,
                "exception",
                &format!("{:02X}", code.to_u8()),
                code.name(),
            );
            *error = Some(format!("exception {:02X}: {}", code.to_u8(), code.name()));
        }
        InspectedPdu::Unknown { data } => line(text, "data", &to_hex(data), "function not decoded"),
    };
    describe(&i.pdu, &mut text, &mut fields, &mut error);
    if let Some(alt) = &i.alternative {
        let _ = writeln!(text, "  (the same bytes also read as a reply:)");
        let mut alt_fields = Vec::new();
        describe(alt, &mut text, &mut alt_fields, &mut error);
    }
    let crc_ok = i.crc.is_ok();
    let crc_note = if crc_ok {
        "ok (CRC-16/MODBUS)".to_owned()
    } else {
        format!(
            "WRONG: expected {:04X}, found {:04X}",
            i.crc.expected, i.crc.found
        )
    };
    let crc_wire = i.crc.found.to_le_bytes();
    line(&mut text, "crc", &to_hex(&crc_wire), &crc_note);
    let problem = (!crc_ok).then(|| {
        format!(
            "CRC mismatch: expected {:04X}, found {:04X}",
            i.crc.expected, i.crc.found
        )
    });
    let json = DecodedJson {
        protocol: "modbus-rtu",
        direction: i.direction.to_string(),
        address: i.unit.to_string(),
        control: ControlJson {
            function: i.function_name.to_owned(),
            code: format!("{:02X}", i.function),
            response: matches!(i.direction, rtu::Direction::Response),
            abnormal: i.function & 0x80 != 0,
            more_follows: false,
        },
        di: None,
        values: Vec::new(),
        fields,
        error,
        checksum: ChecksumJson {
            ok: crc_ok,
            expected: format!("{:04X}", i.crc.expected),
            found: format!("{:04X}", i.crc.found),
        },
        data: None,
    };
    Ok(Decoded {
        text,
        json,
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(hex: &str) -> Decoded {
        decode(&parse_hex(&[hex]).unwrap(), DecodeProtocol::Auto).unwrap()
    }

    #[test]
    fn explains_a_dlt645_energy_reply() {
        let d = dec("FE FE FE FE 68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16");
        assert!(d.problem.is_none(), "{:?}", d.problem);
        assert_eq!(d.json.protocol, "dlt645-2007");
        assert_eq!(d.json.direction, "response");
        assert_eq!(d.json.address, "202107072529");
        assert_eq!(d.json.di.as_deref(), Some("00000000"));
        let v = &d.json.values[0];
        assert_eq!(v.quantity, "energy.active.combined.total");
        assert_eq!(v.unit, "kWh");
        let json = serde_json::to_string(&d.json).unwrap();
        assert!(json.contains(r#""value":317.76"#), "{json}");
        assert!(d.text.contains("317.76 kWh"), "{}", d.text);
        assert!(d.text.contains("4 wake-up bytes"), "{}", d.text);
    }

    #[test]
    fn a_bad_checksum_still_shows_fields() {
        let d = dec("68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2F 16");
        assert_eq!(
            d.problem.as_deref(),
            Some("checksum mismatch: expected 2E, found 2F")
        );
        assert!(!d.json.checksum.ok);
        assert_eq!(d.json.values.len(), 1);
    }

    #[test]
    fn explains_abnormal_replies_and_requests() {
        let d = dec("68 12 34 56 78 90 12 68 D1 01 35 74 16");
        assert!(d.json.control.abnormal);
        assert!(
            d.json
                .error
                .as_deref()
                .unwrap_or("")
                .contains("no requested data"),
            "{:?}",
            d.json.error
        );
        let r = dec("68 25 04 03 02 01 00 68 11 04 33 33 34 33 E1 16");
        assert_eq!(r.json.direction, "request");
        assert_eq!(r.json.di.as_deref(), Some("00010000"));
        let v97 = dec("68 54 07 13 00 80 13 68 81 06 43 C3 34 33 33 33 2B 16");
        assert_eq!(v97.json.protocol, "dlt645-1997");
        let json = serde_json::to_string(&v97.json).unwrap();
        assert!(json.contains(r#""value":0.01"#), "{json}");
    }

    #[test]
    fn explains_modbus_rtu() {
        let d = dec("01 03 00 00 00 0A C5 CD");
        assert_eq!(d.json.protocol, "modbus-rtu");
        assert!(d.problem.is_none());
        assert!(d.text.contains("10 registers"), "{}", d.text);
        let e = dec("01 83 02 C0 F1");
        assert!(
            e.json.error.as_deref().unwrap_or("").contains("02"),
            "{:?}",
            e.json.error
        );
        let bad = dec("01 03 00 00 00 0A C5 CE");
        assert!(bad.problem.unwrap().contains("CRC mismatch"));
    }

    #[test]
    fn garbage_is_a_one_line_reason() {
        let e = decode(&[0x12, 0x34], DecodeProtocol::Auto).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        let t = decode(
            &parse_hex(&["68 29 25 07 07 21 20 68 91 08 33 33"]).unwrap(),
            DecodeProtocol::Auto,
        )
        .unwrap_err();
        assert!(t.contains("truncated"), "{t}");
    }
}
