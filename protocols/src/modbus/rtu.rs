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

/// The byte count for `n` items of `bytes_each`, which validation keeps within one byte.
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
        .map(|c| {
            u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
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
                reason: SkipReason::Malformed(if buf.first() != Some(&expect.unit) {
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
