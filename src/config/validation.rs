//! `[validation]`: the plausibility checks that mark values `suspect`, as configured. Plain
//! data and its defaults; the checks themselves are the ingest room's (`ingest::validation`).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Validation settings (`[validation]` in the configuration).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Largest tolerated difference between the meter's clock and the gateway's.
    #[serde(
        default = "default_clock_limit",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 86_400_000>"
    )]
    pub clock_limit: Duration,
    /// Check that tariff registers add up to the total.
    #[serde(default = "yes")]
    pub tariff_sum: bool,
    /// Physical ranges, by quantity prefix (`voltage` matches `voltage.l1`).
    #[serde(default = "default_ranges")]
    pub ranges: HashMap<String, [f64; 2]>,
}

fn default_clock_limit() -> Duration {
    // Meters are kept within 10 s of the terminal (State Grid practice; notes/dlt645.md §5.3).
    Duration::from_secs(10)
}

fn yes() -> bool {
    true
}

fn default_ranges() -> HashMap<String, [f64; 2]> {
    [
        ("voltage", [0.0, 1000.0]),
        ("current", [-20_000.0, 20_000.0]),
        ("frequency", [45.0, 65.0]),
        ("power_factor", [-1.0, 1.0]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            clock_limit: default_clock_limit(),
            tariff_sum: true,
            ranges: default_ranges(),
        }
    }
}
