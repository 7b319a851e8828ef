//! The Modbus TCP application data unit: the 7-byte MBAP header, then the PDU.
//!
//! ```text
//! transaction id (2) | protocol id (2, 0 = Modbus) | length (2) | unit (1) | function | data
//! ```
//!
//! `length` counts the bytes after it: the unit and the PDU. There is no CRC: TCP checks the
//! bytes, so what a technician can check is the protocol id and that the length field agrees
//! with the bytes that follow.
//!
//! This module owns reading and writing that header ([`MbapHeader`]) and the technician's
//! decoder ([`inspect`]): it explains one whole ADU (exactly the bytes given) the way
//! [`rtu::inspect`](super::rtu::inspect) explains an RTU ADU, with the same PDU reading. It
//! never does I/O; the Modbus TCP client (tokio-modbus) frames the daemon's own exchanges.

use std::fmt;

use nom::number::complete::{be_u16, u8 as byte};
use nom::{IResult, Parser};

use super::rtu::{Direction, InspectError, InspectedPdu, function_name, hex, inspect_pdu};

/// The MBAP header's length on the wire.
pub const HEADER_LEN: usize = 7;
/// The longest Modbus TCP ADU: the header and a 253-byte PDU.
pub const MAX_ADU_LEN: usize = HEADER_LEN + 253;
/// The protocol id of Modbus.
pub const MODBUS_PROTOCOL_ID: u16 = 0;

/// The MBAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbapHeader {
    /// Transaction id: the client's number, which the server copies into its reply.
    pub transaction: u16,
    /// Protocol id: 0 for Modbus.
    pub protocol: u16,
    /// The bytes that follow the length field: the unit and the PDU.
    pub length: u16,
    /// Unit id (the serial slave behind a gateway; 0xFF or 0 for a device itself).
    pub unit: u8,
}

impl MbapHeader {
    /// Reads the header at the start of `input`; nom's error when fewer than 7 bytes are given.
    pub fn parse(input: &[u8]) -> IResult<&[u8], MbapHeader> {
        (be_u16, be_u16, be_u16, byte)
            .map(|(transaction, protocol, length, unit)| MbapHeader {
                transaction,
                protocol,
                length,
                unit,
            })
            .parse(input)
    }

    /// The header's 7 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [t0, t1] = self.transaction.to_be_bytes();
        let [p0, p1] = self.protocol.to_be_bytes();
        let [l0, l1] = self.length.to_be_bytes();
        [t0, t1, p0, p1, l0, l1, self.unit]
    }
}

/// Something wrong with an MBAP header that still lets the PDU be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbapProblem {
    /// The protocol id is not 0: not Modbus.
    ProtocolId {
        /// The protocol id carried.
        found: u16,
    },
    /// The length field disagrees with the bytes after it.
    Length {
        /// What the length field says follows (unit + PDU).
        declared: u16,
        /// What does follow.
        found: usize,
    },
}

impl fmt::Display for MbapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProtocolId { found } => write!(
                f,
                "protocol id {found:04X}: expected 0000 (Modbus); not a Modbus TCP frame?"
            ),
            Self::Length { declared, found } => write!(
                f,
                "length field says {declared} bytes follow (unit + PDU), found {found}"
            ),
        }
    }
}

/// A Modbus TCP ADU explained without knowing the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbapInspection {
    /// The header as carried.
    pub header: MbapHeader,
    /// The function code as sent (with `0x80` for an exception).
    pub function: u8,
    /// The function's name.
    pub function_name: &'static str,
    /// The direction the length rules point to.
    pub direction: Direction,
    /// The PDU's fields under that direction.
    pub pdu: InspectedPdu,
    /// When the length fits both directions: the response reading, while `pdu` holds the
    /// request reading.
    pub alternative: Option<InspectedPdu>,
    /// What is wrong with the header (empty when nothing is).
    pub problems: Vec<MbapProblem>,
}

impl MbapInspection {
    /// True when the header is right: protocol id 0 and a length field that fits.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for MbapInspection {
    /// One line, e.g. `transaction 1, unit 1, function 03 read holding registers (request):
    /// address 0x0000, count 2; length 6 ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transaction {}, unit {}, function {:02X} {} ({}): {}",
            self.header.transaction,
            self.header.unit,
            self.function,
            self.function_name,
            self.direction,
            self.pdu
        )?;
        if let Some(alt) = &self.alternative {
            write!(f, " [or, as a response: {alt}]")?;
        }
        if self.problems.is_empty() {
            write!(f, "; length {} ok", self.header.length)
        } else {
            for p in &self.problems {
                write!(f, "; {p}")?;
            }
            Ok(())
        }
    }
}

/// Why bytes cannot be explained as a Modbus TCP ADU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MbapInspectError {
    /// Fewer than the header and a function code.
    #[error(
        "too short for a Modbus TCP ADU: expected at least 8 bytes (7-byte MBAP header, function), found {found}: {hex}"
    )]
    TooShort {
        /// Bytes given.
        found: usize,
        /// The bytes in hex.
        hex: String,
    },
    /// The PDU's length fits no layout of its function.
    #[error("{0}")]
    Pdu(InspectError),
}

/// Explains one whole Modbus TCP ADU (exactly the bytes given): the header fields, the PDU
/// read as [`rtu::inspect`](super::rtu::inspect) reads it, and what is wrong with the header.
/// The PDU is every byte after the header, whatever the length field says (a disagreement is
/// reported in [`MbapInspection::problems`]).
pub fn inspect(buf: &[u8]) -> Result<MbapInspection, MbapInspectError> {
    let too_short = || MbapInspectError::TooShort {
        found: buf.len(),
        hex: hex(buf),
    };
    let (pdu, header) = MbapHeader::parse(buf).map_err(|_| too_short())?;
    let Some(&function) = pdu.first() else {
        return Err(too_short());
    };
    let mut problems = Vec::new();
    if header.protocol != MODBUS_PROTOCOL_ID {
        problems.push(MbapProblem::ProtocolId {
            found: header.protocol,
        });
    }
    let follows = pdu.len() + 1;
    if usize::from(header.length) != follows {
        problems.push(MbapProblem::Length {
            declared: header.length,
            found: follows,
        });
    }
    let (direction, reading, alternative) =
        inspect_pdu(pdu, HEADER_LEN, buf).map_err(MbapInspectError::Pdu)?;
    Ok(MbapInspection {
        header,
        function,
        function_name: function_name(function),
        direction,
        pdu: reading,
        alternative,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::rtu::ExceptionCode;

    #[test]
    fn a_read_request_and_its_reply() {
        let req = [
            0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 0x00, 0x02,
        ];
        let i = inspect(&req).unwrap();
        assert_eq!(
            i.header,
            MbapHeader {
                transaction: 1,
                protocol: 0,
                length: 6,
                unit: 1
            }
        );
        assert_eq!(i.direction, Direction::Request);
        assert_eq!(
            i.pdu,
            InspectedPdu::ReadRequest {
                address: 0,
                count: 2
            }
        );
        assert!(i.is_valid());
        assert_eq!(
            i.to_string(),
            "transaction 1, unit 1, function 03 read holding registers (request): address 0x0000, count 2; length 6 ok"
        );
        assert_eq!(i.header.to_bytes(), req[..7]);

        let reply = [
            0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x01, 0x03, 0x04, 0x43, 0x66, 0x00, 0x00,
        ];
        let i = inspect(&reply).unwrap();
        assert_eq!(i.direction, Direction::Response);
        assert_eq!(
            i.pdu,
            InspectedPdu::RegistersResponse {
                byte_count: 4,
                registers: vec![0x4366, 0]
            }
        );
        assert!(i.is_valid());
    }

    #[test]
    fn an_exception_reply() {
        let i = inspect(&[0x12, 0x34, 0x00, 0x00, 0x00, 0x03, 0x05, 0x84, 0x02]).unwrap();
        assert_eq!(i.header.transaction, 0x1234);
        assert_eq!(i.header.unit, 5);
        assert_eq!(
            i.pdu,
            InspectedPdu::Exception {
                code: ExceptionCode::IllegalDataAddress
            }
        );
        assert_eq!(i.function_name, "read input registers");
    }

    #[test]
    fn header_problems_are_reported_and_the_pdu_still_read() {
        let i = inspect(&[
            0x00, 0x01, 0x00, 0x07, 0x00, 0x09, 0x01, 0x03, 0x00, 0x00, 0x00, 0x02,
        ])
        .unwrap();
        assert_eq!(
            i.problems,
            vec![
                MbapProblem::ProtocolId { found: 7 },
                MbapProblem::Length {
                    declared: 9,
                    found: 6
                }
            ]
        );
        assert!(!i.is_valid());
        assert!(i.to_string().contains("length field says 9 bytes follow"));
    }

    #[test]
    fn errors_say_expected_and_found() {
        let e = inspect(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "too short for a Modbus TCP ADU: expected at least 8 bytes (7-byte MBAP header, function), found 7: 00 01 00 00 00 01 01"
        );
        // A read of 4 PDU bytes: neither a request (5) nor a reply (2 + byte count).
        let e = inspect(&[
            0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x03, 0x04, 0x00, 0x01,
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "function 03 (read holding registers): expected 12 bytes for a request, or 9 + byte count 04 = 13 for a response (byte count even), found 11 bytes: 00 01 00 00 00 05 01 03 04 00 01"
        );
    }
}
