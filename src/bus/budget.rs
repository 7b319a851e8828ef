//! The bus-time budget of work done between polls (freeze records, event counters, meter
//! clocks): a token bucket that earns `share` of the wall time, spends what each read took,
//! and a quiet period after a look that found nothing to do.
//!
//! Shared by the freeze and event collectors so that both bound their bus time the same way;
//! each has its own bucket and share.

use std::time::Duration;

use tokio::time::Instant;

/// The token bucket's size: how much time may be spent in one go after a quiet spell.
pub const BURST: Duration = Duration::from_secs(30);

/// A bus-time budget.
#[derive(Debug)]
pub struct Budget {
    /// Bus time (ms) reads may still spend now; negative after a read that took more than was
    /// left (the debt is paid before the next read).
    tokens_ms: i64,
    refilled: Instant,
    /// Share of wall time earned, 0.01..=1.
    share: f64,
    /// No look for work before this (the last one found nothing).
    quiet_until: Option<Instant>,
}

impl Budget {
    /// A budget earning `percent` (1..=100) of the wall time, with `start_ms` to spend at once.
    pub fn new(percent: u8, start_ms: i64, now: Instant) -> Budget {
        Budget {
            tokens_ms: start_ms,
            refilled: now,
            share: f64::from(percent.clamp(1, 100)) / 100.0,
            quiet_until: None,
        }
    }

    /// Adds the bus time earned since the last refill; true when a read may start now (tokens
    /// left and not in a quiet period).
    pub fn allows(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = i64::try_from(elapsed.mul_f64(self.share).as_millis()).unwrap_or(i64::MAX);
        let cap = i64::try_from(BURST.as_millis()).unwrap_or(i64::MAX);
        self.tokens_ms = self.tokens_ms.saturating_add(earned).min(cap);
        self.refilled = now;
        self.tokens_ms > 0 && self.quiet_until.is_none_or(|q| now >= q)
    }

    /// Takes `spent` of bus time off the bucket.
    pub fn spend(&mut self, spent: Duration) {
        self.tokens_ms = self
            .tokens_ms
            .saturating_sub(i64::try_from(spent.as_millis()).unwrap_or(i64::MAX));
    }

    /// No look for work before `until` (the look now found nothing).
    pub fn quiet(&mut self, until: Instant) {
        self.quiet_until = Some(until);
    }

    /// The time left in the bucket, in ms (negative: debt).
    pub fn tokens_ms(&self) -> i64 {
        self.tokens_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_earns_its_share_and_pays_its_debts() {
        let t0 = Instant::now();
        let mut b = Budget::new(10, 0, t0);
        assert!(!b.allows(t0), "nothing to spend at first");
        // 10 s of wall time earn 1 s at 10 %.
        assert!(b.allows(t0 + Duration::from_secs(10)));
        assert_eq!(b.tokens_ms(), 1_000);
        b.spend(Duration::from_secs(3));
        assert!(!b.allows(t0 + Duration::from_secs(10)));
        // The 2 s debt takes 20 s to pay back.
        assert!(!b.allows(t0 + Duration::from_secs(29)));
        assert!(b.allows(t0 + Duration::from_secs(31)));
        // Never more than the burst.
        assert!(b.allows(t0 + Duration::from_secs(100_000)));
        assert_eq!(b.tokens_ms(), 30_000);
        b.quiet(t0 + Duration::from_secs(100_030));
        assert!(!b.allows(t0 + Duration::from_secs(100_010)));
        assert!(b.allows(t0 + Duration::from_secs(100_031)));
    }
}
