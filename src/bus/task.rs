//! The bus task: one task owns one bus (serial port, serial device server, or Modbus TCP
//! endpoint) and interleaves all its meters, one transaction on the wire at a time.
//!
//! It owns: the link's life (opened once, reopened with backoff after a failure; a dead port
//! is reported, never fatal), the poll schedule ([`PollScheduler`]: monotonic, aligned to
//! the wall clock, steps of the wall clock logged and counted in [`ClockSteps`]), bounded
//! retries, dead-meter degradation (the rule is [`super::schedule::Degradation`]), and one-shot
//! reads for technicians ([`BusCommand::ReadNow`], served between polls so the port is never
//! opened twice).
//!
//! Fairness and stopping: a scheduled poll that is due always goes first; between two turns
//! of the schedule at most one one-shot read is served, so clients in a loop cannot starve
//! billing polls. A one-shot read whose client has gone (its reply channel closed) is skipped
//! unread. Stop comes through its own `watch` flag ([`BusHandle::stop`]), never through the
//! command queue, so a full queue cannot lose it; the task stops after the poll in progress. The link itself is a [`Transport`]; the timing between transactions
//! (turnaround, Modbus t3.5 silence, the late-reply guard) is kept by `super::pacing`. What a
//! meter is asked and what its replies mean belongs to the sans-IO drivers in
//! [`crate::meter`]; frame verification to [`super::exchange`].
//!
//! What it sees (link up and down, attempts, poll outcomes, overruns) it reports to a
//! [`BusObserver`]; it keeps no health counters itself and never reads them back.
//!
//! It never assigns reading sequence numbers (the spool does) and never blocks another bus:
//! each bus is its own task, and a dead meter costs its own bus at most its timeout budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::clock_steps::ClockSteps;
use super::event_collect::{EventCollector, EventJob, EventSink};
use super::exchange::{ExchangeStats, ExchangeTiming, char_time};
use super::freeze_collect::{FreezeCollector, FreezeJob, FreezeSink};
use super::observer::{self, AttemptReport, BusObserver, ClockReport, PollOutcome, Unobserved};
use super::pacing::Pacing;
use super::schedule::{Cadence, Degradation, Due, Millis, PollScheduler};
use super::trace::{FrameEvent, FrameTap};
use super::transport::{LinkOpener, TransactError, Transport};
use crate::config::{BusConfig, EffectiveTiming, ProfileSet};
use crate::hex_input::to_hex;
use crate::meter::contract::{Framing, Reply, Step};
use crate::meter::control::{ControlOutcome, ControlRequest};
use crate::meter::control_run::{ControlNext, ControlRun};
use crate::meter::{DriverError, MeterDriver, Poll, PollResult};
use crate::reading::ReadingBatch;
use crate::reading::event::EventNote;

mod commission;

pub use commission::MeterCheck;

/// Options of a bus task that do not come from the bus's configuration.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Gateway id (part of each batch's id).
    pub gateway: String,
    /// Put the raw reply frames in each batch.
    pub evidence_frames: bool,
    /// Where traced frames go (`meterd trace`), if anywhere.
    pub frames: Option<broadcast::Sender<FrameEvent>>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// First delay before reopening a failed link; doubled per failure up to the maximum.
    pub reopen_min: Duration,
    /// Longest delay between reopen attempts.
    pub reopen_max: Duration,
    /// The gateway's count of wall-clock steps (one for all buses, so that a step is counted
    /// once, by the first bus that sees it).
    pub clock_steps: Arc<ClockSteps>,
    /// Freeze collection (the ledger, where records go, `[freeze]`); `None`: none.
    pub freezes: Option<FreezeSink>,
    /// Event counters and meter clocks (the stored counters, where events go, `[events]`,
    /// `[meter_clock]`); `None`: none.
    pub events: Option<EventSink>,
    /// A test's in-memory links instead of the ports (byte-stream buses); `None`: the ports.
    pub link_opener: Option<LinkOpener>,
}

impl BusOptions {
    /// Defaults for `gateway`: evidence on, no trace, 3 s connect, reopen after 1 s .. 60 s.
    pub fn new(gateway: &str) -> Self {
        Self {
            gateway: gateway.to_owned(),
            evidence_frames: true,
            frames: None,
            connect_timeout: Duration::from_secs(3),
            reopen_min: Duration::from_secs(1),
            reopen_max: Duration::from_secs(60),
            clock_steps: Arc::new(ClockSteps::new()),
            freezes: None,
            events: None,
            link_opener: None,
        }
    }
}

/// A request to a running bus task.
#[derive(Debug)]
pub enum BusCommand {
    /// Read one meter now (between two scheduled polls), and answer with its batch.
    ReadNow {
        /// Meter id.
        meter: String,
        /// Where the batch goes; an error says why there is none (unknown meter).
        reply: oneshot::Sender<Result<ReadingBatch, String>>,
    },
    /// Run one fee-control command on a meter (DL/T 645-2007 `1C`, then the read-back of
    /// status word 3; [`ControlRun`]) and answer with what the meter did. A command that
    /// restores supply ([`crate::meter::control::RelayAction::restores_supply`]) goes ahead of
    /// one-shot reads, settlement records and polls; any other is served between polls like
    /// a one-shot read. One whose client has gone before it started is skipped, unsent.
    Control {
        /// Meter id.
        meter: String,
        /// What to do.
        request: ControlRequest,
        /// Where the outcome goes.
        reply: oneshot::Sender<ControlOutcome>,
    },
}

impl BusCommand {
    /// A supply-restoring control command: served ahead of everything else.
    fn is_urgent(&self) -> bool {
        matches!(self, BusCommand::Control { request, .. } if request.action.restores_supply() && !request.read_back_only)
    }

    /// Whether its client has gone.
    fn client_gone(&self) -> bool {
        match self {
            BusCommand::ReadNow { reply, .. } => reply.is_closed(),
            BusCommand::Control { reply, .. } => reply.is_closed(),
        }
    }
}

/// The most commands a bus task takes off its queue to look for a supply-restoring one; the
/// queue itself (8) still refuses more.
const COMMAND_LOOKAHEAD: usize = 8;

/// The fee-control command a bus is running: its state machine, between its steps.
struct ActiveControl {
    meter: usize,
    run: ControlRun,
    reply: oneshot::Sender<ControlOutcome>,
    urgent: bool,
    /// Nothing to send before this (the read-back's pace).
    wake: Option<Instant>,
    /// Its step did not fit before the next poll: it goes after that poll, fitting or not.
    put_off: bool,
}

/// What one turn of a control command did.
enum ControlTurn {
    /// It used the bus.
    Sent,
    /// It waits (until its `wake`).
    Waiting,
    /// It is over (its outcome has been sent).
    Finished,
}

/// Why a bus task cannot be built.
#[derive(Debug, Error)]
pub enum BusError {
    /// A meter's driver could not be built.
    #[error("bus {bus}: {source}")]
    Driver {
        /// Bus name.
        bus: String,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// A meter names a profile that does not exist.
    #[error("bus {bus}: meter {meter}: no profile named {profile:?}")]
    Profile {
        /// Bus name.
        bus: String,
        /// Meter id.
        meter: String,
        /// Profile name.
        profile: String,
    },
}

/// A running bus task, and the observer it reports to.
#[derive(Debug)]
pub struct BusHandle<O: ?Sized> {
    /// Bus name.
    pub name: String,
    /// Commands to the task (one-shot reads; a full queue refuses more).
    pub commands: mpsc::Sender<BusCommand>,
    /// The stop flag: separate from the commands, so that a full queue never drops a stop.
    stop: watch::Sender<bool>,
    /// What the task reports to, after every transaction and poll (the bus's health, for
    /// those who read it).
    pub status: Arc<O>,
    /// The task.
    pub task: JoinHandle<()>,
}

impl<O: ?Sized> BusHandle<O> {
    /// Asks the task to stop after the poll in progress (its batch is still delivered). Never
    /// fails and never waits, however full the command queue is; one-shot reads still queued
    /// are dropped (their clients see the bus stopping).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The same handle with its task replaced by `f(task)` (a supervisor's wrapper around it).
    pub fn map_task(self, f: impl FnOnce(JoinHandle<()>) -> JoinHandle<()>) -> Self {
        let BusHandle {
            name,
            commands,
            stop,
            status,
            task,
        } = self;
        BusHandle {
            name,
            commands,
            stop,
            status,
            task: f(task),
        }
    }
}

/// Starts the task of `bus`, reporting to `observer`; polled batches go to `out` (with `seq`
/// 0: the spool numbers them). The task ends when `out` is closed.
pub fn spawn<O: BusObserver + 'static>(
    bus: &BusConfig,
    profiles: &ProfileSet,
    options: BusOptions,
    out: mpsc::Sender<ReadingBatch>,
    observer: Arc<O>,
) -> Result<BusHandle<O>, BusError> {
    let status = observer.clone();
    let runner = Bus::new(bus, profiles, options)?.with_observer(observer);
    let (tx, rx) = mpsc::channel(8);
    let (stop, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("bus", name = %bus.name);
    let task = tokio::spawn(runner.run(out, rx, stop_rx).instrument(span));
    Ok(BusHandle {
        name: bus.name.clone(),
        commands: tx,
        stop,
        status,
        task,
    })
}

struct MeterSlot {
    driver: Arc<MeterDriver>,
    timing: EffectiveTiming,
    interval: Duration,
    tap: FrameTap,
    /// Its unanswered polls in a row, and whether that made it degraded.
    degradation: Degradation,
    /// The meter's tracing span, made on its first poll (inside the bus's span) and entered
    /// by every poll after: a new span per poll cost a formatted field and a registry entry
    /// each time.
    span: Option<tracing::Span>,
    /// How long its last poll took: what a one-shot read of it is expected to take.
    last_poll: Duration,
}

/// Why one transaction produced no reply.
struct Failure {
    reason: String,
    /// The link failed or is down (not the meter's fault).
    link: bool,
}

/// A bus and its meters: the state of a bus task. Also used directly by `meterd read`.
pub struct Bus {
    name: String,
    transport: Transport,
    meters: Vec<MeterSlot>,
    options: BusOptions,
    degrade_after: u32,
    probe_every: u32,
    observer: Arc<dyn BusObserver>,
    started: Instant,
    tap: FrameTap,
    pacing: Pacing,
    reopen_at: Option<Instant>,
    backoff: Duration,
    last_link_error: Option<String>,
    /// Wire time of one character at the bus's baud rate (a serial device server's too): the
    /// exchange's absolute deadline allows the longest legal reply at this rate.
    char_time: Duration,
    /// The meters' settlement records to read between polls, if any meter has freezes.
    freezes: Option<FreezeCollector>,
    /// The meters' event counters and clocks to read between polls, if any.
    events: Option<EventCollector>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("name", &self.name).finish()
    }
}

fn wall_ms(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Bus {
    /// Builds the drivers of every meter of `bus`; opens nothing yet.
    pub fn new(
        bus: &BusConfig,
        profiles: &ProfileSet,
        options: BusOptions,
    ) -> Result<Self, BusError> {
        let tap = FrameTap::new(&bus.name, options.frames.clone());
        let mut meters: Vec<MeterSlot> = Vec::with_capacity(bus.meters.len());
        // The first driver built per profile, whose points the next meters of it share.
        let mut by_profile: HashMap<&str, usize> = HashMap::new();
        for m in &bus.meters {
            let m = m.get_ref();
            let id = m.effective_id(&bus.name);
            let profile = profiles.get(&m.profile).ok_or_else(|| BusError::Profile {
                bus: bus.name.clone(),
                meter: id.clone(),
                profile: m.profile.clone(),
            })?;
            let mut driver =
                MeterDriver::new(m, profile, &bus.name).map_err(|source| BusError::Driver {
                    bus: bus.name.clone(),
                    source,
                })?;
            match by_profile
                .get(m.profile.as_str())
                .and_then(|&i| meters.get(i))
            {
                Some(first) => driver.share_points(&first.driver),
                None => {
                    by_profile.insert(&m.profile, meters.len());
                }
            }
            meters.push(MeterSlot {
                tap: tap.for_meter(&id),
                driver: Arc::new(driver),
                timing: m
                    .timing
                    .over(&bus.timing)
                    .effective_on(bus.transport, bus.baud),
                interval: m.interval,
                degradation: Degradation::default(),
                last_poll: Duration::ZERO,
                span: None,
            });
        }
        let transport = Transport::for_bus(bus, options.link_opener.as_ref());
        let freezes = options.freezes.clone().and_then(|sink| {
            FreezeCollector::new(
                sink,
                &options.gateway,
                meters.iter().map(|m| m.driver.as_ref()),
            )
        });
        let events = options.events.clone().and_then(|sink| {
            EventCollector::new(
                sink,
                &options.gateway,
                meters.iter().map(|m| m.driver.as_ref()),
                Instant::now(),
            )
        });
        Ok(Self {
            freezes,
            events,
            name: bus.name.clone(),
            transport,
            meters,
            backoff: options.reopen_min,
            options,
            degrade_after: bus.degrade_after,
            probe_every: bus.probe_every,
            observer: Arc::new(Unobserved),
            started: Instant::now(),
            tap,
            pacing: Pacing::default(),
            reopen_at: None,
            last_link_error: None,
            char_time: char_time(
                bus.baud,
                bus.data_bits,
                bus.parity != crate::config::Parity::None,
                bus.stop_bits,
            ),
        })
    }

    /// Reports to `observer` from now on (instead of to nobody). Its meters are numbered in
    /// the bus's configuration order (as [`crate::config::BusConfig::meters`]).
    pub fn with_observer(mut self, observer: Arc<dyn BusObserver>) -> Self {
        self.observer = observer;
        self
    }

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The index of meter `id`.
    pub fn meter_index(&self, id: &str) -> Option<usize> {
        self.meters.iter().position(|m| m.driver.id() == id)
    }

    /// The meters' drivers.
    pub fn drivers(&self) -> impl Iterator<Item = &MeterDriver> {
        self.meters.iter().map(|m| m.driver.as_ref())
    }

    /// Opens the link now (the CLI wants a clear error before anything else).
    pub async fn connect(&mut self) -> Result<(), String> {
        self.reopen_at = None;
        self.ensure_open().await
    }

    async fn ensure_open(&mut self) -> Result<(), String> {
        if self.transport.is_open() {
            return Ok(());
        }
        if let Some(at) = self.reopen_at
            && Instant::now() < at
        {
            return Err(format!(
                "link down: {}",
                self.last_link_error.as_deref().unwrap_or("not open")
            ));
        }
        let connect_timeout = self.options.connect_timeout;
        let result = self.transport.open(connect_timeout).await;
        match result {
            Ok(()) => {
                let reopened = self.last_link_error.is_some();
                self.backoff = self.options.reopen_min;
                self.reopen_at = None;
                self.last_link_error = None;
                self.pacing.link_opened();
                if reopened {
                    tracing::info!(link = %self.transport.describe(), "link reopened");
                    self.tap.note("link reopened");
                }
                self.observer.link_up(reopened, self.uptime());
                Ok(())
            }
            Err(reason) => {
                self.link_down(&reason);
                Err(reason)
            }
        }
    }

    fn link_down(&mut self, reason: &str) {
        self.transport.close();
        if self.last_link_error.is_none() {
            tracing::warn!(reason, "link down");
        }
        self.tap.note(&format!("link down: {reason}"));
        self.reopen_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.options.reopen_max);
        self.last_link_error = Some(reason.to_owned());
        for m in &mut self.meters {
            m.degradation.unreachable();
        }
        self.observer.link_down(reason, self.uptime());
    }

    /// One transaction of meter `m`: retries, the late-reply guard, turnaround and silence.
    async fn transact(&mut self, m: usize, step: &Step) -> Result<(Reply, Vec<u8>), Failure> {
        let Some(timing) = self.meters.get(m).map(|s| s.timing) else {
            return Err(Failure {
                reason: "no such meter".into(),
                link: false,
            });
        };
        self.transact_with(m, step, timing).await
    }

    /// [`Bus::transact`] with `timing` instead of the meter's (a probe makes one attempt).
    async fn transact_with(
        &mut self,
        m: usize,
        step: &Step,
        timing: EffectiveTiming,
    ) -> Result<(Reply, Vec<u8>), Failure> {
        let Some(slot) = self.meters.get(m) else {
            return Err(Failure {
                reason: "no such meter".into(),
                link: false,
            });
        };
        let tap = slot.tap.clone();
        let modbus = matches!(step.framing, Framing::ModbusRtu(_));
        let mut request = Vec::with_capacity(step.bytes.len() + 4);
        // A DL/T 645 broadcast (no reply) needs the wake-up preamble as much as a read.
        let dlt645_broadcast =
            matches!(step.framing, Framing::None) && step.bytes.first() == Some(&0x68);
        if matches!(step.framing, Framing::Dlt645 { .. }) || dlt645_broadcast {
            request.resize(usize::from(timing.preamble), 0xFE);
        }
        request.extend_from_slice(&step.bytes);
        let attempts = u32::from(timing.retries) + 1;
        let mut last = String::new();
        for attempt in 0..attempts {
            self.ensure_open()
                .await
                .map_err(|reason| Failure { reason, link: true })?;
            let retry = attempt > 0;
            if retry {
                tap.note(&format!("retry {attempt} of {}", step.what));
            }
            self.pacing
                .wait_before(&request, &timing, modbus, &tap)
                .await;
            let started = Instant::now();
            let (outcome, wire) = self.one_attempt(step, &request, timing, &tap).await;
            let report = AttemptReport {
                retry,
                busy: started.elapsed(),
                timed_out: matches!(outcome, Err(Attempt::Timeout(_) | Attempt::CutOff(_))),
                wire,
            };
            self.observer.attempt(m, &report, self.uptime());
            match outcome {
                Ok(r) => {
                    self.pacing.answered(modbus);
                    return Ok(r);
                }
                Err(timeout @ (Attempt::Timeout(_) | Attempt::CutOff(_))) => {
                    // Modbus TCP replaces its connection after a timeout instead of a guard.
                    let guard = self.transport.keeps_late_replies();
                    self.pacing
                        .timed_out(&request, guard.then_some(timing.late_reply_guard));
                    let tries = if attempts > 1 {
                        format!(" ({attempts} attempts)")
                    } else {
                        String::new()
                    };
                    last = match timeout {
                        Attempt::CutOff(reason) => format!("{reason}{tries}"),
                        // (`Link` cannot be here; the pattern above took only timeouts.)
                        Attempt::Timeout(note) | Attempt::Link(note) => format!(
                            "no reply within {}{tries}{note}",
                            humantime::format_duration(timing.response_timeout),
                        ),
                    };
                }
                Err(Attempt::Link(reason)) => {
                    self.link_down(&reason);
                    return Err(Failure {
                        reason: format!("link failed: {reason}"),
                        link: true,
                    });
                }
            }
        }
        Err(Failure {
            reason: last,
            link: false,
        })
    }

    /// One attempt through the transport, with its wire counters (byte-stream transports).
    async fn one_attempt(
        &mut self,
        step: &Step,
        request: &[u8],
        timing: EffectiveTiming,
        tap: &FrameTap,
    ) -> (Result<(Reply, Vec<u8>), Attempt>, Option<ExchangeStats>) {
        let ex_timing = ExchangeTiming {
            response_timeout: timing.response_timeout,
            inter_byte_timeout: timing.inter_byte_timeout,
            echo: timing.echo,
            char_time: self.char_time,
        };
        let attempted = self.transport.transact(step, request, ex_timing, tap).await;
        let result = match attempted.result {
            Ok(x) => {
                self.pacing.active_at(x.finished);
                Ok((x.reply, x.raw))
            }
            // The caller keeps the time of a timeout (turnaround counts from it).
            Err(TransactError::Timeout(note)) => Err(Attempt::Timeout(note)),
            Err(TransactError::CutOff(reason)) => Err(Attempt::CutOff(reason)),
            Err(TransactError::Link(reason)) => Err(Attempt::Link(reason)),
        };
        (result, attempted.stats)
    }

    /// Polls meter `m` once and returns its batch (`seq` 0); updates health.
    pub async fn poll_meter(&mut self, m: usize) -> Option<ReadingBatch> {
        let slot = self.meters.get_mut(m)?;
        let driver = slot.driver.clone();
        let tap = slot.tap.clone();
        let span = slot
            .span
            .get_or_insert_with(|| tracing::info_span!("meter", id = %driver.id()))
            .clone();
        async {
            let started = Instant::now();
            let mut poll = driver.poll();
            let link_failed = self.drive(m, &mut poll, None).await;
            let result = match &link_failed {
                Some(reason) => poll.abandon(reason),
                None => poll.finish(),
            };
            let now = crate::clock::now();
            let mut batch = self.new_batch(&driver, &result, now);
            let good = result
                .values
                .iter()
                .filter(|v| v.quality != crate::reading::Quality::Bad)
                .count();
            let first_bad = result
                .values
                .iter()
                .find_map(|v| v.reason.clone())
                .filter(|_| good < result.values.len());
            let bad = result.values.len() - good;
            batch.values = result.values;
            batch.tariff_blocks = result.tariff_blocks;
            let answered = result.answered > 0;
            let degrade_after = self.degrade_after;
            let degradation = &mut self.meters.get_mut(m)?.degradation;
            let result = match link_failed {
                // Not the meter's fault: no degradation for a dead port.
                Some(reason) => {
                    degradation.unreachable();
                    observer::PollResult::LinkFailed(reason)
                }
                None => {
                    if degradation.record(answered, degrade_after) {
                        let state = if degradation.is_degraded() {
                            "Degraded"
                        } else {
                            "Ok"
                        };
                        tracing::info!(state, "meter state changed");
                        tap.note(&format!("meter state: {state}"));
                    }
                    if answered {
                        observer::PollResult::Answered
                    } else {
                        observer::PollResult::Unanswered
                    }
                }
            };
            let outcome = PollOutcome {
                at: now,
                result,
                error: first_bad,
                good_values: good,
                bad_values: bad,
                consecutive_failures: degradation.consecutive_failures(),
                degraded: degradation.is_degraded(),
            };
            self.observer.polled(m, &outcome, self.uptime());
            tracing::debug!(answered, good, bad, "poll done");
            if let Some(slot) = self.meters.get_mut(m) {
                slot.last_poll = started.elapsed();
            }
            Some(batch)
        }
        .instrument(span)
        .await
    }

    /// Sends the requests of `poll` (meter `m`) until it is complete, feeding every reply and
    /// failure to it and to `shadow` (the same requests decoded another way, for
    /// `meterd test`). Returns the link failure that cut the poll short, if one did.
    async fn drive(
        &mut self,
        m: usize,
        poll: &mut Poll<'_>,
        mut shadow: Option<&mut Poll<'_>>,
    ) -> Option<String> {
        while let Some(step) = poll.next_step() {
            match self.transact(m, &step).await {
                Ok((reply, raw)) => {
                    poll.on_reply(&reply, &raw);
                    if let Some(s) = shadow.as_deref_mut() {
                        s.on_reply(&reply, &raw);
                    }
                }
                Err(f) if f.link => return Some(f.reason),
                Err(f) => {
                    tracing::debug!(what = %step.what, reason = %f.reason, "no reply");
                    poll.on_failure(&f.reason);
                    if let Some(s) = shadow.as_deref_mut() {
                        s.on_failure(&f.reason);
                    }
                }
            }
        }
        None
    }

    /// An empty batch of `driver`'s meter read at `now`, with the evidence frames of `result`
    /// when the options ask for them (the values are the caller's to move in).
    fn new_batch(
        &self,
        driver: &MeterDriver,
        result: &PollResult,
        now: SystemTime,
    ) -> ReadingBatch {
        let mut batch = ReadingBatch::new(
            &self.options.gateway,
            driver.id(),
            driver.protocol().name(),
            0,
            now,
        );
        if self.options.evidence_frames {
            batch.frames = result.frames.iter().map(|f| to_hex(f)).collect();
        }
        batch.utc_offset = Some(driver.utc_offset());
        batch
    }

    /// Runs one freeze-record read of meter `id` to its end: the technician's
    /// `read --freeze load_profile` (the daemon's collector reads between polls instead).
    pub async fn read_record(
        &mut self,
        id: &str,
        mut read: crate::meter::freeze_read::FreezeRead,
    ) -> Result<crate::meter::freeze_read::FreezeOutcome, String> {
        let m = self
            .meter_index(id)
            .ok_or_else(|| format!("no meter {id:?} on bus {}", self.name))?;
        while let Some(step) = read.next_step() {
            match self.transact(m, &step).await {
                Ok((reply, raw)) => read.on_reply(&reply, &raw),
                Err(f) => {
                    read.on_failure(&f.reason);
                    break;
                }
            }
        }
        Ok(read.finish())
    }

    /// Reads meter `id` once: the technician's one-shot read.
    pub async fn read_now(&mut self, id: &str) -> Result<ReadingBatch, String> {
        let m = self
            .meter_index(id)
            .ok_or_else(|| format!("no meter {id:?} on bus {}", self.name))?;
        self.poll_meter(m)
            .await
            .ok_or_else(|| format!("no meter {id:?} on bus {}", self.name))
    }

    /// Looks at the wall and the monotonic clock for the scheduler; logs and reports a step
    /// of the wall clock. Returns the scheduling time.
    fn clock_now(&self, scheduler: &mut PollScheduler) -> Millis {
        let steps = &self.options.clock_steps;
        let mono = steps.mono_ms(Instant::now());
        let wall = wall_ms(crate::clock::now());
        let (now, step) = scheduler.clock(wall, mono);
        if let Some(step) = step {
            let by = if step.by_ms < 0 { "back" } else { "forward" };
            // Whole seconds: a step is over 1 s by definition, and "1h" reads better than the
            // "59m 59s 999ms" the two clocks' sampling gives.
            let secs = step.by_ms.unsigned_abs().saturating_add(500) / 1000;
            let size = humantime::format_duration(Duration::from_secs(secs));
            let first = steps.observe(wall.saturating_sub(mono));
            if first {
                tracing::warn!(
                    expected = %crate::clock::rfc3339_ms(step.expected),
                    observed = %crate::clock::rfc3339_ms(step.observed),
                    "the wall clock stepped {by} by {size}; polls keep their pace and realign to the new time"
                );
            } else {
                tracing::info!(
                    "the wall clock stepped {by} by {size} (already counted); slots realigned"
                );
            }
            self.tap.note(&format!("wall clock stepped {by} by {size}"));
            self.observer.clock_step(step.by_ms, self.uptime());
        } else if steps.observe(wall.saturating_sub(mono)) {
            // Another bus has not looked since the step, and this one only just started.
            tracing::warn!("the wall clock stepped by more than 1 s (seen as this bus started)");
        }
        now
    }

    /// The task body: poll on schedule, serve one-shot reads between polls, until `out`
    /// closes or `stop` is set.
    pub async fn run(
        mut self,
        out: mpsc::Sender<ReadingBatch>,
        mut commands: mpsc::Receiver<BusCommand>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut scheduler = PollScheduler::new();
        let now = self.clock_now(&mut scheduler);
        for slot in &self.meters {
            let ms = i64::try_from(slot.interval.as_millis()).unwrap_or(i64::MAX);
            scheduler.add(Cadence::every(ms), now);
        }
        let mut commands_open = true;
        let mut stop_open = true;
        // Commands taken off the queue, oldest first (at most COMMAND_LOOKAHEAD): a
        // supply-restoring control is served out of order, the rest in turn.
        let mut queue: VecDeque<BusCommand> = VecDeque::new();
        // The front command was put off until after the next poll.
        let mut deferred = false;
        // The fee-control command in progress, if any (one at a time per bus).
        let mut active: Option<ActiveControl> = None;
        // Open at once so that a dead port shows in the status before the first poll.
        let _ = self.ensure_open().await;
        loop {
            if *stop.borrow() {
                self.abandon_control(active.take(), "the bus stopped during the read-back");
                return;
            }
            let now = self.clock_now(&mut scheduler);
            while queue.len() < COMMAND_LOOKAHEAD {
                match next_command(&mut commands, &mut commands_open) {
                    Some(cmd) => queue.push_back(cmd),
                    None => break,
                }
            }
            // A supply-restoring command goes ahead of everything: its next step if it
            // runs, else the first one queued starts.
            if active.is_none()
                && let Some(i) = queue.iter().position(BusCommand::is_urgent)
                && let Some(cmd) = queue.remove(i)
            {
                active = self.start_control(cmd);
            }
            if let Some(ac) = active.as_mut().filter(|ac| ac.urgent) {
                match self.control_turn(ac).await {
                    ControlTurn::Sent => continue,
                    ControlTurn::Finished => {
                        active = None;
                        continue;
                    }
                    ControlTurn::Waiting => {}
                }
            }
            let mut busy = false;
            // A scheduled poll that is due goes first.
            if let Some(due) = scheduler.next_due(now) {
                self.poll_due(&mut scheduler, due, &out).await;
                if out.is_closed() || *stop.borrow() {
                    self.abandon_control(active.take(), "the bus stopped during the read-back");
                    return;
                }
                busy = true;
            }
            let room = scheduler.next_wakeup().map(|next| next - now);
            // Then one step of a control command in progress, if it is its time and it fits
            // before the next poll; one put off goes right after that poll, fitting or not.
            if let Some(ac) = active.as_mut()
                && ac.wake.is_none_or(|w| w <= Instant::now())
            {
                let go = (ac.put_off && busy) || self.control_fits(ac.meter, room);
                if !go {
                    ac.put_off = true;
                } else {
                    ac.put_off = false;
                    match self.control_turn(ac).await {
                        ControlTurn::Sent => continue,
                        ControlTurn::Finished => {
                            active = None;
                            continue;
                        }
                        ControlTurn::Waiting => {}
                    }
                }
            }
            // Then at most one one-shot read or control start whose client still waits, if
            // it fits before the next poll (a read of the meter takes about as long as its
            // last poll); one put off is served after that poll, whether it fits or not, so
            // it never waits longer.
            while let Some(cmd) = queue.pop_front() {
                if cmd.client_gone() {
                    tracing::debug!("command skipped: its client has gone");
                    deferred = false;
                    continue;
                }
                let is_control = matches!(cmd, BusCommand::Control { .. });
                if is_control && active.is_some() {
                    // One control at a time: it waits for the one in progress.
                    queue.push_front(cmd);
                    break;
                }
                if !deferred && !self.fits(&cmd, room) {
                    queue.push_front(cmd);
                    deferred = true;
                    break;
                }
                deferred = false;
                if is_control {
                    active = self.start_control(cmd);
                    if let Some(ac) = active.as_mut() {
                        match self.control_turn(ac).await {
                            ControlTurn::Finished => active = None,
                            ControlTurn::Sent | ControlTurn::Waiting => {}
                        }
                        busy = true;
                    }
                    break;
                }
                if self.serve(cmd).await {
                    busy = true;
                    break;
                }
            }
            if busy {
                continue;
            }
            let wake = scheduler.next_wakeup().unwrap_or(now + 60_000);
            // Then a settlement record, if one is wanted, the budget allows it and it fits
            // before the next poll.
            if self.collect_freeze(wake - now).await {
                continue;
            }
            // Then an event counter, record or meter clock, on the same terms.
            if self.collect_event(wake - now).await {
                continue;
            }
            let mut wait = Duration::from_millis(u64::try_from((wake - now).max(1)).unwrap_or(1))
                .min(Duration::from_secs(60));
            // The event collector's next counter round or clock read may come before that.
            if let Some(events) = self
                .events
                .as_ref()
                .and_then(|c| c.wake_in(tokio::time::Instant::now(), Duration::from_secs(1)))
            {
                wait = wait.min(events);
            }
            // A control step waits for its time, or (put off) for the next poll.
            if let Some(w) = active
                .as_ref()
                .filter(|ac| !ac.put_off)
                .and_then(|ac| ac.wake)
            {
                wait = wait.min(w.saturating_duration_since(Instant::now()));
            }
            let can_take = commands_open && queue.len() < COMMAND_LOOKAHEAD;
            tokio::select! {
                biased;
                changed = stop.changed(), if stop_open => {
                    // The handle gone without a stop: run on until `out` closes.
                    if changed.is_err() {
                        stop_open = false;
                    }
                }
                _ = out.closed() => {
                    self.abandon_control(active.take(), "the bus stopped during the read-back");
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                cmd = commands.recv(), if can_take => match cmd {
                    Some(cmd) => queue.push_back(cmd),
                    None => commands_open = false,
                },
            }
        }
    }

    /// Starts a control command: `None` when it is over at once (refused before anything was
    /// sent, unknown meter) or its client has gone; the outcome has then been sent.
    fn start_control(&self, cmd: BusCommand) -> Option<ActiveControl> {
        let BusCommand::Control {
            meter,
            request,
            reply,
        } = cmd
        else {
            return None;
        };
        if reply.is_closed() {
            tracing::debug!(%meter, "control command skipped, unsent: its client has gone");
            return None;
        }
        let urgent = request.action.restores_supply() && !request.read_back_only;
        let command_id = request.command_id.clone();
        let action = request.action.name();
        let Some((m, slot)) = self
            .meter_index(&meter)
            .and_then(|m| Some((m, self.meters.get(m)?)))
        else {
            let _ = reply.send(ControlOutcome::Failed {
                reason: format!("no meter {meter:?} on bus {}; nothing sent", self.name),
                error_byte: None,
                relay: None,
                frames: Vec::new(),
            });
            return None;
        };
        match ControlRun::new(&slot.driver, request, crate::clock::now()) {
            Ok(run) => {
                tracing::info!(%meter, command_id, action, "control command started");
                slot.tap
                    .note(&format!("control {action} (command {command_id})"));
                Some(ActiveControl {
                    meter: m,
                    run,
                    reply,
                    urgent,
                    wake: None,
                    put_off: false,
                })
            }
            Err(outcome) => {
                tracing::warn!(%meter, command_id, action, ?outcome, "control command refused before sending");
                let _ = reply.send(outcome);
                None
            }
        }
    }

    /// One turn of control command `ac`: its next step on the wire, or its wait, or its end.
    async fn control_turn(&mut self, ac: &mut ActiveControl) -> ControlTurn {
        match ac.run.next(self.started.elapsed()) {
            ControlNext::Send(step) => {
                let Some(mut timing) = self.meters.get(ac.meter).map(|s| s.timing) else {
                    return ControlTurn::Finished;
                };
                // One attempt per step: the run itself resends a 1C once, never the bus.
                timing.retries = 0;
                let result = self.transact_with(ac.meter, &step, timing).await;
                let at = crate::clock::now();
                let now = self.started.elapsed();
                match result {
                    Ok((reply, raw)) => ac.run.on_reply(&reply, &step.bytes, &raw, at, now),
                    Err(f) => ac.run.on_failure(&f.reason, &step.bytes, at, now),
                }
                ac.wake = None;
                ControlTurn::Sent
            }
            ControlNext::WaitUntil(d) => {
                let at = self.started + d;
                ac.wake = Some(at);
                ControlTurn::Waiting
            }
            ControlNext::Finished(outcome) => {
                let (kind, reason) = match &outcome {
                    ControlOutcome::Done { .. } => ("done", ""),
                    ControlOutcome::Failed { reason, .. } => ("failed", reason.as_str()),
                    ControlOutcome::Unknown { reason, .. } => ("unknown", reason.as_str()),
                };
                let req = ac.run.request();
                tracing::info!(command_id = %req.command_id, action = req.action.name(), outcome = kind, reason, "control command finished");
                if let Some(slot) = self.meters.get(ac.meter) {
                    slot.tap.note(&format!(
                        "control {} (command {}): {kind}",
                        req.action.name(),
                        req.command_id
                    ));
                }
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut ac.reply, tx);
                let _ = reply.send(outcome);
                ControlTurn::Finished
            }
        }
    }

    /// Ends a control command cut short by the bus stopping: `Unknown`, with the frames so
    /// far (its client is told rather than left with a closed channel).
    fn abandon_control(&self, ac: Option<ActiveControl>, reason: &str) {
        let Some(ac) = ac else { return };
        let _ = ac.reply.send(ControlOutcome::Unknown {
            reason: reason.to_owned(),
            relay: None,
            frames: ac.run.frames().to_vec(),
        });
    }

    /// Whether one control step (one transaction) fits in `room_ms` before the next poll.
    fn control_fits(&self, m: usize, room_ms: Option<Millis>) -> bool {
        let Some(room) = room_ms else {
            return true;
        };
        let need = self.meters.get(m).map_or(Duration::from_secs(1), |s| {
            s.timing.response_timeout + Duration::from_millis(300)
        });
        Duration::from_millis(u64::try_from(room.max(0)).unwrap_or(0)) >= need
    }

    /// Reads one settlement record if one is wanted and `room_ms` (until the next poll) holds
    /// it; true when it used the bus.
    async fn collect_freeze(&mut self, room_ms: Millis) -> bool {
        let Some(collector) = self.freezes.as_mut() else {
            return false;
        };
        if !self.transport.is_open() {
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some(FreezeJob { info, mut read }) = collector.next(wall_ms(crate::clock::now()), now)
        else {
            return false;
        };
        // A record takes a few exchanges: stamp(s) and two value blocks, each up to a
        // response timeout per attempt. It waits for a longer gap rather than delay a poll.
        let need = self
            .meters
            .get(info.meter)
            .map_or(Duration::from_secs(3), |m| {
                (m.timing.response_timeout + Duration::from_millis(300)) * 4
            });
        if Duration::from_millis(u64::try_from(room_ms.max(0)).unwrap_or(0)) < need {
            return false;
        }
        let started = tokio::time::Instant::now();
        let span = tracing::info_span!("freeze", kind = %info.kind, stamp = %info.stamp);
        let mut link_failed = false;
        async {
            while let Some(step) = read.next_step() {
                match self.transact(info.meter, &step).await {
                    Ok((reply, raw)) => read.on_reply(&reply, &raw),
                    Err(f) => {
                        link_failed = f.link;
                        read.on_failure(&f.reason);
                        break;
                    }
                }
            }
        }
        .instrument(span)
        .await;
        let outcome = read.finish();
        let spent = started.elapsed();
        let read_at = crate::clock::rfc3339_millis(crate::clock::now());
        let evidence = self.options.evidence_frames;
        let Some(collector) = self.freezes.as_mut() else {
            return true;
        };
        if link_failed {
            tracing::debug!("freeze read cut short by the link");
        }
        if let Some(event) = collector.done(
            info,
            outcome,
            spent,
            &read_at,
            evidence,
            tokio::time::Instant::now(),
        ) {
            // The receiver gone means the daemon is stopping.
            let _ = collector.out().send(event).await;
        }
        true
    }

    /// Runs one event or clock job if one is wanted and `room_ms` (until the next poll) holds
    /// it; true when it used the bus.
    async fn collect_event(&mut self, room_ms: Millis) -> bool {
        let Some(collector) = self.events.as_mut() else {
            return false;
        };
        if !self.transport.is_open() {
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some(job) = collector.next(wall_ms(crate::clock::now()), now) else {
            return false;
        };
        let EventJob { meter, steps, .. } = &job;
        let per_step = self.meters.get(*meter).map_or(Duration::from_secs(3), |m| {
            m.timing.response_timeout + Duration::from_millis(300)
        });
        let need = per_step * u32::try_from(steps.len()).unwrap_or(1).max(1) * 2;
        if Duration::from_millis(u64::try_from(room_ms.max(0)).unwrap_or(0)) < need {
            // Not now: asked again at the next idle turn (the job is rebuilt then).
            return false;
        }
        let started = tokio::time::Instant::now();
        let span = tracing::info_span!("event", job = ?job.kind);
        let mut replies = Vec::with_capacity(steps.len());
        let mut failed = None;
        async {
            for step in steps {
                match self.transact(*meter, step).await {
                    Ok(r) => replies.push(r),
                    Err(f) => {
                        failed = Some(f.reason);
                        break;
                    }
                }
            }
        }
        .instrument(span)
        .await;
        let spent = started.elapsed();
        let gateway_ms = wall_ms(crate::clock::now());
        let evidence = self.options.evidence_frames;
        let Some(collector) = self.events.as_mut() else {
            return true;
        };
        let outcome = match failed {
            Some(reason) => Err(reason),
            None => Ok(replies),
        };
        let notes = collector.done(
            &job,
            outcome,
            spent,
            gateway_ms,
            evidence,
            tokio::time::Instant::now(),
        );
        let out = collector.out().clone();
        let uptime = self.uptime();
        for note in notes {
            if let EventNote::ClockChecked {
                offset_ms,
                off,
                note: what,
                ..
            } = &note
            {
                let report = ClockReport {
                    at: crate::clock::now(),
                    offset_ms: *offset_ms,
                    off: *off,
                    note: what.clone(),
                };
                self.observer.meter_clock(job.meter, &report, uptime);
            }
            // The receiver gone means the daemon is stopping.
            let _ = out.send(note).await;
        }
        true
    }

    async fn poll_due(
        &mut self,
        scheduler: &mut PollScheduler,
        due: Due,
        out: &mpsc::Sender<ReadingBatch>,
    ) {
        let batch = self.poll_meter(due.meter).await;
        scheduler.complete(due);
        if let Some(slot) = self.meters.get(due.meter) {
            let probe = slot.degradation.probe_every(self.probe_every);
            scheduler.set_probe_every(due.meter, probe);
        }
        let overruns = scheduler.overruns(due.meter);
        self.observer.overruns(due.meter, overruns, self.uptime());
        if let Some(batch) = batch {
            // The receiver gone means the daemon is stopping; the loop sees it.
            let _ = out.send(batch).await;
        }
    }

    /// Whether a one-shot read fits in `room_ms` before the next poll (`None`: no poll due):
    /// its meter's last poll took no longer.
    fn fits(&self, cmd: &BusCommand, room_ms: Option<Millis>) -> bool {
        let Some(room) = room_ms else {
            return true;
        };
        match cmd {
            BusCommand::ReadNow { meter, .. } => {
                let need = self
                    .meter_index(meter)
                    .and_then(|m| self.meters.get(m))
                    .map_or(Duration::ZERO, |s| s.last_poll);
                Duration::from_millis(u64::try_from(room.max(0)).unwrap_or(0)) >= need
            }
            BusCommand::Control { meter, .. } => self
                .meter_index(meter)
                .is_none_or(|m| self.control_fits(m, Some(room))),
        }
    }

    /// Serves a command; false when there was nothing to do (its client had gone).
    async fn serve(&mut self, cmd: BusCommand) -> bool {
        match cmd {
            BusCommand::ReadNow { meter, reply } => {
                if reply.is_closed() {
                    tracing::debug!(%meter, "one-shot read skipped: its client has gone");
                    return false;
                }
                let r = self.read_now(&meter).await;
                let _ = reply.send(r);
                true
            }
            // Controls are started by the run loop ([`Bus::start_control`]).
            BusCommand::Control { .. } => false,
        }
    }
}

/// The next queued command, without waiting.
fn next_command(commands: &mut mpsc::Receiver<BusCommand>, open: &mut bool) -> Option<BusCommand> {
    if !*open {
        return None;
    }
    match commands.try_recv() {
        Ok(cmd) => Some(cmd),
        Err(mpsc::error::TryRecvError::Empty) => None,
        Err(mpsc::error::TryRecvError::Disconnected) => {
            *open = false;
            None
        }
    }
}

enum Attempt {
    Timeout(String),
    /// Bytes kept coming until the exchange's absolute deadline: counted as a timeout.
    CutOff(String),
    Link(String),
}
