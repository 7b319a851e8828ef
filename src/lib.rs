//! meterd: a smart-meter data acquisition gateway.
//!
//! The daemon reads as a pipeline: [`bus`] (transport, transactions, schedule) → codecs in
//! `meter_protocols` via the [`meter`] drivers → [`ingest`] (validation, group commit) →
//! [`spool`] → [`uplink`]. The same modules serve the technician's CLI (`meterd decode`,
//! `read`, `scan`, `trace`). ARCHITECTURE.md at the repository root is the code map: the rooms,
//! what each owns, and which may import which (`tests/room_dependencies.rs` enforces it).

#![warn(missing_docs)]

pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod health;
pub mod hex_input;
pub mod ingest;
pub mod logging;
pub mod meter;
pub mod reading;
pub mod serial_port;
pub mod service;
pub mod sim;
pub mod spool;
pub mod startup_code;
pub mod suggest;
pub mod sync;
pub mod uplink;
