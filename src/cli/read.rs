//! `meterd read`: one-shot read of one meter, through the same driver and exchange code as
//! the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use meter_protocols::dlt645::catalog::di_for_quantity;
use meter_protocols::dlt645::freeze::FreezeKind;
use meter_protocols::dlt645::{Address, Version};

use super::{LineArgs, ProtocolArg, Target, bus_config, fail, parse_duration, runtime};
use crate::bus::task::{Bus, BusOptions};
use crate::clock::UtcOffset;
use crate::config::profile::{Point, ProfileProtocol};
use crate::config::{BusConfig, MeterConfig, Profile, ProfileSet, Protocol, Timing};
use crate::health::{BusHealth, LinkState};
use crate::ingest::validation::ValidationConfig;
use crate::reading::{Quality, ReadingBatch, ValueData};

/// Arguments of `meterd read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Ask the running daemon instead (its bus task reads the meter between two polls; the port
    /// is not opened here): needs `--meter ID`.
    #[arg(long, requires = "meter", conflicts_with_all = ["port", "tcp", "address", "unit", "profile", "quantity"])]
    pub daemon: bool,
    /// With --daemon: the daemon's diagnostics service (`http://HOST:PORT` or `unix:/PATH`).
    #[arg(long, requires = "daemon", default_value_t = format!("http://{}", crate::service::DEFAULT_LISTEN))]
    pub url: String,
    /// With --daemon: the meter id, as in the daemon's configuration and `meterd status`.
    #[arg(long, requires = "daemon", value_name = "ID")]
    pub meter: Option<String>,
    /// Where the meter is.
    #[command(flatten)]
    pub target: Target,
    /// Serial settings.
    #[command(flatten)]
    pub line: LineArgs,
    /// The meter's protocol.
    #[arg(long, value_enum, required_unless_present = "daemon")]
    pub protocol: Option<ProtocolArg>,
    /// DL/T 645 address (12 digits; AAAAAAAAAAAA reads the lone meter on the bus).
    #[arg(long, value_name = "12DIGITS")]
    pub address: Option<String>,
    /// Modbus unit id.
    #[arg(long, value_name = "N")]
    pub unit: Option<u8>,
    /// Profile (meter model) to read.
    #[arg(long, conflicts_with = "quantity")]
    pub profile: Option<String>,
    /// Quantities to read (DL/T 645 only), e.g. `energy.active.import.total voltage.l1`.
    #[arg(long, num_args = 1.., value_name = "Q")]
    pub quantity: Vec<String>,
    /// Raw Modbus registers without a profile: `FUNCTION:ADDRESS:TYPE[:ORDER]`, e.g.
    /// `fc04:0x0000:f32` or `fc03:40:u32:cdab` (fc01-fc04; u16 i16 u32 i32 u64 i64 f32 f64,
    /// bit for fc01/fc02; order abcd (default), cdab, badc, dcba). May be given several times.
    #[arg(
        long = "register",
        value_name = "FC:ADDR:TYPE[:ORDER]",
        value_parser = super::read_register::parse_register,
        conflicts_with_all = ["profile", "quantity", "daemon"]
    )]
    pub registers: Vec<super::read_register::RegisterSpec>,
    /// Response timeout.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub timeout: Duration,
    /// Further attempts after a timeout.
    #[arg(long, default_value_t = 1)]
    pub retries: u8,
    /// Print the reading batch as JSON (with the raw frames).
    #[arg(long)]
    pub json: bool,
    /// Read the meter's own settlement records instead (DL/T 645-2007), newest first, each
    /// under its stamp: `daily` (62 kept), `monthly` (12), `hourly` (254), `load_profile`
    /// (the load records, one per `--load-interval`).
    #[arg(long, value_enum, value_name = "KIND", conflicts_with_all = ["daemon", "profile", "quantity"])]
    pub freeze: Option<FreezeArg>,
    /// With --freeze: how many of the newest records.
    #[arg(long, requires = "freeze", default_value_t = 1, value_name = "N")]
    pub last: u8,
    /// With --freeze: the meter's time zone, which its stamps are in (DL/T 645 meters keep
    /// China Standard Time).
    #[arg(long, requires = "freeze", default_value = "+08:00", value_parser = parse_offset, value_name = "±HH:MM")]
    pub utc_offset: UtcOffset,
    /// With --freeze load_profile: the meter's load-record interval (15m, 30m or 60m).
    #[arg(long, requires = "freeze", default_value = "15m", value_parser = parse_load_interval, value_name = "DURATION")]
    pub load_interval: i64,
}

fn parse_load_interval(s: &str) -> Result<i64, String> {
    crate::config::profile::parse_load_interval(s)
}

/// A freeze kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FreezeArg {
    /// The daily freeze (made at midnight, holding the day before).
    Daily,
    /// The monthly settlement-day registers.
    Monthly,
    /// The whole-hour freeze.
    Hourly,
    /// The load profile (负荷记录, `06000001`), one record per `--load-interval`.
    #[value(name = "load_profile")]
    LoadProfile,
}

impl From<FreezeArg> for FreezeKind {
    fn from(k: FreezeArg) -> Self {
        match k {
            FreezeArg::Daily => FreezeKind::Daily,
            FreezeArg::Monthly => FreezeKind::Monthly,
            FreezeArg::Hourly => FreezeKind::Hourly,
            FreezeArg::LoadProfile => FreezeKind::LoadProfile,
        }
    }
}

fn parse_offset(s: &str) -> Result<UtcOffset, String> {
    s.parse()
}

/// Runs `meterd read`: 0 when the meter answered with at least one value that is not bad, 1
/// when it did not answer or every value is bad, 2 for a bad request or a dead/busy port.
pub fn run(args: &ReadArgs) -> ExitCode {
    if args.daemon {
        return run_daemon(args);
    }
    if let Some(kind) = args.freeze {
        if kind == FreezeArg::LoadProfile {
            return super::read_load_profile::run(args);
        }
        return super::read_freeze::run(args, kind.into(), args.last, args.utc_offset);
    }
    if !args.registers.is_empty() {
        return super::read_register::run(args);
    }
    let (bus, profiles) = match build(args) {
        Ok(x) => x,
        Err(e) => return fail("read", &e, 2),
    };
    let batch = match read_once(&bus, &profiles) {
        Ok(b) => b,
        Err((reason, code)) => return fail("read", &reason, code),
    };
    if args.json {
        match serde_json::to_string_pretty(&batch) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail("read", &format!("cannot print JSON: {e}"), 2),
        }
    } else {
        print!("{}", table(&batch));
    }
    // The meter answered, but a reading with no usable value is a failed job (printed above
    // as evidence): exit 1, as for a meter that does not answer.
    if batch.values.iter().all(|v| v.quality == Quality::Bad) {
        let reason = batch.values.iter().find_map(|v| v.reason.clone());
        return fail(
            "read",
            &format!(
                "meter {} answered, but every value is bad{}",
                batch.meter,
                reason.map(|r| format!(" (first: {r})")).unwrap_or_default()
            ),
            1,
        );
    }
    ExitCode::SUCCESS
}

/// Reads the one meter of `bus` once, through the daemon's bus and driver code, and checks
/// the values as the daemon would: the batch, or why not as (reason, exit code): 2 for a
/// dead or busy port, 1 when the meter did not answer.
pub(super) fn read_once(
    bus: &BusConfig,
    profiles: &ProfileSet,
) -> Result<ReadingBatch, (String, u8)> {
    let rt = runtime().map_err(|e| (e, 2))?;
    rt.block_on(async {
        let mut options = BusOptions::new("local");
        options.evidence_frames = true;
        let status = std::sync::Arc::new(std::sync::Mutex::new(BusHealth::for_bus(bus)));
        let mut bus = Bus::new(bus, profiles, options)
            .map_err(|e| (e.to_string(), 2))?
            .with_observer(status.clone());
        bus.connect().await.map_err(|e| (e, 2))?;
        let Some(id) = bus.drivers().next().map(|d| d.id().to_owned()) else {
            return Err(("no meter to read".into(), 2));
        };
        let mut batch = bus.read_now(&id).await.map_err(|e| (e, 2))?;
        // The daemon's plausibility checks (range, tariff sum, meter clock), so a technician
        // sees what the billing core would; "went backwards" needs the spool's history.
        ValidationConfig::default().validate(&mut batch, |_| None, SystemTime::now());
        let (link, answered, last_error) = {
            let s = crate::sync::lock(&status);
            let m = s.meters.first();
            (
                s.link.clone(),
                m.is_some_and(|m| m.polls_ok > 0),
                m.and_then(|m| m.last_error.clone()),
            )
        };
        if let LinkState::Down(reason) = link {
            return Err((reason, 2));
        }
        if !answered {
            let reason = last_error.unwrap_or_else(|| "no reply".into());
            return Err((
                format!(
                    "no answer from meter {id}: {reason}; {}",
                    crate::meter::SILENT_METER_HINT
                ),
                1,
            ));
        }
        Ok(batch)
    })
}

/// `meterd read --daemon --meter ID`: `POST /api/read`. Exit 0 when the meter answered with a
/// good value, 1 when it did not (or the daemon refused: unknown meter, timeout), 2 when no
/// daemon answers.
fn run_daemon(args: &ReadArgs) -> ExitCode {
    let Some(meter) = args.meter.as_deref() else {
        return fail("read", "--daemon needs --meter ID", 2);
    };
    let ep = match super::status::endpoint("read", &args.url) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("read", &e, 2),
    };
    let body = serde_json::json!({ "meter": meter }).to_string();
    // The daemon bounds the read itself (`[service] read_timeout`); this is a backstop.
    let answer = rt.block_on(crate::service::client::post_json(
        &ep,
        "/api/read",
        body,
        Duration::from_secs(120),
    ));
    let text = match answer {
        Ok(t) => t,
        Err(e) => return super::status::client_fail("read", &e),
    };
    let batch: ReadingBatch = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                "read",
                &format!("the daemon's answer is not a reading: {e}"),
                1,
            );
        }
    };
    if args.json {
        println!("{}", text.trim_end());
    } else {
        print!("{}", table(&batch));
    }
    if batch.values.iter().any(|v| v.quality == Quality::Good) {
        ExitCode::SUCCESS
    } else {
        let reason = batch
            .values
            .iter()
            .find_map(|v| v.reason.clone())
            .unwrap_or_else(|| "no value".into());
        fail(
            "read",
            &format!("no answer from meter {meter}: {reason}"),
            1,
        )
    }
}

/// The bus configuration and profiles of a one-shot read.
fn build(args: &ReadArgs) -> Result<(BusConfig, ProfileSet), String> {
    let protocol: Protocol = args.protocol.ok_or("give --protocol")?.into();
    let mut profiles = ProfileSet::builtin().map_err(|e| e.to_string())?;
    let profile = match (&args.profile, args.quantity.is_empty()) {
        (Some(p), _) => {
            let prof = profiles.get(p).ok_or_else(|| {
                format!(
                    "no profile named {p:?}{}; known: {}",
                    super::did_you_mean(p, profiles.names()),
                    profiles.names().join(", ")
                )
            })?;
            if !prof.supports(protocol) {
                return Err(format!(
                    "profile {p:?} is for {}, not {}",
                    prof.protocol_name(),
                    protocol.name()
                ));
            }
            p.clone()
        }
        (None, false) => {
            let (version, family) = match protocol {
                Protocol::Dlt645_2007 => (Version::V2007, ProfileProtocol::Dlt645_2007),
                Protocol::Dlt645_1997 => (Version::V1997, ProfileProtocol::Dlt645_1997),
                _ => return Err("--quantity works for DL/T 645; for Modbus give --profile".into()),
            };
            let mut points = Vec::new();
            for q in &args.quantity {
                let di = di_for_quantity(version, q).ok_or_else(|| {
                    let known = profiles.quantity_names(protocol);
                    format!(
                        "{q:?} is not a known {} quantity{} (docs/quantities.md lists them all)",
                        protocol.name(),
                        super::did_you_mean(q, known.iter().map(String::as_str))
                    )
                })?;
                points.push(Point::dlt645(q.as_str(), di));
            }
            let p = Profile::new("cli", "command line", "command line", family, points)
                .checked(Path::new("<command line>"))
                .map_err(|e| e.to_string())?;
            profiles = profiles.with(p);
            "cli".into()
        }
        (None, true) => {
            return Err("give --profile NAME, --quantity Q... or --register FC:ADDR:TYPE".into());
        }
    };
    Ok((one_meter_bus(args, protocol, profile)?, profiles))
}

/// The bus of a one-shot read: the target and line of `args`, with its one meter (address or
/// unit from `args`) read by `profile`.
pub(super) fn one_meter_bus(
    args: &ReadArgs,
    protocol: Protocol,
    profile: String,
) -> Result<BusConfig, String> {
    let (address, unit) = if protocol.is_dlt645() {
        let a = args
            .address
            .as_deref()
            .ok_or("a DL/T 645 read needs --address (12 digits)")?;
        let parsed = Address::parse_full(a).map_err(|e| format!("--address: {e}"))?;
        (Some(parsed.to_string()), None)
    } else {
        let unit = args.unit.ok_or("a Modbus read needs --unit N")?;
        (None, Some(unit))
    };
    let timing = Timing {
        response_timeout: Some(args.timeout),
        retries: Some(args.retries),
        ..Timing::default()
    };
    let meter = MeterConfig {
        address,
        unit,
        ..MeterConfig::new(protocol, profile)
    };
    Ok(bus_config("cli", &args.target, &args.line, protocol)?
        .with_timing(timing)
        .with_meter(meter))
}

/// The reading as a table: quantity, value, unit, quality, reason.
pub fn table(batch: &ReadingBatch) -> String {
    let rows: Vec<[String; 5]> = batch
        .values
        .iter()
        .map(|v| {
            let value = match &v.value {
                Some(ValueData::Number(n)) => n.to_string(),
                Some(ValueData::Text(t)) => t.clone(),
                None => "-".into(),
            };
            let mut reason = v.reason.clone().unwrap_or_default();
            if let Some(t) = &v.meter_time {
                reason = format!("at {t} {reason}").trim_end().to_owned();
            }
            [
                v.quantity.to_string(),
                value,
                v.unit.to_string(),
                v.quality.to_string(),
                reason,
            ]
        })
        .collect();
    let head = ["quantity", "value", "unit", "quality", "reason"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = format!(
        "meter {} ({}) at {}\n",
        batch.meter, batch.protocol, batch.read_at
    );
    let line = |c: &[String; 5]| {
        format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}\n",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
        .trim_end()
        .to_owned()
            + "\n"
    };
    out.push_str(&line(&head.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    let bad = batch
        .values
        .iter()
        .filter(|v| v.quality == Quality::Bad)
        .count();
    if bad > 0 {
        out.push_str(&format!("{bad} of {} values bad\n", batch.values.len()));
    }
    out
}
