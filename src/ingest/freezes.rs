//! Freeze records from the buses to the spool, and the ledger view the buses consult.
//!
//! The bus tasks hand up [`FreezeEvent`]s: a complete record is appended to the spool (the
//! outbox and the ledger, one transaction) and handed to the uplink like a reading; a record
//! that can never be read is written to the ledger as lost, with why. [`LedgerView`] is the
//! in-memory mirror the buses ask "is this record settled?" before reading one: loaded from
//! the spool's ledger at start, updated as records are stored or lost.
//!
//! Memory: the view keeps one bit per record, per meter and kind, over the meter's whole
//! history (64 days, 256 hours, 16 months; load records: 256 15-minute slots, 64 hours):
//! about 160 bytes per meter with all four kinds, so 1,000 meters cost ~160 KB plus their ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meter_protocols::dlt645::freeze::{FreezeKind, LOAD_PROFILE_SLOT_MINUTES, LocalMinute};
use tokio::sync::mpsc;

use super::OnStored;
use super::spool_outbox::FreshRows;
use crate::bus::freeze_collect::{FreezeBook, FreezeEvent};
use crate::spool::Spool;
use crate::sync::{lock, try_lock};

/// Records of one meter and kind, one bit per period: bit `k` is period `newest - k`.
#[derive(Debug, Clone, Default)]
struct Window {
    /// The period index of bit 0 (days, hours or months since the epoch).
    newest: i64,
    bits: [u64; 4],
}

impl Window {
    const SPAN: i64 = 256;

    fn get(&self, period: i64) -> bool {
        let k = self.newest - period;
        (0..Self::SPAN).contains(&k) && self.bits[(k / 64) as usize] & (1u64 << (k % 64)) != 0
    }

    fn clear(&mut self, period: i64) {
        let k = self.newest - period;
        if (0..Self::SPAN).contains(&k) {
            self.bits[(k / 64) as usize] &= !(1u64 << (k % 64));
        }
    }

    fn set(&mut self, period: i64) {
        if period > self.newest {
            self.shift(period - self.newest);
            self.newest = period;
        }
        let k = self.newest - period;
        if (0..Self::SPAN).contains(&k) {
            self.bits[(k / 64) as usize] |= 1u64 << (k % 64);
        }
    }

    /// Makes room for `by` newer periods: every bit moves `by` places older.
    fn shift(&mut self, by: i64) {
        if by >= Self::SPAN {
            self.bits = [0; 4];
            return;
        }
        let by = by as u32;
        let (words, bits) = ((by / 64) as usize, by % 64);
        let old = self.bits;
        let mut new = [0u64; 4];
        for (i, slot) in new.iter_mut().enumerate() {
            let Some(src) = i.checked_sub(words) else {
                continue;
            };
            let mut v = old[src] << bits;
            if bits > 0
                && let Some(lower) = src.checked_sub(1)
            {
                v |= old[lower] >> (64 - bits);
            }
            *slot = v;
        }
        self.bits = new;
    }
}

/// The position of `kind` in a meter's windows.
fn kind_index(kind: FreezeKind) -> usize {
    FreezeKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// The period index of a stamp of `kind`.
fn period(kind: FreezeKind, stamp: LocalMinute) -> i64 {
    match kind {
        FreezeKind::Daily => stamp.0.div_euclid(1440),
        FreezeKind::Hourly => stamp.0.div_euclid(60),
        FreezeKind::LoadProfile => stamp.0.div_euclid(LOAD_PROFILE_SLOT_MINUTES),
        FreezeKind::Monthly => {
            let (y, m, ..) = stamp.civil();
            y * 12 + i64::from(m)
        }
    }
}

/// `2026-12-07T00:00+08:00` (a ledger stamp) as the meter's local minute.
pub fn parse_stamp(stamp: &str) -> Option<LocalMinute> {
    let local = stamp.get(..16)?;
    let (date, time) = local.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<u32>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (h, min) = time.split_once(':')?;
    Some(LocalMinute::from_civil(
        i64::from(y),
        m,
        day,
        h.parse().ok()?,
        min.parse().ok()?,
    ))
}

/// Which records are settled (stored, delivered or lost), per meter and kind, in memory.
#[derive(Debug, Default)]
pub struct LedgerView {
    /// Per meter, one window per kind (in [`FreezeKind::ALL`] order): keyed by the id alone so
    /// that a lookup by `&str` allocates nothing (the buses ask for every due record).
    windows: Mutex<HashMap<String, [Window; 4]>>,
}

impl LedgerView {
    /// The view of everything `spool`'s ledger holds (all its rows are settled records).
    pub fn load(spool: &Spool) -> Result<LedgerView, crate::spool::SpoolError> {
        let view = LedgerView::default();
        for kind in FreezeKind::ALL {
            for row in spool.ledger(kind.name(), "")? {
                if let Some(stamp) = parse_stamp(&row.stamp) {
                    view.settle(&row.meter, kind, stamp);
                }
            }
        }
        Ok(view)
    }

    /// Notes the record as missing again (dropped unsent by the spool's overflow policy).
    pub fn unsettle(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) {
        if let Some(w) = lock(&self.windows).get_mut(meter) {
            w[kind_index(kind)].clear(period(kind, stamp));
        }
    }

    /// Notes a record id (`{gateway}/{meter}/{kind}/{stamp}`) as missing again.
    pub fn unsettle_id(&self, id: &str) {
        let mut parts = id.rsplitn(3, '/');
        let (Some(stamp), Some(kind), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let meter = rest.rsplit_once('/').map_or(rest, |(_, m)| m);
        if let (Some(kind), Some(stamp)) = (FreezeKind::parse(kind), parse_stamp(stamp)) {
            self.unsettle(meter, kind, stamp);
        }
    }

    /// Notes the record as settled.
    pub fn settle(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) {
        let mut windows = lock(&self.windows);
        let w = match windows.get_mut(meter) {
            Some(w) => w,
            None => windows.entry(meter.to_owned()).or_default(),
        };
        w[kind_index(kind)].set(period(kind, stamp));
    }
}

impl FreezeBook for LedgerView {
    fn settled(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) -> bool {
        lock(&self.windows)
            .get(meter)
            .is_some_and(|w| w[kind_index(kind)].get(period(kind, stamp)))
    }
}

/// Stores the buses' freeze records and losses as they come, until every bus has stopped.
/// A store that fails is retried (the record stays in memory, at most [`MAX_WAITING`]; past
/// that the oldest are given up, counted in the log: the meter still holds them and back-fill
/// reads them again once the ledger does not list them).
pub async fn run(
    mut rx: mpsc::Receiver<FreezeEvent>,
    spool: Arc<Mutex<Spool>>,
    view: Arc<LedgerView>,
    fresh: FreshRows,
    on_stored: OnStored,
) {
    let mut waiting: Vec<FreezeEvent> = Vec::new();
    let mut forget = tokio::time::interval(FORGET_EVERY);
    loop {
        if waiting.is_empty() {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => waiting.push(e),
                    None => return,
                },
                _ = forget.tick() => {
                    // Records the spool dropped unsent (full) are missing again: back-fill
                    // reads them once the view forgets them.
                    // Not worth waiting for on an async thread (a writer may be in an
                    // fsync): the next tick takes them.
                    let requeued = try_lock(&spool).map(|mut s| s.take_requeued());
                    for id in requeued.into_iter().flatten() {
                        view.unsettle_id(&id);
                    }
                    continue;
                }
            }
        }
        while let Ok(e) = rx.try_recv() {
            waiting.push(e);
        }
        if waiting.len() > MAX_WAITING {
            let gone = waiting.len() - MAX_WAITING;
            waiting.drain(..gone);
            tracing::error!(
                gone,
                "freeze records could not be stored for too long; back-fill reads them again"
            );
        }
        let batch = std::mem::take(&mut waiting);
        let s = spool.clone();
        let result = tokio::task::spawn_blocking(move || store(&s, batch)).await;
        match result {
            Ok((stored, settled, unstored, error)) => {
                for (meter, kind, stamp) in settled {
                    view.settle(&meter, kind, stamp);
                }
                if !stored.rows.is_empty() {
                    fresh.add(stored);
                    on_stored();
                }
                if let Some(e) = error {
                    tracing::error!(error = %e, kept = unstored.len(), "cannot store freeze records; retrying");
                    waiting = unstored;
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "freeze store task failed"),
        }
    }
}

/// How often records the spool dropped unsent are forgotten by the view (made missing again).
pub const FORGET_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Most freeze events kept in memory while the spool cannot be written.
pub const MAX_WAITING: usize = 10_000;

type Stored = (
    crate::spool::AppendedRows,
    Vec<(String, FreezeKind, LocalMinute)>,
    Vec<FreezeEvent>,
    Option<crate::spool::SpoolError>,
);

/// Stores `events` (records in one transaction, then each loss): what was stored, what is
/// settled now, what could not be stored and why.
fn store(spool: &Mutex<Spool>, events: Vec<FreezeEvent>) -> Stored {
    let mut spool = lock(spool);
    let mut records = Vec::new();
    let mut losses = Vec::new();
    for e in events {
        match e {
            FreezeEvent::Record(r) => records.push(r),
            lost @ FreezeEvent::Lost { .. } => losses.push(lost),
        }
    }
    let mut settled = Vec::new();
    let mut unstored = Vec::new();
    let mut error = None;
    let stored = match spool.append_freezes(&records) {
        Ok(rows) => {
            for r in &records {
                if let (Some(kind), Some(stamp)) = (
                    FreezeKind::parse(&r.kind),
                    r.id.rsplit_once('/').and_then(|(_, s)| parse_stamp(s)),
                ) {
                    settled.push((r.meter.clone(), kind, stamp));
                }
            }
            rows
        }
        Err(e) => {
            unstored.extend(records.into_iter().map(FreezeEvent::Record));
            error = Some(e);
            crate::spool::AppendedRows::default()
        }
    };
    for lost in losses {
        let FreezeEvent::Lost {
            meter,
            kind,
            id,
            reason,
        } = &lost
        else {
            continue;
        };
        match spool.mark_lost(meter, kind.name(), id, reason) {
            Ok(()) => {
                tracing::warn!(%meter, %kind, %id, %reason, "freeze record lost");
                if let Some(stamp) = id.rsplit_once('/').and_then(|(_, s)| parse_stamp(s)) {
                    settled.push((meter.clone(), *kind, stamp));
                }
            }
            Err(e) => {
                error = Some(e);
                unstored.push(lost);
            }
        }
    }
    (stored, settled, unstored, error)
}

#[cfg(test)]
mod tests;
