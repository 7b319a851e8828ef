//! The reading success rate: the concentrator's figure of merit, per meter, per bus and for
//! the gateway, per UTC day, over the last 24 hours and since start.
//!
//! This module owns the bookkeeping of scheduled poll outcomes and each meter's last batch. It
//! does no I/O and reads no clock: callers pass the time. It never sees one-shot reads as polls
//! (a technician's read at the cabinet must not raise the day's figure), only as the meter's
//! last batch.
//!
//! Definitions:
//! - a **poll succeeds** when the batch holds at least one value of quality `good` (as the bus
//!   task decoded it, before plausibility checks); a dead port or a silent meter is a failed poll;
//! - a **meter's rate** over a window is successful polls ÷ polls in that window;
//! - a **bus's or the gateway's rate** is the concentrator KPI: meters with at least one
//!   successful poll in the window ÷ meters that should be read (every configured meter);
//!   the poll ratio over all their meters is given beside it.
//!
//! The last 24 hours are kept as 24 buckets of one hour per meter, so that window is exact to
//! the hour (it was 144 buckets of 10 minutes: 480 bytes more a meter, ~0.5 MB of a small
//! gateway's memory with 1,000 meters, for a resolution a daily figure of merit does not
//! need); "today" is the UTC calendar day and is exact.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::last_batch::{LastBatch, Layouts};
use super::trend::{DEFAULT_TREND_QUANTITY, Trend, TrendView};
use crate::reading::{Label, Quality, ReadingBatch};

/// Width of one bucket of the rolling window, in seconds.
const BUCKET_S: u64 = 3_600;
/// Buckets in 24 hours.
const BUCKETS: usize = 24;
const DAY_S: u64 = 86_400;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The UTC day of `t` as `YYYY-MM-DD`.
pub fn utc_day(t: SystemTime) -> String {
    let days = secs(t) / DAY_S;
    let at = UNIX_EPOCH + std::time::Duration::from_secs(days * DAY_S);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

/// Polls and successful polls over one window, with their ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Scheduled polls.
    pub polls: u64,
    /// Polls with at least one good value.
    pub ok: u64,
    /// ok ÷ polls; null when there was no poll.
    pub rate: Option<f64>,
}

impl Ratio {
    fn new(polls: u64, ok: u64) -> Self {
        Self {
            polls,
            ok,
            rate: (polls > 0).then(|| ok as f64 / polls as f64),
        }
    }
}

/// One meter's success over the three windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterSuccess {
    /// The UTC day "today" refers to.
    pub day: String,
    /// Since 00:00 UTC.
    pub today: Ratio,
    /// The last 24 hours (one-hour resolution).
    pub last_24h: Ratio,
    /// Since the daemon started.
    pub since_start: Ratio,
}

/// A group's (bus or gateway) success over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupRatio {
    /// Meters with at least one successful poll in the window.
    pub meters_read: u64,
    /// meters_read ÷ meters (the concentrator KPI); null when there is no meter.
    pub rate: Option<f64>,
    /// Polls of all its meters in the window.
    pub polls: u64,
    /// Successful polls of all its meters in the window.
    pub ok: u64,
    /// ok ÷ polls; null when there was no poll.
    pub poll_rate: Option<f64>,
}

/// A group's success over the three windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSuccess {
    /// The UTC day "today" refers to.
    pub day: String,
    /// Meters that should be read.
    pub meters: u64,
    /// Since 00:00 UTC.
    pub today: GroupRatio,
    /// The last 24 hours.
    pub last_24h: GroupRatio,
    /// Since the daemon started.
    pub since_start: GroupRatio,
}

#[derive(Debug, Clone)]
struct MeterBook {
    bus: String,
    /// Day number of `today_*`.
    day: u64,
    today_polls: u64,
    today_ok: u64,
    /// (polls, ok) of the buckets `ring_last - BUCKETS + 1 ..= ring_last`, indexed by bucket
    /// number (secs / BUCKET_S) % BUCKETS. Narrow on purpose (4 bytes a slot, 96 bytes a
    /// meter): an hour holds at most 36,000 polls at the shortest interval (100 ms), and the
    /// counts saturate anyway.
    ring: Box<[(u16, u16)]>,
    /// The newest bucket in `ring`; [`NO_BUCKET`] before the first poll.
    ring_last: u32,
    polls: u64,
    ok: u64,
    last_ok: Option<u64>,
    last_batch: LastBatch,
    /// The last values of the book's trend quantity (the page's sparkline).
    trend: Trend,
}

/// `ring_last` of a ring that was never used.
const NO_BUCKET: u32 = u32::MAX;

/// The ring bucket number of `now` (saturating below [`NO_BUCKET`]).
fn bucket_of(now: u64) -> u32 {
    u32::try_from(now / BUCKET_S).map_or(NO_BUCKET - 1, |b| b.min(NO_BUCKET - 1))
}

impl MeterBook {
    fn new(bus: &str) -> Self {
        Self {
            bus: bus.to_owned(),
            day: 0,
            today_polls: 0,
            today_ok: 0,
            ring: vec![(0, 0); BUCKETS].into_boxed_slice(),
            ring_last: NO_BUCKET,
            polls: 0,
            ok: 0,
            last_ok: None,
            last_batch: LastBatch::default(),
            trend: Trend::default(),
        }
    }

    fn record(&mut self, ok: bool, now: u64) {
        let day = now / DAY_S;
        if day != self.day {
            self.day = day;
            self.today_polls = 0;
            self.today_ok = 0;
        }
        self.today_polls += 1;
        self.polls += 1;
        let bucket = bucket_of(now);
        self.advance_ring(bucket);
        // A poll older than the ring (the clock stepped back a day) is left out of the window.
        let slot = self
            .ring_last
            .checked_sub(bucket)
            .is_some_and(|age| age < BUCKETS as u32)
            .then(|| &mut self.ring[bucket as usize % BUCKETS]);
        if let Some(slot) = slot {
            slot.0 = slot.0.saturating_add(1);
            if ok {
                slot.1 = slot.1.saturating_add(1);
            }
        }
        if ok {
            self.today_ok += 1;
            self.ok += 1;
            self.last_ok = Some(now);
        }
    }

    /// Makes `bucket` the ring's newest bucket if it is newer, emptying the slots of the
    /// buckets it skips over.
    fn advance_ring(&mut self, bucket: u32) {
        if self.ring_last == NO_BUCKET {
            self.ring_last = bucket;
            return;
        }
        if bucket <= self.ring_last {
            return;
        }
        if bucket - self.ring_last >= BUCKETS as u32 {
            self.ring.fill((0, 0));
        } else {
            for b in self.ring_last + 1..=bucket {
                self.ring[b as usize % BUCKETS] = (0, 0);
            }
        }
        self.ring_last = bucket;
    }

    fn success(&self, now: u64) -> MeterSuccess {
        let (tp, tk) = if self.day == now / DAY_S {
            (self.today_polls, self.today_ok)
        } else {
            (0, 0)
        };
        let current = bucket_of(now);
        let oldest = current.saturating_sub(BUCKETS as u32 - 1);
        let (mut p, mut k) = (0u64, 0u64);
        if self.ring_last != NO_BUCKET {
            for age in 0..BUCKETS as u32 {
                let Some(b) = self.ring_last.checked_sub(age) else {
                    break;
                };
                if b >= oldest && b <= current {
                    let (polls, ok) = self.ring[b as usize % BUCKETS];
                    p += u64::from(polls);
                    k += u64::from(ok);
                }
            }
        }
        MeterSuccess {
            day: String::new(),
            today: Ratio::new(tp, tk),
            last_24h: Ratio::new(p, k),
            since_start: Ratio::new(self.polls, self.ok),
        }
    }

    /// The ring's buckets of the 24 hours up to `now`'s, oldest first (empty ones for hours
    /// without polls).
    fn hourly(&self, now: u64) -> [(u16, u16); BUCKETS] {
        let current = u64::from(bucket_of(now));
        let mut out = [(0, 0); BUCKETS];
        if self.ring_last == NO_BUCKET {
            return out;
        }
        let last = u64::from(self.ring_last);
        let held = last.saturating_sub(BUCKETS as u64 - 1)..=last;
        for (i, slot) in (0u64..).zip(out.iter_mut()) {
            let Some(b) = (current + 1 + i).checked_sub(BUCKETS as u64) else {
                continue;
            };
            if held.contains(&b) {
                *slot = self.ring[b as usize % BUCKETS];
            }
        }
        out
    }

    fn read_within(&self, now: u64, window: u64) -> bool {
        self.last_ok.is_some_and(|t| now.saturating_sub(t) < window)
    }
}

/// One meter's polls of the last 24 hours, hour by hour (the page's success strip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyStrip {
    /// Start of the oldest hour (the strip's last hour is the current one).
    pub from: SystemTime,
    /// (polls, successful polls) of each hour, oldest first.
    pub hours: [(u16, u16); BUCKETS],
}

/// Poll outcomes and last batches of every configured meter.
#[derive(Debug, Clone, Default)]
pub struct SuccessBook {
    meters: BTreeMap<String, MeterBook>,
    /// The label layouts the last batches share.
    layouts: Layouts,
    /// The quantity each meter's trend follows; [`DEFAULT_TREND_QUANTITY`] when `None`.
    trend_quantity: Option<Label>,
}

impl SuccessBook {
    /// A book for `meters`: (bus, meter id) pairs, every meter that should be read.
    pub fn new<'a>(meters: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            meters: meters
                .into_iter()
                .map(|(bus, id)| (id.to_owned(), MeterBook::new(bus)))
                .collect(),
            layouts: Layouts::default(),
            trend_quantity: None,
        }
    }

    /// The quantity the meters' trends follow.
    pub fn trend_quantity(&self) -> &str {
        self.trend_quantity
            .as_deref()
            .unwrap_or(DEFAULT_TREND_QUANTITY)
    }

    /// Makes the trends follow `quantity` (`None`: the default); a change starts every trend
    /// over.
    pub fn set_trend_quantity(&mut self, quantity: Option<&str>) {
        let next = quantity.unwrap_or(DEFAULT_TREND_QUANTITY);
        if next == self.trend_quantity() {
            return;
        }
        self.trend_quantity = quantity.map(Label::from);
        for m in self.meters.values_mut() {
            m.trend.clear();
        }
    }

    /// Makes the book cover exactly `meters` (after a reload): meters that stay keep their
    /// history, new ones start empty, removed ones are dropped.
    pub fn set_meters<'a>(&mut self, meters: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut next = BTreeMap::new();
        for (bus, id) in meters {
            let mut book = self
                .meters
                .remove(id)
                .unwrap_or_else(|| MeterBook::new(bus));
            book.bus = bus.to_owned();
            next.insert(id.to_owned(), book);
        }
        self.meters = next;
    }

    /// True when `batch` counts as a successful poll: at least one good value.
    pub fn is_success(batch: &ReadingBatch) -> bool {
        batch.values.iter().any(|v| v.quality == Quality::Good)
    }

    /// Records a scheduled poll's batch (its outcome and, as the meter's last batch, itself).
    pub fn record_poll(&mut self, batch: &ReadingBatch, now: SystemTime) {
        self.count_poll(batch, now);
        self.keep_last(batch);
    }

    /// Counts a scheduled poll's outcome (the daemon, as each batch arrives).
    pub fn count_poll(&mut self, batch: &ReadingBatch, now: SystemTime) {
        let ok = Self::is_success(batch);
        let quantity = self
            .trend_quantity
            .as_deref()
            .unwrap_or(DEFAULT_TREND_QUANTITY);
        if let Some(m) = self.meters.get_mut(&batch.meter) {
            m.record(ok, secs(now));
            m.trend.add(batch, quantity, now);
        }
    }

    /// Keeps `batch` as its meter's last batch.
    pub fn keep_last(&mut self, batch: &ReadingBatch) {
        if let Some(m) = self.meters.get_mut(&batch.meter) {
            m.last_batch.keep(batch, &mut self.layouts);
        }
    }

    /// Keeps `batch` as its meter's last batch, taking its strings and frames out of it: the
    /// daemon, once the batch is validated and stored (the page then shows what was
    /// published), just before it drops the batch.
    pub fn keep_last_taken(&mut self, batch: &mut ReadingBatch) {
        if let Some(m) = self.meters.get_mut(&batch.meter) {
            m.last_batch.keep_taken(batch, &mut self.layouts);
        }
    }

    /// Keeps a one-shot read's batch as the meter's last batch (not counted as a poll).
    pub fn record_one_shot(&mut self, batch: &ReadingBatch) {
        self.keep_last(batch);
    }

    /// The last batch of `meter` (rebuilt from the compact copy the book keeps).
    pub fn last_batch(&self, meter: &str) -> Option<ReadingBatch> {
        self.meters.get(meter).and_then(|m| m.last_batch.get())
    }

    /// One meter's polls of the 24 hours up to `now`, hour by hour (`None` for an unknown
    /// meter).
    pub fn hourly(&self, meter: &str, now: SystemTime) -> Option<HourlyStrip> {
        let m = self.meters.get(meter)?;
        let t = secs(now);
        let from = (t / BUCKET_S + 1).saturating_sub(BUCKETS as u64) * BUCKET_S;
        Some(HourlyStrip {
            from: UNIX_EPOCH + std::time::Duration::from_secs(from),
            hours: m.hourly(t),
        })
    }

    /// One meter's trend of [`SuccessBook::trend_quantity`] (`None` before its first batch
    /// with it).
    pub fn trend(&self, meter: &str) -> Option<TrendView> {
        self.meters.get(meter)?.trend.view()
    }

    /// One meter's success at `now` (zeros for an unknown meter).
    pub fn meter(&self, meter: &str, now: SystemTime) -> MeterSuccess {
        let mut s = self
            .meters
            .get(meter)
            .map(|m| m.success(secs(now)))
            .unwrap_or_default();
        s.day = utc_day(now);
        s
    }

    /// The success of bus `bus`'s meters, or of every meter with `None`.
    pub fn group(&self, bus: Option<&str>, now: SystemTime) -> GroupSuccess {
        let t = secs(now);
        let since_midnight = t % DAY_S + 1;
        let mut g = GroupSuccess {
            day: utc_day(now),
            ..GroupSuccess::default()
        };
        let mut sums = [(0u64, 0u64, 0u64); 3];
        for m in self
            .meters
            .values()
            .filter(|m| bus.is_none_or(|b| b == m.bus))
        {
            g.meters += 1;
            let s = m.success(t);
            let windows = [
                (s.today, m.read_within(t, since_midnight)),
                (s.last_24h, m.read_within(t, DAY_S)),
                (s.since_start, m.last_ok.is_some()),
            ];
            for (sum, (r, read)) in sums.iter_mut().zip(windows) {
                sum.0 += u64::from(read);
                sum.1 += r.polls;
                sum.2 += r.ok;
            }
        }
        let meters = g.meters;
        let ratio = |(read, polls, ok): (u64, u64, u64)| GroupRatio {
            meters_read: read,
            rate: (meters > 0).then(|| read as f64 / meters as f64),
            polls,
            ok,
            poll_rate: (polls > 0).then(|| ok as f64 / polls as f64),
        };
        g.today = ratio(sums[0]);
        g.last_24h = ratio(sums[1]);
        g.since_start = ratio(sums[2]);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::ReadingValue;
    use std::time::Duration;

    fn batch(meter: &str, good: bool) -> ReadingBatch {
        let mut b = ReadingBatch::new("gw", meter, "dlt645-2007", 0, UNIX_EPOCH);
        b.values.push(ReadingValue {
            quantity: "energy.active.import.total".into(),
            value: None,
            unit: "kWh".into(),
            obis: None,
            source: "dlt645:00010000".into(),
            quality: if good { Quality::Good } else { Quality::Bad },
            reason: None,
            meter_time: None,
        });
        b
    }

    #[test]
    fn the_24h_window_survives_gaps_and_a_clock_stepping_back() {
        let mut book = SuccessBook::new([("b", "m1")]);
        let t = 30 * DAY_S;
        book.record_poll(&batch("m1", true), at(t));
        book.record_poll(&batch("m1", false), at(t + 2 * BUCKET_S));
        let w = book.meter("m1", at(t + 2 * BUCKET_S)).last_24h;
        assert_eq!((w.polls, w.ok), (2, 1));
        // Two days without polls: the ring starts over.
        let later = t + 2 * DAY_S;
        book.record_poll(&batch("m1", true), at(later));
        let w = book.meter("m1", at(later)).last_24h;
        assert_eq!((w.polls, w.ok), (1, 1));
        // The clock steps back one bucket: the poll counts in that bucket.
        book.record_poll(&batch("m1", false), at(later - BUCKET_S));
        let w = book.meter("m1", at(later)).last_24h;
        assert_eq!((w.polls, w.ok), (2, 1));
        // A query 23 h 50 min later still sees the newest bucket only.
        let w = book.meter("m1", at(later + DAY_S - BUCKET_S)).last_24h;
        assert_eq!((w.polls, w.ok), (1, 1));
        // A poll from before the ring's reach is left out of the window.
        book.record_poll(&batch("m1", true), at(later - 2 * DAY_S));
        let w = book.meter("m1", at(later)).last_24h;
        assert_eq!((w.polls, w.ok), (2, 1));
    }

    #[test]
    fn the_last_batch_comes_back_exactly() {
        let mut book = SuccessBook::new([("b", "m1")]);
        let mut b = batch("m1", true);
        b.values[0].value = Some(crate::reading::ValueData::Number(
            crate::reading::ExactNumber::from_f32(230.1).expect("230.1 is finite"),
        ));
        b.values[0].obis = Some("1.8.0".into());
        b.frames.push("6801".into());
        book.record_poll(&b, at(5));
        assert_eq!(book.last_batch("m1"), Some(b));
        assert_eq!(book.last_batch("m2"), None);
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn meter_rates_per_day_window_and_start() {
        let mut book = SuccessBook::new([("b", "m1"), ("b", "m2"), ("c", "m3")]);
        // Day 10, 23:00: one good, one bad for m1.
        let d10 = 10 * DAY_S + 23 * 3600;
        book.record_poll(&batch("m1", true), at(d10));
        book.record_poll(&batch("m1", false), at(d10 + 60));
        book.record_poll(&batch("m2", false), at(d10 + 60));
        let s = book.meter("m1", at(d10 + 120));
        assert_eq!((s.today.polls, s.today.ok, s.today.rate), (2, 1, Some(0.5)));
        assert_eq!(s.day, "1970-01-11");
        // Day 11, 01:00: today is empty, the last 24 h still hold day 10's polls.
        let d11 = 11 * DAY_S + 3600;
        let s = book.meter("m1", at(d11));
        assert_eq!((s.today.polls, s.today.rate), (0, None));
        assert_eq!((s.last_24h.polls, s.last_24h.ok), (2, 1));
        book.record_poll(&batch("m1", false), at(d11));
        let s = book.meter("m1", at(d11));
        assert_eq!((s.today.polls, s.today.ok), (1, 0));
        assert_eq!((s.last_24h.polls, s.since_start.polls), (3, 3));
        // Two days later nothing is left in the 24 h window.
        let s = book.meter("m1", at(d11 + 2 * DAY_S));
        assert_eq!(s.last_24h, Ratio::default());
        assert_eq!(s.since_start.ok, 1);
    }

    #[test]
    fn group_rate_is_meters_read_over_meters() {
        let mut book = SuccessBook::new([("b", "m1"), ("b", "m2"), ("c", "m3")]);
        let t = 20 * DAY_S + 600;
        book.record_poll(&batch("m1", true), at(t));
        book.record_poll(&batch("m2", false), at(t));
        let g = book.group(None, at(t + 1));
        assert_eq!(g.meters, 3);
        assert_eq!(g.today.meters_read, 1);
        assert_eq!(g.today.rate, Some(1.0 / 3.0));
        assert_eq!(
            (g.today.polls, g.today.ok, g.today.poll_rate),
            (2, 1, Some(0.5))
        );
        let b = book.group(Some("b"), at(t + 1));
        assert_eq!(
            (b.meters, b.today.meters_read, b.today.rate),
            (2, 1, Some(0.5))
        );
        let c = book.group(Some("c"), at(t + 1));
        assert_eq!((c.today.rate, c.today.poll_rate), (Some(0.0), None));
        // A read yesterday counts in the last 24 h, not today.
        let g = book.group(None, at(21 * DAY_S + 10));
        assert_eq!((g.today.meters_read, g.last_24h.meters_read), (0, 1));
    }

    #[test]
    fn the_hourly_strip_ends_with_the_current_hour_and_rolls_over() {
        let mut book = SuccessBook::new([("b", "m1")]);
        let t = 40 * DAY_S + 10 * BUCKET_S;
        book.record_poll(&batch("m1", true), at(t + 5));
        book.record_poll(&batch("m1", false), at(t + 6));
        book.record_poll(&batch("m1", true), at(t + 2 * BUCKET_S));
        let s = book.hourly("m1", at(t + 2 * BUCKET_S + 30)).expect("m1");
        assert_eq!(s.from, at(t + 2 * BUCKET_S - 23 * BUCKET_S));
        assert_eq!(s.hours[23], (1, 1));
        assert_eq!(s.hours[22], (0, 0));
        assert_eq!(s.hours[21], (2, 1));
        assert_eq!(s.hours.iter().filter(|h| h.0 > 0).count(), 2);
        // 22 hours later the first hour is the strip's oldest; one more and it is gone.
        let s = book.hourly("m1", at(t + 23 * BUCKET_S)).expect("m1");
        assert_eq!((s.hours[0], s.hours[2]), ((2, 1), (1, 1)));
        let s = book.hourly("m1", at(t + 24 * BUCKET_S)).expect("m1");
        assert_eq!((s.hours[0], s.hours[1]), ((0, 0), (1, 1)));
        // Two days without polls: an empty strip, still 24 hours wide.
        let s = book.hourly("m1", at(t + 2 * DAY_S)).expect("m1");
        assert_eq!(s.hours, [(0, 0); BUCKETS]);
        assert!(book.hourly("zz", at(t)).is_none());
    }

    #[test]
    fn the_trend_follows_the_chosen_quantity() {
        let mut book = SuccessBook::new([("b", "m1")]);
        assert_eq!(book.trend_quantity(), "power.active.total");
        book.set_trend_quantity(Some("energy.active.import.total"));
        book.record_poll(&batch("m1", true), at(5));
        book.record_poll(&batch("m1", false), at(6));
        let t = book.trend("m1").expect("a trend");
        // The test batch's value is null: no good number, a gap each time.
        assert_eq!((t.values.len(), t.unit.as_str()), (2, "kWh"));
        book.set_trend_quantity(None);
        assert_eq!(book.trend("m1"), None, "a new quantity starts over");
        book.record_poll(&batch("m1", true), at(7));
        assert_eq!(book.trend("m1"), None, "the batch has no power value");
    }

    #[test]
    fn one_shot_reads_are_kept_but_not_counted() {
        let mut book = SuccessBook::new([("b", "m1")]);
        book.record_one_shot(&batch("m1", true));
        assert_eq!(book.last_batch("m1"), Some(batch("m1", true)));
        assert_eq!(book.meter("m1", at(5)).since_start.polls, 0);
        // Unknown meters are ignored.
        book.record_poll(&batch("zz", true), at(5));
        assert_eq!(book.group(None, at(5)).meters, 1);
    }
}
