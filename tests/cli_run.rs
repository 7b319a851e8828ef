//! `meterd run` through the real binary: what it refuses before it starts anything.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meterd");

/// A configuration with one TCP bus and no `[mqtt]` section.
const NO_BROKER: &str = r#"
gateway = "gw-test"

[[bus]]
name = "lan"
transport = "modbus-tcp"
host = "127.0.0.1:1"

[[bus.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
"#;

fn run_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("meterd.toml");
    let text = format!("data_dir = {:?}\n{config}", dir.path().join("data"));
    std::fs::write(&path, text).expect("writing the configuration");
    run_file(&path)
}

/// `meterd run --config path`, which must refuse to start within 10 s.
fn run_file(path: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running meterd");
    // A daemon that starts anyway runs until killed: fail instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("waiting for meterd").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting output");
            panic!(
                "meterd run started instead of refusing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting output")
}

/// Without a url the daemon used to publish to the in-process broker, whose PUBACKs deleted
/// readings nobody had received.
#[test]
fn run_without_a_broker_url_refuses_to_start() {
    let out = run_with(NO_BROKER);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no broker configured"), "{err}");
    assert!(!err.contains("meterd running"), "{err}");
}

#[test]
fn run_refuses_an_embedded_broker_off_loopback() {
    let config =
        format!("{NO_BROKER}\n[mqtt]\nurl = \"embedded\"\nembedded_listen = \"0.0.0.0:0\"\n");
    let out = run_with(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("loopback only"), "{err}");
}

/// The technician's commands still read a bus file that names no broker.
#[test]
fn check_config_accepts_a_bus_file_without_a_broker() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("bus.toml");
    std::fs::write(&path, NO_BROKER).expect("writing the configuration");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("running meterd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A spool too small for one reading of a configured meter would drop every reading: refused
/// before anything starts (no spool file is made).
#[test]
fn run_refuses_a_spool_too_small_for_one_reading() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles directory");
    let points: String = (0..200)
        .map(|i| {
            format!(
                "[[point]]\nquantity = \"voltage.l{i}\"\nfunction = \"input\"\nregister = {}\n\
                 type = \"f32\"\nunit = \"V\"\n",
                i * 2
            )
        })
        .collect();
    std::fs::write(
        profiles.join("big.toml"),
        format!(
            "name = \"big\"\ndescription = \"d\"\nsource = \"s\"\nprotocol = \"modbus\"\n{points}"
        ),
    )
    .expect("writing the profile");
    let data = dir.path().join("data");
    let config = format!(
        "gateway = \"gw-test\"\ndata_dir = {data:?}\nprofile_dirs = [\"profiles\"]\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[spool]\nmax_bytes = \"64KiB\"\n\
         [[bus]]\nname = \"lan\"\ntransport = \"modbus-tcp\"\nhost = \"127.0.0.1:1\"\n\
         [[bus.meter]]\nprotocol = \"modbus-tcp\"\nunit = 1\nprofile = \"big\"\n"
    );
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, config).expect("writing the configuration");
    let out = run_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("max_bytes") && err.contains("lan-unit1"),
        "{err}"
    );
    assert!(!data.join("spool.sqlite").exists());
    // check-config says the same.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("running meterd check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("raise spool max_bytes"), "{err}");
}
