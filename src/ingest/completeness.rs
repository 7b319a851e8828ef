//! The completeness of the meters' settlement records, per period: expected vs delivered vs
//! lost, the concentrator's reading success rate (`meterd.completeness.v1`, retained).
//!
//! Built from the spool's ledger and the configured meters ([`expected`]): every meter
//! collecting records of a kind is expected once per period of that kind. The daily message
//! ([`build`], `kind` `daily`, the pinned contract) covers the last [`DAYS`] days; the monthly
//! and hourly ones ([`periods`], `kind` `monthly`/`hourly`) the last [`MONTHS`] months and
//! [`HOURS`] hours. A period is named by the consumption its records close: the record closing
//! day D is the one stamped D+1 at the meter's daily freeze time (00:00 on almost every
//! meter); month M, the one stamped at the settlement day and hour in M+1; hour H, the one
//! stamped at the next whole hour; each in the meter's own zone. Delivered means the broker
//! acknowledged it; everything else is missing, and a record that fell out of the meter's
//! history (the ledger says lost, or it is older than the meter keeps and was never stored)
//! is also listed as lost.

mod periods;
mod tally;

use meter_protocols::dlt645::Version;
use meter_protocols::dlt645::freeze::{FreezeKind, LOAD_PROFILE_DEFAULT_MINUTES, LocalMinute};
use serde::{Deserialize, Serialize};

pub use periods::{
    HOURS, LOAD_SLOTS, MONTHS, PeriodCompleteness, PeriodLabel, PeriodList, PeriodMessage, periods,
};

use crate::clock::UtcOffset;
use crate::config::{Config, ProfileSet, Protocol};
use crate::spool::freezes::LedgerEntry;

/// Schema name of the completeness message.
pub const COMPLETENESS_SCHEMA: &str = "meterd.completeness.v1";

/// Days the message covers, newest first: the last seven closed days.
pub const DAYS: i64 = 7;

/// A meter expected to deliver the records of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedMeter {
    /// Meter id.
    pub id: String,
    /// Its time zone.
    pub offset: UtcOffset,
    /// How many records of the kind it keeps (a DL/T 645-1997 meter: two monthly ones;
    /// load records: its `load_profile_depth`, counted up to 255).
    pub depth: u8,
    /// Minutes between its load records (load profile only; 0 for the other kinds).
    pub interval_minutes: i64,
}

impl ExpectedMeter {
    /// A DL/T 645-2007 meter in `offset` keeping the full history of `kind`.
    pub fn new(id: &str, offset: UtcOffset, kind: FreezeKind) -> ExpectedMeter {
        ExpectedMeter {
            id: id.to_owned(),
            offset,
            depth: kind.depth(),
            interval_minutes: match kind {
                FreezeKind::LoadProfile => LOAD_PROFILE_DEFAULT_MINUTES,
                _ => 0,
            },
        }
    }
}

/// Which meters are expected to deliver which kind of record: the configured DL/T 645 meters
/// whose `freezes` (or profile's) list the kind, where their edition keeps it. A Modbus meter
/// is never expected; a DL/T 645-1997 meter only for monthly records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Meters collecting daily records.
    pub daily: Vec<ExpectedMeter>,
    /// Meters collecting monthly settlement records.
    pub monthly: Vec<ExpectedMeter>,
    /// Meters collecting hourly records.
    pub hourly: Vec<ExpectedMeter>,
    /// Meters collecting load records.
    pub load_profile: Vec<ExpectedMeter>,
}

impl Expected {
    /// The meters of `kind`.
    pub fn of(&self, kind: FreezeKind) -> &[ExpectedMeter] {
        match kind {
            FreezeKind::Daily => &self.daily,
            FreezeKind::Monthly => &self.monthly,
            FreezeKind::Hourly => &self.hourly,
            FreezeKind::LoadProfile => &self.load_profile,
        }
    }
}

/// [`Expected`] of a configuration (a meter whose profile is unknown is skipped: the bus
/// reports it).
pub fn expected(config: &Config, profiles: &ProfileSet) -> Expected {
    let mut out = Expected::default();
    for bus in &config.buses {
        let bus = bus.get_ref();
        for m in &bus.meters {
            let m = m.get_ref();
            let version = match m.protocol {
                Protocol::Dlt645_2007 => Version::V2007,
                Protocol::Dlt645_1997 => Version::V1997,
                Protocol::ModbusRtu | Protocol::ModbusTcp => continue,
            };
            let Some(profile) = profiles.get(&m.profile) else {
                continue;
            };
            for kind in m.freeze_kinds(profile) {
                let mut depth = kind.depth_in(version);
                if depth == 0 {
                    continue;
                }
                let load = profile.load_profile();
                let list = match kind {
                    FreezeKind::Daily => &mut out.daily,
                    FreezeKind::Monthly => &mut out.monthly,
                    FreezeKind::Hourly => &mut out.hourly,
                    FreezeKind::LoadProfile => {
                        depth = u8::try_from(load.depth).unwrap_or(u8::MAX);
                        &mut out.load_profile
                    }
                };
                if !list.iter().any(|e| e.id == m.effective_id(&bus.name)) {
                    list.push(ExpectedMeter {
                        id: m.effective_id(&bus.name),
                        offset: m.utc_offset,
                        depth,
                        interval_minutes: match kind {
                            FreezeKind::LoadProfile => load.interval_minutes,
                            _ => 0,
                        },
                    });
                }
            }
        }
    }
    out
}

/// The latest completeness of each kind (`None` where no meter collects it), as the uplink was
/// handed it: what the diagnostics service shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompletenessSet {
    /// Daily records, the last [`DAYS`] days.
    pub daily: Option<CompletenessMessage>,
    /// Monthly settlement records, the last [`MONTHS`] months.
    pub monthly: Option<PeriodMessage>,
    /// Hourly records, the last [`HOURS`] hours.
    pub hourly: Option<PeriodMessage>,
    /// Load records, the last [`LOAD_SLOTS`] 15-minute slots.
    pub load_profile: Option<PeriodMessage>,
}

/// The retained completeness message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletenessMessage {
    /// Always [`COMPLETENESS_SCHEMA`].
    pub schema: String,
    /// Gateway id.
    pub gateway: String,
    /// `daily`.
    pub kind: String,
    /// The last [`DAYS`] days, newest first.
    pub days: Vec<DayCompleteness>,
    /// Gateway UTC time the figures were taken.
    pub updated_at: String,
    /// The meters counted (collecting daily records). Known to the gateway only: not
    /// published.
    #[serde(skip)]
    pub expected_meters: Vec<String>,
}

impl CompletenessMessage {
    /// The days of the message whose record of `meter` is missing (`"2026-12-05 (lost)"` for
    /// a lost one); `None` when the meter does not collect daily records.
    pub fn missing_days(&self, meter: &str) -> Option<Vec<String>> {
        if !self.expected_meters.iter().any(|m| m == meter) {
            return None;
        }
        Some(
            self.days
                .iter()
                .filter(|d| d.missing.iter().any(|m| m == meter))
                .map(|d| {
                    if d.lost.iter().any(|m| m == meter) {
                        format!("{} (lost)", d.day)
                    } else {
                        d.day.clone()
                    }
                })
                .collect(),
        )
    }
}

/// One day's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCompleteness {
    /// The day whose consumption the records close (`2026-12-06`: the records stamped
    /// 2026-12-07 00:00).
    pub day: String,
    /// Meters expected to deliver it.
    pub expected: u32,
    /// Meters whose record the broker acknowledged.
    pub delivered: u32,
    /// Meters whose record is not delivered (yet), by id.
    pub missing: Vec<String>,
    /// Those of `missing` whose record can never be read (fell out of the meter's history,
    /// or the meter did not freeze), by id.
    #[serde(default)]
    pub lost: Vec<String>,
}

impl CompletenessMessage {
    /// The figures only (not `updated_at`): whether two messages say the same.
    pub fn same_figures(&self, other: &CompletenessMessage) -> bool {
        self.days == other.days && self.gateway == other.gateway
    }
}

/// The daily message for `meters` (each meter collecting daily records) from the `daily`
/// ledger rows, at wall time `now_ms`; `daily_at` is the meters' daily freeze time in minutes
/// after midnight.
pub fn build(
    gateway: &str,
    meters: &[ExpectedMeter],
    ledger: &[LedgerEntry],
    now_ms: i64,
    daily_at: u16,
    updated_at: &str,
) -> CompletenessMessage {
    let days_back = |_: &ExpectedMeter, local: LocalMinute| {
        let today = local.start_of_day();
        (1..=DAYS)
            .map(|back| {
                let day = LocalMinute(today.0 - back * 1440);
                let stamp = LocalMinute(day.0 + 1440 + i64::from(daily_at));
                (day.to_string()[..10].to_owned(), stamp)
            })
            .collect()
    };
    let days = tally::tally(
        meters,
        ledger,
        now_ms,
        usize::try_from(DAYS).unwrap_or(7),
        days_back,
    )
    .into_iter()
    .map(|t| DayCompleteness {
        day: t.label,
        expected: t.expected,
        delivered: t.delivered,
        missing: t.missing,
        lost: t.lost,
    })
    .collect();
    CompletenessMessage {
        schema: COMPLETENESS_SCHEMA.to_owned(),
        gateway: gateway.to_owned(),
        kind: FreezeKind::Daily.name().to_owned(),
        days,
        updated_at: updated_at.to_owned(),
        expected_meters: meters.iter().map(|m| m.id.clone()).collect(),
    }
}

#[cfg(test)]
mod tests;
