//! `meterd trace`: run the bus tasks of a configuration and print every frame both ways.
//!
//! Each line: time, bus, meter, `tx`/`rx`/`rx?`/`--`, hex, and a one-line decode. Readings
//! are summarised, not published. Meant for a technician at the box, with the daemon stopped
//! (the ports are opened here, and a port the daemon holds is reported busy).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::{broadcast, mpsc};

use super::{fail, parse_duration, runtime};
use crate::bus::observer::Unobserved;
use crate::bus::task::{BusOptions, spawn};
use crate::bus::trace::{Direction, FrameEvent};
use crate::config::Config;
use crate::hex_input::to_hex;
use crate::meter::explain::one_line;
use crate::reading::{Quality, rfc3339_millis};

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
            line.push_str(&one_line(&e.bytes));
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
/// stops (exit 0), or says in one line why it cannot (exit 2 when no daemon answers).
fn run_daemon(args: &TraceArgs) -> ExitCode {
    let ep = match super::status::endpoint("trace", &args.url) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("trace", &e, 2),
    };
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

/// Runs `meterd trace`.
pub fn run(args: &TraceArgs) -> ExitCode {
    let Some(config_path) = args.config.as_ref() else {
        return run_daemon(args);
    };
    let (config, profiles) = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail("trace", &e.to_string(), 2),
    };
    let buses: Vec<_> = config
        .buses
        .iter()
        .map(|b| b.get_ref())
        .filter(|b| args.bus.as_ref().is_none_or(|n| *n == b.name))
        .collect();
    if buses.is_empty() {
        return fail(
            "trace",
            &format!(
                "no bus {:?} in {}",
                args.bus.as_deref().unwrap_or(""),
                config_path.display()
            ),
            2,
        );
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("trace", &e, 2),
    };
    rt.block_on(async {
        let (ftx, mut frx) = broadcast::channel::<FrameEvent>(4096);
        let (out, mut readings) = mpsc::channel(64);
        let mut handles = Vec::new();
        for bus in buses {
            let mut options = BusOptions::new(&config.gateway);
            options.frames = Some(ftx.clone());
            options.evidence_frames = false;
            match spawn(bus, &profiles, options, out.clone(), Arc::new(Unobserved)) {
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
        loop {
            tokio::select! {
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
        ExitCode::SUCCESS
    })
}
