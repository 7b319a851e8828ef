//! Opening a serial port with errors a technician understands.
//!
//! This leaf owns the tokio-serial builder (baud, parity, data and stop bits, no flow
//! control), kernel RS-485 direction control (the `TIOCSRS485` ioctl), and the classification
//! of open failures into what a technician can act on: missing, busy, no permission, a
//! refused setting. It has its own small [`SerialSettings`] so that it imports nothing of the
//! crate: the bus converts its configuration into them, the simulator its own.
//!
//! It never reads, writes or frames bytes (the bus's transports and the simulator do), and
//! never retries an open.

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// Kernel RS-485 direction control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rs485 {
    /// RTS level while sending (true = high).
    pub rts_on_send: bool,
    /// Delay after raising RTS before the first bit.
    pub delay_before_send: Duration,
    /// Delay after the last bit before dropping RTS.
    pub delay_after_send: Duration,
}

/// How to open a serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path.
    pub path: String,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits (5 to 8; anything else is 8).
    pub data_bits: u8,
    /// Stop bits (2, or else 1).
    pub stop_bits: u8,
    /// Kernel RS-485 mode, when wanted.
    pub rs485: Option<Rs485>,
}

impl SerialSettings {
    /// The port and its line settings, for messages: `/dev/ttyUSB0 2400 8E1`.
    pub fn describe(&self) -> String {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!(
            "{} {} {}{p}{}",
            self.path, self.baud, self.data_bits, self.stop_bits
        )
    }
}

/// Why a serial port could not be opened.
#[derive(Debug, Error)]
pub enum SerialPortError {
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
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// Which port.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Opens the port `settings` describe (inside a tokio runtime), RS-485 mode included.
pub fn open(settings: &SerialSettings) -> Result<SerialStream, SerialPortError> {
    let path = &settings.path;
    if !std::path::Path::new(path).exists() {
        return Err(SerialPortError::NotFound(path.clone()));
    }
    let builder = tokio_serial::new(path, settings.baud)
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(match settings.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .stop_bits(if settings.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(tokio_serial::FlowControl::None);
    let stream = builder.open_native_async().map_err(|e| classify(path, e))?;
    if let Some(rs) = &settings.rs485 {
        rs485::enable(&stream, rs).map_err(|e| SerialPortError::Setting {
            what: path.clone(),
            why: format!("kernel RS-485 mode (TIOCSRS485): {e}"),
        })?;
    }
    Ok(stream)
}

fn classify(path: &str, e: tokio_serial::Error) -> SerialPortError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    // serialport reports a held flock and EBUSY as `NoDevice` too: look at the text first.
    if lower.contains("lock") || lower.contains("busy") {
        return SerialPortError::Busy(path.to_owned());
    }
    match e.kind {
        tokio_serial::ErrorKind::NoDevice => SerialPortError::NotFound(path.to_owned()),
        tokio_serial::ErrorKind::Io(io::ErrorKind::NotFound) => {
            SerialPortError::NotFound(path.to_owned())
        }
        tokio_serial::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
            SerialPortError::PermissionDenied(path.to_owned())
        }
        tokio_serial::ErrorKind::InvalidInput => SerialPortError::Setting {
            what: path.to_owned(),
            why: text,
        },
        _ => SerialPortError::Io {
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

    use super::Rs485;

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
    pub fn enable(stream: &SerialStream, cfg: &Rs485) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_port_says_so() {
        let settings = SerialSettings {
            path: "/dev/meterd-no-such-port".into(),
            baud: 2400,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
            rs485: None,
        };
        assert_eq!(settings.describe(), "/dev/meterd-no-such-port 2400 8E1");
        let e = open(&settings).map(|_| ()).unwrap_err();
        assert!(matches!(e, SerialPortError::NotFound(_)), "{e}");
    }
}
