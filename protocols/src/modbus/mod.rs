//! Modbus: the RTU application data unit and register value decoding.

pub mod rtu;
pub mod values;
