//! Event records of DL/T 645-2007 meters: the counters of cover openings, power downs, meter
//! clears, clock sets and programming, and the records of their last occurrences.
//!
//! A meter counts each kind of event (`0311 0000`, `0330 xx00`: 3 bytes `XXXXXX`) and keeps
//! the records of the last ten occurrences (DI0 = 01 the newest ..= 0A the oldest). A
//! concentrator polls the counters; when one goes up, it reads the records of the new
//! occurrences, newest being record 1. The counter value is the occurrence's number, so an
//! event is identified by (meter, kind, counter) however often it is read.
//!
//! Record layouts (`shared/notes/dlt645.md` §2.7; times are `YYMMDDhhmmss`, sent
//! `ss mm hh DD MM YY`, the meter's local time):
//!
//! | kind | count DI | record DI | record |
//! |---|---|---|---|
//! | power down | `03110000` | `031100nn` | start, end (12) |
//! | meter clear | `03300100` | `033001nn` | time, operator (4), energies before the clear |
//! | programming | `03300000` | `033000nn` | time, operator (4), up to ten DIs programmed (4 each) |
//! | clock set | `03300400` | `033004nn` | operator (4), time before (6), time after (6) |
//! | cover open | `03300D00` | `03300Dnn` | start, end, 12 energies (before and after) |
//!
//! Sans-IO: bytes in, typed values out; nothing here panics on any input.

use std::fmt;

use super::DataIdentifier;
use super::request::MeterDateTime;

/// How many records of each event kind a meter keeps (DI0 = 1..=10).
pub const RECORD_DEPTH: u8 = 10;

/// A kind of event the meter counts and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// Meter cover opened (开表盖).
    CoverOpen,
    /// Power down (掉电).
    PowerDown,
    /// Meter clear: energy registers zeroed (电表清零).
    MeterClear,
    /// The meter's clock was set (校时).
    ClockSet,
    /// Parameters written (编程).
    Programming,
}

impl EventKind {
    /// Every kind, in the order they are listed and polled.
    pub const ALL: [EventKind; 5] = [
        EventKind::CoverOpen,
        EventKind::PowerDown,
        EventKind::MeterClear,
        EventKind::ClockSet,
        EventKind::Programming,
    ];

    /// The name in configuration and in `meterd.event.v1` (`type`).
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::CoverOpen => "cover_open",
            EventKind::PowerDown => "power_down",
            EventKind::MeterClear => "meter_clear",
            EventKind::ClockSet => "clock_set",
            EventKind::Programming => "programming",
        }
    }

    /// Parses [`EventKind::name`].
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The DI of the counter.
    pub const fn count_di(self) -> DataIdentifier {
        DataIdentifier::V2007(self.base())
    }

    /// The DI of record `n` (1 = newest); `None` outside 1..=[`RECORD_DEPTH`].
    pub fn record_di(self, n: u8) -> Option<DataIdentifier> {
        (1..=RECORD_DEPTH)
            .contains(&n)
            .then(|| DataIdentifier::V2007(self.base() | u32::from(n)))
    }

    /// The fewest payload bytes a record of this kind has (meters append more).
    pub const fn min_record_len(self) -> usize {
        match self {
            EventKind::PowerDown => 12,
            EventKind::MeterClear => 10,
            EventKind::ClockSet => 16,
            EventKind::CoverOpen => 12,
            EventKind::Programming => 10,
        }
    }

    const fn base(self) -> u32 {
        match self {
            EventKind::CoverOpen => 0x0330_0D00,
            EventKind::PowerDown => 0x0311_0000,
            EventKind::MeterClear => 0x0330_0100,
            EventKind::ClockSet => 0x0330_0400,
            EventKind::Programming => 0x0330_0000,
        }
    }

    /// The kind and record number a DI reads, if it is a counter (`n` = 0) or a record of one.
    pub fn of_di(di: DataIdentifier) -> Option<(EventKind, u8)> {
        let DataIdentifier::V2007(v) = di else {
            return None;
        };
        let n = (v & 0xFF) as u8;
        let kind = EventKind::ALL.into_iter().find(|k| k.base() == v & !0xFF)?;
        (n <= RECORD_DEPTH).then_some((kind, n))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes are not a counter or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Fewer bytes than the layout needs.
    #[error("{kind} record: {got} bytes, expected at least {need}")]
    Short {
        /// Kind of record.
        kind: EventKind,
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The counter is not packed BCD of its length (3 bytes; 2 on a DL/T 645-1997 meter).
    #[error("event counter {0}: expected 3 bytes of BCD (2 on a DL/T 645-1997 meter)")]
    Counter(String),
}

/// Decodes a counter payload (3 bytes `XXXXXX`, unmasked, low byte first).
pub fn decode_count(payload: &[u8]) -> Result<u32, EventError> {
    let hex = || {
        payload
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    };
    let [lo, mid, hi] = payload else {
        return Err(EventError::Counter(hex()));
    };
    let mut v = 0u32;
    for b in [hi, mid, lo] {
        let (h, l) = (u32::from(b >> 4), u32::from(b & 0x0F));
        if h > 9 || l > 9 {
            return Err(EventError::Counter(hex()));
        }
        v = v * 100 + h * 10 + l;
    }
    Ok(v)
}

/// Encodes a counter (the simulator's side); values above 999999 are clamped to it.
pub fn encode_count(v: u32) -> [u8; 3] {
    let v = v.min(999_999);
    let byte = |x: u32| (((x / 10) % 10) << 4 | (x % 10)) as u8;
    [byte(v), byte(v / 100), byte(v / 10_000)]
}

/// One decoded event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Kind.
    pub kind: EventKind,
    /// When it started (meter local time); `None` when the meter left the field empty or
    /// invalid (all zeros, `FF` fill).
    pub started: Option<MeterDateTime>,
    /// When it ended; `None` for kinds with no end, an event still going on, or an invalid
    /// field.
    pub ended: Option<MeterDateTime>,
    /// The operator code (4 bytes, as hex, high byte first) for kinds that carry one.
    pub operator: Option<String>,
    /// Clock set: the time before the set and after it.
    pub clock_before: Option<MeterDateTime>,
    /// Clock set: the time after.
    pub clock_after: Option<MeterDateTime>,
    /// Programming: the DIs written (up to ten; `FFFFFFFF` fill and zeros left out).
    pub programmed: Vec<DataIdentifier>,
    /// Every byte after the fields above (energies of cover-open and clear records), as sent.
    pub rest: Vec<u8>,
}

fn time_at(payload: &[u8], at: usize) -> Option<MeterDateTime> {
    let bytes: [u8; 6] = payload.get(at..at + 6)?.try_into().ok()?;
    MeterDateTime::from_wire(bytes).ok()
}

fn operator_at(payload: &[u8], at: usize) -> Option<String> {
    let bytes = payload.get(at..at + 4)?;
    Some(bytes.iter().rev().map(|b| format!("{b:02X}")).collect())
}

/// Decodes the payload (unmasked, after the DI) of a record of `kind`.
pub fn decode_record(kind: EventKind, payload: &[u8]) -> Result<EventRecord, EventError> {
    let need = kind.min_record_len();
    if payload.len() < need {
        return Err(EventError::Short {
            kind,
            got: payload.len(),
            need,
        });
    }
    let mut r = EventRecord {
        kind,
        started: None,
        ended: None,
        operator: None,
        clock_before: None,
        clock_after: None,
        programmed: Vec::new(),
        rest: Vec::new(),
    };
    let rest_from = match kind {
        EventKind::PowerDown | EventKind::CoverOpen => {
            r.started = time_at(payload, 0);
            r.ended = time_at(payload, 6);
            12
        }
        EventKind::MeterClear => {
            r.started = time_at(payload, 0);
            r.operator = operator_at(payload, 6);
            10
        }
        EventKind::ClockSet => {
            r.operator = operator_at(payload, 0);
            r.clock_before = time_at(payload, 4);
            r.clock_after = time_at(payload, 10);
            // The set happened at the meter's old time.
            r.started = r.clock_before;
            16
        }
        EventKind::Programming => {
            r.started = time_at(payload, 0);
            r.operator = operator_at(payload, 6);
            let dis = payload.get(10..).unwrap_or_default();
            let whole = dis.len() / 4 * 4;
            r.programmed = dis
                .get(..whole.min(40))
                .unwrap_or_default()
                .chunks_exact(4)
                .filter_map(|c| {
                    let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    (v != 0 && v != u32::MAX).then_some(DataIdentifier::V2007(v))
                })
                .collect();
            10 + whole.min(40)
        }
    };
    r.rest = payload.get(rest_from..).unwrap_or_default().to_vec();
    Ok(r)
}

/// Encodes a record (the simulator's side): the fields `decode_record` reads, zeros for an
/// absent time, `rest` appended. Programming records carry the DIs in `programmed`.
pub fn encode_record(r: &EventRecord) -> Vec<u8> {
    let time = |t: Option<MeterDateTime>| t.map_or([0u8; 6], MeterDateTime::to_wire);
    let operator = |o: &Option<String>| {
        let mut b = [0u8; 4];
        if let Some(o) = o {
            for (i, slot) in b.iter_mut().rev().enumerate() {
                *slot = o
                    .get(i * 2..i * 2 + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
            }
        }
        b
    };
    let mut out = Vec::new();
    match r.kind {
        EventKind::PowerDown | EventKind::CoverOpen => {
            out.extend(time(r.started));
            out.extend(time(r.ended));
        }
        EventKind::MeterClear => {
            out.extend(time(r.started));
            out.extend(operator(&r.operator));
        }
        EventKind::ClockSet => {
            out.extend(operator(&r.operator));
            out.extend(time(r.clock_before));
            out.extend(time(r.clock_after));
        }
        EventKind::Programming => {
            out.extend(time(r.started));
            out.extend(operator(&r.operator));
            for i in 0..10 {
                let v = match r.programmed.get(i) {
                    Some(DataIdentifier::V2007(v)) => *v,
                    _ => u32::MAX,
                };
                out.extend(v.to_le_bytes());
            }
        }
    }
    out.extend(&r.rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(y: u8, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> MeterDateTime {
        MeterDateTime::new(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn dis_follow_the_table() {
        assert_eq!(EventKind::CoverOpen.count_di().to_string(), "03300D00");
        assert_eq!(
            EventKind::CoverOpen.record_di(1).unwrap().to_string(),
            "03300D01"
        );
        assert_eq!(
            EventKind::PowerDown.record_di(10).unwrap().to_string(),
            "0311000A"
        );
        assert_eq!(EventKind::PowerDown.record_di(11), None);
        assert_eq!(EventKind::PowerDown.record_di(0), None);
        assert_eq!(EventKind::MeterClear.count_di().to_string(), "03300100");
        assert_eq!(EventKind::ClockSet.count_di().to_string(), "03300400");
        assert_eq!(EventKind::Programming.count_di().to_string(), "03300000");
        assert_eq!(
            EventKind::of_di(DataIdentifier::V2007(0x0330_0403)),
            Some((EventKind::ClockSet, 3))
        );
        assert_eq!(EventKind::of_di(DataIdentifier::V2007(0x0330_040B)), None);
        assert_eq!(EventKind::of_di(DataIdentifier::V2007(0x0001_0000)), None);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
        }
    }

    #[test]
    fn counter_is_bcd_low_byte_first() {
        // 001234 is sent 34 12 00 (unmasked).
        assert_eq!(decode_count(&[0x34, 0x12, 0x00]), Ok(1234));
        assert_eq!(decode_count(&[0x99, 0x99, 0x99]), Ok(999_999));
        assert!(decode_count(&[0x3A, 0, 0]).is_err());
        assert!(decode_count(&[0x12, 0]).is_err());
        assert_eq!(encode_count(1234), [0x34, 0x12, 0x00]);
        assert_eq!(encode_count(5_000_000), [0x99, 0x99, 0x99]);
    }

    #[test]
    fn power_down_record_by_hand() {
        // Start 2026-12-07 08:15:30, end 2026-12-07 09:00:05, each ss mm hh DD MM YY.
        let payload = [
            0x30, 0x15, 0x08, 0x07, 0x12, 0x26, 0x05, 0x00, 0x09, 0x07, 0x12, 0x26,
        ];
        let r = decode_record(EventKind::PowerDown, &payload).unwrap();
        assert_eq!(r.started, Some(t(26, 12, 7, 8, 15, 30)));
        assert_eq!(r.ended, Some(t(26, 12, 7, 9, 0, 5)));
        assert!(r.rest.is_empty());
        assert_eq!(encode_record(&r), payload);
    }

    #[test]
    fn an_open_event_has_no_end() {
        let mut payload = vec![0x30, 0x15, 0x08, 0x07, 0x12, 0x26];
        payload.extend([0u8; 6]);
        payload.extend([0x33u8; 48]);
        let r = decode_record(EventKind::CoverOpen, &payload).unwrap();
        assert_eq!(r.started, Some(t(26, 12, 7, 8, 15, 30)));
        assert_eq!(r.ended, None);
        assert_eq!(r.rest.len(), 48);
    }

    #[test]
    fn clock_set_record_by_hand() {
        // Operator 12345678 (sent 78 56 34 12), before 2026-12-07 10:00:00, after 10:02:30.
        let payload = [
            0x78, 0x56, 0x34, 0x12, 0x00, 0x00, 0x10, 0x07, 0x12, 0x26, 0x30, 0x02, 0x10, 0x07,
            0x12, 0x26,
        ];
        let r = decode_record(EventKind::ClockSet, &payload).unwrap();
        assert_eq!(r.operator.as_deref(), Some("12345678"));
        assert_eq!(r.clock_before, Some(t(26, 12, 7, 10, 0, 0)));
        assert_eq!(r.clock_after, Some(t(26, 12, 7, 10, 2, 30)));
        assert_eq!(r.started, r.clock_before);
        assert_eq!(encode_record(&r), payload);
    }

    #[test]
    fn programming_record_lists_the_dis() {
        let r = EventRecord {
            kind: EventKind::Programming,
            started: Some(t(26, 1, 2, 3, 4, 5)),
            ended: None,
            operator: Some("00000001".into()),
            clock_before: None,
            clock_after: None,
            programmed: vec![DataIdentifier::V2007(0x0400_0B01)],
            rest: vec![],
        };
        let bytes = encode_record(&r);
        assert_eq!(bytes.len(), 50);
        assert_eq!(&bytes[10..14], &[0x01, 0x0B, 0x00, 0x04]);
        assert_eq!(decode_record(EventKind::Programming, &bytes).unwrap(), r);
    }

    #[test]
    fn short_records_are_errors() {
        for k in EventKind::ALL {
            let e = decode_record(k, &[0; 9]).unwrap_err();
            assert!(matches!(e, EventError::Short { .. }), "{k}");
        }
    }
}
