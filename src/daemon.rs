//! `meterd run`: the daemon. Buses → ingest → spool → uplink, and a clean stop.
//!
//! This module only wires: it starts the tasks, connects their channels, handles signals and
//! reloads. Each stage lives in its own room:
//! - one task per bus (`bus::task`) polls its meters and sends reading batches to ingest;
//! - the ingest task (`ingest::run`) validates each batch and appends it to the spool in one
//!   transaction per group of batches that arrived together — the moment a reading counts as
//!   taken — and hands the fresh rows to the uplink;
//! - the uplink (`uplink`) publishes what the spool holds and deletes a row only on PUBACK;
//! - the uplink's health forwarder (`uplink::forward_health`) hands each meter's health to
//!   its retained status topics.
//!
//! SIGHUP reloads the configuration file ([`reload`]): untouched buses keep polling, changed
//! ones restart, settings of the pipeline and uplink wait for a restart.
//!
//! SIGTERM or SIGINT stops
//! polling after the poll in progress, stores what was polled, publishes the offline status
//! and returns within [`STOP_BUDGET`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::bus::clock_steps::ClockSteps;
use crate::bus::event_collect::EventSink;
use crate::bus::freeze_collect::{FreezeEvent, FreezeSink};
use crate::bus::task::{self as bus_task, BusOptions};
use crate::config::{BusConfig, Config, ConfigError, ProfileSet};
use crate::health::{BusHealth, SuccessBook};
use crate::ingest::completeness::CompletenessSet;
use crate::ingest::events::{ClockMarks, CounterView};
use crate::ingest::freezes::LedgerView;
use crate::ingest::{self, FreshRows, HeldAcks, SpoolOutbox, SpoolWriter};
use crate::reading::ReadingBatch;
use crate::reading::event::EventNote;
use crate::spool::{Spool, SpoolError, SpoolOptions};
use crate::sync::{lock, try_lock};
use crate::uplink::{self, ReadingSuccess, Uplink, UplinkHandle};

pub mod reload;
pub mod supervise;
#[cfg(test)]
mod tests;
pub mod warnings;

use supervise::{Notifier, Supervisor, TaskEnded};

/// A running bus task reporting into its shared health.
type BusHandle = bus_task::BusHandle<Mutex<BusHealth>>;

pub use reload::{ReloadError, ReloadPlan};

/// How long a stop may take, from the signal to the return of [`Daemon::run`].
pub const STOP_BUDGET: Duration = Duration::from_millis(4800);

/// Why the daemon could not start (once running, it does not fail: it reports and retries).
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The configuration is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The spool cannot be opened.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    /// The MQTT settings are wrong (files, URL, TLS).
    #[error("mqtt: {0}")]
    Uplink(#[from] uplink::UplinkConfigError),
    /// A bus could not be built.
    #[error("{0}")]
    Bus(#[from] bus_task::BusError),
    /// The `[service]` section is unsafe or its token is missing.
    #[error("{0}")]
    Service(#[from] crate::service::ServiceError),
    /// `[control]` cannot be used (a key, the credentials file).
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
    /// The embedded broker could not start.
    #[cfg(feature = "embedded-broker")]
    #[error("embedded broker: {0}")]
    Broker(#[from] crate::uplink::embedded_broker::BrokerError),
}

/// A running daemon.
pub struct Daemon {
    config: Config,
    /// The profiles the running buses were built with (compared on reload).
    profiles: ProfileSet,
    /// The file [`Daemon::start`] loaded, for reloads.
    config_path: Option<PathBuf>,
    options: RunOptions,
    buses: Vec<BusHandle>,
    /// Starts bus tasks; holds the ingest channel's sender that every bus gets a clone of,
    /// also on reload.
    starter: BusStarter,
    pipeline: JoinHandle<()>,
    status_task: JoinHandle<()>,
    /// Hands the uplink the completeness of settlement records (and keeps it for the service).
    completeness_task: JoinHandle<()>,
    uplink: UplinkHandle,
    uplink_task: UplinkTask,
    /// Fee control's task, when `[control]` is on.
    control_task: Option<JoinHandle<()>>,
    /// The buses' command queues as fee control reaches them (updated on reload).
    bus_control: BusControl,
    /// Reports of tasks that ended on their own, and the buses stopped on purpose.
    supervisor: Supervisor,
    spool: Arc<Mutex<Spool>>,
    service: Option<crate::service::Service>,
    /// The checked `[service]` settings and token the running service was started with.
    service_prepared: crate::service::Prepared,
    /// What the service is built from; kept so that a reload can rebuild it.
    service_parts: ServiceParts,
    #[cfg(feature = "embedded-broker")]
    _broker: Option<crate::uplink::embedded_broker::EmbeddedBroker>,
}

/// The parts of the diagnostics service that outlive a reload.
struct ServiceParts {
    started: SystemTime,
    spool_stats: SpoolStatsFn,
    book: Arc<Mutex<SuccessBook>>,
    frames: broadcast::Sender<crate::bus::trace::FrameEvent>,
    meter_drops: crate::service::MeterDropsFn,
    /// The latest completeness messages, as the uplink was handed them.
    completeness: Arc<Mutex<CompletenessSet>>,
    /// Fee control's view, when on.
    control: Option<crate::control::ControlView>,
}

impl ServiceParts {
    /// What the service reads: these parts and the running buses and uplink.
    fn handles(
        &self,
        gateway: &str,
        buses: &[BusHandle],
        uplink: &UplinkHandle,
    ) -> crate::service::Handles {
        crate::service::Handles {
            gateway: gateway.to_owned(),
            started: self.started,
            buses: buses
                .iter()
                .map(|b| crate::service::ServiceBus {
                    name: b.name.clone(),
                    commands: b.commands.clone(),
                    status: b.status.clone(),
                })
                .collect(),
            uplink: uplink.clone(),
            spool: self.spool_stats.clone(),
            book: self.book.clone(),
            frames: self.frames.clone(),
            meter_drops: self.meter_drops.clone(),
            completeness: self.completeness.clone(),
            control: self.control.clone(),
        }
    }
}

/// The buses' command queues by bus name, as fee control hands commands to them; replaced
/// when a reload restarts buses.
#[derive(Clone, Default)]
pub(crate) struct BusControl(Arc<Mutex<Vec<BusQueue>>>);

/// A bus's name and its command queue.
type BusQueue = (String, mpsc::Sender<bus_task::BusCommand>);

/// What [`start_uplink_and_ingest`] started.
struct Started {
    uplink: UplinkHandle,
    uplink_task: UplinkTask,
    pipeline: JoinHandle<()>,
    /// Fee control's task, when `[control]` is on.
    control_task: Option<JoinHandle<()>>,
}

/// How long a fee command waits for room in a bus's command queue.
const BUS_QUEUE_WAIT: Duration = Duration::from_secs(10);

impl BusControl {
    /// The queues of `buses` from now on.
    pub(crate) fn set(&self, buses: &[BusHandle]) {
        *lock(&self.0) = buses
            .iter()
            .map(|b| (b.name.clone(), b.commands.clone()))
            .collect();
    }
}

impl crate::control::MeterBuses for BusControl {
    fn control(
        &self,
        bus: &str,
        meter: &str,
        request: crate::meter::control::ControlRequest,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<tokio::sync::oneshot::Receiver<crate::meter::control::ControlOutcome>, String>,
    > {
        let queue = lock(&self.0)
            .iter()
            .find(|(name, _)| name == bus)
            .map(|(_, q)| q.clone());
        let meter = meter.to_owned();
        let bus = bus.to_owned();
        Box::pin(async move {
            let queue = queue.ok_or_else(|| format!("bus {bus:?} is not running"))?;
            let (reply, rx) = tokio::sync::oneshot::channel();
            let command = bus_task::BusCommand::Control {
                meter,
                request,
                reply,
            };
            match tokio::time::timeout(BUS_QUEUE_WAIT, queue.send(command)).await {
                Ok(Ok(())) => Ok(rx),
                Ok(Err(_)) => Err(format!("bus {bus:?} stopped")),
                Err(_) => Err(format!(
                    "bus {bus:?}'s command queue stayed full for {}",
                    humantime::format_duration(BUS_QUEUE_WAIT)
                )),
            }
        })
    }
}

/// Starts bus tasks wired to the daemon's ingest channel and frame trace (at start and on
/// reload).
pub(crate) struct BusStarter {
    gateway: String,
    evidence_frames: bool,
    frames: broadcast::Sender<crate::bus::trace::FrameEvent>,
    batches: mpsc::Sender<ReadingBatch>,
    /// The gateway's wall-clock step count, shared by every bus (also those a reload starts).
    clock_steps: Arc<ClockSteps>,
    /// Where the bus tasks' supervising wrappers report an end.
    ended: mpsc::UnboundedSender<supervise::Ended>,
    /// Freeze collection: the ledger the buses consult and where their records go.
    freezes: FreezeSink,
    /// Event and clock work: the counters the buses consult and where their events go.
    events: EventSink,
}

impl BusStarter {
    /// The options every bus task of `config` gets.
    pub(crate) fn options(&self) -> BusOptions {
        let mut opts = BusOptions::new(&self.gateway);
        opts.evidence_frames = self.evidence_frames;
        opts.frames = Some(self.frames.clone());
        opts.clock_steps = self.clock_steps.clone();
        opts.freezes = Some(self.freezes.clone());
        opts.events = Some(self.events.clone());
        opts
    }

    /// Starts the task of `bus`, with a fresh health record.
    pub(crate) fn spawn(
        &self,
        bus: &BusConfig,
        profiles: &ProfileSet,
    ) -> Result<BusHandle, bus_task::BusError> {
        let health = Arc::new(Mutex::new(BusHealth::for_bus(bus)));
        let handle = bus_task::spawn(bus, profiles, self.options(), self.batches.clone(), health)?;
        let what = format!("bus {}", handle.name);
        Ok(handle.map_task(|task| supervise::supervise(what, task, &self.ended, |_| ())))
    }
}

/// Every (bus, meter id) pair of the running buses, for the success book.
fn meter_pairs(buses: &[BusHandle]) -> Vec<(String, String)> {
    buses
        .iter()
        .flat_map(|b| {
            lock(&b.status)
                .meters
                .iter()
                .map(|m| (b.name.clone(), m.id.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Options that are not in the configuration file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use this data directory instead of the configuration's (demo, tests).
    pub data_dir: Option<PathBuf>,
    /// Unmap the start-up code once started and after every reload
    /// ([`crate::startup_code::release`]; `meterd run`, whose resident set counts).
    pub release_startup_code: bool,
}

impl Daemon {
    /// Loads the configuration at `path` and starts everything.
    pub async fn start(path: &Path, options: RunOptions) -> Result<Daemon, DaemonError> {
        let (config, profiles) = Config::load(path)?;
        let mut daemon = Self::start_with(config, profiles, options).await?;
        daemon.config_path = Some(path.to_owned());
        daemon.release_startup_code();
        Ok(daemon)
    }

    /// Starts a daemon from a checked configuration: the spool, the embedded broker if
    /// configured, the uplink, one task per bus, the ingest task between them, the health
    /// forwarder and the diagnostics service.
    pub async fn start_with(
        mut config: Config,
        profiles: ProfileSet,
        options: RunOptions,
    ) -> Result<Daemon, DaemonError> {
        if let Some(dir) = &options.data_dir {
            config.data_dir = dir.clone();
        }
        let service_setup = check_before_start(&config, &profiles)?;
        let control = crate::control::ControlSetup::from_config(&config)?;
        let started = crate::clock::now();
        let spool = open_spool(&config)?;
        #[cfg(feature = "embedded-broker")]
        let broker = start_broker(&config)?;

        let views = SpoolViews::of(&spool);
        // The freeze ledger as the spool has it: which settlement records need no reading.
        let ledger = Arc::new(LedgerView::load(&lock(&spool))?);
        let (freeze_tx, freeze_rx) = mpsc::channel::<FreezeEvent>(64);
        // The event counters as the spool has them: which occurrences are stored.
        let counters = Arc::new(CounterView::load(&lock(&spool))?);
        let (event_tx, event_rx) = mpsc::channel::<EventNote>(64);

        // Buses send to ingest (one sender stays in the starter, for reloads): while a group
        // is committed the next batches wait here, and a full queue makes the buses wait for
        // the fsync rather than the daemon hold more in memory. Frames go to the live trace:
        // 1,024 preallocated slots of 128 bytes are seconds of traffic with 1,000 meters.
        let (bus_tx, rx) = mpsc::channel::<ReadingBatch>(32);
        let (frames, _) = broadcast::channel(1024);
        let supervisor = Supervisor::default();
        let starter = BusStarter {
            ended: supervisor.sender().clone(),
            gateway: config.gateway.clone(),
            evidence_frames: config.evidence_frames,
            frames: frames.clone(),
            batches: bus_tx,
            clock_steps: Arc::new(ClockSteps::new()),
            freezes: FreezeSink {
                book: ledger.clone(),
                out: freeze_tx,
                config: config.freeze.clone(),
            },
            events: EventSink::from_config(&config, counters.clone(), event_tx),
        };
        let buses = config
            .buses
            .iter()
            .map(|bus| starter.spawn(bus.get_ref(), &profiles))
            .collect::<Result<Vec<_>, _>>()?;
        // Ingest feeds the reading success book (poll outcomes as they arrive, each meter's
        // last batch once stored); the uplink publishes its rate in the gateway status.
        let mut book = SuccessBook::new(
            meter_pairs(&buses)
                .iter()
                .map(|(b, m)| (b.as_str(), m.as_str())),
        );
        book.set_trend_quantity(config.service.trend_quantity.as_deref());
        let book = Arc::new(Mutex::new(book));
        let inputs = IngestInputs {
            batches: rx,
            freezes: freeze_rx,
            ledger,
            events: event_rx,
            counters,
        };
        let bus_control = BusControl::default();
        bus_control.set(&buses);
        let control_view = control
            .as_ref()
            .map(|c| crate::control::ControlView::new(c.controllable()));
        let control = control.map(|setup| ControlParts {
            setup,
            buses: bus_control.clone(),
            view: control_view.clone().unwrap_or_default(),
        });
        let Started {
            uplink,
            uplink_task,
            pipeline,
            control_task,
        } = start_uplink_and_ingest(
            &config,
            &spool,
            &views,
            &book,
            &starter,
            inputs,
            control,
            &supervisor,
        )?;
        let status_task = spawn_health_forwarder(&buses, &uplink, &supervisor);
        let completeness = Arc::new(Mutex::new(CompletenessSet::default()));
        let completeness_task = spawn_completeness_forwarder(
            completeness_plan(&config, &profiles),
            &spool,
            &uplink,
            &completeness,
        );
        let service_parts = ServiceParts {
            started,
            spool_stats: views.stats,
            book,
            frames,
            meter_drops: views.meter_drops,
            completeness,
            control: control_view,
        };
        let handles = service_parts.handles(&config.gateway, &buses, &uplink);
        let service = crate::service::Service::start(service_setup.clone(), handles).await;
        tracing::info!(gateway = %config.gateway, buses = buses.len(), "meterd running");
        Ok(Daemon {
            config,
            profiles,
            config_path: None,
            options,
            buses,
            starter,
            pipeline,
            status_task,
            completeness_task,
            uplink,
            uplink_task,
            control_task,
            bus_control,
            supervisor,
            spool,
            service: Some(service),
            service_prepared: service_setup,
            service_parts,
            #[cfg(feature = "embedded-broker")]
            _broker: broker,
        })
    }

    /// The uplink's handle (state snapshot).
    pub fn uplink(&self) -> &UplinkHandle {
        &self.uplink
    }

    /// The buses' status snapshots.
    pub fn bus_statuses(&self) -> Vec<BusHealth> {
        self.buses.iter().map(|b| lock(&b.status).clone()).collect()
    }

    /// After a reload changed buses or `[service]` (settings or token): the success book
    /// covers the new meters and the service is restarted with `prepared` and the new bus list
    /// (live traces reconnect; the page refreshes itself).
    pub(crate) async fn refresh_service(&mut self, prepared: crate::service::Prepared) {
        let pairs = meter_pairs(&self.buses);
        {
            let mut book = lock(&self.service_parts.book);
            book.set_meters(pairs.iter().map(|(b, m)| (b.as_str(), m.as_str())));
            book.set_trend_quantity(self.config.service.trend_quantity.as_deref());
        }
        if let Some(old) = self.service.take() {
            old.stop(Duration::from_millis(200)).await;
        }
        let handles = self
            .service_parts
            .handles(&self.config.gateway, &self.buses, &self.uplink);
        self.service_prepared = prepared.clone();
        self.service = Some(crate::service::Service::start(prepared, handles).await);
    }

    /// Where the diagnostics service listens (None when disabled or its address was taken).
    pub fn service_addr(&self) -> Option<std::net::SocketAddr> {
        self.service.as_ref().and_then(|s| s.addr())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops polling after the polls in progress, stores their batches, publishes the offline
    /// status and disconnects; returns within about [`STOP_BUDGET`].
    pub async fn stop(mut self) {
        let deadline = tokio::time::Instant::now() + STOP_BUDGET;
        // The diagnostics service first: it ends live traces and refuses new one-shot reads.
        if let Some(service) = self.service.take() {
            service.stop(Duration::from_millis(200)).await;
        }
        // Buses get most of the budget: a DL/T 645 poll at 2400 baud can take seconds. The
        // uplink needs little (the offline status is one small publish).
        let bus_deadline = tokio::time::Instant::now() + Duration::from_millis(3300);
        // Fee control before the buses: a command a bus has not answered yet stays in flight
        // in the spool and is read back (never sent again) at the next start, instead of
        // being reported `unknown` because its bus stopped.
        if let Some(task) = self.control_task.take() {
            task.abort();
        }
        for b in &self.buses {
            b.stop();
        }
        // Ingest ends once every sender is gone: ours (the starter's) first, then the buses'.
        drop(self.starter);
        for b in self.buses {
            let abort = b.task.abort_handle();
            if tokio::time::timeout_at(bus_deadline, b.task).await.is_err() {
                tracing::warn!(bus = %b.name, "bus did not stop in time; its poll in progress is abandoned");
                abort.abort();
            }
        }
        // Every bus sender is gone: the pipeline stores what is left and ends.
        let pipe_abort = self.pipeline.abort_handle();
        if tokio::time::timeout_at(bus_deadline + Duration::from_millis(400), self.pipeline)
            .await
            .is_err()
        {
            pipe_abort.abort();
        }
        self.status_task.abort();
        self.completeness_task.abort();
        self.uplink.shutdown();
        let up_abort = self.uplink_task.abort_handle();
        match tokio::time::timeout_at(deadline, self.uplink_task).await {
            Ok(Ok(Some(mut outbox))) => {
                if let Err(e) = outbox.flush() {
                    tracing::warn!(error = %e, "could not commit the last acknowledgements (they will be re-sent)");
                }
            }
            _ => up_abort.abort(),
        }
        let stats = lock(&self.spool).stats();
        tracing::info!(?stats, "meterd stopped");
    }

    /// Runs until SIGTERM or SIGINT, then stops cleanly; reloads the configuration on each
    /// SIGHUP (a signal arriving during a reload is handled right after it).
    /// Returns an error when a critical task ended on its own (see [`Daemon::run_until`]).
    pub async fn run_until_signal(self) -> Result<(), TaskEnded> {
        self.run_until(reload::Signals::new()).await
    }

    /// Start-up (or a reload) is over: its code need not stay resident (see
    /// [`crate::startup_code`]), when the options ask for it.
    fn release_startup_code(&self) {
        if self.options.release_startup_code {
            let released = crate::startup_code::release();
            tracing::debug!(released, "unmapped the start-up code pages");
        }
    }

    /// [`Daemon::run_until_signal`] with signal handlers installed earlier (before the start,
    /// so that a SIGHUP or SIGTERM during it is handled once running instead of killing).
    ///
    /// Supervises the critical tasks meanwhile: when a bus (other than one a reload stops),
    /// the ingest pipeline, the uplink or the health forwarder ends on its own — it returned
    /// or panicked — the daemon logs which and why, stops the rest cleanly and returns
    /// [`TaskEnded`] (`meterd run` exits 1, and systemd restarts it). Under systemd
    /// (`Type=notify`) it sends `READY=1` and `STATUS=` lines, and `WATCHDOG=1` at half the
    /// interval systemd asks for, only while every critical task is alive.
    pub async fn run_until(mut self, mut signals: reload::Signals) -> Result<(), TaskEnded> {
        let notifier = Notifier::from_env();
        notifier.ready(&self.status_line());
        let mut watchdog = notifier.watchdog_interval().map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let outcome = loop {
            tokio::select! {
                event = signals.next() => match event {
                    reload::SignalEvent::Reload => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        notifier.status("reloading the configuration");
                        // The outcome is logged by `reload`; a rejected file changes nothing.
                        let _ = self.reload().await;
                        // Either way the parser and the profile loader ran again.
                        self.release_startup_code();
                        notifier.status(&self.status_line());
                    }
                    reload::SignalEvent::Stop => break Ok(()),
                },
                ended = self.supervisor.next_unexpected() => {
                    tracing::error!(
                        task = %ended.task,
                        why = %ended.why,
                        "a critical task ended unexpectedly; stopping the daemon (exit 1)"
                    );
                    break Err(TaskEnded::from(ended));
                }
                Some(_) = async {
                    match watchdog.as_mut() {
                        Some(t) => Some(t.tick().await),
                        None => std::future::pending().await,
                    }
                } => {
                    if self.all_alive() {
                        notifier.watchdog();
                    }
                }
            }
        };
        match &outcome {
            Ok(()) => notifier.stopping("stopping"),
            Err(e) => notifier.stopping(&e.to_string()),
        }
        tracing::info!("stopping");
        self.stop().await;
        outcome
    }

    /// The `STATUS=` line systemd shows.
    fn status_line(&self) -> String {
        format!(
            "running: {} buses, gateway {}",
            self.buses.len(),
            self.config.gateway
        )
    }

    /// Whether every critical task is still running (the watchdog is fed only then).
    fn all_alive(&self) -> bool {
        !self.pipeline.is_finished()
            && !self.uplink_task.is_finished()
            && !self.status_task.is_finished()
            && !self.completeness_task.is_finished()
            && self.control_task.as_ref().is_none_or(|t| !t.is_finished())
            && self.buses.iter().all(|b| !b.task.is_finished())
    }
}

/// What is checked before anything starts: a broker must be named, a service on a
/// non-loopback address needs a token, a spool must hold one reading (or it would drop every
/// one); risky settings are named in the log.
fn check_before_start(
    config: &Config,
    profiles: &ProfileSet,
) -> Result<crate::service::Prepared, DaemonError> {
    config
        .mqtt
        .validate()
        .map_err(uplink::UplinkConfigError::from)?;
    let service_setup = crate::service::prepare(&config.service)?;
    warnings::log_start_warnings(config);
    ingest::check_spool_room(config, profiles)?;
    Ok(service_setup)
}

/// Opens (or creates) the spool in the data directory.
fn open_spool(config: &Config) -> Result<Arc<Mutex<Spool>>, SpoolError> {
    let path = config.data_dir.join(crate::spool::FILE_NAME);
    let spool = Spool::open(&path, SpoolOptions::new(config.spool.max_bytes))?;
    tracing::info!(path = %path.display(), "spool open");
    Ok(Arc::new(Mutex::new(spool)))
}

/// Starts the in-process broker when the configuration names it.
#[cfg(feature = "embedded-broker")]
fn start_broker(
    config: &Config,
) -> Result<Option<crate::uplink::embedded_broker::EmbeddedBroker>, DaemonError> {
    if config.mqtt.url != "embedded" {
        return Ok(None);
    }
    let b = crate::uplink::embedded_broker::EmbeddedBroker::start(
        config.mqtt.embedded_listen,
        config.mqtt.max_packet_size,
    )?;
    tracing::info!(addr = %b.addr(), "embedded MQTT broker listening");
    Ok(Some(b))
}

/// The uplink's (supervised) task: hands the outbox back when it returned.
type UplinkTask = JoinHandle<Option<SpoolOutbox>>;

/// What the uplink and the service read of the spool.
type SpoolStatsFn = Arc<dyn Fn() -> uplink::SpoolSummary + Send + Sync>;

/// The spool's figures as the uplink and the service read them. A reader never waits for the
/// spool: while a writer holds it (an fsync can take seconds on flash under load, tens of
/// seconds behind a big write-back), the last figures read are given instead. A reader that
/// waited would hold one of the runtime's two worker threads; with the uplink waiting on the
/// other, `/api/status` stopped answering (CI: a request timed out after 30 s).
struct SpoolViews {
    stats: SpoolStatsFn,
    meter_drops: crate::service::MeterDropsFn,
}

/// The last spool figures read, for when the spool is busy.
#[derive(Default)]
struct LastSpoolFigures {
    stats: Mutex<uplink::SpoolSummary>,
    drops: Mutex<HashMap<String, uplink::MeterDrops>>,
}

impl SpoolViews {
    fn of(spool: &Arc<Mutex<Spool>>) -> Self {
        let last = Arc::new(LastSpoolFigures::default());
        let (stats_spool, stats_last) = (spool.clone(), last.clone());
        let drops_spool = spool.clone();
        Self {
            stats: Arc::new(move || {
                let Some(s) = try_lock(&stats_spool) else {
                    return *lock(&stats_last.stats);
                };
                let Ok(stats) = s.stats() else {
                    return *lock(&stats_last.stats);
                };
                drop(s);
                let summary = uplink::SpoolSummary::from(&stats);
                *lock(&stats_last.stats) = summary;
                summary
            }),
            meter_drops: Arc::new(move |meter| {
                let fresh = try_lock(&drops_spool).and_then(|s| s.meter_drops(meter).ok());
                let Some((dropped, dropped_in_memory)) = fresh else {
                    return lock(&last.drops).get(meter).copied();
                };
                let drops = uplink::MeterDrops {
                    dropped,
                    dropped_in_memory,
                };
                lock(&last.drops).insert(meter.to_owned(), drops);
                Some(drops)
            }),
        }
    }
}

/// Fee control's parts, when `[control]` is on.
struct ControlParts {
    setup: crate::control::ControlSetup,
    buses: BusControl,
    view: crate::control::ControlView,
}

/// What the buses send to ingest: reading batches, and freeze records with the ledger view
/// they update.
struct IngestInputs {
    batches: mpsc::Receiver<ReadingBatch>,
    freezes: mpsc::Receiver<FreezeEvent>,
    ledger: Arc<LedgerView>,
    events: mpsc::Receiver<EventNote>,
    counters: Arc<CounterView>,
}

/// Starts the uplink and the ingest tasks between the buses (`inputs`) and it. Fresh readings
/// and freeze records go from the spool to the uplink in memory as well as on disk; acks travel
/// back the same way, deleted by the writer in its next append.
#[allow(clippy::too_many_arguments)] // The tasks' shared parts, each its own handle.
fn start_uplink_and_ingest(
    config: &Config,
    spool: &Arc<Mutex<Spool>>,
    views: &SpoolViews,
    book: &Arc<Mutex<SuccessBook>>,
    buses: &BusStarter,
    inputs: IngestInputs,
    control: Option<ControlParts>,
    supervisor: &Supervisor,
) -> Result<Started, DaemonError> {
    let fresh = FreshRows::default();
    let acks = HeldAcks::default();
    let outbox = SpoolOutbox::new(spool.clone(), fresh.clone(), acks.clone());
    let (up, uplink) = Uplink::new(&config.gateway, config.mqtt.clone(), outbox)?;
    // Fee control: the uplink's command subscription feeds the control task, which hands
    // commands to the buses and stores results in the outbox like readings.
    let (up, control_task) = match control {
        None => (up, None),
        Some(c) => {
            let (tx, rx) = mpsc::channel(64);
            let stored = uplink.clone();
            let task = tokio::spawn(crate::control::run(
                c.setup,
                rx,
                spool.clone(),
                fresh.clone(),
                Box::new(move || stored.readings_added()),
                Arc::new(c.buses),
                c.view,
            ));
            let task = supervise::supervise("control", task, supervisor.sender(), |_| ());
            (up.with_commands(tx), Some(task))
        }
    };
    let stats = views.stats.clone();
    let rate_book = book.clone();
    let steps = buses.clock_steps.clone();
    let drops = views.meter_drops.clone();
    let uplink_task = tokio::spawn(
        up.with_spool_stats(move || stats())
            .with_clock_steps(move || steps.count())
            .with_meter_drops(move |meter| drops(meter))
            .with_reading_success(move || {
                let now = crate::clock::now();
                Some(ReadingSuccess::from(&lock(&rate_book).group(None, now)))
            })
            .run(),
    );
    let uplink_task = supervise::supervise("uplink", uplink_task, supervisor.sender(), |r| r.ok());
    // Meter clocks found off by the buses' clock checks: their readings' time stamps are marked.
    let marks = Arc::new(ClockMarks::default());
    let writer = SpoolWriter::new(
        spool.clone(),
        &config.gateway,
        config.validation.clone(),
        Some(book.clone()),
        acks,
    )
    .with_clock(config.gateway_clock.synchronised, marks.clone());
    let stored = uplink.clone();
    let on_stored = Box::new(move || stored.readings_added());
    let stored = uplink.clone();
    let on_freezes_stored = Box::new(move || stored.readings_added());
    let freezes = tokio::spawn(ingest::freezes::run(
        inputs.freezes,
        spool.clone(),
        inputs.ledger,
        fresh.clone(),
        on_freezes_stored,
    ));
    // It ends only when every bus sender is gone, as the daemon stops; it is not awaited
    // then: a record still in its queue is read again from the meter (the ledger lacks it).
    drop(supervise::supervise(
        "freeze ingest",
        freezes,
        supervisor.sender(),
        |_| (),
    ));
    let stored = uplink.clone();
    let on_events_stored = Box::new(move || stored.readings_added());
    let events = tokio::spawn(ingest::events::run(
        inputs.events,
        spool.clone(),
        inputs.counters,
        marks,
        fresh.clone(),
        on_events_stored,
    ));
    // Like freeze ingest, it ends when every bus sender is gone; an event still in its queue
    // then is read again from the meter (its counter was not stored).
    drop(supervise::supervise(
        "event ingest",
        events,
        supervisor.sender(),
        |_| (),
    ));
    let window = config.spool.commit_window;
    let pipeline = tokio::spawn(ingest::run(
        inputs.batches,
        writer,
        fresh,
        window,
        on_stored,
    ));
    let pipeline = supervise::supervise("ingest", pipeline, supervisor.sender(), |_| ());
    Ok(Started {
        uplink,
        uplink_task,
        pipeline,
        control_task,
    })
}

/// Which meters collect which records: what the completeness counts.
fn completeness_plan(config: &Config, profiles: &ProfileSet) -> uplink::CompletenessPlan {
    uplink::CompletenessPlan {
        gateway: config.gateway.clone(),
        expected: crate::ingest::completeness::expected(config, profiles),
        daily_at: config.freeze.daily_at_minute,
        settlement: (config.freeze.settlement_day, config.freeze.settlement_hour),
    }
}

/// Starts the task that hands the uplink the completeness of settlement records.
fn spawn_completeness_forwarder(
    plan: uplink::CompletenessPlan,
    spool: &Arc<Mutex<Spool>>,
    uplink: &UplinkHandle,
    latest: &Arc<Mutex<CompletenessSet>>,
) -> JoinHandle<()> {
    tokio::spawn(uplink::forward_completeness(
        plan,
        spool.clone(),
        uplink.clone(),
        latest.clone(),
    ))
}

/// Forwards the buses' health to the uplink's retained status topics.
fn spawn_health_forwarder(
    buses: &[BusHandle],
    uplink: &UplinkHandle,
    supervisor: &Supervisor,
) -> JoinHandle<()> {
    let statuses = buses.iter().map(|b| b.status.clone()).collect();
    let task = tokio::spawn(uplink::forward_health(statuses, uplink.clone()));
    supervise::supervise("health forwarder", task, supervisor.sender(), |_| ())
}

/// Waits for SIGTERM, SIGINT (Ctrl-C) or SIGHUP, for the foreground commands (`meterd demo`):
/// closing its terminal sends SIGHUP, whose default action would end the process without the
/// clean stop (and without removing its temporary spool).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // A handler that cannot be installed is never waited for; Ctrl-C always is.
        async fn next(kind: SignalKind) {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(SignalKind::terminate()) => {}
            _ = next(SignalKind::hangup()) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
