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
    assert!(!d.json.checksum.as_ref().unwrap().ok);
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
fn explains_modbus_tcp() {
    let req = parse_hex(&["00 01 00 00 00 06 01 03 00 00 00 02"]).unwrap();
    // Detected by its header, and explained as MBAP when asked.
    for d in [
        explain(&req, FrameProtocol::Auto).unwrap(),
        explain(&req, FrameProtocol::ModbusTcp).unwrap(),
    ] {
        assert_eq!(d.json.protocol, "modbus-tcp");
        assert!(d.problem.is_none(), "{:?}", d.problem);
        assert_eq!(d.json.address, "1");
        assert_eq!(d.json.control.function, "read holding registers");
        assert!(d.json.checksum.is_none());
        let m = d.json.mbap.as_ref().unwrap();
        assert_eq!(
            (m.transaction, m.protocol_id, m.length, m.ok),
            (1, 0, 6, true)
        );
        assert!(d.text.contains("2 registers"), "{}", d.text);
        assert!(
            d.text.contains("6 bytes follow (unit + PDU): ok"),
            "{}",
            d.text
        );
    }
    assert_eq!(
        one_line_as(&req, FrameProtocol::ModbusTcp),
        "modbus-tcp read holding registers 1 tid=1 address=0 count=2"
    );
    let exception = parse_hex(&["00 07 00 00 00 03 02 83 02"]).unwrap();
    let d = explain(&exception, FrameProtocol::ModbusTcp).unwrap();
    assert!(
        d.json.error.as_deref().unwrap_or("").contains("02"),
        "{:?}",
        d.json.error
    );
    // A wrong length field is named, and the PDU still read.
    let bad = parse_hex(&["00 01 00 00 00 09 01 03 00 00 00 02"]).unwrap();
    let d = explain(&bad, FrameProtocol::ModbusTcp).unwrap();
    assert_eq!(
        d.problem.as_deref(),
        Some("length field says 9 bytes follow (unit + PDU), found 6")
    );
    // A damaged RTU read is not taken for Modbus TCP, though its first six bytes fit a header.
    let d = dec("01 03 00 00 00 02 C4 0C");
    assert_eq!(d.json.protocol, "modbus-rtu");
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

/// The keys of the `meterd decode --json` table in README.md, flattened like [`keys_of`].
fn documented_keys() -> std::collections::BTreeSet<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("### `meterd decode --json`")
        .nth(1)
        .expect("README has a `meterd decode --json` section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect()
}

/// Every key of a JSON object, nested ones as `a.b`, keys of objects in arrays as `a[].b`.
fn keys_of(json: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(key.clone());
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk("", json, &mut out);
    out
}

#[test]
fn decode_json_has_every_documented_key() {
    let documented = documented_keys();
    assert!(documented.len() >= 20, "{documented:?}");
    // Keys of list items appear only when the list has an item: those are compared with the
    // frames below that have values and fields.
    let top: std::collections::BTreeSet<String> = documented
        .iter()
        .filter(|k| !k.contains("[]"))
        .cloned()
        .collect();
    // An object key that is null in a frame (`checksum` of Modbus TCP, `mbap` of the others)
    // has no nested keys there.
    let expected_plain = |json: &serde_json::Value| -> std::collections::BTreeSet<String> {
        top.iter()
            .filter(|k| match k.split_once('.') {
                Some((parent, _)) => !json[parent].is_null(),
                None => true,
            })
            .cloned()
            .collect()
    };
    for hex in [
        // read-address reply: no DI, a field, no values
        "68 29 25 07 07 21 20 68 93 06 5C 58 3A 3A 54 53 D5 16",
        // error reply: no DI, no values, an error
        "68 12 34 56 78 90 12 68 D1 01 35 74 16",
        // read request, data reply, Modbus request, Modbus exception
        "68 25 04 03 02 01 00 68 11 04 33 33 34 33 E1 16",
        "68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16",
        "01 03 00 00 00 0A C5 CD",
        "01 83 02 C0 F1",
        // Modbus TCP request and reply
        "00 01 00 00 00 06 01 03 00 00 00 02",
        "00 01 00 00 00 07 01 03 04 43 66 00 00",
    ] {
        let json = serde_json::to_value(&dec(hex).json).unwrap();
        let keys = keys_of(&json);
        let plain: std::collections::BTreeSet<String> =
            keys.iter().filter(|k| !k.contains("[]")).cloned().collect();
        assert_eq!(plain, expected_plain(&json), "{hex}: {json}");
        assert!(keys.is_subset(&documented), "{hex}: {json}");
    }
    let address =
        serde_json::to_value(&dec("68 29 25 07 07 21 20 68 93 06 5C 58 3A 3A 54 53 D5 16").json)
            .unwrap();
    assert_eq!(address["di"], serde_json::Value::Null, "{address}");
    assert_eq!(address["fields"][0]["value"], "202107072529", "{address}");
    let error = serde_json::to_value(&dec("68 12 34 56 78 90 12 68 D1 01 35 74 16").json).unwrap();
    assert_eq!(error["di"], serde_json::Value::Null, "{error}");
    assert_eq!(error["values"], serde_json::json!([]), "{error}");
    assert_eq!(error["fields"], serde_json::json!([]), "{error}");
    // A value with every key: quantity, value, unit, obis, format, meter_time, reason.
    let reply = serde_json::to_value(
        &dec("68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16").json,
    )
    .unwrap();
    let value_keys: std::collections::BTreeSet<String> = keys_of(&reply)
        .into_iter()
        .filter(|k| k.starts_with("values[]."))
        .collect();
    let documented_value_keys: std::collections::BTreeSet<String> = documented
        .iter()
        .filter(|k| k.starts_with("values[]."))
        .cloned()
        .collect();
    assert_eq!(value_keys, documented_value_keys, "{reply}");
    // Every documented key is seen in some frame.
    let mut seen = std::collections::BTreeSet::new();
    for hex in [
        "01 03 00 00 00 0A C5 CD",
        "00 01 00 00 00 06 01 03 00 00 00 02",
    ] {
        seen.extend(keys_of(&serde_json::to_value(&dec(hex).json).unwrap()));
    }
    assert!(top.iter().all(|k| seen.contains(k)), "{top:?} vs {seen:?}");
    let fields = serde_json::to_value(&dec("01 03 00 00 00 0A C5 CD").json).unwrap();
    assert!(
        keys_of(&fields).contains("fields[].name") && keys_of(&fields).contains("fields[].value"),
        "{fields}"
    );
}

#[test]
fn explains_remote_control_without_repeating_credentials() {
    // Plaintext trip, level 02, password 123456, operator 12345678.
    let d =
        dec("68 29 25 07 07 21 20 68 1C 10 35 89 67 45 AB 89 67 45 4D 33 33 43 49 3A 45 59 FA 16");
    assert!(d.problem.is_none(), "{:?}", d.problem);
    assert!(d.text.contains("trip (supply off)"), "{}", d.text);
    assert!(
        d.text
            .contains("2026-12-07 16:10:00 in the meter's local time"),
        "{}",
        d.text
    );
    // The parsed fields name the level only (the data line is the frame as given).
    let after_data: String = d.text.lines().filter(|l| !l.contains("data")).collect();
    assert!(
        !after_data.contains("56 34 12") && !after_data.contains("86, 52, 18"),
        "{}",
        d.text
    );
    let json = serde_json::to_string(&d.json).unwrap();
    assert!(json.contains(r#""value":"trip (supply off)""#), "{json}");
    // The worked ESAM example: ciphertext passed through.
    let e = dec(
        "68 11 11 11 11 11 11 68 1C 1C CB 33 33 33 AB 89 67 45 1E 64 F4 36 A4 F5 83 0A 0B 3D FC B1 13 77 1D 00 39 DD 8E B9 7D 16",
    );
    assert!(e.text.contains("ESAM ciphertext control"), "{}", e.text);
    assert!(e.text.contains("20 bytes"), "{}", e.text);
}
