//! Health of a bus and its meters: the counters and states a bus task publishes.
//!
//! This module owns the status snapshot (`meterd status`, the retained MQTT status topics)
//! and the rules that move a meter between ok, degraded and unreachable. It does no I/O and
//! reads no clock: the bus task passes times in.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::exchange::ExchangeStats;
use crate::reading::rfc3339_millis;

/// A meter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterState {
    /// The last poll got an answer (or no poll failed `degrade_after` times in a row).
    Ok,
    /// `degrade_after` or more polls in a row got no answer: probed every `probe_every` slots.
    Degraded,
    /// The bus's link is down: the meter cannot be reached at all.
    Unreachable,
}

/// A bus's link state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum LinkState {
    /// Not opened yet.
    Starting,
    /// Open.
    Up,
    /// Down, with the reason; reopened with backoff.
    Down(String),
}

/// One meter's health.
#[derive(Debug, Clone, Serialize)]
pub struct MeterStatus {
    /// Meter id.
    pub id: String,
    /// Protocol name.
    pub protocol: &'static str,
    /// State.
    pub state: MeterState,
    /// Gateway time of the last poll the meter answered (RFC 3339).
    pub last_success: Option<String>,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// Polls in a row that got no answer.
    pub consecutive_failures: u32,
    /// Polls the meter answered.
    pub polls_ok: u64,
    /// Polls that got no answer.
    pub polls_failed: u64,
    /// Values of good quality in the last poll.
    pub last_good_values: usize,
    /// Values of bad quality in the last poll.
    pub last_bad_values: usize,
    /// Slots skipped because the bus could not reach the meter in time.
    pub overruns: u64,
    /// Attempts to this meter that got no reply in time.
    pub timeouts: u64,
    /// Wire counters of this meter's transactions (checksum errors, noise bytes, …).
    pub wire: WireCounters,
}

impl MeterStatus {
    /// A fresh status.
    pub fn new(id: &str, protocol: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            protocol,
            state: MeterState::Ok,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
            polls_ok: 0,
            polls_failed: 0,
            last_good_values: 0,
            last_bad_values: 0,
            overruns: 0,
            timeouts: 0,
            wire: WireCounters::default(),
        }
    }

    /// Records a poll; returns true when the meter's state changed between ok and degraded.
    pub fn record_poll(
        &mut self,
        answered: bool,
        error: Option<String>,
        at: SystemTime,
        degrade_after: u32,
    ) -> bool {
        let before = self.state;
        if answered {
            self.polls_ok += 1;
            self.consecutive_failures = 0;
            self.last_success = Some(rfc3339_millis(at));
            self.state = MeterState::Ok;
        } else {
            self.polls_failed += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.state = if self.consecutive_failures >= degrade_after.max(1) {
                MeterState::Degraded
            } else {
                MeterState::Ok
            };
        }
        if error.is_some() {
            self.last_error = error;
        }
        before != self.state
    }
}

/// One bus's health.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// Bus name.
    pub name: String,
    /// Link state.
    pub link: LinkState,
    /// Transactions (attempts) on the wire.
    pub transactions: u64,
    /// Attempts that got no reply in time.
    pub timeouts: u64,
    /// Attempts repeated after a timeout.
    pub retries: u64,
    /// Times the link failed and was closed.
    pub link_errors: u64,
    /// Times the link was opened again after a failure.
    pub reopens: u64,
    /// Wire counters summed over all exchanges (stale/echo/noise bytes, checksum errors, …).
    pub wire: WireCounters,
    /// Slots skipped on this bus, all meters.
    pub overruns: u64,
    /// Time spent in transactions.
    #[serde(serialize_with = "millis")]
    pub busy: Duration,
    /// Time since the task started.
    #[serde(serialize_with = "millis")]
    pub uptime: Duration,
    /// busy / uptime.
    pub utilisation: f64,
    /// The meters.
    pub meters: Vec<MeterStatus>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A bus's wire counters as published: the sum of its exchanges' [`ExchangeStats`].
pub type WireCounters = ExchangeStats;

impl BusStatus {
    /// A fresh status for `name` with `meters`.
    pub fn new(name: &str, meters: Vec<MeterStatus>) -> Self {
        Self {
            name: name.to_owned(),
            link: LinkState::Starting,
            transactions: 0,
            timeouts: 0,
            retries: 0,
            link_errors: 0,
            reopens: 0,
            wire: WireCounters::default(),
            overruns: 0,
            busy: Duration::ZERO,
            uptime: Duration::ZERO,
            utilisation: 0.0,
            meters,
        }
    }

    /// Updates uptime and utilisation.
    pub fn tick(&mut self, uptime: Duration) {
        self.uptime = uptime;
        self.utilisation = if uptime.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / uptime.as_secs_f64()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_degrades_after_n_failures_and_recovers_on_success() {
        let mut m = MeterStatus::new("m", "modbus-rtu");
        let t = SystemTime::UNIX_EPOCH;
        assert!(!m.record_poll(false, Some("no reply".into()), t, 3));
        assert!(!m.record_poll(false, None, t, 3));
        assert_eq!(m.state, MeterState::Ok);
        assert!(m.record_poll(false, None, t, 3));
        assert_eq!(m.state, MeterState::Degraded);
        assert_eq!(m.last_error.as_deref(), Some("no reply"));
        assert!(m.record_poll(true, None, t, 3));
        assert_eq!((m.state, m.consecutive_failures), (MeterState::Ok, 0));
        assert_eq!((m.polls_ok, m.polls_failed), (1, 3));
    }
}
