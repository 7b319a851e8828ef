//! The daemon collects the meters' own settlement records: a simulated DL/T 645 meter keeping
//! China Standard Time, the daemon with the embedded broker, a subscriber as the billing core.
//! Every daily record of the back-fill window and the last monthly settlement arrive on
//! `…/freezes`, once each, stamped as the meter stamped them, each value exactly the
//! simulator's frozen register; the ledger says delivered.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute, latest_due, latest_load_record};
use meterd::clock::{UtcOffset, wall_clock_ms};
use meterd::config::Config;
use meterd::daemon::{Daemon, RunOptions};
use meterd::reading::freeze::FreezeRecord;
use meterd::sim::model::MeterModel;
use meterd::sim::{SimConfig, Simulator};
use meterd::spool::freezes::LedgerState;
use meterd::spool::{Spool, SpoolOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const ADDR: &str = "000000000007";
const SEED: u64 = 77;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A billing-core consumer `id` on `broker`, subscribed (QoS 1) to `topics`; `cap` is its
/// request queue.
async fn consumer(
    broker: u16,
    id: &str,
    topics: &[&str],
    cap: usize,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, events) = AsyncClient::new(opts, cap);
    for topic in topics {
        client.subscribe(*topic, QoS::AtLeastOnce).await.unwrap();
    }
    (client, events)
}

/// The simulator (its meter with `sim_extra` lines) and the daemon with the embedded broker:
/// (simulator, daemon, broker port, data directory).
async fn start(
    sim_extra: &str,
    freezes: &str,
) -> (meterd::sim::SimHandle, Daemon, u16, tempfile::TempDir) {
    start_meter("dlt645-2007", "dlt645-three-phase", sim_extra, freezes).await
}

/// [`start`] with a meter of `protocol` and `profile`.
async fn start_meter(
    protocol: &str,
    profile: &str,
    sim_extra: &str,
    freezes: &str,
) -> (meterd::sim::SimHandle, Daemon, u16, tempfile::TempDir) {
    let sim_text = format!(
        "[[port]]\nname = \"dlt\"\ntcp = \"127.0.0.1:0\"\n[[port.meter]]\nprotocol = \"{protocol}\"\n\
         address = \"{ADDR}\"\nprofile = \"{profile}\"\nseed = {SEED}\n{sim_extra}"
    );
    let sim = Simulator::start(SimConfig::from_text(Path::new("sim.toml"), &sim_text).unwrap())
        .await
        .unwrap();
    let sim_addr = sim.local_addr("dlt").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port();
    let text = format!(
        r#"
gateway = "gw-f"
data_dir = "{}"
[mqtt]
url = "embedded"
embedded_listen = "127.0.0.1:{broker}"
[service]
listen = "127.0.0.1:0"
[freeze]
delay = "0s"
backfill_days = 3
backfill_months = {months}
backfill_hours = 3
backfill_load_records = 4
[[bus]]
name = "dlt"
transport = "tcp"
host = "{sim_addr}"
[[bus.meter]]
protocol = "{protocol}"
address = "{ADDR}"
profile = "{profile}"
interval = "1h"
freezes = {freezes}
"#,
        dir.path().display(),
        // A 1997 meter keeps two settlements: ask for more than it has.
        months = if protocol == "dlt645-1997" { 12 } else { 1 },
    );
    let (config, profiles) = Config::from_text(Path::new("<test>"), &text).unwrap();
    let daemon = Daemon::start_with(config, profiles, RunOptions::default())
        .await
        .unwrap();

    (sim, daemon, broker, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_and_monthly_records_are_collected_published_once_and_delivered() {
    let (sim, daemon, broker, dir) = start("", r#"["daily", "monthly"]"#).await;
    let (_client, mut events) = consumer(
        broker,
        "billing-core",
        &["meterd/gw-f/meters/+/freezes", "meterd/gw-f/completeness"],
        64,
    )
    .await;
    let mut got: BTreeMap<String, (FreezeRecord, String)> = BTreeMap::new();
    let mut completeness: Option<serde_json::Value> = None;
    let delivered_3 = |c: &Option<serde_json::Value>| {
        c.as_ref().is_some_and(|c| {
            c["days"]
                .as_array()
                .is_some_and(|d| d.iter().take(3).all(|d| d["delivered"] == 1))
        })
    };
    let mut deliveries = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (got.len() < 4 || !delivered_3(&completeness)) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        else {
            continue;
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            if p.topic.ends_with("/completeness") {
                completeness = Some(serde_json::from_slice(&p.payload).unwrap());
                continue;
            }
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            let r: FreezeRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(p.topic, format!("meterd/gw-f/meters/{ADDR}/freezes"));
            deliveries += 1;
            got.insert(r.id.clone(), (r, text));
        }
    }
    assert_eq!(
        got.len(),
        4,
        "records: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    assert_eq!(deliveries, 4, "each record once");

    // The records the meter holds by its clock (CST) at the time of the test.
    let now_local = LocalMinute(wall_clock_ms().div_euclid(60_000) + 480);
    let newest = latest_due(FreezeKind::Daily, now_local, 0, (1, 0));
    let model = MeterModel::new(SEED, ADDR.into()).with_offset(UtcOffset::CHINA);
    for k in 0..3 {
        let stamp = LocalMinute(newest.0 - k * 1440);
        let id = format!("gw-f/{ADDR}/daily/{stamp}+08:00");
        let (r, text) = got.get(&id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(r.frozen_at, format!("{stamp}:00+08:00"));
        assert_eq!(r.backfill, k > 0, "{id}");
        assert_eq!(r.frames.len(), 3, "one stamp read and two value blocks");
        let at_utc = (stamp.0 - 480) * 60_000;
        for (quantity, kind, tariff) in [
            ("energy.active.import.total", "active.import", 0),
            ("energy.active.import.t2", "active.import", 2),
            ("energy.active.export.total", "active.export", 0),
        ] {
            let want = model.energy(kind, tariff, 2, at_utc).to_string();
            let v = r.values.iter().find(|v| &*v.quantity == quantity).unwrap();
            assert_eq!(v.quality.to_string(), "good");
            assert!(
                text.contains(&format!("\"quantity\":\"{quantity}\",\"value\":{want},")),
                "{quantity} = {want} not in {text}"
            );
        }
    }
    assert!(
        got.keys().any(|id| id.contains("/monthly/")),
        "{:?}",
        got.keys()
    );

    // The completeness: the three days back-filled are delivered, the four before missing.
    let c = completeness.expect("no completeness message");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/completeness.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&c), "{c}");
    let days = c["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    let yesterday = LocalMinute(newest.0 - 1440).to_string()[..10].to_owned();
    assert_eq!(days[0]["day"], yesterday);
    for (i, d) in days.iter().enumerate() {
        assert_eq!(d["expected"], 1, "{c}");
        let (delivered, missing) = if i < 3 { (1, 0) } else { (0, 1) };
        assert_eq!(d["delivered"], delivered, "{c}");
        assert_eq!(d["missing"].as_array().unwrap().len(), missing, "{c}");
    }

    // Retained: a consumer that subscribes later gets it at once.
    let (_late, mut late_events) =
        consumer(broker, "late-consumer", &["meterd/gw-f/completeness"], 8).await;
    let retained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = late_events.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("no retained completeness");
    assert!(retained.retain);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&retained.payload).unwrap()["days"],
        c["days"]
    );

    // `meterd status` shows the last 7 days, and which of this meter's records are missing.
    let url = format!("http://{}", daemon.service_addr().unwrap());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["status", "--url", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("daily settlement records (day: delivered/expected):"),
        "{text}"
    );
    assert!(text.contains(&format!("  {yesterday}: 1/1\n")), "{text}");
    assert!(text.contains(&format!(": 0/1; missing {ADDR}")), "{text}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["status", "--url", &url, "--json"])
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gateway"]["completeness"]["days"], c["days"]);
    let meter = &report["buses"][0]["meters"][0];
    assert_eq!(
        meter["records_missing"].as_array().unwrap().len(),
        4,
        "{meter}"
    );

    // Delivered in the ledger once the broker acknowledged them.
    daemon.stop().await;
    let spool = Spool::open(
        dir.path().join("spool.sqlite"),
        SpoolOptions::numbered_from_one(64 << 20),
    )
    .unwrap();
    let daily = spool.ledger("daily", "").unwrap();
    assert_eq!(daily.len(), 3);
    assert!(
        daily.iter().all(|e| e.state == LedgerState::Delivered),
        "{daily:?}"
    );
    sim.shutdown().await;
}

/// A meter unpowered at a midnight made no record then: the daemon publishes the records it
/// has, writes the missing one to the ledger as lost with why, and the completeness lists it
/// as lost — never silently missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_the_meter_never_made_is_reported_lost() {
    let now_local = LocalMinute(wall_clock_ms().div_euclid(60_000) + 480);
    let newest = latest_due(FreezeKind::Daily, now_local, 0, (1, 0));
    let gap = LocalMinute(newest.0 - 1440);
    let gap_date = gap.to_string()[..10].to_owned();
    let (sim, daemon, _broker, dir) =
        start(&format!("freeze_gaps = [\"{gap_date}\"]\n"), r#"["daily"]"#).await;
    let lost_id = format!("gw-f/{ADDR}/daily/{gap}+08:00");
    let mut rows = Vec::new();
    let lost_listed = |c: &Option<serde_json::Value>| {
        c.as_ref().is_some_and(|c| {
            c["days"].as_array().is_some_and(|days| {
                days.iter()
                    .any(|d| d["lost"].as_array().is_some_and(|l| !l.is_empty()))
            })
        })
    };
    for _ in 0..60 {
        if lost_listed(&daemon_completeness(&daemon).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = daemon_completeness(&daemon).await.expect("no completeness");
    let yesterday_of_gap = LocalMinute(gap.0 - 1440).to_string()[..10].to_owned();
    let day = c["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["day"] == yesterday_of_gap.as_str())
        .unwrap_or_else(|| panic!("{c}"))
        .clone();
    assert_eq!(day["lost"], serde_json::json!([ADDR]), "{c}");
    assert_eq!(day["delivered"], 0, "{c}");
    daemon.stop().await;
    let spool = Spool::open(
        dir.path().join("spool.sqlite"),
        SpoolOptions::numbered_from_one(64 << 20),
    )
    .unwrap();
    rows.extend(spool.ledger("daily", "").unwrap());
    let lost = rows
        .iter()
        .find(|r| r.id == lost_id)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(lost.state, LedgerState::Lost);
    assert!(
        lost.detail
            .as_deref()
            .unwrap_or("")
            .contains("did not freeze"),
        "{lost:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.state == LedgerState::Delivered)
            .count(),
        2,
        "the two records the meter has: {rows:?}"
    );
    sim.shutdown().await;
}

/// The completeness the daemon's service reports.
async fn daemon_completeness(daemon: &Daemon) -> Option<serde_json::Value> {
    let c = daemon_status(daemon).await["gateway"]["completeness"].clone();
    (!c.is_null()).then_some(c)
}

/// `meterd status --json` of the daemon (`null` when it does not answer).
async fn daemon_status(daemon: &Daemon) -> serde_json::Value {
    let Some(addr) = daemon.service_addr() else {
        return serde_json::Value::Null;
    };
    let url = format!("http://{addr}");
    let Ok(out) = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["status", "--url", &url, "--json"])
        .output()
        .await
    else {
        return serde_json::Value::Null;
    };
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A meter collecting monthly and hourly records: the retained `…/completeness/monthly` and
/// `…/completeness/hourly` messages (valid against the schema) count the last 12 months and
/// 48 hours, the records back-filled delivered and the rest missing; the daily topic stays
/// empty (the meter collects no daily records); `meterd status` shows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_and_hourly_completeness_are_published_on_their_own_topics() {
    let (sim, daemon, broker, _dir) = start("", r#"["monthly", "hourly"]"#).await;
    let (_client, mut events) = consumer(
        broker,
        "billing-core-mh",
        &["meterd/gw-f/completeness/#", "meterd/gw-f/completeness"],
        64,
    )
    .await;
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let done = |l: &BTreeMap<String, serde_json::Value>| {
        let delivered = |topic: &str, key: &str, n: usize| {
            l.get(topic).is_some_and(|c| {
                c[key]
                    .as_array()
                    .is_some_and(|p| p.iter().take(n).all(|p| p["delivered"] == 1))
            })
        };
        delivered("meterd/gw-f/completeness/monthly", "months", 1)
            && delivered("meterd/gw-f/completeness/hourly", "hours", 3)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&latest) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        else {
            continue;
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            assert!(p.retain || !p.payload.is_empty());
            latest.insert(p.topic.clone(), serde_json::from_slice(&p.payload).unwrap());
        }
    }
    assert!(done(&latest), "{latest:?}");
    assert!(
        !latest.contains_key("meterd/gw-f/completeness"),
        "no meter collects daily records: {latest:?}"
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/completeness.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for c in latest.values() {
        assert!(validator.is_valid(c), "{c}");
    }

    let now_local = LocalMinute(wall_clock_ms().div_euclid(60_000) + 480);
    let monthly = &latest["meterd/gw-f/completeness/monthly"];
    assert_eq!(monthly["kind"], "monthly");
    let months = monthly["months"].as_array().unwrap();
    assert_eq!(months.len(), 12, "{monthly}");
    // The month the newest settlement closes (settled on the 1st at 00:00: the month before).
    let settled = meter_protocols::dlt645::freeze::monthly_stamp(now_local, (1, 0), 1);
    let (y, m, ..) = LocalMinute(settled.0 - 1440).civil();
    assert_eq!(months[0]["month"], format!("{y:04}-{m:02}"), "{monthly}");
    for (i, month) in months.iter().enumerate() {
        assert_eq!(month["expected"], 1, "{monthly}");
        let (delivered, missing) = if i < 1 { (1, 0) } else { (0, 1) };
        assert_eq!(month["delivered"], delivered, "{monthly}");
        assert_eq!(
            month["missing"].as_array().unwrap().len(),
            missing,
            "{monthly}"
        );
    }
    let hourly = &latest["meterd/gw-f/completeness/hourly"];
    assert_eq!(hourly["kind"], "hourly");
    let hours = hourly["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 48, "{hourly}");
    let last_hour = LocalMinute(now_local.0.div_euclid(60) * 60 - 60);
    assert_eq!(hours[0]["hour"], last_hour.to_string(), "{hourly}");
    for (i, hour) in hours.iter().enumerate() {
        let (delivered, missing) = if i < 3 { (1, 0) } else { (0, 1) };
        assert_eq!(hour["delivered"], delivered, "{hourly}");
        assert_eq!(
            hour["missing"].as_array().unwrap().len(),
            missing,
            "{hourly}"
        );
    }

    // `meterd status` shows both, and each meter's missing periods in --json.
    let url = format!("http://{}", daemon.service_addr().unwrap());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["status", "--url", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "monthly settlement records, last 12 months (month: delivered/expected): 1/12\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  {}: 1/1\n",
            months[0]["month"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "hourly settlement records, last 48 hours (hour: delivered/expected): 3/48\n"
        ),
        "{text}"
    );
    let oldest = hours[47]["hour"].as_str().unwrap();
    assert!(
        text.contains(&format!("  {oldest}: 0/1; missing {ADDR}\n")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("  {}: 1/1", hours[0]["hour"].as_str().unwrap())),
        "complete hours are not listed: {text}"
    );
    let report = daemon_status(&daemon).await;
    assert_eq!(
        report["gateway"]["completeness_monthly"]["months"],
        monthly["months"]
    );
    assert_eq!(
        report["gateway"]["completeness_hourly"]["hours"],
        hourly["hours"]
    );
    let meter = &report["buses"][0]["meters"][0];
    assert_eq!(
        meter["months_missing"].as_array().unwrap().len(),
        11,
        "{meter}"
    );
    assert_eq!(
        meter["hours_missing"].as_array().unwrap().len(),
        45,
        "{meter}"
    );
    assert!(meter.get("records_missing").is_none(), "{meter}");
    daemon.stop().await;
    sim.shutdown().await;
}

/// A DL/T 645-1997 meter's two monthly settlements (all the edition keeps) are collected by
/// the daemon and published as freeze records, exactly the simulator's registers; it is never
/// counted in the daily completeness (the edition has no daily freeze).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1997_meter_gives_its_two_monthly_settlements() {
    let (sim, daemon, broker, dir) =
        start_meter("dlt645-1997", "dlt645-1997-basic", "", r#"["monthly"]"#).await;
    let (_client, mut events) = consumer(
        broker,
        "billing-core-97",
        &["meterd/gw-f/meters/+/freezes"],
        64,
    )
    .await;
    let mut got: BTreeMap<String, (FreezeRecord, String)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        else {
            continue;
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            let r: FreezeRecord = serde_json::from_str(&text).unwrap();
            got.insert(r.id.clone(), (r, text));
        }
    }
    assert_eq!(got.len(), 2, "{:?}", got.keys().collect::<Vec<_>>());
    let now_local = LocalMinute(wall_clock_ms().div_euclid(60_000) + 480);
    let model = MeterModel::new(SEED, ADDR.into()).with_offset(UtcOffset::CHINA);
    for n in 1..=2u8 {
        let stamp = meter_protocols::dlt645::freeze::monthly_stamp(now_local, (1, 0), n);
        let id = format!("gw-f/{ADDR}/monthly/{stamp}+08:00");
        let (r, text) = got.get(&id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(r.protocol, "dlt645-1997");
        assert_eq!(r.frames.len(), 2, "the forward and reverse blocks");
        let at_utc = (stamp.0 - 480) * 60_000;
        for (quantity, kind, tariff) in [
            ("energy.active.import.total", "active.import", 0),
            ("energy.active.import.t4", "active.import", 4),
            ("energy.active.export.total", "active.export", 0),
        ] {
            let want = model.energy(kind, tariff, 2, at_utc).to_string();
            assert!(
                text.contains(&format!("\"quantity\":\"{quantity}\",\"value\":{want},")),
                "{quantity} = {want} not in {text}"
            );
        }
    }
    // No daily record is expected of it: no daily completeness (no meter keeps daily ones);
    // the monthly one counts it for the two months it keeps, both delivered.
    assert_eq!(daemon_completeness(&daemon).await, None);
    let mut monthly = serde_json::Value::Null;
    for _ in 0..40 {
        monthly = daemon_status(&daemon).await["gateway"]["completeness_monthly"].clone();
        if monthly["months"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["delivered"] == 1))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let months = monthly["months"]
        .as_array()
        .expect("no monthly completeness");
    assert_eq!(months.len(), 2, "{monthly}");
    assert!(
        months
            .iter()
            .all(|m| m["expected"] == 1 && m["delivered"] == 1),
        "{monthly}"
    );
    assert!(daemon_status(&daemon).await["gateway"]["completeness_hourly"].is_null());
    daemon.stop().await;
    let spool = Spool::open(
        dir.path().join("spool.sqlite"),
        SpoolOptions::numbered_from_one(64 << 20),
    )
    .unwrap();
    let monthly = spool.ledger("monthly", "").unwrap();
    assert_eq!(monthly.len(), 2, "{monthly:?}");
    sim.shutdown().await;
}

/// A reload that stops a meter collecting hourly records takes the hourly completeness off
/// the status (the monthly one stays): the service never shows figures of a kind no meter
/// collects any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_hourly_records_drops_the_hourly_completeness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meterd.toml");
    let broker = free_port();
    let write = |freezes: &str| {
        std::fs::write(
            &path,
            format!(
                r#"
gateway = "gw-r"
data_dir = "{}"
[mqtt]
url = "embedded"
embedded_listen = "127.0.0.1:{broker}"
[service]
listen = "127.0.0.1:0"
[[bus]]
name = "dlt"
transport = "tcp"
host = "127.0.0.1:9"
[[bus.meter]]
protocol = "dlt645-2007"
address = "{ADDR}"
profile = "dlt645-three-phase"
interval = "1h"
freezes = {freezes}
"#,
                dir.path().join("data").display()
            ),
        )
        .unwrap();
    };
    write(r#"["monthly", "hourly"]"#);
    let mut daemon = Daemon::start(&path, RunOptions::default()).await.unwrap();
    let has = |report: &serde_json::Value, key: &str| !report["gateway"][key].is_null();
    let mut report = serde_json::Value::Null;
    for _ in 0..40 {
        report = daemon_status(&daemon).await;
        if has(&report, "completeness_hourly") && has(&report, "completeness_monthly") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(has(&report, "completeness_hourly"), "{report}");
    write(r#"["monthly"]"#);
    daemon.reload().await.unwrap();
    for _ in 0..40 {
        report = daemon_status(&daemon).await;
        if !has(&report, "completeness_hourly") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!has(&report, "completeness_hourly"), "{report}");
    assert!(has(&report, "completeness_monthly"), "{report}");
    daemon.stop().await;
}

/// The load profile (负荷记录, `06000001`): a meter keeping one record every 15 minutes, one of
/// them skipped (unpowered then). The daemon publishes each record the meter holds in the
/// back-fill window once, stamped as the meter stamped it, every value exactly the simulator's
/// record; the older ones as back-fills; the skipped one is lost in the ledger with why, and
/// the load-profile completeness lists it as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_records_are_collected_back_filled_and_equal_the_meters() {
    let now_local = LocalMinute(wall_clock_ms().div_euclid(60_000) + 480);
    let newest = latest_load_record(now_local, 15);
    let gap = LocalMinute(newest.0 - 15);
    let (sim, daemon, broker, dir) = start(
        &format!("freezes = [\"load_profile\"]\nload_profile_gaps = [\"{gap}\"]\n"),
        r#"["load_profile"]"#,
    )
    .await;
    let (_client, mut events) = consumer(
        broker,
        "billing-core-lp",
        &[
            "meterd/gw-f/meters/+/freezes",
            "meterd/gw-f/completeness/load_profile",
        ],
        64,
    )
    .await;
    let mut got: BTreeMap<String, (FreezeRecord, String)> = BTreeMap::new();
    let mut completeness: Option<serde_json::Value> = None;
    let gap_lost = |c: &Option<serde_json::Value>| {
        c.as_ref().is_some_and(|c| {
            c["records"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["record"] == gap.to_string().as_str()
                        && r["lost"] == serde_json::json!([ADDR])
                })
            })
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (got.len() < 3 || !gap_lost(&completeness)) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        else {
            continue;
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            if p.topic.ends_with("/completeness/load_profile") {
                completeness = Some(serde_json::from_slice(&p.payload).unwrap());
                continue;
            }
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            let r: FreezeRecord = serde_json::from_str(&text).unwrap();
            assert!(
                got.insert(r.id.clone(), (r, text)).is_none(),
                "a record published twice"
            );
        }
    }
    let schema = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/schema/{name}")),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let freeze_schema = jsonschema::validator_for(&schema("freeze.v1.json")).unwrap();
    let model = MeterModel::new(SEED, ADDR.into()).with_offset(UtcOffset::CHINA);
    for k in [0, 2, 3] {
        let stamp = LocalMinute(newest.0 - k * 15);
        let id = format!("gw-f/{ADDR}/load_profile/{stamp}+08:00");
        let (r, text) = got
            .get(&id)
            .unwrap_or_else(|| panic!("{id} missing: {:?}", got.keys()));
        assert!(
            freeze_schema.is_valid(&serde_json::from_str(text).unwrap()),
            "{text}"
        );
        assert_eq!(r.kind, "load_profile");
        assert_eq!(r.frozen_at, format!("{stamp}:00+08:00"));
        assert_eq!(r.backfill, k > 0, "{id}");
        assert_eq!(r.frames.len(), 1, "one given-time read");
        // Every value of every block, exactly the simulator's record.
        let want = model.load_record(stamp).values();
        assert_eq!(r.values.len(), want.len(), "{text}");
        assert_eq!(want.len(), 7 + 8 + 4 + 4 + 4 + 2);
        for (_, v) in &want {
            let got_v = r
                .values
                .iter()
                .find(|g| *g.quantity == *v.quantity)
                .unwrap_or_else(|| panic!("{} not in {text}", v.quantity));
            assert_eq!(got_v.quality.to_string(), "good");
            assert!(
                text.contains(&format!(
                    "\"quantity\":\"{}\",\"value\":{},",
                    v.quantity, v.value
                )),
                "{} = {} not in {text}",
                v.quantity,
                v.value
            );
        }
    }
    assert!(
        !got.keys().any(|id| id.ends_with(&format!("/{gap}+08:00"))),
        "the skipped record was published: {:?}",
        got.keys()
    );
    let c = completeness.expect("no load-profile completeness");
    assert!(
        jsonschema::validator_for(&schema("completeness.v1.json"))
            .unwrap()
            .is_valid(&c),
        "{c}"
    );
    assert!(gap_lost(&Some(c.clone())), "{c}");
    assert_eq!(c["kind"], "load_profile");
    assert!(c["records"].as_array().unwrap().len() <= 96, "{c}");

    // `meterd status` lists the incomplete load-record stamps, the skipped one as lost.
    let url = format!("http://{}", daemon.service_addr().unwrap());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["status", "--url", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("load_profile settlement records, last 96 load-record stamps"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {gap}: 0/1; missing {ADDR} (lost)")),
        "{text}"
    );

    daemon.stop().await;
    let spool = Spool::open(
        dir.path().join("spool.sqlite"),
        SpoolOptions::numbered_from_one(64 << 20),
    )
    .unwrap();
    let rows = spool.ledger("load_profile", "").unwrap();
    let lost = rows
        .iter()
        .find(|r| r.id == format!("gw-f/{ADDR}/load_profile/{gap}+08:00"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(lost.state, LedgerState::Lost);
    assert!(
        lost.detail
            .as_deref()
            .unwrap_or("")
            .contains("did not record"),
        "{lost:?}"
    );
    sim.shutdown().await;
}
