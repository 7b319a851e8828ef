//! Meter events from the buses to the spool, and the counter view the buses consult.
//!
//! The bus tasks hand up [`EventNote`]s: events are appended to the spool (outbox and counters
//! in one transaction, see `spool::events`) and handed to the uplink like readings; baselines
//! only move a counter. [`CounterView`] is the in-memory copy of the stored counters the buses
//! ask "what was the last occurrence stored?": loaded from the spool at start, updated as
//! notes are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::OnStored;
use super::spool_outbox::FreshRows;
use crate::bus::event_collect::EventBook;
use crate::reading::event::{EventNote, is_gateway_type};
use crate::spool::Spool;
use crate::sync::lock;

/// The stored counters, per meter and type, in memory.
#[derive(Debug, Default)]
pub struct CounterView {
    counters: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl CounterView {
    /// The view of every counter `spool` holds.
    pub fn load(spool: &Spool) -> Result<CounterView, crate::spool::SpoolError> {
        let view = CounterView::default();
        for ((meter, ty), n) in spool.event_counters()? {
            view.set(&meter, &ty, n);
        }
        Ok(view)
    }

    fn set(&self, meter: &str, ty: &str, n: u64) {
        lock(&self.counters)
            .entry(meter.to_owned())
            .or_default()
            .insert(ty.to_owned(), n);
    }

    /// Notes what a stored note changed (a meter event raises its counter; a baseline sets it).
    fn stored(&self, note: &EventNote) {
        match note {
            EventNote::Baseline { meter, ty, n } => self.set(meter, ty, *n),
            EventNote::Event(e) if !is_gateway_type(&e.ty) => {
                let mut all = lock(&self.counters);
                let c = all
                    .entry(e.meter.clone())
                    .or_default()
                    .entry(e.ty.clone())
                    .or_insert(0);
                *c = (*c).max(e.n);
            }
            EventNote::Event(_) | EventNote::ClockChecked { .. } => {}
        }
    }
}

impl EventBook for CounterView {
    fn last(&self, meter: &str, ty: &str) -> Option<u64> {
        lock(&self.counters).get(meter)?.get(ty).copied()
    }
}

/// Meters whose last clock check found the clock off, with the offset (ms): the writer marks
/// their readings' meter time stamps by it (see `validation`). Cleared by a check in limit.
#[derive(Debug, Default)]
pub struct ClockMarks(Mutex<HashMap<String, i64>>);

impl ClockMarks {
    /// The offset found by `meter`'s last clock check, if it was off.
    pub fn off_ms(&self, meter: &str) -> Option<i64> {
        lock(&self.0).get(meter).copied()
    }

    /// Notes a clock check's result.
    pub fn note(&self, meter: &str, off_ms: Option<i64>) {
        let mut m = lock(&self.0);
        match off_ms {
            Some(off) => {
                m.insert(meter.to_owned(), off);
            }
            None => {
                m.remove(meter);
            }
        }
    }
}

/// Most notes kept in memory while the spool cannot be written; past that the oldest are
/// given up, logged. Their counters were not stored: after a restart the gateway asks the
/// meter again for the occurrences its history still holds (the running bus does not: it
/// counts them as handed up).
pub const MAX_WAITING: usize = 10_000;

/// Stores the buses' events as they come, until every bus has stopped. A store that fails is
/// retried every 5 s with the notes kept in memory (bounded by [`MAX_WAITING`]).
pub async fn run(
    mut rx: mpsc::Receiver<EventNote>,
    spool: Arc<Mutex<Spool>>,
    view: Arc<CounterView>,
    marks: Arc<ClockMarks>,
    fresh: FreshRows,
    on_stored: OnStored,
) {
    let mut waiting: Vec<EventNote> = Vec::new();
    let take = |n: EventNote, waiting: &mut Vec<EventNote>| match n {
        // Clock checks only mark readings; nothing to store.
        EventNote::ClockChecked {
            meter,
            offset_ms,
            off,
            ..
        } => marks.note(&meter, off.then_some(offset_ms)),
        other => waiting.push(other),
    };
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(n) => take(n, &mut waiting),
                None => return,
            }
            if waiting.is_empty() {
                continue;
            }
        }
        while let Ok(n) = rx.try_recv() {
            take(n, &mut waiting);
        }
        if waiting.len() > MAX_WAITING {
            let gone = waiting.len() - MAX_WAITING;
            waiting.drain(..gone);
            tracing::error!(
                gone,
                "meter events could not be stored for too long; given up (a restart reads those \
                 still in the meters' histories again)"
            );
        }
        let batch = std::mem::take(&mut waiting);
        let s = spool.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = lock(&s).append_events(&batch);
            (r, batch)
        })
        .await;
        match result {
            Ok((Ok(stored), batch)) => {
                for note in &batch {
                    view.stored(note);
                }
                if !stored.rows.is_empty() {
                    fresh.add(stored);
                    on_stored();
                }
            }
            Ok((Err(e), batch)) => {
                tracing::error!(error = %e, kept = batch.len(), "cannot store meter events; retrying");
                waiting = batch;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Err(e) => tracing::error!(error = %e, "event store task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::event::MeterEvent;

    #[test]
    fn the_view_follows_what_is_stored() {
        let v = CounterView::default();
        assert_eq!(v.last("m1", "power_down"), None);
        v.stored(&EventNote::Baseline {
            meter: "m1".into(),
            ty: "power_down".into(),
            n: 4,
        });
        assert_eq!(v.last("m1", "power_down"), Some(4));
        let e = MeterEvent::new("gw", "m1", "power_down", 6, "2026-12-07T00:00:00.000Z");
        v.stored(&EventNote::Event(e));
        assert_eq!(v.last("m1", "power_down"), Some(6));
        // A second read of an older one does not lower it; gateway events count elsewhere.
        let e = MeterEvent::new("gw", "m1", "power_down", 5, "2026-12-07T00:00:00.000Z");
        v.stored(&EventNote::Event(e));
        let g = MeterEvent::new("gw", "m1", "time_sync", 0, "2026-12-07T00:00:00.000Z");
        v.stored(&EventNote::Event(g));
        assert_eq!(v.last("m1", "power_down"), Some(6));
        assert_eq!(v.last("m1", "time_sync"), None);
    }
}
