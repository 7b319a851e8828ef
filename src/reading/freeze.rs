//! The freeze record (`meterd.freeze.v1`): one of the meter's own settlement records, keyed
//! by the stamp the meter gave it, as the billing core receives it.
//!
//! A reading says what a register held when the gateway asked; a freeze says what the meter
//! itself froze at its settlement instant (midnight, the settlement day, the whole hour). The
//! id is built from the stamp, not from a sequence number, so reading the same record twice
//! (back-fill, redelivery, a second gateway) gives the same id.

use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute};
use serde::{Deserialize, Serialize};

use super::ReadingValue;
use crate::clock::UtcOffset;

/// Schema name of a freeze record.
pub const FREEZE_SCHEMA: &str = "meterd.freeze.v1";

/// One settlement record of one meter, as published on `…/meters/{meter}/freezes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// Always [`FREEZE_SCHEMA`].
    pub schema: String,
    /// `{gateway}/{meter}/{kind}/{frozen_at as YYYY-MM-DDTHH:MM±HH:MM}`: the same record read
    /// twice has the same id.
    pub id: String,
    /// Gateway id.
    pub gateway: String,
    /// Meter id.
    pub meter: String,
    /// `dlt645-2007`.
    pub protocol: String,
    /// `daily`, `monthly` or `hourly`.
    pub kind: String,
    /// The meter's stamp in its own time zone, with the offset:
    /// `2026-12-07T00:00:00+08:00`.
    pub frozen_at: String,
    /// Gateway UTC time of the read, RFC 3339 with milliseconds.
    pub read_at: String,
    /// True when the record was read later than its normal collection (re-read of a missed
    /// record).
    pub backfill: bool,
    /// The frozen values, quantity names without a snapshot suffix.
    pub values: Vec<ReadingValue>,
    /// Raw response frames in hex, the evidence behind the values.
    #[serde(default)]
    pub frames: Vec<String>,
}

/// Where a record comes from and when it was read: everything but its values.
#[derive(Debug, Clone)]
pub struct FreezeOrigin<'a> {
    /// Gateway id.
    pub gateway: &'a str,
    /// Meter id.
    pub meter: &'a str,
    /// Protocol name.
    pub protocol: &'a str,
    /// The meter's time zone.
    pub offset: UtcOffset,
    /// Gateway UTC time of the read (RFC 3339).
    pub read_at: &'a str,
}

impl FreezeRecord {
    /// A record of `kind` stamped `stamp` (meter local time) with its values and frames.
    pub fn new(
        origin: &FreezeOrigin<'_>,
        kind: FreezeKind,
        stamp: LocalMinute,
        backfill: bool,
        values: Vec<ReadingValue>,
        frames: Vec<String>,
    ) -> FreezeRecord {
        let key = format!("{stamp}{}", origin.offset);
        FreezeRecord {
            schema: FREEZE_SCHEMA.to_owned(),
            id: format!("{}/{}/{}/{key}", origin.gateway, origin.meter, kind.name()),
            gateway: origin.gateway.to_owned(),
            meter: origin.meter.to_owned(),
            protocol: origin.protocol.to_owned(),
            kind: kind.name().to_owned(),
            frozen_at: format!("{stamp}:00{}", origin.offset),
            read_at: origin.read_at.to_owned(),
            backfill,
            values,
            frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_stamp_follow_the_pinned_contract() {
        let origin = FreezeOrigin {
            gateway: "gw-01",
            meter: "000000123456",
            protocol: "dlt645-2007",
            offset: UtcOffset::CHINA,
            read_at: "2026-12-07T00:06:41.200Z",
        };
        let stamp = LocalMinute::from_civil(2026, 12, 7, 0, 0);
        let r = FreezeRecord::new(&origin, FreezeKind::Daily, stamp, false, vec![], vec![]);
        assert_eq!(r.id, "gw-01/000000123456/daily/2026-12-07T00:00+08:00");
        assert_eq!(r.frozen_at, "2026-12-07T00:00:00+08:00");
        assert_eq!(r.schema, "meterd.freeze.v1");
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "schema",
            "id",
            "gateway",
            "meter",
            "protocol",
            "kind",
            "frozen_at",
            "read_at",
            "backfill",
            "values",
            "frames",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
