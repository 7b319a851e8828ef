//! The ledger view's bits, and records and losses through the ingest task into a real spool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute};

use super::*;
use crate::clock::UtcOffset;
use crate::ingest::MessageKind;
use crate::reading::freeze::{FreezeOrigin, FreezeRecord};
use crate::spool::SpoolOptions;

fn day(d: u32) -> LocalMinute {
    LocalMinute::from_civil(2026, 12, d, 0, 0)
}

#[test]
fn the_window_remembers_a_meters_whole_history_and_slides() {
    let mut w = Window::default();
    w.set(1000);
    w.set(998);
    assert!(w.get(1000) && w.get(998) && !w.get(999));
    // 255 periods later the oldest is still there; 256 later it is gone.
    w.set(1255);
    assert!(w.get(1000) && w.get(1255));
    assert!(!w.get(998), "998 slid out of the 256-period window");
    w.set(1256);
    assert!(!w.get(1000));
    // Shifts across word boundaries keep every bit.
    let mut w = Window::default();
    for p in [500, 437, 436, 373, 300] {
        w.set(p);
    }
    w.set(565);
    for p in [500, 437, 436, 373, 565] {
        assert!(w.get(p), "{p}");
    }
    assert!(!w.get(300), "300 is 265 periods back");
    assert!(!w.get(501));
}

#[test]
fn stamps_parse_from_ledger_rows() {
    assert_eq!(parse_stamp("2026-12-07T00:00+08:00"), Some(day(7)));
    assert_eq!(
        parse_stamp("2026-12-07T13:00-05:30"),
        Some(LocalMinute::from_civil(2026, 12, 7, 13, 0))
    );
    assert_eq!(parse_stamp("garbage"), None);
}

fn record(meter: &str, d: u32) -> FreezeRecord {
    let origin = FreezeOrigin {
        gateway: "gw",
        meter,
        protocol: "dlt645-2007",
        offset: UtcOffset::CHINA,
        read_at: "2026-12-07T00:06:41.200Z",
    };
    FreezeRecord::new(&origin, FreezeKind::Daily, day(d), false, vec![], vec![])
}

#[tokio::test]
async fn records_and_losses_are_stored_settled_and_handed_to_the_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let spool = Arc::new(Mutex::new(
        Spool::open(&path, SpoolOptions::numbered_from_one(1 << 20)).unwrap(),
    ));
    let view = Arc::new(LedgerView::default());
    let fresh = FreshRows::default();
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(run(
        rx,
        spool.clone(),
        view.clone(),
        fresh.clone(),
        Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }),
    ));
    tx.send(FreezeEvent::Record(record("m1", 7))).await.unwrap();
    tx.send(FreezeEvent::Lost {
        meter: "m1".into(),
        kind: FreezeKind::Daily,
        id: "gw/m1/daily/2026-10-01T00:00+08:00".into(),
        reason: "no longer in the meter's history".into(),
    })
    .await
    .unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(view.settled("m1", FreezeKind::Daily, day(7)));
    assert!(view.settled(
        "m1",
        FreezeKind::Daily,
        LocalMinute::from_civil(2026, 10, 1, 0, 0)
    ));
    assert!(!view.settled("m1", FreezeKind::Daily, day(6)));
    assert!(!view.settled("m2", FreezeKind::Daily, day(7)));
    assert!(woken.load(Ordering::SeqCst) >= 1);
    let rows = lock(&spool).pending(None, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, MessageKind::Freeze);
    drop(fresh);
    // A restart: the view is loaded from the spool's ledger.
    drop(spool);
    let spool = Spool::open(&path, SpoolOptions::numbered_from_one(1 << 20)).unwrap();
    let view = LedgerView::load(&spool).unwrap();
    assert!(view.settled("m1", FreezeKind::Daily, day(7)));
    assert!(view.settled(
        "m1",
        FreezeKind::Daily,
        LocalMinute::from_civil(2026, 10, 1, 0, 0)
    ));
    assert!(!view.settled("m1", FreezeKind::Hourly, day(7)));
    // A record the spool dropped unsent is missing again.
    view.unsettle_id("gw/m1/daily/2026-12-07T00:00+08:00");
    assert!(!view.settled("m1", FreezeKind::Daily, day(7)));
    assert!(view.settled(
        "m1",
        FreezeKind::Daily,
        LocalMinute::from_civil(2026, 10, 1, 0, 0)
    ));
}
