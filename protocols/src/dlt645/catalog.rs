//! The DL/T 645 data identifier catalogue: which quantity a data identifier (DI) holds, in
//! which unit and [`Format`], with its OBIS code where one exists — for DL/T 645-2007 and
//! DL/T 645-1997.
//!
//! This module owns the mapping DI ⇄ canonical quantity name (see `docs/quantities.md`) and
//! the splitting of data blocks (`FF` in DI2/DI1/DI0, `F` in the low nibble for 1997) into
//! their items. It never parses frames, never removes the 0x33 mask, never does I/O and
//! never fails: an unknown DI decodes to one `dlt645:XXXXXXXX` item holding the raw bytes,
//! and a payload of the wrong length decodes to [`Value::Invalid`].
//!
//! The catalogue is one static table of fixed items ([`FIXED`]) plus a few parametric
//! families computed by function rather than listed: energy and max demand (DI3 `00`/`01`,
//! kind × tariff 0..63 × settlement 0..12), daily freeze (`0506xxnn`), hourly freeze
//! (`0504xxnn`) and the 1997 energy registers (`90xx`, `91xx`, `94xx`).
//!
//! Quantity names: `energy.<kind>.<total|tN>`, `demand.<kind>.<total|tN>.max`, with
//! `@settlement-N` for the N-th last monthly settlement snapshot, `@daily-N` for the N-th
//! last daily freeze and `@hourly-N` for the N-th last whole-hour freeze. OBIS codes are given only for current values; a snapshot has none.

use std::borrow::Cow;

use super::format::{Format, Value};
use super::{DataIdentifier, Version};

/// What one data item is: the quantity it holds and how its bytes decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiSpec {
    /// The identifier that reads this item alone; for an item that only exists inside a
    /// block (daily freeze energies), the block's identifier.
    pub di: DataIdentifier,
    /// Canonical quantity name, e.g. `energy.active.import.total@settlement-1`.
    pub quantity: Cow<'static, str>,
    /// Unit (`kWh`, `kvarh`, `V`, `A`, `kW`, `Hz`, `°C`…); empty when dimensionless.
    pub unit: &'static str,
    /// OBIS code (IEC 62056-61) when one denotes the same quantity, e.g. `1-0:1.8.0`.
    pub obis: Option<Cow<'static, str>>,
    /// How the item's bytes decode.
    pub format: Format,
    /// A short English description.
    pub description: &'static str,
}

impl DiSpec {
    /// Decodes this item's bytes (unmasked) into a [`DecodedValue`].
    pub fn decode(&self, bytes: &[u8]) -> DecodedValue {
        DecodedValue {
            quantity: self.quantity.clone(),
            unit: self.unit,
            obis: self.obis.clone(),
            value: self.format.decode(bytes),
        }
    }
}

/// What a data identifier reads: one item or a block of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiInfo {
    /// A single item.
    Item(DiSpec),
    /// A data block: its items in wire order.
    Block {
        /// The items, in the order they are concatenated in the payload.
        items: Vec<DiSpec>,
        /// True for a "total + tariffs" block: `items` lists total and tariffs 1..4, but the
        /// meter sends total + as many tariffs as it has, so the payload length decides the
        /// count (total + `len / item_len − 1` tariffs); [`decode_payload`] does that.
        tariffs_by_length: bool,
    },
}

/// One decoded value of a response payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedValue {
    /// Canonical quantity name, or `dlt645:XXXXXXXX` (the DI) when the DI is not catalogued
    /// or a block payload could not be split.
    pub quantity: Cow<'static, str>,
    /// Unit; empty when dimensionless or unknown.
    pub unit: &'static str,
    /// OBIS code, when one exists.
    pub obis: Option<Cow<'static, str>>,
    /// The value, [`Value::Raw`] for an unknown DI, [`Value::Invalid`] for bad bytes.
    pub value: Value,
}

/// Reason given when a block's payload length does not fit its items.
pub const REASON_BLOCK_LENGTH: &str = "payload length does not fit the data block";

// ---------------------------------------------------------------------------------------
// The fixed-item table.

/// A catalogued item whose DI is not computed from a family.
#[derive(Debug, Clone, Copy)]
pub struct Fixed {
    /// The identifier.
    pub di: DataIdentifier,
    /// Canonical quantity name.
    pub quantity: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// OBIS code.
    pub obis: Option<&'static str>,
    /// Format.
    pub format: Format,
    /// Description.
    pub description: &'static str,
}

impl Fixed {
    fn spec(&self) -> DiSpec {
        DiSpec {
            di: self.di,
            quantity: Cow::Borrowed(self.quantity),
            unit: self.unit,
            obis: self.obis.map(Cow::Borrowed),
            format: self.format,
            description: self.description,
        }
    }
}

const fn n7(
    di: u32,
    quantity: &'static str,
    unit: &'static str,
    obis: Option<&'static str>,
    format: Format,
    description: &'static str,
) -> Fixed {
    Fixed {
        di: DataIdentifier::V2007(di),
        quantity,
        unit,
        obis,
        format,
        description,
    }
}

const fn n97(
    di: u16,
    quantity: &'static str,
    unit: &'static str,
    obis: Option<&'static str>,
    format: Format,
    description: &'static str,
) -> Fixed {
    Fixed {
        di: DataIdentifier::V1997(di),
        quantity,
        unit,
        obis,
        format,
        description,
    }
}

const VOLT: Format = Format::bcd(4, 1, false); // XXX.X
const AMP: Format = Format::bcd(6, 3, true); // XXX.XXX, signed
const POWER_S: Format = Format::bcd(6, 4, true); // XX.XXXX, signed
const POWER_U: Format = Format::bcd(6, 4, false); // XX.XXXX
const PF_S: Format = Format::bcd(4, 3, true); // X.XXX, signed
const NN: Format = Format::bcd(2, 0, false); // NN

/// Every fixed (non-parametric) item of both editions. Blocks over these items are listed in
/// [`FIXED_BLOCKS`] and split into the items of this table that differ only in the `FF`
/// position, in ascending DI order.
#[rustfmt::skip]
pub static FIXED: &[Fixed] = &[
    // ---- DL/T 645-2007 instantaneous variables (DI3 = 02)
    n7(0x0201_0100, "voltage.l1", "V", Some("1-0:32.7.0"), VOLT, "phase A voltage"),
    n7(0x0201_0200, "voltage.l2", "V", Some("1-0:52.7.0"), VOLT, "phase B voltage"),
    n7(0x0201_0300, "voltage.l3", "V", Some("1-0:72.7.0"), VOLT, "phase C voltage"),
    n7(0x0202_0100, "current.l1", "A", Some("1-0:31.7.0"), AMP, "phase A current"),
    n7(0x0202_0200, "current.l2", "A", Some("1-0:51.7.0"), AMP, "phase B current"),
    n7(0x0202_0300, "current.l3", "A", Some("1-0:71.7.0"), AMP, "phase C current"),
    n7(0x0203_0000, "power.active.total", "kW", Some("1-0:1.7.0"), POWER_S, "total active power"),
    n7(0x0203_0100, "power.active.l1", "kW", Some("1-0:21.7.0"), POWER_S, "phase A active power"),
    n7(0x0203_0200, "power.active.l2", "kW", Some("1-0:41.7.0"), POWER_S, "phase B active power"),
    n7(0x0203_0300, "power.active.l3", "kW", Some("1-0:61.7.0"), POWER_S, "phase C active power"),
    n7(0x0204_0000, "power.reactive.total", "kvar", Some("1-0:3.7.0"), POWER_S, "total reactive power"),
    n7(0x0204_0100, "power.reactive.l1", "kvar", Some("1-0:23.7.0"), POWER_S, "phase A reactive power"),
    n7(0x0204_0200, "power.reactive.l2", "kvar", Some("1-0:43.7.0"), POWER_S, "phase B reactive power"),
    n7(0x0204_0300, "power.reactive.l3", "kvar", Some("1-0:63.7.0"), POWER_S, "phase C reactive power"),
    n7(0x0205_0000, "power.apparent.total", "kVA", Some("1-0:9.7.0"), POWER_U, "total apparent power"),
    n7(0x0205_0100, "power.apparent.l1", "kVA", Some("1-0:29.7.0"), POWER_U, "phase A apparent power"),
    n7(0x0205_0200, "power.apparent.l2", "kVA", Some("1-0:49.7.0"), POWER_U, "phase B apparent power"),
    n7(0x0205_0300, "power.apparent.l3", "kVA", Some("1-0:69.7.0"), POWER_U, "phase C apparent power"),
    n7(0x0206_0000, "power_factor.total", "", Some("1-0:13.7.0"), PF_S, "total power factor"),
    n7(0x0206_0100, "power_factor.l1", "", Some("1-0:33.7.0"), PF_S, "phase A power factor"),
    n7(0x0206_0200, "power_factor.l2", "", Some("1-0:53.7.0"), PF_S, "phase B power factor"),
    n7(0x0206_0300, "power_factor.l3", "", Some("1-0:73.7.0"), PF_S, "phase C power factor"),
    n7(0x0207_0100, "phase_angle.l1", "°", Some("1-0:81.7.4"), VOLT, "phase A angle"),
    n7(0x0207_0200, "phase_angle.l2", "°", Some("1-0:81.7.15"), VOLT, "phase B angle"),
    n7(0x0207_0300, "phase_angle.l3", "°", Some("1-0:81.7.26"), VOLT, "phase C angle"),
    n7(0x0280_0001, "current.neutral", "A", Some("1-0:91.7.0"), AMP, "neutral current"),
    n7(0x0280_0002, "frequency", "Hz", Some("1-0:14.7.0"), Format::bcd(4, 2, false), "grid frequency"),
    n7(0x0280_0003, "power.active.total.avg_1min", "kW", None, POWER_S, "one-minute average total active power"),
    n7(0x0280_0004, "demand.active.current", "kW", Some("1-0:1.4.0"), POWER_S, "current active demand"),
    n7(0x0280_0005, "demand.reactive.current", "kvar", Some("1-0:3.4.0"), POWER_S, "current reactive demand"),
    n7(0x0280_0007, "meter.temperature", "°C", None, Format::bcd(4, 1, true), "meter internal temperature"),
    n7(0x0280_0008, "meter.clock_battery.voltage", "V", None, Format::bcd(4, 2, false), "clock battery voltage"),
    // ---- events (DI3 = 03): counts
    n7(0x0311_0000, "events.power_down.count", "", None, Format::COUNT, "power-down count"),
    n7(0x0330_0100, "events.meter_reset.count", "", None, Format::COUNT, "meter reset (clear) count"),
    n7(0x0330_0200, "events.event_reset.count", "", None, Format::COUNT, "event-log reset count"),
    n7(0x0330_0400, "events.time_set.count", "", None, Format::COUNT, "time-setting count"),
    n7(0x0330_0D00, "events.cover_open.count", "", None, Format::COUNT, "meter cover opened count"),
    n7(0x0330_0E00, "events.terminal_cover_open.count", "", None, Format::COUNT, "terminal cover opened count"),
    // ---- parameters (DI3 = 04)
    n7(0x0400_0101, "meter.date", "", None, Format::Yymmddww, "meter date and weekday"),
    n7(0x0400_0102, "meter.time", "", None, Format::Hhmmss, "meter time of day"),
    n7(0x0400_0103, "meter.demand_period", "min", None, NN, "demand integration period"),
    n7(0x0400_0104, "meter.demand_slide_time", "min", None, NN, "demand sliding time"),
    n7(0x0400_0204, "meter.tariff_count", "", None, NN, "number of tariffs"),
    n7(0x0400_0401, "meter.address", "", None, Format::Number(12), "communication address"),
    n7(0x0400_0402, "meter.number", "", None, Format::Number(12), "meter number"),
    n7(0x0400_0403, "meter.asset_code", "", None, Format::Ascii(32), "asset management code"),
    n7(0x0400_040B, "meter.model", "", None, Format::Ascii(10), "meter model"),
    n7(0x0400_040C, "meter.production_date", "", None, Format::Ascii(10), "production date"),
    n7(0x0400_0501, "meter.status_word1", "", None, Format::Bits(2), "meter running status word 1"),
    n7(0x0400_0502, "meter.status_word2", "", None, Format::Bits(2), "meter running status word 2"),
    n7(0x0400_0503, "meter.status_word3", "", None, Format::Bits(2), "meter running status word 3 (relay)"),
    n7(0x0400_0504, "meter.status_word4", "", None, Format::Bits(2), "meter running status word 4"),
    n7(0x0400_0505, "meter.status_word5", "", None, Format::Bits(2), "meter running status word 5"),
    n7(0x0400_0506, "meter.status_word6", "", None, Format::Bits(2), "meter running status word 6"),
    n7(0x0400_0507, "meter.status_word7", "", None, Format::Bits(2), "meter running status word 7"),
    n7(0x0400_0B01, "meter.settlement_day1", "", None, Format::Ddhh, "monthly settlement day 1"),
    n7(0x0400_0B02, "meter.settlement_day2", "", None, Format::Ddhh, "monthly settlement day 2"),
    n7(0x0400_0B03, "meter.settlement_day3", "", None, Format::Ddhh, "monthly settlement day 3"),
    n7(0x0480_0001, "meter.firmware_version", "", None, Format::Ascii(32), "manufacturer's software version"),
    // ---- DL/T 645-1997
    n97(0xB611, "voltage.l1", "V", Some("1-0:32.7.0"), Format::bcd(3, 0, false), "phase A voltage"),
    n97(0xB612, "voltage.l2", "V", Some("1-0:52.7.0"), Format::bcd(3, 0, false), "phase B voltage"),
    n97(0xB613, "voltage.l3", "V", Some("1-0:72.7.0"), Format::bcd(3, 0, false), "phase C voltage"),
    n97(0xB621, "current.l1", "A", Some("1-0:31.7.0"), Format::bcd(4, 2, false), "phase A current"),
    n97(0xB622, "current.l2", "A", Some("1-0:51.7.0"), Format::bcd(4, 2, false), "phase B current"),
    n97(0xB623, "current.l3", "A", Some("1-0:71.7.0"), Format::bcd(4, 2, false), "phase C current"),
    n97(0xB630, "power.active.total", "kW", Some("1-0:1.7.0"), POWER_U, "total active power"),
    n97(0xB631, "power.active.l1", "kW", Some("1-0:21.7.0"), POWER_U, "phase A active power"),
    n97(0xB632, "power.active.l2", "kW", Some("1-0:41.7.0"), POWER_U, "phase B active power"),
    n97(0xB633, "power.active.l3", "kW", Some("1-0:61.7.0"), POWER_U, "phase C active power"),
    n97(0xB640, "power.reactive.total", "kvar", Some("1-0:3.7.0"), Format::bcd(4, 2, false), "total reactive power"),
    n97(0xB641, "power.reactive.l1", "kvar", Some("1-0:23.7.0"), Format::bcd(4, 2, false), "phase A reactive power"),
    n97(0xB642, "power.reactive.l2", "kvar", Some("1-0:43.7.0"), Format::bcd(4, 2, false), "phase B reactive power"),
    n97(0xB643, "power.reactive.l3", "kvar", Some("1-0:63.7.0"), Format::bcd(4, 2, false), "phase C reactive power"),
    n97(0xB650, "power_factor.total", "", Some("1-0:13.7.0"), Format::bcd(4, 3, false), "total power factor"),
    n97(0xB651, "power_factor.l1", "", Some("1-0:33.7.0"), Format::bcd(4, 3, false), "phase A power factor"),
    n97(0xB652, "power_factor.l2", "", Some("1-0:53.7.0"), Format::bcd(4, 3, false), "phase B power factor"),
    n97(0xB653, "power_factor.l3", "", Some("1-0:73.7.0"), Format::bcd(4, 3, false), "phase C power factor"),
    n97(0xC010, "meter.date", "", None, Format::Yymmddww, "meter date and weekday"),
    n97(0xC011, "meter.time", "", None, Format::Hhmmss, "meter time of day"),
];

/// Blocks over [`FIXED`] items whose item list is known to be complete.
pub static FIXED_BLOCKS: &[DataIdentifier] = &[
    DataIdentifier::V2007(0x0201_FF00),
    DataIdentifier::V2007(0x0202_FF00),
    DataIdentifier::V2007(0x0203_FF00),
    DataIdentifier::V2007(0x0204_FF00),
    DataIdentifier::V2007(0x0205_FF00),
    DataIdentifier::V2007(0x0206_FF00),
    DataIdentifier::V2007(0x0207_FF00),
    DataIdentifier::V2007(0x0400_05FF),
    DataIdentifier::V1997(0xB61F),
    DataIdentifier::V1997(0xB62F),
    DataIdentifier::V1997(0xB63F),
    DataIdentifier::V1997(0xB64F),
    DataIdentifier::V1997(0xB65F),
];

// ---------------------------------------------------------------------------------------
// Parametric families: energy and max demand.

/// One energy/demand kind (the DL/T 645-2007 DI2 of classes 00 and 01).
#[derive(Debug)]
struct Kind {
    /// `active.import` → `energy.active.import.total`.
    name: &'static str,
    energy_unit: &'static str,
    demand_unit: &'static str,
    /// OBIS C value (`1-0:C.8.T` energy, `1-0:C.6.T` max demand) when one fits.
    obis_c: Option<u8>,
    signed: bool,
    energy_description: &'static str,
    demand_description: &'static str,
}

const fn kind(
    name: &'static str,
    energy_unit: &'static str,
    demand_unit: &'static str,
    obis_c: Option<u8>,
    signed: bool,
    energy_description: &'static str,
    demand_description: &'static str,
) -> Kind {
    Kind {
        name,
        energy_unit,
        demand_unit,
        obis_c,
        signed,
        energy_description,
        demand_description,
    }
}

/// DL/T 645-2007 energy/demand kinds, indexed by DI2 (0x00..=0x0A). Combined active and the
/// two combined reactive registers have no OBIS code: the meter's combination word decides
/// what they add up.
#[rustfmt::skip]
static KINDS_2007: [Kind; 11] = [
    kind("active.combined", "kWh", "kW", None, true, "combined active energy", "combined active max demand"),
    kind("active.import", "kWh", "kW", Some(1), false, "forward (import) active energy", "forward active max demand"),
    kind("active.export", "kWh", "kW", Some(2), false, "reverse (export) active energy", "reverse active max demand"),
    kind("reactive.combined1", "kvarh", "kvar", None, true, "combined reactive energy 1", "combined reactive 1 max demand"),
    kind("reactive.combined2", "kvarh", "kvar", None, true, "combined reactive energy 2", "combined reactive 2 max demand"),
    kind("reactive.q1", "kvarh", "kvar", Some(5), false, "quadrant I reactive energy", "quadrant I reactive max demand"),
    kind("reactive.q2", "kvarh", "kvar", Some(6), false, "quadrant II reactive energy", "quadrant II reactive max demand"),
    kind("reactive.q3", "kvarh", "kvar", Some(7), false, "quadrant III reactive energy", "quadrant III reactive max demand"),
    kind("reactive.q4", "kvarh", "kvar", Some(8), false, "quadrant IV reactive energy", "quadrant IV reactive max demand"),
    kind("apparent.import", "kVAh", "kVA", Some(9), false, "forward apparent energy", "forward apparent max demand"),
    kind("apparent.export", "kVAh", "kVA", Some(10), false, "reverse apparent energy", "reverse apparent max demand"),
];

/// DL/T 645-1997 energy registers: (DI high byte, DI0 high nibble, kind, period).
#[rustfmt::skip]
static KINDS_1997: [(u8, u8, Kind, Period); 8] = [
    (0x90, 1, kind("active.import", "kWh", "kW", Some(1), false, "forward active energy", ""), Period::Current),
    (0x90, 2, kind("active.export", "kWh", "kW", Some(2), false, "reverse active energy", ""), Period::Current),
    (0x91, 1, kind("reactive.import", "kvarh", "kvar", Some(3), false, "forward reactive energy", ""), Period::Current),
    (0x91, 2, kind("reactive.export", "kvarh", "kvar", Some(4), false, "reverse reactive energy", ""), Period::Current),
    (0x94, 1, kind("active.import", "kWh", "kW", Some(1), false, "last month forward active energy", ""), Period::Settlement(1)),
    (0x94, 2, kind("active.export", "kWh", "kW", Some(2), false, "last month reverse active energy", ""), Period::Settlement(1)),
    (0x98, 1, kind("active.import", "kWh", "kW", Some(1), false, "forward active energy of the month before last", ""), Period::Settlement(2)),
    (0x98, 2, kind("active.export", "kWh", "kW", Some(2), false, "reverse active energy of the month before last", ""), Period::Settlement(2)),
];
/// Monthly settlements a DL/T 645-1997 meter keeps: last month (`94xx`) and the month before
/// (`98xx`).
pub const MAX_SETTLEMENT_1997: u8 = 2;

/// Highest tariff number: 63 for 2007 (DI1 `01..3F`), 14 for 1997 (DI0 nibble `1..E`).
const MAX_TARIFF_2007: u8 = 63;
const MAX_TARIFF_1997: u8 = 14;
/// Tariffs listed by [`lookup`] for a "total + tariffs" block.
const NOMINAL_TARIFFS: u8 = 4;
/// Daily freezes a meter keeps (DI0 `01..3E`).
pub const MAX_DAILY: u8 = 62;
/// Hourly (whole-hour) freezes a meter keeps (DI0 `01..FE`).
pub const MAX_HOURLY: u8 = 254;
/// Monthly settlements a meter keeps (DI0 `01..0C`).
pub const MAX_SETTLEMENT: u8 = 12;

/// Which snapshot a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Current,
    /// N-th last monthly settlement, 1..=12.
    Settlement(u8),
    /// N-th last daily freeze, 1..=62.
    Daily(u8),
    /// N-th last hourly (whole-hour) freeze, 1..=254.
    Hourly(u8),
}

impl Period {
    fn suffix(self) -> String {
        match self {
            Period::Current => String::new(),
            Period::Settlement(n) => format!("@settlement-{n}"),
            Period::Daily(n) => format!("@daily-{n}"),
            Period::Hourly(n) => format!("@hourly-{n}"),
        }
    }

    fn parse(quantity: &str) -> Option<(&str, Period)> {
        let Some((base, suffix)) = quantity.split_once('@') else {
            return Some((quantity, Period::Current));
        };
        let number = |s: &str| -> Option<u8> {
            if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if let Some(n) = suffix.strip_prefix("settlement-") {
            let n = number(n)?;
            (1..=12)
                .contains(&n)
                .then_some((base, Period::Settlement(n)))
        } else if let Some(n) = suffix.strip_prefix("daily-") {
            let n = number(n)?;
            (1..=MAX_DAILY)
                .contains(&n)
                .then_some((base, Period::Daily(n)))
        } else if let Some(n) = suffix.strip_prefix("hourly-") {
            let n = number(n)?;
            (1..=MAX_HOURLY)
                .contains(&n)
                .then_some((base, Period::Hourly(n)))
        } else {
            None
        }
    }
}

fn tariff_name(t: u8) -> Cow<'static, str> {
    if t == 0 {
        Cow::Borrowed("total")
    } else {
        Cow::Owned(format!("t{t}"))
    }
}

/// One item of the energy/demand families.
fn kind_spec(kind: &Kind, demand: bool, tariff: u8, period: Period, di: DataIdentifier) -> DiSpec {
    let name = tariff_name(tariff);
    let suffix = period.suffix();
    let (quantity, obis_d) = if demand {
        (format!("demand.{}.{name}.max{suffix}", kind.name), 6)
    } else {
        (format!("energy.{}.{name}{suffix}", kind.name), 8)
    };
    let obis = match period {
        Period::Current => kind
            .obis_c
            .map(|c| Cow::Owned(format!("1-0:{c}.{obis_d}.{tariff}"))),
        Period::Settlement(_) | Period::Daily(_) | Period::Hourly(_) => None,
    };
    DiSpec {
        di,
        quantity: Cow::Owned(quantity),
        unit: if demand {
            kind.demand_unit
        } else {
            kind.energy_unit
        },
        obis,
        format: if demand {
            Format::Demand
        } else {
            Format::bcd(8, 2, kind.signed)
        },
        description: if demand {
            kind.demand_description
        } else {
            kind.energy_description
        },
    }
}

/// A "total + tariffs" block whose tariff count comes from the payload length.
#[derive(Debug, Clone, Copy)]
struct TariffBlock {
    kind: &'static Kind,
    demand: bool,
    period: Period,
    /// The block's own identifier (used for items without a single-item DI).
    block_di: DataIdentifier,
    /// Tariff `t`'s own DI, when it has one.
    item_di: fn(DataIdentifier, u8) -> DataIdentifier,
    max_tariff: u8,
}

impl TariffBlock {
    fn item(&self, tariff: u8) -> DiSpec {
        kind_spec(
            self.kind,
            self.demand,
            tariff,
            self.period,
            (self.item_di)(self.block_di, tariff),
        )
    }

    fn item_len(&self) -> usize {
        if self.demand {
            Format::Demand.len()
        } else {
            Format::ENERGY.len()
        }
    }
}

fn di_2007_set_di1(block: DataIdentifier, tariff: u8) -> DataIdentifier {
    match block {
        DataIdentifier::V2007(v) => {
            DataIdentifier::V2007((v & 0xFFFF_00FF) | (u32::from(tariff) << 8))
        }
        other => other,
    }
}

fn di_same(block: DataIdentifier, _tariff: u8) -> DataIdentifier {
    block
}

fn di_1997_set_tariff(block: DataIdentifier, tariff: u8) -> DataIdentifier {
    match block {
        DataIdentifier::V1997(v) => DataIdentifier::V1997((v & 0xFFF0) | u16::from(tariff & 0x0F)),
        other => other,
    }
}

/// The catalogue's answer for one identifier, before it is shown as [`DiInfo`].
enum Entry {
    Item(DiSpec),
    Items(Vec<DiSpec>),
    Tariffs(TariffBlock),
}

fn resolve(di: DataIdentifier) -> Option<Entry> {
    if let Some(f) = FIXED.iter().find(|f| f.di == di) {
        return Some(Entry::Item(f.spec()));
    }
    if FIXED_BLOCKS.contains(&di) {
        return fixed_block(di).map(Entry::Items);
    }
    match di {
        DataIdentifier::V2007(v) => resolve_2007(v),
        DataIdentifier::V1997(v) => resolve_1997(v),
    }
}

/// The [`FIXED`] items that differ from a block DI only where it has `FF` (2007) or `F`
/// in the low nibble (1997), ascending.
fn fixed_block(block: DataIdentifier) -> Option<Vec<DiSpec>> {
    let mut items: Vec<&Fixed> = match block {
        DataIdentifier::V2007(b) => {
            let bytes = b.to_be_bytes();
            let pos = bytes.iter().position(|&x| x == 0xFF)?;
            FIXED
                .iter()
                .filter(|f| match f.di {
                    DataIdentifier::V2007(v) => {
                        let vb = v.to_be_bytes();
                        vb.iter()
                            .zip(bytes.iter())
                            .enumerate()
                            .all(|(i, (a, b))| if i == pos { *a != 0xFF } else { a == b })
                    }
                    DataIdentifier::V1997(_) => false,
                })
                .collect()
        }
        DataIdentifier::V1997(b) => FIXED
            .iter()
            .filter(
                |f| matches!(f.di, DataIdentifier::V1997(v) if v >> 4 == b >> 4 && v & 0xF != 0xF),
            )
            .collect(),
    };
    items.sort_by_key(|f| f.di);
    if items.is_empty() {
        None
    } else {
        Some(items.iter().map(|f| f.spec()).collect())
    }
}

fn resolve_2007(v: u32) -> Option<Entry> {
    let [d3, d2, d1, d0] = v.to_be_bytes();
    match d3 {
        0x00 | 0x01 => {
            let demand = d3 == 0x01;
            // Max demand has no combined active register (DI2 starts at 01).
            if demand && d2 == 0 {
                return None;
            }
            let kind = KINDS_2007.get(usize::from(d2))?;
            let di = DataIdentifier::V2007(v);
            match (d1, d0) {
                (0xFF, 0xFF) => None,
                (0xFF, _) => Some(Entry::Tariffs(TariffBlock {
                    kind,
                    demand,
                    period: settlement_period(d0)?,
                    block_di: di,
                    item_di: di_2007_set_di1,
                    max_tariff: MAX_TARIFF_2007,
                })),
                (t, 0xFF) if t <= MAX_TARIFF_2007 => Some(Entry::Items(
                    (0u8..=12)
                        .filter_map(|n| {
                            let item = DataIdentifier::V2007((v & 0xFFFF_FF00) | u32::from(n));
                            Some(kind_spec(kind, demand, t, settlement_period(n)?, item))
                        })
                        .collect(),
                )),
                (t, _) if t <= MAX_TARIFF_2007 => Some(Entry::Item(kind_spec(
                    kind,
                    demand,
                    t,
                    settlement_period(d0)?,
                    di,
                ))),
                _ => None,
            }
        }
        0x05 if d2 == 0x06 => resolve_daily(v, d1, d0),
        0x05 if d2 == 0x04 => resolve_hourly(v, d1, d0),
        _ => None,
    }
}

fn settlement_period(d0: u8) -> Option<Period> {
    match d0 {
        0 => Some(Period::Current),
        1..=12 => Some(Period::Settlement(d0)),
        _ => None,
    }
}

/// `0506 DI1 DI0`: daily freeze, DI0 = occurrence (1 = last).
fn resolve_daily(v: u32, d1: u8, d0: u8) -> Option<Entry> {
    if !(1..=MAX_DAILY).contains(&d0) {
        return None;
    }
    let period = Period::Daily(d0);
    let di = DataIdentifier::V2007(v);
    let block = |kind: &'static Kind, demand: bool| {
        Some(Entry::Tariffs(TariffBlock {
            kind,
            demand,
            period,
            block_di: di,
            item_di: di_same,
            max_tariff: MAX_TARIFF_2007,
        }))
    };
    match d1 {
        0x00 => Some(Entry::Item(DiSpec {
            di,
            quantity: Cow::Owned(format!("freeze.daily.time{}", period.suffix())),
            unit: "",
            obis: None,
            format: Format::Yymmddhhmm,
            description: "daily freeze time stamp",
        })),
        0x01..=0x08 => block(KINDS_2007.get(usize::from(d1))?, false),
        0x09 => block(KINDS_2007.get(1)?, true),
        0x0A => block(KINDS_2007.get(2)?, true),
        _ => None,
    }
}

/// `0504 DI1 DI0`: hourly (whole-hour) freeze, DI0 = occurrence (1 = last). Each record
/// holds its stamp and the forward and reverse active totals, one item each (no tariffs).
fn resolve_hourly(v: u32, d1: u8, d0: u8) -> Option<Entry> {
    if !(1..=MAX_HOURLY).contains(&d0) {
        return None;
    }
    let period = Period::Hourly(d0);
    let di = DataIdentifier::V2007(v);
    match d1 {
        0x00 => Some(Entry::Item(DiSpec {
            di,
            quantity: Cow::Owned(format!("freeze.hourly.time{}", period.suffix())),
            unit: "",
            obis: None,
            format: Format::Yymmddhhmm,
            description: "hourly freeze time stamp",
        })),
        0x01 | 0x02 => Some(Entry::Item(kind_spec(
            KINDS_2007.get(usize::from(d1))?,
            false,
            0,
            period,
            di,
        ))),
        _ => None,
    }
}

fn resolve_1997(v: u16) -> Option<Entry> {
    let [hi, lo] = v.to_be_bytes();
    let (_, _, kind, period) = KINDS_1997
        .iter()
        .find(|(h, k, _, _)| *h == hi && *k == lo >> 4)?;
    let di = DataIdentifier::V1997(v);
    match lo & 0x0F {
        0x0F => Some(Entry::Tariffs(TariffBlock {
            kind,
            demand: false,
            period: *period,
            block_di: di,
            item_di: di_1997_set_tariff,
            max_tariff: MAX_TARIFF_1997,
        })),
        t if t <= MAX_TARIFF_1997 => Some(Entry::Item(kind_spec(kind, false, t, *period, di))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Public API.

/// What `di` reads: one item, or a block expanded into its ordered items. For a
/// "total + tariffs" block the items are total and tariffs 1..4 and `tariffs_by_length` is
/// set (the real count comes from the payload; see [`decode_payload`]). `None` for an
/// identifier not in the catalogue.
pub fn lookup(di: DataIdentifier) -> Option<DiInfo> {
    Some(match resolve(di)? {
        Entry::Item(spec) => DiInfo::Item(spec),
        Entry::Items(items) => DiInfo::Block {
            items,
            tariffs_by_length: false,
        },
        Entry::Tariffs(block) => DiInfo::Block {
            items: (0..=NOMINAL_TARIFFS.min(block.max_tariff))
                .map(|t| block.item(t))
                .collect(),
            tariffs_by_length: true,
        },
    })
}

/// Decodes the data of a read response (unmasked, DI already removed) into its values.
///
/// Splits blocks; for a "total + tariffs" block the count is total + `len / item_len − 1`
/// tariffs. Never fails: an unknown DI gives one `dlt645:XXXXXXXX` item holding
/// [`Value::Raw`]; a block payload that does not fit gives one `dlt645:XXXXXXXX` item holding
/// [`Value::Invalid`] ([`REASON_BLOCK_LENGTH`]); a single item of the wrong length gives that
/// item with [`Value::Invalid`].
pub fn decode_payload(di: DataIdentifier, payload: &[u8]) -> Vec<DecodedValue> {
    let entry = match resolve(di) {
        Some(entry) => entry,
        None => {
            return vec![DecodedValue {
                quantity: Cow::Owned(format!("dlt645:{di}")),
                unit: "",
                obis: None,
                value: Value::Raw(payload.to_vec()),
            }];
        }
    };
    let bad_block = || {
        vec![DecodedValue {
            quantity: Cow::Owned(format!("dlt645:{di}")),
            unit: "",
            obis: None,
            value: Value::Invalid {
                raw: payload.to_vec(),
                reason: REASON_BLOCK_LENGTH,
            },
        }]
    };
    match entry {
        Entry::Item(spec) => vec![spec.decode(payload)],
        Entry::Items(items) => {
            let total: usize = items.iter().map(|s| s.format.len()).sum();
            if total != payload.len() {
                return bad_block();
            }
            let mut rest = payload;
            let mut out = Vec::with_capacity(items.len());
            for spec in &items {
                let Some((head, tail)) = rest.split_at_checked(spec.format.len()) else {
                    return bad_block();
                };
                out.push(spec.decode(head));
                rest = tail;
            }
            out
        }
        Entry::Tariffs(block) => {
            let item_len = block.item_len();
            let count = payload.len() / item_len;
            if payload.is_empty()
                || !payload.len().is_multiple_of(item_len)
                || count > usize::from(block.max_tariff) + 1
            {
                return bad_block();
            }
            payload
                .chunks_exact(item_len)
                .zip(0u8..)
                .map(|(bytes, t)| block.item(t).decode(bytes))
                .collect()
        }
    }
}

/// The identifier that reads `quantity` on a meter of `version`: the single-item DI for
/// current values, settlement snapshots and fixed items; for daily-freeze energies and
/// demands (which exist only inside a block) the block DI, whose [`decode_payload`] contains
/// the quantity. `None` for a name the catalogue does not know in that edition.
pub fn di_for_quantity(version: Version, quantity: &str) -> Option<DataIdentifier> {
    let (base, period) = Period::parse(quantity)?;
    if period == Period::Current
        && let Some(f) = FIXED
            .iter()
            .find(|f| f.di.version() == version && f.quantity == base)
    {
        return Some(f.di);
    }
    if base == "freeze.daily.time" {
        return match (version, period) {
            (Version::V2007, Period::Daily(n)) => {
                Some(DataIdentifier::V2007(0x0506_0000 | u32::from(n)))
            }
            _ => None,
        };
    }
    if base == "freeze.hourly.time" {
        return match (version, period) {
            (Version::V2007, Period::Hourly(n)) => {
                Some(DataIdentifier::V2007(0x0504_0000 | u32::from(n)))
            }
            _ => None,
        };
    }
    let (demand, rest) = if let Some(rest) = base.strip_prefix("energy.") {
        (false, rest)
    } else {
        (true, base.strip_prefix("demand.")?.strip_suffix(".max")?)
    };
    let (kind_name, tariff) = rest.rsplit_once('.')?;
    let tariff = match tariff {
        "total" => 0,
        t => {
            let digits = t.strip_prefix('t')?;
            if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u8>().ok().filter(|&t| t >= 1)?
        }
    };
    match version {
        Version::V2007 => {
            if tariff > MAX_TARIFF_2007 {
                return None;
            }
            let di2 = u8::try_from(KINDS_2007.iter().position(|k| k.name == kind_name)?).ok()?;
            if demand && di2 == 0 {
                return None;
            }
            let class: u32 = if demand { 0x01 } else { 0x00 };
            match period {
                Period::Current => Some(DataIdentifier::V2007(
                    class << 24 | u32::from(di2) << 16 | u32::from(tariff) << 8,
                )),
                Period::Settlement(n) => Some(DataIdentifier::V2007(
                    class << 24 | u32::from(di2) << 16 | u32::from(tariff) << 8 | u32::from(n),
                )),
                Period::Daily(n) => {
                    let di1: u32 = match (demand, di2) {
                        (false, 1..=8) => u32::from(di2),
                        (true, 1) => 0x09,
                        (true, 2) => 0x0A,
                        _ => return None,
                    };
                    Some(DataIdentifier::V2007(0x0506_0000 | di1 << 8 | u32::from(n)))
                }
                // Hourly records hold the forward and reverse active totals only.
                Period::Hourly(n) => match (demand, di2, tariff) {
                    (false, 1 | 2, 0) => Some(DataIdentifier::V2007(
                        0x0504_0000 | u32::from(di2) << 8 | u32::from(n),
                    )),
                    _ => None,
                },
            }
        }
        Version::V1997 => {
            if demand || tariff > MAX_TARIFF_1997 {
                return None;
            }
            let (hi, nibble, _, _) = KINDS_1997
                .iter()
                .find(|(_, _, k, p)| k.name == kind_name && *p == period)?;
            Some(DataIdentifier::V1997(
                u16::from(*hi) << 8 | u16::from(*nibble) << 4 | u16::from(tariff),
            ))
        }
    }
}

/// The OBIS code the catalogue gives `quantity` (as a DL/T 645-2007 item, else as a 1997 one),
/// for quantities read by other protocols under the same name (Modbus profiles). `None` when the
/// catalogue does not know the name or the quantity has no code.
pub fn obis_for_quantity(quantity: &str) -> Option<Cow<'static, str>> {
    [Version::V2007, Version::V1997]
        .into_iter()
        .find_map(|version| {
            let items = match lookup(di_for_quantity(version, quantity)?)? {
                DiInfo::Item(spec) => vec![spec],
                DiInfo::Block { items, .. } => items,
            };
            items.into_iter().find(|s| s.quantity == quantity)?.obis
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal::Decimal;
    use proptest::prelude::*;

    fn di(s: &str) -> DataIdentifier {
        DataIdentifier::parse(s).unwrap()
    }

    /// The unmasked data field of a frame given as hex: bytes after `68 A0..A5 68 C L`, each
    /// minus 0x33. A test helper, not a frame parser (that is `frame.rs`).
    fn frame_data(hex: &str) -> Vec<u8> {
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        let start = bytes.iter().position(|&b| b == 0x68).unwrap();
        let len = usize::from(bytes[start + 9]);
        bytes[start + 10..start + 10 + len]
            .iter()
            .map(|b| b.wrapping_sub(0x33))
            .collect()
    }

    /// Splits unmasked response data into DI and payload and decodes it.
    fn decode_frame(version: Version, hex: &str) -> Vec<DecodedValue> {
        let data = frame_data(hex);
        let id = DataIdentifier::from_wire(version, &data).unwrap();
        decode_payload(id, &data[version.di_len()..])
    }

    fn shown(values: &[DecodedValue]) -> Vec<(String, String, &'static str)> {
        values
            .iter()
            .map(|v| (v.quantity.to_string(), v.value.to_string(), v.unit))
            .collect()
    }

    fn one(values: &[DecodedValue]) -> (String, String, &'static str) {
        assert_eq!(values.len(), 1, "{values:?}");
        shown(values).remove(0)
    }

    fn q(quantity: &str, value: &str, unit: &'static str) -> (String, String, &'static str) {
        (quantity.to_owned(), value.to_owned(), unit)
    }

    #[test]
    fn vectors_from_the_brief() {
        let v = decode_frame(
            Version::V2007,
            "FE FE FE FE 68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16",
        );
        assert_eq!(one(&v), q("energy.active.combined.total", "317.76", "kWh"));
        assert_eq!(v[0].value, Value::Number(Decimal::new(31776, 2).unwrap()));
        assert_eq!(v[0].obis, None);

        let v = decode_frame(
            Version::V2007,
            "68 03 20 12 22 20 65 68 91 08 33 33 33 33 33 33 33 33 DD 16",
        );
        assert_eq!(one(&v), q("energy.active.combined.total", "0.00", "kWh"));

        let v = decode_frame(
            Version::V2007,
            "68 18 20 12 22 20 65 68 91 0A 33 32 34 35 33 33 33 33 C7 56 13 16",
        );
        assert_eq!(
            shown(&v),
            vec![
                q("voltage.l1", "0.0", "V"),
                q("voltage.l2", "0.0", "V"),
                q("voltage.l3", "239.4", "V")
            ]
        );
        assert_eq!(v[2].obis.as_deref(), Some("1-0:72.7.0"));

        let v = decode_frame(
            Version::V2007,
            "68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8B 16",
        );
        assert_eq!(one(&v), q("energy.active.import.total", "1206.42", "kWh"));
        assert_eq!(v[0].obis.as_deref(), Some("1-0:1.8.0"));

        let v = decode_frame(
            Version::V2007,
            "FE FE FE FE 68 00 51 44 18 11 17 68 91 06 35 33 B3 35 36 83 45 16",
        );
        assert_eq!(one(&v), q("frequency", "50.03", "Hz"));
        assert_eq!(v[0].obis.as_deref(), Some("1-0:14.7.0"));

        let v = decode_frame(
            Version::V1997,
            "68 54 07 13 00 80 13 68 81 06 43 C3 34 33 33 33 2B 16",
        );
        assert_eq!(one(&v), q("energy.active.import.total", "0.01", "kWh"));
        assert_eq!(v[0].obis.as_deref(), Some("1-0:1.8.0"));
    }

    /// The simulator vectors in `dlt645-vectors.json` whose text states a value: date and time.
    #[test]
    fn vectors_from_the_json_file() {
        let text = include_str!("../../tests/data/dlt645-vectors.json");
        let vectors: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut checked = 0;
        for v in vectors.as_array().unwrap() {
            let (Some(hex), Some(control), Some(name)) =
                (v["hex"].as_str(), v["control"].as_str(), v["name"].as_str())
            else {
                continue;
            };
            if control != "91" || v["di"].is_null() {
                continue;
            }
            // Unmasking by hand agrees with the file's own data_minus_33.
            let data = frame_data(hex);
            let listed: Vec<u8> = v["data_minus_33"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            assert_eq!(data, listed, "{name}");
            let values = decode_frame(Version::V2007, hex);
            assert!(
                values.iter().all(|x| x.value.is_valid()),
                "{name}: {values:?}"
            );
            let expected: Vec<_> = match name {
                "read_combined_active_total_resp_317_76" => {
                    vec![q("energy.active.combined.total", "317.76", "kWh")]
                }
                "read_combined_total_resp_zero" => {
                    vec![q("energy.active.combined.total", "0.00", "kWh")]
                }
                "read_voltage_block_resp" => vec![
                    q("voltage.l1", "0.0", "V"),
                    q("voltage.l2", "0.0", "V"),
                    q("voltage.l3", "239.4", "V"),
                ],
                "sim_read_date_resp" => vec![q("meter.date", "2024-05-06 Mon", "")],
                "sim_read_time_resp" => vec![q("meter.time", "12:34:56", "")],
                other => panic!("response vector {other} not checked"),
            };
            assert_eq!(shown(&values), expected, "{name}");
            checked += 1;
        }
        assert_eq!(checked, 5);
        let date = decode_payload(di("04000101"), &[0x01, 0x06, 0x05, 0x24]);
        let Value::Time(t) = &date[0].value else {
            panic!()
        };
        assert_eq!(
            (t.year, t.month, t.day, t.weekday),
            (Some(2024), Some(5), Some(6), Some(1))
        );
    }

    #[test]
    fn energy_grid_2007() {
        let e = |s: &str| match lookup(di(s)) {
            Some(DiInfo::Item(spec)) => (
                spec.quantity.into_owned(),
                spec.unit,
                spec.obis.map(Cow::into_owned),
                spec.format,
            ),
            other => panic!("{s}: {other:?}"),
        };
        let signed = Format::bcd(8, 2, true);
        assert_eq!(
            e("00000000"),
            ("energy.active.combined.total".into(), "kWh", None, signed)
        );
        assert_eq!(
            e("00010000"),
            (
                "energy.active.import.total".into(),
                "kWh",
                Some("1-0:1.8.0".into()),
                Format::ENERGY
            )
        );
        assert_eq!(
            e("00010100"),
            (
                "energy.active.import.t1".into(),
                "kWh",
                Some("1-0:1.8.1".into()),
                Format::ENERGY
            )
        );
        assert_eq!(
            e("00010400"),
            (
                "energy.active.import.t4".into(),
                "kWh",
                Some("1-0:1.8.4".into()),
                Format::ENERGY
            )
        );
        assert_eq!(
            e("00013F00"),
            (
                "energy.active.import.t63".into(),
                "kWh",
                Some("1-0:1.8.63".into()),
                Format::ENERGY
            )
        );
        assert_eq!(
            e("00020000"),
            (
                "energy.active.export.total".into(),
                "kWh",
                Some("1-0:2.8.0".into()),
                Format::ENERGY
            )
        );
        assert_eq!(
            e("00030000"),
            (
                "energy.reactive.combined1.total".into(),
                "kvarh",
                None,
                signed
            )
        );
        assert_eq!(
            e("00040000"),
            (
                "energy.reactive.combined2.total".into(),
                "kvarh",
                None,
                signed
            )
        );
        assert_eq!(e("00050000").0, "energy.reactive.q1.total");
        assert_eq!(e("00060000").0, "energy.reactive.q2.total");
        assert_eq!(e("00070000").0, "energy.reactive.q3.total");
        assert_eq!(
            e("00080200"),
            (
                "energy.reactive.q4.t2".into(),
                "kvarh",
                Some("1-0:8.8.2".into()),
                Format::ENERGY
            )
        );
        assert_eq!(e("00090000").1, "kVAh");
        // Settlement snapshots: suffix, no OBIS.
        assert_eq!(
            e("00010001"),
            (
                "energy.active.import.total@settlement-1".into(),
                "kWh",
                None,
                Format::ENERGY
            )
        );
        assert_eq!(e("0001010C").0, "energy.active.import.t1@settlement-12");
        assert_eq!(e("0002000C").0, "energy.active.export.total@settlement-12");
        for bad in ["0001000D", "00014000", "000B0000", "0001FFFF", "00FF0000"] {
            assert_eq!(lookup(di(bad)), None, "{bad}");
        }
        // Combined active decodes negative values.
        let v = decode_payload(di("00000000"), &[0x76, 0x17, 0x03, 0x80]);
        assert_eq!(one(&v), q("energy.active.combined.total", "-317.76", "kWh"));
    }

    #[test]
    fn energy_blocks_take_their_tariff_count_from_the_length() {
        let Some(DiInfo::Block {
            items,
            tariffs_by_length: true,
        }) = lookup(di("0001FF00"))
        else {
            panic!()
        };
        let names: Vec<_> = items.iter().map(|s| s.quantity.as_ref()).collect();
        assert_eq!(
            names,
            [
                "energy.active.import.total",
                "energy.active.import.t1",
                "energy.active.import.t2",
                "energy.active.import.t3",
                "energy.active.import.t4"
            ]
        );
        assert_eq!(items[2].di, di("00010200"));
        let payload = [
            0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        ];
        let v = decode_payload(di("0001FF00"), &payload);
        assert_eq!(
            shown(&v),
            vec![
                q("energy.active.import.total", "10.00", "kWh"),
                q("energy.active.import.t1", "0.01", "kWh"),
                q("energy.active.import.t2", "0.02", "kWh"),
                q("energy.active.import.t3", "0.03", "kWh"),
                q("energy.active.import.t4", "0.04", "kWh"),
            ]
        );
        // Two tariffs only, eight tariffs, total alone.
        assert_eq!(decode_payload(di("0001FF00"), &payload[..12]).len(), 3);
        let eight = [0u8; 36];
        let v = decode_payload(di("0002FF01"), &eight);
        assert_eq!(v.len(), 9);
        assert_eq!(v[8].quantity, "energy.active.export.t8@settlement-1");
        assert_eq!(decode_payload(di("0001FF00"), &payload[..4]).len(), 1);
        // Lengths that do not fit a whole number of items.
        for len in [0, 3, 5, 19] {
            let v = decode_payload(di("0001FF00"), &payload[..len]);
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].quantity, "dlt645:0001FF00");
            assert!(matches!(
                v[0].value,
                Value::Invalid {
                    reason: REASON_BLOCK_LENGTH,
                    ..
                }
            ));
        }
        assert_eq!(
            one(&decode_payload(di("0001FF00"), &[0u8; 4 * 65])).0,
            "dlt645:0001FF00"
        );
        // A block over settlement periods (DI0 = FF): current + 12.
        let Some(DiInfo::Block {
            items,
            tariffs_by_length: false,
        }) = lookup(di("000100FF"))
        else {
            panic!()
        };
        assert_eq!(items.len(), 13);
        assert_eq!(items[0].quantity, "energy.active.import.total");
        assert_eq!(
            items[12].quantity,
            "energy.active.import.total@settlement-12"
        );
        assert_eq!(items[12].di, di("0001000C"));
    }

    #[test]
    fn max_demand() {
        let bytes = [0x56, 0x34, 0x12, 0x08, 0x07, 0x06, 0x05, 0x24];
        let v = decode_payload(di("01010000"), &bytes);
        assert_eq!(
            one(&v),
            q(
                "demand.active.import.total.max",
                "12.3456 @ 2024-05-06T07:08",
                "kW"
            )
        );
        assert_eq!(v[0].obis.as_deref(), Some("1-0:1.6.0"));
        let Value::Demand { value, time } = &v[0].value else {
            panic!()
        };
        assert_eq!(value.to_string(), "12.3456");
        assert_eq!(time.minute, Some(8));
        assert_eq!(
            one(&decode_payload(di("01020101"), &bytes)).0,
            "demand.active.export.t1.max@settlement-1"
        );
        assert_eq!(one(&decode_payload(di("01050000"), &bytes)).2, "kvar");
        assert_eq!(
            lookup(di("01000000")),
            None,
            "no combined active max demand"
        );
        let block = [bytes, bytes, bytes].concat();
        let v = decode_payload(di("0101FF00"), &block);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].quantity, "demand.active.import.t2.max");
        assert_eq!(
            one(&decode_payload(di("0101FF00"), &block[..20])).0,
            "dlt645:0101FF00"
        );
    }

    #[test]
    fn instantaneous_variables() {
        let item = |s: &str, bytes: &[u8]| one(&decode_payload(di(s), bytes));
        assert_eq!(
            item("02010100", &[0x94, 0x23]),
            q("voltage.l1", "239.4", "V")
        );
        assert_eq!(
            item("02020100", &[0x34, 0x12, 0x80]),
            q("current.l1", "-1.234", "A")
        );
        assert_eq!(
            item("02020300", &[0x00, 0x50, 0x00]),
            q("current.l3", "5.000", "A")
        );
        assert_eq!(
            item("02030000", &[0x00, 0x50, 0x81]),
            q("power.active.total", "-1.5000", "kW")
        );
        assert_eq!(
            item("02030200", &[0x00, 0x50, 0x01]),
            q("power.active.l2", "1.5000", "kW")
        );
        assert_eq!(
            item("02040000", &[0x00, 0x50, 0x01]),
            q("power.reactive.total", "1.5000", "kvar")
        );
        assert_eq!(
            item("02050000", &[0x00, 0x50, 0x01]),
            q("power.apparent.total", "1.5000", "kVA")
        );
        assert_eq!(
            item("02060000", &[0x50, 0x89]),
            q("power_factor.total", "-0.950", "")
        );
        assert_eq!(
            item("02060300", &[0x00, 0x10]),
            q("power_factor.l3", "1.000", "")
        );
        assert_eq!(
            item("02070100", &[0x00, 0x12]),
            q("phase_angle.l1", "120.0", "°")
        );
        assert_eq!(
            item("02800001", &[0x00, 0x01, 0x00]),
            q("current.neutral", "0.100", "A")
        );
        assert_eq!(
            item("02800002", &[0x03, 0x50]),
            q("frequency", "50.03", "Hz")
        );
        assert_eq!(
            item("02800007", &[0x55, 0x80]),
            q("meter.temperature", "-5.5", "°C")
        );
        assert_eq!(
            item("02800008", &[0x60, 0x03]),
            q("meter.clock_battery.voltage", "3.60", "V")
        );
        // Not supported by this meter: FF fill is an invalid value, not an error.
        let v = decode_payload(di("02010200"), &[0xFF, 0xFF]);
        assert!(matches!(
            v[0].value,
            Value::Invalid {
                reason: crate::dlt645::format::REASON_NO_DATA,
                ..
            }
        ));
        // Blocks.
        let v = decode_payload(
            di("0202FF00"),
            &[0x00, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x03, 0x80],
        );
        assert_eq!(
            shown(&v),
            vec![
                q("current.l1", "0.100", "A"),
                q("current.l2", "0.200", "A"),
                q("current.l3", "-0.300", "A")
            ]
        );
        let v = decode_payload(di("0203FF00"), &[0u8; 12]);
        let names: Vec<_> = v.iter().map(|x| x.quantity.as_ref()).collect();
        assert_eq!(
            names,
            [
                "power.active.total",
                "power.active.l1",
                "power.active.l2",
                "power.active.l3"
            ]
        );
        for (block, n) in [
            ("0204FF00", 4),
            ("0205FF00", 4),
            ("0206FF00", 4),
            ("0207FF00", 3),
        ] {
            let Some(DiInfo::Block { items, .. }) = lookup(di(block)) else {
                panic!("{block}")
            };
            assert_eq!(items.len(), n, "{block}");
        }
        assert_eq!(
            one(&decode_payload(di("0201FF00"), &[0x94, 0x23])).0,
            "dlt645:0201FF00"
        );
    }

    #[test]
    fn parameters() {
        let item = |s: &str, bytes: &[u8]| one(&decode_payload(di(s), bytes));
        assert_eq!(
            item("04000101", &[0x01, 0x06, 0x05, 0x24]),
            q("meter.date", "2024-05-06 Mon", "")
        );
        assert_eq!(
            item("04000102", &[0x56, 0x34, 0x12]),
            q("meter.time", "12:34:56", "")
        );
        assert_eq!(
            item("04000401", &[0x08, 0x02, 0x02, 0x41, 0x22, 0x00]),
            q("meter.address", "002241020208", "")
        );
        assert_eq!(
            item("04000402", &[0x29, 0x25, 0x07, 0x07, 0x21, 0x20]),
            q("meter.number", "202107072529", "")
        );
        let mut asset = [0u8; 32];
        asset[..4].copy_from_slice(b"1234");
        asset.reverse(); // "1234" padded with NUL, sent low byte first
        assert_eq!(item("04000403", &asset), q("meter.asset_code", "1234", ""));
        assert_eq!(
            item("04000503", &[0x10, 0x00]),
            q("meter.status_word3", "0x0010", "")
        );
        assert_eq!(
            item("04000B01", &[0x00, 0x01]),
            q("meter.settlement_day1", "---01T00", "")
        );
        assert_eq!(item("04000204", &[0x04]), q("meter.tariff_count", "4", ""));
        let words: Vec<u8> = (1..=14).collect();
        let v = decode_payload(di("040005FF"), &words);
        assert_eq!(v.len(), 7);
        assert_eq!(v[0].quantity, "meter.status_word1");
        assert_eq!(v[0].value, Value::Bits(0x0201));
        assert_eq!(v[6].quantity, "meter.status_word7");
        assert_eq!(v[6].value, Value::Bits(0x0E0D));
    }

    #[test]
    fn events() {
        let item = |s: &str, bytes: &[u8]| one(&decode_payload(di(s), bytes));
        assert_eq!(
            item("03300D00", &[0x12, 0x00, 0x00]),
            q("events.cover_open.count", "12", "")
        );
        assert_eq!(
            item("03110000", &[0x56, 0x34, 0x12]),
            q("events.power_down.count", "123456", "")
        );
        assert_eq!(
            item("03300E00", &[0x01, 0x00, 0x00]),
            q("events.terminal_cover_open.count", "1", "")
        );
    }

    #[test]
    fn hourly_freeze() {
        let v = decode_payload(di("05040001"), &[0x00, 0x13, 0x07, 0x12, 0x26]);
        assert_eq!(
            one(&v),
            q("freeze.hourly.time@hourly-1", "2026-12-07T13:00", "")
        );
        let v = decode_payload(di("050401FE"), &[0x67, 0x45, 0x23, 0x01]);
        assert_eq!(
            one(&v),
            q("energy.active.import.total@hourly-254", "12345.67", "kWh")
        );
        let v = decode_payload(di("05040203"), &[0x00, 0x01, 0x00, 0x00]);
        assert_eq!(one(&v).0, "energy.active.export.total@hourly-3");
        assert!(lookup(di("050400FF")).is_none());
        assert!(lookup(di("05040100")).is_none());
        assert!(lookup(di("05040301")).is_none());
        assert_eq!(
            di_for_quantity(Version::V2007, "energy.active.import.total@hourly-2"),
            Some(di("05040102"))
        );
        assert_eq!(
            di_for_quantity(Version::V2007, "freeze.hourly.time@hourly-254"),
            Some(di("050400FE"))
        );
        assert_eq!(
            di_for_quantity(Version::V2007, "energy.active.import.t1@hourly-2"),
            None
        );
        assert_eq!(
            di_for_quantity(Version::V2007, "energy.active.import.total@hourly-255"),
            None
        );
        assert_eq!(
            di_for_quantity(Version::V1997, "energy.active.import.total@hourly-1"),
            None
        );
    }

    #[test]
    fn daily_freeze() {
        let v = decode_payload(di("05060001"), &[0x00, 0x00, 0x27, 0x11, 0x26]);
        assert_eq!(
            one(&v),
            q("freeze.daily.time@daily-1", "2026-11-27T00:00", "")
        );
        let payload = [
            0x00, 0x10, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
        ];
        let v = decode_payload(di("05060101"), &payload);
        assert_eq!(
            shown(&v),
            vec![
                q("energy.active.import.total@daily-1", "10.00", "kWh"),
                q("energy.active.import.t1@daily-1", "6.00", "kWh"),
                q("energy.active.import.t2@daily-1", "4.00", "kWh"),
            ]
        );
        assert!(v.iter().all(|x| x.obis.is_none()));
        let v = decode_payload(di("05060202"), &payload[..4]);
        assert_eq!(one(&v).0, "energy.active.export.total@daily-2");
        let Some(DiInfo::Block {
            items,
            tariffs_by_length: true,
        }) = lookup(di("05060101"))
        else {
            panic!()
        };
        assert!(items.iter().all(|s| s.di == di("05060101")));
        let demand = [0x56, 0x34, 0x12, 0x08, 0x07, 0x06, 0x05, 0x24];
        assert_eq!(
            one(&decode_payload(di("05060901"), &demand)).0,
            "demand.active.import.total.max@daily-1"
        );
        assert_eq!(lookup(di("05060000")), None);
        assert_eq!(lookup(di("0506003F")), None);
        assert!(lookup(di("0506003E")).is_some());
    }

    #[test]
    fn dlt645_1997() {
        let item = |s: &str, bytes: &[u8]| one(&decode_payload(di(s), bytes));
        assert_eq!(
            item("9010", &[0x01, 0, 0, 0]),
            q("energy.active.import.total", "0.01", "kWh")
        );
        assert_eq!(
            item("9012", &[0x01, 0, 0, 0]),
            q("energy.active.import.t2", "0.01", "kWh")
        );
        assert_eq!(
            item("9020", &[0x01, 0, 0, 0]),
            q("energy.active.export.total", "0.01", "kWh")
        );
        assert_eq!(
            item("9110", &[0x01, 0, 0, 0]),
            q("energy.reactive.import.total", "0.01", "kvarh")
        );
        assert_eq!(
            item("9120", &[0x01, 0, 0, 0]),
            q("energy.reactive.export.total", "0.01", "kvarh")
        );
        assert_eq!(
            item("9410", &[0x01, 0, 0, 0]),
            q("energy.active.import.total@settlement-1", "0.01", "kWh")
        );
        assert_eq!(item("B611", &[0x20, 0x02]), q("voltage.l1", "220", "V"));
        assert_eq!(item("B623", &[0x50, 0x12]), q("current.l3", "12.50", "A"));
        assert_eq!(
            item("B630", &[0x00, 0x50, 0x01]),
            q("power.active.total", "1.5000", "kW")
        );
        assert_eq!(
            item("B640", &[0x50, 0x01]),
            q("power.reactive.total", "1.50", "kvar")
        );
        assert_eq!(
            item("B650", &[0x50, 0x09]),
            q("power_factor.total", "0.950", "")
        );
        assert_eq!(
            item("C010", &[0x01, 0x06, 0x05, 0x24]),
            q("meter.date", "2024-05-06 Mon", "")
        );
        assert_eq!(
            item("C011", &[0x56, 0x34, 0x12]),
            q("meter.time", "12:34:56", "")
        );
        let v = decode_payload(di("901F"), &[0u8; 20]);
        let names: Vec<_> = v.iter().map(|x| x.quantity.as_ref()).collect();
        assert_eq!(
            names,
            [
                "energy.active.import.total",
                "energy.active.import.t1",
                "energy.active.import.t2",
                "energy.active.import.t3",
                "energy.active.import.t4"
            ]
        );
        let Some(DiInfo::Block { items, .. }) = lookup(di("901F")) else {
            panic!()
        };
        assert_eq!(items[1].di, di("9011"));
        let v = decode_payload(di("B61F"), &[0x20, 0x02, 0x21, 0x02, 0x19, 0x02]);
        assert_eq!(
            shown(&v),
            vec![
                q("voltage.l1", "220", "V"),
                q("voltage.l2", "221", "V"),
                q("voltage.l3", "219", "V")
            ]
        );
        assert_eq!(decode_payload(di("B63F"), &[0u8; 12]).len(), 4);
        assert!(lookup(di("901F")).is_some());
        assert_eq!(lookup(di("9030")), None);
        assert_eq!(lookup(di("00010000")).map(|_| ()), Some(()));
    }

    #[test]
    fn unknown_identifiers_are_passed_on_raw() {
        let v = decode_payload(di("028022FF"), &[1, 2, 3]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].quantity, "dlt645:028022FF");
        assert_eq!(v[0].value, Value::Raw(vec![1, 2, 3]));
        let v = decode_payload(di("C032"), &[]);
        assert_eq!(v[0].quantity, "dlt645:C032");
        assert_eq!(v[0].value, Value::Raw(vec![]));
        assert_eq!(lookup(di("028022FF")), None);
        // A single item of the wrong length is that item, flagged.
        let v = decode_payload(di("00010000"), &[1, 2, 3]);
        assert_eq!(v[0].quantity, "energy.active.import.total");
        assert!(matches!(
            v[0].value,
            Value::Invalid {
                reason: crate::dlt645::format::REASON_LENGTH,
                ..
            }
        ));
    }

    #[test]
    fn reverse_lookup() {
        let f = |v, s| di_for_quantity(v, s).map(|d| d.to_string());
        use Version::{V1997, V2007};
        assert_eq!(
            f(V2007, "energy.active.import.total").as_deref(),
            Some("00010000")
        );
        assert_eq!(
            f(V2007, "energy.active.import.t4").as_deref(),
            Some("00010400")
        );
        assert_eq!(
            f(V2007, "energy.active.import.t63").as_deref(),
            Some("00013F00")
        );
        assert_eq!(
            f(V2007, "energy.active.combined.total").as_deref(),
            Some("00000000")
        );
        assert_eq!(
            f(V2007, "energy.reactive.q4.total@settlement-12").as_deref(),
            Some("0008000C")
        );
        assert_eq!(
            f(V2007, "demand.active.import.total.max").as_deref(),
            Some("01010000")
        );
        assert_eq!(f(V2007, "voltage.l3").as_deref(), Some("02010300"));
        assert_eq!(f(V2007, "frequency").as_deref(), Some("02800002"));
        assert_eq!(f(V2007, "meter.number").as_deref(), Some("04000402"));
        assert_eq!(
            f(V2007, "freeze.daily.time@daily-1").as_deref(),
            Some("05060001")
        );
        assert_eq!(
            f(V2007, "energy.active.import.total@daily-3").as_deref(),
            Some("05060103")
        );
        assert_eq!(
            f(V2007, "demand.active.export.t1.max@daily-1").as_deref(),
            Some("05060A01")
        );
        assert_eq!(
            f(V1997, "energy.active.import.total").as_deref(),
            Some("9010")
        );
        assert_eq!(f(V1997, "energy.active.import.t3").as_deref(), Some("9013"));
        assert_eq!(
            f(V1997, "energy.active.import.total@settlement-1").as_deref(),
            Some("9410")
        );
        assert_eq!(f(V1997, "voltage.l2").as_deref(), Some("B612"));
        assert_eq!(f(V1997, "meter.time").as_deref(), Some("C011"));
        for bad in [
            "energy.active.import.t64",
            "energy.active.import.t0",
            "energy.active.import.t01",
            "energy.active.import.total@settlement-13",
            "energy.active.import.total@settlement-0",
            "energy.active.import.total@hourly-255",
            "energy.active.import.t1@hourly-1",
            "energy.active.combined.total@daily-1",
            "demand.active.combined.total.max",
            "voltage.l1@settlement-1",
            "nonsense",
            "",
        ] {
            assert_eq!(f(V2007, bad), None, "{bad}");
        }
        assert_eq!(f(V1997, "energy.active.import.t15"), None);
        assert_eq!(f(V1997, "meter.number"), None);
        assert_eq!(f(V1997, "energy.reactive.q1.total"), None);
    }

    /// Every single item the catalogue holds reads back through `di_for_quantity`, and every
    /// name it hands out decodes under that name.
    #[test]
    fn obis_by_name() {
        assert_eq!(
            obis_for_quantity("power.apparent.total").as_deref(),
            Some("1-0:9.7.0")
        );
        assert_eq!(
            obis_for_quantity("power.reactive.total").as_deref(),
            Some("1-0:3.7.0")
        );
        assert_eq!(
            obis_for_quantity("energy.reactive.import.total").as_deref(),
            Some("1-0:3.8.0")
        );
        assert_eq!(
            obis_for_quantity("energy.active.import.t2").as_deref(),
            Some("1-0:1.8.2")
        );
        assert_eq!(obis_for_quantity("energy.active.combined.total"), None);
        assert_eq!(
            obis_for_quantity("energy.active.import.total@daily-1"),
            None
        );
        assert_eq!(obis_for_quantity("nonsense"), None);
    }

    #[test]
    fn forward_and_reverse_agree() {
        let mut dis: Vec<DataIdentifier> = FIXED.iter().map(|f| f.di).collect();
        for d3 in [0x00u32, 0x01] {
            for d2 in 0..=0x0Au32 {
                for d1 in [0u32, 1, 4, 63] {
                    for d0 in [0u32, 1, 12] {
                        dis.push(DataIdentifier::V2007(d3 << 24 | d2 << 16 | d1 << 8 | d0));
                    }
                }
            }
        }
        for v in [0x9010u16, 0x9014, 0x9020, 0x9110, 0x9120, 0x9410, 0x9424] {
            dis.push(DataIdentifier::V1997(v));
        }
        let mut checked = 0;
        for d in dis {
            let Some(DiInfo::Item(spec)) = lookup(d) else {
                continue;
            };
            assert_eq!(spec.di, d);
            assert_eq!(
                crate::quantity::canonical_unit(&spec.quantity),
                Some(spec.unit),
                "{d} {}: unit",
                spec.quantity
            );
            assert_ne!(
                spec.obis.is_some(),
                crate::quantity::no_obis_reason(&spec.quantity).is_some(),
                "{d} {}: an OBIS code, or a reason in quantity::NO_OBIS",
                spec.quantity
            );
            assert_eq!(
                di_for_quantity(d.version(), &spec.quantity),
                Some(d),
                "{d} {}",
                spec.quantity
            );
            checked += 1;
        }
        assert!(checked > 200, "{checked}");
    }

    /// The table in `docs/quantities.md`, one row per quantity.
    const QUANTITIES_DOC: &str = include_str!("../../../docs/quantities.md");

    /// Rows of the doc table: quantity, unit, OBIS, 2007 DI, 2007 format, 1997 DI, 1997 format.
    fn doc_rows() -> Vec<[&'static str; 7]> {
        let none = |c: &'static str| if c == "—" { "" } else { c.trim_matches('`') };
        QUANTITIES_DOC
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter(|l| l.split('|').count() == 9)
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                [1, 2, 3, 4, 5, 6, 7].map(|i| none(cells[i]))
            })
            .collect()
    }

    #[test]
    fn quantities_doc_matches_the_catalogue() {
        let rows = doc_rows();
        assert!(rows.len() >= 80, "{} rows", rows.len());
        for [quantity, unit, obis, di07, f07, di97, f97] in &rows {
            let mut seen = false;
            for (version, d, f) in [(Version::V2007, di07, f07), (Version::V1997, di97, f97)] {
                if d.is_empty() {
                    assert_eq!(
                        di_for_quantity(version, quantity),
                        None,
                        "{quantity} in {}",
                        version.name()
                    );
                    continue;
                }
                seen = true;
                let id = di(d);
                assert_eq!(id.version(), version, "{quantity}");
                assert_eq!(di_for_quantity(version, quantity), Some(id), "{quantity}");
                let items = match lookup(id) {
                    Some(DiInfo::Item(spec)) => vec![spec],
                    Some(DiInfo::Block { items, .. }) => items,
                    None => panic!("{quantity}: {d} not in the catalogue"),
                };
                let spec = items
                    .iter()
                    .find(|s| s.quantity == *quantity)
                    .unwrap_or_else(|| panic!("{quantity}: not read by {d}"));
                assert_eq!(spec.unit, *unit, "{quantity} unit");
                assert_eq!(
                    crate::quantity::canonical_unit(quantity),
                    Some(spec.unit),
                    "{quantity}: the catalogue's unit is not the published one (quantity::UNITS)"
                );
                assert_ne!(
                    spec.obis.is_some(),
                    crate::quantity::no_obis_reason(quantity).is_some(),
                    "{quantity}: an OBIS code, or a reason in quantity::NO_OBIS, not both"
                );
                assert_eq!(spec.obis.as_deref().unwrap_or(""), *obis, "{quantity} OBIS");
                assert_eq!(spec.format.to_string(), *f, "{quantity} format ({d})");
            }
            assert!(seen, "{quantity} has no DI");
        }
        // Every fixed item of the catalogue is in the doc.
        for f in FIXED {
            let found = rows.iter().any(|r| {
                r[0] == f.quantity
                    && f.di.to_string()
                        == if f.di.version() == Version::V2007 {
                            r[3]
                        } else {
                            r[5]
                        }
            });
            assert!(
                found,
                "{} ({}) missing from docs/quantities.md",
                f.quantity, f.di
            );
        }
    }

    proptest! {
        #[test]
        fn decode_payload_never_panics(
            v07 in any::<u32>(),
            v97 in any::<u16>(),
            family in 0usize..8,
            payload in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            // Mix arbitrary DIs with ones inside catalogued families.
            let ids = [
                DataIdentifier::V2007(v07),
                DataIdentifier::V1997(v97),
                DataIdentifier::V2007(v07 & 0x01FF_FFFF),
                DataIdentifier::V2007(0x0506_0000 | (v07 & 0xFFFF)),
                DataIdentifier::V2007(0x0200_0000 | (v07 & 0x00FF_FFFF)),
                DataIdentifier::V2007(0x0400_0000 | (v07 & 0x0000_FFFF)),
                DataIdentifier::V1997(0x9000 | (v97 & 0x0FFF)),
                DataIdentifier::V1997(0xB600 | (v97 & 0x00FF)),
            ];
            let id = ids[family];
            let values = decode_payload(id, &payload);
            prop_assert!(!values.is_empty());
            for v in &values {
                let _ = v.value.to_string();
            }
            if let Some(info) = lookup(id) {
                let items = match info { DiInfo::Item(s) => vec![s], DiInfo::Block { items, .. } => items };
                prop_assert!(!items.is_empty());
            }
        }
    }
}
