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

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterOrder::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn show(regs: &[u16], ty: ValueType, order: RegisterOrder, how: Scale) -> String {
        read_value(regs, ty, order, how, None).unwrap().to_string()
    }

    #[test]
    fn float32_in_every_order() {
        // 229.8f32 = 0x4365CCCD.
        for (order, regs) in [
            (ABCD, [0x4365, 0xCCCD]),
            (CDAB, [0xCCCD, 0x4365]),
            (BADC, [0x6543, 0xCDCC]),
            (DCBA, [0xCDCC, 0x6543]),
        ] {
            assert_eq!(
                decode(&regs, ValueType::F32, order),
                Ok(RawValue::Float32(229.8))
            );
            assert_eq!(show(&regs, ValueType::F32, order, Scale::None), "229.8");
        }
    }

    #[test]
    fn integers_and_bit_fields() {
        assert_eq!(
            decode(&[0x0001, 0x0002], ValueType::U32, ABCD),
            Ok(RawValue::Unsigned(0x0001_0002))
        );
        assert_eq!(
            decode(&[0x0001, 0x0002], ValueType::U32, CDAB),
            Ok(RawValue::Unsigned(0x0002_0001))
        );
        assert_eq!(
            decode(&[0xFFFF], ValueType::I16, ABCD),
            Ok(RawValue::Signed(-1))
        );
        assert_eq!(
            decode(&[0x3412], ValueType::U16, BADC),
            Ok(RawValue::Unsigned(0x1234))
        );
        assert_eq!(
            decode(&[0x3412], ValueType::U16, CDAB),
            Ok(RawValue::Unsigned(0x3412))
        );
        assert_eq!(
            decode(&[0xFFFF, 0xFFFE], ValueType::I32, ABCD),
            Ok(RawValue::Signed(-2))
        );
        assert_eq!(
            decode(&[0x0102, 0x0304, 0x0506, 0x0708], ValueType::U64, DCBA),
            Ok(RawValue::Unsigned(0x0807_0605_0403_0201))
        );
        assert_eq!(
            decode(&[0x0070], ValueType::Bits { bit: 4, width: 3 }, ABCD),
            Ok(RawValue::Unsigned(7))
        );
        assert_eq!(
            decode(&[0x8000], ValueType::Bits { bit: 15, width: 1 }, ABCD),
            Ok(RawValue::Unsigned(1))
        );
        assert_eq!(
            decode(&[0], ValueType::Bits { bit: 15, width: 2 }, ABCD),
            Err(ValueError::BadBitField { bit: 15, width: 2 })
        );
        assert_eq!(
            decode(&[1], ValueType::U32, ABCD),
            Err(ValueError::TooFewRegisters {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            show(&[0x0004, 0x0005, 0xFFFF], ValueType::U16, ABCD, Scale::None),
            "4"
        );
    }

    #[test]
    fn integer_scaling_is_exact() {
        assert_eq!(
            show(&[1234], ValueType::U16, ABCD, Scale::Factor(d("0.01"))),
            "12.34"
        );
        assert_eq!(
            show(&[1230], ValueType::U16, ABCD, Scale::Factor(d("0.01"))),
            "12.30"
        );
        assert_eq!(
            show(&[5], ValueType::U16, ABCD, Scale::Factor(d("10"))),
            "50"
        );
        assert_eq!(
            show(&[0xFFFF], ValueType::I16, ABCD, Scale::Factor(d("0.1"))),
            "-0.1"
        );
        assert_eq!(
            show(&[1234], ValueType::U16, ABCD, Scale::Pow10(-3)),
            "1.234"
        );
        assert_eq!(
            show(&[1234], ValueType::U16, ABCD, Scale::Pow10(2)),
            "123400"
        );
        // 99999999 × 0.01 is 999999.99, never 999999.9899999999.
        assert_eq!(
            show(
                &[0x05F5, 0xE0FF],
                ValueType::U32,
                ABCD,
                Scale::Factor(d("0.01"))
            ),
            "999999.99"
        );
        // Acrel: value × 10^(exponent − 3).
        let acrel = Scale::ExponentRegister { bias: -3 };
        assert_eq!(
            read_value(&[1234], ValueType::U16, ABCD, acrel, Some(1))
                .unwrap()
                .to_string(),
            "12.34"
        );
        assert_eq!(
            read_value(&[1], ValueType::U16, ABCD, acrel, None),
            Err(ValueError::MissingExponent)
        );
        assert_eq!(
            read_value(&[0xFFFF; 4], ValueType::U64, ABCD, Scale::None, None),
            Err(ValueError::Overflow)
        );
        assert_eq!(
            read_value(&[1], ValueType::U16, ABCD, Scale::Pow10(-19), None),
            Err(ValueError::Overflow)
        );
        assert_eq!(
            read_value(&[1], ValueType::U16, ABCD, Scale::Pow10(i8::MAX), None),
            Err(ValueError::Overflow)
        );
    }

    #[test]
    fn float_scaling_and_invalid_floats() {
        // DTSU666 variants send 2302.0 meaning 230.2 V.
        let regs = encode(RawValue::Float32(2302.0), ValueType::F32, ABCD).unwrap();
        assert_eq!(
            show(&regs, ValueType::F32, ABCD, Scale::Factor(d("0.1"))),
            "230.2"
        );
        let regs = encode(RawValue::Float64(2302.0), ValueType::F64, ABCD).unwrap();
        assert_eq!(show(&regs, ValueType::F64, ABCD, Scale::Pow10(-1)), "230.2");
        let regs = encode(RawValue::Float64(0.1), ValueType::F64, CDAB).unwrap();
        assert_eq!(show(&regs, ValueType::F64, CDAB, Scale::None), "0.1");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let regs = encode(RawValue::Float32(bad), ValueType::F32, ABCD).unwrap();
            assert_eq!(
                read_value(&regs, ValueType::F32, ABCD, Scale::None, None),
                Err(ValueError::NotFinite)
            );
        }
        let regs = encode(RawValue::Float32(f32::MAX), ValueType::F32, ABCD).unwrap();
        assert_eq!(
            read_value(&regs, ValueType::F32, ABCD, Scale::Pow10(10), None),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            read_value(&[0x7FF8, 0, 0, 0], ValueType::F64, ABCD, Scale::None, None),
            Err(ValueError::NotFinite)
        );
    }

    #[test]
    fn encode_rejects_misfits() {
        assert_eq!(
            encode(RawValue::Unsigned(70_000), ValueType::U16, ABCD),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            encode(RawValue::Signed(-1), ValueType::U32, ABCD),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            encode(RawValue::Float64(1.0), ValueType::F32, ABCD),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            encode(
                RawValue::Unsigned(8),
                ValueType::Bits { bit: 0, width: 3 },
                ABCD
            ),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(
            encode(
                RawValue::Unsigned(5),
                ValueType::Bits { bit: 4, width: 3 },
                BADC
            ),
            Ok(vec![0x5000])
        );
    }

    fn arb_type() -> impl Strategy<Value = ValueType> {
        prop_oneof![
            Just(ValueType::U16),
            Just(ValueType::I16),
            Just(ValueType::U32),
            Just(ValueType::I32),
            Just(ValueType::U64),
            Just(ValueType::I64),
            Just(ValueType::F32),
            Just(ValueType::F64),
            (0u8..16)
                .prop_flat_map(|bit| (Just(bit), 1..=16 - bit))
                .prop_map(|(bit, width)| ValueType::Bits { bit, width }),
        ]
    }

    fn arb_order() -> impl Strategy<Value = RegisterOrder> {
        prop::sample::select(vec![ABCD, CDAB, BADC, DCBA])
    }

    fn same(a: RawValue, b: RawValue) -> bool {
        match (a, b) {
            (RawValue::Float32(x), RawValue::Float32(y)) => x.to_bits() == y.to_bits(),
            (RawValue::Float64(x), RawValue::Float64(y)) => x.to_bits() == y.to_bits(),
            (x, y) => x == y,
        }
    }

    /// Throughput check for the ≥ 20 M values/s target (design §6). Run in release:
    /// `cargo test --release -p meter-protocols decode_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn decode_throughput() {
        use std::hint::black_box;
        use std::time::Instant;
        let regs: Vec<u16> = (0..2048u32).map(|i| (i * 40503) as u16).collect();
        let cases = [
            (ValueType::F32, ABCD, Scale::None),
            (ValueType::F32, CDAB, Scale::None),
            (ValueType::U32, ABCD, Scale::Factor(d("0.01"))),
            (ValueType::I16, ABCD, Scale::Pow10(-1)),
        ];
        for (ty, order, how) in cases {
            let n = ty.registers();
            let rounds = 2_000;
            let start = Instant::now();
            let mut ok = 0usize;
            for _ in 0..rounds {
                for chunk in black_box(&regs).chunks_exact(n) {
                    let v =
                        read_value(chunk, black_box(ty), black_box(order), black_box(how), None);
                    if black_box(v).is_ok() {
                        ok += 1;
                    }
                }
            }
            let values = rounds * (regs.len() / n);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{ty:?} {order:?} {how:?}: {:.1} M values/s ({ok} ok of {values})",
                values as f64 / secs / 1e6
            );
        }
    }

    proptest! {
        #[test]
        fn every_type_and_order_round_trips(ty in arb_type(), order in arb_order(), regs in prop::collection::vec(any::<u16>(), 4)) {
            let regs = &regs[..ty.registers()];
            let v = decode(regs, ty, order).unwrap();
            let back = encode(v, ty, order).unwrap();
            if let ValueType::Bits { bit, width } = ty {
                let mask = (((1u32 << width) - 1) << bit) as u16;
                let word = if matches!(order, BADC | DCBA) { mask.swap_bytes() } else { mask };
                prop_assert_eq!(&back, &vec![regs[0] & word]);
            } else {
                prop_assert_eq!(&back[..], regs);
            }
            prop_assert!(same(decode(&back, ty, order).unwrap(), v));
        }

        #[test]
        fn float32_prints_shortest_round_trip(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite());
            let regs = encode(RawValue::Float32(x), ValueType::F32, ABCD).unwrap();
            let shown = read_value(&regs, ValueType::F32, ABCD, Scale::None, None).unwrap().to_string();
            prop_assert_eq!(&shown, &format!("{x}"));
            prop_assert_eq!(shown.parse::<f32>().unwrap().to_bits(), x.to_bits());
        }

        #[test]
        fn integer_factor_is_exact(v in any::<i32>(), places in 0u8..=6) {
            let factor = Decimal::new(1, places).unwrap();
            let got = scale(RawValue::Signed(i64::from(v)), Scale::Factor(factor), None).unwrap();
            prop_assert_eq!(got, ModbusValue::Exact(Decimal::new(i64::from(v), places).unwrap()));
        }
    }
}
