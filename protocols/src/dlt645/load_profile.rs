//! The DL/T 645-2007 load profile (负荷记录): the request for the records from a given time
//! (`06000001`), and the records a reply carries.
//!
//! Request data after the DI: `N` (records wanted, 1 byte BCD) then the start `mm hh DD MM YY`
//! (the standard's `YYMMDDhhmmNN`, sent low byte first). The meter answers the records stamped
//! at or after the start, oldest first. Each record (docs/protocols/dlt645-load-profile.md,
//! with the sources):
//!
//! ```text
//! A0 A0 | len | mm hh DD MM YY | block 1 | AA | block 2 | AA | … | block 6 | AA | cs | E5
//! ```
//!
//! `len` counts the bytes after it up to the checksum; `cs` is the sum mod 256 from the first
//! `A0` through the last `AA`. `E0 E0` instead of `A0 A0` marks a record the meter itself
//! flags as not correct. A block the meter does not record (its load-record mode word) is
//! empty: its `AA` alone. The blocks hold fixed items, each in the format of the single
//! identifier named in [`BLOCKS`], so their values decode with the [`super::catalog`].
//!
//! Sans-IO and total: parsing never panics, whatever the bytes.

use nom::bytes::complete::{tag, take};
use nom::number::complete::u8 as byte;
use nom::{IResult, Parser};

use super::DataIdentifier;
use super::catalog::{DecodedValue, DiInfo, decode_payload, lookup};
use super::format::{Format, MeterTime, Value};
use super::freeze::LocalMinute;

/// The identifier of the load-profile read "records from a given time" (给定时间记录块).
pub const LOAD_PROFILE_DI: DataIdentifier = DataIdentifier::V2007(0x0600_0001);

/// The start code of a record the meter vouches for.
pub const START: [u8; 2] = [0xA0, 0xA0];
/// The start code of a record the meter marks as not correct.
pub const START_BAD: [u8; 2] = [0xE0, 0xE0];
/// The separator that ends every block, empty or not.
pub const BLOCK_END: u8 = 0xAA;
/// The record's end code.
pub const END: u8 = 0xE5;

/// The six blocks of a record, each as the identifiers of its items in wire order: 1 voltage,
/// current, frequency (17 bytes); 2 active and reactive power (24); 3 power factor (8); 4
/// active and combined reactive energy totals (16); 5 quadrant reactive energy totals (16);
/// 6 current active and reactive demand (6).
pub const BLOCKS: [&[u32]; 6] = [
    &[
        0x0201_0100,
        0x0201_0200,
        0x0201_0300,
        0x0202_0100,
        0x0202_0200,
        0x0202_0300,
        0x0280_0002,
    ],
    &[
        0x0203_0000,
        0x0203_0100,
        0x0203_0200,
        0x0203_0300,
        0x0204_0000,
        0x0204_0100,
        0x0204_0200,
        0x0204_0300,
    ],
    &[0x0206_0000, 0x0206_0100, 0x0206_0200, 0x0206_0300],
    &[0x0001_0000, 0x0002_0000, 0x0003_0000, 0x0004_0000],
    &[0x0005_0000, 0x0006_0000, 0x0007_0000, 0x0008_0000],
    &[0x0280_0004, 0x0280_0005],
];

/// The fixed overhead of a record: start code, length, stamp, six separators, checksum, end.
pub const OVERHEAD: usize = 2 + 1 + 5 + 6 + 2;

/// Why a load-profile reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadProfileError {
    /// The bytes do not follow the record layout.
    #[error("record {record}: {what}")]
    Layout {
        /// The record's position in the reply (0 = first).
        record: usize,
        /// What is wrong.
        what: String,
    },
}

/// The format of an item identifier of [`BLOCKS`].
fn item_format(di: u32) -> Option<Format> {
    match lookup(DataIdentifier::V2007(di))? {
        DiInfo::Item(spec) => Some(spec.format),
        DiInfo::Block { .. } => None,
    }
}

/// The length in bytes of block `index` (0-based) when present.
pub fn block_len(index: usize) -> usize {
    BLOCKS.get(index).map_or(0, |items| {
        items
            .iter()
            .filter_map(|&di| item_format(di))
            .map(Format::len)
            .sum()
    })
}

/// One load record: the meter's stamp and the bytes of each block (`None`: not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRecord {
    /// The record's stamp on the meter's clock.
    pub stamp: LocalMinute,
    /// False when the meter marked the record not correct (`E0 E0`).
    pub valid: bool,
    /// Each block's bytes (unmasked, low byte first), exactly [`block_len`] long, or `None`.
    pub blocks: [Option<Vec<u8>>; 6],
}

impl LoadRecord {
    /// The decoded values of block `index` (0-based), one per item of [`BLOCKS`]; `None` when
    /// the block is absent.
    pub fn block_values(&self, index: usize) -> Option<Vec<DecodedValue>> {
        let bytes = self.blocks.get(index)?.as_ref()?;
        let mut rest = bytes.as_slice();
        let mut out = Vec::new();
        for &di in *BLOCKS.get(index)? {
            let len = item_format(di).map_or(0, Format::len);
            let (head, tail) = rest.split_at_checked(len)?;
            out.extend(decode_payload(DataIdentifier::V2007(di), head));
            rest = tail;
        }
        Some(out)
    }

    /// Every value of every present block, in block order, with the item identifier each
    /// was decoded as.
    pub fn values(&self) -> Vec<(DataIdentifier, DecodedValue)> {
        let mut out = Vec::new();
        for (index, items) in BLOCKS.iter().enumerate() {
            if let Some(values) = self.block_values(index) {
                out.extend(
                    items
                        .iter()
                        .map(|&di| DataIdentifier::V2007(di))
                        .zip(values),
                );
            }
        }
        out
    }

    /// The record's bytes (unmasked): start code, length, stamp, blocks, checksum, end.
    /// `None` when a block has the wrong length.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut body = stamp_bytes(self.stamp)?;
        for (index, block) in self.blocks.iter().enumerate() {
            if let Some(bytes) = block {
                if bytes.len() != block_len(index) {
                    return None;
                }
                body.extend_from_slice(bytes);
            }
            body.push(BLOCK_END);
        }
        let mut out = Vec::with_capacity(body.len() + 5);
        out.extend_from_slice(if self.valid { &START } else { &START_BAD });
        out.push(u8::try_from(body.len()).ok()?);
        out.extend(body);
        let cs = out.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        out.push(cs);
        out.push(END);
        Some(out)
    }
}

/// `mm hh DD MM YY` of a stamp; `None` outside 2000..=2099.
fn stamp_bytes(stamp: LocalMinute) -> Option<Vec<u8>> {
    let (y, m, d, h, min) = stamp.civil();
    let t = MeterTime {
        year: Some(u16::try_from(y).ok()?),
        month: Some(u8::try_from(m).ok()?),
        day: Some(u8::try_from(d).ok()?),
        weekday: None,
        hour: Some(u8::try_from(h).ok()?),
        minute: Some(u8::try_from(min).ok()?),
        second: None,
    };
    Format::Yymmddhhmm.encode(&Value::Time(t))
}

/// The request data after the DI: `N` (BCD, 1..=99) then the start `mm hh DD MM YY`.
/// `None` for a count outside 1..=99 or a start outside 2000..=2099.
pub fn request_extra(count: u8, start: LocalMinute) -> Option<Vec<u8>> {
    if !(1..=99).contains(&count) {
        return None;
    }
    let mut out = vec![((count / 10) << 4) | (count % 10)];
    out.extend(stamp_bytes(start)?);
    Some(out)
}

/// The (count, start) of request data built by [`request_extra`]: what a meter reads from
/// it. `None` for anything else.
pub fn parse_request_extra(extra: &[u8]) -> Option<(u8, LocalMinute)> {
    let (&n, time) = extra.split_first()?;
    let (hi, lo) = (n >> 4, n & 0x0F);
    if hi > 9 || lo > 9 || time.len() != 5 {
        return None;
    }
    let count = hi * 10 + lo;
    match Format::Yymmddhhmm.decode(time) {
        Value::Time(t) if count > 0 => Some((count, LocalMinute::from_meter_time(&t)?)),
        _ => None,
    }
}

/// Every record of a reply's payload (after the DI, unmasked), in the order sent.
pub fn parse_records(payload: &[u8]) -> Result<Vec<LoadRecord>, LoadProfileError> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let record = out.len();
        let fail = |what: String| LoadProfileError::Layout { record, what };
        let (tail, parsed) = one_record(rest).map_err(|_| fail("cut short".into()))?;
        let (start, len, body, cs) = parsed;
        let consumed = rest.len() - tail.len();
        let sum = rest
            .get(..consumed.saturating_sub(2))
            .unwrap_or(&[])
            .iter()
            .fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != cs {
            return Err(fail(format!("checksum {cs:02X}, computed {sum:02X}")));
        }
        if usize::from(len) != body.len() {
            return Err(fail(format!(
                "length byte says {len}, the record holds {}",
                body.len()
            )));
        }
        out.push(record_of(start == START, body).map_err(fail)?);
        rest = tail;
    }
    Ok(out)
}

/// (start code, length byte, body from the stamp through the last separator, checksum).
type RawRecord<'a> = ([u8; 2], u8, &'a [u8], u8);

/// One record's frame: start code, length, the body up to and with the sixth separator
/// (walked block by block: a block is empty when its first byte is `AA`, otherwise exactly
/// its length), checksum and end code.
fn one_record(input: &[u8]) -> IResult<&[u8], RawRecord<'_>> {
    let (after_start, start) =
        nom::branch::alt((tag(&START[..]), tag(&START_BAD[..]))).parse(input)?;
    let start = if start == START { START } else { START_BAD };
    let (after_len, len) = byte(after_start)?;
    let (mut rest, _) = take(5usize)(after_len)?;
    for index in 0..BLOCKS.len() {
        if rest.first() != Some(&BLOCK_END) {
            (rest, _) = take(block_len(index))(rest)?;
        }
        (rest, _) = tag(&[BLOCK_END][..])(rest)?;
    }
    let body_len = after_len.len() - rest.len();
    let (rest, cs) = byte(rest)?;
    let (rest, _) = tag(&[END][..])(rest)?;
    Ok((rest, (start, len, &after_len[..body_len], cs)))
}

/// The record of a checked body: stamp, then each block's bytes.
fn record_of(valid: bool, body: &[u8]) -> Result<LoadRecord, String> {
    let (time, mut rest) = body.split_at_checked(5).ok_or("no stamp")?;
    let stamp = match Format::Yymmddhhmm.decode(time) {
        Value::Time(t) => LocalMinute::from_meter_time(&t).ok_or("stamp lacks a field")?,
        _ => return Err(format!("stamp {time:02X?} is not a date and time")),
    };
    let mut blocks: [Option<Vec<u8>>; 6] = Default::default();
    for (index, slot) in blocks.iter_mut().enumerate() {
        if rest.first() == Some(&BLOCK_END) {
            rest = rest.get(1..).unwrap_or(&[]);
            continue;
        }
        let (bytes, tail) = rest
            .split_at_checked(block_len(index))
            .ok_or("block cut short")?;
        *slot = Some(bytes.to_vec());
        rest = tail.get(1..).unwrap_or(&[]);
    }
    Ok(LoadRecord {
        stamp,
        valid,
        blocks,
    })
}

#[cfg(test)]
mod tests;
