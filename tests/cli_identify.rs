//! `meterd scan`'s identification, `meterd read --register` and `--line`, end to end: the
//! built binary against the simulator (started in-process on loopback) and the scripted fake.

mod common;

use std::path::Path;

use common::binary::*;
use common::*;
use meterd::sim::{SimConfig, SimHandle, Simulator};
use serde_json::Value;

async fn sim(config: &str) -> SimHandle {
    let config = SimConfig::from_text(Path::new("identify.toml"), config).unwrap();
    Simulator::start(config).await.unwrap()
}

/// The facts of one found meter, name → value.
fn facts(found: &Value) -> Vec<(String, String)> {
    found["identity"]["facts"]
        .as_array()
        .unwrap_or_else(|| panic!("no identity: {found}"))
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn fact<'a>(facts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    facts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn scan_reads_the_identity_of_dlt645_meters() {
    let sim = sim(r#"
[[port]]
name = "dlt"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000017"
profile = "dlt645-three-phase"
identity = { number = "202107072529", asset_code = "ASSET-0017", model = "DTZY1234", production_date = "2023-05-06", firmware = "V1.02" }
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000018"
profile = "dlt645-single-phase"
"#)
    .await;
    let addr = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "dlt645-2007",
        "--addresses",
        "000000000017-000000000018",
        "--timeout",
        "500ms",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let configured = facts(&found[0]);
    for (name, want) in [
        ("meter.address", "000000000017"),
        ("meter.number", "202107072529"),
        ("meter.asset_code", "ASSET-0017"),
        ("meter.model", "DTZY1234"),
        ("meter.production_date", "2023-05-06"),
        ("meter.firmware_version", "V1.02"),
    ] {
        assert_eq!(fact(&configured, name), Some(want), "{configured:?}");
    }
    // Defaults come from the address.
    let derived = facts(&found[1]);
    assert_eq!(fact(&derived, "meter.number"), Some("000000000018"));
    assert_eq!(fact(&derived, "meter.asset_code"), Some("SIM-000000000018"));

    // The table puts the identity under the meter's line.
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "dlt645-2007",
        "--addresses",
        "000000000017",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("000000000017  "), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  meter.asset_code") && l.ends_with("ASSET-0017")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  meter.model") && l.ends_with("DTZY1234")),
        "{table}"
    );
}

#[tokio::test]
async fn an_error_reply_to_an_identity_item_is_not_a_failure() {
    // The fake's meter answers the energy and voltage items only: every identity item gets
    // error word 02. The scan still succeeds and says nothing was offered.
    let log = new_log();
    let addr = tcp_fake(model(&[]), log.clone()).await;
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "dlt645-2007",
        "--timeout",
        "300ms",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!("{DLT_ADDR}  read-address")),
        "{table}"
    );
    assert!(table.contains("  identity  none offered"), "{table}");
    // One read-address, then one read per identity item.
    assert_eq!(log.lock().unwrap().len(), 1 + 6);

    // --no-identify sends the probe only.
    let log = new_log();
    let addr = tcp_fake(model(&[]), log.clone()).await;
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "dlt645-2007",
        "--no-identify",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("identity"));
    assert_eq!(log.lock().unwrap().len(), 1);
}

const MODBUS_METERS: &str = r#"
[[port.meter]]
protocol = "PROTO"
unit = 1
profile = "eastron-sdm630"
identity = { serial = 4711 }
[[port.meter]]
protocol = "PROTO"
unit = 2
profile = "eastron-sdm120"
[[port.meter]]
protocol = "PROTO"
unit = 3
profile = "generic-modbus"
[[port.meter]]
protocol = "PROTO"
unit = 4
profile = "chint-dtsu666"
"#;

fn check_profiles(found: &[Value]) {
    let units: Vec<&str> = found
        .iter()
        .map(|f| f["address"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["1", "2", "3", "4"], "{found:?}");
    assert_eq!(
        found[0]["identity"]["profile"], "eastron-sdm630",
        "{found:?}"
    );
    let sdm630 = facts(&found[0]);
    assert_eq!(fact(&sdm630, "meter code"), Some("112 (0x0070)"));
    assert_eq!(fact(&sdm630, "serial number"), Some("4711 (0x1267)"));
    assert_eq!(
        found[1]["identity"]["profile"], "eastron-sdm120",
        "{found:?}"
    );
    // No identification register names these models: the profiles whose map the meter has
    // are the candidates.
    for (f, want) in [(&found[2], "generic-modbus"), (&found[3], "chint-dtsu666")] {
        assert_eq!(f["identity"].get("profile"), None, "{f}");
        assert_eq!(
            f["identity"]["candidates"],
            serde_json::json!([want]),
            "{f}"
        );
    }
}

#[tokio::test]
async fn scan_names_the_profile_of_modbus_meters() {
    let rtu = format!(
        "[[port]]\nname = \"rtu\"\ntcp = \"127.0.0.1:0\"\n{}",
        MODBUS_METERS.replace("PROTO", "modbus-rtu")
    );
    let tcp = format!(
        "[[port]]\nname = \"mb\"\nmodbus_tcp = \"127.0.0.1:0\"\n{}",
        MODBUS_METERS.replace("PROTO", "modbus-tcp")
    );
    let sim = sim(&format!("{rtu}\n{tcp}")).await;
    for (port, protocol) in [("rtu", "modbus-rtu"), ("mb", "modbus-tcp")] {
        let addr = sim.local_addr(port).unwrap().to_string();
        let out = meterd(&[
            "scan",
            "--tcp",
            &addr,
            "--protocol",
            protocol,
            "--units",
            "1-5",
            "--timeout",
            "300ms",
            "--json",
        ])
        .await;
        assert!(out.status.success(), "{protocol}: {}", text(&out.stderr));
        let found: Value = serde_json::from_slice(&out.stdout).unwrap();
        check_profiles(found.as_array().unwrap());
    }

    // The table: a profile line a technician can paste from.
    let addr = sim.local_addr("rtu").unwrap().to_string();
    let out = meterd(&[
        "scan",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-rtu",
        "--units",
        "1-3",
        "--timeout",
        "300ms",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l == "  profile        eastron-sdm630"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("profile")
            && l.ends_with("unknown (answers; candidates: generic-modbus)")),
        "{table}"
    );
}

#[tokio::test]
async fn read_register_decodes_each_word_order() {
    // The SDM630's serial number register pair (0xFC00) holds 0x4365CCCD: 229.8 as float32.
    let sim = sim(r#"
[[port]]
name = "rtu"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "modbus-rtu"
unit = 5
profile = "eastron-sdm630"
identity = { serial = 0x4365CCCD }
"#)
    .await;
    let addr = sim.local_addr("rtu").unwrap().to_string();
    let out = meterd(&[
        "read",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-rtu",
        "--unit",
        "5",
        "--register",
        "fc03:0xfc00:f32",
        "--register",
        "fc03:0xfc00:u32:abcd",
        "--register",
        "fc03:0xfc00:u32:cdab",
        "--register",
        "fc03:0xfc00:u32:badc",
        "--register",
        "fc03:0xfc00:u32:dcba",
        "--register",
        "fc03:64513:u16",
        "--register",
        "fc03:0xfc00:i16",
        "--register",
        "fc03:0xfc02:u16",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["register"].as_str().unwrap().to_owned(),
                r["value"].to_string(),
            )
        })
        .collect();
    let want = [
        ("fc03:0xfc00:f32:abcd", "229.8"),
        ("fc03:0xfc00:u32:abcd", "1130745037"),
        ("fc03:0xfc00:u32:cdab", "3436004197"),
        ("fc03:0xfc00:u32:badc", "1698942412"),
        ("fc03:0xfc00:u32:dcba", "3452724547"),
        ("fc03:0xfc01:u16", "52429"),
        ("fc03:0xfc00:i16", "17253"),
        ("fc03:0xfc02:u16", "112"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(got, want);
    // The JSON value is the float's shortest digits, not a widened double.
    assert!(
        text(&out.stdout).contains("\"value\": 229.8,"),
        "{}",
        text(&out.stdout)
    );

    // A register the meter does not have: the table still prints, exit 1, one line why.
    let out = meterd(&[
        "read",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-rtu",
        "--unit",
        "5",
        "--register",
        "fc03:0xfc02:u16",
        "--register",
        "fc03:0x0100:u16",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("fc03:0xfc02:u16"), "{table}");
    assert!(
        table.contains("exception 02 illegal data address"),
        "{table}"
    );
    assert_eq!(
        text(&out.stderr).trim_end(),
        "meterd read: 1 of 2 registers have no value (fc03:0x0100:u16: exception 02 illegal data address)"
    );

    // A malformed spec is clap's error, exit 2.
    let out = meterd(&[
        "read",
        "--tcp",
        &addr,
        "--protocol",
        "modbus-rtu",
        "--unit",
        "5",
        "--register",
        "fc03:0:f16",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("type \"f16\" is not one of u16 i16 u32 i32 u64 i64 f32 f64 bit"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn line_gives_the_serial_settings_in_one() {
    // Through a device server the line settings only time the exchange; what matters here is
    // that --line is taken, and refused with any of the four flags it replaces.
    let addr = tcp_fake(model(&[3]), new_log()).await;
    let out = meterd(&[
        "read",
        "--tcp",
        &addr,
        "--line",
        "9600-8N1",
        "--protocol",
        "modbus-rtu",
        "--unit",
        "3",
        "--register",
        "fc03:7:u16",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("fc03:0x0007:u16") && l.contains(" 7 ")),
        "{}",
        text(&out.stdout)
    );

    for (args, says) in [
        (
            vec!["--line", "9600-8N"],
            "invalid value '9600-8N' for '--line <BAUD-DPS>': expected BAUD-DPS such as 2400-8E1",
        ),
        (
            vec!["--line", "9600-8N1", "--baud", "2400"],
            "the argument '--line <BAUD-DPS>' cannot be used with '--baud <BAUD>'",
        ),
        (
            vec!["--line", "9600-8N1", "--parity", "even"],
            "cannot be used with '--parity <PARITY>'",
        ),
    ] {
        let mut all = vec![
            "scan",
            "--tcp",
            &addr,
            "--protocol",
            "modbus-rtu",
            "--units",
            "3",
        ];
        all.extend(args);
        let out = meterd(&all).await;
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }
}
