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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::bus::task::{self as bus_task, BusCommand, BusOptions};
use crate::config::{Config, ConfigError, ProfileSet};
use crate::health::{BusHealth, SuccessBook};
use crate::ingest::{self, FreshRows, HeldAcks, SpoolOutbox, SpoolWriter};
use crate::reading::ReadingBatch;
use crate::spool::{Spool, SpoolError, SpoolOptions};
use crate::sync::lock;
use crate::uplink::{self, ReadingSuccess, Uplink, UplinkHandle};

pub mod reload;

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
    spool_stats: Arc<dyn Fn() -> uplink::SpoolSummary + Send + Sync>,
    book: Arc<Mutex<SuccessBook>>,
    frames: broadcast::Sender<crate::bus::trace::FrameEvent>,
    meter_drops: crate::service::MeterDropsFn,
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
        // Before anything starts: a broker must be named, and a service on a non-loopback
        // address needs a token.
        config
            .mqtt
            .validate()
            .map_err(uplink::UplinkConfigError::from)?;
        let service_setup = crate::service::prepare(&config.service)?;
        let started = SystemTime::now();
        let spool_path = config.data_dir.join("spool.sqlite");
        // A spool that cannot hold one reading would drop every one of them.
        ingest::check_spool_room(&config, &profiles)?;
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
        let spool_stats: Arc<dyn Fn() -> uplink::SpoolSummary + Send + Sync> =
            Arc::new(move || {
                uplink::SpoolSummary::from(&lock(&stats_spool).stats().unwrap_or_default())
            });
        let up_stats = spool_stats.clone();
        let up = up.with_spool_stats(move || up_stats());
        let drops_spool = spool.clone();
        let meter_drops: crate::service::MeterDropsFn = Arc::new(move |meter| {
            let (dropped, dropped_in_memory) = lock(&drops_spool).meter_drops(meter).ok()?;
            Some(uplink::MeterDrops {
                dropped,
                dropped_in_memory,
            })
        });
        let up_drops = meter_drops.clone();
        let up = up.with_meter_drops(move |meter| up_drops(meter));

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
                Arc::new(Mutex::new(BusHealth::for_bus(bus.get_ref()))),
            )?);
        }
        // The pipeline feeds the reading success book: poll outcomes as they arrive, each
        // meter's last batch once stored.
        let book = crate::service::book_for(&service_buses(&buses));
        let rate_book = book.clone();
        let up = up.with_reading_success(move || {
            Some(ReadingSuccess::from(
                &lock(&rate_book).group(None, SystemTime::now()),
            ))
        });
        let uplink_task = tokio::spawn(up.run());
        let stored = uplink.clone();
        let pipeline = tokio::spawn(ingest::run(
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
            Box::new(move || stored.readings_added()),
        ));
        let statuses: Vec<Arc<Mutex<BusHealth>>> = buses.iter().map(|b| b.status.clone()).collect();
        let status_task = tokio::spawn(uplink::forward_health(statuses, uplink.clone()));
        let service_parts = ServiceParts {
            started,
            spool_stats,
            book,
            frames,
            meter_drops,
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
                meter_drops: service_parts.meter_drops.clone(),
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
    pub fn bus_statuses(&self) -> Vec<BusHealth> {
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
                    meter_drops: parts.meter_drops.clone(),
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
