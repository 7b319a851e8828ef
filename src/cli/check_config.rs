//! `meterd check-config`: validate a configuration and print what the daemon would do with it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meter_protocols::dlt645::Version;
use meter_protocols::dlt645::event_1997::depth_in;
use meter_protocols::dlt645::freeze::FreezeKind;

use super::fail;
use crate::bus::event_collect::{clock_wire_time, counter_wire_time};
use crate::bus::exchange::char_time;
use crate::bus::freeze_collect::{load_records_per_day, record_wire_time, records_per_day};
use crate::bus::task::{Bus, BusOptions};
use crate::bus::transport::LinkSettings;
use crate::clock::gateway::ClockState;
use crate::config::{BusConfig, Config, FreezeConfig, Parity, ProfileSet};
use crate::meter::clock_discipline::{MAX_SYNC, MIDNIGHT_GUARD, SETTLEMENT_GUARD};

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
        let mut events = EventsPlan::default();
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
            let char_time = char_time(
                bus.baud,
                bus.data_bits,
                bus.parity != Parity::None,
                bus.stop_bits,
            );
            events.add(driver, char_time, t.preamble, t.turnaround);
            if !driver.freezes().is_empty() {
                let _ = writeln!(
                    out,
                    "    {}",
                    freeze_plan(driver, &config.freeze, char_time, t.preamble, t.turnaround)
                );
            }
        }
        events.describe(config, &mut out);
    }
    Ok(out)
}

/// What one bus spends on event counters and meter clocks (its DL/T 645 meters: a 1997 meter
/// has its programming counter only, and no clock check; Modbus meters have neither).
#[derive(Debug, Default)]
struct EventsPlan {
    /// Counter types read in a round, in `EventKind::ALL` order, with how many meters each.
    counters: Vec<(meter_protocols::dlt645::event::EventKind, usize)>,
    /// Wire time of one round of every meter's counters.
    round: Duration,
    /// Meters whose clock is read, and the wire time of one read of all of them.
    clock_meters: usize,
    clock_round: Duration,
    /// The zones of the DL/T 645 meters (a broadcast sync needs them to agree).
    zones: Vec<crate::clock::UtcOffset>,
}

impl EventsPlan {
    fn add(
        &mut self,
        driver: &crate::meter::MeterDriver,
        char_time: Duration,
        preamble: u8,
        turnaround: Duration,
    ) {
        if driver.address().is_some() && !self.zones.contains(&driver.utc_offset()) {
            self.zones.push(driver.utc_offset());
        }
        let Some(version) = driver.dlt645_version() else {
            return;
        };
        for &kind in driver.events() {
            if depth_in(kind, version) == 0 {
                continue;
            }
            self.round += counter_wire_time(version, char_time, preamble, turnaround);
            match self.counters.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => self.counters.push((kind, 1)),
            }
        }
        self.counters.sort();
        if version != Version::V2007 {
            return;
        }
        self.clock_meters += 1;
        self.clock_round += clock_wire_time(char_time, preamble, turnaround);
    }

    /// The bus's lines: the counter plan, the clock plan, the gateway clock.
    fn describe(&self, config: &Config, out: &mut String) {
        let d = |x: Duration| humantime::format_duration(x).to_string();
        let share = |wire: Duration, every: Duration| {
            100.0 * wire.as_secs_f64() / every.as_secs_f64().max(f64::MIN_POSITIVE)
        };
        let ev = &config.events;
        if self.counters.is_empty() {
            let _ = writeln!(out, "  event counters: none on this bus");
        } else {
            let names: Vec<String> = self
                .counters
                .iter()
                .map(|(k, n)| format!("{k} ({n} meter{})", if *n == 1 { "" } else { "s" }))
                .collect();
            let _ = writeln!(
                out,
                "  event counters every {}: {}; one round {} reads, {:.3} s of wire time, \
                 {:.3} % of the bus (at most {} %; each new occurrence adds one record read)",
                d(ev.interval),
                names.join(", "),
                self.counters.iter().map(|(_, n)| n).sum::<usize>(),
                self.round.as_secs_f64(),
                share(self.round, ev.interval),
                ev.bus_share_percent
            );
        }
        let mc = &config.meter_clock;
        if self.clock_meters == 0 || mc.check_every.is_zero() {
            let why = if self.clock_meters == 0 {
                "no DL/T 645-2007 meter on this bus"
            } else {
                "[meter_clock] check_every = \"0s\""
            };
            let _ = writeln!(out, "  meter clocks: not read ({why})");
        } else {
            let limit = mc.drift_limit.unwrap_or(config.validation.clock_limit);
            let _ = writeln!(
                out,
                "  meter clocks read every {}: {} meter{}, date and time, {:.3} s of wire time, \
                 {:.4} % of the bus; off by more than {} is a clock_drift event",
                d(mc.check_every),
                self.clock_meters,
                if self.clock_meters == 1 { "" } else { "s" },
                self.clock_round.as_secs_f64(),
                share(self.clock_round, mc.check_every),
                d(limit)
            );
            let sync = if !mc.sync {
                "not allowed ([meter_clock] sync = false): drift is only reported".to_owned()
            } else if self.zones.len() > 1 {
                "refused on this bus: its meters keep different time zones".to_owned()
            } else {
                let f = &config.freeze;
                format!(
                    "allowed for offsets under {}, once a day per bus, never within {} of \
                     midnight nor within {} of the daily freeze ({:02}:{:02}) or the monthly \
                     settlement (day {}, {:02}:00), by the meter's clock or true local time",
                    d(MAX_SYNC),
                    d(MIDNIGHT_GUARD),
                    d(SETTLEMENT_GUARD),
                    f.daily_at_minute / 60,
                    f.daily_at_minute % 60,
                    f.settlement_day,
                    f.settlement_hour
                )
            };
            let _ = writeln!(out, "  broadcast time sync: {sync}");
            let trust = config.gateway_clock.synchronised;
            let trust_name = serde_json::to_value(trust)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let state = match trust.state() {
                ClockState::Synchronised(why) => format!("counts as synchronised now ({why})"),
                ClockState::Unsynchronised(why) => format!(
                    "does not count as synchronised now ({why}): meter clocks are neither compared \
                     nor set"
                ),
            };
            let _ = writeln!(
                out,
                "  gateway clock ([gateway_clock] synchronised = \"{trust_name}\"): {state}"
            );
        }
    }
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
        let load = driver.load_profile();
        per_day += one.as_secs_f64()
            * match kind {
                FreezeKind::LoadProfile => load_records_per_day(load),
                _ => records_per_day(kind),
            };
        let depth = match kind {
            FreezeKind::Daily => cfg.backfill_days,
            FreezeKind::Monthly => cfg.backfill_months,
            FreezeKind::Hourly => cfg.backfill_hours,
            FreezeKind::LoadProfile => cfg.backfill_load_records,
        }
        .min(kind.depth_in(driver.dlt645_version().unwrap_or(Version::V2007)));
        backfill += one * u32::from(depth);
        if kind == FreezeKind::LoadProfile {
            kinds.push(format!(
                "{kind} (every {} min, {} kept by the meter, {depth} back, {:.2} s each)",
                load.interval_minutes,
                load.depth,
                one.as_secs_f64()
            ));
            continue;
        }
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
