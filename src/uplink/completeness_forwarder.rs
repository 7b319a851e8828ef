//! Forwards the completeness of daily settlement records to the uplink's retained
//! `…/completeness` topic (`meterd.completeness.v1`).
//!
//! Every [`EVERY`] it looks at the spool's ledger change counter; when the ledger changed (a
//! record stored, delivered or lost), or every [`REFRESH`] anyway (a new day begins), it reads
//! the ledger on a blocking thread (the spool is synchronous), builds the figures of the last
//! seven days and hands them to the uplink when they differ from the last ones handed over.
//! The latest message is also kept for the diagnostics service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::UplinkHandle;
use crate::clock::{UtcOffset, rfc3339_millis, wall_clock_ms};
use crate::ingest::completeness::{self, CompletenessMessage, DAYS};
use crate::spool::Spool;
use crate::sync::lock;

/// How often the ledger's change counter is looked at.
pub const EVERY: Duration = Duration::from_secs(2);
/// The figures are taken at least this often (the days roll over).
pub const REFRESH: Duration = Duration::from_secs(600);

/// What the forwarder needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct CompletenessPlan {
    /// Gateway id.
    pub gateway: String,
    /// The meters collecting daily records, with their time zones.
    pub meters: Vec<(String, UtcOffset)>,
    /// The meters' daily freeze time, minutes after midnight.
    pub daily_at: u16,
}

/// Runs until aborted (nothing to do without a meter collecting daily records).
pub async fn forward_completeness(
    plan: CompletenessPlan,
    spool: Arc<Mutex<Spool>>,
    uplink: UplinkHandle,
    latest: Arc<Mutex<Option<CompletenessMessage>>>,
) {
    if plan.meters.is_empty() {
        return std::future::pending().await;
    }
    let changes = lock(&spool).ledger_changes();
    let mut seen: Option<u64> = None;
    let mut taken = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let now_changes = changes.load(std::sync::atomic::Ordering::Relaxed);
        if seen == Some(now_changes) && taken.elapsed() < REFRESH {
            continue;
        }
        seen = Some(now_changes);
        taken = tokio::time::Instant::now();
        let spool = spool.clone();
        let plan2 = plan.clone();
        let built = tokio::task::spawn_blocking(move || {
            let now = wall_clock_ms();
            // Stamps sort as text within one zone; two days of margin cover every zone.
            let from = crate::clock::rfc3339_ms(now - (DAYS + 2) * 86_400_000);
            let rows = lock(&spool).ledger("daily", &from[..10])?;
            Ok::<_, crate::spool::SpoolError>(completeness::build(
                &plan2.gateway,
                &plan2.meters,
                &rows,
                now,
                plan2.daily_at,
                &rfc3339_millis(crate::clock::now()),
            ))
        })
        .await;
        let message = match built {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the freeze ledger; completeness not updated");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "completeness task failed");
                continue;
            }
        };
        let mut last = lock(&latest);
        if last.as_ref().is_some_and(|l| l.same_figures(&message)) {
            continue;
        }
        match serde_json::to_vec(&message) {
            Ok(payload) => uplink.set_completeness(payload),
            Err(e) => tracing::error!(error = %e, "cannot encode the completeness message"),
        }
        *last = Some(message);
    }
}
