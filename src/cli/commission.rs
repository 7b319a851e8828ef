//! `meterd test --config FILE`: commissioning. Reads every configured meter once through the
//! daemon's own bus, exchange and driver code, prints every value with its quality, and gives
//! each meter a one-line verdict: `ok`, `degraded`, `wrong address`, `no reply`,
//! `wrong protocol edition`, `wrong word order`, `echo` or `link down`.
//!
//! This module owns the arguments, the running of the buses side by side (the meters of one
//! bus one after another, as on the wire), and the printing. The probes and the verdicts are
//! [`crate::bus::task::MeterCheck`]'s and [`crate::meter::commission`]'s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use serde::Serialize;
use tokio::sync::broadcast;

use super::{fail, runtime};
use crate::bus::task::{Bus, BusOptions};
use crate::bus::trace::FrameEvent;
use crate::config::{Config, ValidationConfig};
use crate::meter::commission::{Finding, verdict};
use crate::reading::ReadingBatch;

/// Arguments of `meterd test`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct TestArgs {
    /// Configuration file (its buses are opened here: stop the daemon first).
    #[arg(long)]
    pub config: PathBuf,
    /// Only this bus.
    #[arg(long)]
    pub bus: Option<String>,
    /// Only this meter (its id as in `meterd status`).
    #[arg(long, value_name = "ID")]
    pub meter: Option<String>,
    /// Print one JSON document: every meter's verdict, detail, advice and reading.
    #[arg(long)]
    pub json: bool,
}

/// The verdicts and exit codes, under `meterd test --help`.
const AFTER_HELP: &str = "\
Each meter is read once through the daemon's own bus and driver code; every value is printed
with its quality, then one verdict line per meter:
  ok                      every value good
  degraded                the meter answers; some values bad or suspect (the first reason shown)
  wrong address           another DL/T 645 address answers read-address / a wildcard read, or
                          another Modbus unit id answers (probed only after silence)
  wrong protocol edition  a read of the other DL/T 645 edition (1997 <-> 2007) is answered
  wrong word order        Modbus values absurd as configured, plausible with the words swapped
  echo                    our own requests come back (set `echo = true` in the bus's timing)
  no reply                nothing answers, not even the probes
  link down               the port or device server cannot be opened
Exit status: 0 when every meter is ok or degraded, 1 when one failed, 2 for a file that cannot
be used or a selection with no meter.";

/// One meter's result.
#[derive(Debug, Serialize)]
struct MeterReport {
    bus: String,
    meter: String,
    /// `ok`, `degraded`, `wrong address`…
    verdict: &'static str,
    /// False when the meter failed (anything but `ok` and `degraded`).
    passed: bool,
    detail: String,
    advice: String,
    /// The poll and any probes.
    elapsed_ms: u64,
    reading: ReadingBatch,
}

impl MeterReport {
    fn new(bus: &str, finding: Finding, elapsed_ms: u64, reading: ReadingBatch) -> Self {
        Self {
            bus: bus.to_owned(),
            meter: reading.meter.to_string(),
            verdict: finding.verdict.text(),
            passed: finding.verdict.passed(),
            detail: finding.detail,
            advice: finding.advice,
            elapsed_ms,
            reading,
        }
    }

    /// `meter: verdict: detail; advice`.
    fn line(&self) -> String {
        let mut s = format!("{}: {}", self.meter, self.verdict);
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        if !self.advice.is_empty() {
            s.push_str("; ");
            s.push_str(&self.advice);
        }
        s
    }
}

/// The JSON document of `--json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    passed: bool,
    meters: &'a [MeterReport],
}

/// Runs `meterd test`: 0 when every meter passed (`ok` or `degraded`), 1 when one failed, 2
/// for a configuration that cannot be used or selects no meter.
pub fn run(args: &TestArgs) -> ExitCode {
    let (config, profiles) = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail("test", &e.to_string(), 2),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("test", &e, 2),
    };
    // Echoes are seen on the frame tap (each meter's check subscribes while it runs).
    let (frames, _) = broadcast::channel::<FrameEvent>(1024);
    let mut runs = Vec::new();
    for bus in config.buses.iter().map(|b| b.get_ref()) {
        if args.bus.as_ref().is_some_and(|n| *n != bus.name) {
            continue;
        }
        let mut options = BusOptions::new(&config.gateway);
        options.frames = Some(frames.clone());
        options.evidence_frames = true;
        let runner = match Bus::new(bus, &profiles, options) {
            Ok(b) => b,
            Err(e) => return fail("test", &e.to_string(), 2),
        };
        let meters: Vec<usize> = runner
            .drivers()
            .enumerate()
            .filter(|(_, d)| args.meter.as_ref().is_none_or(|id| id == d.id()))
            .map(|(i, _)| i)
            .collect();
        if !meters.is_empty() {
            runs.push((bus.name.clone(), runner, meters));
        }
    }
    if runs.is_empty() {
        return fail(
            "test",
            &format!("no meter selected in {}", args.config.display()),
            2,
        );
    }
    let validation = config.validation.clone();
    let reports: Vec<MeterReport> = rt.block_on(async {
        // Each bus is its own task, as in the daemon: a silent meter costs only its own bus.
        let tasks: Vec<_> = runs
            .into_iter()
            .map(|(name, runner, meters)| {
                let validation = validation.clone();
                tokio::spawn(test_bus(name, runner, meters, validation))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            match t.await {
                Ok(reports) => all.extend(reports),
                Err(e) => eprintln!("meterd test: a bus's run ended early: {e}"),
            }
        }
        all
    });
    let passed = reports.iter().all(|r| r.passed);
    if args.json {
        let doc = Report {
            passed,
            meters: &reports,
        };
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail("test", &format!("cannot print JSON: {e}"), 2),
        }
    } else {
        for r in &reports {
            print!("{}", super::read::table(&r.reading));
            println!("verdict {} ({} ms)\n", r.line(), r.elapsed_ms);
        }
        println!("verdicts:");
        for r in &reports {
            println!("  {}", r.line());
        }
        let failed = reports.iter().filter(|r| !r.passed).count();
        println!(
            "{} meters: {} passed, {failed} failed",
            reports.len(),
            reports.len() - failed
        );
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Checks `meters` of one bus one after another.
async fn test_bus(
    name: String,
    mut bus: Bus,
    meters: Vec<usize>,
    validation: ValidationConfig,
) -> Vec<MeterReport> {
    // A port that cannot be opened shows as `link down` on each of its meters.
    let _ = bus.connect().await;
    let mut out = Vec::new();
    for m in meters {
        let Some(check) = bus.check_meter(m, &validation.ranges).await else {
            continue;
        };
        let mut batch = check.batch;
        // The daemon's plausibility checks; "went backwards" needs the spool's history.
        validation.validate(&mut batch, |_| None, SystemTime::now());
        let finding = verdict(&check.evidence, &batch.values);
        let ms = u64::try_from(check.elapsed.as_millis()).unwrap_or(u64::MAX);
        out.push(MeterReport::new(&name, finding, ms, batch));
    }
    out
}
