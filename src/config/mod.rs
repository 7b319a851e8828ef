//! The gateway's configuration: one TOML file (`meterd run --config FILE`) plus meter profiles.
//!
//! This module owns parsing and checking. Every problem is reported with the file, line,
//! column and key, and the daemon never starts half-configured: [`Config::load`] either returns
//! a complete, cross-checked configuration or the first error. It never opens a port or a
//! socket.

pub mod build;
mod control;
mod error;
mod events;
mod freeze;
mod mqtt;
pub mod profile;
mod range;
mod service;
mod validation;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meter_protocols::dlt645::Address;
use meter_protocols::dlt645::event::EventKind;
use meter_protocols::dlt645::freeze::FreezeKind;
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use crate::clock::UtcOffset;

pub use control::{ControlConfig, ControlKey, QuietHours};
pub use error::{ConfigError, parse_toml};
pub use events::{EventsConfig, MeterClockConfig};
pub use freeze::FreezeConfig;
pub use mqtt::{BrokerUrl, MqttConfig, MqttProtocol, MqttSettingError};
pub use profile::{Profile, ProfileSet};
pub use service::ServiceConfig;
pub use validation::ValidationConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Gateway id, part of every MQTT topic and reading id.
    pub gateway: String,
    /// Where the spool and per-meter state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Extra directories of meter profiles (`*.toml`); the built-in profiles are always there.
    #[serde(default)]
    pub profile_dirs: Vec<PathBuf>,
    /// Publish the raw response frames with each reading (the evidence behind a bill).
    #[serde(default = "yes")]
    pub evidence_frames: bool,
    /// The MQTT uplink to the billing core (`[mqtt]`).
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The durable spool between the buses and the uplink.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Plausibility checks that mark values suspect.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// The local diagnostics service (`[service]`): status page, `/api/status`, `/metrics`.
    #[serde(default)]
    pub service: ServiceConfig,
    /// Collection of the meters' own settlement records (`[freeze]`).
    #[serde(default)]
    pub freeze: FreezeConfig,
    /// Polling of the meters' event counters (`[events]`).
    #[serde(default)]
    pub events: EventsConfig,
    /// Meter clock checks and broadcast time sync (`[meter_clock]`).
    #[serde(default)]
    pub meter_clock: MeterClockConfig,
    /// Whether the gateway's own clock counts as synchronised (`[gateway_clock]`): meter clocks
    /// are compared and set, and fee commands accepted, only while it does.
    #[serde(default)]
    pub gateway_clock: GatewayClockConfig,
    /// Fee-control commands from the billing core (`[control]`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlConfig>,
    /// The buses and their meters.
    #[serde(default, rename = "bus")]
    pub buses: Vec<Spanned<BusConfig>>,
}

/// `[gateway_clock]`: where the gateway's trust in its own time comes from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayClockConfig {
    /// `"kernel"` (default: the kernel's NTP state), `"trusted"` (GPS/BeiDou or master-station
    /// time the kernel cannot see) or `"never"`. See docs/operations.md for what each risks.
    #[serde(default)]
    pub synchronised: crate::clock::gateway::ClockTrust,
}

/// Spool settings (`[spool]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most payload bytes kept while the broker is unreachable; beyond it the oldest readings
    /// are dropped (and counted). `"64MiB"`, `"512KiB"` or a number of bytes.
    #[serde(
        default = "default_spool_bytes",
        serialize_with = "byte_size::serialize",
        deserialize_with = "range::byte_size::<_, 65_536, 1_099_511_627_776>"
    )]
    pub max_bytes: u64,
    /// How long the first reading of a group waits for others before the group is committed
    /// (one transaction, one fsync). Readings of meters polled back to back then share a
    /// commit; it delays publication by at most this much. `"0s"` commits each arrival alone.
    #[serde(
        default = "default_commit_window",
        serialize_with = "duration::serialize",
        deserialize_with = "range::duration::<_, 0, 10_000>"
    )]
    pub commit_window: Duration,
}

fn default_spool_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_commit_window() -> Duration {
    Duration::from_millis(100)
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_spool_bytes(),
            commit_window: default_commit_window(),
        }
    }
}

/// Serde helpers for byte sizes written as `"64MiB"`, `"500kB"` or a plain integer.
pub mod byte_size {
    use super::*;

    /// Parses `123`, `"123"`, `"64KiB"`, `"64MiB"`, `"1GiB"`, `"500kB"`, `"2MB"`.
    pub fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult)
    }

    /// Deserializes a size from an integer or a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("not a size: {s:?} (write e.g. \"64MiB\")"))
            }),
        }
    }

    /// Serializes as a plain number of bytes.
    pub fn serialize<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/meterd")
}

fn yes() -> bool {
    true
}

/// How a bus is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// A local serial port (RS-485 adapter or on-board UART).
    Serial,
    /// Raw TCP to a serial device server ("transparent" DTU) carrying DL/T 645 or RTU bytes.
    Tcp,
    /// Modbus TCP (MBAP framing).
    ModbusTcp,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity (DL/T 645 default).
    Even,
    /// Odd parity.
    Odd,
}

/// A meter protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Protocol {
    /// DL/T 645-2007.
    #[serde(rename = "dlt645-2007")]
    Dlt645_2007,
    /// DL/T 645-1997.
    #[serde(rename = "dlt645-1997")]
    Dlt645_1997,
    /// Modbus RTU (serial, or raw TCP through a device server).
    #[serde(rename = "modbus-rtu")]
    ModbusRtu,
    /// Modbus TCP.
    #[serde(rename = "modbus-tcp")]
    ModbusTcp,
}

impl Protocol {
    /// The name used in the MQTT contract and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Dlt645_2007 => "dlt645-2007",
            Protocol::Dlt645_1997 => "dlt645-1997",
            Protocol::ModbusRtu => "modbus-rtu",
            Protocol::ModbusTcp => "modbus-tcp",
        }
    }

    /// True for both DL/T 645 editions.
    pub fn is_dlt645(self) -> bool {
        matches!(self, Protocol::Dlt645_2007 | Protocol::Dlt645_1997)
    }
}

/// Kernel RS-485 mode (TIOCSRS485): RTS drives the transceiver's direction.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rs485Config {
    /// Turn kernel RS-485 mode on for this port.
    #[serde(default)]
    pub enabled: bool,
    /// RTS level while sending (true = high).
    #[serde(default = "yes")]
    pub rts_on_send: bool,
    /// Delay after raising RTS before the first bit.
    #[serde(
        default,
        serialize_with = "duration::serialize",
        deserialize_with = "range::duration::<_, 0, 1_000>"
    )]
    pub delay_before_send: Duration,
    /// Delay after the last bit before dropping RTS.
    #[serde(
        default,
        serialize_with = "duration::serialize",
        deserialize_with = "range::duration::<_, 0, 1_000>"
    )]
    pub delay_after_send: Duration,
}

/// Timing and retry settings; set per bus and overridable per meter.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Longest wait for the first byte of a reply (DL/T 645 allows 500 ms + frame time).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration::serialize",
        deserialize_with = "range::opt_duration::<_, 1, 60_000>"
    )]
    pub response_timeout: Option<Duration>,
    /// Longest gap between two bytes of one reply before it is abandoned.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration::serialize",
        deserialize_with = "range::opt_duration::<_, 1, 10_000>"
    )]
    pub inter_byte_timeout: Option<Duration>,
    /// Silence kept after a reply before the next request (transceiver turnaround).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration::serialize",
        deserialize_with = "range::opt_duration::<_, 0, 10_000>"
    )]
    pub turnaround: Option<Duration>,
    /// Further attempts after a failed transaction.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::opt_number::<_, _, 0, 10>"
    )]
    pub retries: Option<u8>,
    /// `FE` wake-up bytes before each DL/T 645 request (0–4).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::opt_number::<_, _, 0, 4>"
    )]
    pub preamble: Option<u8>,
    /// The adapter echoes what it sends: drop our own bytes from the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Modbus RTU inter-frame silence (t3.5); derived from the baud rate when unset.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration::serialize",
        deserialize_with = "range::opt_duration::<_, 0, 10_000>"
    )]
    pub modbus_silence: Option<Duration>,
    /// After a timeout, wait this long (and discard input) before sending a different request,
    /// so that a late reply is never read as the next answer; default min(timeout/2, 300ms).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration::serialize",
        deserialize_with = "range::opt_duration::<_, 0, 60_000>"
    )]
    pub late_reply_guard: Option<Duration>,
}

/// Effective timing after defaults and overrides are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveTiming {
    /// See [`Timing::response_timeout`].
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// See [`Timing::inter_byte_timeout`].
    #[serde(with = "duration")]
    pub inter_byte_timeout: Duration,
    /// See [`Timing::turnaround`].
    #[serde(with = "duration")]
    pub turnaround: Duration,
    /// See [`Timing::retries`].
    pub retries: u8,
    /// See [`Timing::preamble`].
    pub preamble: u8,
    /// See [`Timing::echo`].
    pub echo: bool,
    /// See [`Timing::modbus_silence`].
    #[serde(with = "duration")]
    pub modbus_silence: Duration,
    /// See [`Timing::late_reply_guard`].
    #[serde(with = "duration")]
    pub late_reply_guard: Duration,
}

impl Timing {
    /// `self` where set, else `base`.
    pub fn over(&self, base: &Timing) -> Timing {
        Timing {
            response_timeout: self.response_timeout.or(base.response_timeout),
            inter_byte_timeout: self.inter_byte_timeout.or(base.inter_byte_timeout),
            turnaround: self.turnaround.or(base.turnaround),
            retries: self.retries.or(base.retries),
            preamble: self.preamble.or(base.preamble),
            echo: self.echo.or(base.echo),
            modbus_silence: self.modbus_silence.or(base.modbus_silence),
            late_reply_guard: self.late_reply_guard.or(base.late_reply_guard),
        }
    }

    /// Fills what is unset with defaults for a bus reached by `transport` at `baud`. On a
    /// Modbus TCP bus the turnaround and the t3.5 silence default to zero: they exist for
    /// RS-485 transceivers and serial framing, and MBAP framing needs neither (as defaults they
    /// capped such a bus at ~50 polls/s). Set explicitly, they still apply (slow gateways).
    pub fn effective_on(&self, transport: TransportKind, baud: u32) -> EffectiveTiming {
        let mut t = self.effective(baud);
        if transport == TransportKind::ModbusTcp {
            t.turnaround = self.turnaround.unwrap_or(Duration::ZERO);
            t.modbus_silence = self.modbus_silence.unwrap_or(Duration::ZERO);
        }
        t
    }

    /// Fills what is unset with protocol-appropriate defaults for `baud` (a serial line).
    pub fn effective(&self, baud: u32) -> EffectiveTiming {
        let response_timeout = self.response_timeout.unwrap_or(Duration::from_millis(1000));
        EffectiveTiming {
            response_timeout,
            inter_byte_timeout: self
                .inter_byte_timeout
                .unwrap_or(Duration::from_millis(500)),
            turnaround: self.turnaround.unwrap_or(Duration::from_millis(20)),
            retries: self.retries.unwrap_or(1),
            preamble: self.preamble.unwrap_or(4).min(4),
            echo: self.echo.unwrap_or(false),
            modbus_silence: self.modbus_silence.unwrap_or_else(|| t35(baud)),
            late_reply_guard: self
                .late_reply_guard
                .unwrap_or_else(|| (response_timeout / 2).min(Duration::from_millis(300))),
        }
    }
}

/// Modbus t3.5 for 11-bit characters; fixed 1.75 ms above 19200 baud (Modbus serial line spec).
pub fn t35(baud: u32) -> Duration {
    if baud == 0 || baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(38_500_000 / u64::from(baud))
    }
}

/// One bus: a serial port, a serial device server, or a Modbus TCP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Bus name (unique), used in logs, metrics and the status page.
    pub name: String,
    /// How the bus is reached.
    pub transport: TransportKind,
    /// Serial device path (transport = serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// `host:port` (transport = tcp or modbus-tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Baud rate (serial; also sets wire-time estimates for a serial server).
    #[serde(
        default = "default_baud",
        deserialize_with = "range::number::<_, _, 50, 4_000_000>"
    )]
    pub baud: u32,
    /// Parity.
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// Data bits (5–8).
    #[serde(
        default = "default_data_bits",
        deserialize_with = "range::number::<_, _, 5, 8>"
    )]
    pub data_bits: u8,
    /// Stop bits (1 or 2).
    #[serde(
        default = "default_stop_bits",
        deserialize_with = "range::number::<_, _, 1, 2>"
    )]
    pub stop_bits: u8,
    /// Kernel RS-485 mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rs485: Option<Rs485Config>,
    /// Timing for every meter on this bus (`[bus.timing]`; meters may override).
    #[serde(default)]
    pub timing: Timing,
    /// Consecutive failed polls before a meter is degraded (probed less often).
    #[serde(
        default = "default_degrade_after",
        deserialize_with = "range::number::<_, _, 1, 10_000>"
    )]
    pub degrade_after: u32,
    /// While degraded, probe a meter only every this many slots.
    #[serde(
        default = "default_probe_every",
        deserialize_with = "range::number::<_, _, 1, 1_000_000>"
    )]
    pub probe_every: u32,
    /// The meters on this bus.
    #[serde(default, rename = "meter")]
    pub meters: Vec<Spanned<MeterConfig>>,
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
fn default_degrade_after() -> u32 {
    3
}
fn default_probe_every() -> u32 {
    10
}

/// One meter on a bus.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Meter id in topics and readings; defaults to the DL/T 645 address or `{bus}-unit{N}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The meter's protocol.
    pub protocol: Protocol,
    /// DL/T 645 address (12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Modbus unit id (1–247; 0 or 255 are accepted for Modbus TCP gateways that need them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u8>,
    /// Profile name (built-in or from `profile_dirs`).
    pub profile: String,
    /// Poll interval, aligned to wall-clock slots (`15m` is read at :00, :15, …).
    #[serde(
        default = "default_interval",
        serialize_with = "duration::serialize",
        deserialize_with = "range::duration::<_, 100, 2_678_400_000>"
    )]
    pub interval: Duration,
    /// Timing overrides for this meter (`timing = { retries = 3 }`).
    #[serde(default)]
    pub timing: Timing,
    /// Cap on registers per Modbus read (overrides the profile's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::opt_number::<_, _, 1, 125>"
    )]
    pub max_registers: Option<u16>,
    /// Unused registers that may be read to merge two Modbus reads (overrides the profile's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "range::opt_number::<_, _, 0, 125>"
    )]
    pub gap_fill: Option<u16>,
    /// The meter's time zone: DL/T 645 meters keep local time, and their clock and freeze
    /// stamps are read in it. Default `+08:00`, China Standard Time.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: UtcOffset,
    /// The freeze kinds to collect from this meter (`daily`, `monthly`, `hourly`); default:
    /// those its profile lists. `[]` collects none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezes: Option<Vec<String>>,
    /// The event types whose counters are polled on this meter (`cover_open`, `power_down`,
    /// `meter_clear`, `clock_set`, `programming`); default: those its profile lists. `[]`
    /// polls none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_utc_offset() -> UtcOffset {
    UtcOffset::CHINA
}

impl MeterConfig {
    /// The freeze kinds collected from this meter: its own `freezes`, else its profile's.
    pub fn freeze_kinds(&self, profile: &Profile) -> Vec<FreezeKind> {
        match &self.freezes {
            Some(kinds) => kinds.iter().filter_map(|k| FreezeKind::parse(k)).collect(),
            None => profile.freeze_kinds(),
        }
    }

    /// The event kinds polled on this meter: its own `events`, else its profile's.
    pub fn event_kinds(&self, profile: &Profile) -> Vec<EventKind> {
        match &self.events {
            Some(kinds) => kinds.iter().filter_map(|k| EventKind::parse(k)).collect(),
            None => profile.event_kinds(),
        }
    }

    /// Checks `events`: known types, each one the meter's edition counts (DL/T 645-1997:
    /// programming only; Modbus: none).
    fn check_events(&self) -> Result<(), String> {
        let Some(kinds) = &self.events else {
            return Ok(());
        };
        if let Some(bad) = kinds.iter().find(|k| EventKind::parse(k).is_none()) {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!(
                "unknown event type {bad:?}; known: {}",
                known.join(", ")
            ));
        }
        let version = match self.protocol {
            Protocol::Dlt645_2007 => Some(meter_protocols::dlt645::Version::V2007),
            Protocol::Dlt645_1997 => Some(meter_protocols::dlt645::Version::V1997),
            _ => None,
        };
        for kind in kinds.iter().filter_map(|k| EventKind::parse(k)) {
            if let Some(why) =
                profile::event_unsupported(kind, version, self.protocol.name(), "meter")
            {
                return Err(why);
            }
        }
        Ok(())
    }

    /// Checks `freezes`: known kinds, each one the meter's edition keeps.
    fn check_freezes(&self) -> Result<(), String> {
        let Some(kinds) = &self.freezes else {
            return Ok(());
        };
        if let Some(bad) = kinds.iter().find(|k| FreezeKind::parse(k).is_none()) {
            let known: Vec<&str> = FreezeKind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!(
                "unknown freeze kind {bad:?}; known: {}",
                known.join(", ")
            ));
        }
        let version = match self.protocol {
            Protocol::Dlt645_2007 => Some(meter_protocols::dlt645::Version::V2007),
            Protocol::Dlt645_1997 => Some(meter_protocols::dlt645::Version::V1997),
            _ => None,
        };
        for kind in kinds.iter().filter_map(|k| FreezeKind::parse(k)) {
            if let Some(why) =
                profile::freeze_unsupported(kind, version, self.protocol.name(), "meter")
            {
                return Err(why);
            }
        }
        Ok(())
    }

    /// The meter's id as published.
    pub fn effective_id(&self, bus: &str) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        match (&self.address, self.unit) {
            (Some(a), _) => a
                .parse::<Address>()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| a.clone()),
            (None, Some(u)) => format!("{bus}-unit{u}"),
            (None, None) => format!("{bus}-meter"),
        }
    }
}

impl Config {
    /// Reads, parses and checks a configuration file and the profiles it names.
    pub fn load(path: &Path) -> Result<(Config, ProfileSet), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read configuration: {e}")))?;
        Self::from_text(path, &text)
    }

    /// Parses and checks configuration text (`path` is used in error messages and to resolve
    /// relative profile directories).
    pub fn from_text(path: &Path, text: &str) -> Result<(Config, ProfileSet), ConfigError> {
        let mut config: Config = parse_toml(path, text)?;
        // No url is fine for the technician's commands (`trace --config`, `check-config` of a
        // bus file); the uplink refuses to start without one.
        if !config.mqtt.url.is_empty()
            && let Err(e) = config.mqtt.validate()
        {
            return Err(ConfigError::at(path, text, None, "mqtt", e.to_string()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(file) = config.control.as_mut().and_then(|c| c.credentials.as_mut()) {
            *file = base.join(&*file);
        }
        let dirs: Vec<PathBuf> = config.profile_dirs.iter().map(|d| base.join(d)).collect();
        let profiles = ProfileSet::load(&dirs)?;
        config.check(path, text, &profiles)?;
        Ok((config, profiles))
    }

    /// Cross-field checks that serde cannot express.
    fn check(&self, path: &Path, text: &str, profiles: &ProfileSet) -> Result<(), ConfigError> {
        let err = |span: std::ops::Range<usize>, key: String, msg: String| {
            ConfigError::at(path, text, Some(span), key, msg)
        };
        if self.gateway.is_empty() || self.gateway.contains(['/', '+', '#']) {
            return Err(ConfigError::at(
                path,
                text,
                None,
                "gateway",
                "must be non-empty and contain no '/', '+' or '#' (it is an MQTT topic level)",
            ));
        }
        let mut bus_names = HashSet::new();
        let mut ports = HashSet::new();
        let mut meter_ids = HashSet::new();
        for (bi, bus) in self.buses.iter().enumerate() {
            let span = bus.span();
            let bus = bus.get_ref();
            let key = |k: &str| format!("bus[{bi}].{k}");
            if !bus_names.insert(bus.name.clone()) {
                return Err(err(
                    span,
                    key("name"),
                    format!("bus name {:?} is used twice", bus.name),
                ));
            }
            match bus.transport {
                TransportKind::Serial => {
                    let Some(port) = &bus.port else {
                        return Err(err(
                            span,
                            key("port"),
                            "a serial bus needs `port` (e.g. \"/dev/ttyS1\")".into(),
                        ));
                    };
                    // One owner per physical bus: two buses on one port would race on the wire.
                    if !ports.insert(port.clone()) {
                        return Err(err(
                            span,
                            key("port"),
                            format!(
                                "port {port:?} is already used by another bus; put all its meters on one bus"
                            ),
                        ));
                    }
                }
                TransportKind::Tcp | TransportKind::ModbusTcp => {
                    let Some(host) = &bus.host else {
                        return Err(err(
                            span,
                            key("host"),
                            "a TCP bus needs `host` (\"host:port\")".into(),
                        ));
                    };
                    if !host.contains(':') {
                        return Err(err(
                            span,
                            key("host"),
                            format!("expected \"host:port\", found {host:?}"),
                        ));
                    }
                    if !ports.insert(host.clone()) {
                        return Err(err(
                            span,
                            key("host"),
                            format!("{host:?} is already used by another bus"),
                        ));
                    }
                }
            }
            if !(5..=8).contains(&bus.data_bits) {
                return Err(err(
                    span,
                    key("data_bits"),
                    format!("expected 5 to 8, found {}", bus.data_bits),
                ));
            }
            if !(1..=2).contains(&bus.stop_bits) {
                return Err(err(
                    span,
                    key("stop_bits"),
                    format!("expected 1 or 2, found {}", bus.stop_bits),
                ));
            }
            if bus.baud == 0 {
                return Err(err(span, key("baud"), "must be greater than 0".into()));
            }
            for (mi, meter) in bus.meters.iter().enumerate() {
                let mspan = meter.span();
                let meter = meter.get_ref();
                let mkey = |k: &str| format!("bus[{bi}].meter[{mi}].{k}");
                let allowed = match bus.transport {
                    TransportKind::Serial | TransportKind::Tcp => {
                        meter.protocol != Protocol::ModbusTcp
                    }
                    TransportKind::ModbusTcp => meter.protocol == Protocol::ModbusTcp,
                };
                if !allowed {
                    return Err(err(
                        mspan,
                        mkey("protocol"),
                        format!(
                            "{} cannot run on a {:?} bus",
                            meter.protocol.name(),
                            bus.transport
                        ),
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
                    // All 12 digits, as on the nameplate: the standard's padding of a short
                    // address turns a digit left out into another meter's address.
                    let parsed: Address = match (a.len(), a.parse::<Address>()) {
                        (12, Ok(p)) => p,
                        (_, Ok(p)) => {
                            let full = Address::parse_full(a).err().map(|e| e.to_string());
                            return Err(err(
                                mspan,
                                mkey("address"),
                                format!(
                                    "{}; if the meter's address really has leading zeros, write them: \"{p}\"",
                                    full.unwrap_or_default()
                                ),
                            ));
                        }
                        (_, Err(e)) => return Err(err(mspan, mkey("address"), format!("{e}"))),
                    };
                    if parsed.is_broadcast() || parsed.has_wildcard() {
                        return Err(err(
                            mspan,
                            mkey("address"),
                            "a polled meter needs its real address, not broadcast or wildcard"
                                .into(),
                        ));
                    }
                } else {
                    let Some(unit) = meter.unit else {
                        return Err(err(
                            mspan,
                            mkey("unit"),
                            "a Modbus meter needs `unit` (1-247)".into(),
                        ));
                    };
                    if meter.protocol == Protocol::ModbusRtu && !(1..=247).contains(&unit) {
                        return Err(err(
                            mspan,
                            mkey("unit"),
                            format!("expected 1 to 247 on a serial bus, found {unit}"),
                        ));
                    }
                }
                if let Err(why) = profiles.for_meter(&meter.profile, meter.protocol) {
                    return Err(err(mspan, mkey("profile"), why));
                }
                if let Err(why) = meter.check_freezes() {
                    return Err(err(mspan, mkey("freezes"), why));
                }
                if let Err(why) = meter.check_events() {
                    return Err(err(mspan, mkey("events"), why));
                }
                if meter.interval < Duration::from_millis(100) {
                    return Err(err(
                        mspan,
                        mkey("interval"),
                        "must be at least 100ms".into(),
                    ));
                }
                if let Some(0) | Some(126..) = meter.max_registers {
                    return Err(err(
                        mspan,
                        mkey("max_registers"),
                        "expected 1 to 125".into(),
                    ));
                }
                let id = meter.effective_id(&bus.name);
                if id.contains(['/', '+', '#']) {
                    return Err(err(
                        mspan,
                        mkey("id"),
                        format!(
                            "{id:?} must not contain '/', '+' or '#' (it is an MQTT topic level)"
                        ),
                    ));
                }
                if !meter_ids.insert(id.clone()) {
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
}

/// Serde helpers for durations written as `"500ms"`, `"15m"`, `"1h 30m"`.
pub mod duration {
    use super::*;

    /// Deserializes a humantime duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{e} in duration {s:?} (write e.g. \"500ms\", \"2s\", \"15m\")"
            ))
        })
    }

    /// Serializes as a humantime string.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Serde helpers for optional durations.
pub mod opt_duration {
    use super::*;

    /// Deserializes an optional humantime duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }

    /// Serializes an optional duration.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_protocols::dlt645::event::EventKind;
    use meter_protocols::dlt645::freeze::FreezeKind;

    fn load(text: &str) -> Result<(Config, ProfileSet), ConfigError> {
        Config::from_text(Path::new("test.toml"), text)
    }

    const GOOD: &str = r#"
gateway = "gw-01"
data_dir = "/tmp/x"

[[bus]]
name = "rs485-1"
transport = "serial"
port = "/dev/ttyS1"
baud = 9600
timing = { response_timeout = "800ms", retries = 2 }

[[bus.meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-three-phase"
interval = "15m"

[[bus.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm630"
timing = { response_timeout = "300ms" }

[[bus]]
name = "lan"
transport = "modbus-tcp"
host = "127.0.0.1:5020"
[[bus.meter]]
id = "sdm-2"
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
"#;

    #[test]
    fn a_good_file_loads_with_defaults_and_overrides() {
        let (c, profiles) = load(GOOD).unwrap();
        assert_eq!(c.buses.len(), 2);
        let bus = c.buses[0].get_ref();
        assert_eq!(bus.parity, Parity::Even);
        let m0 = bus.meters[0].get_ref();
        assert_eq!(m0.interval, Duration::from_secs(900));
        assert_eq!(m0.effective_id("rs485-1"), "202107072529");
        let m1 = bus.meters[1].get_ref();
        assert_eq!(m1.effective_id("rs485-1"), "rs485-1-unit3");
        let t = m1.timing.over(&bus.timing).effective(bus.baud);
        assert_eq!(t.response_timeout, Duration::from_millis(300));
        assert_eq!(t.retries, 2);
        assert_eq!(t.modbus_silence, Duration::from_micros(4010));
        assert!(profiles.get("eastron-sdm630").is_some());
    }

    #[test]
    fn the_shipped_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["meterd.toml", "demo.toml"] {
            let (c, _) = Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.buses.is_empty(), "{name}");
        }
    }

    #[test]
    fn modbus_tcp_buses_need_no_serial_silence_unless_asked() {
        let unset = Timing::default();
        let tcp = unset.effective_on(TransportKind::ModbusTcp, 9600);
        assert_eq!(
            (tcp.turnaround, tcp.modbus_silence),
            (Duration::ZERO, Duration::ZERO)
        );
        let serial = unset.effective_on(TransportKind::Serial, 9600);
        assert_eq!(serial.turnaround, Duration::from_millis(20));
        assert_eq!(serial.modbus_silence, t35(9600));
        let asked = Timing {
            turnaround: Some(Duration::from_millis(5)),
            ..Timing::default()
        };
        assert_eq!(
            asked
                .effective_on(TransportKind::ModbusTcp, 9600)
                .turnaround,
            Duration::from_millis(5)
        );
    }

    #[test]
    fn sizes_and_sections() {
        assert_eq!(byte_size::parse("64MiB"), Some(64 << 20));
        assert_eq!(byte_size::parse("500kB"), Some(500_000));
        assert_eq!(byte_size::parse("12"), Some(12));
        assert_eq!(byte_size::parse("12 parsecs"), None);
        let (c, _) = load(&format!(
            "{GOOD}\n[spool]\nmax_bytes = \"1MiB\"\n[validation]\nclock_limit = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(c.spool.max_bytes, 1 << 20);
        assert_eq!(c.spool.commit_window, Duration::from_millis(100), "default");
        assert_eq!(c.validation.clock_limit, Duration::from_secs(30));
        let e = error_of(&format!("{GOOD}\n[spool]\nmax_bytes = \"lots\"\n"));
        assert_eq!(e.key, "spool.max_bytes", "{e}");
    }

    #[test]
    fn every_builtin_profile_parses() {
        let set = ProfileSet::builtin().unwrap();
        assert_eq!(set.names().len(), profile::BUILTIN.len());
    }

    #[test]
    fn freeze_kinds_are_checked_with_their_place() {
        let set = ProfileSet::builtin().unwrap();
        let three = set.get("dlt645-three-phase").unwrap();
        assert_eq!(
            three.freeze_kinds(),
            [FreezeKind::Daily, FreezeKind::Monthly, FreezeKind::Hourly]
        );
        let file = Path::new("p.toml");
        let text = |protocol: &str, kinds: &str, point: &str| {
            format!(
                "name = \"x\"\ndescription = \"\"\nsource = \"\"\nprotocol = \"{protocol}\"\n\
                 freezes = {kinds}\n[[point]]\n{point}\n"
            )
        };
        let e = Profile::parse(
            file,
            &text(
                "dlt645-2007",
                "[\"daily\", \"weekly\"]",
                "di = \"00010000\"",
            ),
        )
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("freezes[1]", 5), "{e}");
        assert!(
            e.to_string()
                .contains("unknown freeze kind \"weekly\"; known: daily, monthly, hourly"),
            "{e}"
        );
        let e =
            Profile::parse(file, &text("dlt645-1997", "[\"daily\"]", "di = \"9010\"")).unwrap_err();
        assert!(
            e.to_string()
                .contains("a dlt645-1997 profile has no daily records: the 1997 edition keeps"),
            "{e}"
        );
        let ok = Profile::parse(
            file,
            &text("dlt645-2007", "[\"monthly\"]", "di = \"00010000\""),
        )
        .unwrap();
        assert_eq!(ok.freeze_kinds(), [FreezeKind::Monthly]);
    }

    #[test]
    fn events_and_meter_clock_are_read_and_checked_with_their_place() {
        let (c, profiles) = load(GOOD).unwrap();
        assert_eq!(c.events, EventsConfig::default());
        assert_eq!(c.events.interval, Duration::from_secs(900));
        assert_eq!(c.meter_clock.check_every, Duration::from_secs(86_400));
        assert_eq!(c.meter_clock.drift_limit, None);
        let m = c.buses[0].get_ref().meters[0].get_ref();
        let three = profiles.get("dlt645-three-phase").unwrap();
        assert_eq!(m.event_kinds(three).len(), 5, "the profile's");
        let (c, _) = load(&format!(
            "{GOOD}\n[events]\ninterval = \"5m\"\nbus_share_percent = 3\n\
             [meter_clock]\ncheck_every = \"0s\"\ndrift_limit = \"30s\"\nsync = false\n"
        ))
        .unwrap();
        assert_eq!(c.events.interval, Duration::from_secs(300));
        assert_eq!(c.meter_clock.drift_limit, Some(Duration::from_secs(30)));
        assert!(!c.meter_clock.sync);
        let e = load(&format!("{GOOD}\n[events]\ninterval = \"0s\"\n")).unwrap_err();
        assert_eq!(e.key, "events.interval", "{e}");
        let e = load(&format!("{GOOD}\n[meter_clock]\ndrift = \"1s\"\n")).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        // A meter's own list: known types, on a DL/T 645-2007 meter.
        let with = |line: &str| {
            GOOD.replacen(
                "interval = \"15m\"\n",
                &format!("interval = \"15m\"\n{line}\n"),
                1,
            )
        };
        let (c, _) = load(&with("events = [\"power_down\"]")).unwrap();
        let m = c.buses[0].get_ref().meters[0].get_ref();
        assert_eq!(m.event_kinds(three), [EventKind::PowerDown]);
        let e = load(&with("events = [\"lid\"]")).unwrap_err();
        assert_eq!(e.key, "bus[0].meter[0].events", "{e}");
        assert!(e.message.contains("unknown event type \"lid\""), "{e}");
        assert!(e.line > 0, "{e}");
        // A profile's list: the same, with its line.
        let file = Path::new("p.toml");
        let e = Profile::parse(
            file,
            "name = \"x\"\ndescription = \"\"\nsource = \"\"\nprotocol = \"dlt645-1997\"\n\
             events = [\"power_down\"]\n[[point]]\ndi = \"9010\"\n",
        )
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("events[0]", 5), "{e}");
        assert!(
            e.message
                .contains("a dlt645-1997 profile has no power_down counter: the 1997 edition"),
            "{e}"
        );
        // Programming it counts.
        let ok = Profile::parse(
            file,
            "name = \"x\"\ndescription = \"\"\nsource = \"\"\nprotocol = \"dlt645-1997\"\n\
             events = [\"programming\"]\n[[point]]\ndi = \"9010\"\n",
        )
        .unwrap();
        assert_eq!(ok.event_kinds(), [EventKind::Programming]);
    }

    #[test]
    fn profiles_list_the_quantity_names_they_read() {
        let set = ProfileSet::builtin().unwrap();
        let dlt = set.quantity_names(Protocol::Dlt645_2007);
        // Named by the catalogue for a DI, and every item of a block DI.
        for q in ["energy.active.import.total", "voltage.l1", "frequency"] {
            assert!(dlt.iter().any(|n| n == q), "{q}: {dlt:?}");
        }
        assert!(dlt.windows(2).all(|w| w[0] < w[1]), "sorted, once each");
        let modbus = set.quantity_names(Protocol::ModbusTcp);
        assert!(modbus.iter().any(|n| n == "voltage.l1"), "{modbus:?}");
        assert!(
            !modbus.iter().any(|n| n.starts_with("dlt645:")),
            "{modbus:?}"
        );
    }

    fn error_of(text: &str) -> ConfigError {
        match load(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    /// One case per kind of checked field: the value is refused with its file, line, column
    /// and key, and the message says the allowed range.
    #[test]
    fn every_kind_of_number_and_duration_is_range_checked_with_its_place() {
        let mqtt = |extra: &str| format!("{GOOD}\n[mqtt]\nurl = \"mqtt://h\"\n{extra}\n");
        let cases: [(String, &str, &str); 9] = [
            // A duration (this one used to panic the uplink's timer).
            (
                mqtt("status_interval = \"0s\""),
                "mqtt.status_interval",
                "from 1s to 1day",
            ),
            // A duration under a library's minimum (rumqttc panics under 5 s).
            (mqtt("keepalive = \"1s\""), "mqtt.keepalive", "from 5s to"),
            // A whole number.
            (
                mqtt("max_inflight = 0"),
                "mqtt.max_inflight",
                "expected 1 to 1000, found 0",
            ),
            // An optional duration in an inline table.
            (
                GOOD.replace("response_timeout = \"800ms\"", "response_timeout = \"0s\""),
                "bus[0].timing.response_timeout",
                "from 1ms to 1m",
            ),
            // An optional whole number.
            (
                GOOD.replace("retries = 2", "retries = 200"),
                "bus[0].timing.retries",
                "expected 0 to 10, found 200",
            ),
            // A whole number of the bus.
            (
                GOOD.replace("baud = 9600", "baud = 9"),
                "bus[0].baud",
                "expected 50 to 4000000, found 9",
            ),
            // A meter's interval (0 would poll without pause).
            (
                GOOD.replace("interval = \"15m\"", "interval = \"0s\""),
                "bus[0].meter[0].interval",
                "from 100ms to",
            ),
            // A size in bytes.
            (
                format!("{GOOD}\n[spool]\nmax_bytes = \"1KiB\"\n"),
                "spool.max_bytes",
                "expected a size from 65536",
            ),
            // Another section's duration.
            (
                format!("{GOOD}\n[service]\nread_timeout = \"1h\"\n"),
                "service.read_timeout",
                "to 10m",
            ),
        ];
        for (text, key, message) in cases {
            let e = error_of(&text);
            assert_eq!(e.key, key, "{e}");
            assert!(e.line > 0 && e.column > 0, "no place: {e}");
            let line = text.lines().nth(e.line - 1).unwrap_or("");
            let leaf = key.rsplit('.').next().unwrap_or(key);
            assert!(
                line.contains(leaf),
                "line {} is not the key's: {line:?} ({e})",
                e.line
            );
            assert!(e.message.contains(message), "{e}");
        }
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let e = error_of(&GOOD.replace("baud = 9600", "baud = -1"));
        assert_eq!((e.line, e.key.as_str()), (9, "bus[0].baud"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.toml:9:8: bus[0].baud: invalid value"),
            "{e}"
        );

        let e = error_of(&GOOD.replace("interval = \"15m\"", "intervall = \"15m\""));
        assert_eq!(e.key, "bus[0].meter[0].intervall", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = error_of(&GOOD.replace("interval = \"15m\"", "interval = \"fortnight\""));
        assert_eq!(e.key, "bus[0].meter[0].interval", "{e}");

        let e = error_of(
            &GOOD
                .replace("parity = ", "x")
                .replace("baud = 9600", "baud = 9600\nparity = \"mark\""),
        );
        assert!(e.message.contains("unknown variant `mark`"), "{e}");

        let e = error_of(&GOOD.replace("address = \"202107072529\"", "address = \"2021070725x9\""));
        assert_eq!(e.key, "bus[0].meter[0].address", "{e}");
        assert_eq!(e.line, 12, "points at the meter's table: {e}");

        // A digit left out is refused, never padded into another meter's address.
        let e = error_of(&GOOD.replace("address = \"202107072529\"", "address = \"20210707252\""));
        assert_eq!(e.key, "bus[0].meter[0].address", "{e}");
        assert!(e.message.contains("exactly 12 BCD digits"), "{e}");
        assert!(e.message.contains("write them: \"020210707252\""), "{e}");

        let e = error_of(&GOOD.replace("profile = \"dlt645-three-phase\"", "profile = \"nope\""));
        assert!(e.message.contains("no profile named \"nope\""), "{e}");

        let e = error_of(&GOOD.replace(
            "profile = \"dlt645-three-phase\"",
            "profile = \"eastron-sdm630\"",
        ));
        assert!(e.message.contains("is for modbus"), "{e}");

        let e = error_of(&GOOD.replace("unit = 3", "unit = 0"));
        assert_eq!(e.key, "bus[0].meter[1].unit", "{e}");

        let e = error_of(&GOOD.replace("host = \"127.0.0.1:5020\"", "port = \"/dev/ttyS1\""));
        assert_eq!(e.key, "bus[1].host", "{e}");

        let e = error_of(&format!(
            "{GOOD}\n[[bus]]\nname = \"again\"\ntransport = \"serial\"\nport = \"/dev/ttyS1\"\n"
        ));
        assert!(e.message.contains("already used by another bus"), "{e}");

        let e = error_of("gateway = \"gw\"\n[[bus]\n");
        assert_eq!(e.line, 2, "{e}");
    }
}
