//! Reading a DL/T 645 meter's event counters and records, and its clock, as single exchanges
//! the bus task drives between polls; and the broadcast time sync frame. A DL/T 645-1997
//! meter counts programming only, with the time of the last one
//! (`meter_protocols::dlt645::event_1997`); its clock is not read here.
//!
//! Each function here is one request and the meaning of its one reply: the bus decides when
//! (its event collector), this module what to ask and what the answer means. Like the rest of
//! the meter room it never does I/O, never sleeps and never reads a clock.

use meter_protocols::dlt645::event::{EventKind, EventRecord, decode_count, decode_record};
use meter_protocols::dlt645::event_1997::{
    count_di_in, decode_count_1997, decode_record_1997, record_di_in,
};
use meter_protocols::dlt645::{
    Address, DataIdentifier, Dlt645Frame, ErrorWord, MeterDateTime, Response, Version,
};

use super::contract::{Framing, Reply, Step};
use super::dlt645;

/// The meter's date (`YYMMDDWW`) and time (`hhmmss`) items.
pub const DATE_DI: DataIdentifier = DataIdentifier::V2007(0x0400_0101);
/// See [`DATE_DI`].
pub const TIME_DI: DataIdentifier = DataIdentifier::V2007(0x0400_0102);

/// The read of the counter of `kind` on a meter of `version`; `None` where the edition has
/// no such counter.
pub fn count_step(address: Address, version: Version, kind: EventKind) -> Option<Step> {
    Some(dlt645::read_step(address, count_di_in(kind, version)?))
}

/// The read of record `n` (1 = newest) of `kind`; `None` beyond the meter's depth.
pub fn record_step(address: Address, version: Version, kind: EventKind, n: u8) -> Option<Step> {
    Some(dlt645::read_step(address, record_di_in(kind, version, n)?))
}

/// The read of the meter's date (first) or time.
pub fn clock_step(address: Address, date: bool) -> Step {
    dlt645::read_step(address, if date { DATE_DI } else { TIME_DI })
}

/// The broadcast time sync setting every meter on the bus to `time` (their local time):
/// control code 08 to `999999999999`, data `ss mm hh DD MM YY`, no reply.
pub fn time_sync_step(time: MeterDateTime) -> Step {
    Step {
        bytes: meter_protocols::dlt645::time_sync::broadcast_time_sync(time),
        framing: Framing::None,
        modbus: None,
        what: format!("broadcast time sync {time}"),
    }
}

/// What a reply to a read of `di` says: its payload, `None` when the meter has no such item
/// or record (error reply "no requested data"), or why it is unusable.
fn payload_of(reply: &Reply, di: DataIdentifier) -> Result<Option<Vec<u8>>, String> {
    let Reply::Dlt645(frame) = reply else {
        return Err(format!("read {di}: not a DL/T 645 reply"));
    };
    payload_in(frame, di)
}

fn payload_in(frame: &Dlt645Frame, di: DataIdentifier) -> Result<Option<Vec<u8>>, String> {
    match Response::from_frame(frame, di.version())
        .map_err(|e| format!("read {di}: unusable reply: {e}"))?
    {
        Response::ReadData {
            di: got, payload, ..
        } if got == di => Ok(Some(payload)),
        Response::ReadData { di: got, .. } => Err(format!("read {di}: reply for {got}")),
        Response::Abnormal { error, .. } if error.0 & ErrorWord::NO_DATA != 0 => Ok(None),
        Response::Abnormal { error, .. } => Err(format!("read {di}: meter error {:02X}", error.0)),
        other => Err(format!("read {di}: unexpected reply {other:?}")),
    }
}

/// The counter value in a reply to [`count_step`]; `Ok(None)` when the meter does not count
/// this kind.
pub fn count_of(reply: &Reply, version: Version, kind: EventKind) -> Result<Option<u32>, String> {
    let di = count_di_in(kind, version)
        .ok_or_else(|| format!("a DL/T 645-1997 meter has no {kind} counter"))?;
    let decoded = |p: &[u8]| match version {
        Version::V2007 => decode_count(p),
        Version::V1997 => decode_count_1997(p),
    };
    match payload_of(reply, di)? {
        Some(p) => decoded(&p).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The record in a reply to [`record_step`]; `Ok(None)` when the meter has no such record.
/// `reference` is the meter-local time of the read: a DL/T 645-1997 record has no year.
pub fn record_of(
    reply: &Reply,
    version: Version,
    (kind, n): (EventKind, u8),
    reference: MeterDateTime,
) -> Result<Option<EventRecord>, String> {
    let di = record_di_in(kind, version, n)
        .ok_or_else(|| format!("{kind} record {n} is beyond the meter's history"))?;
    let decoded = |p: &[u8]| match version {
        Version::V2007 => decode_record(kind, p),
        Version::V1997 => decode_record_1997(kind, p, reference),
    };
    match payload_of(reply, di)? {
        Some(p) => decoded(&p).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The meter's date from a reply to `clock_step(_, true)`: (year 0..=99, month, day).
pub fn date_of(reply: &Reply) -> Result<(u8, u8, u8), String> {
    let p = payload_of(reply, DATE_DI)?.ok_or("the meter has no date item")?;
    // WW DD MM YY on the wire (low byte first).
    let [_ww, dd, mm, yy] = p[..] else {
        return Err(format!("date: {} bytes, expected 4", p.len()));
    };
    let bcd = |b: u8| (b >> 4 <= 9 && b & 0x0F <= 9).then(|| (b >> 4) * 10 + (b & 0x0F));
    match (bcd(yy), bcd(mm), bcd(dd)) {
        (Some(y), Some(m), Some(d)) => Ok((y, m, d)),
        _ => Err(format!("date {yy:02X}{mm:02X}{dd:02X} is not BCD")),
    }
}

/// The meter's time from a reply to `clock_step(_, false)`, joined with `date`.
pub fn time_of(reply: &Reply, date: (u8, u8, u8)) -> Result<MeterDateTime, String> {
    let p = payload_of(reply, TIME_DI)?.ok_or("the meter has no time item")?;
    let [ss, mi, hh] = p[..] else {
        return Err(format!("time: {} bytes, expected 3", p.len()));
    };
    let (y, m, d) = date;
    let bcd = |b: u8| (b >> 4 <= 9 && b & 0x0F <= 9).then(|| (b >> 4) * 10 + (b & 0x0F));
    match (bcd(hh), bcd(mi), bcd(ss)) {
        (Some(h), Some(mi), Some(s)) => {
            MeterDateTime::new(y, m, d, h, mi, s).map_err(|e| format!("meter clock: {e}"))
        }
        _ => Err(format!("time {hh:02X}{mi:02X}{ss:02X} is not BCD")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_protocols::dlt645::event::encode_count;

    fn a() -> Address {
        "202107072529".parse().unwrap()
    }

    fn reply(di: DataIdentifier, payload: Vec<u8>) -> Reply {
        let r = Response::ReadData {
            di,
            payload,
            more_follows: false,
        };
        Reply::Dlt645(r.to_frame(a(), Version::V2007))
    }

    fn now() -> MeterDateTime {
        MeterDateTime::new(26, 12, 7, 9, 0, 0).unwrap()
    }

    #[test]
    fn counts_and_records_come_from_their_replies() {
        let k = EventKind::PowerDown;
        let v7 = Version::V2007;
        assert_eq!(
            count_of(&reply(k.count_di(), encode_count(42).to_vec()), v7, k),
            Ok(Some(42))
        );
        // A reply about another item is refused, not misread.
        assert!(
            count_of(
                &reply(EventKind::CoverOpen.count_di(), vec![1, 0, 0]),
                v7,
                k
            )
            .is_err()
        );
        let no_data = Reply::Dlt645(
            Response::Abnormal {
                function: meter_protocols::dlt645::Function::ReadData,
                error: ErrorWord(ErrorWord::NO_DATA),
            }
            .to_frame(a(), Version::V2007),
        );
        assert_eq!(count_of(&no_data, v7, k), Ok(None));
        assert_eq!(record_of(&no_data, v7, (k, 1), now()), Ok(None));
        let rec = [
            0x30, 0x15, 0x08, 0x07, 0x12, 0x26, 0x05, 0x00, 0x09, 0x07, 0x12, 0x26,
        ];
        let got = record_of(
            &reply(k.record_di(2).unwrap(), rec.to_vec()),
            v7,
            (k, 2),
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.started, MeterDateTime::new(26, 12, 7, 8, 15, 30).ok());
        assert!(
            record_of(
                &reply(k.record_di(2).unwrap(), rec.to_vec()),
                v7,
                (k, 11),
                now()
            )
            .is_err()
        );
        assert!(record_step(a(), v7, k, 11).is_none());
    }

    /// A DL/T 645-1997 meter: programming count `B212` (2 bytes) and the last programming
    /// time `B210` (`MMDDhhmm`, the year from the read's time); no other counter.
    #[test]
    fn a_1997_meter_counts_programming_only() {
        let v97 = Version::V1997;
        let p = EventKind::Programming;
        let reply97 = |di: u16, payload: Vec<u8>| {
            let r = Response::ReadData {
                di: DataIdentifier::V1997(di),
                payload,
                more_follows: false,
            };
            Reply::Dlt645(r.to_frame(a(), Version::V1997))
        };
        let step = count_step(a(), v97, p).unwrap();
        assert_eq!(step.what, "read B212");
        assert!(count_step(a(), v97, EventKind::PowerDown).is_none());
        assert!(record_step(a(), v97, p, 2).is_none());
        assert_eq!(
            count_of(&reply97(0xB212, vec![0x07, 0x00]), v97, p),
            Ok(Some(7))
        );
        assert!(count_of(&reply97(0xB212, vec![0x07, 0x00]), v97, EventKind::ClockSet).is_err());
        let r = record_of(
            &reply97(0xB210, vec![0x15, 0x08, 0x07, 0x12]),
            v97,
            (p, 1),
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.started, MeterDateTime::new(26, 12, 7, 8, 15, 0).ok());
    }

    #[test]
    fn the_clock_is_date_then_time() {
        // 2024-05-06 Monday, sent 01 06 05 24; 12:34:56 sent 56 34 12.
        let date = date_of(&reply(DATE_DI, vec![0x01, 0x06, 0x05, 0x24])).unwrap();
        assert_eq!(date, (24, 5, 6));
        let t = time_of(&reply(TIME_DI, vec![0x56, 0x34, 0x12]), date).unwrap();
        assert_eq!(t, MeterDateTime::new(24, 5, 6, 12, 34, 56).unwrap());
        assert!(time_of(&reply(TIME_DI, vec![0x56, 0x34]), date).is_err());
        assert!(time_of(&reply(TIME_DI, vec![0x56, 0x34, 0x25]), date).is_err());
    }

    #[test]
    fn time_sync_frame_checked_by_hand() {
        // 2026-12-07 10:02:30: data ss mm hh DD MM YY = 30 02 10 07 12 26, each +33h:
        // 63 35 43 3A 45 59. CS = 68 + 6×99 + 68 + 08 + 06 + 63+35+43+3A+45+59 = 0x627 → 27.
        let step = time_sync_step(MeterDateTime::new(26, 12, 7, 10, 2, 30).unwrap());
        assert_eq!(
            crate::hex_input::to_hex(&step.bytes),
            "68 99 99 99 99 99 99 68 08 06 63 35 43 3A 45 59 27 16"
        );
        assert_eq!(step.framing, Framing::None);
    }
}
