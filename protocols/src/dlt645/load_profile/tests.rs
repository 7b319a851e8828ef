use proptest::prelude::*;

use super::*;

fn at(y: i64, m: u32, d: u32, h: u32, min: u32) -> LocalMinute {
    LocalMinute::from_civil(y, m, d, h, min)
}

#[test]
fn block_lengths_follow_the_standard() {
    let lens: Vec<usize> = (0..6).map(block_len).collect();
    assert_eq!(lens, [17, 24, 8, 16, 16, 6]);
}

#[test]
fn request_is_count_then_start_low_byte_first() {
    // 1 record from 2026-12-07 10:15: N = 01, then mm hh DD MM YY.
    assert_eq!(
        request_extra(1, at(2026, 12, 7, 10, 15)).unwrap(),
        [0x01, 0x15, 0x10, 0x07, 0x12, 0x26]
    );
    assert_eq!(
        request_extra(12, at(2026, 1, 2, 3, 4)).unwrap(),
        [0x12, 0x04, 0x03, 0x02, 0x01, 0x26]
    );
    assert_eq!(request_extra(0, at(2026, 1, 2, 3, 4)), None);
    assert_eq!(request_extra(100, at(2026, 1, 2, 3, 4)), None);
    assert_eq!(
        parse_request_extra(&[0x12, 0x04, 0x03, 0x02, 0x01, 0x26]),
        Some((12, at(2026, 1, 2, 3, 4)))
    );
    assert_eq!(
        parse_request_extra(&[0x1A, 0x04, 0x03, 0x02, 0x01, 0x26]),
        None
    );
    assert_eq!(parse_request_extra(&[0x01]), None);
}

/// A hand-built record stamped 2026-12-07 10:15 with block 1 (V, I, f) and block 4 (energy)
/// only; checksum computed by hand.
fn vector() -> Vec<u8> {
    let mut r = vec![0xA0, 0xA0, 0x00];
    r.extend([0x15, 0x10, 0x07, 0x12, 0x26]); // 10:15 07-12-26
    // Block 1: Ua 220.1 V, Ub 220.2, Uc 220.3; Ia 5.123 A, Ib 0.000, Ic 1.000; f 50.00 Hz.
    r.extend([0x01, 0x22, 0x02, 0x22, 0x03, 0x22]);
    r.extend([0x23, 0x51, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00]);
    r.extend([0x00, 0x50]);
    r.push(0xAA);
    r.push(0xAA); // block 2 empty
    r.push(0xAA); // block 3 empty
    // Block 4: import 1234.56 kWh, export 0.01, combined reactive 1 12.00, 2 0.00.
    r.extend([0x56, 0x34, 0x12, 0x00, 0x01, 0x00, 0x00, 0x00]);
    r.extend([0x00, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    r.push(0xAA);
    r.push(0xAA); // block 5 empty
    r.push(0xAA); // block 6 empty
    r[2] = u8::try_from(r.len() - 3).unwrap();
    let cs = r.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    r.push(cs);
    r.push(0xE5);
    r
}

#[test]
fn hand_built_record_parses_into_its_values() {
    let bytes = vector();
    // 5 stamp + 17 + 16 data + 6 separators.
    assert_eq!(bytes[2], 44);
    let records = parse_records(&bytes).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.stamp, at(2026, 12, 7, 10, 15));
    assert!(r.valid);
    assert!(r.blocks[1].is_none() && r.blocks[2].is_none() && r.blocks[5].is_none());
    let shown: Vec<String> = r
        .values()
        .iter()
        .map(|(di, v)| format!("{di} {}={} {}", v.quantity, v.value, v.unit))
        .collect();
    assert_eq!(
        shown,
        [
            "02010100 voltage.l1=220.1 V",
            "02010200 voltage.l2=220.2 V",
            "02010300 voltage.l3=220.3 V",
            "02020100 current.l1=5.123 A",
            "02020200 current.l2=0.000 A",
            "02020300 current.l3=1.000 A",
            "02800002 frequency=50.00 Hz",
            "00010000 energy.active.import.total=1234.56 kWh",
            "00020000 energy.active.export.total=0.01 kWh",
            "00030000 energy.reactive.combined1.total=12.00 kvarh",
            "00040000 energy.reactive.combined2.total=0.00 kvarh",
        ]
    );
    // Encoding gives the same bytes back.
    assert_eq!(r.encode().unwrap(), bytes);
}

#[test]
fn two_records_and_a_flagged_one() {
    let mut two = vector();
    let mut second = vector();
    second[0] = 0xE0;
    second[1] = 0xE0;
    let len = second.len();
    second[len - 2] = second[..len - 2]
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b));
    two.extend(&second);
    let records = parse_records(&two).unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].valid && !records[1].valid);
}

#[test]
fn broken_records_are_refused_with_the_reason() {
    let good = vector();
    let mut bad_cs = good.clone();
    let n = bad_cs.len();
    bad_cs[n - 2] ^= 0x01;
    assert!(
        parse_records(&bad_cs)
            .unwrap_err()
            .to_string()
            .contains("checksum")
    );
    let mut bad_len = good.clone();
    bad_len[2] += 1;
    let n = bad_len.len();
    bad_len[n - 2] = bad_len[..n - 2].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    assert!(
        parse_records(&bad_len)
            .unwrap_err()
            .to_string()
            .contains("length byte")
    );
    let mut no_end = good.clone();
    no_end.pop();
    assert!(parse_records(&no_end).is_err());
    let mut bad_time = good;
    bad_time[4] = 0x24; // hour 24
    let n = bad_time.len();
    bad_time[n - 2] = bad_time[..n - 2]
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b));
    assert!(
        parse_records(&bad_time)
            .unwrap_err()
            .to_string()
            .contains("stamp")
    );
    assert_eq!(parse_records(&[]).unwrap(), vec![]);
}

/// A BCD byte.
fn bcd() -> impl Strategy<Value = u8> {
    (0u8..10, 0u8..10).prop_map(|(h, l)| (h << 4) | l)
}

fn record() -> impl Strategy<Value = LoadRecord> {
    let blocks: Vec<_> = (0..6)
        .map(|i| proptest::option::of(proptest::collection::vec(bcd(), block_len(i))))
        .collect();
    (0i64..(100 * 365 * 1440), any::<bool>(), blocks).prop_map(|(minute, valid, blocks)| {
        let start = LocalMinute::from_civil(2000, 1, 1, 0, 0).0;
        let mut b: [Option<Vec<u8>>; 6] = Default::default();
        for (slot, v) in b.iter_mut().zip(blocks) {
            *slot = v;
        }
        LoadRecord {
            stamp: LocalMinute(start + minute),
            valid,
            blocks: b,
        }
    })
}

proptest! {
    #[test]
    fn records_round_trip(records in proptest::collection::vec(record(), 1..4)) {
        let mut bytes = Vec::new();
        for r in &records {
            bytes.extend(r.encode().unwrap());
        }
        prop_assert_eq!(parse_records(&bytes).unwrap(), records);
    }

    #[test]
    fn requests_round_trip(count in 1u8..100, minute in 0i64..(100 * 365 * 1440)) {
        let start = LocalMinute(LocalMinute::from_civil(2000, 1, 1, 0, 0).0 + minute);
        let extra = request_extra(count, start).unwrap();
        prop_assert_eq!(parse_request_extra(&extra), Some((count, start)));
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(records) = parse_records(&bytes) {
            for r in records {
                let _ = r.values();
            }
        }
        let _ = parse_request_extra(&bytes);
    }

    #[test]
    fn damaged_records_never_panic(r in record(), at in any::<prop::sample::Index>(), with in any::<u8>()) {
        let mut bytes = r.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = with;
        if let Ok(records) = parse_records(&bytes) {
            for r in records {
                let _ = r.values();
            }
        }
    }
}
