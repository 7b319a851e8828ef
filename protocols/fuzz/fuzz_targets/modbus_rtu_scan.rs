//! Arbitrary bytes in arbitrary chunks through the Modbus RTU response scanner (against an
//! expectation taken from the input) and the request parser: no panic, progress on Skip, and
//! every accepted frame has a correct CRC and matches the expectation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::Scan;
use meter_protocols::modbus::rtu::{self, Expectation};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let expect = Expectation {
        unit: data[0],
        function: data[1] % 17,
        count: u16::from_le_bytes([data[2], data[3]]) % 300,
    };
    let chunk = usize::from(data[4] % 16) + 1;
    let mut buf: Vec<u8> = Vec::new();
    for piece in data[5..].chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match rtu::scan_response(&buf, &expect) {
                Scan::Incomplete { needed } => {
                    assert!(needed >= 1);
                    break;
                }
                Scan::Skip { count, .. } => {
                    assert!(count >= 1 && count <= buf.len());
                    buf.drain(..count);
                }
                Scan::Frame { frame: (unit, _), consumed } => {
                    assert!(consumed >= 4 && consumed <= buf.len());
                    assert_eq!(unit, expect.unit);
                    let crc = rtu::crc16(&buf[..consumed - 2]);
                    assert_eq!(crc.to_le_bytes(), [buf[consumed - 2], buf[consumed - 1]], "frame with a wrong CRC");
                    buf.drain(..consumed);
                }
            }
        }
    }
    // The simulator's side: requests.
    let mut req = data[5..].to_vec();
    while !req.is_empty() {
        match rtu::parse_request(&req) {
            Scan::Incomplete { .. } => break,
            Scan::Skip { count, .. } => {
                assert!(count >= 1 && count <= req.len());
                req.drain(..count);
            }
            Scan::Frame { consumed, .. } => {
                assert!(consumed >= 4 && consumed <= req.len());
                req.drain(..consumed);
            }
        }
    }
});
