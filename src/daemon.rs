//! `meterd run`: the daemon. Buses → validation → spool → uplink, and a clean stop.
//!
//! This module owns the wiring and the life cycle; each stage lives in its own module:
//! - one task per bus (`bus::task`) polls its meters and sends reading batches here;
//! - the pipeline task validates each batch (`validate`, with the meter's last good energy
//!   registers from the spool) and appends it to the spool in one transaction per group of
//!   batches that arrived together — the moment a reading counts as taken;
//! - the uplink (`uplink`) publishes what the spool holds and deletes a row only on PUBACK;
//! - a status task forwards each meter's health to the uplink's retained status topics.
//!
//! SIGHUP reloads the configuration file ([`reload`]): untouched buses keep polling, changed
//! ones restart, settings of the pipeline and uplink wait for a restart.
//!
//! A spool write that fails (full disk, read-only file system) never drops a batch: it stays
//! in memory (bounded) and is retried, and the failure is logged. SIGTERM or SIGINT stops
//! polling after the poll in progress, stores what was polled, publishes the offline status
//! and returns within [`STOP_BUDGET`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meter_protocols::Decimal;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::bus::health::{BusStatus, MeterState as BusMeterState};
use crate::bus::task::{self as bus_task, BusCommand, BusHandle, BusOptions};
use crate::config::{Config, ConfigError, ProfileSet};
use crate::reading::ReadingBatch;
use crate::spool::{AppendedRows, Spool, SpoolError, SpoolOptions};
use crate::uplink::{self, Uplink, UplinkHandle};

mod outbox;
pub mod reload;

use crate::sync::lock;
use outbox::{FreshRows, HeldAcks, SpoolOutbox};

pub use reload::{ReloadError, ReloadPlan};

/// How long a stop may take, from the signal to the return of [`Daemon::run`].
pub const STOP_BUDGET: Duration = Duration::from_millis(4800);

/// Most batches kept in memory while the spool cannot be written.
const MEMORY_BACKLOG: usize = 20_000;

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
    /// The pipeline's input; a clone goes to every bus started, also on reload.
    batches: mpsc::Sender<ReadingBatch>,
    pipeline: JoinHandle<()>,
    status_task: JoinHandle<()>,
    uplink: UplinkHandle,
    uplink_task: JoinHandle<SpoolOutbox>,
    spool: Arc<Mutex<Spool>>,
    service: Option<crate::service::Service>,
    /// What the service is built from; kept so that a reload can rebuild it.
    service_parts: ServiceParts,
    #[cfg(feature = "embedded-broker")]
    _broker: Option<crate::uplink::embedded_broker::EmbeddedBroker>,
}

/// The parts of the diagnostics service that outlive a reload.
struct ServiceParts {
    started: SystemTime,
    spool_stats: Arc<dyn Fn() -> uplink::SpoolStats + Send + Sync>,
    book: Arc<Mutex<crate::service::SuccessBook>>,
    frames: broadcast::Sender<crate::bus::trace::FrameEvent>,
}

/// The service's view of the running buses.
fn service_buses(buses: &[BusHandle]) -> Vec<crate::service::ServiceBus> {
    buses
        .iter()
        .map(|b| crate::service::ServiceBus {
            name: b.name.clone(),
            commands: b.commands.clone(),
            status: b.status.clone(),
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

    /// Starts a daemon from a checked configuration.
    pub async fn start_with(
        mut config: Config,
        profiles: ProfileSet,
        options: RunOptions,
    ) -> Result<Daemon, DaemonError> {
        if let Some(dir) = &options.data_dir {
            config.data_dir = dir.clone();
        }
        // Before anything starts: a service on a non-loopback address needs a token.
        let service_setup = crate::service::prepare(&config.service)?;
        let started = SystemTime::now();
        let spool_path = config.data_dir.join("spool.sqlite");
        let spool = Spool::open(&spool_path, SpoolOptions::new(config.spool.max_bytes))?;
        let spool = Arc::new(Mutex::new(spool));
        tracing::info!(path = %spool_path.display(), "spool open");

        #[cfg(feature = "embedded-broker")]
        let broker = if config.mqtt.url == "embedded" {
            let b = crate::uplink::embedded_broker::EmbeddedBroker::start(
                config.mqtt.embedded_listen,
                config.mqtt.max_packet_size,
            )?;
            tracing::info!(addr = %b.addr(), "embedded MQTT broker listening");
            Some(b)
        } else {
            None
        };

        // Fresh readings go from the spool writer to the uplink in memory as well as on disk.
        // Acks travel back the same way: the writer deletes them in its next append.
        let fresh = FreshRows::default();
        let acks = HeldAcks::default();
        let outbox = SpoolOutbox::new(spool.clone(), fresh.clone(), acks.clone());
        let (up, uplink) = Uplink::new(&config.gateway, config.mqtt.clone(), outbox)?;
        let stats_spool = spool.clone();
        let spool_stats: Arc<dyn Fn() -> uplink::SpoolStats + Send + Sync> = Arc::new(move || {
            let s = lock(&stats_spool).stats().unwrap_or_default();
            uplink::SpoolStats {
                depth: s.depth,
                bytes: s.bytes,
                dropped: s.dropped_batches,
            }
        });
        let up_stats = spool_stats.clone();
        let up = up.with_spool_stats(move || up_stats());

        // Frames for the service's live trace (nobody listening costs one atomic load). The
        // channel preallocates every slot (128 bytes each); 1,024 frames are seconds of
        // traffic even with 1,000 meters, and a trace that falls further behind reports the
        // frames it missed.
        let (frames, _) = broadcast::channel(1024);
        // Buses send to the pipeline. One sender stays in the Daemon so that a reload can
        // start buses later. While a group is being committed, the next batches wait here; a
        // full queue makes the buses wait (for an fsync) rather than the daemon hold more
        // batches in memory.
        let (bus_tx, rx) = mpsc::channel::<ReadingBatch>(32);
        let mut buses = Vec::new();
        for bus in &config.buses {
            let mut opts = BusOptions::new(&config.gateway);
            opts.evidence_frames = config.evidence_frames;
            opts.frames = Some(frames.clone());
            buses.push(bus_task::spawn(
                bus.get_ref(),
                &profiles,
                opts,
                bus_tx.clone(),
            )?);
        }
        // The pipeline feeds the reading success book: poll outcomes as they arrive, each
        // meter's last batch once stored.
        let book = crate::service::book_for(&service_buses(&buses));
        let rate_book = book.clone();
        let up = up.with_reading_success(move || {
            Some(crate::service::report::gateway_success(
                &lock(&rate_book),
                SystemTime::now(),
            ))
        });
        let uplink_task = tokio::spawn(up.run());
        let pipeline = tokio::spawn(pipeline(
            rx,
            SpoolWriter::new(
                spool.clone(),
                &config.gateway,
                config.validation.clone(),
                Some(book.clone()),
                acks,
            ),
            fresh,
            config.spool.commit_window,
            uplink.clone(),
        ));
        let statuses: Vec<Arc<Mutex<BusStatus>>> = buses.iter().map(|b| b.status.clone()).collect();
        let status_task = tokio::spawn(forward_statuses(statuses, uplink.clone()));
        let service_parts = ServiceParts {
            started,
            spool_stats,
            book,
            frames,
        };
        let service = crate::service::Service::start(
            service_setup,
            crate::service::Handles {
                gateway: config.gateway.clone(),
                started,
                buses: service_buses(&buses),
                uplink: uplink.clone(),
                spool: service_parts.spool_stats.clone(),
                book: service_parts.book.clone(),
                frames: service_parts.frames.clone(),
            },
        )
        .await;
        tracing::info!(gateway = %config.gateway, buses = buses.len(), "meterd running");
        Ok(Daemon {
            config,
            profiles,
            config_path: None,
            options,
            buses,
            batches: bus_tx,
            pipeline,
            status_task,
            uplink,
            uplink_task,
            spool,
            service: Some(service),
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
    pub fn bus_statuses(&self) -> Vec<BusStatus> {
        self.buses.iter().map(|b| lock(&b.status).clone()).collect()
    }

    /// The frame channel every bus task traces to (buses started by a reload too).
    pub(crate) fn frames(&self) -> broadcast::Sender<crate::bus::trace::FrameEvent> {
        self.service_parts.frames.clone()
    }

    /// After a reload changed buses: the success book covers the new meters and the service
    /// is restarted with the new bus list (live traces reconnect; the page refreshes itself).
    pub(crate) async fn refresh_service(&mut self) {
        let pairs: Vec<(String, String)> = self
            .buses
            .iter()
            .flat_map(|b| {
                let st = lock(&b.status).clone();
                st.meters
                    .into_iter()
                    .map(|m| (b.name.clone(), m.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        lock(&self.service_parts.book)
            .set_meters(pairs.iter().map(|(b, m)| (b.as_str(), m.as_str())));
        if let Some(old) = self.service.take() {
            old.stop(Duration::from_millis(200)).await;
        }
        let prepared = match crate::service::prepare(&self.config.service) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "diagnostics service not restarted after reload");
                return;
            }
        };
        let parts = &self.service_parts;
        self.service = Some(
            crate::service::Service::start(
                prepared,
                crate::service::Handles {
                    gateway: self.config.gateway.clone(),
                    started: parts.started,
                    buses: service_buses(&self.buses),
                    uplink: self.uplink.clone(),
                    spool: parts.spool_stats.clone(),
                    book: parts.book.clone(),
                    frames: parts.frames.clone(),
                },
            )
            .await,
        );
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
        for b in &self.buses {
            let _ = b.commands.try_send(BusCommand::Stop);
        }
        // The pipeline ends once every sender is gone: ours first, then the buses'.
        drop(self.batches);
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
        self.uplink.shutdown();
        let up_abort = self.uplink_task.abort_handle();
        match tokio::time::timeout_at(deadline, self.uplink_task).await {
            Ok(Ok(mut outbox)) => {
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
    pub async fn run_until_signal(self) {
        self.run_until(reload::Signals::new()).await;
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
    pub async fn run_until(mut self, mut signals: reload::Signals) {
        while signals.next().await == reload::SignalEvent::Reload {
            tracing::info!("SIGHUP: reloading the configuration");
            // The outcome is logged by `reload`; a rejected file changes nothing.
            let _ = self.reload().await;
            // Either way the parser and the profile loader ran again.
            self.release_startup_code();
        }
        tracing::info!("stopping");
        self.stop().await;
    }
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

/// Most batches in one spool transaction. Past a few dozen, a bigger group saves little
/// CPU (the commit is already shared) but every batch of it is in memory at once, twice
/// (struct and JSON, ~7 KB for 25 values): with 1,000 meters answering at once, groups of
/// 256 and a bus queue of 128 held ~3 MB at the peak of each poll burst, groups of 64 still
/// ~0.6 MB.
const MAX_GROUP: usize = 32;

/// Validates and stores batches as they come, several per transaction (see
/// [`crate::config::SpoolConfig::commit_window`]); keeps them in memory while the spool fails.
/// Returns when every bus has stopped and everything received was stored (or, stopping,
/// could not be after one more try).
async fn pipeline(
    mut rx: mpsc::Receiver<ReadingBatch>,
    writer: SpoolWriter,
    fresh: FreshRows,
    window: Duration,
    uplink: UplinkHandle,
) {
    let book = writer.book.clone();
    let writer = Arc::new(Mutex::new(writer));
    // Received, not yet handed to the writer.
    let mut arrived: Vec<ReadingBatch> = Vec::new();
    let mut dropped_in_memory: u64 = 0;
    let retry = Duration::from_secs(5);
    let mut failing = false;
    let mut closed = false;
    loop {
        // Wait for a batch; while the spool is failing, also wake for the retry.
        if !closed {
            let got = if failing {
                tokio::select! {
                    b = rx.recv() => b,
                    _ = tokio::time::sleep(retry) => None,
                }
            } else {
                rx.recv().await
            };
            match got {
                Some(b) => arrived.push(b),
                None => closed = rx.is_closed(),
            }
        }
        // Group commit: wait a little for the batches of the meters polled right after this one.
        if !closed && !failing && !arrived.is_empty() && !window.is_zero() {
            let deadline = tokio::time::Instant::now() + window;
            while arrived.len() < MAX_GROUP {
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) => arrived.push(b),
                        None => { closed = true; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        while arrived.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(b) => arrived.push(b),
                Err(_) => break,
            }
        }
        // Each poll counts once, on arrival (whether or not the spool can take it).
        if let Some(book) = &book {
            let now = SystemTime::now();
            let mut book = lock(book);
            for b in &arrived {
                book.count_poll(b, now);
            }
        }
        let unstored = lock(&writer).unstored.len();
        if arrived.is_empty() && unstored == 0 {
            if closed {
                return;
            }
            continue;
        }
        // Bound what waits in memory while the spool cannot be written: the oldest go first.
        let excess = (unstored + arrived.len()).saturating_sub(MEMORY_BACKLOG);
        if excess > 0 {
            dropped_in_memory += excess as u64;
            let from_writer = excess.min(unstored);
            lock(&writer).drop_oldest(from_writer);
            arrived.drain(..excess - from_writer);
            tracing::error!(
                dropped_in_memory,
                "spool unwritable for too long: oldest in-memory readings dropped"
            );
        }
        let new = std::mem::take(&mut arrived);
        let w = writer.clone();
        match tokio::task::spawn_blocking(move || lock(&w).store(new)).await {
            Ok(Ok(rows)) => {
                fresh.add(rows);
                failing = false;
                uplink.readings_added();
            }
            Ok(Err(e)) => {
                failing = true;
                let kept = lock(&writer).unstored.len();
                tracing::error!(error = %e, kept_in_memory = kept, "cannot store readings; retrying");
                if closed {
                    tracing::error!(
                        lost = kept,
                        "stopping with readings that could not be stored"
                    );
                    return;
                }
            }
            Err(e) => {
                // A panic in the writer is a bug; what it had taken in is still in `unstored`.
                failing = true;
                tracing::error!(error = %e, "spool writer task failed");
            }
        }
    }
}

/// A meter's last good value of each monotonic register, `None` when the spool has none. A
/// meter has a few such registers, so a short list: a hash map of four entries took ~350 bytes,
/// ~0.2 MB with 1,000 meters.
#[derive(Debug, Default)]
struct KnownRegisters(Vec<(crate::reading::Label, Option<Decimal>)>);

impl KnownRegisters {
    fn get(&self, quantity: &str) -> Option<Option<Decimal>> {
        self.0
            .iter()
            .find(|(q, _)| &**q == quantity)
            .map(|(_, v)| *v)
    }

    fn insert(&mut self, quantity: &crate::reading::Label, value: Option<Decimal>) {
        match self.0.iter_mut().find(|(q, _)| q == quantity) {
            Some(slot) => slot.1 = value,
            None => {
                self.0.push((quantity.clone(), value));
                self.0.shrink_to_fit();
            }
        }
    }
}

/// The pipeline's blocking half: validates batches and appends them to the spool.
struct SpoolWriter {
    spool: Arc<Mutex<Spool>>,
    gateway: String,
    validation: crate::validate::ValidationConfig,
    /// Each meter's last good value of each monotonic energy register, as in the spool
    /// (`Spool::last_good`), read once per register and then kept up to date here: one SQL
    /// query per energy value per reading cost more than storing the reading.
    last_good: HashMap<String, KnownRegisters>,
    /// Batches not stored yet (the spool failed); first in, first stored.
    unstored: Vec<ReadingBatch>,
    /// How many of `unstored`, from the front, are validated.
    validated: usize,
    /// Where each meter's last stored batch is kept for the diagnostics service.
    book: Option<Arc<Mutex<crate::service::SuccessBook>>>,
    /// The uplink's acks, deleted in each append's transaction.
    acks: HeldAcks,
}

impl SpoolWriter {
    fn new(
        spool: Arc<Mutex<Spool>>,
        gateway: &str,
        validation: crate::validate::ValidationConfig,
        book: Option<Arc<Mutex<crate::service::SuccessBook>>>,
        acks: HeldAcks,
    ) -> Self {
        Self {
            spool,
            gateway: gateway.to_owned(),
            validation,
            last_good: HashMap::new(),
            unstored: Vec::new(),
            validated: 0,
            book,
            acks,
        }
    }

    /// Forgets the `n` oldest unstored batches (memory bound while the spool fails).
    fn drop_oldest(&mut self, n: usize) {
        let n = n.min(self.unstored.len());
        self.unstored.drain(..n);
        self.validated = self.validated.saturating_sub(n);
    }

    /// Validates `new` and appends it, after any batches a failed call left, in one
    /// transaction. On error everything stays in `unstored` for the next call; what was
    /// validated is not validated again.
    fn store(&mut self, new: Vec<ReadingBatch>) -> Result<AppendedRows, SpoolError> {
        // Taken in before anything that can fail, so a failure below cannot lose them.
        self.unstored.extend(new);
        let mut s = lock(&self.spool);
        let now = SystemTime::now();
        while self.validated < self.unstored.len() {
            let batch = &mut self.unstored[self.validated];
            let known = self.last_good.entry(batch.meter.clone()).or_default();
            for v in &batch.values {
                if crate::validate::is_monotonic(&v.quantity) && known.get(&v.quantity).is_none() {
                    let prev = s
                        .last_good(&batch.meter, &v.quantity)?
                        .and_then(|t| t.parse().ok());
                    known.insert(&v.quantity, prev);
                }
            }
            self.validation
                .validate(batch, |q| known.get(q).flatten(), now);
            // The next batch of this meter (in this group or later) compares with this one:
            // it is taken, stored now or, if the spool fails, on a retry.
            remember_good(known, batch);
            self.validated += 1;
        }
        // Taken under the spool's lock (see `SpoolOutbox::flush`), given back if the append
        // fails: its transaction deleted nothing then.
        let acks = self.acks.take();
        let rows = match s.append_rows_acking(&self.gateway, &mut self.unstored, &acks) {
            Ok(rows) => rows,
            Err(e) => {
                self.acks.put_back(acks);
                return Err(e);
            }
        };
        drop(s);
        self.validated = 0;
        if let Some(book) = &self.book {
            // Each meter's newest batch of the group, as stored (stamped and validated in
            // place), taken apart rather than copied: the batches are dropped next.
            let mut newest = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, batch) in self.unstored.iter().enumerate().rev() {
                if seen.insert(batch.meter.as_str()) {
                    newest.push(i);
                }
            }
            let mut book = lock(book);
            for i in newest {
                if let Some(batch) = self.unstored.get_mut(i) {
                    book.keep_last_taken(batch);
                }
            }
        }
        self.unstored.clear();
        Ok(rows)
    }
}

/// Updates a meter's last good energy registers from a validated batch, by the rule the spool
/// keeps them (`Spool::append`: a good number).
fn remember_good(known: &mut KnownRegisters, batch: &ReadingBatch) {
    use crate::reading::{Quality, ValueData};
    for v in &batch.values {
        if let (true, Quality::Good, Some(ValueData::Number(n))) = (
            crate::validate::is_monotonic(&v.quantity),
            v.quality,
            &v.value,
        ) && let Ok(d) = n.as_str().parse::<Decimal>()
        {
            known.insert(&v.quantity, Some(d));
        }
    }
}

/// Forwards meter health to the uplink's retained status topics when it changes (and every
/// minute, so counters stay fresh).
async fn forward_statuses(buses: Vec<Arc<Mutex<BusStatus>>>, uplink: UplinkHandle) {
    // Each meter's last forwarded state, by bus and position: a bus's meters keep their order
    // for the life of this task (a reload starts a new one). Not a map by meter id: that was
    // ~0.1 MB with 1,000 meters.
    let mut last: Vec<Vec<Option<BusMeterState>>> = vec![Vec::new(); buses.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        rounds += 1;
        let refresh_all = rounds.is_multiple_of(30);
        for (bus, last) in buses.iter().zip(last.iter_mut()) {
            // Only what is to be sent is taken out under the bus's lock: a copy of every
            // meter's status every 2 s was most of this task's cost with 1,000 meters. The
            // uplink is handed the statuses after the lock is released.
            let mut due = Vec::new();
            let snapshot = lock(bus);
            last.resize(snapshot.meters.len(), None);
            for (m, prev) in snapshot.meters.iter().zip(last.iter_mut()) {
                let changed = prev.replace(m.state) != Some(m.state);
                if changed || refresh_all {
                    due.push(to_uplink_status(m));
                }
            }
            drop(snapshot);
            for status in due {
                uplink.set_meter_status(status);
            }
        }
    }
}

fn to_uplink_status(m: &crate::bus::health::MeterStatus) -> uplink::MeterStatus {
    let state = match m.state {
        BusMeterState::Ok => uplink::MeterState::Ok,
        BusMeterState::Degraded => uplink::MeterState::Degraded,
        BusMeterState::Unreachable => uplink::MeterState::Unreachable,
    };
    uplink::MeterStatus {
        meter: m.id.clone(),
        state,
        at: SystemTime::now(),
        last_success: m
            .last_success
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok()),
        last_error: m.last_error.clone(),
        counters: uplink::MeterCounters {
            polls: m.polls_ok + m.polls_failed,
            successes: m.polls_ok,
            failures: m.polls_failed,
            timeouts: m.timeouts,
            // Frames refused: checksum/CRC failures and valid frames that were not the answer.
            bad_frames: m.wire.checksum_errors + m.wire.foreign_frames,
            consecutive_failures: u64::from(m.consecutive_failures),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ExactNumber, Quality, ReadingValue, ValueData};
    use crate::validate::ValidationConfig;

    fn batch(meter: &str, energy: &str) -> ReadingBatch {
        let mut b = ReadingBatch::new("x", meter, "dlt645-2007", 0, SystemTime::now());
        b.values.push(ReadingValue {
            quantity: "energy.active.import.total".into(),
            value: Some(ValueData::Number(
                serde_json::from_str::<ExactNumber>(energy).unwrap(),
            )),
            unit: "kWh".into(),
            obis: None,
            source: "dlt645:00010000".into(),
            quality: Quality::Good,
            reason: None,
            meter_time: None,
        });
        b
    }

    fn writer(dir: &Path, max_bytes: u64) -> SpoolWriter {
        let spool = Spool::open(
            dir.join("spool.sqlite"),
            SpoolOptions::numbered_from_one(max_bytes),
        )
        .unwrap();
        SpoolWriter::new(
            Arc::new(Mutex::new(spool)),
            "gw",
            ValidationConfig::default(),
            None,
            HeldAcks::default(),
        )
    }

    fn stored(w: &SpoolWriter) -> Vec<(String, u64, String)> {
        lock(&w.spool)
            .pending(None, 100)
            .unwrap()
            .into_iter()
            .map(|p| {
                let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                (
                    p.meter,
                    p.seq,
                    doc["values"][0]["quality"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn held_acks_are_deleted_by_the_next_append_and_kept_if_it_fails() {
        use crate::uplink::Outbox;
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        let mut outbox = SpoolOutbox::new(w.spool.clone(), FreshRows::default(), w.acks.clone());
        w.store(vec![batch("a", "1.00"), batch("b", "1.00")])
            .unwrap();
        let sent = outbox.pending(None, 10).unwrap();
        assert_eq!(sent.len(), 2);
        for row in &sent {
            assert!(outbox.ack(row.rowid).unwrap());
        }
        // Held, not deleted yet.
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 2);
        // The next append deletes them in its transaction.
        let rows = w.store(vec![batch("a", "2.00")]).unwrap();
        assert_eq!(rows.acked, 2);
        assert_eq!(stored(&w), [("a".to_owned(), 2, "good".to_owned())]);
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 1);
        assert!(w.acks.take().is_empty());

        // A failed append deletes nothing and gives the acks back.
        let last = outbox.pending(Some(sent[1].rowid), 10).unwrap();
        assert!(outbox.ack(last[0].rowid).unwrap());
        let mut too_big = batch("b", "3.00");
        too_big.frames = vec!["00".repeat(1 << 20)];
        assert!(w.store(vec![too_big]).is_err());
        assert_eq!(w.acks.take(), [last[0].rowid]);
        assert_eq!(lock(&w.spool).stats().unwrap().depth, 1);
    }

    #[test]
    fn a_group_is_validated_against_its_own_earlier_batches_and_stored_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![
            batch("a", "10.00"),
            batch("b", "5.00"),
            batch("a", "9.99"),
        ])
        .unwrap();
        assert_eq!(
            stored(&w),
            [
                ("a".into(), 1, "good".into()),
                ("b".into(), 1, "good".into()),
                ("a".into(), 2, "suspect".into()),
            ]
        );
        // The suspect value is not a new last good value: 9.995 > 9.99 but < 10.00.
        w.store(vec![batch("a", "9.995")]).unwrap();
        assert_eq!(stored(&w)[3], ("a".into(), 3, "suspect".into()));
    }

    #[test]
    fn the_book_keeps_each_meters_last_stored_batch_as_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        let book = Arc::new(Mutex::new(crate::service::SuccessBook::new([("bus", "a")])));
        w.book = Some(book.clone());
        w.store(vec![batch("a", "10.00"), batch("a", "9.00")])
            .unwrap();
        let book = lock(&book);
        let last = book.last_batch("a").expect("kept");
        assert_eq!(last.seq, 2);
        assert_eq!(last.values[0].quality, Quality::Suspect);
    }

    #[test]
    fn the_last_good_value_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = writer(dir.path(), 1 << 20);
            w.store(vec![batch("a", "10.00")]).unwrap();
        }
        let mut w = writer(dir.path(), 1 << 20);
        w.store(vec![batch("a", "9.00"), batch("a", "10.50")])
            .unwrap();
        let q: Vec<_> = stored(&w).into_iter().map(|(_, seq, q)| (seq, q)).collect();
        assert_eq!(
            q,
            [
                (1, "good".into()),
                (2, "suspect".into()),
                (3, "good".into())
            ]
        );
    }

    #[test]
    fn a_failed_store_keeps_every_batch_validated_once() {
        let dir = tempfile::tempdir().unwrap();
        // Too small for two batches in one transaction: the spool refuses the group.
        let one = serde_json::to_vec(&batch("a", "10.00")).unwrap().len() as u64;
        let mut w = writer(dir.path(), one + one / 2);
        w.store(vec![batch("a", "10.00")]).unwrap();
        let err = w.store(vec![batch("a", "9.00"), batch("a", "11.00")]);
        assert!(matches!(err, Err(SpoolError::TooLarge { .. })), "{err:?}");
        assert_eq!(w.unstored.len(), 2);
        assert_eq!(w.validated, 2);
        let reasons = |w: &SpoolWriter| -> Vec<Option<String>> {
            w.unstored
                .iter()
                .map(|b| b.values[0].reason.clone())
                .collect()
        };
        let before = reasons(&w);
        assert!(before[0].is_some() && before[1].is_none(), "{before:?}");
        // A retry with one more batch validates only the new one.
        let _ = w.store(vec![batch("a", "10.50")]);
        assert_eq!(w.unstored.len(), 3);
        assert_eq!(reasons(&w)[..2], before[..]);
        // 10.50 < 11.00, the last good value taken (though not stored yet).
        assert_eq!(w.unstored[2].values[0].quality, Quality::Suspect);
        w.drop_oldest(2);
        assert_eq!((w.unstored.len(), w.validated), (1, 1));
    }
}
