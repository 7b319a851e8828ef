//! One task per physical bus: transport, transactions, poll schedule and meter health.

pub mod schedule;
pub mod transport;
