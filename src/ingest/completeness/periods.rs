//! The monthly, hourly and load-profile completeness messages: `meterd.completeness.v1` with
//! `kind` `monthly` (`months`, the last [`MONTHS`]), `hourly` (`hours`, the last [`HOURS`]) or
//! `load_profile` (`records`, the last [`LOAD_SLOTS`] 15-minute slots), retained beside the
//! daily one on their own sub-topics.
//!
//! The windows: twelve months is the whole monthly history of a DL/T 645-2007 meter, so a
//! missing month can still be back-filled while it is shown; 48 hours is the default
//! `[freeze] backfill_hours` (the meter keeps 254), two settlement days of a large consumer.

use meter_protocols::dlt645::freeze::{
    FreezeKind, LOAD_PROFILE_SLOT_MINUTES, LocalMinute, monthly_stamp,
};
use serde::{Deserialize, Serialize};

use super::tally::{Tally, tally};
use super::{COMPLETENESS_SCHEMA, ExpectedMeter};
use crate::spool::freezes::LedgerEntry;

/// Months the monthly message covers, newest first.
pub const MONTHS: u8 = 12;
/// Hours the hourly message covers, newest first.
pub const HOURS: u8 = 48;
/// 15-minute slots the load-profile message covers, newest first: one day. A meter recording
/// every 30 or 60 minutes is expected in its own slots only.
pub const LOAD_SLOTS: u8 = 96;

/// A monthly or hourly completeness message (retained on `…/completeness/monthly` or
/// `…/completeness/hourly`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodMessage {
    /// Always [`COMPLETENESS_SCHEMA`].
    pub schema: String,
    /// Gateway id.
    pub gateway: String,
    /// `monthly` or `hourly`.
    pub kind: String,
    /// `months` or `hours`, newest first.
    #[serde(flatten)]
    pub periods: PeriodList,
    /// Gateway UTC time the figures were taken.
    pub updated_at: String,
    /// The meters counted. Known to the gateway only: not published.
    #[serde(skip)]
    pub expected_meters: Vec<String>,
}

/// The periods of a [`PeriodMessage`], under the key its kind names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeriodList {
    /// Monthly: `"months": [...]`.
    #[serde(rename = "months")]
    Months(Vec<PeriodCompleteness>),
    /// Hourly: `"hours": [...]`.
    #[serde(rename = "hours")]
    Hours(Vec<PeriodCompleteness>),
    /// Load profile: `"records": [...]`.
    #[serde(rename = "records")]
    Records(Vec<PeriodCompleteness>),
}

/// One period's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodCompleteness {
    /// Which period: `"month": "2026-11"` or `"hour": "2026-12-07T13:00"`.
    #[serde(flatten)]
    pub period: PeriodLabel,
    /// Meters expected to deliver it.
    pub expected: u32,
    /// Meters whose record the broker acknowledged.
    pub delivered: u32,
    /// Meters whose record is not delivered (yet), by id.
    pub missing: Vec<String>,
    /// Those of `missing` whose record can never be read, by id.
    #[serde(default)]
    pub lost: Vec<String>,
}

/// The name of a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodLabel {
    /// `YYYY-MM`: the month whose records are stamped at the settlement day and hour of the
    /// month after (with the default settlement on the 1st at 00:00: that month's
    /// consumption).
    #[serde(rename = "month")]
    Month(String),
    /// `YYYY-MM-DDTHH:00`: the hour starting then, closed by the records stamped an hour
    /// later (meter local time).
    #[serde(rename = "hour")]
    Hour(String),
    /// `YYYY-MM-DDTHH:MM`: the load records stamped then (meter local time).
    #[serde(rename = "record")]
    Record(String),
}

impl PeriodLabel {
    /// The text (`2026-11`, `2026-12-07T13:00`).
    pub fn text(&self) -> &str {
        match self {
            PeriodLabel::Month(t) | PeriodLabel::Hour(t) | PeriodLabel::Record(t) => t,
        }
    }
}

impl PeriodMessage {
    /// The periods, newest first.
    pub fn rows(&self) -> &[PeriodCompleteness] {
        match &self.periods {
            PeriodList::Months(r) | PeriodList::Hours(r) | PeriodList::Records(r) => r,
        }
    }

    /// The figures only (not `updated_at`): whether two messages say the same.
    pub fn same_figures(&self, other: &PeriodMessage) -> bool {
        self.periods == other.periods && self.gateway == other.gateway && self.kind == other.kind
    }

    /// The periods of the message whose record of `meter` is missing (`"2026-11 (lost)"` for
    /// a lost one); `None` when the meter does not collect this kind.
    pub fn missing_periods(&self, meter: &str) -> Option<Vec<String>> {
        if !self.expected_meters.iter().any(|m| m == meter) {
            return None;
        }
        Some(
            self.rows()
                .iter()
                .filter(|p| p.missing.iter().any(|m| m == meter))
                .map(|p| {
                    if p.lost.iter().any(|m| m == meter) {
                        format!("{} (lost)", p.period.text())
                    } else {
                        p.period.text().to_owned()
                    }
                })
                .collect(),
        )
    }
}

/// The message of `kind` (monthly or hourly; `None` for daily, see [`super::build`]) for
/// `meters` from that kind's ledger rows, at wall time `now_ms`; `settlement` is the meters'
/// monthly settlement (day, hour).
pub fn periods(
    kind: FreezeKind,
    gateway: &str,
    meters: &[ExpectedMeter],
    ledger: &[LedgerEntry],
    now_ms: i64,
    settlement: (u8, u8),
    updated_at: &str,
) -> Option<PeriodMessage> {
    let periods = match kind {
        FreezeKind::Daily => return None,
        FreezeKind::Monthly => PeriodList::Months(
            tally(meters, ledger, now_ms, usize::from(MONTHS), |_, local| {
                (1..=MONTHS)
                    .map(|n| {
                        let stamp = monthly_stamp(local, settlement, n);
                        (month_before(stamp), stamp)
                    })
                    .collect()
            })
            .into_iter()
            .map(|t| row(t, PeriodLabel::Month))
            .collect(),
        ),
        FreezeKind::Hourly => PeriodList::Hours(
            tally(meters, ledger, now_ms, usize::from(HOURS), |_, local| {
                let this_hour = local.0.div_euclid(60) * 60;
                (1..=i64::from(HOURS))
                    .map(|back| {
                        let hour = LocalMinute(this_hour - back * 60);
                        (hour.to_string(), LocalMinute(hour.0 + 60))
                    })
                    .collect()
            })
            .into_iter()
            .map(|t| row(t, PeriodLabel::Hour))
            .collect(),
        ),
        FreezeKind::LoadProfile => PeriodList::Records(
            tally(
                meters,
                ledger,
                now_ms,
                usize::from(LOAD_SLOTS),
                |meter, local| load_slots(meter.interval_minutes, local),
            )
            .into_iter()
            .map(|t| row(t, PeriodLabel::Record))
            .collect(),
        ),
    };
    Some(PeriodMessage {
        schema: COMPLETENESS_SCHEMA.to_owned(),
        gateway: gateway.to_owned(),
        kind: kind.name().to_owned(),
        periods,
        updated_at: updated_at.to_owned(),
        expected_meters: meters.iter().map(|m| m.id.clone()).collect(),
    })
}

fn row(t: Tally, label: fn(String) -> PeriodLabel) -> PeriodCompleteness {
    PeriodCompleteness {
        period: label(t.label),
        expected: t.expected,
        delivered: t.delivered,
        missing: t.missing,
        lost: t.lost,
    }
}

/// The load-record stamps of a meter recording every `interval` minutes in the last
/// [`LOAD_SLOTS`] 15-minute slots before `local` (the record of the current slot is not due
/// yet), newest first, each labelled by its stamp.
fn load_slots(interval: i64, local: LocalMinute) -> Vec<(String, LocalMinute)> {
    let slot = LOAD_PROFILE_SLOT_MINUTES;
    let this_slot = local.0.div_euclid(slot) * slot;
    (1..=i64::from(LOAD_SLOTS))
        .map(|back| LocalMinute(this_slot - back * slot))
        .filter(|s| interval > 0 && (s.0 - s.start_of_day().0) % interval == 0)
        .map(|s| (s.to_string(), s))
        .collect()
}

/// `YYYY-MM` of the month before the one `stamp` falls in.
fn month_before(stamp: LocalMinute) -> String {
    let (y, m, _, _, _) = stamp.civil();
    let index = y * 12 + i64::from(m) - 2;
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}
