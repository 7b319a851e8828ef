//! The technician's day (issue 17), through the built binary: Modbus TCP frames decoded as
//! MBAP everywhere frames are shown, mistakes refused with a reason and a non-zero exit
//! instead of being silently accepted, hints for typos, collisions and echoing adapters, and
//! the demo's status page on a free port when the usual one is taken.

mod common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::*;
use meterd::sim::{SimConfig, SimHandle, Simulator};

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The simulator with `toml`, started in-process.
async fn simulator(toml: &str) -> SimHandle {
    let config = SimConfig::from_text(std::path::Path::new("sim.toml"), toml).unwrap();
    Simulator::start(config).await.unwrap()
}

/// Two Modbus TCP meters (units 1 and 2) behind one simulated gateway.
const SIM_MODBUS_TCP: &str = r#"
[[port]]
name = "mb"
modbus_tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
[[port.meter]]
protocol = "modbus-tcp"
unit = 2
profile = "eastron-sdm630"
"#;

/// A configuration polling unit 1 (and 2) of the simulated gateway at `host` every second.
fn modbus_tcp_config(host: &str, extra: &str) -> String {
    format!(
        r#"gateway = "gw-t17"
{extra}
[[bus]]
name = "lan"
transport = "modbus-tcp"
host = "{host}"
timing = {{ response_timeout = "500ms" }}
[[bus.meter]]
id = "sdm-1"
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
interval = "1s"
[[bus.meter]]
id = "sdm-2"
protocol = "modbus-tcp"
unit = 2
profile = "eastron-sdm630"
interval = "1s"
"#
    )
}

/// Trace lines of frames sent or received (`tx`/`rx`), with their decode.
fn frame_lines(t: &str) -> Vec<&str> {
    t.lines()
        .filter(|l| l.contains(" tx ") || l.contains(" rx "))
        .collect()
}

/// The decode of a Modbus TCP trace: MBAP, never "modbus-rtu unknown function 0 [CRC …]".
fn assert_mbap_decoded(t: &str) {
    let frames = frame_lines(t);
    assert!(frames.len() >= 2, "{t}");
    for l in &frames {
        assert!(
            l.contains("| modbus-tcp read input registers 1 tid=")
                || l.contains("| modbus-tcp read input registers 2 tid=")
                || l.contains("| modbus-tcp read holding registers"),
            "{l}\n{t}"
        );
        assert!(!l.contains("modbus-rtu") && !l.contains("CRC"), "{l}");
    }
    assert!(
        frames
            .iter()
            .any(|l| l.contains(" rx ") && l.contains("registers=")),
        "{t}"
    );
}

#[tokio::test]
async fn decode_explains_modbus_tcp_frames() {
    let req = "00 01 00 00 00 06 01 04 00 00 00 02";
    let out = meterd(&["decode", "--protocol", "modbus-tcp", req]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.starts_with(
            "Modbus TCP request: function 04 read input registers, unit 1, transaction 1"
        ),
        "{t}"
    );
    assert!(t.contains("6 bytes follow (unit + PDU): ok"), "{t}");
    assert!(t.contains("2 registers/bits"), "{t}");

    // Detected without --protocol; JSON with the MBAP header and no checksum.
    let out = meterd(&["decode", "--json", "00 07 00 00 00 07 03 04 04 43 66 00 00"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["protocol"], "modbus-tcp", "{j}");
    assert_eq!(j["direction"], "response", "{j}");
    assert_eq!(j["address"], "3", "{j}");
    assert_eq!(
        j["mbap"],
        serde_json::json!({"transaction": 7, "protocol_id": 0, "length": 7, "ok": true})
    );
    assert_eq!(j["checksum"], serde_json::Value::Null, "{j}");

    // A wrong length field: the fields still shown, exit 2 with the reason.
    let out = meterd(&[
        "decode",
        "--protocol",
        "modbus-tcp",
        "00 01 00 00 00 09 01 04 00 00 00 02",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("read input registers"));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd decode: length field says 9 bytes follow (unit + PDU), found 6"
    );
}

#[tokio::test]
async fn trace_config_decodes_modbus_tcp_as_mbap() {
    let sim = simulator(SIM_MODBUS_TCP).await;
    let host = sim.local_addr("mb").unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(&cfg, modbus_tcp_config(&host, "")).unwrap();
    let cfg = cfg.display().to_string();
    let out = meterd(&[
        "trace",
        "--config",
        &cfg,
        "--meter",
        "sdm-1",
        "--duration",
        "2s",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert_mbap_decoded(&t);
    assert!(t.contains("== reading sdm-1: "), "{t}");
}

/// `meterd run` with an embedded broker and its service on a free port; killed on drop.
struct Daemon {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn daemon(host: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let service = free_port();
    let extra = format!(
        "data_dir = {:?}\n[mqtt]\nurl = \"embedded\"\nembedded_listen = \"127.0.0.1:{}\"\n\
         [service]\nlisten = \"127.0.0.1:{service}\"\n",
        dir.path().join("data"),
        free_port()
    );
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(&cfg, modbus_tcp_config(host, &extra)).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        url: format!("http://127.0.0.1:{service}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = meterd(&["status", "--url", &d.url]).await;
        if out.status.success() {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_daemon_commands_name_the_daemon_and_decode_modbus_tcp() {
    let sim = simulator(SIM_MODBUS_TCP).await;
    let host = sim.local_addr("mb").unwrap().to_string();
    let d = daemon(&host).await;

    // `status` says which daemon answered: its address and gateway id.
    let out = meterd(&["status", "--url", &d.url]).await;
    let t = text(&out.stdout);
    assert!(
        t.starts_with(&format!("daemon at {}: gateway gw-t17 (meterd ", d.url)),
        "{t}"
    );

    // The live trace decodes MBAP.
    let out = meterd(&[
        "trace",
        "--daemon",
        "--url",
        &d.url,
        "--meter",
        "sdm-2",
        "--duration",
        "3s",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_mbap_decoded(&text(&out.stdout));

    // An unknown meter or bus: an error listing what the daemon has, not an empty trace.
    let out = meterd(&[
        "trace",
        "--daemon",
        "--url",
        &d.url,
        "--meter",
        "sdm-3",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "meterd trace: no meter \"sdm-3\" in the daemon at {} (gateway gw-t17); did you mean \
             sdm-1 or sdm-2?; known meters: sdm-1, sdm-2",
            d.url
        )
    );
    let out = meterd(&[
        "trace",
        "--daemon",
        "--url",
        &d.url,
        "--bus",
        "lna",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("no bus \"lna\"")
            && err.contains("did you mean lan?")
            && err.contains("known buses: lan"),
        "{err}"
    );
}

#[tokio::test]
async fn a_short_address_is_refused_not_padded() {
    let out = meterd(&[
        "read",
        "--tcp",
        "127.0.0.1:1",
        "--protocol",
        "dlt645-2007",
        "--address",
        "20210707252",
        "--profile",
        "dlt645-single-phase",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd read: --address: a DL/T 645 address is exactly 12 BCD digits (or AA wildcard \
         pairs), as printed on the meter's nameplate; found 11 characters: \"20210707252\""
    );
    let out = meterd(&[
        "scan",
        "--tcp",
        "127.0.0.1:1",
        "--protocol",
        "dlt645-2007",
        "--addresses",
        "202107072529,20210707252",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exactly 12 BCD digits"),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration with one raw-TCP bus to `host` and the fake's two model meters.
fn fake_config(dir: &std::path::Path, host: &str) -> String {
    let cfg = dir.join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"gateway = "gw"
[[bus]]
name = "dtu"
transport = "tcp"
host = "{host}"
timing = {{ response_timeout = "200ms", turnaround = "1ms" }}
[[bus.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "generic-modbus"
[[bus.meter]]
protocol = "dlt645-2007"
address = "{DLT_ADDR}"
profile = "dlt645-single-phase"
"#
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

#[tokio::test]
async fn trace_refuses_an_unknown_meter_or_bus_with_the_known_ones() {
    let host = tcp_fake(model(&[3]), new_log()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fake_config(dir.path(), &host);
    let out = meterd(&[
        "trace",
        "--config",
        &cfg,
        "--meter",
        "20210707252",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "meterd trace: no meter \"20210707252\" in {cfg}; did you mean {DLT_ADDR}?; known \
             meters: dtu-unit3, {DLT_ADDR}"
        )
    );
    let out = meterd(&[
        "trace",
        "--config",
        &cfg,
        "--bus",
        "dut",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("meterd trace: no bus \"dut\" in {cfg}; did you mean dtu?; known buses: dtu")
    );
}

#[tokio::test]
async fn trace_on_a_busy_port_fails_with_the_reason_first() {
    let Some((_master, path)) = pty() else { return };
    // Hold the port the way the daemon does (serialport's exclusive lock).
    let _held = tokio_serial::SerialStream::open(&tokio_serial::new(&path, 9600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"gateway = "gw"
[[bus]]
name = "rs485"
transport = "serial"
port = "{path}"
baud = 9600
parity = "none"
[[bus.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
interval = "1s"
"#
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let out = meterd(&["trace", "--config", &cfg, "--duration", "3s"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(
        err.lines().next().unwrap_or(""),
        format!(
            "meterd trace: bus rs485: {path}: port is busy (another program, or a running meterd, has it open)"
        ),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("values,"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn a_read_with_every_value_bad_fails() {
    let host = tcp_fake(model(&[]), new_log()).await;
    // The fake meter knows no frequency: it answers with error 02 (no requested data).
    let out = meterd(&[
        "read",
        "--tcp",
        &host,
        "--protocol",
        "dlt645-2007",
        "--address",
        DLT_ADDR,
        "--quantity",
        "frequency",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The evidence is still printed.
    assert!(
        text(&out.stdout).contains("1 of 1 values bad"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "meterd read: meter {DLT_ADDR} answered, but every value is bad (first: meter error 02: no requested data)"
        )
    );
}

#[tokio::test]
async fn serial_settings_with_modbus_tcp_are_refused() {
    for cmd in ["read", "scan"] {
        let mut args = vec![
            cmd,
            "--tcp",
            "127.0.0.1:1",
            "--protocol",
            "modbus-tcp",
            "--baud",
            "9600",
            "--parity",
            "none",
        ];
        if cmd == "read" {
            args.extend(["--unit", "1", "--profile", "eastron-sdm630"]);
        }
        let out = meterd(&args).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert_eq!(
            text(&out.stderr).trim_end(),
            format!(
                "meterd {cmd}: --baud, --parity would be ignored: modbus-tcp has no serial line \
                 here (the gateway's own settings decide its serial side); drop them, or give \
                 --protocol modbus-rtu for a serial device server"
            )
        );
    }
}

#[tokio::test]
async fn spool_accepts_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    drop(
        meterd::spool::Spool::open(
            data.join("spool.sqlite"),
            meterd::spool::SpoolOptions::new(1 << 20),
        )
        .unwrap(),
    );
    let data_s = data.display().to_string();
    let out = meterd(&["spool", &data_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "{data_s}/spool.sqlite: 0 readings not yet acknowledged"
        )),
        "{}",
        text(&out.stderr)
    );
    let empty = dir.path().display().to_string();
    let out = meterd(&["spool", &empty]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("a directory without a spool file (spool.sqlite)"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn audit_prints_a_stopped_spools_trail_by_meter_and_as_json() {
    use meterd::spool::commands::{CommandRecord, ResultRecord};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut spool = meterd::spool::Spool::open(
            data.join("spool.sqlite"),
            meterd::spool::SpoolOptions::new(1 << 20),
        )
        .unwrap();
        for (meter, id) in [("m1", "c1"), ("m2", "c2")] {
            let record = CommandRecord {
                command_id: id.into(),
                meter: meter.into(),
                action: "trip".into(),
                key_id: "k".into(),
                received_ms: 1,
                not_after_ms: 2,
                body: "{}".into(),
            };
            spool
                .accept_command(&record, "2026-12-07T08:00:00.000Z")
                .unwrap();
            spool
                .store_command_result(&ResultRecord {
                    meter: meter.into(),
                    command_id: Some(id.into()),
                    id: format!("gw/{meter}/command-result/{id}"),
                    outcome: "done".into(),
                    reason: None,
                    relay_word: Some(0x50),
                    at_ms: 3,
                    at: "2026-12-07T08:00:01.000Z".into(),
                    payload: b"{}".to_vec(),
                    remember: None,
                    audit: vec![(
                        "2026-12-07T08:00:01.000Z".into(),
                        "frame-sent".into(),
                        "68 16".into(),
                    )],
                })
                .unwrap();
        }
    }
    let data_s = data.display().to_string();
    let out = meterd(&["audit", &data_s, "--meter", "m2"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("2026-12-07T08:00:00.000Z m2 c2 accepted {}"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "2026-12-07T08:00:01.000Z m2 c2 frame-sent 68 16");
    let out = meterd(&["audit", &data_s, "--json"]).await;
    let docs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 4);
    assert_eq!(
        (docs[3]["meter"].as_str(), docs[3]["what"].as_str()),
        (Some("m2"), Some("frame-sent"))
    );
    let out = meterd(&["audit", &dir.path().join("nothing").display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_quantity_or_profile_typo_gets_a_suggestion() {
    let base = [
        "read",
        "--tcp",
        "127.0.0.1:1",
        "--protocol",
        "dlt645-2007",
        "--address",
        DLT_ADDR,
    ];
    let mut args = base.to_vec();
    args.extend(["--quantity", "energy.active.import.totl"]);
    let out = meterd(&args).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "meterd read: \"energy.active.import.totl\" is not a known dlt645-2007 quantity; \
             did you mean energy.active.import.total"
        ),
        "{err}"
    );
    let mut args = base.to_vec();
    args.extend(["--profile", "dlt645-single-phse"]);
    let out = meterd(&args).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "meterd read: no profile named \"dlt645-single-phse\"; did you mean dlt645-single-phase"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_wildcard_scan_of_several_meters_suggests_addresses() {
    // Two meters on one line: the simulator, like real meters' colliding replies, gives the
    // wildcard nothing usable.
    let sim = simulator(
        r#"
[[port]]
name = "dlt"
tcp = "127.0.0.1:0"
baud = 2400
wire_time = false
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-single-phase"
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000002"
profile = "dlt645-single-phase"
"#,
    )
    .await;
    let host = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&[
        "scan",
        "--tcp",
        &host,
        "--protocol",
        "dlt645-2007",
        "--timeout",
        "300ms",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "meterd scan: no answer to read-address (AAAAAAAAAAAA) within 300ms: nothing came back. \
             Every meter on the bus answers this probe at once, so with several meters their \
             replies collide; probe the addresses one by one with --addresses FROM-TO"
        ),
        "{err}"
    );
    // Collided replies arrive as garbage.
    let garbage: Script =
        std::sync::Arc::new(|_, _, _| vec![Act::Send(vec![0x68, 0xEF, 0x13, 0x00, 0x91])]);
    let host = tcp_fake(garbage, new_log()).await;
    let out = meterd(&[
        "scan",
        "--tcp",
        &host,
        "--protocol",
        "dlt645-2007",
        "--timeout",
        "300ms",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(": only garbled bytes came back. Every meter"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn trace_names_an_echoing_adapter() {
    let sim = simulator(
        r#"
[[port]]
name = "rtu"
tcp = "127.0.0.1:0"
baud = 9600
wire_time = false
[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
faults = { echo = { every = 1 } }
"#,
    )
    .await;
    let host = sim.local_addr("rtu").unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"gateway = "gw"
[[bus]]
name = "dtu"
transport = "tcp"
host = "{host}"
timing = {{ response_timeout = "300ms", turnaround = "1ms" }}
[[bus.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
interval = "1s"
"#
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let out = meterd(&["trace", "--config", &cfg, "--duration", "2500ms"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    let tx: Vec<&str> = t.lines().filter(|l| l.contains(" tx ")).collect();
    let echoes: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(" rx? ") && l.contains("our own request came back"))
        .collect();
    assert!(!tx.is_empty(), "{t}");
    // One line per echo (the request's bytes, whole), naming the setting to change.
    assert_eq!(echoes.len(), tx.len(), "{t}");
    for (e, x) in echoes.iter().zip(&tx) {
        let sent = x
            .split(" tx ")
            .nth(1)
            .unwrap()
            .split("  |")
            .next()
            .unwrap()
            .trim();
        assert!(
            e.contains(&format!(" rx? {sent}  | skipped: ")),
            "{e} vs {x}"
        );
        assert!(e.contains("set `echo = true`"), "{e}");
    }
    assert!(!t.contains("skipped: noise"), "{t}");
    assert!(
        t.contains("== reading dtu-unit1: ") && t.contains(", 0 bad"),
        "{t}"
    );
}

#[tokio::test]
async fn demo_takes_a_free_port_when_the_status_page_port_is_taken() {
    // Hold the usual address (or find it held already: the demo must cope either way).
    let _held = std::net::TcpListener::bind("127.0.0.1:8745");
    let out = meterd(&["demo", "--duration", "2s"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    let line = t
        .lines()
        .find(|l| l.starts_with("status page: "))
        .unwrap_or_else(|| panic!("no status page line: {t}"));
    assert!(line.starts_with("status page: http://127.0.0.1:"), "{line}");
    assert!(!line.contains(":8745/"), "{line}");
    assert!(line.ends_with("127.0.0.1:8745 was taken)"), "{line}");
}

#[tokio::test]
async fn help_lists_the_exit_codes() {
    for cmd in ["read", "scan", "trace"] {
        let out = meterd(&[cmd, "--help"]).await;
        assert!(out.status.success());
        let t = text(&out.stdout);
        assert!(t.contains("Exit codes:\n  0  done"), "{cmd}: {t}");
        assert!(t.contains("  1  the meter failed the job"), "{cmd}: {t}");
        assert!(t.contains("  2  the job could not start"), "{cmd}: {t}");
    }
}
