//! The freeze reader against a simulated meter: requests go to [`SimMeter::respond_dlt645`]
//! as wire frames, replies come back as wire frames, as the bus task would carry them.

use std::path::Path;

use meter_protocols::Scan;
use meter_protocols::dlt645::freeze::{FreezeKind, LocalMinute, latest_due, monthly_stamp};
use meter_protocols::dlt645::{Address, Dlt645Frame, Request, Version};

use super::*;
use crate::clock::{days_from_civil, parse_rfc3339};
use crate::sim::SimConfig;
use crate::sim::meter::SimMeter;
use crate::sim::model::MeterModel;

const ADDR: &str = "000000000001";
const SEED: u64 = 3;
const DAY: i64 = 86_400_000;

fn sim_meter(profile: &str) -> SimMeter {
    sim_meter_with(profile, "")
}

/// A simulated meter of `profile` with `extra` lines in its `[[port.meter]]`.
fn sim_meter_with(profile: &str, extra: &str) -> SimMeter {
    let protocol = if profile.contains("1997") {
        "dlt645-1997"
    } else {
        "dlt645-2007"
    };
    let text = format!(
        "[[port]]\nname = \"p\"\ntcp = \"127.0.0.1:0\"\n[[port.meter]]\nprotocol = \"{protocol}\"\n\
         address = \"{ADDR}\"\nprofile = \"{profile}\"\nseed = {SEED}\nutc_offset = \"Z\"\n{extra}"
    );
    let config = SimConfig::from_text(Path::new("t.toml"), &text).unwrap();
    let meter = config.ports[0].meters[0].get_ref().clone();
    let profile = config.profiles.get(profile).unwrap();
    SimMeter::new(&meter, "p", profile)
}

/// Drives `read` against `meter` at simulated time `t`; `silent` DIs get no reply.
fn drive(
    mut read: FreezeRead,
    meter: &SimMeter,
    t: i64,
    silent: &[&str],
) -> (FreezeOutcome, usize) {
    let mut exchanges = 0;
    while let Some(step) = read.next_step() {
        exchanges += 1;
        assert!(exchanges < 300, "the read does not end");
        let Scan::Frame { frame, .. } = Dlt645Frame::scan(&step.bytes) else {
            panic!("the request is no frame");
        };
        let version = meter.dlt645_version().expect("a DL/T 645 meter");
        let request = Request::from_frame(&frame, version).unwrap();
        if let Request::ReadData { di, .. } = &request
            && silent.contains(&di.to_string().as_str())
        {
            read.on_failure("no reply within 1s");
            continue;
        }
        let (response, _) = meter
            .respond_dlt645(&request, t)
            .expect("the meter answers");
        let address: Address = ADDR.parse().unwrap();
        let bytes = response.to_frame(address, Version::V2007).to_bytes(0);
        let Scan::Frame { frame, .. } = Dlt645Frame::scan(&bytes) else {
            panic!("the reply is no frame");
        };
        read.on_reply(&Reply::Dlt645(frame), &bytes);
    }
    (read.finish(), exchanges)
}

fn at(day: u32, hour: u32) -> LocalMinute {
    LocalMinute::from_civil(2026, 12, day, hour, 0)
}

/// Simulated time 2026-12-07 08:30 UTC (this simulated meter keeps UTC: `utc_offset = "Z"`).
fn now() -> i64 {
    parse_rfc3339("2026-12-07T08:30:00Z").unwrap()
}

fn address() -> Address {
    ADDR.parse().unwrap()
}

fn number(values: &[ReadingValue], q: &str) -> String {
    match &values.iter().find(|v| &*v.quantity == q).unwrap().value {
        Some(crate::reading::ValueData::Number(n)) => n.to_string(),
        other => panic!("{q}: {other:?}"),
    }
}

#[test]
fn a_daily_record_is_found_by_its_stamp_and_holds_the_frozen_registers() {
    let meter = sim_meter("dlt645-three-phase");
    let latest = latest_due(FreezeKind::Daily, at(7, 8), 0, (1, 0));
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(4, 0), latest);
    let (outcome, exchanges) = drive(read, &meter, now(), &[]);
    let FreezeOutcome::Record {
        n,
        stamp,
        values,
        frames,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!((n, stamp), (4, at(4, 0)));
    // One stamp read (the clock agreed) and the two energy blocks.
    assert_eq!((exchanges, frames.len()), (3, 3));
    let model = MeterModel::new(SEED, ADDR.into());
    let frozen = days_from_civil(2026, 12, 4) * DAY;
    for (q, kind, t) in [
        ("energy.active.import.total", "active.import", 0),
        ("energy.active.import.t3", "active.import", 3),
        ("energy.active.export.total", "active.export", 0),
    ] {
        assert_eq!(
            number(&values, q),
            model.energy(kind, t, 2, frozen).to_string(),
            "{q}"
        );
    }
    assert!(values.iter().all(|v| !v.quantity.contains('@')));
}

#[test]
fn a_wrong_first_guess_is_corrected_by_the_stamps() {
    let meter = sim_meter("dlt645-three-phase");
    // The gateway believes the meter's clock is two days ahead: the first guess is n = 5.
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(4, 0), at(9, 0));
    let (outcome, exchanges) = drive(read, &meter, now(), &[]);
    assert!(
        matches!(outcome, FreezeOutcome::Record { n: 4, .. }),
        "{outcome:?}"
    );
    assert_eq!(exchanges, 4, "two stamp reads, two value reads");
}

#[test]
fn records_not_made_yet_or_gone_are_told_apart() {
    let meter = sim_meter("dlt645-three-phase");
    let latest = at(7, 0);
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(8, 0), latest);
    assert_eq!(
        drive(read, &meter, now(), &[]).0,
        FreezeOutcome::NotYetFrozen
    );
    let gone = LocalMinute(at(7, 0).0 - 62 * 1440);
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, gone, latest);
    let (outcome, _) = drive(read, &meter, now(), &[]);
    assert!(
        matches!(&outcome, FreezeOutcome::Lost(r) if r.contains("no longer in the meter's history")),
        "{outcome:?}"
    );
}

#[test]
fn a_silent_value_read_fails_the_record_and_a_meter_without_records_is_no_history() {
    let meter = sim_meter("dlt645-three-phase");
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(6, 0), at(7, 0));
    let (outcome, _) = drive(read, &meter, now(), &["05060202"]);
    assert!(
        matches!(&outcome, FreezeOutcome::Failed(r) if r.contains("no reply to read 05060202")),
        "{outcome:?}"
    );
    // The single-phase profile keeps no hourly records: every stamp read says "no data".
    let single = sim_meter("dlt645-single-phase");
    let read = FreezeRead::by_stamp(address(), FreezeKind::Hourly, at(7, 7), at(7, 8));
    let (outcome, _) = drive(read, &single, now(), &[]);
    assert_eq!(outcome, FreezeOutcome::NotYetFrozen);
}

#[test]
fn hourly_and_monthly_records() {
    let meter = sim_meter("dlt645-three-phase");
    let read = FreezeRead::by_stamp(address(), FreezeKind::Hourly, at(7, 5), at(7, 8));
    let (outcome, _) = drive(read, &meter, now(), &[]);
    let FreezeOutcome::Record { n, values, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(n, 4);
    let model = MeterModel::new(SEED, ADDR.into());
    let five = days_from_civil(2026, 12, 7) * DAY + 5 * 3_600_000;
    assert_eq!(
        number(&values, "energy.active.import.total"),
        model.energy("active.import", 0, 2, five).to_string()
    );
    let stamp = monthly_stamp(at(7, 8), (1, 0), 2);
    assert_eq!(stamp, LocalMinute::from_civil(2026, 11, 1, 0, 0));
    let (outcome, exchanges) = drive(
        FreezeRead::monthly(address(), Version::V2007, 2, stamp),
        &meter,
        now(),
        &[],
    );
    let FreezeOutcome::Record { values, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(exchanges, 2);
    let nov = days_from_civil(2026, 11, 1) * DAY;
    assert_eq!(
        number(&values, "energy.active.export.t4"),
        model.energy("active.export", 4, 2, nov).to_string()
    );
    let read = FreezeRead::monthly(address(), Version::V2007, 13, stamp);
    assert!(matches!(read.finish(), FreezeOutcome::Lost(_)));
}

#[test]
fn a_freeze_the_meter_never_made_is_lost_and_the_next_record_still_found() {
    // Unpowered at midnight of 12-05: no record stamped 12-05 00:00; the history skips it.
    let meter = sim_meter_with("dlt645-three-phase", "freeze_gaps = [\"2026-12-05\"]\n");
    let latest = at(7, 0);
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(5, 0), latest);
    let (outcome, _) = drive(read, &meter, now(), &[]);
    assert!(
        matches!(&outcome, FreezeOutcome::Lost(r) if r.contains("did not freeze")),
        "{outcome:?}"
    );
    // 12-04 is now the 4th most recent record (7, 6, 4): found by its stamp all the same.
    let read = FreezeRead::by_stamp(address(), FreezeKind::Daily, at(4, 0), latest);
    let (outcome, _) = drive(read, &meter, now(), &[]);
    assert!(
        matches!(outcome, FreezeOutcome::Record { n: 3, .. }),
        "{outcome:?}"
    );
}

#[test]
fn a_1997_meter_gives_its_two_monthly_settlements() {
    let meter = sim_meter("dlt645-1997-basic");
    let model = MeterModel::new(SEED, ADDR.into());
    for (n, month) in [(1u8, 12u32), (2, 11)] {
        let stamp = monthly_stamp(at(7, 8), (1, 0), n);
        assert_eq!(stamp, LocalMinute::from_civil(2026, month, 1, 0, 0));
        let (outcome, exchanges) = drive(
            FreezeRead::monthly(address(), Version::V1997, n, stamp),
            &meter,
            now(),
            &[],
        );
        let FreezeOutcome::Record { values, frames, .. } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!((exchanges, frames.len()), (2, 2));
        let start = days_from_civil(2026, month, 1) * DAY;
        for (q, kind, tariff) in [
            ("energy.active.import.total", "active.import", 0),
            ("energy.active.import.t2", "active.import", 2),
            ("energy.active.export.total", "active.export", 0),
        ] {
            assert_eq!(
                number(&values, q),
                model.energy(kind, tariff, 2, start).to_string(),
                "record {n}: {q}"
            );
        }
    }
    // The 1997 edition keeps two.
    let stamp = monthly_stamp(at(7, 8), (1, 0), 3);
    let read = FreezeRead::monthly(address(), Version::V1997, 3, stamp);
    assert!(matches!(read.finish(), FreezeOutcome::Lost(r) if r.contains("keeps 2 monthly")),);
}

fn lp(hour: u32, minute: u32) -> LocalMinute {
    LocalMinute::from_civil(2026, 12, 7, hour, minute)
}

#[test]
fn a_load_record_is_read_in_one_exchange_and_equals_the_meters() {
    let meter = sim_meter_with(
        "dlt645-three-phase",
        "freezes = [\"load_profile\"]\nload_profile_gaps = [\"2026-12-07T08:00\"]",
    );
    let model = MeterModel::new(SEED, ADDR.into());
    let read = FreezeRead::load_record(address(), lp(8, 15), lp(0, 0));
    let (outcome, exchanges) = drive(read, &meter, now(), &[]);
    assert_eq!(exchanges, 1);
    let FreezeOutcome::Record {
        stamp,
        values,
        frames,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(stamp, lp(8, 15));
    assert_eq!(frames.len(), 1);
    let want = model.load_record(lp(8, 15)).values();
    assert_eq!(values.len(), want.len());
    for (v, (_, w)) in values.iter().zip(&want) {
        assert_eq!(&*v.quantity, &*w.quantity);
        assert_eq!(v.source.as_ref(), "dlt645:06000001");
        assert_eq!(v.quality, crate::reading::Quality::Good);
    }
    assert_eq!(
        number(&values, "energy.active.import.total"),
        model
            .energy(
                "active.import",
                0,
                2,
                parse_rfc3339("2026-12-07T08:15:00Z").unwrap()
            )
            .to_string()
    );

    // The skipped 08:00: the meter answers with 08:15, so 08:00 is lost, with why.
    let (outcome, _) = drive(
        FreezeRead::load_record(address(), lp(8, 0), lp(0, 0)),
        &meter,
        now(),
        &[],
    );
    let FreezeOutcome::Lost(why) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(why.contains("did not record"), "{why}");
    // 08:45 is not recorded yet at 08:30 (the meter says "no requested data").
    let (outcome, _) = drive(
        FreezeRead::load_record(address(), lp(8, 45), lp(0, 0)),
        &meter,
        now(),
        &[],
    );
    assert_eq!(outcome, FreezeOutcome::NotYetFrozen);
    // Older than the meter keeps: lost without asking.
    let (outcome, exchanges) = drive(
        FreezeRead::load_record(address(), lp(1, 0), lp(2, 0)),
        &meter,
        now(),
        &[],
    );
    assert_eq!(exchanges, 0);
    assert!(
        matches!(outcome, FreezeOutcome::Lost(ref w) if w.contains("no longer")),
        "{outcome:?}"
    );
    // No reply: failed, read again later.
    let (outcome, _) = drive(
        FreezeRead::load_record(address(), lp(8, 15), lp(0, 0)),
        &meter,
        now(),
        &["06000001"],
    );
    assert!(matches!(outcome, FreezeOutcome::Failed(_)), "{outcome:?}");
}
