//! Health: how well the gateway reads its meters, as the service, the uplink and `meterd
//! status` show it.
//!
//! This room owns the per-meter and per-bus health ([`MeterHealth`], the one per-meter health
//! type with the one [`MeterState`]; [`BusHealth`] with its [`LinkState`]) and the
//! reading-success book ([`SuccessBook`]: the concentrator's KPI, meters read today and in the
//! last 24 hours, and each meter's last taken batch for the status page). A bus task reports
//! what it sees through [`crate::bus::observer::BusObserver`] (a shared `Mutex<BusHealth>` is
//! that observer); the ingest pipeline feeds the book; the service and the uplink read both and
//! build their own wire shapes from them. It records, it never decides: when a meter is
//! degraded is the bus's rule, reported in each [`crate::bus::observer::PollOutcome`]. It never
//! does I/O and never reads a clock: times are passed in.

mod bus;
pub mod last_batch;
mod meter;
pub mod recent;
pub mod success;
pub mod trend;

pub use bus::{BusHealth, LinkState, WireCounters};
pub use meter::{MeterClock, MeterHealth, MeterState};
pub use success::SuccessBook;
