//! Configuration reload on SIGHUP (`systemctl reload meterd`).
//!
//! The file is read and checked completely first; a file that does not load changes nothing
//! (the located reason is logged on one line). A good file is compared bus by bus with the
//! configuration in force ([`plan`], a pure function): a bus whose effective configuration —
//! its own table, the profiles its meters use and `evidence_frames` — is unchanged keeps its
//! task and never misses a poll; a new bus starts; a removed bus stops after the poll in
//! progress (whose batch is still stored); a changed bus is stopped that way and started
//! again with its new configuration. Settings the running pipeline and uplink were built from
//! (`gateway`, `data_dir`, `[mqtt]`, `[spool]`, `[validation]`, `[events]`, `[meter_clock]`,
//! `[freeze]`, `[gateway_clock]`, `[control]`) cannot change live: a warning
//! names them and their running values stay in force until the next restart. `[service]` is
//! applied: when its settings or its token changed, the diagnostics service restarts with them.
//! Every other section (`profile_dirs`, `evidence_frames`, the buses) acts through the buses.
//! Meters on no bus any more get their retained MQTT status deleted.
//!
//! This module owns the diff, the swap of bus tasks and the signal loop of `meterd run`; the
//! daemon's wiring stays in [`super`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use super::{BusHandle, Daemon};
use crate::bus::task::{self as bus_task, Bus};
use crate::config::{BusConfig, Config, ConfigError, Profile, ProfileSet};

/// How long stopping the removed and changed buses may take before their polls in progress
/// are abandoned (a DL/T 645 poll at 2400 baud with retries can take seconds).
const BUS_STOP_BUDGET: Duration = Duration::from_millis(3300);

/// What a reload does to each bus, and which changed settings need a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Buses whose effective configuration is unchanged: their tasks keep running.
    pub kept: Vec<String>,
    /// Buses whose effective configuration changed: stopped, then started anew.
    pub restarted: Vec<String>,
    /// Buses only in the new configuration: started.
    pub added: Vec<String>,
    /// Buses only in the configuration in force: stopped.
    pub removed: Vec<String>,
    /// Top-level settings that changed but take effect only after a restart
    /// (`gateway`, `data_dir`, `mqtt`, `spool`, `validation`).
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// The one-line summary logged after a reload.
    pub fn summary(&self) -> String {
        format!(
            "reload: {} buses kept, {} restarted, {} added, {} removed",
            self.kept.len(),
            self.restarted.len(),
            self.added.len(),
            self.removed.len()
        )
    }
}

/// What of a bus decides whether its task may keep running: the bus's own configuration, the
/// profiles its meters name, and the daemon-wide options its task was built with.
#[derive(Serialize)]
struct EffectiveBus<'a> {
    bus: &'a BusConfig,
    evidence_frames: bool,
    profiles: BTreeMap<&'a str, Option<&'a Profile>>,
}

/// The effective configuration of `bus` as JSON; `None` if it cannot be serialized (then the
/// bus counts as changed, which is always safe).
fn fingerprint(config: &Config, bus: &BusConfig, profiles: &ProfileSet) -> Option<String> {
    let used = bus
        .meters
        .iter()
        .map(|m| {
            let name = m.get_ref().profile.as_str();
            (name, profiles.get(name))
        })
        .collect();
    serde_json::to_string(&EffectiveBus {
        bus,
        evidence_frames: config.evidence_frames,
        profiles: used,
    })
    .ok()
}

fn same<T: Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Compares the configuration in force (`old`, with the profiles it was loaded with) with a
/// freshly loaded one. Buses are matched by name; `restarted` and `added` follow the new
/// file's order, `kept` too, `removed` the old file's.
pub fn plan(
    old: &Config,
    old_profiles: &ProfileSet,
    new: &Config,
    new_profiles: &ProfileSet,
) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let before: HashMap<&str, &BusConfig> = old
        .buses
        .iter()
        .map(|b| (b.get_ref().name.as_str(), b.get_ref()))
        .collect();
    for bus in &new.buses {
        let bus = bus.get_ref();
        match before.get(bus.name.as_str()) {
            None => plan.added.push(bus.name.clone()),
            Some(prev) => {
                let a = fingerprint(old, prev, old_profiles);
                let b = fingerprint(new, bus, new_profiles);
                if a.is_some() && a == b {
                    plan.kept.push(bus.name.clone());
                } else {
                    plan.restarted.push(bus.name.clone());
                }
            }
        }
    }
    for bus in &old.buses {
        let name = &bus.get_ref().name;
        if !new.buses.iter().any(|b| &b.get_ref().name == name) {
            plan.removed.push(name.clone());
        }
    }
    if old.gateway != new.gateway {
        plan.needs_restart.push("gateway");
    }
    if old.data_dir != new.data_dir {
        plan.needs_restart.push("data_dir");
    }
    if !same(&old.mqtt, &new.mqtt) {
        plan.needs_restart.push("mqtt");
    }
    if old.spool != new.spool {
        plan.needs_restart.push("spool");
    }
    if !same(&old.validation, &new.validation) {
        plan.needs_restart.push("validation");
    }
    // The buses' event collectors, and the writer's clock marking, are wired at start.
    if old.events != new.events {
        plan.needs_restart.push("events");
    }
    if old.meter_clock != new.meter_clock {
        plan.needs_restart.push("meter_clock");
    }
    // The freeze collectors' share and back-fill depth and the completeness plan are wired at
    // start, like the gateway clock's trust (the writer's clock checks and the event sink).
    if old.freeze != new.freeze {
        plan.needs_restart.push("freeze");
    }
    if old.gateway_clock != new.gateway_clock {
        plan.needs_restart.push("gateway_clock");
    }
    // Keys, credentials and policy are read once at start (the credentials file too).
    if old.control != new.control {
        plan.needs_restart.push("control");
    }
    plan
}

/// Why a reload changed nothing.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The daemon was not started from a file (`meterd demo`, tests).
    #[error("no configuration file to reload")]
    NoFile,
    /// The new file does not load or check.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A bus of the new file cannot be built.
    #[error("{0}")]
    Bus(#[from] bus_task::BusError),
    /// The new `[service]` section is unsafe or its token cannot be read.
    #[error("{0}")]
    Service(#[from] crate::service::ServiceError),
}

impl ReloadError {
    /// The reason on one line (a configuration error's source excerpt is left out).
    pub fn one_line(&self) -> String {
        let s = self.to_string();
        s.lines().next().unwrap_or_default().to_owned()
    }
}

impl Daemon {
    /// Re-reads the configuration file the daemon was started from and applies it: see the
    /// module documentation. On error nothing has changed. Logs the outcome either way.
    pub async fn reload(&mut self) -> Result<ReloadPlan, ReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(plan) => {
                if !plan.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = %plan.needs_restart.join(", "),
                        "reload: these settings changed but apply only after a restart; \
                         their running values stay in force"
                    );
                }
                tracing::info!(
                    kept = ?plan.kept,
                    restarted = ?plan.restarted,
                    added = ?plan.added,
                    removed = ?plan.removed,
                    "{}",
                    plan.summary()
                );
            }
            Err(e) => tracing::error!(
                "reload rejected, the running configuration stays in force: {}",
                e.one_line()
            ),
        }
        result
    }

    async fn try_reload(&mut self) -> Result<ReloadPlan, ReloadError> {
        let path: PathBuf = self.config_path.clone().ok_or(ReloadError::NoFile)?;
        let (mut new, new_profiles) = load_blocking(path).await?;
        if let Some(dir) = &self.options.data_dir {
            new.data_dir = dir.clone();
        }
        let plan = plan(&self.config, &self.profiles, &new, &new_profiles);
        // Settings that cannot change live keep their running values.
        new.gateway = self.config.gateway.clone();
        new.data_dir = self.config.data_dir.clone();
        new.mqtt = self.config.mqtt.clone();
        new.spool = self.config.spool.clone();
        new.validation = self.config.validation.clone();

        // The new `[service]` (and the token its file or variable holds now) is checked
        // before anything changes: a missing token rejects the whole file.
        let service = crate::service::prepare(&new.service)?;
        let service_changed = !service.same_as(&self.service_prepared);

        // Build every new bus before touching a running one: a bus that cannot be built
        // rejects the whole file.
        self.starter.evidence_frames = new.evidence_frames;
        let starting: Vec<&BusConfig> = new
            .buses
            .iter()
            .map(|b| b.get_ref())
            .filter(|b| plan.added.contains(&b.name) || plan.restarted.contains(&b.name))
            .collect();
        for bus in &starting {
            Bus::new(bus, &new_profiles, self.starter.options())?;
        }

        // Stop the removed and changed buses first (after their polls in progress), so that a
        // restarted bus never has its port open twice.
        let (stopping, keep): (Vec<BusHandle>, Vec<BusHandle>) = std::mem::take(&mut self.buses)
            .into_iter()
            .partition(|b| plan.removed.contains(&b.name) || plan.restarted.contains(&b.name));
        // Their ends are expected: they must not stop the daemon.
        for b in &stopping {
            self.supervisor.retire(b.task.id());
        }
        let before = super::meter_pairs(&stopping);
        stop_buses(stopping).await;

        let mut started: Vec<BusHandle> = Vec::new();
        for bus in starting {
            match self.starter.spawn(bus, &new_profiles) {
                Ok(h) => started.push(h),
                // Checked above with the same inputs; kept for robustness.
                Err(e) => tracing::error!(error = %e, "reload: bus not started"),
            }
        }
        self.buses = in_file_order(&new, keep, started);
        self.bus_control.set(&self.buses);
        // Meters no longer configured on any bus: their retained statuses would otherwise
        // tell the billing core about meters that are gone.
        let removed = removed_meters(&before, &super::meter_pairs(&self.buses));
        for meter in &removed {
            self.uplink.clear_meter_status(meter);
        }
        if !removed.is_empty() {
            tracing::info!(meters = ?removed, "reload: retained statuses of removed meters cleared");
        }

        self.status_task.abort();
        self.status_task =
            super::spawn_health_forwarder(&self.buses, &self.uplink, &self.supervisor);
        self.completeness_task.abort();
        self.completeness_task = super::spawn_completeness_forwarder(
            super::completeness_plan(&new, &new_profiles),
            &self.spool,
            &self.uplink,
            &self.service_parts.completeness,
        );
        self.config = new;
        self.profiles = new_profiles;
        if service_changed {
            tracing::info!("reload: [service] changed; the diagnostics service restarts with it");
        }
        if service_changed
            || !(plan.added.is_empty() && plan.removed.is_empty() && plan.restarted.is_empty())
        {
            self.refresh_service(service).await;
        }
        Ok(plan)
    }
}

/// The running buses in the order of the new file's `[[bus]]` tables (the status page and
/// `meterd status` list them so); a handle the file does not name is kept at the end, never
/// dropped with its task still running.
fn in_file_order(new: &Config, kept: Vec<BusHandle>, started: Vec<BusHandle>) -> Vec<BusHandle> {
    let mut by_name: HashMap<String, BusHandle> = kept
        .into_iter()
        .chain(started)
        .map(|b| (b.name.clone(), b))
        .collect();
    let mut ordered: Vec<BusHandle> = new
        .buses
        .iter()
        .filter_map(|b| by_name.remove(&b.get_ref().name))
        .collect();
    ordered.extend(by_name.into_values());
    ordered
}

/// The meter ids among `before` (bus, meter) that are in no bus of `after` (a meter moved to
/// another bus keeps its id and its status topic), each once, in `before`'s order.
pub(crate) fn removed_meters(
    before: &[(String, String)],
    after: &[(String, String)],
) -> Vec<String> {
    let mut removed: Vec<String> = Vec::new();
    for (_, meter) in before {
        if !after.iter().any(|(_, m)| m == meter) && !removed.contains(meter) {
            removed.push(meter.clone());
        }
    }
    removed
}

/// Loads a configuration file off the async threads (it reads files).
async fn load_blocking(path: PathBuf) -> Result<(Config, ProfileSet), ConfigError> {
    let p = path.clone();
    match tokio::task::spawn_blocking(move || Config::load(&p)).await {
        Ok(r) => r,
        Err(e) => Err(ConfigError::file(
            &path,
            format!("configuration loader failed: {e}"),
        )),
    }
}

/// Stops buses after their polls in progress (their batches still reach the pipeline);
/// abandons a poll still running after [`BUS_STOP_BUDGET`].
async fn stop_buses(buses: Vec<BusHandle>) {
    let deadline = tokio::time::Instant::now() + BUS_STOP_BUDGET;
    for b in &buses {
        b.stop();
    }
    for b in buses {
        let abort = b.task.abort_handle();
        if tokio::time::timeout_at(deadline, b.task).await.is_err() {
            tracing::warn!(bus = %b.name, "reload: bus did not stop in time; its poll in progress is abandoned");
            abort.abort();
        }
    }
}

/// What `meterd run` was asked to do by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The signals `meterd run` reacts to, installed once so that none is missed between two
/// waits (a signal arriving while a reload runs is seen right after it).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (SIGTERM, SIGINT, SIGHUP); one that cannot be installed is logged
    /// and not waited for. Must be called within a Tokio runtime. A signal that arrives after
    /// this and before [`Signals::next`] is kept, not lost: install them before starting.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch {name}");
                    None
                }
            };
            Signals {
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
                hup: install(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> SignalEvent {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match s {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }
            loop {
                tokio::select! {
                    got = recv(&mut self.term) => match got {
                        Some(()) => return SignalEvent::Stop,
                        None => self.term = None,
                    },
                    got = recv(&mut self.int) => match got {
                        Some(()) => return SignalEvent::Stop,
                        None => self.int = None,
                    },
                    got = recv(&mut self.hup) => match got {
                        Some(()) => return SignalEvent::Reload,
                        None => self.hup = None,
                    },
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            SignalEvent::Stop
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> (Config, ProfileSet) {
        match Config::from_text(Path::new("test.toml"), text) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    const BASE: &str = r#"
gateway = "gw-01"
data_dir = "/tmp/x"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[bus]]
name = "dlt"
transport = "tcp"
host = "127.0.0.1:10645"
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
interval = "1s"

[[bus]]
name = "rtu"
transport = "tcp"
host = "127.0.0.1:10502"
baud = 9600
[[bus.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
interval = "1s"
"#;

    fn plan_of(old: &str, new: &str) -> ReloadPlan {
        let (a, pa) = load(old);
        let (b, pb) = load(new);
        plan(&a, &pa, &b, &pb)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_same_file_keeps_every_bus() {
        let p = plan_of(BASE, BASE);
        assert_eq!(p.kept, names(&["dlt", "rtu"]));
        assert!(p.restarted.is_empty() && p.added.is_empty() && p.removed.is_empty());
        assert!(p.needs_restart.is_empty());
        assert_eq!(
            p.summary(),
            "reload: 2 buses kept, 0 restarted, 0 added, 0 removed"
        );
    }

    #[test]
    fn moved_lines_comments_and_spelled_out_defaults_change_nothing() {
        // Spans differ (the meters' tables move down); values are the same.
        let moved = format!(
            "# a comment\n\n{}",
            BASE.replace(
                "baud = 9600",
                "baud = 9600\nparity = \"even\"\nstop_bits = 1"
            )
        );
        let p = plan_of(BASE, &moved);
        assert_eq!(p.kept, names(&["dlt", "rtu"]));
    }

    #[test]
    fn an_added_meter_restarts_only_its_bus() {
        let new = format!(
            "{BASE}[[bus.meter]]\nprotocol = \"modbus-rtu\"\nunit = 2\nprofile = \"generic-modbus\"\ninterval = \"1s\"\n"
        );
        let p = plan_of(BASE, &new);
        assert_eq!(p.kept, names(&["dlt"]));
        assert_eq!(p.restarted, names(&["rtu"]));
        assert_eq!(
            p.summary(),
            "reload: 1 buses kept, 1 restarted, 0 added, 0 removed"
        );
    }

    #[test]
    fn a_removed_or_changed_meter_restarts_its_bus() {
        let removed = BASE.replace(
            "[[bus.meter]]\nprotocol = \"modbus-rtu\"\nunit = 1\nprofile = \"eastron-sdm630\"\ninterval = \"1s\"\n",
            "",
        );
        assert_ne!(removed, BASE);
        let p = plan_of(BASE, &removed);
        assert_eq!((p.kept, p.restarted), (names(&["dlt"]), names(&["rtu"])));

        let changed = BASE.replace(
            "unit = 1\nprofile = \"eastron-sdm630\"\ninterval = \"1s\"",
            "unit = 1\nprofile = \"eastron-sdm630\"\ninterval = \"2s\"",
        );
        let p = plan_of(BASE, &changed);
        assert_eq!((p.kept, p.restarted), (names(&["dlt"]), names(&["rtu"])));

        let timing = BASE.replace("baud = 9600", "baud = 9600\ntiming = { retries = 3 }");
        let p = plan_of(BASE, &timing);
        assert_eq!((p.kept, p.restarted), (names(&["dlt"]), names(&["rtu"])));
    }

    #[test]
    fn buses_are_added_and_removed_by_name() {
        let renamed = BASE.replace("name = \"rtu\"", "name = \"rtu-2\"");
        let p = plan_of(BASE, &renamed);
        assert_eq!(p.kept, names(&["dlt"]));
        assert_eq!(p.added, names(&["rtu-2"]));
        assert_eq!(p.removed, names(&["rtu"]));
        assert!(p.restarted.is_empty());
        assert_eq!(
            p.summary(),
            "reload: 1 buses kept, 0 restarted, 1 added, 1 removed"
        );
    }

    #[test]
    fn a_changed_profile_restarts_the_buses_that_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = include_str!("../../config/profiles/eastron-sdm630.toml");
        std::fs::write(dir.path().join("sdm630.toml"), builtin).unwrap();
        let with_dir = format!(
            "profile_dirs = [{:?}]\n{BASE}",
            dir.path().display().to_string()
        );
        let (a, pa) = load(&with_dir);
        // A copy of the built-in profile changes nothing.
        assert_eq!(plan(&a, &pa, &a, &pa).kept, names(&["dlt", "rtu"]));
        let (b0, pb0) = load(BASE);
        assert_eq!(plan(&b0, &pb0, &a, &pa).kept, names(&["dlt", "rtu"]));
        // An edited one restarts the bus whose meter uses it, not the other.
        let edited = builtin.replacen("description = \"", "description = \"edited ", 1);
        assert_ne!(edited, builtin);
        std::fs::write(dir.path().join("sdm630.toml"), edited).unwrap();
        let (b, pb) = load(&with_dir);
        let p = plan(&a, &pa, &b, &pb);
        assert_eq!((p.kept, p.restarted), (names(&["dlt"]), names(&["rtu"])));
    }

    #[test]
    fn evidence_frames_restarts_every_bus() {
        let p = plan_of(BASE, &format!("evidence_frames = false\n{BASE}"));
        assert_eq!(p.restarted, names(&["dlt", "rtu"]));
    }

    #[test]
    fn settings_that_need_a_restart_are_named() {
        let new = BASE
            .replace("gw-01", "gw-02")
            .replace("/tmp/x", "/tmp/y")
            .replace("127.0.0.1:1883", "127.0.0.1:1884")
            .replace(
                "[mqtt]",
                "[spool]\nmax_bytes = \"1MiB\"\n[validation]\nclock_limit = \"30s\"\n\
                 [control]\n[[control.key]]\nkey_id = \"k\"\n\
                 public_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n[mqtt]",
            );
        let p = plan_of(BASE, &new);
        assert_eq!(
            p.needs_restart,
            vec![
                "gateway",
                "data_dir",
                "mqtt",
                "spool",
                "validation",
                "control"
            ]
        );
        let new = BASE.replace(
            "[mqtt]",
            "[events]\ninterval = \"5m\"\n[meter_clock]\nsync = false\n[mqtt]",
        );
        assert_eq!(
            plan_of(BASE, &new).needs_restart,
            vec!["events", "meter_clock"]
        );
        let new = BASE.replace(
            "[mqtt]",
            "[freeze]\nbus_share_percent = 10\n[gateway_clock]\nsynchronised = \"trusted\"\n[mqtt]",
        );
        assert_eq!(
            plan_of(BASE, &new).needs_restart,
            vec!["freeze", "gateway_clock"]
        );
        assert_eq!(
            p.kept,
            names(&["dlt", "rtu"]),
            "buses are not restarted for them"
        );
    }

    #[test]
    fn a_reload_error_is_one_line() {
        let e = match Config::from_text(Path::new("t.toml"), &BASE.replace("unit = 1", "unit = 0"))
        {
            Ok(_) => panic!("accepted"),
            Err(e) => ReloadError::from(e),
        };
        assert!(
            e.to_string().contains('\n'),
            "the source excerpt is there: {e}"
        );
        let line = e.one_line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with("t.toml:"), "{line}");
        assert!(line.contains("bus[1].meter[0].unit"), "{line}");
    }
}
