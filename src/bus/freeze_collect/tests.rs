//! The collector's choices: which record next, in which order, how often, within which budget.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::config::{MeterConfig, Profile, ProfileSet, Protocol};

/// A ledger in memory: the stamps settled, per meter and kind.
#[derive(Default)]
struct Book(Mutex<HashSet<(String, FreezeKind, LocalMinute)>>);

impl FreezeBook for Book {
    fn settled(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) -> bool {
        self.0
            .lock()
            .unwrap()
            .contains(&(meter.to_owned(), kind, stamp))
    }
}

impl Book {
    fn settle(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) {
        self.0
            .lock()
            .unwrap()
            .insert((meter.to_owned(), kind, stamp));
    }
}

fn driver(address: &str, freezes: Option<Vec<&str>>) -> MeterDriver {
    let profiles = ProfileSet::builtin().unwrap();
    let profile: &Profile = profiles.get("dlt645-three-phase").unwrap();
    let meter = MeterConfig {
        address: Some(address.into()),
        freezes: freezes.map(|k| k.into_iter().map(String::from).collect()),
        ..MeterConfig::new(Protocol::Dlt645_2007, "dlt645-three-phase")
    };
    MeterDriver::new(&meter, profile, "b").unwrap()
}

fn collector(book: Arc<Book>, config: FreezeConfig, drivers: &[MeterDriver]) -> FreezeCollector {
    let (out, _rx) = mpsc::channel(8);
    let sink = FreezeSink { book, out, config };
    FreezeCollector::new(sink, "gw", drivers.iter()).unwrap()
}

/// 2026-12-07T00:06 China Standard Time (16:06 UTC the day before), in Unix ms.
fn six_past_midnight_cst() -> i64 {
    crate::clock::parse_rfc3339("2026-12-06T16:06:00Z").unwrap()
}

fn cfg(days: u8) -> FreezeConfig {
    FreezeConfig {
        backfill_days: days,
        backfill_hours: 1,
        backfill_months: 1,
        ..FreezeConfig::default()
    }
}

fn day(d: u32) -> LocalMinute {
    LocalMinute::from_civil(2026, 12, d, 0, 0)
}

#[test]
fn due_stamps_wait_for_the_delay_and_go_back_as_configured() {
    let local = LocalMinute::from_civil(2026, 12, 7, 0, 3);
    let c = FreezeConfig {
        backfill_days: 3,
        ..FreezeConfig::default()
    };
    // 00:03 is before midnight + 5 min: today's record is not due yet.
    assert_eq!(
        due_stamps(FreezeKind::Daily, Version::V2007, local, &c),
        [day(6), day(5), day(4)]
    );
    let local = LocalMinute::from_civil(2026, 12, 7, 0, 5);
    assert_eq!(
        due_stamps(FreezeKind::Daily, Version::V2007, local, &c),
        [day(7), day(6), day(5)]
    );
    let hours = due_stamps(
        FreezeKind::Hourly,
        Version::V2007,
        LocalMinute::from_civil(2026, 12, 7, 13, 10),
        &c,
    );
    assert_eq!(hours.len(), 48);
    assert_eq!(hours[0], LocalMinute::from_civil(2026, 12, 7, 13, 0));
    let months = due_stamps(FreezeKind::Monthly, Version::V2007, local, &c);
    assert_eq!(months.len(), 12);
    assert_eq!(months[1], LocalMinute::from_civil(2026, 11, 1, 0, 0));
    // Never deeper than the meter keeps.
    let deep = FreezeConfig {
        backfill_days: 62,
        ..FreezeConfig::default()
    };
    assert_eq!(
        due_stamps(FreezeKind::Daily, Version::V2007, local, &deep).len(),
        62
    );
}

#[test]
fn the_newest_goes_first_then_the_missing_oldest_first() {
    let book = Arc::new(Book::default());
    let drivers = [driver("000000000001", Some(vec!["daily"]))];
    let mut c = collector(book.clone(), cfg(4), &drivers);
    let now = Instant::now();
    let t = six_past_midnight_cst();
    let job = c.next(t, now).unwrap();
    assert_eq!((job.info.stamp, job.info.backfill), (day(7), false));
    // Handed up: held while ingest stores it.
    let _ = c.done(
        job.info,
        FreezeOutcome::NotYetFrozen,
        Duration::ZERO,
        "x",
        true,
        now,
    );
    book.settle("000000000001", FreezeKind::Daily, day(7));
    let job = c.next(t, now).unwrap();
    assert_eq!((job.info.stamp, job.info.backfill), (day(4), true));
    book.settle("000000000001", FreezeKind::Daily, day(4));
    book.settle("000000000001", FreezeKind::Daily, day(5));
    book.settle("000000000001", FreezeKind::Daily, day(6));
    assert!(c.next(t, now).is_none(), "everything settled");
}

#[test]
fn a_failed_read_is_held_back_and_a_lost_record_is_reported_with_its_id() {
    let book = Arc::new(Book::default());
    let drivers = [
        driver("000000000001", Some(vec!["daily"])),
        driver("000000000002", Some(vec![])),
    ];
    let mut c = collector(book, cfg(2), &drivers);
    let now = Instant::now();
    let t = six_past_midnight_cst();
    let job = c.next(t, now).unwrap();
    assert_eq!(job.info.meter, 0);
    let none = c.done(
        job.info,
        FreezeOutcome::Failed("no reply".into()),
        Duration::ZERO,
        "x",
        true,
        now,
    );
    assert_eq!(none, None);
    let job = c.next(t, now).unwrap();
    assert_eq!(
        job.info.stamp,
        day(6),
        "the failed one waits, the next is tried"
    );
    let lost = c.done(
        job.info,
        FreezeOutcome::Lost("gone".into()),
        Duration::ZERO,
        "x",
        true,
        now,
    );
    assert_eq!(
        lost,
        Some(FreezeEvent::Lost {
            meter: "000000000001".into(),
            kind: FreezeKind::Daily,
            id: "gw/000000000001/daily/2026-12-06T00:00+08:00".into(),
            reason: "gone".into(),
        })
    );
    assert!(c.next(t, now).is_none());
    // After RETRY_AFTER the failed one is asked for again.
    let later = now + RETRY_AFTER + Duration::from_secs(1);
    assert_eq!(c.next(t, later).unwrap().info.stamp, day(7));
}

#[test]
fn bus_time_is_bounded_by_the_share() {
    let book = Arc::new(Book::default());
    let drivers = [driver("000000000001", Some(vec!["daily"]))];
    let config = FreezeConfig {
        bus_share_percent: 10,
        ..cfg(62)
    };
    let mut c = collector(book, config, &drivers);
    let start = Instant::now();
    let t = six_past_midnight_cst();
    // Each read takes 2 s of bus time; over 10 simulated minutes, 10 % is 60 s: about 30
    // reads (plus the initial allowance), never 300.
    let mut reads = 0;
    let mut now = start;
    while now < start + Duration::from_secs(600) {
        if let Some(job) = c.next(t, now) {
            reads += 1;
            let _ = c.done(
                job.info,
                FreezeOutcome::NotYetFrozen,
                Duration::from_secs(2),
                "x",
                true,
                now,
            );
        }
        now += Duration::from_millis(500);
    }
    assert!(
        (25..=36).contains(&reads),
        "{reads} reads of 2 s in 600 s at 10 %"
    );
}

#[test]
fn a_meter_without_freezes_needs_no_collector() {
    let (out, _rx) = mpsc::channel(1);
    let sink = FreezeSink {
        book: Arc::new(Book::default()),
        out,
        config: FreezeConfig::default(),
    };
    let drivers = [driver("000000000001", Some(vec![]))];
    assert!(FreezeCollector::new(sink, "gw", drivers.iter()).is_none());
    let _ = Path::new("unused");
}

#[test]
fn a_daily_record_at_2400_baud_takes_about_three_quarters_of_a_second() {
    let c = crate::bus::exchange::char_time(2400, 8, true, 1);
    let t = record_wire_time(FreezeKind::Daily, c, 4, Duration::from_millis(20));
    // 3 requests of 20 bytes, replies of 21, 36 and 36 bytes: 153 bytes × 4.583 ms + 3 × 20 ms.
    assert_eq!(t.as_millis(), 761);
    assert!(record_wire_time(FreezeKind::Hourly, c, 4, Duration::ZERO) < t);
    assert_eq!(records_per_day(FreezeKind::Hourly), 24.0);
}

#[test]
fn load_records_are_due_every_interval_back_as_configured() {
    let c = FreezeConfig {
        backfill_load_records: 3,
        ..FreezeConfig::default()
    };
    let m = |h, min| LocalMinute::from_civil(2026, 12, 7, h, min);
    let load = LoadProfileSpec {
        interval_minutes: 15,
        depth: 960,
    };
    // 10:19 is before 10:15 + the 5-minute delay: 10:00 is the newest due.
    assert_eq!(
        due_stamps_of(FreezeKind::LoadProfile, Version::V2007, load, m(10, 19), &c),
        [m(10, 0), m(9, 45), m(9, 30)]
    );
    let load = LoadProfileSpec {
        interval_minutes: 60,
        ..load
    };
    assert_eq!(
        due_stamps_of(FreezeKind::LoadProfile, Version::V2007, load, m(10, 20), &c),
        [m(10, 0), m(9, 0), m(8, 0)]
    );
    // Hourly records 255 back would outrun the ledger's 64 hours: 63 at most.
    let deep = FreezeConfig {
        backfill_load_records: 255,
        ..FreezeConfig::default()
    };
    let due = due_stamps_of(
        FreezeKind::LoadProfile,
        Version::V2007,
        load,
        m(10, 20),
        &deep,
    );
    assert_eq!(due.len(), 63);
    // A 1997 meter keeps none.
    assert!(due_stamps_of(FreezeKind::LoadProfile, Version::V1997, load, m(10, 20), &c).is_empty());
}
