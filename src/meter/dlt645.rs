//! DL/T 645 reads: the request of one data identifier and the meaning of its reply.

use meter_protocols::dlt645::catalog::{self, DiInfo};
use meter_protocols::dlt645::format::Value;
use meter_protocols::dlt645::{Address, DataIdentifier, Dlt645Frame, Request, Response};

use super::contract::Framing;
use super::{FollowUp, Step, Transaction, TxKind, bad_value};
use crate::hex_input::to_hex;
use crate::reading::{ExactNumber, Label, Quality, ReadingValue, TariffBlock, ValueData};

/// A quantity a DL/T 645 read is expected to yield.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub quantity: String,
    pub unit: String,
    pub obis: Option<String>,
    pub di: DataIdentifier,
}

/// The items `di` nominally yields (blocks expanded), with the profile's name for a single item.
fn items(di: DataIdentifier, quantity: Option<&str>) -> Vec<Item> {
    let from = |s: &catalog::DiSpec| Item {
        quantity: s.quantity.to_string(),
        unit: s.unit.to_owned(),
        obis: s.obis.as_ref().map(|o| o.to_string()),
        di: s.di,
    };
    let mut list: Vec<Item> = match catalog::lookup(di) {
        Some(DiInfo::Item(spec)) => vec![from(&spec)],
        Some(DiInfo::Block { items, .. }) => items.iter().map(from).collect(),
        None => vec![Item {
            quantity: format!("dlt645:{di}"),
            unit: String::new(),
            obis: None,
            di,
        }],
    };
    if let (Some(q), [only]) = (quantity, list.as_mut_slice()) {
        only.quantity = q.to_owned();
    }
    list
}

/// The read of one data identifier: its frame and the reply it awaits.
pub(super) fn read_step(address: Address, di: DataIdentifier) -> Step {
    read_step_with(address, di, Vec::new())
}

/// [`read_step`] with request data after the identifier (the load profile's count and start).
pub(super) fn read_step_with(address: Address, di: DataIdentifier, extra: Vec<u8>) -> Step {
    let request = Request::ReadData { di, extra };
    Step {
        bytes: request.to_frame(address).to_bytes(0),
        framing: Framing::Dlt645 {
            address,
            function: request.function(),
            di: Some(di),
        },
        modbus: None,
        what: format!("read {di}"),
    }
}

pub(super) fn transaction(
    address: Address,
    di: DataIdentifier,
    quantity: Option<String>,
) -> Transaction {
    Transaction {
        step: read_step(address, di),
        kind: TxKind::Dlt645 {
            di,
            items: items(di, quantity.as_deref()),
            quantity_override: quantity,
        },
    }
}

pub(super) fn follow_up_step(address: Address, di: DataIdentifier, seq: u8) -> Step {
    let request = Request::ReadFollowUp { di, seq };
    Step {
        bytes: request.to_frame(address).to_bytes(0),
        framing: Framing::Dlt645 {
            address,
            function: request.function(),
            di: Some(di),
        },
        modbus: None,
        what: format!("read follow-up {di} #{seq}"),
    }
}

pub(super) enum Outcome {
    /// More frames follow: ask for the next one.
    More(FollowUp),
    /// The decoded values.
    Values(Vec<ReadingValue>),
    /// No values: the reason each expected item carries.
    Bad(String),
    /// A valid reply, but about another item (a late reply to an earlier request): no values,
    /// and the frame is not evidence for this read.
    Foreign(String),
}

/// What one reply frame (maybe a follow-up) means for the read of `di`.
pub(super) fn interpret(
    di: DataIdentifier,
    frame: &Dlt645Frame,
    follow: Option<FollowUp>,
) -> Outcome {
    let response = match Response::from_frame(frame, di.version()) {
        Ok(r) => r,
        Err(e) => return Outcome::Bad(format!("unusable reply: {e}")),
    };
    let (got, payload, more, seq) = match response {
        Response::ReadData {
            di: got,
            payload,
            more_follows,
        } => (got, payload, more_follows, 0),
        Response::ReadFollowUp {
            di: got,
            payload,
            seq,
            more_follows,
        } => (got, payload, more_follows, seq),
        Response::Abnormal { error, .. } => {
            let reasons: Vec<&str> = error.reasons().collect();
            let text = if reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                reasons.join(", ")
            };
            return Outcome::Bad(format!("meter error {:02X}: {text}", error.0));
        }
        Response::SecurityAbnormal { error, .. } => {
            let reasons: Vec<&str> = error.reasons().collect();
            return Outcome::Bad(format!("meter security error: {}", reasons.join(", ")));
        }
        other => return Outcome::Bad(format!("unexpected reply {other:?}")),
    };
    if got != di {
        return Outcome::Foreign(format!("reply for another DI ({got}, asked {di})"));
    }
    let mut acc = follow.unwrap_or(FollowUp {
        payload: Vec::new(),
        seq: 0,
        frames: 0,
    });
    acc.payload.extend_from_slice(&payload);
    if more {
        acc.frames += 1;
        acc.seq = if seq == 0 { acc.frames } else { seq + 1 };
        return Outcome::More(acc);
    }
    Outcome::Values(decode(di, &acc.payload))
}

/// The register group a "total + tariffs" block reply held whole (total, t1..tN with N ≥ 1, as
/// the catalogue split it by the payload's length), or `None` for any other reply.
pub(super) fn tariff_block(di: DataIdentifier, values: &[ReadingValue]) -> Option<TariffBlock> {
    let Some(DiInfo::Block {
        tariffs_by_length: true,
        ..
    }) = catalog::lookup(di)
    else {
        return None;
    };
    let (total, tariffs) = values.split_first()?;
    let group = total.quantity.strip_suffix(".total")?;
    let whole = !tariffs.is_empty()
        && tariffs.iter().zip(1u8..).all(|(v, t)| {
            v.quantity
                .strip_prefix(group)
                .and_then(|rest| rest.strip_prefix(".t"))
                .is_some_and(|n| n == t.to_string())
        });
    whole.then(|| TariffBlock {
        group: group.into(),
        tariffs: u8::try_from(tariffs.len()).unwrap_or(u8::MAX),
    })
}

/// The values of a complete payload.
fn decode(di: DataIdentifier, payload: &[u8]) -> Vec<ReadingValue> {
    let version = di.version();
    catalog::decode_payload(di, payload)
        .into_iter()
        .map(|d| {
            let item_di = catalog::di_for_quantity(version, &d.quantity).unwrap_or(di);
            reading_value(item_di, d)
        })
        .collect()
}

/// One decoded value as a reading value read with `source_di`: good with its value, or bad
/// with why.
pub(super) fn reading_value(source_di: DataIdentifier, d: catalog::DecodedValue) -> ReadingValue {
    let (value, meter_time, reason) = value_parts(&d.value);
    let quality = if value.is_some() {
        Quality::Good
    } else {
        Quality::Bad
    };
    ReadingValue {
        quantity: d.quantity.to_string().into(),
        value,
        unit: d.unit.into(),
        obis: d.obis.map(|o| o.to_string().into()),
        source: format!("dlt645:{source_di}").into(),
        quality,
        reason,
        meter_time,
    }
}

/// A DL/T 645 value as the parts of a reading value: (value, meter time, reason it is
/// missing). The explanation of frames (`meterd decode`) shows values the same way.
pub(super) fn value_parts(v: &Value) -> (Option<ValueData>, Option<String>, Option<String>) {
    match v {
        Value::Number(d) => (
            Some(ValueData::Number(ExactNumber::from_decimal(*d))),
            None,
            None,
        ),
        Value::Demand { value, time } => (
            Some(ValueData::Number(ExactNumber::from_decimal(*value))),
            Some(time.to_string()),
            None,
        ),
        Value::Time(t) => (Some(ValueData::Text(t.to_string())), None, None),
        Value::Text(s) => (Some(ValueData::Text(s.clone())), None, None),
        Value::Bits(b) => (Some(ValueData::Text(format!("0x{b:04X}"))), None, None),
        Value::Raw(r) => (Some(ValueData::Text(to_hex(r))), None, None),
        Value::Invalid { raw, reason } => (None, None, Some(format!("{reason} ({})", to_hex(raw)))),
    }
}

/// Applies the profile's quantity name to a single-item read.
pub(super) fn rename(mut values: Vec<ReadingValue>, quantity: Option<&str>) -> Vec<ReadingValue> {
    if let (Some(q), [only]) = (quantity, values.as_mut_slice()) {
        only.quantity = q.into();
    }
    values
}

/// Every expected item, bad with `reason`.
pub(super) fn bad_items(items: &[Item], reason: &str) -> Vec<ReadingValue> {
    items
        .iter()
        .map(|i| {
            bad_value(
                i.quantity.as_str(),
                i.unit.as_str(),
                i.obis.as_deref().map(Label::from),
                format!("dlt645:{}", i.di).into(),
                reason,
            )
        })
        .collect()
}
