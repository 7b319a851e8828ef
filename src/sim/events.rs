//! A simulated meter's event log and clock: the event counters and records it serves
//! (`03…` items; a DL/T 645-1997 meter: the programming count `B212` and the time of the last
//! one, `B210`), its clock error (an offset and a drift in ppm), and what it does with a
//! broadcast time sync.
//!
//! **Events.** Configured occurrences (`at` one time, or `every` period from the meter's first
//! request) plus every time set the meter accepted (a clock-set event, as real meters log a
//! broadcast sync). The counter of a type is the number of occurrences up to now; record `n`
//! is the n-th newest, for n ≤ 10.
//!
//! **Clock.** The meter's wall time at true time `t` is `t + zone + error(t)`, with
//! `error(t) = offset + ppm × (t − t0)` from its first request `t0`. A broadcast time sync is
//! applied only inside the limits a meter's firmware keeps (at most once per meter-local day,
//! not 23:55–00:05 on its own clock, which also covers the settlement instant at day 1 00:00
//! the simulator serves, and only a correction under 5 min); a refused set changes nothing.
//! Every set received is returned for the time-set log, accepted or not.
//!
//! No I/O, no sleeps, no clock reads: times are passed in.

use std::sync::Mutex;

use meter_protocols::dlt645::MeterDateTime;
use meter_protocols::dlt645::event::encode_record;
use meter_protocols::dlt645::event::{EventKind, EventRecord, RECORD_DEPTH, encode_count};
use meter_protocols::dlt645::event_1997::{encode_count_1997, encode_record_1997};
use serde::Serialize;

use super::config::SimMeterConfig;
use crate::clock::{UnixMillis, parse_rfc3339, rfc3339_ms};
use crate::config::Protocol;
use crate::reading::event::{local_ms, meter_time_at};

const DAY: i64 = 86_400_000;
const FIVE_MIN: i64 = 300_000;

/// When a configured event happens.
#[derive(Debug, Clone, Copy)]
enum When {
    At(UnixMillis),
    Every(i64),
}

#[derive(Debug, Default)]
struct State {
    /// The meter's first request (simulated time): the start of `every` events and drift.
    t0: Option<UnixMillis>,
    /// Clock error at `t0`, ms.
    error_ms: f64,
    /// Local day of the last time set accepted.
    last_sync_day: Option<i64>,
    /// Accepted time sets: (true time, meter local before, local after).
    sets: Vec<(UnixMillis, i64, i64)>,
}

/// One broadcast time set a meter received: a line of the simulator's time-set log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeSet {
    /// Simulated UTC time it arrived.
    pub at: String,
    /// Meter id.
    pub meter: String,
    /// The meter's clock before (its local time, no offset).
    pub meter_before: String,
    /// The time sent.
    pub sent: String,
    /// The correction it asked for, seconds (sent − meter before).
    pub correction_s: f64,
    /// Whether the meter took it.
    pub accepted: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<&'static str>,
}

/// One occurrence: start and end (true time), and for a clock set the meter's local time
/// before and after it.
type Occurrence = (i64, i64, Option<(i64, i64)>);

/// A simulated meter's events and clock.
#[derive(Debug)]
pub struct SimEvents {
    /// The types served (its profile's `events`).
    served: Vec<EventKind>,
    /// A DL/T 645-1997 meter: its items' layouts.
    v1997: bool,
    configured: Vec<(EventKind, When, i64)>,
    zone_ms: i64,
    ppm: f64,
    state: Mutex<State>,
}

fn text(local: i64) -> String {
    meter_time_at(local).map_or_else(|| format!("{local}"), |t| t.to_string())
}

impl SimEvents {
    /// The events and clock of a meter configured as `config` serving `served` types.
    pub fn new(config: &SimMeterConfig, served: Vec<EventKind>) -> SimEvents {
        let configured = config
            .events
            .iter()
            .filter_map(|e| {
                let kind = EventKind::parse(&e.ty)?;
                let when = match (e.at.as_deref().and_then(parse_rfc3339), e.every) {
                    (Some(at), _) => When::At(at),
                    (None, Some(every)) => {
                        When::Every(i64::try_from(every.as_millis()).ok()?.max(100))
                    }
                    (None, None) => return None,
                };
                let dur = e
                    .duration
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .unwrap_or(10_000);
                Some((kind, when, dur))
            })
            .collect();
        SimEvents {
            served,
            v1997: config.protocol == Protocol::Dlt645_1997,
            configured,
            zone_ms: config.utc_offset.minutes() * 60_000,
            ppm: config.clock_ppm,
            state: Mutex::new(State {
                error_ms: config.clock_offset_s as f64 * 1000.0,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Notes a request at `t` (the first one starts `every` events and the drift).
    fn touch(st: &mut State, t: UnixMillis) -> UnixMillis {
        *st.t0.get_or_insert(t)
    }

    fn error_at(&self, st: &mut State, t: UnixMillis) -> i64 {
        let t0 = Self::touch(st, t);
        (st.error_ms + self.ppm * (t - t0) as f64 / 1e6).round() as i64
    }

    /// The true time `t` as the meter's clock shows it, as an instant to hand to the value
    /// model (which adds the zone itself): `t + error(t)`.
    pub fn meter_instant(&self, t: UnixMillis) -> UnixMillis {
        let mut st = self.state();
        t + self.error_at(&mut st, t)
    }

    /// Occurrences of `kind` up to `t`, newest first, at most [`RECORD_DEPTH`] of them, and the
    /// total count: (start, end, clock-set before/after) in true time.
    fn occurrences(&self, kind: EventKind, t: UnixMillis) -> (u64, Vec<Occurrence>) {
        let mut st = self.state();
        let t0 = Self::touch(&mut st, t);
        let depth = i64::from(RECORD_DEPTH);
        let mut total: u64 = 0;
        let mut newest = Vec::new();
        for &(k, when, dur) in &self.configured {
            if k != kind {
                continue;
            }
            match when {
                When::At(at) if at <= t => {
                    total += 1;
                    newest.push((at, at + dur, None));
                }
                When::At(_) => {}
                When::Every(every) => {
                    let n = (t - t0).div_euclid(every).max(0);
                    total += u64::try_from(n).unwrap_or(0);
                    for k in (n - depth + 1).max(1)..=n {
                        let at = t0 + k * every;
                        newest.push((at, at + dur, None));
                    }
                }
            }
        }
        if kind == EventKind::ClockSet {
            for &(at, before, after) in st.sets.iter().filter(|s| s.0 <= t) {
                total += 1;
                newest.push((at, at, Some((before, after))));
            }
        }
        newest.sort_by_key(|o| std::cmp::Reverse(o.0));
        newest.truncate(RECORD_DEPTH.into());
        (total.min(999_999), newest)
    }

    /// The payload of event item `kind`/`n` (n = 0: the counter) at `t`; `None` when the
    /// meter does not serve this type, or has no such record.
    pub fn payload(&self, kind: EventKind, n: u8, t: UnixMillis) -> Option<Vec<u8>> {
        if !self.served.contains(&kind) {
            return None;
        }
        let (total, newest) = self.occurrences(kind, t);
        let local = |x: i64| meter_time_at(x + self.zone_ms);
        if self.v1997 {
            // The count (at most 9999) and the time of the last occurrence only.
            return match n {
                0 => Some(encode_count_1997(u32::try_from(total).unwrap_or(9_999)).to_vec()),
                1 => Some(encode_record_1997(local(newest.first()?.0)?).to_vec()),
                _ => None,
            };
        }
        if n == 0 {
            return Some(encode_count(u32::try_from(total).unwrap_or(999_999)).to_vec());
        }
        let &(start, end, set) = newest.get(usize::from(n) - 1)?;
        let record = EventRecord {
            kind,
            started: local(start),
            ended: if end <= t && kind_has_end(kind) {
                local(end)
            } else {
                None
            },
            operator: Some("00000001".into()),
            clock_before: set.and_then(|(b, _)| meter_time_at(b)),
            clock_after: set.and_then(|(_, a)| meter_time_at(a)),
            programmed: if kind == EventKind::Programming {
                vec![meter_protocols::dlt645::DataIdentifier::V2007(0x0400_0B01)]
            } else {
                Vec::new()
            },
            rest: match kind {
                EventKind::CoverOpen => vec![0; 48],
                EventKind::MeterClear => vec![0; 24],
                _ => Vec::new(),
            },
        };
        let mut record = record;
        if kind == EventKind::ClockSet {
            record.started = record.clock_before;
        }
        Some(encode_record(&record))
    }

    /// Applies a broadcast time sync setting the clock to `sent` (local time) at true time
    /// `t`, within the firmware's limits (see the module doc); returns the log line.
    pub fn time_sync(&self, meter: &str, sent: MeterDateTime, t: UnixMillis) -> TimeSet {
        let mut st = self.state();
        let before = t + self.zone_ms + self.error_at(&mut st, t);
        let sent_local = local_ms(sent);
        let correction = sent_local - before;
        let day = before.div_euclid(DAY);
        let tod = before.rem_euclid(DAY);
        let refused = if correction.abs() >= FIVE_MIN {
            Some("correction of 5 min or more")
        } else if st.last_sync_day == Some(day) {
            Some("already set today")
        } else if tod <= FIVE_MIN || tod >= DAY - FIVE_MIN {
            Some("within 23:55-00:05 (midnight, settlement)")
        } else {
            None
        };
        if refused.is_none() {
            // The error from now on is what makes the clock read `sent` now.
            let t0 = Self::touch(&mut st, t);
            let drifted = self.ppm * (t - t0) as f64 / 1e6;
            st.error_ms = (sent_local - t - self.zone_ms) as f64 - drifted;
            st.last_sync_day = Some(sent_local.div_euclid(DAY));
            st.sets.push((t, before, sent_local));
        }
        TimeSet {
            at: rfc3339_ms(t),
            meter: meter.to_owned(),
            meter_before: text(before),
            sent: sent.to_string(),
            correction_s: correction as f64 / 1000.0,
            accepted: refused.is_none(),
            refused,
        }
    }
}

/// Whether records of `kind` have an end time.
fn kind_has_end(kind: EventKind) -> bool {
    matches!(kind, EventKind::PowerDown | EventKind::CoverOpen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_protocols::dlt645::event::{decode_count, decode_record};

    fn config(extra: &str) -> SimMeterConfig {
        let text = format!(
            "protocol = \"dlt645-2007\"\naddress = \"000000000001\"\nprofile = \"p\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    const T: i64 = 1_796_630_400_000; // 2026-12-07T08:00:00Z

    #[test]
    fn counters_and_records_follow_the_configured_events() {
        let c = config(
            "events = [{ type = \"cover_open\", at = \"2026-12-07T07:00:00Z\" }, \
             { type = \"power_down\", every = \"30s\", duration = \"5s\" }]",
        );
        let ev = SimEvents::new(&c, vec![EventKind::CoverOpen, EventKind::PowerDown]);
        let count = |k, t| decode_count(&ev.payload(k, 0, t).unwrap()).unwrap();
        assert_eq!(count(EventKind::CoverOpen, T), 1);
        // `every` counts from the first request.
        assert_eq!(count(EventKind::PowerDown, T), 0);
        assert_eq!(count(EventKind::PowerDown, T + 95_000), 3);
        let r = decode_record(
            EventKind::PowerDown,
            &ev.payload(EventKind::PowerDown, 1, T + 95_000).unwrap(),
        )
        .unwrap();
        // The newest started at T + 90 s, 16:01:30 local (+08:00), and lasted 5 s.
        assert_eq!(r.started, MeterDateTime::new(26, 12, 7, 16, 1, 30).ok());
        assert_eq!(r.ended, MeterDateTime::new(26, 12, 7, 16, 1, 35).ok());
        assert!(ev.payload(EventKind::PowerDown, 4, T + 95_000).is_none());
        // Not served: no data.
        assert!(ev.payload(EventKind::MeterClear, 0, T).is_none());
    }

    /// A DL/T 645-1997 meter serves the programming count (`NNNN`) and the time of the last
    /// programming (`MMDDhhmm`, local), nothing deeper.
    #[test]
    fn a_1997_meter_serves_its_count_and_last_programming_time() {
        use meter_protocols::dlt645::event_1997::{decode_count_1997, decode_record_1997};
        let text = "protocol = \"dlt645-1997\"\naddress = \"000000000001\"\nprofile = \"p\"\n\
                    events = [{ type = \"programming\", at = \"2026-12-07T01:15:00Z\" }, \
                    { type = \"programming\", at = \"2026-12-07T07:40:00Z\" }]";
        let c: SimMeterConfig = toml::from_str(text).unwrap();
        let ev = SimEvents::new(&c, vec![EventKind::Programming]);
        let p = EventKind::Programming;
        assert_eq!(decode_count_1997(&ev.payload(p, 0, T).unwrap()), Ok(2));
        let now = MeterDateTime::new(26, 12, 7, 16, 0, 0).unwrap();
        let last = decode_record_1997(p, &ev.payload(p, 1, T).unwrap(), now).unwrap();
        // 07:40 UTC is 15:40 in China.
        assert_eq!(last.started, MeterDateTime::new(26, 12, 7, 15, 40, 0).ok());
        assert!(ev.payload(p, 2, T).is_none());
    }

    #[test]
    fn a_drifting_clock_takes_a_sync_only_within_the_limits() {
        let c = config("clock_offset_s = 90\nclock_ppm = 0");
        let ev = SimEvents::new(&c, vec![EventKind::ClockSet]);
        assert_eq!(ev.meter_instant(T), T + 90_000);
        // True local time now: 16:00:00 (+08:00); the meter shows 16:01:30.
        let right = MeterDateTime::new(26, 12, 7, 16, 0, 0).unwrap();
        let set = ev.time_sync("m", right, T);
        assert!(set.accepted, "{set:?}");
        assert_eq!(set.correction_s, -90.0);
        assert_eq!(ev.meter_instant(T + 1_000), T + 1_000);
        // The set is logged as a clock-set event.
        let count = decode_count(&ev.payload(EventKind::ClockSet, 0, T).unwrap()).unwrap();
        assert_eq!(count, 1);
        // A second one the same day is refused.
        let again = ev.time_sync("m", right, T + 60_000);
        assert_eq!(again.refused, Some("already set today"));
        // Too large a correction is refused, on another meter.
        let far = SimEvents::new(&config("clock_offset_s = 400"), vec![]);
        assert_eq!(
            far.time_sync("m", right, T).refused,
            Some("correction of 5 min or more")
        );
        // Near midnight on the meter's clock (23:57 local = 15:57Z).
        let late = SimEvents::new(&config("clock_offset_s = 60"), vec![]);
        let t = T + 7 * 3_600_000 + 57 * 60_000;
        let sent = MeterDateTime::new(26, 12, 7, 23, 57, 0).unwrap();
        assert_eq!(
            late.time_sync("m", sent, t).refused,
            Some("within 23:55-00:05 (midnight, settlement)")
        );
    }

    #[test]
    fn drift_in_ppm_accumulates() {
        let ev = SimEvents::new(&config("clock_ppm = 1000"), vec![]);
        assert_eq!(ev.meter_instant(T), T);
        // 1000 ppm over 100 s: 100 ms ahead.
        assert_eq!(ev.meter_instant(T + 100_000), T + 100_100);
    }
}
