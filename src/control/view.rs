//! What the status page, `/api/status` and `/metrics` show of fee control: each controllable
//! meter's relay as last read back, its last command and outcome, and counts of commands by
//! action and outcome since start. Written only by the control task; read as snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::sync::lock;

/// The relay as last read back with a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// `on` / `off`.
    pub state: String,
    /// Commanded position.
    pub commanded: String,
    /// Pre-trip alarm active.
    pub pre_trip_alarm: bool,
    /// Keep-power active.
    pub keep_power: bool,
    /// Status word 3, as read.
    pub word: u16,
}

impl RelayView {
    /// Status word 3 (04000503): bit 4 relay open, bit 6 commanded open, bit 7 pre-trip alarm,
    /// bit 12 keep power (State Grid firmware).
    pub fn from_word(word: u16) -> Self {
        let pos = |bit: u16| if word & (1 << bit) != 0 { "off" } else { "on" }.to_owned();
        Self {
            state: pos(4),
            commanded: pos(6),
            pre_trip_alarm: word & (1 << 7) != 0,
            keep_power: word & (1 << 12) != 0,
            word,
        }
    }
}

/// One meter's fee-control state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MeterControl {
    /// Meter id.
    pub meter: String,
    /// The relay as last read back (`null` until a command read it).
    pub relay: Option<RelayView>,
    /// The last command's id.
    pub command_id: Option<String>,
    /// Its action.
    pub action: Option<String>,
    /// Its outcome (`done`, `failed`, `rejected`, `unknown`, or `in-flight`).
    pub outcome: Option<String>,
    /// Why (for anything but `done`).
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: Option<String>,
}

/// Commands counted by action and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCount {
    /// The action (`unknown` when unreadable).
    pub action: String,
    /// The outcome.
    pub outcome: String,
    /// How many since start.
    pub count: u64,
}

/// A snapshot of fee control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ControlSnapshot {
    /// The controllable meters (DL/T 645-2007), in id order.
    pub meters: Vec<MeterControl>,
    /// Commands since start, by action and outcome.
    pub commands: Vec<CommandCount>,
}

#[derive(Default)]
struct Inner {
    meters: BTreeMap<String, MeterControl>,
    counts: BTreeMap<(String, String), u64>,
}

/// The shared view (cheap to clone).
#[derive(Clone, Default)]
pub struct ControlView(Arc<Mutex<Inner>>);

impl ControlView {
    /// A view of `meters` (the controllable ones), nothing known yet.
    pub fn new<'a>(meters: impl IntoIterator<Item = &'a str>) -> Self {
        let v = ControlView::default();
        {
            let mut i = lock(&v.0);
            for m in meters {
                i.meters.insert(
                    m.to_owned(),
                    MeterControl {
                        meter: m.to_owned(),
                        ..MeterControl::default()
                    },
                );
            }
        }
        v
    }

    /// Sets `meter`'s last command (only for meters of the view: a rejection for a meter the
    /// gateway does not have is counted, not listed).
    pub fn set_last(&self, last: MeterControl) {
        let mut i = lock(&self.0);
        if let Some(m) = i.meters.get_mut(&last.meter) {
            let relay = last.relay.clone().or_else(|| m.relay.clone());
            *m = MeterControl { relay, ..last };
        }
    }

    /// Counts one command's outcome.
    pub fn count(&self, action: &str, outcome: &str) {
        *lock(&self.0)
            .counts
            .entry((action.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// The view now.
    pub fn snapshot(&self) -> ControlSnapshot {
        let i = lock(&self.0);
        ControlSnapshot {
            meters: i.meters.values().cloned().collect(),
            commands: i
                .counts
                .iter()
                .map(|((action, outcome), count)| CommandCount {
                    action: action.clone(),
                    outcome: outcome.clone(),
                    count: *count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_word_3_bits() {
        let r = RelayView::from_word(0);
        assert_eq!(
            (
                r.state.as_str(),
                r.commanded.as_str(),
                r.pre_trip_alarm,
                r.keep_power
            ),
            ("on", "on", false, false)
        );
        let r = RelayView::from_word(0x10 | 0x40 | 0x80 | 0x1000);
        assert_eq!(
            (
                r.state.as_str(),
                r.commanded.as_str(),
                r.pre_trip_alarm,
                r.keep_power
            ),
            ("off", "off", true, true)
        );
    }

    #[test]
    fn only_listed_meters_are_shown_and_the_relay_is_kept() {
        let v = ControlView::new(["m1"]);
        v.set_last(MeterControl {
            meter: "m1".into(),
            relay: Some(RelayView::from_word(0x10)),
            outcome: Some("done".into()),
            ..MeterControl::default()
        });
        v.set_last(MeterControl {
            meter: "m1".into(),
            outcome: Some("rejected".into()),
            ..MeterControl::default()
        });
        v.set_last(MeterControl {
            meter: "zz".into(),
            ..MeterControl::default()
        });
        v.count("trip", "rejected");
        v.count("trip", "rejected");
        let s = v.snapshot();
        assert_eq!(s.meters.len(), 1);
        assert_eq!(
            s.meters[0].relay.as_ref().map(|r| r.state.as_str()),
            Some("off")
        );
        assert_eq!(s.meters[0].outcome.as_deref(), Some("rejected"));
        assert_eq!(s.commands[0].count, 2);
    }
}
