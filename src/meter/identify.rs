//! What a meter found by `meterd scan` is: its identity items and, for Modbus, its profile.
//!
//! DL/T 645-2007 meters carry their identity in parameter items (communication address,
//! meter number, asset management code, model, production date, firmware version): this
//! module says which to read and turns each reply into a [`Fact`]; an error reply means the
//! meter does not offer the item, never a failure. Modbus meters have no common identity
//! item, so each profile's `[identify]` section names registers whose values mark the model
//! (Eastron's meter code), and the profile's first point shows whether the meter has that
//! register map at all. [`ModbusIdentifier`] plans those reads once for every profile and
//! turns the answers into a verdict: the matching profile, or the candidates left.
//!
//! Sans-IO like the drivers: the caller sends each [`Step`] and hands back what came.

use std::collections::BTreeMap;

use meter_protocols::dlt645::catalog::decode_payload;
use meter_protocols::dlt645::{Address, DataIdentifier, Response, Version};
use meter_protocols::modbus::rtu::{self, ExceptionCode, ReadFunction};
use meter_protocols::modbus::values::{self, RawValue};
use serde::Serialize;

use super::contract::{Framing, Reply, Step};
use crate::config::profile::{IdentifyRegister, ProfileProtocol};
use crate::config::{Profile, ProfileSet};

/// The DL/T 645-2007 identity items, in the order they are read and shown.
pub const DLT645_2007_IDENTITY: [u32; 6] = [
    0x0400_0401, // communication address
    0x0400_0402, // meter number
    0x0400_0403, // asset management code
    0x0400_040B, // model
    0x0400_040C, // production date
    0x0480_0001, // firmware (manufacturer's software) version
];

/// One thing a meter told about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    /// What it is (`meter.asset_code`, `meter code`).
    pub name: String,
    /// Its value as text.
    pub value: String,
}

/// What identification found out about one meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The identity items the meter answered.
    pub facts: Vec<Fact>,
    /// The profile whose identification registers matched (Modbus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// With no match: the profiles the answers did not rule out (Modbus).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

/// The reads of the identity items of the DL/T 645 meter at `address` (none for DL/T
/// 645-1997, which has no standard identity items in the catalogue).
pub fn dlt645_steps(address: Address, version: Version) -> Vec<Step> {
    if version != Version::V2007 {
        return Vec::new();
    }
    DLT645_2007_IDENTITY
        .iter()
        .map(|&di| super::dlt645::read_step(address, DataIdentifier::V2007(di)))
        .collect()
}

/// The fact a DL/T 645 reply carries: `None` for an error reply (the meter does not offer
/// the item), no reply, or a reply that does not decode.
pub fn dlt645_fact(reply: Option<&Reply>, version: Version) -> Option<Fact> {
    let Some(Reply::Dlt645(frame)) = reply else {
        return None;
    };
    let Ok(Response::ReadData { di, payload, .. }) = Response::from_frame(frame, version) else {
        return None;
    };
    // An item the catalogue does not know is named `dlt645:XXXXXXXX` and shown as hex.
    let value = decode_payload(di, &payload).into_iter().next()?;
    Some(Fact {
        name: value.quantity.into_owned(),
        value: value.value.to_string(),
    })
}

/// The answer to one identification read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The registers read.
    Registers(Vec<u16>),
    /// An exception reply: the meter has no such register.
    Exception(ExceptionCode),
    /// No (usable) reply.
    Nothing,
}

impl Answer {
    /// The answer a Modbus reply gives; `None` (no reply) is [`Answer::Nothing`].
    pub fn from_reply(reply: Option<&Reply>) -> Self {
        match reply {
            Some(Reply::ModbusRtu(
                rtu::Response::HoldingRegisters(r) | rtu::Response::InputRegisters(r),
            )) => Answer::Registers(r.clone()),
            Some(Reply::ModbusRtu(rtu::Response::Exception { code, .. })) => {
                Answer::Exception(*code)
            }
            _ => Answer::Nothing,
        }
    }
}

/// A register span one read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    function: ReadFunction,
    address: u16,
    count: u16,
}

impl Span {
    fn request(self) -> rtu::Request {
        rtu::Request::read(self.function, self.address, self.count)
    }
}

/// Identification registers read together when they lie this close (Eastron's meter code and
/// serial number make one 4-register read; Eastron meters refuse odd register counts).
const MERGE_SPAN: u16 = 16;

/// One profile's part of the plan.
#[derive(Debug, Clone)]
struct ProfileCheck {
    name: String,
    /// Identification registers: the register, and which read holds it.
    registers: Vec<(IdentifyRegister, usize)>,
    /// The read of the profile's first point.
    probe: Option<usize>,
}

/// The identification reads for every Modbus profile, and what their answers mean.
#[derive(Debug, Clone)]
pub struct ModbusIdentifier {
    reads: Vec<Span>,
    profiles: Vec<ProfileCheck>,
}

/// Why a profile does not fit the answers, if it does not.
enum Fit {
    Match,
    RuledOut,
    Possible,
}

impl ModbusIdentifier {
    /// The plan for the Modbus profiles of `profiles` (in name order).
    pub fn new(profiles: &ProfileSet) -> Self {
        let mut reads: Vec<Span> = Vec::new();
        let mut index = |span: Span| match reads.iter().position(|r| *r == span) {
            Some(i) => i,
            None => {
                reads.push(span);
                reads.len() - 1
            }
        };
        let mut checks = Vec::new();
        for name in profiles.names() {
            let Some(profile) = profiles
                .get(name)
                .filter(|p| p.protocol == ProfileProtocol::Modbus)
            else {
                continue;
            };
            let mut registers = Vec::new();
            for span in identify_spans(profile) {
                let i = index(span);
                for r in identify_registers(profile) {
                    let end = r.register.saturating_add(r.read_width());
                    if r.function.read_function() == span.function
                        && r.register >= span.address
                        && end <= span.address.saturating_add(span.count)
                    {
                        registers.push((r.clone(), i));
                    }
                }
            }
            let probe = first_point(profile).map(&mut index);
            checks.push(ProfileCheck {
                name: name.to_owned(),
                registers,
                probe,
            });
        }
        Self {
            reads,
            profiles: checks,
        }
    }

    /// The requests to send, in order; hand their answers to [`ModbusIdentifier::verdict`]
    /// in the same order.
    pub fn requests(&self) -> Vec<rtu::Request> {
        self.reads.iter().map(|s| s.request()).collect()
    }

    /// The identity the answers give: the facts of every identification register that
    /// answered, the profile whose `expect` values all matched, or else the candidates no
    /// answer ruled out (an unexpected meter code, or an exception to the first point).
    pub fn verdict(&self, answers: &[Answer]) -> Identity {
        let answer = |i: usize| answers.get(i).unwrap_or(&Answer::Nothing);
        let mut matched = Vec::new();
        let mut candidates = Vec::new();
        let mut facts_of: BTreeMap<&str, Vec<Fact>> = BTreeMap::new();
        for check in &self.profiles {
            let mut fit = Fit::Possible;
            let mut decisive = false;
            let mut all_match = true;
            for (r, i) in &check.registers {
                let span = self.reads[*i];
                let value = match answer(*i) {
                    Answer::Registers(regs) => register_value(r, span, regs),
                    _ => None,
                };
                if let Some(v) = &value {
                    facts_of.entry(&check.name).or_default().push(Fact {
                        name: r.name.clone(),
                        value: v.text.clone(),
                    });
                }
                if r.expect.is_empty() {
                    continue;
                }
                decisive = true;
                match value.and_then(|v| v.unsigned) {
                    Some(v) if r.expect.contains(&v) => {}
                    Some(_) => {
                        fit = Fit::RuledOut;
                        all_match = false;
                    }
                    None => all_match = false,
                }
            }
            if let Some(i) = check.probe
                && matches!(answer(i), Answer::Exception(_))
            {
                fit = Fit::RuledOut;
            }
            if decisive && all_match && !matches!(fit, Fit::RuledOut) {
                fit = Fit::Match;
            }
            match fit {
                Fit::Match => matched.push(check.name.clone()),
                Fit::Possible => candidates.push(check.name.clone()),
                Fit::RuledOut => {}
            }
        }
        // Show the facts of the profile that matched; with none, those of the candidates
        // (what a technician compares with the manuals).
        let shown = if matched.is_empty() {
            &candidates
        } else {
            &matched
        };
        let mut facts: Vec<Fact> = Vec::new();
        for (profile, list) in facts_of {
            if shown.iter().any(|m| m == profile) {
                for f in list {
                    if !facts.contains(&f) {
                        facts.push(f);
                    }
                }
            }
        }
        let profile = matched.first().cloned();
        Identity {
            facts,
            candidates: if profile.is_some() {
                Vec::new()
            } else {
                candidates
            },
            profile,
        }
    }
}

/// An identification register's value: shown as text, compared as an unsigned integer.
struct RegisterValue {
    text: String,
    unsigned: Option<u64>,
}

fn register_value(r: &IdentifyRegister, span: Span, regs: &[u16]) -> Option<RegisterValue> {
    let offset = usize::from(r.register.checked_sub(span.address)?);
    let words = regs.get(offset..)?;
    let raw = values::decode(
        words,
        r.value_type.value_type(None),
        r.order.register_order(),
    )
    .ok()?;
    Some(match raw {
        RawValue::Unsigned(v) => RegisterValue {
            text: format!("{v} ({v:#06x})"),
            unsigned: Some(v),
        },
        RawValue::Signed(v) => RegisterValue {
            text: v.to_string(),
            unsigned: None,
        },
        RawValue::Float32(v) => RegisterValue {
            text: v.to_string(),
            unsigned: None,
        },
        RawValue::Float64(v) => RegisterValue {
            text: v.to_string(),
            unsigned: None,
        },
    })
}

fn identify_registers(profile: &Profile) -> impl Iterator<Item = &IdentifyRegister> {
    profile.identify.iter().flat_map(|i| i.registers.iter())
}

/// The reads covering a profile's identification registers: one per function while they lie
/// within [`MERGE_SPAN`] registers of each other.
fn identify_spans(profile: &Profile) -> Vec<Span> {
    let mut regs: Vec<(ReadFunction, u16, u16)> = identify_registers(profile)
        .map(|r| {
            (
                r.function.read_function(),
                r.register,
                r.register.saturating_add(r.read_width()),
            )
        })
        .collect();
    regs.sort();
    let mut spans: Vec<Span> = Vec::new();
    for (function, start, end) in regs {
        if let Some(last) = spans.last_mut()
            && last.function == function
            && end.saturating_sub(last.address) <= MERGE_SPAN
        {
            last.count = last.count.max(end - last.address);
            continue;
        }
        spans.push(Span {
            function,
            address: start,
            count: end.saturating_sub(start).max(1),
        });
    }
    spans
}

/// The read of a profile's first point (the register map check).
fn first_point(profile: &Profile) -> Option<Span> {
    let p = profile.points.first()?.get_ref();
    let (function, register, ty) = (p.function?, p.register?, p.value_type?);
    let count = match function.read_function() {
        ReadFunction::Coils | ReadFunction::DiscreteInputs => 1,
        _ => ty.registers(),
    };
    Some(Span {
        function: function.read_function(),
        address: register,
        count,
    })
}

/// The step that sends `request` to Modbus `unit`; `None` when the request cannot be encoded.
pub fn modbus_step(unit: u8, request: &rtu::Request) -> Option<Step> {
    let mut bytes = Vec::with_capacity(8);
    rtu::encode_request(unit, request, &mut bytes).ok()?;
    Some(Step {
        bytes,
        framing: Framing::ModbusRtu(request.expectation(unit)),
        modbus: Some((unit, request.clone())),
        what: format!("identify FC{:02}", request.function()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ProfileSet {
        ProfileSet::builtin().unwrap()
    }

    fn answers(id: &ModbusIdentifier, f: impl Fn(&rtu::Request) -> Answer) -> Vec<Answer> {
        id.requests().iter().map(f).collect()
    }

    fn regs(req: &rtu::Request, at: impl Fn(u16) -> Option<u16>) -> Answer {
        let (address, count) = match req {
            rtu::Request::ReadHoldingRegisters { address, count }
            | rtu::Request::ReadInputRegisters { address, count } => (*address, *count),
            _ => return Answer::Exception(ExceptionCode::IllegalFunction),
        };
        let v: Option<Vec<u16>> = (address..address + count).map(&at).collect();
        v.map_or(
            Answer::Exception(ExceptionCode::IllegalDataAddress),
            Answer::Registers,
        )
    }

    #[test]
    fn an_eastron_meter_code_names_its_profile() {
        let id = ModbusIdentifier::new(&set());
        // An SDM630: meter code 0x0070 at 0xFC02, serial 0x0001_E240 at 0xFC00.
        let got = id.verdict(&answers(&id, |r| {
            let holding = matches!(r, rtu::Request::ReadHoldingRegisters { .. });
            regs(r, |a| match (holding, a) {
                (true, 0xFC00) => Some(0x0001),
                (true, 0xFC01) => Some(0xE240),
                (true, 0xFC02) => Some(0x0070),
                (true, 0xFC03) => Some(0),
                (false, 0..=0x100) => Some(0),
                _ => None,
            })
        }));
        assert_eq!(got.profile.as_deref(), Some("eastron-sdm630"), "{got:?}");
        assert!(got.candidates.is_empty());
        assert!(got.facts.contains(&Fact {
            name: "meter code".into(),
            value: "112 (0x0070)".into()
        }));
        assert!(got.facts.iter().any(|f| f.value.starts_with("123456 ")));
    }

    #[test]
    fn without_a_match_the_candidates_are_the_profiles_not_ruled_out() {
        let id = ModbusIdentifier::new(&set());
        // Holding registers 0..=64 only: no Eastron meter code, no input registers.
        let got = id.verdict(&answers(&id, |r| {
            let holding = matches!(r, rtu::Request::ReadHoldingRegisters { .. });
            regs(r, |a| (holding && a <= 64).then_some(7))
        }));
        assert_eq!(got.profile, None);
        assert_eq!(got.candidates, ["generic-modbus"], "{got:?}");
        // Nothing answered at all: nothing is ruled out.
        let got = id.verdict(&answers(&id, |_| Answer::Nothing));
        assert_eq!(got.profile, None);
        assert!(got.candidates.len() >= 4, "{got:?}");
        // Another meter code rules the Eastron profiles out even with their map present.
        let got = id.verdict(&answers(&id, |r| regs(r, |_| Some(0x0999))));
        assert!(
            !got.candidates.iter().any(|c| c.starts_with("eastron")),
            "{got:?}"
        );
    }

    #[test]
    fn the_reads_are_merged_and_shared_between_profiles() {
        let id = ModbusIdentifier::new(&set());
        let reqs = id.requests();
        let fc02 = reqs
            .iter()
            .filter(|r| {
                matches!(r, rtu::Request::ReadHoldingRegisters { address, count }
                if *address == 0xFC00 && *count == 4)
            })
            .count();
        assert_eq!(fc02, 1, "{reqs:?}");
        for r in &reqs {
            assert!(r.validate().is_ok(), "{r:?}");
        }
    }

    #[test]
    fn dlt645_identity_is_read_item_by_item_and_an_error_reply_is_no_fact() {
        let a: Address = "000000000001".parse().unwrap();
        assert_eq!(dlt645_steps(a, Version::V2007).len(), 6);
        assert!(dlt645_steps(a, Version::V1997).is_empty());
        let di = DataIdentifier::V2007(0x0400_040B);
        let ok = Response::ReadData {
            di,
            payload: b"0185ST-MSD".iter().rev().copied().collect(),
            more_follows: false,
        }
        .to_frame(a, Version::V2007);
        let fact = dlt645_fact(Some(&Reply::Dlt645(ok)), Version::V2007).unwrap();
        assert_eq!(fact.name, "meter.model");
        assert_eq!(fact.value, "0185ST-MSD");
        let err = Response::Abnormal {
            function: meter_protocols::dlt645::Function::ReadData,
            error: meter_protocols::dlt645::ErrorWord(0x02),
        }
        .to_frame(a, Version::V2007);
        assert_eq!(dlt645_fact(Some(&Reply::Dlt645(err)), Version::V2007), None);
        assert_eq!(dlt645_fact(None, Version::V2007), None);
    }
}
