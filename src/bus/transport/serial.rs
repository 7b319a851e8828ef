//! A bus's serial port: its settings from the bus configuration, opening through
//! [`crate::serial_port`], and discarding stale input.
//!
//! It owns the conversion from configuration types to [`SerialSettings`] (the leaf that opens
//! ports knows no configuration). It never frames bytes: [`super::super::exchange`] does.

use std::io;

use tokio_serial::{SerialPort, SerialStream};

use super::LinkError;
use crate::config::{BusConfig, Parity as ConfigParity, Rs485Config};
use crate::serial_port::{self, Parity, Rs485, SerialSettings};

impl From<ConfigParity> for Parity {
    fn from(p: ConfigParity) -> Self {
        match p {
            ConfigParity::None => Parity::None,
            ConfigParity::Even => Parity::Even,
            ConfigParity::Odd => Parity::Odd,
        }
    }
}

impl From<&Rs485Config> for Rs485 {
    fn from(r: &Rs485Config) -> Self {
        Rs485 {
            rts_on_send: r.rts_on_send,
            delay_before_send: r.delay_before_send,
            delay_after_send: r.delay_after_send,
        }
    }
}

/// The serial settings of a configured serial bus (RS-485 mode only when enabled).
pub fn settings(bus: &BusConfig) -> SerialSettings {
    SerialSettings {
        path: bus.port.clone().unwrap_or_default(),
        baud: bus.baud,
        parity: bus.parity.into(),
        data_bits: bus.data_bits,
        stop_bits: bus.stop_bits,
        rs485: bus.rs485.as_ref().filter(|r| r.enabled).map(Rs485::from),
    }
}

/// Opens the port.
pub(super) fn open(settings: &SerialSettings) -> Result<SerialStream, LinkError> {
    Ok(serial_port::open(settings)?)
}

/// Drops what the driver and the kernel hold; returns how many bytes (as far as counted).
pub(super) fn discard_input(s: &mut SerialStream) -> io::Result<usize> {
    let mut scratch = [0u8; 256];
    // Count what the driver holds, then drop the kernel buffer.
    let mut dropped = usize::try_from(s.bytes_to_read().unwrap_or(0)).unwrap_or(0);
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
    Ok(dropped)
}
