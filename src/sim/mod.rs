//! The meter simulator: simulated DL/T 645-2007, DL/T 645-1997, Modbus RTU and Modbus TCP
//! meters on serial ports, pseudo-terminals and TCP listeners, with deterministic values,
//! wire-time emulation, fault injection and a ground-truth log.
//!
//! Used by `meterd simulate --config FILE`, by the tests and the HIL suite (in process, via
//! [`Simulator::start`]), by the benchmarks and later by `meterd demo`.
//!
//! Layers, each its own module:
//! - [`config`]: the TOML file and its checks.
//! - [`model`]: values as a pure function of (seed, quantity, simulated time); [`clock`]:
//!   simulated time and calendar arithmetic.
//! - [`meter`]: what one meter answers (protocol logic, no I/O).
//! - [`fault`]: which replies go wrong and how.
//! - [`port`]: byte-stream ports (serial, pty, raw TCP): framing, addressing, timing.
//! - [`modbus_tcp`]: the Modbus TCP server (tokio-modbus).
//! - [`truth`]: the ground-truth log.
//! - [`relay`]: a meter's relay and fee control (`1C`, `03`, status word 3), the control log.
//!
//! This module owns start-up and shutdown: it opens or binds every port before returning (so a
//! busy port or an address in use is an error of [`Simulator::start`], not a log line later)
//! and stops every task on [`SimHandle::shutdown`] or drop. It never talks to the gateway's
//! bus task or spool.

pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod fault;
pub mod meter;
pub mod modbus_tcp;
pub mod model;
pub mod port;
pub mod relay;
pub mod truth;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Endpoint, PortConfig, SimConfig, SimMeterConfig};
pub use fault::{FaultKind, FaultRule, FaultsConfig};
pub use meter::{SimMeter, TruthValue};

use crate::config::{ConfigError, Parity, Protocol};
use crate::serial_port::{self, SerialPortError, SerialSettings};
use clock::SimClock;
use port::PortShared;
use truth::TruthLog;

/// Why the simulator could not start.
#[derive(Debug, Error)]
pub enum SimError {
    /// The configuration is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A TCP address could not be bound (in use, not local…).
    #[error("port {port}: cannot listen on {address}: {source}")]
    Bind {
        /// Port name.
        port: String,
        /// The address.
        address: String,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// A serial device could not be opened (missing, busy, permission).
    #[error("port {port}: {source}")]
    Serial {
        /// Port name.
        port: String,
        /// Why.
        #[source]
        source: SerialPortError,
    },
    /// A pseudo-terminal pair could not be made.
    #[error("port {port}: cannot create a pty pair: {why}")]
    Pty {
        /// Port name.
        port: String,
        /// Why.
        why: String,
    },
    /// The ground-truth log could not be created.
    #[error("cannot create the truth log {path}: {source}")]
    Truth {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What one meter is, as the simulator serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterInfo {
    /// Meter id.
    pub id: String,
    /// Protocol.
    pub protocol: Protocol,
    /// DL/T 645 address or Modbus unit, as text.
    pub address: String,
    /// Profile name.
    pub profile: String,
    /// Seed.
    pub seed: u64,
}

/// Where one port is, once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port name.
    pub name: String,
    /// The configured endpoint.
    pub endpoint: Endpoint,
    /// The bound address of a TCP or Modbus TCP port (the real port when 0 was asked for).
    pub local_addr: Option<SocketAddr>,
    /// The device the gateway opens: the serial path, or the pty's other end (or its link).
    pub device: Option<PathBuf>,
    /// The meters on the port.
    pub meters: Vec<MeterInfo>,
}

impl PortInfo {
    /// One line for a terminal: `bus1 tcp 127.0.0.1:10645: 000000000001 (dlt645-2007, …)`.
    pub fn describe(&self) -> String {
        let place = match (&self.endpoint, self.local_addr, &self.device) {
            (Endpoint::ModbusTcp(_), Some(a), _) => format!("modbus-tcp {a}"),
            (Endpoint::Tcp(_), Some(a), _) => format!("tcp {a}"),
            (_, _, Some(d)) => format!("serial {}", d.display()),
            (e, _, _) => format!("{e:?}"),
        };
        let meters: Vec<String> = self
            .meters
            .iter()
            .map(|m| {
                format!(
                    "{} ({} {}, profile {}, seed {})",
                    m.id,
                    m.protocol.name(),
                    m.address,
                    m.profile,
                    m.seed
                )
            })
            .collect();
        format!("{} {place}: {}", self.name, meters.join("; "))
    }
}

/// Keeps the gateway's end of a simulator-made pty pair alive (so the meters' end never reads
/// EIO between gateway runs) and removes its symlink on drop.
#[derive(Debug)]
struct PtyKeeper {
    _slave: File,
    link: Option<PathBuf>,
}

impl Drop for PtyKeeper {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// A running simulator. Stops every port on [`SimHandle::shutdown`] or when dropped.
#[derive(Debug)]
pub struct SimHandle {
    ports: Vec<PortInfo>,
    /// What each byte-stream port shares between its connections, by port name (for
    /// [`SimHandle::attacher`]).
    shared: Vec<Arc<PortShared>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _ptys: Vec<PtyKeeper>,
}

impl SimHandle {
    /// The ports, in configuration order.
    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// A port by name.
    pub fn port(&self, name: &str) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Serves byte-stream port `name` (serial, pty or raw TCP; not Modbus TCP) on streams a
    /// test hands it as well: an in-memory link (`tokio::io::duplex`) to a bus, so that no
    /// real I/O runs while a test's virtual clock is paused. `None` for an unknown port or a
    /// Modbus TCP one.
    pub fn attacher(&self, name: &str) -> Option<PortAttacher> {
        let info = self.port(name)?;
        if matches!(info.endpoint, Endpoint::ModbusTcp(_)) {
            return None;
        }
        let shared = self.shared.iter().find(|s| s.name == name)?;
        Some(PortAttacher {
            port: Arc::clone(shared),
            stop: self.stop.subscribe(),
        })
    }

    /// The bound address of TCP port `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.port(name).and_then(|p| p.local_addr)
    }

    /// Stops every port and waits (up to a second) for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves one port of a running simulator on streams handed to it
/// ([`SimHandle::attacher`]); each stream is served like one connection to a raw TCP port,
/// until it closes or the simulator stops.
#[derive(Debug, Clone)]
pub struct PortAttacher {
    port: Arc<PortShared>,
    stop: watch::Receiver<bool>,
}

impl PortAttacher {
    /// Serves `stream` in a task of its own on the current runtime.
    pub fn serve<S>(&self, stream: S) -> JoinHandle<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        tokio::spawn(port::serve_stream(
            stream,
            Arc::clone(&self.port),
            self.stop.clone(),
        ))
    }
}

/// Starts simulators from a configuration.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Opens and binds every port, then serves them in background tasks on the current
    /// tokio runtime. Errors: a bind failure (address in use), a serial port that cannot be
    /// opened, a pty that cannot be made, a truth log that cannot be created.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let clock = SimClock::new(config.clock.start_millis(), config.clock.speed);
        let truth = match &config.truth {
            Some(path) => Some(Arc::new(TruthLog::create(path).map_err(|source| {
                SimError::Truth {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let time_sets = match &config.time_set_log {
            Some(path) => Some(Arc::new(TruthLog::create(path).map_err(|source| {
                SimError::Truth {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let control_log = match &config.control_log {
            Some(path) => Some(Arc::new(relay::ControlLog::create(path).map_err(
                |source| SimError::Truth {
                    path: path.clone(),
                    source,
                },
            )?)),
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut handle = SimHandle {
            ports: Vec::new(),
            shared: Vec::new(),
            stop,
            tasks: Vec::new(),
            _ptys: Vec::new(),
        };
        for (index, port) in config.ports.iter().enumerate() {
            let name = port.effective_name(index);
            let Some(endpoint) = port.endpoint() else {
                return Err(SimError::Config(ConfigError::file(
                    std::path::Path::new("<config>"),
                    format!("port {name}: give exactly one of serial, tcp, modbus_tcp"),
                )));
            };
            let mut meters = Vec::new();
            for meter in &port.meters {
                let meter = meter.get_ref();
                let Some(profile) = config.profiles.get(&meter.profile) else {
                    return Err(SimError::Config(ConfigError::file(
                        std::path::Path::new("<config>"),
                        format!("port {name}: no profile named {:?}", meter.profile),
                    )));
                };
                meters.push(Arc::new(SimMeter::new(meter, &name, profile)));
            }
            let infos = meters
                .iter()
                .map(|m| MeterInfo {
                    id: m.id.clone(),
                    protocol: m.protocol,
                    address: match (m.address, m.unit) {
                        (Some(a), _) => a.to_string(),
                        (None, Some(u)) => format!("unit {u}"),
                        (None, None) => String::new(),
                    },
                    profile: m.profile.clone(),
                    seed: m.seed,
                })
                .collect();
            let shared = Arc::new(PortShared {
                name: name.clone(),
                config: port.clone(),
                meters,
                clock: clock.clone(),
                truth: truth.clone(),
                time_sets: time_sets.clone(),
                control_log: control_log.clone(),
            });
            let mut info = PortInfo {
                name: name.clone(),
                endpoint: endpoint.clone(),
                local_addr: None,
                device: None,
                meters: infos,
            };
            handle.shared.push(Arc::clone(&shared));
            let task = match &endpoint {
                Endpoint::Serial(path) => {
                    let settings = SerialSettings {
                        path: path.clone(),
                        baud: port.baud,
                        parity: match port.parity {
                            Parity::None => serial_port::Parity::None,
                            Parity::Even => serial_port::Parity::Even,
                            Parity::Odd => serial_port::Parity::Odd,
                        },
                        data_bits: port.data_bits,
                        stop_bits: port.stop_bits,
                        rs485: None,
                    };
                    let stream =
                        serial_port::open(&settings).map_err(|source| SimError::Serial {
                            port: name.clone(),
                            source,
                        })?;
                    info.device = Some(PathBuf::from(path));
                    tokio::spawn(port::serve_stream(stream, shared, stop_rx.clone()))
                }
                Endpoint::Pty { link } => {
                    let (master, device, keeper) = open_pty(&name, link.as_ref())?;
                    info.device = Some(device);
                    handle._ptys.push(keeper);
                    tokio::spawn(port::serve_stream(master, shared, stop_rx.clone()))
                }
                Endpoint::Tcp(address) | Endpoint::ModbusTcp(address) => {
                    let listener = TcpListener::bind(address.as_str())
                        .await
                        .map_err(|source| SimError::Bind {
                            port: name.clone(),
                            address: address.clone(),
                            source,
                        })?;
                    info.local_addr = listener.local_addr().ok();
                    if matches!(endpoint, Endpoint::Tcp(_)) {
                        tokio::spawn(port::serve_tcp(listener, shared, stop_rx.clone()))
                    } else {
                        tokio::spawn(modbus_tcp::serve(listener, shared, stop_rx.clone()))
                    }
                }
            };
            handle.tasks.push(task);
            handle.ports.push(info);
        }
        Ok(handle)
    }
}

/// Makes a pty pair: the meters' end (served here), the path of the gateway's end (the link
/// when one is asked for), and a keeper holding the gateway's end open.
fn open_pty(
    port: &str,
    link: Option<&PathBuf>,
) -> Result<(tokio_serial::SerialStream, PathBuf, PtyKeeper), SimError> {
    let fail = |why: String| SimError::Pty {
        port: port.to_owned(),
        why,
    };
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(|e| fail(e.to_string()))?;
    let path = tokio_serial::SerialPort::name(&slave)
        .map(PathBuf::from)
        .ok_or_else(|| fail("the pty has no device name".into()))?;
    // Hold the gateway's end with a plain descriptor (no lock, no TIOCEXCL) so the gateway can
    // open it by path, and the meters' end never sees EIO while no gateway is attached.
    let keep = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    drop(slave);
    let device = match link {
        Some(link) => {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(&path, link).map_err(|e| {
                fail(format!(
                    "cannot link {} to {}: {e}",
                    link.display(),
                    path.display()
                ))
            })?;
            link.clone()
        }
        None => path,
    };
    Ok((
        master,
        device,
        PtyKeeper {
            _slave: keep,
            link: link.cloned(),
        },
    ))
}
