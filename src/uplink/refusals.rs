//! Readings an MQTT 5 broker refused (a PUBACK with a failure reason code, e.g. `0x87` not
//! authorised when its ACL denies the topic), and when each goes out again.
//!
//! A refused reading stays in the outbox (only a successful PUBACK deletes it) and is published
//! again on its own schedule: after `reconnect_min`, doubling per refusal of that reading up to
//! `reconnect_max`, jittered — on the same connection, with no reconnect needed. Meanwhile the
//! rest of the outbox, later readings of the same meter included, keeps flowing: one refused
//! topic never stalls the others. The book is kept across reconnects (so the schedule, the
//! counts and the log rate do not start again); after a CONNACK every refused reading is due at
//! once, because the broker may have changed its mind (a restart with a fixed ACL).
//!
//! Every reading here is either waiting (`due`) or sent again and waiting for its PUBACK, never
//! both, so it is never in flight twice; the uplink's resend pass after a CONNACK skips them and
//! leaves them to this schedule. A reading that disappeared from the outbox meanwhile (acked by
//! an earlier copy, dropped by the spool's overflow policy) is forgotten when its turn comes.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

/// The refused readings by outbox rowid.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    /// rowid → (refusals of it so far, when it goes out again; `None` while sent again).
    rows: HashMap<i64, (u32, Option<Instant>)>,
    /// (when, rowid) of the waiting ones, soonest first.
    due: BTreeSet<(Instant, i64)>,
}

impl Refusals {
    /// The broker refused `rowid`: it goes out again at `at(refusals so far)`. Returns how many
    /// times it has been refused now (1 the first time).
    pub(super) fn refused(&mut self, rowid: i64, at: impl FnOnce(u32) -> Instant) -> u32 {
        let entry = self.rows.entry(rowid).or_insert((0, None));
        if let Some(old) = entry.1.take() {
            self.due.remove(&(old, rowid));
        }
        entry.0 = entry.0.saturating_add(1);
        let when = at(entry.0);
        entry.1 = Some(when);
        self.due.insert((when, rowid));
        entry.0
    }

    /// The broker accepted `rowid`: forget it. Returns how often it had been refused.
    pub(super) fn accepted(&mut self, rowid: i64) -> Option<u32> {
        let (n, when) = self.rows.remove(&rowid)?;
        if let Some(when) = when {
            self.due.remove(&(when, rowid));
        }
        Some(n)
    }

    /// `rowid` is no longer in the outbox: forget it.
    pub(super) fn forget(&mut self, rowid: i64) {
        self.accepted(rowid);
    }

    /// The next waiting reading whose time has come (`now` or earlier), marked as sent again.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<i64> {
        let &(when, rowid) = self.due.first()?;
        if when > now {
            return None;
        }
        self.due.pop_first();
        if let Some(entry) = self.rows.get_mut(&rowid) {
            entry.1 = None;
        }
        Some(rowid)
    }

    /// Puts a reading taken with [`Refusals::take_due`] back, to go out at `when` (it could not
    /// be sent now). Its refusal count is unchanged.
    pub(super) fn put_back(&mut self, rowid: i64, when: Instant) {
        if let Some(entry) = self.rows.get_mut(&rowid) {
            if let Some(old) = entry.1.replace(when) {
                self.due.remove(&(old, rowid));
            }
            self.due.insert((when, rowid));
        }
    }

    /// When the next waiting reading is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(when, _)| *when)
    }

    /// A new connection: every refused reading is due `now`, in rowid order (what was in flight
    /// on the old connection is lost with it).
    pub(super) fn reconnected(&mut self, now: Instant) {
        self.due.clear();
        for (rowid, entry) in &mut self.rows {
            entry.1 = Some(now);
            self.due.insert((now, *rowid));
        }
    }

    /// `rowid` was refused and not accepted since (the resend pass leaves it to this schedule).
    pub(super) fn holds(&self, rowid: i64) -> bool {
        // Asked for every row published: no hashing while nothing is refused.
        !self.rows.is_empty() && self.rows.contains_key(&rowid)
    }

    /// Readings refused and not accepted since.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_refused_reading_waits_goes_out_once_and_is_forgotten_when_accepted() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Refusals::default();
        assert_eq!(r.refused(7, |n| t0 + s * n), 1);
        assert_eq!(r.refused(3, |n| t0 + s * 5 * n), 1);
        assert!(r.holds(7) && r.holds(3) && !r.holds(4));
        assert_eq!(r.next_due(), Some(t0 + s));
        assert_eq!(r.take_due(t0), None, "not before its time");
        assert_eq!(r.take_due(t0 + s), Some(7));
        assert_eq!(r.take_due(t0 + s), None, "taken once");
        assert_eq!(r.next_due(), Some(t0 + s * 5));
        // Refused again: the second delay.
        assert_eq!(r.refused(7, |n| t0 + s * 10 * n), 2);
        assert_eq!(r.next_due(), Some(t0 + s * 5));
        assert_eq!(r.take_due(t0 + s * 30), Some(3));
        assert_eq!(r.take_due(t0 + s * 30), Some(7));
        assert_eq!(r.accepted(7), Some(2));
        assert_eq!(r.accepted(7), None);
        assert_eq!(r.len(), 1);
        r.forget(3);
        assert_eq!((r.len(), r.next_due()), (0, None));
    }

    #[test]
    fn a_reconnect_makes_every_refused_reading_due_in_rowid_order() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        r.refused(9, |_| t0 + Duration::from_secs(60));
        r.refused(2, |_| t0 + Duration::from_secs(30));
        r.refused(5, |_| t0 + Duration::from_secs(1));
        assert_eq!(r.take_due(t0 + Duration::from_secs(2)), Some(5)); // in flight when the link broke
        r.reconnected(t0);
        let order: Vec<i64> = std::iter::from_fn(|| r.take_due(t0)).collect();
        assert_eq!(order, [2, 5, 9]);
        r.put_back(5, t0 + Duration::from_secs(1));
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(r.len(), 3);
    }
}
