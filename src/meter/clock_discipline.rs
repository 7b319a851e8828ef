//! Meter clock discipline: whether a meter's clock is off, and whether the gateway may correct
//! it by broadcast time sync now — one pure function, [`decide`], over times passed in.
//!
//! The limits are the meters' own (`shared/notes/billing.md` §2, notes/dlt645.md §1.10): a
//! meter takes at most one broadcast sync a day, none between 23:55 and 00:05, none within
//! ±5 min of a settlement time (the daily freeze, the monthly settlement), and only a
//! correction under 5 min. The gateway keeps inside them rather than rely on the firmware: a
//! set the meter refuses is a silent no-op, and a firmware that is lax would let a wrong
//! gateway clock move the meter across a settlement instant. Larger offsets need a technician
//! (a password-protected write); they are reported, never forced. Nothing is compared while
//! the gateway's own clock does not count as synchronised.
//!
//! Times are Unix milliseconds for the gateway and "local milliseconds" (the meter's wall
//! clock read as if it were UTC) for the meter, so no clock is read here.

use std::time::Duration;

/// Largest correction a broadcast sync may make (exclusive).
pub const MAX_SYNC: Duration = Duration::from_secs(5 * 60);
/// No sync this close to a settlement time (inclusive), either side.
pub const SETTLEMENT_GUARD: Duration = Duration::from_secs(5 * 60);
/// No sync this close to midnight (inclusive), either side: 23:55..=00:05.
pub const MIDNIGHT_GUARD: Duration = Duration::from_secs(5 * 60);

const DAY_MS: i64 = 86_400_000;

/// What the decision needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFacts {
    /// Whether the gateway's clock counts as synchronised now.
    pub gateway_synchronised: bool,
    /// Gateway time when the meter's clock was read (Unix ms, UTC).
    pub gateway_ms: i64,
    /// The meter's clock as read (its local wall time, as ms since 1970-01-01 00:00 local).
    pub meter_local_ms: i64,
    /// The meter's zone: minutes east of UTC.
    pub offset_minutes: i64,
    /// A meter clock off by more than this is drifting.
    pub drift_limit: Duration,
    /// Whether correcting is enabled (`[meter_clock] sync`).
    pub sync_enabled: bool,
    /// The local day (days since 1970-01-01, meter zone) of the last sync sent on this bus.
    pub last_sync_day: Option<i64>,
    /// The daily freeze time, minutes after local midnight.
    pub daily_freeze_minute: u16,
    /// The monthly settlement day (1..=28) and hour.
    pub settlement: (u8, u8),
    /// Whether every meter the broadcast reaches keeps the same zone (else a sync would set
    /// some of them wrong).
    pub one_zone: bool,
    /// The smallest and largest last-read offsets (ms, meter − true time) of the other meters
    /// the broadcast reaches that it could set (under 5 min off): their clocks must keep out
    /// of the midnight and settlement guards too, or the broadcast would reach one of them
    /// inside its own.
    pub peer_offsets_ms: Option<(i64, i64)>,
}

/// Why no sync is sent for a meter that drifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[meter_clock] sync = false`.
    Disabled,
    /// The offset is 5 min or more: a technician's job.
    TooLarge,
    /// This bus has had its sync today.
    AlreadyToday,
    /// Within 23:55..=00:05 (meter clock or true local time).
    NearMidnight,
    /// Within ±5 min of a settlement time (meter clock or true local time).
    NearSettlement,
    /// The meters on the bus keep different zones.
    MixedZones,
}

impl Refusal {
    /// Short text for logs, status and event details.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Disabled => "sync disabled ([meter_clock] sync = false)",
            Refusal::TooLarge => "offset of 5 min or more: needs a technician",
            Refusal::AlreadyToday => "this bus was synced today already",
            Refusal::NearMidnight => "within 23:55-00:05",
            Refusal::NearSettlement => "within 5 min of a settlement time",
            Refusal::MixedZones => "the meters on this bus keep different time zones",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gateway's clock does not count as synchronised: nothing compared.
    NotCompared,
    /// Within the limit; `offset_ms` = meter − gateway.
    InLimit {
        /// Meter time minus true time, ms.
        offset_ms: i64,
    },
    /// Off by more than the limit, and corrected now: send `target_local_ms` (true local time).
    Sync {
        /// Meter time minus true time, ms.
        offset_ms: i64,
    },
    /// Off by more than the limit, not corrected, and why.
    Drift {
        /// Meter time minus true time, ms.
        offset_ms: i64,
        /// Why no sync.
        refusal: Refusal,
    },
}

/// Whether `local_ms` (a local wall time) is within `guard` of `at_ms_of_day` on its own day
/// or the neighbouring ones.
fn near_time_of_day(local_ms: i64, at_ms_of_day: i64, guard: Duration) -> bool {
    let g = i64::try_from(guard.as_millis()).unwrap_or(i64::MAX);
    let tod = local_ms.rem_euclid(DAY_MS);
    let d = (tod - at_ms_of_day).rem_euclid(DAY_MS);
    d <= g || DAY_MS - d <= g
}

/// Whether `local_ms` is within `guard` of the monthly settlement instant (day, hour) of its
/// month (or the next month's, or the previous one's, across a month end).
fn near_settlement(local_ms: i64, (day, hour): (u8, u8), guard: Duration) -> bool {
    let g = i64::try_from(guard.as_millis()).unwrap_or(i64::MAX);
    let days = local_ms.div_euclid(DAY_MS);
    let (y, m, _) = meter_protocols::calendar::civil_from_days(days);
    [-1i64, 0, 1].iter().any(|dm| {
        let months = y * 12 + i64::from(m) - 1 + dm;
        let (yy, mm) = (months.div_euclid(12), (months.rem_euclid(12) + 1) as u32);
        let at = meter_protocols::calendar::days_from_civil(yy, mm, u32::from(day)) * DAY_MS
            + i64::from(hour) * 3_600_000;
        (local_ms - at).abs() <= g
    })
}

/// The decision for one meter clock read (see the module doc).
pub fn decide(f: &ClockFacts) -> Verdict {
    if !f.gateway_synchronised {
        return Verdict::NotCompared;
    }
    let true_local = f.gateway_ms + f.offset_minutes * 60_000;
    let offset_ms = f.meter_local_ms - true_local;
    let limit = i64::try_from(f.drift_limit.as_millis()).unwrap_or(i64::MAX);
    if offset_ms.abs() <= limit {
        return Verdict::InLimit { offset_ms };
    }
    let refuse = |refusal| Verdict::Drift { offset_ms, refusal };
    if !f.sync_enabled {
        return refuse(Refusal::Disabled);
    }
    let max = i64::try_from(MAX_SYNC.as_millis()).unwrap_or(i64::MAX);
    if offset_ms.abs() >= max {
        return refuse(Refusal::TooLarge);
    }
    if f.last_sync_day == Some(true_local.div_euclid(DAY_MS)) {
        return refuse(Refusal::AlreadyToday);
    }
    // Every clock: each meter's firmware judges by its own, the settlement by the true one.
    // The peers' offsets are a range under 10 min wide: its two ends cover it.
    let (lo, hi) = f.peer_offsets_ms.unwrap_or((offset_ms, offset_ms));
    let clocks = [
        f.meter_local_ms,
        true_local,
        true_local + lo,
        true_local + hi,
    ];
    if clocks
        .iter()
        .any(|&t| near_time_of_day(t, 0, MIDNIGHT_GUARD))
    {
        return refuse(Refusal::NearMidnight);
    }
    let daily = i64::from(f.daily_freeze_minute) * 60_000;
    if clocks.iter().any(|&t| {
        near_time_of_day(t, daily, SETTLEMENT_GUARD)
            || near_settlement(t, f.settlement, SETTLEMENT_GUARD)
    }) {
        return refuse(Refusal::NearSettlement);
    }
    if !f.one_zone {
        return refuse(Refusal::MixedZones);
    }
    Verdict::Sync { offset_ms }
}

#[cfg(test)]
mod tests;
