//! The time between two transactions on one bus: turnaround after the last byte, Modbus RTU
//! t3.5 silence, and the late-reply guard after a timeout.
//!
//! This module owns when the next request may leave: [`Pacing`] remembers when the wire was
//! last busy and which request timed out, and waits what must pass. It never sends, never
//! retries and never decides whether to (the bus task does); it sleeps, nothing more.

use std::time::Duration;

use tokio::time::Instant;

use super::trace::FrameTap;
use crate::config::EffectiveTiming;

/// A timed-out request, for the late-reply guard.
struct TimedOut {
    request: Vec<u8>,
    at: Instant,
    guard: Duration,
}

/// When the wire was last busy, and the request that last timed out.
#[derive(Default)]
pub(super) struct Pacing {
    /// When the last byte went or came (for turnaround and Modbus silence).
    last_activity: Option<Instant>,
    after_timeout: Option<TimedOut>,
}

impl Pacing {
    /// The link was (re)opened: nothing to keep silent after.
    pub(super) fn link_opened(&mut self) {
        self.last_activity = None;
    }

    /// The wire was last busy at `at`.
    pub(super) fn active_at(&mut self, at: Instant) {
        self.last_activity = Some(at);
    }

    /// A reply came. After a timed-out attempt, this reply may be the late answer to that
    /// attempt, and the answer to this one may still be on its way. A Modbus RTU reply (`rtu`)
    /// does not say which register it answers, so the late-reply guard stays armed, from now,
    /// for the next different request. DL/T 645 replies carry their DI: the exchange skips one
    /// about another item.
    pub(super) fn answered(&mut self, rtu: bool) {
        match self.after_timeout.as_mut() {
            Some(t) if rtu => t.at = Instant::now(),
            _ => self.after_timeout = None,
        }
    }

    /// `request` got no reply in time. With `guard` (a link on which the late reply can still
    /// arrive), a different request waits that long first.
    pub(super) fn timed_out(&mut self, request: &[u8], guard: Option<Duration>) {
        self.last_activity = Some(Instant::now());
        if let Some(guard) = guard {
            self.after_timeout = Some(TimedOut {
                request: request.to_vec(),
                at: Instant::now(),
                guard,
            });
        }
    }

    /// Waits what must pass before `request` goes out.
    pub(super) async fn wait_before(
        &mut self,
        request: &[u8],
        timing: &EffectiveTiming,
        modbus: bool,
        tap: &FrameTap,
    ) {
        // After a timeout, a different request waits out the late reply first; the exchange
        // then discards it with the rest of the stale input.
        if let Some(t) = &self.after_timeout
            && t.request != request
        {
            let until = t.at + t.guard;
            if until > Instant::now() {
                tap.note(&format!(
                    "late-reply guard: waiting {} after a timeout",
                    humantime::format_duration(t.guard)
                ));
                tokio::time::sleep_until(until).await;
            }
            self.after_timeout = None;
        }
        if let Some(last) = self.last_activity {
            let gap = if modbus {
                timing.turnaround.max(timing.modbus_silence)
            } else {
                timing.turnaround
            };
            sleep_precisely(last + gap).await;
        }
    }
}

/// Sleeps until `until` to within about 0.1 ms, for the silence between two transactions.
///
/// tokio's timer has a 1 ms resolution and rounds every deadline up to the next tick, so a
/// 2 ms turnaround used to last 2–3 ms plus the worker's wake-up: the bus benchmark measured
/// the next request leaving p50 1.2 ms / p99 3.1 ms after the configured silence. Here the
/// timer only covers the time up to 2 ms before the deadline; the rest is slept on the
/// blocking pool with `std::thread::sleep` (a high-resolution timer), which neither spins nor
/// holds a worker thread. Under a test's virtual clock ([`crate::clock::is_virtual`]) the
/// timer alone: a real sleep would neither move that clock nor be needed.
async fn sleep_precisely(until: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if until <= now {
        return;
    }
    if crate::clock::is_virtual() {
        tokio::time::sleep_until(until).await;
        return;
    }
    if until - now > TIMER_SLACK {
        tokio::time::sleep_until(until - TIMER_SLACK).await;
    }
    let left = until.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        // A failed blocking task (runtime shutting down) only shortens the silence.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}
