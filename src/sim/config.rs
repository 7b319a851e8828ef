//! The simulator's configuration file (`meterd simulate --config FILE`).
//!
//! This module owns parsing and checking: ports, the meters on each, their profiles, seeds
//! and faults, and the simulated clock. Errors are located (file, line, column, key) the same
//! way as the gateway's own configuration, through [`parse_toml`]. It never opens a port.
//!
//! ```toml
//! truth = "/tmp/sim-truth.jsonl"          # optional ground-truth log
//! control_log = "/tmp/sim-control.jsonl"  # optional: every 1C/03 frame received (sim::relay)
//! [clock]
//! start = "2026-11-27T00:00:00Z"          # optional; default: the host's clock
//! speed = 60.0                            # simulated seconds per real second
//!
//! [[port]]
//! name = "bus1"
//! tcp = "127.0.0.1:10645"                 # or serial = "/dev/ttyUSB0" | "pty", or modbus_tcp = "…"
//! baud = 2400
//! parity = "even"
//! wire_time = true
//! reply_latency = "20ms"
//! echo = false                            # true: an adapter that echoes every request
//!
//! [[port.meter]]
//! protocol = "dlt645-2007"
//! address = "000000000001"
//! profile = "dlt645-three-phase"
//! seed = 1
//! faults = { no_reply = { every = 10 } }
//! # dead for a window of simulated time (silent, deaf to broadcasts; clock and history go on):
//! # faults = { dead = [{ from = "2026-12-02T13:00:00Z", to = "2026-12-02T19:00:00Z" }] }
//! identity = { asset_code = "A-0001", model = "DTZY-1" }   # optional; see `SimIdentity`
//! relay = { password = "123456", operators = ["12345678"], button = "/tmp/button-1" }  # sim::relay
//! ```

use crate::clock::UtcOffset;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meter_protocols::dlt645::Address;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::fault::{FaultKind, FaultsConfig};
use crate::clock::{UnixMillis, parse_rfc3339};
use crate::config::{ConfigError, Parity, ProfileSet, Protocol, parse_toml};

/// The special `serial` value that makes the simulator create a pseudo-terminal pair.
pub const PTY: &str = "pty";

/// The simulated clock (`[clock]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Simulated time at start-up, RFC 3339 UTC (`2026-11-27T00:00:00Z`); default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Simulated seconds per real second (default 1).
    #[serde(default = "one")]
    pub speed: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            start: None,
            speed: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

impl ClockConfig {
    /// The start instant, when configured and valid.
    pub fn start_millis(&self) -> Option<UnixMillis> {
        self.start.as_deref().and_then(parse_rfc3339)
    }
}

/// One simulated meter (`[[port.meter]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimMeterConfig {
    /// Name in logs and the truth log; defaults to the address or `{port}-unit{N}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Protocol.
    pub protocol: Protocol,
    /// DL/T 645 address (12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Modbus unit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u8>,
    /// Profile (the same profiles the gateway reads).
    pub profile: String,
    /// Seed of the meter's values and faults (default: from the address or unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `FE` bytes before each DL/T 645 reply (0–4, default 0).
    #[serde(default)]
    pub preamble: u8,
    /// Fault injection.
    #[serde(default)]
    pub faults: FaultsConfig,
    /// The meter's time zone: its clock (`04000101`/`04000102`) and freeze stamps are local
    /// time in it, as on a real DL/T 645 meter. Default `+08:00`, China Standard Time.
    #[serde(default = "china")]
    pub utc_offset: UtcOffset,
    /// Days (`"2026-12-05"`, the meter's own date) whose midnight daily freeze the meter did
    /// not make (unpowered at midnight): its history skips them, so a gateway finds no record
    /// with that stamp and must report it lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze_gaps: Vec<String>,
    /// The frozen histories the meter keeps (`daily`, `monthly`, `hourly`, `load_profile`);
    /// default: its profile's `freezes`. Lets a test or demo meter keep a load profile
    /// without a profile that makes every gateway meter collect one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezes: Option<Vec<String>>,
    /// Load-record stamps (`"2026-12-07T10:15"`, the meter's own clock) the meter did not
    /// record (unpowered then): its load profile skips them, so a gateway asking for one gets
    /// the next record and must report it lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_profile_gaps: Vec<String>,
    /// What the meter says about itself (`meterd scan`'s identification).
    #[serde(default)]
    pub identity: SimIdentity,
    /// Events the meter has had or will have: `{ type = "cover_open", at = "2026-12-07T08:00:00Z" }`
    /// (one occurrence at that simulated time; one in the past is old history at first
    /// contact) or `{ type = "power_down", every = "30s" }` (one every 30 s of simulated time
    /// from the meter's first request). Served only for the types its profile's `events` lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SimEventConfig>,
    /// The meter's clock error at start, in seconds (positive: ahead of true time).
    #[serde(default)]
    pub clock_offset_s: i64,
    /// How fast the meter's clock drifts, in parts per million (positive: gains).
    #[serde(default)]
    pub clock_ppm: f64,
    /// The relay and fee control (DL/T 645-2007 only): password, levels, operators, initial
    /// state, ESAM, clock error, button file. See [`super::relay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<super::relay::SimRelayConfig>,
}

/// One configured event of a simulated meter (`events = [ … ]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimEventConfig {
    /// `cover_open`, `power_down`, `meter_clear`, `clock_set`, `programming`.
    #[serde(rename = "type")]
    pub ty: String,
    /// One occurrence at this simulated time (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// One occurrence every this long, from the meter's first request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::opt_duration::serialize",
        deserialize_with = "crate::config::opt_duration::deserialize"
    )]
    pub every: Option<Duration>,
    /// How long each occurrence lasts (its end time; default 10 s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::opt_duration::serialize",
        deserialize_with = "crate::config::opt_duration::deserialize"
    )]
    pub duration: Option<Duration>,
}

fn china() -> UtcOffset {
    UtcOffset::CHINA
}

/// A simulated meter's identity (`identity = { … }`); every field defaults to a value derived
/// from the address or unit, so that each meter differs and a test can predict it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimIdentity {
    /// DL/T 645 meter number, `04000402` (12 digits; default: the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// DL/T 645 asset management code, `04000403` (default `SIM-{address}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_code: Option<String>,
    /// DL/T 645 model, `0400040B` (default `MTRD-SIM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// DL/T 645 production date, `0400040C` (default `2024-01-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_date: Option<String>,
    /// DL/T 645 firmware version, `04800001` (default `meterd-sim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Modbus: the value of the profile's identification registers that have no `expect`
    /// (a serial number; default `20240000 + unit`), cut to the register's type. Registers
    /// with `expect` answer its first value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

/// `2026-12-05` as days since 1970-01-01.
fn parse_day(text: &str) -> Option<i64> {
    let ms = parse_rfc3339(&format!("{text}T00:00:00Z"))?;
    Some(ms.div_euclid(86_400_000))
}

/// `2026-12-07T10:15` as the meter's local minute.
fn parse_local_minute(text: &str) -> Option<meter_protocols::dlt645::freeze::LocalMinute> {
    let ms = parse_rfc3339(&format!("{text}:00Z"))?;
    Some(meter_protocols::dlt645::freeze::LocalMinute(
        ms.div_euclid(60_000),
    ))
}

impl SimMeterConfig {
    /// [`SimMeterConfig::load_profile_gaps`] as the meter's local minutes.
    pub fn load_profile_gap_stamps(&self) -> Vec<meter_protocols::dlt645::freeze::LocalMinute> {
        self.load_profile_gaps
            .iter()
            .filter_map(|d| parse_local_minute(d))
            .collect()
    }

    /// [`SimMeterConfig::freeze_gaps`] as days since 1970-01-01 (on the meter's clock).
    pub fn freeze_gap_days(&self) -> Vec<i64> {
        self.freeze_gaps
            .iter()
            .filter_map(|d| parse_day(d))
            .collect()
    }

    /// The meter's name.
    pub fn effective_id(&self, port: &str) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        match (&self.address, self.unit) {
            (Some(a), _) => a
                .parse::<Address>()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| a.clone()),
            (None, Some(u)) => format!("{port}-unit{u}"),
            (None, None) => format!("{port}-meter"),
        }
    }

    /// The seed: configured, or derived from the address/unit so that every meter differs.
    pub fn effective_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let key = match (&self.address, self.unit) {
                (Some(a), _) => a.clone(),
                (None, Some(u)) => format!("unit{u}"),
                (None, None) => String::new(),
            };
            key.bytes()
                .fold(0xC0FFEE_u64, |acc, b| super::model::mix(acc ^ u64::from(b)))
        })
    }
}

/// Where a port listens or which device it drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A serial device path (the meters' end of a cable or of a pty pair made elsewhere).
    Serial(String),
    /// A pseudo-terminal pair made by the simulator; the gateway opens the other end.
    Pty {
        /// A symlink to create to the gateway's end (removed on shutdown).
        link: Option<PathBuf>,
    },
    /// A raw TCP listener carrying serial bytes (a "serial device server").
    Tcp(String),
    /// A Modbus TCP server.
    ModbusTcp(String),
}

/// One port (`[[port]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name in messages and the truth log (default `port{N}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Serial device path, or `"pty"` for a pseudo-terminal pair made by the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// With `serial = "pty"`: a symlink to the gateway's end, e.g. `/tmp/ttySIM0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
    /// Raw TCP listener (`127.0.0.1:10645`; port 0 = ephemeral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Modbus TCP listener (`127.0.0.1:1502`; port 0 = ephemeral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modbus_tcp: Option<String>,
    /// Line speed for the serial device and for wire-time emulation.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity (wire time counts its bit; a pty cannot apply it).
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// Data bits (5–8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits (1–2).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Delay replies as a real line would: request and reply bytes × bits per char ÷ baud.
    #[serde(default)]
    pub wire_time: bool,
    /// The meter's think time between the request's last byte and the reply's first.
    #[serde(default, with = "crate::config::duration")]
    pub reply_latency: Duration,
    /// Send reply bytes one by one at line speed (with `wire_time`).
    #[serde(default)]
    pub pace: bool,
    /// An echoing adapter: every byte the gateway sends comes back to it at once, before any
    /// reply (half-duplex RS-485 converters without echo suppression). Byte-stream ports only.
    #[serde(default)]
    pub echo: bool,
    /// The meters on this port.
    #[serde(default, rename = "meter")]
    pub meters: Vec<Spanned<SimMeterConfig>>,
}

fn default_baud() -> u32 {
    2400
}
fn default_parity() -> Parity {
    Parity::Even
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

impl PortConfig {
    /// The port's name (`port{index}` when unset).
    pub fn effective_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("port{index}"))
    }

    /// Where the port is; `None` unless exactly one of `serial`, `tcp`, `modbus_tcp` is set.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match (&self.serial, &self.tcp, &self.modbus_tcp) {
            (Some(s), None, None) if s == PTY => Some(Endpoint::Pty {
                link: self.link.clone(),
            }),
            (Some(s), None, None) => Some(Endpoint::Serial(s.clone())),
            (None, Some(a), None) => Some(Endpoint::Tcp(a.clone())),
            (None, None, Some(a)) => Some(Endpoint::ModbusTcp(a.clone())),
            _ => None,
        }
    }

    /// Bits on the line per character: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// Time `bytes` characters take on the line.
    pub fn wire_time_of(&self, bytes: usize) -> Duration {
        if self.baud == 0 {
            return Duration::ZERO;
        }
        let bits = bytes as u64 * u64::from(self.bits_per_char());
        Duration::from_nanos(bits.saturating_mul(1_000_000_000) / u64::from(self.baud))
    }
}

/// The whole simulator configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SimFile {
    #[serde(default)]
    truth: Option<PathBuf>,
    #[serde(default)]
    time_set_log: Option<PathBuf>,
    control_log: Option<PathBuf>,
    #[serde(default)]
    profile_dirs: Vec<PathBuf>,
    #[serde(default)]
    clock: ClockConfig,
    #[serde(default, rename = "port")]
    ports: Vec<Spanned<PortConfig>>,
}

/// A checked simulator configuration, with the profiles its meters use.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Ground-truth log (JSON lines), if any.
    pub truth: Option<PathBuf>,
    /// Log of every broadcast time set the meters received (JSON lines), if any: when, which
    /// meter, its clock before, the time sent, whether it took it and why not.
    pub time_set_log: Option<PathBuf>,
    /// Control log (JSON lines): every `1C` and `03` frame a meter received, if any.
    pub control_log: Option<PathBuf>,
    /// The simulated clock.
    pub clock: ClockConfig,
    /// The ports, in file order.
    pub ports: Vec<PortConfig>,
    /// Built-in profiles plus those of `profile_dirs`.
    pub profiles: ProfileSet,
}

impl SimConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<SimConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read configuration: {e}")))?;
        Self::from_text(path, &text)
    }

    /// Parses and checks configuration text (`path` names it in errors and anchors relative
    /// profile directories).
    pub fn from_text(path: &Path, text: &str) -> Result<SimConfig, ConfigError> {
        let file: SimFile = parse_toml(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let dirs: Vec<PathBuf> = file.profile_dirs.iter().map(|d| base.join(d)).collect();
        let profiles = ProfileSet::load(&dirs)?;
        check(path, text, &file, &profiles)?;
        Ok(SimConfig {
            truth: file.truth,
            time_set_log: file.time_set_log,
            control_log: file.control_log,
            clock: file.clock,
            ports: file.ports.into_iter().map(Spanned::into_inner).collect(),
            profiles,
        })
    }
}

fn check(
    path: &Path,
    text: &str,
    file: &SimFile,
    profiles: &ProfileSet,
) -> Result<(), ConfigError> {
    let err = |span: Option<std::ops::Range<usize>>, key: String, msg: String| {
        ConfigError::at(path, text, span, key, msg)
    };
    if !(file.clock.speed.is_finite() && file.clock.speed > 0.0) {
        return Err(err(
            None,
            "clock.speed".into(),
            "must be a positive number".into(),
        ));
    }
    if let Some(start) = &file.clock.start
        && parse_rfc3339(start).is_none()
    {
        return Err(err(
            None,
            "clock.start".into(),
            format!("expected RFC 3339 UTC such as \"2026-11-27T00:00:00Z\", found {start:?}"),
        ));
    }
    if file.ports.is_empty() {
        return Err(err(
            None,
            "port".into(),
            "configure at least one [[port]]".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut endpoints = HashSet::new();
    let mut ids = HashSet::new();
    for (pi, port) in file.ports.iter().enumerate() {
        let span = Some(port.span());
        let port = port.get_ref();
        let key = |k: &str| format!("port[{pi}].{k}");
        let name = port.effective_name(pi);
        if !names.insert(name.clone()) {
            return Err(err(
                span,
                key("name"),
                format!("port name {name:?} is used twice"),
            ));
        }
        let Some(endpoint) = port.endpoint() else {
            return Err(err(
                span,
                key("serial"),
                "give exactly one of `serial`, `tcp` or `modbus_tcp`".into(),
            ));
        };
        if port.link.is_some() && !matches!(endpoint, Endpoint::Pty { .. }) {
            return Err(err(
                span,
                key("link"),
                "`link` goes with `serial = \"pty\"`".into(),
            ));
        }
        let described = format!("{endpoint:?}");
        let ephemeral =
            matches!(&endpoint, Endpoint::Tcp(a) | Endpoint::ModbusTcp(a) if a.ends_with(":0"));
        if !matches!(endpoint, Endpoint::Pty { .. }) && !ephemeral && !endpoints.insert(described) {
            return Err(err(
                span,
                key("serial"),
                "two ports use the same device or address".into(),
            ));
        }
        if port.baud == 0 {
            return Err(err(span, key("baud"), "must be greater than 0".into()));
        }
        if !(5..=8).contains(&port.data_bits) {
            return Err(err(
                span,
                key("data_bits"),
                format!("expected 5 to 8, found {}", port.data_bits),
            ));
        }
        if !(1..=2).contains(&port.stop_bits) {
            return Err(err(
                span,
                key("stop_bits"),
                format!("expected 1 or 2, found {}", port.stop_bits),
            ));
        }
        if port.meters.is_empty() {
            return Err(err(
                span,
                key("meter"),
                "a port needs at least one [[port.meter]]".into(),
            ));
        }
        let modbus_tcp = matches!(endpoint, Endpoint::ModbusTcp(_));
        if modbus_tcp && port.echo {
            return Err(err(
                span,
                key("echo"),
                "`echo` needs a serial or raw tcp port (Modbus TCP has no echo)".into(),
            ));
        }
        let mut addresses = HashSet::new();
        let mut units = HashSet::new();
        for (mi, meter) in port.meters.iter().enumerate() {
            let mspan = Some(meter.span());
            let meter = meter.get_ref();
            let mkey = |k: &str| format!("port[{pi}].meter[{mi}].{k}");
            if let Some(bad) = meter.freeze_gaps.iter().find(|d| parse_day(d).is_none()) {
                return Err(err(
                    mspan,
                    mkey("freeze_gaps"),
                    format!("expected a date such as \"2026-12-05\", found {bad:?}"),
                ));
            }
            if let Some(bad) = meter
                .freezes
                .iter()
                .flatten()
                .find(|k| meter_protocols::dlt645::freeze::FreezeKind::parse(k).is_none())
            {
                return Err(err(
                    mspan,
                    mkey("freezes"),
                    format!(
                        "unknown freeze kind {bad:?}; known: daily, monthly, hourly, load_profile"
                    ),
                ));
            }
            if let Some(bad) = meter
                .load_profile_gaps
                .iter()
                .find(|d| parse_local_minute(d).is_none())
            {
                return Err(err(
                    mspan,
                    mkey("load_profile_gaps"),
                    format!("expected a local time such as \"2026-12-07T10:15\", found {bad:?}"),
                ));
            }
            for (ei, e) in meter.events.iter().enumerate() {
                let ekey = mkey(&format!("events[{ei}]"));
                if meter_protocols::dlt645::event::EventKind::parse(&e.ty).is_none() {
                    return Err(err(
                        mspan.clone(),
                        ekey,
                        format!(
                            "unknown event type {:?}; known: cover_open, power_down, \
                             meter_clear, clock_set, programming",
                            e.ty
                        ),
                    ));
                }
                let at_ok = e.at.as_deref().map(parse_rfc3339);
                match (at_ok, e.every) {
                    (Some(Some(_)), None) => {}
                    (None, Some(every)) if every >= Duration::from_millis(100) => {}
                    (Some(None), _) => {
                        return Err(err(
                            mspan.clone(),
                            ekey,
                            "`at` must be RFC 3339 UTC such as \"2026-12-07T08:00:00Z\"".into(),
                        ));
                    }
                    _ => {
                        return Err(err(
                            mspan.clone(),
                            ekey,
                            "give exactly one of `at` or `every` (at least 100ms)".into(),
                        ));
                    }
                }
            }
            if !meter.clock_ppm.is_finite() || meter.clock_ppm.abs() > 10_000.0 {
                return Err(err(
                    mspan,
                    mkey("clock_ppm"),
                    "expected a number from -10000 to 10000".into(),
                ));
            }
            if let Some(relay) = &meter.relay {
                if meter.protocol != Protocol::Dlt645_2007 {
                    return Err(err(
                        mspan,
                        mkey("relay"),
                        format!(
                            "only dlt645-2007 meters have remote control (0x1C), not {}",
                            meter.protocol.name()
                        ),
                    ));
                }
                if let Some(problem) = relay.problem() {
                    return Err(err(mspan, mkey("relay"), problem));
                }
            }
            if (meter.protocol == Protocol::ModbusTcp) != modbus_tcp {
                return Err(err(
                    mspan,
                    mkey("protocol"),
                    if modbus_tcp {
                        format!(
                            "a modbus_tcp port serves modbus-tcp meters, not {}",
                            meter.protocol.name()
                        )
                    } else {
                        "modbus-tcp meters go on a `modbus_tcp` port".into()
                    },
                ));
            }
            if meter.protocol.is_dlt645() {
                let Some(a) = &meter.address else {
                    return Err(err(
                        mspan,
                        mkey("address"),
                        "a DL/T 645 meter needs `address` (12 digits)".into(),
                    ));
                };
                let parsed: Address = a
                    .parse()
                    .map_err(|e| err(mspan.clone(), mkey("address"), format!("{e}")))?;
                if parsed.is_broadcast() || parsed.has_wildcard() || !parsed.is_bcd() {
                    return Err(err(
                        mspan,
                        mkey("address"),
                        "a meter needs a real address, not broadcast or wildcard".into(),
                    ));
                }
                if !addresses.insert(parsed) {
                    return Err(err(
                        mspan,
                        mkey("address"),
                        format!("address {parsed} is used twice on this port"),
                    ));
                }
                if meter.unit.is_some() {
                    return Err(err(
                        mspan,
                        mkey("unit"),
                        "a DL/T 645 meter has an `address`, not a `unit`".into(),
                    ));
                }
            } else {
                let Some(unit) = meter.unit else {
                    return Err(err(
                        mspan,
                        mkey("unit"),
                        "a Modbus meter needs `unit`".into(),
                    ));
                };
                if meter.protocol == Protocol::ModbusRtu && !(1..=247).contains(&unit) {
                    return Err(err(
                        mspan,
                        mkey("unit"),
                        format!("expected 1 to 247, found {unit}"),
                    ));
                }
                if !units.insert(unit) {
                    return Err(err(
                        mspan,
                        mkey("unit"),
                        format!("unit {unit} is used twice on this port"),
                    ));
                }
                if meter.address.is_some() {
                    return Err(err(
                        mspan,
                        mkey("address"),
                        "a Modbus meter has a `unit`, not an `address`".into(),
                    ));
                }
            }
            if let Err(why) = profiles.for_meter(&meter.profile, meter.protocol) {
                return Err(err(mspan, mkey("profile"), why));
            }
            if meter.preamble > 4 {
                return Err(err(mspan, mkey("preamble"), "expected 0 to 4".into()));
            }
            if let Err((k, msg)) = meter.faults.check() {
                return Err(err(mspan, mkey(&k), msg));
            }
            if modbus_tcp
                && let Some(kind) = FaultKind::ALL
                    .into_iter()
                    .find(|k| k.is_byte_level() && meter.faults.rule(*k).is_some())
            {
                return Err(err(
                    mspan,
                    mkey(&format!("faults.{}", kind.key())),
                    "byte-level faults need a serial or raw tcp port (Modbus TCP framing belongs to tokio-modbus)".into(),
                ));
            }
            let id = meter.effective_id(&name);
            if !ids.insert(id.clone()) {
                return Err(err(
                    mspan,
                    mkey("id"),
                    format!("meter id {id:?} is used twice"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[clock]
start = "2026-11-27T00:00:00Z"

[[port]]
name = "bus"
tcp = "127.0.0.1:0"
wire_time = true
reply_latency = "20ms"

[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
faults = { no_reply = { every = 3 } }

[[port.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "generic-modbus"
"#;

    fn load(text: &str) -> Result<SimConfig, ConfigError> {
        SimConfig::from_text(Path::new("sim.toml"), text)
    }

    #[test]
    fn a_good_file_loads() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.ports.len(), 1);
        let p = &c.ports[0];
        assert_eq!(p.endpoint(), Some(Endpoint::Tcp("127.0.0.1:0".into())));
        assert_eq!(p.bits_per_char(), 11);
        assert_eq!(p.wire_time_of(24), Duration::from_millis(110));
        assert_eq!(p.meters[0].get_ref().effective_id("bus"), "000000000001");
        assert_eq!(
            c.clock.start_millis(),
            parse_rfc3339("2026-11-27T00:00:00Z")
        );
    }

    #[test]
    fn errors_are_located() {
        let e = load(&GOOD.replace("every = 3", "every = 0")).unwrap_err();
        assert_eq!(e.key, "port[0].meter[0].faults.no_reply", "{e}");
        let e = load(&GOOD.replace("reply_latency = \"20ms\"", "reply_latency = \"soon\""))
            .unwrap_err();
        assert_eq!(e.key, "port[0].reply_latency", "{e}");
        let e = load(&GOOD.replace("wire_time", "wire_tme")).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let e = load(&GOOD.replace("unit = 3", "unit = 0")).unwrap_err();
        assert_eq!(e.key, "port[0].meter[1].unit", "{e}");
        assert!(e.line > 0, "{e}");
        let e = load(&GOOD.replace("tcp = ", "modbus_tcp = ")).unwrap_err();
        assert_eq!(e.key, "port[0].meter[0].protocol", "{e}");
        let e = load(&GOOD.replace(
            "profile = \"generic-modbus\"",
            "profile = \"dlt645-three-phase\"",
        ))
        .unwrap_err();
        assert!(e.message.contains("is for dlt645-2007"), "{e}");
        let e = load(
            &GOOD
                .replace("{ no_reply = { every = 3 } }", "{ echo = { every = 3 } }")
                .replace("tcp = ", "modbus_tcp = ")
                .replace("dlt645-2007", "modbus-tcp")
                .replace("address = \"000000000001\"", "unit = 1")
                .replace("dlt645-three-phase", "generic-modbus")
                .replace("modbus-rtu", "modbus-tcp"),
        )
        .unwrap_err();
        assert_eq!(e.key, "port[0].meter[0].faults.echo", "{e}");
    }

    #[test]
    fn events_and_clock_are_checked_with_their_place() {
        let with = |line: &str| {
            load(&GOOD.replace(
                "faults = { no_reply = { every = 3 } }",
                &format!("faults = {{ no_reply = {{ every = 3 }} }}\n{line}"),
            ))
        };
        let ok = with(
            "events = [{ type = \"cover_open\", at = \"2026-12-07T08:00:00Z\" }, \
             { type = \"power_down\", every = \"30s\", duration = \"5s\" }]\n\
             clock_offset_s = -90\nclock_ppm = 12.5",
        )
        .unwrap();
        let m = ok.ports[0].meters[0].get_ref();
        assert_eq!(m.events.len(), 2);
        assert_eq!((m.clock_offset_s, m.clock_ppm), (-90, 12.5));
        let e = with("events = [{ type = \"lid\", every = \"1s\" }]").unwrap_err();
        assert_eq!(e.key, "port[0].meter[0].events[0]", "{e}");
        assert!(e.message.contains("unknown event type"), "{e}");
        let e = with("events = [{ type = \"power_down\" }]").unwrap_err();
        assert!(e.message.contains("exactly one of `at` or `every`"), "{e}");
        let e = with("events = [{ type = \"power_down\", at = \"today\" }]").unwrap_err();
        assert!(e.message.contains("RFC 3339"), "{e}");
        let e = with("clock_ppm = 1e9").unwrap_err();
        assert_eq!(e.key, "port[0].meter[0].clock_ppm", "{e}");
    }

    #[test]
    fn the_example_simulator_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["config/sim-bus.toml", "config/sim-demo.toml"] {
            SimConfig::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
