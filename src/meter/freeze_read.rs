//! Reading one settlement record of a DL/T 645-2007 meter: find it by its stamp, then read
//! its values, as a sans-IO exchange the bus task drives like a poll.
//!
//! A meter keeps its records as "n-th most recent", so the record wanted (the daily freeze
//! stamped 2026-12-07 00:00) is found by reading stamps (`050600nn`) and stepping `n` with
//! [`StampSearch`] until the stamp matches; then its value blocks are read at that `n`.
//! Monthly settlement records carry no stamp: the caller names `n` and the instant (from the
//! meter's settlement day). A record is complete only when every value read came back good;
//! otherwise the outcome is a failure and the record stays missing, to be read again.
//!
//! A load record (负荷记录) is read in one exchange: the given-time request `06000001` for one
//! record from the wanted stamp; the reply's first record is the wanted one, or a later one
//! when the meter did not record it.
//!
//! Like [`super::Poll`] it never does I/O, never sleeps and never reads a clock.

use meter_protocols::dlt645::catalog::decode_payload;
use meter_protocols::dlt645::format::Value;
use meter_protocols::dlt645::freeze::{
    FreezeKind, LocalMinute, SearchStep, StampSearch, plain_quantity,
};
use meter_protocols::dlt645::load_profile::{LOAD_PROFILE_DI, parse_records, request_extra};
use meter_protocols::dlt645::{Address, DataIdentifier, ErrorWord, Response, Version};

use super::contract::{Reply, Step};
use super::dlt645::{self, Outcome};
use crate::reading::ReadingValue;

/// What became of the read of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum FreezeOutcome {
    /// The record: its `n` at the time of reading, its stamp (meter local time), its values
    /// (named without snapshot suffix, all good) and the reply frames they came from (stamp
    /// replies included).
    Record {
        /// The record's position (1 = most recent) when it was read.
        n: u8,
        /// The meter's stamp.
        stamp: LocalMinute,
        /// The frozen values.
        values: Vec<ReadingValue>,
        /// Every reply frame of the read, in order.
        frames: Vec<Vec<u8>>,
    },
    /// The meter has not made the record yet (its newest record is older): try later.
    NotYetFrozen,
    /// The meter holds no such record and never will: it fell out of its history, or the
    /// meter skipped the freeze (unpowered at the freeze time). The reason says which.
    Lost(String),
    /// The read did not complete (no reply, an error reply, a bad value): the record stays
    /// missing and is read again later.
    Failed(String),
}

/// Where the read is.
#[derive(Debug, Clone)]
enum State {
    /// Reading record `n`'s stamp.
    Stamp { search: StampSearch, n: u8 },
    /// Reading the values of record `n` (stamp known): `next` indexes `kind.value_dis(n)`.
    Values {
        n: u8,
        stamp: LocalMinute,
        next: usize,
    },
    /// Reading the load record stamped `stamp` (given-time request, one record).
    Load { stamp: LocalMinute },
    /// Finished.
    Done(FreezeOutcome),
}

/// The read of one record of one meter.
#[derive(Debug, Clone)]
pub struct FreezeRead {
    address: Address,
    /// The meter's edition: which identifiers hold a record.
    version: Version,
    kind: FreezeKind,
    state: State,
    values: Vec<ReadingValue>,
    frames: Vec<Vec<u8>>,
}

impl FreezeRead {
    /// Reads the daily or hourly record of `meter` stamped `wanted`; `latest` is the newest
    /// instant the meter should have frozen by its clock ([`meter_protocols::dlt645::freeze::latest_due`]),
    /// which gives the first `n` to try. Monthly records have no stamp: use
    /// [`FreezeRead::monthly`].
    pub fn by_stamp(
        address: Address,
        kind: FreezeKind,
        wanted: LocalMinute,
        latest: LocalMinute,
    ) -> FreezeRead {
        let (search, step) = StampSearch::start(kind, wanted, latest);
        let mut read = FreezeRead {
            address,
            version: Version::V2007,
            kind,
            state: State::Done(FreezeOutcome::NotYetFrozen),
            values: Vec::new(),
            frames: Vec::new(),
        };
        read.state = read.after_search(search, step);
        read
    }

    /// Reads monthly settlement record `n` (1..=12 on a DL/T 645-2007 meter, 1..=2 on a
    /// 1997 one), whose instant is `stamp` (computed from the meter's settlement day:
    /// [`meter_protocols::dlt645::freeze::monthly_stamp`]).
    pub fn monthly(address: Address, version: Version, n: u8, stamp: LocalMinute) -> FreezeRead {
        let kind = FreezeKind::Monthly;
        let depth = kind.depth_in(version);
        let state = if (1..=depth).contains(&n) {
            State::Values { n, stamp, next: 0 }
        } else {
            State::Done(FreezeOutcome::Lost(format!(
                "the meter keeps {depth} monthly settlements; record {n} is gone"
            )))
        };
        FreezeRead {
            address,
            version,
            kind,
            state,
            values: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Reads the load record of `meter` stamped `wanted`; `oldest` is the oldest stamp the
    /// meter still keeps (its depth back from its newest record): an older one is lost
    /// without asking.
    pub fn load_record(address: Address, wanted: LocalMinute, oldest: LocalMinute) -> FreezeRead {
        let state = if wanted < oldest {
            State::Done(FreezeOutcome::Lost(format!(
                "no longer in the meter's history (its oldest load record is {oldest})"
            )))
        } else {
            State::Load { stamp: wanted }
        };
        FreezeRead {
            address,
            version: Version::V2007,
            kind: FreezeKind::LoadProfile,
            state,
            values: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// The kind of record read.
    pub fn kind(&self) -> FreezeKind {
        self.kind
    }

    /// The state after a search step: the next stamp read, or the values, or the end.
    fn after_search(&self, search: StampSearch, step: SearchStep) -> State {
        let depth = self.kind.depth();
        match step {
            SearchStep::Read(n) => State::Stamp { search, n },
            SearchStep::Found(n) => State::Values {
                n,
                stamp: search.wanted(),
                next: 0,
            },
            SearchStep::NotYetFrozen => State::Done(FreezeOutcome::NotYetFrozen),
            SearchStep::OutOfHistory => State::Done(FreezeOutcome::Lost(format!(
                "no longer in the meter's history ({depth} {} records kept)",
                self.kind
            ))),
            SearchStep::Gap { older_at, .. } if older_at > depth => State::Done(
                FreezeOutcome::Lost("older than the meter's first record".into()),
            ),
            SearchStep::Gap { newer_at, older_at } => State::Done(FreezeOutcome::Lost(format!(
                "the meter has no record with this stamp (records {newer_at} and {older_at} \
                 bracket it: the meter did not freeze, e.g. unpowered at the freeze time)"
            ))),
        }
    }

    /// The identifier read now, if the read is not finished.
    fn current_di(&self) -> Option<DataIdentifier> {
        match &self.state {
            State::Stamp { n, .. } => self.kind.stamp_di(*n),
            State::Values { n, next, .. } => {
                self.kind.value_dis_in(self.version, *n).get(*next).copied()
            }
            State::Load { .. } => Some(LOAD_PROFILE_DI),
            State::Done(_) => None,
        }
    }

    /// The next request, or `None` when the read is finished.
    pub fn next_step(&self) -> Option<Step> {
        let di = self.current_di()?;
        if let State::Load { stamp } = &self.state {
            // A stamp outside 2000..=2099 cannot be asked for; the read then fails.
            let extra = request_extra(1, *stamp)?;
            return Some(dlt645::read_step_with(self.address, di, extra));
        }
        Some(dlt645::read_step(self.address, di))
    }

    /// Feeds the verified reply to the current request (`raw`: its bytes, kept as evidence).
    pub fn on_reply(&mut self, reply: &Reply, raw: &[u8]) {
        let Some(di) = self.current_di() else {
            return;
        };
        let Reply::Dlt645(frame) = reply else {
            self.fail(format!("read {di}: not a DL/T 645 reply"));
            return;
        };
        self.frames.push(raw.to_vec());
        let state = std::mem::replace(&mut self.state, State::Done(FreezeOutcome::NotYetFrozen));
        self.state = match state {
            State::Stamp { mut search, n } => match stamp_in(frame, di) {
                Ok(stamp) => {
                    let step = search.observe(n, stamp);
                    self.after_search(search, step)
                }
                Err(reason) => State::Done(FreezeOutcome::Failed(format!("read {di}: {reason}"))),
            },
            State::Values { n, stamp, next } => match dlt645::interpret(di, frame, None) {
                Outcome::Values(values) => {
                    if let Some(bad) = values.iter().find(|v| v.value.is_none()) {
                        let reason = bad.reason.clone().unwrap_or_else(|| "no value".into());
                        State::Done(FreezeOutcome::Failed(format!(
                            "read {di}: {}: {reason}",
                            bad.quantity
                        )))
                    } else {
                        self.values.extend(values.into_iter().map(|mut v| {
                            v.quantity = plain_quantity(&v.quantity).into();
                            v
                        }));
                        if next + 1 < self.kind.value_dis_in(self.version, n).len() {
                            State::Values {
                                n,
                                stamp,
                                next: next + 1,
                            }
                        } else {
                            State::Done(FreezeOutcome::Record {
                                n,
                                stamp,
                                values: std::mem::take(&mut self.values),
                                frames: std::mem::take(&mut self.frames),
                            })
                        }
                    }
                }
                Outcome::More(_) => State::Done(FreezeOutcome::Failed(format!(
                    "read {di}: the meter announced follow-up frames for a freeze block"
                ))),
                Outcome::Bad(reason) | Outcome::Foreign(reason) => {
                    State::Done(FreezeOutcome::Failed(format!("read {di}: {reason}")))
                }
            },
            State::Load { stamp } => State::Done(load_record_in(frame, stamp, raw)),
            done @ State::Done(_) => done,
        };
    }

    /// The current request got no usable reply after its retries.
    pub fn on_failure(&mut self, reason: &str) {
        if let Some(di) = self.current_di() {
            self.fail(format!("no reply to read {di}: {reason}"));
        }
    }

    fn fail(&mut self, reason: String) {
        self.state = State::Done(FreezeOutcome::Failed(reason));
    }

    /// The outcome; a read given up before it finished is a failure (also a load record
    /// whose stamp cannot be asked for).
    pub fn finish(self) -> FreezeOutcome {
        match self.state {
            State::Done(outcome) => outcome,
            _ => FreezeOutcome::Failed("the read was abandoned before it finished".into()),
        }
    }
}

/// What a reply to the given-time request for the load record stamped `wanted` says.
fn load_record_in(
    frame: &meter_protocols::dlt645::Dlt645Frame,
    wanted: LocalMinute,
    raw: &[u8],
) -> FreezeOutcome {
    let di = LOAD_PROFILE_DI;
    let failed = |why: String| FreezeOutcome::Failed(format!("read {di}: {why}"));
    let payload = match Response::from_frame(frame, di.version()) {
        Err(e) => return failed(format!("unusable reply: {e}")),
        Ok(Response::ReadData {
            di: got, payload, ..
        }) if got == di => payload,
        Ok(Response::ReadData { di: got, .. }) => {
            return failed(format!("reply for another DI ({got})"));
        }
        // No record at or after the stamp: the meter has not made it yet.
        Ok(Response::Abnormal { error, .. }) if error.0 & ErrorWord::NO_DATA != 0 => {
            return FreezeOutcome::NotYetFrozen;
        }
        Ok(Response::Abnormal { error, .. }) => {
            return failed(format!("meter error {:02X}", error.0));
        }
        Ok(other) => return failed(format!("unexpected reply {other:?}")),
    };
    let records = match parse_records(&payload) {
        Ok(r) => r,
        Err(e) => return failed(format!("{e}")),
    };
    let Some(first) = records.first() else {
        return FreezeOutcome::NotYetFrozen;
    };
    if first.stamp > wanted {
        return FreezeOutcome::Lost(format!(
            "the meter has no load record stamped {wanted} (its next is {}: it did not record, \
             e.g. unpowered)",
            first.stamp
        ));
    }
    if first.stamp < wanted {
        return failed(format!(
            "asked for the record from {wanted}, got one stamped {}",
            first.stamp
        ));
    }
    if !first.valid {
        return FreezeOutcome::Lost(format!(
            "the meter marks its load record stamped {wanted} as not correct (E0 E0)"
        ));
    }
    let values: Vec<_> = first
        .values()
        .into_iter()
        .map(|(_, d)| dlt645::reading_value(di, d))
        .collect();
    if values.is_empty() {
        return FreezeOutcome::Lost(format!(
            "the meter's load record stamped {wanted} holds no values (every block empty)"
        ));
    }
    if let Some(bad) = values.iter().find(|v| v.value.is_none()) {
        let reason = bad.reason.clone().unwrap_or_else(|| "no value".into());
        return failed(format!("{}: {reason}", bad.quantity));
    }
    FreezeOutcome::Record {
        n: 1,
        stamp: wanted,
        values,
        frames: vec![raw.to_vec()],
    }
}

/// The stamp a reply to stamp identifier `di` carries: `Ok(None)` when the meter says it has
/// no such record (error reply "no requested data": a history shorter than its depth).
fn stamp_in(
    frame: &meter_protocols::dlt645::Dlt645Frame,
    di: DataIdentifier,
) -> Result<Option<LocalMinute>, String> {
    match Response::from_frame(frame, di.version()).map_err(|e| format!("unusable reply: {e}"))? {
        Response::ReadData {
            di: got, payload, ..
        } if got == di => {
            let decoded = decode_payload(di, &payload);
            match decoded.first().map(|d| &d.value) {
                Some(Value::Time(t)) => LocalMinute::from_meter_time(t)
                    .map(Some)
                    .ok_or_else(|| format!("stamp {t} lacks a field")),
                Some(other) => Err(format!("not a time stamp: {other}")),
                None => Err("empty reply".into()),
            }
        }
        Response::ReadData { di: got, .. } => Err(format!("reply for another DI ({got})")),
        Response::Abnormal { error, .. } if error.0 & ErrorWord::NO_DATA != 0 => Ok(None),
        Response::Abnormal { error, .. } => Err(format!("meter error {:02X}", error.0)),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

#[cfg(test)]
mod tests;
