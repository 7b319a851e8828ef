//! Freeze collection on one bus: which settlement record of which meter to read next, in the
//! gaps between polls, at a bounded share of bus time.
//!
//! For every meter with freeze kinds (its profile's `freezes`), the collector knows which
//! records are due at the meter's local time (daily: each midnight, plus `[freeze] delay`;
//! hourly: each whole hour; monthly: each settlement day; load profile: each
//! `load_profile_interval`), how far back to look
//! (`backfill_days` and friends, never deeper than the meter keeps), and asks the
//! [`FreezeBook`] (the ledger, kept above the bus) which of them are already stored,
//! delivered or lost. The newest due record goes first, the moment it is due; then the
//! missing ones, oldest first (they fall out of the meter's history first), each marked as a
//! back-fill. A failed read is tried again after [`RETRY_AFTER`]; a record the meter has not
//! made yet, after [`NOT_YET_RETRY`].
//!
//! Bus time: the bus task asks only when no poll or one-shot read is waiting and the next poll
//! is far enough away; a token bucket keeps freeze reads under `bus_share_percent` of the
//! wall time (bursts up to [`BURST`] of it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meter_protocols::dlt645::freeze::{
    FreezeKind, LOAD_PROFILE_SLOT_MINUTES, LocalMinute, MAX_LOAD_RECORDS_BACK, latest_due,
    latest_load_record, monthly_stamp,
};
use meter_protocols::dlt645::{Address, Version};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::budget::Budget;
use crate::clock::UtcOffset;
use crate::config::FreezeConfig;
use crate::config::profile::LoadProfileSpec;
use crate::meter::MeterDriver;
use crate::meter::freeze_read::{FreezeOutcome, FreezeRead};
use crate::reading::freeze::{FreezeOrigin, FreezeRecord};

/// A failed read (no reply, an error reply) is tried again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(10 * 60);
/// A record the meter has not made yet (its clock is behind) is asked for again after this.
pub const NOT_YET_RETRY: Duration = Duration::from_secs(60);
/// After a look over every meter found nothing to read, the next look waits this long: the
/// bus asks on every idle turn, and a look costs a ledger lookup per due record of every meter.
pub const QUIET_LOOK: Duration = Duration::from_secs(30);
pub use super::budget::BURST;

/// What the ledger knows of a record (implemented above the bus, by ingest).
pub trait FreezeBook: Send + Sync {
    /// Whether the record of `meter` of `kind` stamped `stamp` (the meter's local time)
    /// needs no reading: stored, delivered or lost.
    fn settled(&self, meter: &str, kind: FreezeKind, stamp: LocalMinute) -> bool;
}

/// What the collector hands up.
#[derive(Debug, Clone, PartialEq)]
pub enum FreezeEvent {
    /// A complete record, to be stored and published.
    Record(FreezeRecord),
    /// A record that can never be read: it fell out of the meter's history, or the meter
    /// skipped the freeze.
    Lost {
        /// Meter id.
        meter: String,
        /// Freeze kind.
        kind: FreezeKind,
        /// The id the record would have had.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Where the bus's freeze work goes, and the ledger it consults.
#[derive(Clone)]
pub struct FreezeSink {
    /// The ledger.
    pub book: Arc<dyn FreezeBook>,
    /// Records and losses, to ingest.
    pub out: mpsc::Sender<FreezeEvent>,
    /// `[freeze]`.
    pub config: FreezeConfig,
}

impl std::fmt::Debug for FreezeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Which record of which meter a read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobInfo {
    /// The meter's index on the bus.
    pub meter: usize,
    /// Freeze kind.
    pub kind: FreezeKind,
    /// The stamp wanted (meter local time).
    pub stamp: LocalMinute,
    /// Read later than its normal collection.
    pub backfill: bool,
}

/// One record to read: which one, and the read itself.
#[derive(Debug)]
pub struct FreezeJob {
    /// Which record.
    pub info: JobInfo,
    /// The sans-IO read.
    pub read: FreezeRead,
}

/// A meter's freeze plan.
#[derive(Debug)]
struct MeterPlan {
    id: String,
    protocol: &'static str,
    address: Address,
    /// The meter's edition: which records it keeps, how deep.
    version: Version,
    offset: UtcOffset,
    kinds: Vec<FreezeKind>,
    /// Its load-record interval and depth.
    load_profile: LoadProfileSpec,
}

/// The freeze collection state of one bus.
pub struct FreezeCollector {
    sink: FreezeSink,
    gateway: String,
    meters: Vec<Option<MeterPlan>>,
    /// Records not to ask for before the given time (failed, not made yet, or handed up and
    /// not in the ledger yet).
    hold: HashMap<(usize, FreezeKind, LocalMinute), Instant>,
    /// Bus time freeze reads may spend (`bus_share_percent`), and the quiet period after a
    /// look that found nothing.
    budget: Budget,
}

impl std::fmt::Debug for FreezeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeCollector")
            .field("meters", &self.meters.len())
            .finish_non_exhaustive()
    }
}

impl FreezeCollector {
    /// A collector for `drivers` (in bus order); `None` when no meter has freeze kinds.
    pub fn new<'a>(
        sink: FreezeSink,
        gateway: &str,
        drivers: impl Iterator<Item = &'a MeterDriver>,
    ) -> Option<FreezeCollector> {
        let meters: Vec<Option<MeterPlan>> = drivers
            .map(|d| {
                let address = d.address()?;
                let version = d.dlt645_version()?;
                (!d.freezes().is_empty()).then(|| MeterPlan {
                    id: d.id().to_owned(),
                    protocol: d.protocol().name(),
                    address,
                    version,
                    offset: d.utc_offset(),
                    kinds: d.freezes().to_vec(),
                    load_profile: d.load_profile(),
                })
            })
            .collect();
        meters.iter().any(Option::is_some).then(|| FreezeCollector {
            budget: Budget::new(sink.config.bus_share_percent, 5_000, Instant::now()),
            sink,
            gateway: gateway.to_owned(),
            meters,
            hold: HashMap::new(),
        })
    }

    /// The record to read next at wall time `now_ms` (Unix milliseconds), if any is wanted
    /// and the bus-time budget allows one now.
    pub fn next(&mut self, now_ms: i64, now: Instant) -> Option<FreezeJob> {
        if !self.budget.allows(now) {
            return None;
        }
        self.hold.retain(|_, until| *until > now);
        let cfg = self.sink.config.clone();
        for (m, plan) in self.meters.iter().enumerate() {
            let Some(plan) = plan else { continue };
            let local = LocalMinute((now_ms.div_euclid(60_000)) + plan.offset.minutes());
            for &kind in &plan.kinds {
                let due = due_stamps_of(kind, plan.version, plan.load_profile, local, &cfg);
                let Some(&newest) = due.first() else { continue };
                let wanted = |stamp: &LocalMinute| {
                    !self.hold.contains_key(&(m, kind, *stamp))
                        && !self.sink.book.settled(&plan.id, kind, *stamp)
                };
                // The newest on time; then the missing ones, oldest first.
                let pick = if wanted(&newest) {
                    Some((newest, false))
                } else {
                    due.iter().rev().find(|s| wanted(s)).map(|s| (*s, true))
                };
                let Some((stamp, backfill)) = pick else {
                    continue;
                };
                let latest = latest_due(
                    kind,
                    local,
                    cfg.daily_at_minute,
                    (cfg.settlement_day, cfg.settlement_hour),
                );
                let read = match kind {
                    FreezeKind::Monthly => {
                        let n = due.iter().position(|s| *s == stamp).map_or(1, |i| i + 1);
                        FreezeRead::monthly(
                            plan.address,
                            plan.version,
                            u8::try_from(n).unwrap_or(u8::MAX),
                            stamp,
                        )
                    }
                    FreezeKind::LoadProfile => {
                        FreezeRead::load_record(plan.address, stamp, oldest_load_record(plan, &due))
                    }
                    _ => FreezeRead::by_stamp(plan.address, kind, stamp, latest),
                };
                return Some(FreezeJob {
                    info: JobInfo {
                        meter: m,
                        kind,
                        stamp,
                        backfill,
                    },
                    read,
                });
            }
        }
        self.budget.quiet(now + QUIET_LOOK);
        None
    }

    /// Takes the outcome of the read of `job`, which took `spent` of bus time at wall time
    /// `read_at` (RFC 3339); returns what to hand up, if anything.
    pub fn done(
        &mut self,
        job: JobInfo,
        outcome: FreezeOutcome,
        spent: Duration,
        read_at: &str,
        evidence_frames: bool,
        now: Instant,
    ) -> Option<FreezeEvent> {
        self.budget.spend(spent);
        let plan = self.meters.get(job.meter)?.as_ref()?;
        let key = (job.meter, job.kind, job.stamp);
        let origin = FreezeOrigin {
            gateway: &self.gateway,
            meter: &plan.id,
            protocol: plan.protocol,
            offset: plan.offset,
            read_at,
        };
        match outcome {
            FreezeOutcome::Record {
                stamp,
                values,
                frames,
                ..
            } => {
                // Not asked for again while ingest stores it and the ledger learns it.
                self.hold.insert(key, now + RETRY_AFTER);
                let frames = if evidence_frames {
                    frames.iter().map(|f| crate::hex_input::to_hex(f)).collect()
                } else {
                    Vec::new()
                };
                Some(FreezeEvent::Record(FreezeRecord::new(
                    &origin,
                    job.kind,
                    stamp,
                    job.backfill,
                    values,
                    frames,
                )))
            }
            FreezeOutcome::Lost(reason) => {
                self.hold.insert(key, now + RETRY_AFTER);
                let id = FreezeRecord::new(&origin, job.kind, job.stamp, true, vec![], vec![]).id;
                Some(FreezeEvent::Lost {
                    meter: plan.id.clone(),
                    kind: job.kind,
                    id,
                    reason,
                })
            }
            FreezeOutcome::NotYetFrozen => {
                self.hold.insert(key, now + NOT_YET_RETRY);
                None
            }
            FreezeOutcome::Failed(reason) => {
                tracing::debug!(meter = %plan.id, kind = %job.kind, stamp = %job.stamp, %reason, "freeze read failed; retried later");
                self.hold.insert(key, now + RETRY_AFTER);
                None
            }
        }
    }

    /// Where records and losses go.
    pub fn out(&self) -> &mpsc::Sender<FreezeEvent> {
        &self.sink.out
    }
}

/// The oldest load record `plan`'s meter still keeps, seen from the newest due one (`due`,
/// newest first): its depth back.
fn oldest_load_record(plan: &MeterPlan, due: &[LocalMinute]) -> LocalMinute {
    let newest = due.first().copied().unwrap_or(LocalMinute(0));
    let spec = plan.load_profile;
    LocalMinute(newest.0 - (i64::from(spec.depth) - 1) * spec.interval_minutes)
}

/// The stamps of `kind` due at the meter's local time `local`, newest first: every record the
/// meter should have made by now (each freeze instant plus `delay`), back to the configured
/// depth (and no deeper than a meter of `version` keeps). Load records at the default
/// interval; [`due_stamps_of`] takes the meter's.
pub fn due_stamps(
    kind: FreezeKind,
    version: Version,
    local: LocalMinute,
    cfg: &FreezeConfig,
) -> Vec<LocalMinute> {
    due_stamps_of(kind, version, LoadProfileSpec::default(), local, cfg)
}

/// [`due_stamps`] for a meter recording its load profile as `load`: every interval back
/// `backfill_load_records` records (the meter's records older than its depth included: they
/// are reported lost, not read).
pub fn due_stamps_of(
    kind: FreezeKind,
    version: Version,
    load: LoadProfileSpec,
    local: LocalMinute,
    cfg: &FreezeConfig,
) -> Vec<LocalMinute> {
    let depth = kind.depth_in(version);
    let delay = i64::try_from(cfg.delay.as_secs() / 60).unwrap_or(0);
    let seen = LocalMinute(local.0 - delay);
    let settlement = (cfg.settlement_day, cfg.settlement_hour);
    let newest = latest_due(kind, seen, cfg.daily_at_minute, settlement);
    match kind {
        FreezeKind::Daily => (0..i64::from(cfg.backfill_days.min(depth)))
            .map(|k| LocalMinute(newest.0 - k * 1440))
            .collect(),
        FreezeKind::Hourly => (0..i64::from(cfg.backfill_hours.min(depth)))
            .map(|k| LocalMinute(newest.0 - k * 60))
            .collect(),
        FreezeKind::Monthly => (1..=cfg.backfill_months.min(depth))
            .map(|n| monthly_stamp(seen, settlement, n))
            .collect(),
        FreezeKind::LoadProfile => {
            if depth == 0 {
                return Vec::new();
            }
            let newest = latest_load_record(seen, load.interval_minutes);
            // No further back than the ledger's 256 15-minute slots remember (255 records at
            // 15 minutes, 63 at 60): older ones would look unsettled for ever.
            let interval = load.interval_minutes.max(1);
            let remembered =
                i64::from(MAX_LOAD_RECORDS_BACK) * LOAD_PROFILE_SLOT_MINUTES / interval;
            (0..i64::from(cfg.backfill_load_records.min(depth)).min(remembered))
                .map(|k| LocalMinute(newest.0 - k * load.interval_minutes))
                .collect()
        }
    }
}

/// The wire time of reading one record of `kind` found at its first guess: its requests
/// (16 bytes plus `preamble` wake-up bytes each) and replies (stamp `YYMMDDhhmm`; total and 4
/// tariffs per daily or monthly block, a total per hourly one) at `char_time` per byte, plus
/// `turnaround` per exchange. A bound for planning: a meter's own reply latency adds to it.
pub fn record_wire_time(
    kind: FreezeKind,
    char_time: Duration,
    preamble: u8,
    turnaround: Duration,
) -> Duration {
    let request = 16 + u32::from(preamble);
    // A reply is 12 bytes of frame plus L = 4 (DI) + the payload.
    let reply = |payload: u32| 12 + 4 + payload;
    let exchanges: &[u32] = match kind {
        FreezeKind::Daily => &[5, 20, 20],
        FreezeKind::Hourly => &[5, 4, 4],
        FreezeKind::Monthly => &[20, 20],
        // One given-time request (6 more bytes of data) and one full record (103 bytes).
        FreezeKind::LoadProfile => {
            let request = request + 6;
            return char_time * (request + reply(103)) + turnaround;
        }
    };
    exchanges
        .iter()
        .map(|&payload| char_time * (request + reply(payload)) + turnaround)
        .sum()
}

/// How many records of `kind` a meter makes per day (monthly: one in 30 days; load profile:
/// at the default 15 minutes, see [`load_records_per_day`]).
pub fn records_per_day(kind: FreezeKind) -> f64 {
    match kind {
        FreezeKind::Daily => 1.0,
        FreezeKind::Hourly => 24.0,
        FreezeKind::Monthly => 1.0 / 30.0,
        FreezeKind::LoadProfile => load_records_per_day(LoadProfileSpec::default()),
    }
}

/// How many load records a meter recording as `load` makes per day.
pub fn load_records_per_day(load: LoadProfileSpec) -> f64 {
    1440.0 / load.interval_minutes.max(1) as f64
}

#[cfg(test)]
mod tests;
