//! Settlement freezes of DL/T 645-2007 meters: which identifiers read the n-th most recent
//! record of each kind, what instant a record is stamped with, and how to step `n` until the
//! record with a wanted stamp is found.
//!
//! A meter keeps its frozen registers as "n-th most recent" (DI0 = n), not by date: the record
//! a concentrator wants (say the freeze of 2026-12-06, stamped 2026-12-07 00:00) is at some
//! `n` that depends on the meter's clock and on freezes it missed while unpowered. Field
//! terminals compute a first guess, read the record's stamp, and step `n` until the stamp
//! matches (`shared/notes/billing.md` §2); [`StampSearch`] is that loop as a pure state
//! machine, so the bus task, the CLI and the tests share it.
//!
//! Times here are [`LocalMinute`]s: minutes on the meter's own wall clock (its time zone,
//! which the frame does not carry). Turning them into UTC is the caller's job.

use std::fmt;

use super::DataIdentifier;
use super::Version;
use super::catalog::{MAX_DAILY, MAX_HOURLY, MAX_SETTLEMENT, MAX_SETTLEMENT_1997};
use super::format::MeterTime;
use crate::calendar::{civil_from_days, days_from_civil};

/// Minutes per day and per hour.
const DAY: i64 = 1440;
const HOUR: i64 = 60;

/// The usual load-record interval: 96 records a day.
pub const LOAD_PROFILE_DEFAULT_MINUTES: i64 = 15;
/// The load-record intervals the gateway supports, in minutes: each a whole number of
/// [`LOAD_PROFILE_SLOT_MINUTES`], so that one ledger bit per slot holds every record.
pub const LOAD_PROFILE_INTERVALS: [i64; 3] = [15, 30, 60];
/// The ledger's unit for load records: a record's slot is its stamp in these minutes.
pub const LOAD_PROFILE_SLOT_MINUTES: i64 = 15;
/// The most load records the gateway looks back for (the ledger keeps 256 slots).
pub const MAX_LOAD_RECORDS_BACK: u8 = 255;

/// Which of the meter's frozen histories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FreezeKind {
    /// The daily freeze (`0506xxnn`, 62 deep), made at the meter's daily freeze time
    /// (usually 00:00) and holding the day before.
    Daily,
    /// The monthly settlement-day registers (`0001FF0n`, `0002FF0n`, 12 deep).
    Monthly,
    /// The whole-hour freeze (`0504xxnn`, 254 deep): staged settlement of large consumers.
    Hourly,
    /// The load profile (负荷记录, `06000001`): a record every few minutes (15 by default,
    /// the meter's `load_profile_interval`), read by its stamp with the given-time request
    /// ([`super::load_profile`]). The meter keeps as many as its memory holds (the profile's
    /// `load_profile_depth`); [`FreezeKind::depth`] is only how far back the gateway looks.
    LoadProfile,
}

impl FreezeKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [FreezeKind; 4] = [
        FreezeKind::Daily,
        FreezeKind::Monthly,
        FreezeKind::Hourly,
        FreezeKind::LoadProfile,
    ];

    /// The name used in configuration, the CLI and the MQTT contract.
    pub const fn name(self) -> &'static str {
        match self {
            FreezeKind::Daily => "daily",
            FreezeKind::Monthly => "monthly",
            FreezeKind::Hourly => "hourly",
            FreezeKind::LoadProfile => "load_profile",
        }
    }

    /// Parses [`FreezeKind::name`].
    pub fn parse(s: &str) -> Option<FreezeKind> {
        FreezeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// How many records the meter keeps: the deepest `n` there is.
    pub const fn depth(self) -> u8 {
        match self {
            FreezeKind::Daily => MAX_DAILY,
            FreezeKind::Monthly => MAX_SETTLEMENT,
            FreezeKind::Hourly => MAX_HOURLY,
            FreezeKind::LoadProfile => MAX_LOAD_RECORDS_BACK,
        }
    }

    /// The identifier of record `n`'s stamp (`YYMMDDhhmm`); `None` for monthly settlements,
    /// which carry none (their instant follows from the settlement day, see
    /// [`monthly_stamp`]), and for an `n` outside `1..=depth`.
    pub fn stamp_di(self, n: u8) -> Option<DataIdentifier> {
        if !(1..=self.depth()).contains(&n) {
            return None;
        }
        match self {
            FreezeKind::Daily => Some(DataIdentifier::V2007(0x0506_0000 | u32::from(n))),
            FreezeKind::Hourly => Some(DataIdentifier::V2007(0x0504_0000 | u32::from(n))),
            FreezeKind::Monthly | FreezeKind::LoadProfile => None,
        }
    }

    /// The identifiers of record `n`'s values: forward and reverse active energy (daily and
    /// monthly: total and tariffs as one block each; hourly: the totals). Empty for an `n`
    /// outside `1..=depth`.
    pub fn value_dis(self, n: u8) -> Vec<DataIdentifier> {
        if !(1..=self.depth()).contains(&n) {
            return Vec::new();
        }
        let n = u32::from(n);
        let dis: [u32; 2] = match self {
            FreezeKind::Daily => [0x0506_0100 | n, 0x0506_0200 | n],
            FreezeKind::Hourly => [0x0504_0100 | n, 0x0504_0200 | n],
            FreezeKind::Monthly => [0x0001_FF00 | n, 0x0002_FF00 | n],
            // Read by stamp with `06000001`, not by n.
            FreezeKind::LoadProfile => return Vec::new(),
        };
        dis.into_iter().map(DataIdentifier::V2007).collect()
    }

    /// How many records of this kind a meter of `version` keeps; 0 when the edition has none.
    /// DL/T 645-1997 has no daily or hourly freeze, and of the settlements only last month's
    /// (`94xx`) and the month before's (`98xx`).
    pub const fn depth_in(self, version: Version) -> u8 {
        match (version, self) {
            (Version::V2007, _) => self.depth(),
            (Version::V1997, FreezeKind::Monthly) => MAX_SETTLEMENT_1997,
            (Version::V1997, FreezeKind::Daily | FreezeKind::Hourly | FreezeKind::LoadProfile) => 0,
        }
    }

    /// [`FreezeKind::value_dis`] for a meter of `version`: DL/T 645-1997 monthly record `n`
    /// is the forward and reverse active blocks of last month (`941F`, `942F`, n = 1) or of
    /// the month before (`981F`, `982F`, n = 2). Empty where the edition has no such record.
    pub fn value_dis_in(self, version: Version, n: u8) -> Vec<DataIdentifier> {
        match version {
            Version::V2007 => self.value_dis(n),
            Version::V1997 => match (self, n) {
                (FreezeKind::Monthly, 1) => {
                    vec![DataIdentifier::V1997(0x941F), DataIdentifier::V1997(0x942F)]
                }
                (FreezeKind::Monthly, 2) => {
                    vec![DataIdentifier::V1997(0x981F), DataIdentifier::V1997(0x982F)]
                }
                _ => Vec::new(),
            },
        }
    }

    /// The nominal spacing of records in minutes (monthly: none, months differ in length;
    /// load profile: the meter's configured interval, [`LOAD_PROFILE_DEFAULT_MINUTES`] unless
    /// told otherwise).
    pub const fn period_minutes(self) -> Option<i64> {
        match self {
            FreezeKind::Daily => Some(DAY),
            FreezeKind::Hourly => Some(HOUR),
            FreezeKind::LoadProfile => Some(LOAD_PROFILE_DEFAULT_MINUTES),
            FreezeKind::Monthly => None,
        }
    }
}

impl fmt::Display for FreezeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which record an identifier of [`FreezeKind::stamp_di`] or [`FreezeKind::value_dis`]
/// reads: (kind, n); `None` for any other identifier.
pub fn record_of(di: DataIdentifier) -> Option<(FreezeKind, u8)> {
    let v = match di {
        DataIdentifier::V2007(v) => v,
        // 1997: last month's (94xx) and the month before's (98xx) active energy registers,
        // forward (x1x) and reverse (x2x), a total, a tariff or the block.
        DataIdentifier::V1997(v) => {
            let n = match v >> 8 {
                0x94 => 1,
                0x98 => 2,
                _ => return None,
            };
            return matches!((v >> 4) & 0xF, 1 | 2).then_some((FreezeKind::Monthly, n));
        }
    };
    let kind = match v & 0xFFFF_FF00 {
        0x0506_0000 | 0x0506_0100 | 0x0506_0200 => FreezeKind::Daily,
        0x0504_0000 | 0x0504_0100 | 0x0504_0200 => FreezeKind::Hourly,
        0x0001_FF00 | 0x0002_FF00 => FreezeKind::Monthly,
        _ => return None,
    };
    let n = (v & 0xFF) as u8;
    (1..=kind.depth()).contains(&n).then_some((kind, n))
}

/// A quantity name without its snapshot suffix: `energy.active.import.total@daily-3` →
/// `energy.active.import.total`. A freeze record names its values plainly; the record's kind
/// and stamp say which snapshot they are.
pub fn plain_quantity(quantity: &str) -> &str {
    quantity.split_once('@').map_or(quantity, |(base, _)| base)
}

/// A minute on the meter's wall clock: minutes since 1970-01-01 00:00 in the meter's own
/// time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalMinute(pub i64);

impl LocalMinute {
    /// The minute of a calendar date and time (month 1..=12, day 1..=31, hour, minute).
    pub fn from_civil(year: i64, month: u32, day: u32, hour: u32, minute: u32) -> LocalMinute {
        LocalMinute(
            days_from_civil(year, month, day) * DAY + i64::from(hour) * HOUR + i64::from(minute),
        )
    }

    /// The minute a meter time names; `None` unless year, month, day, hour and minute are all
    /// present (seconds are dropped).
    pub fn from_meter_time(t: &MeterTime) -> Option<LocalMinute> {
        Some(LocalMinute::from_civil(
            i64::from(t.year?),
            u32::from(t.month?),
            u32::from(t.day?),
            u32::from(t.hour?),
            u32::from(t.minute?),
        ))
    }

    /// (year, month, day, hour, minute).
    pub fn civil(self) -> (i64, u32, u32, u32, u32) {
        let (y, m, d) = civil_from_days(self.0.div_euclid(DAY));
        let in_day = self.0.rem_euclid(DAY);
        (y, m, d, (in_day / HOUR) as u32, (in_day % HOUR) as u32)
    }

    /// The start (00:00) of this minute's day.
    pub fn start_of_day(self) -> LocalMinute {
        LocalMinute(self.0.div_euclid(DAY) * DAY)
    }
}

impl fmt::Display for LocalMinute {
    /// `2026-12-07T00:00`, without an offset (the caller knows the meter's zone).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, h, min) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}")
    }
}

/// The most recent instant at or before `now` at which the meter makes a record of `kind`:
/// daily at `daily_at` (minutes after midnight, the meter's freeze time `04001203`, usually
/// 0), hourly on the hour, monthly at the settlement day and hour (`settlement` = (day,
/// hour), `04000B01`).
pub fn latest_due(
    kind: FreezeKind,
    now: LocalMinute,
    daily_at: u16,
    settlement: (u8, u8),
) -> LocalMinute {
    match kind {
        FreezeKind::Daily => {
            let at = i64::from(daily_at).clamp(0, DAY - 1);
            let today = now.start_of_day().0 + at;
            LocalMinute(if today <= now.0 { today } else { today - DAY })
        }
        FreezeKind::Hourly => LocalMinute(now.0.div_euclid(HOUR) * HOUR),
        FreezeKind::LoadProfile => latest_load_record(now, LOAD_PROFILE_DEFAULT_MINUTES),
        FreezeKind::Monthly => monthly_stamp(now, settlement, 1),
    }
}

/// The newest load-record stamp at or before `now` for a meter recording every `interval`
/// minutes: records fall on whole multiples of the interval from midnight (00:00, 00:15, …).
pub fn latest_load_record(now: LocalMinute, interval: i64) -> LocalMinute {
    let interval = interval.clamp(1, DAY);
    let day = now.start_of_day().0;
    LocalMinute(day + (now.0 - day).div_euclid(interval) * interval)
}

/// The instant of the `n`-th last monthly settlement (n ≥ 1) as seen at `now`, for a meter
/// that settles on `settlement` = (day 1..=28 usually, hour). A day past the month's end
/// settles on the month's last day (meters are configured 1..=28; this only keeps the
/// arithmetic total).
pub fn monthly_stamp(now: LocalMinute, settlement: (u8, u8), n: u8) -> LocalMinute {
    let (y, m, _, _, _) = now.civil();
    let at = |year: i64, month: u32| {
        let last = days_in_month(year, month);
        let day = u32::from(settlement.0).clamp(1, last);
        LocalMinute::from_civil(year, month, day, u32::from(settlement.1).min(23), 0)
    };
    let month_index = y * 12 + i64::from(m) - 1;
    let this = at(y, m);
    let latest = if this <= now {
        month_index
    } else {
        month_index - 1
    };
    let k = latest - i64::from(n.max(1)) + 1;
    at(k.div_euclid(12), (k.rem_euclid(12) + 1) as u32)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let next = if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    };
    (next - days_from_civil(year, month, 1)) as u32
}

/// What to do next while looking for a record by its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStep {
    /// Read record `n`'s stamp next.
    Read(u8),
    /// Record `n` has the wanted stamp.
    Found(u8),
    /// The meter holds no record with that stamp: the records on either side were found
    /// (`newer_at`, `older_at`) and skip it (the meter missed the freeze, e.g. unpowered),
    /// or `older_at` is past the end of a history shorter than the depth (a new meter).
    Gap {
        /// The `n` of the nearest record newer than the wanted one.
        newer_at: u8,
        /// The `n` of the nearest record older than the wanted one.
        older_at: u8,
    },
    /// Even the newest record is older than the wanted stamp: the freeze has not been made
    /// (yet).
    NotYetFrozen,
    /// Even the deepest record the meter keeps is newer: the wanted record has fallen out
    /// of the meter's history and is lost.
    OutOfHistory,
}

/// Finds the record of `kind` with a wanted stamp by stepping `n`, as field terminals do.
///
/// Each [`StampSearch::observe`] narrows the bracket `(newer, older)` of `n`s known to hold
/// newer and older records, so the search ends: at most `depth` reads even if the meter's
/// stamps are erratic, usually one or two.
#[derive(Debug, Clone)]
pub struct StampSearch {
    kind: FreezeKind,
    wanted: LocalMinute,
    /// Largest `n` seen with a stamp newer than wanted (records at smaller `n` are newer).
    newer: u8,
    /// Smallest `n` seen with a stamp older than wanted, or `depth + 1`.
    older: u16,
}

impl StampSearch {
    /// Starts a search for the record stamped `wanted`, with the first `n` to read guessed
    /// from the meter's clock: `latest` is [`latest_due`] at the meter's current time.
    /// Monthly records have no stamp to search by; use [`monthly_stamp`] to name them.
    pub fn start(
        kind: FreezeKind,
        wanted: LocalMinute,
        latest: LocalMinute,
    ) -> (StampSearch, SearchStep) {
        let search = StampSearch {
            kind,
            wanted,
            newer: 0,
            older: u16::from(kind.depth()) + 1,
        };
        let guess = 1 + search.periods_between(latest, wanted);
        let step = search.clamp_next(guess);
        (search, step)
    }

    /// The stamp being looked for.
    pub fn wanted(&self) -> LocalMinute {
        self.wanted
    }

    /// Whole periods from `older` to `newer` (≥ 0 when `newer` is later).
    fn periods_between(&self, newer: LocalMinute, older: LocalMinute) -> i64 {
        let period = self.kind.period_minutes().unwrap_or(DAY);
        (newer.0 - older.0).div_euclid(period)
    }

    /// The next read for a proposed `n`, kept strictly inside the bracket.
    fn clamp_next(&self, proposed: i64) -> SearchStep {
        let low = i64::from(self.newer) + 1;
        let high = i64::from(self.older) - 1;
        if low > high {
            return self.exhausted();
        }
        let n = proposed.clamp(low, high);
        u8::try_from(n).map_or(SearchStep::OutOfHistory, SearchStep::Read)
    }

    /// Every `n` has been excluded: say why.
    fn exhausted(&self) -> SearchStep {
        let depth = self.kind.depth();
        match (self.newer, self.older) {
            (0, _) => SearchStep::NotYetFrozen,
            (_, older) if older > u16::from(depth) => SearchStep::OutOfHistory,
            (newer, older) => SearchStep::Gap {
                newer_at: newer,
                older_at: u8::try_from(older).unwrap_or(depth),
            },
        }
    }

    /// Takes the stamp read at `n` (`None` when the meter has no record there: a history
    /// shorter than its depth, which counts as "older than anything") and says what next.
    pub fn observe(&mut self, n: u8, stamp: Option<LocalMinute>) -> SearchStep {
        match stamp {
            Some(s) if s == self.wanted => SearchStep::Found(n),
            Some(s) if s > self.wanted => {
                self.newer = self.newer.max(n);
                let step = self.periods_between(s, self.wanted).max(1);
                self.clamp_next(i64::from(n) + step)
            }
            Some(s) => {
                self.older = self.older.min(u16::from(n));
                let step = self.periods_between(self.wanted, s).max(1);
                self.clamp_next(i64::from(n) - step)
            }
            None => {
                self.older = self.older.min(u16::from(n));
                self.clamp_next(i64::from(n) - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests;
