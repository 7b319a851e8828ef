//! The event items of DL/T 645-1997 meters: what the 1997 edition counts, and the record of
//! its last occurrence.
//!
//! The 1997 catalogue has a counter and a last-occurrence time for programming only among the
//! event types meterd reads (`B212` programming count, 2 bytes `NNNN`; `B210` the last
//! programming time, 4 bytes `MMDDhhmm`, no year and no seconds). Its other `B21x` items are
//! the demand-clear count and time (`B213`, `B211`, no meterd event type) and the battery's
//! running time. Cover opening, power downs, meter clears and clock sets have no 1997 item.
//! Sources: `shared/notes/dlt645.md` §2.10 for the 1997 frame; the DI table of three
//! independent meter and concentrator firmwares (1997 → 2007 mappings `B212` → `03300000`,
//! `B210` → `03300001`, and the 1997 display tables naming `B210` "最近一次编程时间,
//! MMDDHHmm" and `B212` "编程次数", 2 bytes).
//!
//! Sans-IO: bytes in, typed values out; nothing here panics on any input.

use super::event::{EventError, EventKind, EventRecord};
use super::request::MeterDateTime;
use super::{DataIdentifier, Version};

/// How many occurrence records a 1997 meter keeps of a type it counts: the last one.
pub const RECORD_DEPTH_1997: u8 = 1;

/// The DI of the counter of `kind` on a meter of `version`; `None` where the edition has none.
pub fn count_di_in(kind: EventKind, version: Version) -> Option<DataIdentifier> {
    match (version, kind) {
        (Version::V2007, _) => Some(kind.count_di()),
        (Version::V1997, EventKind::Programming) => Some(DataIdentifier::V1997(0xB212)),
        (Version::V1997, _) => None,
    }
}

/// The DI of record `n` (1 = newest) of `kind` on a meter of `version`; `None` beyond what
/// the edition keeps.
pub fn record_di_in(kind: EventKind, version: Version, n: u8) -> Option<DataIdentifier> {
    match (version, kind, n) {
        (Version::V2007, _, _) => kind.record_di(n),
        (Version::V1997, EventKind::Programming, 1) => Some(DataIdentifier::V1997(0xB210)),
        (Version::V1997, _, _) => None,
    }
}

/// How many records of `kind` a meter of `version` keeps; 0 when the edition does not count
/// the type at all.
pub fn depth_in(kind: EventKind, version: Version) -> u8 {
    match (version, kind) {
        (Version::V2007, _) => super::event::RECORD_DEPTH,
        (Version::V1997, EventKind::Programming) => RECORD_DEPTH_1997,
        (Version::V1997, _) => 0,
    }
}

/// The kind and record number (0: the counter) a DL/T 645-1997 DI reads, if it is one of
/// these items.
pub fn of_di_1997(di: DataIdentifier) -> Option<(EventKind, u8)> {
    match di {
        DataIdentifier::V1997(0xB212) => Some((EventKind::Programming, 0)),
        DataIdentifier::V1997(0xB210) => Some((EventKind::Programming, 1)),
        _ => None,
    }
}

fn bcd(b: u8) -> Option<u8> {
    (b >> 4 <= 9 && b & 0x0F <= 9).then(|| (b >> 4) * 10 + (b & 0x0F))
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) % 10) << 4 | (v % 10)
}

/// Decodes a 1997 counter payload (2 bytes `NNNN`, unmasked, low byte first).
pub fn decode_count_1997(payload: &[u8]) -> Result<u32, EventError> {
    let hex = || {
        payload
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    };
    let [lo, hi] = payload else {
        return Err(EventError::Counter(hex()));
    };
    match (bcd(*hi), bcd(*lo)) {
        (Some(h), Some(l)) => Ok(u32::from(h) * 100 + u32::from(l)),
        _ => Err(EventError::Counter(hex())),
    }
}

/// Encodes a 1997 counter (the simulator's side); values above 9999 are clamped to it.
pub fn encode_count_1997(v: u32) -> [u8; 2] {
    let v = v.min(9_999);
    [to_bcd((v % 100) as u8), to_bcd((v / 100) as u8)]
}

/// Decodes a 1997 last-occurrence record of `kind` (4 bytes `MMDDhhmm`, sent `mm hh DD MM`,
/// unmasked). The edition stores no year: it is the year of `reference` (the meter's clock, or
/// the read's time in the meter's zone) unless that makes the time later than `reference`,
/// then the year before. An empty or invalid time (zeros, `FF` fill) gives `started: None`.
pub fn decode_record_1997(
    kind: EventKind,
    payload: &[u8],
    reference: MeterDateTime,
) -> Result<EventRecord, EventError> {
    let [mi, hh, dd, mo] = payload.get(..4).unwrap_or_default() else {
        return Err(EventError::Short {
            kind,
            got: payload.len(),
            need: 4,
        });
    };
    let started = match (bcd(*mo), bcd(*dd), bcd(*hh), bcd(*mi)) {
        (Some(mo), Some(dd), Some(hh), Some(mi)) => {
            let later = (mo, dd, hh, mi)
                > (
                    reference.month(),
                    reference.day(),
                    reference.hour(),
                    reference.minute(),
                );
            let year = if later {
                reference.year().checked_sub(1).unwrap_or(99)
            } else {
                reference.year()
            };
            MeterDateTime::new(year, mo, dd, hh, mi, 0).ok()
        }
        _ => None,
    };
    Ok(EventRecord {
        kind,
        started,
        ended: None,
        operator: None,
        clock_before: None,
        clock_after: None,
        programmed: Vec::new(),
        rest: payload.get(4..).unwrap_or_default().to_vec(),
    })
}

/// Encodes a 1997 last-occurrence record (the simulator's side): `time`'s month, day, hour and
/// minute as `mm hh DD MM`.
pub fn encode_record_1997(time: MeterDateTime) -> [u8; 4] {
    [
        to_bcd(time.minute()),
        to_bcd(time.hour()),
        to_bcd(time.day()),
        to_bcd(time.month()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(y: u8, mo: u8, d: u8, h: u8, mi: u8) -> MeterDateTime {
        MeterDateTime::new(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn only_programming_has_1997_items() {
        let p = EventKind::Programming;
        assert_eq!(
            count_di_in(p, Version::V1997),
            Some(DataIdentifier::V1997(0xB212))
        );
        assert_eq!(
            record_di_in(p, Version::V1997, 1),
            Some(DataIdentifier::V1997(0xB210))
        );
        assert_eq!(record_di_in(p, Version::V1997, 2), None);
        assert_eq!(depth_in(p, Version::V1997), 1);
        assert_eq!(depth_in(p, Version::V2007), 10);
        for k in [
            EventKind::CoverOpen,
            EventKind::PowerDown,
            EventKind::MeterClear,
            EventKind::ClockSet,
        ] {
            assert_eq!(count_di_in(k, Version::V1997), None, "{k}");
            assert_eq!(depth_in(k, Version::V1997), 0, "{k}");
            assert_eq!(count_di_in(k, Version::V2007), Some(k.count_di()), "{k}");
        }
        assert_eq!(
            of_di_1997(DataIdentifier::V1997(0xB212)),
            Some((EventKind::Programming, 0))
        );
        assert_eq!(
            of_di_1997(DataIdentifier::V1997(0xB210)),
            Some((EventKind::Programming, 1))
        );
        assert_eq!(of_di_1997(DataIdentifier::V1997(0xB213)), None);
    }

    #[test]
    fn counters_round_trip_and_refuse_non_bcd() {
        assert_eq!(encode_count_1997(1234), [0x34, 0x12]);
        assert_eq!(decode_count_1997(&[0x34, 0x12]), Ok(1234));
        assert_eq!(decode_count_1997(&encode_count_1997(12_345)), Ok(9_999));
        assert!(decode_count_1997(&[0x3A, 0x12]).is_err());
        assert!(decode_count_1997(&[0x34, 0x12, 0x00]).is_err());
        assert!(decode_count_1997(&[]).is_err());
    }

    #[test]
    fn the_last_programming_time_takes_its_year_from_the_reference() {
        let p = EventKind::Programming;
        let now = t(26, 12, 7, 9, 30);
        let r = decode_record_1997(p, &encode_record_1997(t(26, 12, 7, 8, 15)), now).unwrap();
        assert_eq!(r.started, Some(t(26, 12, 7, 8, 15)));
        assert_eq!(r.ended, None);
        // Later in the calendar than now: last year's.
        let r = decode_record_1997(p, &[0x00, 0x10, 0x24, 0x12], now).unwrap();
        assert_eq!(r.started, Some(t(25, 12, 24, 10, 0)));
        // New Year: December's programming seen in January.
        let r = decode_record_1997(p, &[0x00, 0x10, 0x31, 0x12], t(27, 1, 2, 0, 0)).unwrap();
        assert_eq!(r.started, Some(t(26, 12, 31, 10, 0)));
        // Empty or invalid: no time, never a panic.
        for bad in [[0u8; 4], [0xFF; 4], [0x00, 0x25, 0x01, 0x01]] {
            assert_eq!(decode_record_1997(p, &bad, now).unwrap().started, None);
        }
        assert!(decode_record_1997(p, &[0x00, 0x10, 0x24], now).is_err());
    }
}
