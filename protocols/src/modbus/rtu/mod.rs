//! The Modbus RTU application data unit: `unit | PDU | CRC lo hi`.
//!
//! This module owns the RTU bytes: encoding requests and responses, finding one response (or,
//! for a simulated slave, one request) at the start of a receive buffer, checking the
//! CRC-16/MODBUS, explaining an arbitrary ADU for a technician, and the t1.5/t3.5 silence
//! lengths. It never does I/O, never reads a clock and never delimits a frame by a silence gap:
//! the frame length always comes from the function code and the byte count (or, for a reply,
//! from the request that is being answered), so that a bus task can tell "complete" without
//! timing and a late or foreign reply is recognised and skipped whole.

/// The longest RTU ADU the standard allows (unit + 253-byte PDU + CRC).
pub const MAX_ADU_LEN: usize = 256;
/// The most coils or discrete inputs one read may ask for (FC01/FC02).
pub const MAX_READ_BITS: u16 = 2000;
/// The most registers one read may ask for (FC03/FC04).
pub const MAX_READ_REGISTERS: u16 = 125;
/// The most coils one FC15 write may carry.
pub const MAX_WRITE_COILS: u16 = 1968;
/// The most registers one FC16 write may carry.
pub const MAX_WRITE_REGISTERS: u16 = 123;

/// The function codes this module speaks.
pub mod function {
    /// FC01 read coils.
    pub const READ_COILS: u8 = 0x01;
    /// FC02 read discrete inputs.
    pub const READ_DISCRETE_INPUTS: u8 = 0x02;
    /// FC03 read holding registers.
    pub const READ_HOLDING_REGISTERS: u8 = 0x03;
    /// FC04 read input registers.
    pub const READ_INPUT_REGISTERS: u8 = 0x04;
    /// FC05 write single coil.
    pub const WRITE_SINGLE_COIL: u8 = 0x05;
    /// FC06 write single register.
    pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
    /// FC15 (0x0F) write multiple coils.
    pub const WRITE_MULTIPLE_COILS: u8 = 0x0F;
    /// FC16 (0x10) write multiple registers.
    pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
    /// The bit a server sets in the function code of an exception response.
    pub const EXCEPTION_FLAG: u8 = 0x80;
}

static CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes` (sent on the wire low byte first).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC.checksum(bytes)
}

mod encode;
mod explain;
mod framing;
mod pdu;
mod timing;

#[cfg(test)]
mod tests;

pub use encode::{encode_request, encode_response};
pub(crate) use explain::inspect_pdu;
pub use explain::{CrcCheck, Direction, InspectError, InspectedPdu, RtuInspection, hex, inspect};
pub use framing::{parse_request, scan_response};
pub use pdu::{
    ExceptionCode, Expectation, ReadFunction, Request, RequestError, Response, function_name,
};
pub use timing::{silence_t35, t15};
