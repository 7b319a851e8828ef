//! Typed DL/T 645 replies (meter → master) on top of [`Dlt645Frame`].
//!
//! This module owns the data-field layout of each reply: [`Response::from_frame`] parses what a
//! meter sent, [`Response::to_frame`] builds what the simulator sends, [`ErrorWord`] and
//! [`SecurityErrorWord`] name the bits of an abnormal reply, and [`matches_request`] tells
//! whether a frame answers a given request. It never decodes the value bytes after a DI (that is
//! [`super::format`]) and never keeps state across frames: collecting follow-up frames is the
//! caller's job.

use std::fmt;

use super::address::Address;
use super::control::{ControlCode, Function};
use super::frame::Dlt645Frame;
use super::{DataIdentifier, Version};

/// The one-byte error word (ERR) of an abnormal reply (`C | 0xC0`, L = 1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorWord(pub u8);

const ERROR_BITS: [&str; 8] = [
    "other error",
    "no requested data",
    "password error/unauthorised",
    "baud rate cannot be changed",
    "too many year time zones",
    "too many day time segments",
    "too many tariffs",
    "reserved bit 7",
];

const SECURITY_BITS: [&str; 8] = [
    "other error",
    "repeated top-up",
    "ESAM verification failed",
    "identity authentication failed",
    "customer number mismatch",
    "top-up count error",
    "purchase exceeds hoarding limit",
    "reserved bit 7",
];

/// The names in `table` of the bits set in `byte`, low bit first.
fn set_bits(byte: u8, table: &'static [&'static str; 8]) -> impl Iterator<Item = &'static str> {
    table
        .iter()
        .enumerate()
        .filter(move |(bit, _)| byte & (1u8 << bit) != 0)
        .map(|(_, name)| *name)
}

impl ErrorWord {
    /// Bit 0.
    pub const OTHER: u8 = 0x01;
    /// Bit 1: no requested data / unknown DI.
    pub const NO_DATA: u8 = 0x02;
    /// Bit 2: password error / unauthorised.
    pub const PASSWORD: u8 = 0x04;
    /// Bit 3: baud rate cannot be changed.
    pub const BAUD: u8 = 0x08;

    /// The names of the set bits, low bit first (e.g. `"no requested data"`).
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        set_bits(self.0, &ERROR_BITS)
    }
}

impl fmt::Debug for ErrorWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorWord({:02X})", self.0)
    }
}

impl fmt::Display for ErrorWord {
    /// `02 (no requested data)`; several reasons are joined with `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X} (", self.0)?;
        for (i, r) in self.reasons().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(r)?;
        }
        if self.0 == 0 {
            f.write_str("no bit set")?;
        }
        f.write_str(")")
    }
}

/// The two-byte security error word of a prepaid meter's abnormal reply (L = 2), wire order.
///
/// Only the second byte's bits are documented (by one vendor source); the first byte is kept
/// as received and named bit by bit with [`ErrorWord`]'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecurityErrorWord(pub [u8; 2]);

impl SecurityErrorWord {
    /// The names of the set bits: first byte as an [`ErrorWord`], then the second byte's
    /// security reasons (e.g. `"ESAM verification failed"`).
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        let [first, second] = self.0;
        set_bits(first, &ERROR_BITS).chain(set_bits(second, &SECURITY_BITS))
    }
}

/// A typed DL/T 645 reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// Normal read reply (`91`/`B1`, 1997 `81`/`A1`).
    ReadData {
        /// The item read.
        di: DataIdentifier,
        /// The value bytes after the DI (unmasked, undecoded).
        payload: Vec<u8>,
        /// D5: more data in follow-up frames.
        more_follows: bool,
    },
    /// Follow-up read reply (`92`/`B2`, 1997 `82`/`A2`): `DI + data + SEQ` (1997: no SEQ).
    ReadFollowUp {
        /// The item read.
        di: DataIdentifier,
        /// The value bytes between the DI and SEQ.
        payload: Vec<u8>,
        /// Frame sequence number (0 for 1997).
        seq: u8,
        /// D5: more data in further frames.
        more_follows: bool,
    },
    /// Read-address reply (`93`, L = 6).
    Address(Address),
    /// Write data accepted (`94`, 1997 `84`).
    WriteOk,
    /// Write address accepted (`95`, 1997 `8A`).
    WriteAddressOk,
    /// Freeze accepted (`96`).
    FreezeOk,
    /// Baud rate change accepted (`97`, 1997 `8C`) with the echoed rate byte Z.
    BaudOk(u8),
    /// Password changed (`98`, 1997 `8F`): the new `PA P0 P1 P2`.
    PasswordChanged([u8; 4]),
    /// Maximum demand reset done (`99`, 1997 `90`).
    MaxDemandResetOk,
    /// Meter reset done (`9A`).
    MeterResetOk,
    /// Event reset done (`9B`).
    EventResetOk,
    /// Remote control accepted (`9C`).
    RelayOk,
    /// A normal reply to a function whose data this crate does not model (security
    /// authentication, 1997 re-read), kept as raw unmasked data.
    Other {
        /// The function answered.
        function: Function,
        /// The data field.
        data: Vec<u8>,
    },
    /// Abnormal reply (`C | 0xC0`, L = 1).
    Abnormal {
        /// The function that failed.
        function: Function,
        /// The error word.
        error: ErrorWord,
    },
    /// Prepaid meter's abnormal reply with a two-byte security error word (L = 2).
    SecurityAbnormal {
        /// The function that failed.
        function: Function,
        /// The error word.
        error: SecurityErrorWord,
    },
}

/// Why a frame is not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// D7 is clear.
    #[error("control 0x{control:02X} is a request (D7=0), expected a response")]
    NotAResponse {
        /// The control byte.
        control: u8,
    },
    /// The function code means nothing in this edition.
    #[error("control 0x{control:02X}: function code 0x{code:02X} is not defined in {edition}", edition = version.name())]
    UnknownFunction {
        /// The control byte.
        control: u8,
        /// D4..D0.
        code: u8,
        /// The edition asked for.
        version: Version,
    },
    /// The function is never answered (broadcast time sync).
    #[error("control 0x{control:02X}: {function} is never answered")]
    NoReplyExpected {
        /// The control byte.
        control: u8,
        /// The function.
        function: Function,
    },
    /// The data length does not fit the reply.
    #[error("control 0x{control:02X} ({function}): expected L={expected}, found L={found}")]
    BadLength {
        /// The control byte.
        control: u8,
        /// The function.
        function: Function,
        /// The allowed length(s).
        expected: &'static str,
        /// The data length found.
        found: usize,
    },
}

/// Whether `frame` answers a request with `req_function` sent to `req_addr`: the address
/// matches (AA wildcards in the request match anything; broadcast requests match nothing),
/// D7 is set and the function code is the same.
pub fn matches_request(req_addr: Address, req_function: Function, frame: &Dlt645Frame) -> bool {
    req_addr.accepts_reply_from(frame.address)
        && frame.control.is_response()
        && frame.control.code() == req_function.code()
}

impl Response {
    /// Parses a reply frame of `version`.
    pub fn from_frame(frame: &Dlt645Frame, version: Version) -> Result<Response, ResponseError> {
        let c = frame.control;
        let control = c.byte();
        if !c.is_response() {
            return Err(ResponseError::NotAResponse { control });
        }
        let code = c.code();
        let function =
            Function::from_code(version, code).ok_or(ResponseError::UnknownFunction {
                control,
                code,
                version,
            })?;
        let d = frame.data.as_slice();
        let n = d.len();
        let bad = |expected| ResponseError::BadLength {
            control,
            function,
            expected,
            found: n,
        };
        if c.is_abnormal() {
            return match d {
                [e] => Ok(Response::Abnormal {
                    function,
                    error: ErrorWord(*e),
                }),
                [a, b] => Ok(Response::SecurityAbnormal {
                    function,
                    error: SecurityErrorWord([*a, *b]),
                }),
                _ => Err(bad("1 or 2")),
            };
        }
        let di_len = version.di_len();
        let empty = |r: Response| if n == 0 { Ok(r) } else { Err(bad("0")) };
        match function {
            Function::ReadData | Function::ReadDataV1997 => {
                let di = DataIdentifier::from_wire(version, d).ok_or_else(|| {
                    bad(if di_len == 4 {
                        "4 or more"
                    } else {
                        "2 or more"
                    })
                })?;
                Ok(Response::ReadData {
                    di,
                    payload: d.get(di_len..).unwrap_or(&[]).to_vec(),
                    more_follows: c.more_follows(),
                })
            }
            Function::ReadFollowUp => {
                let di = DataIdentifier::from_wire(version, d).ok_or_else(|| bad("5 or more"))?;
                let (Some(&seq), Some(payload)) = (d.last(), d.get(4..n.saturating_sub(1))) else {
                    return Err(bad("5 or more"));
                };
                Ok(Response::ReadFollowUp {
                    di,
                    payload: payload.to_vec(),
                    seq,
                    more_follows: c.more_follows(),
                })
            }
            Function::ReadFollowUpV1997 => {
                let di = DataIdentifier::from_wire(version, d).ok_or_else(|| bad("2 or more"))?;
                Ok(Response::ReadFollowUp {
                    di,
                    payload: d.get(2..).unwrap_or(&[]).to_vec(),
                    seq: 0,
                    more_follows: c.more_follows(),
                })
            }
            Function::ReadAddress => {
                let a: [u8; 6] = d.try_into().map_err(|_| bad("6"))?;
                Ok(Response::Address(Address::from_wire(a)))
            }
            Function::WriteData | Function::WriteDataV1997 => empty(Response::WriteOk),
            Function::WriteAddress | Function::WriteAddressV1997 => empty(Response::WriteAddressOk),
            Function::Freeze => empty(Response::FreezeOk),
            Function::ChangeBaud | Function::ChangeBaudV1997 => match d {
                [z] => Ok(Response::BaudOk(*z)),
                _ => Err(bad("1")),
            },
            Function::ChangePassword | Function::ChangePasswordV1997 => {
                let p: [u8; 4] = d.try_into().map_err(|_| bad("4"))?;
                Ok(Response::PasswordChanged(p))
            }
            Function::MaxDemandReset | Function::MaxDemandResetV1997 => {
                empty(Response::MaxDemandResetOk)
            }
            Function::MeterReset => empty(Response::MeterResetOk),
            Function::EventReset => empty(Response::EventResetOk),
            Function::RelayControl => empty(Response::RelayOk),
            Function::Security | Function::ReReadV1997 => Ok(Response::Other {
                function,
                data: d.to_vec(),
            }),
            Function::BroadcastTime | Function::BroadcastTimeV1997 => {
                Err(ResponseError::NoReplyExpected { control, function })
            }
        }
    }

    /// The function this reply answers, in `version` (the DI or the carried function wins
    /// where the reply has one).
    pub fn function(&self, version: Version) -> Function {
        let pick = |f07, f97| if version == Version::V1997 { f97 } else { f07 };
        let by_di = |di: &DataIdentifier, f07, f97| {
            if di.version() == Version::V1997 {
                f97
            } else {
                f07
            }
        };
        match self {
            Response::ReadData { di, .. } => by_di(di, Function::ReadData, Function::ReadDataV1997),
            Response::ReadFollowUp { di, .. } => {
                by_di(di, Function::ReadFollowUp, Function::ReadFollowUpV1997)
            }
            Response::Address(_) => Function::ReadAddress,
            Response::WriteOk => pick(Function::WriteData, Function::WriteDataV1997),
            Response::WriteAddressOk => pick(Function::WriteAddress, Function::WriteAddressV1997),
            Response::FreezeOk => Function::Freeze,
            Response::BaudOk(_) => pick(Function::ChangeBaud, Function::ChangeBaudV1997),
            Response::PasswordChanged(_) => {
                pick(Function::ChangePassword, Function::ChangePasswordV1997)
            }
            Response::MaxDemandResetOk => {
                pick(Function::MaxDemandReset, Function::MaxDemandResetV1997)
            }
            Response::MeterResetOk => Function::MeterReset,
            Response::EventResetOk => Function::EventReset,
            Response::RelayOk => Function::RelayControl,
            Response::Other { function, .. }
            | Response::Abnormal { function, .. }
            | Response::SecurityAbnormal { function, .. } => *function,
        }
    }

    /// The frame a meter at `address` sends for this reply (the simulator's side).
    pub fn to_frame(&self, address: Address, version: Version) -> Dlt645Frame {
        let function = self.function(version);
        let di_bytes = |di: &DataIdentifier| {
            let (wire, n) = di.to_wire();
            wire.get(..n).unwrap_or(&[]).to_vec()
        };
        let (abnormal, more, data) = match self {
            Response::ReadData {
                di,
                payload,
                more_follows,
            } => {
                let mut d = di_bytes(di);
                d.extend_from_slice(payload);
                (false, *more_follows, d)
            }
            Response::ReadFollowUp {
                di,
                payload,
                seq,
                more_follows,
            } => {
                let mut d = di_bytes(di);
                d.extend_from_slice(payload);
                if di.version() == Version::V2007 {
                    d.push(*seq);
                }
                (false, *more_follows, d)
            }
            Response::Address(a) => (false, false, a.to_wire().to_vec()),
            Response::BaudOk(z) => (false, false, vec![*z]),
            Response::PasswordChanged(p) => (false, false, p.to_vec()),
            Response::WriteOk
            | Response::WriteAddressOk
            | Response::FreezeOk
            | Response::MaxDemandResetOk
            | Response::MeterResetOk
            | Response::EventResetOk
            | Response::RelayOk => (false, false, Vec::new()),
            Response::Other { data, .. } => (false, false, data.clone()),
            Response::Abnormal { error, .. } => (true, false, vec![error.0]),
            Response::SecurityAbnormal { error, .. } => (true, false, error.0.to_vec()),
        };
        Dlt645Frame::new(
            address,
            ControlCode::response(function, abnormal, more),
            data,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Scan;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    fn di(s: &str) -> DataIdentifier {
        DataIdentifier::parse(s).unwrap()
    }

    /// Parses hand-checked bytes, compares, and encodes back.
    fn check(bytes: &str, version: Version, expected: Response) {
        let Scan::Frame { frame, .. } = Dlt645Frame::scan(&hex(bytes)) else {
            panic!("scan {bytes}");
        };
        assert_eq!(
            Response::from_frame(&frame, version).as_ref(),
            Ok(&expected),
            "{bytes}"
        );
        assert_eq!(
            expected.to_frame(frame.address, version).to_bytes(0),
            hex(bytes)
        );
    }

    #[test]
    fn every_2007_reply_kind() {
        let v = Version::V2007;
        let value = vec![0x76, 0x17, 0x03, 0x00];
        #[rustfmt::skip]
        let cases = [
            ("68 29 25 07 07 21 20 68 91 08 33 33 34 33 A9 4A 36 33 2F 16",
             Response::ReadData { di: di("00010000"), payload: value.clone(), more_follows: false }),
            ("68 29 25 07 07 21 20 68 B1 08 33 33 34 33 A9 4A 36 33 4F 16",
             Response::ReadData { di: di("00010000"), payload: value.clone(), more_follows: true }),
            ("68 29 25 07 07 21 20 68 92 09 33 33 34 33 A9 4A 36 33 35 66 16",
             Response::ReadFollowUp { di: di("00010000"), payload: value, seq: 2, more_follows: false }),
            ("68 29 25 07 07 21 20 68 93 06 5C 58 3A 3A 54 53 D5 16",
             Response::Address("202107072529".parse().unwrap())),
            ("68 29 25 07 07 21 20 68 94 00 01 16", Response::WriteOk),
            ("68 29 25 07 07 21 20 68 95 00 02 16", Response::WriteAddressOk),
            ("68 29 25 07 07 21 20 68 96 00 03 16", Response::FreezeOk),
            ("68 29 25 07 07 21 20 68 97 01 53 58 16", Response::BaudOk(0x20)),
            ("68 29 25 07 07 21 20 68 98 04 36 44 44 44 0B 16",
             Response::PasswordChanged([0x03, 0x11, 0x11, 0x11])),
            ("68 29 25 07 07 21 20 68 99 00 06 16", Response::MaxDemandResetOk),
            ("68 29 25 07 07 21 20 68 9A 00 07 16", Response::MeterResetOk),
            ("68 29 25 07 07 21 20 68 9B 00 08 16", Response::EventResetOk),
            ("68 29 25 07 07 21 20 68 9C 00 09 16", Response::RelayOk),
            ("68 29 25 07 07 21 20 68 D1 01 35 74 16",
             Response::Abnormal { function: Function::ReadData, error: ErrorWord(0x02) }),
            ("68 29 25 07 07 21 20 68 DC 01 37 81 16",
             Response::Abnormal { function: Function::RelayControl, error: ErrorWord(0x04) }),
            ("68 29 25 07 07 21 20 68 D4 02 33 37 AD 16",
             Response::SecurityAbnormal { function: Function::WriteData, error: SecurityErrorWord([0x00, 0x04]) }),
        ];
        for (bytes, r) in cases {
            check(bytes, v, r);
        }
    }

    #[test]
    fn v1997_replies() {
        let v = Version::V1997;
        check(
            "68 54 07 13 00 80 13 68 81 06 43 C3 34 33 33 33 2B 16",
            v,
            Response::ReadData {
                di: di("9010"),
                payload: vec![1, 0, 0, 0],
                more_follows: false,
            },
        );
        check(
            "68 54 07 13 00 80 13 68 C1 01 35 C8 16",
            v,
            Response::Abnormal {
                function: Function::ReadDataV1997,
                error: ErrorWord(0x02),
            },
        );
    }

    #[test]
    fn error_words_name_their_bits() {
        assert_eq!(
            ErrorWord(0x02).reasons().collect::<Vec<_>>(),
            ["no requested data"]
        );
        assert_eq!(
            ErrorWord(0x45).reasons().collect::<Vec<_>>(),
            [
                "other error",
                "password error/unauthorised",
                "too many tariffs"
            ]
        );
        assert_eq!(
            ErrorWord(0x0C).to_string(),
            "0C (password error/unauthorised, baud rate cannot be changed)"
        );
        assert_eq!(ErrorWord(0).reasons().count(), 0);
        assert_eq!(
            SecurityErrorWord([0x00, 0x44])
                .reasons()
                .collect::<Vec<_>>(),
            [
                "ESAM verification failed",
                "purchase exceeds hoarding limit"
            ]
        );
        assert_eq!(
            SecurityErrorWord([0x01, 0x02])
                .reasons()
                .collect::<Vec<_>>(),
            ["other error", "repeated top-up"]
        );
    }

    #[test]
    fn rejects_and_matches() {
        let a: Address = "202107072529".parse().unwrap();
        let f = |c: u8, data: Vec<u8>| Dlt645Frame::new(a, ControlCode::from_byte(c), data);
        let v = Version::V2007;
        assert_eq!(
            Response::from_frame(&f(0x11, vec![0; 4]), v)
                .unwrap_err()
                .to_string(),
            "control 0x11 is a request (D7=0), expected a response"
        );
        assert_eq!(
            Response::from_frame(&f(0xD1, vec![1, 2, 3]), v)
                .unwrap_err()
                .to_string(),
            "control 0xD1 (read data (11)): expected L=1 or 2, found L=3"
        );
        assert_eq!(
            Response::from_frame(&f(0x94, vec![0]), v)
                .unwrap_err()
                .to_string(),
            "control 0x94 (write data (14)): expected L=0, found L=1"
        );
        assert!(matches!(
            Response::from_frame(&f(0x88, vec![]), v),
            Err(ResponseError::NoReplyExpected { .. })
        ));
        assert!(matches!(
            Response::from_frame(&f(0x81, vec![0x10, 0x90]), v),
            Err(ResponseError::UnknownFunction { code: 0x01, .. })
        ));
        let reply = f(0x91, vec![0, 0, 1, 0, 1, 2, 3, 4]);
        assert!(matches_request(a, Function::ReadData, &reply));
        assert!(matches_request(
            Address::WILDCARD,
            Function::ReadData,
            &reply
        ));
        assert!(!matches_request(a, Function::ReadFollowUp, &reply));
        assert!(!matches_request(
            Address::BROADCAST,
            Function::ReadData,
            &reply
        ));
        assert!(!matches_request(
            "202107072530".parse().unwrap(),
            Function::ReadData,
            &reply
        ));
        assert!(!matches_request(
            a,
            Function::ReadData,
            &f(0x11, vec![0; 4])
        ));
        assert!(matches_request(a, Function::ReadData, &f(0xD1, vec![2])));
    }
}
