//! Modbus frames explained: for RTU the unit, for Modbus TCP the MBAP header (transaction id,
//! protocol id, length, unit); then the function, the PDU of a read, write or exception (and,
//! when the same bytes also read as a reply, that reading too), and the CRC (RTU) or the
//! header's checks (TCP). Text and JSON only; no printing, no I/O.

use std::fmt::Write as _;

use meter_protocols::modbus::mbap::{self, MbapInspection};
use meter_protocols::modbus::rtu::{self, InspectedPdu, RtuInspection};

use super::{ChecksumJson, ControlJson, Explanation, FieldJson, FrameJson, MbapJson, line};
use crate::hex_input::to_hex;

/// Explains a Modbus RTU frame (a request, or a reply the same bytes also read as).
pub(super) fn explain(bytes: &[u8]) -> Result<Explanation, String> {
    let i: RtuInspection =
        rtu::inspect(bytes).map_err(|e| format!("not a Modbus RTU frame: {e}"))?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Modbus RTU {}: function {:02X} {}, unit {}",
        i.direction, i.function, i.function_name, i.unit
    );
    let _ = writeln!(text, "  {:<10} {}", "bytes", to_hex(bytes));
    let (fields, error) = unit_and_pdu(
        &mut text,
        i.unit,
        (i.function, i.function_name),
        &i.pdu,
        i.alternative.as_ref(),
    );
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
    let json = FrameJson {
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
        checksum: Some(ChecksumJson {
            ok: crc_ok,
            expected: format!("{:04X}", i.crc.expected),
            found: format!("{:04X}", i.crc.found),
        }),
        data: None,
        mbap: None,
    };
    Ok(Explanation {
        text,
        json,
        problem,
    })
}

/// Explains a Modbus TCP ADU: the MBAP header, then the PDU as for RTU. There is no CRC; the
/// header's protocol id and length field are checked instead.
pub(super) fn explain_tcp(bytes: &[u8]) -> Result<Explanation, String> {
    let i: MbapInspection =
        mbap::inspect(bytes).map_err(|e| format!("not a Modbus TCP frame: {e}"))?;
    let h = i.header;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Modbus TCP {}: function {:02X} {}, unit {}, transaction {}",
        i.direction, i.function, i.function_name, h.unit, h.transaction
    );
    let _ = writeln!(text, "  {:<10} {}", "bytes", to_hex(bytes));
    line(
        &mut text,
        "trans id",
        &format!("{:04X}", h.transaction),
        &format!(
            "transaction {} (a reply carries its request's)",
            h.transaction
        ),
    );
    let protocol_ok = h.protocol == mbap::MODBUS_PROTOCOL_ID;
    line(
        &mut text,
        "protocol",
        &format!("{:04X}", h.protocol),
        if protocol_ok {
            "Modbus"
        } else {
            "WRONG: not 0000 (Modbus)"
        },
    );
    let follows = bytes.len().saturating_sub(mbap::HEADER_LEN - 1);
    line(
        &mut text,
        "length",
        &format!("{:04X}", h.length),
        &if usize::from(h.length) == follows {
            format!("{} bytes follow (unit + PDU): ok", h.length)
        } else {
            format!("WRONG: says {} bytes follow, found {follows}", h.length)
        },
    );
    let (fields, error) = unit_and_pdu(
        &mut text,
        h.unit,
        (i.function, i.function_name),
        &i.pdu,
        i.alternative.as_ref(),
    );
    let problem = (!i.is_valid()).then(|| {
        i.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let json = FrameJson {
        protocol: "modbus-tcp",
        direction: i.direction.to_string(),
        address: h.unit.to_string(),
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
        checksum: None,
        data: None,
        mbap: Some(MbapJson {
            transaction: h.transaction,
            protocol_id: h.protocol,
            length: h.length,
            ok: i.is_valid(),
        }),
    };
    Ok(Explanation {
        text,
        json,
        problem,
    })
}

/// The unit and function rows, then the PDU's (and, when the same bytes also read as a reply,
/// that reading's): the same for an RTU frame and a Modbus TCP ADU. Returns the named fields
/// and the exception carried.
fn unit_and_pdu(
    text: &mut String,
    unit: u8,
    (function, function_name): (u8, &str),
    pdu: &InspectedPdu,
    alternative: Option<&InspectedPdu>,
) -> (Vec<FieldJson>, Option<String>) {
    line(
        text,
        "unit",
        &format!("{unit:02X}"),
        &format!("unit id {unit}"),
    );
    line(text, "function", &format!("{function:02X}"), function_name);
    let mut fields = Vec::new();
    let mut error = None;
    describe(pdu, text, &mut fields, &mut error);
    if let Some(alt) = alternative {
        let _ = writeln!(text, "  (the same bytes also read as a reply:)");
        let mut alt_fields = Vec::new();
        describe(alt, text, &mut alt_fields, &mut error);
    }
    (fields, error)
}

/// The PDU's rows of the field table, its named fields and the exception it carries: the same
/// for an RTU and a Modbus TCP ADU.
fn describe(
    pdu: &InspectedPdu,
    text: &mut String,
    fields: &mut Vec<FieldJson>,
    error: &mut Option<String>,
) {
    match pdu {
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
    }
}
