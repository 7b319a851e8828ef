//! `meterd run` under a fake systemd: the notify protocol on a Unix datagram socket.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meterd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn config(data: &std::path::Path) -> String {
    format!(
        r#"
gateway = "gw-notify"
data_dir = {data:?}

[mqtt]
url = "embedded"
embedded_listen = "127.0.0.1:{}"

[service]
listen = "127.0.0.1:0"

[[bus]]
name = "lan"
transport = "modbus-tcp"
host = "127.0.0.1:1"

[[bus.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
"#,
        free_port()
    )
}

/// Kills the child if the test fails before it stopped it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything received on `sock` until `done` says so (or the deadline passes).
fn receive_until(sock: &UnixDatagram, secs: u64, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !done(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn run_notifies_ready_status_and_watchdog_then_stopping() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("binding the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, config(&dir.path().join("data"))).expect("writing the configuration");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &sock_path)
        // 400 ms: systemd would expect a ping every 200 ms. No WATCHDOG_PID: sd_watchdog_enabled
        // then accepts the variable for any process.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running meterd");
    let pid = child.id();
    let mut guard = Guard(Some(child));

    let got = receive_until(&sock, 20, |m| {
        m.iter().any(|s| s.contains("READY=1"))
            && m.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 2
    });
    let ready = got
        .iter()
        .find(|s| s.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    assert!(ready.contains("STATUS=running: 1 buses"), "{ready}");
    assert!(
        got.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 2,
        "no watchdog pings: {got:?}"
    );
    // No ping before READY=1.
    let first_ready = got.iter().position(|s| s.contains("READY=1"));
    let first_ping = got.iter().position(|s| s.contains("WATCHDOG=1"));
    assert!(first_ready < first_ping, "{got:?}");

    // SIGTERM: STOPPING=1 and exit 0.
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let got = receive_until(&sock, 10, |m| m.iter().any(|s| s.contains("STOPPING=1")));
    assert!(got.iter().any(|s| s.contains("STOPPING=1")), "{got:?}");
    let out = guard
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("waiting for meterd");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A watchdog meant for another process (WATCHDOG_PID of someone else) is not fed.
#[test]
fn a_watchdog_for_another_pid_is_ignored() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("binding the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, config(&dir.path().join("data"))).expect("writing the configuration");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("WATCHDOG_PID", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running meterd");
    let _guard = Guard(Some(child));
    let got = receive_until(&sock, 20, |m| m.iter().any(|s| s.contains("READY=1")));
    assert!(got.iter().any(|s| s.contains("READY=1")), "{got:?}");
    let more = receive_until(&sock, 1, |_| false);
    assert!(
        !got.iter().chain(&more).any(|s| s.contains("WATCHDOG=1")),
        "{got:?} {more:?}"
    );
}
