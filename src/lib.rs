//! meterd: a smart-meter data acquisition gateway.
//!
//! The daemon reads as a pipeline: [`bus`] (transport, transactions, schedule) → codecs in
//! `meter_protocols` → validation → spool → uplink. The same modules serve the technician's
//! CLI (`meterd decode`, `read`, `scan`, `trace`).

#![warn(missing_docs)]

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod hex_input;
pub mod logging;
pub mod meter;
pub mod reading;
pub mod service;
pub mod sim;
pub mod spool;
pub mod startup_code;
pub mod sync;
pub mod uplink;
pub mod validate;
