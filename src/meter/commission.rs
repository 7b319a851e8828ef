//! Commissioning (`meterd test`): what one read of a meter, and a few short probes after
//! silence, say about how the meter is set up.
//!
//! This module owns the rules, sans-IO like the drivers: the probes worth sending after a meter
//! gave no reply at all ([`probes_after_silence`]: the other DL/T 645 edition at the configured
//! address, read-address to `AAAAAAAAAAAA`, a wildcard DL/T 645-1997 read; for Modbus a few
//! other unit ids) or only error replies ([`probes_after_errors`]), what a probe's reply means ([`Probe::judge`]), whether the adapter echoes
//! our requests ([`looks_like_echo`]), whether a Modbus meter's values only make sense with
//! the words of each value swapped ([`word_order_finding`]), and the one verdict per meter
//! ([`verdict`]). The bus task sends the probes; this module never does I/O.

use std::collections::HashMap;

use meter_protocols::dlt645::{Address, DataIdentifier, Request, Response, Version};
use meter_protocols::modbus::values::RegisterOrder;
use serde::Serialize;

use super::contract::{Framing, Reply, Step};
use super::{MeterDriver, SILENT_METER_HINT};
use crate::config::Protocol;
use crate::reading::{Quality, ReadingValue, ValueData, is_cumulative};

/// The one-word (or few-word) verdict on a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every value good.
    Ok,
    /// The meter answers, but some values are bad or suspect.
    Degraded,
    /// Another address (DL/T 645) or unit id (Modbus) answers instead.
    WrongAddress,
    /// Nothing answers, even to the probes.
    NoReply,
    /// The meter answers the other DL/T 645 edition (1997 vs 2007).
    WrongProtocolEdition,
    /// A Modbus meter whose values are only plausible with the words swapped.
    WrongWordOrder,
    /// The adapter echoes our own requests, and the bus is not set up for it.
    Echo,
    /// The port or connection failed: no meter on the bus could be asked.
    LinkDown,
}

impl Verdict {
    /// The verdict as printed: `ok`, `wrong address`, `no reply`…
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::WrongAddress => "wrong address",
            Verdict::NoReply => "no reply",
            Verdict::WrongProtocolEdition => "wrong protocol edition",
            Verdict::WrongWordOrder => "wrong word order",
            Verdict::Echo => "echo",
            Verdict::LinkDown => "link down",
        }
    }

    /// True unless the meter failed: `ok`, and `degraded` (it answers; the bad values say why).
    pub fn passed(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::Degraded)
    }
}

/// A verdict with what was seen and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The verdict.
    pub verdict: Verdict,
    /// What was seen (`a meter answers read-address as 000000000009`).
    pub detail: String,
    /// What to change (`set address = "000000000009"`), empty when nothing.
    pub advice: String,
}

impl Finding {
    fn new(verdict: Verdict, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            verdict,
            detail: detail.into(),
            advice: advice.into(),
        }
    }
}

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    /// A read of the other DL/T 645 edition at the configured address.
    Edition(Version),
    /// The same, after every read got an error reply: only data in reply tells.
    EditionAfterErrors(Version),
    /// DL/T 645-2007 read-address (`13`) to `AAAAAAAAAAAA`.
    ReadAddress,
    /// A DL/T 645-1997 read (`01`) to `AAAAAAAAAAAA` (1997 has no read-address).
    WildcardRead1997,
    /// The meter's first Modbus read, sent to another unit id.
    Unit(u8),
}

/// One short probe sent after a meter gave no reply at all (one attempt, no retries).
#[derive(Debug, Clone)]
pub struct Probe {
    /// The request.
    pub step: Step,
    kind: ProbeKind,
}

/// Modbus unit ids tried after silence, at most: the probes stay short (each costs a
/// response timeout), so only the usual mistakes (factory default 1, a neighbour, 247).
const UNIT_PROBES: usize = 4;

/// The DL/T 645 energy register every meter of an edition serves.
fn energy_di(version: Version) -> Option<DataIdentifier> {
    DataIdentifier::parse(match version {
        Version::V2007 => "00010000",
        Version::V1997 => "9010",
    })
}

fn edition_name(version: Version) -> &'static str {
    match version {
        Version::V2007 => "dlt645-2007",
        Version::V1997 => "dlt645-1997",
    }
}

fn dlt645_probe(address: Address, request: Request, kind: ProbeKind, what: String) -> Probe {
    let di = match &request {
        Request::ReadData { di, .. } => Some(*di),
        _ => None,
    };
    Probe {
        step: Step {
            bytes: request.to_frame(address).to_bytes(0),
            framing: Framing::Dlt645 {
                address,
                function: request.function(),
                di,
            },
            modbus: None,
            what,
        },
        kind,
    }
}

/// The other DL/T 645 edition than `driver`'s.
fn other_edition(driver: &MeterDriver) -> Version {
    if driver.protocol() == Protocol::Dlt645_2007 {
        Version::V1997
    } else {
        Version::V2007
    }
}

/// The probe to send when a DL/T 645 meter answered every read of its poll with an error
/// reply (some meters answer the other edition's reads with one): a read of the other edition
/// at its address, whose data reply says which edition it speaks. Empty for Modbus.
pub fn probes_after_errors(driver: &MeterDriver) -> Vec<Probe> {
    let (Some(address), true) = (driver.address(), driver.protocol().is_dlt645()) else {
        return Vec::new();
    };
    let other = other_edition(driver);
    energy_di(other)
        .map(|di| {
            dlt645_probe(
                address,
                Request::ReadData { di, extra: vec![] },
                ProbeKind::EditionAfterErrors(other),
                format!("probe: {} read {di}", edition_name(other)),
            )
        })
        .into_iter()
        .collect()
}

/// The probes to send, in order, after `driver`'s meter answered nothing at all; the first
/// whose reply [`Probe::judge`] explains gives the verdict. `taken` are the addresses and
/// units of the other meters configured on the same bus: their answers say nothing about
/// this meter, so they are not asked.
pub fn probes_after_silence(driver: &MeterDriver, taken: &[&MeterDriver]) -> Vec<Probe> {
    let mut probes = Vec::new();
    match driver.protocol() {
        Protocol::Dlt645_2007 | Protocol::Dlt645_1997 => {
            let Some(address) = driver.address() else {
                return probes;
            };
            let other = other_edition(driver);
            if let Some(di) = energy_di(other) {
                let request = Request::ReadData { di, extra: vec![] };
                let what = format!("probe: {} read {di}", edition_name(other));
                probes.push(dlt645_probe(
                    address,
                    request,
                    ProbeKind::Edition(other),
                    what,
                ));
            }
            // A wildcard is answered by every meter on the line: only worth it when this is
            // the bus's only DL/T 645 meter.
            if !taken.iter().any(|d| d.protocol().is_dlt645()) {
                probes.push(dlt645_probe(
                    Address::WILDCARD,
                    Request::ReadAddress,
                    ProbeKind::ReadAddress,
                    "probe: read-address AAAAAAAAAAAA".into(),
                ));
                if let Some(di) = energy_di(Version::V1997) {
                    probes.push(dlt645_probe(
                        Address::WILDCARD,
                        Request::ReadData { di, extra: vec![] },
                        ProbeKind::WildcardRead1997,
                        format!("probe: dlt645-1997 read {di} at AAAAAAAAAAAA"),
                    ));
                }
            }
        }
        Protocol::ModbusRtu | Protocol::ModbusTcp => {
            let Some(read) = driver.plan().and_then(|p| p.requests.first()) else {
                return probes;
            };
            let unit = driver.unit();
            let others: Vec<u8> = taken.iter().map(|d| d.unit()).collect();
            let candidates = [1, unit.saturating_sub(1), unit.saturating_add(1), 2, 247];
            let mut tried = Vec::new();
            for u in candidates {
                if (1..=247).contains(&u)
                    && u != unit
                    && !others.contains(&u)
                    && !tried.contains(&u)
                    && tried.len() < UNIT_PROBES
                {
                    tried.push(u);
                    let mut t = super::modbus::transaction(u, read, 0).step;
                    t.what = format!("probe: unit {u} {}", t.what);
                    probes.push(Probe {
                        step: t,
                        kind: ProbeKind::Unit(u),
                    });
                }
            }
        }
    }
    probes
}

impl Probe {
    /// What the probe's verified reply says about `driver`'s meter, or `None` when it
    /// explains nothing (the meter answers read-address as itself, say).
    pub fn judge(&self, reply: &Reply, driver: &MeterDriver) -> Option<Finding> {
        match (self.kind, reply) {
            (ProbeKind::EditionAfterErrors(v), Reply::Dlt645(frame))
                if !frame.control.is_abnormal() =>
            {
                let asked = if v == Version::V1997 { "2007" } else { "1997" };
                Some(Finding::new(
                    Verdict::WrongProtocolEdition,
                    format!(
                        "every DL/T 645-{asked} read got an error reply; the meter at {} answers a {} read with data",
                        frame.address,
                        edition_name(v)
                    ),
                    format!(
                        "set protocol = \"{}\" and a matching profile",
                        edition_name(v)
                    ),
                ))
            }
            (ProbeKind::Edition(v), Reply::Dlt645(frame)) => {
                let asked = if v == Version::V1997 { "2007" } else { "1997" };
                let (mine, theirs) = if v == Version::V1997 {
                    ("11", "01")
                } else {
                    ("01", "11")
                };
                let profile = if v == Version::V1997 {
                    " and a DL/T 645-1997 profile (dlt645-1997-basic)"
                } else {
                    " and a DL/T 645-2007 profile"
                };
                Some(Finding::new(
                    Verdict::WrongProtocolEdition,
                    format!(
                        "no reply to DL/T 645-{asked} reads (control {mine}); the meter at {} answers a {} read (control {theirs}, reply {:02X})",
                        frame.address,
                        edition_name(v),
                        frame.control.byte()
                    ),
                    format!("set protocol = \"{}\"{profile}", edition_name(v)),
                ))
            }
            (ProbeKind::ReadAddress, Reply::Dlt645(frame)) => {
                let Ok(Response::Address(found)) = Response::from_frame(frame, Version::V2007)
                else {
                    return None;
                };
                wrong_address(driver, found, "answers read-address (AAAAAAAAAAAA) as")
            }
            (ProbeKind::WildcardRead1997, Reply::Dlt645(frame)) => {
                let found = frame.address;
                let mut f = wrong_address(
                    driver,
                    found,
                    "answers a DL/T 645-1997 read to AAAAAAAAAAAA as",
                )?;
                if driver.protocol() != Protocol::Dlt645_1997 {
                    f.advice
                        .push_str(" and protocol = \"dlt645-1997\" with a DL/T 645-1997 profile");
                }
                Some(f)
            }
            (ProbeKind::Unit(u), Reply::ModbusRtu(_)) => Some(Finding::new(
                Verdict::WrongAddress,
                format!("unit {} is silent; unit {u} answers", driver.unit()),
                format!("set unit = {u} (if that is this meter)"),
            )),
            _ => None,
        }
    }
}

fn wrong_address(driver: &MeterDriver, found: Address, how: &str) -> Option<Finding> {
    let configured = driver.address()?;
    if found == configured {
        return None;
    }
    Some(Finding::new(
        Verdict::WrongAddress,
        format!("configured {configured}, but the meter on the line {how} {found}"),
        format!("set address = \"{found}\""),
    ))
}

/// True when `received` starts with our own `request` (wake-up `FE`s aside on both): a
/// half-duplex adapter (or device server) without echo suppression sent it back.
///
/// A pure check on bytes, shared by the bus exchange (which names such an echo on a bus not
/// configured with `echo = true`) and by `meterd test`. A reply never begins with its whole
/// request on the reads meterd sends (a DL/T 645 reply sets the direction bit; a Modbus read
/// reply has a byte count where the request has its address), so it cannot mistake a reply
/// for an echo.
pub fn looks_like_echo(request: &[u8], received: &[u8]) -> bool {
    let strip = |b: &[u8]| -> usize { b.iter().take_while(|x| **x == 0xFE).count() };
    let request = request.get(strip(request)..).unwrap_or_default();
    let received = received.get(strip(received)..).unwrap_or_default();
    !request.is_empty() && received.starts_with(request)
}

/// A value no meter reports: a word-order mix-up's absurd magnitude, a cumulative register
/// below zero, or outside its family's physical range (`ranges`, `[validation]`).
fn implausible(v: &ReadingValue, ranges: &HashMap<String, [f64; 2]>) -> bool {
    if v.quality == Quality::Bad {
        // A float that decodes to NaN or infinity: the words made no number at all.
        return v.reason.as_deref() == Some(super::modbus::NOT_FINITE);
    }
    let Some(ValueData::Number(n)) = &v.value else {
        return false;
    };
    let Ok(x) = n.as_str().parse::<f64>() else {
        return false;
    };
    let family = v.quantity.split('.').next().unwrap_or("");
    let out_of_range = ranges
        .get(family)
        .or_else(|| ranges.get(&*v.quantity))
        .is_some_and(|[lo, hi]| x < *lo || x > *hi);
    x.abs() > 1e10
        || (x != 0.0 && x.abs() < 1e-9)
        || (is_cumulative(&v.quantity) && x < 0.0)
        || out_of_range
}

/// The name of `order` in profiles.
fn order_name(order: RegisterOrder) -> &'static str {
    match order {
        RegisterOrder::ABCD => "abcd",
        RegisterOrder::CDAB => "cdab",
        RegisterOrder::BADC => "badc",
        RegisterOrder::DCBA => "dcba",
    }
}

/// `wrong word order` when some multi-register values of a Modbus poll are implausible as
/// configured (`values`) and every one is plausible with the words swapped (`swapped`: the
/// same replies decoded by [`MeterDriver::with_words_swapped`]). `None` otherwise.
pub fn word_order_finding(
    driver: &MeterDriver,
    values: &[ReadingValue],
    swapped: &[ReadingValue],
    ranges: &HashMap<String, [f64; 2]>,
) -> Option<Finding> {
    let points = driver.modbus_points();
    let multi: Vec<usize> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.value_type.registers() > 1)
        .map(|(i, _)| i)
        .collect();
    let doubtful = |vals: &[ReadingValue]| -> Vec<usize> {
        multi
            .iter()
            .copied()
            .filter(|i| vals.get(*i).is_some_and(|v| implausible(v, ranges)))
            .collect()
    };
    let as_configured = doubtful(values);
    let readable = |vals: &[ReadingValue]| {
        multi.iter().all(|i| {
            vals.get(*i)
                .is_some_and(|v| v.quality != Quality::Bad || implausible(v, ranges))
        })
    };
    if as_configured.is_empty()
        || !doubtful(swapped).is_empty()
        || !readable(values)
        || swapped.len() != values.len()
    {
        return None;
    }
    let examples: Vec<String> = as_configured
        .iter()
        .take(2)
        .filter_map(|i| {
            let (a, b) = (values.get(*i)?, swapped.get(*i)?);
            Some(format!(
                "{} {} (swapped: {})",
                a.quantity,
                shown(a),
                shown(b)
            ))
        })
        .collect();
    let orders: Vec<(&str, &str)> = multi
        .iter()
        .filter_map(|i| points.get(*i))
        .map(|p| (order_name(p.order), order_name(swap_words(p.order))))
        .collect();
    let advice = match orders.first() {
        Some(first) if orders.iter().all(|o| o == first) => format!(
            "the meter's words come the other way round: set order = \"{}\" (not \"{}\") on the profile's multi-register points",
            first.1, first.0
        ),
        _ => "the meter's words come the other way round: swap the order of the profile's multi-register points (abcd <-> cdab, badc <-> dcba)".into(),
    };
    Some(Finding::new(
        Verdict::WrongWordOrder,
        format!(
            "{} of {} multi-register values implausible: {}",
            as_configured.len(),
            multi.len(),
            examples.join(", ")
        ),
        advice,
    ))
}

fn shown(v: &ReadingValue) -> String {
    match &v.value {
        Some(ValueData::Number(n)) => format!("{n} {}", v.unit).trim_end().to_owned(),
        Some(ValueData::Text(t)) => t.clone(),
        None => v.reason.clone().unwrap_or_else(|| "-".into()),
    }
}

/// The order with the words of a value swapped (bytes within each word kept).
pub(super) fn swap_words(order: RegisterOrder) -> RegisterOrder {
    match order {
        RegisterOrder::ABCD => RegisterOrder::CDAB,
        RegisterOrder::CDAB => RegisterOrder::ABCD,
        RegisterOrder::BADC => RegisterOrder::DCBA,
        RegisterOrder::DCBA => RegisterOrder::BADC,
    }
}

/// What the commissioning run of one meter saw (the bus gathers it).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The link failed or could not be opened, with the reason.
    pub link_failed: Option<String>,
    /// The meter answered at least one request of its poll.
    pub answered: bool,
    /// Some of our requests came back to us (see [`looks_like_echo`]) while the bus is not
    /// set up with `echo = true`.
    pub echo_seen: bool,
    /// The word-order check's finding (Modbus).
    pub word_order: Option<Finding>,
    /// The first probe's finding that explained the silence (or, DL/T 645, that every read
    /// got an error reply).
    pub probe: Option<Finding>,
}

/// The verdict on one meter from what its run saw and its values (validated: `suspect`
/// where implausible). In order: a dead link, an echoing adapter, silence (explained by a
/// probe, or `no reply`), the word order, then `ok` or `degraded`.
pub fn verdict(e: &Evidence, values: &[ReadingValue]) -> Finding {
    if let Some(reason) = &e.link_failed {
        return Finding::new(
            Verdict::LinkDown,
            reason.clone(),
            "check the port (or the device server's address), its cable and that no daemon holds it",
        );
    }
    if e.echo_seen {
        return Finding::new(
            Verdict::Echo,
            "the adapter sends our own requests back before the meter's reply",
            "set `echo = true` in the bus's timing (timing = { echo = true })",
        );
    }
    if !e.answered {
        if let Some(f) = &e.probe {
            return f.clone();
        }
        let reason = values
            .iter()
            .find_map(|v| v.reason.clone())
            .unwrap_or_else(|| "no reply".into());
        return Finding::new(
            Verdict::NoReply,
            format!("{reason}; no probe got an answer either"),
            format!("{SILENT_METER_HINT}; check the wiring and that the meter is powered"),
        );
    }
    if let Some(f) = e.word_order.as_ref().or(e.probe.as_ref()) {
        return f.clone();
    }
    let doubtful: Vec<&ReadingValue> = values
        .iter()
        .filter(|v| v.quality != Quality::Good)
        .collect();
    match doubtful.first() {
        None => Finding::new(Verdict::Ok, format!("{} values good", values.len()), ""),
        Some(first) => Finding::new(
            Verdict::Degraded,
            format!(
                "{} of {} values bad or suspect; first: {} {}",
                doubtful.len(),
                values.len(),
                first.quantity,
                first
                    .reason
                    .as_deref()
                    .unwrap_or(first.quality.to_string().as_str())
            ),
            "check the profile against the meter's manual",
        ),
    }
}

#[cfg(test)]
#[path = "commission_tests.rs"]
mod tests;
