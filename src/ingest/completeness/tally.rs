//! Counting one kind's records per period over the expected meters: expected, delivered,
//! missing, lost. Shared by the daily message and the monthly and hourly ones.

use std::collections::HashMap;

use meter_protocols::dlt645::freeze::LocalMinute;

use super::ExpectedMeter;
use crate::spool::freezes::{LedgerEntry, LedgerState};

/// One period's figures, labelled (`2026-12-06`, `2026-11`, `2026-12-07T13:00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    pub label: String,
    pub expected: u32,
    pub delivered: u32,
    pub missing: Vec<String>,
    pub lost: Vec<String>,
}

/// The figures of the last `count` periods, newest first. `periods(meter, local_now)` gives each
/// meter's periods, newest first, as (label, the stamp of the record closing it), in the
/// meter's local time; the `k`-th (from 1) is beyond a meter's history when `k` exceeds its
/// `depth`. Such a period with no ledger row is lost when the gateway had collected this meter
/// before it (a row of an earlier stamp exists: the record fell out unread), and not expected
/// at all otherwise (it was gone before the gateway first read the meter).
pub(super) fn tally(
    meters: &[ExpectedMeter],
    ledger: &[LedgerEntry],
    now_ms: i64,
    count: usize,
    periods: impl Fn(&ExpectedMeter, LocalMinute) -> Vec<(String, LocalMinute)>,
) -> Vec<Tally> {
    let by_key: HashMap<(&str, &str), &LedgerEntry> = ledger
        .iter()
        .map(|e| ((e.meter.as_str(), e.stamp.as_str()), e))
        .collect();
    // The earliest stamp stored of each meter (rows come sorted by meter and stamp).
    let mut first: HashMap<&str, &str> = HashMap::new();
    for e in ledger {
        first.entry(e.meter.as_str()).or_insert(e.stamp.as_str());
    }
    let mut rows: Vec<Tally> = Vec::new();
    for meter in meters {
        let local = LocalMinute(now_ms.div_euclid(60_000) + meter.offset.minutes());
        for (k, (label, stamp)) in periods(meter, local).into_iter().enumerate() {
            let key = format!("{stamp}{}", meter.offset);
            let state = by_key
                .get(&(meter.id.as_str(), key.as_str()))
                .map(|e| e.state);
            let beyond_history = k >= usize::from(meter.depth);
            let state = match state {
                Some(s) => Some(s),
                None if beyond_history => {
                    match first.get(meter.id.as_str()) {
                        // Collected before this period closed: it fell out unread.
                        Some(f) if *f < key.as_str() => Some(LedgerState::Lost),
                        _ => continue,
                    }
                }
                None => None,
            };
            let row = match rows.iter().position(|r| r.label == label) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(Tally {
                        label,
                        expected: 0,
                        delivered: 0,
                        missing: Vec::new(),
                        lost: Vec::new(),
                    });
                    let last = rows.len() - 1;
                    &mut rows[last]
                }
            };
            row.expected += 1;
            match state {
                Some(LedgerState::Delivered) => row.delivered += 1,
                Some(LedgerState::Lost) => {
                    row.missing.push(meter.id.clone());
                    row.lost.push(meter.id.clone());
                }
                Some(LedgerState::Stored) | None => row.missing.push(meter.id.clone()),
            }
        }
    }
    rows.sort_by(|a, b| b.label.cmp(&a.label));
    rows.truncate(count);
    for r in &mut rows {
        r.missing.sort();
        r.lost.sort();
    }
    rows
}
