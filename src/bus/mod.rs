//! One task per physical bus: transport, transactions, poll schedule and meter health.

pub mod exchange;
pub mod schedule;
pub mod trace;
pub mod transport;
