//! The local diagnostics service: what a technician at the cabinet (or a local scraper) asks
//! the running daemon.
//!
//! Endpoints (HTTP/1.1, on `[service] listen`, default `127.0.0.1:8745`, and optionally on a
//! Unix socket):
//! - `GET /api/status`: gateway, uplink, spool, every bus and meter, with success rates;
//! - `GET /metrics`: the same counters in Prometheus text format;
//! - `GET /api/trace?bus=…&meter=…`: live frames both ways, as Server-Sent Events;
//! - `POST /api/read` `{"meter": "…"}`: a one-shot read through the owning bus task;
//! - `GET /`: one self-contained status page.
//!
//! This module owns the listener, authentication (a bearer token, required for any address
//! that is not loopback), the reading success book ([`success`]) and the shaping of the
//! daemon's numbers into JSON and Prometheus text. It never opens a port of a bus (one-shot
//! reads are queued into the bus task as [`BusCommand::ReadNow`]), never writes the spool and
//! never publishes over MQTT: it only reads snapshots the other parts already keep.

pub mod client;
pub mod guard;
mod http;
mod metrics;
pub mod report;

#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::bus::task::BusCommand;
use crate::bus::trace::FrameEvent;
use crate::config::ServiceConfig;
use crate::health::BusHealth;
use crate::ingest::completeness::CompletenessSet;
use crate::uplink::{MeterDrops, SpoolSummary, UplinkHandle};

/// A meter's drop counters from the spool (one lookup, cheap).
pub type MeterDropsFn = Arc<dyn Fn(&str) -> Option<MeterDrops> + Send + Sync>;

pub use crate::health::SuccessBook;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8745";

/// Why the service refuses to start (the daemon then refuses too).
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A non-loopback address without a token.
    #[error(
        "[service] listen = \"{0}\" is not a loopback address: set token_file or token_env (or listen on 127.0.0.1)"
    )]
    NeedsToken(SocketAddr),
    /// The token file cannot be read or is empty.
    #[error("[service] token_file {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The token variable is unset or empty.
    #[error("[service] token_env: environment variable {0} is unset or empty")]
    TokenEnv(String),
}

/// A checked service configuration with its token resolved; made before anything starts, so a
/// daemon with a bad `[service]` section starts nothing.
#[derive(Debug, Clone)]
pub struct Prepared {
    config: ServiceConfig,
    token: Option<Arc<str>>,
}

impl Prepared {
    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Whether a service started from `other` would be the same: the same settings and the
    /// same token (a rotated token file changes the second, not the first).
    pub fn same_as(&self, other: &Prepared) -> bool {
        let settings = match (
            serde_json::to_value(&self.config),
            serde_json::to_value(&other.config),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        settings && self.token == other.token
    }
}

/// Checks `config` and reads its token.
pub fn prepare(config: &ServiceConfig) -> Result<Prepared, ServiceError> {
    let token = match (&config.token_file, &config.token_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| ServiceError::TokenFile {
                path: path.clone(),
                why: e.to_string(),
            })?;
            let t = text.lines().next().unwrap_or("").trim().to_owned();
            if t.is_empty() {
                return Err(ServiceError::TokenFile {
                    path: path.clone(),
                    why: "empty".into(),
                });
            }
            Some(t)
        }
        (None, Some(var)) => {
            let t = std::env::var(var).unwrap_or_default().trim().to_owned();
            if t.is_empty() {
                return Err(ServiceError::TokenEnv(var.clone()));
            }
            Some(t)
        }
        (None, None) => None,
    };
    if config.enabled && !config.listen.ip().is_loopback() && token.is_none() {
        return Err(ServiceError::NeedsToken(config.listen));
    }
    Ok(Prepared {
        config: config.clone(),
        token: token.map(Arc::from),
    })
}

/// A bus as the service sees it.
#[derive(Debug, Clone)]
pub struct ServiceBus {
    /// Bus name.
    pub name: String,
    /// Where one-shot reads are queued.
    pub commands: mpsc::Sender<BusCommand>,
    /// The bus's health, which its task records into.
    pub status: Arc<Mutex<BusHealth>>,
}

/// What the daemon hands the service.
#[derive(Clone)]
pub struct Handles {
    /// Gateway id.
    pub gateway: String,
    /// When the daemon started.
    pub started: SystemTime,
    /// The buses.
    pub buses: Vec<ServiceBus>,
    /// The uplink's snapshot.
    pub uplink: UplinkHandle,
    /// The spool's numbers (must be cheap).
    pub spool: Arc<dyn Fn() -> SpoolSummary + Send + Sync>,
    /// The success book, fed by the daemon's pipeline.
    pub book: Arc<Mutex<SuccessBook>>,
    /// The bus tasks' frame channel.
    pub frames: broadcast::Sender<FrameEvent>,
    /// Each meter's drop counters, from the spool.
    pub meter_drops: MeterDropsFn,
    /// The latest completeness of settlement records, each kind (what the uplink publishes).
    pub completeness: Arc<Mutex<CompletenessSet>>,
    /// Fee control's view (`None` when `[control]` is off).
    pub control: Option<crate::control::ControlView>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("gateway", &self.gateway)
            .field("buses", &self.buses.len())
            .finish()
    }
}

/// The running service.
#[derive(Debug)]
pub struct Service {
    addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Service {
    /// Binds and serves. A listener that cannot be bound (address in use) is logged and
    /// skipped: polling and billing go on without diagnostics.
    pub async fn start(prepared: Prepared, handles: Handles) -> Service {
        let limits = guard::Limits::default();
        let (stop, stop_rx) = watch::channel(false);
        let state = http::State::new(
            handles,
            prepared.token.clone(),
            &prepared.config,
            stop_rx,
            limits,
        );
        let mut tasks = Vec::new();
        let mut addr = None;
        if prepared.config.enabled {
            match tokio::net::TcpListener::bind(prepared.config.listen).await {
                Ok(l) => {
                    addr = l.local_addr().ok();
                    tracing::info!(addr = ?addr, "diagnostics service listening");
                    let bound = addr.unwrap_or(prepared.config.listen);
                    let tcp_state = state.for_tcp(bound, &prepared.config);
                    tasks.push(tokio::spawn(http::serve(http::Listener::Tcp(l), tcp_state)));
                }
                Err(e) => tracing::error!(
                    listen = %prepared.config.listen,
                    error = %e,
                    "diagnostics service cannot listen; the daemon runs without it"
                ),
            }
            #[cfg(unix)]
            if let Some(path) = &prepared.config.unix_socket {
                let _ = std::fs::remove_file(path);
                match tokio::net::UnixListener::bind(path) {
                    Ok(l) => {
                        tracing::info!(path = %path.display(), "diagnostics service on a Unix socket");
                        tasks.push(tokio::spawn(http::serve(
                            http::Listener::Unix(l),
                            state.clone(),
                        )));
                    }
                    Err(e) => tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "diagnostics service cannot listen on the Unix socket"
                    ),
                }
            }
        }
        Service { addr, stop, tasks }
    }

    /// Where the TCP listener is bound (None when disabled or not bound).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Ends the live traces, stops accepting, and waits at most `budget` for open requests.
    pub async fn stop(self, budget: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + budget;
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
    }
}
