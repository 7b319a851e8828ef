//! The reading batch: all values of one poll of one meter, as the billing core receives it.
//!
//! This is the `meterd.reading.v1` object of the MQTT contract (docs/mqtt.md): the same struct
//! is published by the uplink, printed by `meterd read --json` and stored in the spool, so the
//! three never drift apart. Numbers are carried as exact JSON number text: a BCD reading of
//! 12345.67 is written `12345.67`, and a Modbus float32 as the float's shortest round-trip
//! form, never widened through f64.

use std::fmt;
use std::time::SystemTime;

use meter_protocols::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub mod event;
pub mod freeze;

/// Schema name of a reading batch.
pub const READING_SCHEMA: &str = "meterd.reading.v1";

/// The quality of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Decoded from a verified frame and plausible.
    Good,
    /// Decoded, but implausible (register went backwards, out of physical range, clock off…).
    Suspect,
    /// No value (timeout, error reply, checksum failure, unsupported item).
    Bad,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quality::Good => "good",
            Quality::Suspect => "suspect",
            Quality::Bad => "bad",
        })
    }
}

/// A JSON number kept as the exact text the meter's digits give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactNumber(String);

impl ExactNumber {
    /// From an exact decimal.
    pub fn from_decimal(d: Decimal) -> Self {
        Self(d.to_string())
    }

    /// From an f32, in shortest round-trip form; `None` for NaN and infinities (JSON has none).
    /// Rust's `Display` for floats is shortest round-trip and never uses an exponent, so the
    /// text is always a valid JSON number.
    pub fn from_f32(v: f32) -> Option<Self> {
        v.is_finite().then(|| Self(v.to_string()))
    }

    /// From an f64, in shortest round-trip form; `None` for NaN and infinities.
    pub fn from_f64(v: f64) -> Option<Self> {
        v.is_finite().then(|| Self(v.to_string()))
    }

    /// This number times `10^places`, exactly, by moving the point in its text (a unit
    /// conversion: W → kW is -3). `trim` drops trailing zeros of the fraction: for a float's
    /// shortest text (1200 W → 1.2 kW), not for an exact decimal whose digits are its
    /// resolution (1200.0 W → 1.2000 kW). `None` only for text that is not a plain decimal.
    pub fn shifted(&self, places: i8, trim: bool) -> Option<Self> {
        if places == 0 {
            return Some(self.clone());
        }
        meter_protocols::decimal::shift_decimal_text(&self.0, places, trim).map(Self)
    }

    /// Again from the text of an `ExactNumber` (kept by the status page's last batches).
    pub(crate) fn from_kept_text(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The number's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExactNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ExactNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ExactNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        let first = text.as_bytes().first().copied();
        if matches!(first, Some(b'-' | b'0'..=b'9')) {
            Ok(Self(text.to_owned()))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a number, found {text}"
            )))
        }
    }
}

/// What a value is: a number, or text for items that are not numbers (dates, meter numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ValueData {
    /// An exact number.
    Number(ExactNumber),
    /// A text value (a date, a time, a meter number, a status word in hex).
    Text(String),
}

// By hand: serde's untagged enums buffer their input, which loses the raw number text.
impl<'de> Deserialize<'de> for ValueData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            serde_json::from_str(text)
                .map(ValueData::Text)
                .map_err(serde::de::Error::custom)
        } else if matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
            Ok(ValueData::Number(ExactNumber(text.to_owned())))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a number or a string, found {text}"
            )))
        }
    }
}

/// One value of a reading batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingValue {
    /// Canonical quantity name (docs/quantities.md).
    pub quantity: Label,
    /// The value, or null when quality is bad.
    pub value: Option<ValueData>,
    /// Unit (`kWh`, `V`, …; empty for dimensionless).
    pub unit: Label,
    /// OBIS code where one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obis: Option<Label>,
    /// Where the value came from: `dlt645:00010000`, `modbus:fc04:0x0048:f32:abcd`.
    pub source: Label,
    /// Good, suspect or bad.
    pub quality: Quality,
    /// Why the quality is not good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The meter's own time stamp for the value (max demand time, freeze time), ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_time: Option<String>,
}

/// A name that every reading of a meter repeats (quantity, unit, OBIS code, source): shared,
/// so that a poll copies a pointer per value instead of four strings.
pub type Label = std::sync::Arc<str>;

/// All values of one poll of one meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingBatch {
    /// Always [`READING_SCHEMA`].
    pub schema: String,
    /// Deduplication key `{gateway}/{meter}/{seq}`: stable across redelivery and restarts.
    pub id: String,
    /// Gateway id.
    pub gateway: String,
    /// Meter id (DL/T 645 address, or the configured name of a Modbus meter).
    pub meter: String,
    /// `dlt645-2007`, `dlt645-1997`, `modbus-rtu` or `modbus-tcp`.
    pub protocol: String,
    /// Per-meter sequence number, +1 per batch, survives restarts.
    pub seq: u64,
    /// Gateway UTC time of the response, RFC 3339 with milliseconds.
    pub read_at: String,
    /// The values.
    pub values: Vec<ReadingValue>,
    /// Raw response frames in hex, the evidence behind the values (empty when disabled).
    #[serde(default)]
    pub frames: Vec<String>,
    /// Register groups whose total and every tariff register came in one block reply of this
    /// poll (see [`TariffBlock`]). Known to the gateway only: not published, not stored.
    #[serde(skip)]
    pub tariff_blocks: Vec<TariffBlock>,
    /// The meter's time zone, for comparing its clock with the gateway's (DL/T 645 meters
    /// keep local time); `None`: UTC. Known to the gateway only: not published, not stored.
    #[serde(skip)]
    pub utc_offset: Option<crate::clock::UtcOffset>,
}

/// A register group (`energy.active.import`) read whole in one reply: a DL/T 645
/// "total + tariffs" block (`0001FF00`, `901F`…) holds the total and as many tariff registers as
/// the meter has, so the reply's length says the meter's tariff count. Only then (or when the
/// batch holds the meter's `meter.tariff_count`) can validation compare the sum of the
/// tariffs with the total: a profile that reads some tariffs one by one does not say how many
/// the meter has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffBlock {
    /// The quantity name of the total without `.total` (`energy.active.import`).
    pub group: Label,
    /// How many tariff registers the reply held (t1..tN).
    pub tariffs: u8,
}

impl ReadingBatch {
    /// A new batch; `id` is derived from gateway, meter and seq.
    pub fn new(gateway: &str, meter: &str, protocol: &str, seq: u64, read_at: SystemTime) -> Self {
        Self {
            schema: READING_SCHEMA.to_owned(),
            id: format!("{gateway}/{meter}/{seq}"),
            gateway: gateway.to_owned(),
            meter: meter.to_owned(),
            protocol: protocol.to_owned(),
            seq,
            read_at: rfc3339_millis(read_at),
            values: Vec::new(),
            frames: Vec::new(),
            tariff_blocks: Vec::new(),
            utc_offset: None,
        }
    }
}

/// True for cumulative registers that must never decrease: import/export/quadrant energies,
/// current values only. Combined registers are sums with signs chosen by the meter, so they
/// may fall; snapshots (`@settlement-1`) move to another period and are not compared.
///
/// The one rule for "cumulative": validation compares these with the meter's last good value,
/// the spool keeps that value durably, and `ingest::RegisterMemory` caches it.
pub fn is_cumulative(quantity: &str) -> bool {
    quantity.starts_with("energy.") && !quantity.contains(".combined") && !quantity.contains('@')
}

pub use crate::clock::rfc3339_millis;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> ReadingBatch {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_777_201_234);
        let mut b = ReadingBatch::new("gw-01", "000000123456", "dlt645-2007", 42, t);
        b.values.push(ReadingValue {
            quantity: "energy.active.import.total".into(),
            value: Some(ValueData::Number(ExactNumber::from_decimal(
                Decimal::new(99_999_999, 2).unwrap(),
            ))),
            unit: "kWh".into(),
            obis: Some("1-0:1.8.0".into()),
            source: "dlt645:00010000".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        });
        b.values.push(ReadingValue {
            quantity: "voltage.l1".into(),
            value: Some(ValueData::Number(ExactNumber::from_f32(229.8).unwrap())),
            unit: "V".into(),
            obis: None,
            source: "modbus:fc04:0x0000:f32:abcd".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        });
        b.values.push(ReadingValue {
            quantity: "energy.active.import.t1".into(),
            value: None,
            unit: "kWh".into(),
            obis: None,
            source: "dlt645:00010100".into(),
            quality: Quality::Bad,
            reason: Some("meter reported no data".into()),
            meter_time: None,
        });
        b
    }

    #[test]
    fn numbers_keep_the_meters_digits_in_json() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert!(json.contains(r#""value":999999.99"#), "{json}");
        assert!(json.contains(r#""value":229.8"#), "{json}");
        assert!(json.contains(r#""value":null"#), "{json}");
        assert!(json.contains(r#""id":"gw-01/000000123456/42""#), "{json}");
        assert!(json.contains(r#""read_at":"2026-11-27T"#), "{json}");
        assert!(
            json.contains(r#""quality":"bad","reason":"meter reported no data""#),
            "{json}"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let b = sample();
        let back: ReadingBatch = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn floats_that_json_cannot_hold_are_refused() {
        assert_eq!(ExactNumber::from_f32(f32::NAN), None);
        assert_eq!(ExactNumber::from_f64(f64::INFINITY), None);
        assert_eq!(ExactNumber::from_f32(1e-7).unwrap().as_str(), "0.0000001");
    }
}
