//! `meterd check-config`: validate a configuration and print what the daemon would do with it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::fail;
use crate::bus::task::{Bus, BusOptions};
use crate::bus::transport::LinkSettings;
use crate::config::{BusConfig, Config, ProfileSet};

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
    match describe(&config, &profiles) {
        Ok(text) => {
            print!("{text}");
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
        }
    }
    Ok(out)
}
