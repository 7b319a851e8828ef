//! Modbus reads: a meter's points, their coalesced read plan, and their values.

use std::collections::HashMap;

use meter_protocols::Decimal;
use meter_protocols::dlt645::catalog;
use meter_protocols::modbus::plan::{PlanOptions, PlannedRead, PointRange, PollPlan, plan};
use meter_protocols::modbus::rtu::{self, ReadFunction};
use meter_protocols::modbus::values::{
    ModbusValue, RegisterOrder, Scale, ValueError, ValueType, read_value,
};
use meter_protocols::quantity;

use super::contract::Framing;
use super::{Step, Transaction, TxKind, bad_value};
use crate::config::profile::{RegisterFunction, RegisterType};
use crate::config::{MeterConfig, Profile};
use crate::reading::{ExactNumber, Label, Quality, ReadingValue, ValueData};

/// The reason of a float register's value that is NaN, an infinity or beyond what a reading
/// can hold: the words made no number at all.
pub const NOT_FINITE: &str = "value is not a finite number";

/// One Modbus point of a meter, resolved from its profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    /// Canonical quantity name.
    pub quantity: Label,
    /// Unit.
    pub unit: Label,
    /// OBIS code.
    pub obis: Option<Label>,
    /// Read function.
    pub function: ReadFunction,
    /// First register or bit (PDU address).
    pub register: u16,
    /// How the registers decode.
    pub value_type: ValueType,
    /// Register/byte order.
    pub order: RegisterOrder,
    /// Scale (an exponent register makes it [`Scale::ExponentRegister`]).
    pub scale: Scale,
    /// Register holding a power-of-ten exponent, read with the same function.
    pub exponent_register: Option<u16>,
    /// `modbus:fc04:0x0048:f32:abcd`.
    pub source: Label,
    /// Power of ten from the meter's unit (the profile's) to the published one (`unit`,
    /// docs/quantities.md): -3 for an SDM630's W published as kW.
    pub unit_shift: i8,
}

impl ModbusPoint {
    fn registers(&self) -> u16 {
        u16::try_from(self.value_type.registers()).unwrap_or(1)
    }
}

/// The points of a Modbus profile and the plan that reads them (exponent registers included).
pub(super) fn plan_points(
    meter: &MeterConfig,
    profile: &Profile,
) -> Result<(Vec<ModbusPoint>, PollPlan), String> {
    let mut points = Vec::new();
    for (i, p) in profile.points.iter().enumerate() {
        let p = p.get_ref();
        let (Some(function), Some(register), Some(ty)) = (p.function, p.register, p.value_type)
        else {
            return Err(format!(
                "profile {:?} point {i}: needs function, register and type",
                profile.name
            ));
        };
        let bits_function = matches!(
            function,
            RegisterFunction::Coil | RegisterFunction::Discrete
        );
        let function = function.read_function();
        // Coils and discrete inputs arrive unpacked, one bit per value.
        let value_type = if bits_function {
            ValueType::U16
        } else {
            ty.value_type(p.bit)
        };
        let (order, order_name) = (p.order.register_order(), p.order.name());
        let factor: Option<Decimal> = match &p.scale {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| format!("point {i}: bad scale {s:?}"))?,
            ),
            None => None,
        };
        let scale = match (factor, p.exponent_register) {
            (None, None) => Scale::None,
            (Some(f), None) => Scale::Factor(f),
            (f, Some(_)) => {
                // value × factor × 10^e: the factor must itself be a power of ten.
                let bias = match f {
                    None => 0,
                    Some(f) => pow10_of(f).ok_or_else(|| {
                        format!(
                            "point {i}: with exponent_register, scale must be a power of ten (\"0.001\", \"1\", \"10\")"
                        )
                    })?,
                };
                Scale::ExponentRegister { bias }
            }
        };
        let bit_suffix = match (ty, p.bit) {
            (RegisterType::Bit, Some(b)) if !function.is_bits() => format!(":{b}"),
            _ => String::new(),
        };
        let source = if function.is_bits() {
            format!("modbus:fc{:02}:{register:#06x}:bit", function.code())
        } else {
            format!(
                "modbus:fc{:02}:{register:#06x}:{}{bit_suffix}:{order_name}",
                function.code(),
                ty.name()
            )
        };
        let quantity = p.quantity.as_deref().unwrap_or(&source);
        // The published unit (docs/quantities.md) and the shift from the meter's; a name
        // outside every family keeps its profile's unit.
        let (unit, unit_shift) = match quantity::published_unit(quantity, p.unit.as_deref())
            .map_err(|e| format!("point {i}: {e}"))?
        {
            Some((unit, shift)) => (Label::from(unit), shift),
            None => (Label::from(p.unit.as_deref().unwrap_or_default()), 0),
        };
        // The catalogue's code when the profile names none: one quantity, one OBIS code.
        let obis = match &p.obis {
            Some(o) => Some(Label::from(o.as_str())),
            None => catalog::obis_for_quantity(quantity).map(|o| Label::from(o.as_ref())),
        };
        points.push(ModbusPoint {
            quantity: quantity.into(),
            unit,
            obis,
            function,
            register,
            value_type,
            order,
            scale,
            exponent_register: p.exponent_register,
            source: source.into(),
            unit_shift,
        });
    }
    let mut ranges: Vec<PointRange> = points
        .iter()
        .map(|p| PointRange {
            function: p.function,
            address: p.register,
            count: p.registers(),
        })
        .collect();
    for p in &points {
        if let Some(reg) = p.exponent_register {
            ranges.push(PointRange {
                function: p.function,
                address: reg,
                count: 1,
            });
        }
    }
    let options = PlanOptions {
        max_registers_per_request: meter
            .max_registers
            .or(profile.max_registers)
            .unwrap_or(rtu::MAX_READ_REGISTERS),
        max_gap_fill: meter.gap_fill.or(profile.gap_fill).unwrap_or(0),
        ..PlanOptions::default()
    };
    let plan = plan(&ranges, &options).map_err(|e| format!("cannot plan the reads: {e}"))?;
    Ok((points, plan))
}

/// The power of ten a decimal is (`0.001` → -3, `10` → 1), if it is one.
fn pow10_of(d: Decimal) -> Option<i8> {
    let mut m = d.mantissa();
    if m <= 0 {
        return None;
    }
    let mut p: i32 = 0;
    while m % 10 == 0 {
        m /= 10;
        p += 1;
    }
    if m != 1 {
        return None;
    }
    i8::try_from(p - i32::from(d.scale())).ok()
}

pub(super) fn transaction(unit: u8, read: &PlannedRead, index: usize) -> Transaction {
    let request = read.request();
    let mut bytes = Vec::with_capacity(8);
    // A planned read is within the standard's limits, so encoding cannot fail; if it ever
    // did, the empty request draws no reply and the values say so.
    let _ = rtu::encode_request(unit, &request, &mut bytes);
    Transaction {
        step: Step {
            bytes,
            framing: Framing::ModbusRtu(request.expectation(unit)),
            modbus: Some((unit, request)),
            what: format!(
                "FC{:02} {:#06X}+{}",
                read.function.code(),
                read.address,
                read.count
            ),
        },
        kind: TxKind::Modbus { read: index },
    }
}

/// The value of `point` from the registers read, or bad with the read's failure.
pub(super) fn value(
    point: &ModbusPoint,
    registers: &HashMap<(u8, u16), u16>,
    failure: Option<String>,
) -> ReadingValue {
    let bad = |reason: &str| {
        bad_value(
            point.quantity.clone(),
            point.unit.clone(),
            point.obis.clone(),
            point.source.clone(),
            reason,
        )
    };
    if let Some(reason) = failure {
        return bad(&reason);
    }
    let code = point.function.code();
    let mut regs = Vec::with_capacity(4);
    for i in 0..point.registers() {
        match registers.get(&(code, point.register.wrapping_add(i))) {
            Some(r) => regs.push(*r),
            None => return bad("register not read"),
        }
    }
    let exponent = match point.exponent_register {
        None => None,
        Some(reg) => match registers.get(&(code, reg)) {
            // The exponent is a signed 16-bit register.
            Some(r) => Some(i16::from_ne_bytes(r.to_ne_bytes())),
            None => return bad("exponent register not read"),
        },
    };
    match read_value(&regs, point.value_type, point.order, point.scale, exponent) {
        Ok(v) => {
            // In the published unit: the point moves in the decimal text, exactly; a float's
            // shortest digits stay the shortest (trailing zeros trimmed).
            let shift = point.unit_shift;
            let number = match v {
                ModbusValue::Exact(d) => ExactNumber::from_decimal(d).shifted(shift, false),
                ModbusValue::Float32(f) => {
                    ExactNumber::from_f32(f).and_then(|n| n.shifted(shift, true))
                }
                ModbusValue::Float64(f) => {
                    ExactNumber::from_f64(f).and_then(|n| n.shifted(shift, true))
                }
            };
            match number {
                Some(n) => ReadingValue {
                    quantity: point.quantity.clone(),
                    value: Some(ValueData::Number(n)),
                    unit: point.unit.clone(),
                    obis: point.obis.clone(),
                    source: point.source.clone(),
                    quality: Quality::Good,
                    reason: None,
                    meter_time: None,
                },
                None => bad(NOT_FINITE),
            }
        }
        // One reason for a float that is no number, however it was found: commissioning
        // reads it as a sign of words the wrong way round.
        Err(ValueError::NotFinite) => bad(NOT_FINITE),
        Err(e) => bad(&format!("cannot decode: {e}")),
    }
}
