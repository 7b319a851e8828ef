//! Retained status payloads: `meterd.gateway-status.v1` and `meterd.meter-status.v1`.
//!
//! The health room owns a meter's numbers ([`MeterHealth`]); this module only shapes them into
//! the contract's JSON
//! (docs/mqtt.md, docs/schema/*.json). Fields may be added within v1, never removed.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::health::success::GroupSuccess;
use crate::health::{MeterHealth, MeterState};
use crate::reading::rfc3339_millis;

/// Schema name of the gateway status.
pub const GATEWAY_STATUS_SCHEMA: &str = "meterd.gateway-status.v1";
/// Schema name of a meter status.
pub const METER_STATUS_SCHEMA: &str = "meterd.meter-status.v1";

/// The spool's numbers as the gateway status publishes them (built from the spool's own
/// [`crate::spool::SpoolStats`]), read by the uplink each time it publishes the gateway status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolSummary {
    /// Readings waiting for the broker's acknowledgement.
    pub depth: u64,
    /// Bytes those readings take.
    pub bytes: u64,
    /// Readings dropped because the spool was full, or alone larger than the whole spool
    /// (ever: the count is kept in the spool). Each had a `seq`: a consumer sees a gap.
    pub dropped: u64,
    /// Readings dropped from memory before they had a `seq`, because the spool could not be
    /// written for too long (ever, kept in the spool once it can be written). Not seen as
    /// gaps: this counter is the only trace. Defaulted when read from an older daemon.
    #[serde(default)]
    pub dropped_in_memory: u64,
}

impl From<&crate::spool::SpoolStats> for SpoolSummary {
    fn from(s: &crate::spool::SpoolStats) -> Self {
        Self {
            depth: s.depth,
            bytes: s.bytes,
            dropped: s.dropped_batches,
            dropped_in_memory: s.dropped_in_memory,
        }
    }
}

/// The reading success rate (the concentrator KPI) of all meters, in the gateway status: meters
/// with at least one successful scheduled poll ÷ meters configured. Optional within v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingSuccess {
    /// The UTC day `*_today` refers to (`YYYY-MM-DD`).
    pub day: String,
    /// Meters that should be read (every configured meter).
    pub meters: u64,
    /// Meters with a successful poll since 00:00 UTC.
    pub meters_read_today: u64,
    /// meters_read_today ÷ meters; null without meters.
    pub rate_today: Option<f64>,
    /// Meters with a successful poll in the last 24 hours.
    pub meters_read_24h: u64,
    /// meters_read_24h ÷ meters; null without meters.
    pub rate_24h: Option<f64>,
}

impl From<&GroupSuccess> for ReadingSuccess {
    /// The gateway's reading success as published: the whole gateway's group of the book.
    fn from(g: &GroupSuccess) -> Self {
        Self {
            day: g.day.clone(),
            meters: g.meters,
            meters_read_today: g.today.meters_read,
            rate_today: g.today.rate,
            meters_read_24h: g.last_24h.meters_read,
            rate_24h: g.last_24h.rate,
        }
    }
}

/// The uplink's refusal numbers in the gateway status. Optional within v1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkSummary {
    /// Reading publishes an MQTT 5 broker refused with a PUBACK failure reason code since start,
    /// every attempt counted.
    pub publishes_refused: u64,
    /// Readings refused and not accepted since: still in the spool (part of `spool.depth`),
    /// published again with backoff. Their `seq`s are the gaps a consumer sees.
    pub refused_waiting: u64,
}

/// Gateway online/offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayState {
    /// Connected and publishing.
    Online,
    /// Shut down cleanly, or (as the MQTT last will) the connection was lost.
    Offline,
}

/// The retained `{prefix}/{gateway}/status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Always [`GATEWAY_STATUS_SCHEMA`].
    pub schema: String,
    /// Gateway id.
    pub gateway: String,
    /// Online or offline.
    pub state: GatewayState,
    /// Why offline: `shutdown` (clean stop) or `connection-lost` (the last will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// meterd version.
    pub version: String,
    /// When this message was made (for the last will: when the connection that registered it
    /// was opened), RFC 3339 UTC with milliseconds.
    pub at: String,
    /// When the daemon started.
    pub started_at: String,
    /// Seconds since start, at `at`, by the monotonic clock (a step of the wall clock does not
    /// change it).
    pub uptime_s: u64,
    /// Spool numbers at `at`.
    pub spool: SpoolSummary,
    /// Reading success rates at `at` (absent when the daemon gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading_success: Option<ReadingSuccess>,
    /// The uplink's refusal numbers at `at` (absent from older gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSummary>,
    /// Steps of the gateway's wall clock seen since start (more than 1 s against the monotonic
    /// clock; the buses kept their pace and realigned their slots to the new time).
    #[serde(default)]
    pub clock_steps: u64,
}

impl GatewayStatus {
    /// Build a status message.
    pub fn new(
        gateway: &str,
        state: GatewayState,
        reason: Option<&str>,
        started: SystemTime,
        now: SystemTime,
        spool: SpoolSummary,
    ) -> Self {
        Self {
            schema: GATEWAY_STATUS_SCHEMA.to_owned(),
            gateway: gateway.to_owned(),
            state,
            reason: reason.map(str::to_owned),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            at: rfc3339_millis(now),
            started_at: rfc3339_millis(started),
            uptime_s: now.duration_since(started).map_or(0, |d| d.as_secs()),
            spool,
            reading_success: None,
            uplink: None,
            clock_steps: 0,
        }
    }
}

/// Per-meter counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterCounters {
    /// Polls attempted.
    pub polls: u64,
    /// Polls that produced at least one good value.
    pub successes: u64,
    /// Polls that produced no value.
    pub failures: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Frames refused (checksum/CRC, address or function mismatch).
    pub bad_frames: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// This meter's readings dropped by the spool (full, or one reading larger than it), ever:
    /// each is a `seq` gap. Absent when the daemon gives no spool numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// This meter's readings dropped from memory before they had a `seq` (the spool could not
    /// be written for too long), ever: not gaps, seen only here. Absent like `dropped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_in_memory: Option<u64>,
}

/// A meter's drop counters as the spool keeps them, for [`MeterCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterDrops {
    /// Dropped with a `seq` (gaps).
    pub dropped: u64,
    /// Dropped from memory, without a `seq`.
    pub dropped_in_memory: u64,
}

impl MeterCounters {
    /// With the spool's drop counters of the meter.
    pub fn with_drops(mut self, drops: Option<MeterDrops>) -> Self {
        if let Some(d) = drops {
            self.dropped = Some(d.dropped);
            self.dropped_in_memory = Some(d.dropped_in_memory);
        }
        self
    }
}

/// The retained `{prefix}/{gateway}/meters/{meter}/status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterStatusMessage {
    /// Always [`METER_STATUS_SCHEMA`].
    pub schema: String,
    /// Gateway id.
    pub gateway: String,
    /// Meter id.
    pub meter: String,
    /// ok, degraded or unreachable.
    pub state: MeterState,
    /// When the status was taken.
    pub at: String,
    /// The last successful poll, or null if none since start.
    pub last_success: Option<String>,
    /// The last error, or null.
    pub last_error: Option<String>,
    /// Counters since start.
    pub counters: MeterCounters,
    /// The meter's last clock check, when there was one (added within v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<MeterClockStatus>,
}

/// A meter's last clock check, in its status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterClockStatus {
    /// Gateway UTC time of the check.
    pub checked_at: String,
    /// Meter minus gateway time, seconds.
    pub offset_s: f64,
    /// Beyond the limit.
    pub off: bool,
    /// What was done: `time_sync`, why not (an offset of 5 min or more needs a technician…),
    /// or "within the limit".
    pub note: String,
}

impl MeterStatusMessage {
    /// The payload of `gateway` for the meter `health` describes, as of `at`.
    pub fn new(gateway: &str, health: &MeterHealth, at: SystemTime) -> Self {
        Self {
            schema: METER_STATUS_SCHEMA.to_owned(),
            gateway: gateway.to_owned(),
            meter: health.id.clone(),
            state: health.state,
            at: rfc3339_millis(at),
            last_success: health.last_success.map(rfc3339_millis),
            last_error: health.last_error.clone(),
            counters: MeterCounters::from(health),
            clock: health.clock.as_ref().map(|c| MeterClockStatus {
                checked_at: rfc3339_millis(c.checked_at),
                offset_s: c.offset_s,
                off: c.off,
                note: c.note.clone(),
            }),
        }
    }
}

impl From<&MeterHealth> for MeterCounters {
    fn from(m: &MeterHealth) -> Self {
        MeterCounters {
            polls: m.polls_ok + m.polls_failed,
            successes: m.polls_ok,
            failures: m.polls_failed,
            timeouts: m.timeouts,
            // Frames refused: checksum/CRC failures and valid frames that were not the answer.
            bad_frames: m.wire.checksum_errors + m.wire.foreign_frames,
            consecutive_failures: u64::from(m.consecutive_failures),
            dropped: None,
            dropped_in_memory: None,
        }
    }
}
