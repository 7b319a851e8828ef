//! The technician's decoder: [`inspect`] explains one whole ADU without knowing the request it
//! belongs to (unit, function, a direction guess from the length rules, the fields, and the CRC
//! even when wrong), and [`hex`] formats bytes for it and for logs.
//!
//! It never scans a stream or resynchronises (that is `framing`'s): it takes exactly the bytes
//! given and either explains them all or says which lengths would have fitted.

use std::fmt;

use super::crc16;
use super::framing::{be16, registers};
use super::function::*;
use super::pdu::{ExceptionCode, function_name};

/// Which way an inspected ADU most likely travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Master to slave.
    Request,
    /// Slave to master.
    Response,
    /// FC05/FC06: a request and its echo are the same bytes.
    RequestOrEcho,
    /// An unknown function: no length rule to tell.
    Unknown,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::RequestOrEcho => "request or its echo",
            Self::Unknown => "unknown direction",
        })
    }
}

/// The fields of an inspected PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InspectedPdu {
    /// FC01–04 request.
    ReadRequest {
        /// First address.
        address: u16,
        /// Count asked for.
        count: u16,
    },
    /// FC01/02 reply: packed bits, first bit in the low bit of the first byte.
    BitsResponse {
        /// The byte count field.
        byte_count: u8,
        /// The data bytes.
        data: Vec<u8>,
    },
    /// FC03/04 reply.
    RegistersResponse {
        /// The byte count field.
        byte_count: u8,
        /// The registers.
        registers: Vec<u16>,
    },
    /// FC05/06 request or echo.
    WriteSingle {
        /// The address.
        address: u16,
        /// The raw value field (FC05: FF00 on, 0000 off).
        value: u16,
    },
    /// FC15/16 request.
    WriteMultipleRequest {
        /// First address.
        address: u16,
        /// Quantity.
        count: u16,
        /// The byte count field.
        byte_count: u8,
        /// The data bytes.
        data: Vec<u8>,
    },
    /// FC15/16 reply.
    WriteMultipleResponse {
        /// First address.
        address: u16,
        /// Quantity written.
        count: u16,
    },
    /// An exception reply.
    Exception {
        /// The code.
        code: ExceptionCode,
    },
    /// A function this decoder does not know: the PDU data as sent.
    Unknown {
        /// The bytes between the function code and the CRC.
        data: Vec<u8>,
    },
}

/// The CRC an ADU carries and the one its bytes give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcCheck {
    /// Computed over the bytes before the CRC.
    pub expected: u16,
    /// Carried by the frame (low byte first on the wire).
    pub found: u16,
}

impl CrcCheck {
    /// True when they agree.
    pub const fn is_ok(&self) -> bool {
        self.expected == self.found
    }
}

/// An ADU explained without knowing the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtuInspection {
    /// The unit (slave id); 0 is broadcast.
    pub unit: u8,
    /// The function code as sent (with `0x80` for an exception).
    pub function: u8,
    /// The function's name.
    pub function_name: &'static str,
    /// The direction the length rules point to.
    pub direction: Direction,
    /// The fields under that direction.
    pub pdu: InspectedPdu,
    /// When the length fits both directions (an 8-byte FC01/02 ADU with byte count 3): the
    /// response reading, while `pdu` holds the request reading.
    pub alternative: Option<InspectedPdu>,
    /// The CRC, reported even when wrong.
    pub crc: CrcCheck,
}

impl fmt::Display for InspectedPdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadRequest { address, count } => {
                write!(f, "address {address:#06X}, count {count}")
            }
            Self::BitsResponse { byte_count, data } => {
                write!(f, "byte count {byte_count}, bits (LSB first) {}", hex(data))
            }
            Self::RegistersResponse {
                byte_count,
                registers,
            } => {
                write!(f, "byte count {byte_count}, registers")?;
                for r in registers {
                    write!(f, " {r:04X}")?;
                }
                Ok(())
            }
            Self::WriteSingle { address, value } => {
                write!(f, "address {address:#06X}, value {value:#06X}")
            }
            Self::WriteMultipleRequest {
                address,
                count,
                byte_count,
                data,
            } => write!(
                f,
                "address {address:#06X}, count {count}, byte count {byte_count}, data {}",
                hex(data)
            ),
            Self::WriteMultipleResponse { address, count } => {
                write!(f, "address {address:#06X}, count {count} written")
            }
            Self::Exception { code } => write!(f, "exception {code}"),
            Self::Unknown { data } => write!(f, "data {}", hex(data)),
        }
    }
}

impl fmt::Display for RtuInspection {
    /// One line, e.g. `unit 1, function 03 read holding registers (request): address
    /// 0x0000, count 10; CRC C5 CD ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unit {}, function {:02X} {} ({}): {}",
            self.unit, self.function, self.function_name, self.direction, self.pdu
        )?;
        if let Some(alt) = &self.alternative {
            write!(f, " [or, as a response: {alt}]")?;
        }
        let found = self.crc.found.to_le_bytes();
        if self.crc.is_ok() {
            write!(f, "; CRC {} ok", hex(&found))
        } else {
            let expected = self.crc.expected.to_le_bytes();
            write!(
                f,
                "; CRC {} wrong, expected {}",
                hex(&found),
                hex(&expected)
            )
        }
    }
}

/// Why bytes cannot be explained as an RTU ADU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// Fewer than the 4 bytes of unit, function and CRC.
    #[error(
        "too short for an RTU ADU: expected at least 4 bytes (unit, function, CRC), found {found}: {hex}"
    )]
    TooShort {
        /// Bytes given.
        found: usize,
        /// The bytes in hex.
        hex: String,
    },
    /// The length fits no layout of the function.
    #[error("function {function:02X} ({name}): expected {expected}, found {found} bytes: {hex}")]
    Length {
        /// The function code.
        function: u8,
        /// Its name.
        name: &'static str,
        /// The lengths that would fit.
        expected: String,
        /// Bytes given.
        found: usize,
        /// The bytes in hex.
        hex: String,
    },
}

/// Formats bytes as upper-case hex pairs separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Explains one whole ADU (exactly the bytes given) without knowing the request: unit,
/// function, a direction guess from the length rules, the fields, and the CRC (even if wrong).
pub fn inspect(buf: &[u8]) -> Result<RtuInspection, InspectError> {
    let n = buf.len();
    let (Some(&unit), Some(&function), true) = (buf.first(), buf.get(1), n >= 4) else {
        return Err(InspectError::TooShort {
            found: n,
            hex: hex(buf),
        });
    };
    let crc = CrcCheck {
        expected: crc16(buf.get(..n - 2).unwrap_or_default()),
        found: u16::from_le_bytes([
            buf.get(n - 2).copied().unwrap_or(0),
            buf.get(n - 1).copied().unwrap_or(0),
        ]),
    };
    // Unit before the PDU, CRC after it.
    let pdu = buf.get(1..n - 2).unwrap_or_default();
    let (direction, pdu, alternative) = inspect_pdu(pdu, 3, buf)?;
    Ok(RtuInspection {
        unit,
        function,
        function_name: function_name(function),
        direction,
        pdu,
        alternative,
        crc,
    })
}

/// What [`inspect_pdu`] reads in a PDU: the direction, the fields under it, and the reply
/// reading when the length fits both directions.
pub(crate) type PduReading = (Direction, InspectedPdu, Option<InspectedPdu>);

/// Reads a PDU (function code, then data) under the Modbus length rules, for any ADU that
/// wraps it: `overhead` is the ADU's bytes around the PDU (RTU: unit and CRC, 3; MBAP: the
/// 7-byte header), so the errors can give the lengths the technician holds, and `adu` is the
/// whole ADU for their hex. An empty PDU is reported as too short.
pub(crate) fn inspect_pdu(
    pdu: &[u8],
    overhead: usize,
    adu: &[u8],
) -> Result<PduReading, InspectError> {
    let n = adu.len();
    let p = pdu.len();
    let Some(&function) = pdu.first() else {
        return Err(InspectError::TooShort {
            found: n,
            hex: hex(adu),
        });
    };
    let length_error = |expected: String| InspectError::Length {
        function,
        name: function_name(function),
        expected,
        found: n,
        hex: hex(adu),
    };
    let payload = pdu.get(1..).unwrap_or_default();
    let address = be16(pdu, 1).unwrap_or(0);
    let value = be16(pdu, 3).unwrap_or(0);
    let bc = pdu.get(1).copied().unwrap_or(0);
    let after_bc = pdu.get(2..).unwrap_or_default().to_vec();

    if function & EXCEPTION_FLAG != 0 {
        if p != 2 {
            return Err(length_error(format!(
                "{} bytes for an exception reply",
                overhead + 2
            )));
        }
        let code = ExceptionCode::from_u8(bc);
        return Ok((Direction::Response, InspectedPdu::Exception { code }, None));
    }
    Ok(match function {
        READ_COILS..=READ_INPUT_REGISTERS => {
            let bits = function <= READ_DISCRETE_INPUTS;
            let as_request = p == 5;
            let as_response = p == 2 + usize::from(bc) && (bits || bc % 2 == 0);
            let response = || {
                if bits {
                    InspectedPdu::BitsResponse {
                        byte_count: bc,
                        data: after_bc.clone(),
                    }
                } else {
                    InspectedPdu::RegistersResponse {
                        byte_count: bc,
                        registers: registers(&after_bc),
                    }
                }
            };
            let request = InspectedPdu::ReadRequest {
                address,
                count: value,
            };
            match (as_request, as_response) {
                (true, true) => (Direction::Request, request, Some(response())),
                (true, false) => (Direction::Request, request, None),
                (false, true) => (Direction::Response, response(), None),
                (false, false) => {
                    return Err(length_error(format!(
                        "{} bytes for a request, or {} + byte count {bc:02X} = {} for a response{}",
                        overhead + 5,
                        overhead + 2,
                        overhead + 2 + usize::from(bc),
                        if bits { "" } else { " (byte count even)" }
                    )));
                }
            }
        }
        WRITE_SINGLE_COIL | WRITE_SINGLE_REGISTER => {
            if p != 5 {
                return Err(length_error(format!("{} bytes", overhead + 5)));
            }
            (
                Direction::RequestOrEcho,
                InspectedPdu::WriteSingle { address, value },
                None,
            )
        }
        WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => {
            let request_bc = pdu.get(5).copied();
            if p == 5 {
                (
                    Direction::Response,
                    InspectedPdu::WriteMultipleResponse {
                        address,
                        count: value,
                    },
                    None,
                )
            } else if let Some(rbc) = request_bc.filter(|&b| p == 6 + usize::from(b)) {
                (
                    Direction::Request,
                    InspectedPdu::WriteMultipleRequest {
                        address,
                        count: value,
                        byte_count: rbc,
                        data: pdu.get(6..).unwrap_or_default().to_vec(),
                    },
                    None,
                )
            } else {
                return Err(length_error(match request_bc {
                    Some(b) => format!(
                        "{} bytes for a reply, or {} + byte count {b:02X} = {} for a request",
                        overhead + 5,
                        overhead + 6,
                        overhead + 6 + usize::from(b)
                    ),
                    None => format!(
                        "{} bytes for a reply, or {} + byte count for a request",
                        overhead + 5,
                        overhead + 6
                    ),
                }));
            }
        }
        _ => (
            Direction::Unknown,
            InspectedPdu::Unknown {
                data: payload.to_vec(),
            },
            None,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::rtu::tests::with_crc;

    #[test]
    fn inspect_explains_requests_responses_and_exceptions() {
        let i = inspect(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]).unwrap();
        assert_eq!(
            (i.unit, i.function, i.function_name),
            (1, 3, "read holding registers")
        );
        assert_eq!(i.direction, Direction::Request);
        assert_eq!(
            i.pdu,
            InspectedPdu::ReadRequest {
                address: 0,
                count: 10
            }
        );
        assert!(i.crc.is_ok());
        assert_eq!(i.alternative, None);
        assert_eq!(
            i.to_string(),
            "unit 1, function 03 read holding registers (request): address 0x0000, count 10; CRC C5 CD ok"
        );

        let i = inspect(&[0x01, 0x03, 0x02, 0x00, 0x01, 0x79, 0x85]).unwrap();
        assert_eq!(i.direction, Direction::Response);
        assert_eq!(
            i.pdu,
            InspectedPdu::RegistersResponse {
                byte_count: 2,
                registers: vec![1]
            }
        );
        assert_eq!(
            i.crc,
            CrcCheck {
                expected: 0x8479,
                found: 0x8579
            }
        );
        assert_eq!(
            i.to_string(),
            "unit 1, function 03 read holding registers (response): byte count 2, registers 0001; CRC 79 85 wrong, expected 79 84"
        );

        let i = inspect(&[0x01, 0x83, 0x02, 0xC0, 0xF1]).unwrap();
        assert_eq!(
            i.pdu,
            InspectedPdu::Exception {
                code: ExceptionCode::IllegalDataAddress
            }
        );
        assert_eq!(i.function_name, "read holding registers");

        // 8 bytes of FC01 with byte count 3: a request, or a 3-byte reply.
        let amb = with_crc(&[0x01, 0x01, 0x03, 0xCD, 0x6B, 0x05]);
        let i = inspect(&amb).unwrap();
        assert_eq!(i.direction, Direction::Request);
        assert!(matches!(
            i.alternative,
            Some(InspectedPdu::BitsResponse { byte_count: 3, .. })
        ));

        let i = inspect(&with_crc(&[
            0x01, 0x10, 0x00, 0x01, 0x00, 0x01, 0x02, 0x12, 0x34,
        ]))
        .unwrap();
        assert_eq!(i.direction, Direction::Request);
        let i = inspect(&with_crc(&[0x01, 0x2B, 0x0E, 0x01, 0x00])).unwrap();
        assert_eq!(i.direction, Direction::Unknown);
    }

    #[test]
    fn inspect_errors_say_expected_and_found() {
        let e = inspect(&[0x01, 0x03, 0x00]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "too short for an RTU ADU: expected at least 4 bytes (unit, function, CRC), found 3: 01 03 00"
        );
        let e = inspect(&[0x01, 0x03, 0x04, 0x00, 0x01, 0x00, 0x00]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "function 03 (read holding registers): expected 8 bytes for a request, or 5 + byte count 04 = 9 for a response (byte count even), found 7 bytes: 01 03 04 00 01 00 00"
        );
    }
}
