//! The driver↔bus contract: what a driver asks the bus to send, and how to know a reply is
//! complete.
//!
//! A driver hands the bus a [`Step`] (the request bytes and the [`Framing`] its reply must
//! have); the bus hands back the verified [`Reply`]. This module owns these plain types only:
//! it does no I/O and knows nothing of links, timing or retries (those belong to the bus).

use meter_protocols::dlt645::{Address, DataIdentifier, Dlt645Frame, Function};
use meter_protocols::modbus::rtu::{self, Expectation};

/// What a reply must look like to be accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Framing {
    /// A DL/T 645 reply from `address` (wildcards allowed) to `function`.
    Dlt645 {
        /// The address the request went to.
        address: Address,
        /// The request's function.
        function: Function,
        /// The data identifier a normal reply must carry (reads). A reply about another item
        /// is a late answer to an earlier request: skipped as foreign, and the wait goes on.
        di: Option<DataIdentifier>,
    },
    /// A Modbus RTU reply to the request described.
    ModbusRtu(Expectation),
    /// No reply is expected (broadcast): the exchange ends when the request is written.
    None,
}

/// A verified reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A DL/T 645 frame.
    Dlt645(Dlt645Frame),
    /// A Modbus RTU response.
    ModbusRtu(rtu::Response),
    /// Nothing was expected.
    None,
}

/// One request of a poll, ready for the wire.
#[derive(Debug, Clone)]
pub struct Step {
    /// The bytes to send: a DL/T 645 frame without `FE` preamble (the bus adds it), or a
    /// Modbus RTU ADU.
    pub bytes: Vec<u8>,
    /// What the reply must look like.
    pub framing: Framing,
    /// The typed Modbus request and unit, for transports that frame themselves (Modbus TCP).
    pub modbus: Option<(u8, rtu::Request)>,
    /// Short description for traces: `read 00010000`, `FC04 0x0000+38`.
    pub what: String,
}
