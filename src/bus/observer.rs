//! What a bus task observes and reports: its link going up and down, each attempt on the wire,
//! each poll's outcome, skipped slots.
//!
//! This module owns the [`BusObserver`] trait and the plain data the bus reports through it.
//! The bus decides everything it reports (a meter is degraded after `degrade_after` unanswered
//! polls in a row: [`super::schedule::Degradation`]); an observer records, it never decides.
//! The bus keeps no counters for others and never reads back what it reported: the health
//! room implements the trait and owns the numbers that the service and the uplink read.

use std::time::{Duration, SystemTime};

use super::exchange::ExchangeStats;

/// Receives what a bus task observes. `meter` is the meter's index in the bus's configuration
/// order; `uptime` is the time since the task started. Called from the bus task: an
/// implementation must be quick (a lock and a few additions) and must not block.
pub trait BusObserver: Send + Sync {
    /// The link opened; `reopened` when it had failed before (not the first open).
    fn link_up(&self, reopened: bool, uptime: Duration);

    /// The link failed or could not be opened, for `reason`; no meter can be reached until
    /// [`BusObserver::link_up`].
    fn link_down(&self, reason: &str, uptime: Duration);

    /// One attempt of one request to `meter` ended.
    fn attempt(&self, meter: usize, attempt: &AttemptReport, uptime: Duration);

    /// A poll of `meter` ended.
    fn polled(&self, meter: usize, outcome: &PollOutcome, uptime: Duration);

    /// `meter` has had `overruns` slots skipped so far (the bus could not reach it in time).
    fn overruns(&self, meter: usize, overruns: u64, uptime: Duration);

    /// The wall clock stepped by `by_ms` milliseconds (negative: backward) against the
    /// monotonic clock; the bus moved its slots with it.
    fn clock_step(&self, by_ms: i64, uptime: Duration) {
        let _ = (by_ms, uptime);
    }

    /// `meter`'s clock was compared with the gateway's (its daily clock check).
    fn meter_clock(&self, meter: usize, report: &ClockReport, uptime: Duration) {
        let _ = (meter, report, uptime);
    }
}

/// A meter clock check, as the bus judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockReport {
    /// When (gateway time).
    pub at: SystemTime,
    /// Meter minus gateway time, ms.
    pub offset_ms: i64,
    /// Beyond the limit.
    pub off: bool,
    /// What was done: `time_sync`, why not (a technician's job, the midnight window…), or
    /// "within the limit".
    pub note: String,
}

/// One attempt on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptReport {
    /// The attempt repeats one that timed out.
    pub retry: bool,
    /// Time spent in the attempt.
    pub busy: Duration,
    /// No reply came in time.
    pub timed_out: bool,
    /// The exchange's wire counters (byte-stream transports; `None` for Modbus TCP, which
    /// frames through tokio-modbus).
    pub wire: Option<ExchangeStats>,
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollResult {
    /// The meter answered at least one request.
    Answered,
    /// The meter answered none.
    Unanswered,
    /// The link failed or was down (not the meter's fault), for this reason.
    LinkFailed(String),
}

/// One poll of one meter, as the bus saw it and decided about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// When the poll ended (gateway time).
    pub at: SystemTime,
    /// Answered, unanswered, or cut short by the link.
    pub result: PollResult,
    /// The first bad value's reason, when some values were bad.
    pub error: Option<String>,
    /// Values of good quality.
    pub good_values: usize,
    /// Values of bad quality.
    pub bad_values: usize,
    /// Unanswered polls in a row, this one included (a link failure neither adds nor resets).
    pub consecutive_failures: u32,
    /// The bus's decision: the meter is degraded (probed only every `probe_every` slots).
    pub degraded: bool,
}

/// An observer that records nothing (`meterd check-config`, tools that need no health).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl BusObserver for Unobserved {
    fn link_up(&self, _: bool, _: Duration) {}
    fn link_down(&self, _: &str, _: Duration) {}
    fn attempt(&self, _: usize, _: &AttemptReport, _: Duration) {}
    fn polled(&self, _: usize, _: &PollOutcome, _: Duration) {}
    fn overruns(&self, _: usize, _: u64, _: Duration) {}
}
