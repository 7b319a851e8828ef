//! Exact decimal numbers.
//!
//! Meters count energy in packed BCD with an implied decimal point: `76 17 03 00` with the
//! format `XXXXXX.XX` is 317.76 kWh. A bill is computed from that number, so it must travel
//! through the gateway unchanged: 999999.99 must not become 999999.9899999999 on the way.
//! [`Decimal`] keeps the integer mantissa and the number of decimal places the meter gave, and
//! prints exactly those digits. No binary float is involved anywhere on this path.
//!
//! Written by hand because the decimal crates on crates.io (rust_decimal, bigdecimal) are far
//! larger than the 64-bit mantissa plus scale a meter needs, and their serde forms go through
//! strings or floats rather than the plain JSON number the MQTT contract wants.

use std::fmt;
use std::str::FromStr;

/// An exact decimal: `mantissa × 10^-scale`.
///
/// Equality is on the representation: 1.50 (scale 2) and 1.5 (scale 1) differ, because the
/// number of digits a meter reports is part of what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: i64,
    scale: u8,
}

/// The largest number of decimal places a [`Decimal`] carries (i64 holds 18 full digits).
pub const MAX_SCALE: u8 = 18;

/// Why a string is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDecimalError {
    /// Empty input, a stray character, or more than one point.
    #[error("not a decimal number: {0:?}")]
    Syntax(String),
    /// More digits than a 64-bit mantissa or [`MAX_SCALE`] places allow.
    #[error("decimal number out of range: {0:?}")]
    Range(String),
}

impl Decimal {
    /// `mantissa × 10^-scale`; `None` when `scale` exceeds [`MAX_SCALE`].
    pub const fn new(mantissa: i64, scale: u8) -> Option<Self> {
        if scale > MAX_SCALE {
            None
        } else {
            Some(Self { mantissa, scale })
        }
    }

    /// An integer (scale 0).
    pub const fn from_int(value: i64) -> Self {
        Self {
            mantissa: value,
            scale: 0,
        }
    }

    /// The integer mantissa.
    pub const fn mantissa(self) -> i64 {
        self.mantissa
    }

    /// The number of decimal places.
    pub const fn scale(self) -> u8 {
        self.scale
    }

    /// True when the value is negative (a zero is never negative).
    pub const fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The nearest `f64`, for plausibility checks and arithmetic that is not billed.
    /// Never use it to publish a value.
    pub fn to_f64(self) -> f64 {
        // Exact for |mantissa| < 2^53, which covers every BCD field a meter sends.
        self.mantissa as f64 / 10f64.powi(i32::from(self.scale))
    }

    /// Compares two decimals by value, whatever their scales. `None` only when bringing
    /// them to one scale would overflow i128 (never for meter values).
    pub fn cmp_value(self, other: Self) -> Option<std::cmp::Ordering> {
        let scale = self.scale.max(other.scale);
        let a = i128::from(self.mantissa)
            .checked_mul(10i128.checked_pow(u32::from(scale - self.scale))?)?;
        let b = i128::from(other.mantissa)
            .checked_mul(10i128.checked_pow(u32::from(scale - other.scale))?)?;
        Some(a.cmp(&b))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.mantissa < 0;
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let sign = if negative { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

impl FromStr for Decimal {
    type Err = ParseDecimalError;

    /// Parses `[-+]digits[.digits]`, keeping every digit given (so "1.50" has scale 2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ParseDecimalError::Syntax(s.to_owned());
        let range = || ParseDecimalError::Range(s.to_owned());
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (body.contains('.') && frac.is_empty())
        {
            return Err(syntax());
        }
        let scale = u8::try_from(frac.len()).map_err(|_| range())?;
        if scale > MAX_SCALE {
            return Err(range());
        }
        let mut mantissa: i64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(range)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(Self { mantissa, scale })
    }
}

/// `text` (a plain decimal: `-`?digits[`.`digits], no exponent) multiplied by `10^places`,
/// exactly, by moving the decimal point in the text: `shift_decimal_text("1234.5", -3, _)` is
/// `1.2345`. No digit is lost or invented; with `trim` the trailing zeros of the fraction (and
/// a bare point) are dropped, so the shortest text of a float stays the shortest
/// (`"1200"` W → `"1.2"` kW, where without `trim` it is `"1.200"`, keeping an exact
/// decimal's resolution). `None` when `text` is not such a decimal.
pub fn shift_decimal_text(text: &str, places: i8, trim: bool) -> Option<String> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (body.contains('.') && frac.is_empty())
    {
        return None;
    }
    let digits = format!("{int}{frac}");
    // Position of the point in `digits`, counted from the left, after the shift.
    let point = i64::try_from(int.len()).ok()? + i64::from(places);
    let len = i64::try_from(digits.len()).ok()?;
    let (mut int, mut frac) = if point <= 0 {
        let zeros = usize::try_from(-point).ok()?;
        ("0".to_owned(), format!("{}{digits}", "0".repeat(zeros)))
    } else if point >= len {
        let zeros = usize::try_from(point - len).ok()?;
        (format!("{digits}{}", "0".repeat(zeros)), String::new())
    } else {
        let at = usize::try_from(point).ok()?;
        (digits[..at].to_owned(), digits[at..].to_owned())
    };
    let leading = int.len() - int.trim_start_matches('0').len();
    int.drain(..leading.min(int.len().saturating_sub(1)));
    if trim {
        frac.truncate(frac.trim_end_matches('0').len());
    }
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(m: i64, s: u8) -> Decimal {
        Decimal::new(m, s).unwrap()
    }

    #[test]
    fn prints_exactly_the_meters_digits() {
        assert_eq!(d(31776, 2).to_string(), "317.76");
        assert_eq!(d(99999999, 2).to_string(), "999999.99");
        assert_eq!(d(-1234, 3).to_string(), "-1.234");
        assert_eq!(d(0, 2).to_string(), "0.00");
        assert_eq!(d(5, 3).to_string(), "0.005");
        assert_eq!(d(-5, 1).to_string(), "-0.5");
        assert_eq!(d(2394, 1).to_string(), "239.4");
        assert_eq!(d(42, 0).to_string(), "42");
        assert_eq!(d(i64::MIN, 0).to_string(), i64::MIN.to_string());
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("317.76".parse::<Decimal>().unwrap(), d(31776, 2));
        assert_eq!("-0.005".parse::<Decimal>().unwrap(), d(-5, 3));
        assert_eq!("+7".parse::<Decimal>().unwrap(), d(7, 0));
        assert_eq!(".5".parse::<Decimal>().unwrap(), d(5, 1));
        for bad in ["", "-", ".", "1.", "1.2.3", "1e3", " 1", "0x10", "١"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "99999999999999999999".parse::<Decimal>(),
            Err(ParseDecimalError::Range(_))
        ));
    }

    #[test]
    fn compares_by_value_across_scales() {
        use std::cmp::Ordering::*;
        assert_eq!(d(150, 2).cmp_value(d(15, 1)), Some(Equal));
        assert_eq!(d(-1, 0).cmp_value(d(1, 3)), Some(Less));
        assert_eq!(d(31776, 2).cmp_value(d(31775, 2)), Some(Greater));
    }

    #[test]
    fn shifts_the_point_in_the_text() {
        let s = |t, p, trim| shift_decimal_text(t, p, trim).unwrap();
        assert_eq!(s("1234.5", -3, true), "1.2345");
        assert_eq!(s("1234.5", -3, false), "1.2345");
        assert_eq!(s("1200", -3, true), "1.2");
        assert_eq!(s("1200", -3, false), "1.200");
        assert_eq!(s("0.5", -3, true), "0.0005");
        assert_eq!(s("-12.25", -3, true), "-0.01225");
        assert_eq!(s("0", -3, true), "0");
        assert_eq!(s("-0", -3, true), "-0");
        assert_eq!(s("0.00", -3, false), "0.00000");
        assert_eq!(s("1.5", 3, true), "1500");
        assert_eq!(s("0.0012", 3, true), "1.2");
        assert_eq!(s("229.8", 0, true), "229.8");
        for bad in ["", "-", "1.", ".5", "1e3", "+1", "1.2.3", "NaN"] {
            assert_eq!(shift_decimal_text(bad, -3, true), None, "{bad:?}");
        }
    }

    proptest! {
        /// The shifted text is the same number as the decimal multiplied by 10^places.
        #[test]
        fn shifting_is_exact(m in -1_000_000_000i64..1_000_000_000, s in 0u8..=6, places in -6i8..=6) {
            let x = d(m, s);
            let shifted: Decimal = shift_decimal_text(&x.to_string(), places, false).unwrap().parse().unwrap();
            let (a, b) = if places >= 0 {
                (i128::from(x.mantissa()) * 10i128.pow(u32::from(places.unsigned_abs())), i128::from(shifted.mantissa()))
            } else {
                (i128::from(x.mantissa()), i128::from(shifted.mantissa()) * 10i128.pow(u32::from(places.unsigned_abs())))
            };
            // Same scale on both sides: x·10^p has scale s − p.
            let lhs = a * 10i128.pow(u32::from(shifted.scale()));
            let rhs = b * 10i128.pow(u32::from(s));
            prop_assert_eq!(lhs, rhs, "{} shifted {} is {}", x, places, shifted);
            let trimmed: Decimal = shift_decimal_text(&x.to_string(), places, true).unwrap().parse().unwrap();
            prop_assert_eq!(trimmed.cmp_value(shifted), Some(std::cmp::Ordering::Equal));
        }

        #[test]
        fn display_parse_round_trip(m in any::<i64>().prop_filter("min has no positive twin", |m| *m != i64::MIN), s in 0u8..=MAX_SCALE) {
            let x = d(m, s);
            prop_assert_eq!(x.to_string().parse::<Decimal>().unwrap(), x);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Decimal>();
        }
    }
}
