//! The meter event (`meterd.event.v1`): one occurrence of something the meter counted (cover
//! opened, power down, meter clear, clock set, programming) or the gateway found (a meter clock
//! off, a time sync sent), as the billing core receives it.
//!
//! A meter's event is numbered by the meter's own counter: reading the same occurrence twice
//! gives the same id (`{gateway}/{meter}/{type}/{n}`), so the consumer keeps one. A gateway's
//! event (`clock_drift`, `time_sync`) is numbered by the gateway, per meter, durably (the
//! spool hands out the number in the transaction that stores it).

use meter_protocols::dlt645::MeterDateTime;
use serde::{Deserialize, Serialize};

use crate::clock::UtcOffset;

/// Schema name of an event.
pub const EVENT_SCHEMA: &str = "meterd.event.v1";

/// Types the gateway makes itself (numbered by the gateway, not by a meter counter).
pub const GATEWAY_TYPES: [&str; 2] = ["clock_drift", "time_sync"];

/// Whether `ty` is numbered by the gateway.
pub fn is_gateway_type(ty: &str) -> bool {
    GATEWAY_TYPES.contains(&ty)
}

/// One event of one meter, as published on `…/meters/{meter}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterEvent {
    /// Always [`EVENT_SCHEMA`].
    pub schema: String,
    /// `{gateway}/{meter}/{type}/{n}`: the dedup key.
    pub id: String,
    /// Gateway id.
    pub gateway: String,
    /// Meter id.
    pub meter: String,
    /// `cover_open`, `power_down`, `meter_clear`, `clock_set`, `programming`, `clock_drift`,
    /// `time_sync`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The meter's counter value of this occurrence, or the gateway's event number.
    pub n: u64,
    /// When it started (meter events: the meter's record, in its zone, with the offset;
    /// gateway events: gateway UTC time); `null` when the record is unreadable or beyond the
    /// meter's history.
    pub started_at: Option<String>,
    /// When it ended; `null` for kinds with no end or an event still going on.
    pub ended_at: Option<String>,
    /// Gateway UTC time of the read, RFC 3339 with milliseconds.
    pub read_at: String,
    /// What else the record says (operator, clock before/after, offsets…).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Raw response frames in hex, the evidence (empty for gateway events other than their
    /// clock reads, or when evidence is off).
    #[serde(default)]
    pub frames: Vec<String>,
}

impl MeterEvent {
    /// An event of `ty` numbered `n`; times and details are filled by the caller.
    pub fn new(gateway: &str, meter: &str, ty: &str, n: u64, read_at: &str) -> MeterEvent {
        MeterEvent {
            schema: EVENT_SCHEMA.to_owned(),
            id: event_id(gateway, meter, ty, n),
            gateway: gateway.to_owned(),
            meter: meter.to_owned(),
            ty: ty.to_owned(),
            n,
            started_at: None,
            ended_at: None,
            read_at: read_at.to_owned(),
            details: serde_json::Map::new(),
            frames: Vec::new(),
        }
    }

    /// Renumbers the event (the spool does this for gateway events).
    pub fn renumber(&mut self, n: u64) {
        self.n = n;
        self.id = event_id(&self.gateway, &self.meter, &self.ty, n);
    }
}

/// What a bus hands up about events: an event to store and publish, or a meter's counter to
/// remember without publishing anything (first contact, or a counter that went backwards).
#[derive(Debug, Clone, PartialEq)]
pub enum EventNote {
    /// An event. A meter event whose `n` is not above the stored counter is already stored
    /// and is skipped; a gateway event is numbered when stored.
    Event(MeterEvent),
    /// The counter of `ty` of `meter` is `n` now: stored as the last one seen, no event.
    Baseline {
        /// Meter id.
        meter: String,
        /// Event type.
        ty: String,
        /// Counter value.
        n: u64,
    },
    /// The meter's clock was compared with the gateway's. Not stored; ingest marks the
    /// meter's readings by it while `off`.
    ClockChecked {
        /// Meter id.
        meter: String,
        /// Meter minus gateway time, ms.
        offset_ms: i64,
        /// Beyond the limit.
        off: bool,
        /// What was done (`time_sync`, why not, or "within the limit").
        note: String,
    },
}

/// `{gateway}/{meter}/{type}/{n}`.
pub fn event_id(gateway: &str, meter: &str, ty: &str, n: u64) -> String {
    format!("{gateway}/{meter}/{ty}/{n}")
}

/// A meter time (its local wall clock) as RFC 3339 with the meter's offset:
/// `2026-12-07T08:15:30+08:00`.
pub fn meter_time_text(t: MeterDateTime, offset: UtcOffset) -> String {
    format!(
        "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A meter time as "local milliseconds": its wall time read as if it were UTC.
pub fn local_ms(t: MeterDateTime) -> i64 {
    let days = meter_protocols::calendar::days_from_civil(
        2000 + i64::from(t.year()),
        u32::from(t.month()),
        u32::from(t.day()),
    );
    days * 86_400_000
        + (i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())) * 1000
}

/// Local milliseconds as a meter time (sub-second part dropped); `None` outside 2000..=2099.
pub fn meter_time_at(local: i64) -> Option<MeterDateTime> {
    let days = local.div_euclid(86_400_000);
    let secs = local.rem_euclid(86_400_000) / 1000;
    let (y, m, d) = meter_protocols::calendar::civil_from_days(days);
    let y = u8::try_from(y.checked_sub(2000)?).ok()?;
    MeterDateTime::new(
        y,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
        u8::try_from(secs / 3600).ok()?,
        u8::try_from(secs / 60 % 60).ok()?,
        u8::try_from(secs % 60).ok()?,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_fields_follow_the_pinned_contract() {
        let mut e = MeterEvent::new(
            "gw-01",
            "000000123456",
            "cover_open",
            7,
            "2026-12-07T08:20:00.000Z",
        );
        assert_eq!(e.id, "gw-01/000000123456/cover_open/7");
        e.started_at = Some(meter_time_text(
            MeterDateTime::new(26, 12, 7, 8, 15, 30).unwrap(),
            UtcOffset::CHINA,
        ));
        assert_eq!(e.started_at.as_deref(), Some("2026-12-07T08:15:30+08:00"));
        let json = serde_json::to_value(&e).unwrap();
        for key in [
            "schema",
            "id",
            "gateway",
            "meter",
            "type",
            "n",
            "started_at",
            "ended_at",
            "read_at",
            "details",
            "frames",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["type"], "cover_open");
        assert!(json["ended_at"].is_null());
        let t = MeterDateTime::new(26, 12, 7, 8, 15, 30).unwrap();
        assert_eq!(meter_time_at(local_ms(t)), Some(t));
        assert_eq!(meter_time_at(-1), None);
        e.renumber(9);
        assert_eq!(e.id, "gw-01/000000123456/cover_open/9");
        assert!(is_gateway_type("time_sync") && !is_gateway_type("power_down"));
    }
}
