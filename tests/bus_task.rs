//! Bus task tests against a scripted fake meter bus on loopback TCP (raw TCP transport: the
//! same exchange code as a serial port, without pty quirks) and on a pty pair.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use meterd::bus::task::{Bus, BusCommand, BusHandle, BusOptions, spawn};
use meterd::config::{Config, ProfileSet};
use meterd::health::{BusHealth, LinkState, MeterState};
use tokio::sync::{mpsc, oneshot};

const DLT_PROFILE: &str = r#"
name = "t-dlt"
description = "test"
source = "test"
protocol = "dlt645-2007"
[[point]]
di = "00010000"
[[point]]
di = "02010100"
[[point]]
di = "02800002"
"#;

const MB_PROFILE: &str = r#"
name = "t-mb"
description = "test"
source = "test"
protocol = "modbus"
gap_fill = 4
[[point]]
quantity = "voltage.l1"
function = "holding"
register = 10
type = "u16"
scale = "0.1"
unit = "V"
[[point]]
quantity = "current.l1"
function = "holding"
register = 12
type = "u16"
scale = "0.01"
unit = "A"
"#;

/// The test profiles in a directory that is removed when dropped: configs load their profiles
/// when parsed, so it only has to outlive `Config::from_text`.
fn profile_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t-dlt.toml"), DLT_PROFILE).unwrap();
    std::fs::write(dir.path().join("t-mb.toml"), MB_PROFILE).unwrap();
    dir
}

/// A config with one raw-TCP bus per (name, host, timing, meters) entry.
fn config(buses: &[(&str, &str, &str, &str)]) -> (Config, ProfileSet) {
    let profiles = profile_dir();
    let mut text = format!(
        "gateway = \"gw\"\nprofile_dirs = [{:?}]\n",
        profiles.path().display().to_string()
    );
    for (name, host, timing, meters) in buses {
        text.push_str(&format!(
            "[[bus]]\nname = \"{name}\"\ntransport = \"tcp\"\nhost = \"{host}\"\ndegrade_after = 2\nprobe_every = 5\ntiming = {{ {timing} }}\n{meters}\n"
        ));
    }
    Config::from_text(Path::new("/tmp/test.toml"), &text).unwrap()
}

fn dlt_meter(interval: &str) -> String {
    format!(
        "[[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{DLT_ADDR}\"\nprofile = \"t-dlt\"\ninterval = \"{interval}\"\n"
    )
}

fn mb_meter(unit: u8, interval: &str) -> String {
    format!(
        "[[bus.meter]]\nprotocol = \"modbus-rtu\"\nunit = {unit}\nprofile = \"t-mb\"\ninterval = \"{interval}\"\n"
    )
}

const FAST: &str = "response_timeout = \"100ms\", retries = 0, turnaround = \"1ms\"";

/// Bus `i` of `c`, and the health it records into.
fn bus_of(c: &(Config, ProfileSet), i: usize) -> (Bus, Arc<Mutex<BusHealth>>) {
    let health = health_of(c, i);
    let bus = Bus::new(c.0.buses[i].get_ref(), &c.1, BusOptions::new("gw")).unwrap();
    (bus.with_observer(health.clone()), health)
}

fn health_of(c: &(Config, ProfileSet), i: usize) -> Arc<Mutex<BusHealth>> {
    Arc::new(Mutex::new(BusHealth::for_bus(c.0.buses[i].get_ref())))
}

/// The task of the first bus of `c`, sending its batches to `tx`.
fn spawn_first(
    c: &(Config, ProfileSet),
    tx: mpsc::Sender<meterd::reading::ReadingBatch>,
) -> BusHandle<Mutex<BusHealth>> {
    spawn(
        c.0.buses[0].get_ref(),
        &c.1,
        BusOptions::new("gw"),
        tx,
        health_of(c, 0),
    )
    .unwrap()
}

#[tokio::test]
async fn dlt645_and_modbus_meters_share_one_bus() {
    let log = new_log();
    let host = tcp_fake(model(&[3]), log.clone()).await;
    let meters = format!("{}{}", dlt_meter("1m"), mb_meter(3, "1m"));
    let c = config(&[("a", &host, FAST, &meters)]);
    let (mut bus, health) = bus_of(&c, 0);
    bus.connect().await.unwrap();

    let b = bus.read_now(DLT_ADDR).await.unwrap();
    assert_eq!(b.protocol, "dlt645-2007");
    assert_eq!(b.seq, 0, "the spool numbers batches");
    let v = values(&b);
    assert_eq!(v["energy.active.import.total"].0, "12345.67");
    assert_eq!(v["voltage.l1"].0, "229.8");
    assert_eq!(v["frequency"].1, "meter error 02: no requested data");
    assert_eq!(b.frames.len(), 3, "one evidence frame per reply");
    assert!(
        b.frames[0].starts_with("68 29 25 07 07 21 20 68 91"),
        "{:?}",
        b.frames
    );

    let b = bus.read_now("a-unit3").await.unwrap();
    let v = values(&b);
    // Registers 10..12 hold 10, 11, 12: one coalesced read FC03 10+3.
    assert_eq!(v["voltage.l1"].0, "1.0");
    assert_eq!(v["current.l1"].0, "0.12");
    assert_eq!(b.frames.len(), 1);
    assert_eq!(b.frames[0], "03 03 06 00 0A 00 0B 00 0C D1 D3");

    let s = health.clone();
    let s = s.lock().unwrap();
    assert_eq!(s.transactions, 4);
    assert_eq!(s.timeouts, 0);
    assert_eq!(s.link, LinkState::Up);
    assert_eq!(s.meters[0].polls_ok, 1);
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_dead_meter_gives_bad_values_degrades_and_is_probed_less_often() {
    let log = new_log();
    // Unit 3 answers, unit 9 never does.
    let host = tcp_fake(model(&[3]), log.clone()).await;
    let meters = format!("{}{}", mb_meter(9, "200ms"), mb_meter(3, "200ms"));
    let c = config(&[("a", &host, FAST, &meters)]);
    let (tx, mut rx) = mpsc::channel(64);
    let h = spawn_first(&c, tx);

    let mut dead = Vec::new();
    let mut live = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(2600);
    while let Ok(Some(b)) = tokio::time::timeout_at(until, rx.recv()).await {
        if b.meter == "a-unit9" {
            dead.push(b);
        } else {
            live += 1;
        }
    }
    // 13 slots of 200 ms: the dead meter is read twice (then degraded), then every 5th slot.
    assert!((3..=5).contains(&dead.len()), "dead polls: {}", dead.len());
    assert!(live >= 10, "the live meter keeps its slots: {live}");
    let v = values(&dead[0]);
    assert_eq!(v.len(), 2, "nothing dropped");
    assert_eq!(
        v["voltage.l1"],
        ("null".into(), "no reply within 100ms".into())
    );
    let s = h.status.lock().unwrap().clone();
    assert_eq!(s.meters[0].state, MeterState::Degraded);
    assert_eq!(s.meters[1].state, MeterState::Ok);
    assert!(s.meters[0].consecutive_failures >= 2);
    assert_eq!(
        s.meters[0].last_error.as_deref(),
        Some("no reply within 100ms")
    );
    h.task.abort();
}

#[tokio::test]
async fn a_late_reply_is_never_taken_as_the_next_answer() {
    let log = new_log();
    // The second request (voltage) is answered 180 ms late; the timeout is 100 ms. Without the
    // guard, that reply (same meter, same function) would arrive while the frequency read
    // waits. (Not the first request: a meter silent to the first is not asked the rest.)
    let script: Script = Arc::new(|req, _, n| {
        let reply = model_reply(req, &[]).unwrap_or_default();
        if n == 1 {
            vec![Act::Wait(Duration::from_millis(180)), Act::Send(reply)]
        } else {
            // Answer the later requests after 30 ms, so the late reply would come first.
            vec![Act::Wait(Duration::from_millis(30)), Act::Send(reply)]
        }
    });
    let host = tcp_fake(script, log.clone()).await;
    let timing = format!("{FAST}, late_reply_guard = \"200ms\"");
    let c = config(&[("a", &host, &timing, &dlt_meter("1m"))]);
    let (mut bus, health) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let b = bus.read_now(DLT_ADDR).await.unwrap();
    let v = values(&b);
    assert_eq!(v["energy.active.import.total"].0, "12345.67", "{v:?}");
    assert_eq!(v["voltage.l1"].1, "no reply within 100ms");
    assert_eq!(v["frequency"].1, "meter error 02: no requested data");
    let s = health.lock().unwrap().clone();
    assert!(
        s.wire.stale_bytes > 0,
        "the late reply was discarded: {s:?}"
    );
}

#[tokio::test]
async fn without_the_guard_the_late_reply_is_skipped_by_its_di() {
    // The guard set to zero: the late reply (to the voltage read) reaches the next exchange,
    // which sees that it is about another DI, skips it as foreign and waits on for the real
    // answer (the meter's error reply about frequency).
    let script: Script = Arc::new(|req, _, n| {
        let reply = model_reply(req, &[]).unwrap_or_default();
        if n == 1 {
            vec![Act::Wait(Duration::from_millis(130)), Act::Send(reply)]
        } else {
            vec![Act::Wait(Duration::from_millis(60)), Act::Send(reply)]
        }
    });
    let host = tcp_fake(script, new_log()).await;
    let timing = format!("{FAST}, late_reply_guard = \"0ms\"");
    let c = config(&[("a", &host, &timing, &dlt_meter("1m"))]);
    let (mut bus, health) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let b = bus.read_now(DLT_ADDR).await.unwrap();
    let v = values(&b);
    assert_eq!(v["voltage.l1"].1, "no reply within 100ms", "{v:?}");
    assert_eq!(v["frequency"].1, "meter error 02: no requested data");
    let s = health.lock().unwrap().clone();
    assert!(
        s.wire.foreign_frames >= 1,
        "the late reply was skipped as foreign: {s:?}"
    );
}

#[tokio::test]
async fn noise_and_a_corrupted_frame_are_skipped_and_counted() {
    let script: Script = Arc::new(|req, _, _| {
        let good = model_reply(req, &[3]).unwrap_or_default();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF; // CRC broken
        vec![
            Act::Send(vec![0x00, 0x55, 0xFF]),
            Act::Send(bad),
            Act::Send(good),
        ]
    });
    let host = tcp_fake(script, new_log()).await;
    let c = config(&[("a", &host, FAST, &mb_meter(3, "1m"))]);
    let (mut bus, health) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let v = values(&bus.read_now("a-unit3").await.unwrap());
    assert_eq!(v["voltage.l1"].0, "1.0");
    let s = health.lock().unwrap().clone();
    assert!(s.wire.noise_bytes >= 3, "{:?}", s.wire);
    assert!(s.wire.checksum_errors >= 1, "{:?}", s.wire);
}

#[tokio::test]
async fn an_echoing_adapter_is_handled() {
    let script: Script = Arc::new(|req, raw, _| {
        let reply = model_reply(req, &[]).unwrap_or_default();
        vec![Act::Send(raw.to_vec()), Act::Send(reply)]
    });
    let host = tcp_fake(script, new_log()).await;
    let timing = format!("{FAST}, echo = true, preamble = 0");
    let c = config(&[("a", &host, &timing, &dlt_meter("1m"))]);
    let (mut bus, health) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let v = values(&bus.read_now(DLT_ADDR).await.unwrap());
    assert_eq!(v["energy.active.import.total"].0, "12345.67");
    let s = health.lock().unwrap().clone();
    assert_eq!(s.wire.echo_bytes, 3 * 16, "three 16-byte requests echoed");
}

#[tokio::test]
async fn a_dead_meter_on_bus_a_does_not_slow_bus_b() {
    let host_a = tcp_fake(model(&[]), new_log()).await;
    let host_b = tcp_fake(model(&[3]), new_log()).await;
    let slow = "response_timeout = \"700ms\", retries = 1, turnaround = \"1ms\"";
    let c = config(&[
        ("a", &host_a, slow, &mb_meter(9, "200ms")),
        ("b", &host_b, FAST, &mb_meter(3, "200ms")),
    ]);
    let (tx, mut rx) = mpsc::channel(64);
    let ha = spawn(
        c.0.buses[0].get_ref(),
        &c.1,
        BusOptions::new("gw"),
        tx.clone(),
        health_of(&c, 0),
    )
    .unwrap();
    let hb = spawn(
        c.0.buses[1].get_ref(),
        &c.1,
        BusOptions::new("gw"),
        tx,
        health_of(&c, 1),
    )
    .unwrap();
    let mut b_count = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(b)) = tokio::time::timeout_at(until, rx.recv()).await {
        if b.meter == "b-unit3" {
            b_count += 1;
            assert_eq!(values(&b)["voltage.l1"].0, "1.0");
        }
    }
    // 1.5 s of 200 ms slots: 7 or 8 polls on B whatever A's 1.4 s dead-meter budget does.
    assert!(b_count >= 6, "bus B polled {b_count} times");
    let sa = ha.status.lock().unwrap().clone();
    assert_eq!(
        sa.retries,
        sa.timeouts / 2,
        "one retry per failed transaction"
    );
    ha.task.abort();
    hb.task.abort();
}

#[tokio::test]
async fn a_dead_link_is_reported_and_reopened() {
    // A port nobody listens on: find a free one and release it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = l.local_addr().unwrap().to_string();
    drop(l);
    let c = config(&[("a", &host, FAST, &mb_meter(3, "1m"))]);
    let mut opts = BusOptions::new("gw");
    opts.reopen_min = Duration::from_millis(50);
    let (tx, _rx) = mpsc::channel(64);
    let h = spawn(c.0.buses[0].get_ref(), &c.1, opts, tx, health_of(&c, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    {
        let s = h.status.lock().unwrap();
        assert!(
            matches!(&s.link, LinkState::Down(r) if r.contains("cannot connect")),
            "{:?}",
            s.link
        );
        assert_eq!(s.meters[0].state, MeterState::Unreachable);
    }
    // A one-shot read while the link is down answers with bad values, not a hang.
    let (rtx, rrx) = oneshot::channel();
    h.commands
        .send(BusCommand::ReadNow {
            meter: "a-unit3".into(),
            reply: rtx,
        })
        .await
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(2), rrx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        values(&b)["voltage.l1"].1.contains("cannot connect"),
        "{b:?}"
    );
    // The device server comes back: the next read reopens the link.
    let listener = tokio::net::TcpListener::bind(&host).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, model(&[3]), new_log()));
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rtx, rrx) = oneshot::channel();
    h.commands
        .send(BusCommand::ReadNow {
            meter: "a-unit3".into(),
            reply: rtx,
        })
        .await
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(2), rrx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(values(&b)["voltage.l1"].0, "1.0", "{b:?}");
    let s = h.status.lock().unwrap().clone();
    assert_eq!(s.link, LinkState::Up);
    assert!(s.reopens >= 1);
    h.task.abort();
}

#[tokio::test]
async fn a_serial_bus_on_a_pty_pair() {
    let Some((master, path)) = pty() else { return };
    let log = new_log();
    tokio::spawn(serve(master, model(&[3]), log.clone()));
    let profiles = profile_dir();
    let text = format!(
        "gateway = \"gw\"\nprofile_dirs = [{:?}]\n[[bus]]\nname = \"s\"\ntransport = \"serial\"\nport = \"{path}\"\nbaud = 9600\nparity = \"none\"\ntiming = {{ {FAST} }}\n{}{}",
        profiles.path().display().to_string(),
        dlt_meter("1m"),
        mb_meter(3, "1m")
    );
    let c = Config::from_text(Path::new("/tmp/t.toml"), &text).unwrap();
    let (mut bus, _) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let v = values(&bus.read_now(DLT_ADDR).await.unwrap());
    assert_eq!(v["energy.active.import.total"].0, "12345.67");
    let v = values(&bus.read_now("s-unit3").await.unwrap());
    assert_eq!(v["current.l1"].0, "0.12");
    // A second owner of the port is refused: the port is busy.
    let (mut again, _) = bus_of(&c, 0);
    let err = again.connect().await.unwrap_err();
    assert!(err.contains("busy"), "{err}");
}

/// A Modbus TCP device: unit 3 answers register `a` with `a`, unit 4 answers exception 02,
/// other units stay silent.
async fn mbap_fake() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut h = [0u8; 7];
                    if s.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
                    let mut pdu = vec![0u8; len - 1];
                    if s.read_exact(&mut pdu).await.is_err() {
                        return;
                    }
                    let (fc, a, n) = (
                        pdu[0],
                        u16::from_be_bytes([pdu[1], pdu[2]]),
                        u16::from_be_bytes([pdu[3], pdu[4]]),
                    );
                    let reply: Vec<u8> = match h[6] {
                        3 => {
                            let mut r = vec![fc, (n * 2) as u8];
                            for i in 0..n {
                                r.extend_from_slice(&(a + i).to_be_bytes());
                            }
                            r
                        }
                        4 => vec![fc | 0x80, 2],
                        _ => continue,
                    };
                    let mut out = vec![h[0], h[1], 0, 0];
                    out.extend_from_slice(&((reply.len() + 1) as u16).to_be_bytes());
                    out.push(h[6]);
                    out.extend_from_slice(&reply);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_modbus_tcp_bus_reads_with_evidence_and_survives_a_silent_unit() {
    let host = mbap_fake().await;
    let meters = [3u8, 4, 9, 3]
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!(
                "[[bus.meter]]\nid = \"m{i}\"\nprotocol = \"modbus-tcp\"\nunit = {u}\nprofile = \"t-mb\"\n"
            )
        })
        .collect::<String>();
    let profiles = profile_dir();
    let text = format!(
        "gateway = \"gw\"\nprofile_dirs = [{:?}]\n[[bus]]\nname = \"lan\"\ntransport = \"modbus-tcp\"\nhost = \"{host}\"\ntiming = {{ {FAST} }}\n{meters}",
        profiles.path().display().to_string()
    );
    let c = Config::from_text(Path::new("/tmp/t.toml"), &text).unwrap();
    let (mut bus, _) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    let b = bus.read_now("m0").await.unwrap();
    assert_eq!(b.protocol, "modbus-tcp");
    assert_eq!(values(&b)["current.l1"].0, "0.12");
    // The evidence is the real MBAP response: transaction id, protocol 0, length 9, unit 3.
    assert!(
        b.frames[0].ends_with("00 00 00 09 03 03 06 00 0A 00 0B 00 0C"),
        "{:?}",
        b.frames
    );
    let v = values(&bus.read_now("m1").await.unwrap());
    assert_eq!(v["voltage.l1"].1, "exception 02 illegal data address");
    let v = values(&bus.read_now("m2").await.unwrap());
    assert_eq!(v["voltage.l1"].1, "no reply within 100ms");
    // After the timeout the connection is replaced: no stale reply can answer this read.
    let v = values(&bus.read_now("m3").await.unwrap());
    assert_eq!(v["voltage.l1"].0, "1.0");
}

#[tokio::test]
async fn gateway_turnaround_beyond_the_required_silence_is_small() {
    // The fake answers at once and notes when each request arrived: the gap between two
    // requests is the reply's trip plus the gateway's turnaround (20 ms here) plus overhead.
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t2 = times.clone();
    let script: Script = Arc::new(move |req, _, _| {
        t2.lock().unwrap().push(std::time::Instant::now());
        model_reply(req, &[3]).map(Act::Send).into_iter().collect()
    });
    let host = tcp_fake(script, new_log()).await;
    let timing = "response_timeout = \"200ms\", retries = 0, turnaround = \"20ms\"";
    let c = config(&[("a", &host, timing, &dlt_meter("1m"))]);
    let (mut bus, _) = bus_of(&c, 0);
    bus.connect().await.unwrap();
    for _ in 0..40 {
        bus.read_now(DLT_ADDR).await.unwrap();
    }
    let t = times.lock().unwrap();
    let mut extra: Vec<f64> = t
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0 - 20.0)
        .collect();
    extra.sort_by(f64::total_cmp);
    let p50 = extra[extra.len() / 2];
    let p99 = extra[extra.len() * 99 / 100];
    println!(
        "turnaround beyond the 20 ms silence over {} gaps: p50 {p50:.3} ms, p99 {p99:.3} ms",
        extra.len()
    );
    assert!(extra[0] >= -0.5, "the silence is kept: {}", extra[0]);
    // The design target (p99 ≤ 2 ms) is for the box under no other load; a shared CI machine
    // only gets a loose check of the median. Run with --nocapture to see the figures.
    assert!(p50 < 10.0, "p50 {p50:.3} ms (p99 {p99:.3} ms)");
}

/// A one-shot read: queues it (waiting while the queue is full) and waits for its batch.
async fn read_once(commands: &mpsc::Sender<BusCommand>, meter: &str) -> Option<()> {
    let (tx, rx) = oneshot::channel();
    commands
        .send(BusCommand::ReadNow {
            meter: meter.into(),
            reply: tx,
        })
        .await
        .ok()?;
    rx.await.ok()?.ok().map(|_| ())
}

/// Issue "no lock-up", item 8: clients reading in a loop used to be drained before any
/// scheduled poll, and scheduled polling stopped. Now a due poll goes first and at most one
/// one-shot read is served between two turns of the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_reads_in_a_loop_do_not_starve_scheduled_polls() {
    // Each reply takes 5 ms, so a one-shot read costs the bus about as much as a poll.
    let script: Script = Arc::new(|req, _, _| {
        let reply = model_reply(req, &[3, 4, 5]).unwrap_or_default();
        vec![Act::Wait(Duration::from_millis(5)), Act::Send(reply)]
    });
    let host = tcp_fake(script, new_log()).await;
    let meters = format!(
        "{}{}{}",
        mb_meter(3, "100ms"),
        mb_meter(4, "100ms"),
        mb_meter(5, "100ms")
    );
    // A bus with room for its polls (a transaction takes about 7 ms; 30 polls a second).
    let timing = format!("{FAST}, modbus_silence = \"1ms\"");
    let c = config(&[("a", &host, &timing, &meters)]);
    let (tx, mut rx) = mpsc::channel(64);
    let h = spawn_first(&c, tx);
    // Let the first slot pass, then four clients read as fast as they are answered.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let start_overruns = h.status.lock().unwrap().overruns;
    while rx.try_recv().is_ok() {}
    // The issue's figure: four clients for 60 s.
    let flood = Duration::from_secs(60);
    let until = tokio::time::Instant::now() + flood;
    let mut clients = Vec::new();
    for i in 0..4 {
        let commands = h.commands.clone();
        let meter = format!("a-unit{}", 3 + i % 3);
        clients.push(tokio::spawn(async move {
            let mut served = 0u32;
            while tokio::time::Instant::now() < until {
                if read_once(&commands, &meter).await.is_some() {
                    served += 1;
                }
            }
            served
        }));
    }
    let mut polls = 0u64;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, rx.recv()).await {
        polls += 1;
    }
    let mut one_shots = 0;
    for c in clients {
        one_shots += c.await.unwrap();
    }
    let overruns = h.status.lock().unwrap().overruns - start_overruns;
    // 3 meters × 600 slots of 100 ms.
    let slots = 3 * flood.as_millis() as u64 / 100;
    println!(
        "{polls} scheduled polls in {slots} slots, {overruns} skipped; {one_shots} one-shot reads"
    );
    assert!(
        overruns * 100 <= polls + overruns,
        "≥ 99 % of scheduled polls in their slot: {overruns} slots skipped, {polls} polled"
    );
    assert!(polls + 3 >= slots, "{polls} polls in {slots} slots");
    assert!(one_shots >= 400, "the clients are served too: {one_shots}");
    h.task.abort();
}

/// A one-shot read whose client has gone (the HTTP request timed out, the CLI was stopped) is
/// skipped: it never reaches the wire.
#[tokio::test]
async fn abandoned_one_shot_reads_are_skipped() {
    let log = new_log();
    // The bus is busy: every reply takes 200 ms.
    let script: Script = Arc::new(|req, _, _| {
        let reply = model_reply(req, &[3]).unwrap_or_default();
        vec![Act::Wait(Duration::from_millis(200)), Act::Send(reply)]
    });
    let host = tcp_fake(script, log.clone()).await;
    let timing = "response_timeout = \"500ms\", retries = 0, turnaround = \"1ms\"";
    let c = config(&[("a", &host, timing, &mb_meter(3, "1h"))]);
    let (tx, _rx) = mpsc::channel(64);
    let h = spawn_first(&c, tx);
    // While the first scheduled poll runs, five clients queue a read and give up.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        let (rtx, rrx) = oneshot::channel();
        h.commands
            .send(BusCommand::ReadNow {
                meter: "a-unit3".into(),
                reply: rtx,
            })
            .await
            .unwrap();
        drop(rrx);
    }
    // One client waits.
    tokio::time::timeout(Duration::from_secs(3), read_once(&h.commands, "a-unit3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        2,
        "the scheduled poll and the one read still wanted; none of the abandoned ones"
    );
    h.task.abort();
}

/// Stop used to be a command: with the queue full of one-shot reads `try_send(Stop)` failed,
/// and the daemon aborted the bus in the middle of a poll. Now it is a flag of its own.
#[tokio::test]
async fn stop_arrives_while_the_command_queue_is_full() {
    let log = new_log();
    let script: Script = Arc::new(|req, _, _| {
        let reply = model_reply(req, &[3]).unwrap_or_default();
        vec![Act::Wait(Duration::from_millis(300)), Act::Send(reply)]
    });
    let host = tcp_fake(script, log.clone()).await;
    let timing = "response_timeout = \"1s\", retries = 0, turnaround = \"1ms\"";
    let c = config(&[("a", &host, timing, &mb_meter(3, "1h"))]);
    let (tx, mut rx) = mpsc::channel(64);
    let h = spawn_first(&c, tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The first poll is on the wire; fill the queue with reads whose clients wait.
    let mut waiting = Vec::new();
    loop {
        let (rtx, rrx) = oneshot::channel();
        match h.commands.try_send(BusCommand::ReadNow {
            meter: "a-unit3".into(),
            reply: rtx,
        }) {
            Ok(()) => waiting.push(rrx),
            Err(mpsc::error::TrySendError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(waiting.len(), 8, "the queue is full");
    let asked = tokio::time::Instant::now();
    h.stop();
    tokio::time::timeout(Duration::from_secs(2), h.task)
        .await
        .expect("the bus stopped after its poll in progress")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_millis(600));
    // The poll in progress was finished and delivered; nothing queued ran.
    let b = rx.try_recv().expect("the poll in progress was delivered");
    assert_eq!(values(&b)["voltage.l1"].0, "1.0");
    assert_eq!(log.lock().unwrap().len(), 1);
    for w in waiting {
        assert!(
            w.await.is_err(),
            "a queued read is dropped, its client told"
        );
    }
}
