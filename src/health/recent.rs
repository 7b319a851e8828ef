//! One meter's last hour of trouble: [`RecentTrouble`], so the status page can tell "errors in
//! the last hour" from "errors once, long ago".
//!
//! This module owns a bounded, fixed-size record per meter: polls, timeouts, checksum errors
//! and skipped slots in 12 slices of five minutes, and the time of the last timeout and of the
//! last checksum error. It never grows with time or with errors. Attempts and overruns carry
//! no wall time (the bus reports its uptime), so they wait in `pending` and are placed at the
//! time of the meter's next poll outcome, which ends the attempts they belong to.
//!
//! Bytes per meter (inline in [`super::MeterHealth`], no heap): 12 slices × 8 bytes + the newest
//! slice number (4) + two times (2 × 4) + the pending counts (8) = **116 bytes**; 113 kB with
//! 1,000 meters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Width of one slice, in seconds.
const SLICE_S: u32 = 300;
/// Slices in one hour.
const SLICES: usize = 12;
/// One hour, in seconds.
pub const HOUR_S: u32 = 3_600;
/// `newest` of a record that has no slice yet.
const NO_SLICE: u32 = u32::MAX;

/// Counts of one slice (narrow: five minutes hold at most 3,000 polls at the shortest
/// interval, 100 ms; the counts saturate anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slice {
    polls: u16,
    timeouts: u16,
    checksum_errors: u16,
    overruns: u16,
}

impl Slice {
    fn add(&mut self, other: Slice) {
        self.polls = self.polls.saturating_add(other.polls);
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        self.checksum_errors = self.checksum_errors.saturating_add(other.checksum_errors);
        self.overruns = self.overruns.saturating_add(other.overruns);
    }
}

/// A meter's counts over the last hour (to five minutes: the slices that began 55–60 minutes
/// ago count in full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCounts {
    /// Poll outcomes (scheduled and one-shot, as the bus reported them).
    pub polls: u64,
    /// Attempts without a reply in time.
    pub timeouts: u64,
    /// Replies with a bad checksum or CRC.
    pub checksum_errors: u64,
    /// Poll slots skipped.
    pub overruns: u64,
}

impl HourCounts {
    /// Adds `other` (a bus sums its meters).
    pub fn add(&mut self, other: &HourCounts) {
        self.polls += other.polls;
        self.timeouts += other.timeouts;
        self.checksum_errors += other.checksum_errors;
        self.overruns += other.overruns;
    }
}

/// One meter's last hour: bounded, see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentTrouble {
    /// Counts of the slices `newest - SLICES + 1 ..= newest`, indexed by slice number % SLICES.
    slices: [Slice; SLICES],
    /// The newest slice number (seconds since the epoch ÷ [`SLICE_S`]); [`NO_SLICE`] before the
    /// first poll outcome.
    newest: u32,
    /// Seconds since the epoch of the last timeout; 0 for never.
    last_timeout: u32,
    /// Seconds since the epoch of the last checksum error; 0 for never.
    last_checksum_error: u32,
    /// Counted since the last poll outcome, not placed yet.
    pending: Slice,
}

impl Default for RecentTrouble {
    fn default() -> Self {
        Self {
            slices: [Slice::default(); SLICES],
            newest: NO_SLICE,
            last_timeout: 0,
            last_checksum_error: 0,
            pending: Slice::default(),
        }
    }
}

/// Seconds since the epoch, saturated to `u32` (good until 2106).
fn secs(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1))
}

fn saturate(n: u64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn time_of(s: u32) -> Option<SystemTime> {
    (s > 0).then(|| UNIX_EPOCH + Duration::from_secs(u64::from(s)))
}

impl RecentTrouble {
    /// Notes one attempt: whether it timed out, and the checksum errors its exchange counted.
    pub fn note_attempt(&mut self, timed_out: bool, checksum_errors: u64) {
        if timed_out {
            self.pending.timeouts = self.pending.timeouts.saturating_add(1);
        }
        self.pending.checksum_errors = self
            .pending
            .checksum_errors
            .saturating_add(saturate(checksum_errors));
    }

    /// Notes `skipped` more poll slots skipped.
    pub fn note_overruns(&mut self, skipped: u64) {
        self.pending.overruns = self.pending.overruns.saturating_add(saturate(skipped));
    }

    /// Counts a poll outcome at `at` and places what was noted since the last one at `at`.
    pub fn poll_ended(&mut self, at: SystemTime) {
        let t = secs(at);
        let mut counts = std::mem::take(&mut self.pending);
        counts.polls = 1;
        if counts.timeouts > 0 {
            self.last_timeout = t;
        }
        if counts.checksum_errors > 0 {
            self.last_checksum_error = t;
        }
        let slice = t / SLICE_S;
        self.advance(slice);
        // A time older than the record (the clock stepped back over an hour) is left out of
        // the counts; its times above still say "just now".
        if self.newest - slice < SLICES as u32 {
            self.slices[slice as usize % SLICES].add(counts);
        }
    }

    /// Makes `slice` the newest if it is newer, emptying the slices it skips over.
    fn advance(&mut self, slice: u32) {
        if self.newest == NO_SLICE {
            self.newest = slice;
            return;
        }
        if slice <= self.newest {
            return;
        }
        if slice - self.newest >= SLICES as u32 {
            self.slices = [Slice::default(); SLICES];
        } else {
            for s in self.newest + 1..=slice {
                self.slices[s as usize % SLICES] = Slice::default();
            }
        }
        self.newest = slice;
    }

    /// The counts of the hour before `now`.
    pub fn last_hour(&self, now: SystemTime) -> HourCounts {
        let mut h = HourCounts::default();
        if self.newest == NO_SLICE {
            return h;
        }
        let current = secs(now) / SLICE_S;
        let oldest = current.saturating_sub(SLICES as u32 - 1);
        for age in 0..SLICES as u32 {
            let Some(s) = self.newest.checked_sub(age) else {
                break;
            };
            if s >= oldest && s <= current {
                let c = self.slices[s as usize % SLICES];
                h.polls += u64::from(c.polls);
                h.timeouts += u64::from(c.timeouts);
                h.checksum_errors += u64::from(c.checksum_errors);
                h.overruns += u64::from(c.overruns);
            }
        }
        h
    }

    /// When the last timeout was seen (at its poll's end).
    pub fn last_timeout(&self) -> Option<SystemTime> {
        time_of(self.last_timeout)
    }

    /// When the last checksum error was seen (at its poll's end).
    pub fn last_checksum_error(&self) -> Option<SystemTime> {
        time_of(self.last_checksum_error)
    }

    /// True when a timeout or a checksum error was seen less than an hour before `now`
    /// (exact to the second; a time after `now`, the clock having stepped back, counts too).
    pub fn had_errors_within_hour(&self, now: SystemTime) -> bool {
        let now = secs(now);
        [self.last_timeout, self.last_checksum_error]
            .into_iter()
            .any(|t| t > 0 && now.saturating_sub(t) < HOUR_S)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    const T0: u64 = 1_795_777_200; // 2026-11-27T11:00:00Z, a slice boundary

    #[test]
    fn errors_count_at_their_polls_time_and_leave_the_hour_window() {
        let mut r = RecentTrouble::default();
        assert!(!r.had_errors_within_hour(at(T0)));
        r.note_attempt(true, 0);
        r.note_attempt(false, 2);
        r.note_overruns(3);
        r.poll_ended(at(T0 + 10));
        r.poll_ended(at(T0 + 70));
        let h = r.last_hour(at(T0 + 100));
        assert_eq!(
            h,
            HourCounts {
                polls: 2,
                timeouts: 1,
                checksum_errors: 2,
                overruns: 3
            }
        );
        assert_eq!(r.last_timeout(), Some(at(T0 + 10)));
        assert_eq!(r.last_checksum_error(), Some(at(T0 + 10)));
        // Exact to the second for "an error in the last hour".
        assert!(r.had_errors_within_hour(at(T0 + 10 + 3_599)));
        assert!(!r.had_errors_within_hour(at(T0 + 10 + 3_600)));
        // The counts leave with their slice: still there 59 min later, gone after 60.
        assert_eq!(r.last_hour(at(T0 + 3_599)).timeouts, 1);
        assert_eq!(r.last_hour(at(T0 + 3_600)), HourCounts::default());
    }

    #[test]
    fn slices_roll_over_and_the_record_stays_bounded() {
        let mut r = RecentTrouble::default();
        // Five hours of polls every 10 s, each with a timeout: never more than an hour counted.
        for i in 0..1_800u64 {
            r.note_attempt(true, 0);
            r.poll_ended(at(T0 + 10 * i));
        }
        let now = at(T0 + 10 * 1_799);
        let h = r.last_hour(now);
        // 11 full slices of 30 polls and the current one (10 s × 30 = 300 s), begun at 04:55.
        assert_eq!((h.polls, h.timeouts), (360, 360));
        assert_eq!(std::mem::size_of::<RecentTrouble>(), 116);
        // A gap of more than an hour empties the record; a shorter gap only the slices it skips.
        r.poll_ended(at(T0 + 10 * 1_799 + 1_800));
        assert_eq!(r.last_hour(at(T0 + 10 * 1_799 + 1_800)).polls, 180 + 1);
        r.poll_ended(at(T0 + 10 * 1_799 + 2 * HOUR_S as u64 + 1_800));
        let h = r.last_hour(at(T0 + 10 * 1_799 + 2 * HOUR_S as u64 + 1_800));
        assert_eq!((h.polls, h.timeouts), (1, 0));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_counts_sane() {
        let mut r = RecentTrouble::default();
        r.poll_ended(at(T0 + 3 * HOUR_S as u64));
        // Ten minutes back: counted in its own slice.
        r.note_attempt(false, 1);
        r.poll_ended(at(T0 + 3 * HOUR_S as u64 - 600));
        assert_eq!(r.last_hour(at(T0 + 3 * HOUR_S as u64)).checksum_errors, 1);
        // Two hours back: older than the record, left out of the counts, but "just now".
        r.note_attempt(true, 0);
        r.poll_ended(at(T0 + HOUR_S as u64));
        let h = r.last_hour(at(T0 + 3 * HOUR_S as u64));
        assert_eq!((h.polls, h.timeouts), (2, 0));
        assert!(r.had_errors_within_hour(at(T0 + HOUR_S as u64 + 5)));
    }
}
