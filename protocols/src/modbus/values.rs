//! Register values: from 16-bit Modbus registers to exact numbers, and back.
//!
//! This module owns the interpretation of register contents: the value type (integers of
//! 16/32/64 bits, IEEE-754 floats, bit fields), the register/byte order a meter uses, and the
//! scale that turns a raw count into a reading. Integers scaled by a decimal factor stay exact
//! ([`Decimal`]); floats are shown as the float says, in shortest round-trip form at their own
//! precision. It never allocates per value, never reads a register map and never does I/O.
//!
//! Byte order names follow the usual convention for a 32-bit value whose most significant
//! byte is `A`: registers arrive big-endian on the wire, so `ABCD` is "first register high".

use std::fmt;

use crate::decimal::{Decimal, MAX_SCALE};

/// How the registers of one point are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE-754 binary32, two registers.
    F32,
    /// IEEE-754 binary64, four registers.
    F64,
    /// An unsigned bit field of `width` bits starting at bit `bit` (0 = least significant)
    /// of one register; `bit + width` must not exceed 16 and `width` must be at least 1.
    Bits {
        /// Lowest bit of the field.
        bit: u8,
        /// Number of bits.
        width: u8,
    },
}

impl ValueType {
    /// How many registers a value of this type occupies.
    pub const fn registers(self) -> usize {
        match self {
            Self::U16 | Self::I16 | Self::Bits { .. } => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }
}

/// The order of bytes and registers of a multi-register value (`A` = most significant byte).
///
/// For one-register types only the byte order within the word applies: `ABCD`/`CDAB` read
/// `AB`, `BADC`/`DCBA` read `BA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RegisterOrder {
    /// Big-endian: first register most significant, high byte first (the Modbus default).
    #[default]
    ABCD,
    /// Word swap: last register most significant, high byte first.
    CDAB,
    /// Byte swap: first register most significant, low byte first.
    BADC,
    /// Little-endian: last register most significant, low byte first.
    DCBA,
}

impl RegisterOrder {
    const fn word_swap(self) -> bool {
        matches!(self, Self::CDAB | Self::DCBA)
    }

    const fn byte_swap(self) -> bool {
        matches!(self, Self::BADC | Self::DCBA)
    }
}

/// A decoded register value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    /// From U16, U32, U64 and bit fields.
    Unsigned(u64),
    /// From I16, I32, I64.
    Signed(i64),
    /// From F32 (any bit pattern, NaN included).
    Float32(f32),
    /// From F64 (any bit pattern, NaN included).
    Float64(f64),
}

/// Why registers cannot be decoded, encoded or scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Fewer registers than the type needs.
    #[error("expected {expected} registers for the value type, found {found}")]
    TooFewRegisters {
        /// Registers the type needs.
        expected: usize,
        /// Registers given.
        found: usize,
    },
    /// A bit field outside the 16 bits of a register.
    #[error("bit field at bit {bit} of width {width} does not fit in 16 bits")]
    BadBitField {
        /// Lowest bit.
        bit: u8,
        /// Width.
        width: u8,
    },
    /// A float register holds NaN or an infinity: no reading.
    #[error("the register holds NaN or an infinity")]
    NotFinite,
    /// The scaled value does not fit an exact decimal (i64 mantissa, ≤ 18 places).
    #[error("the scaled value does not fit an exact decimal")]
    Overflow,
    /// [`Scale::ExponentRegister`] used without the exponent register's value.
    #[error("the scale needs the exponent register's value, none was given")]
    MissingExponent,
    /// The value does not fit the type it is to be encoded as.
    #[error("the value does not fit the value type")]
    OutOfRange,
}

/// Reads the `n` registers of a value in `order` into one big-endian integer.
#[inline]
fn gather(regs: &[u16], n: usize, order: RegisterOrder) -> Result<u64, ValueError> {
    let words = regs.get(..n).ok_or(ValueError::TooFewRegisters {
        expected: n,
        found: regs.len(),
    })?;
    let swap_bytes = order.byte_swap();
    let fold = |acc: u64, &w: &u16| {
        let w = if swap_bytes { w.swap_bytes() } else { w };
        (acc << 16) | u64::from(w)
    };
    Ok(if order.word_swap() {
        words.iter().rev().fold(0, fold)
    } else {
        words.iter().fold(0, fold)
    })
}

/// Writes the `n`-register big-endian integer `v` as registers in `order`.
fn scatter(v: u64, n: usize, order: RegisterOrder) -> Vec<u16> {
    let mut words: Vec<u16> = (0..n)
        .rev()
        .map(|i| {
            let w = (v >> (16 * i)) as u16;
            if order.byte_swap() { w.swap_bytes() } else { w }
        })
        .collect();
    if order.word_swap() {
        words.reverse();
    }
    words
}

const fn bit_mask(width: u8) -> u64 {
    (1u64 << width) - 1
}

fn check_bits(bit: u8, width: u8) -> Result<(), ValueError> {
    if width == 0 || u16::from(bit) + u16::from(width) > 16 {
        Err(ValueError::BadBitField { bit, width })
    } else {
        Ok(())
    }
}

/// Decodes the first registers of `regs` as `ty` in `order` (extra registers are ignored).
///
/// Never allocates; NaN and infinities are returned as they are (scaling rejects them).
#[inline]
pub fn decode(regs: &[u16], ty: ValueType, order: RegisterOrder) -> Result<RawValue, ValueError> {
    let raw = gather(regs, ty.registers(), order)?;
    Ok(match ty {
        ValueType::U16 | ValueType::U32 | ValueType::U64 => RawValue::Unsigned(raw),
        ValueType::I16 => RawValue::Signed(i64::from(raw as u16 as i16)),
        ValueType::I32 => RawValue::Signed(i64::from(raw as u32 as i32)),
        ValueType::I64 => RawValue::Signed(raw as i64),
        ValueType::F32 => RawValue::Float32(f32::from_bits(raw as u32)),
        ValueType::F64 => RawValue::Float64(f64::from_bits(raw)),
        ValueType::Bits { bit, width } => {
            check_bits(bit, width)?;
            RawValue::Unsigned((raw >> bit) & bit_mask(width))
        }
    })
}

/// Encodes `value` as the registers of `ty` in `order` (for the simulator and tests).
///
/// Integers must fit the type; floats must be of the type's width (a `Float32` for F32).
/// A bit field is placed at its bits with every other bit zero.
pub fn encode(
    value: RawValue,
    ty: ValueType,
    order: RegisterOrder,
) -> Result<Vec<u16>, ValueError> {
    let n = ty.registers();
    let bits: u64 = match (ty, value) {
        (ValueType::U16, RawValue::Unsigned(v)) => u16::try_from(v).map(u64::from).ok(),
        (ValueType::U32, RawValue::Unsigned(v)) => u32::try_from(v).map(u64::from).ok(),
        (ValueType::U64, RawValue::Unsigned(v)) => Some(v),
        (ValueType::I16, RawValue::Signed(v)) => i16::try_from(v).ok().map(|v| u64::from(v as u16)),
        (ValueType::I32, RawValue::Signed(v)) => i32::try_from(v).ok().map(|v| u64::from(v as u32)),
        (ValueType::I64, RawValue::Signed(v)) => Some(v as u64),
        (ValueType::F32, RawValue::Float32(v)) => Some(u64::from(v.to_bits())),
        (ValueType::F64, RawValue::Float64(v)) => Some(v.to_bits()),
        (ValueType::Bits { bit, width }, RawValue::Unsigned(v)) => {
            check_bits(bit, width)?;
            (v <= bit_mask(width)).then_some(v << bit)
        }
        _ => None,
    }
    .ok_or(ValueError::OutOfRange)?;
    Ok(scatter(bits, n, order))
}

/// How a raw value becomes a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scale {
    /// As read.
    #[default]
    None,
    /// Multiplied by an exact decimal factor (0.01, 10, 0.001…).
    Factor(Decimal),
    /// Multiplied by `10^p`.
    Pow10(i8),
    /// Multiplied by `10^(e + bias)`, where `e` is the (signed) value of another register
    /// that the caller reads and passes to [`Scale::resolve`] or [`scale`]. Acrel meters,
    /// for example, give "value × 10^(exponent − 3)": `bias = -3`.
    ExponentRegister {
        /// Added to the register's exponent.
        bias: i8,
    },
}

impl Scale {
    /// Turns [`Scale::ExponentRegister`] into [`Scale::Pow10`] with the exponent register's
    /// value; other scales are returned unchanged.
    pub fn resolve(self, exponent: Option<i16>) -> Result<Self, ValueError> {
        match self {
            Self::ExponentRegister { bias } => {
                let e = exponent.ok_or(ValueError::MissingExponent)?;
                let p = i8::try_from(i32::from(e) + i32::from(bias))
                    .map_err(|_| ValueError::Overflow)?;
                Ok(Self::Pow10(p))
            }
            other => Ok(other),
        }
    }
}

/// A reading: an exact decimal, or a float as the meter sent it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModbusValue {
    /// An integer register, possibly scaled by a decimal factor; exact.
    Exact(Decimal),
    /// A float32 (unscaled, or scaled and rounded back to float32 precision).
    Float32(f32),
    /// A float64.
    Float64(f64),
}

impl ModbusValue {
    /// The nearest `f64`, for plausibility checks; never for publishing.
    pub fn to_f64(self) -> f64 {
        match self {
            Self::Exact(d) => d.to_f64(),
            Self::Float32(v) => f64::from(v),
            Self::Float64(v) => v,
        }
    }
}

impl fmt::Display for ModbusValue {
    /// Exact decimals print their digits; floats print Rust's shortest round-trip form at
    /// their own precision (`229.8f32` prints `229.8`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(d) => fmt::Display::fmt(d, f),
            Self::Float32(v) => fmt::Display::fmt(v, f),
            Self::Float64(v) => fmt::Display::fmt(v, f),
        }
    }
}

/// `10^p` as i128, `None` when too large.
fn pow10_i128(p: u32) -> Option<i128> {
    10i128.checked_pow(p)
}

fn exact(mantissa: i128, scale: u8) -> Result<ModbusValue, ValueError> {
    let m = i64::try_from(mantissa).map_err(|_| ValueError::Overflow)?;
    Decimal::new(m, scale)
        .map(ModbusValue::Exact)
        .ok_or(ValueError::Overflow)
}

/// A float factor as `(multiplier, divisor)`: multiplying then dividing by a power of ten
/// keeps 2302 × 0.1 at 230.2 where 2302 × 0.1f64 gives 230.20000000000002.
fn float_factor(scale: Scale) -> (f64, f64) {
    match scale {
        Scale::Factor(d) => (d.mantissa() as f64, 10f64.powi(i32::from(d.scale()))),
        Scale::Pow10(p) if p >= 0 => (10f64.powi(i32::from(p)), 1.0),
        Scale::Pow10(p) => (1.0, 10f64.powi(-i32::from(p))),
        Scale::None | Scale::ExponentRegister { .. } => (1.0, 1.0),
    }
}

/// Applies `scale` (resolving an exponent register with `exponent`) to a raw value.
///
/// Integers stay exact: `1234 × 0.01` is the decimal `12.34`, `5 × 10` is `50`. Floats are
/// multiplied in f64; a float32 result is rounded back to float32 so that it prints at the
/// precision the meter sent. NaN and infinities give [`ValueError::NotFinite`].
#[inline]
pub fn scale(
    raw: RawValue,
    scale: Scale,
    exponent: Option<i16>,
) -> Result<ModbusValue, ValueError> {
    let scale = scale.resolve(exponent)?;
    match raw {
        RawValue::Unsigned(v) => scale_int(i128::from(v), scale),
        RawValue::Signed(v) => scale_int(i128::from(v), scale),
        RawValue::Float32(v) => {
            if !v.is_finite() {
                return Err(ValueError::NotFinite);
            }
            if scale == Scale::None {
                return Ok(ModbusValue::Float32(v));
            }
            let (mul, div) = float_factor(scale);
            let r = (f64::from(v) * mul / div) as f32;
            if r.is_finite() {
                Ok(ModbusValue::Float32(r))
            } else {
                Err(ValueError::NotFinite)
            }
        }
        RawValue::Float64(v) => {
            if !v.is_finite() {
                return Err(ValueError::NotFinite);
            }
            let (mul, div) = float_factor(scale);
            let r = v * mul / div;
            if r.is_finite() {
                Ok(ModbusValue::Float64(r))
            } else {
                Err(ValueError::NotFinite)
            }
        }
    }
}

fn scale_int(v: i128, scale: Scale) -> Result<ModbusValue, ValueError> {
    match scale {
        Scale::None | Scale::ExponentRegister { .. } => exact(v, 0),
        Scale::Factor(d) => exact(
            v.checked_mul(i128::from(d.mantissa()))
                .ok_or(ValueError::Overflow)?,
            d.scale(),
        ),
        Scale::Pow10(p) if p >= 0 => {
            let f = pow10_i128(u32::from(p.unsigned_abs())).ok_or(ValueError::Overflow)?;
            exact(v.checked_mul(f).ok_or(ValueError::Overflow)?, 0)
        }
        Scale::Pow10(p) => {
            let places = p.unsigned_abs();
            if places > MAX_SCALE {
                return Err(ValueError::Overflow);
            }
            exact(v, places)
        }
    }
}

/// Decodes and scales in one step: the usual path for one configured point.
#[inline]
pub fn read_value(
    regs: &[u16],
    ty: ValueType,
    order: RegisterOrder,
    how: Scale,
    exponent: Option<i16>,
) -> Result<ModbusValue, ValueError> {
    scale(decode(regs, ty, order)?, how, exponent)
}
