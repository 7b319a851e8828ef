//! Forwards the completeness of settlement records to the uplink's retained topics
//! (`meterd.completeness.v1`): daily on `…/completeness`, monthly, hourly and load profile on
//! `…/completeness/monthly`, `…/completeness/hourly` and `…/completeness/load_profile`, each
//! where some meter collects it.
//!
//! Every [`EVERY`] it looks at the spool's ledger change counter; when the ledger changed (a
//! record stored, delivered or lost), or every [`REFRESH`] anyway (a new hour, day or month
//! begins), it reads the ledger on a blocking thread (the spool is synchronous), builds the
//! figures of each kind and hands each to the uplink when they differ from the last ones
//! handed over. The latest messages are also kept for the diagnostics service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meter_protocols::dlt645::freeze::FreezeKind;

use super::UplinkHandle;
use crate::clock::{rfc3339_millis, wall_clock_ms};
use crate::ingest::completeness::{
    self, CompletenessSet, DAYS, Expected, HOURS, LOAD_SLOTS, MONTHS,
};
use crate::spool::{Spool, SpoolError};
use crate::sync::lock;

/// How often the ledger's change counter is looked at.
pub const EVERY: Duration = Duration::from_secs(2);
/// The figures are taken at least this often (the hours, days and months roll over).
pub const REFRESH: Duration = Duration::from_secs(600);

/// What the forwarder needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct CompletenessPlan {
    /// Gateway id.
    pub gateway: String,
    /// The meters collecting each kind of record.
    pub expected: Expected,
    /// The meters' daily freeze time, minutes after midnight.
    pub daily_at: u16,
    /// The meters' monthly settlement (day, hour).
    pub settlement: (u8, u8),
}

/// Runs until aborted (nothing to do without a meter collecting records).
pub async fn forward_completeness(
    plan: CompletenessPlan,
    spool: Arc<Mutex<Spool>>,
    uplink: UplinkHandle,
    latest: Arc<Mutex<CompletenessSet>>,
) {
    {
        // After a reload: a kind no meter collects any more is not shown as if it were.
        let mut last = lock(&latest);
        if plan.expected.daily.is_empty() {
            last.daily = None;
        }
        if plan.expected.monthly.is_empty() {
            last.monthly = None;
        }
        if plan.expected.hourly.is_empty() {
            last.hourly = None;
        }
        if plan.expected.load_profile.is_empty() {
            last.load_profile = None;
        }
    }
    if FreezeKind::ALL
        .iter()
        .all(|k| plan.expected.of(*k).is_empty())
    {
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
        let built = tokio::task::spawn_blocking(move || build_all(&plan2, &spool)).await;
        let set = match built {
            Ok(Ok(set)) => set,
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
        if let Some(m) = set.daily
            && !last.daily.as_ref().is_some_and(|l| l.same_figures(&m))
        {
            hand_over(&uplink, FreezeKind::Daily, &m);
            last.daily = Some(m);
        }
        for (kind, new) in [
            (FreezeKind::Monthly, set.monthly),
            (FreezeKind::Hourly, set.hourly),
            (FreezeKind::LoadProfile, set.load_profile),
        ] {
            let Some(m) = new else { continue };
            let slot = match kind {
                FreezeKind::Monthly => &mut last.monthly,
                FreezeKind::LoadProfile => &mut last.load_profile,
                _ => &mut last.hourly,
            };
            if !slot.as_ref().is_some_and(|l| l.same_figures(&m)) {
                hand_over(&uplink, kind, &m);
                *slot = Some(m);
            }
        }
    }
}

fn hand_over(uplink: &UplinkHandle, kind: FreezeKind, message: &impl serde::Serialize) {
    match serde_json::to_vec(message) {
        Ok(payload) => uplink.set_completeness(kind, payload),
        Err(e) => tracing::error!(error = %e, %kind, "cannot encode the completeness message"),
    }
}

/// Every kind's figures now, from the ledger (a kind no meter collects: `None`).
fn build_all(plan: &CompletenessPlan, spool: &Mutex<Spool>) -> Result<CompletenessSet, SpoolError> {
    let now = wall_clock_ms();
    let at = rfc3339_millis(crate::clock::now());
    // Stamps sort as text within one zone; the margins cover every zone and the period the
    // oldest record closes.
    let from = |back_ms: i64| crate::clock::rfc3339_ms(now - back_ms)[..10].to_owned();
    let mut set = CompletenessSet::default();
    let daily = &plan.expected.daily;
    if !daily.is_empty() {
        let rows = lock(spool).ledger("daily", &from((DAYS + 2) * 86_400_000))?;
        set.daily = Some(completeness::build(
            &plan.gateway,
            daily,
            &rows,
            now,
            plan.daily_at,
            &at,
        ));
    }
    for (kind, back_ms) in [
        (
            FreezeKind::Monthly,
            (i64::from(MONTHS) + 2) * 31 * 86_400_000,
        ),
        (FreezeKind::Hourly, (i64::from(HOURS) + 48) * 3_600_000),
        (
            FreezeKind::LoadProfile,
            i64::from(LOAD_SLOTS) * 15 * 60_000 + 48 * 3_600_000,
        ),
    ] {
        let meters = plan.expected.of(kind);
        if meters.is_empty() {
            continue;
        }
        let rows = lock(spool).ledger(kind.name(), &from(back_ms))?;
        let m = completeness::periods(
            kind,
            &plan.gateway,
            meters,
            &rows,
            now,
            plan.settlement,
            &at,
        );
        match kind {
            FreezeKind::Monthly => set.monthly = m,
            FreezeKind::LoadProfile => set.load_profile = m,
            _ => set.hourly = m,
        }
    }
    Ok(set)
}
