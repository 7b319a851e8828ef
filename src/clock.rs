//! Wall-clock time as meterd writes and reads it: RFC 3339 stamps, Unix milliseconds and UTC
//! calendar arithmetic (days, months, weekdays), shared by the daemon, the CLI and the simulator.
//!
//! **Which wall clock.** Everything the daemon and the simulator stamp or compare with wall time
//! reads it through [`now`] (or [`wall_clock_ms`]): the system clock, unless a test installed
//! another source with [`install_source`] (the fault-model run, `tests/fault_model.rs`, runs
//! days of simulated time under tokio's paused clock). There is deliberately no configuration
//! key, flag or environment variable that fakes time: only code can install a source, and the
//! daemon never does. Monotonic time is `tokio::time::Instant`, which a paused runtime advances.
//!
//! A leaf: it imports nothing of the crate and never sleeps. Day numbers come from
//! `meter_protocols::calendar` (the codecs need the same arithmetic for freeze stamps), where
//! chrono or time would be a new dependency tree for the gateway; formatting a `SystemTime`
//! goes through humantime, which the configuration parser already uses.

pub mod gateway;

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z (UTC, no leap seconds).
pub type UnixMillis = i64;

const MS_PER_DAY: i64 = 86_400_000;

/// UTC RFC 3339 with milliseconds: `2026-11-27T11:00:01.234Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A source of wall-clock time other than the system clock (tests only; see the module doc).
pub type WallSource = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The installed source; `None`: the system clock.
static SOURCE: RwLock<Option<WallSource>> = RwLock::new(None);

/// The wall clock now: the system clock, or the source a test installed.
pub fn now() -> SystemTime {
    // A poisoned lock only means a panic elsewhere while installing: the value is whole.
    let source = match SOURCE.read() {
        Ok(s) => s.clone(),
        Err(p) => p.into_inner().clone(),
    };
    match source {
        None => SystemTime::now(),
        Some(f) => f(),
    }
}

/// Makes [`now`] read `source` from now on, for the whole process (`None`: the system clock
/// again). For a test binary of its own: every thread of the process sees it.
pub fn install_source(source: Option<WallSource>) {
    match SOURCE.write() {
        Ok(mut s) => *s = source,
        Err(p) => *p.into_inner() = source,
    }
}

/// Whether a test installed a source ([`install_source`]). Such a test runs on tokio's paused
/// clock, so code that waits on the real clock for precision (the bus's turnaround tail on
/// the blocking pool) waits on tokio's timer alone instead: real time does not pass there.
pub fn is_virtual() -> bool {
    match SOURCE.read() {
        Ok(s) => s.is_some(),
        Err(p) => p.into_inner().is_some(),
    }
}

/// The wall clock ([`now`]) in Unix milliseconds (0 if it is before 1970).
pub fn wall_clock_ms() -> UnixMillis {
    now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub use meter_protocols::calendar::{civil_from_days, days_from_civil};

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// Month 1..=12.
    pub month: u32,
    /// Day 1..=31.
    pub day: u32,
    /// Weekday, 0 = Sunday.
    pub weekday: u32,
    /// Hour 0..=23.
    pub hour: u32,
    /// Minute 0..=59.
    pub minute: u32,
    /// Second 0..=59.
    pub second: u32,
    /// Millisecond 0..=999.
    pub millis: u32,
}

/// Breaks a Unix time into its UTC calendar fields.
pub fn civil(t: UnixMillis) -> Civil {
    let days = t.div_euclid(MS_PER_DAY);
    let ms = t.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = ms / 1000;
    Civil {
        year,
        month,
        day,
        weekday: (days + 4).rem_euclid(7) as u32,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        millis: (ms % 1000) as u32,
    }
}

/// Midnight (00:00 UTC) of the day `t` falls in.
pub fn start_of_day(t: UnixMillis) -> UnixMillis {
    t.div_euclid(MS_PER_DAY) * MS_PER_DAY
}

/// Midnight of the first day of the month `months_back` months before the month of `t`.
pub fn start_of_month(t: UnixMillis, months_back: u32) -> UnixMillis {
    let c = civil(t);
    let index = c.year * 12 + i64::from(c.month) - 1 - i64::from(months_back);
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    days_from_civil(year, month, 1) * MS_PER_DAY
}

/// RFC 3339 with milliseconds, UTC: `2026-11-27T11:00:01.234Z`.
pub fn rfc3339_ms(t: UnixMillis) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff]Z` (UTC only).
pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if t.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis: i64 = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            f3.parse().ok()?
        }
        Some(_) => return None,
    };
    if civil_from_days(days_from_civil(year, month, day)) != (year, month, day) {
        return None;
    }
    Some(
        days_from_civil(year, month, day) * MS_PER_DAY
            + ((hour * 60 + minute) * 60 + second) * 1000
            + millis,
    )
}

/// A fixed offset from UTC, as a meter's local time keeps it (`+08:00` for China Standard
/// Time, where DL/T 645 meters live). Meters have no daylight-saving rules; neither has this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    /// Minutes east of UTC, −14 h..=+14 h.
    minutes: i16,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };
    /// China Standard Time, the zone DL/T 645 meters keep.
    pub const CHINA: UtcOffset = UtcOffset { minutes: 480 };

    /// Minutes east of UTC.
    pub fn minutes(self) -> i64 {
        i64::from(self.minutes)
    }
}

impl std::str::FromStr for UtcOffset {
    type Err = String;

    /// `+08:00`, `-05:30`, `Z`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is no UTC offset (write e.g. \"+08:00\" or \"Z\")");
        if s == "Z" || s == "z" {
            return Ok(UtcOffset::UTC);
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i16 = h.parse().map_err(|_| bad())?;
        let m: i16 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 || (h == 14 && m > 0) {
            return Err(bad());
        }
        Ok(UtcOffset {
            minutes: sign * (h * 60 + m),
        })
    }
}

impl std::fmt::Display for UtcOffset {
    /// `+08:00` (UTC is `+00:00`, as RFC 3339 allows and the freeze ids need a fixed width).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.minutes < 0 { '-' } else { '+' };
        let m = self.minutes.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

impl serde::Serialize for UtcOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for UtcOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn utc_offsets_parse_and_print() {
        for (text, minutes, shown) in [
            ("+08:00", 480, "+08:00"),
            ("-05:30", -330, "-05:30"),
            ("Z", 0, "+00:00"),
            ("+14:00", 840, "+14:00"),
        ] {
            let o: UtcOffset = text.parse().unwrap();
            assert_eq!(o.minutes(), minutes, "{text}");
            assert_eq!(o.to_string(), shown);
        }
        for bad in [
            "08:00", "+8:00", "+08", "+15:00", "+14:30", "+08:60", "", "+aa:bb",
        ] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad}");
        }
    }
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let t = parse_rfc3339("2026-11-27T11:00:01.234Z").unwrap();
        assert_eq!(rfc3339_ms(t), "2026-11-27T11:00:01.234Z");
        let c = civil(t);
        assert_eq!(c.weekday, 5, "2026-11-27 is a Friday");
        assert_eq!(rfc3339_ms(start_of_month(t, 0)), "2026-11-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms(start_of_month(t, 11)),
            "2025-12-01T00:00:00.000Z"
        );
        assert_eq!(rfc3339_ms(start_of_day(t)), "2026-11-27T00:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-01-01 00:00:00"), None);
    }

    #[test]
    fn both_formatters_agree() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_777_201_234);
        assert_eq!(rfc3339_millis(t), rfc3339_ms(1_795_777_201_234));
    }
}
