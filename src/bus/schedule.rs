//! When each meter on a bus is due: wall-clock aligned slots kept on the monotonic clock,
//! overrun skipping, degraded probing.
//!
//! A meter with a 15-minute interval is read in the slots starting at :00, :15, :30 and :45 of
//! wall-clock time (UTC, plus an optional offset), whatever time the daemon started. When the
//! bus cannot reach a meter before its next slot begins (the bus is overloaded or a run of dead
//! meters ate the time), the missed slot is skipped and counted as an overrun rather than piling
//! up reads. A degraded meter (many consecutive failures) is probed only every `probe_every`
//! slots, so a dead meter costs the bus little.
//!
//! The rule that makes a meter degraded lives here too ([`Degradation`]): `degrade_after`
//! unanswered polls in a row. The bus task applies it and reports the result; nothing else
//! decides it.
//!
//! Slots are kept on the monotonic clock and aligned to the wall clock
//! ([`PollScheduler::clock`]). The bus task passes both clocks in; the scheduler keeps their
//! difference. While the wall clock runs steady (small NTP slews included, under
//! [`CLOCK_STEP_THRESHOLD_MS`] between two looks), the scheduling time is the wall time and
//! slots land on wall-clock boundaries. When the wall clock *steps* (an RTC set wrong, a bad
//! NTP or GPS fix), every meter keeps its place on the monotonic clock: the next read comes
//! when it would have come without the step (no pause after a backward step, no catch-up
//! burst and no overruns after a forward one), its slot key is the new wall time's slot, and
//! the reads after it are on the new wall clock's boundaries again. The step is reported
//! ([`ClockStep`]) for the bus to log and count.
//!
//! This module owns no clock and does no I/O: the times (milliseconds) are passed in by the
//! bus task, so slot logic is tested on simulated time.

/// Milliseconds since the Unix epoch (UTC); also milliseconds on a monotonic clock.
pub type Millis = i64;

/// How far the wall clock may move against the monotonic clock between two looks before it
/// is a step rather than a slew: 1 s.
pub const CLOCK_STEP_THRESHOLD_MS: Millis = 1_000;

/// The wall clock stepped against the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStep {
    /// How far, in milliseconds: positive forward, negative backward.
    pub by_ms: Millis,
    /// The wall time the monotonic clock predicted.
    pub expected: Millis,
    /// The wall time observed.
    pub observed: Millis,
}

/// The timing of one meter's polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Slot length in milliseconds (≥ 1).
    pub interval_ms: i64,
    /// Shift of the slot grid from the epoch-aligned one, in milliseconds (0 ≤ offset < interval).
    pub offset_ms: i64,
}

impl Cadence {
    /// A cadence of `interval_ms` aligned to the epoch (so to the wall clock), with no offset.
    pub fn every(interval_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            offset_ms: 0,
        }
    }

    /// The start of the slot that contains `t`.
    pub fn slot_start(&self, t: Millis) -> Millis {
        let shifted = t - self.offset_ms;
        shifted.div_euclid(self.interval_ms) * self.interval_ms + self.offset_ms
    }

    /// The start of the first slot that begins strictly after `t`.
    pub fn next_slot_after(&self, t: Millis) -> Millis {
        self.slot_start(t) + self.interval_ms
    }
}

/// Scheduling state of one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    cadence: Cadence,
    /// Start of the slot in which the meter is next due.
    due: Millis,
    /// Slots skipped because the meter could not be read before its next slot began.
    overruns: u64,
    /// While degraded, probe only in every n-th slot (1 = every slot).
    probe_every: u32,
    /// When this meter was last read, as a position in the order of reads (0 = never).
    last_read: u64,
}

/// The poll order of all meters on one bus.
#[derive(Debug, Clone, Default)]
pub struct PollScheduler {
    entries: Vec<Entry>,
    /// Reads completed so far; stamps [`Entry::last_read`].
    reads: u64,
    /// Wall time minus monotonic time at the last look ([`PollScheduler::clock`]).
    offset: Option<Millis>,
}

/// The meter the bus should read now, with the slot the read belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Index of the meter (order of [`PollScheduler::add`]).
    pub meter: usize,
    /// Start of the slot this read belongs to (the reading's schedule key).
    pub slot: Millis,
}

impl PollScheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a meter; its first read is due in the slot containing `now` (read at once on start).
    /// Returns its index.
    pub fn add(&mut self, cadence: Cadence, now: Millis) -> usize {
        self.entries.push(Entry {
            cadence,
            due: cadence.slot_start(now),
            overruns: 0,
            probe_every: 1,
            last_read: 0,
        });
        self.entries.len() - 1
    }

    /// Looks at both clocks: `wall` (ms since the epoch) and `mono` (ms on a monotonic clock),
    /// read together. Returns the scheduling time to pass to [`PollScheduler::next_due`] (the
    /// wall time) and the step, when the wall clock moved more than
    /// [`CLOCK_STEP_THRESHOLD_MS`] against the monotonic clock since the last look. On a step,
    /// every meter's due time moves with the wall clock, so that it stays where it was on the
    /// monotonic clock: the bus neither pauses for a backward step nor bursts after a forward
    /// one. Smaller differences (a slewing clock) are followed silently.
    pub fn clock(&mut self, wall: Millis, mono: Millis) -> (Millis, Option<ClockStep>) {
        let observed = wall.saturating_sub(mono);
        let step = match self.offset {
            Some(before) => {
                let by = observed.saturating_sub(before);
                (by.abs() > CLOCK_STEP_THRESHOLD_MS).then_some(ClockStep {
                    by_ms: by,
                    expected: mono.saturating_add(before),
                    observed: wall,
                })
            }
            None => None,
        };
        self.offset = Some(observed);
        if let Some(step) = step {
            for e in &mut self.entries {
                e.due = e.due.saturating_add(step.by_ms);
            }
        }
        (wall, step)
    }

    /// Number of meters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no meter is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The meter to read now, if any is due: the one with the earliest due slot; among those,
    /// the one read least recently (then configuration order). A meter whose slot passed
    /// entirely without a read is moved to the slot containing `now` and its skipped slots are
    /// counted as overruns. The least-recently-read rule keeps an overloaded bus fair: every
    /// meter gets its turn, instead of the first ones in the file taking every slot.
    pub fn next_due(&mut self, now: Millis) -> Option<Due> {
        for e in &mut self.entries {
            let current = e.cadence.slot_start(now);
            // After a clock step a due time may lie between two boundaries: its slot is the
            // one that contains it.
            let due_slot = e.cadence.slot_start(e.due);
            if due_slot < current {
                let missed = (current - due_slot) / e.cadence.interval_ms;
                e.overruns += u64::try_from(missed).unwrap_or(0);
                e.due = current;
            }
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.due <= now)
            .min_by_key(|(i, e)| (e.due, e.last_read, *i))
            .map(|(meter, e)| Due {
                meter,
                slot: e.cadence.slot_start(e.due),
            })
    }

    /// Records that the read of `due` finished (successfully or not); the meter is next due
    /// in the slot after the one it was read in, or `probe_every` slots later while degraded.
    pub fn complete(&mut self, due: Due) {
        self.reads += 1;
        let stamp = self.reads;
        if let Some(e) = self.entries.get_mut(due.meter) {
            e.last_read = stamp;
            let step = e
                .cadence
                .interval_ms
                .saturating_mul(i64::from(e.probe_every.max(1)));
            e.due = due.slot.saturating_add(step);
        }
    }

    /// Puts a meter into degraded mode (probe every `probe_every` slots) or back to normal (1).
    pub fn set_probe_every(&mut self, meter: usize, probe_every: u32) {
        if let Some(e) = self.entries.get_mut(meter) {
            e.probe_every = probe_every.max(1);
        }
    }

    /// Slots skipped so far for a meter.
    pub fn overruns(&self, meter: usize) -> u64 {
        self.entries.get(meter).map_or(0, |e| e.overruns)
    }

    /// When the next read of any meter is due (for sleeping until then), or `None` if empty.
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.entries.iter().map(|e| e.due).min()
    }
}

/// Dead-meter degradation of one meter: its unanswered polls in a row, and the rule that makes
/// it degraded (probed only every `probe_every` slots) after `degrade_after` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Degradation {
    consecutive_failures: u32,
    degraded: bool,
}

impl Degradation {
    /// Records a poll the link did not cut short; returns true when the meter's degraded
    /// state changed. An answer ends degradation at once.
    pub fn record(&mut self, answered: bool, degrade_after: u32) -> bool {
        let before = self.degraded;
        if answered {
            self.consecutive_failures = 0;
            self.degraded = false;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.degraded = self.consecutive_failures >= degrade_after.max(1);
        }
        before != self.degraded
    }

    /// The link failed: the meter is unreachable rather than degraded, until a poll decides
    /// again. Its failures in a row are kept (a dead port is not the meter's fault).
    pub fn unreachable(&mut self) {
        self.degraded = false;
    }

    /// Whether the meter is degraded.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Unanswered polls in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Every how many slots the meter is read: `probe_every` while degraded, else 1.
    pub fn probe_every(&self, probe_every: u32) -> u32 {
        if self.degraded { probe_every } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn slots_are_aligned_to_the_wall_clock() {
        let c = Cadence::every(15 * MIN);
        // 10:07:30 is in the 10:00 slot; the next slot starts at 10:15.
        let t = 10 * 60 * MIN + 7 * MIN + 30_000;
        assert_eq!(c.slot_start(t), 10 * 60 * MIN);
        assert_eq!(c.next_slot_after(t), 10 * 60 * MIN + 15 * MIN);
        let shifted = Cadence {
            interval_ms: 15 * MIN,
            offset_ms: 5_000,
        };
        assert_eq!(shifted.slot_start(t), 10 * 60 * MIN + 5_000);
        // Times before the epoch still land in the right slot.
        assert_eq!(c.slot_start(-1), -15 * MIN);
    }

    #[test]
    fn reads_once_per_slot_in_order() {
        let mut s = PollScheduler::new();
        let start = 100 * MIN + 7_000;
        let a = s.add(Cadence::every(MIN), start);
        let b = s.add(Cadence::every(MIN), start);
        let first = s.next_due(start).unwrap();
        assert_eq!(
            first,
            Due {
                meter: a,
                slot: 100 * MIN
            }
        );
        s.complete(first);
        let second = s.next_due(start + 100).unwrap();
        assert_eq!(second.meter, b);
        s.complete(second);
        assert_eq!(s.next_due(start + 200), None, "both read in this slot");
        assert_eq!(s.next_wakeup(), Some(101 * MIN));
        assert_eq!(s.next_due(101 * MIN).map(|d| d.meter), Some(a));
        assert_eq!(s.overruns(a), 0);
    }

    #[test]
    fn an_overrun_skips_to_the_current_slot_and_is_counted() {
        let mut s = PollScheduler::new();
        let m = s.add(Cadence::every(MIN), 0);
        let d = s.next_due(0).unwrap();
        // The read took 3.5 slots (a dead bus, say): the slots at 1, 2 and 3 minutes are gone.
        s.complete(d);
        let late = 3 * MIN + 30_000;
        let d2 = s.next_due(late).unwrap();
        assert_eq!(
            d2,
            Due {
                meter: m,
                slot: 3 * MIN
            }
        );
        assert_eq!(
            s.overruns(m),
            2,
            "slots 1 and 2 were skipped, slot 3 is read late"
        );
        s.complete(d2);
        assert_eq!(s.next_due(late + 1), None, "no pile-up of missed reads");
    }

    #[test]
    fn an_overloaded_bus_reads_every_meter_in_turn() {
        // Three meters every minute, each read taking 40 s: the bus can read 1.5 per slot.
        let mut s = PollScheduler::new();
        for _ in 0..3 {
            s.add(Cadence::every(MIN), 0);
        }
        let mut now = 0;
        let mut reads = [0u32; 3];
        for _ in 0..30 {
            let d = s.next_due(now).unwrap_or_else(|| {
                now = s.next_wakeup().unwrap();
                s.next_due(now).unwrap()
            });
            reads[d.meter] += 1;
            now += 40_000;
            s.complete(d);
        }
        assert!(
            reads.iter().all(|&n| n == 10),
            "each meter gets a third of the reads: {reads:?}"
        );
    }

    /// A read in [`run_on`]: meter, monotonic time, slot key, wall time.
    type Read = (usize, Millis, Millis, Millis);

    /// Runs a bus of `meters` meters (every minute, each read taking 2 s) for `minutes` on
    /// simulated time, the way the bus task does: look at both clocks, read what is due, else
    /// sleep (on the monotonic clock) until the next wake-up. The wall clock is the monotonic
    /// one plus `wall_at(mono)`'s offset. Returns each read as (meter, monotonic time, slot
    /// key, wall time) and the steps seen.
    fn run_on(
        meters: usize,
        minutes: i64,
        wall_at: impl Fn(Millis) -> Millis,
    ) -> (PollScheduler, Vec<Read>, Vec<ClockStep>) {
        let mut s = PollScheduler::new();
        let mut mono: Millis = 5_000;
        let (now, _) = s.clock(wall_at(mono), mono);
        for _ in 0..meters {
            s.add(Cadence::every(MIN), now);
        }
        let (mut reads, mut steps) = (Vec::new(), Vec::new());
        while mono < minutes * MIN {
            let (now, step) = s.clock(wall_at(mono), mono);
            steps.extend(step);
            match s.next_due(now) {
                Some(d) => {
                    reads.push((d.meter, mono, d.slot, now));
                    mono += 2_000;
                    s.complete(d);
                }
                // The task sleeps at most a minute at a time, on the monotonic clock.
                None => mono += (s.next_wakeup().unwrap() - now).clamp(1, MIN),
            }
        }
        (s, reads, steps)
    }

    const DAY: i64 = 24 * 60 * MIN;

    #[test]
    fn a_backward_step_of_the_wall_clock_neither_stalls_nor_repeats() {
        // At 10:30:30 monotonic the wall clock goes back one hour (an RTC that was ahead).
        let base = 400 * DAY + 10 * 60 * MIN;
        let at = 30 * MIN + 30_000;
        let wall = |mono: Millis| base + mono - if mono >= at { 60 * MIN } else { 0 };
        let (s, reads, steps) = run_on(2, 60, wall);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].by_ms, -60 * MIN);
        for m in 0..2 {
            let mine: Vec<_> = reads.iter().filter(|r| r.0 == m).collect();
            // One read a minute on the monotonic clock, before, across and after the step.
            assert_eq!(mine.len(), 60, "meter {m}: {} reads", mine.len());
            // (The first read comes at once on start, mid-slot: gaps count from the second.)
            for w in mine[1..].windows(2) {
                let gap = w[1].1 - w[0].1;
                assert!(
                    (MIN - 2_000..=MIN + 2_000).contains(&gap),
                    "gap {gap} at {w:?}"
                );
            }
            // Slot keys are on wall-clock minute boundaries, and read_at follows the new
            // wall time: after the step, slots are an hour earlier.
            for r in &mine {
                assert_eq!(r.2 % MIN, 0);
                assert_eq!(r.2, Cadence::every(MIN).slot_start(r.3), "{r:?}");
            }
            assert_eq!(s.overruns(m), 0);
        }
    }

    #[test]
    fn a_forward_step_of_the_wall_clock_neither_bursts_nor_counts_overruns() {
        // At 10:30:30 the wall clock jumps one hour ahead: 60 slots pass in no time.
        let base = 400 * DAY + 10 * 60 * MIN;
        let at = 30 * MIN + 30_000;
        let wall = |mono: Millis| base + mono + if mono >= at { 60 * MIN } else { 0 };
        let (s, reads, steps) = run_on(2, 60, wall);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].by_ms, 60 * MIN);
        for m in 0..2 {
            let mine: Vec<_> = reads.iter().filter(|r| r.0 == m).collect();
            assert_eq!(mine.len(), 60, "meter {m}: no catch-up burst");
            // (The first read comes at once on start, mid-slot: gaps count from the second.)
            for w in mine[1..].windows(2) {
                let gap = w[1].1 - w[0].1;
                assert!(
                    (MIN - 2_000..=MIN + 2_000).contains(&gap),
                    "gap {gap} at {w:?}"
                );
            }
            for r in &mine {
                assert_eq!(r.2, Cadence::every(MIN).slot_start(r.3), "{r:?}");
            }
            assert_eq!(s.overruns(m), 0, "a step is not an overrun");
        }
    }

    #[test]
    fn an_uneven_step_realigns_to_the_new_wall_clock_boundaries() {
        // 15-minute slots, read at 10:00; the wall clock goes back 7 minutes at 10:10.
        let q = 15 * MIN;
        let mut s = PollScheduler::new();
        let t0 = 400 * DAY + 10 * 60 * MIN;
        s.clock(t0, 0);
        let m = s.add(Cadence::every(q), t0);
        let d = s.next_due(t0).unwrap();
        s.complete(d);
        // 10:10 monotonic = 10:03 on the wall; the next read stays at 10:15 monotonic
        // (10:08 on the new wall clock), not at 10:15 on it.
        let (now, step) = s.clock(t0 + 3 * MIN, 10 * MIN);
        assert_eq!(step.map(|s| s.by_ms), Some(-7 * MIN));
        assert_eq!(s.next_due(now), None);
        assert_eq!(s.next_wakeup(), Some(t0 + 8 * MIN), "no pause");
        let (now, _) = s.clock(t0 + 8 * MIN, 15 * MIN);
        let d = s.next_due(now).unwrap();
        assert_eq!(d.slot, t0, "the slot of the new wall time");
        s.complete(d);
        // Then the new wall clock's boundaries: 10:15 on it.
        assert_eq!(s.next_wakeup(), Some(t0 + q));
        assert_eq!(s.overruns(m), 0);
        // A slewing clock (0.5 s between looks) is followed without a step.
        assert_eq!(s.clock(t0 + 9 * MIN + 500, 16 * MIN).1, None);
        assert_eq!(s.next_wakeup(), Some(t0 + q));
    }

    #[test]
    fn degraded_meters_are_probed_less_often() {
        let mut s = PollScheduler::new();
        let m = s.add(Cadence::every(MIN), 0);
        s.set_probe_every(m, 10);
        let d = s.next_due(0).unwrap();
        s.complete(d);
        assert_eq!(s.next_wakeup(), Some(10 * MIN));
        assert_eq!(s.next_due(5 * MIN), None);
        assert_eq!(s.overruns(m), 0, "probing less often is not an overrun");
        s.set_probe_every(m, 1);
        assert_eq!(s.next_due(10 * MIN).map(|d| d.slot), Some(10 * MIN));
    }

    #[test]
    fn a_meter_degrades_after_n_failures_and_recovers_on_success() {
        let mut d = Degradation::default();
        assert!(!d.record(false, 3));
        assert!(!d.record(false, 3));
        assert_eq!(d.probe_every(10), 1);
        assert!(d.record(false, 3));
        assert!(d.is_degraded());
        assert_eq!((d.consecutive_failures(), d.probe_every(10)), (3, 10));
        d.unreachable();
        assert!(!d.is_degraded(), "unreachable, not degraded");
        assert_eq!(
            d.consecutive_failures(),
            3,
            "a dead port is not the meter's fault"
        );
        assert!(
            d.record(false, 3),
            "the next unanswered poll degrades it again"
        );
        assert!(d.record(true, 3));
        assert_eq!((d.is_degraded(), d.consecutive_failures()), (false, 0));
    }
}
