//! The `GET /api/status` document: one snapshot of the gateway, its uplink and spool, every bus
//! and every meter with its success rates and last batch.
//!
//! This module owns the document's shape (also read back by `meterd status`, hence
//! `Deserialize`). It takes numbers from the snapshots the daemon keeps and changes none.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Handles;
use crate::health::success::{GroupSuccess, MeterSuccess};
use crate::health::{BusHealth, LinkState, MeterState, WireCounters};
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
}

impl Snapshot {
    /// Takes the numbers now.
    pub fn take(h: &Handles) -> Snapshot {
        let now = SystemTime::now();
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
        }
    }

    /// The status document.
    pub fn report(&self, h: &Handles) -> StatusReport {
        let uptime_s = self
            .now
            .duration_since(h.started)
            .map_or(0, |d| d.as_secs());
        let u = &self.uplink;
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
                )
            })
            .collect();
        StatusReport { gateway, buses }
    }
}

fn bus_report(
    b: &BusHealth,
    success: Option<&GroupSuccess>,
    meters: Option<&Vec<(MeterSuccess, Option<ReadingBatch>)>>,
    drops: Option<&Vec<Option<MeterDrops>>>,
) -> BusReport {
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
        success: success.cloned().unwrap_or_default(),
        meters: b
            .meters
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let (s, last) = meters.and_then(|v| v.get(j)).cloned().unwrap_or_default();
                let d = drops.and_then(|v| v.get(j)).copied().flatten();
                MeterReport {
                    id: m.id.clone(),
                    bus: b.name.clone(),
                    protocol: m.protocol.to_owned(),
                    state: state_name(m.state).to_owned(),
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
                    success: s,
                    last_reading: last,
                    dropped: d.map(|d| d.dropped),
                    dropped_in_memory: d.map(|d| d.dropped_in_memory),
                }
            })
            .collect(),
    }
}
