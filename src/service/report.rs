//! The `GET /api/status` document: one snapshot of the gateway, its uplink and spool, every bus
//! and every meter with its success rates and last batch.
//!
//! This module owns the document's shape (also read back by `meterd status`, hence
//! `Deserialize`). It takes numbers from the snapshots the daemon keeps and changes none. It
//! also sorts them for the page's colours: each meter's `condition` ([`condition`]) and each
//! bus's utilisation and overrun levels, against the thresholds below (docs/operations.md,
//! "Reading the status page").

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Handles;
use crate::health::recent::HourCounts;
use crate::health::success::{GroupSuccess, HourlyStrip, MeterSuccess};
use crate::health::trend::TrendView;
use crate::health::{BusHealth, LinkState, MeterHealth, MeterState, WireCounters};
use crate::ingest::completeness::{CompletenessMessage, CompletenessSet, PeriodMessage};
use crate::reading::{ReadingBatch, rfc3339_millis};
use crate::sync::lock;
use crate::uplink::{MeterDrops, SpoolSummary, UplinkSnapshot};

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The gateway.
    pub gateway: GatewayReport,
    /// Every bus.
    pub buses: Vec<BusReport>,
}

/// The gateway's part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayReport {
    /// Gateway id.
    pub id: String,
    /// meterd version.
    pub version: String,
    /// When the document was made (RFC 3339 UTC).
    pub at: String,
    /// When the daemon started.
    pub started_at: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The MQTT uplink.
    pub uplink: UplinkReport,
    /// The spool.
    pub spool: SpoolSummary,
    /// Reading success of all meters.
    pub success: GroupSuccess,
    /// The completeness of daily settlement records, last 7 days (`meterd.completeness.v1`),
    /// when meters collect them. Absent from an older daemon's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness: Option<CompletenessMessage>,
    /// The completeness of monthly settlement records, last 12 months (`kind` `monthly`), when
    /// meters collect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness_monthly: Option<PeriodMessage>,
    /// The completeness of hourly records, last 48 hours (`kind` `hourly`), when meters
    /// collect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness_hourly: Option<PeriodMessage>,
    /// The completeness of load records, last 96 15-minute slots (`kind` `load_profile`),
    /// when meters collect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness_load_profile: Option<PeriodMessage>,
    /// Fee control (when `[control]` is on): each controllable meter's relay as last read
    /// back, its last command and outcome, and commands by action and outcome since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::control::ControlSnapshot>,
}

/// The uplink's state and counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkReport {
    /// disconnected, connected, refused or stopped.
    pub state: String,
    /// The last connection error.
    pub last_error: Option<String>,
    /// Connections made since start.
    pub connects: u64,
    /// Publishes waiting for PUBACK.
    pub in_flight: u64,
    /// Reading publishes written (re-sends included).
    pub published: u64,
    /// Readings acknowledged and deleted from the spool.
    pub acked: u64,
    /// Readings too large to publish.
    pub oversized: u64,
    /// Refused publish attempts of readings (an MQTT 5 PUBACK with a failure reason code): the
    /// reading is kept and sent again with backoff (docs/mqtt.md §4.1). Defaulted when reading a
    /// report from an older daemon.
    #[serde(default)]
    pub publishes_refused: u64,
    /// Outbox errors.
    pub outbox_errors: u64,
}

/// One bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusReport {
    /// Bus name.
    pub name: String,
    /// up, down or starting.
    pub link: String,
    /// Why the link is down.
    pub link_error: Option<String>,
    /// Transactions (attempts) on the wire.
    pub transactions: u64,
    /// Attempts without a reply in time.
    pub timeouts: u64,
    /// Attempts repeated after a timeout.
    pub retries: u64,
    /// Link failures.
    pub link_errors: u64,
    /// Link reopens.
    pub reopens: u64,
    /// Frames with a bad checksum or CRC.
    pub checksum_errors: u64,
    /// Noise bytes skipped.
    pub noise_bytes: u64,
    /// Echo bytes removed.
    pub echo_bytes: u64,
    /// Stale bytes discarded before requests.
    pub stale_bytes: u64,
    /// Valid frames that were not the awaited reply.
    pub foreign_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Poll slots skipped (bus too slow).
    pub overruns: u64,
    /// Share of time spent in transactions (0..1).
    pub utilisation: f64,
    /// `utilisation` against [`UTILISATION_WARN`] and [`UTILISATION_BAD`].
    #[serde(default)]
    pub utilisation_level: Level,
    /// Its meters' last hour, summed.
    #[serde(default)]
    pub last_hour: HourCounts,
    /// The last hour's overruns against [`OVERRUN_SHARE_BAD`].
    #[serde(default)]
    pub overruns_level: Level,
    /// Reading success of its meters.
    pub success: GroupSuccess,
    /// Its meters.
    pub meters: Vec<MeterReport>,
}

/// One meter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeterReport {
    /// Meter id.
    pub id: String,
    /// Its bus.
    pub bus: String,
    /// Protocol name.
    pub protocol: String,
    /// ok, degraded or unreachable.
    pub state: String,
    /// The page's reading of the meter at a glance (see [`condition`]): `ok`, `errors`
    /// (timeouts or checksum errors in the last hour), `degraded`, `unreachable`,
    /// `never_answered`, or `not_polled` (yet). Empty from an older daemon.
    #[serde(default)]
    pub condition: String,
    /// Last poll it answered (RFC 3339).
    pub last_success: Option<String>,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// Polls in a row without an answer.
    pub consecutive_failures: u32,
    /// Polls answered (scheduled and one-shot).
    pub polls_ok: u64,
    /// Polls without an answer (scheduled and one-shot).
    pub polls_failed: u64,
    /// Good values in the last poll.
    pub last_good_values: u64,
    /// Bad values in the last poll.
    pub last_bad_values: u64,
    /// Poll slots skipped.
    pub overruns: u64,
    /// Attempts to this meter without a reply in time.
    pub timeouts: u64,
    /// Replies to this meter with a bad checksum or CRC.
    pub checksum_errors: u64,
    /// Noise bytes skipped in this meter's transactions.
    pub noise_bytes: u64,
    /// Echo bytes removed in this meter's transactions.
    pub echo_bytes: u64,
    /// Stale bytes discarded before this meter's requests.
    pub stale_bytes: u64,
    /// Valid frames that were not this meter's awaited reply.
    pub foreign_frames: u64,
    /// Polls, timeouts, checksum errors and skipped slots of the last hour (to five minutes).
    #[serde(default)]
    pub last_hour: HourCounts,
    /// When the last timeout was seen (the end of its poll).
    #[serde(default)]
    pub last_timeout_at: Option<String>,
    /// When the last checksum error was seen (the end of its poll).
    #[serde(default)]
    pub last_checksum_error_at: Option<String>,
    /// Scheduled polls of the last 24 hours, hour by hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<HourlyReport>,
    /// The last values of the configured trend quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TrendReport>,
    /// Reading success rates (scheduled polls only).
    pub success: MeterSuccess,
    /// The last batch (a scheduled poll once validated and stored, or a one-shot read), values
    /// with their quality.
    pub last_reading: Option<ReadingBatch>,
    /// Readings of this meter the spool dropped (full, or one larger than it), ever: `seq`
    /// gaps. Absent without spool numbers, or from an older daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Readings of this meter dropped from memory before they had a `seq` (the spool could not
    /// be written for too long), ever: not gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_in_memory: Option<u64>,
    /// For a meter collecting daily settlement records: the days of the last 7 whose record
    /// is not delivered (`"2026-12-05 (lost)"` when it never can be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_missing: Option<Vec<String>>,
    /// For a meter collecting monthly settlement records: the months of the last 12 whose
    /// record is not delivered (`"2026-10 (lost)"` when it never can be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months_missing: Option<Vec<String>>,
    /// For a meter collecting hourly records: the hours of the last 48 whose record is not
    /// delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_missing: Option<Vec<String>>,
    /// For a meter collecting load records: the stamps of the last 96 slots whose record is
    /// not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_records_missing: Option<Vec<String>>,
    /// The meter's last clock check: offset, beyond the limit or not, what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<crate::uplink::MeterClockStatus>,
}

/// 24 hourly buckets of one meter's scheduled polls, oldest first; the last is the current
/// hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourlyReport {
    /// Start of the oldest hour (RFC 3339).
    pub from: String,
    /// Polls of each hour.
    pub polls: Vec<u32>,
    /// Polls with at least one good value, of each hour.
    pub ok: Vec<u32>,
}

/// The last values of one quantity of one meter, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendReport {
    /// The quantity (`[service] trend_quantity`).
    pub quantity: String,
    /// Its unit.
    pub unit: String,
    /// When the newest value was taken (RFC 3339).
    pub newest_at: String,
    /// One a poll, at most 120; null for a poll without a good value.
    pub values: Vec<Option<f32>>,
}

/// How a bus figure compares with its thresholds: green, amber, red on the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below the warning threshold.
    #[default]
    Ok,
    /// At or above the warning threshold.
    Warn,
    /// At or above the alarm threshold.
    Bad,
}

/// Bus utilisation from which the page shows amber: with more than 60 % of the time on the
/// wire, a retry or a slow meter starts to push polls past their slots.
pub const UTILISATION_WARN: f64 = 0.60;
/// Bus utilisation from which the page shows red: the bus is nearly saturated, overruns are
/// about to come (or have).
pub const UTILISATION_BAD: f64 = 0.85;
/// Share of the last hour's slots (polls + skipped) skipped from which the page shows overruns
/// red; any skipped slot in the last hour shows amber.
pub const OVERRUN_SHARE_BAD: f64 = 0.05;

fn utilisation_level(u: f64) -> Level {
    if u >= UTILISATION_BAD {
        Level::Bad
    } else if u >= UTILISATION_WARN {
        Level::Warn
    } else {
        Level::Ok
    }
}

fn overruns_level(h: &HourCounts) -> Level {
    let slots = h.polls + h.overruns;
    if h.overruns == 0 {
        Level::Ok
    } else if h.overruns as f64 >= OVERRUN_SHARE_BAD * slots as f64 {
        Level::Bad
    } else {
        Level::Warn
    }
}

/// A meter at a glance, worst first: `unreachable` (the link is down), `not_polled` (no poll
/// ended yet), `never_answered` (polled, never answered: a wrong address or wiring, its own
/// state rather than "ok, last success never"), `degraded` (the bus's rule), `errors` (it
/// answers, but a timeout or a checksum error was seen in the last hour), `ok`.
pub fn condition(m: &MeterHealth, now: SystemTime) -> &'static str {
    match m.state {
        MeterState::Unreachable => "unreachable",
        _ if m.polls_ok == 0 && m.polls_failed == 0 => "not_polled",
        _ if m.polls_ok == 0 => "never_answered",
        MeterState::Degraded => "degraded",
        MeterState::Ok if m.recent.had_errors_within_hour(now) => "errors",
        MeterState::Ok => "ok",
    }
}

fn state_name(s: MeterState) -> &'static str {
    match s {
        MeterState::Ok => "ok",
        MeterState::Degraded => "degraded",
        MeterState::Unreachable => "unreachable",
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The numbers behind one report, taken together (used by the JSON and the metrics).
pub struct Snapshot {
    /// When taken.
    pub now: SystemTime,
    /// Bus statuses.
    pub buses: Vec<BusHealth>,
    /// Uplink.
    pub uplink: UplinkSnapshot,
    /// Spool.
    pub spool: SpoolSummary,
    /// Gateway success.
    pub gateway: GroupSuccess,
    /// Per bus success, in bus order.
    pub bus_success: Vec<GroupSuccess>,
    /// Per meter success and last batch, in bus then meter order.
    pub meters: Vec<Vec<(MeterSuccess, Option<ReadingBatch>)>>,
    /// Per meter drop counters from the spool, in bus then meter order.
    pub drops: Vec<Vec<Option<MeterDrops>>>,
    /// Per meter hourly strip and trend, in bus then meter order.
    pub views: Vec<Vec<MeterView>>,
    /// The quantity the trends follow.
    pub trend_quantity: String,
    /// Fee control, when on.
    pub control: Option<crate::control::ControlSnapshot>,
}

/// A meter's history for the page, from the success book.
#[derive(Debug, Clone, Default)]
pub struct MeterView {
    /// The last 24 hours' polls, hour by hour.
    pub hourly: Option<HourlyStrip>,
    /// The last values of the trend quantity.
    pub trend: Option<TrendView>,
}

impl Snapshot {
    /// Takes the numbers now.
    pub fn take(h: &Handles) -> Snapshot {
        let now = crate::clock::now();
        let buses: Vec<BusHealth> = h.buses.iter().map(|b| lock(&b.status).clone()).collect();
        let uplink = h.uplink.snapshot();
        let spool = (h.spool)();
        let book = lock(&h.book);
        let gateway = book.group(None, now);
        let bus_success = buses
            .iter()
            .map(|b| book.group(Some(&b.name), now))
            .collect();
        let meters = buses
            .iter()
            .map(|b| {
                b.meters
                    .iter()
                    .map(|m| (book.meter(&m.id, now), book.last_batch(&m.id)))
                    .collect()
            })
            .collect();
        let views = buses
            .iter()
            .map(|b| {
                b.meters
                    .iter()
                    .map(|m| MeterView {
                        hourly: book.hourly(&m.id, now),
                        trend: book.trend(&m.id),
                    })
                    .collect()
            })
            .collect();
        let trend_quantity = book.trend_quantity().to_owned();
        drop(book);
        let drops = buses
            .iter()
            .map(|b| b.meters.iter().map(|m| (h.meter_drops)(&m.id)).collect())
            .collect();
        Snapshot {
            now,
            buses,
            uplink,
            spool,
            gateway,
            bus_success,
            meters,
            drops,
            views,
            trend_quantity,
            control: h
                .control
                .as_ref()
                .map(crate::control::ControlView::snapshot),
        }
    }

    /// The status document.
    pub fn report(&self, h: &Handles) -> StatusReport {
        let uptime_s = self
            .now
            .duration_since(h.started)
            .map_or(0, |d| d.as_secs());
        let u = &self.uplink;
        let completeness: CompletenessSet = lock(&h.completeness).clone();
        let gateway = GatewayReport {
            id: h.gateway.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            at: rfc3339_millis(self.now),
            started_at: rfc3339_millis(h.started),
            uptime_s,
            uplink: UplinkReport {
                state: to_value(&u.state).as_str().unwrap_or("unknown").to_owned(),
                last_error: u.last_error.clone(),
                connects: u.connects,
                in_flight: u64::try_from(u.in_flight).unwrap_or(u64::MAX),
                published: u.published,
                acked: u.acked,
                oversized: u.oversized,
                publishes_refused: u.publishes_refused,
                outbox_errors: u.outbox_errors,
            },
            spool: self.spool,
            success: self.gateway.clone(),
            completeness: completeness.daily.clone(),
            completeness_monthly: completeness.monthly.clone(),
            completeness_hourly: completeness.hourly.clone(),
            completeness_load_profile: completeness.load_profile.clone(),
            control: self.control.clone(),
        };
        let buses = self
            .buses
            .iter()
            .enumerate()
            .map(|(i, b)| {
                bus_report(
                    b,
                    self.bus_success.get(i),
                    self.meters.get(i),
                    self.drops.get(i),
                    &Extras {
                        now: self.now,
                        views: self.views.get(i),
                        trend_quantity: &self.trend_quantity,
                        completeness: &completeness,
                    },
                )
            })
            .collect();
        StatusReport { gateway, buses }
    }
}

/// What the page's additions need beside a bus's numbers.
struct Extras<'a> {
    now: SystemTime,
    views: Option<&'a Vec<MeterView>>,
    trend_quantity: &'a str,
    completeness: &'a CompletenessSet,
}

fn hourly_report(s: &HourlyStrip) -> HourlyReport {
    HourlyReport {
        from: rfc3339_millis(s.from),
        polls: s.hours.iter().map(|h| u32::from(h.0)).collect(),
        ok: s.hours.iter().map(|h| u32::from(h.1)).collect(),
    }
}

fn trend_report(t: &TrendView, quantity: &str) -> TrendReport {
    TrendReport {
        quantity: quantity.to_owned(),
        unit: t.unit.clone(),
        newest_at: rfc3339_millis(t.newest),
        values: t.values.clone(),
    }
}

fn bus_report(
    b: &BusHealth,
    success: Option<&GroupSuccess>,
    meters: Option<&Vec<(MeterSuccess, Option<ReadingBatch>)>>,
    drops: Option<&Vec<Option<MeterDrops>>>,
    extras: &Extras<'_>,
) -> BusReport {
    let mut last_hour = HourCounts::default();
    for m in &b.meters {
        last_hour.add(&m.recent.last_hour(extras.now));
    }
    let (link, link_error) = match &b.link {
        LinkState::Starting => ("starting", None),
        LinkState::Up => ("up", None),
        LinkState::Down(r) => ("down", Some(r.clone())),
    };
    let WireCounters {
        stale_bytes,
        echo_bytes,
        noise_bytes,
        checksum_errors,
        foreign_frames,
        tx_bytes,
        rx_bytes,
    } = b.wire;
    BusReport {
        name: b.name.clone(),
        link: link.to_owned(),
        link_error,
        transactions: b.transactions,
        timeouts: b.timeouts,
        retries: b.retries,
        link_errors: b.link_errors,
        reopens: b.reopens,
        checksum_errors,
        noise_bytes,
        echo_bytes,
        stale_bytes,
        foreign_frames,
        tx_bytes,
        rx_bytes,
        overruns: b.overruns,
        utilisation: b.utilisation,
        utilisation_level: utilisation_level(b.utilisation),
        last_hour,
        overruns_level: overruns_level(&last_hour),
        success: success.cloned().unwrap_or_default(),
        meters: b
            .meters
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let (s, last) = meters.and_then(|v| v.get(j)).cloned().unwrap_or_default();
                let d = drops.and_then(|v| v.get(j)).copied().flatten();
                let view = extras.views.and_then(|v| v.get(j));
                MeterReport {
                    id: m.id.clone(),
                    bus: b.name.clone(),
                    protocol: m.protocol.to_owned(),
                    state: state_name(m.state).to_owned(),
                    condition: condition(m, extras.now).to_owned(),
                    last_success: m.last_success.map(rfc3339_millis),
                    last_error: m.last_error.clone(),
                    consecutive_failures: m.consecutive_failures,
                    polls_ok: m.polls_ok,
                    polls_failed: m.polls_failed,
                    last_good_values: m.last_good_values as u64,
                    last_bad_values: m.last_bad_values as u64,
                    overruns: m.overruns,
                    timeouts: m.timeouts,
                    checksum_errors: m.wire.checksum_errors,
                    noise_bytes: m.wire.noise_bytes,
                    echo_bytes: m.wire.echo_bytes,
                    stale_bytes: m.wire.stale_bytes,
                    foreign_frames: m.wire.foreign_frames,
                    last_hour: m.recent.last_hour(extras.now),
                    last_timeout_at: m.recent.last_timeout().map(rfc3339_millis),
                    last_checksum_error_at: m.recent.last_checksum_error().map(rfc3339_millis),
                    hourly: view.and_then(|v| v.hourly.as_ref()).map(hourly_report),
                    trend: view
                        .and_then(|v| v.trend.as_ref())
                        .map(|t| trend_report(t, extras.trend_quantity)),
                    success: s,
                    last_reading: last,
                    dropped: d.map(|d| d.dropped),
                    dropped_in_memory: d.map(|d| d.dropped_in_memory),
                    records_missing: (extras.completeness.daily.as_ref())
                        .and_then(|c| c.missing_days(&m.id)),
                    months_missing: (extras.completeness.monthly.as_ref())
                        .and_then(|c| c.missing_periods(&m.id)),
                    hours_missing: (extras.completeness.hourly.as_ref())
                        .and_then(|c| c.missing_periods(&m.id)),
                    load_records_missing: (extras.completeness.load_profile.as_ref())
                        .and_then(|c| c.missing_periods(&m.id)),
                    clock: m.clock.as_ref().map(|c| crate::uplink::MeterClockStatus {
                        checked_at: rfc3339_millis(c.checked_at),
                        offset_s: c.offset_s,
                        off: c.off,
                        note: c.note.clone(),
                    }),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::bus::observer::{AttemptReport, PollOutcome, PollResult};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_777_200 + s)
    }

    fn poll(m: &mut MeterHealth, result: PollResult, s: u64, timed_out: bool) {
        m.record_attempt(&AttemptReport {
            retry: false,
            busy: Duration::from_millis(50),
            timed_out,
            wire: None,
        });
        let failures = if result == PollResult::Answered { 0 } else { 1 };
        m.record_poll(&PollOutcome {
            at: at(s),
            result,
            error: None,
            good_values: 1,
            bad_values: 0,
            consecutive_failures: failures,
            degraded: false,
        });
    }

    #[test]
    fn a_meter_at_a_glance() {
        let mut m = MeterHealth::new("m", "modbus-rtu");
        assert_eq!(condition(&m, at(0)), "not_polled");
        poll(&mut m, PollResult::Unanswered, 0, true);
        assert_eq!(m.state, MeterState::Ok);
        assert_eq!(condition(&m, at(1)), "never_answered");
        // A timeout that a retry got over: the meter answers, amber for an hour.
        poll(&mut m, PollResult::Answered, 10, true);
        assert_eq!(condition(&m, at(11)), "errors");
        assert_eq!(condition(&m, at(10 + 3_599)), "errors");
        assert_eq!(condition(&m, at(10 + 3_600)), "ok");
        m.state = MeterState::Degraded;
        assert_eq!(condition(&m, at(10 + 3_600)), "degraded");
        m.state = MeterState::Unreachable;
        assert_eq!(condition(&m, at(10 + 3_600)), "unreachable");
    }

    #[test]
    fn bus_levels_follow_the_thresholds() {
        assert_eq!(utilisation_level(0.59), Level::Ok);
        assert_eq!(utilisation_level(0.60), Level::Warn);
        assert_eq!(utilisation_level(0.85), Level::Bad);
        let hour = |polls, overruns| HourCounts {
            polls,
            overruns,
            ..HourCounts::default()
        };
        assert_eq!(overruns_level(&hour(100, 0)), Level::Ok);
        assert_eq!(overruns_level(&hour(100, 1)), Level::Warn);
        assert_eq!(overruns_level(&hour(95, 5)), Level::Bad);
        assert_eq!(overruns_level(&hour(0, 1)), Level::Bad);
    }
}
