//! Fee control on one meter: what the `control` room asks a bus to do to a meter's relay or
//! alarm, and what the meter did. Plain data shared by the two sides: the control room (above:
//! verifies, applies policy, audits) builds a [`ControlRequest`]; the bus task that owns the
//! meter's port executes it (DL/T 645-2007 control code 0x1C, at most one resend, then read-back
//! of status word 3, 04000503) and answers with a [`ControlOutcome`]. The outcome is what the
//! meter says, never what was assumed.

use std::time::{Duration, SystemTime};

use meter_protocols::Scan;
use meter_protocols::dlt645::Dlt645Frame;

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
    /// Plaintext credentials. With an ESAM payload they are optional: when given they supply
    /// the level `PA` (e.g. 96H instead of the default 98H), the password and the operator
    /// code `C0..C3` sent in clear before the ciphertext; when absent the bus sends 98H, a zero
    /// password and a zero operator code.
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

impl WireFrame {
    /// A frame of the exchange, its secrets redacted ([`redact_secrets`]).
    pub fn new(sent: bool, at: SystemTime, bytes: &[u8]) -> Self {
        WireFrame {
            sent,
            at,
            hex: crate::hex_input::to_hex(&redact_secrets(bytes)),
        }
    }
}

/// `bytes` with the password (`P0 P1 P2`) and operator code (`C0..C3`) of a DL/T 645-2007
/// request that carries them set to zero, the checksum recomputed: what traces, logs, the
/// audit and results show instead of the frame as sent, so that credentials never leave the
/// bus task. The level `PA`, the command, the deadline and any ESAM ciphertext are kept
/// (ciphertext is single-use and bound to its deadline by the MAC). Covered: `1C` remote
/// control, `03` security authentication (its operator code), `14` write, `18` change
/// password, `19`/`1A`/`1B` resets. Anything else, and bytes that are no complete frame, come
/// back unchanged (preamble `FE`s are kept).
pub fn redact_secrets(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    // Every frame sent passes here (the trace): look at the control byte before scanning.
    let start = bytes.iter().take_while(|b| **b == 0xFE).count();
    let at = |i: usize| bytes.get(start.saturating_add(i)).copied();
    let secret_bearing = at(0) == Some(0x68)
        && at(7) == Some(0x68)
        && at(8).is_some_and(|c| matches!(c, 0x1C | 0x19 | 0x1A | 0x1B | 0x14 | 0x18 | 0x03));
    if !secret_bearing {
        return Cow::Borrowed(bytes);
    }
    let Scan::Frame { frame, consumed } = Dlt645Frame::scan(bytes) else {
        // A request cut short or damaged (an echo, noise): without a frame the secret bytes
        // cannot be told apart, so the first 12 data bytes (every secret's extent) go.
        let mut out = bytes.to_vec();
        let data = start.saturating_add(10);
        let end = data.saturating_add(12).min(out.len());
        if let Some(secret) = out.get_mut(data.min(end)..end) {
            secret.fill(0x33);
        }
        return Cow::Owned(out);
    };
    if frame.control.is_response() {
        return Cow::Borrowed(bytes);
    }
    // (start, end) byte ranges of the data field that hold secrets, by function code.
    let ranges: &[(usize, usize)] = match frame.control.code() {
        0x19..=0x1C => &[(1, 8)],
        0x14 => &[(5, 12)],
        0x18 => &[(5, 8), (9, 12)],
        0x03 => &[(4, 8)],
        _ => return Cow::Borrowed(bytes),
    };
    let mut data = frame.data.clone();
    for &(from, to) in ranges {
        if let Some(secret) = data.get_mut(from..to) {
            secret.fill(0);
        }
    }
    let mut out = Dlt645Frame::new(frame.address, frame.control, data).to_bytes(start);
    out.extend_from_slice(bytes.get(consumed..).unwrap_or(&[]));
    Cow::Owned(out)
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

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn secrets_are_redacted_and_the_frame_stays_valid() {
        // Plaintext trip, level 02, password 123456, operator 12345678, preamble FE FE.
        let sent = hex(
            "FE FE 68 29 25 07 07 21 20 68 1C 10 35 89 67 45 AB 89 67 45 4D 33 33 43 49 3A 45 59 FA 16",
        );
        let shown = redact_secrets(&sent);
        // P0..P2 and C0..C3 become 00 (+33H), and CS is recomputed (4A, by hand).
        assert_eq!(
            crate::hex_input::to_hex(&shown),
            "FE FE 68 29 25 07 07 21 20 68 1C 10 35 33 33 33 33 33 33 33 4D 33 33 43 49 3A 45 59 4A 16"
        );
        let frame = WireFrame::new(true, SystemTime::UNIX_EPOCH, &sent);
        assert!(!frame.hex.contains("89 67 45"));
        // The ESAM worked example: the operator code goes, the ciphertext stays.
        let esam = hex(
            "68 11 11 11 11 11 11 68 1C 1C CB 33 33 33 AB 89 67 45 1E 64 F4 36 A4 F5 83 0A 0B 3D FC B1 13 77 1D 00 39 DD 8E B9 7D 16",
        );
        let shown = crate::hex_input::to_hex(&redact_secrets(&esam));
        assert!(
            shown.starts_with("68 11 11 11 11 11 11 68 1C 1C CB 33 33 33 33 33 33 33 1E 64 F4")
        );
        // Replies and reads are unchanged; so are bytes that are no frame.
        for same in [
            hex("68 11 11 11 11 11 11 68 9C 00 D2 16"),
            hex("68 29 25 07 07 21 20 68 11 04 36 38 33 37 5A 16"),
            hex("68 29 25 07"),
        ] {
            assert_eq!(redact_secrets(&same).as_ref(), same.as_slice());
        }
        // An echo cut short after the operator code: the data bytes go anyway.
        let partial = &sent[..22];
        assert_eq!(
            crate::hex_input::to_hex(&redact_secrets(partial)),
            "FE FE 68 29 25 07 07 21 20 68 1C 10 33 33 33 33 33 33 33 33 33 33"
        );
    }
}
