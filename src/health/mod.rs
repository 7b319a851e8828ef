//! Health of the buses and their meters: the counters and states that the service
//! (`/api/status`, `/metrics`, `meterd status`) and the uplink (the retained meter status
//! topics) read.
//!
//! This room owns [`MeterHealth`] (the one per-meter health type, with the one [`MeterState`])
//! and [`BusHealth`], and records into them what a bus task reports through
//! [`crate::bus::observer::BusObserver`]: a shared `Mutex<BusHealth>` is that observer. It
//! records, it never decides: when a meter is degraded is the bus's rule, reported in each
//! [`crate::bus::observer::PollOutcome`]. It never does I/O and reads no clock (the bus passes
//! its times in).

mod bus;
mod meter;

pub use bus::{BusHealth, LinkState, WireCounters};
pub use meter::{MeterHealth, MeterState};
