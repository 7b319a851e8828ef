use proptest::prelude::*;

use super::*;

fn at(y: i64, m: u32, d: u32, h: u32, min: u32) -> LocalMinute {
    LocalMinute::from_civil(y, m, d, h, min)
}

/// Runs a search against a meter whose record `n` has stamp `history[n - 1]` (`None` past
/// the history's end); returns the outcome and the number of stamps read.
fn run(
    kind: FreezeKind,
    history: &[LocalMinute],
    wanted: LocalMinute,
    latest: LocalMinute,
) -> (SearchStep, usize) {
    let (mut search, mut step) = StampSearch::start(kind, wanted, latest);
    let mut reads = 0;
    while let SearchStep::Read(n) = step {
        reads += 1;
        assert!(
            reads <= usize::from(kind.depth()) + 1,
            "search does not end"
        );
        let stamp = history.get(usize::from(n) - 1).copied();
        step = search.observe(n, stamp);
    }
    (step, reads)
}

#[test]
fn identifiers_of_the_nth_record() {
    assert_eq!(
        FreezeKind::Daily.stamp_di(1),
        Some(DataIdentifier::V2007(0x0506_0001))
    );
    assert_eq!(
        FreezeKind::Daily.stamp_di(62),
        Some(DataIdentifier::V2007(0x0506_003E))
    );
    assert_eq!(FreezeKind::Daily.stamp_di(63), None);
    assert_eq!(FreezeKind::Daily.stamp_di(0), None);
    assert_eq!(
        FreezeKind::Hourly.stamp_di(254),
        Some(DataIdentifier::V2007(0x0504_00FE))
    );
    assert_eq!(FreezeKind::Monthly.stamp_di(1), None);
    assert_eq!(
        FreezeKind::Daily.value_dis(3),
        vec![
            DataIdentifier::V2007(0x0506_0103),
            DataIdentifier::V2007(0x0506_0203)
        ]
    );
    assert_eq!(
        FreezeKind::Monthly.value_dis(12),
        vec![
            DataIdentifier::V2007(0x0001_FF0C),
            DataIdentifier::V2007(0x0002_FF0C)
        ]
    );
    assert!(FreezeKind::Monthly.value_dis(13).is_empty());
    assert_eq!(
        FreezeKind::Hourly.value_dis(1),
        vec![
            DataIdentifier::V2007(0x0504_0101),
            DataIdentifier::V2007(0x0504_0201)
        ]
    );
}

#[test]
fn record_of_inverts_the_identifiers() {
    for kind in FreezeKind::ALL {
        for n in 1..=kind.depth() {
            for di in kind.stamp_di(n).into_iter().chain(kind.value_dis(n)) {
                assert_eq!(record_of(di), Some((kind, n)), "{di:?}");
            }
        }
    }
    assert_eq!(record_of(DataIdentifier::V2007(0x0506_0000)), None);
    assert_eq!(record_of(DataIdentifier::V2007(0x0506_003F)), None);
    assert_eq!(record_of(DataIdentifier::V2007(0x0001_FF00)), None);
    assert_eq!(record_of(DataIdentifier::V2007(0x0001_0000)), None);
    assert_eq!(record_of(DataIdentifier::V1997(0x9010)), None);
}

#[test]
fn every_record_identifier_is_in_the_catalogue() {
    use crate::dlt645::catalog::lookup;
    for kind in FreezeKind::ALL {
        for n in 1..=kind.depth() {
            for di in kind.stamp_di(n).into_iter().chain(kind.value_dis(n)) {
                assert!(lookup(di).is_some(), "{kind} {n}: {di:?} not catalogued");
            }
        }
    }
}

#[test]
fn names_round_trip_and_quantities_lose_their_snapshot() {
    for kind in FreezeKind::ALL {
        assert_eq!(FreezeKind::parse(kind.name()), Some(kind));
    }
    assert_eq!(FreezeKind::parse("weekly"), None);
    assert_eq!(
        plain_quantity("energy.active.import.t2@daily-3"),
        "energy.active.import.t2"
    );
    assert_eq!(
        plain_quantity("energy.active.import.total"),
        "energy.active.import.total"
    );
}

#[test]
fn latest_due_instants() {
    let now = at(2026, 12, 7, 0, 6);
    assert_eq!(
        latest_due(FreezeKind::Daily, now, 0, (1, 0)),
        at(2026, 12, 7, 0, 0)
    );
    // A meter freezing at 00:30 has not frozen today yet at 00:06.
    assert_eq!(
        latest_due(FreezeKind::Daily, now, 30, (1, 0)),
        at(2026, 12, 6, 0, 30)
    );
    assert_eq!(
        latest_due(FreezeKind::Hourly, at(2026, 12, 7, 13, 59), 0, (1, 0)),
        at(2026, 12, 7, 13, 0)
    );
    assert_eq!(
        latest_due(FreezeKind::Monthly, now, 0, (1, 0)),
        at(2026, 12, 1, 0, 0)
    );
    assert_eq!(
        latest_due(FreezeKind::Monthly, now, 0, (15, 12)),
        at(2026, 11, 15, 12, 0)
    );
}

#[test]
fn monthly_stamps_cross_years_and_short_months() {
    let now = at(2026, 2, 10, 8, 0);
    assert_eq!(monthly_stamp(now, (1, 0), 1), at(2026, 2, 1, 0, 0));
    assert_eq!(monthly_stamp(now, (1, 0), 2), at(2026, 1, 1, 0, 0));
    assert_eq!(monthly_stamp(now, (1, 0), 3), at(2025, 12, 1, 0, 0));
    assert_eq!(monthly_stamp(now, (1, 0), 12), at(2025, 3, 1, 0, 0));
    // Day 31 in February settles on its last day.
    assert_eq!(
        monthly_stamp(at(2026, 3, 5, 0, 0), (31, 0), 1),
        at(2026, 2, 28, 0, 0)
    );
}

#[test]
fn local_minutes_print_and_parse() {
    let t = MeterTime {
        year: Some(2026),
        month: Some(12),
        day: Some(7),
        hour: Some(0),
        minute: Some(0),
        ..MeterTime::default()
    };
    let m = LocalMinute::from_meter_time(&t);
    assert_eq!(m, Some(at(2026, 12, 7, 0, 0)));
    assert_eq!(at(2026, 12, 7, 0, 0).to_string(), "2026-12-07T00:00");
    assert_eq!(
        LocalMinute::from_meter_time(&MeterTime {
            hour: Some(1),
            ..MeterTime::default()
        }),
        None
    );
}

/// A full daily history: record n is stamped `today - (n - 1)` days.
fn daily_history(today: LocalMinute, len: u8) -> Vec<LocalMinute> {
    (0..i64::from(len))
        .map(|k| LocalMinute(today.0 - k * DAY))
        .collect()
}

#[test]
fn finds_a_day_in_one_read_when_the_clock_agrees() {
    let today = at(2026, 12, 7, 0, 0);
    let history = daily_history(today, 62);
    let (step, reads) = run(FreezeKind::Daily, &history, at(2026, 12, 3, 0, 0), today);
    assert_eq!(step, SearchStep::Found(5));
    assert_eq!(reads, 1);
}

#[test]
fn steps_over_a_missed_freeze_and_a_wrong_guess() {
    let today = at(2026, 12, 7, 0, 0);
    // The meter was unpowered at midnight of 12-05: no record stamped 12-05.
    let mut history = daily_history(today, 62);
    history.remove(2);
    // Guess from a gateway clock that is a day ahead: the first read misses.
    let latest = at(2026, 12, 8, 0, 0);
    let (step, reads) = run(FreezeKind::Daily, &history, at(2026, 12, 3, 0, 0), latest);
    assert_eq!(step, SearchStep::Found(4));
    assert!(reads <= 3, "{reads} reads");
    let (step, _) = run(FreezeKind::Daily, &history, at(2026, 12, 5, 0, 0), today);
    assert_eq!(
        step,
        SearchStep::Gap {
            newer_at: 2,
            older_at: 3
        }
    );
}

#[test]
fn says_when_the_record_is_not_made_yet_or_lost() {
    let today = at(2026, 12, 7, 0, 0);
    let history = daily_history(today, 62);
    let (step, _) = run(FreezeKind::Daily, &history, at(2026, 12, 8, 0, 0), today);
    assert_eq!(step, SearchStep::NotYetFrozen);
    let (step, _) = run(
        FreezeKind::Daily,
        &history,
        LocalMinute(today.0 - 62 * DAY),
        today,
    );
    assert_eq!(step, SearchStep::OutOfHistory);
    // A new meter with 10 days of history: day 20 back is older than its first record.
    let short = daily_history(today, 10);
    let (step, _) = run(
        FreezeKind::Daily,
        &short,
        LocalMinute(today.0 - 20 * DAY),
        today,
    );
    assert_eq!(
        step,
        SearchStep::Gap {
            newer_at: 10,
            older_at: 11
        }
    );
}

proptest! {
    /// Against any strictly descending history with holes and any wanted stamp: found
    /// exactly when present, at the right n; otherwise the right reason; never more reads
    /// than the depth.
    #[test]
    fn search_agrees_with_a_linear_scan(
        holes in proptest::collection::vec(any::<bool>(), 62),
        extra in proptest::collection::vec(0i64..3, 62),
        wanted_back in -3i64..140,
        clock_error in -5i64..6,
    ) {
        let today = at(2026, 12, 7, 0, 0);
        let mut stamps = Vec::new();
        let mut back = 0i64;
        for (hole, gap) in holes.iter().zip(&extra) {
            back += if *hole { 1 + gap } else { 1 };
            stamps.push(LocalMinute(today.0 - (back - 1) * DAY));
        }
        let wanted = LocalMinute(today.0 - wanted_back * DAY);
        let latest = LocalMinute(today.0 + clock_error * DAY);
        let (step, reads) = run(FreezeKind::Daily, &stamps, wanted, latest);
        prop_assert!(reads <= 62);
        match stamps.iter().position(|s| *s == wanted) {
            Some(i) => prop_assert_eq!(step, SearchStep::Found(i as u8 + 1)),
            None if wanted > stamps[0] => prop_assert_eq!(step, SearchStep::NotYetFrozen),
            None if wanted < stamps[61] => prop_assert_eq!(step, SearchStep::OutOfHistory),
            None => {
                let older = stamps.iter().position(|s| *s < wanted).unwrap() as u8 + 1;
                prop_assert_eq!(step, SearchStep::Gap { newer_at: older - 1, older_at: older });
            }
        }
    }

    /// Erratic stamps (a meter whose history is corrupt) never panic and always end.
    #[test]
    fn erratic_stamps_end(
        stamps in proptest::collection::vec(proptest::option::of(-100_000i64..100_000), 0..254),
        wanted in -100_000i64..100_000,
        latest in -100_000i64..100_000,
        hourly in any::<bool>(),
    ) {
        let kind = if hourly { FreezeKind::Hourly } else { FreezeKind::Daily };
        let (mut search, mut step) = StampSearch::start(kind, LocalMinute(wanted), LocalMinute(latest));
        let mut reads = 0;
        while let SearchStep::Read(n) = step {
            reads += 1;
            prop_assert!(reads <= usize::from(kind.depth()));
            prop_assert!((1..=kind.depth()).contains(&n));
            let stamp = stamps.get(usize::from(n) - 1).copied().flatten().map(LocalMinute);
            step = search.observe(n, stamp);
        }
    }
}

#[test]
fn dlt645_1997_offers_two_monthly_settlements_and_no_freezes() {
    use crate::dlt645::Version;
    assert_eq!(FreezeKind::Monthly.depth_in(Version::V1997), 2);
    assert_eq!(FreezeKind::Daily.depth_in(Version::V1997), 0);
    assert_eq!(FreezeKind::Hourly.depth_in(Version::V1997), 0);
    for k in FreezeKind::ALL {
        assert_eq!(k.depth_in(Version::V2007), k.depth());
        assert_eq!(k.value_dis_in(Version::V2007, 1), k.value_dis(1));
    }
    let v = |x| DataIdentifier::V1997(x);
    assert_eq!(
        FreezeKind::Monthly.value_dis_in(Version::V1997, 1),
        vec![v(0x941F), v(0x942F)]
    );
    assert_eq!(
        FreezeKind::Monthly.value_dis_in(Version::V1997, 2),
        vec![v(0x981F), v(0x982F)]
    );
    assert!(
        FreezeKind::Monthly
            .value_dis_in(Version::V1997, 3)
            .is_empty()
    );
    assert!(FreezeKind::Daily.value_dis_in(Version::V1997, 1).is_empty());
    // Each value identifier names its record; current registers and others name none.
    for n in 1..=2 {
        for di in FreezeKind::Monthly.value_dis_in(Version::V1997, n) {
            assert_eq!(record_of(di), Some((FreezeKind::Monthly, n)), "{di}");
        }
    }
    assert_eq!(record_of(v(0x9410)), Some((FreezeKind::Monthly, 1)));
    assert_eq!(record_of(v(0x9824)), Some((FreezeKind::Monthly, 2)));
    assert_eq!(record_of(v(0x901F)), None);
    assert_eq!(record_of(v(0x9430)), None);
    assert_eq!(record_of(v(0xC010)), None);
}

#[test]
fn the_1997_settlement_blocks_decode_as_total_and_tariffs() {
    use crate::dlt645::catalog::lookup;
    for (di, quantity) in [
        (0x981F, "energy.active.import.total@settlement-2"),
        (0x982F, "energy.active.export.total@settlement-2"),
        (0x941F, "energy.active.import.total@settlement-1"),
    ] {
        let info = lookup(DataIdentifier::V1997(di)).expect("in the catalogue");
        let text = format!("{info:?}");
        assert!(text.contains(quantity), "{di:04X}: {text}");
    }
}

#[test]
fn load_profile_kind_is_read_by_stamp_and_not_by_n() {
    assert_eq!(
        FreezeKind::parse("load_profile"),
        Some(FreezeKind::LoadProfile)
    );
    assert_eq!(FreezeKind::LoadProfile.stamp_di(1), None);
    assert!(FreezeKind::LoadProfile.value_dis(1).is_empty());
    assert_eq!(FreezeKind::LoadProfile.depth_in(Version::V1997), 0);
    assert_eq!(
        latest_load_record(at(2026, 12, 7, 10, 29), 15),
        at(2026, 12, 7, 10, 15)
    );
    assert_eq!(
        latest_load_record(at(2026, 12, 7, 10, 30), 30),
        at(2026, 12, 7, 10, 30)
    );
    assert_eq!(
        latest_load_record(at(2026, 12, 7, 0, 59), 60),
        at(2026, 12, 7, 0, 0)
    );
}
