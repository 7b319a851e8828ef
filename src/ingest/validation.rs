//! Validation: decides each value's quality before it is stored.
//!
//! The codec layer already made frame-level faults `bad` (timeout, checksum, error reply). This
//! module looks at decoded values and marks the implausible ones `suspect`, with a reason,
//! so the billing core can hold them for review rather than bill them:
//! - a cumulative energy register lower than the meter's last good value (state kept across
//!   restarts by the spool), because a meter's import or export counter never runs backwards;
//! - a value outside its physical range (voltage, current, frequency, power factor);
//! - tariff registers whose sum disagrees with the total by more than rounding allows, when the
//!   batch holds every tariff register of the meter (one block reply, or `meter.tariff_count`);
//! - a meter clock off the gateway's clock by more than the configured limit: compared only
//!   while the gateway's own clock counts as synchronised (`[gateway_clock]`, the same
//!   precondition as the `clock_drift` event); and when the meter's last daily clock check
//!   found it off, its `meter.time` and every value carrying the meter's own time stamp
//!   (`meter_time`: max demand times) are marked too, whether or not the profile reads the
//!   clock.
//!
//! It never drops a value, never changes a number, and never turns `bad` into anything else.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use meter_protocols::Decimal;

pub use crate::config::ValidationConfig;
use crate::reading::{Quality, ReadingBatch, ReadingValue, ValueData, is_cumulative};

/// The number a value holds, if it is a good or suspect number.
fn number(v: &ReadingValue) -> Option<Decimal> {
    match &v.value {
        Some(ValueData::Number(n)) => n.as_str().parse().ok(),
        _ => None,
    }
}

fn mark(v: &mut ReadingValue, reason: String) {
    if v.quality == Quality::Good {
        v.quality = Quality::Suspect;
        v.reason = Some(reason);
    }
}

/// What the gateway knows of a meter's clock besides the batch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockView {
    /// Whether the gateway's clock counts as synchronised: a meter's clock is compared only
    /// then.
    pub gateway_synchronised: bool,
    /// The meter's offset (meter − gateway, ms) found by its last clock check, when beyond
    /// the limit.
    pub known_off_ms: Option<i64>,
}

impl ClockView {
    /// A gateway clock taken as right and no clock check known (the CLI's one-shot reads).
    pub const TRUSTED: ClockView = ClockView {
        gateway_synchronised: true,
        known_off_ms: None,
    };
}

impl ValidationConfig {
    /// Marks implausible values of `batch` as suspect. `last_good` gives the meter's last good
    /// value of a quantity (from the spool); `now` is the gateway time of the reading. The
    /// gateway clock is taken as right ([`ClockView::TRUSTED`]).
    pub fn validate(
        &self,
        batch: &mut ReadingBatch,
        last_good: impl Fn(&str) -> Option<Decimal>,
        now: SystemTime,
    ) {
        self.validate_with_clock(batch, last_good, now, ClockView::TRUSTED);
    }

    /// [`ValidationConfig::validate`] with what the gateway knows of its own clock and the
    /// meter's (the daemon's writer).
    pub fn validate_with_clock(
        &self,
        batch: &mut ReadingBatch,
        last_good: impl Fn(&str) -> Option<Decimal>,
        now: SystemTime,
        clock: ClockView,
    ) {
        for v in &mut batch.values {
            if !matches!(v.value, Some(ValueData::Number(_))) {
                continue;
            }
            // Only values with a check are parsed (most instantaneous values of a big profile
            // have none): the parse was a visible share of the pipeline's CPU.
            let monotonic = is_cumulative(&v.quantity);
            let family = v.quantity.split('.').next().unwrap_or("");
            let range = self
                .ranges
                .get(family)
                .or_else(|| self.ranges.get(&*v.quantity))
                .copied();
            if !monotonic && range.is_none() {
                continue;
            }
            let Some(x) = number(v) else {
                // Too large (or too fine) for a Decimal: a Modbus float read with its words
                // swapped gives −2.7e29 V. Judged on its float value, never skipped as good.
                judge_unrepresentable(v, monotonic, range);
                continue;
            };
            if monotonic
                && let Some(prev) = last_good(&v.quantity)
                && x.cmp_value(prev) == Some(std::cmp::Ordering::Less)
            {
                mark(
                    v,
                    format!("register went backwards: {x} < last good {prev}"),
                );
                continue;
            }
            if let Some([lo, hi]) = range {
                let f = x.to_f64();
                if f < lo || f > hi {
                    mark(
                        v,
                        format!("outside the physical range {lo}..{hi} {}", v.unit),
                    );
                }
            }
        }
        if self.tariff_sum {
            check_tariffs(batch);
        }
        if clock.gateway_synchronised {
            check_clock(batch, now, self.clock_limit);
            if let Some(off) = clock.known_off_ms {
                mark_meter_times(batch, off);
            }
        }
    }
}

/// A number that does not fit a [`Decimal`] (more than 18 significant digits): outside any
/// physical range it is checked against, and never a plausible cumulative register (a
/// register of 10^18 kWh is a decoding error, and it cannot be compared with the last good
/// value exactly).
fn judge_unrepresentable(v: &mut ReadingValue, monotonic: bool, range: Option<[f64; 2]>) {
    let f = match &v.value {
        Some(ValueData::Number(n)) => n.as_str().parse::<f64>().ok(),
        _ => None,
    };
    match (f, range) {
        (Some(f), Some([lo, hi])) if f < lo || f > hi => {
            let reason = format!("outside the physical range {lo}..{hi} {}", v.unit);
            mark(v, reason);
        }
        (Some(_), Some(_)) if !monotonic => {}
        _ => mark(
            v,
            format!(
                "{} has too many digits to be a plausible register",
                v.quantity
            ),
        ),
    }
}

/// Marks the values stamped by a meter clock found off by `off_ms` at its last check.
fn mark_meter_times(batch: &mut ReadingBatch, off_ms: i64) {
    let secs = off_ms / 1000;
    for v in batch
        .values
        .iter_mut()
        .filter(|v| v.meter_time.is_some() || &*v.quantity == "meter.time")
    {
        mark(
            v,
            format!("meter clock off by {secs} s at its last clock check"),
        );
    }
}

/// Total vs the sum of its tariffs: each tariff register is rounded down to the format's last
/// digit, so the sum may fall short of the total by up to one step per tariff, never exceed it
/// by more than one step.
///
/// The sum is compared only when the batch holds **every** tariff register of the meter, which
/// it knows in one of two ways: the total and tariffs came in one block reply (the reply's
/// length is the meter's tariff count; [`crate::reading::TariffBlock`]), or the batch holds the
/// meter's own `meter.tariff_count` N and tariffs t1..tN. A profile that reads t1 and t2 of a
/// four-tariff meter must not make the total suspect.
fn check_tariffs(batch: &mut ReadingBatch) {
    // group → (index of the total, tariff number → value; `None` when read twice with two values)
    type Group = (Option<usize>, BTreeMap<u8, Option<Decimal>>);
    let mut groups: HashMap<&str, Group> = HashMap::new();
    let mut tariff_count: Option<u8> = None;
    for (i, v) in batch.values.iter().enumerate() {
        if v.quality != Quality::Good {
            continue;
        }
        if &*v.quantity == "meter.tariff_count" {
            tariff_count = number(v).and_then(|d| {
                (d.scale() == 0)
                    .then(|| u8::try_from(d.mantissa()).ok())
                    .flatten()
            });
            continue;
        }
        if !v.quantity.starts_with("energy.") || v.quantity.contains('@') {
            continue;
        }
        let Some((base, last)) = v.quantity.rsplit_once('.') else {
            continue;
        };
        let Some(x) = number(v) else { continue };
        let entry = groups.entry(base).or_default();
        if last == "total" {
            entry.0 = Some(i);
        } else if let Some(t) = last
            .strip_prefix('t')
            .filter(|n| {
                !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|n| n.parse::<u8>().ok())
        {
            let slot = entry.1.entry(t).or_insert(Some(x));
            if *slot != Some(x) {
                *slot = None;
            }
        }
    }
    let mut suspect = Vec::new();
    for (base, (total, tariffs)) in &groups {
        let Some(ti) = *total else { continue };
        let from_block = batch
            .tariff_blocks
            .iter()
            .find(|b| &*b.group == *base)
            .map(|b| b.tariffs);
        // Every tariff the meter has, 1..=n, each once: else the sum says nothing.
        let complete = |n: u8| n >= 1 && tariffs.keys().copied().eq(1..=n);
        if !(from_block.is_some_and(complete) || tariff_count.is_some_and(complete)) {
            continue;
        }
        let Some(values) = tariffs.values().copied().collect::<Option<Vec<Decimal>>>() else {
            continue;
        };
        let Some(total_v) = batch.values.get(ti).and_then(number) else {
            continue;
        };
        let scale = values
            .iter()
            .map(|d| d.scale())
            .chain([total_v.scale()])
            .max()
            .unwrap_or(0);
        let to = |d: Decimal| i128::from(d.mantissa()) * 10i128.pow(u32::from(scale - d.scale()));
        let sum: i128 = values.iter().map(|d| to(*d)).sum();
        let total = to(total_v);
        let steps = values.len() as i128 + 1;
        if (total - sum).abs() > steps {
            let sum_d = Decimal::new(i64::try_from(sum).unwrap_or(i64::MAX), scale);
            let s = sum_d.map(|d| d.to_string()).unwrap_or_default();
            suspect.push((
                ti,
                format!("tariff registers sum to {s}, total says {total_v}"),
            ));
        }
    }
    for (ti, reason) in suspect {
        if let Some(v) = batch.values.get_mut(ti) {
            mark(v, reason);
        }
    }
}

/// Meter clock (`meter.date` + `meter.time`, as decoded from DL/T 645, local time in the
/// meter's zone: [`ReadingBatch::utc_offset`]) vs gateway time.
fn check_clock(batch: &mut ReadingBatch, now: SystemTime, limit: Duration) {
    let text = |q: &str| {
        batch
            .values
            .iter()
            .find(|v| &*v.quantity == q && v.quality == Quality::Good)
            .and_then(|v| match &v.value {
                Some(ValueData::Text(t)) => Some(t.clone()),
                _ => None,
            })
    };
    let (Some(date), Some(time)) = (text("meter.date"), text("meter.time")) else {
        return;
    };
    // date: "2024-05-06 Mon" (weekday optional), time: "12:34:56", in the meter's zone.
    let date = date.split_whitespace().next().unwrap_or("");
    let Ok(local) = humantime::parse_rfc3339(&format!("{date}T{time}Z")) else {
        return;
    };
    let east = batch.utc_offset.map_or(0, |o| o.minutes());
    let shift = Duration::from_secs(east.unsigned_abs() * 60);
    let meter = if east >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    let Some(meter) = meter else {
        return;
    };
    let off = match now.duration_since(meter) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if off > limit {
        let secs = off.as_secs();
        for v in batch
            .values
            .iter_mut()
            .filter(|v| &*v.quantity == "meter.time")
        {
            mark(
                v,
                format!("meter clock off by {secs} s (limit {} s)", limit.as_secs()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_known_off_marks_the_meters_time_stamps_and_an_untrusted_gateway_compares_nothing() {
        let demand = ReadingValue {
            meter_time: Some("2026-12-07T09:15:00+08:00".into()),
            ..val("demand.active.import.max", "1.5", "kW")
        };
        let plain = val("voltage.l1", "230.1", "V");
        let cfg = ValidationConfig::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_608_800);
        let known = ClockView {
            gateway_synchronised: true,
            known_off_ms: Some(90_000),
        };
        let mut b = batch(vec![demand.clone(), plain.clone()]);
        cfg.validate_with_clock(&mut b, |_| None, now, known);
        assert_eq!(b.values[0].quality, Quality::Suspect);
        assert_eq!(
            b.values[0].reason.as_deref(),
            Some("meter clock off by 90 s at its last clock check")
        );
        assert_eq!(b.values[1].quality, Quality::Good);
        // Not while the gateway's own clock is not trusted: neither the check nor the mark.
        let untrusted = ClockView {
            gateway_synchronised: false,
            ..known
        };
        let mut b = batch(vec![demand, plain]);
        cfg.validate_with_clock(&mut b, |_| None, now, untrusted);
        assert!(b.values.iter().all(|v| v.quality == Quality::Good));
    }
    use crate::reading::{ExactNumber, TariffBlock};
    use std::time::UNIX_EPOCH;

    fn float(q: &str, x: f32, unit: &str) -> ReadingValue {
        ReadingValue {
            value: ExactNumber::from_f32(x).map(ValueData::Number),
            ..val(q, "0", unit)
        }
    }

    #[test]
    fn a_float_too_large_for_a_decimal_is_judged_not_skipped() {
        // What a swapped-word SDM630 voltage decodes to; its text has 30 digits.
        let swapped = float("voltage.l1", -2.7e29, "V");
        let energy = float("energy.active.import.total", 3.4e20, "kWh");
        let fine = float("voltage.l2", 230.25, "V");
        // The case: neither fits a Decimal (before, such values were skipped and left good).
        assert!(number(&swapped).is_none() && number(&energy).is_none());
        let cfg = ValidationConfig::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_608_800);
        let mut b = batch(vec![swapped, energy, fine]);
        cfg.validate(&mut b, |_| None, now);
        assert_eq!(b.values[0].quality, Quality::Suspect, "{:?}", b.values[0]);
        assert!(
            b.values[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("outside the physical range")),
            "{:?}",
            b.values[0].reason
        );
        assert_eq!(b.values[1].quality, Quality::Suspect, "{:?}", b.values[1]);
        assert_eq!(b.values[2].quality, Quality::Good);
    }

    fn val(q: &str, x: &str, unit: &str) -> ReadingValue {
        ReadingValue {
            quantity: q.into(),
            value: Some(ValueData::Number(ExactNumber::from_decimal(
                x.parse().unwrap(),
            ))),
            unit: unit.into(),
            obis: None,
            source: "test".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        }
    }

    fn text(q: &str, t: &str) -> ReadingValue {
        ReadingValue {
            value: Some(ValueData::Text(t.into())),
            ..val(q, "0", "")
        }
    }

    fn batch(values: Vec<ReadingValue>) -> ReadingBatch {
        let mut b = ReadingBatch::new("gw", "m", "dlt645-2007", 1, UNIX_EPOCH);
        b.values = values;
        b
    }

    fn quality(b: &ReadingBatch, q: &str) -> (Quality, Option<String>) {
        let v = b.values.iter().find(|v| &*v.quantity == q).unwrap();
        (v.quality, v.reason.clone())
    }

    #[test]
    fn energy_going_backwards_is_suspect_combined_is_not() {
        let cfg = ValidationConfig::default();
        let mut b = batch(vec![
            val("energy.active.import.total", "1234.55", "kWh"),
            val("energy.active.export.total", "10.00", "kWh"),
            val("energy.active.combined.total", "1224.55", "kWh"),
        ]);
        let last = |q: &str| match q {
            "energy.active.import.total" => "1234.56".parse().ok(),
            "energy.active.export.total" => "9.99".parse().ok(),
            "energy.active.combined.total" => "2000.00".parse().ok(),
            _ => None,
        };
        cfg.validate(&mut b, last, UNIX_EPOCH);
        let (q, r) = quality(&b, "energy.active.import.total");
        assert_eq!(q, Quality::Suspect);
        assert_eq!(
            r.unwrap(),
            "register went backwards: 1234.55 < last good 1234.56"
        );
        assert_eq!(quality(&b, "energy.active.export.total").0, Quality::Good);
        assert_eq!(quality(&b, "energy.active.combined.total").0, Quality::Good);
    }

    #[test]
    fn out_of_range_values_are_suspect() {
        let cfg = ValidationConfig::default();
        let mut b = batch(vec![
            val("voltage.l1", "229.8", "V"),
            val("voltage.l2", "1999.9", "V"),
            val("frequency", "50.03", "Hz"),
            val("frequency", "0.00", "Hz"),
            val("power_factor.total", "-1.000", ""),
            val("power_factor.l1", "1.500", ""),
        ]);
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        let qs: Vec<Quality> = b.values.iter().map(|v| v.quality).collect();
        use Quality::*;
        assert_eq!(qs, [Good, Suspect, Good, Suspect, Good, Suspect]);
    }

    fn four_tariffs(total: &str) -> Vec<ReadingValue> {
        vec![
            val("energy.active.import.total", total, "kWh"),
            val("energy.active.import.t1", "100.01", "kWh"),
            val("energy.active.import.t2", "200.02", "kWh"),
            val("energy.active.import.t3", "300.03", "kWh"),
            val("energy.active.import.t4", "400.04", "kWh"),
        ]
    }

    fn block(group: &str, tariffs: u8) -> TariffBlock {
        TariffBlock {
            group: group.into(),
            tariffs,
        }
    }

    #[test]
    fn tariffs_of_one_block_reply_must_add_up_to_the_total_within_rounding() {
        let cfg = ValidationConfig::default();
        let ok = |total: &str| {
            let mut b = batch(four_tariffs(total));
            b.tariff_blocks = vec![block("energy.active.import", 4)];
            cfg.validate(&mut b, |_| None, UNIX_EPOCH);
            quality(&b, "energy.active.import.total")
        };
        assert_eq!(ok("1000.10").0, Quality::Good);
        assert_eq!(ok("1000.14").0, Quality::Good, "rounding of 4 tariffs");
        let (q, r) = ok("1001.10");
        assert_eq!(q, Quality::Suspect);
        assert_eq!(
            r.unwrap(),
            "tariff registers sum to 1000.10, total says 1001.10"
        );
    }

    #[test]
    fn some_tariffs_of_a_meter_say_nothing_about_its_total() {
        // A four-tariff meter (total = t1 + t2 + t3 + t4 = 1000.10) read by a profile that
        // asks for t1 and t2 only, one DI each: the total is not suspect.
        let cfg = ValidationConfig::default();
        let mut b = batch(four_tariffs("1000.10"));
        b.values.truncate(3);
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(
            quality(&b, "energy.active.import.total"),
            (Quality::Good, None)
        );
        // All four read one by one, but nothing says the meter has four (it may have eight).
        let mut b = batch(four_tariffs("1234.56"));
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(quality(&b, "energy.active.import.total").0, Quality::Good);
        // A block of another register group says nothing about this one.
        let mut b = batch(four_tariffs("1234.56"));
        b.tariff_blocks = vec![block("energy.active.export", 4)];
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(quality(&b, "energy.active.import.total").0, Quality::Good);
        // The block held 8 tariffs but only 4 are in the batch (a bad value, say).
        let mut b = batch(four_tariffs("1234.56"));
        b.tariff_blocks = vec![block("energy.active.import", 8)];
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(quality(&b, "energy.active.import.total").0, Quality::Good);
        // A bad tariff of the block: the sum is incomplete.
        let mut b = batch(four_tariffs("1234.56"));
        b.tariff_blocks = vec![block("energy.active.import", 4)];
        b.values[2].quality = Quality::Bad;
        b.values[2].value = None;
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(quality(&b, "energy.active.import.total").0, Quality::Good);
    }

    #[test]
    fn the_meters_tariff_count_makes_single_reads_comparable() {
        let cfg = ValidationConfig::default();
        let with_count = |total: &str, count: &str, tariffs: usize| {
            let mut values = four_tariffs(total);
            values.truncate(1 + tariffs);
            values.push(val("meter.tariff_count", count, ""));
            let mut b = batch(values);
            cfg.validate(&mut b, |_| None, UNIX_EPOCH);
            quality(&b, "energy.active.import.total").0
        };
        assert_eq!(with_count("1000.10", "4", 4), Quality::Good);
        assert_eq!(with_count("1001.10", "4", 4), Quality::Suspect);
        assert_eq!(with_count("1001.10", "8", 4), Quality::Good, "4 of 8 read");
        assert_eq!(with_count("1001.10", "4", 2), Quality::Good, "2 of 4 read");
        // The same tariff read twice with two values: which one counts is unknown.
        let mut values = four_tariffs("1001.10");
        values.push(val("energy.active.import.t4", "400.05", "kWh"));
        values.push(val("meter.tariff_count", "4", ""));
        let mut b = batch(values);
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(quality(&b, "energy.active.import.total").0, Quality::Good);
    }

    #[test]
    fn a_meter_clock_off_by_more_than_the_limit_is_suspect() {
        let cfg = ValidationConfig::default();
        let now = humantime::parse_rfc3339("2024-05-06T12:35:30Z").unwrap();
        let mut b = batch(vec![
            text("meter.date", "2024-05-06 Mon"),
            text("meter.time", "12:34:56"),
        ]);
        cfg.validate(&mut b, |_| None, now);
        let (q, r) = quality(&b, "meter.time");
        assert_eq!(q, Quality::Suspect);
        assert_eq!(r.unwrap(), "meter clock off by 34 s (limit 10 s)");
        let mut fine = batch(vec![
            text("meter.date", "2024-05-06 Mon"),
            text("meter.time", "12:35:25"),
        ]);
        cfg.validate(&mut fine, |_| None, now);
        assert_eq!(quality(&fine, "meter.time").0, Quality::Good);
    }

    #[test]
    fn a_meter_clock_is_read_in_the_meters_time_zone() {
        let cfg = ValidationConfig::default();
        let now = humantime::parse_rfc3339("2024-05-06T12:35:30Z").unwrap();
        let china = |t: &str, offset: Option<crate::clock::UtcOffset>| {
            let mut b = batch(vec![
                text("meter.date", "2024-05-06 Mon"),
                text("meter.time", t),
            ]);
            b.utc_offset = offset;
            cfg.validate(&mut b, |_| None, now);
            quality(&b, "meter.time")
        };
        // 20:35:25 China Standard Time is 12:35:25 UTC: on time.
        let cst = Some(crate::clock::UtcOffset::CHINA);
        assert_eq!(china("20:35:25", cst).0, Quality::Good);
        // The same clock read as UTC would be 8 h off.
        assert_eq!(china("20:35:25", None).0, Quality::Suspect);
        // And a Chinese meter showing UTC is 8 h behind its own zone.
        let (q, r) = china("12:35:25", cst);
        assert_eq!(q, Quality::Suspect);
        assert_eq!(r.unwrap(), "meter clock off by 28805 s (limit 10 s)");
        let west: crate::clock::UtcOffset = "-05:30".parse().unwrap();
        assert_eq!(china("07:05:25", Some(west)).0, Quality::Good);
    }

    #[test]
    fn bad_values_stay_bad() {
        let cfg = ValidationConfig::default();
        let mut v = val("voltage.l1", "5000", "V");
        v.quality = Quality::Bad;
        v.value = None;
        v.reason = Some("no reply".into());
        let mut b = batch(vec![v]);
        cfg.validate(&mut b, |_| None, UNIX_EPOCH);
        assert_eq!(
            quality(&b, "voltage.l1"),
            (Quality::Bad, Some("no reply".into()))
        );
    }
}
