//! `[events]` and `[meter_clock]`: how the daemon polls the meters' event counters, and how
//! it checks and corrects their clocks. Plain data and defaults; the reading and the decisions
//! are the bus and meter rooms'. Which event types a meter is polled for comes from its
//! profile (`events`), or its own `events` in `[[bus.meter]]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Event polling settings (`[events]` in the configuration).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How often each meter's event counters are read.
    #[serde(
        default = "default_interval",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 86_400_000>"
    )]
    pub interval: Duration,
    /// Most bus time event and clock reads may take, in percent (a token bucket like the
    /// freeze collector's): polls keep their slots, these reads go in the gaps.
    #[serde(
        default = "default_share",
        deserialize_with = "super::range::number::<_, _, 1, 100>"
    )]
    pub bus_share_percent: u8,
}

fn default_interval() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_share() -> u8 {
    10
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            bus_share_percent: default_share(),
        }
    }
}

/// Meter clock discipline (`[meter_clock]` in the configuration). Applies to DL/T 645-2007
/// meters; compared only while `[gateway_clock]` counts the gateway's clock synchronised.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MeterClockConfig {
    /// How often each meter's clock is read (`04000101` + `04000102`). `"0s"`: never.
    #[serde(
        default = "default_check_every",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 604_800_000>"
    )]
    pub check_every: Duration,
    /// A meter clock off by more than this is a `clock_drift` event. Default: `[validation]
    /// clock_limit`, the limit that marks a reading's `meter.time` suspect, so that the two
    /// agree.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::opt_duration::serialize",
        deserialize_with = "super::range::opt_duration::<_, 1_000, 86_400_000>"
    )]
    pub drift_limit: Option<Duration>,
    /// Correct a drifting clock by broadcast time sync, within the meters' own limits (once a
    /// day, never 23:55-00:05 meter time, never within 5 min of a settlement time, only under
    /// 5 min of offset). `false`: only report.
    #[serde(default = "yes")]
    pub sync: bool,
}

fn default_check_every() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn yes() -> bool {
    true
}

impl Default for MeterClockConfig {
    fn default() -> Self {
        Self {
            check_every: default_check_every(),
            drift_limit: None,
            sync: true,
        }
    }
}
