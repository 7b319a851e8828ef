//! The MQTT uplink: drains the outbox to the broker, QoS 1, and keeps the retained statuses.
//!
//! **Owns**: the one rumqttc event loop (MQTT 3.1.1 or 5, see `link`; inside [`Uplink::run`]),
//! the mapping of packet ids to outbox rows, the reconnect policy, the retained gateway and meter statuses and the last will.
//!
//! **Delivery guarantee: at least once.** A reading is deleted from the [`Outbox`] only when the
//! broker's PUBACK for it arrives. On every CONNACK the uplink forgets everything in flight and
//! re-sends every unacknowledged row from the start of the outbox, in rowid order (so in order
//! per meter). A reading may therefore arrive twice (its PUBACK was lost with the connection);
//! both copies carry the same `id`, the consumer's deduplication key. The session is clean
//! (`clean_session = true`) so the broker never re-sends on our behalf, and rumqttc's own
//! `pending` queue (dropped when the broker has no session) is never relied on.
//!
//! **Refused publishes (MQTT 5)**: a PUBACK with a failure reason code (e.g. `0x87` not
//! authorised by the broker's ACL) deletes nothing. The reading is published again on its own
//! backoff (`reconnect_min` doubling to `reconnect_max`, jittered; at once after a CONNACK), on
//! the same connection, while the rest of the outbox — later readings of the same meter
//! included — keeps flowing (see `refusals`). So per meter, first deliveries are in `seq` order
//! except refused readings, which arrive late: the consumer deduplicates by `id` and finds gaps
//! by `seq` (docs/mqtt.md §4). Counted in [`UplinkSnapshot::publishes_refused`] and
//! [`UplinkSnapshot::refused_waiting`] (also in the gateway status's `uplink`), logged with the
//! reason code.
//!
//! **Flow control**: at most `max_inflight` publishes are unacknowledged at a time, so a backlog
//! after an outage drains at the broker's pace. New readings are signalled with
//! [`UplinkHandle::readings_added`]; the outbox is not polled in a loop.
//!
//! **Never**: exits on a broker or network error (it reconnects with capped, jittered backoff
//! forever, including after an authorisation refusal, which is logged as such); writes or reorders
//! outbox rows; logs the password; starts the embedded broker (see [`crate::uplink::embedded_broker`]).
//!
//! Wiring, in the daemon:
//!
//! ```text
//! let (uplink, handle) = Uplink::new(&cfg.gateway, cfg.mqtt.clone(), spool_outbox)?;
//! let uplink = uplink.with_spool_stats(move || spool_counters.snapshot());
//! let task = tokio::spawn(uplink.run());          // returns the outbox after shutdown
//! // after each spool commit:      handle.readings_added();
//! // meter health:                 tokio::spawn(uplink::forward_health(bus_healths, handle));
//! // status service:               handle.snapshot();
//! // on SIGTERM:                   handle.shutdown(); task.await;
//! ```
//!
//! With `url = "embedded"`, start [`crate::uplink::embedded_broker::EmbeddedBroker`] on
//! `embedded_listen` first.

#[cfg(feature = "embedded-broker")]
mod completeness_forwarder;
pub mod embedded_broker;
mod health_forwarder;
mod link;
mod options;
mod refusals;
mod status;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meter_protocols::dlt645::freeze::FreezeKind;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use completeness_forwarder::{CompletenessPlan, forward_completeness};
pub use health_forwarder::forward_health;
use link::{Client, Events, LinkError, LinkEvent, Will};
pub use options::{Secret, UplinkConfigError};
use refusals::Refusals;

use crate::config::MqttConfig;
use crate::health::MeterHealth;
use crate::ingest::{MessageKind, Outbox};
use crate::sync::lock;
pub use status::{
    GATEWAY_STATUS_SCHEMA, GatewayState, GatewayStatus, METER_STATUS_SCHEMA, MeterClockStatus,
    MeterCounters, MeterDrops, MeterStatusMessage, ReadingSuccess, SpoolSummary, UplinkSummary,
};

/// A message that arrived on the command subscription (`{prefix}/{gateway}/meters/+/commands`),
/// as the broker delivered it. The uplink only forwards it: what it means is the `control`
/// room's to decide (a retained one is refused there, hence the flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCommand {
    /// The topic it came on.
    pub topic: String,
    /// The payload, as received.
    pub payload: Vec<u8>,
    /// The broker delivered it as a retained message.
    pub retain: bool,
    /// When it arrived (gateway wall clock).
    pub at: SystemTime,
}

/// The uplink's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionState {
    /// Not connected yet, or waiting to reconnect.
    Disconnected,
    /// Connected (CONNACK accepted).
    Connected,
    /// The broker refused the connection (bad credentials, not authorised…); retrying.
    Refused,
    /// Shutting down or stopped.
    Stopped,
}

/// A snapshot of the uplink, for the status service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UplinkSnapshot {
    /// Connection state.
    pub state: ConnectionState,
    /// The last connection error, in words.
    pub last_error: Option<String>,
    /// Connected since.
    #[serde(skip)]
    pub connected_since: Option<SystemTime>,
    /// Successful connections since start.
    pub connects: u64,
    /// Publishes (readings and statuses) waiting for PUBACK now.
    pub in_flight: usize,
    /// Reading publishes written to the connection (re-sends included).
    pub published: u64,
    /// Readings acknowledged by the broker and deleted from the outbox.
    pub acked: u64,
    /// Status messages acknowledged.
    pub statuses_acked: u64,
    /// Outbox errors (the row stays and is sent again later).
    pub outbox_errors: u64,
    /// Readings skipped because they exceed `max_packet_size` (they stay in the outbox;
    /// publishing one would break the connection on every attempt and block all others).
    pub oversized: u64,
    /// Reading publishes an MQTT 5 broker refused with a PUBACK failure reason code, every
    /// attempt counted (the readings stay in the outbox and are sent again with backoff).
    pub publishes_refused: u64,
    /// Readings refused and not accepted since: in the outbox, waiting for their next attempt.
    pub refused_waiting: u64,
    /// The last refusal: which reading, and the broker's reason code.
    pub last_refusal: Option<String>,
    /// Status publishes (retained gateway or meter status) an MQTT 5 broker refused; not
    /// retried on their own (the next status replaces them).
    pub statuses_refused: u64,
    /// The command subscription is in place on this connection (SUBACK accepted).
    pub commands_subscribed: bool,
    /// Messages received on the command subscription (those dropped included).
    pub commands_received: u64,
    /// Messages received on it and dropped because the control room's queue was full.
    pub commands_dropped: u64,
}

impl Default for UplinkSnapshot {
    fn default() -> Self {
        Self {
            state: ConnectionState::Disconnected,
            last_error: None,
            connected_since: None,
            connects: 0,
            in_flight: 0,
            published: 0,
            acked: 0,
            statuses_acked: 0,
            outbox_errors: 0,
            oversized: 0,
            publishes_refused: 0,
            refused_waiting: 0,
            last_refusal: None,
            statuses_refused: 0,
            commands_subscribed: false,
            commands_received: 0,
            commands_dropped: 0,
        }
    }
}

struct Shared {
    wake: Notify,
    meters: Mutex<MeterStatuses>,
    snapshot: Mutex<UplinkSnapshot>,
    /// The latest completeness message of each freeze kind (retained, daily first), and
    /// whether it is still to be published.
    completeness: Mutex<[Option<RetainedSlot>; 4]>,
}

/// A retained message waiting to be published: its payload, and whether it is still unsent.
type RetainedSlot = (Vec<u8>, bool);

/// The slot of `kind`'s completeness message in [`Shared`].
fn completeness_slot(kind: FreezeKind) -> usize {
    match kind {
        FreezeKind::Daily => 0,
        FreezeKind::Monthly => 1,
        FreezeKind::Hourly => 2,
        FreezeKind::LoadProfile => 3,
    }
}

/// The latest status of each meter, and which are still to be published.
#[derive(Default)]
struct MeterStatuses {
    /// Each meter's latest status, and whether it is in `unsent`.
    latest: BTreeMap<String, (MeterHealth, SystemTime, bool)>,
    /// Meters whose latest status is not published yet, oldest change first. A queue rather
    /// than only a flag per meter: the uplink looks for work on every event, and scanning
    /// 1,000 meters for a flag each time was a visible share of its CPU.
    unsent: VecDeque<String>,
    /// Meters no longer configured whose retained status is to be deleted (an empty retained
    /// publish), in the order they were removed.
    cleared: VecDeque<String>,
}

impl MeterStatuses {
    /// Keeps `status` as its meter's latest, to be published.
    fn set(&mut self, health: MeterHealth, at: SystemTime) {
        let meter = health.id.clone();
        let queued = self.latest.get(&meter).is_some_and(|(_, _, q)| *q);
        self.latest.insert(meter.clone(), (health, at, true));
        if !queued {
            self.unsent.push_back(meter);
        }
    }

    /// Forgets `meter`'s status (it is not published again, also after a reconnect) and
    /// queues the deletion of its retained message.
    fn clear(&mut self, meter: &str) {
        self.latest.remove(meter);
        self.unsent.retain(|m| m != meter);
        if !self.cleared.iter().any(|m| m == meter) {
            self.cleared.push_back(meter.to_owned());
        }
    }

    /// Marks every meter's status to be published again (a new connection).
    fn resend_all(&mut self) {
        self.unsent.clear();
        for (meter, (_, _, queued)) in &mut self.latest {
            *queued = true;
            self.unsent.push_back(meter.clone());
        }
    }

    /// The next status to publish, taken off the queue.
    fn next_unsent(&mut self) -> Option<(MeterHealth, SystemTime)> {
        while let Some(meter) = self.unsent.pop_front() {
            if let Some((health, at, queued)) = self.latest.get_mut(&meter) {
                *queued = false;
                return Some((health.clone(), *at));
            }
        }
        None
    }

    /// Puts a status that could not be queued back at the front.
    fn unsend(&mut self, meter: String) {
        if let Some((_, _, queued)) = self.latest.get_mut(&meter)
            && !*queued
        {
            *queued = true;
            self.unsent.push_front(meter);
        }
    }
}

impl Shared {
    fn snap(&self) -> std::sync::MutexGuard<'_, UplinkSnapshot> {
        lock(&self.snapshot)
    }
    fn meters(&self) -> std::sync::MutexGuard<'_, MeterStatuses> {
        lock(&self.meters)
    }
}

/// The daemon's side of the uplink: signal readings, set meter statuses, read the state, stop.
#[derive(Clone)]
pub struct UplinkHandle {
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl UplinkHandle {
    /// New rows were committed to the outbox.
    pub fn readings_added(&self) {
        self.shared.wake.notify_one();
    }

    /// Publish (retained) this meter's status as of `at`; only the latest per meter is kept
    /// until sent.
    pub fn set_meter_status(&self, health: MeterHealth, at: SystemTime) {
        self.shared.meters().set(health, at);
        self.shared.wake.notify_one();
    }

    /// `meter` is no longer configured: delete its retained status on the broker (an empty
    /// retained publish, once connected) and never publish it again. A meter configured again
    /// later gets its status back with its next [`UplinkHandle::set_meter_status`].
    pub fn clear_meter_status(&self, meter: &str) {
        self.shared.meters().clear(meter);
        self.shared.wake.notify_one();
    }

    /// Publish (retained) this `meterd.completeness.v1` message of `kind` on its topic
    /// ([`Uplink::completeness_topic`]); only the latest of each kind is kept until sent, and
    /// it is sent again on every new connection.
    pub fn set_completeness(&self, kind: FreezeKind, payload: Vec<u8>) {
        lock(&self.shared.completeness)[completeness_slot(kind)] = Some((payload, true));
        self.shared.wake.notify_one();
    }

    /// The uplink's state now.
    pub fn snapshot(&self) -> UplinkSnapshot {
        self.shared.snap().clone()
    }

    /// Ask [`Uplink::run`] to publish the offline status, disconnect and return.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

type SpoolStatsFn = Box<dyn Fn() -> SpoolSummary + Send + Sync>;
type ReadingSuccessFn = Box<dyn Fn() -> Option<ReadingSuccess> + Send + Sync>;
type MeterDropsFn = Box<dyn Fn(&str) -> Option<MeterDrops> + Send + Sync>;

/// The uplink task. Build with [`Uplink::new`], run with [`Uplink::run`] on one tokio task.
pub struct Uplink<O: Outbox> {
    gateway: String,
    config: MqttConfig,
    outbox: O,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    spool_stats: SpoolStatsFn,
    reading_success: ReadingSuccessFn,
    clock_steps: Box<dyn Fn() -> u64 + Send + Sync>,
    meter_drops: MeterDropsFn,
    started: SystemTime,
    /// The same moment on the monotonic clock: `uptime_s` does not jump with the wall clock.
    started_mono: Instant,
    /// Readings the broker refused, and when each goes out again.
    refusals: Refusals,
    /// The delays between attempts of a refused reading (its jitter; the attempt is the
    /// reading's own count).
    refusal_delays: Backoff,
    /// Where messages of the command subscription go (`None`: no subscription).
    commands: Option<mpsc::Sender<IncomingCommand>>,
}

/// What a packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Reading(i64),
    Status,
    Offline,
}

/// Per-connection bookkeeping; reset on every CONNACK and every disconnect.
#[derive(Default)]
struct Session {
    connected: bool,
    /// Requests handed to rumqttc, in order, not yet given a packet id.
    queued: VecDeque<Sent>,
    /// Packet id → what it carries, until its PUBACK.
    in_flight: HashMap<u16, Sent>,
    /// A publish rumqttc parked on a packet-id collision (`Outgoing::AwaitAck`).
    collided: Option<(u16, Sent)>,
    /// Last outbox row handed to rumqttc on this connection.
    cursor: Option<i64>,
    /// The outbox may hold rows after `cursor`.
    maybe_more: bool,
    gateway_status_due: bool,
    /// The command subscription is to be made on this connection.
    subscribe_due: bool,
    outbox_retry_at: Option<Instant>,
    /// Most publishes outstanding on this connection: `max_inflight`, or one below an MQTT 5
    /// broker's receive maximum when that is not above it.
    window: u16,
}

impl Session {
    fn outstanding(&self) -> usize {
        self.queued.len() + self.in_flight.len() + usize::from(self.collided.is_some())
    }
}

/// Reconnect delays: doubling from `min` to `max`, each drawn from [d/2, d].
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let seed = crate::clock::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            min,
            max,
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The delay before attempt `attempt + 1` (0: the first retry): `min` doubled `attempt`
    /// times, capped at `max`, drawn from [d/2, d].
    fn delay(&mut self, attempt: u32) -> Duration {
        let full = self
            .min
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = full / 2;
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(frac)
    }
}

fn valid_topic_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

impl<O: Outbox> Uplink<O> {
    /// A new uplink for `gateway`. Reads the password and certificate files now, so a wrong
    /// path fails here rather than at the first connect.
    pub fn new(
        gateway: &str,
        config: MqttConfig,
        outbox: O,
    ) -> Result<(Self, UplinkHandle), UplinkConfigError> {
        if !valid_topic_level(gateway) {
            return Err(UplinkConfigError::Range {
                key: "gateway",
                why: format!("{gateway:?} cannot be a topic level (empty, or has / + #)"),
            });
        }
        if !valid_topic_level(&config.topic_prefix) {
            return Err(UplinkConfigError::Range {
                key: "topic_prefix",
                why: "must be one non-empty topic level without / + #".into(),
            });
        }
        // Fail early on files and combinations (building a client does no I/O).
        let probe_will = Will {
            topic: String::new(),
            payload: Vec::new(),
        };
        link::connect(&config, gateway, probe_will)?;
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            wake: Notify::new(),
            meters: Mutex::new(MeterStatuses::default()),
            snapshot: Mutex::new(UplinkSnapshot::default()),
            completeness: Mutex::new([None, None, None, None]),
        });
        let handle = UplinkHandle {
            shared: shared.clone(),
            shutdown: Arc::new(tx),
        };
        let refusal_delays = Backoff::new(config.reconnect_min, config.reconnect_max);
        Ok((
            Self {
                gateway: gateway.to_owned(),
                config,
                outbox,
                shared,
                shutdown: rx,
                spool_stats: Box::new(SpoolSummary::default),
                reading_success: Box::new(|| None),
                clock_steps: Box::new(|| 0),
                meter_drops: Box::new(|_| None),
                started: crate::clock::now(),
                started_mono: Instant::now(),
                refusals: Refusals::default(),
                refusal_delays,
                commands: None,
            },
            handle,
        ))
    }

    /// Where the gateway status numbers for the spool come from. Called on the uplink task each
    /// time the gateway status or the last will is built (every `status_interval` and on every
    /// reconnect attempt), so it must be cheap (cached counters, not a `COUNT(*)`).
    pub fn with_spool_stats(
        mut self,
        f: impl Fn() -> SpoolSummary + Send + Sync + 'static,
    ) -> Self {
        self.spool_stats = Box::new(f);
        self
    }

    /// Where the gateway status's reading success rates come from (called like
    /// [`Uplink::with_spool_stats`], so it must be cheap too).
    pub fn with_reading_success(
        mut self,
        f: impl Fn() -> Option<ReadingSuccess> + Send + Sync + 'static,
    ) -> Self {
        self.reading_success = Box::new(f);
        self
    }

    /// Where the gateway status's `clock_steps` comes from (the buses' shared count of
    /// wall-clock steps; called like [`Uplink::with_spool_stats`], so it must be cheap too).
    pub fn with_clock_steps(mut self, f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock_steps = Box::new(f);
        self
    }

    /// Where a meter status's drop counters come from (the spool's per-meter counts); called
    /// for each meter status published, on the uplink task, so it must be cheap.
    pub fn with_meter_drops(
        mut self,
        f: impl Fn(&str) -> Option<MeterDrops> + Send + Sync + 'static,
    ) -> Self {
        self.meter_drops = Box::new(f);
        self
    }

    /// Subscribe (QoS 1) to `{prefix}/{gateway}/meters/+/commands` on every connection and
    /// hand what arrives to `to`. Without this call the uplink subscribes to nothing.
    /// The session is clean, so the subscription is made again after every CONNACK; a
    /// command published while the gateway is disconnected is not delivered (the billing
    /// core sees no result and decides, see docs/mqtt.md). A full queue drops the message
    /// (counted, logged): the uplink never waits for the control room.
    pub fn with_commands(mut self, to: mpsc::Sender<IncomingCommand>) -> Self {
        self.commands = Some(to);
        self
    }

    /// `{prefix}/{gateway}/meters/+/commands`.
    pub fn commands_filter(&self) -> String {
        format!(
            "{}/{}/meters/+/commands",
            self.config.topic_prefix, self.gateway
        )
    }

    /// `{prefix}/{gateway}/status`.
    pub fn gateway_status_topic(&self) -> String {
        format!("{}/{}/status", self.config.topic_prefix, self.gateway)
    }

    /// `{prefix}/{gateway}/meters/{meter}/readings`.
    pub fn readings_topic(&self, meter: &str) -> String {
        self.outbox_topic(meter, MessageKind::Reading)
    }

    /// The topic of an outbox row: `{prefix}/{gateway}/meters/{meter}/readings`, `…/freezes`
    /// or `…/events`.
    pub fn outbox_topic(&self, meter: &str, kind: MessageKind) -> String {
        let leaf = match kind {
            MessageKind::Reading => "readings",
            MessageKind::Freeze => "freezes",
            MessageKind::Event => "events",
            MessageKind::CommandResult => "command-results",
        };
        format!(
            "{}/{}/meters/{meter}/{leaf}",
            self.config.topic_prefix, self.gateway
        )
    }

    /// `{prefix}/{gateway}/completeness` (daily, the pinned topic), and
    /// `…/completeness/monthly`, `…/completeness/hourly` and `…/completeness/load_profile`.
    pub fn completeness_topic(&self, kind: FreezeKind) -> String {
        let base = format!("{}/{}/completeness", self.config.topic_prefix, self.gateway);
        match kind {
            FreezeKind::Daily => base,
            FreezeKind::Monthly | FreezeKind::Hourly | FreezeKind::LoadProfile => {
                format!("{base}/{}", kind.name())
            }
        }
    }

    /// Queues each completeness message that changed since it was last queued, while the
    /// window has room.
    fn fill_completeness(&mut self, client: &Client, s: &mut Session) {
        for kind in FreezeKind::ALL {
            if s.outstanding() >= usize::from(s.window) {
                return;
            }
            let topic = self.completeness_topic(kind);
            let mut slots = lock(&self.shared.completeness);
            let Some((payload, unsent)) = slots[completeness_slot(kind)].as_mut() else {
                continue;
            };
            if !*unsent {
                continue;
            }
            match client.try_publish(topic, true, payload.clone()) {
                Ok(()) => {
                    s.queued.push_back(Sent::Status);
                    *unsent = false;
                }
                Err(e) => warn!("cannot queue the {kind} completeness message: {e}"),
            }
        }
    }

    /// `{prefix}/{gateway}/meters/{meter}/status`.
    pub fn meter_status_topic(&self, meter: &str) -> String {
        format!(
            "{}/{}/meters/{meter}/status",
            self.config.topic_prefix, self.gateway
        )
    }

    fn gateway_status(&self, state: GatewayState, reason: Option<&str>) -> Vec<u8> {
        let mut s = GatewayStatus::new(
            &self.gateway,
            state,
            reason,
            self.started,
            crate::clock::now(),
            (self.spool_stats)(),
        );
        // A step of the wall clock (chaos soak: +1 h made uptime jump by an hour) must not
        // change the uptime.
        s.uptime_s = self.started_mono.elapsed().as_secs();
        s.reading_success = (self.reading_success)();
        s.uplink = Some({
            let snap = self.shared.snap();
            UplinkSummary {
                publishes_refused: snap.publishes_refused,
                refused_waiting: snap.refused_waiting,
            }
        });
        s.clock_steps = (self.clock_steps)();
        serde_json::to_vec(&s).unwrap_or_default()
    }

    fn will(&self) -> Will {
        Will {
            topic: self.gateway_status_topic(),
            payload: self.gateway_status(GatewayState::Offline, Some("connection-lost")),
        }
    }

    /// Run until [`UplinkHandle::shutdown`]; then publish the offline status, disconnect
    /// (bounded by `shutdown_timeout`) and hand the outbox back. Never returns on broker errors.
    pub async fn run(mut self) -> O {
        let (client, mut eventloop) = match link::connect(&self.config, &self.gateway, self.will())
        {
            Ok(c) => c,
            Err(e) => {
                // Checked in new(); only a file that changed since can get here.
                error!("uplink cannot start: {e}");
                self.shared.snap().last_error = Some(e.to_string());
                let _ = self.shutdown.wait_for(|s| *s).await;
                self.shared.snap().state = ConnectionState::Stopped;
                return self.outbox;
            }
        };

        let mut s = Session::default();
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut status_tick = tokio::time::interval(self.config.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: u32 = 0;
        let mut last_logged: Option<String> = None;

        'run: loop {
            // One `poll()` future is kept alive until it completes: dropping it half-way (when a
            // wake-up or a timer wins a `select!`) could drop a PUBLISH that rumqttc has already
            // counted as in flight. Wake-ups and timers only refill the request channel.
            let ev = {
                let mut poll = std::pin::pin!(eventloop.poll());
                loop {
                    if *self.shutdown.borrow() {
                        break 'run;
                    }
                    if s.connected {
                        self.fill(&client, &mut s);
                    }
                    let retry = s.outbox_retry_at;
                    // A refused reading's next attempt. Only a time still to come: one already
                    // due waits for room in the window, which a PUBACK makes (no hot loop).
                    let refused_due = self
                        .refusals
                        .next_due()
                        .filter(|t| s.connected && *t > Instant::now());
                    tokio::select! {
                        ev = &mut poll => break ev,
                        _ = self.shutdown.changed() => {}
                        _ = self.shared.wake.notified(), if s.connected => { s.maybe_more = true; }
                        _ = status_tick.tick(), if s.connected => { s.gateway_status_due = true; }
                        _ = async { if let Some(t) = retry { tokio::time::sleep_until(t).await } }, if retry.is_some() => {
                            s.outbox_retry_at = None;
                            s.maybe_more = true;
                        }
                        _ = async { if let Some(t) = refused_due { tokio::time::sleep_until(t).await } }, if refused_due.is_some() => {}
                    }
                }
            };
            match ev {
                Ok(ev) => self.on_event(
                    ev,
                    &mut s,
                    &mut eventloop,
                    &mut backoff,
                    &mut failures,
                    &mut last_logged,
                ),
                Err(e) => {
                    let delay = backoff.next_delay();
                    self.on_error(&e, &mut s, delay, &mut failures, &mut last_logged);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.changed() => {}
                    }
                    eventloop.set_will(self.will());
                }
            }
        }
        self.shutdown_gracefully(&client, &mut eventloop, &mut s)
            .await;
        self.shared.snap().state = ConnectionState::Stopped;
        self.outbox
    }

    fn on_event(
        &mut self,
        ev: LinkEvent,
        s: &mut Session,
        eventloop: &mut Events,
        backoff: &mut Backoff,
        failures: &mut u32,
        last_logged: &mut Option<String>,
    ) {
        match ev {
            LinkEvent::ConnAck {
                session_present,
                receive_max,
            } => self.on_connack(
                session_present,
                receive_max,
                s,
                eventloop,
                backoff,
                failures,
                last_logged,
            ),
            LinkEvent::PubAck { pkid, rejected } => match (s.in_flight.remove(&pkid), rejected) {
                (Some(sent), None) => self.on_acked(sent),
                (Some(Sent::Reading(rowid)), Some(why)) => self.on_refused(rowid, &why),
                (Some(sent), Some(why)) => {
                    // A status: the next one (status_interval, a change, a reconnect) replaces it.
                    warn!(?sent, reason = %why, "the broker refused a status publish");
                    self.shared.snap().statuses_refused += 1;
                }
                (None, _) => warn!(pkid, "PUBACK for a packet id not in flight; ignored"),
            },
            LinkEvent::Published(pkid) => {
                let sent = match s.collided {
                    Some((p, sent)) if p == pkid => {
                        s.collided = None;
                        Some(sent)
                    }
                    _ => s.queued.pop_front(),
                };
                match sent {
                    Some(sent) => {
                        if matches!(sent, Sent::Reading(_)) {
                            self.shared.snap().published += 1;
                        }
                        s.in_flight.insert(pkid, sent);
                    }
                    None => warn!(pkid, "outgoing publish with nothing queued; mapping lost"),
                }
            }
            LinkEvent::AwaitAck(pkid) => {
                debug!(pkid, "packet id collision; rumqttc waits for the ack");
                if let Some(sent) = s.queued.pop_front() {
                    s.collided = Some((pkid, sent));
                }
            }
            LinkEvent::Incoming {
                topic,
                payload,
                retain,
            } => self.on_incoming(topic, payload, retain),
            LinkEvent::SubAck { refused } => {
                if refused {
                    error!(
                        filter = %self.commands_filter(),
                        "the broker refused the command subscription (check its ACL); no \
                         commands can arrive"
                    );
                } else {
                    info!(filter = %self.commands_filter(), "subscribed to commands");
                }
                self.shared.snap().commands_subscribed = !refused;
            }
            LinkEvent::Disconnected | LinkEvent::Other => {}
        }
        self.shared.snap().in_flight = s.outstanding();
    }

    /// A message of the command subscription: handed to the control room, never waited for.
    fn on_incoming(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        let Some(to) = &self.commands else {
            debug!(%topic, "a message on a topic we did not subscribe to; ignored");
            return;
        };
        let msg = IncomingCommand {
            topic,
            payload,
            retain,
            at: crate::clock::now(),
        };
        // Counted before the hand-off: whoever sees the message also sees it counted.
        self.shared.snap().commands_received += 1;
        match to.try_send(msg) {
            Ok(()) => {}
            Err(e) => {
                let topic = match &e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => {
                        m.topic.clone()
                    }
                };
                error!(%topic, "the control room's queue is full or closed; command dropped (no result will be published)");
                self.shared.snap().commands_dropped += 1;
            }
        }
    }

    /// MQTT 5: the broker refused reading `rowid` (PUBACK reason `why`). The row stays in the
    /// outbox and goes out again, under the same id, after its own backoff (see [`Refusals`]);
    /// the rest of the outbox keeps flowing meanwhile.
    fn on_refused(&mut self, rowid: i64, why: &str) {
        let delays = &mut self.refusal_delays;
        let mut delay = Duration::ZERO;
        let attempt = self.refusals.refused(rowid, |n| {
            delay = delays.delay(n.saturating_sub(1));
            Instant::now() + delay
        });
        // Which reading: looked up only now (refusals are rare; publishes are not).
        let what = match self.row(rowid) {
            Ok(Some(row)) => format!(
                "reading {} (seq {} of meter {})",
                row.id, row.seq, row.meter
            ),
            _ => format!("outbox row {rowid}"),
        };
        if attempt == 1 {
            error!(
                "the broker refused {what}: PUBACK reason {why}; kept in the outbox, \
                 published again in {delay:?} (later readings go on)"
            );
        } else if attempt.is_multiple_of(10) {
            warn!(
                "the broker still refuses {what} after {attempt} attempts: PUBACK reason {why}; next in {delay:?}"
            );
        } else {
            debug!(
                attempt,
                "the broker refused {what} again: {why}; next in {delay:?}"
            );
        }
        let mut snap = self.shared.snap();
        snap.publishes_refused += 1;
        snap.refused_waiting = self.refusals.len() as u64;
        snap.last_refusal = Some(format!("{what}: {why}"));
    }

    /// Outbox row `rowid` if it is still there.
    fn row(&mut self, rowid: i64) -> Result<Option<crate::ingest::Pending>, O::Error> {
        Ok(self
            .outbox
            .pending(Some(rowid.saturating_sub(1)), 1)?
            .into_iter()
            .find(|row| row.rowid == rowid))
    }

    fn on_acked(&mut self, sent: Sent) {
        match sent {
            Sent::Reading(rowid) => match self.outbox.ack(rowid) {
                Ok(_) => {
                    if let Some(n) = self.refusals.accepted(rowid) {
                        info!(
                            rowid,
                            refusals = n,
                            "the broker accepted a reading it had refused"
                        );
                    }
                    let mut snap = self.shared.snap();
                    snap.acked += 1;
                    snap.refused_waiting = self.refusals.len() as u64;
                }
                Err(e) => {
                    // The row stays; it is sent again after the next reconnect (same id).
                    error!(rowid, "outbox ack failed: {e}");
                    self.shared.snap().outbox_errors += 1;
                }
            },
            Sent::Status | Sent::Offline => self.shared.snap().statuses_acked += 1,
        }
    }

    #[allow(clippy::too_many_arguments)] // The uplink's per-connection state, passed apart.
    fn on_connack(
        &mut self,
        session_present: bool,
        receive_max: Option<u16>,
        s: &mut Session,
        eventloop: &mut Events,
        backoff: &mut Backoff,
        failures: &mut u32,
        last_logged: &mut Option<String>,
    ) {
        // Whatever rumqttc kept from the last connection is ours to resend, from the outbox.
        // Its state is replaced too: `MqttState::clean` keeps buffered events (a stale
        // `Outgoing::Publish` would shift every pkid→row mapping by one and ack the wrong row),
        // a parked collision (which would block all new publishes) and the last packet id.
        eventloop.reset_session(receive_max);
        *s = Session {
            connected: true,
            // An MQTT 5 broker may take fewer unacknowledged publishes than our window. One
            // below its maximum, as with 3.1.1 (window + 1 packet ids): with in-order PUBACKs a
            // packet id is then never reused while still in flight.
            window: receive_max.map_or(self.config.max_inflight, |r| {
                r.saturating_sub(1).clamp(1, self.config.max_inflight)
            }),
            maybe_more: true,
            gateway_status_due: true,
            ..Session::default()
        };
        self.shared.meters().resend_all();
        // A clean session has no subscriptions: made again on every connection, first thing
        // in the next `fill` (before the outbox refill).
        s.subscribe_due = self.commands.is_some();
        self.shared.snap().commands_subscribed = false;
        for (_, unsent) in lock(&self.shared.completeness).iter_mut().flatten() {
            *unsent = true;
        }
        // Refused readings are due at once on a new connection (the broker may have changed);
        // the resend pass skips them and leaves them to their own schedule.
        self.refusals.reconnected(Instant::now());
        backoff.reset();
        if *failures > 0 {
            info!(
                after_failures = *failures,
                "connected to the MQTT broker again"
            );
        } else {
            info!(session_present, "connected to the MQTT broker");
        }
        *failures = 0;
        *last_logged = None;
        let mut snap = self.shared.snap();
        snap.state = ConnectionState::Connected;
        snap.connected_since = Some(crate::clock::now());
        snap.connects += 1;
    }

    fn on_error(
        &mut self,
        e: &LinkError,
        s: &mut Session,
        delay: Duration,
        failures: &mut u32,
        last_logged: &mut Option<String>,
    ) {
        let was_connected = s.connected;
        *s = Session::default();
        *failures += 1;
        let text = e.text.clone();
        let refused = e.refused;
        if was_connected {
            warn!("lost the MQTT connection: {text}; reconnecting in {delay:?}");
        } else if last_logged.as_deref() != Some(text.as_str()) || (*failures).is_multiple_of(10) {
            if refused {
                error!(attempt = *failures, "{text}; retrying in {delay:?}");
            } else {
                warn!(
                    attempt = *failures,
                    "cannot connect to the MQTT broker: {text}; retrying in {delay:?}"
                );
            }
        }
        *last_logged = Some(text.clone());
        let mut snap = self.shared.snap();
        snap.state = if refused {
            ConnectionState::Refused
        } else {
            ConnectionState::Disconnected
        };
        snap.last_error = Some(text);
        snap.connected_since = None;
        snap.in_flight = 0;
    }

    /// Hand rumqttc as much as the window allows: statuses first, then outbox rows in order.
    fn fill(&mut self, client: &Client, s: &mut Session) {
        if s.subscribe_due {
            match client.try_subscribe(self.commands_filter()) {
                Ok(()) => s.subscribe_due = false,
                Err(e) => warn!("cannot queue the command subscription yet: {e}"),
            }
        }
        let window = usize::from(s.window);
        if s.gateway_status_due && s.outstanding() < window {
            let payload = self.gateway_status(GatewayState::Online, None);
            match client.try_publish(self.gateway_status_topic(), true, payload) {
                Ok(()) => {
                    s.queued.push_back(Sent::Status);
                    s.gateway_status_due = false;
                }
                Err(e) => warn!("cannot queue the gateway status: {e}"),
            }
        }
        if s.outstanding() < window {
            self.fill_completeness(client, s);
        }
        while s.outstanding() < window {
            let next = self.shared.meters().cleared.pop_front();
            let Some(meter) = next else { break };
            if !valid_topic_level(&meter) {
                continue;
            }
            // A zero-length retained message deletes the retained message of the topic.
            match client.try_publish(self.meter_status_topic(&meter), true, Vec::new()) {
                Ok(()) => s.queued.push_back(Sent::Status),
                Err(e) => {
                    warn!("cannot queue the deletion of a meter status: {e}");
                    self.shared.meters().cleared.push_front(meter);
                    break;
                }
            }
        }
        while s.outstanding() < window {
            let next = self.shared.meters().next_unsent();
            let Some((health, at)) = next else { break };
            if !valid_topic_level(&health.id) {
                error!(meter = %health.id, "meter id cannot be a topic level; status not published");
                continue;
            }
            let mut message = MeterStatusMessage::new(&self.gateway, &health, at);
            message.counters = message.counters.with_drops((self.meter_drops)(&health.id));

            let payload = serde_json::to_vec(&message).unwrap_or_default();
            match client.try_publish(self.meter_status_topic(&health.id), true, payload) {
                Ok(()) => s.queued.push_back(Sent::Status),
                Err(e) => {
                    warn!("cannot queue a meter status: {e}");
                    self.shared.meters().unsend(health.id.clone());
                    break;
                }
            }
        }
        // Refused readings whose time has come, before newer rows (they are older).
        if s.outbox_retry_at.is_none() {
            self.retry_refused(client, s, window);
        }
        // Refill on every PUBACK, not in bigger pages: a broker that does not set TCP_NODELAY
        // (mosquitto's default) holds back further PUBACKs until our ACK, which the kernel
        // delays up to 40 ms unless we send data. Waiting for a quarter window to free up cut
        // the drain rate from ~30k/s to ~800/s in a measurement.
        while s.maybe_more && s.outbox_retry_at.is_none() && s.outstanding() < window {
            // A page can be all skipped rows (refused, oversized): then read on.
            let before = s.cursor;
            self.fill_page(client, s, window);
            if s.cursor == before {
                break;
            }
        }
        self.shared.snap().in_flight = s.outstanding();
    }

    /// Publishes the refused readings that are due, as far as the window allows.
    fn retry_refused(&mut self, client: &Client, s: &mut Session, window: usize) {
        let now = Instant::now();
        while s.outstanding() < window {
            let Some(rowid) = self.refusals.take_due(now) else {
                break;
            };
            let row = match self.row(rowid) {
                Ok(Some(row)) => row,
                Ok(None) => {
                    // Acknowledged through an earlier copy, or dropped by the spool.
                    self.refusals.forget(rowid);
                    self.shared.snap().refused_waiting = self.refusals.len() as u64;
                    continue;
                }
                Err(e) => {
                    error!("outbox read failed: {e}; retrying in 1s");
                    self.shared.snap().outbox_errors += 1;
                    self.refusals.put_back(rowid, now + Duration::from_secs(1));
                    break;
                }
            };
            let topic = self.outbox_topic(&row.meter, row.kind);
            match client.try_publish(topic, false, row.payload) {
                Ok(()) => s.queued.push_back(Sent::Reading(rowid)),
                Err(e) => {
                    warn!("cannot queue reading {}: {e}", row.id);
                    self.refusals
                        .put_back(rowid, now + Duration::from_millis(100));
                    break;
                }
            }
        }
    }

    /// One page of outbox rows after the cursor, up to the room in the window.
    fn fill_page(&mut self, client: &Client, s: &mut Session, window: usize) {
        let room = window.saturating_sub(s.outstanding());
        let rows = match self.outbox.pending(s.cursor, room) {
            Ok(rows) => rows,
            Err(e) => {
                error!("outbox read failed: {e}; retrying in 1s");
                self.shared.snap().outbox_errors += 1;
                s.outbox_retry_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        s.maybe_more = rows.len() >= room;
        for row in rows {
            if self.refusals.holds(row.rowid) {
                // Refused before: it goes out on its own schedule (retry_refused).
                s.cursor = Some(row.rowid);
                continue;
            }
            if !valid_topic_level(&row.meter) {
                error!(rowid = row.rowid, meter = %row.meter, "meter id cannot be a topic level; reading left in the outbox");
                s.cursor = Some(row.rowid);
                continue;
            }
            let topic = self.outbox_topic(&row.meter, row.kind);
            // Fixed header (5) + topic length (2) + topic + packet id (2) + payload.
            if 9 + topic.len() + row.payload.len() > self.config.max_packet_size {
                error!(
                    rowid = row.rowid,
                    id = %row.id,
                    bytes = row.payload.len(),
                    "reading exceeds mqtt.max_packet_size; left in the outbox, not published"
                );
                self.shared.snap().oversized += 1;
                s.cursor = Some(row.rowid);
                continue;
            }
            match client.try_publish(topic, false, row.payload) {
                Ok(()) => {
                    s.queued.push_back(Sent::Reading(row.rowid));
                    s.cursor = Some(row.rowid);
                }
                Err(e) => {
                    warn!("cannot queue reading {}: {e}", row.id);
                    s.maybe_more = true;
                    break;
                }
            }
        }
    }

    async fn shutdown_gracefully(
        &mut self,
        client: &Client,
        eventloop: &mut Events,
        s: &mut Session,
    ) {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        if !s.connected {
            return;
        }
        let payload = self.gateway_status(GatewayState::Offline, Some("shutdown"));
        if client
            .try_publish(self.gateway_status_topic(), true, payload)
            .is_err()
        {
            warn!("cannot queue the offline status");
        } else {
            s.queued.push_back(Sent::Offline);
        }
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let (mut failures, mut logged) = (0, None);
        // Wait for the offline status's PUBACK (reading PUBACKs still delete their rows).
        while s.queued.contains(&Sent::Offline) || s.in_flight.values().any(|v| *v == Sent::Offline)
        {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(ev)) => {
                    self.on_event(ev, s, eventloop, &mut backoff, &mut failures, &mut logged)
                }
                Ok(Err(e)) => {
                    warn!("connection lost during shutdown: {}", e.text);
                    return;
                }
                Err(_) => {
                    warn!("shutdown deadline passed before the offline status was acknowledged");
                    return;
                }
            }
        }
        if !client.try_disconnect() {
            return;
        }
        loop {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(LinkEvent::Disconnected)) => {
                    info!("disconnected from the MQTT broker");
                    return;
                }
                Ok(Ok(ev)) => {
                    self.on_event(ev, s, eventloop, &mut backoff, &mut failures, &mut logged)
                }
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}
