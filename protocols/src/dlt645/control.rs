//! The DL/T 645 control byte `C` and the function codes of both editions.
//!
//! This module owns the meaning of the control byte: direction (D7), abnormal reply (D6),
//! follow-up (D5) and the 5-bit function code (D4..D0), and the mapping between function
//! codes and named [`Function`]s for DL/T 645-2007 and DL/T 645-1997. It never looks at the
//! data field and never decides whether a function is allowed on a bus; see
//! [`super::request`] and [`super::response`] for that.

use std::fmt;

use super::Version;

/// The control byte `C` of a DL/T 645 frame, kept as received so any value round-trips.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControlCode(pub u8);

impl ControlCode {
    /// D7: set on a slave→master response.
    pub const RESPONSE_BIT: u8 = 0x80;
    /// D6: set on an abnormal (error) response.
    pub const ABNORMAL_BIT: u8 = 0x40;
    /// D5: set when more data follows in a later frame.
    pub const MORE_BIT: u8 = 0x20;
    /// D4..D0: the function code.
    pub const CODE_MASK: u8 = 0x1F;

    /// Wraps a received control byte; every value is representable.
    pub const fn from_byte(byte: u8) -> Self {
        Self(byte)
    }

    /// The byte as it goes on the wire.
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// D7: true for a slave→master response.
    pub const fn is_response(self) -> bool {
        self.0 & Self::RESPONSE_BIT != 0
    }

    /// D6: true for an abnormal (error) response.
    pub const fn is_abnormal(self) -> bool {
        self.0 & Self::ABNORMAL_BIT != 0
    }

    /// D5: true when the slave has more data in a follow-up frame.
    pub const fn more_follows(self) -> bool {
        self.0 & Self::MORE_BIT != 0
    }

    /// D4..D0: the function code.
    pub const fn code(self) -> u8 {
        self.0 & Self::CODE_MASK
    }

    /// The control byte of a master→slave command for `function` (D7..D5 clear).
    pub const fn request(function: Function) -> Self {
        Self(function.code())
    }

    /// The control byte of a slave reply to `function`: D7 set, D6 when `abnormal`,
    /// D5 when `more` data follows.
    pub const fn response(function: Function, abnormal: bool, more: bool) -> Self {
        let mut b = Self::RESPONSE_BIT | function.code();
        if abnormal {
            b |= Self::ABNORMAL_BIT;
        }
        if more {
            b |= Self::MORE_BIT;
        }
        Self(b)
    }
}

impl fmt::Debug for ControlCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ControlCode({:02X})", self.0)
    }
}

impl fmt::Display for ControlCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}", self.0)
    }
}

/// A DL/T 645 function (D4..D0 of the control byte), per edition.
///
/// The same code means different things in the two editions (`03` is security authentication
/// in 2007 and re-read in 1997), so 1997 functions have their own variants, suffixed `V1997`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// 2007 `08`: broadcast time sync (广播校时); never answered.
    BroadcastTime,
    /// 2007 `11`: read data.
    ReadData,
    /// 2007 `12`: read follow-up data.
    ReadFollowUp,
    /// 2007 `13`: read communication address.
    ReadAddress,
    /// 2007 `14`: write data.
    WriteData,
    /// 2007 `15`: write communication address.
    WriteAddress,
    /// 2007 `16`: freeze.
    Freeze,
    /// 2007 `17`: change communication baud rate.
    ChangeBaud,
    /// 2007 `18`: change password.
    ChangePassword,
    /// 2007 `19`: maximum demand reset.
    MaxDemandReset,
    /// 2007 `1A`: meter reset (电表清零).
    MeterReset,
    /// 2007 `1B`: event reset (事件清零).
    EventReset,
    /// 2007 `1C`: remote control (trip / close / alarm / keep power).
    RelayControl,
    /// 2007 `03`: security authentication (ESAM, prepaid extension).
    Security,
    /// 1997 `01`: read data.
    ReadDataV1997,
    /// 1997 `02`: read follow-up data.
    ReadFollowUpV1997,
    /// 1997 `03`: re-read data.
    ReReadV1997,
    /// 1997 `04`: write data.
    WriteDataV1997,
    /// 1997 `08`: broadcast time sync; never answered.
    BroadcastTimeV1997,
    /// 1997 `0A`: write communication address.
    WriteAddressV1997,
    /// 1997 `0C`: change communication rate.
    ChangeBaudV1997,
    /// 1997 `0F`: change password.
    ChangePasswordV1997,
    /// 1997 `10`: maximum demand reset.
    MaxDemandResetV1997,
}

impl Function {
    /// Every function of both editions, 2007 first.
    pub const ALL: [Function; 23] = [
        Function::BroadcastTime,
        Function::ReadData,
        Function::ReadFollowUp,
        Function::ReadAddress,
        Function::WriteData,
        Function::WriteAddress,
        Function::Freeze,
        Function::ChangeBaud,
        Function::ChangePassword,
        Function::MaxDemandReset,
        Function::MeterReset,
        Function::EventReset,
        Function::RelayControl,
        Function::Security,
        Function::ReadDataV1997,
        Function::ReadFollowUpV1997,
        Function::ReReadV1997,
        Function::WriteDataV1997,
        Function::BroadcastTimeV1997,
        Function::WriteAddressV1997,
        Function::ChangeBaudV1997,
        Function::ChangePasswordV1997,
        Function::MaxDemandResetV1997,
    ];

    /// The function `code` (D4..D0; higher bits are ignored) means in `version`, if any.
    pub const fn from_code(version: Version, code: u8) -> Option<Function> {
        let code = code & ControlCode::CODE_MASK;
        match version {
            Version::V2007 => match code {
                0x08 => Some(Function::BroadcastTime),
                0x11 => Some(Function::ReadData),
                0x12 => Some(Function::ReadFollowUp),
                0x13 => Some(Function::ReadAddress),
                0x14 => Some(Function::WriteData),
                0x15 => Some(Function::WriteAddress),
                0x16 => Some(Function::Freeze),
                0x17 => Some(Function::ChangeBaud),
                0x18 => Some(Function::ChangePassword),
                0x19 => Some(Function::MaxDemandReset),
                0x1A => Some(Function::MeterReset),
                0x1B => Some(Function::EventReset),
                0x1C => Some(Function::RelayControl),
                0x03 => Some(Function::Security),
                _ => None,
            },
            Version::V1997 => match code {
                0x01 => Some(Function::ReadDataV1997),
                0x02 => Some(Function::ReadFollowUpV1997),
                0x03 => Some(Function::ReReadV1997),
                0x04 => Some(Function::WriteDataV1997),
                0x08 => Some(Function::BroadcastTimeV1997),
                0x0A => Some(Function::WriteAddressV1997),
                0x0C => Some(Function::ChangeBaudV1997),
                0x0F => Some(Function::ChangePasswordV1997),
                0x10 => Some(Function::MaxDemandResetV1997),
                _ => None,
            },
        }
    }

    /// The 5-bit function code (D4..D0).
    pub const fn code(self) -> u8 {
        match self {
            Function::BroadcastTime => 0x08,
            Function::ReadData => 0x11,
            Function::ReadFollowUp => 0x12,
            Function::ReadAddress => 0x13,
            Function::WriteData => 0x14,
            Function::WriteAddress => 0x15,
            Function::Freeze => 0x16,
            Function::ChangeBaud => 0x17,
            Function::ChangePassword => 0x18,
            Function::MaxDemandReset => 0x19,
            Function::MeterReset => 0x1A,
            Function::EventReset => 0x1B,
            Function::RelayControl => 0x1C,
            Function::Security => 0x03,
            Function::ReadDataV1997 => 0x01,
            Function::ReadFollowUpV1997 => 0x02,
            Function::ReReadV1997 => 0x03,
            Function::WriteDataV1997 => 0x04,
            Function::BroadcastTimeV1997 => 0x08,
            Function::WriteAddressV1997 => 0x0A,
            Function::ChangeBaudV1997 => 0x0C,
            Function::ChangePasswordV1997 => 0x0F,
            Function::MaxDemandResetV1997 => 0x10,
        }
    }

    /// The edition this function belongs to.
    pub const fn version(self) -> Version {
        match self {
            Function::ReadDataV1997
            | Function::ReadFollowUpV1997
            | Function::ReReadV1997
            | Function::WriteDataV1997
            | Function::BroadcastTimeV1997
            | Function::WriteAddressV1997
            | Function::ChangeBaudV1997
            | Function::ChangePasswordV1997
            | Function::MaxDemandResetV1997 => Version::V1997,
            _ => Version::V2007,
        }
    }

    /// The function's name in the standard's English terms, e.g. `"read data"`.
    pub const fn name(self) -> &'static str {
        match self {
            Function::BroadcastTime | Function::BroadcastTimeV1997 => "broadcast time sync",
            Function::ReadData | Function::ReadDataV1997 => "read data",
            Function::ReadFollowUp | Function::ReadFollowUpV1997 => "read follow-up data",
            Function::ReadAddress => "read communication address",
            Function::WriteData | Function::WriteDataV1997 => "write data",
            Function::WriteAddress | Function::WriteAddressV1997 => "write communication address",
            Function::Freeze => "freeze",
            Function::ChangeBaud | Function::ChangeBaudV1997 => "change baud rate",
            Function::ChangePassword | Function::ChangePasswordV1997 => "change password",
            Function::MaxDemandReset | Function::MaxDemandResetV1997 => "maximum demand reset",
            Function::MeterReset => "meter reset",
            Function::EventReset => "event reset",
            Function::RelayControl => "remote control",
            Function::Security => "security authentication",
            Function::ReReadV1997 => "re-read data",
        }
    }

    /// True for functions a meter never answers (broadcast time sync).
    pub const fn has_no_reply(self) -> bool {
        matches!(self, Function::BroadcastTime | Function::BroadcastTimeV1997)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:02X})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let c = ControlCode::from_byte(0xB1);
        assert!(c.is_response());
        assert!(!c.is_abnormal());
        assert!(c.more_follows());
        assert_eq!(c.code(), 0x11);
        let e = ControlCode::from_byte(0xD1);
        assert!(e.is_response() && e.is_abnormal() && !e.more_follows());
        assert_eq!(ControlCode::request(Function::ReadData).byte(), 0x11);
        assert_eq!(
            ControlCode::response(Function::ReadData, false, false).byte(),
            0x91
        );
        assert_eq!(
            ControlCode::response(Function::ReadData, false, true).byte(),
            0xB1
        );
        assert_eq!(
            ControlCode::response(Function::ReadData, true, false).byte(),
            0xD1
        );
        assert_eq!(
            ControlCode::response(Function::ReadDataV1997, false, false).byte(),
            0x81
        );
        assert_eq!(format!("{e:?}"), "ControlCode(D1)");
    }

    #[test]
    fn codes_round_trip() {
        for f in Function::ALL {
            assert_eq!(Function::from_code(f.version(), f.code()), Some(f), "{f:?}");
            assert!(!f.name().is_empty());
        }
        assert_eq!(
            Function::from_code(Version::V2007, 0x91),
            Some(Function::ReadData)
        );
        assert_eq!(Function::from_code(Version::V2007, 0x01), None);
        assert_eq!(Function::from_code(Version::V1997, 0x11), None);
        assert_eq!(
            Function::from_code(Version::V1997, 0x03),
            Some(Function::ReReadV1997)
        );
        assert_eq!(
            Function::from_code(Version::V2007, 0x03),
            Some(Function::Security)
        );
        assert_eq!(Function::ReadData.name(), "read data");
        assert_eq!(Function::ReadData.to_string(), "read data (11)");
    }
}
