//! `meterd trace`: run the bus tasks of a configuration and print every frame both ways.
//!
//! Each line: time, bus, meter, `tx`/`rx`/`rx?`/`--`, hex, and a one-line decode. Readings
//! are summarised, not published. Meant for a technician at the box, with the daemon stopped
//! (the ports are opened here, and a port the daemon holds is reported busy).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::sync::{broadcast, mpsc};

use super::{fail, parse_duration, runtime};
use crate::bus::task::{BusOptions, spawn};
use crate::bus::trace::{Direction, FrameEvent};
use crate::config::Config;
use crate::decode::one_line;
use crate::hex_input::to_hex;
use crate::reading::{Quality, rfc3339_millis};

/// Arguments of `meterd trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Configuration file.
    #[arg(long)]
    pub config: PathBuf,
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

/// Runs `meterd trace`.
pub fn run(args: &TraceArgs) -> ExitCode {
    let (config, profiles) = match Config::load(&args.config) {
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
                args.config.display()
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
            match spawn(bus, &profiles, options, out.clone()) {
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
