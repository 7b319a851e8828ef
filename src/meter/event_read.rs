//! Reading a DL/T 645-2007 meter's event counters and records, and its clock, as single
//! exchanges the bus task drives between polls; and the broadcast time sync frame.
//!
//! Each function here is one request and the meaning of its one reply: the bus decides when
//! (its event collector), this module what to ask and what the answer means. Like the rest of
//! the meter room it never does I/O, never sleeps and never reads a clock.

use meter_protocols::dlt645::event::{EventKind, EventRecord, decode_count, decode_record};
use meter_protocols::dlt645::{
    Address, DataIdentifier, Dlt645Frame, ErrorWord, MeterDateTime, Response, Version,
};

use super::contract::{Framing, Reply, Step};
use super::dlt645;

/// The meter's date (`YYMMDDWW`) and time (`hhmmss`) items.
pub const DATE_DI: DataIdentifier = DataIdentifier::V2007(0x0400_0101);
/// See [`DATE_DI`].
pub const TIME_DI: DataIdentifier = DataIdentifier::V2007(0x0400_0102);

/// The read of the counter of `kind`.
pub fn count_step(address: Address, kind: EventKind) -> Step {
    dlt645::read_step(address, kind.count_di())
}

/// The read of record `n` (1 = newest) of `kind`; `None` beyond the meter's depth.
pub fn record_step(address: Address, kind: EventKind, n: u8) -> Option<Step> {
    Some(dlt645::read_step(address, kind.record_di(n)?))
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
    match Response::from_frame(frame, Version::V2007)
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
pub fn count_of(reply: &Reply, kind: EventKind) -> Result<Option<u32>, String> {
    match payload_of(reply, kind.count_di())? {
        Some(p) => decode_count(&p).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The record in a reply to [`record_step`]; `Ok(None)` when the meter has no such record.
pub fn record_of(reply: &Reply, kind: EventKind, n: u8) -> Result<Option<EventRecord>, String> {
    let di = kind
        .record_di(n)
        .ok_or_else(|| format!("{kind} record {n} is beyond the meter's history"))?;
    match payload_of(reply, di)? {
        Some(p) => decode_record(kind, &p).map(Some).map_err(|e| e.to_string()),
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

    #[test]
    fn counts_and_records_come_from_their_replies() {
        let k = EventKind::PowerDown;
        assert_eq!(
            count_of(&reply(k.count_di(), encode_count(42).to_vec()), k),
            Ok(Some(42))
        );
        // A reply about another item is refused, not misread.
        assert!(count_of(&reply(EventKind::CoverOpen.count_di(), vec![1, 0, 0]), k).is_err());
        let no_data = Reply::Dlt645(
            Response::Abnormal {
                function: meter_protocols::dlt645::Function::ReadData,
                error: ErrorWord(ErrorWord::NO_DATA),
            }
            .to_frame(a(), Version::V2007),
        );
        assert_eq!(count_of(&no_data, k), Ok(None));
        assert_eq!(record_of(&no_data, k, 1), Ok(None));
        let rec = [
            0x30, 0x15, 0x08, 0x07, 0x12, 0x26, 0x05, 0x00, 0x09, 0x07, 0x12, 0x26,
        ];
        let got = record_of(&reply(k.record_di(2).unwrap(), rec.to_vec()), k, 2)
            .unwrap()
            .unwrap();
        assert_eq!(got.started, MeterDateTime::new(26, 12, 7, 8, 15, 30).ok());
        assert!(record_of(&reply(k.record_di(2).unwrap(), rec.to_vec()), k, 11).is_err());
        assert!(record_step(a(), k, 11).is_none());
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
