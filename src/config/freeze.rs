//! `[freeze]`: how the daemon collects the meters' own settlement records (daily, monthly,
//! hourly freezes, the load profile). Plain data and its defaults; the reading is the bus room's, the ledger the
//! ingest room's. Which kinds a meter keeps comes from its profile (`freezes`), or its own
//! `freezes` in `[[bus.meter]]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Freeze collection settings (`[freeze]` in the configuration).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// How long after a freeze instant (the meter's midnight, whole hour, settlement day) the
    /// record is read: meters need a moment to write it, and clocks drift.
    #[serde(
        default = "default_delay",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 21_600_000>"
    )]
    pub delay: Duration,
    /// Most bus time freeze reads may take, in percent, measured over the last hour: polls
    /// keep their slots, records are read in the gaps between them.
    #[serde(
        default = "default_share",
        deserialize_with = "super::range::number::<_, _, 1, 100>"
    )]
    pub bus_share_percent: u8,
    /// How many days back missing daily records are looked for (the meter keeps 62): on a new
    /// gateway, the history it collects at once.
    #[serde(
        default = "default_days",
        deserialize_with = "super::range::number::<_, _, 1, 62>"
    )]
    pub backfill_days: u8,
    /// How many hours back missing hourly records are looked for (the meter keeps 254).
    #[serde(
        default = "default_hours",
        deserialize_with = "super::range::number::<_, _, 1, 254>"
    )]
    pub backfill_hours: u8,
    /// How many months back missing monthly settlement records are looked for (12 kept).
    #[serde(
        default = "default_months",
        deserialize_with = "super::range::number::<_, _, 1, 12>"
    )]
    pub backfill_months: u8,
    /// How many load records back missing ones are looked for (`load_profile` meters;
    /// never deeper than the meter keeps, its profile's `load_profile_depth`): 96 is one day
    /// at 15 minutes. The ledger keeps 256 15-minute slots (64 hours), so at most 255
    /// records at 15 minutes, 127 at 30 and 63 at 60 are looked for, whatever this says.
    #[serde(
        default = "default_load_records",
        deserialize_with = "super::range::number::<_, _, 1, 255>"
    )]
    pub backfill_load_records: u8,
    /// The meters' daily freeze time, minutes after their midnight (`04001203`; 0 on almost
    /// every meter).
    #[serde(default, deserialize_with = "super::range::number::<_, _, 0, 1439>")]
    pub daily_at_minute: u16,
    /// The meters' monthly settlement day (`04000B01`, day 1..28) and hour.
    #[serde(
        default = "default_settlement_day",
        deserialize_with = "super::range::number::<_, _, 1, 28>"
    )]
    pub settlement_day: u8,
    /// Hour of the settlement day.
    #[serde(default, deserialize_with = "super::range::number::<_, _, 0, 23>")]
    pub settlement_hour: u8,
}

fn default_delay() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_share() -> u8 {
    25
}

fn default_days() -> u8 {
    62
}

fn default_hours() -> u8 {
    48
}

fn default_months() -> u8 {
    12
}

fn default_load_records() -> u8 {
    96
}

fn default_settlement_day() -> u8 {
    1
}

impl Default for FreezeConfig {
    fn default() -> Self {
        Self {
            delay: default_delay(),
            bus_share_percent: default_share(),
            backfill_days: default_days(),
            backfill_hours: default_hours(),
            backfill_months: default_months(),
            backfill_load_records: default_load_records(),
            daily_at_minute: 0,
            settlement_day: default_settlement_day(),
            settlement_hour: 0,
        }
    }
}
