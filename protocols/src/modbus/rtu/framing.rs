//! Framing by length: finding one reply ([`scan_response`]) or, for a simulated slave, one
//! request ([`parse_request`]) at the start of a receive buffer, CRC checked, and telling what
//! to skip when the bytes there are noise, a bad CRC, or a late or foreign reply.
//!
//! It never delimits a frame by a silence gap and never reads a clock: the length always comes
//! from the function code and the byte count, or from the request being answered.

use super::crc16;
use super::function::*;
use super::pdu::{ExceptionCode, Expectation, ReadFunction, Request, Response};
use crate::scan::{Scan, SkipReason};

pub(super) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    match (buf.get(at), buf.get(at + 1)) {
        (Some(&hi), Some(&lo)) => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

/// Checks the CRC of the `len`-byte ADU at the start of `buf` (which holds at least `len`
/// bytes): `Err(reason)` on mismatch.
fn check_crc(buf: &[u8], len: usize) -> Result<(), SkipReason> {
    let body = buf.get(..len.saturating_sub(2)).unwrap_or_default();
    let expected = crc16(body);
    let found = match (buf.get(len.wrapping_sub(2)), buf.get(len.wrapping_sub(1))) {
        (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
        _ => return Err(SkipReason::Malformed("frame shorter than its CRC")),
    };
    if expected == found {
        Ok(())
    } else {
        Err(SkipReason::Checksum { expected, found })
    }
}

fn unpack_bits(bytes: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|i| bytes.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1))
        .collect()
}

pub(super) fn registers(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| match c {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        })
        .collect()
}

fn coil_value(raw: u16) -> Option<bool> {
    match raw {
        0xFF00 => Some(true),
        0x0000 => Some(false),
        _ => None,
    }
}

fn incomplete(len: usize, have: usize) -> Scan<(u8, Response)> {
    Scan::Incomplete {
        needed: len.saturating_sub(have).max(1),
    }
}

/// Finds the reply described by `expect` at the start of `buf`.
///
/// - The frame length comes from the expectation (function and count), never from a gap.
/// - A bad CRC skips one byte ([`SkipReason::Checksum`]) so that the scan resynchronises.
/// - A CRC-valid frame from another unit, or with another function that is not this
///   function's exception (`| 0x80`), is skipped whole ([`SkipReason::Malformed`]): it is a
///   late reply or someone else's.
/// - A byte count that disagrees with the requested count skips one byte.
/// - [`Scan::Incomplete`] carries the exact number of missing bytes once the header is in.
pub fn scan_response(buf: &[u8], expect: &Expectation) -> Scan<(u8, Response)> {
    let (Some(&unit), Some(&function)) = (buf.first(), buf.get(1)) else {
        return incomplete(2, buf.len());
    };
    if unit == expect.unit && function == expect.function {
        scan_normal(buf, expect)
    } else if unit == expect.unit && function == expect.function | EXCEPTION_FLAG {
        scan_exception(buf, expect)
    } else {
        scan_foreign(buf, expect)
    }
}

fn scan_exception(buf: &[u8], expect: &Expectation) -> Scan<(u8, Response)> {
    const LEN: usize = 5;
    if buf.len() < LEN {
        return incomplete(LEN, buf.len());
    }
    if let Err(reason) = check_crc(buf, LEN) {
        return Scan::Skip { count: 1, reason };
    }
    let code = ExceptionCode::from_u8(buf.get(2).copied().unwrap_or(0));
    Scan::Frame {
        frame: (
            expect.unit,
            Response::Exception {
                function: expect.function,
                code,
            },
        ),
        consumed: LEN,
    }
}

fn scan_normal(buf: &[u8], expect: &Expectation) -> Scan<(u8, Response)> {
    let Some(len) = expect.response_len() else {
        return Scan::Skip {
            count: 1,
            reason: SkipReason::Malformed("the request's function has no known reply layout"),
        };
    };
    let is_read = matches!(
        expect.function,
        READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS
    );
    if is_read
        && let Some(&bc) = buf.get(2)
        && usize::from(bc) != expect.byte_count()
    {
        return Scan::Skip {
            count: 1,
            reason: SkipReason::Malformed("byte count disagrees with the requested count"),
        };
    }
    if buf.len() < len {
        return incomplete(len, buf.len());
    }
    if let Err(reason) = check_crc(buf, len) {
        return Scan::Skip { count: 1, reason };
    }
    let data = buf.get(3..len - 2).unwrap_or_default();
    let count = usize::from(expect.count);
    let address = be16(buf, 2).unwrap_or(0);
    let value = be16(buf, 4).unwrap_or(0);
    let response = match expect.function {
        READ_COILS => Response::Coils(unpack_bits(data, count)),
        READ_DISCRETE_INPUTS => Response::DiscreteInputs(unpack_bits(data, count)),
        READ_HOLDING_REGISTERS => Response::HoldingRegisters(registers(data)),
        READ_INPUT_REGISTERS => Response::InputRegisters(registers(data)),
        WRITE_SINGLE_COIL => match coil_value(value) {
            Some(value) => Response::WriteSingleCoil { address, value },
            None => {
                return Scan::Skip {
                    count: len,
                    reason: SkipReason::Malformed(
                        "write-single-coil echo value is not FF00 or 0000",
                    ),
                };
            }
        },
        WRITE_SINGLE_REGISTER => Response::WriteSingleRegister { address, value },
        _ if value != expect.count => {
            return Scan::Skip {
                count: len,
                reason: SkipReason::Malformed(
                    "write-multiple reply count disagrees with the request",
                ),
            };
        }
        WRITE_MULTIPLE_COILS => Response::WriteMultipleCoils {
            address,
            count: value,
        },
        _ => Response::WriteMultipleRegisters {
            address,
            count: value,
        },
    };
    Scan::Frame {
        frame: (expect.unit, response),
        consumed: len,
    }
}

/// The length of a response-shaped ADU whatever its unit: `Ok(None)` when the byte count has
/// not arrived yet, `Err(())` for a function code no reply can carry.
fn any_response_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(&function) = buf.get(1) else {
        return Ok(None);
    };
    if function & EXCEPTION_FLAG != 0 {
        return Ok(Some(5));
    }
    match function {
        READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
            Ok(buf.get(2).map(|&bc| 5 + usize::from(bc)))
        }
        WRITE_SINGLE_COIL
        | WRITE_SINGLE_REGISTER
        | WRITE_MULTIPLE_COILS
        | WRITE_MULTIPLE_REGISTERS => Ok(Some(8)),
        _ => Err(()),
    }
}

/// True when a complete, CRC-valid reply matching `expect` starts `buf`.
fn ours_complete(buf: &[u8], expect: &Expectation) -> bool {
    match (buf.first(), buf.get(1)) {
        (Some(&u), Some(&f))
            if u == expect.unit
                && (f == expect.function || f == expect.function | EXCEPTION_FLAG) =>
        {
            matches!(scan_response(buf, expect), Scan::Frame { .. })
        }
        _ => false,
    }
}

fn scan_foreign(buf: &[u8], expect: &Expectation) -> Scan<(u8, Response)> {
    let len = match any_response_len(buf) {
        Err(()) => {
            return Scan::Skip {
                count: 1,
                reason: SkipReason::Noise,
            };
        }
        Ok(len) => len,
    };
    match len {
        Some(len) if buf.len() >= len => match check_crc(buf, len) {
            Ok(()) => Scan::Skip {
                count: len,
                reason: SkipReason::Foreign(if buf.first() != Some(&expect.unit) {
                    "reply from another unit (late or foreign reply)"
                } else {
                    "reply to another function (late reply)"
                }),
            },
            Err(reason) => Scan::Skip { count: 1, reason },
        },
        _ => {
            // Waiting for a foreign frame to complete must not hide our reply behind it: a
            // noise byte read as a header can promise up to 255 bytes that never come.
            if let Some(at) =
                (1..buf.len()).find(|&i| ours_complete(buf.get(i..).unwrap_or_default(), expect))
            {
                return Scan::Skip {
                    count: at,
                    reason: SkipReason::Noise,
                };
            }
            incomplete(len.unwrap_or(3), buf.len())
        }
    }
}

/// Finds one request at the start of `buf` (the slave side, for the simulator).
///
/// The length comes from the function code (8 bytes for 01–06, `9 + byte count` for 15/16).
/// Counts are not range-checked here so that a slave can answer an out-of-range count with
/// exception 03 ([`Request::validate`]); a CRC-valid request whose byte count disagrees with
/// its quantity, or an FC05 value other than FF00/0000, is skipped whole as malformed.
pub fn parse_request(buf: &[u8]) -> Scan<(u8, Request)> {
    let (Some(&unit), Some(&function)) = (buf.first(), buf.get(1)) else {
        return Scan::Incomplete {
            needed: 2 - buf.len().min(1),
        };
    };
    let len = match function {
        READ_COILS..=WRITE_SINGLE_REGISTER => 8,
        WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => match buf.get(6) {
            Some(&bc) => 9 + usize::from(bc),
            None => {
                return Scan::Incomplete {
                    needed: 7 - buf.len(),
                };
            }
        },
        _ => {
            return Scan::Skip {
                count: 1,
                reason: SkipReason::Noise,
            };
        }
    };
    if buf.len() < len {
        return Scan::Incomplete {
            needed: len - buf.len(),
        };
    }
    if let Err(reason) = check_crc(buf, len) {
        return Scan::Skip { count: 1, reason };
    }
    let address = be16(buf, 2).unwrap_or(0);
    let value = be16(buf, 4).unwrap_or(0);
    let data = buf.get(7..len - 2).unwrap_or_default();
    let malformed = |why| Scan::Skip {
        count: len,
        reason: SkipReason::Malformed(why),
    };
    let request = match function {
        READ_COILS..=READ_INPUT_REGISTERS => {
            let f = ReadFunction::from_code(function).unwrap_or(ReadFunction::HoldingRegisters);
            Request::read(f, address, value)
        }
        WRITE_SINGLE_COIL => match coil_value(value) {
            Some(v) => Request::WriteSingleCoil { address, value: v },
            None => return malformed("write-single-coil value is not FF00 or 0000"),
        },
        WRITE_SINGLE_REGISTER => Request::WriteSingleRegister { address, value },
        WRITE_MULTIPLE_COILS => {
            if data.len() != usize::from(value).div_ceil(8) {
                return malformed("write-multiple-coils byte count disagrees with the quantity");
            }
            Request::WriteMultipleCoils {
                address,
                values: unpack_bits(data, usize::from(value)),
            }
        }
        _ => {
            if data.len() != usize::from(value) * 2 {
                return malformed(
                    "write-multiple-registers byte count disagrees with the quantity",
                );
            }
            Request::WriteMultipleRegisters {
                address,
                values: registers(data),
            }
        }
    };
    Scan::Frame {
        frame: (unit, request),
        consumed: len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::rtu::tests::{enc_resp, expect, with_crc};

    #[test]
    fn read_holding_response_vector() {
        // The textbook reply "01 03 02 00 01 79 84": one register holding 1.
        let bytes = [0x01, 0x03, 0x02, 0x00, 0x01, 0x79, 0x84];
        assert_eq!(with_crc(&bytes[..5]), bytes);
        let scan = scan_response(&bytes, &expect(1, 3, 1));
        assert_eq!(
            scan,
            Scan::Frame {
                frame: (1, Response::HoldingRegisters(vec![1])),
                consumed: 7
            }
        );
        assert_eq!(enc_resp(1, &Response::HoldingRegisters(vec![1])), bytes);
    }

    #[test]
    fn sdm630_float_response() {
        // L1 voltage 229.8 V as float32 ABCD = 0x4365CCCD, L2 230.1 = 0x4366199A.
        let bytes = with_crc(&[
            0x01, 0x04, 0x08, 0x43, 0x65, 0xCC, 0xCD, 0x43, 0x66, 0x19, 0x9A,
        ]);
        let Scan::Frame {
            frame: (1, resp),
            consumed: 13,
        } = scan_response(&bytes, &expect(1, 4, 4))
        else {
            panic!("no frame");
        };
        let regs = resp.registers().unwrap();
        assert_eq!(regs, [0x4365, 0xCCCD, 0x4366, 0x199A]);
        use crate::modbus::values::*;
        let v = read_value(regs, ValueType::F32, RegisterOrder::ABCD, Scale::None, None).unwrap();
        assert_eq!(v.to_string(), "229.8");
        let v = read_value(
            &regs[2..],
            ValueType::F32,
            RegisterOrder::ABCD,
            Scale::None,
            None,
        )
        .unwrap();
        assert_eq!(v.to_string(), "230.1");
    }

    #[test]
    fn exception_vector() {
        let bytes = [0x01, 0x83, 0x02, 0xC0, 0xF1];
        assert_eq!(with_crc(&bytes[..3]), bytes);
        let want = Response::Exception {
            function: 3,
            code: ExceptionCode::IllegalDataAddress,
        };
        assert_eq!(
            scan_response(&bytes, &expect(1, 3, 10)),
            Scan::Frame {
                frame: (1, want.clone()),
                consumed: 5
            }
        );
        assert_eq!(enc_resp(1, &want), bytes);
        assert_eq!(
            ExceptionCode::from_u8(0x0B),
            ExceptionCode::GatewayTargetFailedToRespond
        );
        assert_eq!(ExceptionCode::from_u8(0x07), ExceptionCode::Other(7));
        assert_eq!(
            ExceptionCode::IllegalDataAddress.to_string(),
            "02 illegal data address"
        );
    }

    #[test]
    fn coils_response_unpacks_lsb_first() {
        let bytes = with_crc(&[0x01, 0x01, 0x02, 0xCD, 0x01]);
        let Scan::Frame { frame, .. } = scan_response(&bytes, &expect(1, 1, 10)) else {
            panic!()
        };
        assert_eq!(
            frame.1.bits().unwrap(),
            [
                true, false, true, true, false, false, true, true, true, false
            ]
        );
    }

    #[test]
    fn incomplete_reports_exact_need() {
        let full = enc_resp(1, &Response::HoldingRegisters(vec![1, 2, 3]));
        let e = expect(1, 3, 3);
        assert_eq!(scan_response(&[], &e), Scan::Incomplete { needed: 2 });
        for have in 2..full.len() {
            assert_eq!(
                scan_response(&full[..have], &e),
                Scan::Incomplete {
                    needed: full.len() - have
                },
                "have {have}"
            );
        }
        let ex = [0x01, 0x83, 0x02];
        assert_eq!(scan_response(&ex, &e), Scan::Incomplete { needed: 2 });
    }

    #[test]
    fn bad_crc_skips_one_byte_with_both_crcs() {
        let mut bytes = enc_resp(1, &Response::HoldingRegisters(vec![0x1234]));
        let n = bytes.len();
        bytes[n - 1] ^= 0xFF;
        let expected = crc16(&bytes[..n - 2]);
        let found = u16::from_le_bytes([bytes[n - 2], bytes[n - 1]]);
        assert_eq!(
            scan_response(&bytes, &expect(1, 3, 1)),
            Scan::Skip {
                count: 1,
                reason: SkipReason::Checksum { expected, found }
            }
        );
    }

    #[test]
    fn byte_count_disagreeing_with_request_is_rejected() {
        let bytes = enc_resp(1, &Response::HoldingRegisters(vec![1, 2]));
        assert_eq!(
            scan_response(&bytes, &expect(1, 3, 3)),
            Scan::Skip {
                count: 1,
                reason: SkipReason::Malformed("byte count disagrees with the requested count")
            }
        );
    }

    #[test]
    fn foreign_and_late_replies_are_skipped_whole() {
        let other_unit = enc_resp(2, &Response::HoldingRegisters(vec![1, 2]));
        let late = enc_resp(1, &Response::InputRegisters(vec![7; 5]));
        let ours = enc_resp(1, &Response::HoldingRegisters(vec![9, 9]));
        let e = expect(1, 3, 2);
        let mut buf = [other_unit.clone(), late.clone(), ours.clone()].concat();
        let Scan::Skip {
            count,
            reason: SkipReason::Foreign(why),
        } = scan_response(&buf, &e)
        else {
            panic!()
        };
        assert_eq!(count, other_unit.len());
        assert!(why.contains("another unit"), "{why}");
        buf.drain(..count);
        let Scan::Skip {
            count,
            reason: SkipReason::Foreign(why),
        } = scan_response(&buf, &e)
        else {
            panic!()
        };
        assert_eq!(count, late.len());
        assert!(why.contains("another function"), "{why}");
        buf.drain(..count);
        assert_eq!(
            scan_response(&buf, &e),
            Scan::Frame {
                frame: (1, Response::HoldingRegisters(vec![9, 9])),
                consumed: ours.len()
            }
        );
    }

    #[test]
    fn noise_promising_a_long_frame_does_not_hide_the_reply() {
        // 0x07 read as unit, 03 as function, FA as a byte count of 250 bytes that never come.
        let ours = enc_resp(1, &Response::HoldingRegisters(vec![5]));
        let buf = [&[0x07, 0x03, 0xFA][..], &ours].concat();
        assert_eq!(
            scan_response(&buf, &expect(1, 3, 1)),
            Scan::Skip {
                count: 3,
                reason: SkipReason::Noise
            }
        );
    }
}
