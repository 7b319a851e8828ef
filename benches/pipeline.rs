//! Issue 4 pipeline figures: simulated Modbus TCP meters → `meterd run` → mosquitto → a counting
//! subscriber, with the spool on and evidence frames on. Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench --bench pipeline -- cpu     # 1. CPU per published value (50 meters × 25 f32)
//! cargo bench --bench pipeline -- floor   # 1f. the same wire work without meterd (see `Floor`)
//! cargo bench --bench pipeline -- floor-batched  # 1b. the same, one write per cycle each way
//! cargo bench --bench pipeline -- floor-batched-spool  # 1s. and stored durably per cycle
//! cargo bench --bench pipeline -- python  # 1p. the issue's pymodbus + paho reference loop
//! cargo bench --bench pipeline -- rate    # 2. sustained values/s with 1,000 meters (sweep)
//! cargo bench --bench pipeline -- rss     # 3. RSS with 1,000 meters configured
//! cargo bench --bench pipeline -- idle    # 4. idle CPU at 250 values/s (10 meters × 25, 1 s)
//! cargo bench --bench pipeline -- drain   # 5. backlog drain after a broker outage
//! ```
//!
//! Options (after `--`): `--secs N` (measured seconds), `--warmup N`, `--runs N`,
//! `--interval DUR` (poll interval, e.g. `500ms`), `--meters N`, `--outage N` (seconds, drain),
//! `--turnaround DUR` (the buses' `timing.turnaround` and `timing.modbus_silence`; default `0s`:
//! the meters answer at once over TCP, and the daemon's defaults, 20 ms and t3.5 at the bus's
//! default baud (16 ms), cap each Modbus TCP bus at 50-57 polls/s), `--units-per-port N`
//! (meters per simulator port and meterd bus; default 200, meters behind Modbus TCP gateways
//! read one at a time; `1` gives each meter its own endpoint, like native Modbus TCP meters),
//! `--evidence on|off` (meterd's `evidence_frames`; default on), `--trend QUANTITY` (meterd's
//! `[service] trend_quantity`: `bench.q00` gives every meter a status-page sparkline, the most
//! memory it can take; default unset: the bench profile has no `power.active.total`, so none).
//! CPU is utime+stime from `/proc/PID/stat` (all threads, including exited ones), sampled
//! after the warm-up and at the end; values are counted at the subscriber (QoS 1).
//! `METERD_BIN=/path/to/meterd` runs another build of the daemon (and simulator) than this one.
//! `python` needs pymodbus and paho-mqtt: hil-tests/.venv (`bash hil-tests/setup`) or
//! `METERD_BENCH_PYTHON=/path/to/python`.
//! Needs `mosquitto` on PATH (started here on a free loopback port with a temporary config).

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon under test: `METERD_BIN` if set (to compare two builds), else this build's.
fn meterd_bin() -> String {
    std::env::var("METERD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meterd").to_owned())
}
const VALUES_PER_READING: usize = 25;
const GATEWAY: &str = "bench";

// ---------------------------------------------------------------- options

#[derive(Clone)]
struct Opts {
    scenario: String,
    secs: u64,
    warmup: u64,
    runs: usize,
    interval: Option<String>,
    meters: Option<usize>,
    outage: u64,
    /// The gateway buses' `timing.turnaround` (the daemon's default, 20 ms, is RS-485 silence;
    /// on Modbus TCP it caps a bus at 50 polls/s).
    turnaround: String,
    /// Meters per simulator port (one meterd bus per port): 200 models meters behind Modbus TCP
    /// gateways, read one at a time per gateway; 1 models native Modbus TCP meters, one
    /// endpoint (and one bus, polled concurrently) each.
    units_per_port: usize,
    /// meterd's `evidence_frames` (default on: every reading carries its raw frames).
    evidence: bool,
    /// meterd's `[service] trend_quantity`, when given.
    trend: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        scenario: String::new(),
        secs: 0,
        warmup: 0,
        runs: 0,
        interval: None,
        meters: None,
        outage: 60,
        turnaround: "0s".into(),
        units_per_port: 200,
        evidence: true,
        trend: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("option needs a value");
        match a.as_str() {
            "--bench" => {}
            "--secs" => o.secs = val().parse().expect("--secs N"),
            "--warmup" => o.warmup = val().parse().expect("--warmup N"),
            "--runs" => o.runs = val().parse().expect("--runs N"),
            "--interval" => o.interval = Some(val()),
            "--meters" => o.meters = Some(val().parse().expect("--meters N")),
            "--outage" => o.outage = val().parse().expect("--outage N"),
            "--turnaround" => o.turnaround = val(),
            "--evidence" => {
                o.evidence = match val().as_str() {
                    "on" => true,
                    "off" => false,
                    v => panic!("--evidence on|off, not {v:?}"),
                }
            }
            "--trend" => o.trend = Some(val()),
            "--units-per-port" => {
                o.units_per_port = val().parse().expect("--units-per-port N");
                assert!(o.units_per_port >= 1, "--units-per-port must be at least 1");
            }
            s if !s.starts_with('-') && o.scenario.is_empty() => o.scenario = s.to_owned(),
            _ => {}
        }
    }
    o
}

// ---------------------------------------------------------------- /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process in seconds (all its threads, living and exited).
fn cpu_secs(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the comm: state is [0]; utime is field 14 → [11], stime → [12].
    let t = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / clk_tck()
}

fn status_kb(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sum of utime+stime of every process on the machine that is not ours, in seconds: how busy
/// the other engineers kept the two cores while we measured.
fn machine_busy_secs() -> f64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / clk_tck()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------- processes

struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let out = fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// SIGTERM, then wait (SIGKILL after 8 s).
    fn stop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(8) {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in 8 s; killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- subscriber

#[derive(Default)]
struct Counts {
    readings: AtomicU64,
    values: AtomicU64,
    bad_values: AtomicU64,
    bytes: AtomicU64,
    /// Spool depth from the latest gateway status (-1: none yet).
    spool_depth: AtomicI64,
    /// Drain: readings received since `mark_ms` was set, and when the first reading read at or
    /// after `mark_ms` arrived (the backlog before it has been delivered: rowid order).
    mark_ms: AtomicI64,
    since_mark: AtomicU64,
    values_since_mark: AtomicU64,
    caught_up: Mutex<Option<(Instant, u64, u64)>>,
    first_after_mark: Mutex<Option<Instant>>,
}

#[derive(serde::Deserialize)]
struct Msg {
    read_at: String,
    values: Vec<Val>,
}
#[derive(serde::Deserialize)]
struct Val {
    quality: String,
}
#[derive(serde::Deserialize)]
struct Status {
    spool: StatusSpool,
}
#[derive(serde::Deserialize)]
struct StatusSpool {
    depth: i64,
}

fn subscriber(port: u16, counts: Arc<Counts>) {
    counts.spool_depth.store(-1, Ordering::Relaxed);
    counts.mark_ms.store(i64::MAX, Ordering::Relaxed);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let mut o = MqttOptions::new("bench-sub", "127.0.0.1", port);
            o.set_max_packet_size(4 << 20, 4 << 20);
            o.set_keep_alive(Duration::from_secs(30));
            // A persistent session in a persistent broker: across the drain scenario's broker
            // restart, what meterd publishes before this client is back is queued for it.
            o.set_clean_session(false);
            let (client, mut el) = AsyncClient::new(o, 64);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(
                            format!("meterd/{GATEWAY}/meters/+/readings"),
                            QoS::AtLeastOnce,
                        );
                        let _ = client
                            .try_subscribe(format!("meterd/{GATEWAY}/status"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/status") {
                            if let Ok(s) = serde_json::from_slice::<Status>(&p.payload) {
                                counts.spool_depth.store(s.spool.depth, Ordering::Relaxed);
                            }
                            continue;
                        }
                        let Ok(m) = serde_json::from_slice::<Msg>(&p.payload) else {
                            eprintln!("unparsable reading on {}", p.topic);
                            continue;
                        };
                        let bad = m.values.iter().filter(|v| v.quality == "bad").count() as u64;
                        let good = m.values.len() as u64 - bad;
                        counts.readings.fetch_add(1, Ordering::Relaxed);
                        counts.values.fetch_add(good, Ordering::Relaxed);
                        counts.bad_values.fetch_add(bad, Ordering::Relaxed);
                        counts
                            .bytes
                            .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        let mark = counts.mark_ms.load(Ordering::Relaxed);
                        if mark != i64::MAX {
                            let n = counts.since_mark.fetch_add(1, Ordering::Relaxed) + 1;
                            let v =
                                counts.values_since_mark.fetch_add(good, Ordering::Relaxed) + good;
                            let read_ms = humantime::parse_rfc3339(&m.read_at)
                                .ok()
                                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                .map_or(0, |d| d.as_millis() as i64);
                            if n == 1 {
                                *counts.first_after_mark.lock().unwrap() = Some(Instant::now());
                            }
                            let mut c = counts.caught_up.lock().unwrap();
                            if c.is_none() && read_ms >= mark {
                                *c = Some((Instant::now(), n, v));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    });
}

// ---------------------------------------------------------------- set-up

const PROFILE: &str = "bench-25f32";

fn write_profile(dir: &Path) {
    let mut p = String::from(
        "name = \"bench-25f32\"\ndescription = \"bench: 25 float32 input registers\"\n\
         source = \"benches/pipeline.rs (synthetic)\"\n\
         protocol = \"modbus\"\nmax_registers = 80\n",
    );
    for i in 0..VALUES_PER_READING {
        let _ = write!(
            p,
            "\n[[point]]\nquantity = \"bench.q{i:02}\"\nfunction = \"input\"\nregister = {}\ntype = \"f32\"\nunit = \"V\"\n",
            i * 2
        );
    }
    fs::create_dir_all(dir.join("profiles")).unwrap();
    fs::write(dir.join("profiles").join("bench-25f32.toml"), p).unwrap();
}

struct Rig {
    dir: PathBuf,
    mqtt_port: u16,
    mosquitto: Option<Proc>,
    sim: Proc,
    meterd: UnderTest,
    counts: Arc<Counts>,
}

/// What reads the meters and publishes: the daemon, the bench's own floor loop, or the
/// pymodbus + paho reference loop (a Python process).
enum UnderTest {
    Meterd(Proc),
    Floor(Floor),
    Python(Proc),
}

impl UnderTest {
    /// The daemon's process id (the scenarios that read its memory run only the daemon).
    fn pid(&self) -> u32 {
        match self {
            UnderTest::Meterd(p) => p.pid(),
            UnderTest::Floor(_) | UnderTest::Python(_) => {
                panic!("this scenario measures meterd, not a reference loop")
            }
        }
    }
}

fn start_mosquitto(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
             persistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n",
            dir.display()
        ),
    )
    .unwrap();
    let p = Proc::spawn(
        "mosquitto",
        Command::new("mosquitto").arg("-c").arg(&conf),
        &dir.join("mosquitto.log"),
    );
    wait_port(port);
    p
}

/// `meters` Modbus TCP meters (25 float32 each), `o.units_per_port` per simulator port (one
/// meterd bus per port), polled every `interval` by `meterd run`.
fn start(o: &Opts, meters: usize, interval: &str, status_interval: &str, spool: &str) -> Rig {
    start_with(o, meters, interval, status_interval, spool, Reader::Meterd)
}

/// What reads the meters in a run.
#[derive(Clone, Copy, PartialEq)]
enum Reader {
    /// `meterd run`.
    Meterd,
    /// The bench's floor loop with tokio-modbus and rumqttc ([`Floor`]).
    Floor,
    /// The floor loop writing each poll cycle's requests and publishes in one write each
    /// ([`Floor::run_batched`]).
    FloorBatched,
    /// [`Reader::FloorBatched`] that also stores each cycle durably before publishing it, as
    /// the issue's spool must ([`FloorSpool`]).
    FloorBatchedSpool,
    /// The issue's reference: a plain pymodbus + paho-mqtt loop (benches/pymodbus_paho_loop.py).
    Python,
}

/// The Python that has pymodbus and paho-mqtt: `METERD_BENCH_PYTHON`, else the HIL suite's
/// venv (made by `bash hil-tests/setup`).
fn bench_python() -> String {
    std::env::var("METERD_BENCH_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/hil-tests/.venv/bin/python").to_owned()
    })
}

/// The same meters, simulator and broker as [`start`], read by `reader`.
fn start_with(
    o: &Opts,
    meters: usize,
    interval: &str,
    status_interval: &str,
    spool: &str,
    reader: Reader,
) -> Rig {
    let dir =
        std::env::temp_dir().join(format!("meterd-bench4-{}-{}", std::process::id(), now_ms()));
    fs::create_dir_all(&dir).unwrap();
    write_profile(&dir);
    let mqtt_port = free_port();
    let ports: Vec<u16> = (0..meters.div_ceil(o.units_per_port))
        .map(|_| free_port())
        .collect();

    let mut sim = String::from("profile_dirs = [\"profiles\"]\n");
    let mut cfg = format!(
        "gateway = \"{GATEWAY}\"\ndata_dir = \"{}\"\nprofile_dirs = [\"profiles\"]\nevidence_frames = {}\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nstatus_interval = \"{status_interval}\"\nreconnect_max = \"2s\"\n\n\
         [spool]\nmax_bytes = \"{spool}\"\n",
        dir.join("data").display(),
        o.evidence
    );
    if let Some(q) = &o.trend {
        let _ = write!(cfg, "\n[service]\ntrend_quantity = \"{q}\"\n");
    }
    for (b, port) in ports.iter().enumerate() {
        let n = (meters - b * o.units_per_port).min(o.units_per_port);
        let _ = write!(
            sim,
            "\n[[port]]\nname = \"p{b}\"\nmodbus_tcp = \"127.0.0.1:{port}\"\n"
        );
        let _ = write!(
            cfg,
            "\n[[bus]]\nname = \"p{b}\"\ntransport = \"modbus-tcp\"\nhost = \"127.0.0.1:{port}\"\n\
             timing = {{ turnaround = \"{0}\", modbus_silence = \"{0}\" }}\n",
            o.turnaround
        );
        for u in 1..=n {
            let _ = write!(
                sim,
                "\n[[port.meter]]\nprotocol = \"modbus-tcp\"\nunit = {u}\nprofile = \"{PROFILE}\"\nseed = {}\n",
                b * 1000 + u
            );
            let _ = write!(
                cfg,
                "\n[[bus.meter]]\nid = \"p{b}u{u}\"\nprotocol = \"modbus-tcp\"\nunit = {u}\nprofile = \"{PROFILE}\"\ninterval = \"{interval}\"\n"
            );
        }
    }
    fs::write(dir.join("sim.toml"), sim).unwrap();
    fs::write(dir.join("meterd.toml"), cfg).unwrap();

    let mosquitto = start_mosquitto(&dir, mqtt_port);
    let counts = Arc::new(Counts::default());
    subscriber(mqtt_port, counts.clone());
    let sim = Proc::spawn(
        "simulator",
        Command::new(meterd_bin())
            .args(["simulate", "--config"])
            .arg(dir.join("sim.toml")),
        &dir.join("sim.log"),
    );
    for p in &ports {
        wait_port(*p);
    }
    let buses: Vec<(u16, usize)> = ports
        .iter()
        .enumerate()
        .map(|(b, port)| (*port, (meters - b * o.units_per_port).min(o.units_per_port)))
        .collect();
    let every = humantime::parse_duration(interval).expect("--interval");
    let meterd = match reader {
        Reader::Floor => UnderTest::Floor(Floor::start(buses, mqtt_port, every, FloorLoop::Plain)),
        Reader::FloorBatched => UnderTest::Floor(Floor::start(
            buses,
            mqtt_port,
            every,
            FloorLoop::Batched { spool_dir: None },
        )),
        Reader::FloorBatchedSpool => UnderTest::Floor(Floor::start(
            buses,
            mqtt_port,
            every,
            FloorLoop::Batched {
                spool_dir: Some(dir.join("floor-spool")),
            },
        )),
        Reader::Python => UnderTest::Python(Proc::spawn(
            "pymodbus+paho loop",
            Command::new(bench_python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/pymodbus_paho_loop.py"
                ))
                .arg(mqtt_port.to_string())
                .arg(every.as_secs_f64().to_string())
                .arg(GATEWAY)
                .args(buses.iter().map(|(port, units)| format!("{port}:{units}"))),
            &dir.join("python.log"),
        )),
        Reader::Meterd => UnderTest::Meterd(Proc::spawn(
            "meterd",
            Command::new(meterd_bin())
                .args(["run", "--config"])
                .arg(dir.join("meterd.toml"))
                .env("RUST_LOG", "warn"),
            &dir.join("meterd.log"),
        )),
    };
    Rig {
        dir,
        mqtt_port,
        mosquitto: Some(mosquitto),
        sim,
        meterd,
        counts,
    }
}

impl Rig {
    fn snap(&mut self) -> Snap {
        let meterd = match &mut self.meterd {
            UnderTest::Meterd(p) | UnderTest::Python(p) => {
                assert!(
                    p.alive(),
                    "{} died; see its log in {}",
                    p.name,
                    self.dir.display()
                );
                cpu_secs(p.pid())
            }
            UnderTest::Floor(f) => f.cpu_secs(),
        };
        Snap {
            at: Instant::now(),
            meterd,
            sim: cpu_secs(self.sim.pid()),
            mosq: self.mosquitto.as_ref().map_or(0.0, |m| cpu_secs(m.pid())),
            machine: machine_busy_secs(),
            readings: self.counts.readings.load(Ordering::Relaxed),
            values: self.counts.values.load(Ordering::Relaxed),
            bad: self.counts.bad_values.load(Ordering::Relaxed),
            bytes: self.counts.bytes.load(Ordering::Relaxed),
            depth: self.counts.spool_depth.load(Ordering::Relaxed),
        }
    }
    fn finish(mut self) {
        match &mut self.meterd {
            UnderTest::Meterd(p) | UnderTest::Python(p) => p.stop(),
            UnderTest::Floor(f) => f.stop(),
        }
        self.sim.stop();
        if let Some(mut m) = self.mosquitto.take() {
            m.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy)]
struct Snap {
    at: Instant,
    meterd: f64,
    sim: f64,
    mosq: f64,
    machine: f64,
    readings: u64,
    values: u64,
    bad: u64,
    bytes: u64,
    depth: i64,
}

struct Window {
    secs: f64,
    meterd: f64,
    sim: f64,
    mosq: f64,
    machine: f64,
    readings: u64,
    values: u64,
    bad: u64,
    bytes: u64,
    depth: (i64, i64),
    load: String,
}

fn window(a: &Snap, b: &Snap, load: String) -> Window {
    Window {
        secs: (b.at - a.at).as_secs_f64(),
        meterd: b.meterd - a.meterd,
        sim: b.sim - a.sim,
        mosq: b.mosq - a.mosq,
        machine: b.machine - a.machine,
        readings: b.readings - a.readings,
        values: b.values - a.values,
        bad: b.bad - a.bad,
        bytes: b.bytes - a.bytes,
        depth: (a.depth, b.depth),
        load,
    }
}

fn measure(rig: &mut Rig, warmup: u64, secs: u64) -> Window {
    std::thread::sleep(Duration::from_secs(warmup));
    let a = rig.snap();
    let l0 = loadavg();
    std::thread::sleep(Duration::from_secs(secs));
    let b = rig.snap();
    window(&a, &b, format!("{l0} → {}", loadavg()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn header(o: &Opts, title: &str) {
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "# {title}; bus turnaround {}\n# {date}, {} cores, loadavg {}",
        o.turnaround,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
}

// ---------------------------------------------------------------- the floor loop

/// The wire work of scenario 1 without meterd, as a bound on what any gateway built on the same
/// crates can cost here: one OS thread with a current-thread Tokio runtime reads every meter
/// with tokio-modbus (one connection per simulator port, its meters one after another, one
/// 50-register read each, like meterd's gateway buses), decodes the 25 float32, writes a
/// minimal JSON reading (meter, seq, read_at, 25 × quantity/value/quality; ~1.4 KB) and
/// publishes it with rumqttc at QoS 1 (`tcp_nodelay`, like meterd), waiting for nothing but
/// the in-flight window. No spool, no validation, no evidence frames, no status topics. Its
/// CPU is the thread's own on-CPU time (`/proc/self/task/TID/schedstat`, ns).
struct Floor {
    tid: Arc<AtomicI64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(serde::Serialize)]
struct FloorReading<'a> {
    meter: &'a str,
    seq: u64,
    read_at: String,
    values: Vec<FloorValue>,
}
#[derive(serde::Serialize)]
struct FloorValue {
    quantity: &'static str,
    value: f32,
    quality: &'static str,
}

const FLOOR_QUANTITIES: [&str; VALUES_PER_READING] = [
    "bench.q00",
    "bench.q01",
    "bench.q02",
    "bench.q03",
    "bench.q04",
    "bench.q05",
    "bench.q06",
    "bench.q07",
    "bench.q08",
    "bench.q09",
    "bench.q10",
    "bench.q11",
    "bench.q12",
    "bench.q13",
    "bench.q14",
    "bench.q15",
    "bench.q16",
    "bench.q17",
    "bench.q18",
    "bench.q19",
    "bench.q20",
    "bench.q21",
    "bench.q22",
    "bench.q23",
    "bench.q24",
];

/// The floor loops' reading of one meter: its 50 registers as 25 float32 (ABCD), as JSON
/// into `out` (cleared first).
fn floor_json(out: &mut Vec<u8>, meter: &str, seq: u64, regs: &[u16]) {
    let values = regs
        .chunks_exact(2)
        .zip(FLOOR_QUANTITIES)
        .map(|(w, quantity)| FloorValue {
            quantity,
            value: f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])),
            quality: "good",
        })
        .collect();
    let reading = FloorReading {
        meter,
        seq,
        read_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        values,
    };
    out.clear();
    serde_json::to_writer(out, &reading).unwrap();
}

/// Which floor loop a [`Floor`] runs.
enum FloorLoop {
    /// [`Floor::run`]: tokio-modbus and rumqttc.
    Plain,
    /// [`Floor::run_batched`], storing each cycle in `spool_dir` first if given.
    Batched { spool_dir: Option<PathBuf> },
}

impl Floor {
    /// `buses`: (simulator port, meters behind it); every meter is read every `every`.
    fn start(buses: Vec<(u16, usize)>, mqtt_port: u16, every: Duration, kind: FloorLoop) -> Floor {
        let tid = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, st) = (tid.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            t.store(i64::from(unsafe { libc::gettid() }), Ordering::Relaxed);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            match kind {
                FloorLoop::Batched { spool_dir } => {
                    rt.block_on(Self::run_batched(buses, mqtt_port, every, spool_dir, st))
                }
                FloorLoop::Plain => rt.block_on(Self::run(buses, mqtt_port, every, st)),
            }
        });
        while tid.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Floor {
            tid,
            stop,
            thread: Some(thread),
        }
    }

    async fn run(
        buses: Vec<(u16, usize)>,
        mqtt_port: u16,
        every: Duration,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let mut o = MqttOptions::new("bench-floor", "127.0.0.1", mqtt_port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(256);
        let (client, mut el) = AsyncClient::new(o, 256);
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        tokio::spawn(async move {
            loop {
                if el.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        let mut tasks = Vec::new();
        for (b, (port, units)) in buses.into_iter().enumerate() {
            let client = client.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                use tokio_modbus::client::Reader;
                use tokio_modbus::slave::SlaveContext;
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let mut ctx = tokio_modbus::client::tcp::connect(addr).await.unwrap();
                let names: Vec<String> = (1..=units).map(|u| format!("p{b}u{u}")).collect();
                let mut seq = 0u64;
                let mut tick = tokio::time::interval(every);
                let mut payload = Vec::with_capacity(2048);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    seq += 1;
                    for (u, name) in names.iter().enumerate() {
                        ctx.set_slave(tokio_modbus::Slave(u as u8 + 1));
                        let Ok(Ok(regs)) = ctx
                            .read_input_registers(0, 2 * VALUES_PER_READING as u16)
                            .await
                        else {
                            continue;
                        };
                        floor_json(&mut payload, name, seq, &regs);
                        let topic = format!("meterd/{GATEWAY}/meters/{name}/readings");
                        if client
                            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The floor with the library overheads taken out: each bus's poll cycle is one `write` of
    /// all its Modbus TCP requests (pipelined, told apart by transaction id) and one `write` of
    /// all its readings as QoS 1 PUBLISH packets, then the replies and PUBACKs are read as they
    /// come. Written by hand because it measures the wire work without a library in between:
    /// tokio-modbus sends one request at a time and rumqttc flushes after every publish. A
    /// lower bound for a gateway that batched both (and for meters and gateways that accept
    /// pipelined requests, which many do not). With `spool_dir`, each cycle's publishes are
    /// first stored durably ([`FloorSpool`]), as the issue's spool requires.
    async fn run_batched(
        buses: Vec<(u16, usize)>,
        mqtt_port: u16,
        every: Duration,
        spool_dir: Option<PathBuf>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tasks = Vec::new();
        for (b, (port, units)) in buses.into_iter().enumerate() {
            let stop = stop.clone();
            let mut spool = spool_dir.as_ref().map(|d| FloorSpool::open(d, b));
            tasks.push(tokio::spawn(async move {
                let mut modbus = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                modbus.set_nodelay(true).unwrap();
                let mut mqtt = tokio::net::TcpStream::connect(("127.0.0.1", mqtt_port))
                    .await
                    .unwrap();
                mqtt.set_nodelay(true).unwrap();
                // CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s, client id "bfN".
                let id = format!("bf{b}");
                let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
                connect.extend_from_slice(b"MQTT");
                connect.extend_from_slice(&[4, 0x02, 0, 60, 0, id.len() as u8]);
                connect.extend_from_slice(id.as_bytes());
                mqtt.write_all(&connect).await.unwrap();
                let mut connack = [0u8; 4];
                mqtt.read_exact(&mut connack).await.unwrap();
                assert_eq!(connack[0], 0x20, "CONNACK expected");

                let names: Vec<String> = (1..=units).map(|u| format!("p{b}u{u}")).collect();
                let (mut seq, mut tid, mut pkid) = (0u64, 0u16, 0u16);
                let mut tick = tokio::time::interval(every);
                let (mut out, mut inp, mut json) = (Vec::new(), vec![0u8; 1 << 16], Vec::new());
                let mut regs = vec![Vec::<u16>::new(); units];
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    seq += 1;
                    // Every request of the cycle in one write. A meter that answers with an
                    // exception keeps no registers, and no reading of it is published.
                    regs.iter_mut().for_each(Vec::clear);
                    out.clear();
                    let first_tid = tid;
                    for u in 1..=units {
                        out.extend_from_slice(&tid.to_be_bytes());
                        out.extend_from_slice(&[0, 0, 0, 6, u as u8, 0x04, 0, 0, 0]);
                        out.push((2 * VALUES_PER_READING) as u8);
                        tid = tid.wrapping_add(1);
                    }
                    modbus.write_all(&out).await.unwrap();
                    // Replies: MBAP (7) + function + byte count + registers.
                    let (mut have, mut got) = (0usize, 0usize);
                    while got < units {
                        let n = modbus.read(&mut inp[have..]).await.unwrap();
                        assert!(n > 0, "simulator closed");
                        have += n;
                        let mut at = 0;
                        while have - at >= 7 {
                            let len = u16::from_be_bytes([inp[at + 4], inp[at + 5]]) as usize;
                            if have - at < 6 + len {
                                break;
                            }
                            let t = u16::from_be_bytes([inp[at], inp[at + 1]]);
                            let slot = t.wrapping_sub(first_tid) as usize;
                            let pdu = &inp[at + 7..at + 6 + len];
                            if slot < units && pdu.first() == Some(&0x04) {
                                regs[slot] = pdu[2..]
                                    .chunks_exact(2)
                                    .map(|w| u16::from_be_bytes([w[0], w[1]]))
                                    .collect();
                            }
                            got += 1;
                            at += 6 + len;
                        }
                        inp.copy_within(at..have, 0);
                        have -= at;
                    }
                    // Every reading of the cycle as QoS 1 PUBLISH packets in one write.
                    out.clear();
                    let mut published = 0;
                    for (name, r) in names.iter().zip(&regs) {
                        if r.is_empty() {
                            continue;
                        }
                        published += 1;
                        floor_json(&mut json, name, seq, r);
                        let topic = format!("meterd/{GATEWAY}/meters/{name}/readings");
                        pkid = pkid % 65535 + 1;
                        let mut rem = 2 + topic.len() + 2 + json.len();
                        out.push(0x32);
                        loop {
                            let byte = (rem % 128) as u8;
                            rem /= 128;
                            out.push(if rem > 0 { byte | 0x80 } else { byte });
                            if rem == 0 {
                                break;
                            }
                        }
                        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
                        out.extend_from_slice(topic.as_bytes());
                        out.extend_from_slice(&pkid.to_be_bytes());
                        out.extend_from_slice(&json);
                    }
                    // Blocking on purpose: the loop is one thread, and its CPU is what is measured.
                    if let Some(spool) = spool.as_mut() {
                        spool.store_cycle(&out);
                    }
                    mqtt.write_all(&out).await.unwrap();
                    // The cycle's PUBACKs (4 bytes each).
                    let mut acks = 0;
                    let mut left = 0usize;
                    while acks < published {
                        let n = mqtt.read(&mut inp[left..]).await.unwrap();
                        assert!(n > 0, "broker closed");
                        left += n;
                        acks += left / 4;
                        left %= 4;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The loop thread's CPU time so far, in seconds (ns resolution).
    fn cpu_secs(&self) -> f64 {
        let tid = self.tid.load(Ordering::Relaxed);
        let s = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
        s.split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The least a durable SQLite spool can do per poll cycle, for the batched floor: the whole
/// cycle's PUBLISH packets as one row, committed (WAL, `synchronous=FULL`: fsynced) before they
/// are written to the broker, and the previous cycle's row (all of whose PUBACKs have arrived
/// before this cycle starts) deleted in the same transaction. meterd's spool keeps a row per
/// reading with its meter, seq and id, and state for validation; this keeps nothing it would
/// not need to resend, so it bounds the storage part of the floor from below.
struct FloorSpool {
    conn: rusqlite::Connection,
    last: Option<i64>,
}

impl FloorSpool {
    fn open(dir: &Path, bus: usize) -> FloorSpool {
        fs::create_dir_all(dir).unwrap();
        let conn = rusqlite::Connection::open(dir.join(format!("bus{bus}.sqlite"))).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;\
             CREATE TABLE IF NOT EXISTS cycle (id INTEGER PRIMARY KEY, packets BLOB NOT NULL);",
        )
        .unwrap();
        FloorSpool { conn, last: None }
    }

    fn store_cycle(&mut self, packets: &[u8]) {
        let tx = self.conn.transaction().unwrap();
        if let Some(id) = self.last {
            tx.prepare_cached("DELETE FROM cycle WHERE id = ?1")
                .unwrap()
                .execute([id])
                .unwrap();
        }
        tx.prepare_cached("INSERT INTO cycle (packets) VALUES (?1)")
            .unwrap()
            .execute([packets])
            .unwrap();
        self.last = Some(tx.last_insert_rowid());
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------- scenarios

/// Scenario 1, read by `reader`.
fn cpu(o: &Opts, reader: Reader) {
    let meters = o.meters.unwrap_or(50);
    let interval = o.interval.clone().unwrap_or_else(|| "1s".into());
    let (runs, secs, warmup) = (
        o.runs.max(1),
        if o.secs == 0 { 40 } else { o.secs },
        if o.warmup == 0 { 8 } else { o.warmup },
    );
    let (title, who) = match reader {
        Reader::Meterd => ("1. CPU per published value", "meterd"),
        Reader::Floor => (
            "1f. The floor: scenario 1's wire work in one thread with tokio-modbus + rumqttc, no meterd",
            "floor loop",
        ),
        Reader::FloorBatched => (
            "1b. The batched floor: one write of pipelined Modbus requests and one of QoS 1 publishes per bus and cycle, no meterd",
            "batched floor",
        ),
        Reader::FloorBatchedSpool => (
            "1s. The batched floor with a durable spool: 1b, each cycle committed (fsync) as one SQLite row before it is published, no meterd",
            "spooled batched floor",
        ),
        Reader::Python => (
            "1p. The issue's reference: a plain pymodbus + paho-mqtt loop (benches/pymodbus_paho_loop.py), no meterd",
            "pymodbus+paho",
        ),
    };
    header(
        o,
        &format!(
            "{title}: {meters} meters × 25 f32 every {interval}, {secs} s measured after {warmup} s, {runs} runs"
        ),
    );
    println!(
        "run | values | values/s | {who} µs/value | {who} % core | simulator µs/value | mosquitto µs/value | other load (cores) | loadavg"
    );
    let mut per = Vec::new();
    for r in 1..=runs {
        let mut rig = start_with(o, meters, &interval, "60s", "256MiB", reader);
        let w = measure(&mut rig, warmup, secs);
        rig.finish();
        let us = |cpu: f64| cpu * 1e6 / w.values.max(1) as f64;
        let other = (w.machine - w.meterd - w.sim - w.mosq) / w.secs;
        println!(
            "{r} | {} | {:.0} | **{:.3}** | {:.3} % | {:.3} | {:.3} | {:.2} | {}",
            w.values,
            w.values as f64 / w.secs,
            us(w.meterd),
            w.meterd / w.secs * 100.0,
            us(w.sim),
            us(w.mosq),
            other,
            w.load
        );
        if w.bad > 0 {
            println!("   ({} bad values were not counted)", w.bad);
        }
        per.push(us(w.meterd));
    }
    println!(
        "median {who} CPU per value: {:.3} µs (meterd's target ≤ 0.35 µs; pymodbus+paho ~7, Node-RED ~7.5, ThingsBoard 84–218)",
        median(per)
    );
}

fn rate(o: &Opts) {
    let meters = o.meters.unwrap_or(1000);
    let intervals: Vec<String> = match &o.interval {
        Some(i) => i.split(',').map(str::to_owned).collect(),
        None => ["10s", "5s", "2s", "1s", "500ms"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let (secs, warmup) = (
        if o.secs == 0 { 40 } else { o.secs },
        if o.warmup == 0 { 15 } else { o.warmup },
    );
    header(
        o,
        &format!(
            "2. Sustained rate with {meters} meters × 25 f32 over {} ports, {secs} s measured after {warmup} s",
            meters.div_ceil(o.units_per_port)
        ),
    );
    println!(
        "interval | offered values/s | delivered readings/s | delivered values/s | delivered/offered | spool depth start→end | meterd % core | simulator % core | mosquitto % core | RSS / HWM MB | loadavg"
    );
    for iv in intervals {
        let secs_iv = humantime::parse_duration(&iv).unwrap().as_secs_f64();
        let offered = meters as f64 * VALUES_PER_READING as f64 / secs_iv;
        let mut rig = start(o, meters, &iv, "5s", "256MiB");
        let w = measure(&mut rig, warmup, secs);
        let (rss, hwm) = (
            status_kb(rig.meterd.pid(), "VmRSS:"),
            status_kb(rig.meterd.pid(), "VmHWM:"),
        );
        rig.finish();
        let vps = w.values as f64 / w.secs;
        println!(
            "{iv} | {offered:.0} | {:.0} | {vps:.0} | {:.3} | {}→{} | {:.1} % | {:.1} % | {:.1} % | {:.1} / {:.1} | {}",
            w.readings as f64 / w.secs,
            vps / offered,
            w.depth.0,
            w.depth.1,
            w.meterd / w.secs * 100.0,
            w.sim / w.secs * 100.0,
            w.mosq / w.secs * 100.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            w.load
        );
    }
}

fn rss(o: &Opts) {
    let meters = o.meters.unwrap_or(1000);
    let interval = o.interval.clone().unwrap_or_else(|| "5s".into());
    let (runs, secs, warmup) = (
        o.runs.max(1),
        if o.secs == 0 { 30 } else { o.secs },
        if o.warmup == 0 { 20 } else { o.warmup },
    );
    header(
        o,
        &format!(
            "3. RSS with {meters} meters configured (25 f32 each, every {interval}), read after {warmup} s and after {} s more",
            secs
        ),
    );
    println!(
        "run | VmRSS after warm-up MB | VmRSS at end MB | VmHWM MB | RssAnon / RssFile kB | delivered values/s | loadavg"
    );
    let mut v = Vec::new();
    for r in 1..=runs {
        let mut rig = start(o, meters, &interval, "60s", "256MiB");
        std::thread::sleep(Duration::from_secs(warmup));
        let pid = rig.meterd.pid();
        let rss0 = status_kb(pid, "VmRSS:");
        let w = measure(&mut rig, 0, secs);
        let (rss1, hwm) = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
        let (anon, file) = (status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:"));
        rig.finish();
        println!(
            "{r} | {:.1} | {:.1} | **{:.1}** | {anon} / {file} | {:.0} | {}",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            hwm as f64 / 1024.0,
            w.values as f64 / w.secs,
            w.load
        );
        v.push(hwm as f64 / 1024.0);
    }
    println!(
        "median VmHWM: {:.1} MB (target ≤ 15 MB; peers 27 / 68 / 265 MB)",
        median(v)
    );
}

fn idle(o: &Opts) {
    let meters = o.meters.unwrap_or(10);
    let interval = o.interval.clone().unwrap_or_else(|| "1s".into());
    let (runs, secs, warmup) = (
        o.runs.max(1),
        if o.secs == 0 { 120 } else { o.secs },
        if o.warmup == 0 { 10 } else { o.warmup },
    );
    header(
        o,
        &format!(
            "4. Idle CPU: {meters} meters × 25 f32 every {interval}, {secs} s measured after {warmup} s, {runs} runs"
        ),
    );
    println!(
        "run | values/s | meterd CPU s | meterd % of a core | µs/value | simulator % | mosquitto % | loadavg"
    );
    let mut v = Vec::new();
    for r in 1..=runs {
        let mut rig = start(o, meters, &interval, "60s", "256MiB");
        let w = measure(&mut rig, warmup, secs);
        rig.finish();
        let pct = w.meterd / w.secs * 100.0;
        println!(
            "{r} | {:.0} | {:.2} | **{pct:.3} %** | {:.2} | {:.3} % | {:.3} % | {}",
            w.values as f64 / w.secs,
            w.meterd,
            w.meterd * 1e6 / w.values.max(1) as f64,
            w.sim / w.secs * 100.0,
            w.mosq / w.secs * 100.0,
            w.load
        );
        v.push(pct);
    }
    println!(
        "median: {:.3} % of one core (target ≤ 0.05 %; resolution {:.3} %)",
        median(v),
        100.0 / clk_tck() / secs as f64
    );
}

fn drain(o: &Opts) {
    let meters = o.meters.unwrap_or(50);
    let interval = o.interval.clone().unwrap_or_else(|| "1s".into());
    let outage = o.outage;
    let runs = o.runs.max(1);
    let warmup = if o.warmup == 0 { 8 } else { o.warmup };
    header(
        o,
        &format!(
            "5. Backlog drain: {meters} meters × 25 f32 every {interval}; broker stopped for {outage} s, then restarted"
        ),
    );
    println!(
        "run | backlog readings | drain s | readings/s | values/s | MB/s payload | meterd % core while draining | mosquitto % | loadavg"
    );
    let mut v = Vec::new();
    for r in 1..=runs {
        let mut rig = start(o, meters, &interval, "60s", "1GiB");
        std::thread::sleep(Duration::from_secs(warmup));
        let mut m = rig.mosquitto.take().unwrap();
        m.stop();
        drop(m);
        let down = rig.snap();
        std::thread::sleep(Duration::from_secs(outage));
        rig.counts.since_mark.store(0, Ordering::Relaxed);
        rig.counts.values_since_mark.store(0, Ordering::Relaxed);
        rig.counts.mark_ms.store(now_ms(), Ordering::Relaxed);
        let l0 = loadavg();
        rig.mosquitto = Some(start_mosquitto(&rig.dir, rig.mqtt_port));
        let a = rig.snap();
        let t0 = Instant::now();
        let done = loop {
            if let Some(d) = *rig.counts.caught_up.lock().unwrap() {
                break Some(d);
            }
            if t0.elapsed() > Duration::from_secs(outage * 4 + 120) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let b = rig.snap();
        let first = rig.counts.first_after_mark.lock().unwrap().unwrap_or(t0);
        let _ = down;
        rig.finish();
        let Some((at, n, vals)) = done else {
            println!("{r} | did not drain within the limit");
            continue;
        };
        // From the first reading received after the restart (the reconnect back-off, up to
        // reconnect_max = 2 s, is not part of it) to the first reading read after the restart.
        let secs = (at - first).as_secs_f64();
        println!(
            "   reconnect took {:.2} s after the broker was up",
            (first - t0).as_secs_f64()
        );
        let w = window(&a, &b, format!("{l0} → {}", loadavg()));
        println!(
            "{r} | {n} | {secs:.2} | **{:.0}** | {:.0} | {:.2} | {:.1} % | {:.1} % | {}",
            n as f64 / secs,
            vals as f64 / secs,
            w.bytes as f64 / w.secs / 1e6,
            w.meterd / w.secs * 100.0,
            w.mosq / w.secs * 100.0,
            w.load
        );
        v.push(n as f64 / secs);
    }
    if !v.is_empty() {
        println!(
            "median drain rate: {:.0} readings/s ({:.0} values/s)",
            median(v.clone()),
            median(v) * VALUES_PER_READING as f64
        );
    }
}

fn main() {
    let o = opts();
    match o.scenario.as_str() {
        "cpu" => cpu(&o, Reader::Meterd),
        "floor" => cpu(&o, Reader::Floor),
        "floor-batched" => cpu(&o, Reader::FloorBatched),
        "floor-batched-spool" => cpu(&o, Reader::FloorBatchedSpool),
        "python" => cpu(&o, Reader::Python),
        "rate" => rate(&o),
        "rss" => rss(&o),
        "idle" => idle(&o),
        "drain" => drain(&o),
        "" => {
            // `cargo bench` with no scenario (e.g. the whole workspace's benches): do nothing
            // long; name the scenarios.
            println!(
                "pipeline bench: pass a scenario: cargo bench --bench pipeline -- cpu|floor|floor-batched|floor-batched-spool|python|rate|rss|idle|drain"
            );
        }
        s => panic!(
            "unknown scenario {s:?}: cpu|floor|floor-batched|floor-batched-spool|python|rate|rss|idle|drain"
        ),
    }
}
