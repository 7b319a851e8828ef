//! The freeze outbox and the completeness ledger, on real files.

use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute};

use super::*;
use crate::clock::UtcOffset;
use crate::reading::freeze::FreezeOrigin;
use crate::spool::SpoolOptions;
use crate::spool::tests::batch;

fn record(meter: &str, day: u32) -> FreezeRecord {
    let origin = FreezeOrigin {
        gateway: "gw",
        meter,
        protocol: "dlt645-2007",
        offset: UtcOffset::CHINA,
        read_at: "2026-12-07T00:06:41.200Z",
    };
    let values = batch(meter, 3, "12345.67").values;
    FreezeRecord::new(
        &origin,
        FreezeKind::Daily,
        LocalMinute::from_civil(2026, 12, day, 0, 0),
        false,
        values,
        vec!["68 01 16".into()],
    )
}

fn open(dir: &tempfile::TempDir, max_bytes: u64) -> Spool {
    Spool::open(
        dir.path().join("spool.db"),
        SpoolOptions::numbered_from_one(max_bytes),
    )
    .unwrap()
}

fn state(s: &Spool, meter: &str, day: u32) -> Option<LedgerState> {
    s.ledger_state(meter, "daily", &format!("2026-12-{day:02}T00:00+08:00"))
        .unwrap()
}

#[test]
fn a_record_is_stored_published_as_a_freeze_and_delivered_on_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 1 << 20);
    let r = record("m1", 7);
    let stored = s.append_freezes(std::slice::from_ref(&r)).unwrap().rows;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind, MessageKind::Freeze);
    assert_eq!(stored[0].id, "gw/m1/daily/2026-12-07T00:00+08:00");
    assert_eq!(state(&s, "m1", 7), Some(LedgerState::Stored));
    // After a crash (reopen) it is still there, payload as appended.
    drop(s);
    let mut s = open(&dir, 1 << 20);
    let pending = s.pending(None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, MessageKind::Freeze);
    let back: FreezeRecord = serde_json::from_slice(&pending[0].payload).unwrap();
    assert_eq!(back, r);
    assert_eq!(s.stats().unwrap().depth, 1);
    // The PUBACK deletes it and marks it delivered, in one transaction.
    assert!(s.ack(pending[0].rowid).unwrap());
    assert_eq!(state(&s, "m1", 7), Some(LedgerState::Delivered));
    assert!(s.pending(None, 10).unwrap().is_empty());
    // Read again (a back-fill after a crash that lost the ack): stored, still delivered.
    s.append_freezes(&[r]).unwrap();
    assert_eq!(state(&s, "m1", 7), Some(LedgerState::Delivered));
    assert_eq!(s.stats().unwrap().depth, 1);
}

#[test]
fn readings_and_freezes_share_the_outbox_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 1 << 20);
    s.append("gw", vec![batch("m1", 2, "1.00")]).unwrap();
    s.append_freezes(&[record("m1", 6)]).unwrap();
    s.append("gw", vec![batch("m1", 2, "2.00")]).unwrap();
    let kinds: Vec<(MessageKind, u64)> = s
        .pending(None, 10)
        .unwrap()
        .iter()
        .map(|p| (p.kind, p.seq))
        .collect();
    assert_eq!(
        kinds,
        [
            (MessageKind::Reading, 1),
            (MessageKind::Freeze, 0),
            (MessageKind::Reading, 2)
        ]
    );
}

#[test]
fn overflow_sends_a_dropped_record_back_to_missing_and_counts_only_readings() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&record("m1", 1)).unwrap().len() as u64;
    // Room for three records.
    let mut s = open(&dir, one * 3 + one / 2);
    s.append_freezes(&[record("m1", 1), record("m1", 2), record("m1", 3)])
        .unwrap();
    s.append_freezes(&[record("m1", 4)]).unwrap();
    // The oldest went unsent: missing again (no ledger row), not a reading drop.
    assert_eq!(state(&s, "m1", 1), None);
    assert_eq!(s.take_requeued(), ["gw/m1/daily/2026-12-01T00:00+08:00"]);
    assert!(s.take_requeued().is_empty());
    assert_eq!(state(&s, "m1", 4), Some(LedgerState::Stored));
    let stats = s.stats().unwrap();
    assert_eq!((stats.depth, stats.dropped_batches), (3, 0));
    assert_eq!(
        s.meters()
            .unwrap()
            .iter()
            .map(|m| m.dropped_batches)
            .sum::<u64>(),
        0
    );
    // Reopen: the in-memory mirror agrees with the file.
    drop(s);
    let s = open(&dir, one * 3 + one / 2);
    assert_eq!(s.stats().unwrap().depth, 3);
    drop(s);
    // One record larger than the spool is refused, not dropped silently.
    let mut s = open(&dir, one / 2);
    let err = s.append_freezes(&[record("m2", 1)]).unwrap_err();
    assert!(matches!(err, SpoolError::TooLarge { .. }), "{err}");
    assert_eq!(state(&s, "m2", 1), None);
}

#[test]
fn lost_records_are_kept_with_why_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir, 1 << 20);
    s.mark_lost(
        "m1",
        "daily",
        "gw/m1/daily/2026-10-01T00:00+08:00",
        "no longer in the meter's history (62 days)",
    )
    .unwrap();
    s.append_freezes(&[record("m1", 7)]).unwrap();
    // Marking a stored record lost changes nothing.
    s.mark_lost("m1", "daily", "gw/m1/daily/2026-12-07T00:00+08:00", "x")
        .unwrap();
    let rows = s.ledger("daily", "2026-10-01").unwrap();
    let got: Vec<(&str, LedgerState, Option<&str>)> = rows
        .iter()
        .map(|r| (r.stamp.as_str(), r.state, r.detail.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-10-01T00:00+08:00",
                LedgerState::Lost,
                Some("no longer in the meter's history (62 days)")
            ),
            ("2026-12-07T00:00+08:00", LedgerState::Stored, None),
        ]
    );
    assert_eq!(s.ledger("daily", "2026-12-08").unwrap(), []);
    assert_eq!(s.ledger("monthly", "2000").unwrap(), []);
}
