//! Every limit of [`decide`], at and either side of its boundary.

use super::*;
use meter_protocols::calendar::days_from_civil;

const S: i64 = 1_000;
const MIN: i64 = 60 * S;

/// Local ms of a civil time.
fn local(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
    days_from_civil(y, mo, d) * DAY_MS + h * 3_600_000 + mi * MIN + s * S
}

/// Facts for a meter in +08:00, true local time `true_local`, meter ahead by `offset_ms`.
fn facts(true_local: i64, offset_ms: i64) -> ClockFacts {
    ClockFacts {
        gateway_synchronised: true,
        gateway_ms: true_local - 8 * 60 * MIN,
        meter_local_ms: true_local + offset_ms,
        offset_minutes: 480,
        drift_limit: Duration::from_secs(60),
        sync_enabled: true,
        last_sync_day: None,
        daily_freeze_minute: 0,
        settlement: (1, 0),
        one_zone: true,
        peer_offsets_ms: None,
    }
}

/// 2026-12-07 10:00:00 local: far from midnight and every settlement time.
fn noon() -> i64 {
    local(2026, 12, 7, 10, 0, 0)
}

#[test]
fn nothing_is_compared_while_the_gateway_clock_is_not_synchronised() {
    let f = ClockFacts {
        gateway_synchronised: false,
        ..facts(noon(), 120 * S)
    };
    assert_eq!(decide(&f), Verdict::NotCompared);
}

#[test]
fn the_drift_limit_is_inclusive() {
    for off in [0, 60 * S, -60 * S] {
        assert_eq!(
            decide(&facts(noon(), off)),
            Verdict::InLimit { offset_ms: off },
            "{off}"
        );
    }
    for off in [60 * S + 1, -60 * S - 1] {
        assert_eq!(
            decide(&facts(noon(), off)),
            Verdict::Sync { offset_ms: off },
            "{off}"
        );
    }
}

#[test]
fn only_offsets_under_five_minutes_are_corrected() {
    for off in [5 * MIN - 1, -(5 * MIN - 1)] {
        assert_eq!(
            decide(&facts(noon(), off)),
            Verdict::Sync { offset_ms: off }
        );
    }
    for off in [5 * MIN, -5 * MIN, 8 * MIN, 3_600 * S] {
        assert_eq!(
            decide(&facts(noon(), off)),
            Verdict::Drift {
                offset_ms: off,
                refusal: Refusal::TooLarge
            },
            "{off}"
        );
    }
}

#[test]
fn disabled_sync_only_reports() {
    let f = ClockFacts {
        sync_enabled: false,
        ..facts(noon(), 90 * S)
    };
    assert_eq!(
        decide(&f),
        Verdict::Drift {
            offset_ms: 90 * S,
            refusal: Refusal::Disabled
        }
    );
}

#[test]
fn once_a_day_per_bus_by_the_local_day() {
    let today = noon().div_euclid(DAY_MS);
    let f = ClockFacts {
        last_sync_day: Some(today),
        ..facts(noon(), 90 * S)
    };
    assert_eq!(
        decide(&f),
        Verdict::Drift {
            offset_ms: 90 * S,
            refusal: Refusal::AlreadyToday
        }
    );
    let f = ClockFacts {
        last_sync_day: Some(today - 1),
        ..facts(noon(), 90 * S)
    };
    assert_eq!(decide(&f), Verdict::Sync { offset_ms: 90 * S });
    // The day is the meter's local one: 23:00 UTC is already tomorrow in +08:00.
    let f = ClockFacts {
        last_sync_day: Some(today),
        ..facts(local(2026, 12, 8, 7, 0, 0), 90 * S)
    };
    assert_eq!(decide(&f), Verdict::Sync { offset_ms: 90 * S });
}

#[test]
fn never_within_five_minutes_of_local_midnight_on_either_clock() {
    let midnight = local(2026, 12, 8, 0, 0, 0);
    let refused = |t: i64, off: i64| {
        decide(&facts(t, off))
            == Verdict::Drift {
                offset_ms: off,
                refusal: Refusal::NearMidnight,
            }
    };
    // True time at the edges: 23:55:00 and 00:05:00 are inside, a second beyond is outside
    // (when the meter's clock is outside too: a meter behind by 90 s at 00:06:31 reads 00:05:01).
    assert!(refused(midnight - 5 * MIN, 90 * S));
    assert!(refused(midnight + 5 * MIN, 90 * S));
    assert!(refused(midnight, 90 * S));
    assert_eq!(
        decide(&facts(midnight - 5 * MIN - 1 - 90 * S, 90 * S)),
        Verdict::Sync { offset_ms: 90 * S }
    );
    assert_eq!(
        decide(&facts(midnight + 5 * MIN + 1 + 90 * S, -90 * S)),
        Verdict::Sync { offset_ms: -90 * S }
    );
    // The meter's own clock in the window while the true time is not: refused too.
    // True 23:53:00, meter ahead 3 min → meter reads 23:56:00.
    assert!(refused(midnight - 7 * MIN, 3 * MIN));
    // True 00:06:00, meter behind 2 min → meter reads 00:04:00.
    assert!(refused(midnight + 6 * MIN, -2 * MIN));
    // In a zone west of UTC the window is still the meter's local midnight.
    let west = ClockFacts {
        offset_minutes: -300,
        gateway_ms: midnight + 300 * MIN,
        meter_local_ms: midnight + 90 * S,
        ..facts(midnight, 90 * S)
    };
    assert_eq!(
        decide(&west),
        Verdict::Drift {
            offset_ms: 90 * S,
            refusal: Refusal::NearMidnight
        }
    );
}

#[test]
fn never_within_five_minutes_of_a_settlement_time() {
    let near = |f: ClockFacts| {
        matches!(
            decide(&f),
            Verdict::Drift {
                refusal: Refusal::NearSettlement,
                ..
            }
        )
    };
    // A daily freeze at 01:00: 00:55:00..=01:05:00 on either clock (meter behind 70 s, so
    // the true time reaches the window first and the meter's clock leaves it last).
    let daily = |t| ClockFacts {
        daily_freeze_minute: 60,
        ..facts(t, -70 * S)
    };
    let one = local(2026, 12, 7, 1, 0, 0);
    assert!(!near(daily(one - 5 * MIN - 1)));
    assert!(near(daily(one - 5 * MIN)));
    assert!(near(daily(one)));
    assert!(near(daily(one + 5 * MIN + 70 * S)));
    assert!(!near(daily(one + 5 * MIN + 70 * S + 1)));
    // The monthly settlement on the 15th at 12:00.
    let monthly = |t| ClockFacts {
        settlement: (15, 12),
        ..facts(t, 70 * S)
    };
    let settle = local(2026, 12, 15, 12, 0, 0);
    assert!(near(monthly(settle)));
    assert!(near(monthly(settle - 5 * MIN - 70 * S)));
    assert!(!near(monthly(settle - 5 * MIN - 70 * S - 1)));
    assert!(near(monthly(settle + 5 * MIN)));
    assert!(!near(monthly(settle + 5 * MIN + 1)));
    // Not the 15th of the month: no window at 12:00.
    assert!(!near(monthly(local(2026, 12, 14, 12, 0, 0))));
    // The 1st at 00:00 across a month end (inside midnight's window as well, which wins).
    let newyear = local(2027, 1, 1, 0, 0, 0);
    assert_eq!(
        decide(&facts(newyear - 4 * MIN, 70 * S)),
        Verdict::Drift {
            offset_ms: 70 * S,
            refusal: Refusal::NearMidnight
        }
    );
}

#[test]
fn a_broadcast_is_not_sent_to_a_bus_of_mixed_zones() {
    let f = ClockFacts {
        one_zone: false,
        ..facts(noon(), 90 * S)
    };
    assert_eq!(
        decide(&f),
        Verdict::Drift {
            offset_ms: 90 * S,
            refusal: Refusal::MixedZones
        }
    );
}

#[test]
fn no_sync_ever_leaves_the_limits_over_a_sweep() {
    // Every 7 s of two days, offsets from −6 to +6 min: a sync only where every rule holds.
    let start = local(2026, 12, 31, 0, 0, 0);
    let mut syncs = 0;
    for step in 0..(2 * 86_400 / 7) {
        let t = start + step * 7 * S;
        for off in [-6 * MIN, -299 * S, -61 * S, 61 * S, 299 * S, 6 * MIN] {
            let f = facts(t, off);
            if let Verdict::Sync { .. } = decide(&f) {
                syncs += 1;
                assert!(off.abs() < 5 * MIN);
                for c in [t, t + off] {
                    let tod = c.rem_euclid(DAY_MS);
                    assert!(tod > 5 * MIN && tod < DAY_MS - 5 * MIN, "{c}");
                }
            }
        }
    }
    assert!(syncs > 0);
}

/// A broadcast reaches every meter of the bus: a peer 4 min fast shows 23:55 at 23:51, so no
/// sync goes out then, whatever the clock of the meter that found it due.
#[test]
fn the_peers_clocks_keep_out_of_the_midnight_guard_too() {
    let at = local(2026, 12, 7, 23, 51, 0);
    assert!(matches!(decide(&facts(at, 90 * S)), Verdict::Sync { .. }));
    let f = ClockFacts {
        peer_offsets_ms: Some((-30 * S, 240 * S)),
        ..facts(at, 90 * S)
    };
    assert_eq!(
        decide(&f),
        Verdict::Drift {
            offset_ms: 90 * S,
            refusal: Refusal::NearMidnight
        }
    );
}
