//! `meterd demo`: the embedded default, in one command.
//!
//! Starts the simulated meters of `config/sim-demo.toml` on loopback (on free ports), the
//! embedded MQTT broker, and the daemon with `config/demo.toml` (its bus hosts pointed at
//! where the simulator really listens), then subscribes to the readings topic like a billing
//! core would and prints each reading as it arrives. Both files are compiled in, so the demo
//! runs from any directory. Ctrl-C (or `--duration`) stops everything cleanly.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::Config;
use crate::daemon::{Daemon, RunOptions, wait_for_signal};
use crate::logging::{self, LogFormat};
use crate::reading::freeze::FreezeRecord;
use crate::reading::{ReadingBatch, ValueData};
use crate::sim::{SimConfig, Simulator};

const SIM_DEMO: &str = include_str!("../../config/sim-demo.toml");
const DEMO: &str = include_str!("../../config/demo.toml");

/// Arguments of `meterd demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. `30s`); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Print each reading batch as one JSON line (the MQTT payload) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the daemon's log lines (default: warnings only).
    #[arg(long)]
    pub verbose: bool,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> ExitCode {
    logging::init(LogFormat::Human, if args.verbose { "info" } else { "warn" });
    let rt = match super::run::daemon_runtime() {
        Ok(rt) => rt,
        Err(e) => return super::fail("demo", &e, 1),
    };
    match rt.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail("demo", &e, 1),
    }
}

async fn demo(args: &DemoArgs) -> Result<(), String> {
    // 1. Simulated meters, every TCP port of the shipped file on an ephemeral loopback port.
    let mut sim_config = SimConfig::from_text(Path::new("<built-in>/sim-demo.toml"), SIM_DEMO)
        .map_err(|e| e.to_string())?;
    for port in &mut sim_config.ports {
        for listen in [&mut port.tcp, &mut port.modbus_tcp].into_iter().flatten() {
            *listen = "127.0.0.1:0".to_owned();
        }
    }
    let sim = Simulator::start(sim_config)
        .await
        .map_err(|e| e.to_string())?;

    // 2. The daemon's configuration, each bus pointed at where its simulator port listens
    //    (the demo's buses are named after the simulator's ports).
    let (mut config, profiles) =
        Config::from_text(Path::new("<built-in>/demo.toml"), DEMO).map_err(|e| e.to_string())?;
    for bus in &mut config.buses {
        let bus = bus.get_mut();
        let actual = sim
            .local_addr(&bus.name)
            .ok_or_else(|| format!("simulator port {} did not start", bus.name))?;
        bus.host = Some(actual.to_string());
    }
    // The status page's usual address may be held (another demo, a daemon): take a free
    // loopback port then, and say so, rather than run without a status page.
    let usual_listen = config.service.listen;
    if TcpListener::bind(usual_listen).is_err() {
        config.service.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    }
    let broker_port = free_port()?;
    config.mqtt.embedded_listen = SocketAddr::from(([127, 0, 0, 1], broker_port));
    let data_dir: PathBuf =
        std::env::temp_dir().join(format!("meterd-demo-{}", std::process::id()));
    let topic = format!(
        "{}/{}/meters/+/readings",
        config.mqtt.topic_prefix, config.gateway
    );
    let daemon = Daemon::start_with(
        config,
        profiles,
        RunOptions {
            data_dir: Some(data_dir.clone()),
            ..RunOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    println!(
        "meterd demo: {} simulated meters on loopback, embedded MQTT broker on 127.0.0.1:{broker_port}",
        sim.ports().iter().map(|p| p.meters.len()).sum::<usize>()
    );
    match daemon.service_addr() {
        Some(addr) if addr != usual_listen => println!(
            "status page: http://{addr}/  (meterd status --url http://{addr}; {usual_listen} was taken)"
        ),
        Some(addr) => println!("status page: http://{addr}/  (meterd status --url http://{addr})"),
        None => println!("status page: none (its port could not be opened; see the log)"),
    }
    println!("subscribed to {topic}; readings follow (Ctrl-C stops)");

    // 3. A subscriber, as the billing core would have.
    let mut opts = MqttOptions::new(
        format!("meterd-demo-viewer-{}", std::process::id()),
        "127.0.0.1",
        broker_port,
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    // The meters' own settlement records too, one line each (the first minutes back-fill the
    // simulated meters' histories).
    client
        .subscribe(topic.replace("/readings", "/freezes"), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let json = args.json;
    let viewer = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/freezes") => {
                    print_freeze(&p.payload, json)
                }
                Ok(Event::Incoming(Packet::Publish(p))) => print_reading(&p.payload, json),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    });

    match args.duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = wait_for_signal() => {}
            }
        }
        None => wait_for_signal().await,
    }
    println!("meterd demo: stopping");
    daemon.stop().await;
    viewer.abort();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// One line per settlement record: meter, kind, stamp, and its import total.
fn print_freeze(payload: &[u8], json: bool) {
    if json {
        println!("{}", String::from_utf8_lossy(payload));
        return;
    }
    let record: FreezeRecord = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            println!("(unreadable freeze record: {e})");
            return;
        }
    };
    let time = record.read_at.get(11..23).unwrap_or(&record.read_at);
    let total = record
        .values
        .iter()
        .find(|v| &*v.quantity == "energy.active.import.total")
        .and_then(|v| match &v.value {
            Some(ValueData::Number(n)) => Some(format!("{n} {}", v.unit)),
            _ => None,
        })
        .unwrap_or_default();
    println!(
        "{time}  {:<14} {} freeze of {}{}: energy.active.import.total {total}",
        record.meter,
        record.kind,
        record.frozen_at,
        if record.backfill { " (back-fill)" } else { "" }
    );
}

fn print_reading(payload: &[u8], json: bool) {
    if json {
        println!("{}", String::from_utf8_lossy(payload));
        return;
    }
    let batch: ReadingBatch = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            println!("(unreadable reading: {e})");
            return;
        }
    };
    let time = batch.read_at.get(11..23).unwrap_or(&batch.read_at);
    println!(
        "{time}  {:<14} {:<12} seq {}",
        batch.meter, batch.protocol, batch.seq
    );
    for v in &batch.values {
        let value = match &v.value {
            Some(ValueData::Number(n)) => format!("{n} {}", v.unit),
            Some(ValueData::Text(t)) => t.clone(),
            None => "—".to_owned(),
        };
        let reason = v
            .reason
            .as_deref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        println!(
            "    {:<38} {:>18}  {}{reason}",
            v.quantity,
            value.trim_end(),
            v.quality
        );
    }
}
