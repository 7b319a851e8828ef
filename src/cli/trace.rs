//! `meterd trace`: run the bus tasks of a configuration and print every frame both ways.
//!
//! Each line: time, bus, meter, `tx`/`rx`/`rx?`/`--`, hex, and a one-line decode. Readings
//! are summarised, not published. Meant for a technician at the box, with the daemon stopped
//! (the ports are opened here, and a port the daemon holds is reported busy).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use tokio::sync::{broadcast, mpsc};

use super::{fail, parse_duration, runtime};
use crate::bus::observer::{AttemptReport, BusObserver, PollOutcome};
use crate::bus::task::{BusOptions, spawn};
use crate::bus::trace::{Direction, FrameEvent};
use crate::config::Config;
use crate::hex_input::to_hex;
use crate::meter::explain::one_line_as;
use crate::reading::{Quality, rfc3339_millis};
use crate::service::report::{BusReport, StatusReport};

/// Arguments of `meterd trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Configuration file (the buses are opened here: stop the daemon first, or use --daemon).
    #[arg(long, required_unless_present = "daemon")]
    pub config: Option<PathBuf>,
    /// Watch the running daemon's frames instead (its live trace; nothing is opened here).
    #[arg(long, conflicts_with = "config")]
    pub daemon: bool,
    /// With --daemon: the daemon's diagnostics service (`http://HOST:PORT` or `unix:/PATH`).
    #[arg(long, requires = "daemon", default_value_t = format!("http://{}", crate::service::DEFAULT_LISTEN))]
    pub url: String,
    /// Only this bus.
    #[arg(long)]
    pub bus: Option<String>,
    /// Only this meter's frames.
    #[arg(long)]
    pub meter: Option<String>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// One trace line.
pub fn format_event(e: &FrameEvent) -> String {
    let meter = e.meter.as_deref().unwrap_or("-");
    let mut line = format!(
        "{} {} {} {:<3}",
        rfc3339_millis(e.at),
        e.bus,
        meter,
        e.direction.label()
    );
    match e.direction {
        Direction::Note => {
            line.push(' ');
            line.push_str(&e.note);
        }
        Direction::Tx | Direction::Rx => {
            line.push(' ');
            line.push_str(&to_hex(&e.bytes));
            line.push_str("  | ");
            line.push_str(&one_line_as(&e.bytes, e.protocol));
            // A sent control frame's redaction is said on its line.
            if !e.note.is_empty() {
                line.push_str(" [");
                line.push_str(&e.note);
                line.push(']');
            }
        }
        Direction::RxUnusable => {
            line.push(' ');
            line.push_str(&to_hex(&e.bytes));
            line.push_str("  | skipped: ");
            line.push_str(&e.note);
        }
    }
    line
}

/// One trace line from the daemon's `/api/trace` event (the same layout as [`format_event`]).
pub fn format_json_event(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let meter = v.get("meter").and_then(|x| x.as_str()).unwrap_or("-");
    let mut line = format!("{} {} {} {:<3}", s("at"), s("bus"), meter, s("direction"));
    if !s("hex").is_empty() {
        line.push(' ');
        line.push_str(s("hex"));
        line.push_str("  |");
    }
    line.push(' ');
    line.push_str(s("decode"));
    line
}

/// `meterd trace --daemon`: follows `/api/trace` until Ctrl-C, `--duration`, or the daemon
/// stops (exit 0), or says in one line why it cannot (exit 2 when no daemon answers, or the
/// daemon has no such `--bus` or `--meter`).
fn run_daemon(args: &TraceArgs) -> ExitCode {
    let ep = match super::status::endpoint("trace", &args.url) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("trace", &e, 2),
    };
    // A --bus or --meter the daemon does not have would show nothing, forever: check first.
    if args.bus.is_some() || args.meter.is_some() {
        let known = match rt.block_on(crate::service::client::get(&ep, "/api/status")) {
            Ok(text) => serde_json::from_str::<StatusReport>(&text).map_err(|e| {
                fail(
                    "trace",
                    &format!("the daemon's answer is not a status document: {e}"),
                    1,
                )
            }),
            Err(e) => Err(super::status::client_fail("trace", &e)),
        };
        let report = match known {
            Ok(r) => r,
            Err(code) => return code,
        };
        let place = format!("the daemon at {} (gateway {})", args.url, report.gateway.id);
        let buses: Vec<&BusReport> = report
            .buses
            .iter()
            .filter(|b| args.bus.as_ref().is_none_or(|n| *n == b.name))
            .collect();
        if let Some(bus) = &args.bus
            && buses.is_empty()
        {
            let names: Vec<&str> = report.buses.iter().map(|b| b.name.as_str()).collect();
            return fail("trace", &unknown("bus", bus, &place, &names), 2);
        }
        if let Some(meter) = &args.meter {
            let ids: Vec<&str> = buses
                .iter()
                .flat_map(|b| b.meters.iter().map(|m| m.id.as_str()))
                .collect();
            if !ids.contains(&meter.as_str()) {
                return fail("trace", &unknown("meter", meter, &place, &ids), 2);
            }
        }
    }
    let mut path = String::from("/api/trace");
    let mut sep = '?';
    for (k, v) in [("bus", &args.bus), ("meter", &args.meter)] {
        if let Some(v) = v {
            path.push(sep);
            path.push_str(k);
            path.push('=');
            path.push_str(&percent_encode(v));
            sep = '&';
        }
    }
    rt.block_on(async {
        let follow = crate::service::client::sse(&ep, &path, |event, data| {
            match event {
                "frame" => match serde_json::from_str::<serde_json::Value>(data) {
                    Ok(v) => println!("{}", format_json_event(&v)),
                    Err(_) => println!("{data}"),
                },
                "lagged" => println!("-- frames not shown (output too slow): {data}"),
                _ => {}
            }
            true
        });
        let stop = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            r = follow => match r {
                Ok(()) => {
                    eprintln!("meterd trace: the daemon ended the trace (stopping?)");
                    ExitCode::SUCCESS
                }
                Err(e) => super::status::client_fail("trace", &e),
            },
            _ = stop => ExitCode::SUCCESS,
        }
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs `meterd trace`: 0 when stopped by `--duration` or Ctrl-C; 2 for a bad configuration,
/// an unknown `--bus` or `--meter`, or a bus whose port could not be opened (busy, missing).
pub fn run(args: &TraceArgs) -> ExitCode {
    let Some(config_path) = args.config.as_ref() else {
        return run_daemon(args);
    };
    let (config, profiles) = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail("trace", &e.to_string(), 2),
    };
    let all: Vec<_> = config.buses.iter().map(|b| b.get_ref()).collect();
    let buses: Vec<_> = all
        .iter()
        .copied()
        .filter(|b| args.bus.as_ref().is_none_or(|n| *n == b.name))
        .collect();
    if buses.is_empty() {
        let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
        return fail(
            "trace",
            &unknown(
                "bus",
                args.bus.as_deref().unwrap_or(""),
                &config_path.display().to_string(),
                &names,
            ),
            2,
        );
    }
    if let Some(meter) = &args.meter {
        let ids: Vec<String> = buses
            .iter()
            .flat_map(|b| b.meters.iter().map(|m| m.get_ref().effective_id(&b.name)))
            .collect();
        if !ids.contains(meter) {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let place = match &args.bus {
                Some(b) => format!("bus {b} of {}", config_path.display()),
                None => config_path.display().to_string(),
            };
            return fail("trace", &unknown("meter", meter, &place, &ids), 2);
        }
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("trace", &e, 2),
    };
    rt.block_on(async {
        let (ftx, mut frx) = broadcast::channel::<FrameEvent>(4096);
        let (out, mut readings) = mpsc::channel(64);
        let (link_tx, mut link_failures) = mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for bus in buses {
            let mut options = BusOptions::new(&config.gateway);
            options.frames = Some(ftx.clone());
            options.evidence_frames = false;
            let watch = Arc::new(FirstOpen::new(&bus.name, link_tx.clone()));
            match spawn(bus, &profiles, options, out.clone(), watch) {
                Ok(h) => handles.push(h),
                Err(e) => return fail("trace", &e.to_string(), 2),
            }
        }
        drop(out);
        let stop = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        let mut code = ExitCode::SUCCESS;
        loop {
            // Biased: a bus that could not open its port says so before the readings its
            // failure produced (all bad), which would otherwise look like a meter's fault.
            tokio::select! {
                biased;
                Some((bus, reason)) = link_failures.recv() => {
                    code = fail("trace", &format!("bus {bus}: {reason}"), 2);
                    break;
                }
                _ = &mut stop => break,
                ev = frx.recv() => match ev {
                    Ok(e) => {
                        if args.meter.as_ref().is_some_and(|m| e.meter.as_deref() != Some(m.as_str())) {
                            continue;
                        }
                        println!("{}", format_event(&e));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        println!("-- {n} frames not shown (output too slow)");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                b = readings.recv() => match b {
                    Some(b) => {
                        if args.meter.as_ref().is_some_and(|m| *m != b.meter) {
                            continue;
                        }
                        let bad = b.values.iter().filter(|v| v.quality == Quality::Bad).count();
                        println!(
                            "{} == reading {}: {} values, {} bad",
                            b.read_at,
                            b.meter,
                            b.values.len(),
                            bad
                        );
                    }
                    None => break,
                },
            }
        }
        for h in &handles {
            h.task.abort();
        }
        code
    })
}

/// `no bus "X" in FILE; did you mean Y?; known buses: …` for an unknown `--bus` or `--meter`.
fn unknown(what: &str, given: &str, place: &str, known: &[&str]) -> String {
    format!(
        "no {what} {given:?} in {place}{}; known {what}{}: {}",
        super::did_you_mean(given, known.iter().copied()),
        if what == "bus" { "es" } else { "s" },
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// Watches one bus of a trace until its link first opens: a failure before that (a busy or
/// missing port, a device server that refuses) is sent to the trace, which stops with it. A
/// failure after the first open is shown in the trace like any other, and the bus reopens.
struct FirstOpen {
    bus: String,
    opened: AtomicBool,
    failures: mpsc::UnboundedSender<(String, String)>,
}

impl FirstOpen {
    fn new(bus: &str, failures: mpsc::UnboundedSender<(String, String)>) -> Self {
        Self {
            bus: bus.to_owned(),
            opened: AtomicBool::new(false),
            failures,
        }
    }
}

impl BusObserver for FirstOpen {
    fn link_up(&self, _: bool, _: Duration) {
        self.opened.store(true, Ordering::Relaxed);
    }

    fn link_down(&self, reason: &str, _: Duration) {
        if !self.opened.load(Ordering::Relaxed) {
            // The trace may have ended already; nobody is left to tell.
            let _ = self.failures.send((self.bus.clone(), reason.to_owned()));
        }
    }

    fn attempt(&self, _: usize, _: &AttemptReport, _: Duration) {}
    fn polled(&self, _: usize, _: &PollOutcome, _: Duration) {}
    fn overruns(&self, _: usize, _: u64, _: Duration) {}
}
