//! The meter model: every value a simulated meter reports, as a pure function of
//! (meter seed, quantity, simulated time).
//!
//! This module owns the physics-ish story the simulator tells — voltage near 230 V with a
//! small deterministic wobble, current and power from a rated power chosen by the seed,
//! frequency 50.00 ± 0.05 Hz, energy registers that integrate that rated power over simulated
//! time (monotonic, exact integer arithmetic), tariff registers that sum to the total, a
//! meter clock equal to simulated time — and the quantisation of each value to the digits of
//! the DL/T 645 format or Modbus register that carries it. It never touches bytes on a wire,
//! never reads a clock (time is an argument) and keeps no state, so the same call always
//! gives the same value.
//!
//! The hash is splitmix64, written by hand: values must be a *function* of their inputs, not
//! a stream drawn from a generator, and a 64-bit mixer is all that takes.

use meter_protocols::Decimal;
use meter_protocols::dlt645::DataIdentifier;
use meter_protocols::dlt645::catalog::{DiInfo, lookup};
use meter_protocols::dlt645::format::{Format, MeterTime, Value};
use meter_protocols::dlt645::freeze::LocalMinute;
use meter_protocols::dlt645::load_profile::{BLOCKS, LoadRecord};
use meter_protocols::modbus::values::{RawValue, ValueType};

use crate::clock::{UnixMillis, UtcOffset, civil, days_from_civil, start_of_day, start_of_month};

/// Energy registers count from this instant (2024-01-01T00:00:00Z) at the meter's rate.
pub fn energy_epoch() -> UnixMillis {
    days_from_civil(2024, 1, 1) * MS_PER_DAY
}

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;
/// Tariffs the simulated meters keep; tariff `i` (1-based) runs from hour `6(i-1)` to `6i`.
pub const TARIFFS: u8 = 4;
const TARIFF_MS: i64 = 6 * MS_PER_HOUR;
/// Share of the initial energy per tariff, in percent.
const TARIFF_SHARE: [i128; 4] = [10, 30, 40, 20];
/// Micro-units (10⁻⁶) per unit: energies and powers are integrated in µkWh and mW.
const MICRO: i128 = 1_000_000;

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(seed: u64, key: &str) -> u64 {
    key.bytes()
        .fold(mix(seed), |acc, b| mix(acc ^ u64::from(b)))
}

/// A deterministic number in [-1, 1] for (seed, key, n).
fn unit_noise(seed: u64, key: &str, n: i64) -> f64 {
    let h = mix(hash_str(seed, key) ^ (n as u64));
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// A smooth deterministic wobble in [-1, 1]: noise at every `period_ms`, linearly between.
fn wobble(seed: u64, key: &str, t: UnixMillis, period_ms: i64) -> f64 {
    let k = t.div_euclid(period_ms);
    let f = t.rem_euclid(period_ms) as f64 / period_ms as f64;
    let a = unit_noise(seed, key, k);
    let b = unit_noise(seed, key, k + 1);
    a + (b - a) * f
}

/// (numerator, denominator) of an energy/power kind's rate relative to the rated power.
fn kind_factor(kind: &str) -> (i128, i128) {
    match kind {
        "active.import" => (1, 1),
        "active.export" | "apparent.export" => (1, 20),
        "active.combined" | "apparent.import" => (21, 20),
        "reactive.combined1" | "reactive.q1" | "reactive.import" => (3, 10),
        "reactive.q2" | "reactive.q3" => (1, 50),
        _ => (1, 10),
    }
}

/// Splits `energy.<kind>.<total|tN>` into (kind, tariff 0 = total).
fn energy_parts(base: &str) -> Option<(&str, u8)> {
    let rest = base.strip_prefix("energy.")?;
    let (kind, tariff) = rest.rsplit_once('.')?;
    let t = match tariff {
        "total" => 0,
        t => t.strip_prefix('t')?.parse().ok()?,
    };
    Some((kind, t))
}

/// The instant a quantity's `@settlement-N` / `@daily-N` / `@hourly-N` suffix refers to, and
/// the base name: the meter froze its registers at that instant, on its own wall clock
/// (`offset_ms` east of UTC): its midnight, its whole hour, its first of the month.
///
/// `gaps` are the local midnights (ms, local clock as if UTC) at which the meter made no daily
/// freeze: its history skips them, so the n-th most recent record is the n-th midnight that is
/// not a gap.
fn period<'q>(
    quantity: &'q str,
    t: UnixMillis,
    offset_ms: i64,
    gaps: &[i64],
) -> (&'q str, UnixMillis) {
    let Some((base, suffix)) = quantity.split_once('@') else {
        return (quantity, t);
    };
    let n = |s: &str| s.parse::<u32>().ok().filter(|n| *n >= 1);
    let local = t + offset_ms;
    let at = if let Some(n) = suffix.strip_prefix("settlement-").and_then(n) {
        start_of_month(local, n - 1)
    } else if let Some(n) = suffix.strip_prefix("daily-").and_then(n) {
        let mut day = start_of_day(local);
        let mut left = n;
        loop {
            if !gaps.contains(&day) {
                left -= 1;
                if left == 0 {
                    break day;
                }
            }
            day -= MS_PER_DAY;
        }
    } else if let Some(n) = suffix.strip_prefix("hourly-").and_then(n) {
        local.div_euclid(MS_PER_HOUR) * MS_PER_HOUR - i64::from(n - 1) * MS_PER_HOUR
    } else {
        return (base, t);
    };
    (base, at - offset_ms)
}

fn quantise_round(x: f64, decimals: u8) -> i64 {
    (x * 10f64.powi(i32::from(decimals))).round() as i64
}

/// One simulated meter's value source.
#[derive(Debug, Clone)]
pub struct MeterModel {
    seed: u64,
    /// The meter number as 12 digits (DL/T 645 address, or the unit id padded).
    number: String,
    /// The meter's time zone, milliseconds east of UTC: its clock shows local time.
    offset_ms: i64,
    /// Local midnights (as local-clock ms) at which the meter made no daily freeze.
    freeze_gaps: Vec<i64>,
    /// Text items given by the configuration (quantity → text), ahead of the defaults.
    texts: Vec<(String, String)>,
}

impl MeterModel {
    /// A model for the meter with `seed`; `number` is what its address/number DIs report.
    pub fn new(seed: u64, number: String) -> Self {
        Self {
            seed,
            number,
            offset_ms: 0,
            freeze_gaps: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// The model with text items (`meter.asset_code` → `"A-17"`) that win over the defaults
    /// of [`MeterModel::dlt645_value`].
    pub fn with_texts(mut self, texts: Vec<(String, String)>) -> Self {
        self.texts = texts;
        self
    }

    /// The same meter with no daily freeze at the local midnights of `days` (days since
    /// 1970-01-01 on its own clock: it was unpowered then), as if those records never existed.
    pub fn with_freeze_gaps(self, days: &[i64]) -> Self {
        Self {
            freeze_gaps: days.iter().map(|d| d * MS_PER_DAY).collect(),
            ..self
        }
    }

    /// The same meter keeping local time `offset` east of UTC.
    pub fn with_offset(self, offset: UtcOffset) -> Self {
        Self {
            offset_ms: offset.minutes() * 60_000,
            ..self
        }
    }

    /// Rated active power in mW: 0.2 to 3.0 kW, from the seed.
    pub fn rated_power_mw(&self) -> i128 {
        200_000 + i128::from(mix(self.seed ^ 0x5057) % 2_800_001)
    }

    /// Initial total energy at [`energy_epoch`], in µkWh: 100 to 20000 kWh, from the seed.
    fn initial_energy_micro(&self, kind: &str) -> i128 {
        let kwh = 100 + i128::from(hash_str(self.seed, kind) % 19_901);
        kwh * MICRO
    }

    /// Milliseconds spent in tariff `tariff` (1..=4) between the energy epoch and `t`.
    fn time_in_tariff(tariff: u8, t: UnixMillis) -> i128 {
        let elapsed = (t - energy_epoch()).max(0);
        let days = elapsed.div_euclid(MS_PER_DAY);
        let in_day = elapsed.rem_euclid(MS_PER_DAY);
        let from = i64::from(tariff.saturating_sub(1)) * TARIFF_MS;
        let partial = (in_day - from).clamp(0, TARIFF_MS);
        i128::from(days) * i128::from(TARIFF_MS) + i128::from(partial)
    }

    /// Energy of `kind` in tariff `tariff` (1..=4) at `t`, in µkWh (unquantised).
    fn tariff_energy_micro(&self, kind: &str, tariff: u8, t: UnixMillis) -> i128 {
        let Some(&share) = TARIFF_SHARE.get(usize::from(tariff.saturating_sub(1))) else {
            return 0;
        };
        if tariff == 0 {
            return 0;
        }
        let (num, den) = kind_factor(kind);
        let e0 = self.initial_energy_micro(kind) * share / 100;
        // mW × ms = µJ, and 1 µkWh = 3.6 J = 3.6e6 µJ.
        let rate = self.rated_power_mw() * num / den;
        e0 + rate * Self::time_in_tariff(tariff, t) / 3_600_000
    }

    /// An energy register (`tariff` 0 = total) at `t`, floored to `decimals`: monotonic in
    /// `t`, and the total is the sum of the quantised tariffs 1..=[`TARIFFS`].
    pub fn energy(&self, kind: &str, tariff: u8, decimals: u8, t: UnixMillis) -> Decimal {
        let decimals = decimals.min(6);
        let div = 10i128.pow(u32::from(6 - decimals));
        let q = |tariff| self.tariff_energy_micro(kind, tariff, t) / div;
        let m = if tariff == 0 {
            (1..=TARIFFS).map(q).sum()
        } else if tariff <= TARIFFS {
            q(tariff)
        } else {
            0
        };
        Decimal::new(i64::try_from(m).unwrap_or(i64::MAX), decimals).unwrap_or(Decimal::from_int(0))
    }

    /// Energy (kWh of the kind) in µ-units, unquantised, for Modbus registers.
    fn energy_micro(&self, kind: &str, tariff: u8, t: UnixMillis) -> i128 {
        if tariff == 0 {
            (1..=TARIFFS)
                .map(|i| self.tariff_energy_micro(kind, i, t))
                .sum()
        } else {
            self.tariff_energy_micro(kind, tariff, t)
        }
    }

    /// An instantaneous quantity in its catalogue unit (V, A, kW, kvar, kVA, Hz, °C…).
    /// Unknown names give 0.
    pub fn instantaneous(&self, base: &str, t: UnixMillis) -> f64 {
        let s = self.seed;
        let p0 = self.rated_power_mw() as f64 / 1e6; // kW
        let w = |period_ms: i64| wobble(s, base, t, period_ms);
        let phase_share = |q: &str| {
            if q.ends_with(".l1") || q.ends_with(".l2") || q.ends_with(".l3") {
                1.0 / 3.0
            } else {
                1.0
            }
        };
        let pf = 0.95 + 0.02 * wobble(s, "power_factor", t, 60_000);
        match base {
            b if b.starts_with("voltage.") => 230.0 + 2.0 * w(30_000),
            "current.neutral" => 0.05 + 0.04 * w(30_000).abs(),
            b if b.starts_with("current.") => {
                p0 / 3.0 * 1000.0 / 230.0 / pf * (1.0 + 0.05 * w(20_000))
            }
            b if b.starts_with("power.active.total.avg") => p0,
            b if b.starts_with("power.active.") => p0 * phase_share(b) * (1.0 + 0.05 * w(20_000)),
            b if b.starts_with("power.reactive.") => {
                0.3 * p0 * phase_share(b) * (1.0 + 0.05 * w(20_000))
            }
            b if b.starts_with("power.apparent.") => p0 * phase_share(b) / pf,
            b if b.starts_with("power_factor.") => pf,
            "phase_angle.l2" => 120.0,
            "phase_angle.l3" => 240.0,
            "frequency" => 50.0 + 0.05 * w(10_000),
            "meter.temperature" => 25.0 + 3.0 * w(600_000),
            "meter.clock_battery.voltage" => 3.6,
            "demand.active.current" => p0,
            "meter.demand_period" => 15.0,
            "meter.demand_slide_time" => 1.0,
            "meter.tariff_count" => f64::from(TARIFFS),
            b if b.starts_with("events.") => (hash_str(s, b) % 20) as f64,
            _ => 0.0,
        }
    }

    /// Max demand of a `demand.<kind>.<tariff>.max` quantity in the month of `t`: value (kW,
    /// 4 decimals) and the minute it occurred (within the month, not after `t`).
    fn max_demand(&self, base: &str, t: UnixMillis) -> (Decimal, UnixMillis) {
        let kind = base
            .strip_prefix("demand.")
            .and_then(|r| r.strip_suffix(".max"))
            .and_then(|r| r.rsplit_once('.'))
            .map_or("active.import", |(k, _)| k);
        let month = start_of_month(t, 0);
        let (num, den) = kind_factor(kind);
        let kw = self.rated_power_mw() as f64 / 1e6 * num as f64 / den as f64
            * (1.2 + 0.1 * unit_noise(self.seed, base, month));
        let span = (t - month).max(0) / 60_000;
        let offset = if span == 0 {
            0
        } else {
            (hash_str(self.seed, base) ^ month as u64) % (span as u64)
        };
        let at = month + offset as i64 * 60_000;
        let m = quantise_round(kw, 4);
        (Decimal::new(m, 4).unwrap_or(Decimal::from_int(0)), at)
    }

    /// The load record (负荷记录) the meter makes at `stamp` on its own clock: every block,
    /// each item the value the meter reports for its identifier at that instant (energy
    /// registers then, V/I/P/PF/f/demand of the model then).
    pub fn load_record(&self, stamp: LocalMinute) -> LoadRecord {
        let at = stamp.0 * 60_000 - self.offset_ms;
        let mut blocks: [Option<Vec<u8>>; 6] = Default::default();
        for (slot, items) in blocks.iter_mut().zip(BLOCKS) {
            let mut bytes = Vec::new();
            for &di in items {
                let Some(DiInfo::Item(spec)) = lookup(DataIdentifier::V2007(di)) else {
                    continue;
                };
                let value = self.dlt645_value(&spec.quantity, spec.format, at);
                bytes.extend(
                    spec.format
                        .encode(&value)
                        .unwrap_or_else(|| vec![0; spec.format.len()]),
                );
            }
            *slot = Some(bytes);
        }
        LoadRecord {
            stamp,
            valid: true,
            blocks,
        }
    }

    /// The value a DL/T 645 meter reports for catalogue item `quantity` of `format` at `t`,
    /// quantised to the format. Never fails: unknown quantities report zero of their format.
    pub fn dlt645_value(&self, quantity: &str, format: Format, t: UnixMillis) -> Value {
        let (base, at) = period(quantity, t, self.offset_ms, &self.freeze_gaps);
        if let Some((_, text)) = self.texts.iter().find(|(q, _)| q == quantity)
            && matches!(format, Format::Number(_) | Format::Ascii(_))
        {
            return Value::Text(text.clone());
        }
        match format {
            Format::Bcd {
                digits,
                decimals,
                signed,
            } => {
                let d = match energy_parts(base) {
                    Some((kind, tariff)) => self.energy(kind, tariff, decimals, at),
                    None => Decimal::new(
                        quantise_round(self.instantaneous(base, at), decimals),
                        decimals,
                    )
                    .unwrap_or(Decimal::from_int(0)),
                };
                Value::Number(fit_digits(d, digits, signed))
            }
            Format::Demand => {
                let (value, when) = self.max_demand(base, at);
                Value::Demand {
                    value: fit_digits(value, 6, false),
                    time: meter_time(when + self.offset_ms),
                }
            }
            Format::Number(n) => {
                let n = usize::from(n);
                let text = format!("{:0>n$}", self.number);
                Value::Text(
                    text.get(text.len().saturating_sub(n)..)
                        .unwrap_or("")
                        .to_owned(),
                )
            }
            Format::Ascii(n) => {
                let mut s = format!("SIM-{}", self.number);
                s.truncate(usize::from(n));
                Value::Text(s)
            }
            Format::Bits(_) => Value::Bits(0),
            Format::Raw(n) => Value::Raw(vec![0; usize::from(n)]),
            Format::Ddhh => Value::Time(MeterTime {
                day: Some(1),
                hour: Some(0),
                ..MeterTime::default()
            }),
            time_format => {
                // Keep only the fields the format carries.
                let full = Value::Time(meter_time(at + self.offset_ms));
                match time_format.encode(&full) {
                    Some(bytes) => time_format.decode(&bytes),
                    None => full,
                }
            }
        }
    }

    /// The raw register value of a Modbus point holding `quantity` in `unit`, with `ty` and
    /// the exact decimal `scale` (reading = raw × scale), at `t`. Integers are the reading
    /// divided by the scale, floored for energy (so registers never run backwards) and
    /// rounded otherwise, wrapping at the type's width; floats carry the reading itself
    /// (energy first floored to 0.01).
    pub fn modbus_raw(
        &self,
        quantity: &str,
        unit: &str,
        ty: ValueType,
        scale: Option<Decimal>,
        t: UnixMillis,
    ) -> RawValue {
        let (base, at) = period(quantity, t, self.offset_ms, &self.freeze_gaps);
        let kilo = if matches!(unit, "W" | "VA" | "var" | "Wh" | "varh" | "VAh") {
            1000
        } else {
            1
        };
        // The reading in µ-units of `unit`, and whether to floor.
        let (micro, energy) = match energy_parts(base) {
            Some((kind, tariff)) => (self.energy_micro(kind, tariff, at) * kilo, true),
            None => (
                (self.instantaneous(base, at) * 1e6).round() as i128 * kilo,
                false,
            ),
        };
        let (sm, ss) = scale.map_or((1i128, 0u32), |d| {
            (i128::from(d.mantissa()), u32::from(d.scale()))
        });
        let sm = if sm == 0 { 1 } else { sm };
        // raw = micro / 1e6 / (sm / 10^ss) = micro × 10^ss / (sm × 1e6)
        let num = micro * 10i128.pow(ss);
        let den = sm * MICRO;
        let int = if energy {
            num.div_euclid(den)
        } else {
            (num * 2 + den).div_euclid(den * 2)
        };
        let as_f64 = |energy: bool| {
            let v = if energy {
                (micro / 10_000) as f64 / 100.0
            } else {
                micro as f64 / 1e6
            };
            v / (sm as f64 / 10f64.powi(ss as i32))
        };
        match ty {
            ValueType::F32 => RawValue::Float32(as_f64(energy) as f32),
            ValueType::F64 => RawValue::Float64(as_f64(energy)),
            ValueType::U16 => RawValue::Unsigned(int.rem_euclid(1 << 16) as u64),
            ValueType::U32 => RawValue::Unsigned(int.rem_euclid(1 << 32) as u64),
            ValueType::U64 => RawValue::Unsigned(int.rem_euclid(1 << 64) as u64),
            ValueType::I16 => RawValue::Signed(int.clamp(i16::MIN.into(), i16::MAX.into()) as i64),
            ValueType::I32 => RawValue::Signed(int.clamp(i32::MIN.into(), i32::MAX.into()) as i64),
            ValueType::I64 => RawValue::Signed(int.clamp(i64::MIN.into(), i64::MAX.into()) as i64),
            ValueType::Bits { width, .. } => {
                RawValue::Unsigned(int.rem_euclid(1i128 << width.min(16)) as u64)
            }
        }
    }
}

/// Wraps a decimal into `digits` (a register rolls over) and drops a sign the format cannot
/// carry.
fn fit_digits(d: Decimal, digits: u8, signed: bool) -> Decimal {
    let mut m = d.mantissa();
    if m < 0 && !signed {
        m = 0;
    }
    // A signed format with an even digit count keeps its top bit for the sign.
    let digits = u32::from(digits.clamp(1, 18));
    let limit = if signed && digits.is_multiple_of(2) {
        10i64.pow(digits - 1) * 8
    } else {
        10i64.pow(digits)
    };
    let wrapped = (m.unsigned_abs() % limit.unsigned_abs()) as i64;
    let m = if m >= 0 { wrapped } else { -wrapped };
    Decimal::new(m, d.scale()).unwrap_or(d)
}

/// The DL/T 645 time fields of an instant (years 2000..=2099 as the format allows).
pub fn meter_time(t: UnixMillis) -> MeterTime {
    let c = civil(t);
    MeterTime {
        year: Some(c.year.clamp(2000, 2099) as u16),
        month: Some(c.month as u8),
        day: Some(c.day as u8),
        weekday: Some(c.weekday as u8),
        hour: Some(c.hour as u8),
        minute: Some(c.minute as u8),
        second: Some(c.second as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn t(s: &str) -> UnixMillis {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn energy_rises_and_tariffs_sum_to_the_total() {
        let m = MeterModel::new(42, "000000000001".into());
        let mut last = Decimal::from_int(0);
        let start = t("2026-11-27T00:00:00Z");
        for step in 0..200 {
            let at = start + step * 17 * 60_000; // every 17 minutes, ~2.4 days
            let total = m.energy("active.import", 0, 2, at);
            assert_ne!(
                total.cmp_value(last),
                Some(std::cmp::Ordering::Less),
                "energy went backwards at step {step}"
            );
            let sum: i64 = (1..=TARIFFS)
                .map(|i| m.energy("active.import", i, 2, at).mantissa())
                .sum();
            assert_eq!(sum, total.mantissa());
            last = total;
        }
        let day = m.energy("active.import", 0, 2, start + MS_PER_DAY).to_f64()
            - m.energy("active.import", 0, 2, start).to_f64();
        let rated_kw = m.rated_power_mw() as f64 / 1e6;
        assert!((day - rated_kw * 24.0).abs() < 0.05, "{day} vs {rated_kw}");
    }

    #[test]
    fn instantaneous_values_stay_in_their_bands_and_are_deterministic() {
        let m = MeterModel::new(7, "000000000007".into());
        for k in 0..500 {
            let at = t("2026-11-27T00:00:00Z") + k * 7_919;
            let v = m.instantaneous("voltage.l1", at);
            assert!((228.0..=232.0).contains(&v), "{v}");
            let f = m.instantaneous("frequency", at);
            assert!((49.95..=50.05).contains(&f), "{f}");
            assert_eq!(v, m.instantaneous("voltage.l1", at));
        }
        let other = MeterModel::new(8, "000000000008".into());
        assert_ne!(m.rated_power_mw(), other.rated_power_mw());
    }

    #[test]
    fn dlt645_values_fit_their_formats() {
        let m = MeterModel::new(3, "202107072529".into());
        let at = t("2026-11-27T11:22:33Z");
        let v = m.dlt645_value("voltage.l1", Format::bcd(4, 1, false), at);
        assert!(Format::bcd(4, 1, false).encode(&v).is_some(), "{v}");
        let time = m.dlt645_value("meter.time", Format::Hhmmss, at);
        assert_eq!(time.to_string(), "11:22:33");
        let addr = m.dlt645_value("meter.address", Format::Number(12), at);
        assert_eq!(addr, Value::Text("202107072529".into()));
        let d = m.dlt645_value("demand.active.import.total.max", Format::Demand, at);
        assert!(Format::Demand.encode(&d).is_some(), "{d}");
        let s1 = m.dlt645_value(
            "energy.active.import.total@settlement-1",
            Format::ENERGY,
            at,
        );
        assert_eq!(
            s1,
            Value::Number(m.energy("active.import", 0, 2, t("2026-11-01T00:00:00Z")))
        );
    }

    #[test]
    fn modbus_integers_are_reading_over_scale() {
        let m = MeterModel::new(5, "000000000005".into());
        let at = t("2026-11-27T11:00:00Z");
        let scale: Decimal = "0.01".parse().unwrap();
        let RawValue::Unsigned(raw) = m.modbus_raw(
            "energy.active.import.total",
            "kWh",
            ValueType::U32,
            Some(scale),
            at,
        ) else {
            panic!("unsigned expected")
        };
        // Floor of the unquantised total at 0.01 kWh.
        assert_eq!(
            i64::try_from(raw).unwrap(),
            m.energy("active.import", 0, 6, at).mantissa() / 10_000
        );
    }
}
