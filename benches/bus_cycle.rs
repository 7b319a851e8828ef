//! Bus benchmark (issue 3): how close the gateway keeps a DL/T 645 bus to its wire-time limit.
//!
//! Setup: meterd's simulator emulates the line at 9600 baud 8E1 (11 bits per character,
//! `wire_time = true`, `pace = true`: reply bytes leave one by one at line speed) with a 20 ms
//! reply latency, 32 DL/T 645-2007 meters × 8 single-item DIs on one bus. The bus task reads
//! them over raw TCP on loopback (a "serial device server"): the same exchange code as a
//! serial port (`Link::Tcp` vs `Link::Serial`), and TCP lets a timestamping relay sit between
//! the gateway and the simulator, which a pty pair does not (a pty also adds no timing of its
//! own, so nothing is lost). The relay is two plain OS threads per bus with blocking sockets,
//! so its own wake-ups are not tied to tokio's timer.
//!
//! Figures:
//! - poll-cycle time (every meter polled once, one after the other, through
//!   `Bus::read_now`, i.e. `poll_meter`: the scheduler's path) vs the ideal
//!   Σ (request wire time + reply latency + reply wire time + turnaround), from the bytes the
//!   bus counted and the configured turnaround;
//! - gateway turnaround beyond the configured silence: relay time of the next request's first
//!   byte minus relay time of the previous reply's last byte, minus the configured turnaround;
//! - the same with 4 buses of the same load in parallel.
//!
//! - back-fill: settlement records (issue "settlement-grade data"): 32 DL/T 645-2007 meters at
//!   2400 baud 8E1 on one bus, each missing its last `METERD_BACKFILL_DAYS` daily records (4 by
//!   default; 62 is the whole history), read by the bus task's freeze collector at 100 % bus
//!   share with no poll due: elapsed time from the first request to the last record vs the same
//!   wire-time bound Σ (request wire + latency + reply wire + turnaround) over the exchanges.
//!
//! `cargo bench --bench bus_cycle` runs the full setup (release); `cargo test --benches` or
//! `cargo bench --bench bus_cycle -- --test` runs a small smoke setup that checks it works.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterd::bus::task::{Bus, BusOptions};
use meterd::config::Config;
use meterd::health::BusHealth;
use meterd::reading::Quality;
use meterd::sim::{SimConfig, Simulator};

const PROFILE: &str = r#"
name = "bench-8"
description = "eight single-item DIs (benchmark)"
source = "benchmark"
protocol = "dlt645-2007"
[[point]]
di = "00000000"
[[point]]
di = "00010000"
[[point]]
di = "00020000"
[[point]]
di = "02010100"
[[point]]
di = "02020100"
[[point]]
di = "02030000"
[[point]]
di = "02060000"
[[point]]
di = "02800002"
"#;

const BAUD: u32 = 9600;
const BITS_PER_CHAR: u32 = 11; // 8E1
const LATENCY: Duration = Duration::from_millis(20);
const TURNAROUND: Duration = Duration::from_millis(2);
const PREAMBLE: u32 = 4;

#[derive(Clone, Copy)]
struct Setup {
    meters: u32,
    cycles: u32,
}

fn wire(bytes: u64) -> Duration {
    Duration::from_nanos(bytes * u64::from(BITS_PER_CHAR) * 1_000_000_000 / u64::from(BAUD))
}

/// The profile, in a directory removed when dropped (configs load profiles when parsed).
fn dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("bench-8.toml"), PROFILE).unwrap();
    d
}

fn address(bus: u32, i: u32) -> String {
    format!("{:012}", 500_000 + bus * 1000 + i)
}

fn sim_config(buses: u32, setup: Setup) -> SimConfig {
    let profiles = dir();
    let mut text = format!(
        "profile_dirs = [{:?}]\n",
        profiles.path().display().to_string()
    );
    for b in 0..buses {
        text.push_str(&format!(
            "[[port]]\nname = \"bus{b}\"\ntcp = \"127.0.0.1:0\"\nbaud = {BAUD}\nparity = \"even\"\n\
             wire_time = true\npace = true\nreply_latency = \"{}ms\"\n",
            LATENCY.as_millis()
        ));
        for i in 0..setup.meters {
            text.push_str(&format!(
                "[[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"bench-8\"\nseed = {}\n",
                address(b, i),
                b * 1000 + i
            ));
        }
    }
    SimConfig::from_text(Path::new("/tmp/bench-sim.toml"), &text).unwrap()
}

fn gateway_config(b: u32, host: &str, setup: Setup) -> (Config, meterd::config::ProfileSet) {
    let profiles = dir();
    let mut text = format!(
        "gateway = \"bench\"\nprofile_dirs = [{:?}]\n[[bus]]\nname = \"bus{b}\"\ntransport = \"tcp\"\nhost = \"{host}\"\n\
         baud = {BAUD}\nparity = \"even\"\n\
         timing = {{ response_timeout = \"500ms\", retries = 0, turnaround = \"{}ms\", preamble = {PREAMBLE} }}\n",
        profiles.path().display().to_string(),
        TURNAROUND.as_millis()
    );
    for i in 0..setup.meters {
        text.push_str(&format!(
            "[[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"bench-8\"\n",
            address(b, i)
        ));
    }
    Config::from_text(Path::new("/tmp/bench-gw.toml"), &text).unwrap()
}

/// Which way a relayed chunk went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Request,
    Reply,
}

type Events = Arc<Mutex<Vec<(Instant, Way, usize)>>>;

/// A timestamping TCP relay in front of `upstream`; returns its address and its event log.
fn relay(upstream: SocketAddr) -> (SocketAddr, Events) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let events: Events = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
    let ev = events.clone();
    std::thread::spawn(move || {
        for gw in listener.incoming() {
            let Ok(gw) = gw else { return };
            let Ok(sim) = TcpStream::connect(upstream) else {
                return;
            };
            let _ = gw.set_nodelay(true);
            let _ = sim.set_nodelay(true);
            pump(
                gw.try_clone().unwrap(),
                sim.try_clone().unwrap(),
                Way::Request,
                ev.clone(),
            );
            pump(sim, gw, Way::Reply, ev.clone());
        }
    });
    (addr, events)
}

fn pump(mut from: TcpStream, mut to: TcpStream, way: Way, events: Events) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // A request is stamped when its bytes arrive; a reply byte when it has been
            // handed to the gateway's socket.
            let before = Instant::now();
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
            let at = if way == Way::Request {
                before
            } else {
                Instant::now()
            };
            events.lock().unwrap().push((at, way, n));
        }
    });
}

/// Turnarounds: next request's first byte minus the previous reply's last byte.
fn turnarounds(events: &[(Instant, Way, usize)]) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut last_reply: Option<Instant> = None;
    for (at, way, _) in events {
        match way {
            Way::Reply => last_reply = Some(*at),
            Way::Request => {
                if let Some(r) = last_reply.take() {
                    out.push(at.saturating_duration_since(r));
                }
            }
        }
    }
    out
}

/// The simulator's side of each exchange beyond the ideal: (last reply byte − first request
/// byte) − (request wire time + latency + reply wire time), in ms. This is time the gateway
/// cannot save (the emulated meter's own timer slack).
fn meter_excess(events: &[(Instant, Way, usize)]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        if events[i].1 != Way::Request {
            i += 1;
            continue;
        }
        let start = events[i].0;
        let mut req = 0;
        while i < events.len() && events[i].1 == Way::Request {
            req += events[i].2;
            i += 1;
        }
        let (mut rep, mut end) = (0, None);
        while i < events.len() && events[i].1 == Way::Reply {
            rep += events[i].2;
            end = Some(events[i].0);
            i += 1;
        }
        if let Some(end) = end {
            let ideal = wire(req as u64) + LATENCY + wire(rep as u64);
            out.push(ms(end.saturating_duration_since(start)) - ms(ideal));
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

#[derive(Default)]
struct BusFigures {
    cycles: Vec<Duration>,
    ideal: Duration,
    exchanges: u64,
    values: usize,
    bad: usize,
}

async fn run_bus(mut bus: Bus, status: Arc<Mutex<BusHealth>>, b: u32, setup: Setup) -> BusFigures {
    bus.connect().await.unwrap();
    let mut f = BusFigures::default();
    for _ in 0..setup.cycles {
        let before = status.lock().unwrap().clone();
        let t0 = Instant::now();
        for i in 0..setup.meters {
            let batch = bus.read_now(&address(b, i)).await.unwrap();
            f.values += batch.values.len();
            f.bad += batch
                .values
                .iter()
                .filter(|v| v.quality == Quality::Bad)
                .count();
        }
        f.cycles.push(t0.elapsed());
        let after = status.lock().unwrap().clone();
        let n = after.transactions - before.transactions;
        let bytes = (after.wire.tx_bytes - before.wire.tx_bytes)
            + (after.wire.rx_bytes - before.wire.rx_bytes);
        // Σ (request wire + latency + reply wire + turnaround): the first request of a cycle
        // has a turnaround before it too (after the previous cycle's last reply), except in
        // the very first cycle, which is why only later cycles are compared.
        f.ideal = wire(bytes) + (LATENCY + TURNAROUND) * u32::try_from(n).unwrap();
        f.exchanges = n;
    }
    f
}

/// Back-fill at 2400 baud: `meters` meters each missing `days` daily records. Returns
/// (records, exchanges, elapsed, bound).
async fn backfill(meters: u32, days: u8) -> (usize, u64, Duration, Duration) {
    use meterd::bus::freeze_collect::{FreezeEvent, FreezeSink};
    use meterd::config::FreezeConfig;
    use meterd::ingest::freezes::LedgerView;
    const B: u32 = 2400;
    let wire2400 = |bytes: u64| {
        Duration::from_nanos(bytes * u64::from(BITS_PER_CHAR) * 1_000_000_000 / u64::from(B))
    };
    let mut sim = format!(
        "[[port]]\nname = \"fill\"\ntcp = \"127.0.0.1:0\"\nbaud = {B}\nparity = \"even\"\n\
         wire_time = true\npace = true\nreply_latency = \"{}ms\"\n",
        LATENCY.as_millis()
    );
    let mut gw = String::new();
    for i in 0..meters {
        let a = address(9, i);
        sim.push_str(&format!(
            "[[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{a}\"\nprofile = \"dlt645-three-phase\"\nseed = {i}\n"
        ));
        // One read per poll: the first polls (at start) take little of the bench's time.
        gw.push_str(&format!(
            "[[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{a}\"\nprofile = \"bench-1\"\n\
             interval = \"24h\"\nfreezes = [\"daily\"]\n"
        ));
    }
    let sim =
        Simulator::start(SimConfig::from_text(Path::new("/tmp/bench-fill.toml"), &sim).unwrap())
            .await
            .unwrap();
    let host = sim.local_addr("fill").unwrap();
    let profiles_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles_dir.path().join("bench-1.toml"),
        "name = \"bench-1\"\ndescription = \"one DI\"\nsource = \"benchmark\"\nprotocol = \"dlt645-2007\"\n\
         [[point]]\ndi = \"00010000\"\n",
    )
    .unwrap();
    let text = format!(
        "gateway = \"bench\"\nprofile_dirs = [{:?}]\n[freeze]\ndelay = \"0s\"\nbus_share_percent = 100\nbackfill_days = {days}\n\
         [[bus]]\nname = \"fill\"\ntransport = \"tcp\"\nhost = \"{host}\"\nbaud = {B}\nparity = \"even\"\n\
         timing = {{ response_timeout = \"1s\", retries = 0, turnaround = \"{}ms\", preamble = {PREAMBLE} }}\n{gw}",
        profiles_dir.path().display().to_string(),
        TURNAROUND.as_millis()
    );
    let (config, profiles) =
        Config::from_text(Path::new("/tmp/bench-fill-gw.toml"), &text).unwrap();
    let bus_cfg = config.buses[0].get_ref();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FreezeEvent>(1024);
    let mut options = BusOptions::new("bench");
    options.freezes = Some(FreezeSink {
        book: Arc::new(LedgerView::default()),
        out: tx,
        config: FreezeConfig {
            delay: Duration::ZERO,
            bus_share_percent: 100,
            backfill_days: days,
            ..config.freeze.clone()
        },
    });
    let status = Arc::new(Mutex::new(BusHealth::for_bus(bus_cfg)));
    let bus = Bus::new(bus_cfg, &profiles, options)
        .unwrap()
        .with_observer(status.clone());
    // The polls' batches are drained (a full channel would stop the bus).
    let (out, mut readings) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move { while readings.recv().await.is_some() {} });
    let (_commands_tx, commands) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let task = tokio::spawn(bus.run(out, commands, stop));
    let want = meters as usize * usize::from(days);
    let mut records = 0;
    let mut last = t0;
    while records < want {
        match tokio::time::timeout(Duration::from_secs(300), rx.recv()).await {
            Ok(Some(FreezeEvent::Record(_))) => {
                records += 1;
                last = Instant::now();
            }
            Ok(Some(FreezeEvent::Lost { reason, .. })) => panic!("record lost: {reason}"),
            _ => break,
        }
    }
    let _ = stop_tx.send(true);
    let s = status.lock().unwrap().clone();
    let bytes = s.wire.tx_bytes + s.wire.rx_bytes;
    let bound = wire2400(bytes) + (LATENCY + TURNAROUND) * u32::try_from(s.transactions).unwrap();
    task.abort();
    sim.shutdown().await;
    (records, s.transactions, last.duration_since(t0), bound)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    label: String,
    f: BusFigures,
    extra: Vec<f64>,
    meter: Vec<f64>,
}

async fn scenario(buses: u32, setup: Setup) -> Vec<Row> {
    let sim = Simulator::start(sim_config(buses, setup)).await.unwrap();
    let mut tasks = Vec::new();
    let mut logs = Vec::new();
    for b in 0..buses {
        let upstream = sim.local_addr(&format!("bus{b}")).unwrap();
        let (addr, events) = relay(upstream);
        logs.push(events);
        let cfg = gateway_config(b, &addr.to_string(), setup);
        let status = Arc::new(Mutex::new(BusHealth::for_bus(cfg.0.buses[0].get_ref())));
        let bus = Bus::new(cfg.0.buses[0].get_ref(), &cfg.1, BusOptions::new("bench"))
            .unwrap()
            .with_observer(status.clone());
        tasks.push(tokio::spawn(run_bus(bus, status, b, setup)));
    }
    let mut rows = Vec::new();
    for (b, t) in tasks.into_iter().enumerate() {
        let f = t.await.unwrap();
        let events = logs[b].lock().unwrap().clone();
        let mut extra: Vec<f64> = turnarounds(&events)
            .into_iter()
            .map(|d| ms(d) - ms(TURNAROUND))
            .collect();
        extra.sort_by(f64::total_cmp);
        rows.push(Row {
            label: format!("{buses} bus{} / bus{b}", if buses > 1 { "es" } else { "" }),
            f,
            extra,
            meter: meter_excess(&events),
        });
    }
    sim.shutdown().await;
    rows
}

fn print_rows(rows: &[Row]) {
    for r in rows {
        // Compare the last cycle (a steady state: the first one includes connecting).
        let cycle = *r.f.cycles.last().unwrap();
        println!(
            "| {:<15} | {:>9} | {:>9.1} | {:>9.1} | {:>6.3} | {:>7.3} | {:>7.3} | {:>7.3} | {:>7.3} | {:>5}/{:<5} |",
            r.label,
            r.f.exchanges,
            ms(cycle),
            ms(r.f.ideal),
            cycle.as_secs_f64() / r.f.ideal.as_secs_f64(),
            percentile(&r.extra, 0.5),
            percentile(&r.extra, 0.99),
            r.extra.last().copied().unwrap_or(f64::NAN),
            percentile(&r.meter, 0.5),
            r.f.values - r.f.bad,
            r.f.values,
        );
    }
}

/// The 1-minute load average (the machine is shared: figures depend on it).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let setup = if full {
        Setup {
            meters: 32,
            cycles: 2,
        }
    } else {
        Setup {
            meters: 2,
            cycles: 2,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "bus_cycle: {} DL/T 645 meters × 8 DIs per bus, {BAUD} baud 8E1 emulated (wire_time, pace), \
         reply latency {} ms, turnaround {} ms, preamble {PREAMBLE}, raw TCP loopback via a timestamping relay{}",
        setup.meters,
        LATENCY.as_millis(),
        TURNAROUND.as_millis(),
        if full { "" } else { " (smoke run)" }
    );
    println!(
        "| run             | exchanges | cycle ms  | ideal ms  | ratio  | ta p50  | ta p99  | ta max  | sim p50 | good/values |"
    );
    println!(
        "|-----------------|-----------|-----------|-----------|--------|---------|---------|---------|---------|-------------|"
    );
    let load_before = load_average();
    let single = rt.block_on(scenario(1, setup));
    print_rows(&single);
    let four = rt.block_on(scenario(4, setup));
    print_rows(&four);
    println!(
        "(cycle: the last of {} cycles; ta: gateway turnaround beyond the configured silence, ms, \
         over all cycles; sim: the simulated meter's own delay beyond its ideal \
         (request wire + latency + reply wire) per exchange, ms; load average before/after: {load_before} / {})",
        setup.cycles,
        load_average()
    );

    let days: u8 = std::env::var("METERD_BACKFILL_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(if full { 4 } else { 1 });
    let fill_meters = if full { 32 } else { 2 };
    let (records, exchanges, elapsed, bound) = rt.block_on(backfill(fill_meters, days));
    println!(
        "\nback-fill: {fill_meters} meters × {days} daily records at 2400 baud 8E1, 100 % bus share: \
         {records} records, {exchanges} exchanges in {:.1} s; wire-time bound {:.1} s; ratio {:.3}",
        elapsed.as_secs_f64(),
        bound.as_secs_f64(),
        elapsed.as_secs_f64() / bound.as_secs_f64()
    );
    assert_eq!(
        records,
        fill_meters as usize * usize::from(days),
        "every record read"
    );
    assert!(elapsed >= bound.mul_f64(0.9), "faster than the wire?");

    // The smoke run checks the bench works, not the figures.
    for r in single.iter().chain(four.iter()) {
        assert_eq!(r.f.bad, 0, "{}: bad values on a healthy bus", r.label);
        assert_eq!(r.f.exchanges, u64::from(setup.meters) * 8, "{}", r.label);
        assert!(!r.extra.is_empty(), "{}: no turnaround measured", r.label);
        let cycle = *r.f.cycles.last().unwrap();
        assert!(
            cycle >= r.f.ideal.mul_f64(0.9),
            "{}: faster than the wire?",
            r.label
        );
    }
}
