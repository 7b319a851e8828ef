//! The explanation of known frames: fields, values, checks, and the one-line reason for garbage.

use super::*;
use crate::hex_input::parse_hex;

fn dec(hex: &str) -> Explanation {
    explain(&parse_hex(&[hex]).unwrap(), FrameProtocol::Auto).unwrap()
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
    let e = explain(&[0x12, 0x34], FrameProtocol::Auto).unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    let t = explain(
        &parse_hex(&["68 29 25 07 07 21 20 68 91 08 33 33"]).unwrap(),
        FrameProtocol::Auto,
    )
    .unwrap_err();
    assert!(t.contains("truncated"), "{t}");
}
