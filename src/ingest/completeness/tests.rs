//! Completeness figures from ledger rows.

use super::*;
use crate::clock::parse_rfc3339;

fn entry(meter: &str, stamp: &str, state: LedgerState) -> LedgerEntry {
    LedgerEntry {
        meter: meter.into(),
        kind: "daily".into(),
        stamp: stamp.into(),
        state,
        id: format!("gw/{meter}/daily/{stamp}"),
        updated_at: "x".into(),
        detail: None,
    }
}

#[test]
fn each_day_counts_expected_delivered_missing_and_lost() {
    let meters = [
        ("m1".to_owned(), UtcOffset::CHINA),
        ("m2".to_owned(), UtcOffset::CHINA),
        ("m3".to_owned(), UtcOffset::CHINA),
    ];
    let ledger = [
        entry("m1", "2026-12-07T00:00+08:00", LedgerState::Delivered),
        entry("m2", "2026-12-07T00:00+08:00", LedgerState::Stored),
        entry("m3", "2026-12-07T00:00+08:00", LedgerState::Lost),
        entry("m1", "2026-12-06T00:00+08:00", LedgerState::Delivered),
        entry("m2", "2026-12-06T00:00+08:00", LedgerState::Delivered),
        entry("m3", "2026-12-06T00:00+08:00", LedgerState::Delivered),
        // Outside the window: ignored.
        entry("m1", "2026-11-01T00:00+08:00", LedgerState::Delivered),
    ];
    // 2026-12-07 08:00 in China.
    let now = parse_rfc3339("2026-12-07T00:00:00Z").unwrap();
    let m = build("gw", &meters, &ledger, now, 0, "2026-12-07T00:00:00.000Z");
    assert_eq!(m.schema, "meterd.completeness.v1");
    assert_eq!(m.kind, "daily");
    assert_eq!(m.days.len(), 7);
    let d = &m.days[0];
    assert_eq!(
        (d.day.as_str(), d.expected, d.delivered),
        ("2026-12-06", 3, 1)
    );
    assert_eq!(d.missing, ["m2", "m3"]);
    assert_eq!(d.lost, ["m3"]);
    let d = &m.days[1];
    assert_eq!(
        (d.day.as_str(), d.expected, d.delivered),
        ("2026-12-05", 3, 3)
    );
    assert!(d.missing.is_empty());
    assert_eq!(m.days[6].day, "2026-11-30");
    assert_eq!(
        m.missing_days("m1").unwrap().len(),
        5,
        "days 1-5 of the window lack m1"
    );
    assert!(
        m.missing_days("m3")
            .unwrap()
            .contains(&"2026-12-06 (lost)".to_owned())
    );
    assert_eq!(m.missing_days("modbus-meter"), None);
    assert_eq!(m.days[6].delivered, 0);
    // The same figures at another instant of the same day: same message but for updated_at.
    let later = build("gw", &meters, &ledger, now + 3_600_000, 0, "later");
    assert!(m.same_figures(&later));
    let json = serde_json::to_value(&m).unwrap();
    for key in ["schema", "gateway", "kind", "days", "updated_at"] {
        assert!(json.get(key).is_some(), "{key}");
    }
}

#[test]
fn meters_in_other_zones_count_on_their_own_days() {
    let utc: UtcOffset = "Z".parse().unwrap();
    let meters = [("cn".to_owned(), UtcOffset::CHINA), ("uk".to_owned(), utc)];
    let ledger = [
        entry("cn", "2026-12-07T00:00+08:00", LedgerState::Delivered),
        entry("uk", "2026-12-06T00:00+00:00", LedgerState::Delivered),
    ];
    // 2026-12-06 20:00 UTC: 12-07 04:00 in China, 12-06 in London.
    let now = parse_rfc3339("2026-12-06T20:00:00Z").unwrap();
    let m = build("gw", &meters, &ledger, now, 0, "t");
    let day = |d: &str| m.days.iter().find(|x| x.day == d).unwrap().clone();
    assert_eq!(day("2026-12-06").delivered, 1, "China's day 6 is delivered");
    assert_eq!(
        day("2026-12-05").delivered,
        1,
        "London's day 5 (stamped 12-06) is delivered"
    );
}
