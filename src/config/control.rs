//! `[control]`: fee-control commands from the billing core (`meterd.command.v1`). Off unless the
//! section is present. Plain data and its checks: the public keys that may sign commands (by
//! `key_id`, several at once for rotation), where the meters' control passwords are kept, and
//! the policy the gateway enforces whatever the core sends. The verification, policy decisions
//! and audit are the `control` room's.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::UtcOffset;

/// Fee-control settings (`[control]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The billing core's Ed25519 public keys (`[[control.key]]`): a command names its key by
    /// `key_id`. Keep the old key listed until the core has stopped signing with it.
    #[serde(rename = "key")]
    pub keys: Vec<ControlKey>,
    /// The meters' control passwords and operator codes (a TOML file, see docs/operations.md);
    /// relative to the configuration file's directory. Read at start; refused when others
    /// (not owner or group) may read it. Not needed when every meter is an ESAM meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// A `trip` is refused unless an `alarm` on the same meter was done at least this long
    /// before (and not released since): the customer was warned on the meter.
    #[serde(
        default = "default_trip_notice",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 2_592_000_000>"
    )]
    pub trip_notice: Duration,
    /// Whether a signed `override_policy: true` may skip the trip notice, quiet hours,
    /// holidays and the rate limit. Off by default: then the flag is refused.
    #[serde(default)]
    pub allow_override: bool,
    /// The time zone of `quiet_hours`, `quiet_days` and `holidays` (the customers' local
    /// time, e.g. `"+08:00"`); the gateway's clock is UTC.
    #[serde(default = "default_offset")]
    pub utc_offset: UtcOffset,
    /// Local times in which trips are refused, each `"HH:MM-HH:MM"` (may wrap midnight:
    /// `"17:00-08:00"`).
    #[serde(default, deserialize_with = "quiet_hours")]
    pub quiet_hours: Vec<QuietHours>,
    /// Local weekdays on which trips are refused all day (`"fri"`, `"sat"`, `"sun"`, …).
    #[serde(default, deserialize_with = "weekdays")]
    pub quiet_days: Vec<u32>,
    /// Local dates on which trips are refused all day, `"YYYY-MM-DD"`.
    #[serde(default, deserialize_with = "dates")]
    pub holidays: Vec<String>,
    /// Most commands accepted per meter within `rate_window` (restoring supply is never
    /// counted against it, nor refused by it).
    #[serde(
        default = "default_rate_limit",
        deserialize_with = "super::range::number::<_, _, 1, 1000>"
    )]
    pub rate_limit: u32,
    /// The window of `rate_limit`.
    #[serde(
        default = "default_rate_window",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 604_800_000>"
    )]
    pub rate_window: Duration,
    /// The longest validity a command may claim (`not_after - issued_at`): bounds how long a
    /// signed command could be replayed if it were not remembered.
    #[serde(
        default = "default_max_validity",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 604_800_000>"
    )]
    pub max_validity: Duration,
    /// How far in the future `issued_at` may be (the core's clock and ours differ a little).
    #[serde(
        default = "default_clock_skew",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 600_000>"
    )]
    pub clock_skew: Duration,
    /// How long the relay is read back (status word 3) waiting for it to match the action.
    #[serde(
        default = "default_read_back_for",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 300_000>"
    )]
    pub read_back_for: Duration,
}

/// One public key (`[[control.key]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlKey {
    /// The name a command gives in `key_id`.
    pub key_id: String,
    /// The raw 32-byte Ed25519 public key, base64 (standard alphabet, padded).
    #[serde(deserialize_with = "public_key")]
    pub public_key: String,
}

impl ControlKey {
    /// The key's 32 bytes (checked when the configuration was parsed).
    pub fn bytes(&self) -> Option<[u8; 32]> {
        decode_key(&self.public_key).ok()
    }
}

/// A daily quiet period in local time, minutes after midnight; `from > to` wraps midnight.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct QuietHours {
    /// Start, minutes after local midnight (inclusive).
    pub from: u16,
    /// End, minutes after local midnight (exclusive).
    pub to: u16,
}

impl QuietHours {
    /// Whether `minute` (after local midnight) is inside.
    pub fn contains(self, minute: u16) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

fn default_trip_notice() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_offset() -> UtcOffset {
    UtcOffset::CHINA
}
fn default_rate_limit() -> u32 {
    6
}
fn default_rate_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_validity() -> Duration {
    Duration::from_secs(3600)
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_read_back_for() -> Duration {
    Duration::from_secs(30)
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("public_key is not base64: {e}"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "public_key must be a raw 32-byte Ed25519 key, found {} bytes",
            b.len()
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|e| format!("public_key is not a valid Ed25519 point: {e}"))?;
    Ok(key)
}

fn public_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    decode_key(&text).map_err(serde::de::Error::custom)?;
    Ok(text)
}

/// `"HH:MM"` → minutes after midnight.
fn hh_mm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Parses `"HH:MM-HH:MM"`.
pub fn parse_quiet_hours(s: &str) -> Result<QuietHours, String> {
    let bad = || format!("expected \"HH:MM-HH:MM\" (e.g. \"17:00-08:00\"), found {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (from, to) = (
        hh_mm(a.trim()).ok_or_else(bad)?,
        hh_mm(b.trim()).ok_or_else(bad)?,
    );
    if from == to {
        return Err(format!("{s:?} is empty (start equals end)"));
    }
    Ok(QuietHours { from, to })
}

fn quiet_hours<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QuietHours>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_quiet_hours(s).map_err(serde::de::Error::custom))
        .collect()
}

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn weekdays<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            WEEKDAYS
                .iter()
                .position(|w| w.eq_ignore_ascii_case(s))
                .map(|i| i as u32)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "expected one of {}, found {s:?}",
                        WEEKDAYS.join(", ")
                    ))
                })
        })
        .collect()
}

/// `"YYYY-MM-DD"` with a real month and day.
pub fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        s[0..4].parse::<i64>(),
        s[5..7].parse::<u32>(),
        s[8..10].parse::<u32>(),
    ) else {
        return false;
    };
    if !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let days = crate::clock::days_from_civil(y, m, d);
    crate::clock::civil_from_days(days) == (y, m, d)
}

fn dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    for s in &v {
        if !valid_date(s) {
            return Err(serde::de::Error::custom(format!(
                "expected a date \"YYYY-MM-DD\", found {s:?}"
            )));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        control: ControlConfig,
    }

    const KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    fn parse(extra: &str) -> Result<ControlConfig, String> {
        let text = format!(
            "[control]\n{extra}\n[[control.key]]\nkey_id = \"k1\"\npublic_key = \"{KEY}\"\n"
        );
        toml::from_str::<T>(&text)
            .map(|t| t.control)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_conservative() {
        let c = parse("").unwrap();
        assert_eq!(c.trip_notice, Duration::from_secs(86_400));
        assert!(!c.allow_override);
        assert_eq!(c.utc_offset, UtcOffset::CHINA);
        assert!(c.keys[0].bytes().is_some());
    }

    #[test]
    fn the_commented_example_in_the_shipped_configuration_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meterd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != "# [control]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert!(block.contains("[[control.key]]"), "{block}");
        let c = toml::from_str::<T>(&block).unwrap().control;
        assert_eq!(c.quiet_days, [6, 0]);
        assert!(c.keys[0].bytes().is_some());
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let q = parse_quiet_hours("17:00-08:00").unwrap();
        assert!(
            q.contains(17 * 60) && q.contains(23 * 60 + 59) && q.contains(0) && q.contains(479)
        );
        assert!(!q.contains(480) && !q.contains(12 * 60));
        let q = parse_quiet_hours("12:00-13:30").unwrap();
        assert!(q.contains(720) && q.contains(809) && !q.contains(810) && !q.contains(719));
        for bad in ["", "17-08", "25:00-01:00", "10:00-10:00", "10:00"] {
            assert!(parse_quiet_hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = parse("quiet_hours = [\"22:00\"]").unwrap_err();
        assert!(e.contains("HH:MM-HH:MM"), "{e}");
        let e = parse("holidays = [\"2026-02-30\"]").unwrap_err();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
        let e = parse("quiet_days = [\"friday\"]").unwrap_err();
        assert!(e.contains("fri"), "{e}");
        let e = parse("bogus = 1").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = toml::from_str::<T>(
            "[control]\n[[control.key]]\nkey_id = \"k\"\npublic_key = \"AAAA\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("32-byte"), "{e}");
        assert!(parse("holidays = [\"2028-02-29\"]").is_ok());
    }
}
