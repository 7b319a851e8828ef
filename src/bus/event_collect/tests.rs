//! The event collector's choices: which counter, record or clock next, what each answer
//! becomes, and when a time sync goes out.

use std::sync::Mutex;

use meter_protocols::dlt645::event::{encode_count, encode_record};
use meter_protocols::dlt645::{DataIdentifier, ErrorWord, Function, Response, Version};

use super::*;
use crate::config::{MeterConfig, Profile, ProfileSet, Protocol};

/// Stored counters in memory.
#[derive(Default)]
struct Book(Mutex<HashMap<(String, String), u64>>);

impl EventBook for Book {
    fn last(&self, meter: &str, ty: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap()
            .get(&(meter.to_owned(), ty.to_owned()))
            .copied()
    }
}

const ADDR: &str = "000000000007";

fn driver(events: Option<Vec<&str>>) -> MeterDriver {
    driver_at(ADDR, events)
}

fn driver_at(address: &str, events: Option<Vec<&str>>) -> MeterDriver {
    let profiles = ProfileSet::builtin().unwrap();
    let profile: &Profile = profiles.get("dlt645-three-phase").unwrap();
    let meter = MeterConfig {
        address: Some(address.into()),
        events: events.map(|k| k.into_iter().map(String::from).collect()),
        ..MeterConfig::new(Protocol::Dlt645_2007, "dlt645-three-phase")
    };
    MeterDriver::new(&meter, profile, "b").unwrap()
}

fn sink(book: Arc<Book>, check_every: Duration, trust: ClockTrust) -> EventSink {
    let (out, _rx) = mpsc::channel(8);
    EventSink {
        book,
        out,
        events: EventsConfig {
            interval: Duration::from_secs(900),
            bus_share_percent: 100,
        },
        clock: MeterClockConfig {
            check_every,
            drift_limit: None,
            sync: true,
        },
        drift_limit: Duration::from_secs(60),
        freeze: FreezeConfig::default(),
        trust,
    }
}

fn reply(di: DataIdentifier, payload: Vec<u8>) -> (Reply, Vec<u8>) {
    let frame = Response::ReadData {
        di,
        payload,
        more_follows: false,
    }
    .to_frame(ADDR.parse().unwrap(), Version::V2007);
    let raw = frame.to_bytes(0);
    (Reply::Dlt645(frame), raw)
}

fn no_data() -> (Reply, Vec<u8>) {
    let frame = Response::Abnormal {
        function: Function::ReadData,
        error: ErrorWord(ErrorWord::NO_DATA),
    }
    .to_frame(ADDR.parse().unwrap(), Version::V2007);
    let raw = frame.to_bytes(0);
    (Reply::Dlt645(frame), raw)
}

fn events_only(book: Arc<Book>, kinds: Vec<&str>, now: Instant) -> EventCollector {
    let d = [driver(Some(kinds))];
    EventCollector::new(
        sink(book, Duration::ZERO, ClockTrust::Never),
        "gw",
        d.iter(),
        now,
    )
    .unwrap()
}

/// 2026-12-07T02:00:00Z = 10:00 in +08:00.
const T: i64 = 1_796_608_800_000;

fn power_down_record(start: MeterDateTime, end: MeterDateTime) -> Vec<u8> {
    encode_record(&EventRecord {
        kind: EventKind::PowerDown,
        started: Some(start),
        ended: Some(end),
        operator: None,
        clock_before: None,
        clock_after: None,
        programmed: vec![],
        rest: vec![],
    })
}

fn event(note: &EventNote) -> &MeterEvent {
    match note {
        EventNote::Event(e) => e,
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn first_contact_stores_a_baseline_and_publishes_no_history() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    let mut c = events_only(book, vec!["power_down"], now);
    let job = c.next(T, now).expect("a counter read");
    assert_eq!(job.kind, JobKind::Count(EventKind::PowerDown));
    let count = reply(EventKind::PowerDown.count_di(), encode_count(7).to_vec());
    let notes = c.done(&job, Ok(vec![count]), Duration::ZERO, T, true, now);
    assert_eq!(
        notes,
        [EventNote::Baseline {
            meter: "000000000007".into(),
            ty: "power_down".into(),
            n: 7
        }]
    );
    // Nothing more until the next round, 15 min later.
    assert!(c.next(T, now + Duration::from_secs(60)).is_none());
    let later = now + Duration::from_secs(901);
    let job = c.next(T + 901_000, later).expect("the next round");
    assert_eq!(job.kind, JobKind::Count(EventKind::PowerDown));
}

#[test]
fn new_occurrences_are_read_oldest_first_and_numbered_by_the_counter() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    book.0
        .lock()
        .unwrap()
        .insert(("000000000007".into(), "power_down".into()), 7);
    let mut c = events_only(book, vec!["power_down"], now);
    let job = c.next(T, now).unwrap();
    let count = reply(EventKind::PowerDown.count_di(), encode_count(9).to_vec());
    assert!(
        c.done(&job, Ok(vec![count]), Duration::ZERO, T, true, now)
            .is_empty()
    );
    // Occurrence 8 is record 2 (the meter is at 9), then occurrence 9 is record 1.
    let mut got = Vec::new();
    for (want_n, counter) in [(2u8, 8u64), (1, 9)] {
        let job = c.next(T, now).expect("a record read");
        assert_eq!(
            job.kind,
            JobKind::Record {
                kind: EventKind::PowerDown,
                n: want_n,
                counter
            }
        );
        let start = MeterDateTime::new(26, 12, 7, 9, u8::try_from(counter).unwrap(), 0).unwrap();
        let end = MeterDateTime::new(26, 12, 7, 9, 30, 0).unwrap();
        let rec = reply(
            EventKind::PowerDown.record_di(want_n).unwrap(),
            power_down_record(start, end),
        );
        let notes = c.done(&job, Ok(vec![rec]), Duration::ZERO, T, true, now);
        assert_eq!(notes.len(), 1);
        got.push(event(&notes[0]).clone());
    }
    assert_eq!(got[0].id, "gw/000000000007/power_down/8");
    assert_eq!(got[0].n, 8);
    assert_eq!(
        got[0].started_at.as_deref(),
        Some("2026-12-07T09:08:00+08:00")
    );
    assert_eq!(
        got[0].ended_at.as_deref(),
        Some("2026-12-07T09:30:00+08:00")
    );
    assert_eq!(got[0].read_at, "2026-12-07T02:00:00.000Z");
    // Evidence: the counter's reply and the record's.
    assert_eq!(got[0].frames.len(), 2);
    assert_eq!(got[1].id, "gw/000000000007/power_down/9");
    assert!(c.next(T, now).is_none(), "done until the next round");
}

#[test]
fn occurrences_beyond_the_history_are_published_without_times() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    book.0
        .lock()
        .unwrap()
        .insert(("000000000007".into(), "cover_open".into()), 5);
    let mut c = events_only(book, vec!["cover_open"], now);
    let job = c.next(T, now).unwrap();
    let count = reply(EventKind::CoverOpen.count_di(), encode_count(18).to_vec());
    let notes = c.done(&job, Ok(vec![count]), Duration::ZERO, T, true, now);
    // 6, 7, 8 are records 13, 12, 11: gone. 9..=18 are records 10..=1.
    let ids: Vec<&str> = notes.iter().map(|n| event(n).id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "gw/000000000007/cover_open/6",
            "gw/000000000007/cover_open/7",
            "gw/000000000007/cover_open/8"
        ]
    );
    assert!(event(&notes[0]).started_at.is_none());
    assert!(
        event(&notes[0]).details["record"]
            .as_str()
            .unwrap()
            .contains("beyond")
    );
    let job = c.next(T, now).unwrap();
    assert_eq!(
        job.kind,
        JobKind::Record {
            kind: EventKind::CoverOpen,
            n: 10,
            counter: 9
        }
    );
    // A record the meter does not have is still an event, saying so.
    let notes = c.done(&job, Ok(vec![no_data()]), Duration::ZERO, T, true, now);
    assert_eq!(event(&notes[0]).n, 9);
    assert_eq!(
        event(&notes[0]).details["record"],
        "the meter has no such record"
    );
}

#[test]
fn wanted_records_that_a_later_count_pushes_out_of_the_history_are_published_without_times() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    book.0
        .lock()
        .unwrap()
        .insert(("000000000007".into(), "power_down".into()), 5);
    let mut c = events_only(book, vec!["power_down"], now);
    let job = c.next(T, now).unwrap();
    let count = |n| {
        vec![reply(
            EventKind::PowerDown.count_di(),
            encode_count(n).to_vec(),
        )]
    };
    assert!(
        c.done(&job, Ok(count(9)), Duration::ZERO, T, true, now)
            .is_empty()
    );
    // Before any record is read the counter is read again at 20: occurrences 6..=10 are now
    // records 15..=11, gone.
    let notes = c.done(&job, Ok(count(20)), Duration::ZERO, T, true, now);
    let ns: Vec<u64> = notes.iter().map(|n| event(n).n).collect();
    assert_eq!(ns, [6, 7, 8, 9, 10]);
    assert!(notes.iter().all(|n| event(n).started_at.is_none()));
    let job = c.next(T, now).unwrap();
    assert_eq!(
        job.kind,
        JobKind::Record {
            kind: EventKind::PowerDown,
            n: 10,
            counter: 11
        }
    );
}

#[test]
fn a_counter_that_went_back_or_leapt_is_a_new_baseline() {
    for (stored, read) in [(50u64, 3u32), (5, 5_000)] {
        let now = Instant::now();
        let book = Arc::new(Book::default());
        book.0
            .lock()
            .unwrap()
            .insert(("000000000007".into(), "meter_clear".into()), stored);
        let mut c = events_only(book, vec!["meter_clear"], now);
        let job = c.next(T, now).unwrap();
        let count = reply(
            EventKind::MeterClear.count_di(),
            encode_count(read).to_vec(),
        );
        let notes = c.done(&job, Ok(vec![count]), Duration::ZERO, T, true, now);
        assert!(
            matches!(&notes[..], [EventNote::Baseline { n, .. }] if *n == u64::from(read)),
            "{notes:?}"
        );
        assert!(c.next(T, now).is_none());
    }
}

#[test]
fn a_failed_read_waits_and_a_type_the_meter_lacks_is_dropped() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    let mut c = events_only(book, vec!["power_down", "programming"], now);
    let job = c.next(T, now).unwrap();
    assert!(
        c.done(&job, Err("no reply".into()), Duration::ZERO, T, true, now)
            .is_empty()
    );
    assert!(c.next(T, now + Duration::from_secs(10)).is_none());
    let later = now + RETRY_AFTER + Duration::from_secs(1);
    let job = c.next(T, later).unwrap();
    assert_eq!(job.kind, JobKind::Count(EventKind::PowerDown));
    assert!(
        c.done(&job, Ok(vec![no_data()]), Duration::ZERO, T, true, later)
            .is_empty()
    );
    let job = c.next(T, later).unwrap();
    assert_eq!(job.kind, JobKind::Count(EventKind::Programming));
}

#[test]
fn the_budget_bounds_the_reads() {
    let now = Instant::now();
    let book = Arc::new(Book::default());
    let d = [driver(Some(vec!["power_down"]))];
    let mut s = sink(book, Duration::ZERO, ClockTrust::Never);
    s.events.bus_share_percent = 1;
    let mut c = EventCollector::new(s, "gw", d.iter(), now).unwrap();
    let job = c.next(T, now).unwrap();
    // A read that took 5 s at 1 %: the next waits until 500 s of wall time repay it.
    c.done(&job, Err("x".into()), Duration::from_secs(5), T, true, now);
    c.meters[0].as_mut().unwrap().hold_until = None;
    assert!(c.next(T, now + Duration::from_secs(200)).is_none());
}

/// The clock replies for local time `t` (2026-12-07).
fn clock_replies(h: u8, m: u8, s: u8) -> Vec<(Reply, Vec<u8>)> {
    let bcd = |v: u8| (v / 10) << 4 | (v % 10);
    vec![
        reply(event_read::DATE_DI, vec![0x01, 0x07, 0x12, 0x26]),
        reply(event_read::TIME_DI, vec![bcd(s), bcd(m), bcd(h)]),
    ]
}

fn clock_collector(trust: ClockTrust, now: Instant) -> EventCollector {
    let d = [driver(Some(vec![]))];
    EventCollector::new(
        sink(
            Arc::new(Book::default()),
            Duration::from_secs(86_400),
            trust,
        ),
        "gw",
        d.iter(),
        now,
    )
    .unwrap()
}

#[test]
fn a_drifting_clock_is_reported_and_corrected_once() {
    let now = Instant::now();
    let mut c = clock_collector(ClockTrust::Trusted, now);
    let job = c.next(T, now).unwrap();
    assert_eq!(job.kind, JobKind::Clock);
    // True local time 10:00:00; the meter shows 10:01:30.
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 1, 30)),
        Duration::ZERO,
        T,
        true,
        now,
    );
    let drift = event(&notes[0]);
    assert_eq!(drift.ty, "clock_drift");
    assert_eq!(drift.details["offset_s"], 90.0);
    assert_eq!(drift.details["meter_time"], "2026-12-07T10:01:30+08:00");
    assert_eq!(drift.details["action"], "time_sync");
    // The sync goes out next, with the true local time of the moment.
    let job = c.next(T + 2_000, now).unwrap();
    assert!(matches!(
        job.kind,
        JobKind::Sync {
            offset_ms: 90_000,
            ..
        }
    ));
    assert_eq!(
        crate::hex_input::to_hex(&job.steps[0].bytes),
        // 2026-12-07 10:00:02: 02 00 10 07 12 26 (+33h each).
        "68 99 99 99 99 99 99 68 08 06 35 33 43 3A 45 59 F7 16"
    );
    let notes = c.done(
        &job,
        Ok(vec![(Reply::None, vec![])]),
        Duration::ZERO,
        T + 2_000,
        true,
        now,
    );
    let sync = event(&notes[0]);
    assert_eq!(sync.ty, "time_sync");
    assert_eq!(sync.details["offset_before_s"], 90.0);
    assert!(
        notes[1..]
            .iter()
            .all(|n| matches!(n, EventNote::Baseline { ty, .. } if ty == SYNC_DAY))
    );
    // Confirmed by a read 5 s later; a meter still off is reported, never synced again today.
    let later = now + CONFIRM_AFTER;
    let job = c.next(T + 7_000, later).unwrap();
    assert_eq!(job.kind, JobKind::Clock);
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 1, 37)),
        Duration::ZERO,
        T + 7_000,
        true,
        later,
    );
    assert_eq!(event(&notes[0]).ty, "clock_drift");
    assert!(
        event(&notes[0]).details["action"]
            .as_str()
            .unwrap()
            .contains("still off")
    );
    assert!(c.next(T + 8_000, later).is_none(), "no second sync");
}

/// A broadcast sync reaches every meter of the bus: it waits until each has had its first
/// clock read, so that a meter it corrects has been compared (and reported) first. Sent at
/// once, it corrected the meters not read yet, and their error was reported nowhere (the
/// fault model, tests/fault_model.rs, found three such meters in 100).
#[test]
fn a_sync_waits_until_every_meter_of_the_bus_was_compared() {
    let now = Instant::now();
    let d = [
        driver_at("000000000007", Some(vec![])),
        driver_at("000000000008", Some(vec![])),
    ];
    let mut c = EventCollector::new(
        sink(
            Arc::new(Book::default()),
            Duration::from_secs(86_400),
            ClockTrust::Trusted,
        ),
        "gw",
        d.iter(),
        now,
    )
    .unwrap();
    // The first meter is 90 s fast: a sync is due.
    let job = c.next(T, now).unwrap();
    assert_eq!((job.meter, job.kind), (0, JobKind::Clock));
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 1, 30)),
        Duration::ZERO,
        T,
        true,
        now,
    );
    assert_eq!(event(&notes[0]).details["action"], "time_sync");
    // The second (its round a second later) is compared before the sync goes out.
    let later = now + Duration::from_secs(1);
    let job = c.next(T + 1_000, later).unwrap();
    assert_eq!((job.meter, job.kind), (1, JobKind::Clock));
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 1, 20)),
        Duration::ZERO,
        T + 1_000,
        true,
        later,
    );
    assert_eq!(event(&notes[0]).ty, "clock_drift");
    assert_eq!(event(&notes[0]).details["offset_s"], 79.0);
    let job = c.next(T + 2_000, later).unwrap();
    assert!(matches!(job.kind, JobKind::Sync { .. }), "{job:?}");
    c.done(
        &job,
        Ok(vec![(Reply::None, vec![])]),
        Duration::ZERO,
        T + 2_000,
        true,
        later,
    );
    // One broadcast set both: the second meter's sync is not sent again; both are read back.
    let confirm = later + CONFIRM_AFTER;
    for meter in [0, 1] {
        let job = c.next(T + 7_000, confirm).unwrap();
        assert_eq!((job.meter, job.kind), (meter, JobKind::Clock));
        let notes = c.done(
            &job,
            Ok(clock_replies(10, 0, 7)),
            Duration::ZERO,
            T + 7_000,
            true,
            confirm,
        );
        assert!(matches!(
            notes[0],
            EventNote::ClockChecked { off: false, .. }
        ));
    }
    assert!(c.next(T + 8_000, confirm).is_none(), "no second sync");
}

/// A meter whose first clock read failed holds the broadcast until it is compared (the
/// fault model found one such meter corrected unseen when a tried read was enough); the sync
/// found due minutes before is then judged again on a fresh read, without a second report.
#[test]
fn a_sync_waits_for_a_meter_that_did_not_answer_and_is_judged_again() {
    let now = Instant::now();
    let d = [
        driver_at("000000000007", Some(vec![])),
        driver_at("000000000008", Some(vec![])),
    ];
    let mut c = EventCollector::new(
        sink(
            Arc::new(Book::default()),
            Duration::from_secs(86_400),
            ClockTrust::Trusted,
        ),
        "gw",
        d.iter(),
        now,
    )
    .unwrap();
    let job = c.next(T, now).unwrap();
    c.done(
        &job,
        Ok(clock_replies(10, 1, 30)),
        Duration::ZERO,
        T,
        true,
        now,
    );
    let later = now + Duration::from_secs(1);
    let job = c.next(T + 1_000, later).unwrap();
    assert_eq!((job.meter, job.kind), (1, JobKind::Clock));
    let notes = c.done(
        &job,
        Err("no reply".into()),
        Duration::ZERO,
        T + 1_000,
        true,
        later,
    );
    assert!(notes.is_empty());
    assert!(
        c.next(T + 2_000, later).is_none(),
        "no sync before meter 1 is compared"
    );
    // Its retry: compared, in limit.
    let retry = later + RETRY_AFTER;
    let job = c.next(T + 301_000, retry).unwrap();
    assert_eq!((job.meter, job.kind), (1, JobKind::Clock));
    c.done(
        &job,
        Ok(clock_replies(10, 5, 1)),
        Duration::ZERO,
        T + 301_000,
        true,
        retry,
    );
    // The first meter's sync is five minutes old: its clock is read again, not reported twice.
    let job = c.next(T + 302_000, retry).unwrap();
    assert_eq!((job.meter, job.kind), (0, JobKind::Clock));
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 6, 32)),
        Duration::ZERO,
        T + 302_000,
        true,
        retry,
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(matches!(
        notes[0],
        EventNote::ClockChecked { off: true, .. }
    ));
    let job = c.next(T + 303_000, retry).unwrap();
    assert!(
        matches!(
            job.kind,
            JobKind::Sync {
                offset_ms: 90_000,
                ..
            }
        ),
        "{job:?}"
    );
}

#[test]
fn a_large_offset_is_reported_never_forced() {
    let now = Instant::now();
    let mut c = clock_collector(ClockTrust::Trusted, now);
    let job = c.next(T, now).unwrap();
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 8, 0)),
        Duration::ZERO,
        T,
        true,
        now,
    );
    assert_eq!(event(&notes[0]).details["offset_s"], 480.0);
    assert!(
        event(&notes[0]).details["action"]
            .as_str()
            .unwrap()
            .contains("technician")
    );
    assert!(c.next(T, now).is_none());
}

#[test]
fn nothing_is_compared_or_sent_while_the_gateway_clock_is_untrusted() {
    let now = Instant::now();
    let mut c = clock_collector(ClockTrust::Never, now);
    let job = c.next(T, now).unwrap();
    let notes = c.done(
        &job,
        Ok(clock_replies(10, 1, 30)),
        Duration::ZERO,
        T,
        true,
        now,
    );
    assert!(notes.is_empty());
    assert!(c.next(T, now).is_none());
}
