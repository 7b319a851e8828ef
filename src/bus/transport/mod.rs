//! The transports of a bus: a serial port, raw TCP to a serial device server, or Modbus TCP.
//!
//! This module owns the one interface the bus task uses, whatever the transport:
//! [`Transport`] opens, closes, describes itself and carries out one attempt of one request
//! ([`Transport::transact`]). Below it: [`serial`] and [`raw_tcp`] give the byte-stream
//! [`Link`] that [`super::exchange`] frames; [`modbus_tcp`] is a tokio-modbus client whose
//! tap keeps the evidence bytes. Opening errors say what a technician can act on (busy,
//! missing, no permission: [`crate::serial_port`]).
//!
//! It never retries, never sleeps between requests and never decides a meter's fate: timing,
//! retries and the late-reply guard belong to the bus task.
//!
//! A test can hand a byte-stream bus an in-memory link instead of its port ([`LinkOpener`],
//! through the bus task's options, never through the configuration): the fault-model run
//! (`tests/fault_model.rs`) connects buses to the simulator that way under a paused clock.

pub mod modbus_tcp;
pub mod raw_tcp;
pub mod serial;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_serial::SerialStream;

use super::exchange::{ExchangeError, ExchangeStats, ExchangeTiming, exchange};
use super::trace::FrameTap;
use crate::config::{BusConfig, TransportKind};
use crate::meter::contract::{Reply, Step};
use crate::serial_port::{SerialPortError, SerialSettings};
use modbus_tcp::{ModbusTcpClient, TcpFailure};

/// A byte stream that is neither a serial port nor a TCP socket: what a [`LinkOpener`] gives.
pub trait AttachedStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AttachedStream for T {}

/// A test seam: opens a byte-stream bus's link in memory instead of its port (called with
/// the bus's name at every open, a reopen included). The daemon never sets one; no setting of
/// the configuration file can.
#[derive(Clone)]
pub struct LinkOpener(Arc<OpenFn>);

/// What a [`LinkOpener`] calls: the bus's name in, a stream out.
type OpenFn = dyn Fn(&str) -> io::Result<Box<dyn AttachedStream>> + Send + Sync;

impl LinkOpener {
    /// An opener calling `open` with the bus's name.
    pub fn new(
        open: impl Fn(&str) -> io::Result<Box<dyn AttachedStream>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(open))
    }
}

impl std::fmt::Debug for LinkOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkOpener")
    }
}

/// Settings to open a byte-stream link.
#[derive(Debug, Clone)]
pub enum LinkSettings {
    /// A serial port.
    Serial(SerialSettings),
    /// Raw TCP to a serial device server.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A stream a test's [`LinkOpener`] hands over.
    Attached {
        /// The bus's name (what the opener is called with).
        bus: String,
        /// The opener.
        opener: LinkOpener,
    },
}

impl LinkSettings {
    /// The link settings of a configured bus (`None` for Modbus TCP buses).
    pub fn from_bus(bus: &BusConfig) -> Option<LinkSettings> {
        match bus.transport {
            TransportKind::Serial => Some(LinkSettings::Serial(serial::settings(bus))),
            TransportKind::Tcp => Some(LinkSettings::Tcp {
                address: bus.host.clone().unwrap_or_default(),
            }),
            TransportKind::ModbusTcp => None,
        }
    }

    /// Where the link goes, for messages.
    pub fn describe(&self) -> String {
        match self {
            LinkSettings::Serial(s) => s.describe(),
            LinkSettings::Tcp { address } => format!("tcp://{address}"),
            LinkSettings::Attached { bus, .. } => format!("attached://{bus}"),
        }
    }
}

/// Why a link could not be opened or used.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The serial port could not be opened (missing, busy, no permission, a setting).
    #[error(transparent)]
    Serial(#[from] SerialPortError),
    /// TCP connect failed or timed out.
    #[error("{what}: cannot connect: {why}")]
    Connect {
        /// Which address.
        what: String,
        /// The reason.
        why: String,
    },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// Which link.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// An open byte-stream link.
pub enum Link {
    /// A serial port.
    Serial(SerialStream),
    /// A TCP stream.
    Tcp(TcpStream),
    /// A stream a test's [`LinkOpener`] handed over.
    Attached(Box<dyn AttachedStream>),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Serial(s) => f.debug_tuple("Serial").field(s).finish(),
            Link::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Link::Attached(_) => f.write_str("Attached"),
        }
    }
}

impl Link {
    /// Opens a link; TCP connects within `connect_timeout`.
    pub async fn open(
        settings: &LinkSettings,
        connect_timeout: Duration,
    ) -> Result<Link, LinkError> {
        match settings {
            LinkSettings::Serial(s) => serial::open(s).map(Link::Serial),
            LinkSettings::Tcp { address } => raw_tcp::connect(address, connect_timeout)
                .await
                .map(Link::Tcp),
            LinkSettings::Attached { bus, opener } => {
                (opener.0)(bus)
                    .map(Link::Attached)
                    .map_err(|source| LinkError::Io {
                        what: settings.describe(),
                        source,
                    })
            }
        }
    }

    /// Writes all bytes and waits until the OS took them.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Serial(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Link::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Link::Attached(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Reads what is available (waits for at least one byte). `Ok(0)` means the peer closed.
    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Serial(s) => s.read(buf).await,
            Link::Tcp(s) => s.read(buf).await,
            Link::Attached(s) => s.read(buf).await,
        }
    }

    /// Throws away every byte already received and not yet read, without waiting; returns how
    /// many were thrown away (as far as they could be counted). Called before each request, so
    /// a late reply to an earlier request can never be taken for the next answer.
    pub fn discard_input(&mut self) -> io::Result<usize> {
        match self {
            Link::Serial(s) => serial::discard_input(s),
            Link::Tcp(s) => raw_tcp::discard_input(s),
            Link::Attached(s) => discard_attached(s.as_mut()),
        }
    }
}

/// Drops what an attached stream holds without waiting: reads until it would wait (polled
/// once with a waker that does nothing; the next real read registers its own). The peer
/// having closed is an error, as on TCP.
fn discard_attached(s: &mut dyn AttachedStream) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut scratch = [0u8; 256];
    let mut dropped = 0usize;
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *s).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the stream",
                ));
            }
            Poll::Ready(Ok(())) => dropped += buf.filled().len(),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(dropped),
        }
    }
}

/// The link of a bus, whatever its transport: what the bus task opens and sends through.
pub enum Transport {
    /// Serial port or raw TCP: our own framing through [`exchange`].
    Stream {
        /// How to open it.
        settings: LinkSettings,
        /// The open link.
        link: Option<Link>,
    },
    /// Modbus TCP through tokio-modbus.
    ModbusTcp {
        /// `host:port`.
        address: String,
        /// The open connection.
        client: Option<ModbusTcpClient>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("to", &self.describe())
            .field("open", &self.is_open())
            .finish()
    }
}

/// A reply to one attempt.
#[derive(Debug)]
pub struct Transacted {
    /// The verified reply.
    pub reply: Reply,
    /// Its bytes as received (the evidence).
    pub raw: Vec<u8>,
    /// When the exchange ended (for turnaround and silence).
    pub finished: Instant,
}

/// Why one attempt gave no reply.
#[derive(Debug)]
pub enum TransactError {
    /// No reply in time; the note says what came instead (may be empty).
    Timeout(String),
    /// Bytes kept coming until the exchange's absolute deadline (noise on the bus); the
    /// message says so, with the deadline.
    CutOff(String),
    /// The link failed or is not open; the bus closes it and reopens with backoff.
    Link(String),
}

/// One attempt: its result, and the wire counters when the transport frames itself.
#[derive(Debug)]
pub struct Attempted {
    /// The reply, or why there is none.
    pub result: Result<Transacted, TransactError>,
    /// The exchange's counters (byte-stream transports; `None` for Modbus TCP).
    pub stats: Option<ExchangeStats>,
}

impl Transport {
    /// The transport of a configured bus (not opened yet). With an `opener` (a test's), a
    /// byte-stream bus opens its link through it instead of its port; a Modbus TCP bus
    /// ignores it.
    pub fn for_bus(bus: &BusConfig, opener: Option<&LinkOpener>) -> Self {
        let settings = LinkSettings::from_bus(bus).map(|s| match opener {
            Some(opener) => LinkSettings::Attached {
                bus: bus.name.clone(),
                opener: opener.clone(),
            },
            None => s,
        });
        match settings {
            Some(settings) => Transport::Stream {
                settings,
                link: None,
            },
            None => Transport::ModbusTcp {
                address: bus.host.clone().unwrap_or_default(),
                client: None,
            },
        }
    }

    /// Whether the link is open.
    pub fn is_open(&self) -> bool {
        match self {
            Transport::Stream { link, .. } => link.is_some(),
            Transport::ModbusTcp { client, .. } => client.is_some(),
        }
    }

    /// Closes the link (dropping it).
    pub fn close(&mut self) {
        match self {
            Transport::Stream { link, .. } => *link = None,
            Transport::ModbusTcp { client, .. } => *client = None,
        }
    }

    /// Where the link goes, for messages.
    pub fn describe(&self) -> String {
        match self {
            Transport::Stream { settings, .. } => settings.describe(),
            Transport::ModbusTcp { address, .. } => format!("modbus-tcp://{address}"),
        }
    }

    /// True when a reply that missed its timeout can still arrive on this link (the late-reply
    /// guard applies); Modbus TCP replaces its connection after a timeout instead.
    pub fn keeps_late_replies(&self) -> bool {
        matches!(self, Transport::Stream { .. })
    }

    /// Opens the link; TCP connects within `connect_timeout`.
    pub async fn open(&mut self, connect_timeout: Duration) -> Result<(), String> {
        match self {
            Transport::Stream { settings, link } => {
                match Link::open(settings, connect_timeout).await {
                    Ok(l) => {
                        *link = Some(l);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Transport::ModbusTcp { address, client } => {
                ModbusTcpClient::connect(address, connect_timeout)
                    .await
                    .map(|c| *client = Some(c))
            }
        }
    }

    /// One attempt of `step`: sends `request` (the step's bytes with any preamble) and waits
    /// for the reply as `timing` allows.
    pub async fn transact(
        &mut self,
        step: &Step,
        request: &[u8],
        timing: ExchangeTiming,
        tap: &FrameTap,
    ) -> Attempted {
        let link_error = |why: &str| Attempted {
            result: Err(TransactError::Link(why.into())),
            stats: None,
        };
        match self {
            Transport::Stream { link, .. } => {
                let Some(link) = link.as_mut() else {
                    return link_error("not open");
                };
                let result = exchange(link, request, &step.framing, timing, tap).await;
                let stats = match &result {
                    Ok(x) => x.stats,
                    Err(e) => e.stats(),
                };
                let result = match result {
                    Ok(x) => Ok(Transacted {
                        reply: x.reply,
                        raw: x.raw,
                        finished: x.finished,
                    }),
                    Err(ExchangeError::Timeout {
                        cut_off: true,
                        waited,
                        stats,
                        ..
                    }) => Err(TransactError::CutOff(format!(
                        "reply not complete within {}: noise on the bus? ({} bytes received)",
                        humantime::format_duration(super::exchange::round_ms(waited)),
                        stats.rx_bytes
                    ))),
                    Err(ExchangeError::Timeout { partial, .. }) => {
                        Err(TransactError::Timeout(if partial.is_empty() {
                            String::new()
                        } else {
                            format!(" (received {} unusable bytes)", partial.len())
                        }))
                    }
                    Err(ExchangeError::Link { source, .. }) => {
                        Err(TransactError::Link(source.to_string()))
                    }
                };
                Attempted {
                    result,
                    stats: Some(stats),
                }
            }
            Transport::ModbusTcp { client: ctx, .. } => {
                let Some(client) = ctx.as_mut() else {
                    return link_error("not open");
                };
                let Some((unit, req)) = step.modbus.clone() else {
                    return link_error("not a Modbus request");
                };
                let r = client.call(unit, &req, timing.response_timeout, tap).await;
                let finished = Instant::now();
                let result = match r {
                    Ok((reply, raw)) => Ok(Transacted {
                        reply,
                        raw,
                        finished,
                    }),
                    Err(TcpFailure::Timeout) => {
                        // A late reply would poison the connection: start a fresh one.
                        *ctx = None;
                        Err(TransactError::Timeout(String::new()))
                    }
                    Err(TcpFailure::Link(e)) => Err(TransactError::Link(e)),
                };
                Attempted {
                    result,
                    stats: None,
                }
            }
        }
    }
}
