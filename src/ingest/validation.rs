//! Validation: decides each value's quality before it is stored.
//!
//! The codec layer already made frame-level faults `bad` (timeout, checksum, error reply). This
//! module looks at decoded values and marks the implausible ones `suspect`, with a reason,
//! so the billing core can hold them for review rather than bill them:
//! - a cumulative energy register lower than the meter's last good value (state kept across
//!   restarts by the spool), because a meter's import or export counter never runs backwards;
//! - a value outside its physical range (voltage, current, frequency, power factor);
//! - tariff registers whose sum disagrees with the total by more than rounding allows;
//! - a meter clock off the gateway's clock by more than the configured limit.
//!
//! It never drops a value, never changes a number, and never turns `bad` into anything else.

use std::collections::HashMap;
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

impl ValidationConfig {
    /// Marks implausible values of `batch` as suspect. `last_good` gives the meter's last good
    /// value of a quantity (from the spool); `now` is the gateway time of the reading.
    pub fn validate(
        &self,
        batch: &mut ReadingBatch,
        last_good: impl Fn(&str) -> Option<Decimal>,
        now: SystemTime,
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
            let Some(x) = number(v) else { continue };
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
        check_clock(batch, now, self.clock_limit);
    }
}

/// Total vs the sum of its tariffs: each tariff register is rounded down to the format's last
/// digit, so the sum may fall short of the total by up to one step per tariff, never exceed it
/// by more than one step.
fn check_tariffs(batch: &mut ReadingBatch) {
    let mut groups: HashMap<String, (Option<usize>, Vec<Decimal>)> = HashMap::new();
    for (i, v) in batch.values.iter().enumerate() {
        if v.quality != Quality::Good {
            continue;
        }
        let Some((base, last)) = v.quantity.rsplit_once('.') else {
            continue;
        };
        if !v.quantity.starts_with("energy.") || v.quantity.contains('@') {
            continue;
        }
        let Some(x) = number(v) else { continue };
        let entry = groups.entry(base.to_owned()).or_default();
        if last == "total" {
            entry.0 = Some(i);
        } else if last.len() > 1
            && last.starts_with('t')
            && last[1..].bytes().all(|b| b.is_ascii_digit())
        {
            entry.1.push(x);
        }
    }
    for (_, (total, tariffs)) in groups {
        let (Some(ti), false) = (total, tariffs.is_empty()) else {
            continue;
        };
        let Some(total_v) = batch.values.get(ti).and_then(number) else {
            continue;
        };
        let scale = tariffs
            .iter()
            .map(|d| d.scale())
            .chain([total_v.scale()])
            .max()
            .unwrap_or(0);
        let to = |d: Decimal| i128::from(d.mantissa()) * 10i128.pow(u32::from(scale - d.scale()));
        let sum: i128 = tariffs.iter().map(|d| to(*d)).sum();
        let total = to(total_v);
        let steps = tariffs.len() as i128 + 1;
        if (total - sum).abs() > steps {
            let sum_d = Decimal::new(i64::try_from(sum).unwrap_or(i64::MAX), scale);
            if let Some(v) = batch.values.get_mut(ti) {
                let s = sum_d.map(|d| d.to_string()).unwrap_or_default();
                mark(
                    v,
                    format!("tariff registers sum to {s}, total says {total_v}"),
                );
            }
        }
    }
}

/// Meter clock (`meter.date` + `meter.time`, as decoded from DL/T 645) vs gateway time.
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
    // date: "2024-05-06 Mon" (weekday optional), time: "12:34:56".
    let date = date.split_whitespace().next().unwrap_or("");
    let Ok(meter) = humantime::parse_rfc3339(&format!("{date}T{time}Z")) else {
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
    use crate::reading::ExactNumber;
    use std::time::UNIX_EPOCH;

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

    #[test]
    fn tariffs_must_add_up_to_the_total_within_rounding() {
        let cfg = ValidationConfig::default();
        let ok = |total: &str| {
            let mut b = batch(vec![
                val("energy.active.import.total", total, "kWh"),
                val("energy.active.import.t1", "100.01", "kWh"),
                val("energy.active.import.t2", "200.02", "kWh"),
                val("energy.active.import.t3", "300.03", "kWh"),
                val("energy.active.import.t4", "400.04", "kWh"),
            ]);
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
