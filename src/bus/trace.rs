//! The frame trace: every byte on the wire, both ways, for technicians.
//!
//! A [`FrameTap`] is handed to each exchange. It logs each frame in hex at `trace` level under
//! the bus's and meter's tracing span, and, when someone watches (`meterd trace`, the live
//! trace of the status service), sends a [`FrameEvent`] on a broadcast channel. With nobody
//! watching it costs one atomic load per frame. It never blocks the bus: a slow watcher
//! loses events (and is told how many), the bus does not wait.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::hex_input::to_hex;
use crate::meter::control::redact_secrets;

/// The note of a sent frame traced with its password and operator code zeroed.
pub const REDACTED_NOTE: &str = "password and operator code redacted (shown as zeros)";
use crate::meter::explain::FrameProtocol;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Gateway to meter.
    Tx,
    /// Meter to gateway: a verified reply.
    Rx,
    /// Meter to gateway: bytes that were skipped (noise, bad checksum, foreign frame, partial).
    RxUnusable,
    /// Not bytes: a remark (stale input discarded, retry, reopen).
    Note,
}

impl Direction {
    /// Short label for logs: `tx`, `rx`, `rx?`, `--`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
            Direction::RxUnusable => "rx?",
            Direction::Note => "--",
        }
    }
}

/// One traced frame.
#[derive(Debug, Clone)]
pub struct FrameEvent {
    /// When it was seen.
    pub at: SystemTime,
    /// Bus name.
    pub bus: Arc<str>,
    /// Meter id, when the bytes belong to one meter's transaction.
    pub meter: Option<Arc<str>>,
    /// Which way.
    pub direction: Direction,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Why bytes were skipped, or the remark.
    pub note: String,
    /// How to read the bytes: `Auto` (detect) for the byte-stream buses, whose frames carry
    /// their own protocol's marks; `ModbusTcp` for a Modbus TCP connection, whose MBAP frames
    /// would otherwise be taken for broken RTU frames.
    pub protocol: FrameProtocol,
}

/// Where an exchange reports its frames.
#[derive(Debug, Clone)]
pub struct FrameTap {
    bus: Arc<str>,
    meter: Option<Arc<str>>,
    sender: Option<broadcast::Sender<FrameEvent>>,
}

impl FrameTap {
    /// A tap for `bus`, sending to `sender` when given.
    pub fn new(bus: &str, sender: Option<broadcast::Sender<FrameEvent>>) -> Self {
        Self {
            bus: Arc::from(bus),
            meter: None,
            sender,
        }
    }

    /// The same tap, for one meter's transactions.
    pub fn for_meter(&self, meter: &str) -> Self {
        Self {
            bus: self.bus.clone(),
            meter: Some(Arc::from(meter)),
            sender: self.sender.clone(),
        }
    }

    /// A tap that only logs.
    pub fn silent(bus: &str) -> Self {
        Self::new(bus, None)
    }

    fn emit(&self, direction: Direction, bytes: &[u8], note: &str) {
        self.emit_as(direction, bytes, note, FrameProtocol::Auto);
    }

    fn emit_as(&self, direction: Direction, bytes: &[u8], note: &str, protocol: FrameProtocol) {
        tracing::trace!(dir = direction.label(), hex = %to_hex(bytes), note, "frame");
        if let Some(tx) = self.sender.as_ref().filter(|tx| tx.receiver_count() > 0) {
            // A send error only means every watcher left meanwhile; the bus goes on.
            let _ = tx.send(FrameEvent {
                at: crate::clock::now(),
                bus: self.bus.clone(),
                meter: self.meter.clone(),
                direction,
                bytes: bytes.to_vec(),
                note: note.to_owned(),
                protocol,
            });
        }
    }

    /// A frame sent or received. A sent DL/T 645 frame that carries a password or operator
    /// code (remote control `1C`, identity authentication `03`, writes, resets) is traced
    /// with those bytes zeroed and its checksum recomputed
    /// ([`crate::meter::control::redact_secrets`]), and noted as redacted: credentials never
    /// reach a log or a watcher.
    pub fn frame(&self, direction: Direction, bytes: &[u8]) {
        if direction == Direction::Tx
            && let std::borrow::Cow::Owned(shown) = redact_secrets(bytes)
        {
            self.emit(direction, &shown, REDACTED_NOTE);
            return;
        }
        self.emit(direction, bytes, "");
    }

    /// A Modbus TCP frame (MBAP header, then the PDU) sent or received.
    pub fn mbap_frame(&self, direction: Direction, bytes: &[u8]) {
        self.emit_as(direction, bytes, "", FrameProtocol::ModbusTcp);
    }

    /// Bytes skipped on receive, with the reason. An echo of a request that carries
    /// credentials is redacted like the request itself.
    pub fn skipped(&self, bytes: &[u8], reason: &str) {
        self.emit(Direction::RxUnusable, &redact_secrets(bytes), reason);
    }

    /// A remark.
    pub fn note(&self, text: &str) {
        self.emit(Direction::Note, &[], text);
    }
}
