//! One bus's health: [`BusHealth`] and its [`LinkState`], and the recording of what the bus
//! task reports (`impl BusObserver for Mutex<BusHealth>`).
//!
//! This module owns the bus counters (transactions, timeouts, retries, link errors, wire
//! counters, utilisation) and the list of its meters' [`MeterHealth`]. It never does I/O and
//! reads no clock: the bus passes its uptime with every report.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::meter::{MeterClock, MeterHealth, MeterState};
use crate::bus::exchange::ExchangeStats;
use crate::bus::observer::{AttemptReport, BusObserver, ClockReport, PollOutcome};
use crate::config::BusConfig;
use crate::sync::lock;

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

/// A bus's wire counters as published: the sum of its exchanges' [`ExchangeStats`].
pub type WireCounters = ExchangeStats;

/// One bus's health.
#[derive(Debug, Clone, Serialize)]
pub struct BusHealth {
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
    /// Steps of the wall clock this bus saw (and moved its slots for).
    pub clock_steps: u64,
    /// Time spent in transactions.
    #[serde(serialize_with = "millis")]
    pub busy: Duration,
    /// Time since the task started.
    #[serde(serialize_with = "millis")]
    pub uptime: Duration,
    /// busy / uptime.
    pub utilisation: f64,
    /// The meters, in the bus's configuration order.
    pub meters: Vec<MeterHealth>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl BusHealth {
    /// A fresh health for `name` with `meters`.
    pub fn new(name: &str, meters: Vec<MeterHealth>) -> Self {
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
            clock_steps: 0,
            busy: Duration::ZERO,
            uptime: Duration::ZERO,
            utilisation: 0.0,
            meters,
        }
    }

    /// A fresh health for a configured bus: its meters in configuration order, as the bus task
    /// numbers them in its reports.
    pub fn for_bus(bus: &BusConfig) -> Self {
        let meters = bus
            .meters
            .iter()
            .map(|m| {
                let m = m.get_ref();
                MeterHealth::new(&m.effective_id(&bus.name), m.protocol.name())
            })
            .collect();
        Self::new(&bus.name, meters)
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

    fn record(&mut self, uptime: Duration, f: impl FnOnce(&mut Self)) {
        self.tick(uptime);
        f(self);
    }
}

/// The shared health of a bus is the bus task's observer: the task records into it, the
/// service and the uplink lock it to read.
impl BusObserver for Mutex<BusHealth> {
    fn link_up(&self, reopened: bool, uptime: Duration) {
        lock(self).record(uptime, |s| {
            s.link = LinkState::Up;
            if reopened {
                s.reopens += 1;
            }
            for m in &mut s.meters {
                if m.state == MeterState::Unreachable {
                    m.state = MeterState::Ok;
                }
            }
        });
    }

    fn link_down(&self, reason: &str, uptime: Duration) {
        lock(self).record(uptime, |s| {
            s.link = LinkState::Down(reason.to_owned());
            s.link_errors += 1;
            for m in &mut s.meters {
                m.state = MeterState::Unreachable;
            }
        });
    }

    fn attempt(&self, meter: usize, a: &AttemptReport, uptime: Duration) {
        lock(self).record(uptime, |s| {
            if a.retry {
                s.retries += 1;
            }
            s.transactions += 1;
            s.busy += a.busy;
            if let Some(wire) = &a.wire {
                s.wire.add(wire);
            }
            if a.timed_out {
                s.timeouts += 1;
            }
            if let Some(m) = s.meters.get_mut(meter) {
                m.record_attempt(a);
            }
        });
    }

    fn polled(&self, meter: usize, outcome: &PollOutcome, uptime: Duration) {
        lock(self).record(uptime, |s| {
            if let Some(m) = s.meters.get_mut(meter) {
                m.record_poll(outcome);
            }
        });
    }

    fn overruns(&self, meter: usize, overruns: u64, uptime: Duration) {
        lock(self).record(uptime, |s| {
            if let Some(m) = s.meters.get_mut(meter) {
                m.recent.note_overruns(overruns.saturating_sub(m.overruns));
                m.overruns = overruns;
            }
            s.overruns = s.meters.iter().map(|m| m.overruns).sum();
        });
    }

    fn clock_step(&self, _by_ms: i64, uptime: Duration) {
        lock(self).record(uptime, |s| s.clock_steps += 1);
    }

    fn meter_clock(&self, meter: usize, report: &ClockReport, uptime: Duration) {
        lock(self).record(uptime, |s| {
            if let Some(m) = s.meters.get_mut(meter) {
                m.clock = Some(MeterClock {
                    checked_at: report.at,
                    offset_s: report.offset_ms as f64 / 1000.0,
                    off: report.off,
                    note: report.note.clone(),
                });
            }
        });
    }
}
