//! Broadcast time sync (control code `08`): the one frame that sets every DL/T 645 meter on a
//! bus to a time, with no reply.
//!
//! The frame goes to `999999999999` with six data bytes **`ss mm hh DD MM YY`, seconds first**
//! (each +33h on the wire like all data). Some libraries put the year first (PyPI `dlt645`'s
//! `broadcast_time_sync`); meters read that as 2026-12-07 → second 26, minute 12, hour 7.
//! Meters apply it only within their own limits (once a day, not 23:55-00:05, not near a
//! settlement time, under 5 min of correction; `shared/notes/dlt645.md` §1.10): deciding when
//! to send it is the caller's job. Sans-IO: bytes out, nothing else.

use super::Address;
use super::request::{MeterDateTime, Request};

/// The frame (without `FE` preamble) that sets every meter on the bus to `time`, the meters'
/// local wall time.
pub fn broadcast_time_sync(time: MeterDateTime) -> Vec<u8> {
    Request::BroadcastTimeSync { time }
        .to_frame(Address::BROADCAST)
        .to_bytes(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::{Dlt645Frame, Version};

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn vectors_checked_by_hand() {
        // 2026-12-07 10:02:30. Data ss mm hh DD MM YY = 30 02 10 07 12 26; +33h each:
        // 63 35 43 3A 45 59. L = 06. CS = (68 + 6×99 + 68 + 08 + 06 + 63 + 35 + 43 + 3A + 45
        // + 59) mod 100h: 68+68 = D0, + 396 = 466, + 08 + 06 = 474, + 63 = 4D7, + 35 = 50C,
        // + 43 = 54F, + 3A = 589, + 45 = 5CE, + 59 = 627 → 27.
        let t = MeterDateTime::new(26, 12, 7, 10, 2, 30).unwrap();
        assert_eq!(
            hex(&broadcast_time_sync(t)),
            "68 99 99 99 99 99 99 68 08 06 63 35 43 3A 45 59 27 16"
        );
        // 2000-01-01 00:00:00: 00 00 00 01 01 00 → 33 33 33 34 34 33. CS = 474 + 33×4 + 34×2
        // = 474 + CC + 68 = 5A8 → A8.
        let t = MeterDateTime::new(0, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            hex(&broadcast_time_sync(t)),
            "68 99 99 99 99 99 99 68 08 06 33 33 33 34 34 33 A8 16"
        );
    }

    #[test]
    fn a_meter_reads_back_the_time_sent_seconds_first() {
        let t = MeterDateTime::new(26, 12, 7, 10, 2, 30).unwrap();
        let bytes = broadcast_time_sync(t);
        let frame = match Dlt645Frame::scan(&bytes) {
            crate::Scan::Frame { frame, .. } => frame,
            other => panic!("{other:?}"),
        };
        assert!(frame.address.is_broadcast());
        assert_eq!(
            Request::from_frame(&frame, Version::V2007).unwrap(),
            Request::BroadcastTimeSync { time: t }
        );
        // The first data byte is the seconds (30 + 33h), not the year.
        assert_eq!(bytes[10], 0x63);
    }
}
