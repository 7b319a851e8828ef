//! Configuration values built in code: the one-off bus, meter and profile of a command-line
//! read, without writing TOML text to parse it back.
//!
//! Every constructor gives exactly the value the TOML path gives for the same keys: an unset
//! key takes the default serde fills in (`baud = 2400`, `interval = "60s"`, …), and the tests
//! below compare both ways key by key. A profile built here goes through the checks a profile
//! file goes through ([`Profile::checked`]); its errors name the key but no line, as there is
//! no text. A constructed table or point has no place in any text: its span is `0..0`.

use std::path::Path;

use meter_protocols::dlt645::DataIdentifier;
use toml::Spanned;

use crate::clock::UtcOffset;

use super::profile::{Point, ProfileProtocol, WordOrder};
use super::{
    BusConfig, ConfigError, MeterConfig, Parity, Profile, Protocol, Timing, TransportKind,
    default_baud, default_data_bits, default_degrade_after, default_interval, default_parity,
    default_probe_every, default_stop_bits,
};

/// The serial line settings of a bus (`baud`, `parity`, `data_bits`, `stop_bits`); a TCP bus
/// keeps them too (wire-time estimates for a serial device server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialLine {
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits (5–8).
    pub data_bits: u8,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
}

impl Default for SerialLine {
    /// The defaults of a `[[bus]]` table that sets none of the four keys: 2400 8E1.
    fn default() -> Self {
        Self {
            baud: default_baud(),
            parity: default_parity(),
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
        }
    }
}

impl BusConfig {
    /// A bus on a local serial port: `transport = "serial"`, `port`, and `line`; no meters,
    /// bus timing unset, the other keys at their defaults.
    pub fn serial(name: impl Into<String>, port: impl Into<String>, line: SerialLine) -> Self {
        Self::new(
            name.into(),
            TransportKind::Serial,
            Some(port.into()),
            None,
            line,
        )
    }

    /// A bus behind a serial device server: `transport = "tcp"`, `host` (`host:port`), and
    /// `line`; otherwise as [`BusConfig::serial`].
    pub fn tcp(name: impl Into<String>, host: impl Into<String>, line: SerialLine) -> Self {
        Self::new(
            name.into(),
            TransportKind::Tcp,
            None,
            Some(host.into()),
            line,
        )
    }

    /// A Modbus TCP bus: `transport = "modbus-tcp"`, `host` (`host:port`), and `line`;
    /// otherwise as [`BusConfig::serial`].
    pub fn modbus_tcp(name: impl Into<String>, host: impl Into<String>, line: SerialLine) -> Self {
        Self::new(
            name.into(),
            TransportKind::ModbusTcp,
            None,
            Some(host.into()),
            line,
        )
    }

    fn new(
        name: String,
        transport: TransportKind,
        port: Option<String>,
        host: Option<String>,
        line: SerialLine,
    ) -> Self {
        Self {
            name,
            transport,
            port,
            host,
            baud: line.baud,
            parity: line.parity,
            data_bits: line.data_bits,
            stop_bits: line.stop_bits,
            rs485: None,
            timing: Timing::default(),
            degrade_after: default_degrade_after(),
            probe_every: default_probe_every(),
            meters: Vec::new(),
        }
    }

    /// The bus with `timing` as its `[bus.timing]`.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The bus with `meter` added after its meters (a `[[bus.meter]]` table).
    pub fn with_meter(mut self, meter: MeterConfig) -> Self {
        self.meters.push(Spanned::new(0..0, meter));
        self
    }
}

impl MeterConfig {
    /// A meter speaking `protocol` with `profile`, every optional key unset (no id, address or
    /// unit, no timing overrides) and the default poll interval. Set `address` (DL/T 645) or
    /// `unit` (Modbus) with struct update syntax.
    pub fn new(protocol: Protocol, profile: impl Into<String>) -> Self {
        Self {
            id: None,
            protocol,
            address: None,
            unit: None,
            profile: profile.into(),
            interval: default_interval(),
            timing: Timing::default(),
            max_registers: None,
            gap_fill: None,
            utc_offset: UtcOffset::CHINA,
            freezes: None,
            events: None,
        }
    }
}

impl Point {
    /// A DL/T 645 point: data identifier `di`, named `quantity`; every other key unset.
    pub fn dlt645(quantity: impl Into<String>, di: DataIdentifier) -> Self {
        Self {
            quantity: Some(quantity.into()),
            di: Some(di.to_string()),
            function: None,
            register: None,
            value_type: None,
            order: WordOrder::default(),
            bit: None,
            scale: None,
            exponent_register: None,
            unit: None,
            obis: None,
        }
    }
}

impl Profile {
    /// A profile of `points` with no Modbus read caps. Not checked yet: see
    /// [`Profile::checked`].
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        source: impl Into<String>,
        protocol: ProfileProtocol,
        points: Vec<Point>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            source: source.into(),
            protocol,
            max_registers: None,
            gap_fill: None,
            freezes: Vec::new(),
            load_profile_interval: None,
            load_profile_depth: None,
            events: Vec::new(),
            points: points.into_iter().map(|p| Spanned::new(0..0, p)).collect(),
            identify: None,
        }
    }

    /// The profile, after the checks [`Profile::parse`] runs on a file. An error names
    /// `origin` as its file and the key (`point[0].di`), with no line or column.
    pub fn checked(self, origin: &Path) -> Result<Self, ConfigError> {
        self.check(origin, "").map_err(|mut e| {
            (e.line, e.column, e.source_line) = (0, 0, None);
            e
        })?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meter_protocols::dlt645::catalog::di_for_quantity;
    use meter_protocols::dlt645::{Address, Version};
    use serde::Serialize;

    use super::*;

    /// Both values, key by key (a `Spanned` serialises as its value).
    fn same<T: Serialize>(built: &T, parsed: &T) {
        let (b, p) = (serde_json::to_value(built), serde_json::to_value(parsed));
        assert_eq!(b.unwrap(), p.unwrap());
    }

    fn parsed_bus(text: &str) -> BusConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn cli_timing(response_timeout: Duration, retries: u8) -> Timing {
        Timing {
            response_timeout: Some(response_timeout),
            retries: Some(retries),
            ..Timing::default()
        }
    }

    /// The text `meterd read` used to write for a DL/T 645 meter on a serial port (defaults:
    /// 2400 8E1, `--timeout 1s --retries 1`).
    #[test]
    fn a_serial_dlt645_read_is_the_bus_its_toml_was() {
        let text = r#"name = "cli"
transport = "serial"
port = "/dev/ttyUSB0"
baud = 2400
parity = "even"
data_bits = 8
stop_bits = 1
timing = { response_timeout = "1s", retries = 1 }
[[meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-three-phase"
"#;
        let address: Address = "202107072529".parse().unwrap();
        let built = BusConfig::serial("cli", "/dev/ttyUSB0", SerialLine::default())
            .with_timing(cli_timing(Duration::from_secs(1), 1))
            .with_meter(MeterConfig {
                address: Some(address.to_string()),
                ..MeterConfig::new(Protocol::Dlt645_2007, "dlt645-three-phase")
            });
        same(&built, &parsed_bus(text));
    }

    /// A Modbus RTU meter behind a serial device server, every line setting given, an odd
    /// timeout, and a wildcard read (`AAAAAAAAAAAA`, which the daemon's checks would refuse).
    #[test]
    fn tcp_and_modbus_tcp_reads_are_the_buses_their_toml_was() {
        let line = SerialLine {
            baud: 19200,
            parity: Parity::None,
            data_bits: 7,
            stop_bits: 2,
        };
        let timeout = Duration::from_millis(1500) + Duration::from_nanos(7);
        let text = format!(
            "name = \"cli\"\ntransport = \"tcp\"\nhost = \"10.0.0.7:4001\"\nbaud = 19200\n\
             parity = \"none\"\ndata_bits = 7\nstop_bits = 2\ntiming = {{ response_timeout = \
             \"{}\", retries = 0 }}\n[[meter]]\nprotocol = \"modbus-rtu\"\nunit = 3\n\
             profile = \"eastron-sdm630\"\n",
            humantime::format_duration(timeout)
        );
        let built = BusConfig::tcp("cli", "10.0.0.7:4001", line)
            .with_timing(cli_timing(timeout, 0))
            .with_meter(MeterConfig {
                unit: Some(3),
                ..MeterConfig::new(Protocol::ModbusRtu, "eastron-sdm630")
            });
        same(&built, &parsed_bus(&text));

        let text = "name = \"cli\"\ntransport = \"modbus-tcp\"\nhost = \"[::1]:502\"\n\
                    baud = 9600\nparity = \"odd\"\ndata_bits = 8\nstop_bits = 1\n\
                    timing = { response_timeout = \"200ms\", retries = 3 }\n[[meter]]\n\
                    protocol = \"modbus-tcp\"\nunit = 255\nprofile = \"generic-modbus\"\n";
        let line = SerialLine {
            baud: 9600,
            parity: Parity::Odd,
            ..SerialLine::default()
        };
        let built = BusConfig::modbus_tcp("cli", "[::1]:502", line)
            .with_timing(cli_timing(Duration::from_millis(200), 3))
            .with_meter(MeterConfig {
                unit: Some(255),
                ..MeterConfig::new(Protocol::ModbusTcp, "generic-modbus")
            });
        same(&built, &parsed_bus(text));

        let text = "name = \"cli\"\ntransport = \"serial\"\nport = \"/dev/odd \\\"name\\\"\"\n\
                    [[meter]]\nprotocol = \"dlt645-1997\"\naddress = \"AAAAAAAAAAAA\"\n\
                    profile = \"dlt645-1997-basic\"\n";
        let built = BusConfig::serial("cli", "/dev/odd \"name\"", SerialLine::default())
            .with_meter(MeterConfig {
                address: Some("AAAAAAAAAAAA".into()),
                ..MeterConfig::new(Protocol::Dlt645_1997, "dlt645-1997-basic")
            });
        same(&built, &parsed_bus(text));
    }

    /// `meterd read --quantity …`: the profile it used to write and parse, both editions.
    #[test]
    fn a_quantity_profile_is_the_profile_its_toml_was() {
        for (version, family, name, quantities) in [
            (
                Version::V2007,
                ProfileProtocol::Dlt645_2007,
                "dlt645-2007",
                &["energy.active.import.total", "voltage.l1"][..],
            ),
            (
                Version::V1997,
                ProfileProtocol::Dlt645_1997,
                "dlt645-1997",
                &["energy.active.import.total"][..],
            ),
        ] {
            let mut text = format!(
                "name = \"cli\"\ndescription = \"command line\"\nsource = \"command line\"\n\
                 protocol = \"{name}\"\n"
            );
            let mut points = Vec::new();
            for q in quantities {
                let di = di_for_quantity(version, q).unwrap();
                text.push_str(&format!("[[point]]\ndi = \"{di}\"\nquantity = \"{q}\"\n"));
                points.push(Point::dlt645(*q, di));
            }
            let origin = Path::new("<command line>");
            let parsed = Profile::parse(origin, &text).unwrap();
            let built = Profile::new("cli", "command line", "command line", family, points)
                .checked(origin)
                .unwrap();
            same(&built, &parsed);
        }
    }

    #[test]
    fn a_built_profile_fails_the_checks_a_file_fails_without_a_line() {
        let origin = Path::new("<command line>");
        let di = di_for_quantity(Version::V1997, "energy.active.import.total").unwrap();
        let text = format!(
            "name = \"cli\"\ndescription = \"d\"\nsource = \"s\"\nprotocol = \"dlt645-2007\"\n\
             [[point]]\ndi = \"{di}\"\n"
        );
        let from_file = Profile::parse(origin, &text).unwrap_err();
        let p = Profile::new(
            "cli",
            "d",
            "s",
            ProfileProtocol::Dlt645_2007,
            vec![Point {
                quantity: None,
                ..Point::dlt645("x", di)
            }],
        );
        let built = p.checked(origin).unwrap_err();
        assert_eq!(
            (&built.key, &built.message),
            (&from_file.key, &from_file.message)
        );
        assert_eq!(
            built.to_string(),
            format!("<command line>: point[0].di: {}", from_file.message)
        );
        let empty = Profile::new("cli", "d", "s", ProfileProtocol::Dlt645_2007, Vec::new());
        assert_eq!(
            empty.checked(origin).unwrap_err().to_string(),
            "<command line>: point: a profile needs at least one [[point]]"
        );
    }
}
