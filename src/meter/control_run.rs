//! One fee-control command on one meter, as a sans-IO state machine: what the bus sends next,
//! when, and what the meter's answers mean ([`ControlRun`]).
//!
//! The sequence (shared/notes/billing.md §1, issue 16 item 4):
//!
//! 1. ESAM meters with identity data: identity authentication (`03`, DI `070000FF`) first;
//!    refused → `Failed`, the command is not sent.
//! 2. The `1C` frame: plaintext (level, password, operator code from the credentials, `N1` per
//!    action, the deadline = `not_after` in the meter's time zone) or the ESAM ciphertext
//!    passed through. A timeout is followed by **one** resend, never more; an abnormal reply
//!    (`DC`) ends the command as `Failed` with the error byte decoded.
//! 3. Read-back: status word 3 (`04000503`) at once, then every [`READ_BACK_EVERY`], until it
//!    shows the action or `read_back_for` has passed. `Done` only when it matches;
//!    `Unknown` when the meter stopped answering (or never answered the command and the
//!    read-back never showed it).
//!
//! Every step is a single attempt on the wire (the bus must not retry it: a retried `1C` would
//! be a third send), and every frame both ways is kept as a [`WireFrame`], secrets redacted.
//! `read_back_only` skips steps 1-2. `read_relay` only reads. Nothing is sent to a DL/T
//! 645-1997 or Modbus meter, nor without credentials, nor once `not_after` has passed.
//!
//! The machine never reads a clock: the bus passes a monotonic `now` (any origin) to
//! [`ControlRun::next`] and the wall time of each frame to [`ControlRun::on_reply`] /
//! [`ControlRun::on_failure`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meter_protocols::dlt645::relay::{
    self, ControlReply, ESAM_LEVEL_DEFAULT, IdentityReply, StatusWord3,
};
use meter_protocols::dlt645::{Address, Function, MeterDateTime, RelayCommand};

use super::MeterDriver;
use super::contract::{Framing, Reply, Step};
use super::control::{
    ControlOutcome, ControlRequest, RelayAction, RelayState, RelayStatus, WireFrame,
};
use crate::clock::{UtcOffset, civil};
use crate::config::Protocol;

/// How often status word 3 is read while waiting for the relay to match.
pub const READ_BACK_EVERY: Duration = Duration::from_secs(1);

/// What the bus does next for a command.
#[derive(Debug)]
pub enum ControlNext {
    /// Send this step, one attempt only (no bus retries), and report the reply or failure.
    Send(Step),
    /// Nothing to send before `now` reaches this instant (same origin as `next`'s `now`).
    WaitUntil(Duration),
    /// The command is over.
    Finished(ControlOutcome),
}

/// How the command went before the read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// `9C`: the meter accepted it.
    Accepted,
    /// No reply to either send.
    NoReply(String),
    /// Not sent: read-back only (`read_back_only`, or `read_relay`).
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Identity authentication, `sends` so far.
    Identity { sends: u8 },
    /// The `1C` frame, `sends` so far.
    Command { sends: u8 },
    /// Status reads from `since` until it matches or `since + read_back_for`.
    ReadBack {
        sent: Sent,
        since: Option<Duration>,
        next_at: Option<Duration>,
    },
    /// One status read for the record, then `Failed` with this reason.
    FinalRead {
        reason: String,
        error_byte: Option<u8>,
    },
    /// Over (the outcome has been handed out).
    Over,
}

/// Which request the step in flight was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Identity,
    Command,
    Status,
}

/// One command's exchange with one meter (see the module docs). Its `Debug` leaves out the
/// prepared frames, which hold the password.
pub struct ControlRun {
    request: ControlRequest,
    address: Address,
    command_step: Step,
    identity_step: Option<Step>,
    phase: Phase,
    in_flight: Option<InFlight>,
    frames: Vec<WireFrame>,
    relay: Option<RelayStatus>,
    /// The last status read's failure, for `Unknown`'s reason.
    last_failure: Option<String>,
    /// A finished outcome not yet handed out.
    outcome: Option<ControlOutcome>,
}

impl std::fmt::Debug for ControlRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlRun")
            .field("request", &self.request)
            .field("address", &self.address)
            .field("phase", &self.phase)
            .field("frames", &self.frames.len())
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

/// Fails before anything is sent.
fn refused(reason: impl Into<String>) -> ControlOutcome {
    ControlOutcome::Failed {
        reason: reason.into(),
        error_byte: None,
        relay: None,
        frames: Vec::new(),
    }
}

/// N1 for an action (`None`: read only).
pub fn relay_command(action: RelayAction) -> Option<RelayCommand> {
    Some(match action {
        RelayAction::Alarm => RelayCommand::Alarm,
        RelayAction::AlarmRelease => RelayCommand::AlarmRelease,
        RelayAction::Trip => RelayCommand::Trip,
        RelayAction::CloseAllow => RelayCommand::CloseAllowed,
        RelayAction::Close => RelayCommand::DirectClose,
        RelayAction::KeepPower => RelayCommand::KeepPower,
        RelayAction::KeepPowerRelease => RelayCommand::KeepPowerRelease,
        RelayAction::ReadRelay => return None,
    })
}

/// The relay as status word 3 reports it.
pub fn relay_status(word: StatusWord3) -> RelayStatus {
    let state = |open| {
        if open {
            RelayState::Off
        } else {
            RelayState::On
        }
    };
    RelayStatus {
        state: state(word.relay_open()),
        commanded: state(word.command_trip()),
        pre_trip_alarm: word.pre_trip_alarm(),
        keep_power: word.keep_power(),
        word: word.0,
    }
}

/// Whether `status` shows `action` done. `close_allow` is done when the relay is commanded
/// closed: the relay itself closes only when the customer presses the button.
pub fn shows(action: RelayAction, status: &RelayStatus) -> bool {
    match action {
        RelayAction::Trip => status.state == RelayState::Off,
        RelayAction::Close => status.state == RelayState::On,
        RelayAction::CloseAllow => status.commanded == RelayState::On,
        RelayAction::Alarm => status.pre_trip_alarm,
        RelayAction::AlarmRelease => !status.pre_trip_alarm,
        RelayAction::KeepPower => status.keep_power,
        RelayAction::KeepPowerRelease => !status.keep_power,
        RelayAction::ReadRelay => true,
    }
}

/// `t` as the meter's local time (`ss mm hh DD MM YY`), whole seconds rounded down; `None`
/// outside 2000..=2099.
pub fn meter_time(t: SystemTime, offset: UtcOffset) -> Option<MeterDateTime> {
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let local_ms = secs.checked_add(offset.minutes() * 60)?.checked_mul(1000)?;
    let c = civil(local_ms);
    let year = u8::try_from(c.year.checked_sub(2000)?).ok()?;
    let n = |v: u32| u8::try_from(v).ok();
    MeterDateTime::new(
        year,
        n(c.month)?,
        n(c.day)?,
        n(c.hour)?,
        n(c.minute)?,
        n(c.second)?,
    )
    .ok()
}

fn step(address: Address, request: &meter_protocols::dlt645::Request, what: String) -> Step {
    let function = request.function();
    let di = match request {
        meter_protocols::dlt645::Request::ReadData { di, .. } => Some(*di),
        _ => None,
    };
    Step {
        bytes: request.to_frame(address).to_bytes(0),
        framing: Framing::Dlt645 {
            address,
            function,
            di,
        },
        modbus: None,
        what,
    }
}

impl ControlRun {
    /// The run of `request` on `driver`'s meter at wall time `now`, or the outcome at once
    /// when nothing may be sent (a DL/T 645-1997 or Modbus meter, no credentials, a level
    /// that does not fit the form, `not_after` already past).
    pub fn new(
        driver: &MeterDriver,
        request: ControlRequest,
        now: SystemTime,
    ) -> Result<Self, ControlOutcome> {
        let protocol = driver.protocol();
        if protocol != Protocol::Dlt645_2007 {
            return Err(refused(format!(
                "{} meters have no remote control (DL/T 645-2007 0x1C only); nothing sent",
                protocol.name()
            )));
        }
        let Some(address) = driver.address() else {
            return Err(refused("the meter has no DL/T 645 address; nothing sent"));
        };
        let only_read = request.read_back_only || request.action == RelayAction::ReadRelay;
        let command = relay_command(request.action);
        let deadline = meter_time(request.not_after, driver.utc_offset());
        let (command_step, identity_step) = match (&request.esam, &request.credentials, command) {
            // Only reads: the command step is never sent.
            (_, _, None) => (step(address, &relay::status_read(), String::new()), None),
            _ if only_read => (step(address, &relay::status_read(), String::new()), None),
            (Some(esam), creds, Some(_)) => {
                let (level, password, operator) = creds
                    .as_ref()
                    .map_or((ESAM_LEVEL_DEFAULT, [0; 3], [0; 4]), |c| {
                        (c.level, c.password, c.operator)
                    });
                if !relay::is_cipher_level(level) {
                    return Err(refused(format!(
                        "an ESAM command needs a ciphertext level (96H or 98H), the credentials give {level:02X}H; nothing sent"
                    )));
                }
                let req = relay::cipher_request(level, password, operator, &esam.command);
                let what = format!("control {} (1C, ESAM)", request.action.name());
                let identity = esam.identity.as_ref().map(|data| {
                    step(
                        address,
                        &relay::identity_request(data),
                        "identity authentication (03 070000FF)".to_owned(),
                    )
                });
                (step(address, &req, what), identity)
            }
            (None, Some(c), Some(cmd)) => {
                if relay::is_cipher_level(c.level) {
                    return Err(refused(format!(
                        "level {:02X}H is ciphertext control and needs an ESAM payload; nothing sent",
                        c.level
                    )));
                }
                let Some(deadline) = deadline else {
                    return Err(refused(
                        "not_after is outside 2000..2099 in the meter's time zone; nothing sent",
                    ));
                };
                let req = relay::plaintext_request(c.level, c.password, c.operator, cmd, deadline);
                let what = format!("control {} (1C)", request.action.name());
                (step(address, &req, what), None)
            }
            (None, None, Some(_)) => {
                return Err(refused(
                    "no credentials for this meter (and no ESAM payload); nothing sent",
                ));
            }
        };
        if !only_read && request.not_after <= now {
            return Err(refused(
                "not_after passed before the command reached the meter; nothing sent",
            ));
        }
        let phase = if only_read {
            Phase::ReadBack {
                sent: Sent::ReadOnly,
                since: None,
                next_at: None,
            }
        } else if identity_step.is_some() {
            Phase::Identity { sends: 0 }
        } else {
            Phase::Command { sends: 0 }
        };
        Ok(ControlRun {
            request,
            address,
            command_step,
            identity_step,
            phase,
            in_flight: None,
            frames: Vec::new(),
            relay: None,
            last_failure: None,
            outcome: None,
        })
    }

    /// The request being run.
    pub fn request(&self) -> &ControlRequest {
        &self.request
    }

    /// Every frame so far.
    pub fn frames(&self) -> &[WireFrame] {
        &self.frames
    }

    fn status_step(&self) -> Step {
        step(
            self.address,
            &relay::status_read(),
            "read status word 3 (04000503)".to_owned(),
        )
    }

    /// What to do at monotonic time `now`.
    pub fn next(&mut self, now: Duration) -> ControlNext {
        if let Some(outcome) = self.outcome.take() {
            self.phase = Phase::Over;
            return ControlNext::Finished(outcome);
        }
        match &mut self.phase {
            Phase::Identity { .. } => match self.identity_step.clone() {
                Some(s) => {
                    self.in_flight = Some(InFlight::Identity);
                    ControlNext::Send(s)
                }
                None => {
                    self.phase = Phase::Command { sends: 0 };
                    self.next(now)
                }
            },
            Phase::Command { .. } => {
                self.in_flight = Some(InFlight::Command);
                ControlNext::Send(self.command_step.clone())
            }
            Phase::FinalRead { .. } => {
                self.in_flight = Some(InFlight::Status);
                ControlNext::Send(self.status_step())
            }
            Phase::ReadBack { since, next_at, .. } => {
                let start = *since.get_or_insert(now);
                let end = start.saturating_add(self.request.read_back_for);
                match *next_at {
                    Some(at) if at > end => {
                        let outcome = self.unmatched();
                        self.phase = Phase::Over;
                        ControlNext::Finished(outcome)
                    }
                    Some(at) if at > now => ControlNext::WaitUntil(at),
                    _ => {
                        self.in_flight = Some(InFlight::Status);
                        ControlNext::Send(self.status_step())
                    }
                }
            }
            Phase::Over => ControlNext::Finished(ControlOutcome::Unknown {
                reason: "the command was already finished".into(),
                relay: self.relay,
                frames: self.frames.clone(),
            }),
        }
    }

    /// Whether the next step is the command itself (the bus serves a supply-restoring
    /// command's steps ahead of polls, and everything else between them).
    pub fn sends_command_next(&self) -> bool {
        matches!(self.phase, Phase::Identity { .. } | Phase::Command { .. })
    }

    /// The outcome when the read-back time is over without a match.
    fn unmatched(&mut self) -> ControlOutcome {
        let action = self.request.action.name();
        let frames = std::mem::take(&mut self.frames);
        let relay = self.relay;
        let within = humantime::format_duration(self.request.read_back_for);
        let Phase::ReadBack { sent, .. } = &self.phase else {
            return ControlOutcome::Unknown {
                reason: "read-back ended out of order".into(),
                relay,
                frames,
            };
        };
        let failure = self.last_failure.clone().unwrap_or_default();
        match (sent, relay) {
            (Sent::Accepted, Some(_)) => ControlOutcome::Failed {
                reason: format!(
                    "the meter accepted {action}, but status word 3 did not show it within {within}"
                ),
                error_byte: None,
                relay,
                frames,
            },
            (Sent::Accepted, None) => ControlOutcome::Unknown {
                reason: format!(
                    "the meter accepted {action}, then did not answer status reads: {failure}"
                ),
                relay,
                frames,
            },
            (Sent::NoReply(why), _) => ControlOutcome::Unknown {
                reason: format!(
                    "no reply to {action} (sent twice: {why}); status word 3 did not show it within {within}{}",
                    if relay.is_none() {
                        format!(" (no status read answered: {failure})")
                    } else {
                        String::new()
                    }
                ),
                relay,
                frames,
            },
            (Sent::ReadOnly, Some(_)) => ControlOutcome::Failed {
                reason: format!(
                    "read back only (not sent again): status word 3 does not show {action}"
                ),
                error_byte: None,
                relay,
                frames,
            },
            (Sent::ReadOnly, None) => ControlOutcome::Unknown {
                reason: format!("the meter did not answer status reads: {failure}"),
                relay,
                frames,
            },
        }
    }

    fn finish(&mut self, outcome: ControlOutcome) {
        self.outcome = Some(outcome);
    }

    fn schedule_read(&mut self, now: Duration) {
        if let Phase::ReadBack { next_at, since, .. } = &mut self.phase {
            since.get_or_insert(now);
            *next_at = Some(now.saturating_add(READ_BACK_EVERY));
        }
    }

    fn enter_read_back(&mut self, sent: Sent, now: Duration) {
        self.phase = Phase::ReadBack {
            sent,
            since: Some(now),
            next_at: Some(now),
        };
    }

    /// The reply to the step in flight: `raw` the reply frame, `sent` the step's bytes, `at`
    /// the wall time, `now` the monotonic time.
    pub fn on_reply(
        &mut self,
        reply: &Reply,
        sent: &[u8],
        raw: &[u8],
        at: SystemTime,
        now: Duration,
    ) {
        self.frames.push(WireFrame::new(true, at, sent));
        self.frames.push(WireFrame::new(false, at, raw));
        let Reply::Dlt645(frame) = reply else {
            self.on_unusable("a reply that is no DL/T 645 frame", now);
            return;
        };
        match self.in_flight.take() {
            Some(InFlight::Identity) => match IdentityReply::from_frame(frame) {
                Ok(IdentityReply::Accepted { .. }) => self.phase = Phase::Command { sends: 0 },
                Ok(r) => {
                    self.phase = Phase::FinalRead {
                        reason: format!(
                            "identity authentication refused: {}; the command was not sent",
                            r.describe()
                        ),
                        error_byte: match r {
                            IdentityReply::Refused(e) => Some(e.0),
                            _ => None,
                        },
                    }
                }
                Err(e) => self.on_unusable(&e.to_string(), now),
            },
            Some(InFlight::Command) => match ControlReply::from_frame(frame) {
                Ok(ControlReply::Accepted) => self.enter_read_back(Sent::Accepted, now),
                Ok(r) => {
                    self.phase = Phase::FinalRead {
                        reason: format!(
                            "the meter refused {}: {}",
                            self.request.action.name(),
                            r.describe()
                        ),
                        error_byte: match r {
                            ControlReply::Refused(e) => Some(e.0),
                            _ => None,
                        },
                    }
                }
                Err(e) => self.on_unusable(&e.to_string(), now),
            },
            Some(InFlight::Status) => {
                let word = StatusWord3::from_frame(frame);
                match &self.phase {
                    Phase::FinalRead { reason, error_byte } => {
                        if let Ok(w) = word {
                            self.relay = Some(relay_status(w));
                        }
                        let outcome = ControlOutcome::Failed {
                            reason: reason.clone(),
                            error_byte: *error_byte,
                            relay: self.relay,
                            frames: std::mem::take(&mut self.frames),
                        };
                        self.finish(outcome);
                    }
                    _ => match word {
                        Ok(w) => {
                            let status = relay_status(w);
                            self.relay = Some(status);
                            if shows(self.request.action, &status) {
                                let outcome = ControlOutcome::Done {
                                    relay: status,
                                    frames: std::mem::take(&mut self.frames),
                                };
                                self.finish(outcome);
                            } else {
                                self.schedule_read(now);
                            }
                        }
                        Err(e) => {
                            self.last_failure = Some(e.to_string());
                            self.schedule_read(now);
                        }
                    },
                }
            }
            None => {}
        }
    }

    /// A reply that passed the bus's framing but means nothing here: a command step is taken
    /// as answered (the meter heard it: no resend), a status read as failed.
    fn on_unusable(&mut self, why: &str, now: Duration) {
        match self.phase {
            Phase::Identity { .. } => {
                self.phase = Phase::FinalRead {
                    reason: format!(
                        "unreadable reply to identity authentication ({why}); the command was not sent"
                    ),
                    error_byte: None,
                }
            }
            Phase::Command { .. } => {
                self.enter_read_back(Sent::NoReply(format!("unreadable reply: {why}")), now)
            }
            _ => {
                self.last_failure = Some(why.to_owned());
                self.schedule_read(now);
            }
        }
    }

    /// No reply to the step in flight (after its one attempt), or the link failed.
    pub fn on_failure(&mut self, reason: &str, sent: &[u8], at: SystemTime, now: Duration) {
        self.frames.push(WireFrame::new(true, at, sent));
        self.in_flight = None;
        match &mut self.phase {
            Phase::Identity { sends } | Phase::Command { sends } if *sends == 0 => {
                // One resend on timeout, never more.
                *sends = 1;
            }
            Phase::Identity { .. } => {
                self.phase = Phase::FinalRead {
                    reason: format!(
                        "no reply to identity authentication (sent twice: {reason}); the command was not sent"
                    ),
                    error_byte: None,
                };
            }
            Phase::Command { .. } => self.enter_read_back(Sent::NoReply(reason.to_owned()), now),
            Phase::FinalRead {
                reason: why,
                error_byte,
            } => {
                let outcome = ControlOutcome::Failed {
                    reason: why.clone(),
                    error_byte: *error_byte,
                    relay: self.relay,
                    frames: std::mem::take(&mut self.frames),
                };
                self.finish(outcome);
            }
            Phase::ReadBack { .. } => {
                self.last_failure = Some(reason.to_owned());
                self.schedule_read(now);
            }
            Phase::Over => {}
        }
    }

    /// The meter's function for the step in flight (for traces).
    pub fn function_in_flight(&self) -> Option<Function> {
        self.in_flight.map(|f| match f {
            InFlight::Identity => Function::Security,
            InFlight::Command => Function::RelayControl,
            InFlight::Status => Function::ReadData,
        })
    }
}

#[cfg(test)]
#[path = "control_run_tests.rs"]
mod tests;
