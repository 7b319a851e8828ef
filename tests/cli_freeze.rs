//! `meterd read --freeze`: the built binary reads the simulator's frozen records (on a
//! simulated clock pinned to a known instant) and prints them as `meterd.freeze.v1` records,
//! each under the meter's own stamp, each value exactly the simulator's frozen register. The
//! simulated meters keep China Standard Time, as real DL/T 645 meters do: the simulated clock
//! stands at 2026-12-07T08:00Z, 16:00 on the meters' clocks.

mod common;

use std::path::Path;

use common::binary::meterd;
use meterd::clock::{UtcOffset, days_from_civil, parse_rfc3339};
use meterd::sim::model::MeterModel;
use meterd::sim::{SimConfig, SimHandle, Simulator};

const ADDR: &str = "000000000001";
const SEED: u64 = 7;
const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// The UTC instant of a moment on the meters' clocks (UTC+8).
fn cst(year: i64, month: u32, day: u32, hour: i64) -> i64 {
    days_from_civil(year, month, day) * MS_PER_DAY + (hour - 8) * MS_PER_HOUR
}

fn model() -> MeterModel {
    MeterModel::new(SEED, ADDR.into()).with_offset(UtcOffset::CHINA)
}

async fn sim(profile: &str) -> SimHandle {
    sim_with(profile, "").await
}

/// [`sim`] with more lines for the meter.
async fn sim_with(profile: &str, extra: &str) -> SimHandle {
    let protocol = if profile.contains("1997") {
        "dlt645-1997"
    } else {
        "dlt645-2007"
    };
    let text = format!(
        r#"
[clock]
start = "2026-12-07T08:00:00Z"
speed = 1.0
[[port]]
name = "dlt"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "{protocol}"
address = "{ADDR}"
profile = "{profile}"
seed = {SEED}
{extra}
"#
    );
    let config = SimConfig::from_text(Path::new("test.toml"), &text).unwrap();
    Simulator::start(config).await.unwrap()
}

fn read_args<'a>(tcp: &'a str, kind: &'a str, last: &'a str) -> Vec<&'a str> {
    vec![
        "read",
        "--tcp",
        tcp,
        "--protocol",
        "dlt645-2007",
        "--address",
        ADDR,
        "--freeze",
        kind,
        "--last",
        last,
        "--json",
    ]
}

/// The value of `quantity` in record `v` as the JSON number's f64 (serde_json::Value parses
/// numbers as f64; the exact digits are checked in the raw text by [`exact`]).
fn number(v: &serde_json::Value, quantity: &str) -> f64 {
    let value = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["quantity"] == quantity)
        .unwrap_or_else(|| panic!("{quantity} missing in {v}"));
    assert_eq!(value["quality"], "good", "{value}");
    value["value"].as_f64().unwrap()
}

/// Checks `quantity` against the model's register `want` (exact text): the f64 agrees and
/// the output holds the meter's digits (`6459.50`, not `6459.5`).
fn exact(stdout: &[u8], record: &serde_json::Value, quantity: &str, want: String) {
    assert_eq!(
        number(record, quantity),
        want.parse::<f64>().unwrap(),
        "{quantity}"
    );
    let text = String::from_utf8_lossy(stdout);
    assert!(
        text.contains(&format!("\"value\": {want}")),
        "{want} not verbatim in the output"
    );
}

#[tokio::test]
async fn daily_records_carry_their_stamps_and_the_frozen_registers() {
    let sim = sim("dlt645-three-phase").await;
    let tcp = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&read_args(&tcp, "daily", "3")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 3);
    let model = model();
    let today = cst(2026, 12, 7, 0);
    for (i, r) in records.iter().enumerate() {
        let day = 7 - i;
        assert_eq!(r["schema"], "meterd.freeze.v1");
        assert_eq!(r["kind"], "daily");
        assert_eq!(r["backfill"], false);
        assert_eq!(r["frozen_at"], format!("2026-12-0{day}T00:00:00+08:00"));
        assert_eq!(
            r["id"],
            format!("local/{ADDR}/daily/2026-12-0{day}T00:00+08:00")
        );
        // The stamp and the two energy blocks, each the evidence of this record only.
        assert_eq!(r["frames"].as_array().unwrap().len(), 3, "{r}");
        let frozen = today - i as i64 * MS_PER_DAY;
        for (kind, name) in [("active.import", "import"), ("active.export", "export")] {
            for (t, tariff) in [(0u8, "total"), (1, "t1"), (4, "t4")] {
                let want = model.energy(kind, t, 2, frozen).to_string();
                exact(
                    &out.stdout,
                    r,
                    &format!("energy.active.{name}.{tariff}"),
                    want,
                );
            }
        }
        // No snapshot suffix and no stamp item among the values.
        for v in r["values"].as_array().unwrap() {
            let q = v["quantity"].as_str().unwrap();
            assert!(!q.contains('@') && !q.starts_with("freeze."), "{q}");
        }
    }
    assert!(parse_rfc3339(records[0]["read_at"].as_str().unwrap()).is_some());
    let schema = freeze_schema();
    for r in &records {
        let errors: Vec<String> = schema.iter_errors(r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{r}");
    }
}

/// docs/schema/freeze.v1.json, the contract's schema of a freeze record.
fn freeze_schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/freeze.v1.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[tokio::test]
async fn hourly_and_monthly_records() {
    let sim = sim("dlt645-three-phase").await;
    let tcp = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&read_args(&tcp, "hourly", "2")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records[0]["frozen_at"], "2026-12-07T16:00:00+08:00");
    assert_eq!(records[1]["frozen_at"], "2026-12-07T15:00:00+08:00");
    let model = model();
    let want = model
        .energy("active.import", 0, 2, cst(2026, 12, 7, 15))
        .to_string();
    exact(&out.stdout, &records[1], "energy.active.import.total", want);

    // Monthly: the simulator settles on the 1st at 00:00 (04000B01 = 0100).
    let out = meterd(&read_args(&tcp, "monthly", "2")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records[0]["frozen_at"], "2026-12-01T00:00:00+08:00");
    assert_eq!(records[1]["frozen_at"], "2026-11-01T00:00:00+08:00");
    assert_eq!(
        records[1]["id"],
        format!("local/{ADDR}/monthly/2026-11-01T00:00+08:00")
    );
    let nov = cst(2026, 11, 1, 0);
    let want = model.energy("active.import", 2, 2, nov).to_string();
    exact(&out.stdout, &records[1], "energy.active.import.t2", want);
}

#[tokio::test]
async fn a_meter_without_the_records_fails_and_bad_requests_are_refused() {
    // The single-phase profile keeps no hourly records: every value is bad, exit 1.
    let sim = sim("dlt645-single-phase").await;
    let tcp = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&read_args(&tcp, "hourly", "1")).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = meterd(&read_args(&tcp, "daily", "63")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps 1..=62 daily records"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = read_args(&tcp, "daily", "1");
    args[4] = "dlt645-1997";
    let out = meterd(&args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("a DL/T 645-1997 meter keeps no daily records"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table names the kind, the meter and the stamp.
    let out = meterd(&[
        "read",
        "--tcp",
        &tcp,
        "--protocol",
        "dlt645-2007",
        "--address",
        ADDR,
        "--freeze",
        "daily",
        "--utc-offset",
        "+09:00",
    ])
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with(&format!(
            "daily freeze of meter {ADDR}, frozen at 2026-12-07T00:00:00+09:00"
        )),
        "{table}"
    );
}

#[tokio::test]
async fn check_config_shows_the_freeze_plan_and_its_bus_time() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meterd.toml");
    let out = meterd(&["check-config", "--config", example.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The three-phase meter at 2400 8E1 with 4 FE and 20 ms turnaround: 0.76 s a daily record.
    assert!(
        text.contains(
            "freezes in +08:00: daily (62 back, 0.76 s each), monthly (12 back, 0.55 s each), \
             hourly (48 back, 0.61 s each); 15.5 s of wire time a day; first back-fill 83 s, \
             over at least 333 s at 25 % of the bus"
        ),
        "{text}"
    );
    // The Modbus meters have none.
    let sdm = text.split("meter feeder-3-sdm630").nth(1).unwrap_or("");
    assert!(
        !sdm.split("\n  meter")
            .next()
            .unwrap_or("")
            .contains("freezes"),
        "{text}"
    );
}

/// A DL/T 645-1997 meter's two monthly settlements (last month's `94xx`, the month before's
/// `98xx`), each exactly the simulator's register at its settlement instant; a third is
/// refused.
#[tokio::test]
async fn a_1997_meter_gives_two_monthly_records() {
    let sim = sim("dlt645-1997-basic").await;
    let tcp = sim.local_addr("dlt").unwrap().to_string();
    let mut args = read_args(&tcp, "monthly", "2");
    args[4] = "dlt645-1997";
    let out = meterd(&args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["protocol"], "dlt645-1997");
    assert_eq!(records[0]["frozen_at"], "2026-12-01T00:00:00+08:00");
    assert_eq!(records[1]["frozen_at"], "2026-11-01T00:00:00+08:00");
    let model = model();
    for (i, (month, tariff, quantity)) in [
        (12, 0, "energy.active.import.total"),
        (11, 3, "energy.active.import.t3"),
    ]
    .into_iter()
    .enumerate()
    {
        let want = model
            .energy("active.import", tariff, 2, cst(2026, month, 1, 0))
            .to_string();
        exact(&out.stdout, &records[i], quantity, want);
        assert_eq!(records[i]["frames"].as_array().unwrap().len(), 2);
    }
    let mut args = read_args(&tcp, "monthly", "3");
    args[4] = "dlt645-1997";
    let out = meterd(&args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps 1..=2 monthly records"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `read --freeze load_profile`: the newest load records (the meter's clock at 16:00 CST),
/// each read with the given-time request, each value exactly the simulator's record; a stamp
/// the meter skipped is reported lost, with exit code 1.
#[tokio::test]
async fn load_records_are_read_by_their_stamps() {
    let sim = sim_with(
        "dlt645-three-phase",
        "freezes = [\"load_profile\"]\nload_profile_gaps = [\"2026-12-07T15:30\"]",
    )
    .await;
    let tcp = sim.local_addr("dlt").unwrap().to_string();
    let out = meterd(&read_args(&tcp, "load_profile", "2")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let schema = freeze_schema();
    let model = model();
    for (r, (hh, mm)) in records.iter().zip([(16, 0), (15, 45)]) {
        assert_eq!(r["kind"], "load_profile");
        assert_eq!(
            r["frozen_at"],
            format!("2026-12-07T{hh:02}:{mm:02}:00+08:00")
        );
        assert_eq!(
            r["id"],
            format!("local/{ADDR}/load_profile/2026-12-07T{hh:02}:{mm:02}+08:00")
        );
        assert_eq!(r["frames"].as_array().unwrap().len(), 1, "{r}");
        let errors: Vec<String> = schema.iter_errors(r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{r}");
        let stamp = meter_protocols::dlt645::freeze::LocalMinute::from_civil(2026, 12, 7, hh, mm);
        let want = model.load_record(stamp).values();
        assert_eq!(r["values"].as_array().unwrap().len(), want.len(), "{r}");
        for (_, v) in want {
            let value = v.value.to_string();
            if value.parse::<f64>().is_ok() {
                exact(&out.stdout, r, &v.quantity, value);
            }
        }
    }
    // Three back from 16:00 reaches the skipped 15:30: two records and a loss.
    let out = meterd(&read_args(&tcp, "load_profile", "3")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        stderr.contains("2026-12-07T15:30: lost:") && stderr.contains("did not record"),
        "{stderr}"
    );
    // The 1997 edition keeps no load profile: refused before any read.
    let mut args = read_args(&tcp, "load_profile", "1");
    args[4] = "dlt645-1997";
    let out = meterd(&args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps no load profile"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check-config` with a meter keeping a load profile: its interval, depth and the bus time of
/// its records; a bad interval and a load profile on a 1997 meter refused with their place.
#[tokio::test]
async fn check_config_plans_the_load_profile_and_refuses_what_cannot_have_one() {
    let dir = tempfile::tempdir().unwrap();
    let profile = |interval: &str| {
        format!(
            "name = \"three-lp\"\ndescription = \"t\"\nsource = \"t\"\nprotocol = \"dlt645-2007\"\n\
             freezes = [\"load_profile\"]\nload_profile_interval = \"{interval}\"\n\
             load_profile_depth = 2880\n[[point]]\ndi = \"00010000\"\n"
        )
    };
    let config = |meter_protocol: &str, profile: &str, freezes: &str| {
        format!(
            "gateway = \"gw\"\ndata_dir = \"{d}\"\nprofile_dirs = [\"{d}/profiles\"]\n[mqtt]\n\
             url = \"embedded\"\n[[bus]]\nname = \"a\"\ntransport = \"tcp\"\nhost = \"127.0.0.1:1\"\n\
             [[bus.meter]]\nprotocol = \"{meter_protocol}\"\naddress = \"000000000001\"\n\
             profile = \"{profile}\"\n{freezes}",
            d = dir.path().display()
        )
    };
    let conf = dir.path().join("meterd.toml");
    let check = |text: String| {
        std::fs::write(&conf, text).unwrap();
        let conf = conf.clone();
        async move { meterd(&["check-config", "--config", conf.to_str().unwrap()]).await }
    };
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let profile_file = dir.path().join("profiles/three-lp.toml");
    std::fs::write(&profile_file, profile("30m")).unwrap();
    let out = check(config("dlt645-2007", "three-lp", "")).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "freezes in +08:00: load_profile (every 30 min, 2880 kept by the meter, 96 back, "
        ),
        "{text}"
    );

    std::fs::write(&profile_file, profile("20m")).unwrap();
    let out = check(config("dlt645-2007", "three-lp", "")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("three-lp.toml:6:") && err.contains("load_profile_interval"),
        "{err}"
    );
    assert!(err.contains("15m, 30m or 60m"), "{err}");

    std::fs::write(&profile_file, profile("15m")).unwrap();
    let out = check(config(
        "dlt645-1997",
        "dlt645-1997-basic",
        "freezes = [\"load_profile\"]\n",
    ))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("meterd.toml:") && err.contains("has no load_profile records"),
        "{err}"
    );
}
