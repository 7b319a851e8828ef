//! Modbus: the RTU application data unit, register values and request planning.
//!
//! - [`rtu`] owns the RTU bytes: requests, responses, CRC, framing by length, the
//!   technician's [`inspect`](rtu::inspect), and t1.5/t3.5.
//! - [`mbap`] owns the Modbus TCP header and the technician's [`inspect`](mbap::inspect) of a
//!   Modbus TCP ADU (the PDU read by the same rules as RTU's).
//! - [`values`] owns register contents: value types, register order, exact scaling.
//! - [`plan`] owns coalescing a meter's points into the fewest reads.
//!
//! None of them does I/O or reads a clock; the bus task owns the port, the timeouts and the
//! retries, and calls in here for bytes and numbers.

pub mod mbap;
pub mod plan;
pub mod rtu;
pub mod values;

pub use plan::{PlanError, PlanOptions, PlannedRead, PointRange, PollPlan};
pub use rtu::{
    ExceptionCode, Expectation, ReadFunction, Request, RequestError, Response, RtuInspection,
};
pub use values::{ModbusValue, RawValue, RegisterOrder, Scale, ValueError, ValueType};
