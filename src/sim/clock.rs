//! Simulated time: the meters' clock.
//!
//! This module owns the mapping from the host's clock to simulated time (a start instant and
//! a speed factor). Calendar arithmetic and RFC 3339 stamps are the crate's [`crate::clock`].
//! Real time is [`crate::clock::now`] and `tokio::time::Instant`, so that a test running the
//! simulator under tokio's paused clock moves it too.
//! It never formats protocol bytes and never sleeps.

use tokio::time::Instant;

use crate::clock::{UnixMillis, wall_clock_ms};

/// The simulated clock shared by every meter of one simulator.
#[derive(Debug, Clone)]
pub struct SimClock {
    start_real: Instant,
    /// Simulated time at `start_real`; `None` = follow the host's wall clock (speed 1).
    start_sim: Option<UnixMillis>,
    speed: f64,
}

impl SimClock {
    /// A clock that starts at `start` (or the host's time when `None`) and runs `speed`
    /// simulated seconds per real second.
    pub fn new(start: Option<UnixMillis>, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let start_sim = match start {
            None if (speed - 1.0).abs() < f64::EPSILON => None,
            None => Some(wall_clock_ms()),
            some => some,
        };
        Self {
            start_real: Instant::now(),
            start_sim,
            speed,
        }
    }

    /// The simulated time now.
    pub fn now(&self) -> UnixMillis {
        match self.start_sim {
            None => wall_clock_ms(),
            Some(start) => {
                let elapsed = self.start_real.elapsed().as_secs_f64() * 1000.0 * self.speed;
                start.saturating_add(elapsed as i64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_runs_ahead() {
        let c = SimClock::new(Some(0), 1000.0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now() >= 20_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_clock_follows_a_paused_runtime() {
        let c = SimClock::new(Some(0), 60.0);
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        // One virtual minute at 60× is an hour, however little real time passed.
        assert_eq!(c.now() / 1000, 3_600);
    }
}
