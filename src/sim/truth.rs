//! The ground-truth log: one JSON line per reply the simulator sends.
//!
//! This module owns the line format and writing it (each line flushed, so a test or the HIL
//! suite can read the file while the simulator runs). It never decides what goes on the wire.
//!
//! A line: `{"time": "2026-11-27T11:00:01.234Z", "sim_time": "…", "port": "bus1",
//! "meter": "000000000001", "protocol": "dlt645-2007", "request": "68 … 16",
//! "response": "68 … 16", "framing": "rtu" | "dlt645" | "mbap-pdu", "faults": ["echo"],
//! "echo": "…" (only with the echo fault), "valid": true,
//! "values": [{"quantity": "voltage.l1", "value": "229.8", "unit": "V"}]}`. `valid` is false
//! when a fault broke the frame (corrupt byte, bad checksum): a correct reader must not
//! publish those values as good. `time` is the host's UTC time the reply's last byte was
//! written; `sim_time` the meter's simulated time the values were computed for.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use super::fault::FaultKind;
use super::meter::TruthValue;

/// One line of the log.
#[derive(Debug, Clone, Serialize)]
pub struct TruthLine<'a> {
    /// Host UTC time of sending, RFC 3339 with milliseconds.
    pub time: String,
    /// Simulated time the values belong to.
    pub sim_time: String,
    /// Port name.
    pub port: &'a str,
    /// Meter id.
    pub meter: &'a str,
    /// Protocol name.
    pub protocol: &'a str,
    /// `dlt645`, `rtu` or `mbap-pdu` (Modbus TCP: function + data only).
    pub framing: &'a str,
    /// The request as received (hex).
    pub request: String,
    /// The reply bytes sent, noise included, echo excluded (hex).
    pub response: String,
    /// The echoed request, when the echo fault fired (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<String>,
    /// Faults applied to this reply.
    pub faults: &'a [FaultKind],
    /// False when a fault broke the frame.
    pub valid: bool,
    /// The values the reply encodes.
    pub values: &'a [TruthValue],
}

/// An open ground-truth log.
#[derive(Debug)]
pub struct TruthLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl TruthLog {
    /// Creates (truncates) the log file.
    pub fn create(path: &Path) -> io::Result<TruthLog> {
        Ok(TruthLog {
            path: path.to_owned(),
            file: Mutex::new(File::create(path)?),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line; errors are returned, never panicked on.
    pub fn write(&self, line: &TruthLine<'_>) -> io::Result<()> {
        self.write_json(line)
    }

    /// Appends any serialisable value as one JSON line (the time-set log uses this too).
    pub fn write_json<T: serde::Serialize>(&self, line: &T) -> io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("truth log lock poisoned"))?;
        file.write_all(text.as_bytes())?;
        file.flush()
    }
}
