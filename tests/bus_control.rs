//! Fee control end to end below the control room: a bus task polling simulated meters on
//! loopback TCP runs `BusCommand::Control`s, and the simulator's relay state and control log
//! say what reached each meter (and that nothing was sent twice).

use std::path::Path;
use std::time::{Duration, SystemTime};

use meterd::bus::task::{BusCommand, BusHandle, BusOptions, spawn};
use meterd::bus::trace::{Direction, FrameEvent};
use meterd::config::{Config, ProfileSet};
use meterd::health::BusHealth;
use meterd::meter::control::{
    ControlCredentials, ControlOutcome, ControlRequest, RelayAction, RelayState,
};
use meterd::sim::{SimConfig, SimHandle, Simulator};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

const RELAY: &str = "000000000001";
/// A relay meter whose clock is an hour fast: it judges deadlines by its own clock.
const FAST_CLOCK: &str = "000000000002";
const NO_RELAY: &str = "000000000003";
const OLD: &str = "000000000004";
/// A relay meter that acts on every frame but whose replies never reach the gateway.
const SILENT: &str = "000000000005";

struct Rig {
    _dir: tempfile::TempDir,
    _sim: SimHandle,
    bus: BusHandle<std::sync::Mutex<BusHealth>>,
    log: std::path::PathBuf,
    button: std::path::PathBuf,
    trace: broadcast::Receiver<FrameEvent>,
    _batches: mpsc::Receiver<meterd::reading::ReadingBatch>,
}

async fn rig() -> Rig {
    rig_with("").await
}

/// The rig with one more relay meter, `SILENT`, configured by `sim_keys` (e.g. faults).
async fn rig_with(sim_keys: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("control.jsonl");
    let button = dir.path().join("button");
    let text = format!(
        r#"control_log = {log:?}
[[port]]
name = "p"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "dlt645-2007"
address = "{RELAY}"
profile = "dlt645-single-phase"
relay = {{ password = "123456", operators = ["12345678"], button = {button:?} }}
[[port.meter]]
protocol = "dlt645-2007"
address = "{FAST_CLOCK}"
profile = "dlt645-single-phase"
relay = {{ password = "123456", clock_offset = 3600 }}
[[port.meter]]
protocol = "dlt645-2007"
address = "{NO_RELAY}"
profile = "dlt645-single-phase"
[[port.meter]]
protocol = "dlt645-1997"
address = "{OLD}"
profile = "dlt645-1997-basic"
{silent}"#,
        silent = if sim_keys.is_empty() {
            String::new()
        } else {
            format!(
                "[[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{SILENT}\"\nprofile = \"dlt645-single-phase\"\nrelay = {{ password = \"123456\" }}\n{sim_keys}\n"
            )
        },
        log = log.display().to_string(),
        button = button.display().to_string(),
    );
    let sim = Simulator::start(SimConfig::from_text(Path::new("sim.toml"), &text).unwrap())
        .await
        .unwrap();
    let addr = sim.local_addr("p").unwrap();
    let meter = |a: &str, p: &str, v: &str| {
        format!(
            "[[bus.meter]]\nprotocol = \"{v}\"\naddress = \"{a}\"\nprofile = \"{p}\"\ninterval = \"2s\"\n"
        )
    };
    let cfg = format!(
        "gateway = \"gw\"\n[[bus]]\nname = \"a\"\ntransport = \"tcp\"\nhost = \"{addr}\"\n\
         timing = {{ response_timeout = \"300ms\", retries = 1, turnaround = \"2ms\" }}\n{}{}{}{}{}",
        if sim_keys.is_empty() {
            String::new()
        } else {
            meter(SILENT, "dlt645-single-phase", "dlt645-2007")
        },
        meter(RELAY, "dlt645-single-phase", "dlt645-2007"),
        meter(FAST_CLOCK, "dlt645-single-phase", "dlt645-2007"),
        meter(NO_RELAY, "dlt645-single-phase", "dlt645-2007"),
        meter(OLD, "dlt645-1997-basic", "dlt645-1997"),
    );
    let (config, profiles): (Config, ProfileSet) =
        Config::from_text(Path::new("/tmp/t.toml"), &cfg).unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (frames, trace) = broadcast::channel(65536);
    let mut options = BusOptions::new("gw");
    options.frames = Some(frames);
    let bus_config = config.buses[0].get_ref();
    let health = std::sync::Arc::new(std::sync::Mutex::new(BusHealth::for_bus(bus_config)));
    let bus = spawn(bus_config, &profiles, options, tx, health).unwrap();
    Rig {
        _dir: dir,
        _sim: sim,
        bus,
        log,
        button,
        trace,
        _batches: rx,
    }
}

fn creds(password: [u8; 3]) -> Option<ControlCredentials> {
    Some(ControlCredentials {
        level: 0x02,
        password,
        operator: [0x12, 0x34, 0x56, 0x78],
    })
}

fn req(id: &str, action: RelayAction) -> ControlRequest {
    ControlRequest {
        command_id: id.into(),
        action,
        not_after: SystemTime::now() + Duration::from_secs(600),
        credentials: creds([0x12, 0x34, 0x56]),
        esam: None,
        read_back_for: Duration::from_secs(3),
        read_back_only: false,
    }
}

async fn control(rig: &Rig, meter: &str, request: ControlRequest) -> ControlOutcome {
    let (reply, rx) = oneshot::channel();
    rig.bus
        .commands
        .send(BusCommand::Control {
            meter: meter.into(),
            request,
            reply,
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("an outcome in time")
        .expect("the bus answered")
}

fn log_lines(rig: &Rig) -> Vec<Value> {
    std::fs::read_to_string(&rig.log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn done_state(o: &ControlOutcome) -> (RelayState, RelayState, bool) {
    match o {
        ControlOutcome::Done { relay, .. } => (relay.state, relay.commanded, relay.pre_trip_alarm),
        other => panic!("not done: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_trip_close_allow_button_and_refusals_through_the_simulator() {
    let mut rig = rig().await;
    use RelayState::{Off, On};

    let o = control(&rig, RELAY, req("c1", RelayAction::Alarm)).await;
    assert_eq!(done_state(&o), (On, On, true));
    let o = control(&rig, RELAY, req("c2", RelayAction::Trip)).await;
    assert_eq!(done_state(&o), (Off, Off, false));
    let o = control(&rig, RELAY, req("c3", RelayAction::CloseAllow)).await;
    // Closing allowed: commanded on, the relay still open until the button.
    assert_eq!(done_state(&o), (Off, On, false));
    let o = control(&rig, RELAY, req("c4", RelayAction::ReadRelay)).await;
    assert_eq!(done_state(&o).0, Off);
    std::fs::write(&rig.button, b"").unwrap();
    let o = control(&rig, RELAY, req("c5", RelayAction::ReadRelay)).await;
    assert_eq!(done_state(&o), (On, On, false));

    // A wrong password: refused with ERR 04, sent once, the relay read for the record.
    let mut wrong = req("c6", RelayAction::Trip);
    wrong.credentials = creds([0x65, 0x43, 0x21]);
    let ControlOutcome::Failed {
        reason,
        error_byte,
        relay,
        frames,
    } = control(&rig, RELAY, wrong).await
    else {
        panic!("a wrong password was not refused");
    };
    assert_eq!(error_byte, Some(0x04), "{reason}");
    assert_eq!(relay.map(|r| r.state), Some(On));
    assert_eq!(frames.len(), 4, "1C + DC + status read + reply");
    assert!(
        frames.iter().all(|f| !f.hex.contains("54 76 98")),
        "the password is redacted in the record"
    );

    // A meter whose clock is an hour ahead finds a 10-minute deadline past: ERR 01.
    let o = control(&rig, FAST_CLOCK, req("c7", RelayAction::Trip)).await;
    assert!(
        matches!(
            o,
            ControlOutcome::Failed {
                error_byte: Some(0x01),
                ..
            }
        ),
        "{o:?}"
    );
    // A meter without remote control refuses as unauthorised.
    let o = control(&rig, NO_RELAY, req("c8", RelayAction::Trip)).await;
    assert!(
        matches!(
            o,
            ControlOutcome::Failed {
                error_byte: Some(0x04),
                ..
            }
        ),
        "{o:?}"
    );
    // 1997: refused by the gateway, nothing sent; an unknown meter likewise.
    for m in [OLD, "999999999990"] {
        let ControlOutcome::Failed { frames, reason, .. } =
            control(&rig, m, req("c9", RelayAction::Close)).await
        else {
            panic!("not refused");
        };
        assert!(frames.is_empty(), "{reason}");
    }

    // The control log: exactly one frame per command sent, in order, nothing twice.
    let lines = log_lines(&rig);
    let seen: Vec<(String, String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["meter"].as_str().unwrap().to_owned(),
                l["action"].as_str().unwrap().to_owned(),
                l["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    let s = |m: &str, a: &str, ok| (m.to_owned(), a.to_owned(), ok);
    assert_eq!(
        seen,
        vec![
            s(RELAY, "alarm", true),
            s(RELAY, "trip", true),
            s(RELAY, "close_allow", true),
            s(RELAY, "trip", false),
            s(FAST_CLOCK, "trip", false),
        ],
        "{lines:#?}"
    );
    assert_eq!(lines[1]["after"]["position"], "off");
    assert_eq!(lines[2]["after"]["position"], "close_allowed");
    assert_eq!(lines[3]["error"], "04");
    assert_eq!(lines[4]["error"], "01");
    // The deadline the meter read is not_after in +08:00 (the meter's zone).
    assert!(lines[0]["deadline"].as_str().unwrap().starts_with("20"));

    // The trace showed the control frames, credentials zeroed.
    let mut tx_control = 0;
    loop {
        let e = match rig.trace.try_recv() {
            Ok(e) => e,
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        let fe = e.bytes.iter().take_while(|b| **b == 0xFE).count();
        let frame = &e.bytes[fe..];
        if e.direction == Direction::Tx && frame.get(8) == Some(&0x1C) {
            tx_control += 1;
            // P0..P2 and C0..C3 are 00 + 33H, and the trace says so.
            assert_eq!(
                frame.get(11..18),
                Some(&[0x33u8; 7][..]),
                "{:02X?}",
                e.bytes
            );
            assert!(e.note.contains("redacted"), "{}", e.note);
        }
    }
    assert!(tx_control >= 5, "{tx_control}");
    rig.bus.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_client_has_gone_is_never_sent() {
    let rig = rig().await;
    // Keep the bus busy with a command, then queue one and drop its receiver.
    let (reply, rx) = oneshot::channel();
    drop(rx);
    rig.bus
        .commands
        .send(BusCommand::Control {
            meter: RELAY.into(),
            request: req("gone", RelayAction::Trip),
            reply,
        })
        .await
        .unwrap();
    let o = control(&rig, RELAY, req("kept", RelayAction::Alarm)).await;
    assert!(matches!(o, ControlOutcome::Done { .. }));
    let lines = log_lines(&rig);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["action"], "alarm");
    rig.bus.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_goes_ahead_of_queued_one_shot_reads() {
    let rig = rig().await;
    // Trip first, so that the close has something to do.
    let o = control(&rig, RELAY, req("t", RelayAction::Trip)).await;
    assert!(matches!(o, ControlOutcome::Done { .. }));
    let started = tokio::time::Instant::now();
    let mut reads = Vec::new();
    for _ in 0..4 {
        let (reply, rx) = oneshot::channel();
        rig.bus
            .commands
            .send(BusCommand::ReadNow {
                meter: NO_RELAY.into(),
                reply,
            })
            .await
            .unwrap();
        reads.push(rx);
    }
    let close = control(&rig, RELAY, req("close", RelayAction::Close));
    let close_done = async {
        let o = close.await;
        (o, started.elapsed())
    };
    let reads_done = async {
        let mut at = Vec::new();
        for rx in reads {
            let _ = rx.await;
            at.push(started.elapsed());
        }
        at
    };
    let ((o, close_at), read_at) = tokio::join!(close_done, reads_done);
    assert_eq!(done_state(&o).0, RelayState::On);
    // At most the read in progress when the close arrived went first.
    let before = read_at.iter().filter(|t| **t < close_at).count();
    assert!(
        before <= 1,
        "{before} reads before the close: {read_at:?} vs {close_at:?}"
    );
    rig.bus.stop();
}

/// Reconnect latency on a busy bus: 32 DL/T 645-2007 meters (9 reads each) polled every 60 s
/// on a simulated 2400 8E1 line with wire time (about 58 s of wire per cycle), one of them
/// with a relay. Each round trips it, then measures from sending `close` to the bus's `done`
/// (the read-back showing the relay on). `METERD_RECONNECT_ROUNDS` rounds (default 30).
/// Run: `cargo test --release --test bus_control reconnect_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 3 minutes)"]
async fn reconnect_latency_on_a_busy_2400_baud_bus() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = String::from(
        "[[port]]\nname = \"p\"\ntcp = \"127.0.0.1:0\"\nbaud = 2400\nparity = \"even\"\nwire_time = true\nreply_latency = \"20ms\"\n",
    );
    let mut bus = String::new();
    for i in 1..=32 {
        let a = format!("{i:012}");
        sim.push_str(&format!(
            "[[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{a}\"\nprofile = \"dlt645-single-phase\"\n{}",
            if i == 1 { "relay = { password = \"123456\" }\n" } else { "" }
        ));
        bus.push_str(&format!(
            "[[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{a}\"\nprofile = \"dlt645-single-phase\"\ninterval = \"60s\"\n"
        ));
    }
    let sim = Simulator::start(SimConfig::from_text(Path::new("sim.toml"), &sim).unwrap())
        .await
        .unwrap();
    let addr = sim.local_addr("p").unwrap();
    let cfg = format!(
        "gateway = \"gw\"\n[[bus]]\nname = \"a\"\ntransport = \"tcp\"\nhost = \"{addr}\"\nbaud = 2400\nparity = \"even\"\n\
         timing = {{ response_timeout = \"500ms\", retries = 1 }}\n{bus}"
    );
    let (config, profiles): (Config, ProfileSet) =
        Config::from_text(Path::new("/tmp/t.toml"), &cfg).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let bus_config = config.buses[0].get_ref();
    let health = std::sync::Arc::new(std::sync::Mutex::new(BusHealth::for_bus(bus_config)));
    let handle = spawn(bus_config, &profiles, BusOptions::new("gw"), tx, health).unwrap();
    let send = |request: ControlRequest| {
        let (reply, rx) = oneshot::channel();
        let commands = handle.commands.clone();
        async move {
            commands
                .send(BusCommand::Control {
                    meter: "000000000001".into(),
                    request,
                    reply,
                })
                .await
                .unwrap();
            rx.await.unwrap()
        }
    };
    let rounds: usize = std::env::var("METERD_RECONNECT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut latencies = Vec::new();
    for i in 0..rounds {
        let o = send(req(&format!("t{i}"), RelayAction::Trip)).await;
        assert!(matches!(o, ControlOutcome::Done { .. }), "{o:?}");
        // Land the close at a different point of the poll cycle each round.
        tokio::time::sleep(Duration::from_millis(137 * (i as u64 % 13))).await;
        let started = tokio::time::Instant::now();
        let o = send(req(&format!("c{i}"), RelayAction::Close)).await;
        let took = started.elapsed();
        assert_eq!(done_state(&o).0, RelayState::On);
        latencies.push(took);
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "reconnect latency over {rounds} closes (command to read-back showing on): p50 {:?}, p99 {:?}, max {:?}",
        pick(0.5),
        pick(0.99),
        latencies.last().unwrap()
    );
    assert!(pick(0.99) <= Duration::from_secs(5));
    handle.stop();
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_never_answers_gets_one_resend_and_an_unknown_outcome() {
    let rig = rig_with("faults = { no_reply = { every = 1 } }").await;
    let mut request = req("lost", RelayAction::Trip);
    request.read_back_for = Duration::from_secs(2);
    let ControlOutcome::Unknown {
        reason,
        relay,
        frames,
    } = control(&rig, SILENT, request).await
    else {
        panic!("expected unknown");
    };
    assert!(reason.contains("sent twice"), "{reason}");
    assert_eq!(relay, None);
    // Two 1C sends, then status reads (one a second for 2 s, between polls), none answered.
    let sent_1c = frames
        .iter()
        .filter(|f| f.sent && f.hex.contains(" 68 1C "))
        .count();
    assert_eq!(sent_1c, 2, "{frames:#?}");
    assert!(frames.iter().all(|f| f.sent));
    assert!(
        frames.len() > 2,
        "at least one status read: {}",
        frames.len()
    );
    // The meter heard both, acted on the first (the trip is what it is), and replied to none.
    let lines: Vec<Value> = log_lines(&rig)
        .into_iter()
        .filter(|l| l["meter"] == SILENT)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["replied"] == false && l["action"] == "trip")
    );
    assert_eq!(lines[0]["after"]["position"], "off");
    rig.bus.stop();
}
