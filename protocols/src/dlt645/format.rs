//! DL/T 645 value formats: how the bytes of one data item become a value, and back.
//!
//! This module owns the exact decoding and encoding of **unmasked** item bytes (the 0x33
//! offset already removed, low byte first as on the wire): packed BCD numbers with an implied
//! decimal point and an optional sign bit, the reversed BCD date/time formats, max demand
//! (value + time), 12-digit numbers, ASCII, bit fields and raw bytes.
//!
//! It never knows which data identifier an item belongs to (that is [`super::catalog`]),
//! never touches frames or the 0x33 mask, and never fails: bytes that are not a valid value
//! (`FF…`/`EE…` fill for "not supported", a non-BCD nibble, an impossible date, the wrong
//! number of bytes) decode to [`Value::Invalid`] with a reason. Numbers decode to an exact
//! [`Decimal`] without allocating and without any binary float.

use std::fmt;

use crate::decimal::Decimal;

/// Reason: every byte is `FF` or every byte is `EE` — the meter does not support the item.
pub const REASON_NO_DATA: &str = "meter reported no data (FF/EE fill)";
/// Reason: a nibble above 9 where a BCD digit belongs.
pub const REASON_NOT_BCD: &str = "not a BCD value";
/// Reason: a digit where the format has none (the unused top nibble of an odd digit count).
pub const REASON_DIGIT_OUTSIDE: &str = "digit outside the format";
/// Reason: the number of bytes differs from the format's length.
pub const REASON_LENGTH: &str = "wrong number of bytes for the format";
/// Reason: a BCD date or time whose fields are out of range (month 13, 31 April, 25 h…).
pub const REASON_BAD_TIME: &str = "impossible date or time";
/// Reason: an ASCII field holding a byte that is not printable ASCII.
pub const REASON_NOT_ASCII: &str = "not printable ASCII";
/// Reason: the format itself cannot be decoded (more than 18 digits, a bit field over 32 bits).
pub const REASON_UNSUPPORTED: &str = "format not supported by the decoder";

/// How the bytes of one data item are laid out.
///
/// Every format is sent low byte first; date/time formats are therefore the document form
/// reversed (`YYMMDDWW` 2024-05-06 Monday goes as `01 06 05 24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Packed BCD with an implied decimal point: `XXXXXX.XX` is `{ digits: 8, decimals: 2 }`.
    /// Takes `ceil(digits / 2)` bytes. When `signed`, bit 7 of the last (most significant)
    /// byte is the sign (1 = negative) and the other 7 bits are BCD.
    Bcd {
        /// Number of BCD digits, 1..=18.
        digits: u8,
        /// Digits after the implied decimal point.
        decimals: u8,
        /// Whether bit 7 of the most significant byte is a sign bit.
        signed: bool,
    },
    /// `YYMMDDWW`: date and weekday (0 = Sunday), 4 bytes, wire `WW DD MM YY`.
    Yymmddww,
    /// `hhmmss`: time of day, 3 bytes, wire `ss mm hh`.
    Hhmmss,
    /// `YYMMDDhhmm`: date and time to the minute, 5 bytes, wire `mm hh DD MM YY`.
    Yymmddhhmm,
    /// `YYMMDDhhmmss`: date and time to the second, 6 bytes, wire `ss mm hh DD MM YY`.
    Yymmddhhmmss,
    /// `MMDDhhmm`: month, day, hour, minute, 4 bytes, wire `mm hh DD MM`.
    Mmddhhmm,
    /// `DDhh`: day of month and hour (settlement day), 2 bytes, wire `hh DD`.
    Ddhh,
    /// Max demand: value `XX.XXXX` (3 bytes, unsigned) then its time `YYMMDDhhmm` (5 bytes),
    /// 8 bytes, wire `value(low first) | mm hh DD MM YY`.
    Demand,
    /// A BCD number of this many digits kept as text with its leading zeros, such as the
    /// 12-digit `NNNNNNNNNNNN` address or meter number. Takes `ceil(n / 2)` bytes.
    Number(u8),
    /// ASCII text of this many bytes, sent low byte first (reversed). NUL padding at either
    /// end is dropped when decoding; encoding pads with NUL at the end of the text.
    Ascii(u8),
    /// A bit field (status word) of this many bytes (1..=4), little endian.
    Bits(u8),
    /// Bytes passed on as they are.
    Raw(u8),
}

/// The fields of a meter date/time, in document (most significant first) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Weekday,
    Hour,
    Minute,
    Second,
}

const YYMMDDWW: &[Field] = &[Field::Year, Field::Month, Field::Day, Field::Weekday];
const HHMMSS: &[Field] = &[Field::Hour, Field::Minute, Field::Second];
const YYMMDDHHMM: &[Field] = &[
    Field::Year,
    Field::Month,
    Field::Day,
    Field::Hour,
    Field::Minute,
];
const YYMMDDHHMMSS: &[Field] = &[
    Field::Year,
    Field::Month,
    Field::Day,
    Field::Hour,
    Field::Minute,
    Field::Second,
];
const MMDDHHMM: &[Field] = &[Field::Month, Field::Day, Field::Hour, Field::Minute];
const DDHH: &[Field] = &[Field::Day, Field::Hour];

/// A date and/or time as a meter reports it: only the fields its format carries are set.
///
/// Years are two BCD digits on the wire and are read as 2000..=2099. Weekday is 0 = Sunday
/// .. 6 = Saturday, as DL/T 645 counts; it is not checked against the date (meters keep it
/// as a separate register). [`Format::decode`] only returns times that pass
/// [`MeterTime::validate`]; [`Format::encode`] refuses times that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MeterTime {
    /// Full year, 2000..=2099.
    pub year: Option<u16>,
    /// Month, 1..=12.
    pub month: Option<u8>,
    /// Day of month, 1..=28/29/30/31 as the month (and year, when known) allows.
    pub day: Option<u8>,
    /// Weekday, 0 = Sunday ..= 6 = Saturday.
    pub weekday: Option<u8>,
    /// Hour, 0..=23.
    pub hour: Option<u8>,
    /// Minute, 0..=59.
    pub minute: Option<u8>,
    /// Second, 0..=59.
    pub second: Option<u8>,
}

impl MeterTime {
    /// Checks every present field's range (including the day against month and year);
    /// `Err` carries [`REASON_BAD_TIME`].
    pub fn validate(&self) -> Result<(), &'static str> {
        let in_range = |v: Option<u8>, lo: u8, hi: u8| v.is_none_or(|v| (lo..=hi).contains(&v));
        let max_day = match self.month {
            Some(2) => match self.year {
                Some(y) if !is_leap(y) => 28,
                _ => 29,
            },
            Some(4 | 6 | 9 | 11) => 30,
            _ => 31,
        };
        let ok = self.year.is_none_or(|y| (2000..=2099).contains(&y))
            && in_range(self.month, 1, 12)
            && in_range(self.day, 1, max_day)
            && in_range(self.weekday, 0, 6)
            && in_range(self.hour, 0, 23)
            && in_range(self.minute, 0, 59)
            && in_range(self.second, 0, 59);
        if ok { Ok(()) } else { Err(REASON_BAD_TIME) }
    }

    fn get(&self, field: Field) -> Option<u8> {
        match field {
            Field::Year => self
                .year
                .and_then(|y| y.checked_sub(2000))
                .and_then(|y| u8::try_from(y).ok()),
            Field::Month => self.month,
            Field::Day => self.day,
            Field::Weekday => self.weekday,
            Field::Hour => self.hour,
            Field::Minute => self.minute,
            Field::Second => self.second,
        }
    }

    fn set(&mut self, field: Field, value: u8) {
        match field {
            Field::Year => self.year = Some(2000 + u16::from(value)),
            Field::Month => self.month = Some(value),
            Field::Day => self.day = Some(value),
            Field::Weekday => self.weekday = Some(value),
            Field::Hour => self.hour = Some(value),
            Field::Minute => self.minute = Some(value),
            Field::Second => self.second = Some(value),
        }
    }
}

fn is_leap(y: u16) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

impl fmt::Display for MeterTime {
    /// ISO 8601-like: `2024-05-06T12:34:56`, `--05-06T12:34` without a year, `---06T12`
    /// with only a day, `12:34:56` for a time alone; a weekday is appended as ` Mon`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has_date = self.year.is_some() || self.month.is_some() || self.day.is_some();
        if has_date {
            match self.year {
                Some(y) => write!(f, "{y:04}")?,
                None => f.write_str("-")?,
            }
            match self.month {
                Some(m) => write!(f, "-{m:02}")?,
                None => f.write_str("-")?,
            }
            if let Some(d) = self.day {
                write!(f, "-{d:02}")?;
            }
        }
        if let Some(h) = self.hour {
            if has_date {
                f.write_str("T")?;
            }
            write!(f, "{h:02}")?;
            if let Some(m) = self.minute {
                write!(f, ":{m:02}")?;
                if let Some(s) = self.second {
                    write!(f, ":{s:02}")?;
                }
            }
        }
        if let Some(w) = self.weekday {
            const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
            let name = NAMES.get(usize::from(w)).copied().unwrap_or("?");
            let sep = if has_date || self.hour.is_some() {
                " "
            } else {
                ""
            };
            write!(f, "{sep}{name}")?;
        }
        Ok(())
    }
}

/// A decoded item value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An exact number (energy, power, voltage, count…).
    Number(Decimal),
    /// A date and/or time.
    Time(MeterTime),
    /// A max demand value and the time it occurred.
    Demand {
        /// The demand (kW, kvar or kVA).
        value: Decimal,
        /// When it occurred (year to minute).
        time: MeterTime,
    },
    /// Text: a 12-digit number with its leading zeros, or an ASCII field.
    Text(String),
    /// A bit field (status word), bit 0 = bit 0 of the first byte.
    Bits(u32),
    /// Bytes with no further meaning known here.
    Raw(Vec<u8>),
    /// The bytes are not a value of the format (see the `REASON_*` constants).
    Invalid {
        /// The item's bytes as received (unmasked).
        raw: Vec<u8>,
        /// Why they are not a value.
        reason: &'static str,
    },
}

impl Value {
    /// False only for [`Value::Invalid`].
    pub fn is_valid(&self) -> bool {
        !matches!(self, Value::Invalid { .. })
    }

    /// The number, for [`Value::Number`] and the value part of [`Value::Demand`].
    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::Number(d) | Value::Demand { value: d, .. } => Some(*d),
            _ => None,
        }
    }

    fn invalid(raw: &[u8], reason: &'static str) -> Self {
        Value::Invalid {
            raw: raw.to_vec(),
            reason,
        }
    }
}

impl fmt::Display for Value {
    /// Numbers exactly as the meter gave them; demand as `value @ time`; bits as hex; raw as
    /// spaced hex; invalid as `invalid (reason)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(d) => write!(f, "{d}"),
            Value::Time(t) => write!(f, "{t}"),
            Value::Demand { value, time } => write!(f, "{value} @ {time}"),
            Value::Text(s) => f.write_str(s),
            Value::Bits(b) => write!(f, "0x{b:04X}"),
            Value::Raw(bytes) => write_hex(f, bytes),
            Value::Invalid { reason, .. } => write!(f, "invalid ({reason})"),
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{b:02X}")?;
    }
    Ok(())
}

/// True when `bytes` is all `FF` or all `EE`: the meter's "no data" fill.
fn is_fill(bytes: &[u8]) -> bool {
    !bytes.is_empty() && (bytes.iter().all(|&b| b == 0xFF) || bytes.iter().all(|&b| b == 0xEE))
}

/// The reason for bytes that failed a BCD check: fill, or simply not BCD.
fn bcd_reason(bytes: &[u8]) -> &'static str {
    if is_fill(bytes) {
        REASON_NO_DATA
    } else {
        REASON_NOT_BCD
    }
}

/// Two BCD digits of one byte as 0..=99.
fn bcd2(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    if hi > 9 || lo > 9 {
        None
    } else {
        Some(hi * 10 + lo)
    }
}

/// One byte holding 0..=99 as two BCD digits.
fn to_bcd2(v: u8) -> Option<u8> {
    if v > 99 {
        None
    } else {
        Some(((v / 10) << 4) | (v % 10))
    }
}

/// Decodes a packed BCD number (low byte first) without allocating.
///
/// `digits` is 1..=18 and `bytes` must be exactly `ceil(digits / 2)` long; with `signed`,
/// bit 7 of the last byte is the sign. A sign bit on zero gives plain zero. `Err` carries one
/// of the `REASON_*` constants.
pub fn decode_bcd(
    bytes: &[u8],
    digits: u8,
    decimals: u8,
    signed: bool,
) -> Result<Decimal, &'static str> {
    if digits == 0 || digits > 18 {
        return Err(REASON_UNSUPPORTED);
    }
    let n = usize::from(digits.div_ceil(2));
    if bytes.len() != n {
        return Err(REASON_LENGTH);
    }
    let odd = digits % 2 == 1;
    let mut negative = false;
    let mut mantissa: i64 = 0;
    let last = n - 1;
    for (i, &byte) in bytes.iter().enumerate().rev() {
        let mut b = byte;
        if i == last {
            if signed {
                negative = b & 0x80 != 0;
                b &= 0x7F;
            }
            if odd && b >> 4 != 0 {
                return Err(if is_fill(bytes) || b >> 4 > 9 {
                    bcd_reason(bytes)
                } else {
                    REASON_DIGIT_OUTSIDE
                });
            }
        }
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(bcd_reason(bytes));
        }
        // At most 18 digits: the mantissa stays below 10^18 < i64::MAX.
        mantissa = mantissa * 100 + i64::from(hi) * 10 + i64::from(lo);
    }
    if negative {
        mantissa = -mantissa;
    }
    Decimal::new(mantissa, decimals).ok_or(REASON_UNSUPPORTED)
}

/// Encodes `value` as packed BCD (low byte first); `None` when it does not fit the format
/// (too many digits, a negative value for an unsigned format, digits lost by rescaling).
/// A value with fewer decimals than the format is scaled up exactly.
pub fn encode_bcd(value: Decimal, digits: u8, decimals: u8, signed: bool) -> Option<Vec<u8>> {
    if digits == 0 || digits > 18 || decimals > 18 {
        return None;
    }
    let mut m = value.mantissa();
    let scale = value.scale();
    if scale <= decimals {
        m = m.checked_mul(10i64.checked_pow(u32::from(decimals - scale))?)?;
    } else {
        let factor = 10i64.checked_pow(u32::from(scale - decimals))?;
        if m.checked_rem(factor)? != 0 {
            return None;
        }
        m = m.checked_div(factor)?;
    }
    let negative = m < 0;
    if negative && !signed {
        return None;
    }
    let mut a = m.unsigned_abs();
    let limit = 10u64.checked_pow(u32::from(digits))?;
    if a >= limit {
        return None;
    }
    // A signed format with an even digit count has only 3 bits for its top digit.
    if signed && digits.is_multiple_of(2) && a >= limit / 10 * 8 {
        return None;
    }
    let n = usize::from(digits.div_ceil(2));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let lo = (a % 10) as u8;
        a /= 10;
        let hi = (a % 10) as u8;
        a /= 10;
        out.push((hi << 4) | lo);
    }
    if negative && let Some(top) = out.last_mut() {
        *top |= 0x80;
    }
    Some(out)
}

fn decode_time(fields: &[Field], bytes: &[u8]) -> Result<MeterTime, &'static str> {
    if bytes.len() != fields.len() {
        return Err(REASON_LENGTH);
    }
    let mut t = MeterTime::default();
    for (&field, &b) in fields.iter().zip(bytes.iter().rev()) {
        let v = bcd2(b).ok_or_else(|| bcd_reason(bytes))?;
        t.set(field, v);
    }
    t.validate()?;
    Ok(t)
}

fn encode_time(fields: &[Field], t: &MeterTime) -> Option<Vec<u8>> {
    t.validate().ok()?;
    let mut out = Vec::with_capacity(fields.len());
    for &field in fields.iter().rev() {
        out.push(to_bcd2(t.get(field)?)?);
    }
    Some(out)
}

impl Format {
    /// `XXXXXX.XX`, 4 bytes: energy in kWh/kvarh.
    pub const ENERGY: Format = Format::Bcd {
        digits: 8,
        decimals: 2,
        signed: false,
    };
    /// `XXXXXX`, 3 bytes: an event count.
    pub const COUNT: Format = Format::Bcd {
        digits: 6,
        decimals: 0,
        signed: false,
    };

    /// Shorthand for [`Format::Bcd`].
    pub const fn bcd(digits: u8, decimals: u8, signed: bool) -> Format {
        Format::Bcd {
            digits,
            decimals,
            signed,
        }
    }

    const fn time_fields(self) -> Option<&'static [Field]> {
        match self {
            Format::Yymmddww => Some(YYMMDDWW),
            Format::Hhmmss => Some(HHMMSS),
            Format::Yymmddhhmm => Some(YYMMDDHHMM),
            Format::Yymmddhhmmss => Some(YYMMDDHHMMSS),
            Format::Mmddhhmm => Some(MMDDHHMM),
            Format::Ddhh => Some(DDHH),
            _ => None,
        }
    }

    /// Number of bytes an item of this format takes.
    pub const fn len(self) -> usize {
        match self {
            Format::Bcd { digits, .. } | Format::Number(digits) => digits.div_ceil(2) as usize,
            Format::Demand => 8,
            Format::Ascii(n) | Format::Bits(n) | Format::Raw(n) => n as usize,
            other => match other.time_fields() {
                Some(fields) => fields.len(),
                None => 0,
            },
        }
    }

    /// True for a zero-length format (`Raw(0)`, `Ascii(0)`…).
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Decodes exactly [`Format::len`] bytes. Never panics and never fails: anything that is
    /// not a value of this format gives [`Value::Invalid`]. Numbers do not allocate.
    pub fn decode(self, bytes: &[u8]) -> Value {
        if bytes.len() != self.len() {
            return Value::invalid(bytes, REASON_LENGTH);
        }
        match self {
            Format::Bcd {
                digits,
                decimals,
                signed,
            } => match decode_bcd(bytes, digits, decimals, signed) {
                Ok(d) => Value::Number(d),
                Err(reason) => Value::invalid(bytes, reason),
            },
            Format::Demand => {
                let Some((value, time)) = bytes.split_at_checked(3) else {
                    return Value::invalid(bytes, REASON_LENGTH);
                };
                let decoded = decode_bcd(value, 6, 4, false)
                    .and_then(|v| Ok((v, decode_time(YYMMDDHHMM, time)?)));
                match decoded {
                    Ok((value, time)) => Value::Demand { value, time },
                    Err(reason) => Value::invalid(
                        bytes,
                        if is_fill(bytes) {
                            REASON_NO_DATA
                        } else {
                            reason
                        },
                    ),
                }
            }
            Format::Number(digits) => decode_number_text(bytes, digits),
            Format::Ascii(_) => decode_ascii(bytes),
            Format::Bits(n) => {
                if n > 4 {
                    return Value::invalid(bytes, REASON_UNSUPPORTED);
                }
                let v = bytes
                    .iter()
                    .rev()
                    .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
                Value::Bits(v)
            }
            Format::Raw(_) => Value::Raw(bytes.to_vec()),
            other => match other.time_fields() {
                Some(fields) => match decode_time(fields, bytes) {
                    Ok(t) => Value::Time(t),
                    Err(reason) => Value::invalid(bytes, reason),
                },
                None => Value::invalid(bytes, REASON_UNSUPPORTED),
            },
        }
    }

    /// Encodes a value into this format's bytes (low byte first, unmasked) — the inverse of
    /// [`Format::decode`], for the simulator and for writes. `None` when the value is of
    /// another kind or does not fit. Time formats use only the fields they carry and ignore
    /// the others.
    pub fn encode(self, value: &Value) -> Option<Vec<u8>> {
        match (self, value) {
            (
                Format::Bcd {
                    digits,
                    decimals,
                    signed,
                },
                Value::Number(d),
            ) => encode_bcd(*d, digits, decimals, signed),
            (Format::Demand, Value::Demand { value, time }) => {
                let mut out = encode_bcd(*value, 6, 4, false)?;
                out.extend(encode_time(YYMMDDHHMM, time)?);
                Some(out)
            }
            (Format::Number(digits), Value::Text(s)) => {
                if s.len() != usize::from(digits) || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n = usize::from(digits.div_ceil(2));
                let mut out = vec![0u8; n];
                // Least significant digit first: digit k (from the right) goes to byte k / 2.
                for (k, b) in s.bytes().rev().enumerate() {
                    let slot = out.get_mut(k / 2)?;
                    let d = b - b'0';
                    *slot |= if k % 2 == 0 { d } else { d << 4 };
                }
                Some(out)
            }
            (Format::Ascii(n), Value::Text(s)) => {
                let n = usize::from(n);
                if s.len() > n || !s.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
                    return None;
                }
                let mut doc: Vec<u8> = s.bytes().collect();
                doc.resize(n, 0);
                doc.reverse();
                Some(doc)
            }
            (Format::Bits(n), Value::Bits(v)) => {
                if n > 4 || (n < 4 && *v >> (8 * u32::from(n)) != 0) {
                    return None;
                }
                Some(v.to_le_bytes().get(..usize::from(n))?.to_vec())
            }
            (Format::Raw(n), Value::Raw(bytes)) if bytes.len() == usize::from(n) => {
                Some(bytes.clone())
            }
            (other, Value::Time(t)) => encode_time(other.time_fields()?, t),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    /// The document notation: `XXXXXX.XX`, `±XXX.XXX` (signed), `YYMMDDWW`, `hhmmss`,
    /// `XX.XXXX+YYMMDDhhmm` (demand), `N12` (12-digit number), `ASCII32`, `bits16`, `raw4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Format::Bcd {
                digits,
                decimals,
                signed,
            } => {
                if signed {
                    f.write_str("±")?;
                }
                let int = digits.saturating_sub(decimals);
                for _ in 0..int {
                    f.write_str("X")?;
                }
                if decimals > 0 {
                    f.write_str(".")?;
                    for _ in 0..decimals {
                        f.write_str("X")?;
                    }
                }
                Ok(())
            }
            Format::Yymmddww => f.write_str("YYMMDDWW"),
            Format::Hhmmss => f.write_str("hhmmss"),
            Format::Yymmddhhmm => f.write_str("YYMMDDhhmm"),
            Format::Yymmddhhmmss => f.write_str("YYMMDDhhmmss"),
            Format::Mmddhhmm => f.write_str("MMDDhhmm"),
            Format::Ddhh => f.write_str("DDhh"),
            Format::Demand => f.write_str("XX.XXXX+YYMMDDhhmm"),
            Format::Number(n) => write!(f, "N{n}"),
            Format::Ascii(n) => write!(f, "ASCII{n}"),
            Format::Bits(n) => write!(f, "bits{}", u16::from(n) * 8),
            Format::Raw(n) => write!(f, "raw{n}"),
        }
    }
}

fn decode_number_text(bytes: &[u8], digits: u8) -> Value {
    let mut s = String::with_capacity(usize::from(digits) + 1);
    for &b in bytes.iter().rev() {
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Value::invalid(bytes, bcd_reason(bytes));
        }
        s.push(char::from(b'0' + hi));
        s.push(char::from(b'0' + lo));
    }
    if digits % 2 == 1 {
        // The unused top nibble must be zero.
        if s.starts_with('0') {
            s.remove(0);
        } else {
            return Value::invalid(bytes, REASON_DIGIT_OUTSIDE);
        }
    }
    Value::Text(s)
}

fn decode_ascii(bytes: &[u8]) -> Value {
    if is_fill(bytes) {
        return Value::invalid(bytes, REASON_NO_DATA);
    }
    // Document order is the wire order reversed; drop NUL padding at either end.
    let doc: Vec<u8> = bytes.iter().rev().copied().collect();
    let start = doc.iter().position(|&b| b != 0).unwrap_or(doc.len());
    let end = doc.iter().rposition(|&b| b != 0).map_or(start, |p| p + 1);
    let text = doc.get(start..end).unwrap_or_default();
    if !text.iter().all(|b| (0x20..=0x7E).contains(b)) {
        return Value::invalid(bytes, REASON_NOT_ASCII);
    }
    Value::Text(text.iter().map(|&b| char::from(b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(f: Format, bytes: &[u8]) -> String {
        match f.decode(bytes) {
            Value::Number(d) => d.to_string(),
            other => panic!("{bytes:02X?} as {f:?} gave {other:?}"),
        }
    }

    fn reason(f: Format, bytes: &[u8]) -> &'static str {
        match f.decode(bytes) {
            Value::Invalid { raw, reason } => {
                assert_eq!(raw, bytes);
                reason
            }
            other => panic!("{bytes:02X?} as {f:?} gave {other:?}, expected Invalid"),
        }
    }

    #[test]
    fn bcd_numbers_are_exact() {
        assert_eq!(num(Format::ENERGY, &[0x76, 0x17, 0x03, 0x00]), "317.76");
        assert_eq!(num(Format::ENERGY, &[0x99, 0x99, 0x99, 0x99]), "999999.99");
        assert_eq!(num(Format::ENERGY, &[0, 0, 0, 0]), "0.00");
        assert_eq!(num(Format::bcd(6, 3, true), &[0x34, 0x12, 0x80]), "-1.234");
        assert_eq!(num(Format::bcd(6, 3, true), &[0x34, 0x12, 0x00]), "1.234");
        assert_eq!(num(Format::bcd(4, 1, false), &[0x94, 0x23]), "239.4");
        assert_eq!(num(Format::bcd(4, 2, false), &[0x03, 0x50]), "50.03");
        assert_eq!(num(Format::bcd(4, 3, true), &[0x50, 0x89]), "-0.950");
        assert_eq!(
            num(Format::bcd(8, 2, true), &[0x99, 0x99, 0x99, 0xF9]),
            "-799999.99"
        );
        assert_eq!(num(Format::bcd(3, 0, false), &[0x20, 0x02]), "220");
        assert_eq!(num(Format::COUNT, &[0x07, 0x00, 0x00]), "7");
        // A sign bit on zero is plain zero.
        assert_eq!(num(Format::bcd(4, 1, true), &[0x00, 0x80]), "0.0");
    }

    #[test]
    fn bcd_exact_decimal_representation() {
        assert_eq!(
            Format::ENERGY.decode(&[0x76, 0x17, 0x03, 0x00]),
            Value::Number(Decimal::new(31776, 2).unwrap())
        );
        assert_eq!(
            decode_bcd(&[0x34, 0x12, 0x80], 6, 3, true),
            Ok(Decimal::new(-1234, 3).unwrap())
        );
    }

    #[test]
    fn bcd_invalid_never_panics() {
        assert_eq!(reason(Format::ENERGY, &[0xFF; 4]), REASON_NO_DATA);
        assert_eq!(reason(Format::ENERGY, &[0xEE; 4]), REASON_NO_DATA);
        assert_eq!(reason(Format::bcd(6, 3, true), &[0xFF; 3]), REASON_NO_DATA);
        assert_eq!(
            reason(Format::ENERGY, &[0x76, 0x1A, 0x03, 0x00]),
            REASON_NOT_BCD
        );
        assert_eq!(reason(Format::ENERGY, &[0x76, 0x17, 0x03]), REASON_LENGTH);
        assert_eq!(
            reason(Format::ENERGY, &[0x76, 0x17, 0x03, 0x00, 0x00]),
            REASON_LENGTH
        );
        assert_eq!(reason(Format::ENERGY, &[]), REASON_LENGTH);
        // Unsigned: a set bit 7 is a digit 8, a valid value — but 0xA0 is not BCD.
        assert_eq!(num(Format::ENERGY, &[0, 0, 0, 0x80]), "800000.00");
        assert_eq!(num(Format::bcd(6, 3, true), &[0, 0, 0xA0]), "-200.000");
        assert_eq!(
            reason(Format::bcd(6, 3, true), &[0, 0, 0x7A]),
            REASON_NOT_BCD
        );
        // Odd digit count: the unused top nibble must be zero.
        assert_eq!(
            reason(Format::bcd(3, 0, false), &[0x20, 0x12]),
            REASON_DIGIT_OUTSIDE
        );
        assert_eq!(
            reason(Format::bcd(19, 0, false), &[0; 10]),
            REASON_UNSUPPORTED
        );
        assert_eq!(reason(Format::bcd(0, 0, false), &[]), REASON_UNSUPPORTED);
    }

    #[test]
    fn bcd_encode() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            encode_bcd(d("317.76"), 8, 2, false),
            Some(vec![0x76, 0x17, 0x03, 0x00])
        );
        assert_eq!(
            encode_bcd(d("-1.234"), 6, 3, true),
            Some(vec![0x34, 0x12, 0x80])
        );
        assert_eq!(encode_bcd(d("239.4"), 4, 1, false), Some(vec![0x94, 0x23]));
        // Scaled up exactly; refused when digits would be lost or do not fit.
        assert_eq!(encode_bcd(d("50"), 4, 2, false), Some(vec![0x00, 0x50]));
        assert_eq!(encode_bcd(d("50.030"), 4, 2, false), Some(vec![0x03, 0x50]));
        assert_eq!(encode_bcd(d("50.031"), 4, 2, false), None);
        assert_eq!(encode_bcd(d("100.00"), 4, 2, false), None);
        assert_eq!(encode_bcd(d("-1"), 4, 2, false), None);
        assert_eq!(encode_bcd(d("800000.00"), 8, 2, true), None);
        assert_eq!(encode_bcd(d("999"), 3, 0, false), Some(vec![0x99, 0x09]));
        assert_eq!(encode_bcd(d("1000"), 3, 0, false), None);
    }

    fn time(f: Format, bytes: &[u8]) -> MeterTime {
        match f.decode(bytes) {
            Value::Time(t) => t,
            other => panic!("{bytes:02X?} as {f:?} gave {other:?}"),
        }
    }

    #[test]
    fn dates_and_times() {
        let t = time(Format::Yymmddww, &[0x01, 0x06, 0x05, 0x24]);
        assert_eq!(
            (t.year, t.month, t.day, t.weekday),
            (Some(2024), Some(5), Some(6), Some(1))
        );
        assert_eq!(t.to_string(), "2024-05-06 Mon");
        let t = time(Format::Hhmmss, &[0x56, 0x34, 0x12]);
        assert_eq!((t.hour, t.minute, t.second), (Some(12), Some(34), Some(56)));
        assert_eq!(t.to_string(), "12:34:56");
        assert_eq!(
            time(Format::Yymmddhhmm, &[0x08, 0x07, 0x06, 0x05, 0x24]).to_string(),
            "2024-05-06T07:08"
        );
        assert_eq!(
            time(Format::Yymmddhhmmss, &[0x51, 0x22, 0x10, 0x05, 0x06, 0x17]).to_string(),
            "2017-06-05T10:22:51"
        );
        assert_eq!(
            time(Format::Mmddhhmm, &[0x30, 0x23, 0x31, 0x12]).to_string(),
            "--12-31T23:30"
        );
        assert_eq!(time(Format::Ddhh, &[0x00, 0x01]).to_string(), "---01T00");
        assert_eq!(
            time(Format::Yymmddww, &[0x04, 0x29, 0x02, 0x24]).day,
            Some(29)
        ); // leap year
    }

    #[test]
    fn impossible_dates_are_invalid() {
        assert_eq!(
            reason(Format::Yymmddww, &[0x01, 0x29, 0x02, 0x23]),
            REASON_BAD_TIME
        ); // 2023-02-29
        assert_eq!(
            reason(Format::Yymmddww, &[0x01, 0x31, 0x04, 0x24]),
            REASON_BAD_TIME
        ); // 31 April
        assert_eq!(
            reason(Format::Yymmddww, &[0x07, 0x06, 0x05, 0x24]),
            REASON_BAD_TIME
        ); // weekday 7
        assert_eq!(
            reason(Format::Yymmddww, &[0x01, 0x06, 0x13, 0x24]),
            REASON_BAD_TIME
        ); // month 13
        assert_eq!(
            reason(Format::Yymmddhhmm, &[0, 0, 0, 0, 0]),
            REASON_BAD_TIME
        ); // month 0
        assert_eq!(reason(Format::Hhmmss, &[0x00, 0x60, 0x12]), REASON_BAD_TIME);
        assert_eq!(reason(Format::Hhmmss, &[0x00, 0x00, 0x24]), REASON_BAD_TIME);
        assert_eq!(reason(Format::Hhmmss, &[0x5A, 0x34, 0x12]), REASON_NOT_BCD);
        assert_eq!(reason(Format::Hhmmss, &[0xFF; 3]), REASON_NO_DATA);
        assert_eq!(reason(Format::Hhmmss, &[0x56, 0x34]), REASON_LENGTH);
        assert_eq!(reason(Format::Ddhh, &[0x99, 0x99]), REASON_BAD_TIME);
        // The non-standard YY MM DD hh mm ss order of one library is flagged, not misread.
        assert_eq!(
            reason(Format::Yymmddhhmmss, &[0x25, 0x11, 0x02, 0x12, 0x34, 0x56]),
            REASON_BAD_TIME
        );
    }

    #[test]
    fn demand_value_and_time() {
        let bytes = [0x56, 0x34, 0x12, 0x08, 0x07, 0x06, 0x05, 0x24];
        match Format::Demand.decode(&bytes) {
            Value::Demand { value, time } => {
                assert_eq!(value.to_string(), "12.3456");
                assert_eq!(time.to_string(), "2024-05-06T07:08");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Format::Demand.encode(&Format::Demand.decode(&bytes)),
            Some(bytes.to_vec())
        );
        assert_eq!(reason(Format::Demand, &[0xFF; 8]), REASON_NO_DATA);
        assert_eq!(
            reason(
                Format::Demand,
                &[0x56, 0x34, 0x12, 0x08, 0x07, 0x06, 0x13, 0x24]
            ),
            REASON_BAD_TIME
        );
        assert_eq!(
            reason(
                Format::Demand,
                &[0x56, 0x34, 0x1B, 0x08, 0x07, 0x06, 0x05, 0x24]
            ),
            REASON_NOT_BCD
        );
        assert_eq!(reason(Format::Demand, &bytes[..7]), REASON_LENGTH);
    }

    #[test]
    fn numbers_text_bits_raw() {
        let addr = [0x29, 0x25, 0x07, 0x07, 0x21, 0x20];
        assert_eq!(
            Format::Number(12).decode(&addr),
            Value::Text("202107072529".into())
        );
        assert_eq!(
            Format::Number(12).decode(&[0x01, 0, 0, 0, 0, 0]),
            Value::Text("000000000001".into())
        );
        assert_eq!(
            Format::Number(12).encode(&Value::Text("202107072529".into())),
            Some(addr.to_vec())
        );
        assert_eq!(
            Format::Number(12).encode(&Value::Text("20210707252".into())),
            None
        );
        assert_eq!(reason(Format::Number(12), &[0xAA; 6]), REASON_NOT_BCD);
        assert_eq!(reason(Format::Number(12), &[0xFF; 6]), REASON_NO_DATA);
        assert_eq!(reason(Format::Number(12), &addr[..5]), REASON_LENGTH);
        assert_eq!(
            Format::Number(3).decode(&[0x21, 0x03]),
            Value::Text("321".into())
        );
        assert_eq!(
            reason(Format::Number(3), &[0x21, 0x13]),
            REASON_DIGIT_OUTSIDE
        );

        // ASCII goes low byte first: "AB12" is sent reversed, NUL padding dropped.
        let wire = [0x00, 0x00, b'2', b'1', b'B', b'A'];
        assert_eq!(Format::Ascii(6).decode(&wire), Value::Text("AB12".into()));
        assert_eq!(
            Format::Ascii(6).encode(&Value::Text("AB12".into())),
            Some(wire.to_vec())
        );
        assert_eq!(reason(Format::Ascii(2), &[0x01, b'A']), REASON_NOT_ASCII);
        assert_eq!(reason(Format::Ascii(2), &[0xFF, 0xFF]), REASON_NO_DATA);
        assert_eq!(reason(Format::Ascii(2), b"A"), REASON_LENGTH);
        assert_eq!(Format::Ascii(2).encode(&Value::Text("ABC".into())), None);

        assert_eq!(Format::Bits(2).decode(&[0x10, 0x00]), Value::Bits(0x0010));
        assert_eq!(Format::Bits(2).decode(&[0x00, 0x01]), Value::Bits(0x0100));
        assert_eq!(
            Format::Bits(2).encode(&Value::Bits(0x0110)),
            Some(vec![0x10, 0x01])
        );
        assert_eq!(Format::Bits(2).encode(&Value::Bits(0x1_0000)), None);
        assert_eq!(reason(Format::Bits(2), &[0x10]), REASON_LENGTH);
        assert_eq!(reason(Format::Bits(5), &[0; 5]), REASON_UNSUPPORTED);

        assert_eq!(Format::Raw(2).decode(&[1, 2]), Value::Raw(vec![1, 2]));
        assert_eq!(reason(Format::Raw(2), &[1]), REASON_LENGTH);
        assert_eq!(Format::Raw(2).encode(&Value::Raw(vec![1])), None);
        // A value of another kind does not encode.
        assert_eq!(Format::ENERGY.encode(&Value::Text("1".into())), None);
        assert_eq!(
            Format::Hhmmss.encode(&Value::Number(Decimal::from_int(1))),
            None
        );
    }

    #[test]
    fn notation() {
        assert_eq!(Format::ENERGY.to_string(), "XXXXXX.XX");
        assert_eq!(Format::bcd(6, 3, true).to_string(), "±XXX.XXX");
        assert_eq!(Format::bcd(3, 0, false).to_string(), "XXX");
        assert_eq!(Format::Demand.to_string(), "XX.XXXX+YYMMDDhhmm");
        assert_eq!(Format::Number(12).to_string(), "N12");
        assert_eq!(Format::Bits(2).to_string(), "bits16");
    }

    #[test]
    fn lengths() {
        assert_eq!(Format::ENERGY.len(), 4);
        assert_eq!(Format::bcd(4, 1, false).len(), 2);
        assert_eq!(Format::bcd(3, 0, false).len(), 2);
        assert_eq!(Format::bcd(6, 4, true).len(), 3);
        assert_eq!(Format::Yymmddww.len(), 4);
        assert_eq!(Format::Hhmmss.len(), 3);
        assert_eq!(Format::Yymmddhhmm.len(), 5);
        assert_eq!(Format::Yymmddhhmmss.len(), 6);
        assert_eq!(Format::Mmddhhmm.len(), 4);
        assert_eq!(Format::Ddhh.len(), 2);
        assert_eq!(Format::Demand.len(), 8);
        assert_eq!(Format::Number(12).len(), 6);
        assert_eq!(Format::Ascii(32).len(), 32);
        assert!(Format::Raw(0).is_empty());
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop_oneof![
            (1u8..=18, 0u8..=6, any::<bool>()).prop_map(|(digits, decimals, signed)| Format::bcd(
                digits,
                decimals.min(digits),
                signed
            )),
            Just(Format::Yymmddww),
            Just(Format::Hhmmss),
            Just(Format::Yymmddhhmm),
            Just(Format::Yymmddhhmmss),
            Just(Format::Mmddhhmm),
            Just(Format::Ddhh),
            Just(Format::Demand),
            (1u8..=18).prop_map(Format::Number),
            (0u8..=40).prop_map(Format::Ascii),
            (1u8..=4).prop_map(Format::Bits),
            (0u8..=16).prop_map(Format::Raw),
        ]
    }

    fn any_time() -> impl Strategy<Value = MeterTime> {
        (
            2000u16..=2099,
            1u8..=12,
            1u8..=31,
            0u8..=6,
            0u8..=23,
            0u8..=59,
            0u8..=59,
        )
            .prop_map(
                |(year, month, day, weekday, hour, minute, second)| MeterTime {
                    year: Some(year),
                    month: Some(month),
                    day: Some(day),
                    weekday: Some(weekday),
                    hour: Some(hour),
                    minute: Some(minute),
                    second: Some(second),
                },
            )
            .prop_filter("a real date", |t| t.validate().is_ok())
    }

    /// A valid value of `f`, restricted to the fields the format carries.
    fn valid_value(f: Format) -> BoxedStrategy<Value> {
        let keep = move |t: MeterTime| {
            let fields = f.time_fields().unwrap_or(&[]);
            let mut out = MeterTime::default();
            for &field in fields {
                if let Some(v) = t.get(field) {
                    out.set(field, v);
                }
            }
            Value::Time(out)
        };
        match f {
            Format::Bcd {
                digits,
                decimals,
                signed,
            } => {
                let max = 10i64.pow(u32::from(digits));
                let max = if signed && digits % 2 == 0 {
                    max / 10 * 8
                } else {
                    max
                };
                let lo = if signed { -(max - 1) } else { 0 };
                (lo..max)
                    .prop_map(move |m| Value::Number(Decimal::new(m, decimals).unwrap()))
                    .boxed()
            }
            Format::Demand => (0i64..1_000_000, any_time())
                .prop_map(move |(m, t)| Value::Demand {
                    value: Decimal::new(m, 4).unwrap(),
                    time: MeterTime {
                        weekday: None,
                        second: None,
                        ..t
                    },
                })
                .boxed(),
            Format::Number(n) => proptest::collection::vec(0u8..10, usize::from(n))
                .prop_map(|d| Value::Text(d.iter().map(|&x| char::from(b'0' + x)).collect()))
                .boxed(),
            Format::Ascii(n) => proptest::collection::vec(0x21u8..=0x7E, 0..=usize::from(n))
                .prop_map(|b| Value::Text(b.iter().map(|&x| char::from(x)).collect()))
                .boxed(),
            Format::Bits(n) => {
                let max = if n >= 4 {
                    u32::MAX
                } else {
                    (1u32 << (8 * u32::from(n))) - 1
                };
                (0..=max).prop_map(Value::Bits).boxed()
            }
            Format::Raw(n) => proptest::collection::vec(any::<u8>(), usize::from(n))
                .prop_map(Value::Raw)
                .boxed(),
            _ => any_time().prop_map(keep).boxed(),
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip((f, v) in any_format().prop_flat_map(|f| (Just(f), valid_value(f)))) {
            let bytes = f.encode(&v).expect("a valid value encodes");
            prop_assert_eq!(bytes.len(), f.len());
            prop_assert_eq!(f.decode(&bytes), v.clone());
            prop_assert_eq!(f.encode(&f.decode(&bytes)), Some(bytes));
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(f in any_format(), bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let v = f.decode(&bytes);
            if bytes.len() != f.len() {
                prop_assert!(!v.is_valid());
            }
            if v.is_valid() {
                // Whatever decodes re-encodes to bytes that decode to the same value.
                let again = f.encode(&v).expect("a decoded value encodes");
                prop_assert_eq!(f.decode(&again), v.clone());
            }
            let _ = v.to_string();
        }

        #[test]
        fn exact_length_bytes_decode_or_flag(f in any_format(), seed in proptest::collection::vec(any::<u8>(), 48)) {
            let bytes = &seed[..f.len().min(seed.len())];
            let v = f.decode(bytes);
            if let Value::Invalid { raw, .. } = &v {
                prop_assert_eq!(raw.as_slice(), bytes);
            }
        }
    }
}
