//! The daemon's supervision: a critical task that ends on its own stops the daemon with an
//! error, a bus stopped by a reload does not.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use super::reload::Signals;
use super::{Daemon, RunOptions};
use crate::config::Config;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One Modbus TCP bus to a port nobody listens on (it polls and fails; it never ends), the
/// embedded broker, the service on an ephemeral port.
fn config_text(data: &Path, buses: &[&str]) -> String {
    let mut t = format!(
        r#"
gateway = "gw-sup"
data_dir = "{}"

[mqtt]
url = "embedded"
embedded_listen = "127.0.0.1:{}"

[service]
listen = "127.0.0.1:0"
"#,
        data.display(),
        free_port()
    );
    for (i, name) in buses.iter().enumerate() {
        t.push_str(&format!(
            "\n[[bus]]\nname = \"{name}\"\ntransport = \"modbus-tcp\"\nhost = \"127.0.0.1:{}\"\n\n[[bus.meter]]\nid = \"m{i}\"\nprotocol = \"modbus-tcp\"\nunit = 1\nprofile = \"eastron-sdm630\"\ninterval = \"1s\"\n",
            i + 1
        ));
    }
    t
}

async fn start(dir: &Path, buses: &[&str]) -> Daemon {
    let text = config_text(dir, buses);
    let (config, profiles) = Config::from_text(Path::new("<test>"), &text).expect("config");
    Daemon::start_with(config, profiles, RunOptions::default())
        .await
        .expect("daemon")
}

/// The uplink returning while the daemon runs (here: asked to shut down behind the daemon's
/// back) used to leave a daemon polling into a spool nobody drained, with exit 0 later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_that_ends_stops_the_daemon_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(dir.path(), &["a"]).await;
    daemon.uplink().shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(15), daemon.run_until(Signals::new()))
        .await
        .expect("run_until did not return: the daemon kept running without its uplink");
    let e = ended.expect_err("a clean stop was reported");
    assert_eq!(e.task, "uplink");
    assert_eq!(e.why, "returned");
    assert!(e.to_string().contains("uplink ended unexpectedly"), "{e}");
}

/// A bus whose task ends (stopped from outside a reload)
/// stops the daemon too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_ends_outside_a_reload_stops_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(dir.path(), &["a", "b"]).await;
    daemon.buses[1].stop();
    let ended = tokio::time::timeout(Duration::from_secs(15), daemon.run_until(Signals::new()))
        .await
        .expect("run_until did not return");
    let e = ended.expect_err("a clean stop was reported");
    assert_eq!(e.task, "bus b");
}

/// Buses a reload stops on purpose do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buses_stopped_by_a_reload_do_not_stop_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meterd.toml");
    std::fs::write(&path, config_text(dir.path(), &["a", "b"])).expect("write");
    let mut daemon = Daemon::start(&path, RunOptions::default())
        .await
        .expect("daemon");
    // Remove bus b and change bus a (restarted).
    let new = config_text(dir.path(), &["a"]).replace("interval = \"1s\"", "interval = \"2s\"");
    // The embedded broker's port is a setting that needs a restart; keep it as it was.
    let new = keep_mqtt(&std::fs::read_to_string(&path).expect("read"), &new);
    std::fs::write(&path, new).expect("write");
    let plan = daemon.reload().await.expect("reload");
    assert_eq!(
        (plan.removed.len(), plan.restarted.len()),
        (1, 1),
        "{plan:?}"
    );
    let mut supervisor = std::mem::take(&mut daemon.supervisor);
    let got = tokio::time::timeout(Duration::from_millis(500), supervisor.next_unexpected()).await;
    assert!(got.is_err(), "a reload's stopped bus counted: {got:?}");
    daemon.supervisor = supervisor;
    daemon.stop().await;
}

/// `new` with the `[mqtt]` section of `old`.
fn keep_mqtt(old: &str, new: &str) -> String {
    let line = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("embedded_listen"))
            .unwrap_or_default()
            .to_owned()
    };
    new.replace(&line(new), &line(old))
}

#[test]
fn removed_meters_are_those_on_no_bus_any_more() {
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(b, m)| (b.to_string(), m.to_string()))
            .collect::<Vec<_>>()
    };
    let before = pairs(&[("a", "m1"), ("a", "m2"), ("b", "m3"), ("b", "m4")]);
    // m2 dropped from bus a, bus b removed with m3, m4 moved to bus c.
    let after = pairs(&[("a", "m1"), ("c", "m4")]);
    assert_eq!(
        super::reload::removed_meters(&before, &after),
        vec!["m2".to_string(), "m3".to_string()]
    );
    assert!(super::reload::removed_meters(&before, &before).is_empty());
}

/// A token rotation (the token file rewritten, then SIGHUP) used to change nothing: the old
/// token kept working and the new one was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_service_token() {
    use crate::service::client::{self, Endpoint};
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "old-token\n").expect("token");
    let path = dir.path().join("meterd.toml");
    let text = config_text(dir.path(), &["a"]).replace(
        "[service]\n",
        &format!(
            "[service]\ntoken_file = {:?}\n",
            token.display().to_string()
        ),
    );
    std::fs::write(&path, &text).expect("write");
    let mut daemon = Daemon::start(&path, RunOptions::default())
        .await
        .expect("daemon");
    let ep = |d: &Daemon| Endpoint::Tcp(d.service_addr().expect("service").to_string());
    let get = |ep: Endpoint, t: &'static str| async move {
        client::get_as(&ep, "/api/status", Some(t.into())).await
    };
    assert!(get(ep(&daemon), "old-token").await.is_ok());
    assert!(get(ep(&daemon), "new-token").await.is_err());

    std::fs::write(&token, "new-token\n").expect("token");
    daemon.reload().await.expect("reload");
    assert!(
        get(ep(&daemon), "new-token").await.is_ok(),
        "the new token is refused after the reload"
    );
    let old = get(ep(&daemon), "old-token").await;
    assert!(old.is_err(), "the old token still works: {old:?}");

    // A token file that is gone rejects the reload and keeps the service as it was.
    std::fs::remove_file(&token).expect("rm");
    assert!(daemon.reload().await.is_err());
    assert!(get(ep(&daemon), "new-token").await.is_ok());
    daemon.stop().await;
}

/// A reader of the spool's figures (the status page, the gateway status) never waits for the
/// spool: while it is held (a writer in a long fsync), the last figures read come back at once.
#[test]
fn spool_figures_do_not_wait_for_a_busy_spool() {
    use std::sync::{Arc, Mutex, mpsc};

    use crate::spool::{Spool, SpoolOptions};
    use crate::sync::lock;

    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        dir.path().join("spool.sqlite"),
        SpoolOptions::numbered_from_one(1 << 20),
    )
    .unwrap();
    let spool = Arc::new(Mutex::new(spool));
    lock(&spool).note_memory_drops("m1", 3);
    let views = super::SpoolViews::of(&spool);
    // Free: fresh figures, remembered.
    assert_eq!((views.stats)().dropped_in_memory, 3);
    assert_eq!(
        (views.meter_drops)("m1").map(|d| d.dropped_in_memory),
        Some(3)
    );

    // Held by another thread for 3 s, which changes the figures meanwhile.
    let (held_tx, held_rx) = mpsc::channel();
    let holder = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            let mut s = lock(&spool);
            s.note_memory_drops("m1", 4);
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        })
    };
    held_rx.recv().unwrap();
    let t = std::time::Instant::now();
    assert_eq!((views.stats)().dropped_in_memory, 3, "the last figures");
    assert_eq!(
        (views.meter_drops)("m1").map(|d| d.dropped_in_memory),
        Some(3)
    );
    assert_eq!((views.meter_drops)("never-seen"), None);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        t.elapsed()
    );
    holder.join().unwrap();
    // Free again: fresh.
    assert_eq!((views.stats)().dropped_in_memory, 7);
}
