//! The event outbox and its counters, on real files.

use super::*;
use crate::reading::event::MeterEvent;
use crate::spool::SpoolOptions;
use crate::spool::tests::batch;

fn open(dir: &tempfile::TempDir, max_bytes: u64) -> Spool {
    Spool::open(
        dir.path().join("spool.db"),
        SpoolOptions::numbered_from_one(max_bytes),
    )
    .unwrap()
}

fn event(meter: &str, ty: &str, n: u64) -> EventNote {
    EventNote::Event(MeterEvent::new(
        "gw",
        meter,
        ty,
        n,
        "2026-12-07T00:00:00.000Z",
    ))
}

fn baseline(meter: &str, ty: &str, n: u64) -> EventNote {
    EventNote::Baseline {
        meter: meter.into(),
        ty: ty.into(),
        n,
    }
}

#[test]
fn events_are_stored_once_per_counter_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 1 << 20);
    // First contact: the baseline is remembered, nothing is published.
    let rows = s.append_events(&[baseline("m1", "cover_open", 4)]).unwrap();
    assert!(rows.rows.is_empty());
    assert_eq!(s.pending(None, 10).unwrap(), []);
    // Occurrences 5 and 6; a second read of 5 (and of the baseline's 4) is skipped.
    let rows = s
        .append_events(&[event("m1", "cover_open", 5), event("m1", "cover_open", 6)])
        .unwrap();
    assert_eq!(rows.rows.len(), 2);
    assert!(rows.rows.iter().all(|r| r.kind == MessageKind::Event));
    let again = s
        .append_events(&[event("m1", "cover_open", 4), event("m1", "cover_open", 5)])
        .unwrap();
    assert!(again.rows.is_empty());
    drop(s);
    let mut s = open(&dir, 1 << 20);
    let counters = s.event_counters().unwrap();
    assert_eq!(counters[&("m1".into(), "cover_open".into())], 6);
    let pending = s.pending(None, 10).unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].kind, MessageKind::Event);
    assert_eq!(pending[0].id, "gw/m1/cover_open/5");
    let back: MeterEvent = serde_json::from_slice(&pending[1].payload).unwrap();
    assert_eq!(back.n, 6);
    // Deleted on ack only.
    assert!(s.ack(pending[0].rowid).unwrap());
    assert_eq!(s.pending(None, 10).unwrap().len(), 1);
}

#[test]
fn gateway_events_are_numbered_by_the_spool_per_meter() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 1 << 20);
    let rows = s
        .append_events(&[
            event("m1", "clock_drift", 0),
            event("m1", "time_sync", 0),
            event("m2", "clock_drift", 0),
        ])
        .unwrap()
        .rows;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "gw/m1/clock_drift/1",
            "gw/m1/time_sync/2",
            "gw/m2/clock_drift/1"
        ]
    );
    drop(s);
    let mut s = open(&dir, 1 << 20);
    let rows = s
        .append_events(&[event("m1", "time_sync", 0)])
        .unwrap()
        .rows;
    assert_eq!(rows[0].id, "gw/m1/time_sync/3");
    let back: MeterEvent = serde_json::from_slice(&rows[0].payload).unwrap();
    assert_eq!((back.n, back.id.as_str()), (3, "gw/m1/time_sync/3"));
}

#[test]
fn a_full_spool_drops_readings_never_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 4_000);
    s.append_events(&[event("m1", "power_down", 1)]).unwrap();
    for i in 0..40 {
        s.append("gw", vec![batch("m1", 3, &format!("{i}"))])
            .unwrap();
    }
    let pending = s.pending(None, 1000).unwrap();
    assert!(pending.len() < 41, "the overflow policy dropped readings");
    assert_eq!(pending[0].kind, MessageKind::Event);
    assert_eq!(pending[0].id, "gw/m1/power_down/1");
}
