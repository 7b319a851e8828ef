//! Driver tests with canned frames: no I/O.

use std::collections::HashMap;
use std::path::Path;

use meter_protocols::dlt645::{
    Address, DataIdentifier, Dlt645Frame, ErrorWord, Function, Response, Version,
};
use meter_protocols::modbus::rtu::{self, ExceptionCode};

use super::*;
use crate::config::{MeterConfig, Profile, ProfileSet};
use crate::reading::Quality;

const ADDR: &str = "202107072529";

fn meter(toml_text: &str) -> MeterConfig {
    toml::from_str(toml_text).unwrap()
}

fn dlt_meter(profile: &str) -> MeterConfig {
    meter(&format!(
        "protocol = \"dlt645-2007\"\naddress = \"{ADDR}\"\nprofile = \"{profile}\"\n"
    ))
}

fn profile(text: &str) -> Profile {
    Profile::parse(Path::new("test.toml"), text).unwrap()
}

fn di(s: &str) -> DataIdentifier {
    DataIdentifier::parse(s).unwrap()
}

fn addr() -> Address {
    ADDR.parse().unwrap()
}

fn read_reply(d: &str, payload: &[u8], more: bool) -> Reply {
    Reply::Dlt645(
        Response::ReadData {
            di: di(d),
            payload: payload.to_vec(),
            more_follows: more,
        }
        .to_frame(addr(), Version::V2007),
    )
}

fn value_text(v: &ReadingValue) -> String {
    match &v.value {
        Some(crate::reading::ValueData::Number(n)) => n.to_string(),
        Some(crate::reading::ValueData::Text(t)) => t.clone(),
        None => "null".into(),
    }
}

const DLT_PROFILE: &str = r#"
name = "t"
description = "t"
source = "t"
protocol = "dlt645-2007"
[[point]]
di = "00010000"
[[point]]
di = "0201FF00"
[[point]]
di = "02800002"
quantity = "frequency.grid"
"#;

#[test]
fn dlt645_poll_reads_each_di_and_decodes_blocks() {
    let p = profile(DLT_PROFILE);
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    assert_eq!(d.transactions().len(), 3);
    let first = d.transactions()[0].step();
    // 68 A0..A5 68 11 04 DI+33 CS 16, address low byte first.
    assert_eq!(
        crate::hex_input::to_hex(&first.bytes),
        "68 29 25 07 07 21 20 68 11 04 33 33 34 33 4F 16"
    );
    assert!(matches!(
        first.framing,
        Framing::Dlt645 {
            function: Function::ReadData,
            ..
        }
    ));
    assert_eq!(
        d.quantities(),
        vec![
            "energy.active.import.total",
            "voltage.l1",
            "voltage.l2",
            "voltage.l3",
            "frequency.grid"
        ]
    );

    let mut poll = d.poll();
    // 12345.67 kWh = BCD 67 45 23 01 (low byte first).
    poll.on_reply(
        &read_reply("00010000", &[0x67, 0x45, 0x23, 0x01], false),
        b"f1",
    );
    // 229.8 V, 230.1 V, FF FF (no data) for L3.
    poll.on_reply(
        &read_reply("0201FF00", &[0x98, 0x22, 0x01, 0x23, 0xFF, 0xFF], false),
        b"f2",
    );
    poll.on_failure("no reply within 1s");
    assert!(poll.next_step().is_none());
    let r = poll.finish();
    assert_eq!(r.answered, 2);
    assert_eq!(r.failed, 1);
    assert_eq!(r.frames.len(), 2);
    let shown: Vec<(String, String, Quality, String)> = r
        .values
        .iter()
        .map(|v| {
            (
                v.quantity.to_string(),
                value_text(v),
                v.quality,
                v.source.to_string(),
            )
        })
        .collect();
    assert_eq!(shown[0].0, "energy.active.import.total");
    assert_eq!(shown[0].1, "12345.67");
    assert_eq!(shown[0].3, "dlt645:00010000");
    assert_eq!(shown[1].1, "229.8");
    assert_eq!(shown[1].3, "dlt645:02010100", "item DI, not the block DI");
    assert_eq!(shown[2].1, "230.1");
    assert_eq!(shown[3].2, Quality::Bad, "FF fill is no data");
    assert!(
        r.values[3].reason.as_deref().unwrap().contains("no data"),
        "{:?}",
        r.values[3]
    );
    assert_eq!(shown[4].0, "frequency.grid");
    assert_eq!(shown[4].2, Quality::Bad);
    assert_eq!(r.values[4].reason.as_deref(), Some("no reply within 1s"));
}

#[test]
fn dlt645_error_reply_and_wrong_di_are_bad_with_reasons() {
    let p = profile(DLT_PROFILE);
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    let mut poll = d.poll();
    let abnormal = Response::Abnormal {
        function: Function::ReadData,
        error: ErrorWord(ErrorWord::NO_DATA),
    }
    .to_frame(addr(), Version::V2007);
    poll.on_reply(&Reply::Dlt645(abnormal), b"x");
    poll.on_reply(&read_reply("02020100", &[0x00, 0x10, 0x00], false), b"y");
    poll.on_reply(&read_reply("02800002", &[0x00, 0x50], false), b"z");
    let r = poll.finish();
    assert_eq!(r.answered, 3);
    assert_eq!(
        r.values[0].reason.as_deref(),
        Some("meter error 02: no requested data")
    );
    for v in &r.values[1..4] {
        assert_eq!(v.quality, Quality::Bad);
        assert!(
            v.reason
                .as_deref()
                .unwrap()
                .starts_with("reply for another DI (02020100"),
            "{v:?}"
        );
    }
    assert_eq!(value_text(&r.values[4]), "50.00");
}

#[test]
fn dlt645_follow_up_frames_are_joined() {
    let p = profile(DLT_PROFILE);
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    let mut poll = d.poll();
    poll.on_reply(
        &read_reply("00010000", &[0x67, 0x45, 0x23, 0x01], false),
        b"",
    );
    // Voltage block in two frames: 229.8 V in the first, 230.1 and 230.2 in the follow-up.
    poll.on_reply(&read_reply("0201FF00", &[0x98, 0x22], true), b"");
    let step = poll.next_step().unwrap();
    let frame = match Dlt645Frame::scan(&step.bytes) {
        meter_protocols::Scan::Frame { frame, .. } => frame,
        other => panic!("{other:?}"),
    };
    assert_eq!(frame.control.code(), 0x12, "read follow-up");
    assert_eq!(
        meter_protocols::dlt645::Request::from_frame(&frame, Version::V2007).unwrap(),
        meter_protocols::dlt645::Request::ReadFollowUp {
            di: di("0201FF00"),
            seq: 1
        }
    );
    let follow = Response::ReadFollowUp {
        di: di("0201FF00"),
        payload: vec![0x01, 0x23, 0x02, 0x23],
        seq: 1,
        more_follows: false,
    }
    .to_frame(addr(), Version::V2007);
    poll.on_reply(&Reply::Dlt645(follow), b"");
    poll.on_failure("no reply within 1s");
    let r = poll.finish();
    let v: Vec<String> = r.values.iter().map(value_text).collect();
    assert_eq!(v[..4], ["12345.67", "229.8", "230.1", "230.2"]);
}

#[test]
fn dlt645_1997_reads_with_code_01() {
    let set = ProfileSet::builtin().unwrap();
    let p = set.get("dlt645-1997-basic").unwrap();
    let m = meter(&format!(
        "protocol = \"dlt645-1997\"\naddress = \"{ADDR}\"\nprofile = \"dlt645-1997-basic\"\n"
    ));
    let d = MeterDriver::new(&m, p, "bus").unwrap();
    let step = d.transactions()[0].step();
    assert!(matches!(
        step.framing,
        Framing::Dlt645 {
            function: Function::ReadDataV1997,
            ..
        }
    ));
    assert_eq!(step.bytes[8], 0x01);
    let mut poll = d.poll();
    let reply = Response::ReadData {
        di: di("901F"),
        payload: vec![0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0x00],
        more_follows: false,
    }
    .to_frame(addr(), Version::V1997);
    poll.on_reply(&Reply::Dlt645(reply), b"");
    let r = poll.abandon("link failed: gone");
    assert_eq!(value_text(&r.values[0]), "12345.67");
    assert_eq!(&*r.values[0].source, "dlt645:9010");
    assert_eq!(
        r.values.last().unwrap().reason.as_deref(),
        Some("link failed: gone")
    );
}

const MB_PROFILE: &str = r#"
name = "m"
description = "m"
source = "m"
protocol = "modbus"
max_registers = 4
gap_fill = 2
[[point]]
quantity = "voltage.l1"
function = "input"
register = 0
type = "f32"
unit = "V"
[[point]]
quantity = "energy.active.import.total"
function = "input"
register = 0x48
type = "f32"
unit = "kWh"
[[point]]
quantity = "energy.active.export.total"
function = "holding"
register = 10
type = "u32"
order = "cdab"
scale = "0.01"
unit = "kWh"
[[point]]
quantity = "power.active.total"
function = "holding"
register = 20
type = "i16"
scale = "1"
exponent_register = 21
unit = "W"
"#;

fn mb_meter() -> MeterConfig {
    meter("protocol = \"modbus-rtu\"\nunit = 7\nprofile = \"m\"\n")
}

#[test]
fn modbus_poll_follows_the_plan_and_scales_exactly() {
    let p = profile(MB_PROFILE);
    let d = MeterDriver::new(&mb_meter(), &p, "bus").unwrap();
    let plan = d.plan().unwrap().to_string();
    assert_eq!(
        plan,
        "FC03 0x000A+2 → points 2\nFC03 0x0014+2 → points 3, 4\nFC04 0x0000+2 → points 0\nFC04 0x0048+2 → points 1\n"
    );
    assert_eq!(d.transactions().len(), 4);
    let s = d.transactions()[0].step();
    assert_eq!(
        crate::hex_input::to_hex(&s.bytes[..6]),
        "07 03 00 0A 00 02",
        "unit 7, FC03, 10, 2"
    );
    assert_eq!(
        s.modbus,
        Some((
            7,
            rtu::Request::read(rtu::ReadFunction::HoldingRegisters, 10, 2)
        ))
    );

    let mut poll = d.poll();
    // 123456.78 kWh as u32 0x00BC614E in CDAB order.
    poll.on_reply(
        &Reply::ModbusRtu(rtu::Response::HoldingRegisters(vec![0x614E, 0x00BC])),
        b"a",
    );
    // -1234 × 10^-1 (exponent register -1).
    poll.on_reply(
        &Reply::ModbusRtu(rtu::Response::HoldingRegisters(vec![
            (-1234i16) as u16,
            (-1i16) as u16,
        ])),
        b"b",
    );
    // 229.8f32 = 0x4365CCCD.
    poll.on_reply(
        &Reply::ModbusRtu(rtu::Response::InputRegisters(vec![0x4365, 0xCCCD])),
        b"c",
    );
    poll.on_reply(
        &Reply::ModbusRtu(rtu::Response::Exception {
            function: 0x84,
            code: ExceptionCode::IllegalDataAddress,
        }),
        b"d",
    );
    let r = poll.finish();
    assert_eq!(r.answered, 4);
    let shown: Vec<(String, String, Quality)> = r
        .values
        .iter()
        .map(|v| (v.quantity.to_string(), value_text(v), v.quality))
        .collect();
    assert_eq!(
        shown[0],
        ("voltage.l1".into(), "229.8".into(), Quality::Good)
    );
    assert_eq!(&*r.values[0].source, "modbus:fc04:0x0000:f32:abcd");
    assert_eq!(shown[1].2, Quality::Bad);
    assert_eq!(
        r.values[1].reason.as_deref(),
        Some("exception 02 illegal data address")
    );
    assert_eq!(&*r.values[1].source, "modbus:fc04:0x0048:f32:abcd");
    assert_eq!(shown[2].1, "123456.78");
    // -123.4 W, published in kW: the point moved three places in the exact decimal.
    assert_eq!(shown[3].1, "-0.1234");
    assert_eq!(&*r.values[3].unit, "kW");
}

#[test]
fn modbus_timeout_marks_the_points_of_that_read() {
    let p = profile(MB_PROFILE);
    let d = MeterDriver::new(&mb_meter(), &p, "bus").unwrap();
    let mut poll = d.poll();
    poll.on_failure("no reply within 300ms");
    poll.on_failure("no reply within 300ms");
    poll.on_failure("no reply within 300ms");
    poll.on_failure("no reply within 300ms");
    let r = poll.finish();
    assert!(!r.meter_answered());
    assert_eq!(r.values.len(), 4, "nothing silently dropped");
    assert!(
        r.values
            .iter()
            .all(|v| v.quality == Quality::Bad
                && v.reason.as_deref() == Some("no reply within 300ms"))
    );
}

#[test]
fn every_builtin_profile_builds_a_driver() {
    let set = ProfileSet::builtin().unwrap();
    for name in set.names() {
        let p = set.get(name).unwrap();
        let m = match p.protocol {
            crate::config::profile::ProfileProtocol::Dlt645_2007 => dlt_meter(name),
            crate::config::profile::ProfileProtocol::Dlt645_1997 => meter(&format!(
                "protocol = \"dlt645-1997\"\naddress = \"{ADDR}\"\nprofile = \"{name}\"\n"
            )),
            crate::config::profile::ProfileProtocol::Modbus => meter(&format!(
                "protocol = \"modbus-rtu\"\nunit = 1\nprofile = \"{name}\"\n"
            )),
        };
        let d = MeterDriver::new(&m, p, "bus").unwrap();
        assert!(!d.transactions().is_empty(), "{name}");
        // A poll where nothing answers still yields every quantity.
        let mut poll = d.poll();
        while poll.next_step().is_some() {
            poll.on_failure("no reply");
        }
        let r = poll.finish();
        assert_eq!(r.values.len(), d.quantities().len(), "{name}");
    }
}

#[test]
fn meters_of_one_profile_share_points_and_plan() {
    let p = profile(MB_PROFILE);
    let first = MeterDriver::new(&mb_meter(), &p, "bus").unwrap();
    let mut same = MeterDriver::new(
        &meter("protocol = \"modbus-rtu\"\nunit = 8\nprofile = \"m\"\n"),
        &p,
        "bus",
    )
    .unwrap();
    same.share_points(&first);
    assert!(Arc::ptr_eq(&same.modbus_points, &first.modbus_points));
    assert!(Arc::ptr_eq(
        same.plan.as_ref().unwrap(),
        first.plan.as_ref().unwrap()
    ));
    // A read cap gives another plan: the points are shared, the plan is not.
    let p = profile(
        "name = \"m\"\ndescription = \"m\"\nsource = \"m\"\nprotocol = \"modbus\"\n\
         [[point]]\nquantity = \"voltage.l1\"\nfunction = \"input\"\nregister = 0\n\
         type = \"f32\"\nunit = \"V\"\n\
         [[point]]\nquantity = \"voltage.l2\"\nfunction = \"input\"\nregister = 2\n\
         type = \"f32\"\nunit = \"V\"\n",
    );
    let first = MeterDriver::new(&mb_meter(), &p, "bus").unwrap();
    let mut capped = MeterDriver::new(
        &meter("protocol = \"modbus-rtu\"\nunit = 9\nprofile = \"m\"\nmax_registers = 2\n"),
        &p,
        "bus",
    )
    .unwrap();
    assert_eq!(first.transactions().len(), 1);
    assert_eq!(capped.transactions().len(), 2);
    capped.share_points(&first);
    assert!(Arc::ptr_eq(&capped.modbus_points, &first.modbus_points));
    assert_ne!(capped.plan(), first.plan());
    assert!(!Arc::ptr_eq(
        capped.plan.as_ref().unwrap(),
        first.plan.as_ref().unwrap()
    ));
}

#[test]
fn a_total_and_tariffs_block_says_the_group_was_read_whole() {
    let p = profile(
        r#"
name = "t"
description = "t"
source = "t"
protocol = "dlt645-2007"
[[point]]
di = "0001FF00"
[[point]]
di = "00020000"
[[point]]
di = "00020100"
"#,
    );
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    let mut poll = d.poll();
    // total 10.00, t1..t4 = 1.00, 2.00, 3.00, 4.00 kWh in one reply.
    let block: Vec<u8> = [0x1000u32, 0x0100, 0x0200, 0x0300, 0x0400]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    poll.on_reply(&read_reply("0001FF00", &block, false), b"f1");
    poll.on_reply(
        &read_reply("00020000", &[0x00, 0x05, 0x00, 0x00], false),
        b"f2",
    );
    poll.on_reply(
        &read_reply("00020100", &[0x00, 0x01, 0x00, 0x00], false),
        b"f3",
    );
    let r = poll.finish();
    assert_eq!(r.values.len(), 7);
    assert_eq!(
        r.tariff_blocks,
        vec![TariffBlock {
            group: "energy.active.import".into(),
            tariffs: 4
        }],
        "the export total and t1 came one by one: not whole"
    );
}

/// Answers every planned read of a Modbus driver from `registers` (0 where not given).
fn answer_modbus(d: &MeterDriver, registers: &HashMap<u16, u16>) -> PollResult {
    let mut poll = d.poll();
    for read in &d.plan().unwrap().requests {
        let words: Vec<u16> = (0..read.count)
            .map(|k| {
                registers
                    .get(&read.address.wrapping_add(k))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let reply = match read.function {
            rtu::ReadFunction::InputRegisters => rtu::Response::InputRegisters(words),
            _ => rtu::Response::HoldingRegisters(words),
        };
        poll.on_reply(&Reply::ModbusRtu(reply), b"r");
    }
    assert!(poll.next_step().is_none());
    poll.finish()
}

fn builtin_driver(set: &ProfileSet, name: &str) -> MeterDriver {
    let p = set.get(name).unwrap();
    let m = match p.protocol {
        crate::config::profile::ProfileProtocol::Dlt645_2007 => dlt_meter(name),
        crate::config::profile::ProfileProtocol::Dlt645_1997 => meter(&format!(
            "protocol = \"dlt645-1997\"\naddress = \"{ADDR}\"\nprofile = \"{name}\"\n"
        )),
        crate::config::profile::ProfileProtocol::Modbus => meter(&format!(
            "protocol = \"modbus-rtu\"\nunit = 1\nprofile = \"{name}\"\n"
        )),
    };
    MeterDriver::new(&m, p, "bus").unwrap()
}

/// docs/quantities.md: one unit per quantity in everything published, and an OBIS code for
/// every quantity that has one (the catalogue's), or a documented reason for none.
#[test]
fn every_builtin_profile_publishes_canonical_units_and_obis_codes() {
    use meter_protocols::dlt645::catalog::obis_for_quantity;
    use meter_protocols::quantity::{canonical_unit, no_obis_reason};
    let set = ProfileSet::builtin().unwrap();
    let mut checked = 0;
    for name in set.names() {
        let d = builtin_driver(&set, name);
        // Modbus: every read answered (zeros), so the values are good numbers; DL/T 645:
        // unanswered, so the values carry the unit and code of the items they stand for.
        let r = if d.plan().is_some() {
            answer_modbus(&d, &HashMap::new())
        } else {
            let mut poll = d.poll();
            while poll.next_step().is_some() {
                poll.on_failure("no reply");
            }
            poll.finish()
        };
        for v in &r.values {
            let q = &*v.quantity;
            assert_eq!(
                canonical_unit(q),
                Some(&*v.unit),
                "{name}: {q} published in {:?}, docs/quantities.md says {:?}",
                v.unit,
                canonical_unit(q)
            );
            match &v.obis {
                Some(code) => {
                    if let Some(want) = obis_for_quantity(q) {
                        assert_eq!(&**code, &*want, "{name}: {q}");
                    }
                }
                None => assert!(
                    no_obis_reason(q).is_some(),
                    "{name}: {q} has no OBIS code and is not in quantity::NO_OBIS"
                ),
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked}");
}

#[test]
fn an_sdm630_power_in_watts_is_published_as_the_exact_kilowatt_decimal() {
    let set = ProfileSet::builtin().unwrap();
    let d = builtin_driver(&set, "eastron-sdm630");
    let f32_at = |regs: &mut HashMap<u16, u16>, address: u16, v: f32| {
        let bits = v.to_bits();
        regs.insert(address, (bits >> 16) as u16);
        regs.insert(address + 1, (bits & 0xFFFF) as u16);
    };
    let mut regs = HashMap::new();
    f32_at(&mut regs, 0x0034, 1234.5); // total W
    f32_at(&mut regs, 0x000C, 0.1); // L1 W: float32 0.1 is 0.100000001490116…, shortest "0.1"
    f32_at(&mut regs, 0x000E, 1200.0); // L2 W
    f32_at(&mut regs, 0x0010, -230.7); // L3 W (exporting)
    f32_at(&mut regs, 0x0038, 3.5e6); // total VA
    f32_at(&mut regs, 0x003C, -987.654); // total var
    f32_at(&mut regs, 0x0000, 229.8); // V: no conversion
    let r = answer_modbus(&d, &regs);
    let got = |q: &str| {
        let v = r.values.iter().find(|v| &*v.quantity == q).unwrap();
        assert_eq!(v.quality, Quality::Good, "{v:?}");
        // The JSON text is the number's text.
        let json = serde_json::to_value(v).unwrap();
        (json["value"].to_string(), v.unit.to_string())
    };
    assert_eq!(got("power.active.total"), ("1.2345".into(), "kW".into()));
    assert_eq!(got("power.active.l1"), ("0.0001".into(), "kW".into()));
    assert_eq!(got("power.active.l2"), ("1.2".into(), "kW".into()));
    assert_eq!(got("power.active.l3"), ("-0.2307".into(), "kW".into()));
    assert_eq!(got("power.apparent.total"), ("3500".into(), "kVA".into()));
    assert_eq!(
        got("power.reactive.total"),
        ("-0.987654".into(), "kvar".into())
    );
    assert_eq!(got("voltage.l1"), ("229.8".into(), "V".into()));
    let obis = |q: &str| {
        r.values
            .iter()
            .find(|v| &*v.quantity == q)
            .and_then(|v| v.obis.as_deref().map(str::to_owned))
    };
    assert_eq!(obis("power.apparent.total").as_deref(), Some("1-0:9.7.0"));
    assert_eq!(obis("power.reactive.total").as_deref(), Some("1-0:3.7.0"));
}

#[test]
fn a_profile_unit_that_cannot_be_converted_is_refused() {
    for (unit, want) in [
        ("unit = \"kWh\"\n", "unit \"kWh\" is not kW"),
        ("", "give `unit`"),
    ] {
        let text = format!(
            "name = \"m\"\ndescription = \"m\"\nsource = \"m\"\nprotocol = \"modbus\"\n\
             [[point]]\nquantity = \"power.active.total\"\nfunction = \"input\"\n\
             register = 0\ntype = \"f32\"\n{unit}"
        );
        let e = Profile::parse(Path::new("p.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains("point[0].unit"), "{e}");
    }
    let wrong_obis = "name = \"m\"\ndescription = \"m\"\nsource = \"m\"\nprotocol = \"modbus\"\n\
         [[point]]\nquantity = \"voltage.l1\"\nfunction = \"input\"\nregister = 0\n\
         type = \"f32\"\nunit = \"V\"\nobis = \"1-0:31.7.0\"\n";
    let e = Profile::parse(Path::new("p.toml"), wrong_obis)
        .unwrap_err()
        .to_string();
    assert!(e.contains("voltage.l1 is 1-0:32.7.0"), "{e}");
}

/// A meter that does not answer the first request of a poll (retries included) is away: the
/// rest of the poll is not asked, and every quantity is still in the batch, bad with the same
/// reason.
#[test]
fn no_reply_to_the_first_request_skips_the_rest_of_the_poll() {
    let p = profile(DLT_PROFILE);
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    let mut poll = d.poll();
    assert!(poll.next_step().is_some());
    poll.on_failure("no reply within 1s (2 attempts)");
    assert!(
        poll.next_step().is_none(),
        "the other two reads are not sent"
    );
    let r = poll.finish();
    assert_eq!((r.answered, r.failed, r.skipped), (0, 1, 2));
    assert_eq!(
        r.values.len(),
        5,
        "nothing silently dropped: {:?}",
        r.values
    );
    assert!(r.values.iter().all(|v| v.quality == Quality::Bad
        && v.reason.as_deref() == Some("no reply within 1s (2 attempts)")));

    // Modbus: the first planned read unanswered skips the other three.
    let p = profile(MB_PROFILE);
    let d = MeterDriver::new(&mb_meter(), &p, "bus").unwrap();
    let mut poll = d.poll();
    poll.on_failure("no reply within 300ms");
    assert!(poll.next_step().is_none());
    let r = poll.finish();
    assert_eq!((r.failed, r.skipped), (1, 3));
    assert_eq!(r.values.len(), 4);
    assert!(
        r.values
            .iter()
            .all(|v| v.quality == Quality::Bad
                && v.reason.as_deref() == Some("no reply within 300ms"))
    );
}

/// Only silence to the first request skips: a meter that answered (an error reply counts) is
/// asked everything, whatever fails later.
#[test]
fn a_meter_that_answered_first_is_asked_everything() {
    let p = profile(DLT_PROFILE);
    let d = MeterDriver::new(&dlt_meter("t"), &p, "bus").unwrap();
    let mut poll = d.poll();
    let abnormal = Response::Abnormal {
        function: Function::ReadData,
        error: ErrorWord(ErrorWord::NO_DATA),
    }
    .to_frame(addr(), Version::V2007);
    poll.on_reply(&Reply::Dlt645(abnormal), b"x");
    poll.on_failure("no reply within 1s");
    let step = poll.next_step().expect("the third read is still sent");
    assert_eq!(step.what, "read 02800002");
    poll.on_reply(&read_reply("02800002", &[0x00, 0x50], false), b"z");
    let r = poll.finish();
    assert_eq!((r.answered, r.failed, r.skipped), (2, 1, 0));
    assert_eq!(value_text(&r.values[4]), "50.00");
}
