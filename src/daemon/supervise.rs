//! Supervision of the daemon's long-running tasks, and the systemd notifications.
//!
//! Every critical task (each bus, the ingest pipeline, the uplink, the health forwarder) runs
//! inside a small wrapper task ([`supervise`]) that awaits it and, when it ends on its own —
//! it returned, or it panicked — sends an [`Ended`] on the daemon's channel. The daemon's
//! JoinHandles are the wrappers': [`super::Daemon::stop`] awaits them as before, and nothing
//! polls a handle twice (the wrapper alone awaits the inner task). Aborting a wrapper aborts
//! its task and reports nothing: an abort is always deliberate.
//!
//! A task stopped on purpose while the daemon keeps running (a bus stopped by a reload) is
//! marked *retired* before it is asked to stop; its end is then expected and does not count.
//! Any other end makes [`super::Daemon::run_until`] stop the rest and return [`TaskEnded`],
//! which `meterd run` turns into exit code 1 so that systemd restarts it.
//!
//! [`Notifier`] speaks systemd's notify protocol (`Type=notify`): `READY=1` once started,
//! `STATUS=` lines, `RELOADING=1`/`STOPPING=1`, and `WATCHDOG=1` at half the interval systemd
//! asks for (`WATCHDOG_USEC`), sent only while every critical task is alive. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::collections::HashSet;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id, JoinError, JoinHandle};

/// A supervised task that ended on its own.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The wrapper task's id (what [`JoinHandle::id`] of the daemon's handle says).
    pub id: Id,
    /// Which task: `"uplink"`, `"ingest"`, `"health forwarder"`, `"bus NAME"`.
    pub task: String,
    /// Why: `"returned"` or `"panicked: MESSAGE"`.
    pub why: String,
}

/// A critical task ended while the daemon was running: the daemon stopped the rest.
#[derive(Debug, Clone, Error)]
#[error("task {task} ended unexpectedly ({why}); the daemon stopped")]
pub struct TaskEnded {
    /// Which task.
    pub task: String,
    /// Why it ended.
    pub why: String,
}

impl From<Ended> for TaskEnded {
    fn from(e: Ended) -> Self {
        TaskEnded {
            task: e.task,
            why: e.why,
        }
    }
}

/// Aborts a task when dropped (the wrapper's inner task goes with the wrapper).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a task ended, from its join result.
fn why<T>(result: &Result<T, JoinError>) -> String {
    match result {
        Ok(_) => "returned".to_owned(),
        // `Display` of a panicked JoinError: `task N panicked with message "…"`.
        Err(e) if e.is_panic() => {
            let text = e.to_string();
            match text.split_once(" panicked with message ") {
                Some((_, m)) => format!("panicked: {}", m.trim_matches('"')),
                None => "panicked".to_owned(),
            }
        }
        Err(_) => "was cancelled".to_owned(),
    }
}

/// Wraps the running task `inner`: the returned handle ends when `inner` does, with
/// `finish(result)`; an end on its own is reported on `ended`. Aborting the returned handle
/// aborts `inner` and reports nothing.
pub fn supervise<T, U>(
    task: impl Into<String>,
    inner: JoinHandle<T>,
    ended: &mpsc::UnboundedSender<Ended>,
    finish: impl FnOnce(Result<T, JoinError>) -> U + Send + 'static,
) -> JoinHandle<U>
where
    T: Send + 'static,
    U: Send + 'static,
{
    let task = task.into();
    let ended = ended.clone();
    // Made out here and moved in: dropping the wrapper aborts `inner` even when the wrapper
    // was aborted before its first poll.
    let guard = AbortOnDrop(inner.abort_handle());
    tokio::spawn(async move {
        let _guard = guard;
        let result = inner.await;
        let why = why(&result);
        let _ = ended.send(Ended {
            id: tokio::task::id(),
            task,
            why,
        });
        finish(result)
    })
}

/// The daemon's side of supervision: the channel the wrappers report on, and the tasks
/// stopped on purpose whose end is expected.
#[derive(Debug)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Ended>,
    rx: mpsc::UnboundedReceiver<Ended>,
    retired: HashSet<Id>,
}

impl Default for Supervisor {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Supervisor {
            tx,
            rx,
            retired: HashSet::new(),
        }
    }
}

impl Supervisor {
    /// Where wrappers report.
    pub fn sender(&self) -> &mpsc::UnboundedSender<Ended> {
        &self.tx
    }

    /// The task with this (wrapper) id is being stopped on purpose: its end does not count.
    pub fn retire(&mut self, id: Id) {
        self.retired.insert(id);
    }

    /// The next unexpected end (ends of retired tasks are skipped). Cancel-safe.
    pub async fn next_unexpected(&mut self) -> Ended {
        loop {
            match self.rx.recv().await {
                Some(e) if self.retired.remove(&e.id) => {
                    tracing::debug!(task = %e.task, "a task stopped on purpose ended");
                }
                Some(e) => return e,
                // We hold a sender: never closed while `self` lives.
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// systemd's notify protocol; every call is a no-op without `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), when systemd asks for it.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be this process when set).
    pub fn from_env() -> Self {
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        Notifier { watchdog }
    }

    /// The ping interval, if systemd watches this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    /// A `STATUS=` line.
    pub fn status(&self, status: &str) {
        self.send(&[sd_notify::NotifyState::Status(status)]);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_returning_task_is_reported_with_its_name() {
        let mut sup = Supervisor::default();
        let inner = tokio::spawn(async { 7 });
        let h = supervise("uplink", inner, sup.sender(), |r| r.ok());
        let id = h.id();
        assert_eq!(h.await.ok().flatten(), Some(7));
        let e = sup.next_unexpected().await;
        assert_eq!(
            (e.id, e.task.as_str(), e.why.as_str()),
            (id, "uplink", "returned")
        );
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_message() {
        let mut sup = Supervisor::default();
        let inner = tokio::spawn(async {
            if true {
                panic!("boom in ingest");
            }
        });
        let h = supervise("ingest", inner, sup.sender(), |r| r.is_ok());
        assert_eq!(h.await.ok(), Some(false));
        let e = sup.next_unexpected().await;
        assert_eq!(e.task, "ingest");
        assert!(e.why.starts_with("panicked"), "{}", e.why);
        assert!(e.why.contains("boom in ingest"), "{}", e.why);
    }

    #[tokio::test]
    async fn an_aborted_wrapper_aborts_its_task_and_reports_nothing() {
        let mut sup = Supervisor::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let inner = tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        let h = supervise("health forwarder", inner, sup.sender(), |_| ());
        h.abort();
        // The inner task is gone: its end of the oneshot is dropped.
        assert!(rx.await.is_err());
        let got = tokio::time::timeout(Duration::from_millis(200), sup.next_unexpected()).await;
        assert!(got.is_err(), "an abort was reported: {got:?}");
    }

    #[tokio::test]
    async fn a_retired_task_does_not_count() {
        let mut sup = Supervisor::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let bus = supervise(
            "bus a",
            tokio::spawn(async move {
                let _ = stop_rx.await;
            }),
            sup.sender(),
            |_| (),
        );
        let other = supervise("bus b", tokio::spawn(async {}), sup.sender(), |_| ());
        sup.retire(bus.id());
        let _ = stop_tx.send(());
        let _ = bus.await;
        let _ = other.await;
        let e = sup.next_unexpected().await;
        assert_eq!(e.task, "bus b");
    }
}
