//! The published unit of every quantity, and which quantities have no OBIS code and why.
//!
//! One quantity, one unit, whatever the meter: `power.active.total` is kW from a DL/T 645 meter
//! and from an SDM630 that reports watts, so a consumer can add up a feeder. [`UNITS`] is the
//! table (by quantity family); `docs/quantities.md` ("Units") is checked against it, the DL/T
//! 645 catalogue's units are checked against it, and the Modbus driver converts a profile's
//! unit to it with [`unit_shift`] (an exact decimal shift: W → kW moves the point three places,
//! never through a binary float; see [`crate::decimal::shift_decimal_text`]).
//!
//! OBIS codes (IEC 62056-61) come from the DL/T 645 catalogue ([`crate::dlt645::catalog`]); the
//! quantities that have none, and why, are [`NO_OBIS`], listed in `docs/quantities.md` ("Quantities
//! without an OBIS code") and checked against it.
//!
//! This module never parses frames and never does I/O.

/// The unit of a family of quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitRule {
    /// A quantity name or a dotted prefix of names: `power.active` covers `power.active.total`
    /// and `power.active.l1`. The longest matching family wins.
    pub family: &'static str,
    /// The unit every quantity of the family is published in; empty when dimensionless.
    pub unit: &'static str,
}

const fn u(family: &'static str, unit: &'static str) -> UnitRule {
    UnitRule { family, unit }
}

/// The published unit of every quantity family meterd knows.
#[rustfmt::skip]
pub static UNITS: &[UnitRule] = &[
    u("energy.active", "kWh"),
    u("energy.reactive", "kvarh"),
    u("energy.apparent", "kVAh"),
    u("demand.active", "kW"),
    u("demand.reactive", "kvar"),
    u("demand.apparent", "kVA"),
    u("power.active", "kW"),
    u("power.reactive", "kvar"),
    u("power.apparent", "kVA"),
    u("power_factor", ""),
    u("voltage", "V"),
    u("current", "A"),
    u("frequency", "Hz"),
    u("phase_angle", "°"),
    u("meter.temperature", "°C"),
    u("meter.clock_battery.voltage", "V"),
    u("meter.demand_period", "min"),
    u("meter.demand_slide_time", "min"),
    u("meter", ""),
    u("events", ""),
    u("freeze", ""),
];

/// True when `quantity` (without its `@` snapshot suffix) is `family` or starts with `family.`.
fn in_family(quantity: &str, family: &str) -> bool {
    let base = quantity.split_once('@').map_or(quantity, |(b, _)| b);
    base.strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The unit `quantity` is published in, or `None` for a name outside every known family (a
/// profile's own quantity, `dlt645:XXXXXXXX`): those keep the unit their source gives.
pub fn canonical_unit(quantity: &str) -> Option<&'static str> {
    UNITS
        .iter()
        .filter(|r| in_family(quantity, r.family))
        .max_by_key(|r| r.family.len())
        .map(|r| r.unit)
}

/// Units that differ only by an SI prefix, and the base each is built on.
const BASES: &[&str] = &["W", "var", "VA", "Wh", "varh", "VAh", "V", "A", "Hz"];
const PREFIXES: &[(&str, i8)] = &[("", 0), ("m", -3), ("k", 3), ("M", 6), ("G", 9)];

/// A unit as (power of ten, base): `kW` → (3, `W`), `mA` → (-3, `A`).
fn split_unit(unit: &str) -> Option<(i8, &str)> {
    PREFIXES.iter().find_map(|(p, exp)| {
        let base = unit.strip_prefix(p)?;
        BASES.contains(&base).then_some((*exp, base))
    })
}

/// The power of ten a value in unit `from` is multiplied by to be in unit `to`: `W` → `kW` is
/// -3 (1234.5 W = 1.2345 kW), `kW` → `kW` 0, `MWh` → `kWh` 3. `None` when the units measure
/// different things (`W` → `kWh`) or are not SI-prefixed forms of one base.
pub fn unit_shift(from: &str, to: &str) -> Option<i8> {
    if from == to {
        return Some(0);
    }
    let (a, base_a) = split_unit(from)?;
    let (b, base_b) = split_unit(to)?;
    (base_a == base_b).then(|| a - b)
}

/// How a value of `quantity` reported in `unit` (a profile's unit; `None` when it names none) is
/// published: `Ok(Some((unit, shift)))` in the family's unit after multiplying by `10^shift`;
/// `Ok(None)` for a quantity outside every family (published in its own unit, unconverted);
/// `Err` with the reason when the unit cannot be converted.
pub fn published_unit(
    quantity: &str,
    unit: Option<&str>,
) -> Result<Option<(&'static str, i8)>, String> {
    let Some(canonical) = canonical_unit(quantity) else {
        return Ok(None);
    };
    let given = unit.unwrap_or_default();
    match unit_shift(given, canonical) {
        Some(shift) => Ok(Some((canonical, shift))),
        None if unit.is_none() => Err(format!(
            "{quantity} is published in {canonical}: give `unit`, the unit the meter reports ({canonical} or an SI-prefixed form of it)"
        )),
        None => Err(format!(
            "{quantity} is published in {canonical}; unit {given:?} is not {canonical} nor an SI-prefixed form of it"
        )),
    }
}

/// A family of quantities that has no OBIS code, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoObis {
    /// A quantity name or dotted prefix (as in [`UnitRule::family`]); `@` means every snapshot
    /// (any name with an `@` suffix).
    pub family: &'static str,
    /// Why there is no code.
    pub reason: &'static str,
}

const fn n(family: &'static str, reason: &'static str) -> NoObis {
    NoObis { family, reason }
}

/// The quantities without an OBIS code.
#[rustfmt::skip]
pub static NO_OBIS: &[NoObis] = &[
    n("@", "a snapshot (`@settlement-N`, `@daily-N`): OBIS names the N-th last billing period only through value group F of a profile, not as a code of its own value"),
    n("energy.active.combined", "the meter's combination word decides which quadrants it adds or subtracts; OBIS has no code for a configurable combination"),
    n("energy.reactive.combined1", "as combined active: a configurable combination of quadrants"),
    n("energy.reactive.combined2", "as combined active: a configurable combination of quadrants"),
    n("demand.reactive.combined1", "the maximum demand of a configurable combination of quadrants"),
    n("demand.reactive.combined2", "the maximum demand of a configurable combination of quadrants"),
    n("power.active.total.avg_1min", "a fixed one-minute average; OBIS averages (D = 4, 5) are over the meter's demand period"),
    n("meter", "the meter's clock, parameters and state words in DL/T 645 form (date and time apart, the standard's status bit layouts); no OBIS object has the same meaning and form"),
    n("events", "DL/T 645 event-record counters; the abstract OBIS event counters define their events differently"),
    n("freeze", "the time stamp of a snapshot (see `@`)"),
];

/// Why `quantity` has no OBIS code, if it is one of [`NO_OBIS`].
pub fn no_obis_reason(quantity: &str) -> Option<&'static str> {
    NO_OBIS
        .iter()
        .find(|e| {
            if e.family == "@" {
                quantity.contains('@')
            } else {
                in_family(quantity, e.family)
            }
        })
        .map(|e| e.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_take_the_longest_match() {
        assert_eq!(canonical_unit("power.active.total"), Some("kW"));
        assert_eq!(canonical_unit("power.active.l1"), Some("kW"));
        assert_eq!(canonical_unit("power.reactive.total"), Some("kvar"));
        assert_eq!(canonical_unit("power_factor.l2"), Some(""));
        assert_eq!(
            canonical_unit("energy.active.import.t1@settlement-1"),
            Some("kWh")
        );
        assert_eq!(canonical_unit("meter.clock_battery.voltage"), Some("V"));
        assert_eq!(canonical_unit("meter.status_word3"), Some(""));
        assert_eq!(canonical_unit("frequency"), Some("Hz"));
        assert_eq!(canonical_unit("frequencyx"), None);
        assert_eq!(canonical_unit("dlt645:028022FF"), None);
        assert_eq!(canonical_unit("voltage_thd.l1"), None);
    }

    #[test]
    fn units_convert_by_their_si_prefix_only() {
        assert_eq!(unit_shift("W", "kW"), Some(-3));
        assert_eq!(unit_shift("var", "kvar"), Some(-3));
        assert_eq!(unit_shift("VA", "kVA"), Some(-3));
        assert_eq!(unit_shift("Wh", "kWh"), Some(-3));
        assert_eq!(unit_shift("MWh", "kWh"), Some(3));
        assert_eq!(unit_shift("mA", "A"), Some(-3));
        assert_eq!(unit_shift("kV", "V"), Some(3));
        assert_eq!(unit_shift("kW", "kW"), Some(0));
        assert_eq!(unit_shift("", ""), Some(0));
        assert_eq!(unit_shift("W", "kWh"), None);
        assert_eq!(unit_shift("VA", "kvar"), None);
        assert_eq!(unit_shift("", "kW"), None);
        assert_eq!(unit_shift("min", "kW"), None);
    }

    #[test]
    fn published_units_and_refusals() {
        assert_eq!(
            published_unit("power.active.total", Some("W")),
            Ok(Some(("kW", -3)))
        );
        assert_eq!(
            published_unit("power_factor.total", None),
            Ok(Some(("", 0)))
        );
        assert_eq!(published_unit("voltage_thd.l1", Some("%")), Ok(None));
        assert!(published_unit("voltage.l1", None).is_err());
        assert!(published_unit("power.active.total", Some("kWh")).is_err());
    }

    #[test]
    fn snapshots_and_combinations_have_no_obis() {
        assert!(no_obis_reason("energy.active.import.total@daily-1").is_some());
        assert!(no_obis_reason("energy.active.combined.total").is_some());
        assert!(no_obis_reason("meter.status_word3").is_some());
        assert!(no_obis_reason("energy.active.import.total").is_none());
        assert!(no_obis_reason("power.apparent.total").is_none());
    }

    const QUANTITIES_DOC: &str = include_str!("../../docs/quantities.md");

    /// The rows of the table under `heading` in docs/quantities.md, cells trimmed, backticks and
    /// `—` removed.
    fn doc_table(heading: &str) -> Vec<Vec<String>> {
        let section = QUANTITIES_DOC
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("docs/quantities.md has no {heading:?}"));
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| {
                        let c = c.trim();
                        if c == "—" {
                            String::new()
                        } else {
                            c.trim_matches('`').to_owned()
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_units_doc_is_the_table() {
        let rows = doc_table("## Units\n");
        let doc: Vec<(String, String)> =
            rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        let code: Vec<(String, String)> = UNITS
            .iter()
            .map(|r| (r.family.to_owned(), r.unit.to_owned()))
            .collect();
        assert_eq!(doc, code, "docs/quantities.md ## Units vs quantity::UNITS");
    }

    #[test]
    fn the_no_obis_doc_is_the_table() {
        let rows = doc_table("## Quantities without an OBIS code\n");
        let doc: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
        let code: Vec<String> = NO_OBIS.iter().map(|e| e.family.to_owned()).collect();
        assert_eq!(doc, code, "docs/quantities.md vs quantity::NO_OBIS");
        assert!(rows.iter().all(|r| r.len() == 2 && !r[1].is_empty()));
    }
}
