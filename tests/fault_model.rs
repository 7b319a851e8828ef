//! The settlement fault model (issue 15): days of simulated time, in minutes, on one virtual
//! clock shared by the simulator and the daemon's pipeline.
//!
//! What runs: the simulator's meters on 4 buses (DL/T 645-2007 with daily freezes, some
//! DL/T 645-1997 with monthly settlements only, some Modbus RTU with no freezes), the daemon's
//! bus tasks (polls, freeze collection with back-fill, meter events and clock discipline),
//! ingest (readings, freezes, events) and the spool on tmpfs, and an uplink stand-in that
//! drains the spool's `Outbox` exactly as the uplink does (pending in rowid order, ack per
//! delivered row) into a consumer that keeps the first delivery per `id` (docs/mqtt.md §4).
//! MQTT itself is not in this run (its real I/O cannot run under a paused clock); the HIL suite
//! covers it against mosquitto.
//!
//! Faults: 10 % of the meters' replies missing at random, 2 % of the meters dead for 6 h across
//! a midnight, the "broker" down for an hour, one crash of the daemon a day (every task of
//! the pipeline aborted at a random point, nothing flushed, everything dropped, and a new
//! pipeline started on the same spool), meter clocks off or drifting up to ±8 min.
//!
//! How time runs: a current-thread runtime with its clock paused; tokio advances it whenever
//! every task waits on a timer (the spool's `spawn_blocking` writes hold it back while they
//! run). The wall clock of the daemon and the simulator is `meterd::clock::now`, to which this
//! binary (and only it: a process-wide source) installs "start + virtual time elapsed". Buses
//! reach the simulator over in-memory streams (`LinkOpener`, `SimHandle::attacher`).
//!
//! Seed: `FAULT_MODEL_SEED=n` draws other clocks, crash times and reply faults.
//!
//! Size: the acceptance size (100 meters, 7 days; about 2 minutes in a debug build), or with
//! `FAULT_MODEL_QUICK=1` a smaller one. docs/benchmarks.md has the figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use meterd::bus::clock_steps::ClockSteps;
use meterd::bus::event_collect::EventSink;
use meterd::bus::freeze_collect::{FreezeEvent, FreezeSink};
use meterd::bus::task::{self as bus_task, BusOptions};
use meterd::bus::transport::{AttachedStream, LinkOpener};
use meterd::clock::{UnixMillis, parse_rfc3339, rfc3339_ms};
use meterd::config::{Config, ProfileSet};
use meterd::health::BusHealth;
use meterd::ingest::events::{ClockMarks, CounterView};
use meterd::ingest::freezes::LedgerView;
use meterd::ingest::outbox::Outbox;
use meterd::ingest::{self, FreshRows, HeldAcks, SpoolOutbox, SpoolWriter};
use meterd::reading::ReadingBatch;
use meterd::reading::event::EventNote;
use meterd::reading::freeze::FreezeRecord;
use meterd::sim::model::MeterModel;
use meterd::sim::{PortAttacher, SimConfig, SimHandle, Simulator};
use meterd::spool::freezes::LedgerState;
use meterd::spool::{MessageKind, Spool, SpoolOptions};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const MINUTE: i64 = 60_000;
/// The meters' zone: China Standard Time (+08:00).
const ZONE_MS: i64 = 8 * HOUR;
/// Local midnight (+08:00) is 16:00 UTC; the run starts at 14:00 UTC, two hours before one.
const START: &str = "2026-11-29T14:00:00Z";
/// Largest meter clock error configured (±8 min), for the freeze instant's bounds.
const MAX_ERROR_MS: i64 = 8 * MINUTE;
/// `[validation] clock_limit` (the drift limit in force).
const DRIFT_LIMIT_MS: i64 = 10_000;

/// The size of a run.
#[derive(Debug, Clone, Copy)]
struct Size {
    buses: usize,
    /// Per bus: DL/T 645-2007, DL/T 645-1997, Modbus RTU meters.
    dlt2007: usize,
    dlt1997: usize,
    modbus: usize,
    days: i64,
}

impl Size {
    fn meters(&self) -> usize {
        self.buses * (self.dlt2007 + self.dlt1997 + self.modbus)
    }
}

/// The acceptance size: 100 meters on 4 buses for 7 days.
const FULL: Size = Size {
    buses: 4,
    dlt2007: 20,
    dlt1997: 3,
    modbus: 2,
    days: 7,
};

/// A quicker run (`FAULT_MODEL_QUICK=1`), for work on the model itself.
const QUICK: Size = Size {
    buses: 4,
    dlt2007: 5,
    dlt1997: 1,
    modbus: 1,
    days: 3,
};

/// splitmix64, the simulator's generator: the run's random choices, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One simulated meter as the run planned it.
#[derive(Debug, Clone)]
struct Planned {
    bus: String,
    id: String,
    protocol: &'static str,
    profile: &'static str,
    seed: u64,
    unit: Option<u8>,
    clock_offset_s: i64,
    clock_ppm: f64,
    /// Dead window (simulated UTC), if this meter is one of the dead ones.
    dead: Option<(UnixMillis, UnixMillis)>,
    /// Seed of its reply faults (from the run's seed).
    fault_seed: u64,
}

impl Planned {
    fn keeps_daily(&self) -> bool {
        self.protocol == "dlt645-2007"
    }

    fn sim_toml(&self) -> String {
        let mut s = format!(
            "[[port.meter]]\nid = \"{}\"\nprotocol = \"{}\"\nprofile = \"{}\"\nseed = {}\n",
            self.id, self.protocol, self.profile, self.seed
        );
        match self.unit {
            Some(u) => s += &format!("unit = {u}\n"),
            None => s += &format!("address = \"{}\"\n", self.id),
        }
        if self.keeps_daily() {
            s += &format!(
                "clock_offset_s = {}\nclock_ppm = {}\n",
                self.clock_offset_s, self.clock_ppm
            );
        }
        let dead = self
            .dead
            .map(|(f, t)| {
                format!(
                    ", dead = [{{ from = \"{}\", to = \"{}\" }}]",
                    rfc3339_ms(f),
                    rfc3339_ms(t)
                )
            })
            .unwrap_or_default();
        s += &format!(
            "faults = {{ seed = {}, no_reply = {{ probability = 0.1 }}{dead} }}\n",
            self.fault_seed
        );
        s
    }

    fn gateway_toml(&self) -> String {
        let mut s = format!(
            "[[bus.meter]]\nid = \"{}\"\nprotocol = \"{}\"\nprofile = \"{}\"\ninterval = \"15m\"\n",
            self.id, self.protocol, self.profile
        );
        match self.unit {
            Some(u) => s += &format!("unit = {u}\n"),
            None => s += &format!("address = \"{}\"\n", self.id),
        }
        match self.protocol {
            "dlt645-2007" => s += "freezes = [\"daily\"]\n",
            "dlt645-1997" => s += "freezes = [\"monthly\"]\n",
            _ => {}
        }
        s
    }
}

/// The run's plan: meters, their clocks and dead windows, the crash times, the broker outage.
struct Plan {
    size: Size,
    start: UnixMillis,
    end: UnixMillis,
    meters: Vec<Planned>,
    crashes: Vec<UnixMillis>,
    broker_down: (UnixMillis, UnixMillis),
}

fn plan(size: Size, seed: u64) -> Plan {
    let start = parse_rfc3339(START).unwrap_or(0);
    let end = start + size.days * DAY;
    let mut rng = Rng(seed);
    let mut meters = Vec::new();
    let mut n2007 = 0usize;
    for b in 0..size.buses {
        let bus = format!("bus{}", b + 1);
        for i in 0..size.dlt2007 {
            n2007 += 1;
            // Clocks: most keep time; one in ten is off by 20 s..4 min (past the limit, within
            // the sync limit); one in twenty is off by 5.5..8 min (a technician's job); one in
            // ten drifts by ±150..250 ppm (13..22 s a day).
            let (offset, ppm) = match n2007 % 20 {
                3 | 13 => {
                    let s = 20 + rng.below(220) as i64;
                    (if rng.below(2) == 0 { s } else { -s }, 0.0)
                }
                7 => {
                    let s = 330 + rng.below(150) as i64;
                    (if rng.below(2) == 0 { s } else { -s }, 0.0)
                }
                5 | 17 => {
                    let p = 150.0 + rng.below(100) as f64;
                    (0, if rng.below(2) == 0 { p } else { -p })
                }
                _ => (0, 0.0),
            };
            meters.push(Planned {
                bus: bus.clone(),
                id: format!("{:02}{:010}", b + 1, i + 1),
                protocol: "dlt645-2007",
                profile: "dlt645-single-phase",
                seed: 1000 + (b * 100 + i) as u64,
                unit: None,
                clock_offset_s: offset,
                clock_ppm: ppm,
                dead: None,
                fault_seed: rng.next() >> 1,
            });
        }
        for i in 0..size.dlt1997 {
            meters.push(Planned {
                bus: bus.clone(),
                id: format!("{:02}{:010}", b + 1, 900 + i),
                protocol: "dlt645-1997",
                profile: "dlt645-1997-basic",
                seed: 5000 + (b * 100 + i) as u64,
                unit: None,
                clock_offset_s: 0,
                clock_ppm: 0.0,
                dead: None,
                fault_seed: rng.next() >> 1,
            });
        }
        for i in 0..size.modbus {
            let unit = u8::try_from(10 + i).unwrap_or(10);
            meters.push(Planned {
                bus: bus.clone(),
                id: format!("{bus}-mb{unit}"),
                protocol: "modbus-rtu",
                profile: "eastron-sdm120",
                seed: 7000 + (b * 100 + i) as u64,
                unit: Some(unit),
                clock_offset_s: 0,
                clock_ppm: 0.0,
                dead: None,
                fault_seed: rng.next() >> 1,
            });
        }
    }
    // 2 % of the meters (at least one) dead for 6 h across a local midnight (16:00 UTC):
    // 13:00-19:00 UTC on a day of the run.
    let dead_count = (meters.len() / 50).max(1);
    let daily: Vec<usize> = (0..meters.len())
        .filter(|&i| meters[i].keeps_daily())
        .collect();
    for k in 0..dead_count {
        let i = daily[(k * 7 + 2) % daily.len()];
        let day = 1 + (k as i64 % (size.days - 1).max(1));
        let midnight = start + 2 * HOUR + (day - 1) * DAY;
        meters[i].dead = Some((midnight - 3 * HOUR, midnight + 3 * HOUR));
    }
    // One crash a day, at a random minute of it.
    let crashes = (0..size.days)
        .map(|d| start + d * DAY + 30 * MINUTE + rng.below(23 * 60) as i64 * MINUTE)
        .collect();
    // The broker down for an hour over the second local midnight.
    let broker_down = (start + DAY + 90 * MINUTE, start + DAY + 150 * MINUTE);
    Plan {
        size,
        start,
        end,
        meters,
        crashes,
        broker_down,
    }
}

fn sim_config(plan: &Plan, time_set_log: &Path) -> SimConfig {
    let mut text = format!("time_set_log = {:?}\n", time_set_log.display().to_string());
    for b in 0..plan.size.buses {
        let bus = format!("bus{}", b + 1);
        // A listener nobody connects to: the buses come in over in-memory streams.
        text += &format!(
            "[[port]]\nname = \"{bus}\"\ntcp = \"127.0.0.1:0\"\nbaud = 9600\nparity = \"even\"\nwire_time = true\nreply_latency = \"20ms\"\n"
        );
        for m in plan.meters.iter().filter(|m| m.bus == bus) {
            text += &m.sim_toml();
        }
    }
    match SimConfig::from_text(Path::new("fault-model-sim.toml"), &text) {
        Ok(c) => c,
        Err(e) => panic!("simulator configuration: {e}\n{text}"),
    }
}

fn gateway_config(plan: &Plan, data_dir: &Path) -> (Config, ProfileSet) {
    let mut text = format!(
        r#"gateway = "gw-fm"
data_dir = "{}"
[mqtt]
url = "mqtt://127.0.0.1:1"
[gateway_clock]
synchronised = "trusted"
[freeze]
delay = "5m"
backfill_days = 3
backfill_months = 1
[events]
interval = "1h"
[meter_clock]
check_every = "24h"
"#,
        data_dir.display()
    );
    for b in 0..plan.size.buses {
        let bus = format!("bus{}", b + 1);
        text += &format!(
            "[[bus]]\nname = \"{bus}\"\ntransport = \"serial\"\nport = \"/dev/fault-model-{bus}\"\nbaud = 9600\nparity = \"even\"\n"
        );
        for m in plan.meters.iter().filter(|m| m.bus == bus) {
            text += &m.gateway_toml();
        }
    }
    match Config::from_text(Path::new("fault-model.toml"), &text) {
        Ok(c) => c,
        Err(e) => panic!("gateway configuration: {e}\n{text}"),
    }
}

/// One delivery the consumer kept (the first per id).
#[derive(Debug, Clone)]
struct Kept {
    at: UnixMillis,
    payload: Vec<u8>,
}

/// The billing core's side: every message published, deduplicated by `id`.
#[derive(Debug, Default)]
struct Consumer {
    freezes: HashMap<String, Kept>,
    events: HashMap<String, serde_json::Value>,
    readings: BTreeSet<String>,
    /// Deliveries of an id already seen (at least once delivery: allowed, dropped here).
    duplicates: u64,
    /// Duplicates of a freeze id whose values differ from the first delivery's: a consumer
    /// that keeps the first would keep a wrong one.
    conflicting: Vec<String>,
    published: u64,
}

impl Consumer {
    fn receive(&mut self, kind: MessageKind, id: &str, payload: &[u8], at: UnixMillis) {
        self.published += 1;
        let fresh = match kind {
            MessageKind::Freeze => {
                if let Some(first) = self.freezes.get(id) {
                    if values_of(&first.payload) != values_of(payload) {
                        self.conflicting.push(id.to_owned());
                    }
                    false
                } else {
                    self.freezes.insert(
                        id.to_owned(),
                        Kept {
                            at,
                            payload: payload.to_vec(),
                        },
                    );
                    true
                }
            }
            MessageKind::Event => {
                if self.events.contains_key(id) {
                    false
                } else {
                    let v = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
                    self.events.insert(id.to_owned(), v);
                    true
                }
            }
            _ => self.readings.insert(id.to_owned()),
        };
        if !fresh {
            self.duplicates += 1;
        }
    }
}

/// A freeze record's values (what a duplicate must repeat; `read_at` and `backfill` may
/// differ between two reads of one record).
fn values_of(payload: &[u8]) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(v["values"].clone())
}

/// The uplink stand-in: drains the outbox as `Uplink::run` does (from the start after each
/// (re)connection, then after its cursor; ack per delivered row), while the broker is up.
async fn uplink_stand_in(
    mut outbox: SpoolOutbox,
    consumer: Arc<Mutex<Consumer>>,
    stored: Arc<Notify>,
    broker_down: (UnixMillis, UnixMillis),
) {
    let mut cursor: Option<i64> = None;
    loop {
        let now = meterd::clock::wall_clock_ms();
        if (broker_down.0..broker_down.1).contains(&now) {
            // Disconnected: a reconnect re-sends everything unacknowledged from the start.
            cursor = None;
            tokio::time::sleep(Duration::from_millis(
                u64::try_from(broker_down.1 - now).unwrap_or(1000),
            ))
            .await;
            continue;
        }
        let rows = match outbox.pending(cursor, 64) {
            Ok(rows) => rows,
            Err(e) => panic!("outbox: {e}"),
        };
        if rows.is_empty() {
            // Woken by a store (as the uplink is by `readings_added`) or the ack timer.
            let _ = tokio::time::timeout(Duration::from_secs(10), stored.notified()).await;
            continue;
        }
        for row in rows {
            consumer.lock().unwrap_or_else(|p| p.into_inner()).receive(
                row.kind,
                &row.id,
                &row.payload,
                meterd::clock::wall_clock_ms(),
            );
            cursor = Some(row.rowid);
            // A PUBACK takes a round trip.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Err(e) = outbox.ack(row.rowid) {
                panic!("ack: {e}");
            }
        }
    }
}

/// The daemon's pipeline as `Daemon::start_with` wires it (buses, ingest of readings,
/// freezes and events, the writer with its clock marks, the outbox), with the uplink
/// stand-in in place of the MQTT uplink and no service.
struct Pipeline {
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    fn start(
        config: &Config,
        profiles: &ProfileSet,
        opener: &LinkOpener,
        consumer: &Arc<Mutex<Consumer>>,
        broker_down: (UnixMillis, UnixMillis),
    ) -> Result<Pipeline, String> {
        let path = config.data_dir.join(meterd::spool::FILE_NAME);
        let spool = Spool::open(&path, SpoolOptions::new(config.spool.max_bytes))
            .map_err(|e| format!("spool: {e}"))?;
        let spool = Arc::new(Mutex::new(spool));
        let (ledger, counters) = {
            let s = spool.lock().unwrap_or_else(|p| p.into_inner());
            (
                Arc::new(LedgerView::load(&s).map_err(|e| e.to_string())?),
                Arc::new(CounterView::load(&s).map_err(|e| e.to_string())?),
            )
        };
        let (freeze_tx, freeze_rx) = mpsc::channel::<FreezeEvent>(64);
        let (event_tx, event_rx) = mpsc::channel::<EventNote>(64);
        let (bus_tx, bus_rx) = mpsc::channel::<ReadingBatch>(32);
        let mut options = BusOptions::new(&config.gateway);
        options.clock_steps = Arc::new(ClockSteps::new());
        options.freezes = Some(FreezeSink {
            book: ledger.clone(),
            out: freeze_tx,
            config: config.freeze.clone(),
        });
        options.events = Some(EventSink::from_config(config, counters.clone(), event_tx));
        options.link_opener = Some(opener.clone());
        let mut tasks = Vec::new();
        for bus in &config.buses {
            let bus = bus.get_ref();
            let health = Arc::new(Mutex::new(BusHealth::for_bus(bus)));
            let handle = bus_task::spawn(bus, profiles, options.clone(), bus_tx.clone(), health)
                .map_err(|e| e.to_string())?;
            tasks.push(handle.task);
        }
        drop(options);
        drop(bus_tx);
        let fresh = FreshRows::default();
        let acks = HeldAcks::default();
        let outbox = SpoolOutbox::new(spool.clone(), fresh.clone(), acks.clone());
        let stored = Arc::new(Notify::new());
        let marks = Arc::new(ClockMarks::default());
        let writer = SpoolWriter::new(
            spool.clone(),
            &config.gateway,
            config.validation.clone(),
            None,
            acks,
        )
        .with_clock(config.gateway_clock.synchronised, marks.clone());
        let notify = |n: &Arc<Notify>| {
            let n = n.clone();
            Box::new(move || n.notify_one())
        };
        tasks.push(tokio::spawn(ingest::freezes::run(
            freeze_rx,
            spool.clone(),
            ledger,
            fresh.clone(),
            notify(&stored),
        )));
        tasks.push(tokio::spawn(ingest::events::run(
            event_rx,
            spool.clone(),
            counters,
            marks,
            fresh.clone(),
            notify(&stored),
        )));
        tasks.push(tokio::spawn(ingest::run(
            bus_rx,
            writer,
            fresh,
            config.spool.commit_window,
            notify(&stored),
        )));
        tasks.push(tokio::spawn(uplink_stand_in(
            outbox,
            consumer.clone(),
            stored,
            broker_down,
        )));
        Ok(Pipeline { tasks })
    }

    /// kill -9's equivalent: every task aborted where it is, nothing flushed or stopped in
    /// order; what a blocking spool write in progress does is up to the spool's transaction.
    async fn crash(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts a pipeline, retrying while the crashed one's last blocking write still holds the
/// spool (it finishes on its own: a process's death would have ended it at once).
async fn start_pipeline(
    config: &Config,
    profiles: &ProfileSet,
    opener: &LinkOpener,
    consumer: &Arc<Mutex<Consumer>>,
    broker_down: (UnixMillis, UnixMillis),
) -> Pipeline {
    let mut last = String::new();
    for _ in 0..500 {
        match Pipeline::start(config, profiles, opener, consumer, broker_down) {
            Ok(p) => return p,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pipeline does not start again: {last}");
}

/// A line of the simulator's time-set log.
#[derive(Debug, serde::Deserialize)]
struct TimeSetLine {
    at: String,
    meter: String,
    meter_before: String,
    correction_s: f64,
    accepted: bool,
    refused: Option<String>,
}

/// `"2026-11-30 23:57:01"` (a meter's local clock) as local milliseconds.
fn local_text_ms(text: &str) -> Option<i64> {
    parse_rfc3339(&format!("{}Z", text.replace(' ', "T")))
}

/// What the checks found.
#[derive(Debug, Default)]
struct Figures {
    expected: usize,
    delivered: usize,
    late: Vec<String>,
    missing: Vec<String>,
    wrong: Vec<String>,
    not_expected_daily: Vec<String>,
    per_day: BTreeMap<String, (usize, usize)>,
    syncs_accepted: usize,
    syncs_refused: BTreeMap<String, usize>,
    sync_violations: Vec<String>,
    drifting: usize,
    drift_by_event: usize,
    drift_by_clock_set: usize,
    drift_unreported: Vec<String>,
    drift_false: Vec<String>,
    conflicting: Vec<String>,
    ledger_delivered: usize,
    ledger_not_delivered: Vec<String>,
    /// From the freeze (the meter's midnight) to the consumer, per delivered record, minutes.
    delays_min: Vec<i64>,
}

/// The daily freezes each DL/T 645-2007 meter made during the run at least 24 h before its
/// end: (meter, stamp as local minutes, freeze instant bound).
fn expected_freezes(plan: &Plan) -> Vec<(&Planned, i64)> {
    let mut out = Vec::new();
    for m in plan.meters.iter().filter(|m| m.keeps_daily()) {
        // Local midnights: stamp s (local ms) froze at about s - zone (UTC), ± the clock error.
        let first = (plan.start + ZONE_MS).div_euclid(DAY) + 1;
        let mut day = first;
        loop {
            let stamp_local = day * DAY;
            let freeze_utc = stamp_local - ZONE_MS;
            if freeze_utc + MAX_ERROR_MS + DAY > plan.end {
                break;
            }
            out.push((m, stamp_local));
            day += 1;
        }
    }
    out
}

fn local_minute_text(local_ms: i64) -> String {
    // `2026-11-30T00:00` as the freeze ids write it.
    rfc3339_ms(local_ms)[..16].to_owned()
}

fn check(plan: &Plan, consumer: &Consumer, time_sets: &[TimeSetLine]) -> Figures {
    let mut f = Figures::default();
    let by_id: HashMap<&str, &Planned> = plan.meters.iter().map(|m| (m.id.as_str(), m)).collect();
    for (m, stamp_local) in expected_freezes(plan) {
        f.expected += 1;
        let day = rfc3339_ms(stamp_local)[..10].to_owned();
        let entry = f.per_day.entry(day).or_default();
        entry.0 += 1;
        let id = format!(
            "gw-fm/{}/daily/{}+08:00",
            m.id,
            local_minute_text(stamp_local)
        );
        let Some(kept) = consumer.freezes.get(&id) else {
            f.missing.push(id);
            continue;
        };
        // The freeze happened when the meter's clock showed midnight: within ±8 min of it.
        let freeze_utc = stamp_local - ZONE_MS;
        if kept.at - (freeze_utc - MAX_ERROR_MS) > DAY {
            f.late.push(format!("{id} at {}", rfc3339_ms(kept.at)));
            continue;
        }
        match exact(m, freeze_utc, &kept.payload) {
            Ok(()) => {
                f.delivered += 1;
                f.delays_min.push((kept.at - freeze_utc) / MINUTE);
                entry.1 += 1;
            }
            Err(why) => f.wrong.push(format!("{id}: {why}")),
        }
    }
    // Meters that keep no daily freeze must have none counted (or delivered).
    for id in consumer.freezes.keys() {
        if id.contains("/daily/") {
            let meter = id.split('/').nth(1).unwrap_or("");
            if !by_id.get(meter).is_some_and(|m| m.keeps_daily()) {
                f.not_expected_daily.push(id.clone());
            }
        }
    }
    // Time sets on the wire, as the meters received them.
    let mut accepted_days: BTreeMap<(String, String), usize> = BTreeMap::new();
    for s in time_sets {
        let before = local_text_ms(&s.meter_before).unwrap_or(0);
        let tod = before.rem_euclid(DAY);
        let near_midnight = tod <= 5 * MINUTE || tod >= DAY - 5 * MINUTE;
        // The only settlement instants: the daily freeze at 00:00 and the monthly settlement
        // at day 1 00:00, both covered by the midnight guard.
        let far_off = by_id
            .get(s.meter.as_str())
            .is_some_and(|m| m.clock_offset_s.abs() >= 300);
        if s.accepted {
            f.syncs_accepted += 1;
            *accepted_days
                .entry((s.meter.clone(), s.meter_before[..10].to_owned()))
                .or_default() += 1;
        } else {
            *f.syncs_refused
                .entry(s.refused.clone().unwrap_or_default())
                .or_default() += 1;
        }
        // A meter 5 min or more off can be set by no broadcast (its firmware refuses the
        // correction; the gateway reports it for a technician): a broadcast meant for the
        // others on its bus reaches it anyway, and is counted among the refusals.
        if far_off {
            continue;
        }
        if near_midnight {
            f.sync_violations.push(format!("{s:?}: within 23:55-00:05"));
        } else if s.correction_s.abs() >= 300.0 {
            f.sync_violations
                .push(format!("{s:?}: a correction of 5 min or more"));
        } else if s.refused.as_deref() == Some("already set today") {
            f.sync_violations
                .push(format!("{s:?}: a second sync that day"));
        }
    }
    for ((meter, day), n) in accepted_days {
        if n > 1 {
            f.sync_violations
                .push(format!("{meter} set {n} times on {day}"));
        }
    }
    // Every meter whose clock went past the limit reported; none that kept time. Past the
    // limit, by the simulator's truth: off by more than it at the start, or by more than it
    // when a broadcast sync set it (the time-set log), unless that was in the last 2 h (its
    // clock-set event is read at the next counter round).
    let last_read = plan.end - 2 * HOUR;
    let mut past: BTreeSet<String> = plan
        .meters
        .iter()
        .filter(|m| m.keeps_daily() && m.clock_offset_s.abs() * 1000 > DRIFT_LIMIT_MS)
        .map(|m| m.id.clone())
        .collect();
    for s in time_sets {
        let at = parse_rfc3339(&s.at).unwrap_or(0);
        if s.accepted && s.correction_s.abs() * 1000.0 > DRIFT_LIMIT_MS as f64 && at < last_read {
            past.insert(s.meter.clone());
        }
    }
    let drift_events: BTreeSet<String> = consumer
        .events
        .values()
        .filter(|v| v["type"] == "clock_drift")
        .filter_map(|v| v["meter"].as_str().map(str::to_owned))
        .collect();
    // A broadcast another meter's check asked for reaches every meter of the bus: one whose
    // own check had not come yet is reported by its clock-set event (the meter's clock before
    // and after, as the meter logged it).
    let set_events: BTreeSet<String> = consumer
        .events
        .values()
        .filter(|v| v["type"] == "clock_set")
        .filter(|v| {
            let t = |k: &str| {
                v["details"][k]
                    .as_str()
                    .and_then(|s| s.get(..19))
                    .and_then(|s| parse_rfc3339(&format!("{s}Z")))
            };
            matches!((t("clock_before"), t("clock_after")), (Some(b), Some(a)) if (a - b).abs() > DRIFT_LIMIT_MS)
        })
        .filter_map(|v| v["meter"].as_str().map(str::to_owned))
        .collect();
    f.drifting = past.len();
    for id in &past {
        if drift_events.contains(id) {
            f.drift_by_event += 1;
        } else if set_events.contains(id) {
            f.drift_by_clock_set += 1;
        } else {
            f.drift_unreported.push(id.clone());
        }
    }
    for m in plan.meters.iter().filter(|m| m.keeps_daily()) {
        if m.clock_offset_s == 0 && m.clock_ppm == 0.0 && drift_events.contains(&m.id) {
            f.drift_false.push(m.id.clone());
        }
    }
    f
}

/// The spool's ledger, which the completeness message counts: daily rows only for meters that
/// keep daily freezes (a DL/T 645-1997 or Modbus meter never counts as missing), and every
/// expected record delivered.
fn ledger_check(plan: &Plan, config: &Config, f: &mut Figures) {
    let path = config.data_dir.join(meterd::spool::FILE_NAME);
    // The last crash's blocking write may still hold the spool for a moment.
    let mut opened = Spool::open(&path, SpoolOptions::new(config.spool.max_bytes));
    for _ in 0..200 {
        if opened.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        opened = Spool::open(&path, SpoolOptions::new(config.spool.max_bytes));
    }
    let spool = match opened {
        Ok(s) => s,
        Err(e) => panic!("spool after the run: {e}"),
    };
    let rows = match spool.ledger("daily", "") {
        Ok(r) => r,
        Err(e) => panic!("ledger: {e}"),
    };
    let keeps: BTreeSet<&str> = plan
        .meters
        .iter()
        .filter(|m| m.keeps_daily())
        .map(|m| m.id.as_str())
        .collect();
    let states: HashMap<&str, &LedgerState> =
        rows.iter().map(|r| (r.id.as_str(), &r.state)).collect();
    for r in &rows {
        if !keeps.contains(r.meter.as_str()) {
            f.not_expected_daily
                .push(format!("ledger: {} {:?}", r.id, r.state));
        }
    }
    for (m, stamp_local) in expected_freezes(plan) {
        let id = format!(
            "gw-fm/{}/daily/{}+08:00",
            m.id,
            local_minute_text(stamp_local)
        );
        match states.get(id.as_str()) {
            Some(LedgerState::Delivered) => f.ledger_delivered += 1,
            other => f.ledger_not_delivered.push(format!("{id}: {other:?}")),
        }
    }
}

/// The record is exactly the simulator's frozen registers for that meter and midnight, with
/// its frames.
fn exact(m: &Planned, freeze_utc: UnixMillis, payload: &[u8]) -> Result<(), String> {
    let r: FreezeRecord = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(payload);
    if r.frames.is_empty() {
        return Err("no frames".into());
    }
    let model = MeterModel::new(m.seed, m.id.clone()).with_offset(meterd::clock::UtcOffset::CHINA);
    let v = serde_json::to_value(&r.values).map_err(|e| e.to_string())?;
    let values = v.as_array().cloned().unwrap_or_default();
    let mut energy = 0;
    for value in &values {
        let q = value["quantity"].as_str().unwrap_or("");
        let Some(rest) = q.strip_prefix("energy.") else {
            continue;
        };
        let Some((kind, tariff)) = rest.rsplit_once('.') else {
            continue;
        };
        let tariff: u8 = match tariff {
            "total" => 0,
            t => t
                .strip_prefix('t')
                .and_then(|t| t.parse().ok())
                .unwrap_or(99),
        };
        let want = model.energy(kind, tariff, 2, freeze_utc).to_string();
        // The payload's own text: a JSON number keeps its decimals there (`8100.90`).
        let exact = format!("\"quantity\":\"{q}\",\"value\":{want},");
        if !text.contains(&exact) || value["quality"] != "good" {
            return Err(format!(
                "{q} = {} ({}), the meter froze {want}",
                value["value"], value["quality"]
            ));
        }
        energy += 1;
    }
    if energy == 0 {
        return Err(format!("no energy values: {values:?}"));
    }
    Ok(())
}

/// Runs the fault model of `size`, prints its figures and checks them.
async fn run(size: Size, spool_dir: &Path) -> Figures {
    let wall_started = std::time::Instant::now();
    // Another seed (`FAULT_MODEL_SEED=n`) draws other clocks, crash times and faults.
    let seed = std::env::var("FAULT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x15);
    let plan = plan(size, seed);
    // The virtual wall clock: the run's start plus the paused runtime's elapsed time.
    let anchor = Instant::now();
    let start = plan.start;
    meterd::clock::install_source(Some(Arc::new(move || {
        UNIX_EPOCH
            + Duration::from_millis(u64::try_from(start).unwrap_or(0))
            + Instant::now().saturating_duration_since(anchor)
    })));
    let time_set_log = spool_dir.join("time-sets.jsonl");
    let sim: SimHandle = match Simulator::start(sim_config(&plan, &time_set_log)).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    };
    let attachers: HashMap<String, PortAttacher> = (0..size.buses)
        .filter_map(|b| {
            let name = format!("bus{}", b + 1);
            sim.attacher(&name).map(|a| (name, a))
        })
        .collect();
    let opener = LinkOpener::new(move |bus: &str| {
        let attacher = attachers
            .get(bus)
            .ok_or_else(|| std::io::Error::other(format!("no simulated port {bus}")))?;
        let (ours, theirs) = tokio::io::duplex(4096);
        drop(attacher.serve(theirs));
        Ok(Box::new(ours) as Box<dyn AttachedStream>)
    });
    let data_dir = spool_dir.join("data");
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        panic!("{}: {e}", data_dir.display());
    }
    let (config, profiles) = gateway_config(&plan, &data_dir);
    let consumer = Arc::new(Mutex::new(Consumer::default()));
    let mut pipeline =
        start_pipeline(&config, &profiles, &opener, &consumer, plan.broker_down).await;
    let mut crashes = 0;
    for &at in &plan.crashes {
        sleep_until_wall(at).await;
        pipeline.crash().await;
        crashes += 1;
        pipeline = start_pipeline(&config, &profiles, &opener, &consumer, plan.broker_down).await;
        let day = (at - plan.start) / DAY + 1;
        eprintln!(
            "fault model: day {day}: crash at {} (real {:.0?})",
            rfc3339_ms(at),
            wall_started.elapsed()
        );
    }
    sleep_until_wall(plan.end).await;
    pipeline.crash().await;
    sim.shutdown().await;
    meterd::clock::install_source(None);

    let consumer = consumer.lock().unwrap_or_else(|p| p.into_inner());
    let time_sets: Vec<TimeSetLine> = std::fs::read_to_string(&time_set_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut f = check(&plan, &consumer, &time_sets);
    f.conflicting = consumer.conflicting.clone();
    ledger_check(&plan, &config, &mut f);
    let delivered_pct = 100.0 * f.delivered as f64 / f.expected.max(1) as f64;
    eprintln!(
        "fault model: {} meters ({} with daily freezes) on {} buses, {} simulated days in {:.1?} of real time",
        size.meters(),
        plan.meters.iter().filter(|m| m.keeps_daily()).count(),
        size.buses,
        size.days,
        wall_started.elapsed()
    );
    eprintln!(
        "fault model: daily freezes expected {}, delivered within 24 h and exact {} ({delivered_pct:.2} %), late {}, missing {}, wrong {}",
        f.expected,
        f.delivered,
        f.late.len(),
        f.missing.len(),
        f.wrong.len()
    );
    for (day, (e, d)) in &f.per_day {
        eprintln!("fault model:   {day}: {d}/{e}");
    }
    let mut delays = f.delays_min.clone();
    delays.sort_unstable();
    let pct = |p: usize| {
        delays
            .get((delays.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "fault model: freeze to consumer, minutes: p50 {}, p99 {}, max {}; ledger: {} of {} expected delivered",
        pct(50),
        pct(99),
        pct(100),
        f.ledger_delivered,
        f.expected
    );
    eprintln!(
        "fault model: published {} messages ({} freeze ids, {} event ids, {} readings), raw duplicates {} (dropped by id)",
        consumer.published,
        consumer.freezes.len(),
        consumer.events.len(),
        consumer.readings.len(),
        consumer.duplicates
    );
    eprintln!(
        "fault model: crashes {crashes}; broker down {} to {}; time syncs accepted {}, refused {:?}",
        rfc3339_ms(plan.broker_down.0),
        rfc3339_ms(plan.broker_down.1),
        f.syncs_accepted,
        f.syncs_refused
    );
    eprintln!(
        "fault model: meters past the drift limit {}: reported by clock_drift {}, by their clock_set only {}, unreported {:?}; clock_drift of meters that kept time {:?}",
        f.drifting, f.drift_by_event, f.drift_by_clock_set, f.drift_unreported, f.drift_false
    );
    for id in &f.drift_unreported {
        for s in time_sets.iter().filter(|s| &s.meter == id).take(3) {
            eprintln!("fault model: unreported {id}: time set {s:?}");
        }
        for e in consumer
            .events
            .values()
            .filter(|e| e["meter"] == id.as_str())
            .take(6)
        {
            eprintln!("fault model: unreported {id}: event {e}");
        }
    }
    for (label, list) in [
        ("missing", &f.missing),
        ("late", &f.late),
        ("wrong", &f.wrong),
        ("daily records of meters without", &f.not_expected_daily),
        ("sync violations", &f.sync_violations),
    ] {
        for line in list.iter().take(10) {
            eprintln!("fault model: {label}: {line}");
        }
    }
    f
}

async fn sleep_until_wall(at: UnixMillis) {
    let now = meterd::clock::wall_clock_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(u64::try_from(at - now).unwrap_or(0))).await;
    }
}

/// The checks of issue 15's acceptance.
fn assert_acceptance(f: &Figures) {
    assert!(f.expected > 0, "no daily freeze expected: {f:?}");
    assert!(
        f.delivered as f64 >= 0.999 * f.expected as f64,
        "{} of {} daily freezes delivered within 24 h, exact (missing {:?}, late {:?}, wrong {:?})",
        f.delivered,
        f.expected,
        f.missing,
        f.late,
        f.wrong
    );
    assert!(f.wrong.is_empty(), "records not as frozen: {:?}", f.wrong);
    assert!(
        f.ledger_delivered as f64 >= 0.999 * f.expected as f64,
        "the ledger has {} of {} expected records delivered: {:?}",
        f.ledger_delivered,
        f.expected,
        f.ledger_not_delivered
    );
    assert!(
        f.conflicting.is_empty(),
        "one id delivered with different values: {:?}",
        f.conflicting
    );
    assert!(
        f.not_expected_daily.is_empty(),
        "daily records of meters that keep none: {:?}",
        f.not_expected_daily
    );
    assert!(
        f.sync_violations.is_empty(),
        "time syncs outside the limits: {:?}",
        f.sync_violations
    );
    assert!(
        f.drifting > 0,
        "no meter drifted: the check would prove nothing"
    );
    assert!(
        f.drift_unreported.is_empty(),
        "meters past the drift limit with no clock_drift event: {:?}",
        f.drift_unreported
    );
    assert!(
        f.drift_false.is_empty(),
        "clock_drift events of meters that kept time: {:?}",
        f.drift_false
    );
}

/// The spool on tmpfs where there is one (fsync costs little there).
fn spool_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("meterd-fm-")
            .tempdir_in(&shm)
    } else {
        tempfile::tempdir()
    };
    match made {
        Ok(d) => d,
        Err(e) => panic!("temporary directory: {e}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

/// Issue 15's acceptance: the fault model at full size (`FAULT_MODEL_QUICK=1`: a smaller
/// run while working on it).
#[test]
fn settlement_fault_model() {
    let size = if std::env::var_os("FAULT_MODEL_QUICK").is_some() {
        QUICK
    } else {
        FULL
    };
    let dir = spool_dir();
    let figures = runtime().block_on(run(size, dir.path()));
    assert_acceptance(&figures);
}
