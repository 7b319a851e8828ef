//! Raw TCP to a serial device server: the bus's bytes go through a TCP stream unchanged.
//!
//! It owns connecting (within a timeout, Nagle off) and discarding stale input. It never
//! frames bytes: [`super::super::exchange`] does, as on a serial port.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use super::LinkError;

/// Connects to `address` (`host:port`) within `connect_timeout`.
pub(super) async fn connect(
    address: &str,
    connect_timeout: Duration,
) -> Result<TcpStream, LinkError> {
    let connect = TcpStream::connect(address);
    let stream = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| LinkError::Connect {
            what: address.to_owned(),
            why: format!("no answer within {connect_timeout:?}"),
        })?
        .map_err(|e| LinkError::Connect {
            what: address.to_owned(),
            why: e.to_string(),
        })?;
    // Small request frames must leave at once, not wait for Nagle.
    stream.set_nodelay(true).map_err(|e| LinkError::Io {
        what: address.to_owned(),
        source: e,
    })?;
    Ok(stream)
}

/// Drops what was received and not yet read; the peer having closed is an error.
pub(super) fn discard_input(s: &mut TcpStream) -> io::Result<usize> {
    let mut scratch = [0u8; 256];
    let mut dropped = 0usize;
    loop {
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
    }
    Ok(dropped)
}
