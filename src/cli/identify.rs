//! `meterd scan`'s identification step: for every meter that answered, send the reads
//! [`crate::meter::identify`] plans and print what they tell (identity items, the profile).
//!
//! This module only moves the steps over the scan's own link or Modbus TCP connection and
//! prints; what to read and what the answers mean belong to `meter::identify`.

use std::time::Duration;

use meter_protocols::dlt645::{Address, Version};

use crate::bus::exchange::{ExchangeError, ExchangeTiming, exchange};
use crate::bus::trace::FrameTap;
use crate::bus::transport::Link;
use crate::bus::transport::modbus_tcp::{ModbusTcpClient, TcpFailure};
use crate::config::Protocol;
use crate::meter::contract::{Framing, Reply, Step};
use crate::meter::identify::{
    Answer, Identity, ModbusIdentifier, dlt645_fact, dlt645_steps, modbus_step,
};

/// The wire the scan holds: a serial port or device server, or a Modbus TCP connection.
pub(crate) enum Wire<'a> {
    /// A link carrying DL/T 645 or Modbus RTU frames.
    Link {
        /// The link.
        link: &'a mut Link,
        /// The scan's timing.
        timing: ExchangeTiming,
    },
    /// A Modbus TCP connection (replaced by a new one after a timeout, so that a late reply
    /// is never taken for the next read's).
    ModbusTcp {
        /// The connection.
        client: &'a mut ModbusTcpClient,
        /// Where to reconnect.
        host: &'a str,
        /// Per-read timeout.
        timeout: Duration,
    },
}

impl Wire<'_> {
    /// Sends one step: the reply, `None` when none came, `Err` when the wire broke.
    async fn send(&mut self, step: &Step, tap: &FrameTap) -> Result<Option<Reply>, String> {
        match self {
            Wire::Link { link, timing } => {
                // Transceiver turnaround; also more than t3.5 at any Modbus baud rate.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut bytes = Vec::with_capacity(step.bytes.len() + 4);
                if matches!(step.framing, Framing::Dlt645 { .. }) {
                    bytes.extend_from_slice(&[0xFE; 4]);
                }
                bytes.extend_from_slice(&step.bytes);
                match exchange(link, &bytes, &step.framing, *timing, tap).await {
                    Ok(x) => Ok(Some(x.reply)),
                    Err(ExchangeError::Timeout { .. }) => Ok(None),
                    Err(ExchangeError::Link { source, .. }) => {
                        Err(format!("link failed: {source}"))
                    }
                }
            }
            Wire::ModbusTcp {
                client,
                host,
                timeout,
            } => {
                let Some((unit, request)) = &step.modbus else {
                    return Ok(None);
                };
                match client.call(*unit, request, *timeout, tap).await {
                    Ok((reply, _)) => Ok(Some(reply)),
                    Err(TcpFailure::Timeout) => {
                        **client = ModbusTcpClient::connect(host, Duration::from_secs(3)).await?;
                        Ok(None)
                    }
                    Err(TcpFailure::Link(e)) => Err(format!("link failed: {e}")),
                }
            }
        }
    }
}

/// Identifies the meter found at `address` (a DL/T 645 address or a Modbus unit id); `None`
/// when there is nothing to ask (not an address; DL/T 645-1997, which has no identity items).
pub(crate) async fn identify(
    wire: &mut Wire<'_>,
    protocol: Protocol,
    address: &str,
    modbus: &ModbusIdentifier,
    tap: &FrameTap,
) -> Result<Option<Identity>, String> {
    if protocol.is_dlt645() {
        let Ok(address) = address.parse::<Address>() else {
            return Ok(None);
        };
        let version = if protocol == Protocol::Dlt645_1997 {
            Version::V1997
        } else {
            Version::V2007
        };
        let steps = dlt645_steps(address, version);
        if steps.is_empty() {
            return Ok(None);
        }
        let mut identity = Identity::default();
        for step in steps {
            let reply = wire.send(&step, tap).await?;
            identity.facts.extend(dlt645_fact(reply.as_ref(), version));
        }
        return Ok(Some(identity));
    }
    let Ok(unit) = address.parse::<u8>() else {
        return Ok(None);
    };
    let mut answers = Vec::new();
    for request in modbus.requests() {
        let answer = match modbus_step(unit, &request) {
            Some(step) => Answer::from_reply(wire.send(&step, tap).await?.as_ref()),
            None => Answer::Nothing,
        };
        answers.push(answer);
    }
    Ok(Some(modbus.verdict(&answers)))
}

/// The identity as indented table lines under the meter's line; Modbus meters get a
/// `profile` line (the match, or "unknown" with the candidates).
pub(crate) fn lines(identity: &Identity, modbus: bool) -> String {
    let mut rows: Vec<(String, String)> = identity
        .facts
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect();
    if modbus {
        let profile = match (&identity.profile, identity.candidates.as_slice()) {
            (Some(p), _) => p.clone(),
            (None, []) => "unknown (answers; no known profile fits)".into(),
            (None, c) => format!("unknown (answers; candidates: {})", c.join(", ")),
        };
        rows.push(("profile".into(), profile));
    } else if rows.is_empty() {
        rows.push(("identity".into(), "none offered".into()));
    }
    let w = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(n, v)| format!("  {n:<w$}  {v}\n"))
        .collect()
}
