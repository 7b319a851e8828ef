//! Range-checked deserializers: every duration and number of the configuration is refused at
//! parse time when it is outside what the daemon can run with, so the error names the file,
//! line, column and key (through `parse_toml`) instead of a panic or a stall later (a
//! `status_interval` of `0s` used to panic the uplink's timer; a `keepalive` under 5 s panics
//! rumqttc).
//!
//! Use as `deserialize_with = "range::duration::<_, MIN_MS, MAX_MS>"` (bounds inclusive, in
//! milliseconds) and `serialize_with` the unchecked serializer of the same kind.

use std::fmt::Display;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

fn ms(n: u64) -> String {
    humantime::format_duration(Duration::from_millis(n)).to_string()
}

fn check_duration<E: serde::de::Error>(
    d: Duration,
    min_ms: u64,
    max_ms: u64,
) -> Result<Duration, E> {
    let lo = Duration::from_millis(min_ms);
    let hi = Duration::from_millis(max_ms);
    if d < lo || d > hi {
        return Err(E::custom(format!(
            "expected a duration from {} to {}, found {:?}",
            ms(min_ms),
            ms(max_ms),
            humantime::format_duration(d).to_string()
        )));
    }
    Ok(d)
}

/// A duration from `MIN_MS` to `MAX_MS` milliseconds.
pub fn duration<'de, D: Deserializer<'de>, const MIN_MS: u64, const MAX_MS: u64>(
    d: D,
) -> Result<Duration, D::Error> {
    check_duration(super::duration::deserialize(d)?, MIN_MS, MAX_MS)
}

/// An optional duration from `MIN_MS` to `MAX_MS` milliseconds.
pub fn opt_duration<'de, D: Deserializer<'de>, const MIN_MS: u64, const MAX_MS: u64>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration::<D, MIN_MS, MAX_MS>(d).map(Some)
}

fn check_number<T, E>(n: T, min: u64, max: u64) -> Result<T, E>
where
    T: Copy + Display + TryInto<u64>,
    E: serde::de::Error,
{
    match n.try_into() {
        Ok(v) if (min..=max).contains(&v) => Ok(n),
        _ => Err(E::custom(format!("expected {min} to {max}, found {n}"))),
    }
}

/// A whole number from `MIN` to `MAX`.
pub fn number<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + Display + TryInto<u64>,
{
    check_number(T::deserialize(d)?, MIN, MAX)
}

/// An optional whole number from `MIN` to `MAX`.
pub fn opt_number<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + Display + TryInto<u64>,
{
    number::<D, T, MIN, MAX>(d).map(Some)
}

/// A size in bytes (`"64MiB"` or a number) from `MIN` to `MAX`.
pub fn byte_size<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<u64, D::Error> {
    let n = super::byte_size::deserialize(d)?;
    if !(MIN..=MAX).contains(&n) {
        return Err(D::Error::custom(format!(
            "expected a size from {MIN} to {MAX} bytes, found {n}"
        )));
    }
    Ok(n)
}
