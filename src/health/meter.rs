//! One meter's health: [`MeterHealth`] and its [`MeterState`].
//!
//! This module owns the per-meter counters and how a reported poll changes them. It never
//! decides a meter's state on its own (the bus reports it) and never formats times except
//! when serialized (RFC 3339 with milliseconds, the shape `meterd status` reads).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::WireCounters;
use super::recent::RecentTrouble;
use crate::bus::observer::{AttemptReport, PollOutcome, PollResult};
use crate::clock::rfc3339_millis;

/// A meter's state: the one meaning, in `/api/status`, `/metrics` and the retained meter status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterState {
    /// The meter answers: its last poll got an answer, or fewer than `degrade_after` polls in a
    /// row went unanswered.
    Ok,
    /// `degrade_after` or more polls in a row got no answer: the bus probes the meter only every
    /// `probe_every` slots until it answers again.
    Degraded,
    /// The bus's link is down (or failed during the meter's last poll): the meter cannot be
    /// reached at all. Not the meter's fault; it is polled again once the link is back.
    Unreachable,
}

/// One meter's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterHealth {
    /// Meter id.
    pub id: String,
    /// Protocol name.
    pub protocol: &'static str,
    /// State.
    pub state: MeterState,
    /// Gateway time of the last poll the meter answered (RFC 3339 with milliseconds in JSON).
    #[serde(serialize_with = "rfc3339_or_null")]
    pub last_success: Option<SystemTime>,
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
    /// The last hour's polls, timeouts, checksum errors and skipped slots, with the time of
    /// the last timeout and checksum error (116 bytes, fixed; not part of the published
    /// shapes).
    #[serde(skip)]
    pub recent: RecentTrouble,
    /// The meter's last clock check (DL/T 645-2007 meters, while the gateway's clock counts as
    /// synchronised); `None` before the first.
    pub clock: Option<MeterClock>,
}

/// A meter's last clock check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterClock {
    /// Gateway time of the check (RFC 3339 with milliseconds in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub checked_at: SystemTime,
    /// Meter minus gateway time, seconds.
    pub offset_s: f64,
    /// Beyond the limit.
    pub off: bool,
    /// What was done: `time_sync`, why not, or "within the limit".
    pub note: String,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*t))
}

fn rfc3339_or_null<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

impl MeterHealth {
    /// A fresh meter: ok, never polled.
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
            recent: RecentTrouble::default(),
            clock: None,
        }
    }

    /// Records one attempt of a request to this meter.
    pub fn record_attempt(&mut self, a: &AttemptReport) {
        if let Some(wire) = &a.wire {
            self.wire.add(wire);
        }
        if a.timed_out {
            self.timeouts += 1;
        }
        self.recent.note_attempt(
            a.timed_out,
            a.wire.as_ref().map_or(0, |w| w.checksum_errors),
        );
    }

    /// Records a poll as the bus reported it (state included: the bus decided it).
    pub fn record_poll(&mut self, o: &PollOutcome) {
        self.last_good_values = o.good_values;
        self.last_bad_values = o.bad_values;
        self.recent.poll_ended(o.at);
        match &o.result {
            PollResult::LinkFailed(reason) => {
                self.state = MeterState::Unreachable;
                self.last_error = Some(reason.clone());
                self.polls_failed += 1;
                return;
            }
            PollResult::Answered => {
                self.polls_ok += 1;
                self.last_success = Some(o.at);
            }
            PollResult::Unanswered => self.polls_failed += 1,
        }
        self.consecutive_failures = o.consecutive_failures;
        self.state = if o.degraded {
            MeterState::Degraded
        } else {
            MeterState::Ok
        };
        if let Some(e) = &o.error {
            self.last_error = Some(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(result: PollResult, failures: u32, degraded: bool) -> PollOutcome {
        PollOutcome {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_777_201_234),
            result,
            error: None,
            good_values: 0,
            bad_values: 0,
            consecutive_failures: failures,
            degraded,
        }
    }

    #[test]
    fn a_poll_is_recorded_as_the_bus_decided_it() {
        let mut m = MeterHealth::new("m", "modbus-rtu");
        let mut o = outcome(PollResult::Unanswered, 1, false);
        o.error = Some("no reply".into());
        m.record_poll(&o);
        m.record_poll(&outcome(PollResult::Unanswered, 2, true));
        assert_eq!(m.state, MeterState::Degraded);
        assert_eq!(m.last_error.as_deref(), Some("no reply"));
        m.record_poll(&outcome(
            PollResult::LinkFailed("port gone".into()),
            2,
            false,
        ));
        assert_eq!(
            (m.state, m.consecutive_failures),
            (MeterState::Unreachable, 2)
        );
        m.record_poll(&outcome(PollResult::Answered, 0, false));
        assert_eq!((m.state, m.consecutive_failures), (MeterState::Ok, 0));
        assert_eq!((m.polls_ok, m.polls_failed), (1, 3));
    }

    #[test]
    fn attempts_count_in_the_last_hour_at_their_polls_end() {
        let mut m = MeterHealth::new("m", "dlt645-2007");
        let o = outcome(PollResult::Answered, 0, false);
        m.record_attempt(&AttemptReport {
            retry: false,
            busy: Duration::from_millis(40),
            timed_out: false,
            wire: Some(WireCounters {
                checksum_errors: 1,
                ..WireCounters::default()
            }),
        });
        assert!(
            !m.recent.had_errors_within_hour(o.at),
            "placed at the poll's end"
        );
        m.record_poll(&o);
        assert!(m.recent.had_errors_within_hour(o.at));
        assert_eq!(
            m.recent.last_checksum_error(),
            Some(o.at - Duration::from_millis(234))
        );
        assert_eq!(m.recent.last_hour(o.at).checksum_errors, 1);
        assert_eq!(m.recent.last_timeout(), None);
    }

    #[test]
    fn serializes_as_before_with_rfc3339_millis() {
        let mut m = MeterHealth::new("m1", "dlt645-2007");
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert!(
            json.contains(r#""state":"ok","last_success":null,"last_error":null"#),
            "{json}"
        );
        m.record_poll(&outcome(PollResult::Answered, 0, false));
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert!(
            json.contains(r#""last_success":"2026-11-27T11:00:01.234Z""#),
            "{json}"
        );
    }
}
