//! Encoding: a [`Request`] or a [`Response`] (for the simulator) to its ADU, `unit | PDU | CRC
//! lo hi`, appended to the caller's buffer.
//!
//! It never decodes, and never appends anything when a count or address is out of range.

use super::function::*;
use super::pdu::{Request, RequestError, Response, check_range, saturating_u16};
use super::{CRC, MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_COILS, MAX_WRITE_REGISTERS};

/// Appends bytes to an output buffer while keeping the CRC.
struct AduWriter<'a> {
    out: &'a mut Vec<u8>,
    digest: crc::Digest<'static, u16>,
}

impl<'a> AduWriter<'a> {
    fn new(out: &'a mut Vec<u8>, unit: u8, function: u8) -> Self {
        let mut w = Self {
            out,
            digest: CRC.digest(),
        };
        w.bytes(&[unit, function]);
        w
    }

    fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
        self.digest.update(b);
    }

    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    fn packed_bits(&mut self, bits: &[bool]) {
        for chunk in bits.chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
            self.u8(byte);
        }
    }

    fn finish(self) {
        let crc = self.digest.finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// A byte count field; validation keeps every count this module encodes within one byte.
fn byte_count_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Appends the ADU for `request` to `unit` (address, PDU, CRC) to `out`.
///
/// Validates counts first ([`Request::validate`]); on error nothing is appended.
pub fn encode_request(unit: u8, request: &Request, out: &mut Vec<u8>) -> Result<(), RequestError> {
    request.validate()?;
    let mut w = AduWriter::new(out, unit, request.function());
    match request {
        Request::ReadCoils { address, count }
        | Request::ReadDiscreteInputs { address, count }
        | Request::ReadHoldingRegisters { address, count }
        | Request::ReadInputRegisters { address, count } => {
            w.u16(*address);
            w.u16(*count);
        }
        Request::WriteSingleCoil { address, value } => {
            w.u16(*address);
            w.u16(if *value { 0xFF00 } else { 0x0000 });
        }
        Request::WriteSingleRegister { address, value } => {
            w.u16(*address);
            w.u16(*value);
        }
        Request::WriteMultipleCoils { address, values } => {
            w.u16(*address);
            w.u16(saturating_u16(values.len()));
            w.u8(byte_count_u8(values.len().div_ceil(8)));
            w.packed_bits(values);
        }
        Request::WriteMultipleRegisters { address, values } => {
            w.u16(*address);
            w.u16(saturating_u16(values.len()));
            w.u8(byte_count_u8(values.len() * 2));
            for v in values {
                w.u16(*v);
            }
        }
    }
    w.finish();
    Ok(())
}

/// Appends the ADU for `response` from `unit` to `out` (for the simulator).
///
/// Counts are checked against the standard's limits; on error nothing is appended.
pub fn encode_response(
    unit: u8,
    response: &Response,
    out: &mut Vec<u8>,
) -> Result<(), RequestError> {
    let f = response.function();
    match response {
        Response::Coils(bits) | Response::DiscreteInputs(bits) => {
            check_range(f, 0, bits.len(), MAX_READ_BITS)?;
        }
        Response::HoldingRegisters(regs) | Response::InputRegisters(regs) => {
            check_range(f, 0, regs.len(), MAX_READ_REGISTERS)?;
        }
        Response::WriteMultipleCoils { address, count } => {
            check_range(f, *address, usize::from(*count), MAX_WRITE_COILS)?;
        }
        Response::WriteMultipleRegisters { address, count } => {
            check_range(f, *address, usize::from(*count), MAX_WRITE_REGISTERS)?;
        }
        Response::Exception { function, .. } if *function & EXCEPTION_FLAG != 0 => {
            return Err(RequestError::ExceptionFunction {
                function: *function,
            });
        }
        _ => {}
    }
    let mut w = AduWriter::new(out, unit, f);
    match response {
        Response::Coils(bits) | Response::DiscreteInputs(bits) => {
            w.u8(byte_count_u8(bits.len().div_ceil(8)));
            w.packed_bits(bits);
        }
        Response::HoldingRegisters(regs) | Response::InputRegisters(regs) => {
            w.u8(byte_count_u8(regs.len() * 2));
            for r in regs {
                w.u16(*r);
            }
        }
        Response::WriteSingleCoil { address, value } => {
            w.u16(*address);
            w.u16(if *value { 0xFF00 } else { 0x0000 });
        }
        Response::WriteSingleRegister { address, value } => {
            w.u16(*address);
            w.u16(*value);
        }
        Response::WriteMultipleCoils { address, count }
        | Response::WriteMultipleRegisters { address, count } => {
            w.u16(*address);
            w.u16(*count);
        }
        Response::Exception { code, .. } => w.u8(code.to_u8()),
    }
    w.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::rtu::tests::{enc_req, expect, with_crc};
    use crate::modbus::rtu::{parse_request, scan_response};
    use crate::scan::{Scan, SkipReason};

    #[test]
    fn read_holding_request_vector() {
        let r = Request::ReadHoldingRegisters {
            address: 0,
            count: 10,
        };
        let bytes = enc_req(1, &r);
        assert_eq!(bytes, [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]);
        assert_eq!(
            parse_request(&bytes),
            Scan::Frame {
                frame: (1, r.clone()),
                consumed: 8
            }
        );
        assert_eq!(r.expectation(1), expect(1, 3, 10));
        assert_eq!(r.expectation(1).response_len(), Some(25));
    }

    #[test]
    fn sdm630_fc04_request_vector() {
        let r = Request::ReadInputRegisters {
            address: 0,
            count: 2,
        };
        assert_eq!(
            enc_req(1, &r),
            [0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
    }

    #[test]
    fn write_echo_vectors() {
        // FC06 "01 06 00 01 00 03 98 0B": request and echo are the same bytes.
        let w = [0x01, 0x06, 0x00, 0x01, 0x00, 0x03, 0x98, 0x0B];
        assert_eq!(with_crc(&w[..6]), w);
        let req = Request::WriteSingleRegister {
            address: 1,
            value: 3,
        };
        assert_eq!(enc_req(1, &req), w);
        assert_eq!(
            scan_response(&w, &req.expectation(1)),
            Scan::Frame {
                frame: (
                    1,
                    Response::WriteSingleRegister {
                        address: 1,
                        value: 3
                    }
                ),
                consumed: 8
            }
        );
        // FC16 reply "01 10 00 01 00 02 10 08".
        let m = [0x01, 0x10, 0x00, 0x01, 0x00, 0x02, 0x10, 0x08];
        assert_eq!(with_crc(&m[..6]), m);
        let req = Request::WriteMultipleRegisters {
            address: 1,
            values: vec![0x000A, 0x0102],
        };
        assert_eq!(
            enc_req(1, &req),
            with_crc(&[
                0x01, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02
            ])
        );
        assert_eq!(
            scan_response(&m, &req.expectation(1)),
            Scan::Frame {
                frame: (
                    1,
                    Response::WriteMultipleRegisters {
                        address: 1,
                        count: 2
                    }
                ),
                consumed: 8
            }
        );
        // The same reply against a 3-register write is rejected whole.
        assert!(matches!(
            scan_response(&m, &expect(1, 0x10, 3)),
            Scan::Skip {
                count: 8,
                reason: SkipReason::Malformed(_)
            }
        ));
        // FC05 on: FF00; FC15 coils 10 from 0x13 (the spec's example: CD 01).
        let c = enc_req(
            1,
            &Request::WriteSingleCoil {
                address: 0xAC,
                value: true,
            },
        );
        assert_eq!(c, with_crc(&[0x01, 0x05, 0x00, 0xAC, 0xFF, 0x00]));
        let bits = [
            true, false, true, true, false, false, true, true, true, false,
        ];
        let c = enc_req(
            1,
            &Request::WriteMultipleCoils {
                address: 0x13,
                values: bits.to_vec(),
            },
        );
        assert_eq!(
            c,
            with_crc(&[0x01, 0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01])
        );
    }
}
