//! Sans-IO codecs for electricity meters.
//!
//! This crate owns the bytes: it turns wire bytes into typed frames and values, and typed
//! requests into wire bytes. It never does I/O, never reads a clock and never allocates on the
//! hot path where it can avoid it, so that the daemon, the simulator, the CLI, the fuzzers and
//! the benchmarks all share one implementation.
//!
//! - [`calendar`]: proleptic Gregorian day numbers (freeze stamps, the daemon's UTC clock).
//! - [`dlt645`]: DL/T 645-2007 and DL/T 645-1997 frames, requests, responses and the data
//!   identifier catalogue.
//! - [`modbus`]: the Modbus RTU ADU (framing, CRC, requests, responses), the Modbus TCP (MBAP)
//!   header, and register values.
//! - [`decimal`]: exact decimal numbers, so that a BCD reading is never changed by a binary float.
//! - [`quantity`]: the published unit of every quantity, and the quantities without an OBIS code.
//! - [`scan`]: the streaming outcome every frame scanner returns.
//!
//! Panic freedom: no parser in this crate panics on any input. The fuzz targets under
//! `protocols/fuzz/` and the property tests check it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod calendar;
pub mod decimal;
pub mod dlt645;
pub mod modbus;
pub mod quantity;
pub mod scan;

pub use decimal::Decimal;
pub use scan::{Scan, SkipReason};
