//! One task per physical bus: transport, transactions, poll schedule and meter health.

pub mod exchange;
pub mod health;
pub mod schedule;
pub mod task;
pub mod trace;
pub mod transport;
