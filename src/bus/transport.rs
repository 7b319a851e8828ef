//! The physical link of a bus: a serial port or a raw TCP stream to a serial device server.
//!
//! This module owns opening (with errors a technician understands: busy, missing, no
//! permission), writing, reading, and discarding stale input. It knows nothing about frames:
//! the exchange layer above decides what bytes mean. Modbus TCP buses do not use it (they go
//! through tokio-modbus in the meter driver layer).

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::config::{BusConfig, Parity, Rs485Config, TransportKind};

/// Settings to open a link.
#[derive(Debug, Clone)]
pub enum LinkSettings {
    /// A serial port.
    Serial {
        /// Device path.
        path: String,
        /// Baud rate.
        baud: u32,
        /// Parity.
        parity: Parity,
        /// Data bits.
        data_bits: u8,
        /// Stop bits.
        stop_bits: u8,
        /// Kernel RS-485 mode, when wanted.
        rs485: Option<Rs485Config>,
    },
    /// Raw TCP to a serial device server.
    Tcp {
        /// `host:port`.
        address: String,
    },
}

impl LinkSettings {
    /// The link settings of a configured bus (`None` for Modbus TCP buses).
    pub fn from_bus(bus: &BusConfig) -> Option<LinkSettings> {
        match bus.transport {
            TransportKind::Serial => Some(LinkSettings::Serial {
                path: bus.port.clone().unwrap_or_default(),
                baud: bus.baud,
                parity: bus.parity,
                data_bits: bus.data_bits,
                stop_bits: bus.stop_bits,
                rs485: bus.rs485.clone().filter(|r| r.enabled),
            }),
            TransportKind::Tcp => Some(LinkSettings::Tcp {
                address: bus.host.clone().unwrap_or_default(),
            }),
            TransportKind::ModbusTcp => None,
        }
    }

    /// Where the link goes, for messages.
    pub fn describe(&self) -> String {
        match self {
            LinkSettings::Serial {
                path,
                baud,
                parity,
                data_bits,
                stop_bits,
                ..
            } => {
                let p = match parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                format!("{path} {baud} {data_bits}{p}{stop_bits}")
            }
            LinkSettings::Tcp { address } => format!("tcp://{address}"),
        }
    }
}

/// Why a link could not be opened or used.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The device does not exist.
    #[error("{0}: no such serial port (check the cable/adapter and the path)")]
    NotFound(String),
    /// Another process holds the port.
    #[error("{0}: port is busy (another program, or a running meterd, has it open)")]
    Busy(String),
    /// No permission to open the port.
    #[error("{0}: permission denied (add the user to the dialout group)")]
    PermissionDenied(String),
    /// The port refused a setting.
    #[error("{what}: cannot apply setting: {why}")]
    Setting {
        /// Which port.
        what: String,
        /// The OS's reason.
        why: String,
    },
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

/// An open link.
#[derive(Debug)]
pub enum Link {
    /// A serial port.
    Serial(SerialStream),
    /// A TCP stream.
    Tcp(TcpStream),
}

impl Link {
    /// Opens a link; TCP connects within `connect_timeout`.
    pub async fn open(
        settings: &LinkSettings,
        connect_timeout: Duration,
    ) -> Result<Link, LinkError> {
        match settings {
            LinkSettings::Serial {
                path,
                baud,
                parity,
                data_bits,
                stop_bits,
                rs485,
            } => {
                if !std::path::Path::new(path).exists() {
                    return Err(LinkError::NotFound(path.clone()));
                }
                let builder = tokio_serial::new(path, *baud)
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .data_bits(match data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if *stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .flow_control(tokio_serial::FlowControl::None);
                let stream = builder
                    .open_native_async()
                    .map_err(|e| classify_serial_error(path, e))?;
                if let Some(rs) = rs485 {
                    rs485::enable(&stream, rs).map_err(|e| LinkError::Setting {
                        what: path.clone(),
                        why: format!("kernel RS-485 mode (TIOCSRS485): {e}"),
                    })?;
                }
                Ok(Link::Serial(stream))
            }
            LinkSettings::Tcp { address } => {
                let connect = TcpStream::connect(address.as_str());
                let stream = tokio::time::timeout(connect_timeout, connect)
                    .await
                    .map_err(|_| LinkError::Connect {
                        what: address.clone(),
                        why: format!("no answer within {connect_timeout:?}"),
                    })?
                    .map_err(|e| LinkError::Connect {
                        what: address.clone(),
                        why: e.to_string(),
                    })?;
                // Small request frames must leave at once, not wait for Nagle.
                stream.set_nodelay(true).map_err(|e| LinkError::Io {
                    what: address.clone(),
                    source: e,
                })?;
                Ok(Link::Tcp(stream))
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
        }
    }

    /// Reads what is available (waits for at least one byte). `Ok(0)` means the peer closed.
    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Serial(s) => s.read(buf).await,
            Link::Tcp(s) => s.read(buf).await,
        }
    }

    /// Throws away every byte already received and not yet read, without waiting; returns how
    /// many were thrown away (as far as they could be counted). Called before each request, so
    /// a late reply to an earlier request can never be taken for the next answer.
    pub fn discard_input(&mut self) -> io::Result<usize> {
        let mut scratch = [0u8; 256];
        let mut dropped = 0usize;
        match self {
            Link::Serial(s) => {
                // Count what the driver holds, then drop the kernel buffer.
                dropped += usize::try_from(s.bytes_to_read().unwrap_or(0)).unwrap_or(0);
                s.clear(tokio_serial::ClearBuffer::Input)
                    .map_err(io::Error::other)?;
                loop {
                    match s.try_read(&mut scratch) {
                        Ok(0) => break,
                        Ok(n) => dropped += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Link::Tcp(s) => loop {
                match s.try_read(&mut scratch) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection",
                        ));
                    }
                    Ok(n) => dropped += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            },
        }
        Ok(dropped)
    }
}

fn classify_serial_error(path: &str, e: tokio_serial::Error) -> LinkError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    // serialport reports a held flock and EBUSY as `NoDevice` too: look at the text first.
    if lower.contains("lock") || lower.contains("busy") {
        return LinkError::Busy(path.to_owned());
    }
    match e.kind {
        tokio_serial::ErrorKind::NoDevice => LinkError::NotFound(path.to_owned()),
        tokio_serial::ErrorKind::Io(io::ErrorKind::NotFound) => {
            LinkError::NotFound(path.to_owned())
        }
        tokio_serial::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
            LinkError::PermissionDenied(path.to_owned())
        }
        tokio_serial::ErrorKind::InvalidInput => LinkError::Setting {
            what: path.to_owned(),
            why: text,
        },
        _ => LinkError::Io {
            what: path.to_owned(),
            source: io::Error::other(text),
        },
    }
}

/// Kernel RS-485 mode. Written by hand: libc has the ioctl number but not the
/// `struct serial_rs485` layout, and no maintained crate wraps it for tokio-serial's fd.
mod rs485 {
    use std::io;
    use std::os::fd::AsRawFd;

    use tokio_serial::SerialStream;

    use crate::config::Rs485Config;

    const SER_RS485_ENABLED: u32 = 1 << 0;
    const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;
    const SER_RS485_RTS_AFTER_SEND: u32 = 1 << 2;

    /// `struct serial_rs485` from linux/serial.h (32 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct SerialRs485 {
        flags: u32,
        delay_rts_before_send: u32,
        delay_rts_after_send: u32,
        padding: [u32; 5],
    }

    /// Turns on kernel RS-485 direction control on the port.
    pub fn enable(stream: &SerialStream, cfg: &Rs485Config) -> io::Result<()> {
        let mut flags = SER_RS485_ENABLED;
        flags |= if cfg.rts_on_send {
            SER_RS485_RTS_ON_SEND
        } else {
            SER_RS485_RTS_AFTER_SEND
        };
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let mut conf = SerialRs485 {
            flags,
            delay_rts_before_send: ms(cfg.delay_before_send),
            delay_rts_after_send: ms(cfg.delay_after_send),
            ..Default::default()
        };
        // SAFETY: TIOCSRS485 takes a pointer to a `struct serial_rs485`, which `SerialRs485`
        // reproduces field for field (repr(C), 32 bytes); the fd is open for the call's duration.
        let rc = unsafe {
            libc::ioctl(
                stream.as_raw_fd(),
                libc::TIOCSRS485 as _,
                &mut conf as *mut SerialRs485,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
