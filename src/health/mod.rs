//! Health: how well the gateway reads its meters, as the service, the uplink and `meterd
//! status` show it.
//!
//! This room owns the reading-success book ([`SuccessBook`]: the concentrator's KPI, meters
//! read today and in the last 24 hours, and each meter's last taken batch for the status page).
//! The ingest pipeline feeds it; the service and the uplink read it and build their own wire
//! shapes from it. It never does I/O and never reads a clock: times are passed in.

pub mod last_batch;
pub mod success;

pub use success::SuccessBook;
