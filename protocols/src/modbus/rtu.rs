//! The Modbus RTU application data unit: `unit | PDU | CRC lo hi`.
//!
//! This module owns the RTU bytes: encoding requests and responses, finding one response (or,
//! for a simulated slave, one request) at the start of a receive buffer, checking the
//! CRC-16/MODBUS, explaining an arbitrary ADU for a technician, and the t1.5/t3.5 silence
//! lengths. It never does I/O, never reads a clock and never delimits a frame by a silence gap:
//! the frame length always comes from the function code and the byte count (or, for a reply,
//! from the request that is being answered), so that a bus task can tell "complete" without
//! timing and a late or foreign reply is recognised and skipped whole.

use std::fmt;
use std::time::Duration;

use crate::scan::{Scan, SkipReason};

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

use function::*;

static CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes` (sent on the wire low byte first).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC.checksum(bytes)
}

/// The human name of a function code (the exception flag is ignored).
pub fn function_name(code: u8) -> &'static str {
    match code & !EXCEPTION_FLAG {
        READ_COILS => "read coils",
        READ_DISCRETE_INPUTS => "read discrete inputs",
        READ_HOLDING_REGISTERS => "read holding registers",
        READ_INPUT_REGISTERS => "read input registers",
        WRITE_SINGLE_COIL => "write single coil",
        WRITE_SINGLE_REGISTER => "write single register",
        WRITE_MULTIPLE_COILS => "write multiple coils",
        WRITE_MULTIPLE_REGISTERS => "write multiple registers",
        _ => "unknown function",
    }
}

/// The four read functions, in function-code order (the order a [`PollPlan`](super::plan::PollPlan)
/// sorts by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadFunction {
    /// FC01 read coils.
    Coils,
    /// FC02 read discrete inputs.
    DiscreteInputs,
    /// FC03 read holding registers.
    HoldingRegisters,
    /// FC04 read input registers.
    InputRegisters,
}

impl ReadFunction {
    /// The function code (01–04).
    pub const fn code(self) -> u8 {
        match self {
            Self::Coils => READ_COILS,
            Self::DiscreteInputs => READ_DISCRETE_INPUTS,
            Self::HoldingRegisters => READ_HOLDING_REGISTERS,
            Self::InputRegisters => READ_INPUT_REGISTERS,
        }
    }

    /// The read function with this code, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            READ_COILS => Some(Self::Coils),
            READ_DISCRETE_INPUTS => Some(Self::DiscreteInputs),
            READ_HOLDING_REGISTERS => Some(Self::HoldingRegisters),
            READ_INPUT_REGISTERS => Some(Self::InputRegisters),
            _ => None,
        }
    }

    /// True for coils and discrete inputs (counted in bits, not registers).
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coils | Self::DiscreteInputs)
    }

    /// The largest count one read of this function may ask for (2000 bits or 125 registers).
    pub const fn max_count(self) -> u16 {
        if self.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }
}

/// A Modbus request (the PDU a master sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC01: `count` coils from `address` (1..=2000).
    ReadCoils {
        /// First coil.
        address: u16,
        /// Number of coils.
        count: u16,
    },
    /// FC02: `count` discrete inputs from `address` (1..=2000).
    ReadDiscreteInputs {
        /// First input.
        address: u16,
        /// Number of inputs.
        count: u16,
    },
    /// FC03: `count` holding registers from `address` (1..=125).
    ReadHoldingRegisters {
        /// First register (PDU address, 0-based).
        address: u16,
        /// Number of registers.
        count: u16,
    },
    /// FC04: `count` input registers from `address` (1..=125).
    ReadInputRegisters {
        /// First register (PDU address, 0-based).
        address: u16,
        /// Number of registers.
        count: u16,
    },
    /// FC05: set one coil (`FF00` on, `0000` off).
    WriteSingleCoil {
        /// The coil.
        address: u16,
        /// On or off.
        value: bool,
    },
    /// FC06: write one holding register.
    WriteSingleRegister {
        /// The register.
        address: u16,
        /// The value.
        value: u16,
    },
    /// FC15: write up to 1968 coils from `address`.
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// One entry per coil.
        values: Vec<bool>,
    },
    /// FC16: write up to 123 holding registers from `address`.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// One entry per register.
        values: Vec<u16>,
    },
}

/// Why a request (or a response, for the simulator) cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The count is zero or above the function's limit.
    #[error("function {function:02X} ({}): count {count} outside 1..={max}", function_name(*function))]
    CountOutOfRange {
        /// The function code.
        function: u8,
        /// The count asked for.
        count: usize,
        /// The function's limit.
        max: u16,
    },
    /// `address + count` runs past the last address 0xFFFF.
    #[error("function {function:02X} ({}): address {address:#06X} + count {count} runs past 0xFFFF", function_name(*function))]
    AddressOverflow {
        /// The function code.
        function: u8,
        /// The first address.
        address: u16,
        /// The count.
        count: usize,
    },
    /// An exception response must name the original function (below 0x80).
    #[error("exception response for function {function:02X}: the function code must be below 0x80")]
    ExceptionFunction {
        /// The function given.
        function: u8,
    },
}

fn check_range(function: u8, address: u16, count: usize, max: u16) -> Result<(), RequestError> {
    if count == 0 || count > usize::from(max) {
        return Err(RequestError::CountOutOfRange {
            function,
            count,
            max,
        });
    }
    if usize::from(address) + count > 0x1_0000 {
        return Err(RequestError::AddressOverflow {
            function,
            address,
            count,
        });
    }
    Ok(())
}

impl Request {
    /// The read request for `function`.
    pub const fn read(function: ReadFunction, address: u16, count: u16) -> Self {
        match function {
            ReadFunction::Coils => Self::ReadCoils { address, count },
            ReadFunction::DiscreteInputs => Self::ReadDiscreteInputs { address, count },
            ReadFunction::HoldingRegisters => Self::ReadHoldingRegisters { address, count },
            ReadFunction::InputRegisters => Self::ReadInputRegisters { address, count },
        }
    }

    /// The function code.
    pub const fn function(&self) -> u8 {
        match self {
            Self::ReadCoils { .. } => READ_COILS,
            Self::ReadDiscreteInputs { .. } => READ_DISCRETE_INPUTS,
            Self::ReadHoldingRegisters { .. } => READ_HOLDING_REGISTERS,
            Self::ReadInputRegisters { .. } => READ_INPUT_REGISTERS,
            Self::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Self::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Self::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Self::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
        }
    }

    /// Checks counts and address ranges against the standard's limits. A slave (the
    /// simulator) answers a request that fails this with exception 03, illegal data value.
    pub fn validate(&self) -> Result<(), RequestError> {
        let f = self.function();
        match self {
            Self::ReadCoils { address, count } | Self::ReadDiscreteInputs { address, count } => {
                check_range(f, *address, usize::from(*count), MAX_READ_BITS)
            }
            Self::ReadHoldingRegisters { address, count }
            | Self::ReadInputRegisters { address, count } => {
                check_range(f, *address, usize::from(*count), MAX_READ_REGISTERS)
            }
            Self::WriteSingleCoil { .. } | Self::WriteSingleRegister { .. } => Ok(()),
            Self::WriteMultipleCoils { address, values } => {
                check_range(f, *address, values.len(), MAX_WRITE_COILS)
            }
            Self::WriteMultipleRegisters { address, values } => {
                check_range(f, *address, values.len(), MAX_WRITE_REGISTERS)
            }
        }
    }

    /// What the reply to this request, sent to `unit`, must look like.
    pub fn expectation(&self, unit: u8) -> Expectation {
        let count = match self {
            Self::ReadCoils { count, .. }
            | Self::ReadDiscreteInputs { count, .. }
            | Self::ReadHoldingRegisters { count, .. }
            | Self::ReadInputRegisters { count, .. } => *count,
            Self::WriteSingleCoil { .. } | Self::WriteSingleRegister { .. } => 1,
            Self::WriteMultipleCoils { values, .. } => saturating_u16(values.len()),
            Self::WriteMultipleRegisters { values, .. } => saturating_u16(values.len()),
        };
        Expectation {
            unit,
            function: self.function(),
            count,
        }
    }
}

fn saturating_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A Modbus exception code (the byte after `function | 0x80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// 01: the function is not supported.
    IllegalFunction,
    /// 02: the address range does not exist on the device.
    IllegalDataAddress,
    /// 03: a value in the request is not allowed (e.g. a count above the device's limit).
    IllegalDataValue,
    /// 04: the device failed while serving the request.
    ServerDeviceFailure,
    /// 05: accepted, will take long (poll later).
    Acknowledge,
    /// 06: busy with a long command; retry later.
    ServerDeviceBusy,
    /// 08: memory parity error reading a record file.
    MemoryParityError,
    /// 0A: the gateway has no path to the target.
    GatewayPathUnavailable,
    /// 0B: the gateway's target did not answer.
    GatewayTargetFailedToRespond,
    /// Any other code, kept as sent.
    Other(u8),
}

impl ExceptionCode {
    /// The code for a byte; unnamed codes become [`ExceptionCode::Other`].
    pub const fn from_u8(code: u8) -> Self {
        match code {
            0x01 => Self::IllegalFunction,
            0x02 => Self::IllegalDataAddress,
            0x03 => Self::IllegalDataValue,
            0x04 => Self::ServerDeviceFailure,
            0x05 => Self::Acknowledge,
            0x06 => Self::ServerDeviceBusy,
            0x08 => Self::MemoryParityError,
            0x0A => Self::GatewayPathUnavailable,
            0x0B => Self::GatewayTargetFailedToRespond,
            other => Self::Other(other),
        }
    }

    /// The byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::IllegalFunction => 0x01,
            Self::IllegalDataAddress => 0x02,
            Self::IllegalDataValue => 0x03,
            Self::ServerDeviceFailure => 0x04,
            Self::Acknowledge => 0x05,
            Self::ServerDeviceBusy => 0x06,
            Self::MemoryParityError => 0x08,
            Self::GatewayPathUnavailable => 0x0A,
            Self::GatewayTargetFailedToRespond => 0x0B,
            Self::Other(code) => code,
        }
    }

    /// The standard's name for the code.
    pub const fn name(self) -> &'static str {
        match self {
            Self::IllegalFunction => "illegal function",
            Self::IllegalDataAddress => "illegal data address",
            Self::IllegalDataValue => "illegal data value",
            Self::ServerDeviceFailure => "server device failure",
            Self::Acknowledge => "acknowledge",
            Self::ServerDeviceBusy => "server device busy",
            Self::MemoryParityError => "memory parity error",
            Self::GatewayPathUnavailable => "gateway path unavailable",
            Self::GatewayTargetFailedToRespond => "gateway target device failed to respond",
            Self::Other(_) => "unknown exception code",
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X} {}", self.to_u8(), self.name())
    }
}

/// A Modbus response (the PDU a slave sends back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// FC01 reply: one entry per coil asked for.
    Coils(Vec<bool>),
    /// FC02 reply: one entry per input asked for.
    DiscreteInputs(Vec<bool>),
    /// FC03 reply: the registers asked for.
    HoldingRegisters(Vec<u16>),
    /// FC04 reply: the registers asked for.
    InputRegisters(Vec<u16>),
    /// FC05 echo.
    WriteSingleCoil {
        /// The coil.
        address: u16,
        /// On or off.
        value: bool,
    },
    /// FC06 echo.
    WriteSingleRegister {
        /// The register.
        address: u16,
        /// The value written.
        value: u16,
    },
    /// FC15 reply: where and how many coils were written.
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// Number of coils.
        count: u16,
    },
    /// FC16 reply: where and how many registers were written.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// Number of registers.
        count: u16,
    },
    /// The device refused: `function` is the request's function code (without `0x80`).
    Exception {
        /// The function of the refused request.
        function: u8,
        /// Why.
        code: ExceptionCode,
    },
}

impl Response {
    /// The function code on the wire (with `0x80` for an exception).
    pub const fn function(&self) -> u8 {
        match self {
            Self::Coils(_) => READ_COILS,
            Self::DiscreteInputs(_) => READ_DISCRETE_INPUTS,
            Self::HoldingRegisters(_) => READ_HOLDING_REGISTERS,
            Self::InputRegisters(_) => READ_INPUT_REGISTERS,
            Self::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Self::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Self::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Self::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
            Self::Exception { function, .. } => *function | EXCEPTION_FLAG,
        }
    }

    /// The registers of an FC03/FC04 reply.
    pub fn registers(&self) -> Option<&[u16]> {
        match self {
            Self::HoldingRegisters(r) | Self::InputRegisters(r) => Some(r),
            _ => None,
        }
    }

    /// The bits of an FC01/FC02 reply.
    pub fn bits(&self) -> Option<&[bool]> {
        match self {
            Self::Coils(b) | Self::DiscreteInputs(b) => Some(b),
            _ => None,
        }
    }
}

/// What the reply to one request must look like; built by [`Request::expectation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expectation {
    /// The unit (slave id) the request went to.
    pub unit: u8,
    /// The request's function code.
    pub function: u8,
    /// Bits or registers asked for (reads), or written (FC15/FC16); 1 for FC05/FC06.
    pub count: u16,
}

impl Expectation {
    /// The length of the normal (non-exception) reply, `None` for an unknown function.
    pub fn response_len(&self) -> Option<usize> {
        match self.function {
            READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                Some(5 + self.byte_count())
            }
            WRITE_SINGLE_COIL
            | WRITE_SINGLE_REGISTER
            | WRITE_MULTIPLE_COILS
            | WRITE_MULTIPLE_REGISTERS => Some(8),
            _ => None,
        }
    }

    /// The byte count a read reply must carry.
    fn byte_count(&self) -> usize {
        let count = usize::from(self.count);
        match self.function {
            READ_COILS | READ_DISCRETE_INPUTS => count.div_ceil(8),
            _ => count * 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

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

// ---------------------------------------------------------------------------------------------
// Scanning

fn be16(buf: &[u8], at: usize) -> Option<u16> {
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

fn registers(bytes: &[u8]) -> Vec<u16> {
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

// ---------------------------------------------------------------------------------------------
// Inspection (the technician's decoder)

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
    let length_error = |expected: String| InspectError::Length {
        function,
        name: function_name(function),
        expected,
        found: n,
        hex: hex(buf),
    };
    let payload = buf.get(2..n - 2).unwrap_or_default();
    let address = be16(buf, 2).unwrap_or(0);
    let value = be16(buf, 4).unwrap_or(0);
    let bc = buf.get(2).copied().unwrap_or(0);
    let after_bc = buf.get(3..n - 2).unwrap_or_default().to_vec();

    let (direction, pdu, alternative) = if function & EXCEPTION_FLAG != 0 {
        if n != 5 {
            return Err(length_error("5 bytes for an exception reply".into()));
        }
        let code = ExceptionCode::from_u8(bc);
        (Direction::Response, InspectedPdu::Exception { code }, None)
    } else {
        match function {
            READ_COILS..=READ_INPUT_REGISTERS => {
                let bits = function <= READ_DISCRETE_INPUTS;
                let as_request = n == 8;
                let as_response = n == 5 + usize::from(bc) && (bits || bc % 2 == 0);
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
                            "8 bytes for a request, or 5 + byte count {bc:02X} = {} for a response{}",
                            5 + usize::from(bc),
                            if bits { "" } else { " (byte count even)" }
                        )));
                    }
                }
            }
            WRITE_SINGLE_COIL | WRITE_SINGLE_REGISTER => {
                if n != 8 {
                    return Err(length_error("8 bytes".into()));
                }
                (
                    Direction::RequestOrEcho,
                    InspectedPdu::WriteSingle { address, value },
                    None,
                )
            }
            WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => {
                let request_bc = buf.get(6).copied();
                if n == 8 {
                    (
                        Direction::Response,
                        InspectedPdu::WriteMultipleResponse {
                            address,
                            count: value,
                        },
                        None,
                    )
                } else if let Some(rbc) = request_bc.filter(|&b| n == 9 + usize::from(b)) {
                    (
                        Direction::Request,
                        InspectedPdu::WriteMultipleRequest {
                            address,
                            count: value,
                            byte_count: rbc,
                            data: buf.get(7..n - 2).unwrap_or_default().to_vec(),
                        },
                        None,
                    )
                } else {
                    return Err(length_error(match request_bc {
                        Some(b) => format!(
                            "8 bytes for a reply, or 9 + byte count {b:02X} = {} for a request",
                            9 + usize::from(b)
                        ),
                        None => "8 bytes for a reply, or 9 + byte count for a request".into(),
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
        }
    };
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

// ---------------------------------------------------------------------------------------------
// Timing

fn char_time(baud: u32, tenth_bits: u64, fixed_us: u64) -> Duration {
    if baud > 19_200 {
        Duration::from_micros(fixed_us)
    } else {
        // tenth_bits / 10 bits per character time; 1e9 ns per second.
        Duration::from_nanos(tenth_bits * 100_000_000 / u64::from(baud.max(1)))
    }
}

/// The inter-frame silence t3.5: 3.5 eleven-bit characters (38.5 bit times) at or below
/// 19200 baud, a fixed 1750 µs above. A baud of 0 is treated as 1.
pub fn silence_t35(baud: u32) -> Duration {
    char_time(baud, 385, 1750)
}

/// The inter-character timeout t1.5: 1.5 eleven-bit characters (16.5 bit times) at or below
/// 19200 baud, a fixed 750 µs above. A baud of 0 is treated as 1.
pub fn t15(baud: u32) -> Duration {
    char_time(baud, 165, 750)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hand-checks a CRC with the `crc` crate directly (not through this module's helper).
    fn with_crc(body: &[u8]) -> Vec<u8> {
        let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(body);
        let mut v = body.to_vec();
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn enc_req(unit: u8, r: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(unit, r, &mut out).unwrap();
        out
    }

    fn enc_resp(unit: u8, r: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(unit, r, &mut out).unwrap();
        out
    }

    fn expect(unit: u8, function: u8, count: u16) -> Expectation {
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

    #[test]
    fn request_validation() {
        let bad = [
            Request::ReadHoldingRegisters {
                address: 0,
                count: 126,
            },
            Request::ReadCoils {
                address: 0,
                count: 0,
            },
            Request::ReadInputRegisters {
                address: 0xFFFF,
                count: 2,
            },
            Request::WriteMultipleRegisters {
                address: 0,
                values: vec![0; 124],
            },
            Request::WriteMultipleCoils {
                address: 0,
                values: vec![],
            },
        ];
        for r in bad {
            let mut out = vec![0xAA];
            assert!(encode_request(1, &r, &mut out).is_err(), "{r:?}");
            assert_eq!(out, [0xAA], "nothing appended on error");
        }
        let err = encode_request(
            1,
            &Request::ReadHoldingRegisters {
                address: 0,
                count: 126,
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "function 03 (read holding registers): count 126 outside 1..=125"
        );
        assert!(
            Request::ReadInputRegisters {
                address: 0xFFFF,
                count: 1
            }
            .validate()
            .is_ok()
        );
    }

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

    #[test]
    fn silence_times() {
        assert_eq!(silence_t35(9600), Duration::from_nanos(4_010_416));
        assert_eq!(silence_t35(19_200), Duration::from_nanos(2_005_208));
        assert_eq!(silence_t35(38_400), Duration::from_micros(1750));
        assert_eq!(t15(9600), Duration::from_nanos(1_718_750));
        assert_eq!(t15(115_200), Duration::from_micros(750));
        assert!(silence_t35(0) > Duration::ZERO);
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
}
