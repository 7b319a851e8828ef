//! The control task: one per daemon, fed by the uplink's command subscription (see the room's
//! module doc for the flow).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::credentials::{Credentials, CredentialsError};
use super::policy::{self, MeterFacts};
use super::result::CommandResult;
use super::verify::{self, MeterInfo, Rejection, Verified, VerifyContext};
use super::view::{ControlView, MeterControl, RelayView};
use crate::clock::gateway::{ClockState, ClockTrust};
use crate::clock::rfc3339_millis;
use crate::config::{Config, ControlConfig, Protocol};
use crate::ingest::{FreshRows, OnStored};
use crate::meter::control::{ControlOutcome, ControlRequest, RelayAction};
use crate::spool::Spool;
use crate::spool::commands::{CommandRecord, InFlight, ResultRecord};
use crate::sync::lock;
use crate::uplink::IncomingCommand;

/// Why fee control cannot start.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The credentials file.
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    /// A configured key cannot be used.
    #[error("[control] key {0:?}: not a valid Ed25519 public key")]
    Key(String),
    /// Two keys with one id.
    #[error("[control] key_id {0:?} is configured twice")]
    DuplicateKey(String),
}

/// The hand-off to the bus tasks: the daemon implements it over the buses' command queues.
pub trait MeterBuses: Send + Sync + 'static {
    /// Queues `request` for `meter` on the bus task `bus` (waiting for room in its queue);
    /// its outcome comes on the receiver. An error when the bus is not running or its queue
    /// stays full (nothing was sent then).
    fn control(
        &self,
        bus: &str,
        meter: &str,
        request: ControlRequest,
    ) -> BoxFuture<'static, Result<oneshot::Receiver<ControlOutcome>, String>>;
}

/// Everything the control task needs from the configuration, checked.
#[derive(Debug, Clone)]
pub struct ControlSetup {
    gateway: String,
    prefix: String,
    config: ControlConfig,
    keys: BTreeMap<String, VerifyingKey>,
    meters: BTreeMap<String, MeterInfo>,
    credentials: Credentials,
    clock: ClockTrust,
}

/// Unix ms of `t`.
fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ControlSetup {
    /// `None` when `[control]` is absent (fee control off: no subscription).
    pub fn from_config(config: &Config) -> Result<Option<ControlSetup>, ControlError> {
        let Some(control) = &config.control else {
            return Ok(None);
        };
        let mut keys = BTreeMap::new();
        for k in &control.keys {
            let key = k
                .bytes()
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| ControlError::Key(k.key_id.clone()))?;
            if keys.insert(k.key_id.clone(), key).is_some() {
                return Err(ControlError::DuplicateKey(k.key_id.clone()));
            }
        }
        let credentials = match &control.credentials {
            Some(path) => Credentials::load(path)?,
            None => Credentials::default(),
        };
        let meters = config
            .buses
            .iter()
            .flat_map(|b| {
                let b = b.get_ref();
                b.meters.iter().map(move |m| {
                    let m = m.get_ref();
                    (
                        m.effective_id(&b.name),
                        MeterInfo {
                            bus: b.name.clone(),
                            protocol: m.protocol,
                            address: m.address.clone(),
                            profile: m.profile.clone(),
                        },
                    )
                })
            })
            .collect();
        Ok(Some(ControlSetup {
            gateway: config.gateway.clone(),
            prefix: config.mqtt.topic_prefix.clone(),
            config: control.clone(),
            keys,
            meters,
            credentials,
            clock: config.gateway_clock.synchronised,
        }))
    }

    /// The meters that can be controlled (DL/T 645-2007), for the view.
    pub fn controllable(&self) -> impl Iterator<Item = &str> {
        self.meters
            .iter()
            .filter(|(_, m)| m.protocol == Protocol::Dlt645_2007)
            .map(|(id, _)| id.as_str())
    }

    /// One paragraph for `meterd check-config`: keys, controllable meters, policy (never a
    /// password).
    pub fn describe(&self) -> String {
        let c = &self.config;
        let quiet: Vec<String> = c
            .quiet_hours
            .iter()
            .map(|q| {
                format!(
                    "{:02}:{:02}-{:02}:{:02}",
                    q.from / 60,
                    q.from % 60,
                    q.to / 60,
                    q.to % 60
                )
            })
            .collect();
        format!(
            "fee control: keys {}; {} controllable meters ({}); credentials {}; trip notice {}, \
             override {}; no trips in {} / on {} weekdays / {} holidays (at {}); {} commands per \
             meter per {}; clock trust {:?}",
            self.keys.keys().cloned().collect::<Vec<_>>().join(", "),
            self.controllable().count(),
            self.controllable().collect::<Vec<_>>().join(", "),
            c.credentials
                .as_ref()
                .map_or("none (ESAM only)".to_owned(), |p| p.display().to_string()),
            humantime::format_duration(c.trip_notice),
            if c.allow_override {
                "allowed"
            } else {
                "refused"
            },
            if quiet.is_empty() {
                "no quiet hours".to_owned()
            } else {
                quiet.join(", ")
            },
            c.quiet_days.len(),
            c.holidays.len(),
            c.utc_offset,
            c.rate_limit,
            humantime::format_duration(c.rate_window),
            self.clock,
        )
    }

    /// Replaces the clock trust (tests).
    pub fn with_clock(mut self, clock: ClockTrust) -> Self {
        self.clock = clock;
        self
    }
}

/// What to do with one message, decided against the spool.
enum Decision {
    /// Stored as rejected (result in the outbox).
    Rejected,
    /// Recorded in flight: hand it to the bus.
    Execute(Box<Execution>),
}

/// A command to hand to a bus.
struct Execution {
    bus: String,
    meter: String,
    command_id: String,
    action: String,
    request: ControlRequest,
    recovered: bool,
}

/// The shared parts of the task.
struct Parts {
    setup: ControlSetup,
    spool: Arc<Mutex<Spool>>,
    fresh: FreshRows,
    on_stored: OnStored,
    view: ControlView,
    /// Results published for messages whose signature did not verify, this minute.
    unverified: Mutex<(i64, u32)>,
}

/// Most results published per minute for messages that are not verified commands (broken,
/// retained, unknown key, bad signature). Results are never dropped by the spool, so whoever
/// can publish on the command topics must not be able to make the gateway store without end;
/// past this they are audited (and logged), not published.
pub const UNVERIFIED_RESULTS_PER_MINUTE: u32 = 60;

/// Whether the rejection is decided before the signature verified.
fn unverified(why: &Rejection) -> bool {
    matches!(
        why,
        Rejection::Malformed(_)
            | Rejection::Retained
            | Rejection::UnknownKey(_)
            | Rejection::BadSignature
    )
}

impl Parts {
    /// Stores a result (blocking: call from a blocking thread) and wakes the uplink.
    fn store(&self, record: &ResultRecord) {
        let stored = lock(&self.spool).store_command_result(record);
        match stored {
            Ok(rows) if rows.rows.is_empty() => {}
            Ok(rows) => {
                self.fresh.add(rows);
                (self.on_stored)();
            }
            // The command stays in flight (if it was accepted) and is read back at the next
            // start; a rejection's result is lost with the error, logged here.
            Err(e) => tracing::error!(
                meter = %record.meter,
                command_id = ?record.command_id,
                error = %e,
                "cannot store a command result"
            ),
        }
    }

    fn result_id(&self, meter: &str, command_id: Option<&str>, at_ms: i64) -> String {
        match command_id {
            Some(id) => format!("{}/{meter}/command-result/{id}", self.setup.gateway),
            None => format!("{}/{meter}/command-result/-{at_ms}", self.setup.gateway),
        }
    }

    /// Stores the rejection of a message on `meter`'s topic.
    fn reject(
        &self,
        msg: &IncomingCommand,
        meter: &str,
        why: &Rejection,
        remember: Option<CommandRecord>,
    ) {
        let claimed = verify::claimed(&msg.payload);
        let now = crate::clock::now();
        let result = CommandResult::rejected(
            &self.setup.gateway,
            meter,
            claimed.command_id.clone(),
            claimed.action.clone(),
            why,
            now,
        );
        let at = rfc3339_millis(now);
        tracing::warn!(
            meter,
            command_id = ?claimed.command_id,
            action = ?claimed.action,
            reason = %why.reason(),
            "command rejected"
        );
        let mut received = String::from_utf8_lossy(&msg.payload).into_owned();
        if let Some((i, _)) = received.char_indices().nth(4096) {
            received.truncate(i);
        }
        let publish = !unverified(why) || {
            let minute = ms(now) / 60_000;
            let mut window = lock(&self.unverified);
            if window.0 != minute {
                *window = (minute, 0);
            }
            window.1 += 1;
            window.1 <= UNVERIFIED_RESULTS_PER_MINUTE
        };
        if !publish {
            tracing::warn!(
                meter,
                "too many unverified command messages this minute: audited, no result published"
            );
        }
        let record = ResultRecord {
            meter: meter.to_owned(),
            command_id: claimed.command_id.clone(),
            id: self.result_id(meter, claimed.command_id.as_deref(), ms(now)),
            outcome: "rejected".into(),
            reason: Some(why.reason()),
            relay_word: None,
            at_ms: ms(now),
            at: at.clone(),
            payload: if publish {
                result.to_json()
            } else {
                Vec::new()
            },
            remember,
            audit: vec![
                (
                    rfc3339_millis(msg.at),
                    "received".into(),
                    format!("retain={} {received}", msg.retain),
                ),
                (at.clone(), "rejected".into(), why.reason()),
            ],
        };
        self.store(&record);
        self.view
            .count(claimed.action.as_deref().unwrap_or("unknown"), "rejected");
        self.view.set_last(MeterControl {
            meter: meter.to_owned(),
            relay: None,
            command_id: claimed.command_id,
            action: claimed.action,
            outcome: Some("rejected".into()),
            reason: Some(why.reason()),
            at: Some(at),
        });
    }

    /// Decides on one message (blocking: spool look-ups and writes).
    fn decide(&self, msg: &IncomingCommand) -> Option<Decision> {
        let setup = &self.setup;
        let Some(meter) = verify::topic_meter(&msg.topic, &setup.prefix, &setup.gateway) else {
            tracing::warn!(topic = %msg.topic, "a message on no command topic of ours; ignored");
            return None;
        };
        if msg.payload.is_empty() {
            // How MQTT deletes a retained message: someone is clearing a retained command.
            tracing::info!(topic = %msg.topic, "empty message on a command topic (a retained message cleared); ignored");
            return None;
        }
        let now = ms(crate::clock::now());
        let cx = VerifyContext {
            gateway: &setup.gateway,
            keys: &setup.keys,
            meters: &setup.meters,
            clock: match setup.clock.state() {
                ClockState::Synchronised(_) => Ok(()),
                ClockState::Unsynchronised(why) => Err(why),
            },
            now_ms: now,
            clock_skew_ms: dur_ms(setup.config.clock_skew),
            max_validity_ms: dur_ms(setup.config.max_validity),
        };
        let v = match verify::verify(&msg.payload, msg.retain, meter, &cx) {
            Ok(v) => v,
            Err(why) => {
                self.reject(msg, meter, &why, None);
                return Some(Decision::Rejected);
            }
        };
        Some(self.decide_verified(msg, meter, v, now))
    }

    fn decide_verified(
        &self,
        msg: &IncomingCommand,
        meter: &str,
        v: Verified,
        now: i64,
    ) -> Decision {
        let setup = &self.setup;
        let record = CommandRecord {
            command_id: v.body.command_id.clone(),
            meter: meter.to_owned(),
            action: v.action.name().to_owned(),
            key_id: v.key_id.clone(),
            received_ms: ms(msg.at),
            not_after_ms: v.not_after_ms,
            body: v.body_text.clone(),
        };
        let info = setup.meters.get(meter);
        let credentials = info
            .and_then(|i| setup.credentials.for_meter(meter, &i.profile))
            .cloned();
        let needs_password = v.esam.is_none() && v.action != RelayAction::ReadRelay;
        let since = now.saturating_sub(dur_ms(setup.config.rate_window));
        let facts = {
            let spool = lock(&self.spool);
            match spool.command_seen(&v.body.command_id) {
                Ok(true) => Err(Rejection::Replayed),
                Ok(false) => match spool.command_facts(meter, since) {
                    Ok((last_warning, accepted_in_window)) => Ok(MeterFacts {
                        last_warning,
                        accepted_in_window,
                    }),
                    Err(e) => Err(Rejection::Policy(format!(
                        "the command history cannot be read: {e}"
                    ))),
                },
                Err(e) => Err(Rejection::Policy(format!(
                    "the command history cannot be read: {e}"
                ))),
            }
        };
        let checked = facts.and_then(|facts| {
            if needs_password && credentials.is_none() {
                return Err(Rejection::NoCredentials);
            }
            policy::check(&setup.config, v.action, v.body.override_policy, now, facts)
                .map_err(Rejection::Policy)
        });
        if let Err(why) = checked {
            // A replay is not remembered again (its id is); every other verified refusal
            // burns its id: the core sends a new command, not the same one again.
            let remember = (why != Rejection::Replayed).then(|| record.clone());
            self.reject(msg, meter, &why, remember);
            return Decision::Rejected;
        }
        let at = rfc3339_millis(crate::clock::now());
        match lock(&self.spool).accept_command(&record, &at) {
            Ok(true) => {}
            Ok(false) => {
                self.reject(msg, meter, &Rejection::Replayed, None);
                return Decision::Rejected;
            }
            Err(e) => {
                // Not recorded: not sent. The core sees no result for it and may send a new one.
                tracing::error!(meter, error = %e, "cannot record a command; not executed");
                return Decision::Rejected;
            }
        }
        tracing::info!(
            meter,
            command_id = %record.command_id,
            action = %record.action,
            "command accepted"
        );
        self.view.set_last(MeterControl {
            meter: meter.to_owned(),
            relay: None,
            command_id: Some(record.command_id.clone()),
            action: Some(record.action.clone()),
            outcome: Some("in-flight".into()),
            reason: None,
            at: Some(at),
        });
        Decision::Execute(Box::new(Execution {
            bus: info.map(|i| i.bus.clone()).unwrap_or_default(),
            meter: meter.to_owned(),
            command_id: record.command_id,
            action: record.action,
            request: ControlRequest {
                command_id: v.body.command_id,
                action: v.action,
                not_after: UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(v.not_after_ms).unwrap_or(0)),
                credentials: if v.esam.is_some() { None } else { credentials },
                esam: v.esam,
                read_back_for: setup.config.read_back_for,
                read_back_only: false,
            },
            recovered: false,
        }))
    }

    /// The execution of a command found in flight at start: read back only.
    fn recovery(&self, f: InFlight) -> Option<Execution> {
        let info = self.setup.meters.get(&f.meter);
        let action = RelayAction::parse(&f.action)?;
        Some(Execution {
            bus: info.map(|i| i.bus.clone()).unwrap_or_default(),
            meter: f.meter,
            command_id: f.command_id.clone(),
            action: f.action,
            request: ControlRequest {
                command_id: f.command_id,
                action,
                not_after: UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(f.not_after_ms).unwrap_or(0)),
                credentials: None,
                esam: None,
                read_back_for: self.setup.config.read_back_for,
                read_back_only: true,
            },
            recovered: true,
        })
    }

    /// Stores what the meter did (blocking).
    fn finish(&self, e: &Execution, outcome: &ControlOutcome) {
        let now = crate::clock::now();
        let result = CommandResult::from_outcome(
            &self.setup.gateway,
            &e.meter,
            &e.command_id,
            &e.action,
            outcome,
            e.recovered,
            now,
        );
        let (frames, relay) = match outcome {
            ControlOutcome::Done { relay, frames } => (frames, Some(relay)),
            ControlOutcome::Failed { relay, frames, .. }
            | ControlOutcome::Unknown { relay, frames, .. } => (frames, relay.as_ref()),
        };
        let at = rfc3339_millis(now);
        let mut audit: Vec<(String, String, String)> = Vec::new();
        if e.recovered {
            audit.push((
                at.clone(),
                "recovered".into(),
                "found in flight at start: read back only, not sent again".into(),
            ));
        }
        for f in frames {
            let what = if f.sent {
                "frame-sent"
            } else {
                "frame-received"
            };
            audit.push((rfc3339_millis(f.at), what.into(), f.hex.clone()));
        }
        audit.push((
            at.clone(),
            "result".into(),
            format!(
                "{}{}{}",
                result.outcome.name(),
                result
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                relay
                    .map(|r| format!(" (status word 3 {:04X})", r.word))
                    .unwrap_or_default()
            ),
        ));
        let record = ResultRecord {
            meter: e.meter.clone(),
            command_id: Some(e.command_id.clone()),
            id: self.result_id(&e.meter, Some(&e.command_id), ms(now)),
            outcome: result.outcome.name().to_owned(),
            reason: result.reason.clone(),
            relay_word: relay.map(|r| r.word),
            at_ms: ms(now),
            at: at.clone(),
            payload: result.to_json(),
            remember: None,
            audit,
        };
        tracing::info!(
            meter = %e.meter,
            command_id = %e.command_id,
            action = %e.action,
            outcome = result.outcome.name(),
            reason = ?result.reason,
            "command finished"
        );
        self.store(&record);
        self.view.count(&e.action, result.outcome.name());
        self.view.set_last(MeterControl {
            meter: e.meter.clone(),
            relay: relay.map(|r| RelayView::from_word(r.word)),
            command_id: Some(e.command_id.clone()),
            action: Some(e.action.clone()),
            outcome: Some(result.outcome.name().to_owned()),
            reason: result.reason.clone(),
            at: Some(at),
        });
    }
}

/// Runs a blocking closure on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "control: a blocking step failed");
            None
        }
    }
}

/// Hands `e` to its bus and stores what the meter did.
async fn execute(parts: Arc<Parts>, buses: Arc<dyn MeterBuses>, e: Execution) {
    let wait = e.request.read_back_for + Duration::from_secs(60);
    let outcome = match buses.control(&e.bus, &e.meter, e.request.clone()).await {
        Err(why) => ControlOutcome::Failed {
            reason: format!("not sent: the bus did not take the command: {why}"),
            error_byte: None,
            relay: None,
            frames: Vec::new(),
        },
        Ok(rx) => match tokio::time::timeout(wait, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => ControlOutcome::Unknown {
                reason: "the bus stopped before it answered".into(),
                relay: None,
                frames: Vec::new(),
            },
            Err(_) => ControlOutcome::Unknown {
                reason: format!(
                    "no answer from the bus within {}",
                    humantime::format_duration(wait)
                ),
                relay: None,
                frames: Vec::new(),
            },
        },
    };
    let p = parts.clone();
    blocking(move || p.finish(&e, &outcome)).await;
}

/// How often remembered command ids past their `not_after` (plus a day) are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long past `not_after` a command id is remembered.
const REMEMBER_PAST: Duration = Duration::from_secs(24 * 3600);

/// The control task: until `commands` closes (the uplink stopped). Commands found in flight in
/// the spool are read back first (never sent again).
#[allow(clippy::too_many_arguments)] // The task's inputs, each a separate handle.
pub async fn run(
    setup: ControlSetup,
    mut commands: mpsc::Receiver<IncomingCommand>,
    spool: Arc<Mutex<Spool>>,
    fresh: FreshRows,
    on_stored: OnStored,
    buses: Arc<dyn MeterBuses>,
    view: ControlView,
) {
    let parts = Arc::new(Parts {
        setup,
        spool,
        fresh,
        on_stored,
        view,
        unverified: Mutex::new((0, 0)),
    });
    // Executions run beside the loop: a close is not queued behind a trip's read-back.
    let mut running = tokio::task::JoinSet::new();
    let p = parts.clone();
    let in_flight = blocking(move || lock(&p.spool).in_flight_commands())
        .await
        .and_then(|r| {
            r.map_err(|e| tracing::error!(error = %e, "cannot read commands in flight"))
                .ok()
        })
        .unwrap_or_default();
    for f in in_flight {
        tracing::warn!(
            meter = %f.meter,
            command_id = %f.command_id,
            action = %f.action,
            "command found in flight at start: reading the meter back (not sending it again)"
        );
        match parts.recovery(f) {
            Some(e) => {
                running.spawn(execute(parts.clone(), buses.clone(), e));
            }
            None => tracing::error!("a command in flight has an unknown action; left in flight"),
        }
    }
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            msg = commands.recv() => {
                let Some(msg) = msg else { break };
                let p = parts.clone();
                match blocking(move || p.decide(&msg)).await.flatten() {
                    Some(Decision::Execute(e)) => {
                        running.spawn(execute(parts.clone(), buses.clone(), *e));
                    }
                    Some(Decision::Rejected) | None => {}
                }
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = prune.tick() => {
                let p = parts.clone();
                let before = ms(crate::clock::now()) - dur_ms(REMEMBER_PAST);
                if let Some(Err(e)) = blocking(move || lock(&p.spool).prune_commands(before)).await {
                    tracing::warn!(error = %e, "cannot forget old command ids");
                }
            }
        }
    }
    // The daemon is stopping: let running executions store their results (the bus answers
    // or drops them), within the stop budget the caller gives this task.
    while running.join_next().await.is_some() {}
}
