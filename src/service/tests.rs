//! Tests of the diagnostics service against a real daemon polling simulated meters: one good
//! pair, one dead meter, one noisy meter, on a Modbus RTU line behind a raw-TCP device server.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{self, ClientError, Endpoint};
use super::report::StatusReport;
use crate::config::Config;
use crate::daemon::{Daemon, DaemonError, RunOptions};
use crate::reading::{Quality, ReadingBatch};
use crate::sim::{SimConfig, SimHandle, Simulator};

const SIM: &str = r#"
[[port]]
name = "rtu"
tcp = "127.0.0.1:0"
baud = 9600
parity = "even"
wire_time = false

[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
seed = 1

[[port.meter]]
protocol = "modbus-rtu"
unit = 2
profile = "eastron-sdm630"
seed = 2

[[port.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm630"
seed = 3
faults = { no_reply = { probability = 1.0 } }

[[port.meter]]
protocol = "modbus-rtu"
unit = 4
profile = "eastron-sdm630"
seed = 4
faults = { corrupt = { probability = 0.5 }, noise = { every = 1, bytes = 3 } }
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn daemon_toml(sim: SocketAddr, data: &Path, service: &str) -> String {
    let mut t = format!(
        r#"
gateway = "gw-diag"
data_dir = "{}"

[mqtt]
url = "embedded"
embedded_listen = "127.0.0.1:{}"

[service]
{service}

[[bus]]
name = "rtu"
transport = "tcp"
host = "{sim}"
baud = 9600
timing = {{ response_timeout = "150ms", retries = 1, turnaround = "5ms" }}
"#,
        data.display(),
        free_port()
    );
    for unit in 1..=4 {
        t.push_str(&format!(
            "\n[[bus.meter]]\nid = \"m{unit}\"\nprotocol = \"modbus-rtu\"\nunit = {unit}\nprofile = \"eastron-sdm630\"\ninterval = \"1s\"\n"
        ));
    }
    t
}

pub(super) async fn start(service: &str) -> (SimHandle, Daemon, tempfile::TempDir) {
    let sim_config = SimConfig::from_text(Path::new("<test>"), SIM).expect("sim config");
    let sim = Simulator::start(sim_config).await.expect("simulator");
    let addr = sim.local_addr("rtu").expect("sim port");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = daemon_toml(addr, dir.path(), service);
    let (config, profiles) = Config::from_text(Path::new("<test>"), &text).expect("config");
    let daemon = Daemon::start_with(config, profiles, RunOptions::default())
        .await
        .expect("daemon");
    (sim, daemon, dir)
}

fn endpoint(d: &Daemon) -> Endpoint {
    Endpoint::Tcp(d.service_addr().expect("service bound").to_string())
}

async fn status(ep: &Endpoint) -> StatusReport {
    let text = client::get_as(ep, "/api/status", None)
        .await
        .expect("status");
    serde_json::from_str(&text).expect("status JSON")
}

/// Samples `name{labels}` → value from a Prometheus text exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_read_and_trace_show_dead_noisy_and_good_meters() {
    let (sim, daemon, _dir) = start(r#"listen = "127.0.0.1:0""#).await;
    let ep = endpoint(&daemon);

    // Wait until the dead meter has degraded and the noisy one has shown a bad checksum.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let r = status(&ep).await;
        let bus = &r.buses[0];
        let dead = bus.meters.iter().find(|m| m.id == "m3").expect("m3");
        let good = bus.meters.iter().filter(|m| m.polls_ok > 0).count();
        let noisy = bus.meters.iter().find(|m| m.id == "m4").expect("m4");
        if dead.state == "degraded" && noisy.checksum_errors > 0 && good >= 3 {
            break r;
        }
        assert!(Instant::now() < deadline, "never settled: {r:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let bus = &report.buses[0];
    let m = |id: &str| bus.meters.iter().find(|m| m.id == id).expect("meter");
    assert_eq!(bus.link, "up");
    assert!(bus.noise_bytes > 0, "noise bytes counted");
    for id in ["m1", "m2"] {
        assert_eq!(m(id).state, "ok", "{id}");
        assert_eq!(m(id).success.today.rate, Some(1.0), "{id}");
        let last = m(id).last_reading.as_ref().expect("last batch kept");
        assert!(last.values.iter().all(|v| v.quality == Quality::Good));
    }
    // The noisy meter carries its own checksum errors; the clean ones none.
    let noisy = m("m4");
    assert!(
        noisy.checksum_errors > 0 && noisy.noise_bytes > 0,
        "{noisy:?}"
    );
    assert_eq!((m("m1").checksum_errors, m("m2").checksum_errors), (0, 0));
    assert!(m("m3").timeouts >= 3);
    let dead = m("m3");
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no reply")
    );
    assert!(dead.consecutive_failures >= 3);
    assert_eq!(dead.success.today.ok, 0);
    assert_eq!(dead.success.today.rate, Some(0.0));
    assert!(dead.last_success.is_none());
    // At a glance: the dead meter never answered, the noisy one answers with errors in the
    // last hour; each has a 24-hour strip and a trend of its power.
    assert_eq!(dead.condition, "never_answered");
    assert_eq!(
        (m("m1").condition.as_str(), noisy.condition.as_str()),
        ("ok", "errors")
    );
    assert!(noisy.last_hour.checksum_errors > 0 && noisy.last_checksum_error_at.is_some());
    assert!(dead.last_hour.timeouts >= 3 && dead.last_timeout_at.is_some());
    for id in ["m1", "m3"] {
        let hourly = m(id).hourly.as_ref().expect("24-hour strip");
        assert_eq!((hourly.polls.len(), hourly.ok.len()), (24, 24));
        let trend = m(id).trend.as_ref().expect("trend");
        assert_eq!(trend.quantity, "power.active.total");
    }
    assert!(
        m("m1")
            .trend
            .as_ref()
            .is_some_and(|t| t.values.iter().all(Option::is_some))
    );
    assert!(
        m("m3")
            .trend
            .as_ref()
            .is_some_and(|t| t.values.iter().all(Option::is_none))
    );
    assert_eq!(
        bus.last_hour.timeouts,
        bus.meters.iter().map(|m| m.last_hour.timeouts).sum::<u64>()
    );
    // Gateway KPI: meters read today / meters.
    let g = &report.gateway.success;
    assert_eq!(g.meters, 4);
    assert_eq!(g.today.meters_read, 3);
    assert_eq!(g.today.rate, Some(0.75));
    assert_eq!(bus.success.today.rate, Some(0.75));

    // /metrics has the same counters as /api/status (compared within one scrape of each,
    // with the bus stopped from moving by reading them back to back and tolerating no drift
    // on counters that the dead meter cannot move).
    let text = client::get_as(&ep, "/metrics", None)
        .await
        .expect("metrics");
    let after = status(&ep).await;
    let s = samples(&text);
    let ab = &after.buses[0];
    let get = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    let tx = get(r#"meterd_bus_transactions_total{bus="rtu"}"#) as u64;
    assert!(tx >= bus.transactions && tx <= ab.transactions);
    let cs = get(r#"meterd_bus_checksum_errors_total{bus="rtu"}"#) as u64;
    assert!(cs >= bus.checksum_errors && cs <= ab.checksum_errors);
    assert_eq!(
        get(r#"meterd_meter_polls_ok_total{bus="rtu",meter="m3"}"#),
        0.0
    );
    assert_eq!(
        get(r#"meterd_meter_state{bus="rtu",meter="m3",state="degraded"}"#),
        1.0
    );
    assert_eq!(
        get(r#"meterd_meter_state{bus="rtu",meter="m1",state="ok"}"#),
        1.0
    );
    assert_eq!(get("meterd_meters"), 4.0);
    let noisy_cs = get(r#"meterd_meter_checksum_errors_total{bus="rtu",meter="m4"}"#) as u64;
    assert!(noisy_cs >= m("m4").checksum_errors && noisy_cs > 0);
    assert_eq!(
        get(r#"meterd_meter_checksum_errors_total{bus="rtu",meter="m1"}"#),
        0.0
    );
    assert_eq!(get("meterd_success_rate_today"), 0.75);

    // One-shot read: a fresh batch through the bus task.
    let asked = std::time::SystemTime::now();
    let text = client::post_json(
        &ep,
        "/api/read",
        r#"{"meter":"m1"}"#.into(),
        Duration::from_secs(20),
    )
    .await
    .expect("read");
    let batch: ReadingBatch = serde_json::from_str(&text).expect("batch");
    assert_eq!(batch.meter, "m1");
    let read_at = humantime::parse_rfc3339(&batch.read_at).expect("read_at");
    assert!(read_at >= asked, "fresh batch");
    assert!(batch.values.iter().any(|v| v.quality == Quality::Good));
    // Unknown meter: 404 with a reason.
    match client::post_json(
        &ep,
        "/api/read",
        r#"{"meter":"nope"}"#.into(),
        Duration::from_secs(5),
    )
    .await
    {
        Err(ClientError::Status(code, reason)) => {
            assert_eq!(code.as_u16(), 404);
            assert!(reason.contains("nope") && reason.contains("m1"), "{reason}");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    // A typo names the closest meters first.
    match client::post_json(
        &ep,
        "/api/read",
        r#"{"meter":"m11"}"#.into(),
        Duration::from_secs(5),
    )
    .await
    {
        Err(ClientError::Status(code, reason)) => {
            assert_eq!(code.as_u16(), 404);
            assert!(
                reason.starts_with("no meter \"m11\" in this daemon; did you mean m1?"),
                "{reason}"
            );
        }
        other => panic!("expected 404, got {other:?}"),
    }

    // Live trace: frames of the asked meter only, both ways, decoded.
    let mut frames = Vec::new();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client::sse(&ep, "/api/trace?meter=m2", |event, data| {
            if event == "frame" {
                frames.push(serde_json::from_str::<serde_json::Value>(data).expect("frame JSON"));
            }
            frames.len() < 4
        }),
    )
    .await;
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    assert!(
        frames
            .iter()
            .all(|f| f["meter"] == "m2" && f["bus"] == "rtu")
    );
    assert!(frames.iter().any(|f| f["direction"] == "tx"));
    assert!(frames.iter().any(|f| f["direction"] == "rx"));
    assert!(
        frames
            .iter()
            .all(|f| !f["decode"].as_str().unwrap_or("").is_empty())
    );

    // The page renders with the status embedded.
    let page = client::get_as(&ep, "/", None).await.expect("page");
    assert!(page.contains("<title>meterd status</title>"));
    assert!(page.contains(r#""id":"m3""#));
    assert!(!page.contains("/*INITIAL_STATUS*/null"));

    daemon.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_address_without_token_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = daemon_toml(
        "127.0.0.1:9".parse().expect("addr"),
        dir.path(),
        r#"listen = "0.0.0.0:0""#,
    );
    let (config, profiles) = Config::from_text(Path::new("<test>"), &text).expect("config");
    match Daemon::start_with(config, profiles, RunOptions::default()).await {
        Err(e @ DaemonError::Service(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("0.0.0.0") && msg.contains("token"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(d) => {
            d.stop().await;
            panic!("started without a token on 0.0.0.0");
        }
    }
    // Nothing was started: the spool file was not even created.
    assert!(!dir.path().join("spool.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_requests_without_it_get_401() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token file");
    let service = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
        token_file.display()
    );
    let (sim, daemon, _d) = start(&service).await;
    let ep = endpoint(&daemon);
    for path in ["/api/status", "/metrics", "/", "/api/trace"] {
        match client::get_as(&ep, path, None).await {
            Err(ClientError::Status(code, _)) => assert_eq!(code.as_u16(), 401, "{path}"),
            other => panic!("{path}: expected 401, got {other:?}"),
        }
        match client::get_as(&ep, path, Some("wrong".into())).await {
            Err(ClientError::Status(code, _)) => assert_eq!(code.as_u16(), 401, "{path}"),
            other => panic!("{path}: expected 401, got {other:?}"),
        }
    }
    let ok = client::get_as(&ep, "/api/status", Some("s3cret-token".into())).await;
    assert!(ok.is_ok(), "{ok:?}");
    let ok = client::get_as(&ep, "/metrics?access_token=s3cret-token", None).await;
    assert!(ok.is_ok(), "{ok:?}");
    daemon.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_client_says_when_no_daemon_runs() {
    let ep = Endpoint::Tcp(format!("127.0.0.1:{}", free_port()));
    match client::get_as(&ep, "/api/status", None).await {
        Err(ClientError::NotRunning(msg)) => assert!(msg.contains("not running"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_gateway_status_with_success_rates_fits_its_schema() {
    use crate::uplink::{GatewayState, GatewayStatus, SpoolSummary};
    use std::time::{Duration, UNIX_EPOCH};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/gateway-status.v1.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("validator");
    let mut book = super::SuccessBook::new([("b", "m1"), ("b", "m2")]);
    let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3600);
    let mut good = ReadingBatch::new("gw", "m1", "modbus-rtu", 0, now);
    good.values.push(crate::reading::ReadingValue {
        quantity: "voltage.l1".into(),
        value: None,
        unit: "V".into(),
        obis: None,
        source: "modbus:fc04:0x0000:f32:abcd".into(),
        quality: Quality::Good,
        reason: None,
        meter_time: None,
    });
    book.record_poll(&good, now);
    let mut s = GatewayStatus::new(
        "gw",
        GatewayState::Online,
        None,
        now,
        now,
        SpoolSummary::default(),
    );
    s.reading_success = Some(crate::uplink::ReadingSuccess::from(&book.group(None, now)));
    let json = serde_json::to_value(&s).expect("JSON");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json}");
    let rs = &json["reading_success"];
    assert_eq!(rs["day"], "2024-10-04");
    assert_eq!(
        (rs["meters"].as_u64(), rs["meters_read_today"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(rs["rate_today"].as_f64(), Some(0.5));
    // Without rates the field is absent (older consumers see the v1 they know).
    s.reading_success = None;
    let json = serde_json::to_value(&s).expect("JSON");
    assert!(json.get("reading_success").is_none());
    assert!(validator.is_valid(&json));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_serves_the_same_status() {
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("status.sock");
    let service = format!(
        "enabled = true\nlisten = \"127.0.0.1:0\"\nunix_socket = \"{}\"",
        sock.display()
    );
    let (sim, daemon, _d) = start(&service).await;
    let ep = Endpoint::Unix(sock.display().to_string());
    let text = client::get_as(&ep, "/api/status", None)
        .await
        .expect("status over the Unix socket");
    let r: StatusReport = serde_json::from_str(&text).expect("JSON");
    assert_eq!(r.gateway.id, "gw-diag");
    assert_eq!(r.buses[0].meters.len(), 4);
    daemon.stop().await;
    sim.shutdown().await;
}

/// The spool's drop counters, kept across restarts, reach `/api/status` (gateway and meter),
/// `/metrics` and `meterd status`: those with a seq (gaps) and those from memory (no seq).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_kept_in_the_spool_are_shown_per_gateway_and_per_meter() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let path = dir.path().join("spool.sqlite");
        let mut spool =
            crate::spool::Spool::open(&path, crate::spool::SpoolOptions::default()).expect("spool");
        spool.note_memory_drops("m1", 3);
        // Commits the noted drops too.
        spool.drop_unstorable("m2", 1 << 30).expect("drop");
    }
    // No meters answer here (nothing listens on port 9): only the counters matter.
    let text = daemon_toml(
        "127.0.0.1:9".parse().expect("addr"),
        dir.path(),
        r#"listen = "127.0.0.1:0""#,
    );
    let (config, profiles) = Config::from_text(Path::new("<test>"), &text).expect("config");
    let daemon = Daemon::start_with(config, profiles, RunOptions::default())
        .await
        .expect("daemon");
    let ep = endpoint(&daemon);
    let report = status(&ep).await;
    assert_eq!(
        (
            report.gateway.spool.dropped,
            report.gateway.spool.dropped_in_memory
        ),
        (1, 3)
    );
    let meter = |id: &str| {
        let m = report.buses[0]
            .meters
            .iter()
            .find(|m| m.id == id)
            .expect("meter");
        (m.dropped, m.dropped_in_memory)
    };
    assert_eq!(meter("m1"), (Some(0), Some(3)));
    assert_eq!(meter("m2"), (Some(1), Some(0)));
    assert_eq!(meter("m3"), (Some(0), Some(0)));
    let table = crate::cli::status::table(&report);
    assert!(table.contains("1 dropped, 3 dropped in memory"), "{table}");
    let metrics = client::get_as(&ep, "/metrics", None)
        .await
        .expect("metrics");
    let s = samples(&metrics);
    assert_eq!(
        s.get("meterd_spool_dropped_in_memory_total"),
        Some(&3.0),
        "{metrics}"
    );
    daemon.stop().await;
}

#[test]
fn fee_control_shows_in_the_status_document_and_the_metrics() {
    use std::sync::{Arc, Mutex};

    use crate::control::view::RelayView;
    use crate::control::{ControlView, MeterControl};
    use crate::service::{Handles, SuccessBook};

    let view = ControlView::new(["m1", "m2"]);
    view.set_last(MeterControl {
        meter: "m1".into(),
        relay: Some(RelayView::from_word(0x10 | 0x40)),
        command_id: Some("c1".into()),
        action: Some("trip".into()),
        outcome: Some("done".into()),
        ..MeterControl::default()
    });
    view.count("trip", "done");
    view.count("trip", "rejected");
    view.count("trip", "rejected");
    let mqtt = crate::config::MqttConfig {
        url: "mqtt://127.0.0.1:1".into(),
        ..crate::config::MqttConfig::default()
    };
    let (_up, uplink) =
        crate::uplink::Uplink::new("gw", mqtt, crate::ingest::MemoryOutbox::new()).unwrap();
    let (frames, _) = tokio::sync::broadcast::channel(1);
    let handles = Handles {
        gateway: "gw".into(),
        started: std::time::SystemTime::now(),
        buses: Vec::new(),
        uplink,
        spool: Arc::new(Default::default),
        book: Arc::new(Mutex::new(SuccessBook::new(std::iter::empty()))),
        frames,
        meter_drops: Arc::new(|_| None),
        completeness: Arc::new(Mutex::new(Default::default())),
        control: Some(view),
    };
    let snap = super::report::Snapshot::take(&handles);
    let doc = serde_json::to_value(snap.report(&handles)).unwrap();
    let c = &doc["gateway"]["control"];
    assert_eq!(c["meters"][0]["meter"], "m1");
    assert_eq!(c["meters"][0]["relay"]["state"], "off");
    assert_eq!(c["meters"][0]["outcome"], "done");
    assert!(c["meters"][1]["relay"].is_null());
    // The CLI's client reads the same document back.
    let back: StatusReport = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(back.gateway.control.unwrap().commands.len(), 2);
    let m = samples(&super::metrics::render(&snap, &handles).unwrap());
    assert_eq!(
        m[r#"meterd_commands_total{action="trip",outcome="rejected"}"#],
        2.0
    );
    assert_eq!(
        m[r#"meterd_commands_total{action="trip",outcome="done"}"#],
        1.0
    );
    assert_eq!(m[r#"meterd_relay_on{meter="m1"}"#], 0.0);
    assert!(
        !m.keys()
            .any(|k| k.contains(r#"meter="m2""#) && k.starts_with("meterd_relay"))
    );
}
