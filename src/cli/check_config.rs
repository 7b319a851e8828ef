//! `meterd check-config`: validate a configuration and print what the daemon would do with it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meter_protocols::dlt645::Version;
use meter_protocols::dlt645::freeze::FreezeKind;

use super::fail;
use crate::bus::exchange::char_time;
use crate::bus::freeze_collect::{record_wire_time, records_per_day};
use crate::bus::task::{Bus, BusOptions};
use crate::bus::transport::LinkSettings;
use crate::config::{BusConfig, Config, FreezeConfig, Parity, ProfileSet};

/// Arguments of `meterd check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Configuration file.
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs `meterd check-config`: 0 and the effective configuration, or 2 and the located error.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let (config, profiles) = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail("check-config", &e.to_string(), 2),
    };
    // What `meterd run` refuses before it starts.
    if let Err(e) = crate::ingest::check_spool_room(&config, &profiles) {
        return fail(
            "check-config",
            &format!("{}: {e}", args.config.display()),
            2,
        );
    }
    // The keys and the credentials file (its permissions too), as `meterd run` checks them.
    let control = match crate::control::ControlSetup::from_config(&config) {
        Ok(c) => c,
        Err(e) => return fail("check-config", &e.to_string(), 2),
    };
    match describe(&config, &profiles) {
        Ok(text) => {
            print!("{text}");
            if let Some(c) = &control {
                println!("\n{}", c.describe());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(
            "check-config",
            &format!("{}: {e}", args.config.display()),
            2,
        ),
    }
}

/// The effective configuration as text; `Err` when a meter's driver cannot be built.
pub fn describe(config: &Config, profiles: &ProfileSet) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gateway {}: data_dir {}, evidence frames {}",
        config.gateway,
        config.data_dir.display(),
        if config.evidence_frames { "on" } else { "off" }
    );
    for bus in &config.buses {
        let bus: &BusConfig = bus.get_ref();
        let link = LinkSettings::from_bus(bus).map_or_else(
            || format!("modbus-tcp://{}", bus.host.as_deref().unwrap_or("")),
            |l| l.describe(),
        );
        let _ = writeln!(
            out,
            "\nbus {}: {link}; degrade after {} failed polls, then probe every {} slots",
            bus.name, bus.degrade_after, bus.probe_every
        );
        let runner =
            Bus::new(bus, profiles, BusOptions::new(&config.gateway)).map_err(|e| e.to_string())?;
        for (m, driver) in bus.meters.iter().zip(runner.drivers()) {
            let m = m.get_ref();
            let t = m
                .timing
                .over(&bus.timing)
                .effective_on(bus.transport, bus.baud);
            let _ = writeln!(
                out,
                "  meter {} ({}, profile {}, every {})",
                driver.id(),
                m.protocol.name(),
                m.profile,
                humantime::format_duration(m.interval)
            );
            let d = |x| humantime::format_duration(x).to_string();
            let _ = writeln!(
                out,
                "    timing: response {}, inter-byte {}, turnaround {}, retries {}, late-reply guard {}{}",
                d(t.response_timeout),
                d(t.inter_byte_timeout),
                d(t.turnaround),
                t.retries,
                d(t.late_reply_guard),
                if m.protocol.is_dlt645() {
                    format!(", preamble {} x FE", t.preamble)
                } else {
                    format!(", t3.5 {}", d(t.modbus_silence))
                }
            );
            if t.echo {
                let _ = writeln!(out, "    echo suppression on");
            }
            let _ = writeln!(out, "    quantities: {}", driver.quantities().join(", "));
            if let Some(plan) = driver.plan() {
                let _ = writeln!(out, "    plan ({} reads):", plan.requests.len());
                for line in plan.to_string().lines() {
                    let _ = writeln!(out, "      {line}");
                }
            } else {
                let _ = writeln!(out, "    reads: {}", driver.transactions().len());
            }
            if !driver.freezes().is_empty() {
                let char_time = char_time(
                    bus.baud,
                    bus.data_bits,
                    bus.parity != Parity::None,
                    bus.stop_bits,
                );
                let _ = writeln!(
                    out,
                    "    {}",
                    freeze_plan(driver, &config.freeze, char_time, t.preamble, t.turnaround)
                );
            }
        }
    }
    Ok(out)
}

/// One line: the freeze kinds read from a meter, and their bus time in steady state and for
/// the first back-fill, at the bus's wire speed.
fn freeze_plan(
    driver: &crate::meter::MeterDriver,
    cfg: &FreezeConfig,
    char_time: Duration,
    preamble: u8,
    turnaround: Duration,
) -> String {
    let mut per_day = 0.0;
    let mut backfill = Duration::ZERO;
    let mut kinds = Vec::new();
    for &kind in driver.freezes() {
        let one = record_wire_time(kind, char_time, preamble, turnaround);
        per_day += one.as_secs_f64() * records_per_day(kind);
        let depth = match kind {
            FreezeKind::Daily => cfg.backfill_days,
            FreezeKind::Monthly => cfg.backfill_months,
            FreezeKind::Hourly => cfg.backfill_hours,
        }
        .min(kind.depth_in(driver.dlt645_version().unwrap_or(Version::V2007)));
        backfill += one * u32::from(depth);
        kinds.push(format!(
            "{kind} ({depth} back, {:.2} s each)",
            one.as_secs_f64()
        ));
    }
    let share = f64::from(cfg.bus_share_percent.max(1)) / 100.0;
    format!(
        "freezes in {}: {}; {:.1} s of wire time a day; first back-fill {:.0} s, over at least \
         {:.0} s at {} % of the bus",
        driver.utc_offset(),
        kinds.join(", "),
        per_day,
        backfill.as_secs_f64(),
        backfill.as_secs_f64() / share,
        cfg.bus_share_percent
    )
}
