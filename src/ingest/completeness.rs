//! The completeness of daily settlement records, per day: expected vs delivered, the
//! concentrator's reading success rate (`meterd.completeness.v1`, retained).
//!
//! Built from the spool's ledger and the configured meters: every meter collecting daily
//! records is expected once per day. The record closing day D is the one stamped D+1 at the
//! meter's daily freeze time (00:00 on almost every meter), so "day" is the day whose
//! consumption the record settles. Delivered means the broker acknowledged it; everything
//! else is missing, and a record that fell out of the meter's history is also listed as lost.

use std::collections::HashMap;

use meter_protocols::dlt645::freeze::LocalMinute;
use serde::{Deserialize, Serialize};

use crate::clock::UtcOffset;
use crate::spool::freezes::{LedgerEntry, LedgerState};

/// Schema name of the completeness message.
pub const COMPLETENESS_SCHEMA: &str = "meterd.completeness.v1";

/// Days the message covers, newest first: the last seven closed days.
pub const DAYS: i64 = 7;

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

/// The message for `meters` (id and time zone of each meter collecting daily records) from
/// the `daily` ledger rows, at wall time `now_ms`; `daily_at` is the meters' daily freeze
/// time in minutes after midnight.
pub fn build(
    gateway: &str,
    meters: &[(String, UtcOffset)],
    ledger: &[LedgerEntry],
    now_ms: i64,
    daily_at: u16,
    updated_at: &str,
) -> CompletenessMessage {
    let by_key: HashMap<(&str, &str), &LedgerEntry> = ledger
        .iter()
        .map(|e| ((e.meter.as_str(), e.stamp.as_str()), e))
        .collect();
    // Day rows keyed by the day's text, newest first once sorted.
    let mut days: Vec<DayCompleteness> = Vec::new();
    for (meter, offset) in meters {
        let local = LocalMinute(now_ms.div_euclid(60_000) + offset.minutes());
        let today = local.start_of_day();
        for back in 1..=DAYS {
            let day = LocalMinute(today.0 - back * 1440);
            let stamp = LocalMinute(day.0 + 1440 + i64::from(daily_at));
            let day_text = day.to_string()[..10].to_owned();
            let key = format!("{stamp}{offset}");
            let entry = by_key.get(&(meter.as_str(), key.as_str()));
            let row = match days.iter_mut().find(|d| d.day == day_text) {
                Some(r) => r,
                None => {
                    days.push(DayCompleteness {
                        day: day_text,
                        expected: 0,
                        delivered: 0,
                        missing: Vec::new(),
                        lost: Vec::new(),
                    });
                    let last = days.len() - 1;
                    &mut days[last]
                }
            };
            row.expected += 1;
            match entry.map(|e| e.state) {
                Some(LedgerState::Delivered) => row.delivered += 1,
                Some(LedgerState::Lost) => {
                    row.missing.push(meter.clone());
                    row.lost.push(meter.clone());
                }
                Some(LedgerState::Stored) | None => row.missing.push(meter.clone()),
            }
        }
    }
    days.sort_by(|a, b| b.day.cmp(&a.day));
    days.truncate(usize::try_from(DAYS).unwrap_or(7));
    for d in &mut days {
        d.missing.sort();
        d.lost.sort();
    }
    CompletenessMessage {
        schema: COMPLETENESS_SCHEMA.to_owned(),
        gateway: gateway.to_owned(),
        kind: "daily".to_owned(),
        days,
        updated_at: updated_at.to_owned(),
        expected_meters: meters.iter().map(|(m, _)| m.clone()).collect(),
    }
}

#[cfg(test)]
mod tests;
