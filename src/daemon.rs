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

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use meter_protocols::Decimal;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::bus::health::{BusStatus, MeterState as BusMeterState};
use crate::bus::task::{self as bus_task, BusCommand, BusHandle, BusOptions};
use crate::config::{Config, ConfigError, ProfileSet};
use crate::reading::ReadingBatch;
use crate::spool::{Spool, SpoolError, SpoolOptions};
use crate::uplink::{self, Outbox, Uplink, UplinkHandle};

pub mod reload;

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
    Broker(#[from] crate::broker::BrokerError),
}

/// The spool as the uplink's outbox. Acks are committed in groups: a delete that is not yet
/// durable can only cause a re-send with the same id after a crash, which the contract
/// allows, while a durable delete per PUBACK would cost one fsync per reading.
///
/// A group is committed when it holds [`ACK_GROUP`] acks, when its oldest ack is
/// [`ACK_MAX_AGE`] old and the uplink next reads the outbox, when the uplink re-reads the outbox
/// from the start (after a CONNACK, so that nothing acked is sent again), and at stop.
/// Committing on every read instead cost one fsync per reading: with meters that answer quickly
/// the uplink reads the outbox once per stored batch (benches/pipeline.rs, docs/benchmarks.md).
struct SpoolOutbox {
    spool: Arc<Mutex<Spool>>,
    acks: Vec<i64>,
    /// When the oldest ack in `acks` arrived.
    oldest_ack: Option<std::time::Instant>,
}

const ACK_GROUP: usize = 64;
const ACK_MAX_AGE: Duration = Duration::from_secs(1);

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    // A panic while holding the lock cannot leave SQLite half-written (transactions), so the
    // spool is still usable.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl SpoolOutbox {
    fn flush(&mut self) -> Result<(), SpoolError> {
        if !self.acks.is_empty() {
            lock(&self.spool).ack_many(&self.acks)?;
            self.acks.clear();
        }
        self.oldest_ack = None;
        Ok(())
    }

    /// Whether the acks held should be committed before the next outbox read.
    fn flush_due(&self, after_rowid: Option<i64>) -> bool {
        after_rowid.is_none()
            || self.acks.len() >= ACK_GROUP
            || self.oldest_ack.is_some_and(|t| t.elapsed() >= ACK_MAX_AGE)
    }
}

impl Outbox for SpoolOutbox {
    type Error = SpoolError;

    fn pending(
        &mut self,
        after_rowid: Option<i64>,
        limit: usize,
    ) -> Result<Vec<uplink::Pending>, SpoolError> {
        if self.flush_due(after_rowid) {
            self.flush()?;
        }
        let rows = lock(&self.spool).pending(after_rowid, limit)?;
        Ok(rows
            .into_iter()
            .map(|p| uplink::Pending {
                rowid: p.rowid,
                meter: p.meter,
                seq: p.seq,
                id: p.id,
                payload: p.payload,
            })
            .collect())
    }

    fn ack(&mut self, rowid: i64) -> Result<bool, SpoolError> {
        self.acks.push(rowid);
        self.oldest_ack.get_or_insert_with(std::time::Instant::now);
        if self.acks.len() >= ACK_GROUP {
            self.flush()?;
        }
        Ok(true)
    }
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
    _broker: Option<crate::broker::EmbeddedBroker>,
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
}

impl Daemon {
    /// Loads the configuration at `path` and starts everything.
    pub async fn start(path: &Path, options: RunOptions) -> Result<Daemon, DaemonError> {
        let (config, profiles) = Config::load(path)?;
        let mut daemon = Self::start_with(config, profiles, options).await?;
        daemon.config_path = Some(path.to_owned());
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
            let b = crate::broker::EmbeddedBroker::start(
                config.mqtt.embedded_listen,
                config.mqtt.max_packet_size,
            )?;
            tracing::info!(addr = %b.addr(), "embedded MQTT broker listening");
            Some(b)
        } else {
            None
        };

        let outbox = SpoolOutbox {
            spool: spool.clone(),
            acks: Vec::new(),
            oldest_ack: None,
        };
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
        // Buses send to the success book, which passes batches on to the pipeline. One
        // bus-side sender stays in the Daemon so that a reload can start buses later. The
        // book only forwards, so a short queue here is enough; the pipeline's own queue below
        // is what lets batches that arrive together be stored together. (Every queued batch
        // is ~7 KiB with 25 values: 256 of them here were ~1.8 MB at each poll burst.)
        let (bus_tx, bus_rx) = mpsc::channel::<ReadingBatch>(32);
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
        // Poll outcomes feed the reading success book on their way to the pipeline.
        let book = crate::service::book_for(&service_buses(&buses));
        let (pipe_tx, rx) = mpsc::channel::<ReadingBatch>(256);
        tokio::spawn(crate::service::record_polls(bus_rx, pipe_tx, book.clone()));
        let rate_book = book.clone();
        let up = up.with_reading_success(move || {
            Some(crate::service::report::gateway_success(
                &crate::service::lock(&rate_book),
                SystemTime::now(),
            ))
        });
        let uplink_task = tokio::spawn(up.run());
        let pipeline = tokio::spawn(pipeline(rx, spool.clone(), config.clone(), uplink.clone()));
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
        self.buses
            .iter()
            .map(|b| {
                b.status
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_else(|p| p.into_inner().clone())
            })
            .collect()
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
                let st = b
                    .status
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_else(|p| p.into_inner().clone());
                st.meters
                    .into_iter()
                    .map(|m| (b.name.clone(), m.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        crate::service::lock(&self.service_parts.book)
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

    /// [`Daemon::run_until_signal`] with signal handlers installed earlier (before the start,
    /// so that a SIGHUP or SIGTERM during it is handled once running instead of killing).
    pub async fn run_until(mut self, mut signals: reload::Signals) {
        while signals.next().await == reload::SignalEvent::Reload {
            tracing::info!("SIGHUP: reloading the configuration");
            // The outcome is logged by `reload`; a rejected file changes nothing.
            let _ = self.reload().await;
        }
        tracing::info!("stopping");
        self.stop().await;
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Validates and stores batches as they come; keeps them in memory while the spool fails.
/// Returns when every bus has stopped and everything received was stored (or, stopping,
/// could not be after one more try).
async fn pipeline(
    mut rx: mpsc::Receiver<ReadingBatch>,
    spool: Arc<Mutex<Spool>>,
    config: Config,
    uplink: UplinkHandle,
) {
    let mut backlog: VecDeque<ReadingBatch> = VecDeque::new();
    let mut dropped_in_memory: u64 = 0;
    let retry = Duration::from_secs(5);
    let mut failing = false;
    loop {
        // Wait for a batch; while the spool is failing, also wake for the retry.
        let got = if failing {
            tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep(retry) => None,
            }
        } else {
            rx.recv().await
        };
        let closed = got.is_none() && rx.is_closed();
        match got {
            Some(b) => backlog.push_back(b),
            None if backlog.is_empty() => return,
            None => {}
        }
        // Everything that arrived together is stored in one transaction.
        while let Ok(b) = rx.try_recv() {
            backlog.push_back(b);
        }
        while backlog.len() > MEMORY_BACKLOG {
            backlog.pop_front();
            dropped_in_memory += 1;
            tracing::error!(
                dropped_in_memory,
                "spool unwritable for too long: oldest in-memory reading dropped"
            );
        }
        let group: Vec<ReadingBatch> = backlog.iter().cloned().collect();
        let s = spool.clone();
        let validation = config.validation.clone();
        let gateway = config.gateway.clone();
        match tokio::task::spawn_blocking(move || store(&s, &gateway, &validation, group)).await {
            Ok(Ok(n)) => {
                backlog.drain(..n.min(backlog.len()));
                failing = false;
                uplink.readings_added();
            }
            Ok(Err(e)) => {
                failing = true;
                tracing::error!(error = %e, kept_in_memory = backlog.len(), "cannot store readings; retrying");
                if closed {
                    tracing::error!(
                        lost = backlog.len(),
                        "stopping with readings that could not be stored"
                    );
                    return;
                }
            }
            Err(e) => {
                failing = true;
                tracing::error!(error = %e, "spool writer task failed");
            }
        }
    }
}

/// Validates and appends a group of batches in one transaction; returns how many were stored.
fn store(
    spool: &Mutex<Spool>,
    gateway: &str,
    validation: &crate::validate::ValidationConfig,
    mut group: Vec<ReadingBatch>,
) -> Result<usize, SpoolError> {
    let mut s = lock(spool);
    let now = SystemTime::now();
    for batch in &mut group {
        let meter = batch.meter.clone();
        let mut last: BTreeMap<String, Option<Decimal>> = BTreeMap::new();
        for v in &batch.values {
            if crate::validate::is_monotonic(&v.quantity) {
                let prev = s
                    .last_good(&meter, &v.quantity)?
                    .and_then(|t| t.parse().ok());
                last.insert(v.quantity.clone(), prev);
            }
        }
        validation.validate(batch, |q| last.get(q).copied().flatten(), now);
    }
    let n = group.len();
    s.append(gateway, group)?;
    Ok(n)
}

/// Forwards meter health to the uplink's retained status topics when it changes (and every
/// minute, so counters stay fresh).
async fn forward_statuses(buses: Vec<Arc<Mutex<BusStatus>>>, uplink: UplinkHandle) {
    let mut last: BTreeMap<String, (BusMeterState, u64)> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        rounds += 1;
        let refresh_all = rounds.is_multiple_of(30);
        for bus in &buses {
            let snapshot = bus
                .lock()
                .map(|s| s.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            for m in &snapshot.meters {
                let key = (m.state, m.polls_ok + m.polls_failed);
                let changed = last.get(&m.id).is_none_or(|prev| prev.0 != m.state);
                if changed || refresh_all {
                    uplink.set_meter_status(to_uplink_status(m));
                }
                last.insert(m.id.clone(), key);
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
