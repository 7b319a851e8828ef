//! `meterd.command-result.v1`, the message the gateway publishes for every command it was sent
//! (shared/design.md §3.2, docs/schema/command-result.v1.json), built from what the meter said
//! (the bus's [`ControlOutcome`]) or from the control room's [`Rejection`].

use std::time::SystemTime;

use serde::Serialize;

use super::verify::Rejection;
use crate::clock::rfc3339_millis;
use crate::meter::control::{ControlOutcome, RelayStatus, WireFrame};

/// The `schema` of a command result.
pub const RESULT_SCHEMA: &str = "meterd.command-result.v1";

/// `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The meter acted and the read-back matches.
    Done,
    /// The meter refused, or the read-back never matched.
    Failed,
    /// Refused by the gateway before anything reached the meter.
    Rejected,
    /// Whether the meter acted is not known (it stopped answering; or the gateway restarted
    /// while the command was in flight and the read-back could not settle it).
    Unknown,
}

impl Outcome {
    /// The contract's word.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
            Outcome::Unknown => "unknown",
        }
    }
}

/// `relay`: status word 3 as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayJson {
    /// Actual position: `on`/`off`.
    pub state: &'static str,
    /// Commanded position.
    pub commanded: &'static str,
    /// Pre-trip alarm active.
    pub pre_trip_alarm: bool,
    /// Keep-power active.
    pub keep_power: bool,
}

impl From<&RelayStatus> for RelayJson {
    fn from(r: &RelayStatus) -> Self {
        Self {
            state: r.state.name(),
            commanded: r.commanded.name(),
            pre_trip_alarm: r.pre_trip_alarm,
            keep_power: r.keep_power,
        }
    }
}

/// One `meterd.command-result.v1` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    /// Always [`RESULT_SCHEMA`].
    pub schema: &'static str,
    /// The command's id (`null` when the message was too broken to name one).
    pub command_id: Option<String>,
    /// This gateway.
    pub gateway: String,
    /// The meter (of the topic the command came on).
    pub meter: String,
    /// The action asked for (`null` when unreadable).
    pub action: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Why, in words (`null` for `done`).
    pub reason: Option<String>,
    /// Status word 3 as read back after the action; `null` when it could not be read (or for
    /// a rejection).
    pub relay: Option<RelayJson>,
    /// Gateway time of the result.
    pub at: String,
    /// Every frame of the exchange, hex, in order.
    pub frames: Vec<String>,
}

impl CommandResult {
    /// A rejection.
    pub fn rejected(
        gateway: &str,
        meter: &str,
        command_id: Option<String>,
        action: Option<String>,
        why: &Rejection,
        at: SystemTime,
    ) -> Self {
        Self {
            schema: RESULT_SCHEMA,
            command_id,
            gateway: gateway.to_owned(),
            meter: meter.to_owned(),
            action,
            outcome: Outcome::Rejected,
            reason: Some(why.reason()),
            relay: None,
            at: rfc3339_millis(at),
            frames: Vec::new(),
        }
    }

    /// What the meter did. `recovered`: the command was found in flight after a restart and
    /// only read back (never sent again); its result says so, and a read-back that does not
    /// settle it is `unknown`.
    pub fn from_outcome(
        gateway: &str,
        meter: &str,
        command_id: &str,
        action: &str,
        outcome: &ControlOutcome,
        recovered: bool,
        at: SystemTime,
    ) -> Self {
        let (mut kind, mut reason, relay, frames) = match outcome {
            ControlOutcome::Done { relay, frames } => (Outcome::Done, None, Some(relay), frames),
            ControlOutcome::Failed {
                reason,
                relay,
                frames,
                ..
            } => (
                Outcome::Failed,
                Some(reason.clone()),
                relay.as_ref(),
                frames,
            ),
            ControlOutcome::Unknown {
                reason,
                relay,
                frames,
            } => (
                Outcome::Unknown,
                Some(reason.clone()),
                relay.as_ref(),
                frames,
            ),
        };
        if recovered {
            let read = relay.map_or("the relay could not be read".to_owned(), |r| {
                format!("the meter reports the relay {}", r.state.name())
            });
            let how = match kind {
                Outcome::Done => "and the read-back matches the action",
                _ => "and the read-back does not show that it acted",
            };
            reason = Some(format!(
                "the gateway restarted while the command was in flight; it was not sent again; \
                 {read} {how}{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
            if kind == Outcome::Failed {
                kind = Outcome::Unknown;
            }
        }
        Self {
            schema: RESULT_SCHEMA,
            command_id: Some(command_id.to_owned()),
            gateway: gateway.to_owned(),
            meter: meter.to_owned(),
            action: Some(action.to_owned()),
            outcome: kind,
            reason,
            relay: relay.map(RelayJson::from),
            at: rfc3339_millis(at),
            frames: frames_hex(frames),
        }
    }

    /// The JSON as published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn frames_hex(frames: &[WireFrame]) -> Vec<String> {
    frames.iter().map(|f| f.hex.clone()).collect()
}
