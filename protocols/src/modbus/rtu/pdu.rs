//! The RTU messages as values: [`Request`], [`Response`], [`ExceptionCode`], [`ReadFunction`],
//! the [`Expectation`] a reply must meet, function names, and the standard's count and address
//! limits ([`Request::validate`]).
//!
//! It never reads or writes wire bytes: encoding is `encode`'s, finding frames is `framing`'s.

use std::fmt;

use super::function::*;
use super::{MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_COILS, MAX_WRITE_REGISTERS};

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

/// The four read functions, in function-code order (the order a [`PollPlan`](crate::modbus::plan::PollPlan)
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

pub(super) fn check_range(
    function: u8,
    address: u16,
    count: usize,
    max: u16,
) -> Result<(), RequestError> {
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

pub(super) fn saturating_u16(n: usize) -> u16 {
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
    pub(super) fn byte_count(&self) -> usize {
        let count = usize::from(self.count);
        match self.function {
            READ_COILS | READ_DISCRETE_INPUTS => count.div_ceil(8),
            _ => count * 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::rtu::encode_request;

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
}
