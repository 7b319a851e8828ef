//! Meter profiles: which quantities a meter model has and where each one lives.
//!
//! A profile is data (`config/profiles/*.toml`), not code, so a technician adds a meter model
//! without a new build. The built-in profiles are compiled into the binary; `profile_dirs`
//! adds more, and a file there with the same `name` replaces the built-in one. This module
//! parses and checks profiles; it does not know how to talk to a meter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meter_protocols::dlt645::event::EventKind;
use meter_protocols::dlt645::freeze::{
    FreezeKind, LOAD_PROFILE_DEFAULT_MINUTES, LOAD_PROFILE_INTERVALS,
};
use meter_protocols::dlt645::{DataIdentifier, Version};
use meter_protocols::modbus::rtu::ReadFunction;
use meter_protocols::modbus::values::{RegisterOrder, ValueType};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Protocol, parse_toml};

/// Why a meter of `version` (`None`: not DL/T 645), named `protocol`, cannot give records of
/// `kind`; `None` when it can. `what` is "profile" or "meter".
pub(super) fn freeze_unsupported(
    kind: FreezeKind,
    version: Option<Version>,
    protocol: &str,
    what: &str,
) -> Option<String> {
    match version {
        None => Some(format!(
            "freezes are DL/T 645 records; a {protocol} {what} has none"
        )),
        Some(v) if kind.depth_in(v) == 0 => Some(format!(
            "a {protocol} {what} has no {kind} records: the 1997 edition keeps no daily or \
             hourly freeze and no load profile, only monthly settlements (last month's and the \
             month before's)"
        )),
        Some(_) => None,
    }
}

/// How many load records a meter keeps unless its profile says (`load_profile_depth`): ten
/// days at 15 minutes.
pub const DEFAULT_LOAD_PROFILE_DEPTH: u32 = 960;
/// The largest `load_profile_depth` accepted.
pub const MAX_LOAD_PROFILE_DEPTH: u32 = 100_000;

/// A meter's load profile: its record interval and how many records it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProfileSpec {
    /// Minutes between records (one of [`LOAD_PROFILE_INTERVALS`]).
    pub interval_minutes: i64,
    /// Records the meter keeps.
    pub depth: u32,
}

impl Default for LoadProfileSpec {
    fn default() -> Self {
        LoadProfileSpec {
            interval_minutes: LOAD_PROFILE_DEFAULT_MINUTES,
            depth: DEFAULT_LOAD_PROFILE_DEPTH,
        }
    }
}

/// `load_profile_interval` as minutes: a duration that is one of the supported intervals.
pub fn parse_load_interval(text: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e} in duration {text:?} (write \"15m\", \"30m\" or \"60m\")"))?;
    let minutes = i64::try_from(d.as_secs() / 60).unwrap_or(i64::MAX);
    if d.as_secs() % 60 != 0 || d.subsec_nanos() != 0 || !LOAD_PROFILE_INTERVALS.contains(&minutes)
    {
        return Err(format!(
            "load-record interval {text:?} is not supported: 15m, 30m or 60m (the ledger \
             keeps load records in 15-minute slots)"
        ));
    }
    Ok(minutes)
}

/// Why a meter or profile of `protocol` (`version` for DL/T 645) cannot list event type
/// `kind`, if it cannot: Modbus meters have no event counters, DL/T 645-1997 meters only the
/// programming counter.
pub(super) fn event_unsupported(
    kind: EventKind,
    version: Option<Version>,
    protocol: &str,
    what: &str,
) -> Option<String> {
    match version {
        None => Some(format!(
            "event counters are DL/T 645 items; a {protocol} {what} has none"
        )),
        Some(v) if meter_protocols::dlt645::event_1997::depth_in(kind, v) == 0 => Some(format!(
            "a {protocol} {what} has no {kind} counter: the 1997 edition counts programming \
             only (B212, with the time of the last one in B210)"
        )),
        Some(_) => None,
    }
}

/// The profiles shipped in the binary: (file name, text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "dlt645-single-phase.toml",
        include_str!("../../config/profiles/dlt645-single-phase.toml"),
    ),
    (
        "dlt645-three-phase.toml",
        include_str!("../../config/profiles/dlt645-three-phase.toml"),
    ),
    (
        "dlt645-1997-basic.toml",
        include_str!("../../config/profiles/dlt645-1997-basic.toml"),
    ),
    (
        "eastron-sdm630.toml",
        include_str!("../../config/profiles/eastron-sdm630.toml"),
    ),
    (
        "eastron-sdm120.toml",
        include_str!("../../config/profiles/eastron-sdm120.toml"),
    ),
    (
        "chint-dtsu666.toml",
        include_str!("../../config/profiles/chint-dtsu666.toml"),
    ),
    (
        "generic-modbus.toml",
        include_str!("../../config/profiles/generic-modbus.toml"),
    ),
];

/// Which protocol family a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ProfileProtocol {
    /// DL/T 645-2007 data identifiers.
    #[serde(rename = "dlt645-2007")]
    Dlt645_2007,
    /// DL/T 645-1997 data identifiers.
    #[serde(rename = "dlt645-1997")]
    Dlt645_1997,
    /// Modbus registers (RTU or TCP alike).
    #[serde(rename = "modbus")]
    Modbus,
}

/// Modbus read function of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterFunction {
    /// Holding registers (FC03).
    Holding,
    /// Input registers (FC04).
    Input,
    /// Coils (FC01).
    Coil,
    /// Discrete inputs (FC02).
    Discrete,
}

/// Modbus value type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterType {
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit.
    U32,
    /// Signed 32-bit.
    I32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// IEEE-754 single.
    F32,
    /// IEEE-754 double.
    F64,
    /// One bit of a register (`bit` says which).
    Bit,
}

impl RegisterFunction {
    /// The codec's read function.
    pub fn read_function(self) -> ReadFunction {
        match self {
            RegisterFunction::Holding => ReadFunction::HoldingRegisters,
            RegisterFunction::Input => ReadFunction::InputRegisters,
            RegisterFunction::Coil => ReadFunction::Coils,
            RegisterFunction::Discrete => ReadFunction::DiscreteInputs,
        }
    }
}

impl RegisterType {
    /// The name used in profiles and `source` strings (`f32`).
    pub fn name(self) -> &'static str {
        match self {
            RegisterType::U16 => "u16",
            RegisterType::I16 => "i16",
            RegisterType::U32 => "u32",
            RegisterType::I32 => "i32",
            RegisterType::U64 => "u64",
            RegisterType::I64 => "i64",
            RegisterType::F32 => "f32",
            RegisterType::F64 => "f64",
            RegisterType::Bit => "bit",
        }
    }

    /// The codec's value type; `bit` is the bit index of a `bit` point in a register.
    pub fn value_type(self, bit: Option<u8>) -> ValueType {
        match self {
            RegisterType::U16 => ValueType::U16,
            RegisterType::I16 => ValueType::I16,
            RegisterType::U32 => ValueType::U32,
            RegisterType::I32 => ValueType::I32,
            RegisterType::U64 => ValueType::U64,
            RegisterType::I64 => ValueType::I64,
            RegisterType::F32 => ValueType::F32,
            RegisterType::F64 => ValueType::F64,
            RegisterType::Bit => ValueType::Bits {
                bit: bit.unwrap_or(0),
                width: 1,
            },
        }
    }

    /// Registers the type occupies.
    pub fn registers(self) -> u16 {
        match self {
            RegisterType::U16 | RegisterType::I16 | RegisterType::Bit => 1,
            RegisterType::U32 | RegisterType::I32 | RegisterType::F32 => 2,
            RegisterType::U64 | RegisterType::I64 | RegisterType::F64 => 4,
        }
    }
}

/// Byte and word order of a multi-register value (A = most significant byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// Big-endian bytes, big-endian words (the Modbus default).
    #[default]
    Abcd,
    /// Words swapped.
    Cdab,
    /// Bytes swapped within each word.
    Badc,
    /// Little-endian.
    Dcba,
}

impl WordOrder {
    /// The codec's register order.
    pub fn register_order(self) -> RegisterOrder {
        match self {
            WordOrder::Abcd => RegisterOrder::ABCD,
            WordOrder::Cdab => RegisterOrder::CDAB,
            WordOrder::Badc => RegisterOrder::BADC,
            WordOrder::Dcba => RegisterOrder::DCBA,
        }
    }

    /// The name used in profiles and `source` strings (`abcd`).
    pub fn name(self) -> &'static str {
        match self {
            WordOrder::Abcd => "abcd",
            WordOrder::Cdab => "cdab",
            WordOrder::Badc => "badc",
            WordOrder::Dcba => "dcba",
        }
    }
}

/// One point of a profile.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Canonical quantity name (docs/quantities.md). For DL/T 645 it defaults to the
    /// catalogue's name for `di`; a block DI yields all its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// DL/T 645 data identifier (8 hex digits for 2007, 4 for 1997).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub di: Option<String>,
    /// Modbus function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<RegisterFunction>,
    /// Modbus register (PDU address, 0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<u16>,
    /// Modbus value type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub value_type: Option<RegisterType>,
    /// Byte/word order.
    #[serde(default)]
    pub order: WordOrder,
    /// Bit index for `type = "bit"` (0 = least significant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// Exact decimal factor applied to the raw value (`"0.01"`, `"10"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<String>,
    /// Register holding a power-of-ten exponent applied to the value (e.g. Acrel meters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponent_register: Option<u16>,
    /// The unit the meter reports (Modbus points; DL/T 645 units come from the catalogue). A
    /// quantity of docs/quantities.md is published in its family's unit, converted exactly by
    /// the SI prefix (an SDM630's `W` is published as kW); a unit that cannot be converted is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// OBIS code, where one exists; defaults to the catalogue's code for the quantity
    /// (docs/quantities.md), and must equal it when the catalogue has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obis: Option<String>,
}

/// How `meterd scan` tells a meter of this model from others (`[identify]`, Modbus only).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    /// Where the identification registers are documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The registers read.
    #[serde(default, rename = "register")]
    pub registers: Vec<IdentifyRegister>,
}

/// One identification register (`[[identify.register]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyRegister {
    /// What the register holds, as printed (`meter code`, `serial number`).
    pub name: String,
    /// `holding` or `input`.
    pub function: RegisterFunction,
    /// Register (PDU address, 0-based).
    pub register: u16,
    /// Value type (an unsigned integer when `expect` is given).
    #[serde(rename = "type")]
    pub value_type: RegisterType,
    /// Byte/word order.
    #[serde(default)]
    pub order: WordOrder,
    /// Registers the item occupies when more than its type (Eastron's meter code is the
    /// first register of a two-register item, and the meters refuse odd counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u16>,
    /// The values that identify this model. Empty: the register is only shown (a serial
    /// number); a meter matches the profile when every register with `expect` holds one of
    /// its values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<u64>,
}

impl IdentifyRegister {
    /// Registers read for the item: `width`, or the type's size.
    pub fn read_width(&self) -> u16 {
        self.width.unwrap_or(0).max(self.value_type.registers())
    }
}

impl Identify {
    /// True when some register names the values that identify the model.
    pub fn can_match(&self) -> bool {
        self.registers.iter().any(|r| !r.expect.is_empty())
    }

    fn check(&self, fail: impl Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
        for (i, r) in self.registers.iter().enumerate() {
            let key = |k: &str| format!("identify.register[{i}].{k}");
            if !matches!(
                r.function,
                RegisterFunction::Holding | RegisterFunction::Input
            ) {
                return Err(fail(key("function"), "expected holding or input".into()));
            }
            if r.value_type == RegisterType::Bit {
                return Err(fail(key("type"), "a whole register type, not bit".into()));
            }
            if r.width.is_some_and(|w| w > 125) {
                return Err(fail(key("width"), "at most 125 registers".into()));
            }
            if u32::from(r.register) + u32::from(r.read_width()) > 65_536 {
                return Err(fail(
                    key("register"),
                    format!("register {} runs past 65535", r.register),
                ));
            }
            let max = match r.value_type {
                RegisterType::U16 => u64::from(u16::MAX),
                RegisterType::U32 => u64::from(u32::MAX),
                RegisterType::U64 => u64::MAX,
                _ if r.expect.is_empty() => continue,
                other => {
                    return Err(fail(
                        key("expect"),
                        format!(
                            "`expect` needs an unsigned type (u16, u32, u64), not {}",
                            other.name()
                        ),
                    ));
                }
            };
            if let Some(v) = r.expect.iter().find(|v| **v > max) {
                return Err(fail(
                    key("expect"),
                    format!("{v} does not fit {}", r.value_type.name()),
                ));
            }
        }
        Ok(())
    }
}

/// A meter model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name, used in `meter.profile` and `--profile`.
    pub name: String,
    /// What the profile covers.
    pub description: String,
    /// Where the register map or DI list comes from (vendor manual, standard).
    pub source: String,
    /// Protocol family.
    pub protocol: ProfileProtocol,
    /// Device cap on registers per read (Modbus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_registers: Option<u16>,
    /// Unused registers that may be read to merge two reads (Modbus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_fill: Option<u16>,
    /// The frozen histories the meter keeps (DL/T 645-2007 only): `daily` (62 days),
    /// `monthly` (12 settlement days), `hourly` (254 whole hours). Read as freeze records,
    /// never as poll values; the simulator serves the kinds listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<Spanned<String>>,
    /// With `load_profile` in `freezes`: the meter's load-record interval (`"15m"`, `"30m"`
    /// or `"60m"`; default 15 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_profile_interval: Option<Spanned<String>>,
    /// With `load_profile` in `freezes`: how many load records the meter keeps (its memory;
    /// default [`DEFAULT_LOAD_PROFILE_DEPTH`]). Older records are reported lost, not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_profile_depth: Option<Spanned<u32>>,
    /// The events whose counters are polled (DL/T 645-2007 only): `cover_open`, `power_down`,
    /// `meter_clear`, `clock_set`, `programming`. Published as `meterd.event.v1`; the
    /// simulator serves the counters and records of the kinds listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Spanned<String>>,
    /// The points.
    #[serde(rename = "point")]
    pub points: Vec<Spanned<Point>>,
    /// How `meterd scan` recognises the model (Modbus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identify: Option<Identify>,
}

impl Profile {
    /// True when a meter speaking `protocol` can use this profile.
    pub fn supports(&self, protocol: Protocol) -> bool {
        matches!(
            (self.protocol, protocol),
            (ProfileProtocol::Dlt645_2007, Protocol::Dlt645_2007)
                | (ProfileProtocol::Dlt645_1997, Protocol::Dlt645_1997)
                | (
                    ProfileProtocol::Modbus,
                    Protocol::ModbusRtu | Protocol::ModbusTcp
                )
        )
    }

    /// The protocol family's name.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            ProfileProtocol::Dlt645_2007 => "dlt645-2007",
            ProfileProtocol::Dlt645_1997 => "dlt645-1997",
            ProfileProtocol::Modbus => "modbus",
        }
    }

    /// Parses and checks one profile file.
    pub fn parse(file: &Path, text: &str) -> Result<Profile, ConfigError> {
        let profile: Profile = parse_toml(file, text)?;
        profile.check(file, text)?;
        Ok(profile)
    }

    /// The freeze kinds of [`Profile::freezes`] (unknown names were refused by the checks).
    pub fn freeze_kinds(&self) -> Vec<FreezeKind> {
        self.freezes
            .iter()
            .filter_map(|k| FreezeKind::parse(k.get_ref()))
            .collect()
    }

    /// The load-record interval and depth (defaults where not set; the checks refused bad
    /// values).
    pub fn load_profile(&self) -> LoadProfileSpec {
        LoadProfileSpec {
            interval_minutes: self
                .load_profile_interval
                .as_ref()
                .and_then(|i| parse_load_interval(i.get_ref()).ok())
                .unwrap_or(LOAD_PROFILE_DEFAULT_MINUTES),
            depth: self
                .load_profile_depth
                .as_ref()
                .map_or(DEFAULT_LOAD_PROFILE_DEPTH, |d| *d.get_ref()),
        }
    }

    /// The event kinds of [`Profile::events`] (unknown names were refused by the checks).
    pub fn event_kinds(&self) -> Vec<EventKind> {
        self.events
            .iter()
            .filter_map(|k| EventKind::parse(k.get_ref()))
            .collect()
    }

    fn check_events(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        for (i, kind) in self.events.iter().enumerate() {
            let fail = |msg: String| {
                ConfigError::at(file, text, Some(kind.span()), format!("events[{i}]"), msg)
            };
            if EventKind::parse(kind.get_ref()).is_none() {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                return Err(fail(format!(
                    "unknown event type {:?}; known: {}",
                    kind.get_ref(),
                    known.join(", ")
                )));
            }
            let version = self.dlt645_version();
            if let Some(why) = EventKind::parse(kind.get_ref())
                .and_then(|k| event_unsupported(k, version, self.protocol_name(), "profile"))
            {
                return Err(fail(why));
            }
        }
        Ok(())
    }

    /// The DL/T 645 edition of the profile's meters (`None` for Modbus).
    fn dlt645_version(&self) -> Option<Version> {
        match self.protocol {
            ProfileProtocol::Dlt645_2007 => Some(Version::V2007),
            ProfileProtocol::Dlt645_1997 => Some(Version::V1997),
            ProfileProtocol::Modbus => None,
        }
    }

    fn check_freezes(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        for (i, kind) in self.freezes.iter().enumerate() {
            let fail = |msg: String| {
                ConfigError::at(file, text, Some(kind.span()), format!("freezes[{i}]"), msg)
            };
            if FreezeKind::parse(kind.get_ref()).is_none() {
                let known: Vec<&str> = FreezeKind::ALL.iter().map(|k| k.name()).collect();
                return Err(fail(format!(
                    "unknown freeze kind {:?}; known: {}",
                    kind.get_ref(),
                    known.join(", ")
                )));
            }
            let version = self.dlt645_version();
            if let Some(why) = FreezeKind::parse(kind.get_ref())
                .and_then(|k| freeze_unsupported(k, version, self.protocol_name(), "profile"))
            {
                return Err(fail(why));
            }
        }
        Ok(())
    }

    fn check_load_profile(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        if let Some(interval) = &self.load_profile_interval
            && let Err(why) = parse_load_interval(interval.get_ref())
        {
            return Err(ConfigError::at(
                file,
                text,
                Some(interval.span()),
                "load_profile_interval",
                why,
            ));
        }
        if let Some(depth) = &self.load_profile_depth
            && !(1..=MAX_LOAD_PROFILE_DEPTH).contains(depth.get_ref())
        {
            return Err(ConfigError::at(
                file,
                text,
                Some(depth.span()),
                "load_profile_depth",
                format!(
                    "{} load records: a meter keeps 1..={MAX_LOAD_PROFILE_DEPTH}",
                    depth.get_ref()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn check(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        self.check_freezes(file, text)?;
        self.check_load_profile(file, text)?;
        self.check_events(file, text)?;
        if self.points.is_empty() {
            return Err(ConfigError::at(
                file,
                text,
                None,
                "point",
                "a profile needs at least one [[point]]",
            ));
        }
        if let Some(identify) = &self.identify {
            if self.protocol != ProfileProtocol::Modbus {
                return Err(ConfigError::at(
                    file,
                    text,
                    None,
                    "identify",
                    "[identify] is for Modbus profiles (DL/T 645 meters are identified by their DIs)",
                ));
            }
            identify.check(|key, msg| ConfigError::at(file, text, None, key, msg))?;
        }
        for (i, p) in self.points.iter().enumerate() {
            let span = Some(p.span());
            let p = p.get_ref();
            let key = |k: &str| format!("point[{i}].{k}");
            let fail =
                |k: &str, msg: String| ConfigError::at(file, text, span.clone(), key(k), msg);
            match self.protocol {
                ProfileProtocol::Dlt645_2007 | ProfileProtocol::Dlt645_1997 => {
                    let Some(di) = &p.di else {
                        return Err(fail("di", "a DL/T 645 point needs `di`".into()));
                    };
                    let want = if self.protocol == ProfileProtocol::Dlt645_2007 {
                        8
                    } else {
                        4
                    };
                    if di.len() != want || DataIdentifier::parse(di).is_none() {
                        return Err(fail(
                            "di",
                            format!("expected {want} hex digits, found {di:?}"),
                        ));
                    }
                    if p.function.is_some() || p.register.is_some() || p.value_type.is_some() {
                        return Err(fail(
                            "register",
                            "DL/T 645 points take `di`, not Modbus fields".into(),
                        ));
                    }
                }
                ProfileProtocol::Modbus => {
                    if p.di.is_some() {
                        return Err(fail(
                            "di",
                            "a Modbus point takes function/register/type, not `di`".into(),
                        ));
                    }
                    if p.quantity.is_none() {
                        return Err(fail("quantity", "a Modbus point needs `quantity`".into()));
                    }
                    let (Some(function), Some(register), Some(ty)) =
                        (p.function, p.register, p.value_type)
                    else {
                        return Err(fail(
                            "register",
                            "a Modbus point needs `function`, `register` and `type`".into(),
                        ));
                    };
                    let bitwise = matches!(
                        function,
                        RegisterFunction::Coil | RegisterFunction::Discrete
                    );
                    if bitwise && ty != RegisterType::Bit {
                        return Err(fail(
                            "type",
                            "coils and discrete inputs are `type = \"bit\"`".into(),
                        ));
                    }
                    if ty == RegisterType::Bit && !bitwise && !matches!(p.bit, Some(0..=15)) {
                        return Err(fail(
                            "bit",
                            "a bit of a register needs `bit` = 0..15".into(),
                        ));
                    }
                    if u32::from(register) + u32::from(ty.registers()) > 65_536 {
                        return Err(fail(
                            "register",
                            format!("register {register} + {} runs past 65535", ty.registers()),
                        ));
                    }
                    if let Some(q) = &p.quantity {
                        meter_protocols::quantity::published_unit(q, p.unit.as_deref())
                            .map_err(|e| fail("unit", e))?;
                        if let (Some(given), Some(code)) = (
                            &p.obis,
                            meter_protocols::dlt645::catalog::obis_for_quantity(q),
                        ) && *given != code
                        {
                            return Err(fail(
                                "obis",
                                format!("{q} is {code} (docs/quantities.md), not {given:?}"),
                            ));
                        }
                    }
                    if let Some(s) = p
                        .scale
                        .as_ref()
                        .filter(|s| s.parse::<meter_protocols::Decimal>().is_err())
                    {
                        return Err(fail(
                            "scale",
                            format!("expected a decimal number such as \"0.01\", found {s:?}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// All profiles known to the daemon, by name.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    by_name: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// The built-in profiles, then every `*.toml` in `dirs` (later ones replace earlier ones).
    pub fn load(dirs: &[PathBuf]) -> Result<ProfileSet, ConfigError> {
        let mut set = ProfileSet::default();
        for (name, text) in BUILTIN {
            let path = PathBuf::from(format!("<built-in>/{name}"));
            set.insert(Profile::parse(&path, text)?);
        }
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                ConfigError::file(dir, format!("cannot read profile directory: {e}"))
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError::file(&file, format!("cannot read profile: {e}")))?;
                set.insert(Profile::parse(&file, &text)?);
            }
        }
        Ok(set)
    }

    /// The built-in profiles only.
    pub fn builtin() -> Result<ProfileSet, ConfigError> {
        Self::load(&[])
    }

    fn insert(&mut self, p: Profile) {
        self.by_name.insert(p.name.clone(), p);
    }

    /// The set with `profile` added (replacing one of the same name): for the CLI's
    /// `--quantity` reads, which make a profile on the fly.
    pub fn with(mut self, profile: Profile) -> Self {
        self.insert(profile);
        self
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// The profile a meter speaking `protocol` names, or why it cannot use it.
    pub fn for_meter(&self, name: &str, protocol: Protocol) -> Result<&Profile, String> {
        let profile = self.get(name).ok_or_else(|| {
            format!(
                "no profile named {name:?}; known: {}",
                self.names().join(", ")
            )
        })?;
        if profile.supports(protocol) {
            Ok(profile)
        } else {
            Err(format!(
                "profile {name:?} is for {}, not {}",
                profile.protocol_name(),
                protocol.name()
            ))
        }
    }

    /// All names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Every quantity name the profiles for `protocol` read, sorted: a point's own name, or
    /// (DL/T 645) the catalogue's names for its DI, every item of a block. These are the
    /// names a technician can expect to work, for "did you mean" hints.
    pub fn quantity_names(&self, protocol: Protocol) -> Vec<String> {
        use meter_protocols::dlt645::catalog::{DiInfo, lookup};
        let mut names = std::collections::BTreeSet::new();
        for profile in self.by_name.values().filter(|p| p.supports(protocol)) {
            for point in &profile.points {
                let point = point.get_ref();
                if let Some(q) = &point.quantity {
                    names.insert(q.clone());
                    continue;
                }
                match point
                    .di
                    .as_deref()
                    .and_then(DataIdentifier::parse)
                    .and_then(lookup)
                {
                    Some(DiInfo::Item(spec)) => {
                        names.insert(spec.quantity.into_owned());
                    }
                    Some(DiInfo::Block { items, .. }) => {
                        names.extend(items.into_iter().map(|i| i.quantity.into_owned()));
                    }
                    None => {}
                }
            }
        }
        names.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODBUS: &str = r#"
name = "m"
description = "d"
source = "s"
protocol = "modbus"
[[point]]
quantity = "voltage.l1"
function = "holding"
register = 0
type = "u16"
unit = "V"
"#;

    fn parse(text: &str) -> Result<Profile, ConfigError> {
        Profile::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn identify_registers_are_checked() {
        let ok = parse(&format!(
            "{MODBUS}[identify]\n[[identify.register]]\nname = \"code\"\nfunction = \"holding\"\nregister = 0xFC02\ntype = \"u16\"\nwidth = 2\nexpect = [0x70]\n"
        ))
        .unwrap();
        let identify = ok.identify.unwrap();
        assert!(identify.can_match());
        assert_eq!(identify.registers[0].read_width(), 2);
        for (extra, key, says) in [
            (
                "function = \"coil\"\nregister = 0\ntype = \"u16\"",
                "function",
                "holding or input",
            ),
            (
                "function = \"input\"\nregister = 0\ntype = \"bit\"",
                "type",
                "not bit",
            ),
            (
                "function = \"input\"\nregister = 0xFFFF\ntype = \"u32\"",
                "register",
                "past 65535",
            ),
            (
                "function = \"input\"\nregister = 0\ntype = \"f32\"\nexpect = [1]",
                "expect",
                "unsigned type",
            ),
            (
                "function = \"input\"\nregister = 0\ntype = \"u16\"\nexpect = [70000]",
                "expect",
                "does not fit u16",
            ),
        ] {
            let text =
                format!("{MODBUS}[identify]\n[[identify.register]]\nname = \"x\"\n{extra}\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, format!("identify.register[0].{key}"), "{extra}");
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
        let dlt = "name = \"d\"\ndescription = \"d\"\nsource = \"s\"\nprotocol = \"dlt645-2007\"\n[[point]]\ndi = \"00010000\"\n[identify]\n";
        assert_eq!(parse(dlt).unwrap_err().key, "identify");
    }
}
