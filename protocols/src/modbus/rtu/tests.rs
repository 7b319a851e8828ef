//! The tests of `rtu` as a whole: helpers the tests of every file share, the CRC check value,
//! and the property tests that run requests and replies through encoding, framing and
//! inspection together.

use proptest::prelude::*;

use super::function::EXCEPTION_FLAG;
use super::*;
use crate::scan::Scan;

/// Hand-checks a CRC with the `crc` crate directly (not through this module's helper).
pub(super) fn with_crc(body: &[u8]) -> Vec<u8> {
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(body);
    let mut v = body.to_vec();
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

pub(super) fn enc_req(unit: u8, r: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(unit, r, &mut out).unwrap();
    out
}

pub(super) fn enc_resp(unit: u8, r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(unit, r, &mut out).unwrap();
    out
}

pub(super) fn expect(unit: u8, function: u8, count: u16) -> Expectation {
    Expectation {
        unit,
        function,
        count,
    }
}

#[test]
fn crc_check_value() {
    assert_eq!(crc16(b"123456789"), 0x4B37);
}

// --- properties --------------------------------------------------------------------------

fn arb_request() -> impl Strategy<Value = Request> {
    let read = (1u8..=4, any::<u16>(), any::<u16>()).prop_map(|(f, a, c)| {
        let f = ReadFunction::from_code(f).unwrap();
        let max = u32::from(f.max_count()).min(0x1_0000 - u32::from(a));
        let count = 1 + (u32::from(c) % max) as u16;
        Request::read(f, a, count)
    });
    prop_oneof![
        read,
        (any::<u16>(), any::<bool>())
            .prop_map(|(address, value)| Request::WriteSingleCoil { address, value }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(address, value)| Request::WriteSingleRegister { address, value }),
        (
            0u16..=0xF000,
            prop::collection::vec(any::<bool>(), 1..=1968)
        )
            .prop_map(|(address, values)| Request::WriteMultipleCoils { address, values }),
        (0u16..=0xFF00, prop::collection::vec(any::<u16>(), 1..=123))
            .prop_map(|(address, values)| Request::WriteMultipleRegisters { address, values }),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        prop::collection::vec(any::<bool>(), 1..=2000).prop_map(Response::Coils),
        prop::collection::vec(any::<bool>(), 1..=2000).prop_map(Response::DiscreteInputs),
        prop::collection::vec(any::<u16>(), 1..=125).prop_map(Response::HoldingRegisters),
        prop::collection::vec(any::<u16>(), 1..=125).prop_map(Response::InputRegisters),
        (any::<u16>(), any::<bool>())
            .prop_map(|(address, value)| Response::WriteSingleCoil { address, value }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(address, value)| Response::WriteSingleRegister { address, value }),
        (0u16..=0xF000, 1u16..=1968)
            .prop_map(|(address, count)| Response::WriteMultipleCoils { address, count }),
        (0u16..=0xFF00, 1u16..=123)
            .prop_map(|(address, count)| Response::WriteMultipleRegisters { address, count }),
        (0u8..0x80, any::<u8>()).prop_map(|(function, c)| Response::Exception {
            function,
            code: ExceptionCode::from_u8(c)
        }),
    ]
}

fn expectation_for(unit: u8, r: &Response) -> Expectation {
    let count = match r {
        Response::Coils(b) | Response::DiscreteInputs(b) => b.len() as u16,
        Response::HoldingRegisters(v) | Response::InputRegisters(v) => v.len() as u16,
        Response::WriteMultipleCoils { count, .. }
        | Response::WriteMultipleRegisters { count, .. } => *count,
        _ => 1,
    };
    let function = match r {
        Response::Exception { function, .. } => *function,
        other => other.function(),
    };
    expect(unit, function, count)
}

/// A frame found in a stream: (stream offset, frame, length).
type Found = (usize, (u8, Response), usize);

/// Feeds `bytes` in chunks the way a bus task does; returns the frames and the skips of
/// more than one byte (stream offset, length).
fn feed(bytes: &[u8], cuts: &[usize], e: &Expectation) -> (Vec<Found>, Vec<(usize, usize)>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0; // stream offset of buf[0]
    let mut frames = Vec::new();
    let mut whole_skips = Vec::new();
    let mut fed = 0;
    let mut chunk_ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    chunk_ends.push(bytes.len());
    chunk_ends.sort();
    for end in chunk_ends {
        buf.extend_from_slice(&bytes[fed..end.max(fed)]);
        fed = end.max(fed);
        loop {
            match scan_response(&buf, e) {
                Scan::Incomplete { needed } => {
                    assert!(needed >= 1);
                    break;
                }
                Scan::Frame { frame, consumed } => {
                    assert!(consumed >= 5 && consumed <= buf.len());
                    let body = &buf[..consumed - 2];
                    let crc = u16::from_le_bytes([buf[consumed - 2], buf[consumed - 1]]);
                    assert_eq!(crc16(body), crc, "frame with a bad CRC");
                    frames.push((pos, frame, consumed));
                    buf.drain(..consumed);
                    pos += consumed;
                }
                Scan::Skip { count, reason } => {
                    assert!(count >= 1 && count <= buf.len(), "{count} {reason}");
                    if count > 1 {
                        whole_skips.push((pos, count));
                    }
                    buf.drain(..count);
                    pos += count;
                }
            }
        }
    }
    (frames, whole_skips)
}

proptest! {
    #[test]
    fn request_round_trip(unit in any::<u8>(), r in arb_request()) {
        let bytes = enc_req(unit, &r);
        prop_assert!(bytes.len() <= MAX_ADU_LEN);
        prop_assert_eq!(parse_request(&bytes), Scan::Frame { frame: (unit, r), consumed: bytes.len() });
        prop_assert!(inspect(&bytes).unwrap().crc.is_ok());
    }

    #[test]
    fn response_round_trip(unit in any::<u8>(), r in arb_response()) {
        let bytes = enc_resp(unit, &r);
        prop_assert!(bytes.len() <= MAX_ADU_LEN);
        let e = expectation_for(unit, &r);
        if r.function() & EXCEPTION_FLAG == 0 {
            prop_assert_eq!(e.response_len(), Some(bytes.len()));
        }
        prop_assert_eq!(scan_response(&bytes, &e), Scan::Frame { frame: (unit, r), consumed: bytes.len() });
        let i = inspect(&bytes).unwrap();
        prop_assert!(i.crc.is_ok());
        prop_assert_eq!(i.unit, unit);
    }

    #[test]
    fn arbitrary_chunks_never_panic_nor_pass_a_bad_crc(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        unit in 0u8..4, function in prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 15, 16]),
        count in 0u16..130,
    ) {
        let e = expect(unit, function, count);
        feed(&bytes, &cuts, &e);
    }

    #[test]
    fn reply_behind_noise_is_found(
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        unit in 1u8..=247, r in arb_response(),
    ) {
        let e = expectation_for(unit, &r);
        let reply = enc_resp(unit, &r);
        let stream = [noise.clone(), reply.clone()].concat();
        let (frames, whole_skips) = feed(&stream, &cuts, &e);
        let start = noise.len();
        let found = frames.iter().any(|(at, f, n)| *at == start && *n == reply.len() && f == &(unit, r.clone()));
        // Honest losses only: a CRC-valid frame (1 in 65536 by chance) swallowed its start.
        let swallowed = whole_skips.iter().any(|&(at, n)| at < start && at + n > start)
            || frames.iter().any(|&(at, _, n)| at < start && at + n > start);
        prop_assert!(found || swallowed, "reply not found: {:?}", frames);
    }

    #[test]
    fn inspect_and_parse_request_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = inspect(&bytes);
        match parse_request(&bytes) {
            Scan::Incomplete { needed } => prop_assert!(needed >= 1),
            Scan::Skip { count, .. } => prop_assert!(count >= 1 && count <= bytes.len()),
            Scan::Frame { consumed, .. } => {
                prop_assert!(consumed <= bytes.len());
                prop_assert_eq!(crc16(&bytes[..consumed]), 0);
            }
        }
    }
}
