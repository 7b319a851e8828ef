//! DL/T 645-2007 and DL/T 645-1997: the Chinese multi-function electricity meter protocol.
//!
//! Frame: `FE×n | 68 | A0..A5 | 68 | C | L | DATA (each byte +0x33) | CS | 16`, multi-byte
//! fields low byte first, CS = sum mod 256 from the first `68` through the last data byte.
//! Both editions share the frame; they differ in function codes and in data identifiers
//! (4 bytes in 2007, 2 bytes in 1997). See `shared/notes/dlt645.md` for sources.
//!
//! Layers, each its own module:
//! - [`address`]: the 6-byte BCD meter address, wildcards and broadcast.
//! - [`control`]: the control byte (direction, abnormal, follow-up, function).
//! - [`frame`]: framing — scan a receive buffer, verify, encode; never delimits by `0x16`.
//! - [`request`] / [`response`]: typed commands and replies on top of frames.
//! - [`catalog`] / [`format`]: which quantity a data identifier holds and how its bytes decode.
//! - [`relay`]: fee control: remote control `1C`, identity authentication `03`, status word 3.
//! - [`freeze`]: settlement freezes: the identifiers of the n-th record, stamps, the stamp search.
//! - [`load_profile`]: the load profile (负荷记录): the given-time request `06000001` and its
//!   records.
//! - [`event`]: event counters and records (cover open, power down, clear, clock set,
//!   programming).
//! - [`time_sync`]: the broadcast time sync frame (`ss mm hh DD MM YY`, seconds first).

pub mod address;
pub mod catalog;
pub mod control;
pub mod event;
pub mod event_1997;
pub mod format;
pub mod frame;
pub mod freeze;
pub mod load_profile;
pub mod relay;
pub mod request;
pub mod response;
pub mod time_sync;

pub use address::{Address, FullAddressError};
pub use control::{ControlCode, Function};
pub use frame::{Dlt645Frame, FrameInspection, InspectError};
pub use request::{MeterDateTime, RelayCommand, Request, RequestError};
pub use response::{ErrorWord, Response, ResponseError, SecurityErrorWord, matches_request};

use std::fmt;

/// Which edition of the standard a meter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// DL/T 645-2007: 4-byte data identifiers, read = `11`.
    V2007,
    /// DL/T 645-1997: 2-byte data identifiers, read = `01`.
    V1997,
}

impl Version {
    /// The protocol name used in the MQTT contract and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Version::V2007 => "dlt645-2007",
            Version::V1997 => "dlt645-1997",
        }
    }

    /// Width of a data identifier on the wire.
    pub const fn di_len(self) -> usize {
        match self {
            Version::V2007 => 4,
            Version::V1997 => 2,
        }
    }
}

/// A data identifier (数据标识): which item a read or write is about.
///
/// Written big-endian in documents (`00010000`, `9010`), sent DI0 first on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataIdentifier {
    /// A DL/T 645-2007 identifier, `DI3 DI2 DI1 DI0` as a big-endian `u32`.
    V2007(u32),
    /// A DL/T 645-1997 identifier, `DI1 DI0` as a big-endian `u16`.
    V1997(u16),
}

impl DataIdentifier {
    /// The edition this identifier belongs to.
    pub const fn version(self) -> Version {
        match self {
            DataIdentifier::V2007(_) => Version::V2007,
            DataIdentifier::V1997(_) => Version::V1997,
        }
    }

    /// The identifier as it goes on the wire before masking: DI0 first.
    pub fn to_wire(self) -> ([u8; 4], usize) {
        match self {
            DataIdentifier::V2007(v) => (v.to_le_bytes(), 4),
            DataIdentifier::V1997(v) => {
                let b = v.to_le_bytes();
                ([b[0], b[1], 0, 0], 2)
            }
        }
    }

    /// Reads an identifier of `version` from the first bytes of unmasked data (DI0 first).
    pub fn from_wire(version: Version, data: &[u8]) -> Option<Self> {
        match version {
            Version::V2007 => {
                let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
                Some(DataIdentifier::V2007(u32::from_le_bytes(b)))
            }
            Version::V1997 => {
                let b: [u8; 2] = data.get(..2)?.try_into().ok()?;
                Some(DataIdentifier::V1997(u16::from_le_bytes(b)))
            }
        }
    }

    /// Parses the document form: 8 hex digits for 2007, 4 for 1997.
    pub fn parse(s: &str) -> Option<Self> {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match s.len() {
            8 => u32::from_str_radix(s, 16).ok().map(DataIdentifier::V2007),
            4 => u16::from_str_radix(s, 16).ok().map(DataIdentifier::V1997),
            _ => None,
        }
    }
}

impl fmt::Display for DataIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataIdentifier::V2007(v) => write!(f, "{v:08X}"),
            DataIdentifier::V1997(v) => write!(f, "{v:04X}"),
        }
    }
}

/// The offset added to every data byte on the wire (and removed on receipt).
pub const DATA_OFFSET: u8 = 0x33;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn di_wire_order_is_di0_first() {
        let di = DataIdentifier::parse("00010000").unwrap();
        assert_eq!(di.to_wire(), ([0x00, 0x00, 0x01, 0x00], 4));
        assert_eq!(
            DataIdentifier::from_wire(Version::V2007, &[0, 0, 1, 0]),
            Some(di)
        );
        let di97 = DataIdentifier::parse("9010").unwrap();
        assert_eq!(di97.to_wire().0[..2], [0x10, 0x90]);
        assert_eq!(
            DataIdentifier::from_wire(Version::V1997, &[0x10, 0x90]),
            Some(di97)
        );
        assert_eq!(di97.to_string(), "9010");
        assert_eq!(
            DataIdentifier::parse("0201ff00").unwrap().to_string(),
            "0201FF00"
        );
        assert_eq!(DataIdentifier::parse("123"), None);
        assert_eq!(DataIdentifier::parse("+1234567"), None);
    }
}
