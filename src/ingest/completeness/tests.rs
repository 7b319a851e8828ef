//! Completeness figures from ledger rows.

use super::*;
use crate::clock::parse_rfc3339;
use crate::spool::freezes::LedgerState;

fn daily(id: &str, offset: UtcOffset) -> ExpectedMeter {
    ExpectedMeter::new(id, offset, FreezeKind::Daily)
}

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
    let meters = ["m1", "m2", "m3"].map(|m| daily(m, UtcOffset::CHINA));
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
    let meters = [daily("cn", UtcOffset::CHINA), daily("uk", utc)];
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

fn of_kind(kind: &str, meter: &str, stamp: &str, state: LedgerState) -> LedgerEntry {
    LedgerEntry {
        kind: kind.into(),
        ..entry(meter, stamp, state)
    }
}

#[test]
fn monthly_counts_twelve_months_named_by_the_month_they_close() {
    let meters = [
        ExpectedMeter::new("m1", UtcOffset::CHINA, FreezeKind::Monthly),
        ExpectedMeter::new("m2", UtcOffset::CHINA, FreezeKind::Monthly),
    ];
    let ledger = [
        of_kind(
            "monthly",
            "m1",
            "2026-12-01T00:00+08:00",
            LedgerState::Delivered,
        ),
        of_kind("monthly", "m2", "2026-12-01T00:00+08:00", LedgerState::Lost),
        of_kind(
            "monthly",
            "m1",
            "2026-11-01T00:00+08:00",
            LedgerState::Delivered,
        ),
        of_kind(
            "monthly",
            "m2",
            "2026-11-01T00:00+08:00",
            LedgerState::Stored,
        ),
    ];
    let now = parse_rfc3339("2026-12-07T00:00:00Z").unwrap();
    let m = periods(
        FreezeKind::Monthly,
        "gw",
        &meters,
        &ledger,
        now,
        (1, 0),
        "t",
    )
    .unwrap();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["kind"], "monthly");
    assert_eq!(json["schema"], "meterd.completeness.v1");
    assert!(
        json.get("days").is_none() && json.get("hours").is_none(),
        "{json}"
    );
    let months = json["months"].as_array().unwrap();
    assert_eq!(months.len(), 12);
    assert_eq!(
        months[0],
        serde_json::json!({"month": "2026-11", "expected": 2, "delivered": 1,
            "missing": ["m2"], "lost": ["m2"]})
    );
    assert_eq!(
        (
            &months[1]["month"],
            &months[1]["delivered"],
            &months[1]["missing"]
        ),
        (
            &serde_json::json!("2026-10"),
            &serde_json::json!(1),
            &serde_json::json!(["m2"])
        )
    );
    assert_eq!(months[11]["month"], "2025-12");
    assert_eq!(
        months[11]["expected"], 2,
        "a 2007 meter keeps 12: all expected"
    );
    assert_eq!(m.missing_periods("m1").unwrap().len(), 10);
    assert!(
        m.missing_periods("m2")
            .unwrap()
            .contains(&"2026-11 (lost)".to_owned())
    );
    assert_eq!(m.missing_periods("other"), None);
    // The wire shape reads back (the CLI reads it from /api/status).
    let back: PeriodMessage = serde_json::from_value(json).unwrap();
    assert!(back.same_figures(&m));
    // A settlement on the 15th at 12:00: the stamp on 12-15 is not due yet on 12-07.
    let m = periods(FreezeKind::Monthly, "gw", &meters, &[], now, (15, 12), "t").unwrap();
    assert_eq!(m.rows()[0].period, PeriodLabel::Month("2026-10".into()));
}

#[test]
fn hourly_counts_forty_eight_hours_in_each_meters_zone() {
    let meters = [ExpectedMeter::new(
        "h1",
        UtcOffset::CHINA,
        FreezeKind::Hourly,
    )];
    // 2026-12-07 08:30 in China: the hour 07:00 closed at 08:00.
    let now = parse_rfc3339("2026-12-07T00:30:00Z").unwrap();
    let ledger = [
        of_kind(
            "hourly",
            "h1",
            "2026-12-07T08:00+08:00",
            LedgerState::Delivered,
        ),
        of_kind("hourly", "h1", "2026-12-07T06:00+08:00", LedgerState::Lost),
    ];
    let m = periods(FreezeKind::Hourly, "gw", &meters, &ledger, now, (1, 0), "t").unwrap();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["kind"], "hourly");
    let hours = json["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 48);
    assert_eq!(hours[0]["hour"], "2026-12-07T07:00");
    assert_eq!(hours[0]["delivered"], 1);
    assert_eq!(hours[1]["hour"], "2026-12-07T06:00");
    assert_eq!(hours[1]["missing"], serde_json::json!(["h1"]));
    assert_eq!(hours[2]["hour"], "2026-12-07T05:00");
    assert_eq!(hours[2]["lost"], serde_json::json!(["h1"]));
    assert_eq!(hours[47]["hour"], "2026-12-05T08:00");
    assert_eq!(
        periods(FreezeKind::Daily, "gw", &meters, &ledger, now, (1, 0), "t"),
        None
    );
}

/// A DL/T 645-1997 meter keeps two settlements: a month older than that, never stored, is
/// lost once the gateway has collected the meter before it, and not expected before the
/// gateway's first record of it.
#[test]
fn a_month_beyond_a_1997_meters_history_is_lost_never_silently_dropped() {
    let v1997 = ExpectedMeter {
        depth: FreezeKind::Monthly.depth_in(meter_protocols::dlt645::Version::V1997),
        ..ExpectedMeter::new("old", UtcOffset::CHINA, FreezeKind::Monthly)
    };
    assert_eq!(v1997.depth, 2);
    let now = parse_rfc3339("2026-12-07T00:00:00Z").unwrap();
    // Nothing stored yet: the two months it keeps are expected (missing), older ones not.
    let m = periods(
        FreezeKind::Monthly,
        "gw",
        std::slice::from_ref(&v1997),
        &[],
        now,
        (1, 0),
        "t",
    )
    .unwrap();
    let expected: Vec<u32> = m.rows().iter().map(|r| r.expected).collect();
    assert_eq!(expected, [1, 1]);
    // Collected since 2026-06 (stamped 07-01), months 2026-07..=09 never stored: lost.
    let ledger: Vec<LedgerEntry> = [
        "2026-07-01T00:00+08:00",
        "2026-08-01T00:00+08:00",
        "2026-12-01T00:00+08:00",
    ]
    .iter()
    .map(|s| of_kind("monthly", "old", s, LedgerState::Delivered))
    .collect();
    let m = periods(
        FreezeKind::Monthly,
        "gw",
        &[v1997],
        &ledger,
        now,
        (1, 0),
        "t",
    )
    .unwrap();
    let rows: Vec<(String, u32, u32, usize)> = m
        .rows()
        .iter()
        .map(|r| {
            (
                r.period.text().to_owned(),
                r.expected,
                r.delivered,
                r.lost.len(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("2026-11".to_owned(), 1, 1, 0),
            ("2026-10".to_owned(), 1, 0, 0),
            ("2026-09".to_owned(), 1, 0, 1),
            ("2026-08".to_owned(), 1, 0, 1),
            ("2026-07".to_owned(), 1, 1, 0),
            ("2026-06".to_owned(), 1, 1, 0),
        ]
    );
}

#[test]
fn expected_meters_come_from_the_configuration_by_kind_and_edition() {
    let text = r#"
gateway = "gw"
data_dir = "/tmp/x"
[[bus]]
name = "a"
transport = "tcp"
host = "127.0.0.1:1"
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
freezes = ["daily", "monthly", "hourly"]
[[bus.meter]]
protocol = "dlt645-2007"
address = "000000000002"
profile = "dlt645-three-phase"
freezes = ["monthly"]
utc_offset = "+00:00"
[[bus.meter]]
protocol = "dlt645-1997"
address = "000000000003"
profile = "dlt645-1997-basic"
freezes = ["monthly"]
[[bus.meter]]
protocol = "modbus-rtu"
unit = 4
profile = "generic-modbus"
"#;
    let (config, profiles) =
        crate::config::Config::from_text(std::path::Path::new("t.toml"), text).unwrap();
    let e = expected(&config, &profiles);
    let ids = |l: &[ExpectedMeter]| l.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&e.daily), ["000000000001"]);
    assert_eq!(ids(&e.hourly), ["000000000001"]);
    assert_eq!(
        ids(&e.monthly),
        ["000000000001", "000000000002", "000000000003"]
    );
    assert_eq!(e.monthly[2].depth, 2, "the 1997 meter keeps two");
    assert_eq!(e.monthly[1].offset.minutes(), 0);
    assert_eq!(e.of(FreezeKind::Hourly).len(), 1);
}

#[test]
fn load_records_count_per_stamp_each_meter_at_its_own_interval() {
    let every = |id: &str, minutes: i64| ExpectedMeter {
        interval_minutes: minutes,
        ..ExpectedMeter::new(id, UtcOffset::CHINA, FreezeKind::LoadProfile)
    };
    let meters = [every("q", 15), every("h", 30)];
    let ledger = [
        of_kind(
            "load_profile",
            "q",
            "2026-12-07T10:00+08:00",
            LedgerState::Delivered,
        ),
        of_kind(
            "load_profile",
            "h",
            "2026-12-07T10:00+08:00",
            LedgerState::Delivered,
        ),
        of_kind(
            "load_profile",
            "q",
            "2026-12-07T09:45+08:00",
            LedgerState::Lost,
        ),
    ];
    // 10:20 in China: the 10:15 slot is the current one, 10:00 the newest closed.
    let now = parse_rfc3339("2026-12-07T02:20:00Z").unwrap();
    let m = periods(
        FreezeKind::LoadProfile,
        "gw",
        &meters,
        &ledger,
        now,
        (1, 0),
        "t",
    )
    .unwrap();
    assert_eq!(m.kind, "load_profile");
    let rows = m.rows();
    assert_eq!(rows.len(), usize::from(LOAD_SLOTS));
    assert_eq!(
        rows[0].period,
        PeriodLabel::Record("2026-12-07T10:00".into())
    );
    assert_eq!((rows[0].expected, rows[0].delivered), (2, 2));
    // 09:45 is no stamp of the 30-minute meter.
    assert_eq!(rows[1].period.text(), "2026-12-07T09:45");
    assert_eq!(rows[1].expected, 1);
    assert_eq!(rows[1].lost, ["q"]);
    assert_eq!(rows[2].expected, 2);
    assert_eq!(rows[2].missing, ["h", "q"]);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["records"][0]["record"], "2026-12-07T10:00");
}
