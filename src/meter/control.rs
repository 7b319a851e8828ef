//! Fee control on one meter: what the `control` room asks a bus to do to a meter's relay or
//! alarm, and what the meter did. Plain data shared by the two sides: the control room (above:
//! verifies, applies policy, audits) builds a [`ControlRequest`]; the bus task that owns the
//! meter's port executes it (DL/T 645-2007 control code 0x1C, at most one resend, then read-back
//! of status word 3, 04000503) and answers with a [`ControlOutcome`]. The outcome is what the
//! meter says, never what was assumed.

use std::time::{Duration, SystemTime};

/// What a fee command asks of a meter (`action` in `meterd.command.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayAction {
    /// Pre-trip alarm on (DL/T 645 N1 = 2A): the customer is warned.
    Alarm,
    /// Alarm off (2B).
    AlarmRelease,
    /// Open the relay: supply cut (1A).
    Trip,
    /// Closing allowed: the customer presses the meter's button to restore supply (1B).
    CloseAllow,
    /// Close the relay directly (1C).
    Close,
    /// Keep power: the relay may not be tripped (3A).
    KeepPower,
    /// Keep-power release (3B).
    KeepPowerRelease,
    /// No action: read status word 3 only.
    ReadRelay,
}

impl RelayAction {
    /// Every action, in the contract's order.
    pub const ALL: [RelayAction; 8] = [
        RelayAction::Alarm,
        RelayAction::AlarmRelease,
        RelayAction::Trip,
        RelayAction::CloseAllow,
        RelayAction::Close,
        RelayAction::KeepPower,
        RelayAction::KeepPowerRelease,
        RelayAction::ReadRelay,
    ];

    /// The contract's name (`alarm`, `trip`, `close_allow`, …).
    pub fn name(self) -> &'static str {
        match self {
            RelayAction::Alarm => "alarm",
            RelayAction::AlarmRelease => "alarm_release",
            RelayAction::Trip => "trip",
            RelayAction::CloseAllow => "close_allow",
            RelayAction::Close => "close",
            RelayAction::KeepPower => "keep_power",
            RelayAction::KeepPowerRelease => "keep_power_release",
            RelayAction::ReadRelay => "read_relay",
        }
    }

    /// The action named `name` in the contract, if any.
    pub fn parse(name: &str) -> Option<RelayAction> {
        RelayAction::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Restores supply: never refused by policy, and served ahead of polls and back-fill.
    pub fn restores_supply(self) -> bool {
        matches!(self, RelayAction::CloseAllow | RelayAction::Close)
    }
}

/// A plaintext control password (DL/T 645 `PA P0 P1 P2` and operator code `C0..C3`), from the
/// credentials file. Never logged: `Debug` shows the level only.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlCredentials {
    /// Password level (`PA`; 02 or 04 for plaintext control).
    pub level: u8,
    /// Password, as the meter's documentation writes it (6 digits, `P2 P1 P0`); sent low byte
    /// first.
    pub password: [u8; 3],
    /// Operator code (`C0..C3`), as written; sent low byte first.
    pub operator: [u8; 4],
}

impl std::fmt::Debug for ControlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlCredentials")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// An ESAM (encrypted) meter's command, made by the utility's encryption machine and passed
/// through as is: the gateway holds no meter key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsamPayload {
    /// Identity authentication (control code 0x03, DI 070000FF) data, sent first when present.
    pub identity: Option<Vec<u8>>,
    /// The 0x1C data after the password and operator code: ciphertext + MAC.
    pub command: Vec<u8>,
}

/// One fee-control action for one meter of a bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// The command's id (`command_id`), for logs and the frame trace.
    pub command_id: String,
    /// What to do.
    pub action: RelayAction,
    /// The command's `not_after`: sent as the frame's validity deadline (in the meter's time
    /// zone, by the bus that knows it), so that the meter refuses it once stale.
    pub not_after: SystemTime,
    /// Plaintext credentials; `None` with an ESAM payload.
    pub credentials: Option<ControlCredentials>,
    /// The encrypted form, for ESAM meters.
    pub esam: Option<EsamPayload>,
    /// How long status word 3 is read back, waiting for the relay to match, before the
    /// outcome is given as it stands.
    pub read_back_for: Duration,
    /// Do not send: only read status word 3 (a command found in flight after a restart is read
    /// back and reported, never sent again).
    pub read_back_only: bool,
}

/// Relay position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Closed: supply on.
    On,
    /// Open: supply off.
    Off,
}

impl RelayState {
    /// `on` / `off`, as in `meterd.command-result.v1`.
    pub fn name(self) -> &'static str {
        match self {
            RelayState::On => "on",
            RelayState::Off => "off",
        }
    }
}

/// The relay as status word 3 (04000503) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStatus {
    /// Actual relay position (bit 4).
    pub state: RelayState,
    /// Commanded position (bit 6).
    pub commanded: RelayState,
    /// Pre-trip alarm active (bit 7).
    pub pre_trip_alarm: bool,
    /// Keep-power active (State Grid firmware, bits 12-15).
    pub keep_power: bool,
    /// The whole word, for the audit.
    pub word: u16,
}

/// A frame of the exchange, as it was on the wire (hex), for the audit and the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// `true`: sent by the gateway; `false`: received.
    pub sent: bool,
    /// When (gateway wall clock).
    pub at: SystemTime,
    /// The bytes, hex.
    pub hex: String,
}

/// What the meter did (`outcome` of `meterd.command-result.v1`, except `rejected`, which the
/// control room decides before anything reaches a bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The meter accepted and the read-back matches the action.
    Done {
        /// Status word 3 as read back.
        relay: RelayStatus,
        /// Every frame of the exchange.
        frames: Vec<WireFrame>,
    },
    /// The meter refused (abnormal reply), or accepted but the read-back never matched.
    Failed {
        /// Why, in words (the meter's error byte decoded).
        reason: String,
        /// The meter's error byte, when it sent one.
        error_byte: Option<u8>,
        /// Status word 3, when it could be read.
        relay: Option<RelayStatus>,
        /// Every frame of the exchange.
        frames: Vec<WireFrame>,
    },
    /// The meter stopped answering: whether it acted is not known.
    Unknown {
        /// Why.
        reason: String,
        /// Status word 3, if it was read at some point.
        relay: Option<RelayStatus>,
        /// Every frame of the exchange.
        frames: Vec<WireFrame>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip_and_unknown_names_are_refused() {
        for a in RelayAction::ALL {
            assert_eq!(RelayAction::parse(a.name()), Some(a));
        }
        assert_eq!(RelayAction::parse("TRIP"), None);
        assert_eq!(RelayAction::parse("open"), None);
        assert!(RelayAction::Close.restores_supply() && !RelayAction::Trip.restores_supply());
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = ControlCredentials {
            level: 2,
            password: [0x12, 0x34, 0x56],
            operator: [0xAA, 0xBB, 0xCC, 0xDD],
        };
        let text = format!("{c:?}");
        assert!(!text.contains("password") && !text.contains("18") && !text.contains("operator"));
    }
}
