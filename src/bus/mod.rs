//! One task per physical bus: transports, exchange, poll schedule, and what the bus reports.
//!
//! The bus decides (when to poll, when to retry, when a meter is degraded) and reports what it
//! sees through [`observer::BusObserver`]; the health room above it keeps the numbers. Nothing
//! here imports the rooms above.

pub mod budget;
pub mod clock_steps;
pub mod event_collect;
pub mod exchange;
pub mod freeze_collect;
pub mod observer;
mod pacing;
pub mod schedule;
pub mod task;
pub mod trace;
pub mod transport;
