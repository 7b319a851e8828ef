//! Typed DL/T 645 commands (master → meter) on top of [`Dlt645Frame`].
//!
//! This module owns the data-field layout of each command: [`Request::to_frame`] builds the
//! frame a master sends and [`Request::from_frame`] parses one back (the simulator's side).
//! It also owns [`MeterDateTime`], the `ss mm hh DD MM YY` BCD time used by time sync and
//! remote control. It never decides *when* a command may be sent: write, reset and relay
//! commands are encoded on request only and are never retried or sent automatically here.
//!
//! Multi-byte fields are low byte first; passwords are `PA P0 P1 P2`, operator codes
//! `C0 C1 C2 C3`, both kept as the four wire bytes.

use std::fmt;

use super::address::Address;
use super::control::{ControlCode, Function};
use super::frame::Dlt645Frame;
use super::{DataIdentifier, Version};

/// One packed-BCD byte from a value 0..=99 (higher values are clamped to 99).
pub(crate) fn to_bcd(v: u8) -> u8 {
    let v = v.min(99);
    ((v / 10) << 4) | (v % 10)
}

/// The value of one packed-BCD byte, if both nibbles are decimal digits.
pub(crate) fn from_bcd(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// A meter's date and time, 2000..=2099, as carried by time sync (`08`) and remote control
/// (`1C`): six BCD bytes `ss mm hh DD MM YY` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeterDateTime {
    year: u8,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

/// Why six bytes or six numbers are not a valid [`MeterDateTime`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// A byte is not packed BCD.
    #[error(
        "time byte {index} (wire order ss mm hh DD MM YY) is 0x{byte:02X}, expected BCD 00..99"
    )]
    NotBcd {
        /// Position in wire order (0 = seconds).
        index: usize,
        /// The byte found.
        byte: u8,
    },
    /// A field is out of range.
    #[error("{field} {value} out of range, expected {range}")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u8,
        /// The allowed range.
        range: &'static str,
    },
}

impl MeterDateTime {
    /// A validated time; `year` is two digits (0..=99 meaning 2000..=2099).
    pub fn new(
        year: u8,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, TimeError> {
        let check = |field, value: u8, lo: u8, hi: u8, range| {
            if value < lo || value > hi {
                Err(TimeError::OutOfRange {
                    field,
                    value,
                    range,
                })
            } else {
                Ok(())
            }
        };
        check("year", year, 0, 99, "00..=99")?;
        check("month", month, 1, 12, "1..=12")?;
        let leap = year % 4 == 0; // 2000..=2099: every fourth year, 2000 included
        let last = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let day_range = match last {
            28 => "1..=28",
            29 => "1..=29",
            30 => "1..=30",
            _ => "1..=31",
        };
        check("day", day, 1, last, day_range)?;
        check("hour", hour, 0, 23, "0..=23")?;
        check("minute", minute, 0, 59, "0..=59")?;
        check("second", second, 0, 59, "0..=59")?;
        Ok(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Parses the six wire bytes `ss mm hh DD MM YY` (unmasked).
    pub fn from_wire(bytes: [u8; 6]) -> Result<Self, TimeError> {
        let mut v = [0u8; 6];
        for (index, (out, byte)) in v.iter_mut().zip(bytes).enumerate() {
            *out = from_bcd(byte).ok_or(TimeError::NotBcd { index, byte })?;
        }
        let [ss, mm, hh, dd, mo, yy] = v;
        Self::new(yy, mo, dd, hh, mm, ss)
    }

    /// The six wire bytes `ss mm hh DD MM YY` (unmasked).
    pub fn to_wire(self) -> [u8; 6] {
        [
            to_bcd(self.second),
            to_bcd(self.minute),
            to_bcd(self.hour),
            to_bcd(self.day),
            to_bcd(self.month),
            to_bcd(self.year),
        ]
    }

    /// Two-digit year (0..=99 for 2000..=2099).
    pub fn year(self) -> u8 {
        self.year
    }
    /// Month 1..=12.
    pub fn month(self) -> u8 {
        self.month
    }
    /// Day of month 1..=31.
    pub fn day(self) -> u8 {
        self.day
    }
    /// Hour 0..=23.
    pub fn hour(self) -> u8 {
        self.hour
    }
    /// Minute 0..=59.
    pub fn minute(self) -> u8 {
        self.minute
    }
    /// Second 0..=59.
    pub fn second(self) -> u8 {
        self.second
    }
}

impl fmt::Display for MeterDateTime {
    /// ISO-like `2017-06-05 10:22:51`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "20{:02}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// The remote-control command byte N1 of `1C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayCommand {
    /// `1A`: trip (拉闸).
    Trip,
    /// `1B`: close allowed (合闸允许); the customer closes the relay.
    CloseAllowed,
    /// `1C`: direct close (直接合闸).
    DirectClose,
    /// `2A`: alarm.
    Alarm,
    /// `2B`: alarm release.
    AlarmRelease,
    /// `3A`: keep power (保电).
    KeepPower,
    /// `3B`: keep-power release.
    KeepPowerRelease,
}

impl RelayCommand {
    /// The N1 byte.
    pub const fn byte(self) -> u8 {
        match self {
            RelayCommand::Trip => 0x1A,
            RelayCommand::CloseAllowed => 0x1B,
            RelayCommand::DirectClose => 0x1C,
            RelayCommand::Alarm => 0x2A,
            RelayCommand::AlarmRelease => 0x2B,
            RelayCommand::KeepPower => 0x3A,
            RelayCommand::KeepPowerRelease => 0x3B,
        }
    }

    /// The command an N1 byte stands for.
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x1A => Some(RelayCommand::Trip),
            0x1B => Some(RelayCommand::CloseAllowed),
            0x1C => Some(RelayCommand::DirectClose),
            0x2A => Some(RelayCommand::Alarm),
            0x2B => Some(RelayCommand::AlarmRelease),
            0x3A => Some(RelayCommand::KeepPower),
            0x3B => Some(RelayCommand::KeepPowerRelease),
            _ => None,
        }
    }
}

/// A typed DL/T 645 command.
///
/// The edition follows the data identifier where there is one (a [`DataIdentifier::V1997`]
/// read is sent as `01`); commands without a DI are 2007 commands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// Read data (`11`, 1997 `01`). `extra` follows the DI: empty, or `N` / `N + time` for
    /// load-profile reads (2007 only).
    ReadData {
        /// What to read.
        di: DataIdentifier,
        /// Optional bytes after the DI (unmasked).
        extra: Vec<u8>,
    },
    /// Read follow-up data (`12`, 1997 `02`).
    ReadFollowUp {
        /// The item being continued.
        di: DataIdentifier,
        /// Frame sequence number (2007 only; 1997 sends no sequence, parsed as 0).
        seq: u8,
    },
    /// Read the address of the lone meter (`13`, L = 0); normally sent to [`Address::WILDCARD`].
    ReadAddress,
    /// Write a new address (`15`); normally sent to [`Address::WILDCARD`].
    WriteAddress(Address),
    /// Broadcast time sync (`08`), always sent to [`Address::BROADCAST`]; never answered.
    BroadcastTimeSync {
        /// The time to set.
        time: MeterDateTime,
    },
    /// Write data (`14`; 1997 `04`, which carries no operator code).
    WriteData {
        /// What to write.
        di: DataIdentifier,
        /// `PA P0 P1 P2`.
        password: [u8; 4],
        /// `C0 C1 C2 C3`.
        operator: [u8; 4],
        /// The value bytes (unmasked).
        data: Vec<u8>,
    },
    /// Freeze (`16`): `mm hh DD MM`, BCD, `0x99` = every.
    Freeze {
        /// Minute (BCD or `99`).
        mm: u8,
        /// Hour (BCD or `99`).
        hh: u8,
        /// Day (BCD or `99`).
        dd: u8,
        /// Month (BCD or `99`).
        mo: u8,
    },
    /// Change baud rate (`17`): the rate feature byte Z (2400 → `08`, 9600 → `20`).
    ChangeBaud(u8),
    /// Change password (`18`): DI `04000C0x`, old and new `PA P0 P1 P2`.
    ChangePassword {
        /// The password item, `04000C01..04000C0A`.
        di: DataIdentifier,
        /// Old `PA P0 P1 P2`.
        old: [u8; 4],
        /// New `PA P0 P1 P2`.
        new: [u8; 4],
    },
    /// Maximum demand reset (`19`).
    MaxDemandReset {
        /// `PA P0 P1 P2`.
        password: [u8; 4],
        /// `C0 C1 C2 C3`.
        operator: [u8; 4],
    },
    /// Meter reset (`1A`).
    MeterReset {
        /// `PA P0 P1 P2`.
        password: [u8; 4],
        /// `C0 C1 C2 C3`.
        operator: [u8; 4],
    },
    /// Event reset (`1B`); DI `FFFFFFFF` clears all events.
    EventReset {
        /// `PA P0 P1 P2`.
        password: [u8; 4],
        /// `C0 C1 C2 C3`.
        operator: [u8; 4],
        /// Which events.
        di: DataIdentifier,
    },
    /// Remote control (`1C`), plaintext form: `PA P0 P1 P2 C0..C3 N1 00 ss mm hh DD MM YY`.
    /// Encode and parse only; never sent automatically.
    RelayControl {
        /// `PA P0 P1 P2`.
        password: [u8; 4],
        /// `C0 C1 C2 C3`.
        operator: [u8; 4],
        /// N1.
        command: RelayCommand,
        /// N3..N8: the command is void after this time.
        valid_until: MeterDateTime,
    },
}

/// Why a frame is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// D7 is set.
    #[error("control 0x{control:02X} is a response (D7=1), expected a request")]
    NotARequest {
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
    /// This crate does not model the function's request data.
    #[error("{function} requests are not supported")]
    Unsupported {
        /// The function.
        function: Function,
    },
    /// The data length does not fit the function.
    #[error("{function}: expected L={expected}, found L={found}")]
    BadLength {
        /// The function.
        function: Function,
        /// The allowed length(s).
        expected: &'static str,
        /// The data length found.
        found: usize,
    },
    /// A time field is not a valid date and time.
    #[error("{function}: invalid time: {error}")]
    Time {
        /// The function.
        function: Function,
        /// What is wrong with the time.
        error: TimeError,
    },
    /// A freeze field is neither BCD nor `99`.
    #[error("freeze: byte {index} (mm hh DD MM) is 0x{byte:02X}, expected BCD or 0x99")]
    BadFreezeField {
        /// Position in `mm hh DD MM`.
        index: usize,
        /// The byte found.
        byte: u8,
    },
    /// Unknown remote-control command N1.
    #[error(
        "remote control: N1 0x{found:02X} is not a known command (expected 1A 1B 1C 2A 2B 3A 3B; PA=0x{pa:02X})"
    )]
    BadRelayCommand {
        /// The N1 byte.
        found: u8,
        /// The password level; 96/98 mean ciphertext, which this crate does not decode.
        pa: u8,
    },
}

/// Four bytes from `data` at `at`, if present.
fn four(data: &[u8], at: usize) -> Option<[u8; 4]> {
    data.get(at..at.checked_add(4)?)?.try_into().ok()
}

impl Request {
    /// The function this command is sent with.
    pub fn function(&self) -> Function {
        let v1997 = |di: &DataIdentifier| di.version() == Version::V1997;
        match self {
            Request::ReadData { di, .. } if v1997(di) => Function::ReadDataV1997,
            Request::ReadData { .. } => Function::ReadData,
            Request::ReadFollowUp { di, .. } if v1997(di) => Function::ReadFollowUpV1997,
            Request::ReadFollowUp { .. } => Function::ReadFollowUp,
            Request::ReadAddress => Function::ReadAddress,
            Request::WriteAddress(_) => Function::WriteAddress,
            Request::BroadcastTimeSync { .. } => Function::BroadcastTime,
            Request::WriteData { di, .. } if v1997(di) => Function::WriteDataV1997,
            Request::WriteData { .. } => Function::WriteData,
            Request::Freeze { .. } => Function::Freeze,
            Request::ChangeBaud(_) => Function::ChangeBaud,
            Request::ChangePassword { .. } => Function::ChangePassword,
            Request::MaxDemandReset { .. } => Function::MaxDemandReset,
            Request::MeterReset { .. } => Function::MeterReset,
            Request::EventReset { .. } => Function::EventReset,
            Request::RelayControl { .. } => Function::RelayControl,
        }
    }

    /// The unmasked data field.
    pub fn data(&self) -> Vec<u8> {
        let mut d = Vec::new();
        let push_di = |d: &mut Vec<u8>, di: &DataIdentifier| {
            let (wire, n) = di.to_wire();
            d.extend_from_slice(wire.get(..n).unwrap_or(&[]));
        };
        match self {
            Request::ReadData { di, extra } => {
                push_di(&mut d, di);
                d.extend_from_slice(extra);
            }
            Request::ReadFollowUp { di, seq } => {
                push_di(&mut d, di);
                if di.version() == Version::V2007 {
                    d.push(*seq);
                }
            }
            Request::ReadAddress => {}
            Request::WriteAddress(a) => d.extend_from_slice(&a.to_wire()),
            Request::BroadcastTimeSync { time } => d.extend_from_slice(&time.to_wire()),
            Request::WriteData {
                di,
                password,
                operator,
                data,
            } => {
                push_di(&mut d, di);
                d.extend_from_slice(password);
                if di.version() == Version::V2007 {
                    d.extend_from_slice(operator);
                }
                d.extend_from_slice(data);
            }
            Request::Freeze { mm, hh, dd, mo } => d.extend_from_slice(&[*mm, *hh, *dd, *mo]),
            Request::ChangeBaud(z) => d.push(*z),
            Request::ChangePassword { di, old, new } => {
                push_di(&mut d, di);
                d.extend_from_slice(old);
                d.extend_from_slice(new);
            }
            Request::MaxDemandReset { password, operator }
            | Request::MeterReset { password, operator } => {
                d.extend_from_slice(password);
                d.extend_from_slice(operator);
            }
            Request::EventReset {
                password,
                operator,
                di,
            } => {
                d.extend_from_slice(password);
                d.extend_from_slice(operator);
                push_di(&mut d, di);
            }
            Request::RelayControl {
                password,
                operator,
                command,
                valid_until,
            } => {
                d.extend_from_slice(password);
                d.extend_from_slice(operator);
                d.push(command.byte());
                d.push(0x00);
                d.extend_from_slice(&valid_until.to_wire());
            }
        }
        d
    }

    /// The frame to send to `address` ([`Request::BroadcastTimeSync`] always goes to
    /// [`Address::BROADCAST`], whatever `address` says).
    pub fn to_frame(&self, address: Address) -> Dlt645Frame {
        let address = match self {
            Request::BroadcastTimeSync { .. } => Address::BROADCAST,
            _ => address,
        };
        Dlt645Frame::new(address, ControlCode::request(self.function()), self.data())
    }

    /// Parses a command frame of `version` (the simulator's side).
    pub fn from_frame(frame: &Dlt645Frame, version: Version) -> Result<Request, RequestError> {
        let control = frame.control.byte();
        if frame.control.is_response() {
            return Err(RequestError::NotARequest { control });
        }
        let code = frame.control.code();
        let function = Function::from_code(version, code).ok_or(RequestError::UnknownFunction {
            control,
            code,
            version,
        })?;
        let d = frame.data.as_slice();
        let n = d.len();
        let bad = |expected| RequestError::BadLength {
            function,
            expected,
            found: n,
        };
        let di_at = |at: usize| DataIdentifier::from_wire(version, d.get(at..).unwrap_or(&[]));
        let di_len = version.di_len();
        let pw_op = || -> Option<([u8; 4], [u8; 4])> { Some((four(d, 0)?, four(d, 4)?)) };
        match function {
            Function::ReadData | Function::ReadDataV1997 => {
                let di = di_at(0).ok_or_else(|| {
                    bad(if di_len == 4 {
                        "4 or more"
                    } else {
                        "2 or more"
                    })
                })?;
                Ok(Request::ReadData {
                    di,
                    extra: d.get(di_len..).unwrap_or(&[]).to_vec(),
                })
            }
            Function::ReadFollowUp => match (di_at(0), d.get(4)) {
                (Some(di), Some(&seq)) if n == 5 => Ok(Request::ReadFollowUp { di, seq }),
                _ => Err(bad("5")),
            },
            Function::ReadFollowUpV1997 => match di_at(0) {
                Some(di) if n == 2 => Ok(Request::ReadFollowUp { di, seq: 0 }),
                _ => Err(bad("2")),
            },
            Function::ReadAddress if n == 0 => Ok(Request::ReadAddress),
            Function::ReadAddress => Err(bad("0")),
            Function::WriteAddress => {
                let a: [u8; 6] = d.try_into().map_err(|_| bad("6"))?;
                Ok(Request::WriteAddress(Address::from_wire(a)))
            }
            Function::BroadcastTime | Function::BroadcastTimeV1997 => {
                let t: [u8; 6] = d.try_into().map_err(|_| bad("6"))?;
                let time = MeterDateTime::from_wire(t)
                    .map_err(|error| RequestError::Time { function, error })?;
                Ok(Request::BroadcastTimeSync { time })
            }
            Function::WriteData => {
                let (Some(di), Some(password), Some(operator)) = (di_at(0), four(d, 4), four(d, 8))
                else {
                    return Err(bad("12 or more"));
                };
                Ok(Request::WriteData {
                    di,
                    password,
                    operator,
                    data: d.get(12..).unwrap_or(&[]).to_vec(),
                })
            }
            Function::WriteDataV1997 => {
                let (Some(di), Some(password)) = (di_at(0), four(d, 2)) else {
                    return Err(bad("6 or more"));
                };
                Ok(Request::WriteData {
                    di,
                    password,
                    operator: [0; 4],
                    data: d.get(6..).unwrap_or(&[]).to_vec(),
                })
            }
            Function::Freeze => {
                let [mm, hh, dd, mo]: [u8; 4] = d.try_into().map_err(|_| bad("4"))?;
                for (index, byte) in [mm, hh, dd, mo].into_iter().enumerate() {
                    if byte != 0x99 && from_bcd(byte).is_none() {
                        return Err(RequestError::BadFreezeField { index, byte });
                    }
                }
                Ok(Request::Freeze { mm, hh, dd, mo })
            }
            Function::ChangeBaud => match d {
                [z] => Ok(Request::ChangeBaud(*z)),
                _ => Err(bad("1")),
            },
            Function::ChangePassword => match (di_at(0), four(d, 4), four(d, 8)) {
                (Some(di), Some(old), Some(new)) if n == 12 => {
                    Ok(Request::ChangePassword { di, old, new })
                }
                _ => Err(bad("12")),
            },
            Function::MaxDemandReset | Function::MeterReset => {
                let (password, operator) = pw_op().filter(|_| n == 8).ok_or_else(|| bad("8"))?;
                Ok(if function == Function::MeterReset {
                    Request::MeterReset { password, operator }
                } else {
                    Request::MaxDemandReset { password, operator }
                })
            }
            Function::EventReset => match (pw_op(), di_at(8)) {
                (Some((password, operator)), Some(di)) if n == 12 => Ok(Request::EventReset {
                    password,
                    operator,
                    di,
                }),
                _ => Err(bad("12")),
            },
            Function::RelayControl => {
                let (password, operator) = pw_op().filter(|_| n == 16).ok_or_else(|| bad("16"))?;
                let n1 = d.get(8).copied().unwrap_or(0);
                let command = RelayCommand::from_byte(n1).ok_or(RequestError::BadRelayCommand {
                    found: n1,
                    pa: password[0],
                })?;
                let t: [u8; 6] = d
                    .get(10..16)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("16"))?;
                let valid_until = MeterDateTime::from_wire(t)
                    .map_err(|error| RequestError::Time { function, error })?;
                Ok(Request::RelayControl {
                    password,
                    operator,
                    command,
                    valid_until,
                })
            }
            Function::Security
            | Function::ReReadV1997
            | Function::WriteAddressV1997
            | Function::ChangeBaudV1997
            | Function::ChangePasswordV1997
            | Function::MaxDemandResetV1997 => Err(RequestError::Unsupported { function }),
        }
    }
}
