//! Meter events and meter clocks on one bus: which counter, record or clock to read next, in
//! the gaps between polls, at a bounded share of bus time (a [`Budget`] like the freeze
//! collector's), and what the answers mean for the billing core.
//!
//! **Events.** Every `[events] interval`, each DL/T 645 meter with event types (its profile's
//! `events`, or its own) has its counters read, one exchange per type. A DL/T 645-1997 meter
//! counts programming only (`B212`) and keeps the time of the last one (`B210`): one record. A counter
//! above the last one stored means new occurrences: their records are read oldest first (record
//! `n` = 1 is the newest, so occurrence `c` of a meter now at count `L` is record `L − c + 1`),
//! one exchange each, and each becomes one `meterd.event.v1` numbered by `c`. Occurrences that
//! are older than the meter's history (10 records) are published too, with no times and
//! `details.record = "beyond the meter's history"`, so the numbering has no holes. The first
//! time a meter is seen (no stored counter), its counter is stored as the baseline and its old
//! history is not published. A counter that went backwards (the meter's event log was
//! cleared) or jumped by more than [`MAX_NEW`] becomes the new baseline, with a warning.
//!
//! **Clocks.** Every `[meter_clock] check_every`, each such meter's clock is read (date, then
//! time) and judged by [`crate::meter::clock_discipline::decide`]: off by more than the limit
//! is a `clock_drift` event; inside the meters' limits the bus is corrected by one broadcast
//! time sync (a `time_sync` event, then the clock is read again to confirm). A broadcast
//! reaches every meter of the bus, so it goes out only once each has been compared since start
//! (at most [`COMPARE_WAIT`]), on a reading at most [`SYNC_FRESH`] old, and one settles every
//! sync found due on the bus.
//!
//! The bus task asks only when no poll or one-shot read waits and the gap before the next poll
//! holds one exchange or two; a failed read is tried again after [`RETRY_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use meter_protocols::dlt645::event::{EventKind, EventRecord};
use meter_protocols::dlt645::event_1997::depth_in;
use meter_protocols::dlt645::{Address, MeterDateTime, Version};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::budget::Budget;
use crate::clock::UtcOffset;
use crate::clock::gateway::ClockTrust;
use crate::config::{EventsConfig, FreezeConfig, MeterClockConfig};
use crate::meter::MeterDriver;
use crate::meter::clock_discipline::{ClockFacts, MAX_SYNC, Verdict, decide};
use crate::meter::contract::{Reply, Step};
use crate::meter::event_read;
use crate::reading::event::{EventNote, MeterEvent, local_ms, meter_time_at, meter_time_text};

/// A failed read is tried again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);
/// After a look over every meter found nothing to read, the next look waits this long.
pub const QUIET_LOOK: Duration = Duration::from_secs(10);
/// A counter that rose by more than this since the last read is taken as a new baseline
/// (a swapped or reset meter), not as that many events.
pub const MAX_NEW: u64 = 1_000;
/// The clock is read again this long after a time sync, to confirm it took.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(5);
/// A broadcast sync waits at most this long after start for every meter of the bus to have
/// its clock compared (a meter that does not answer must not hold the others' correction).
pub const COMPARE_WAIT: Duration = Duration::from_secs(3600);
/// A sync found due longer ago than this is not sent blind: the meter's clock is read again
/// first (the limits, midnight and settlement times, are judged at the moment of sending).
pub const SYNC_FRESH: Duration = Duration::from_secs(30);
/// `event_counters` type holding the local day of a meter's bus's last time sync.
pub const SYNC_DAY: &str = "last_sync_day";

/// What the spool knows of a meter's counters (implemented above the bus, by ingest).
pub trait EventBook: Send + Sync {
    /// The last counter value stored for `meter`'s `ty` (an event type, or [`SYNC_DAY`]).
    fn last(&self, meter: &str, ty: &str) -> Option<u64>;
}

/// Where the bus's event work goes, and what it needs to know.
#[derive(Clone)]
pub struct EventSink {
    /// The stored counters.
    pub book: Arc<dyn EventBook>,
    /// Events and baselines, to ingest.
    pub out: mpsc::Sender<EventNote>,
    /// `[events]`.
    pub events: EventsConfig,
    /// `[meter_clock]`.
    pub clock: MeterClockConfig,
    /// The drift limit in force (`[meter_clock] drift_limit`, else `[validation] clock_limit`).
    pub drift_limit: Duration,
    /// `[freeze]`: the settlement times a sync keeps away from.
    pub freeze: FreezeConfig,
    /// Whether the gateway's clock counts as synchronised.
    pub trust: ClockTrust,
}

impl EventSink {
    /// The sink of a configuration: its `[events]`, `[meter_clock]`, `[freeze]` and
    /// `[gateway_clock]`, and the drift limit in force.
    pub fn from_config(
        config: &crate::config::Config,
        book: Arc<dyn EventBook>,
        out: mpsc::Sender<EventNote>,
    ) -> Self {
        Self {
            book,
            out,
            events: config.events.clone(),
            clock: config.meter_clock.clone(),
            drift_limit: config
                .meter_clock
                .drift_limit
                .unwrap_or(config.validation.clock_limit),
            freeze: config.freeze.clone(),
            trust: config.gateway_clock.synchronised,
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("events", &self.events)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What a job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// The counter of one event type.
    Count(EventKind),
    /// Record `n` of a type, which is occurrence `counter`.
    Record {
        /// Type.
        kind: EventKind,
        /// Record number (1 = newest).
        n: u8,
        /// The occurrence.
        counter: u64,
    },
    /// The meter's clock (date, then time).
    Clock,
    /// A broadcast time sync, found due by this meter's clock read.
    Sync {
        /// The meter's offset before, ms.
        offset_ms: i64,
        /// The meter's clock as read.
        meter_time: MeterDateTime,
    },
}

/// One job: which meter, what, and the exchanges (run in order, stopping at a failure).
#[derive(Debug, Clone)]
pub struct EventJob {
    /// The meter's index on the bus.
    pub meter: usize,
    /// What.
    pub kind: JobKind,
    /// The requests.
    pub steps: Vec<Step>,
}

/// A record to read.
#[derive(Debug, Clone)]
struct Wanted {
    kind: EventKind,
    counter: u64,
    /// The counter when it was read (record `latest − counter + 1` is the one).
    latest: u64,
    /// The counter's reply frame, part of the evidence.
    count_frame: String,
}

#[derive(Debug)]
struct MeterPlan {
    id: String,
    address: Address,
    /// The meter's edition: which counters it has, how many records it keeps.
    version: Version,
    offset: UtcOffset,
    kinds: Vec<EventKind>,
    /// Next counter round.
    events_due: Instant,
    /// Types still to count in this round.
    round: VecDeque<EventKind>,
    /// Counters handed up (ahead of the book until ingest stores them).
    known: HashMap<EventKind, u64>,
    wanted: VecDeque<Wanted>,
    hold_until: Option<Instant>,
    /// Next clock read; `None`: clock checks off.
    clock_due: Option<Instant>,
    /// A sync due now (found by the last clock read).
    sync: Option<(i64, MeterDateTime)>,
    /// A sync was sent: the next clock read confirms it.
    confirming: bool,
    /// When the pending `sync` was found due.
    sync_found: Option<Instant>,
    /// Its offset (ms, meter − true time) at the last clock read that compared it.
    last_offset_ms: Option<i64>,
    /// Its clock is read again because a sync it found due waited too long: a drift already
    /// reported is not reported twice.
    rechecking: bool,
    /// Its clock has been compared since the collector started: until every meter's has (or
    /// [`COMPARE_WAIT`] passed), no broadcast goes out. It would correct a meter never
    /// compared, whose error would then be reported nowhere (its clock-set event falls into
    /// its first-contact baseline).
    compared: bool,
}

/// The event and clock work of one bus.
pub struct EventCollector {
    sink: EventSink,
    gateway: String,
    meters: Vec<Option<MeterPlan>>,
    budget: Budget,
    /// Every DL/T 645 meter on the bus keeps the same zone (a broadcast reaches them all).
    one_zone: bool,
    /// When the collector started (the bound of waiting for every meter's first comparison).
    started: Instant,
    /// The local day of this bus's last sync (from the book at start, then ours).
    last_sync_day: Option<i64>,
}

impl std::fmt::Debug for EventCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCollector")
            .field("meters", &self.meters.len())
            .finish_non_exhaustive()
    }
}

impl EventCollector {
    /// A collector for `drivers` (in bus order); `None` when no meter has event types or
    /// clock checks.
    pub fn new<'a>(
        sink: EventSink,
        gateway: &str,
        drivers: impl Iterator<Item = &'a MeterDriver> + Clone,
        now: Instant,
    ) -> Option<EventCollector> {
        let clocks = !sink.clock.check_every.is_zero();
        let zones: Vec<UtcOffset> = drivers
            .clone()
            .filter(|d| d.address().is_some())
            .map(MeterDriver::utc_offset)
            .collect();
        let one_zone = zones.windows(2).all(|w| w[0] == w[1]);
        let mut last_sync_day = None;
        let meters: Vec<Option<MeterPlan>> = drivers
            .enumerate()
            .map(|(i, d)| {
                let address = d.address()?;
                let version = d.dlt645_version()?;
                // Only the types the edition counts (the configuration refuses others).
                let kinds: Vec<EventKind> = (d.events().iter().copied())
                    .filter(|k| depth_in(*k, version) > 0)
                    .collect();
                // Clocks are checked on DL/T 645-2007 meters only.
                let clocks = clocks && version == Version::V2007;
                if kinds.is_empty() && !clocks {
                    return None;
                }
                let day = sink.book.last(d.id(), SYNC_DAY);
                last_sync_day = last_sync_day.max(day.and_then(|d| i64::try_from(d).ok()));
                // Meters start their rounds a second apart, so a bus of many meters does not
                // ask all of them in one burst.
                let stagger = Duration::from_secs(u64::try_from(i).unwrap_or(0));
                Some(MeterPlan {
                    id: d.id().to_owned(),
                    address,
                    version,
                    offset: d.utc_offset(),
                    kinds,
                    events_due: now + stagger,
                    round: VecDeque::new(),
                    known: HashMap::new(),
                    wanted: VecDeque::new(),
                    hold_until: None,
                    clock_due: clocks.then_some(now + stagger),
                    sync: None,
                    sync_found: None,
                    last_offset_ms: None,
                    rechecking: false,
                    confirming: false,
                    compared: !clocks,
                })
            })
            .collect();
        meters.iter().any(Option::is_some).then(|| EventCollector {
            budget: Budget::new(sink.events.bus_share_percent, 2_000, now),
            sink,
            gateway: gateway.to_owned(),
            meters,
            one_zone,
            last_sync_day,
            started: now,
        })
    }

    /// The next job at wall time `now_ms` (Unix ms), if one is wanted and the budget allows.
    pub fn next(&mut self, now_ms: i64, now: Instant) -> Option<EventJob> {
        if !self.budget.allows(now) {
            return None;
        }
        let interval = self.sink.events.interval;
        // A broadcast reaches every meter of the bus: each is compared first.
        let all_compared =
            self.meters.iter().flatten().all(|p| p.compared) || now >= self.started + COMPARE_WAIT;
        for (m, plan) in self.meters.iter_mut().enumerate() {
            let Some(plan) = plan else { continue };
            if plan.hold_until.is_some_and(|h| now < h) {
                continue;
            }
            if all_compared
                && plan.sync.is_some()
                && plan.sync_found.is_none_or(|at| now > at + SYNC_FRESH)
            {
                // Found due too long ago: judged again on a fresh read.
                plan.sync = None;
                plan.rechecking = true;
                plan.clock_due = Some(now);
            }
            if let Some((offset_ms, meter_time)) = plan.sync.filter(|_| all_compared) {
                // The time is taken now, just before the frame goes out.
                let Some(target) = meter_time_at(now_ms + plan.offset.minutes() * 60_000) else {
                    plan.sync = None;
                    continue;
                };
                return Some(EventJob {
                    meter: m,
                    kind: JobKind::Sync {
                        offset_ms,
                        meter_time,
                    },
                    steps: vec![event_read::time_sync_step(target)],
                });
            }
            if plan.clock_due.is_some_and(|d| d <= now) {
                return Some(EventJob {
                    meter: m,
                    kind: JobKind::Clock,
                    steps: vec![
                        event_read::clock_step(plan.address, true),
                        event_read::clock_step(plan.address, false),
                    ],
                });
            }
            if let Some(w) = plan.wanted.front() {
                let back = w.latest.saturating_sub(w.counter) + 1;
                if let Some(step) = u8::try_from(back).ok().and_then(|n| {
                    event_read::record_step(plan.address, plan.version, w.kind, n).map(|s| (n, s))
                }) {
                    let (n, step) = step;
                    return Some(EventJob {
                        meter: m,
                        kind: JobKind::Record {
                            kind: w.kind,
                            n,
                            counter: w.counter,
                        },
                        steps: vec![step],
                    });
                }
            }
            if plan.round.is_empty() && plan.events_due <= now && !plan.kinds.is_empty() {
                plan.round = plan.kinds.iter().copied().collect();
                plan.events_due = now + interval;
            }
            if let Some(&kind) = plan.round.front() {
                if let Some(step) = event_read::count_step(plan.address, plan.version, kind) {
                    return Some(EventJob {
                        meter: m,
                        kind: JobKind::Count(kind),
                        steps: vec![step],
                    });
                }
                // Not an item of this edition (never planned): dropped.
                plan.round.pop_front();
            }
        }
        self.budget.quiet(now + QUIET_LOOK);
        None
    }

    /// Takes the outcome of `job`: its replies (with their raw bytes) in step order, or why it
    /// stopped; `spent` bus time; `gateway_ms` the wall time when the last reply came. Returns
    /// what to hand up.
    #[allow(clippy::too_many_arguments)]
    pub fn done(
        &mut self,
        job: &EventJob,
        outcome: Result<Vec<(Reply, Vec<u8>)>, String>,
        spent: Duration,
        gateway_ms: i64,
        evidence_frames: bool,
        now: Instant,
    ) -> Vec<EventNote> {
        self.budget.spend(spent);
        let read_at = crate::clock::rfc3339_ms(gateway_ms);
        let frames: Vec<String> = match (&outcome, evidence_frames) {
            (Ok(replies), true) => replies
                .iter()
                .map(|(_, raw)| crate::hex_input::to_hex(raw))
                .collect(),
            _ => Vec::new(),
        };
        let result = match job.kind {
            JobKind::Count(kind) => self.counted(job.meter, kind, &outcome, frames, &read_at),
            JobKind::Record { kind, n, counter } => self.recorded(
                job.meter,
                (kind, n, counter),
                &outcome,
                frames,
                (&read_at, gateway_ms),
            ),
            JobKind::Clock => self.clock_read(job.meter, &outcome, frames, gateway_ms, now),
            JobKind::Sync {
                offset_ms,
                meter_time,
            } => self.synced(job, &outcome, (offset_ms, meter_time), gateway_ms, now),
        };
        match result {
            Ok(notes) => notes,
            Err(reason) => {
                if let Some(Some(plan)) = self.meters.get_mut(job.meter) {
                    tracing::debug!(meter = %plan.id, job = ?job.kind, %reason, "event read failed; retried later");
                    plan.hold_until = Some(now + RETRY_AFTER);
                }
                Vec::new()
            }
        }
    }

    fn reply(outcome: &Result<Vec<(Reply, Vec<u8>)>, String>, i: usize) -> Result<&Reply, String> {
        match outcome {
            Ok(replies) => replies
                .get(i)
                .map(|(r, _)| r)
                .ok_or_else(|| "no reply".to_owned()),
            Err(reason) => Err(reason.clone()),
        }
    }

    fn counted(
        &mut self,
        m: usize,
        kind: EventKind,
        outcome: &Result<Vec<(Reply, Vec<u8>)>, String>,
        frames: Vec<String>,
        read_at: &str,
    ) -> Result<Vec<EventNote>, String> {
        let Some(Some(plan)) = self.meters.get_mut(m) else {
            return Ok(Vec::new());
        };
        let count = event_read::count_of(Self::reply(outcome, 0)?, plan.version, kind)?;
        plan.round.pop_front();
        let Some(count) = count.map(u64::from) else {
            tracing::warn!(meter = %plan.id, %kind, "the meter does not count this event type; not asked again");
            plan.kinds.retain(|k| *k != kind);
            return Ok(Vec::new());
        };
        let last = plan
            .known
            .get(&kind)
            .copied()
            .or_else(|| self.sink.book.last(&plan.id, kind.name()));
        let baseline = |plan: &mut MeterPlan| {
            plan.known.insert(kind, count);
            plan.wanted.retain(|w| w.kind != kind);
            vec![EventNote::Baseline {
                meter: plan.id.clone(),
                ty: kind.name().to_owned(),
                n: count,
            }]
        };
        let Some(last) = last else {
            tracing::info!(meter = %plan.id, %kind, count, "first contact: counter stored as the baseline, older events not published");
            return Ok(baseline(plan));
        };
        if count < last || count - last > MAX_NEW {
            tracing::warn!(meter = %plan.id, %kind, count, last, "event counter went backwards or jumped: taken as the new baseline");
            return Ok(baseline(plan));
        }
        // Occurrences already wanted stay; the new ones are added after them.
        let from = plan
            .wanted
            .iter()
            .filter(|w| w.kind == kind)
            .map(|w| w.counter)
            .max()
            .unwrap_or(last)
            .max(last)
            + 1;
        let kept = depth_in(kind, plan.version);
        let depth = u64::from(kept);
        let beyond = format!(
            "beyond the meter's history ({kept} record{} kept)",
            if kept == 1 { "" } else { "s" }
        );
        let mut notes = Vec::new();
        let count_frame = frames.first().cloned().unwrap_or_default();
        for counter in from..=count {
            if count - counter + 1 > depth {
                // Gone from the meter's history: published without times, so the numbering
                // has no hole.
                let mut e = MeterEvent::new(&self.gateway, &plan.id, kind.name(), counter, read_at);
                e.details.insert("record".into(), json!(beyond));
                e.frames = frames.clone();
                plan.known.insert(kind, counter);
                notes.push(EventNote::Event(e));
            } else {
                plan.wanted.push_back(Wanted {
                    kind,
                    counter,
                    latest: count,
                    count_frame: count_frame.clone(),
                });
            }
        }
        // Records already wanted are found relative to the newest count; any that this count
        // pushed out of the meter's history are published without times now.
        for w in plan.wanted.iter_mut().filter(|w| w.kind == kind) {
            w.latest = count;
        }
        let (gone, kept): (VecDeque<Wanted>, VecDeque<Wanted>) = std::mem::take(&mut plan.wanted)
            .into_iter()
            .partition(|w| w.kind == kind && w.latest - w.counter + 1 > depth);
        plan.wanted = kept;
        let mut gone_notes: Vec<EventNote> = gone
            .into_iter()
            .map(|w| {
                let mut e =
                    MeterEvent::new(&self.gateway, &plan.id, kind.name(), w.counter, read_at);
                e.details.insert("record".into(), json!(beyond));
                let known = plan.known.entry(kind).or_insert(0);
                *known = (*known).max(w.counter);
                EventNote::Event(e)
            })
            .collect();
        gone_notes.extend(notes);
        Ok(gone_notes)
    }

    fn recorded(
        &mut self,
        m: usize,
        (kind, n, counter): (EventKind, u8, u64),
        outcome: &Result<Vec<(Reply, Vec<u8>)>, String>,
        frames: Vec<String>,
        (read_at, gateway_ms): (&str, i64),
    ) -> Result<Vec<EventNote>, String> {
        let Some(Some(plan)) = self.meters.get_mut(m) else {
            return Ok(Vec::new());
        };
        // A DL/T 645-1997 record has no year: the read's time in the meter's zone says it.
        let reference = meter_time_at(gateway_ms + plan.offset.minutes() * 60_000)
            .ok_or_else(|| format!("gateway time {read_at} is outside the meters' calendar"))?;
        let record =
            event_read::record_of(Self::reply(outcome, 0)?, plan.version, (kind, n), reference)?;
        // The job was made from the front of the queue, and only `done` changes the queue.
        if plan
            .wanted
            .front()
            .is_none_or(|w| (w.kind, w.counter) != (kind, counter))
        {
            return Ok(Vec::new());
        }
        let Some(w) = plan.wanted.pop_front() else {
            return Ok(Vec::new());
        };
        let mut e = MeterEvent::new(&self.gateway, &plan.id, kind.name(), counter, read_at);
        match record {
            Some(r) => describe(&mut e, &r, plan.offset),
            None => {
                e.details
                    .insert("record".into(), json!("the meter has no such record"));
            }
        }
        e.details.insert("record_n".into(), json!(n));
        if !w.count_frame.is_empty() {
            e.frames.push(w.count_frame);
        }
        e.frames.extend(frames);
        plan.known.insert(kind, counter);
        Ok(vec![EventNote::Event(e)])
    }

    fn clock_read(
        &mut self,
        m: usize,
        outcome: &Result<Vec<(Reply, Vec<u8>)>, String>,
        frames: Vec<String>,
        gateway_ms: i64,
        now: Instant,
    ) -> Result<Vec<EventNote>, String> {
        let date = event_read::date_of(Self::reply(outcome, 0)?)?;
        let time = event_read::time_of(Self::reply(outcome, 1)?, date)?;
        let sink = &self.sink;
        let one_zone = self.one_zone;
        let last_sync_day = self.last_sync_day;
        // The other meters a broadcast would reach and could set: their clocks as last read.
        let max_sync = i64::try_from(MAX_SYNC.as_millis()).unwrap_or(i64::MAX);
        let peers: Vec<i64> = self
            .meters
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != m)
            .filter_map(|(_, p)| p.as_ref()?.last_offset_ms)
            .filter(|o| o.abs() < max_sync)
            .collect();
        let peer_offsets_ms = peers
            .iter()
            .min()
            .zip(peers.iter().max())
            .map(|(lo, hi)| (*lo, *hi));
        let Some(Some(plan)) = self.meters.get_mut(m) else {
            return Ok(Vec::new());
        };
        // Date read just before midnight and time just after: read again in a minute.
        if time.hour() == 0 && time.minute() == 0 && time.second() < 10 {
            plan.clock_due = Some(now + Duration::from_secs(60));
            return Ok(Vec::new());
        }
        let confirming = std::mem::take(&mut plan.confirming);
        plan.clock_due = Some(now + sink.clock.check_every);
        let state = sink.trust.state();
        let facts = ClockFacts {
            gateway_synchronised: state.is_synchronised(),
            gateway_ms,
            meter_local_ms: local_ms(time),
            offset_minutes: plan.offset.minutes(),
            drift_limit: sink.drift_limit,
            // After a sync the next read only reports: one sync a day, and none blind.
            sync_enabled: sink.clock.sync && !confirming,
            last_sync_day,
            daily_freeze_minute: sink.freeze.daily_at_minute,
            settlement: (sink.freeze.settlement_day, sink.freeze.settlement_hour),
            one_zone,
            peer_offsets_ms,
        };
        let verdict = decide(&facts);
        plan.compared = true;
        plan.last_offset_ms = match verdict {
            Verdict::NotCompared => None,
            Verdict::InLimit { offset_ms }
            | Verdict::Sync { offset_ms }
            | Verdict::Drift { offset_ms, .. } => Some(offset_ms),
        };
        let rechecking = std::mem::take(&mut plan.rechecking);
        let meter_text = meter_time_text(time, plan.offset);
        let gateway_text = crate::clock::rfc3339_ms(gateway_ms);
        let drift = |offset_ms: i64, action: &str| {
            let mut e = MeterEvent::new(&self.gateway, &plan.id, "clock_drift", 0, &gateway_text);
            e.started_at = Some(gateway_text.clone());
            e.details
                .insert("offset_s".into(), json!(offset_ms as f64 / 1000.0));
            e.details.insert("meter_time".into(), json!(meter_text));
            e.details.insert("gateway_time".into(), json!(gateway_text));
            e.details
                .insert("limit_s".into(), json!(sink.drift_limit.as_secs_f64()));
            e.details.insert("action".into(), json!(action));
            e.frames = frames.clone();
            EventNote::Event(e)
        };
        let checked = |offset_ms: i64, off: bool, note: &str| EventNote::ClockChecked {
            meter: plan.id.clone(),
            offset_ms,
            off,
            note: note.to_owned(),
        };
        Ok(match verdict {
            Verdict::NotCompared => {
                tracing::debug!(meter = %plan.id, state = ?state, "meter clock not compared: the gateway clock does not count as synchronised");
                Vec::new()
            }
            Verdict::InLimit { offset_ms } => {
                if confirming {
                    tracing::info!(meter = %plan.id, offset_ms, "time sync confirmed");
                }
                vec![checked(offset_ms, false, "within the limit")]
            }
            Verdict::Sync { offset_ms } => {
                let mut notes = vec![checked(offset_ms, true, "time_sync")];
                if !rechecking {
                    notes.insert(0, drift(offset_ms, "time_sync"));
                }
                plan.sync = Some((offset_ms, time));
                plan.sync_found = Some(now);
                notes
            }
            Verdict::Drift { offset_ms, refusal } => {
                tracing::warn!(meter = %plan.id, offset_ms, why = refusal.text(), "meter clock off; not corrected");
                let action = if confirming {
                    format!("still off after a time sync; {}", refusal.text())
                } else {
                    format!("not corrected: {}", refusal.text())
                };
                vec![drift(offset_ms, &action), checked(offset_ms, true, &action)]
            }
        })
    }

    fn synced(
        &mut self,
        job: &EventJob,
        outcome: &Result<Vec<(Reply, Vec<u8>)>, String>,
        (offset_ms, meter_time): (i64, MeterDateTime),
        gateway_ms: i64,
        now: Instant,
    ) -> Result<Vec<EventNote>, String> {
        let Some(Some(plan)) = self.meters.get_mut(job.meter) else {
            return Ok(Vec::new());
        };
        plan.sync = None;
        if let Err(reason) = outcome {
            return Err(format!("time sync not sent: {reason}"));
        }
        let sent_hex = job
            .steps
            .first()
            .map(|s| crate::hex_input::to_hex(&s.bytes))
            .unwrap_or_default();
        let day = (gateway_ms + plan.offset.minutes() * 60_000).div_euclid(86_400_000);
        plan.confirming = true;
        plan.clock_due = Some(now + CONFIRM_AFTER);
        let text = crate::clock::rfc3339_ms(gateway_ms);
        let mut e = MeterEvent::new(&self.gateway, &plan.id, "time_sync", 0, &text);
        e.started_at = Some(text.clone());
        e.details
            .insert("offset_before_s".into(), json!(offset_ms as f64 / 1000.0));
        e.details.insert(
            "meter_time_before".into(),
            json!(meter_time_text(meter_time, plan.offset)),
        );
        e.details.insert("sent".into(), json!(sent_hex));
        e.details.insert(
            "broadcast".into(),
            json!("999999999999: every DL/T 645 meter on this bus"),
        );
        e.frames = vec![sent_hex];
        let id = plan.id.clone();
        self.last_sync_day = Some(day);
        // The broadcast reached every meter of the bus: a sync other meters found due is
        // done too (a second one today would break the meters' limit); their next read
        // confirms it.
        for other in self.meters.iter_mut().flatten() {
            if other.sync.take().is_some() {
                other.confirming = true;
                other.clock_due = Some(now + CONFIRM_AFTER);
            }
        }
        let day = u64::try_from(day).unwrap_or(0);
        let mut notes = vec![EventNote::Event(e)];
        // The day is stored per meter of the bus (a broadcast reaches them all), so a restart
        // keeps to one sync a day.
        notes.extend(self.meters.iter().flatten().map(|p| EventNote::Baseline {
            meter: p.id.clone(),
            ty: SYNC_DAY.to_owned(),
            n: day,
        }));
        tracing::info!(meter = %id, offset_ms, "broadcast time sync sent");
        Ok(notes)
    }

    /// How long the bus may sleep before this collector wants a look (its next counter round,
    /// clock read, retry or record), at least `floor`: the bus otherwise sleeps until its next
    /// poll, which may be an hour away.
    pub fn wake_in(&self, now: Instant, floor: Duration) -> Option<Duration> {
        self.meters
            .iter()
            .flatten()
            .filter_map(|p| {
                let due = if p.sync.is_some() || !p.wanted.is_empty() || !p.round.is_empty() {
                    Some(now)
                } else {
                    let events = (!p.kinds.is_empty()).then_some(p.events_due);
                    match (events, p.clock_due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }?;
                Some(due.max(p.hold_until.unwrap_or(due)))
            })
            .min()
            .map(|at| at.saturating_duration_since(now).max(floor))
    }

    /// Where events go.
    pub fn out(&self) -> &mpsc::Sender<EventNote> {
        &self.sink.out
    }
}

/// Fills an event's times and details from the meter's record.
fn describe(e: &mut MeterEvent, r: &EventRecord, offset: UtcOffset) {
    e.started_at = r.started.map(|t| meter_time_text(t, offset));
    e.ended_at = r.ended.map(|t| meter_time_text(t, offset));
    if let Some(op) = &r.operator {
        e.details.insert("operator".into(), json!(op));
    }
    if let Some(t) = r.clock_before {
        e.details
            .insert("clock_before".into(), json!(meter_time_text(t, offset)));
    }
    if let Some(t) = r.clock_after {
        e.details
            .insert("clock_after".into(), json!(meter_time_text(t, offset)));
    }
    if !r.programmed.is_empty() {
        let dis: Vec<Value> = r.programmed.iter().map(|d| json!(d.to_string())).collect();
        e.details.insert("programmed".into(), Value::Array(dis));
    }
    if !r.rest.is_empty() {
        e.details
            .insert("data".into(), json!(crate::hex_input::to_hex(&r.rest)));
    }
}

/// The wire time of one exchange of a DL/T 645 read of an edition-`version` item whose reply
/// carries `payload` data bytes: the request (12 bytes of frame and the DI, 4 bytes in 2007
/// and 2 in 1997, plus `preamble` wake-up bytes) and the reply (12 bytes of frame, the DI, the
/// payload) at `char_time` per byte, plus `turnaround`. A bound for planning (`meterd
/// check-config`): a meter's own reply latency adds to it.
pub fn read_wire_time(
    version: Version,
    payload: u32,
    char_time: Duration,
    preamble: u8,
    turnaround: Duration,
) -> Duration {
    let di = match version {
        Version::V2007 => 4,
        Version::V1997 => 2,
    };
    char_time * (12 + di + u32::from(preamble) + 12 + di + payload) + turnaround
}

/// The wire time of reading one event counter: one exchange (`XXXXXX`, 3 bytes; a DL/T
/// 645-1997 counter `NNNN`, 2 bytes).
pub fn counter_wire_time(
    version: Version,
    char_time: Duration,
    preamble: u8,
    turnaround: Duration,
) -> Duration {
    let payload = match version {
        Version::V2007 => 3,
        Version::V1997 => 2,
    };
    read_wire_time(version, payload, char_time, preamble, turnaround)
}

/// The wire time of one meter clock check (DL/T 645-2007): the date (`YYMMDDWW`, 4 bytes),
/// then the time (`hhmmss`, 3 bytes).
pub fn clock_wire_time(char_time: Duration, preamble: u8, turnaround: Duration) -> Duration {
    read_wire_time(Version::V2007, 4, char_time, preamble, turnaround)
        + read_wire_time(Version::V2007, 3, char_time, preamble, turnaround)
}

#[cfg(test)]
mod tests;
