//! The bus task: one task owns one bus (serial port, serial device server, or Modbus TCP
//! endpoint) and interleaves all its meters, one transaction on the wire at a time.
//!
//! It owns: the link (opened once, reopened with backoff after a failure; a dead port is
//! reported in the status, never fatal), the wall-clock poll schedule ([`PollScheduler`]), the
//! timing between transactions (turnaround after the last byte, Modbus t3.5 silence, the
//! late-reply guard after a timeout), bounded retries, dead-meter degradation, the status
//! snapshot, and one-shot reads for technicians ([`BusCommand::ReadNow`], served between polls
//! so the port is never opened twice). What a meter is asked and what its replies mean belongs
//! to the sans-IO drivers in [`crate::meter`]; frame verification to [`super::exchange`].
//!
//! It never assigns reading sequence numbers (the spool does) and never blocks another bus:
//! each bus is its own task, and a dead meter costs its own bus at most its timeout budget.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meter_protocols::modbus::rtu;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::exchange::{ExchangeError, ExchangeTiming, Framing, Reply, exchange};
use super::health::{BusStatus, LinkState, MeterState, MeterStatus};
use super::schedule::{Cadence, Due, Millis, PollScheduler};
use super::trace::{Direction, FrameEvent, FrameTap};
use super::transport::{Link, LinkSettings};
use crate::config::{BusConfig, EffectiveTiming, ProfileSet, TransportKind};
use crate::hex_input::to_hex;
use crate::meter::{DriverError, MeterDriver, Step};
use crate::reading::ReadingBatch;
use crate::sync::lock;

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
    /// Stop after the poll in progress (its batch is still delivered); the task then returns.
    Stop,
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

/// A running bus task.
#[derive(Debug)]
pub struct BusHandle {
    /// Bus name.
    pub name: String,
    /// Commands to the task.
    pub commands: mpsc::Sender<BusCommand>,
    /// The status snapshot, updated after every transaction.
    pub status: Arc<Mutex<BusStatus>>,
    /// The task.
    pub task: JoinHandle<()>,
}

/// Starts the task of `bus`; polled batches go to `out` (with `seq` 0: the spool numbers them).
/// The task ends when `out` is closed.
pub fn spawn(
    bus: &BusConfig,
    profiles: &ProfileSet,
    options: BusOptions,
    out: mpsc::Sender<ReadingBatch>,
) -> Result<BusHandle, BusError> {
    let runner = Bus::new(bus, profiles, options)?;
    let status = runner.status();
    let (tx, rx) = mpsc::channel(8);
    let span = tracing::info_span!("bus", name = %bus.name);
    let task = tokio::spawn(runner.run(out, rx).instrument(span));
    Ok(BusHandle {
        name: bus.name.clone(),
        commands: tx,
        status,
        task,
    })
}

struct MeterSlot {
    driver: Arc<MeterDriver>,
    timing: EffectiveTiming,
    interval: Duration,
    tap: FrameTap,
    /// The meter's tracing span, made on its first poll (inside the bus's span) and entered
    /// by every poll after: a new span per poll cost a formatted field and a registry entry
    /// each time.
    span: Option<tracing::Span>,
}

/// The link of a bus.
enum Wire {
    /// Serial port or raw TCP: our own framing through [`exchange`].
    Raw {
        settings: LinkSettings,
        link: Option<Link>,
    },
    /// Modbus TCP through tokio-modbus.
    ModbusTcp {
        address: String,
        ctx: Option<ModbusTcpClient>,
    },
}

impl Wire {
    fn is_open(&self) -> bool {
        match self {
            Wire::Raw { link, .. } => link.is_some(),
            Wire::ModbusTcp { ctx, .. } => ctx.is_some(),
        }
    }

    fn close(&mut self) {
        match self {
            Wire::Raw { link, .. } => *link = None,
            Wire::ModbusTcp { ctx, .. } => *ctx = None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Wire::Raw { settings, .. } => settings.describe(),
            Wire::ModbusTcp { address, .. } => format!("modbus-tcp://{address}"),
        }
    }
}

/// A timed-out request, for the late-reply guard.
struct TimedOut {
    request: Vec<u8>,
    at: Instant,
    guard: Duration,
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
    wire: Wire,
    meters: Vec<MeterSlot>,
    options: BusOptions,
    degrade_after: u32,
    probe_every: u32,
    status: Arc<Mutex<BusStatus>>,
    started: Instant,
    tap: FrameTap,
    /// When the last byte went or came (for turnaround and Modbus silence).
    last_activity: Option<Instant>,
    after_timeout: Option<TimedOut>,
    reopen_at: Option<Instant>,
    backoff: Duration,
    last_link_error: Option<String>,
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
                span: None,
            });
        }
        let wire = match LinkSettings::from_bus(bus) {
            Some(settings) => Wire::Raw {
                settings,
                link: None,
            },
            None => Wire::ModbusTcp {
                address: bus.host.clone().unwrap_or_default(),
                ctx: None,
            },
        };
        debug_assert!(matches!(
            (&wire, bus.transport),
            (Wire::ModbusTcp { .. }, TransportKind::ModbusTcp) | (Wire::Raw { .. }, _)
        ));
        let status = BusStatus::new(
            &bus.name,
            meters
                .iter()
                .map(|m| MeterStatus::new(m.driver.id(), m.driver.protocol().name()))
                .collect(),
        );
        Ok(Self {
            name: bus.name.clone(),
            wire,
            meters,
            backoff: options.reopen_min,
            options,
            degrade_after: bus.degrade_after,
            probe_every: bus.probe_every,
            status: Arc::new(Mutex::new(status)),
            started: Instant::now(),
            tap,
            last_activity: None,
            after_timeout: None,
            reopen_at: None,
            last_link_error: None,
        })
    }

    /// The shared status snapshot.
    pub fn status(&self) -> Arc<Mutex<BusStatus>> {
        self.status.clone()
    }

    fn with_status<R>(&self, f: impl FnOnce(&mut BusStatus) -> R) -> R {
        let mut guard = lock(&self.status);
        guard.tick(self.started.elapsed());
        f(&mut guard)
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
        if self.wire.is_open() {
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
        let result = match &mut self.wire {
            Wire::Raw { settings, link } => match Link::open(settings, connect_timeout).await {
                Ok(l) => {
                    *link = Some(l);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            Wire::ModbusTcp { address, ctx } => ModbusTcpClient::connect(address, connect_timeout)
                .await
                .map(|c| *ctx = Some(c)),
        };
        match result {
            Ok(()) => {
                let reopened = self.last_link_error.is_some();
                self.backoff = self.options.reopen_min;
                self.reopen_at = None;
                self.last_link_error = None;
                self.last_activity = None;
                if reopened {
                    tracing::info!(link = %self.wire.describe(), "link reopened");
                    self.tap.note("link reopened");
                }
                self.with_status(|s| {
                    s.link = LinkState::Up;
                    if reopened {
                        s.reopens += 1;
                    }
                    for m in &mut s.meters {
                        if m.state == MeterState::Unreachable {
                            m.state = MeterState::Ok;
                        }
                    }
                });
                Ok(())
            }
            Err(reason) => {
                self.link_down(&reason);
                Err(reason)
            }
        }
    }

    fn link_down(&mut self, reason: &str) {
        self.wire.close();
        if self.last_link_error.is_none() {
            tracing::warn!(reason, "link down");
        }
        self.tap.note(&format!("link down: {reason}"));
        self.reopen_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.options.reopen_max);
        self.last_link_error = Some(reason.to_owned());
        let reason = reason.to_owned();
        self.with_status(|s| {
            s.link = LinkState::Down(reason);
            s.link_errors += 1;
            for m in &mut s.meters {
                m.state = MeterState::Unreachable;
            }
        });
    }

    /// One transaction of meter `m`: retries, the late-reply guard, turnaround and silence.
    async fn transact(&mut self, m: usize, step: &Step) -> Result<(Reply, Vec<u8>), Failure> {
        let Some(slot) = self.meters.get(m) else {
            return Err(Failure {
                reason: "no such meter".into(),
                link: false,
            });
        };
        let timing = slot.timing;
        let tap = slot.tap.clone();
        let modbus = matches!(step.framing, Framing::ModbusRtu(_));
        let mut request = Vec::with_capacity(step.bytes.len() + 4);
        if matches!(step.framing, Framing::Dlt645 { .. }) {
            request.resize(usize::from(timing.preamble), 0xFE);
        }
        request.extend_from_slice(&step.bytes);
        let attempts = u32::from(timing.retries) + 1;
        let mut last = String::new();
        for attempt in 0..attempts {
            self.ensure_open()
                .await
                .map_err(|reason| Failure { reason, link: true })?;
            if attempt > 0 {
                tap.note(&format!("retry {attempt} of {}", step.what));
                self.with_status(|s| s.retries += 1);
            }
            self.keep_silence(&request, timing, modbus, &tap).await;
            let started = Instant::now();
            let outcome = self.one_attempt(m, step, &request, timing, &tap).await;
            let busy = started.elapsed();
            self.with_status(|s| {
                s.transactions += 1;
                s.busy += busy;
            });
            match outcome {
                Ok(r) => {
                    // After a timed-out attempt, this reply may be the late answer to that
                    // attempt, and the answer to this one may still be on its way. A Modbus
                    // RTU reply does not say which register it answers, so the late-reply
                    // guard stays armed, from now, for the next different request. DL/T 645
                    // replies carry their DI: the exchange skips one about another item.
                    let rtu = matches!(step.framing, Framing::ModbusRtu(_));
                    match self.after_timeout.as_mut() {
                        Some(t) if rtu => t.at = Instant::now(),
                        _ => self.after_timeout = None,
                    }
                    return Ok(r);
                }
                Err(Attempt::Timeout(note)) => {
                    self.with_status(|s| {
                        s.timeouts += 1;
                        if let Some(ms) = s.meters.get_mut(m) {
                            ms.timeouts += 1;
                        }
                    });
                    self.last_activity = Some(Instant::now());
                    // Modbus TCP replaces its connection after a timeout instead.
                    if matches!(self.wire, Wire::Raw { .. }) {
                        self.after_timeout = Some(TimedOut {
                            request: request.clone(),
                            at: Instant::now(),
                            guard: timing.late_reply_guard,
                        });
                    }
                    last = format!(
                        "no reply within {}{}{note}",
                        humantime::format_duration(timing.response_timeout),
                        if attempts > 1 {
                            format!(" ({attempts} attempts)")
                        } else {
                            String::new()
                        }
                    );
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

    /// Waits what must pass before `request` goes out.
    async fn keep_silence(
        &mut self,
        request: &[u8],
        timing: EffectiveTiming,
        modbus: bool,
        tap: &FrameTap,
    ) {
        // After a timeout, a different request waits out the late reply first; the exchange
        // then discards it with the rest of the stale input.
        if let Some(t) = &self.after_timeout
            && t.request != request
        {
            let until = t.at + t.guard;
            if until > Instant::now() {
                tap.note(&format!(
                    "late-reply guard: waiting {} after a timeout",
                    humantime::format_duration(t.guard)
                ));
                tokio::time::sleep_until(until).await;
            }
            self.after_timeout = None;
        }
        if let Some(last) = self.last_activity {
            let gap = if modbus {
                timing.turnaround.max(timing.modbus_silence)
            } else {
                timing.turnaround
            };
            sleep_precisely(last + gap).await;
        }
    }

    async fn one_attempt(
        &mut self,
        m: usize,
        step: &Step,
        request: &[u8],
        timing: EffectiveTiming,
        tap: &FrameTap,
    ) -> Result<(Reply, Vec<u8>), Attempt> {
        match &mut self.wire {
            Wire::Raw { link, .. } => {
                let Some(link) = link.as_mut() else {
                    return Err(Attempt::Link("not open".into()));
                };
                let ex_timing = ExchangeTiming {
                    response_timeout: timing.response_timeout,
                    inter_byte_timeout: timing.inter_byte_timeout,
                    echo: timing.echo,
                };
                let result = exchange(link, request, &step.framing, ex_timing, tap).await;
                let stats = match &result {
                    Ok(x) => x.stats,
                    Err(e) => e.stats(),
                };
                self.with_status(|s| {
                    s.wire.add(&stats);
                    if let Some(ms) = s.meters.get_mut(m) {
                        ms.wire.add(&stats);
                    }
                });
                match result {
                    Ok(x) => {
                        self.last_activity = Some(x.finished);
                        Ok((x.reply, x.raw))
                    }
                    Err(ExchangeError::Timeout { partial, .. }) => {
                        Err(Attempt::Timeout(if partial.is_empty() {
                            String::new()
                        } else {
                            format!(" (received {} unusable bytes)", partial.len())
                        }))
                    }
                    Err(ExchangeError::Link { source, .. }) => {
                        Err(Attempt::Link(source.to_string()))
                    }
                }
            }
            Wire::ModbusTcp { ctx, .. } => {
                let Some(client) = ctx.as_mut() else {
                    return Err(Attempt::Link("not open".into()));
                };
                let Some((unit, req)) = step.modbus.clone() else {
                    return Err(Attempt::Link("not a Modbus request".into()));
                };
                let r = client.call(unit, &req, timing.response_timeout, tap).await;
                self.last_activity = Some(Instant::now());
                match r {
                    Ok(x) => Ok(x),
                    Err(TcpFailure::Timeout) => {
                        // A late reply would poison the connection: start a fresh one.
                        *ctx = None;
                        Err(Attempt::Timeout(String::new()))
                    }
                    Err(TcpFailure::Link(e)) => Err(Attempt::Link(e)),
                }
            }
        }
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
            let mut poll = driver.poll();
            let mut link_failed = None;
            while let Some(step) = poll.next_step() {
                match self.transact(m, &step).await {
                    Ok((reply, raw)) => poll.on_reply(&reply, &raw),
                    Err(f) if f.link => {
                        link_failed = Some(f.reason);
                        break;
                    }
                    Err(f) => {
                        tracing::debug!(what = %step.what, reason = %f.reason, "no reply");
                        poll.on_failure(&f.reason);
                    }
                }
            }
            let result = match &link_failed {
                Some(reason) => poll.abandon(reason),
                None => poll.finish(),
            };
            let now = SystemTime::now();
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
            let changed = self.with_status(|s| {
                let ms = s.meters.get_mut(m)?;
                ms.last_good_values = good;
                ms.last_bad_values = bad;
                if let Some(reason) = link_failed.clone() {
                    // Not the meter's fault: no degradation for a dead port.
                    ms.state = MeterState::Unreachable;
                    ms.last_error = Some(reason);
                    ms.polls_failed += 1;
                    return None;
                }
                let changed = ms.record_poll(answered, first_bad.clone(), now, degrade_after);
                Some((changed, ms.state))
            });
            if let Some((true, state)) = changed {
                tracing::info!(?state, "meter state changed");
                tap.note(&format!("meter state: {state:?}"));
            }
            tracing::debug!(answered, good, bad, "poll done");
            Some(batch)
        }
        .instrument(span)
        .await
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

    /// The task body: poll on schedule, serve commands between polls, until `out` closes.
    pub async fn run(
        mut self,
        out: mpsc::Sender<ReadingBatch>,
        mut commands: mpsc::Receiver<BusCommand>,
    ) {
        let mut scheduler = PollScheduler::new();
        let now = wall_ms(SystemTime::now());
        for slot in &self.meters {
            let ms = i64::try_from(slot.interval.as_millis()).unwrap_or(i64::MAX);
            scheduler.add(Cadence::every(ms), now);
        }
        let mut commands_open = true;
        // Open at once so that a dead port shows in the status before the first poll.
        let _ = self.ensure_open().await;
        loop {
            // One-shot reads first: they are technicians waiting.
            while commands_open {
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.serve(cmd).await {
                            return;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => commands_open = false,
                }
            }
            let now = wall_ms(SystemTime::now());
            if let Some(due) = scheduler.next_due(now) {
                self.poll_due(&mut scheduler, due, &out).await;
                if out.is_closed() {
                    return;
                }
                continue;
            }
            let wake = scheduler.next_wakeup().unwrap_or(now + 60_000);
            let wait = Duration::from_millis(u64::try_from((wake - now).max(1)).unwrap_or(1))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        if !self.serve(cmd).await {
                            return;
                        }
                    }
                    None => commands_open = false,
                },
                _ = out.closed() => return,
            }
        }
    }

    async fn poll_due(
        &mut self,
        scheduler: &mut PollScheduler,
        due: Due,
        out: &mpsc::Sender<ReadingBatch>,
    ) {
        let batch = self.poll_meter(due.meter).await;
        scheduler.complete(due);
        let state = self.with_status(|s| s.meters.get(due.meter).map(|m| m.state));
        let probe = if state == Some(MeterState::Degraded) {
            self.probe_every
        } else {
            1
        };
        scheduler.set_probe_every(due.meter, probe);
        let overruns = scheduler.overruns(due.meter);
        self.with_status(|s| {
            if let Some(m) = s.meters.get_mut(due.meter) {
                m.overruns = overruns;
            }
            s.overruns = s.meters.iter().map(|m| m.overruns).sum();
        });
        if let Some(batch) = batch {
            // The receiver gone means the daemon is stopping; the loop sees it.
            let _ = out.send(batch).await;
        }
    }

    /// Serves a command; false when the task must stop.
    async fn serve(&mut self, cmd: BusCommand) -> bool {
        match cmd {
            BusCommand::ReadNow { meter, reply } => {
                let r = self.read_now(&meter).await;
                let _ = reply.send(r);
                true
            }
            BusCommand::Stop => false,
        }
    }
}

/// Sleeps until `until` to within about 0.1 ms, for the silence between two transactions.
///
/// tokio's timer has a 1 ms resolution and rounds every deadline up to the next tick, so a
/// 2 ms turnaround used to last 2–3 ms plus the worker's wake-up: the bus benchmark measured
/// the next request leaving p50 1.2 ms / p99 3.1 ms after the configured silence. Here the
/// timer only covers the time up to 2 ms before the deadline; the rest is slept on the
/// blocking pool with `std::thread::sleep` (a high-resolution timer), which neither spins nor
/// holds a worker thread.
async fn sleep_precisely(until: Instant) {
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if until <= now {
        return;
    }
    if until - now > TIMER_SLACK {
        tokio::time::sleep_until(until - TIMER_SLACK).await;
    }
    let left = until.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        // A failed blocking task (runtime shutting down) only shortens the silence.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

enum Attempt {
    Timeout(String),
    Link(String),
}

/// Why a Modbus TCP call gave no reply.
pub(crate) enum TcpFailure {
    /// No reply in time: the connection must be replaced (a late reply would be taken as the
    /// next answer).
    Timeout,
    /// The connection failed.
    Link(String),
}

/// A Modbus TCP client connection whose bytes are tapped (evidence, traces): the bus task's
/// link to a Modbus TCP meter or gateway, and `meterd scan`'s.
pub(crate) struct ModbusTcpClient {
    ctx: tokio_modbus::client::Context,
    tapped: Tapped,
}

impl ModbusTcpClient {
    /// Connects to `address` (`host:port`) within `timeout`.
    pub(crate) async fn connect(address: &str, timeout: Duration) -> Result<Self, String> {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Err(_) => Err(format!(
                "{address}: cannot connect: no answer within {timeout:?}"
            )),
            Ok(Err(e)) => Err(format!("{address}: cannot connect: {e}")),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let tapped = Tapped::default();
                let stream = TapStream {
                    inner: stream,
                    tapped: tapped.clone(),
                };
                let ctx = tokio_modbus::client::tcp::attach_slave(stream, tokio_modbus::Slave(1));
                Ok(Self { ctx, tapped })
            }
        }
    }

    /// Sends read `req` to `unit`; the reply (an exception included) with its raw bytes.
    pub(crate) async fn call(
        &mut self,
        unit: u8,
        req: &rtu::Request,
        timeout: Duration,
        tap: &FrameTap,
    ) -> Result<(Reply, Vec<u8>), TcpFailure> {
        modbus_tcp_call(&mut self.ctx, &self.tapped, unit, req, timeout, tap).await
    }
}

/// Bytes a [`TapStream`] saw, for evidence and traces.
#[derive(Debug, Clone, Default)]
pub struct Tapped {
    inner: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl Tapped {
    fn take(&self) -> (Vec<u8>, Vec<u8>) {
        let mut g = lock(&self.inner);
        (std::mem::take(&mut g.0), std::mem::take(&mut g.1))
    }
}

/// A TCP stream that copies the bytes written and read, so a Modbus TCP batch carries the
/// real response bytes as evidence.
#[derive(Debug)]
pub struct TapStream {
    inner: TcpStream,
    tapped: Tapped,
}

impl AsyncRead for TapStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let TaskPoll::Ready(Ok(())) = &r {
            let new = buf.filled().get(before..).unwrap_or(&[]).to_vec();
            let mut g = lock(&self.tapped.inner);
            g.1.extend_from_slice(&new);
        }
        r
    }
}

impl AsyncWrite for TapStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> TaskPoll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let TaskPoll::Ready(Ok(n)) = &r {
            let mut g = lock(&self.tapped.inner);
            g.0.extend_from_slice(buf.get(..*n).unwrap_or(&[]));
        }
        r
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn modbus_tcp_call(
    ctx: &mut tokio_modbus::client::Context,
    tapped: &Tapped,
    unit: u8,
    req: &rtu::Request,
    timeout: Duration,
    tap: &FrameTap,
) -> Result<(Reply, Vec<u8>), TcpFailure> {
    use tokio_modbus::client::Reader;
    use tokio_modbus::slave::SlaveContext;
    ctx.set_slave(tokio_modbus::Slave(unit));
    let _ = tapped.take();
    let call = async {
        match req {
            rtu::Request::ReadCoils { address, count } => ctx
                .read_coils(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::Coils)),
            rtu::Request::ReadDiscreteInputs { address, count } => ctx
                .read_discrete_inputs(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::DiscreteInputs)),
            rtu::Request::ReadHoldingRegisters { address, count } => ctx
                .read_holding_registers(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::HoldingRegisters)),
            rtu::Request::ReadInputRegisters { address, count } => ctx
                .read_input_registers(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::InputRegisters)),
            _ => Err(tokio_modbus::Error::Transport(std::io::Error::other(
                "only reads are sent on a poll",
            ))),
        }
    };
    let result = tokio::time::timeout(timeout, call).await;
    let (sent, received) = tapped.take();
    if !sent.is_empty() {
        tap.frame(Direction::Tx, &sent);
    }
    match result {
        Err(_) => {
            if !received.is_empty() {
                tap.skipped(&received, "partial reply before the timeout");
            }
            Err(TcpFailure::Timeout)
        }
        Ok(Err(e)) => Err(TcpFailure::Link(e.to_string())),
        Ok(Ok(Ok(response))) => {
            tap.frame(Direction::Rx, &received);
            let response = match response {
                // tokio-modbus returns whole bytes of bits: keep only what was asked.
                rtu::Response::Coils(mut b) | rtu::Response::DiscreteInputs(mut b)
                    if matches!(
                        req,
                        rtu::Request::ReadCoils { .. } | rtu::Request::ReadDiscreteInputs { .. }
                    ) =>
                {
                    let n = match req {
                        rtu::Request::ReadCoils { count, .. }
                        | rtu::Request::ReadDiscreteInputs { count, .. } => usize::from(*count),
                        _ => b.len(),
                    };
                    b.truncate(n);
                    if matches!(req, rtu::Request::ReadCoils { .. }) {
                        rtu::Response::Coils(b)
                    } else {
                        rtu::Response::DiscreteInputs(b)
                    }
                }
                other => other,
            };
            Ok((Reply::ModbusRtu(response), received))
        }
        Ok(Ok(Err(code))) => {
            tap.frame(Direction::Rx, &received);
            Ok((
                Reply::ModbusRtu(rtu::Response::Exception {
                    function: req.function() | 0x80,
                    code: rtu::ExceptionCode::from_u8(u8::from(code)),
                }),
                received,
            ))
        }
    }
}
