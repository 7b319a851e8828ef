//! A simulated meter's relay and fee control (DL/T 645-2007 remote control `1C`, identity
//! authentication `03`, status word 3 `04000503`), and the control log.
//!
//! Configured per meter with `relay = { … }` ([`SimRelayConfig`]); a meter without it refuses
//! `1C` with ERR 04 (unauthorised) and does not serve status word 3. The state machine:
//!
//! * positions: `on` (closed), `off` (open, commanded trip), `close_allowed` (open, commanded
//!   close, waiting for the customer's button); flags: pre-trip alarm, keep power;
//! * `1A` trip → off (refused with ERR 01 while keep power is on; clears the alarm);
//!   `1B` close allowed → close_allowed when off (on stays on); `1C` direct close → on;
//!   `2A`/`2B` alarm on/off; `3A`/`3B` keep power on/off;
//! * checks, in order: password level among `levels` and the password (else ERR 04,
//!   "password error/unauthorised"), operator code among `operators` when that list is not
//!   empty (else ERR 04), the deadline `N3..N8` against the meter's own clock (simulated time
//!   in the meter's `utc_offset`, with the meter's clock error `clock_offset_s`/`clock_ppm`, plus
//!   the relay's own `clock_offset`): past it → ERR 01 ("other error");
//! * ESAM meters (`esam = true`): plaintext levels are refused (ERR 04); a ciphertext `1C`
//!   (PA 96H/98H) is accepted only after an accepted identity authentication (`03`, DI
//!   `070000FF`; `identity_refuse = true` answers `C3` with SERR 00 08 instead). The simulator
//!   does no cryptography: it reads the "ciphertext" as `N1 N2 YY MM DD hh mm ss` (the layout
//!   the notes give for the decrypted form) so that tests can drive it; real ciphertext is
//!   refused with ERR 04;
//! * the customer's button: [`SimRelay::press_button`] from Rust, or the file `button` (a
//!   path): when it exists at a request, the button is pressed and the file removed;
//! * status word 3: bit 4 relay open, bit 6 commanded trip, bit 7 pre-trip alarm, bit 12 keep
//!   power, bit 13 identity authentication valid.
//!
//! Every `1C` and `03` frame the meter receives is written to the control log (the
//! simulator's `control_log`, JSON lines, flushed per line): see [`ControlLogLine`].

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use meter_protocols::dlt645::relay::{
    ControlReply, IDENTITY_AUTH, IdentityReply, StatusWord3, is_cipher_level,
};
use meter_protocols::dlt645::{
    ErrorWord, MeterDateTime, RelayCommand, Request as DltRequest, Response as DltResponse,
    SecurityErrorWord,
};
use serde::{Deserialize, Serialize};

use crate::clock::{UnixMillis, UtcOffset, civil};

/// `relay = { … }` of a simulated DL/T 645-2007 meter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimRelayConfig {
    /// The control password as written (6 digits, default `"000000"`).
    #[serde(default = "zero_password")]
    pub password: String,
    /// Password levels accepted for plaintext control (default 02 and 04).
    #[serde(default = "default_levels")]
    pub levels: Vec<u8>,
    /// Operator codes accepted (8 digits as written); empty = any.
    #[serde(default)]
    pub operators: Vec<String>,
    /// The relay at start: `"on"` (default), `"off"` or `"close_allowed"`.
    #[serde(default = "on")]
    pub initial: String,
    /// Pre-trip alarm at start.
    #[serde(default)]
    pub alarm: bool,
    /// Keep power at start.
    #[serde(default)]
    pub keep_power: bool,
    /// An ESAM meter: ciphertext control after identity authentication only.
    #[serde(default)]
    pub esam: bool,
    /// Answer identity authentication with SERR 00 08 (identity authentication failed).
    #[serde(default)]
    pub identity_refuse: bool,
    /// The meter's clock error, seconds (positive: the meter is ahead).
    #[serde(default)]
    pub clock_offset: i64,
    /// A file whose existence presses the customer's button (checked at each request, then
    /// removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<PathBuf>,
}

fn zero_password() -> String {
    "000000".into()
}
fn default_levels() -> Vec<u8> {
    vec![2, 4]
}
fn on() -> String {
    "on".into()
}

/// `"123456"` → `[0x12, 0x34, 0x56]` (digits as written, BCD); `None` unless `n` digits.
fn digits<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl SimRelayConfig {
    /// Why the configuration is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if digits::<3>(&self.password).is_none() {
            return Some(format!(
                "relay.password must be 6 digits, found {:?}",
                self.password
            ));
        }
        if let Some(op) = self.operators.iter().find(|o| digits::<4>(o).is_none()) {
            return Some(format!("relay.operators: {op:?} is not 8 digits"));
        }
        if Position::parse(&self.initial).is_none() {
            return Some(format!(
                "relay.initial must be \"on\", \"off\" or \"close_allowed\", found {:?}",
                self.initial
            ));
        }
        None
    }
}

/// The relay's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Closed: supply on.
    On,
    /// Open, commanded trip.
    Off,
    /// Open, commanded close: waiting for the customer's button.
    CloseAllowed,
}

impl Position {
    fn parse(s: &str) -> Option<Position> {
        match s {
            "on" => Some(Position::On),
            "off" => Some(Position::Off),
            "close_allowed" => Some(Position::CloseAllowed),
            _ => None,
        }
    }
}

/// The relay state a test can inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelaySnapshot {
    /// Position.
    pub position: Position,
    /// Pre-trip alarm on.
    pub alarm: bool,
    /// Keep power on.
    pub keep_power: bool,
    /// Identity authentication accepted (ESAM).
    pub authenticated: bool,
}

impl RelaySnapshot {
    /// Status word 3 for this state.
    pub fn status_word(&self) -> StatusWord3 {
        StatusWord3(0)
            .with(StatusWord3::RELAY_OPEN, self.position != Position::On)
            .with(StatusWord3::COMMAND_TRIP, self.position == Position::Off)
            .with(StatusWord3::PRE_TRIP_ALARM, self.alarm)
            .with(StatusWord3::KEEP_POWER, self.keep_power)
            .with(StatusWord3::IDENTITY_VALID, self.authenticated)
    }
}

/// One meter's relay.
#[derive(Debug)]
pub struct SimRelay {
    config: SimRelayConfig,
    password: [u8; 3],
    operators: Vec<[u8; 4]>,
    state: Mutex<RelaySnapshot>,
}

/// What a control frame did, for the log.
#[derive(Debug, Clone)]
pub struct ControlEvent {
    /// `1C` or `03`.
    pub function: &'static str,
    /// The action (`trip`, `close_allowed`, …) or `identity`.
    pub action: String,
    /// Password level.
    pub level: Option<u8>,
    /// The deadline, as the meter read it.
    pub deadline: Option<String>,
    /// The meter's own time when it judged the frame.
    pub meter_time: String,
    /// Accepted.
    pub accepted: bool,
    /// The error word sent, hex, when refused.
    pub error: Option<String>,
    /// Before.
    pub before: RelaySnapshot,
    /// After.
    pub after: RelaySnapshot,
}

fn action_name(c: RelayCommand) -> &'static str {
    match c {
        RelayCommand::Trip => "trip",
        RelayCommand::CloseAllowed => "close_allow",
        RelayCommand::DirectClose => "close",
        RelayCommand::Alarm => "alarm",
        RelayCommand::AlarmRelease => "alarm_release",
        RelayCommand::KeepPower => "keep_power",
        RelayCommand::KeepPowerRelease => "keep_power_release",
    }
}

/// The meter's local time `t` (simulated UTC ms) in `offset`, plus `clock_offset` seconds.
fn local(t: UnixMillis, offset: UtcOffset, clock_offset: i64) -> Option<MeterDateTime> {
    let ms = t
        .checked_add(offset.minutes() * 60_000)?
        .checked_add(clock_offset.checked_mul(1000)?)?;
    let c = civil(ms);
    let n = |v: u32| u8::try_from(v).ok();
    MeterDateTime::new(
        u8::try_from(c.year.checked_sub(2000)?).ok()?,
        n(c.month)?,
        n(c.day)?,
        n(c.hour)?,
        n(c.minute)?,
        n(c.second)?,
    )
    .ok()
}

impl SimRelay {
    /// A relay from its (checked) configuration.
    pub fn new(config: &SimRelayConfig) -> SimRelay {
        let state = RelaySnapshot {
            position: Position::parse(&config.initial).unwrap_or(Position::On),
            alarm: config.alarm,
            keep_power: config.keep_power,
            authenticated: false,
        };
        SimRelay {
            password: digits::<3>(&config.password).unwrap_or([0; 3]),
            operators: config
                .operators
                .iter()
                .filter_map(|o| digits::<4>(o))
                .collect(),
            config: config.clone(),
            state: Mutex::new(state),
        }
    }

    /// The state now (the button file is looked at first).
    pub fn snapshot(&self) -> RelaySnapshot {
        self.check_button();
        *crate::sync::lock(&self.state)
    }

    /// The customer presses the button: a relay waiting in close-allowed closes.
    pub fn press_button(&self) {
        let mut s = crate::sync::lock(&self.state);
        if s.position == Position::CloseAllowed {
            s.position = Position::On;
        }
    }

    fn check_button(&self) {
        if let Some(path) = &self.config.button
            && path.exists()
        {
            // Removed first: a press is used once, whatever the relay's position.
            let _ = std::fs::remove_file(path);
            self.press_button();
        }
    }

    /// Status word 3 now.
    pub fn status_word(&self) -> StatusWord3 {
        self.snapshot().status_word()
    }

    /// The reply to a `1C` or `03` request at simulated time `t` in the meter's `offset`, and
    /// what happened; `None` for any other request.
    pub fn respond(
        &self,
        request: &DltRequest,
        t: UnixMillis,
        offset: UtcOffset,
    ) -> Option<(DltResponse, ControlEvent)> {
        self.check_button();
        let now = local(t, offset, self.config.clock_offset);
        let meter_time = now.map(|n| n.to_string()).unwrap_or_default();
        let mut state = crate::sync::lock(&self.state);
        let before = *state;
        let refuse = |code: u8| ControlReply::Refused(ErrorWord(code));
        match request {
            DltRequest::Security { di, .. } if *di == IDENTITY_AUTH => {
                let reply = if self.config.identity_refuse || !self.config.esam {
                    IdentityReply::RefusedSecurity(SecurityErrorWord([0x00, 0x08]))
                } else {
                    state.authenticated = true;
                    IdentityReply::Accepted {
                        r2_and_serial: None,
                        data: vec![0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 1],
                    }
                };
                let accepted = matches!(reply, IdentityReply::Accepted { .. });
                let event = ControlEvent {
                    function: "03",
                    action: "identity".into(),
                    level: None,
                    deadline: None,
                    meter_time,
                    accepted,
                    error: (!accepted).then(|| "SERR 00 08".into()),
                    before,
                    after: *state,
                };
                let frame_reply = match reply {
                    IdentityReply::RefusedSecurity(error) => DltResponse::SecurityAbnormal {
                        function: meter_protocols::dlt645::Function::Security,
                        error,
                    },
                    IdentityReply::Refused(error) => DltResponse::Abnormal {
                        function: meter_protocols::dlt645::Function::Security,
                        error,
                    },
                    IdentityReply::Accepted { data, .. } => {
                        let mut d = IDENTITY_AUTH.to_wire().0.to_vec();
                        d.extend_from_slice(&data);
                        DltResponse::Other {
                            function: meter_protocols::dlt645::Function::Security,
                            data: d,
                        }
                    }
                };
                Some((frame_reply, event))
            }
            DltRequest::RelayControl {
                password,
                operator,
                command,
                valid_until,
            } => {
                let [pa, p0, p1, p2] = *password;
                let written = [p2, p1, p0];
                let op = [operator[3], operator[2], operator[1], operator[0]];
                let verdict = if self.config.esam
                    || !self.config.levels.contains(&pa)
                    || written != self.password
                    || (!self.operators.is_empty() && !self.operators.contains(&op))
                {
                    Err(refuse(ErrorWord::PASSWORD))
                } else if now.is_none_or(|n| n > *valid_until) {
                    Err(refuse(ErrorWord::OTHER))
                } else {
                    apply(&mut state, *command).map_err(|()| refuse(ErrorWord::OTHER))
                };
                Some(self.control_event(
                    verdict,
                    action_name(*command).into(),
                    pa,
                    Some(valid_until.to_string()),
                    meter_time,
                    before,
                    *state,
                ))
            }
            DltRequest::RelayControlCipher {
                password, payload, ..
            } => {
                let pa = password[0];
                // No cryptography: the "ciphertext" is read as N1 N2 YY MM DD hh mm ss.
                let fake = payload.get(..8).and_then(|p| {
                    let cmd = RelayCommand::from_byte(*p.first()?)?;
                    let [yy, mo, dd, hh, mi, ss] = p.get(2..8)?.try_into().ok()?;
                    let t = MeterDateTime::from_wire([ss, mi, hh, dd, mo, yy]).ok()?;
                    Some((cmd, t))
                });
                let action = fake.map_or("ciphertext".to_owned(), |(c, _)| action_name(c).into());
                let deadline = fake.map(|(_, t)| t.to_string());
                let verdict = match fake {
                    _ if !self.config.esam || !is_cipher_level(pa) || !state.authenticated => {
                        Err(refuse(ErrorWord::PASSWORD))
                    }
                    None => Err(refuse(ErrorWord::PASSWORD)),
                    Some((_, until)) if now.is_none_or(|n| n > until) => {
                        Err(refuse(ErrorWord::OTHER))
                    }
                    Some((cmd, _)) => apply(&mut state, cmd).map_err(|()| refuse(ErrorWord::OTHER)),
                };
                Some(self.control_event(verdict, action, pa, deadline, meter_time, before, *state))
            }
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn control_event(
        &self,
        verdict: Result<(), ControlReply>,
        action: String,
        level: u8,
        deadline: Option<String>,
        meter_time: String,
        before: RelaySnapshot,
        after: RelaySnapshot,
    ) -> (DltResponse, ControlEvent) {
        let reply = verdict.err().unwrap_or(ControlReply::Accepted);
        let function = meter_protocols::dlt645::Function::RelayControl;
        let (response, error) = match reply {
            ControlReply::Accepted => (DltResponse::RelayOk, None),
            ControlReply::Refused(error) => (
                DltResponse::Abnormal { function, error },
                Some(format!("{:02X}", error.0)),
            ),
            ControlReply::RefusedSecurity(error) => (
                DltResponse::SecurityAbnormal { function, error },
                Some(format!("{:02X} {:02X}", error.0[0], error.0[1])),
            ),
        };
        let event = ControlEvent {
            function: "1C",
            action,
            level: Some(level),
            deadline,
            meter_time,
            accepted: error.is_none(),
            error,
            before,
            after,
        };
        (response, event)
    }
}

/// Applies an accepted command; `Err` when the meter refuses it in its state (a trip while
/// keep power is on).
fn apply(state: &mut RelaySnapshot, command: RelayCommand) -> Result<(), ()> {
    match command {
        RelayCommand::Trip if state.keep_power => return Err(()),
        RelayCommand::Trip => {
            state.position = Position::Off;
            state.alarm = false;
        }
        RelayCommand::CloseAllowed => {
            if state.position == Position::Off {
                state.position = Position::CloseAllowed;
            }
        }
        RelayCommand::DirectClose => state.position = Position::On,
        RelayCommand::Alarm => state.alarm = true,
        RelayCommand::AlarmRelease => state.alarm = false,
        RelayCommand::KeepPower => state.keep_power = true,
        RelayCommand::KeepPowerRelease => state.keep_power = false,
    }
    Ok(())
}

/// One line of the control log.
#[derive(Debug, Clone, Serialize)]
pub struct ControlLogLine<'a> {
    /// Host UTC time of receipt, RFC 3339 with milliseconds.
    pub time: String,
    /// Simulated UTC time.
    pub sim_time: String,
    /// The meter's own local time (its zone and clock error applied).
    pub meter_time: &'a str,
    /// Port name.
    pub port: &'a str,
    /// Meter id.
    pub meter: &'a str,
    /// `1C` or `03`.
    pub function: &'a str,
    /// `trip`, `close_allow`, …, `identity`, or `ciphertext` when unreadable.
    pub action: &'a str,
    /// Password level.
    pub level: Option<u8>,
    /// The deadline the frame carried.
    pub deadline: Option<&'a str>,
    /// The frame as received (hex, the credentials included: this is the meter's side).
    pub request: String,
    /// Accepted.
    pub accepted: bool,
    /// The error word sent back, when refused.
    pub error: Option<&'a str>,
    /// The relay before.
    pub before: RelaySnapshot,
    /// The relay after.
    pub after: RelaySnapshot,
    /// False when a fault kept the reply off the wire (the meter acted, the gateway heard
    /// nothing).
    pub replied: bool,
}

/// An open control log (JSON lines, each flushed).
#[derive(Debug)]
pub struct ControlLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl ControlLog {
    /// Creates (truncates) the log.
    pub fn create(path: &Path) -> io::Result<ControlLog> {
        Ok(ControlLog {
            path: path.to_owned(),
            file: Mutex::new(File::create(path)?),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line.
    pub fn write(&self, line: &ControlLogLine<'_>) -> io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
        let mut file = crate::sync::lock(&self.file);
        file.write_all(text.as_bytes())?;
        file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(extra: &str) -> SimRelay {
        let config: SimRelayConfig =
            toml::from_str(&format!("password = \"123456\"\n{extra}")).unwrap();
        assert_eq!(config.problem(), None);
        SimRelay::new(&config)
    }

    /// 2026-12-07T08:00:00Z = 16:00 in +08:00.
    const T: UnixMillis = 1_796_630_400_000;

    fn cmd(command: RelayCommand, password: [u8; 4], until: MeterDateTime) -> DltRequest {
        DltRequest::RelayControl {
            password,
            operator: [0x78, 0x56, 0x34, 0x12],
            command,
            valid_until: until,
        }
    }

    fn until() -> MeterDateTime {
        MeterDateTime::new(26, 12, 7, 16, 10, 0).unwrap()
    }

    const PW: [u8; 4] = [0x02, 0x56, 0x34, 0x12];

    fn run(r: &SimRelay, c: RelayCommand) -> (DltResponse, ControlEvent) {
        r.respond(&cmd(c, PW, until()), T, UtcOffset::CHINA)
            .unwrap()
    }

    #[test]
    fn trip_close_allowed_button_on() {
        let r = relay("");
        assert_eq!(r.status_word().0, 0);
        let (resp, ev) = run(&r, RelayCommand::Alarm);
        assert_eq!(resp, DltResponse::RelayOk);
        assert!(ev.accepted && ev.after.alarm);
        assert!(r.status_word().pre_trip_alarm());
        run(&r, RelayCommand::Trip);
        let w = r.status_word();
        assert!(w.relay_open() && w.command_trip() && !w.pre_trip_alarm());
        run(&r, RelayCommand::CloseAllowed);
        let w = r.status_word();
        assert!(w.relay_open() && !w.command_trip());
        assert_eq!(r.snapshot().position, Position::CloseAllowed);
        r.press_button();
        assert_eq!(r.snapshot().position, Position::On);
        assert_eq!(r.status_word().0, 0);
        run(&r, RelayCommand::Trip);
        run(&r, RelayCommand::DirectClose);
        assert_eq!(r.snapshot().position, Position::On);
    }

    #[test]
    fn wrong_password_level_operator_and_expired_deadline_are_refused() {
        let r = relay("operators = [\"12345678\"]");
        let refused = |resp: DltResponse| match resp {
            DltResponse::Abnormal { error, .. } => error.0,
            other => panic!("not refused: {other:?}"),
        };
        let t = until();
        let bad_pw = r
            .respond(
                &cmd(RelayCommand::Trip, [0x02, 0x57, 0x34, 0x12], t),
                T,
                UtcOffset::CHINA,
            )
            .unwrap();
        assert_eq!(refused(bad_pw.0), 0x04);
        let bad_level = r
            .respond(
                &cmd(RelayCommand::Trip, [0x09, 0x56, 0x34, 0x12], t),
                T,
                UtcOffset::CHINA,
            )
            .unwrap();
        assert_eq!(refused(bad_level.0), 0x04);
        let mut wrong_op = cmd(RelayCommand::Trip, PW, t);
        if let DltRequest::RelayControl { operator, .. } = &mut wrong_op {
            *operator = [0, 0, 0, 0];
        }
        assert_eq!(
            refused(r.respond(&wrong_op, T, UtcOffset::CHINA).unwrap().0),
            0x04
        );
        // 16:10 local has passed at 08:20Z.
        let late = r
            .respond(
                &cmd(RelayCommand::Trip, PW, t),
                T + 20 * 60_000,
                UtcOffset::CHINA,
            )
            .unwrap();
        assert_eq!(refused(late.0), 0x01);
        // A meter 15 minutes fast judges by its own clock.
        let fast = relay("clock_offset = 900");
        let (resp, ev) = fast
            .respond(&cmd(RelayCommand::Trip, PW, t), T, UtcOffset::CHINA)
            .unwrap();
        assert_eq!(refused(resp), 0x01);
        assert_eq!(ev.meter_time, "2026-12-07 16:15:00");
        assert_eq!(r.snapshot().position, Position::On);
    }

    #[test]
    fn keep_power_blocks_trip() {
        let r = relay("");
        run(&r, RelayCommand::KeepPower);
        assert!(r.status_word().keep_power());
        let (resp, ev) = run(&r, RelayCommand::Trip);
        assert!(matches!(
            resp,
            DltResponse::Abnormal {
                error: ErrorWord(0x01),
                ..
            }
        ));
        assert!(!ev.accepted && r.snapshot().position == Position::On);
        run(&r, RelayCommand::KeepPowerRelease);
        run(&r, RelayCommand::Trip);
        assert_eq!(r.snapshot().position, Position::Off);
    }

    #[test]
    fn esam_needs_identity_first() {
        let r = relay("esam = true");
        let fake = DltRequest::RelayControlCipher {
            password: [0x98, 0, 0, 0],
            operator: [0; 4],
            payload: vec![0x1A, 0x00, 0x26, 0x12, 0x07, 0x16, 0x10, 0x00, 0xAA, 0xBB],
        };
        let (resp, _) = r.respond(&fake, T, UtcOffset::CHINA).unwrap();
        assert!(matches!(
            resp,
            DltResponse::Abnormal {
                error: ErrorWord(0x04),
                ..
            }
        ));
        // Plaintext is refused on an ESAM meter.
        assert!(matches!(
            run(&r, RelayCommand::Trip).0,
            DltResponse::Abnormal { .. }
        ));
        let id = DltRequest::Security {
            di: IDENTITY_AUTH,
            data: vec![0; 28],
        };
        let (resp, ev) = r.respond(&id, T, UtcOffset::CHINA).unwrap();
        assert!(matches!(resp, DltResponse::Other { .. }) && ev.accepted);
        let (resp, ev) = r.respond(&fake, T, UtcOffset::CHINA).unwrap();
        assert_eq!(resp, DltResponse::RelayOk);
        assert_eq!(ev.action, "trip");
        assert_eq!(r.snapshot().position, Position::Off);
        let refusing = relay("esam = true\nidentity_refuse = true");
        let (resp, _) = refusing.respond(&id, T, UtcOffset::CHINA).unwrap();
        assert!(matches!(resp, DltResponse::SecurityAbnormal { .. }));
    }

    #[test]
    fn the_button_file_presses_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("button");
        let r = relay(&format!("button = {:?}", path.display().to_string()));
        run(&r, RelayCommand::Trip);
        run(&r, RelayCommand::CloseAllowed);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(r.snapshot().position, Position::On);
        assert!(!path.exists());
    }

    #[test]
    fn bad_configurations_are_named() {
        let c = |t: &str| toml::from_str::<SimRelayConfig>(t).unwrap().problem();
        assert!(c("password = \"12345\"").unwrap().contains("6 digits"));
        assert!(
            c("operators = [\"1234567x\"]")
                .unwrap()
                .contains("8 digits")
        );
        assert!(c("initial = \"open\"").unwrap().contains("relay.initial"));
        assert_eq!(c(""), None);
    }
}
