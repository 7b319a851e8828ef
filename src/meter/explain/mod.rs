//! Frames explained for people: a DL/T 645, Modbus RTU or Modbus TCP frame, field by field.
//!
//! This module owns the explanation of one frame's bytes: it detects the protocol (or takes
//! the one asked for), names every field in the standard's terms, decodes values with their
//! unit and format, and checks the checksum, the CRC or the MBAP header. The result is a field table as text, the
//! JSON object of `meterd decode --json`, and what is wrong with the frame; [`one_line`] is the
//! summary the live traces show ([`one_line_as`] when the trace knows the framing, as for
//! Modbus TCP). A broken frame still yields what could be read.
//!
//! It never prints and never does I/O: `meterd decode` (in the CLI) prints, `meterd trace` and
//! the service's live trace put [`one_line`] next to the frames they carry. The per-protocol
//! halves are `dlt645` and `modbus`.

mod dlt645;
mod modbus;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use meter_protocols::dlt645::Version;
use meter_protocols::modbus::{mbap, rtu};
use serde::Serialize;

use crate::reading::ValueData;

/// Which protocol to read a frame as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProtocol {
    /// Detect from the bytes.
    Auto,
    /// DL/T 645-2007.
    Dlt645_2007,
    /// DL/T 645-1997.
    Dlt645_1997,
    /// Modbus RTU.
    ModbusRtu,
    /// Modbus TCP: the MBAP header, then the PDU.
    ModbusTcp,
}

/// A frame explained: a field table, a JSON object, and what is wrong with the frame.
#[derive(Debug)]
pub struct Explanation {
    /// Human-readable explanation, one field per line.
    pub text: String,
    /// The JSON object.
    pub json: FrameJson,
    /// Why the frame is not valid (bad checksum, bad end byte), if it is not.
    pub problem: Option<String>,
}

/// The `meterd decode --json` object. Every key is always present (`null`, `[]` or `""` when it
/// does not apply), so a consumer can index it without testing for keys; README.md
/// ("`meterd decode --json`") lists the keys and what each means.
#[derive(Debug, Serialize)]
pub struct FrameJson {
    /// `dlt645-2007`, `dlt645-1997`, `modbus-rtu` or `modbus-tcp`.
    pub protocol: &'static str,
    /// `request`, `response` (or for Modbus, `request or its echo`).
    pub direction: String,
    /// DL/T 645 address (12 digits), or the Modbus unit id as text.
    pub address: String,
    /// Control / function.
    pub control: ControlJson,
    /// Data identifier (DL/T 645 reads and their replies); null for a frame without one
    /// (read-address, error replies, Modbus).
    pub di: Option<String>,
    /// Decoded values.
    pub values: Vec<ValueJson>,
    /// Other fields of the frame, by name (address/count for Modbus reads, time for time sync…);
    /// `[]` when there are none.
    pub fields: Vec<FieldJson>,
    /// Error reported by the meter (abnormal reply or Modbus exception).
    pub error: Option<String>,
    /// Checksum (DL/T 645) or CRC (Modbus RTU) check; null for Modbus TCP, which has none.
    pub checksum: Option<ChecksumJson>,
    /// The unmasked data field in hex (DL/T 645; `""` when L = 0); null for Modbus.
    pub data: Option<String>,
    /// The MBAP header of a Modbus TCP frame; null for the other protocols.
    pub mbap: Option<MbapJson>,
}

/// The MBAP header in JSON.
#[derive(Debug, Serialize)]
pub struct MbapJson {
    /// Transaction id.
    pub transaction: u16,
    /// Protocol id (0 for Modbus).
    pub protocol_id: u16,
    /// The length field: the bytes that follow it (unit + PDU).
    pub length: u16,
    /// The protocol id is 0 and the length field fits the bytes.
    pub ok: bool,
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
    /// Format in the standard's notation (`XXXXXX.XX`); null when the item is not catalogued.
    pub format: Option<String>,
    /// The meter's time stamp for the value (max demand); null otherwise.
    pub meter_time: Option<String>,
    /// Why the value is null; null when there is a value.
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

/// Explains `bytes` as `protocol` (or detects it). `Err` is a one-line reason when nothing
/// frame-like could be read at all.
pub fn explain(bytes: &[u8], protocol: FrameProtocol) -> Result<Explanation, String> {
    match protocol {
        FrameProtocol::Dlt645_2007 => dlt645::explain(bytes, Some(Version::V2007)),
        FrameProtocol::Dlt645_1997 => dlt645::explain(bytes, Some(Version::V1997)),
        FrameProtocol::ModbusRtu => modbus::explain(bytes),
        FrameProtocol::ModbusTcp => modbus::explain_tcp(bytes),
        FrameProtocol::Auto => {
            let first = bytes.iter().position(|b| *b != 0xFE);
            let looks_dlt = first
                .is_some_and(|i| bytes.get(i) == Some(&0x68) && bytes.get(i + 7) == Some(&0x68));
            if looks_dlt {
                return dlt645::explain(bytes, None);
            }
            if rtu::inspect(bytes).is_ok_and(|i| i.crc.is_ok()) {
                return modbus::explain(bytes);
            }
            // No CRC to go by: only a header that checks out (protocol id 0, a length field
            // that fits) and a function this decoder knows make the bytes Modbus TCP, so that a
            // damaged RTU frame is not taken for one (`01 03 00 00 00 02` is also a header).
            if mbap::inspect(bytes)
                .is_ok_and(|i| i.is_valid() && i.direction != rtu::Direction::Unknown)
            {
                return modbus::explain_tcp(bytes);
            }
            match meter_protocols::dlt645::frame::inspect(bytes) {
                Ok(_) => dlt645::explain(bytes, None),
                Err(dlt_err) => match rtu::inspect(bytes) {
                    Ok(_) => modbus::explain(bytes),
                    Err(rtu_err) => Err(format!(
                        "not a DL/T 645 frame ({dlt_err}) nor a Modbus RTU frame ({rtu_err}) nor a Modbus TCP frame"
                    )),
                },
            }
        }
    }
}

/// A one-line summary of a frame for live traces: protocol, function, address or unit, DI,
/// values or error, and a bad checksum; `?` plus the reason when the bytes are no frame. The
/// protocol is detected from the bytes: see [`one_line_as`] when the framing is known.
pub fn one_line(bytes: &[u8]) -> String {
    one_line_as(bytes, FrameProtocol::Auto)
}

/// [`one_line`] for bytes whose framing the trace knows (a Modbus TCP connection's frames are
/// MBAP, never RTU, whatever their bytes happen to look like).
pub fn one_line_as(bytes: &[u8], protocol: FrameProtocol) -> String {
    let d = match explain(bytes, protocol) {
        Ok(d) => d,
        Err(reason) => return format!("? {reason}"),
    };
    let j = &d.json;
    let mut out = format!("{} {} {}", j.protocol, j.control.function, j.address);
    if let Some(m) = &j.mbap {
        let _ = write!(out, " tid={}", m.transaction);
    }
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

/// One row of the field table: name, the field's bytes, what they mean.
fn line(out: &mut String, name: &str, bytes: &str, meaning: &str) {
    let _ = writeln!(out, "  {name:<10} {bytes:<26} {meaning}");
}
