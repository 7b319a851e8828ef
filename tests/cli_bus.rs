//! `meterd read`, `scan`, `trace` and `check-config` end to end: the built binary against a
//! scripted fake meter on a pty (opened in-process, see `common::pty`) or loopback TCP.

mod common;

use common::binary::*;
use common::*;

/// A fake serving the model meters (DL/T 645 `DLT_ADDR`, Modbus unit 3) on a pty.
fn pty_fake() -> Option<(String, Log)> {
    let (master, path) = pty()?;
    let log = new_log();
    tokio::spawn(serve(master, model(&[3]), log.clone()));
    Some((path, log))
}

#[tokio::test]
async fn read_a_dlt645_meter_on_a_pty() {
    let Some((path, _log)) = pty_fake() else {
        return;
    };
    let out = meterd(&[
        "read",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "dlt645-2007",
        "--address",
        DLT_ADDR,
        "--quantity",
        "energy.active.import.total",
        "voltage.l1",
        "frequency",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batch: meterd::reading::ReadingBatch = serde_json::from_slice(&out.stdout).unwrap();
    let v = values(&batch);
    assert_eq!(v["energy.active.import.total"].0, "12345.67");
    assert_eq!(v["voltage.l1"].0, "229.8");
    assert_eq!(v["frequency"].1, "meter error 02: no requested data");
    assert_eq!(batch.frames.len(), 3);
    // The JSON carries the meter's digits, not a float's.
    assert!(text(&out.stdout).contains("\"value\": 12345.67"));

    let out = meterd(&[
        "read",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "dlt645-2007",
        "--address",
        DLT_ADDR,
        "--quantity",
        "energy.active.import.total",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("quantity"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("energy.active.import.total")
                && l.contains("12345.67")
                && l.contains("kWh")
                && l.contains("good")),
        "{table}"
    );
}

#[tokio::test]
async fn read_a_modbus_meter_through_a_device_server() {
    let host = tcp_fake(model(&[3]), new_log()).await;
    let out = meterd(&[
        "read",
        "--tcp",
        &host,
        "--protocol",
        "modbus-rtu",
        "--unit",
        "3",
        "--profile",
        "generic-modbus",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batch: meterd::reading::ReadingBatch = serde_json::from_slice(&out.stdout).unwrap();
    let v = values(&batch);
    // Register 10 holds 10: × 0.1 V.
    assert_eq!(v["voltage.l1"].0, "1.0");
    assert_eq!(batch.values.len(), 6);
    assert_eq!(batch.frames.len(), 1, "one coalesced read");
}

#[tokio::test]
async fn no_answer_is_one_line_and_exit_1() {
    let Some((path, _log)) = pty_fake() else {
        return;
    };
    let out = meterd(&[
        "read",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "modbus-rtu",
        "--unit",
        "9",
        "--profile",
        "generic-modbus",
        "--timeout",
        "100ms",
        "--retries",
        "0",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("meterd read: no answer from meter cli-unit9: no reply within 100ms"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_port_and_a_busy_port_are_one_line_errors() {
    let out = meterd(&[
        "read",
        "--port",
        "/dev/ttyNOPE9",
        "--protocol",
        "dlt645-2007",
        "--address",
        DLT_ADDR,
        "--profile",
        "dlt645-single-phase",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd read: /dev/ttyNOPE9: no such serial port (check the cable/adapter and the path)"
    );

    let Some((_master, path)) = pty() else { return };
    // Hold the port the way the daemon does (serialport's exclusive lock).
    let _held = tokio_serial::SerialStream::open(&tokio_serial::new(&path, 9600)).unwrap();
    for cmd in ["read", "scan"] {
        let mut args = vec![cmd, "--port", &path, "--protocol", "modbus-rtu"];
        if cmd == "read" {
            args.extend(["--unit", "1", "--profile", "generic-modbus"]);
        }
        let out = meterd(&args).await;
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert_eq!(
            err.trim_end(),
            format!(
                "meterd {cmd}: {path}: port is busy (another program, or a running meterd, has it open)"
            )
        );
    }
}

#[tokio::test]
async fn scan_finds_units_and_dlt645_addresses() {
    let Some((path, log)) = pty_fake() else {
        return;
    };
    let out = meterd(&[
        "scan",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "modbus-rtu",
        "--units",
        "1-5",
        "--timeout",
        "50ms",
        "--no-identify",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["address"], "3");
    assert_eq!(log.lock().unwrap().len(), 5, "one probe per unit");

    let out = meterd(&[
        "scan",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "dlt645-2007",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{DLT_ADDR}  read-address")),
        "{}",
        text(&out.stdout)
    );

    let out = meterd(&[
        "scan",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "dlt645-2007",
        "--addresses",
        "202107072528-202107072530",
        "--timeout",
        "50ms",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 found"),
        "{}",
        text(&out.stdout)
    );

    let out = meterd(&[
        "scan",
        "--port",
        &path,
        "--parity",
        "none",
        "--protocol",
        "modbus-rtu",
        "--units",
        "7-8",
        "--timeout",
        "30ms",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd scan: no answer to 2 probes"
    );
}

#[tokio::test]
async fn trace_and_check_config() {
    let host = tcp_fake(model(&[3]), new_log()).await;
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
    let cfg_s = cfg.display().to_string();
    let out = meterd(&["check-config", "--config", &cfg_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("bus dtu: tcp://"), "{t}");
    assert!(
        t.contains("FC03 0x0000+21"),
        "the generic profile in one read: {t}"
    );
    assert!(t.contains("late-reply guard 100ms"), "{t}");

    let out = meterd(&["trace", "--config", &cfg_s, "--duration", "1500ms"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.lines()
            .any(|l| l.contains(" dtu dtu-unit3 tx  03 03 00 00 00 15")
                && l.contains("| modbus-rtu")),
        "{t}"
    );
    assert!(
        t.lines().any(
            |l| l.contains(&format!(" dtu {DLT_ADDR} rx ")) && l.contains("voltage.l1=229.8 V")
        ),
        "{t}"
    );
    assert!(t.contains("== reading dtu-unit3: 6 values, 0 bad"), "{t}");

    std::fs::write(&cfg, "gateway = \"gw\"\n[[bus]]\nname = 1\n").unwrap();
    let out = meterd(&["check-config", "--config", &cfg_s]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("meterd check-config: {cfg_s}:3:")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn scan_sweeps_the_units_behind_a_modbus_tcp_gateway() {
    use meterd::sim::{SimConfig, Simulator};
    let config = SimConfig::from_text(
        std::path::Path::new("scan.toml"),
        r#"
[[port]]
name = "mb"
modbus_tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
[[port.meter]]
protocol = "modbus-tcp"
unit = 3
profile = "generic-modbus"
"#,
    )
    .unwrap();
    let sim = Simulator::start(config).await.unwrap();
    let addr = sim.local_addr("mb").unwrap().to_string();
    // Units 2 and 4 are silent: each costs a timeout and a new connection, and no late reply
    // is credited to the next unit.
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-tcp",
        "--units",
        "1-4",
        "--register",
        "fc04:0:2",
        "--timeout",
        "100ms",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = found.as_array().unwrap();
    let units: Vec<&str> = found
        .iter()
        .map(|f| f["address"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["1", "3"], "{found:?}");
    assert_eq!(found[0]["answer"], "present (answered the read)");
    // The evidence is the reply's whole ADU: MBAP header, then unit, function, byte count.
    for (f, unit) in found.iter().zip(["01", "03"]) {
        let frame: Vec<&str> = f["frame"].as_str().unwrap().split(' ').collect();
        assert_eq!(frame[2..4], ["00", "00"], "protocol id: {f}");
        assert_eq!(frame[6], unit, "{f}");
        assert_eq!(frame[7].chars().last(), Some('4'), "function 04 or 84: {f}");
    }

    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-tcp",
        "--units",
        "5-6",
        "--timeout",
        "50ms",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd scan: no answer to 2 probes"
    );
}

/// `check-config` shows, per bus, the event-counter round and the meter-clock plan with their
/// wire time, each figure the DL/T 645 arithmetic at the bus's speed: a read request is 16
/// bytes plus the FE preamble, a reply 12 bytes of frame, 4 of DI and the data (a counter 3,
/// the date 4, the time 3), each byte 11 bits at 1200 baud (8E1), plus the turnaround.
#[tokio::test]
async fn check_config_shows_the_event_and_clock_plan_and_their_bus_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meterd.toml");
    let write = |clock: &str| {
        std::fs::write(
            &cfg,
            format!(
                r#"
gateway = "gw"
data_dir = "{data}"
[freeze]
daily_at_minute = 30
settlement_day = 15
settlement_hour = 12
[events]
interval = "10m"
bus_share_percent = 5
{clock}
[[bus]]
name = "a"
transport = "serial"
port = "/dev/ttyS9"
baud = 1200
parity = "even"
timing = {{ turnaround = "40ms", preamble = 3 }}
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
events = ["power_down", "cover_open"]
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000002"
profile = "dlt645-three-phase"
events = ["programming", "clock_set"]
[[bus]]
name = "b"
transport = "serial"
port = "/dev/ttyS8"
baud = 1200
parity = "even"
timing = {{ turnaround = "40ms", preamble = 2 }}
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000003"
profile = "dlt645-single-phase"
events = []
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000004"
profile = "dlt645-single-phase"
events = []
utc_offset = "+07:00"
[[bus.meter]]
protocol = "dlt645-1997"
address = "000000000005"
profile = "dlt645-1997-basic"
events = ["programming"]
"#,
                data = dir.path().display()
            ),
        )
        .unwrap();
    };
    write(
        "[meter_clock]\ncheck_every = \"12h\"\ndrift_limit = \"20s\"\n\
         [gateway_clock]\nsynchronised = \"trusted\"",
    );
    let cfg_s = cfg.display().to_string();
    let out = meterd(&["check-config", "--config", &cfg_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    // The arithmetic, by hand: seconds per byte, and one exchange of `data` reply bytes.
    let byte = 11.0 / 1200.0;
    let exchange = |data: f64| (16.0 + 3.0 + 12.0 + 4.0 + data) * byte + 0.040;
    let round = 4.0 * exchange(3.0);
    let clocks = 2.0 * (exchange(4.0) + exchange(3.0));
    assert_eq!(format!("{round:.3}"), "1.553", "the hand figure itself");
    let bus_a = t.split("\nbus b:").next().unwrap_or("");
    assert!(
        bus_a.contains(&format!(
            "  event counters every 10m: cover_open (1 meter), power_down (1 meter), \
             clock_set (1 meter), programming (1 meter); one round 4 reads, {round:.3} s of \
             wire time, {:.3} % of the bus (at most 5 %; each new occurrence adds one record \
             read)\n",
            100.0 * round / 600.0
        )),
        "{t}"
    );
    assert!(
        bus_a.contains(&format!(
            "  meter clocks read every 12h: 2 meters, date and time, {clocks:.3} s of wire \
             time, {:.4} % of the bus; off by more than 20s is a clock_drift event\n",
            100.0 * clocks / 43_200.0
        )),
        "{t}"
    );
    assert!(
        bus_a.contains(
            "  broadcast time sync: allowed for offsets under 5m, once a day per bus, never \
             within 5m of midnight nor within 5m of the daily freeze (00:30) or the monthly \
             settlement (day 15, 12:00), by the meter's clock or true local time\n"
        ),
        "{t}"
    );
    assert!(
        bus_a.contains(
            "  gateway clock ([gateway_clock] synchronised = \"trusted\"): counts as \
             synchronised now (trusted by configuration)\n"
        ),
        "{t}"
    );
    // Bus b: the 1997 meter's programming counter (B212: a 14-byte request with its 2-byte
    // DI, and a reply of 12 + 2 + 2 bytes); its clock is not read; the two 2007 meters keep
    // different zones, so one broadcast cannot set both.
    let bus_b = t.split("\nbus b:").nth(1).unwrap_or("");
    let b212 = (14.0 + 2.0 + 12.0 + 2.0 + 2.0) * byte + 0.040;
    assert_eq!(format!("{b212:.3}"), "0.333", "the hand figure itself");
    assert!(
        bus_b.contains(&format!(
            "  event counters every 10m: programming (1 meter); one round 1 reads, {b212:.3} s \
             of wire time, {:.3} % of the bus",
            100.0 * b212 / 600.0
        )),
        "{t}"
    );
    assert!(
        bus_b.contains("  meter clocks read every 12h: 2 meters, date and time"),
        "{t}"
    );
    assert!(
        bus_b.contains(
            "  broadcast time sync: refused on this bus: its meters keep different time zones\n"
        ),
        "{t}"
    );

    // Sync off and a gateway clock never trusted: said so.
    write("[meter_clock]\nsync = false\n[gateway_clock]\nsynchronised = \"never\"");
    let out = meterd(&["check-config", "--config", &cfg_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.contains("  meter clocks read every 1day: 2 meters"),
        "the default check_every: {t}"
    );
    assert!(
        t.contains(
            "  broadcast time sync: not allowed ([meter_clock] sync = false): drift is only \
             reported\n"
        ),
        "{t}"
    );
    assert!(
        t.contains(
            "  gateway clock ([gateway_clock] synchronised = \"never\"): does not count as \
             synchronised now (never trusted by configuration): meter clocks are neither \
             compared nor set\n"
        ),
        "{t}"
    );
    write("[meter_clock]\ncheck_every = \"0s\"");
    let t = text(&meterd(&["check-config", "--config", &cfg_s]).await.stdout);
    assert!(
        t.contains("  meter clocks: not read ([meter_clock] check_every = \"0s\")\n"),
        "{t}"
    );
}
