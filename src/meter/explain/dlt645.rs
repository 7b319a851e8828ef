//! DL/T 645 frames (2007 and 1997) explained: preamble, address, control word, data field
//! (minus 0x33), the data identifier and its catalogue entry, the values it carries with unit
//! and format, error words, checksum and end byte. Text and JSON only; no printing, no I/O.

use std::fmt::Write as _;

use meter_protocols::dlt645::catalog::{self, DiInfo};
use meter_protocols::dlt645::{
    self, DataIdentifier, FrameInspection, Function, Request, Response, Version,
};

use super::{ChecksumJson, ControlJson, Explanation, FieldJson, FrameJson, ValueJson, line};
use crate::hex_input::to_hex;
use crate::meter::dlt645::value_parts;
use crate::reading::ValueData;

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

/// Explains a DL/T 645 frame; `version` is guessed from the function code when `None`.
pub(super) fn explain(bytes: &[u8], version: Option<Version>) -> Result<Explanation, String> {
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
            Ok(Request::RelayControl {
                password,
                command,
                valid_until,
                ..
            }) => {
                // The password and operator code are not repeated (they are in the data line
                // of the frame given, and nowhere else).
                line(
                    &mut text,
                    "level",
                    &format!("{:02X}", password[0]),
                    "password level (password and operator code not shown)",
                );
                line(
                    &mut text,
                    "N1",
                    &format!("{:02X}", command.byte()),
                    relay_command_name(command),
                );
                line(
                    &mut text,
                    "deadline",
                    "",
                    &format!(
                        "{valid_until} in the meter's local time (ss mm hh DD MM YY on the wire)"
                    ),
                );
                fields.push(FieldJson {
                    name: "relay_command".into(),
                    value: relay_command_name(command).into(),
                });
                fields.push(FieldJson {
                    name: "deadline".into(),
                    value: valid_until.to_string(),
                });
            }
            Ok(Request::RelayControlCipher {
                password, payload, ..
            }) => {
                line(
                    &mut text,
                    "level",
                    &format!("{:02X}", password[0]),
                    "ESAM ciphertext control (password and operator code not shown)",
                );
                line(
                    &mut text,
                    "ciphertext",
                    "",
                    &format!(
                        "{} bytes: command, deadline and MAC, encrypted upstream",
                        payload.len()
                    ),
                );
            }
            Ok(Request::Security { di, data }) => {
                di_line(&mut text, di);
                di_text = Some(di.to_string());
                line(
                    &mut text,
                    "security",
                    "",
                    &format!(
                        "{} ({} bytes of authentication data, passed through)",
                        if di == meter_protocols::dlt645::relay::IDENTITY_AUTH {
                            "identity authentication"
                        } else {
                            "security authentication"
                        },
                        data.len()
                    ),
                );
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
    let json = FrameJson {
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
        checksum: Some(ChecksumJson {
            ok: cs.ok,
            expected: format!("{:02X}", cs.expected),
            found: format!("{:02X}", cs.found),
        }),
        data: Some(to_hex(&fi.data)),
        mbap: None,
    };
    Ok(Explanation {
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
        let (value, meter_time, reason) = value_parts(&v.value);
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

/// What an `N1` byte asks, in words.
fn relay_command_name(c: meter_protocols::dlt645::RelayCommand) -> &'static str {
    use meter_protocols::dlt645::RelayCommand as R;
    match c {
        R::Trip => "trip (supply off)",
        R::CloseAllowed => "close allowed (the customer presses the button)",
        R::DirectClose => "direct close (supply on)",
        R::Alarm => "pre-trip alarm on",
        R::AlarmRelease => "alarm off",
        R::KeepPower => "keep power on",
        R::KeepPowerRelease => "keep power off",
    }
}
