//! The gateway's count of wall-clock steps, shared by its bus tasks.
//!
//! Each bus task notices a step of the wall clock against the monotonic clock by itself
//! ([`super::schedule::PollScheduler::clock`]) and moves its own slots. The step is one event
//! for the gateway, though, whichever bus sees it first: [`ClockSteps`] keeps the wall-minus-
//! monotonic offset last seen by any bus, counts a step once, and is what the gateway status
//! publishes as `clock_steps`. It reads the monotonic clock only to give every bus the same
//! origin ([`ClockSteps::mono_ms`]); it never reads the wall clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::schedule::{CLOCK_STEP_THRESHOLD_MS, Millis};
use crate::sync::lock;

/// Wall-clock steps seen by the buses of one gateway.
#[derive(Debug)]
pub struct ClockSteps {
    /// The origin of every bus's monotonic milliseconds.
    origin: Instant,
    /// Wall minus monotonic time, as last seen by any bus.
    offset: Mutex<Option<Millis>>,
    steps: AtomicU64,
}

impl Default for ClockSteps {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockSteps {
    /// No steps yet; the monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset: Mutex::new(None),
            steps: AtomicU64::new(0),
        }
    }

    /// Milliseconds from the shared origin to `at` (monotonic).
    pub fn mono_ms(&self, at: Instant) -> Millis {
        Millis::try_from(at.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(Millis::MAX)
    }

    /// A bus saw `wall - mono` = `offset`; true when that is a step no bus has counted yet
    /// (then it is counted). Small changes (a slewing clock) are followed without counting.
    pub fn observe(&self, offset: Millis) -> bool {
        let mut last = lock(&self.offset);
        let step = last.is_some_and(|l| offset.saturating_sub(l).abs() > CLOCK_STEP_THRESHOLD_MS);
        *last = Some(offset);
        if step {
            self.steps.fetch_add(1, Ordering::Relaxed);
        }
        step
    }

    /// Steps counted since start.
    pub fn count(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_seen_by_three_buses_counts_once() {
        let c = ClockSteps::new();
        for _ in 0..3 {
            assert!(!c.observe(1_000_000), "the first look is no step");
        }
        assert!(!c.observe(1_000_400), "a slew is followed");
        assert!(
            c.observe(1_000_400 - 3_600_000),
            "the first bus counts the step"
        );
        assert!(!c.observe(1_000_400 - 3_600_000 + 3));
        assert!(!c.observe(1_000_400 - 3_600_000 + 5));
        assert_eq!(c.count(), 1);
        assert!(c.observe(1_000_400), "stepped forward again");
        assert_eq!(c.count(), 2);
    }
}
