//! Sans-IO meter drivers: what to ask a meter in one poll, and what its answers mean.
//!
//! A [`MeterDriver`] is built once per configured meter from its profile. It owns the list of
//! transactions of one poll (DL/T 645: one read per profile data identifier; Modbus: the
//! coalesced reads of [`meter_protocols::modbus::plan`]) and the turning of every reply, error
//! reply or failure into [`ReadingValue`]s. Every profile quantity appears in the batch, good
//! or bad: nothing is silently dropped.
//!
//! It never does I/O, never sleeps and never reads a clock: the bus task sends the bytes a
//! [`Step`] holds, keeps the timing, and feeds back what came (or did not). The same driver
//! serves the daemon, `meterd read` and the tests.

pub mod clock_discipline;
pub mod commission;
pub mod contract;
pub mod control;
pub mod control_run;
mod dlt645;
pub mod event_read;
pub mod explain;
pub mod freeze_read;
pub mod identify;
mod modbus;

use std::collections::HashMap;
use std::sync::Arc;

use meter_protocols::dlt645::freeze::FreezeKind;
use meter_protocols::dlt645::{Address, DataIdentifier, Version};
use meter_protocols::modbus::plan::PollPlan;
use meter_protocols::modbus::rtu;
use thiserror::Error;

use crate::clock::UtcOffset;
use crate::config::profile::ProfileProtocol;
use crate::config::{MeterConfig, Profile, Protocol};
use crate::reading::{Label, Quality, ReadingValue, TariffBlock};

pub use contract::{Framing, Reply, Step};
pub use modbus::ModbusPoint;

/// Most follow-up frames (`12`/`02`) fetched for one item before giving up.
pub const MAX_FOLLOW_UPS: u8 = 16;

/// What to check when a meter answers nothing at all (said by `meterd read` and `meterd test`).
pub const SILENT_METER_HINT: &str =
    "check the meter's address, the protocol edition and the line settings (baud, parity)";

/// Why a driver cannot be built for a meter.
#[derive(Debug, Error)]
pub enum DriverError {
    /// The meter's configuration lacks or garbles a field the protocol needs.
    #[error("meter {meter}: {message}")]
    Config {
        /// Meter id.
        meter: String,
        /// What is wrong.
        message: String,
    },
}

/// What a transaction reads.
#[derive(Debug, Clone)]
enum TxKind {
    /// A DL/T 645 read of one DI; `items` are the quantities the profile expects from it.
    Dlt645 {
        di: DataIdentifier,
        items: Vec<dlt645::Item>,
        quantity_override: Option<String>,
    },
    /// One planned Modbus read.
    Modbus { read: usize },
}

/// One transaction of a poll (retries and follow-ups belong to it).
#[derive(Debug, Clone)]
pub struct Transaction {
    step: Step,
    kind: TxKind,
}

impl Transaction {
    /// The first request of the transaction.
    pub fn step(&self) -> &Step {
        &self.step
    }
}

/// A meter and the poll that reads it.
#[derive(Debug, Clone)]
pub struct MeterDriver {
    id: String,
    protocol: Protocol,
    address: Option<Address>,
    unit: u8,
    transactions: Vec<Transaction>,
    /// Shared by the meters of one profile ([`MeterDriver::share_points`]): with 1,000 meters
    /// the per-meter copies were ~6 MB of a small gateway's memory.
    modbus_points: Arc<[ModbusPoint]>,
    /// Shared like `modbus_points` (it depends only on them and the meter's caps).
    plan: Option<Arc<PollPlan>>,
    /// The meter's time zone (its clock and freeze stamps are local time).
    utc_offset: UtcOffset,
    /// The freeze kinds collected from it.
    freezes: Vec<FreezeKind>,
    /// Its load-record interval and depth (used when `freezes` lists `load_profile`).
    load_profile: crate::config::profile::LoadProfileSpec,
    /// The event kinds whose counters are polled.
    events: Vec<meter_protocols::dlt645::event::EventKind>,
}

impl MeterDriver {
    /// Builds the driver of `meter` (on bus `bus`) from its `profile`.
    pub fn new(meter: &MeterConfig, profile: &Profile, bus: &str) -> Result<Self, DriverError> {
        let id = meter.effective_id(bus);
        let fail = |message: String| DriverError::Config {
            meter: id.clone(),
            message,
        };
        if !profile.supports(meter.protocol) {
            return Err(fail(format!(
                "profile {:?} is for {}, not {}",
                profile.name,
                profile.protocol_name(),
                meter.protocol.name()
            )));
        }
        let mut driver = MeterDriver {
            id: id.clone(),
            protocol: meter.protocol,
            address: None,
            unit: 0,
            transactions: Vec::new(),
            modbus_points: Arc::from([]),
            plan: None,
            utc_offset: meter.utc_offset,
            freezes: meter.freeze_kinds(profile),
            load_profile: profile.load_profile(),
            events: meter.event_kinds(profile),
        };
        match profile.protocol {
            ProfileProtocol::Dlt645_2007 | ProfileProtocol::Dlt645_1997 => {
                let text = meter
                    .address
                    .as_deref()
                    .ok_or_else(|| fail("a DL/T 645 meter needs `address`".into()))?;
                let address: Address = text
                    .parse()
                    .map_err(|e| fail(format!("address {text:?}: {e}")))?;
                driver.address = Some(address);
                let version = if profile.protocol == ProfileProtocol::Dlt645_2007 {
                    Version::V2007
                } else {
                    Version::V1997
                };
                for p in &profile.points {
                    let p = p.get_ref();
                    let di_text = p.di.as_deref().unwrap_or_default();
                    let di = DataIdentifier::parse(di_text)
                        .filter(|d| d.version() == version)
                        .ok_or_else(|| fail(format!("bad DI {di_text:?} in the profile")))?;
                    driver
                        .transactions
                        .push(dlt645::transaction(address, di, p.quantity.clone()));
                }
            }
            ProfileProtocol::Modbus => {
                let unit = meter
                    .unit
                    .ok_or_else(|| fail("a Modbus meter needs `unit`".into()))?;
                driver.unit = unit;
                let (points, plan) = modbus::plan_points(meter, profile).map_err(fail)?;
                for (i, read) in plan.requests.iter().enumerate() {
                    driver.transactions.push(modbus::transaction(unit, read, i));
                }
                driver.modbus_points = Arc::from(points);
                driver.plan = Some(Arc::new(plan));
            }
        }
        // Pushed one by one, the Vec kept room for four transactions (640 bytes) where a
        // Modbus meter usually has one: ~0.5 MB with 1,000 meters.
        driver.transactions.shrink_to_fit();
        Ok(driver)
    }

    /// The meter's id as published.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The meter's protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The meter's time zone.
    pub fn utc_offset(&self) -> UtcOffset {
        self.utc_offset
    }

    /// The event kinds polled on this meter (its `events`, else its profile's).
    pub fn events(&self) -> &[meter_protocols::dlt645::event::EventKind] {
        &self.events
    }

    /// The freeze kinds collected from this meter (its `freezes`, else its profile's).
    pub fn freezes(&self) -> &[FreezeKind] {
        &self.freezes
    }

    /// The meter's load-record interval and depth (its profile's).
    pub fn load_profile(&self) -> crate::config::profile::LoadProfileSpec {
        self.load_profile
    }

    /// The DL/T 645 edition the meter speaks (DL/T 645 meters only).
    pub fn dlt645_version(&self) -> Option<Version> {
        match self.protocol {
            Protocol::Dlt645_2007 => Some(Version::V2007),
            Protocol::Dlt645_1997 => Some(Version::V1997),
            _ => None,
        }
    }

    /// The DL/T 645 address (DL/T 645 meters only).
    pub fn address(&self) -> Option<Address> {
        self.address
    }

    /// The Modbus unit id (Modbus meters only; 0 otherwise).
    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// The transactions of one poll, in order.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    /// The Modbus request plan (Modbus meters only).
    pub fn plan(&self) -> Option<&PollPlan> {
        self.plan.as_deref()
    }

    /// The Modbus points, in profile order (Modbus meters only).
    pub fn modbus_points(&self) -> &[ModbusPoint] {
        &self.modbus_points
    }

    /// Uses `other`'s Modbus points and request plan instead of this driver's own copies when
    /// they are the same (meters of one profile), so that they are held once, not once per
    /// meter.
    pub fn share_points(&mut self, other: &MeterDriver) {
        if !Arc::ptr_eq(&self.modbus_points, &other.modbus_points)
            && self.modbus_points == other.modbus_points
        {
            self.modbus_points = other.modbus_points.clone();
        }
        if let (Some(mine), Some(theirs)) = (&self.plan, &other.plan)
            && !Arc::ptr_eq(mine, theirs)
            && mine == theirs
        {
            self.plan = Some(theirs.clone());
        }
    }

    /// The same meter with the words of every multi-register Modbus value the other way round
    /// (`abcd` <-> `cdab`, `badc` <-> `dcba`): the same requests, the replies decoded as if
    /// the profile named the other word order. `None` when no value spans two registers.
    pub fn with_words_swapped(&self) -> Option<MeterDriver> {
        if !self
            .modbus_points
            .iter()
            .any(|p| p.value_type.registers() > 1)
        {
            return None;
        }
        let points: Vec<ModbusPoint> = self
            .modbus_points
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if p.value_type.registers() > 1 {
                    p.order = commission::swap_words(p.order);
                }
                p
            })
            .collect();
        Some(MeterDriver {
            modbus_points: Arc::from(points),
            ..self.clone()
        })
    }

    /// The quantities one poll yields, as named before any reply (blocks expanded nominally).
    pub fn quantities(&self) -> Vec<String> {
        if self.protocol.is_dlt645() {
            self.transactions
                .iter()
                .flat_map(|t| match &t.kind {
                    TxKind::Dlt645 { items, .. } => {
                        items.iter().map(|i| i.quantity.clone()).collect()
                    }
                    TxKind::Modbus { .. } => Vec::new(),
                })
                .collect()
        } else {
            self.modbus_points
                .iter()
                .map(|p| p.quantity.to_string())
                .collect()
        }
    }

    /// Starts one poll.
    pub fn poll(&self) -> Poll<'_> {
        Poll {
            driver: self,
            tx: 0,
            follow: None,
            // Exact for Modbus (one value per point): a grown Vec would carry up to twice
            // the capacity in every batch in flight.
            values: Vec::with_capacity(self.modbus_points.len()),
            frames: Vec::new(),
            answered: 0,
            failed: 0,
            skipped: 0,
            registers: HashMap::new(),
            read_failures: vec![None; self.transactions.len()],
            tariff_blocks: Vec::new(),
        }
    }
}

/// How a transaction of a poll ended, for the poll's counts.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// A valid reply (an error reply included).
    Answered,
    /// No valid reply.
    Failed,
    /// Not asked: the meter did not answer the poll's first request.
    Skipped,
}

/// A DL/T 645 item continued in follow-up frames.
#[derive(Debug, Clone)]
struct FollowUp {
    payload: Vec<u8>,
    seq: u8,
    frames: u8,
}

/// One poll in progress: ask [`Poll::next_step`], report each outcome with [`Poll::on_reply`]
/// or [`Poll::on_failure`], then [`Poll::finish`].
#[derive(Debug)]
pub struct Poll<'d> {
    driver: &'d MeterDriver,
    tx: usize,
    follow: Option<FollowUp>,
    values: Vec<ReadingValue>,
    frames: Vec<Vec<u8>>,
    answered: usize,
    failed: usize,
    skipped: usize,
    /// Modbus registers and bits read so far, by (function code, address).
    registers: HashMap<(u8, u16), u16>,
    /// Why each Modbus read failed, when it did.
    read_failures: Vec<Option<String>>,
    /// Register groups read whole in one block reply.
    tariff_blocks: Vec<TariffBlock>,
}

/// The result of one poll.
#[derive(Debug, Clone)]
pub struct PollResult {
    /// Every quantity of the profile, good or bad.
    pub values: Vec<ReadingValue>,
    /// The raw reply frames the values came from.
    pub frames: Vec<Vec<u8>>,
    /// Transactions the meter answered (any valid reply, error replies included).
    pub answered: usize,
    /// Transactions that got no valid reply.
    pub failed: usize,
    /// Transactions not asked at all: the meter did not answer the first one, so the rest of
    /// the poll was skipped (their values are bad with the first one's reason).
    pub skipped: usize,
    /// Register groups whose total and every tariff came in one block reply (for the
    /// tariff-sum check; see [`TariffBlock`]).
    pub tariff_blocks: Vec<TariffBlock>,
}

impl PollResult {
    /// True when the meter answered at least one transaction (it is alive).
    pub fn meter_answered(&self) -> bool {
        self.answered > 0
    }
}

impl Poll<'_> {
    /// The next request to send, or `None` when the poll is complete.
    pub fn next_step(&self) -> Option<Step> {
        let t = self.driver.transactions.get(self.tx)?;
        match (&t.kind, &self.follow) {
            (TxKind::Dlt645 { di, .. }, Some(f)) => {
                let address = self.driver.address.unwrap_or(Address::WILDCARD);
                Some(dlt645::follow_up_step(address, *di, f.seq))
            }
            _ => Some(t.step.clone()),
        }
    }

    /// Index of the current transaction.
    pub fn transaction_index(&self) -> usize {
        self.tx
    }

    /// The verified reply to the current request, with its raw bytes (the evidence).
    pub fn on_reply(&mut self, reply: &Reply, raw: &[u8]) {
        let Some(t) = self.driver.transactions.get(self.tx) else {
            return;
        };
        // Evidence is the frames the values came from; a reply about another item is not.
        let mut evidence = !raw.is_empty();
        match (&t.kind, reply) {
            (
                TxKind::Dlt645 {
                    di,
                    items,
                    quantity_override,
                },
                Reply::Dlt645(frame),
            ) => {
                let outcome = dlt645::interpret(*di, frame, self.follow.take());
                match outcome {
                    dlt645::Outcome::More(f) => {
                        if f.frames >= MAX_FOLLOW_UPS {
                            let reason =
                                format!("more than {MAX_FOLLOW_UPS} follow-up frames; gave up");
                            self.values.extend(dlt645::bad_items(items, &reason));
                            self.finish_tx(Ended::Answered);
                        } else {
                            // Same transaction, next follow-up frame.
                            self.follow = Some(f);
                        }
                    }
                    dlt645::Outcome::Values(vals) => {
                        if let Some(block) = dlt645::tariff_block(*di, &vals) {
                            self.tariff_blocks.push(block);
                        }
                        self.values
                            .extend(dlt645::rename(vals, quantity_override.as_deref()));
                        self.finish_tx(Ended::Answered);
                    }
                    dlt645::Outcome::Bad(reason) => {
                        self.values.extend(dlt645::bad_items(items, &reason));
                        self.finish_tx(Ended::Answered);
                    }
                    dlt645::Outcome::Foreign(reason) => {
                        evidence = false;
                        self.values.extend(dlt645::bad_items(items, &reason));
                        self.finish_tx(Ended::Answered);
                    }
                }
            }
            (TxKind::Modbus { read }, Reply::ModbusRtu(response)) => {
                self.on_modbus(*read, response);
                self.finish_tx(Ended::Answered);
            }
            (_, other) => {
                let reason = format!("unexpected kind of reply: {other:?}");
                self.fail_current(&reason, true);
            }
        }
        if evidence {
            self.frames.push(raw.to_vec());
        }
    }

    fn on_modbus(&mut self, read: usize, response: &rtu::Response) {
        let Some(plan) = self.driver.plan.as_ref().and_then(|p| p.requests.get(read)) else {
            return;
        };
        let code = plan.function.code();
        match response {
            rtu::Response::Exception { code: ex, .. } => {
                self.read_failures[read] = Some(format!("exception {ex}"));
            }
            other => {
                let words: Vec<u16> = if let Some(regs) = other.registers() {
                    regs.to_vec()
                } else if let Some(bits) = other.bits() {
                    bits.iter().map(|b| u16::from(*b)).collect()
                } else {
                    Vec::new()
                };
                if words.len() < usize::from(plan.count) {
                    self.read_failures[read] = Some(format!(
                        "reply carried {} values, expected {}",
                        words.len(),
                        plan.count
                    ));
                    return;
                }
                for (i, w) in words.iter().take(usize::from(plan.count)).enumerate() {
                    let addr = plan.address.wrapping_add(u16::try_from(i).unwrap_or(0));
                    self.registers.insert((code, addr), *w);
                }
            }
        }
    }

    /// The current request got no valid reply (after the bus's retries): `reason` is what the
    /// values of this transaction will carry (`no reply within 1s`, `link failed: …`).
    ///
    /// When that request was the poll's first and nothing at all came back, the meter is away
    /// (a wrong address, protocol edition or line setting, or a dead meter), not one register:
    /// the rest of the poll is skipped, every value bad with the same `reason`, and
    /// [`Poll::next_step`] says the poll is done. Asking every item would cost items × attempts
    /// × timeout (27 s for a three-phase profile at the defaults) and hold the bus that long.
    /// A meter that answered an earlier request (an error reply included) is asked everything.
    pub fn on_failure(&mut self, reason: &str) {
        let meter_away = self.tx == 0 && self.answered == 0 && self.follow.is_none();
        self.fail_current(reason, false);
        if meter_away {
            while self.tx < self.driver.transactions.len() {
                self.mark_current_bad(reason);
                self.finish_tx(Ended::Skipped);
            }
        }
    }

    fn fail_current(&mut self, reason: &str, answered: bool) {
        self.mark_current_bad(reason);
        self.finish_tx(if answered {
            Ended::Answered
        } else {
            Ended::Failed
        });
    }

    /// Every value of the current transaction bad with `reason` (its accounting is the
    /// caller's).
    fn mark_current_bad(&mut self, reason: &str) {
        let Some(t) = self.driver.transactions.get(self.tx) else {
            return;
        };
        self.follow = None;
        match &t.kind {
            TxKind::Dlt645 { items, .. } => {
                self.values.extend(dlt645::bad_items(items, reason));
            }
            TxKind::Modbus { read } => {
                if let Some(slot) = self.read_failures.get_mut(*read) {
                    *slot = Some(reason.to_owned());
                }
            }
        }
    }

    fn finish_tx(&mut self, ended: Ended) {
        if self.tx >= self.driver.transactions.len() {
            return;
        }
        match ended {
            Ended::Answered => self.answered += 1,
            Ended::Failed => self.failed += 1,
            Ended::Skipped => self.skipped += 1,
        }
        self.tx += 1;
    }

    /// Fails every remaining transaction with `reason` (the link is down) and finishes.
    pub fn abandon(mut self, reason: &str) -> PollResult {
        while self.tx < self.driver.transactions.len() {
            self.fail_current(reason, false);
        }
        self.finish()
    }

    /// Ends the poll: every quantity of the profile, good or bad.
    pub fn finish(mut self) -> PollResult {
        while self.tx < self.driver.transactions.len() {
            self.fail_current("not read (poll ended early)", false);
        }
        if !self.driver.modbus_points.is_empty() {
            let plan = self.driver.plan.as_ref();
            for (i, point) in self.driver.modbus_points.iter().enumerate() {
                // The read that serves the point, for the failure reason.
                let failure = plan
                    .and_then(|p| p.requests.iter().position(|r| r.points.contains(&i)))
                    .and_then(|r| self.read_failures.get(r).cloned().flatten());
                let exp_failure = point.exponent_register.and_then(|reg| {
                    plan.and_then(|p| {
                        p.requests.iter().position(|r| {
                            r.function == point.function
                                && reg >= r.address
                                && u32::from(reg) < u32::from(r.address) + u32::from(r.count)
                        })
                    })
                    .and_then(|r| self.read_failures.get(r).cloned().flatten())
                });
                self.values.push(modbus::value(
                    point,
                    &self.registers,
                    failure.or(exp_failure),
                ));
            }
        }
        PollResult {
            values: self.values,
            frames: self.frames,
            answered: self.answered,
            failed: self.failed,
            skipped: self.skipped,
            tariff_blocks: self.tariff_blocks,
        }
    }
}

/// A bad value: no number, with the reason.
pub(crate) fn bad_value(
    quantity: impl Into<Label>,
    unit: impl Into<Label>,
    obis: Option<Label>,
    source: Label,
    reason: &str,
) -> ReadingValue {
    ReadingValue {
        quantity: quantity.into(),
        value: None,
        unit: unit.into(),
        obis,
        source,
        quality: Quality::Bad,
        reason: Some(reason.to_owned()),
        meter_time: None,
    }
}

#[cfg(test)]
mod tests;
