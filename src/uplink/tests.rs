//! Uplink tests against a real mosquitto started by each test on a free loopback port.
//! Each test prints a SKIP line and returns if the mosquitto binary is absent.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use super::*;
use crate::health::MeterState;
use crate::ingest::MemoryOutbox;
use crate::reading::freeze::FreezeRecord;
use crate::reading::{ExactNumber, Quality, ReadingBatch, ReadingValue, ValueData};

type SharedOutbox = Arc<Mutex<MemoryOutbox>>;

fn mosquitto_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/local/bin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A test that needs a real part (mosquitto, openssl) skips without it, printing why — except
/// under `METERD_REQUIRE_PARTS=1` (set by hil-tests/run, so CI), where a missing part fails.
fn skip(why: &str) {
    if std::env::var("METERD_REQUIRE_PARTS").is_ok_and(|v| v == "1") {
        panic!("required part missing: {why}");
    }
    eprintln!("SKIP: {why}");
}

macro_rules! need_mosquitto {
    () => {
        match mosquitto_bin() {
            Some(p) => p,
            None => {
                skip("mosquitto binary not found (apt-get install -y mosquitto)");
                return;
            }
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto process with its own config and directory.
struct Mosquitto {
    bin: PathBuf,
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `extra` is appended after `listener PORT 127.0.0.1` (per-listener TLS lines go there);
    /// `{dir}` in it is replaced by the temp dir.
    fn start(bin: &Path, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let extra = extra.replace("{dir}", dir.path().to_str().unwrap());
        let text = format!("user root\nlistener {port} 127.0.0.1\n{extra}\n");
        let text = if text.contains("allow_anonymous") {
            text
        } else {
            format!("allow_anonymous true\n{text}")
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, text).unwrap();
        let mut m = Self {
            bin: bin.to_owned(),
            conf,
            port,
            child: None,
            _dir: dir,
        };
        m.spawn();
        m
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("mosquitto did not listen on {}", self.port);
    }

    /// Sends `sig` and leaves the process running (SIGHUP: mosquitto reloads its config, ACL
    /// and password files).
    fn notify(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// A test subscriber that re-subscribes on every CONNACK without a session.
struct Sub {
    msgs: Arc<Mutex<Vec<Msg>>>,
    task: JoinHandle<()>,
}

impl Sub {
    async fn start(port: u16, filter: &str, client_id: &str, clean: bool) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_request_channel_capacity(100);
        let (client, mut el) = AsyncClient::new(o, 100);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        let m = msgs.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        if !a.session_present {
                            client
                                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                                .unwrap();
                        } else {
                            ready_tx.send_replace(true);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        ready_tx.send_replace(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => m.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(30)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), ready_rx.wait_for(|r| *r))
            .await
            .unwrap()
            .unwrap();
        Self { msgs, task }
    }

    fn on(&self, suffix: &str) -> Vec<Msg> {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.ends_with(suffix))
            .cloned()
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        keepalive: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_inflight: 10,
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(400),
        shutdown_timeout: Duration::from_secs(3),
        ..MqttConfig::default()
    }
}

/// A real reading batch; `frames` extra evidence frames of 100 bytes make it big.
fn batch(gw: &str, meter: &str, seq: u64, frames: usize) -> (String, Vec<u8>) {
    let t = UNIX_EPOCH + Duration::from_millis(1_795_777_201_234 + seq * 1000);
    let mut b = ReadingBatch::new(gw, meter, "dlt645-2007", seq, t);
    b.values.push(ReadingValue {
        quantity: "energy.active.import.total".into(),
        value: Some(ValueData::Number(ExactNumber::from_decimal(
            meter_protocols::Decimal::new(1_234_567 + seq as i64, 2).unwrap(),
        ))),
        unit: "kWh".into(),
        obis: Some("1-0:1.8.0".into()),
        source: "dlt645:00010000".into(),
        quality: Quality::Good,
        reason: None,
        meter_time: None,
    });
    b.values.push(ReadingValue {
        quantity: "energy.active.import.t1".into(),
        value: None,
        unit: "kWh".into(),
        obis: Some("1-0:1.8.1".into()),
        source: "dlt645:00010100".into(),
        quality: Quality::Bad,
        reason: Some("meter reported no data".into()),
        meter_time: None,
    });
    b.frames
        .push("68 29 25 07 07 21 20 68 91 08 33 33 33 33 A9 4A 36 33 2E 16".into());
    for _ in 0..frames {
        b.frames.push("68 ".repeat(33) + "16");
    }
    (b.id.clone(), serde_json::to_vec(&b).unwrap())
}

/// A daily freeze record of `meter` as the collector builds it.
fn freeze_record(gw: &str, meter: &str) -> FreezeRecord {
    use crate::reading::freeze::FreezeOrigin;
    use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute};
    let (_, payload) = batch(gw, meter, 1, 1);
    let b: ReadingBatch = serde_json::from_slice(&payload).unwrap();
    let origin = FreezeOrigin {
        gateway: gw,
        meter,
        protocol: "dlt645-2007",
        offset: crate::clock::UtcOffset::CHINA,
        read_at: &b.read_at,
    };
    let stamp = LocalMinute::from_civil(2026, 12, 7, 0, 0);
    FreezeRecord::new(&origin, FreezeKind::Daily, stamp, true, b.values, b.frames)
}

fn push(
    outbox: &SharedOutbox,
    handle: &UplinkHandle,
    gw: &str,
    meter: &str,
    seq: u64,
    frames: usize,
) {
    let (id, payload) = batch(gw, meter, seq, frames);
    outbox.lock().unwrap().push(meter, seq, &id, payload);
    handle.readings_added();
}

fn start_uplink(
    gw: &str,
    cfg: MqttConfig,
) -> (SharedOutbox, UplinkHandle, JoinHandle<SharedOutbox>) {
    let outbox: SharedOutbox = Arc::new(Mutex::new(MemoryOutbox::new()));
    let stats = outbox.clone();
    let (uplink, handle) = Uplink::new(gw, cfg, outbox.clone()).unwrap();
    let uplink = uplink.with_spool_stats(move || {
        let o = stats.lock().unwrap();
        SpoolSummary {
            depth: o.len() as u64,
            bytes: o.bytes(),
            dropped: 0,
            dropped_in_memory: 7,
        }
    });
    // m2's readings: 2 dropped by the spool (seq gaps), 5 dropped from memory (no seq).
    let uplink = uplink.with_meter_drops(|meter| {
        (meter == "m2").then_some(MeterDrops {
            dropped: 2,
            dropped_in_memory: 5,
        })
    });
    (outbox, handle, tokio::spawn(uplink.run()))
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, payload: &[u8]) {
    let json: serde_json::Value = serde_json::from_slice(payload).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json}");
}

fn meter_status(meter: &str, state: MeterState) -> MeterHealth {
    let mut m = MeterHealth::new(meter, "dlt645-2007");
    m.state = state;
    m.last_success = Some(SystemTime::now());
    m.last_error = (state != MeterState::Ok).then(|| "timeout after 1s".into());
    m.polls_ok = 9;
    m.polls_failed = 1;
    m.timeouts = 1;
    m.clock = Some(crate::health::MeterClock {
        checked_at: SystemTime::now(),
        offset_s: -400.5,
        off: true,
        note: "not corrected: offset of 5 min or more: needs a technician".into(),
    });
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_deletes_on_puback_retains_statuses_and_matches_the_schemas() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, "");
    let sub = Sub::start(broker.port, "meterd/gw-a/#", "sub-a", true).await;
    let (outbox, handle, task) = start_uplink("gw-a", config(broker.port));
    handle.set_meter_status(meter_status("m1", MeterState::Ok), SystemTime::now());
    handle.set_meter_status(
        meter_status("m2", MeterState::Unreachable),
        SystemTime::now(),
    );
    for seq in 1..=40 {
        for m in ["m1", "m2", "m3"] {
            push(&outbox, &handle, "gw-a", m, seq, 0);
        }
    }
    // A freeze record goes out on its own topic, from the same outbox.
    let freeze = freeze_record("gw-a", "m1");
    outbox
        .lock()
        .unwrap()
        .push_freeze("m1", &freeze.id, serde_json::to_vec(&freeze).unwrap());
    // And a meter event on its own.
    let mut event = crate::reading::event::MeterEvent::new(
        "gw-a",
        "m2",
        "power_down",
        3,
        "2026-12-07T00:00:00.000Z",
    );
    event.started_at = Some("2026-12-07T07:59:00+08:00".into());
    outbox
        .lock()
        .unwrap()
        .push_event("m2", &event.id, serde_json::to_vec(&event).unwrap());
    handle.readings_added();
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .lock()
            .unwrap()
            .is_empty()
            && sub.on("/readings").len() >= 120
            && sub.on("/freezes").len() == 1
            && sub.on("/events").len() == 1)
        .await,
        "outbox left {}, received {}",
        outbox.lock().unwrap().len(),
        sub.on("/readings").len()
    );
    let snap = handle.snapshot();
    assert_eq!(snap.state, ConnectionState::Connected);
    assert_eq!(snap.acked, 122);
    let events = sub.on("/events");
    assert_eq!(events[0].topic, "meterd/gw-a/meters/m2/events");
    assert!(!events[0].retain);
    assert_valid(&schema("event.v1.json"), &events[0].payload);
    let got: crate::reading::event::MeterEvent =
        serde_json::from_slice(&events[0].payload).unwrap();
    assert_eq!(got, event);
    let freezes = sub.on("/freezes");
    assert_eq!(freezes[0].topic, "meterd/gw-a/meters/m1/freezes");
    assert!(!freezes[0].retain);
    assert_valid(&schema("freeze.v1.json"), &freezes[0].payload);
    let got: FreezeRecord = serde_json::from_slice(&freezes[0].payload).unwrap();
    assert_eq!(got, freeze);
    assert_eq!(snap.in_flight, 0);
    // Order per meter, topic per meter, payload as stored.
    let reading_schema = schema("reading.v1.json");
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in sub.on("/readings") {
        assert!(!m.retain);
        assert_valid(&reading_schema, &m.payload);
        let b: ReadingBatch = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m.topic, format!("meterd/gw-a/meters/{}/readings", b.meter));
        let prev = last.insert(b.meter.clone(), b.seq).unwrap_or(0);
        assert_eq!(b.seq, prev + 1, "order of {}", b.meter);
    }
    // A late meter status goes out while connected.
    handle.set_meter_status(meter_status("m3", MeterState::Degraded), SystemTime::now());
    assert!(wait_until(Duration::from_secs(5), || sub.on("/m3/status").len() == 1).await);
    let gw_schema = schema("gateway-status.v1.json");
    let meter_schema = schema("meter-status.v1.json");
    let online = sub.on("gw-a/status");
    assert!(!online.is_empty());
    assert_valid(&gw_schema, &online[0].payload);
    for m in sub
        .on("/status")
        .iter()
        .filter(|m| m.topic.contains("/meters/"))
    {
        assert_valid(&meter_schema, &m.payload);
    }
    // Clean shutdown: offline status, retained, and run() returns.
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.snapshot().state, ConnectionState::Stopped);
    // A new subscriber sees the retained statuses.
    let late = Sub::start(broker.port, "meterd/gw-a/#", "sub-a2", true).await;
    assert!(
        wait_until(Duration::from_secs(3), || late.on("/status").len() == 4).await,
        "{:?}",
        late.on("/status")
    );
    for m in late.on("/status") {
        assert!(m.retain, "{} not retained", m.topic);
    }
    let gw: serde_json::Value = serde_json::from_slice(&late.on("gw-a/status")[0].payload).unwrap();
    assert_eq!(gw["state"], "offline");
    assert_eq!(gw["reason"], "shutdown");
    assert_valid(&gw_schema, &late.on("gw-a/status")[0].payload);
    let m2: serde_json::Value = serde_json::from_slice(&late.on("/m2/status")[0].payload).unwrap();
    assert_eq!(m2["state"], "unreachable");
    // The drop counters: the gateway's totals, and a meter's own when the spool has them.
    assert_eq!(gw["spool"]["dropped_in_memory"], 7);
    assert_eq!(m2["counters"]["dropped"], 2);
    assert_eq!(m2["counters"]["dropped_in_memory"], 5);
    let m1: serde_json::Value = serde_json::from_slice(&late.on("/m1/status")[0].payload).unwrap();
    assert!(m1["counters"].get("dropped_in_memory").is_none(), "{m1}");
    assert!(
        late.on("/readings").is_empty(),
        "readings must not be retained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_10_kib_goes_through() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, "");
    let sub = Sub::start(broker.port, "meterd/gw-b/+/+/readings", "sub-b", true).await;
    let (outbox, handle, _task) = start_uplink("gw-b", config(broker.port));
    let size = batch("gw-b", "m1", 1, 2000).1.len() as u64; // ~200 KiB of evidence frames
    push(&outbox, &handle, "gw-b", "m1", 1, 2000);
    assert!(size > 150 * 1024, "{size}");
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    assert!(wait_until(Duration::from_secs(5), || sub.on("/readings").len() == 1).await);
    assert_eq!(sub.on("/readings")[0].payload.len() as u64, size);
    assert_valid(&schema("reading.v1.json"), &sub.on("/readings")[0].payload);
}

/// A reading larger than `max_packet_size` must not break the connection over and over and
/// block everything behind it: it is skipped (and stays in the outbox), the rest flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reading_does_not_block_the_others() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, "");
    let sub = Sub::start(broker.port, "meterd/gw-o/+/+/readings", "sub-o", true).await;
    let cfg = MqttConfig {
        max_packet_size: 10 * 1024,
        ..config(broker.port)
    };
    let (outbox, handle, _task) = start_uplink("gw-o", cfg);
    push(&outbox, &handle, "gw-o", "m1", 1, 200); // ~20 KiB
    push(&outbox, &handle, "gw-o", "m1", 2, 0);
    assert!(wait_until(Duration::from_secs(5), || sub.on("/readings").len() == 1).await);
    assert!(wait_until(Duration::from_secs(5), || outbox.lock().unwrap().len() == 1).await);
    let snap = handle.snapshot();
    assert_eq!(
        (snap.oversized, snap.acked, snap.connects),
        (1, 1, 1),
        "{snap:?}"
    );
    let b: ReadingBatch = serde_json::from_slice(&sub.on("/readings")[0].payload).unwrap();
    assert_eq!(b.seq, 2);
}

/// The data-loss scenario of peers' bugs: the broker goes away (SIGTERM, then SIGKILL) while
/// readings keep coming. Everything must arrive, in order per meter, duplicates only as
/// byte-identical copies (same `id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_lose_nothing_and_keep_order_per_meter() {
    let bin = need_mosquitto!();
    // Persistence keeps the test subscriber's session (and its queued messages) across the
    // broker's restarts, so that the subscriber itself cannot lose anything.
    let mut broker = Mosquitto::start(
        &bin,
        "persistence true\npersistence_location {dir}/\nautosave_interval 3600",
    );
    let sub = Sub::start(broker.port, "meterd/gw-r/meters/+/readings", "sub-r", false).await;
    let (outbox, handle, _task) = start_uplink("gw-r", config(broker.port));
    let meters = ["m1", "m2", "m3"];
    const N: u64 = 150;
    let producer = {
        let (outbox, handle) = (outbox.clone(), handle.clone());
        tokio::spawn(async move {
            for seq in 1..=N {
                for m in meters {
                    push(&outbox, &handle, "gw-r", m, seq, 0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.signal(libc::SIGTERM);
    let depth_during_outage = outbox.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let depth_after_outage = outbox.lock().unwrap().len();
    assert!(
        depth_after_outage > depth_during_outage,
        "readings queue while the broker is down"
    );
    assert_ne!(handle.snapshot().state, ConnectionState::Connected);
    broker.spawn();
    tokio::time::sleep(Duration::from_millis(400)).await;
    broker.signal(libc::SIGKILL);
    tokio::time::sleep(Duration::from_millis(400)).await;
    broker.spawn();
    producer.await.unwrap();
    let total = N as usize * meters.len();
    let unique = || {
        let msgs = sub.on("/readings");
        let mut ids: Vec<_> = msgs
            .iter()
            .map(|m| {
                serde_json::from_slice::<ReadingBatch>(&m.payload)
                    .unwrap()
                    .id
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    assert!(
        wait_until(Duration::from_secs(20), || outbox
            .lock()
            .unwrap()
            .is_empty()
            && unique() == total)
        .await,
        "outbox left {}, unique received {} of {total}, snapshot {:?}",
        outbox.lock().unwrap().len(),
        unique(),
        handle.snapshot()
    );
    let msgs = sub.on("/readings");
    let mut first: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut last_new: HashMap<String, u64> = HashMap::new();
    let mut dups = 0;
    for m in &msgs {
        let b: ReadingBatch = serde_json::from_slice(&m.payload).unwrap();
        if let Some(p) = first.get(&b.id) {
            dups += 1;
            assert_eq!(p, &m.payload, "a duplicate must be the same message");
            continue;
        }
        first.insert(b.id.clone(), m.payload.clone());
        let prev = last_new.insert(b.meter.clone(), b.seq).unwrap_or(0);
        assert_eq!(b.seq, prev + 1, "first deliveries of {} in order", b.meter);
    }
    let snap = handle.snapshot();
    eprintln!(
        "restart test: {total} readings, {} deliveries, {dups} duplicates, {} connects, published {}",
        msgs.len(),
        snap.connects,
        snap.published
    );
    assert!(snap.connects >= 3, "{snap:?}");
    assert_eq!(snap.acked as usize, total);
}

/// What docs/mqtt.md §4 tells a consumer to do with reading batches, per meter: a batch whose
/// `id` it has seen is a duplicate (dropped); any other is new, even with a `seq` below the
/// highest seen (a late fill of a gap); the gaps are the `seq`s below the highest not seen yet.
#[derive(Default)]
struct Consumer {
    ids: std::collections::HashSet<String>,
    /// meter → seqs accepted.
    seqs: BTreeMap<String, std::collections::BTreeSet<u64>>,
    duplicates: usize,
    /// Accepted with a seq below the highest accepted before for its meter.
    late_fills: usize,
    /// What the old rule ("`seq` ≤ last → drop") would have kept.
    old_rule_kept: usize,
    old_rule_last: HashMap<String, u64>,
}

impl Consumer {
    fn take(&mut self, b: &ReadingBatch) {
        let last = self.old_rule_last.entry(b.meter.clone()).or_insert(0);
        if b.seq > *last {
            *last = b.seq;
            self.old_rule_kept += 1;
        }
        if !self.ids.insert(b.id.clone()) {
            self.duplicates += 1;
            return;
        }
        let seqs = self.seqs.entry(b.meter.clone()).or_default();
        if seqs.last().is_some_and(|max| b.seq < *max) {
            self.late_fills += 1;
        }
        assert!(
            seqs.insert(b.seq),
            "a new id with a seq seen before: {}",
            b.id
        );
    }

    /// Seqs missing below the highest one seen, per meter.
    fn gaps(&self) -> BTreeMap<String, Vec<u64>> {
        self.seqs
            .iter()
            .map(|(m, seqs)| {
                let max = seqs.last().copied().unwrap_or(0);
                (m.clone(), (1..max).filter(|q| !seqs.contains(q)).collect())
            })
            .collect()
    }
}

/// MQTT 5, a broker whose ACL refuses one meter's readings topic, so it answers PUBACK 0x87
/// (not authorised): the other meter's readings all arrive; the refused ones stay in the
/// outbox, are published again with backoff on the same connection (no reconnect, no hot loop)
/// and counted; once the ACL allows the topic (rewritten, SIGHUP) they arrive — after later
/// `seq`s of their meter — and a consumer following docs/mqtt.md (deduplicate by `id`, gaps by
/// `seq`) ends with every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_refused_readings_are_retried_counted_and_arrive_once_allowed() {
    let bin = need_mosquitto!();
    let dir = tempfile::tempdir().unwrap();
    let (acl, log) = (dir.path().join("acl"), dir.path().join("log"));
    // Anonymous clients: everyone reads; the gateway may write its status (and will), m1's
    // topics and m2's status, but not m2's readings.
    let deny = "topic read meterd/#\ntopic write meterd/gw-v/status\n\
                topic write meterd/gw-v/meters/m1/#\ntopic write meterd/gw-v/meters/m2/status\n";
    std::fs::write(&acl, deny).unwrap();
    let broker = Mosquitto::start(
        &bin,
        &format!(
            "acl_file {}\nlog_dest file {}\nlog_type all",
            acl.display(),
            log.display()
        ),
    );
    let sub = Sub::start(broker.port, "meterd/gw-v/meters/+/readings", "sub-v", true).await;
    let status = Sub::start(broker.port, "meterd/gw-v/status", "sub-v-status", true).await;
    let cfg = MqttConfig {
        protocol: crate::config::MqttProtocol::V5,
        // The refused readings' retry schedule: 0.5-1 s, then 1-2 s.
        reconnect_min: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(2),
        status_interval: Duration::from_millis(200),
        ..config(broker.port)
    };
    let t0 = std::time::Instant::now();
    let (outbox, handle, task) = start_uplink("gw-v", cfg);
    for seq in 1..=5 {
        for m in ["m1", "m2"] {
            push(&outbox, &handle, "gw-v", m, seq, 0);
        }
    }
    // m1 flows; m2 is refused and stays.
    assert!(
        wait_until(Duration::from_secs(5), || sub.on("/m1/readings").len() == 5
            && outbox.lock().unwrap().len() == 5
            && handle.snapshot().refused_waiting == 5)
        .await,
        "received {:?}, outbox {}, {:?}",
        sub.on("/readings").len(),
        outbox.lock().unwrap().len(),
        handle.snapshot()
    );
    let kept = outbox.lock().unwrap().pending(None, 100).unwrap();
    assert!(kept.iter().all(|r| r.meter == "m2"), "{kept:?}");
    let first = handle.snapshot().publishes_refused;
    assert!(first >= 5, "{first}");
    // Retried with backoff on this connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let snap = handle.snapshot();
    let elapsed = t0.elapsed().as_secs_f64();
    eprintln!(
        "refused: {} refusals of 5 readings in {elapsed:.1} s; last: {:?}",
        snap.publishes_refused, snap.last_refusal
    );
    assert!(snap.publishes_refused > first, "retried: {snap:?}");
    // At most one attempt per 0.5 s per reading, plus the first: no hot loop.
    let bound = 5 * (2 + (elapsed / 0.5) as u64);
    assert!(snap.publishes_refused <= bound, "{snap:?} > {bound}");
    assert_eq!((snap.connects, snap.state), (1, ConnectionState::Connected));
    assert_eq!((snap.refused_waiting, snap.acked), (5, 5));
    let last = snap.last_refusal.clone().unwrap_or_default();
    assert!(last.contains("0x87") && last.contains("gw-v/m2/"), "{last}");
    assert!(sub.on("/m2/readings").is_empty());
    assert_eq!(
        outbox.lock().unwrap().len(),
        5,
        "nothing deleted without a PUBACK"
    );
    // The gateway status says so too.
    let gw_schema = schema("gateway-status.v1.json");
    assert!(
        wait_until(Duration::from_secs(3), || status.on("status").iter().any(
            |m| {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                v["uplink"]["refused_waiting"] == 5
            }
        ))
        .await,
        "{:?}",
        status.on("status").last()
    );
    for m in status.on("status") {
        assert_valid(&gw_schema, &m.payload);
    }
    // Fix the ACL; mosquitto reloads it on SIGHUP.
    std::fs::write(&acl, format!("{deny}topic write meterd/gw-v/meters/m2/#\n")).unwrap();
    broker.notify(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("Reloading config")))
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Later readings go out at once; the refused ones on their schedule, so after them.
    for seq in 6..=8 {
        for m in ["m1", "m2"] {
            push(&outbox, &handle, "gw-v", m, seq, 0);
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "outbox left {}, {:?}",
        outbox.lock().unwrap().len(),
        handle.snapshot()
    );
    assert!(wait_until(Duration::from_secs(5), || sub.on("/readings").len() >= 16).await);
    tokio::time::sleep(Duration::from_millis(200)).await; // any stray duplicate
    let snap = handle.snapshot();
    assert_eq!(
        (snap.connects, snap.refused_waiting, snap.acked),
        (1, 0, 16),
        "{snap:?}"
    );
    let mut consumer = Consumer::default();
    for m in sub.on("/readings") {
        let b: ReadingBatch = serde_json::from_slice(&m.payload).unwrap();
        consumer.take(&b);
    }
    let expected: BTreeMap<String, std::collections::BTreeSet<u64>> = ["m1", "m2"]
        .iter()
        .map(|m| (m.to_string(), (1..=8).collect()))
        .collect();
    assert_eq!(consumer.seqs, expected, "every reading exactly once");
    assert!(
        consumer.gaps().values().all(Vec::is_empty),
        "{:?}",
        consumer.gaps()
    );
    eprintln!(
        "consumer: {} readings, {} duplicates, {} late fills; the old rule (seq <= last: drop) \
         would have kept {}",
        consumer.ids.len(),
        consumer.duplicates,
        consumer.late_fills,
        consumer.old_rule_kept
    );
    // The case the old rule got wrong did happen: m2's refused readings came after m2/6.
    assert!(consumer.late_fills > 0);
    assert!(consumer.old_rule_kept < 16);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error_and_is_retried() {
    let bin = need_mosquitto!();
    let pwdir = tempfile::tempdir().unwrap();
    let pw = pwdir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&pw)
        .args(["meterd", "right"])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        skip("mosquitto_passwd not available");
        return;
    }
    let mut broker = Mosquitto::start(
        &bin,
        &format!("allow_anonymous false\npassword_file {}", pw.display()),
    );
    let wrong = broker.dir().join("wrong");
    std::fs::write(&wrong, "hunter2\n").unwrap();
    let cfg = MqttConfig {
        username: Some("meterd".into()),
        password_file: Some(wrong.clone()),
        ..config(broker.port)
    };
    let (outbox, handle, task) = start_uplink("gw-p", cfg);
    push(&outbox, &handle, "gw-p", "m1", 1, 0);
    assert!(
        wait_until(Duration::from_secs(5), || handle.snapshot().state
            == ConnectionState::Refused)
        .await
    );
    let snap = handle.snapshot();
    let err = snap.last_error.clone().unwrap();
    eprintln!(
        "wrong password: uplink state {:?}, last_error {err:?}",
        snap.state
    );
    assert!(
        err.contains("refused") && (err.contains("password") || err.contains("authorised")),
        "{err}"
    );
    assert!(!format!("{snap:?}").contains("hunter2"));
    assert_eq!(
        outbox.lock().unwrap().len(),
        1,
        "nothing deleted without a PUBACK"
    );
    // Still retrying: fix the password on the broker side (accept "hunter2") and it connects.
    Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&pw)
        .args(["meterd", "hunter2"])
        .status()
        .unwrap();
    broker.signal(libc::SIGKILL);
    broker.spawn();
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "{:?}",
        handle.snapshot()
    );
    assert_eq!(handle.snapshot().state, ConnectionState::Connected);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_marks_the_gateway_offline_when_the_uplink_dies() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, "");
    let sub = Sub::start(broker.port, "meterd/gw-w/status", "sub-w", true).await;
    let (_outbox, handle, task) = start_uplink("gw-w", config(broker.port));
    let state =
        |m: &Msg| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["state"].clone();
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .on("status")
            .iter()
            .any(|m| state(m) == "online"))
        .await
    );
    // Kill the task: the socket closes without DISCONNECT, the broker publishes the will.
    task.abort();
    let _ = task.await;
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .on("status")
            .iter()
            .any(|m| state(m) == "offline"))
        .await,
        "{:?}",
        sub.on("status")
    );
    let late = Sub::start(broker.port, "meterd/gw-w/status", "sub-w2", true).await;
    assert!(wait_until(Duration::from_secs(3), || late.on("status").len() == 1).await);
    let will = &late.on("status")[0];
    assert!(will.retain);
    let v: serde_json::Value = serde_json::from_slice(&will.payload).unwrap();
    assert_eq!(v["state"], "offline");
    assert_eq!(v["reason"], "connection-lost");
    assert_valid(&schema("gateway-status.v1.json"), &will.payload);
    drop(handle);
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// CA, server cert for 127.0.0.1, client cert; all EC P-256.
fn make_pki(dir: &Path) -> bool {
    if Command::new("openssl").arg("version").output().is_err() {
        return false;
    }
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec![
        "req",
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=meterd test CA",
    ];
    a.extend(ec);
    openssl(dir, &a);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, crt, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
            format!("{who}.ext"),
        );
        let mut a = vec![
            "req",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=meterd-test",
        ];
        a.extend(ec);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_and_client_certificate() {
    let bin = need_mosquitto!();
    let pki = tempfile::tempdir().unwrap();
    if !make_pki(pki.path()) {
        skip("openssl CLI not found");
        return;
    }
    let p = |f: &str| pki.path().join(f).to_str().unwrap().to_owned();
    let tls_port = free_port();
    // Plain listener for the test subscriber (first), TLS listener with client certs for the uplink.
    let broker = Mosquitto::start(
        &bin,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p("ca.crt"),
            p("server.crt"),
            p("server.key")
        ),
    );
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sub = Sub::start(broker.port, "meterd/gw-t/#", "sub-t", true).await;
    let tls = MqttConfig {
        url: format!("mqtts://127.0.0.1:{tls_port}"),
        ca_file: Some(p("ca.crt").into()),
        client_cert: Some(p("client.crt").into()),
        client_key: Some(p("client.key").into()),
        ..config(broker.port)
    };
    // Without the client certificate the broker refuses the handshake.
    let no_cert = MqttConfig {
        client_cert: None,
        client_key: None,
        ..tls.clone()
    };
    let (_o, h_no, t_no) = start_uplink("gw-n", no_cert);
    assert!(
        wait_until(Duration::from_secs(5), || h_no
            .snapshot()
            .last_error
            .is_some())
        .await
    );
    assert_ne!(h_no.snapshot().state, ConnectionState::Connected);
    eprintln!(
        "TLS without client certificate: {:?}",
        h_no.snapshot().last_error
    );
    t_no.abort();
    let (outbox, handle, task) = start_uplink("gw-t", tls);
    push(&outbox, &handle, "gw-t", "m1", 1, 0);
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "{:?}",
        handle.snapshot()
    );
    assert!(wait_until(Duration::from_secs(5), || sub.on("/readings").len() == 1).await);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// Measurement, not a check: `cargo test -p meterd uplink_drain_rate -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn uplink_drain_rate() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, &std::env::var("MOSQ_EXTRA").unwrap_or_default());
    for window in [1u16, 2, 5, 20, 100] {
        let cfg = MqttConfig {
            max_inflight: window,
            ..config(broker.port)
        };
        let gw = format!("gw-rate-{window}");
        let outbox: SharedOutbox = Arc::new(Mutex::new(MemoryOutbox::new()));
        const N: u64 = 5000;
        for seq in 1..=N {
            let (id, payload) = batch(&gw, "m1", seq, 0);
            outbox.lock().unwrap().push("m1", seq, &id, payload);
        }
        let bytes = outbox.lock().unwrap().bytes();
        let (uplink, handle) = Uplink::new(&gw, cfg, outbox.clone()).unwrap();
        let t0 = std::time::Instant::now();
        let task = tokio::spawn(uplink.run());
        assert!(
            wait_until(Duration::from_secs(60), || outbox
                .lock()
                .unwrap()
                .is_empty())
            .await
        );
        let dt = t0.elapsed();
        eprintln!(
            "window {window:>3}: {N} readings ({} B each) drained in {dt:?} = {:.0} readings/s (debug build, backlog in memory)",
            bytes / N,
            N as f64 / dt.as_secs_f64()
        );
        handle.shutdown();
        let _ = task.await;
    }
}

#[test]
fn a_missing_client_certificate_is_named() {
    // What rumqttc/rustls give when mosquitto has `require_certificate true` (HIL:
    // test_daemon_tls.py): the alert is buried in a deserialization error.
    let e = rumqttc::ConnectionError::Io(std::io::Error::other(
        "received fatal alert: CertificateRequired",
    ));
    let text = super::link::describe_v311(&e).text;
    assert!(
        text.starts_with("the broker requires a client certificate (set mqtt.client_cert"),
        "{text}"
    );
}

#[test]
fn a_refused_puback_is_described_with_its_reason_code() {
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties, PubAckReason};
    let ack = |reason, why: Option<&str>| PubAck {
        pkid: 1,
        reason,
        properties: why.map(|w| PubAckProperties {
            reason_string: Some(w.into()),
            user_properties: Vec::new(),
        }),
    };
    let refusal = |reason, why| super::link::puback_refusal(&ack(reason, why));
    assert_eq!(refusal(PubAckReason::Success, None), None);
    // No subscriber yet: the broker took it.
    assert_eq!(refusal(PubAckReason::NoMatchingSubscribers, None), None);
    assert_eq!(
        refusal(PubAckReason::NotAuthorized, None).as_deref(),
        Some("0x87 NotAuthorized")
    );
    assert_eq!(
        refusal(PubAckReason::QuotaExceeded, Some("slow down")).as_deref(),
        Some("0x97 QuotaExceeded: slow down")
    );
}

/// A meter removed from the configuration: its retained status is deleted on the broker (an
/// empty retained publish) and not published again after a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_meter_status_is_deleted_on_the_broker() {
    let bin = need_mosquitto!();
    let broker = Mosquitto::start(&bin, "");
    let sub = Sub::start(broker.port, "meterd/gw-c/#", "sub-c", true).await;
    let (_outbox, handle, task) = start_uplink("gw-c", config(broker.port));
    handle.set_meter_status(meter_status("m1", MeterState::Ok), SystemTime::now());
    handle.set_meter_status(meter_status("m2", MeterState::Ok), SystemTime::now());
    assert!(
        wait_until(Duration::from_secs(5), || sub.on("/m1/status").len() == 1
            && sub.on("/m2/status").len() == 1)
        .await
    );
    handle.clear_meter_status("m2");
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .on("/m2/status")
            .iter()
            .any(|m| m.payload.is_empty()))
        .await,
        "no deletion published: {:?}",
        sub.on("/m2/status")
    );
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    // A new subscriber gets m1's retained status, none for m2.
    let late = Sub::start(broker.port, "meterd/gw-c/#", "sub-c2", true).await;
    assert!(wait_until(Duration::from_secs(3), || late.on("/m1/status").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        late.on("/m2/status").is_empty(),
        "m2's status is still retained: {:?}",
        late.on("/m2/status")
    );
}

async fn next(rx: &mut mpsc::Receiver<IncomingCommand>) -> IncomingCommand {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

/// A plain publisher (the billing core's side of the command topics).
async fn publisher(port: u16, id: &str) -> (AsyncClient, JoinHandle<()>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 100);
    let task = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    (client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_subscribed_on_every_connection_and_forwarded_with_their_retain_flag() {
    let bin = need_mosquitto!();
    // Persistence keeps the retained command across the broker's restart.
    let mut broker = Mosquitto::start(&bin, "persistence true\npersistence_location {dir}/");
    let (tx, mut rx) = mpsc::channel(16);
    let outbox: SharedOutbox = Arc::new(Mutex::new(MemoryOutbox::new()));
    let (uplink, handle) = Uplink::new("gw-c", config(broker.port), outbox).unwrap();
    assert_eq!(uplink.commands_filter(), "meterd/gw-c/meters/+/commands");
    assert_eq!(
        uplink.outbox_topic("m1", MessageKind::CommandResult),
        "meterd/gw-c/meters/m1/command-results"
    );
    let _task = tokio::spawn(uplink.with_commands(tx).run());
    assert!(
        wait_until(Duration::from_secs(5), || handle
            .snapshot()
            .commands_subscribed)
        .await
    );
    let (core, _c) = publisher(broker.port, "core").await;
    // Retained first (the broker keeps it), then a live one, then one for another gateway.
    core.publish(
        "meterd/gw-c/meters/m1/commands",
        QoS::AtLeastOnce,
        true,
        b"kept".to_vec(),
    )
    .await
    .unwrap();
    core.publish(
        "meterd/gw-c/meters/m1/commands",
        QoS::AtLeastOnce,
        false,
        b"live".to_vec(),
    )
    .await
    .unwrap();
    core.publish(
        "meterd/gw-x/meters/m1/commands",
        QoS::AtLeastOnce,
        false,
        b"other".to_vec(),
    )
    .await
    .unwrap();
    let live = next(&mut rx).await;
    // A retained message published while subscribed is delivered live (retain flag clear).
    assert_eq!(
        (live.payload.as_slice(), live.retain),
        (&b"kept"[..], false)
    );
    let live = next(&mut rx).await;
    assert_eq!(
        (live.topic.as_str(), live.payload.as_slice(), live.retain),
        ("meterd/gw-c/meters/m1/commands", &b"live"[..], false)
    );
    // A new connection (broker restart, clean session): subscribed again, and the retained
    // message comes with its retain flag set, for the control room to refuse.
    broker.signal(libc::SIGTERM);
    broker.spawn();
    let retained = next(&mut rx).await;
    assert_eq!(
        (retained.payload.as_slice(), retained.retain),
        (&b"kept"[..], true)
    );
    assert!(handle.snapshot().commands_subscribed);
    let (core, _c2) = publisher(broker.port, "core2").await;
    core.publish(
        "meterd/gw-c/meters/m2/commands",
        QoS::AtLeastOnce,
        false,
        b"again".to_vec(),
    )
    .await
    .unwrap();
    let again = next(&mut rx).await;
    assert_eq!(
        (again.topic.as_str(), again.retain),
        ("meterd/gw-c/meters/m2/commands", false)
    );
    assert!(
        rx.try_recv().is_err(),
        "nothing from another gateway's topics"
    );
    assert_eq!(handle.snapshot().commands_received, 4);
}
