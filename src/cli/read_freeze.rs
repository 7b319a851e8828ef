//! `meterd read --freeze KIND --last N`: the meter's own settlement records, newest first,
//! each under the stamp the meter gave it, in the shape the daemon publishes them
//! (`meterd.freeze.v1`).
//!
//! A technician uses it to see what the billing core will settle on: the daily freeze of the
//! last days, the monthly settlement registers, the whole-hour records of a large consumer.
//! Records are read as "n-th most recent" (n = 1..N), the way the meter keeps them; each one
//! is shown with its own stamp, so a missed midnight shows as a jump in the stamps.

use std::path::Path;
use std::process::ExitCode;

use meter_protocols::dlt645::catalog::di_for_quantity;
use meter_protocols::dlt645::freeze::{
    FreezeKind, LocalMinute, monthly_stamp, plain_quantity, record_of,
};
use meter_protocols::dlt645::{Dlt645Frame, Response, Version};
use meter_protocols::scan::Scan;

use super::read::{ReadArgs, one_meter_bus, read_once};
use super::{ProtocolArg, fail};
use crate::clock::{UtcOffset, wall_clock_ms};
use crate::config::profile::{Point, ProfileProtocol};
use crate::config::{Profile, ProfileSet, Protocol};
use crate::reading::freeze::{FreezeOrigin, FreezeRecord};
use crate::reading::{Quality, ReadingBatch, ReadingValue, ValueData};

/// The profile name of the records' read plan.
const PLAN: &str = "cli-freeze";

/// Runs `meterd read --freeze`: 0 when every record was read with a stamp and good values,
/// 1 when the meter did not answer or a record is incomplete, 2 for a bad request or port.
pub fn run(args: &ReadArgs, kind: FreezeKind, last: u8, offset: UtcOffset) -> ExitCode {
    let records = match read_records(args, kind, last, offset) {
        Ok(r) => r,
        Err((reason, code)) => return fail("read", &reason, code),
    };
    if let Err(code) = print_records(&records, args.json) {
        return code;
    }
    let incomplete = records
        .iter()
        .filter(|r| r.values.iter().any(|v| v.quality != Quality::Good))
        .count();
    if incomplete > 0 {
        return fail(
            "read",
            &format!("{incomplete} of {} records incomplete", records.len()),
            1,
        );
    }
    ExitCode::SUCCESS
}

/// Reads the newest `last` records of `kind` from the meter of `args`.
fn read_records(
    args: &ReadArgs,
    kind: FreezeKind,
    last: u8,
    offset: UtcOffset,
) -> Result<Vec<FreezeRecord>, (String, u8)> {
    let (version, protocol) = match args.protocol {
        Some(ProtocolArg::Dlt645_2007) => (Version::V2007, Protocol::Dlt645_2007),
        Some(ProtocolArg::Dlt645_1997) => (Version::V1997, Protocol::Dlt645_1997),
        _ => return Err(("--freeze reads DL/T 645 meters".into(), 2)),
    };
    let depth = kind.depth_in(version);
    if depth == 0 {
        return Err((
            format!(
                "a DL/T 645-1997 meter keeps no {kind} records: the 1997 edition has only \
                 monthly settlements (last month's and the month before's: `--freeze monthly`)"
            ),
            2,
        ));
    }
    if !(1..=depth).contains(&last) {
        return Err((
            format!(
                "--last {last}: a {} meter keeps 1..={depth} {} records",
                version.name(),
                kind.name()
            ),
            2,
        ));
    }
    let profiles = ProfileSet::builtin()
        .map_err(|e| (e.to_string(), 2))?
        .with(plan(kind, version, last).map_err(|e| (e, 2))?);
    let bus = one_meter_bus(args, protocol, PLAN.into()).map_err(|e| (e, 2))?;
    let batch = read_once(&bus, &profiles)?;
    Ok(records(&batch, kind, version, last, offset))
}

/// The read plan: each record's stamp (daily, hourly) and value identifiers, n = 1..=last;
/// for monthly records, the meter's clock and settlement day, which name their instant.
fn plan(kind: FreezeKind, version: Version, last: u8) -> Result<Profile, String> {
    let mut dis = Vec::new();
    if kind == FreezeKind::Monthly {
        for q in ["meter.date", "meter.time", "meter.settlement_day1"] {
            dis.extend(di_for_quantity(version, q));
        }
    }
    for n in 1..=last {
        if version == Version::V2007 {
            dis.extend(kind.stamp_di(n));
        }
        dis.extend(kind.value_dis_in(version, n));
    }
    let points = dis
        .into_iter()
        .map(|di| Point {
            // The catalogue names every item of a block; a name here would rename a lone one.
            quantity: None,
            ..Point::dlt645("", di)
        })
        .collect();
    Profile::new(
        PLAN,
        "freeze records",
        "command line",
        if version == Version::V2007 {
            ProfileProtocol::Dlt645_2007
        } else {
            ProfileProtocol::Dlt645_1997
        },
        points,
    )
    .checked(Path::new("<command line>"))
    .map_err(|e| e.to_string())
}

/// Splits one read batch into its records, newest first.
fn records(
    batch: &ReadingBatch,
    kind: FreezeKind,
    version: Version,
    last: u8,
    offset: UtcOffset,
) -> Vec<FreezeRecord> {
    let origin = FreezeOrigin {
        gateway: &batch.gateway,
        meter: &batch.meter,
        protocol: &batch.protocol,
        offset,
        read_at: &batch.read_at,
    };
    let frames_of = |n: u8| -> Vec<String> {
        batch
            .frames
            .iter()
            .filter(|f| frame_record(f, version) == Some((kind, n)))
            .cloned()
            .collect()
    };
    let monthly_base = (kind == FreezeKind::Monthly).then(|| monthly_now(batch, offset));
    (1..=last)
        .map(|n| {
            let suffix = snapshot_suffix(kind, n);
            let mut values: Vec<ReadingValue> = batch
                .values
                .iter()
                .filter(|v| v.quantity.ends_with(&suffix))
                .cloned()
                .collect();
            let stamp = match monthly_base {
                Some((now, settlement)) => Some(monthly_stamp(now, settlement, n)),
                None => take_stamp(&mut values),
            };
            for v in &mut values {
                v.quantity = plain_quantity(&v.quantity).into();
            }
            // A record whose stamp could not be read is still shown (its values are the
            // meter's), stamped 0000-… so nobody mistakes it for a real instant.
            let stamp = stamp.unwrap_or(LocalMinute(i64::MIN / 2));
            FreezeRecord::new(&origin, kind, stamp, false, values, frames_of(n))
        })
        .collect()
}

/// The quantity suffix of record `n` of `kind` in the catalogue.
fn snapshot_suffix(kind: FreezeKind, n: u8) -> String {
    match kind {
        FreezeKind::Daily => format!("@daily-{n}"),
        FreezeKind::Hourly => format!("@hourly-{n}"),
        FreezeKind::Monthly => format!("@settlement-{n}"),
        // Read by stamp (`read_load_profile`), never through this plan.
        FreezeKind::LoadProfile => format!("@load-{n}"),
    }
}

/// Removes the record's stamp item from `values` and returns the stamp it holds.
fn take_stamp(values: &mut Vec<ReadingValue>) -> Option<LocalMinute> {
    let i = values
        .iter()
        .position(|v| v.quantity.starts_with("freeze."))?;
    let v = values.remove(i);
    match (&v.value, v.quality) {
        (Some(ValueData::Text(t)), Quality::Good) => parse_local_minute(t),
        _ => None,
    }
}

/// `2026-12-07T00:00` (a decoded `YYMMDDhhmm`) as a local minute.
fn parse_local_minute(text: &str) -> Option<LocalMinute> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<u32>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(str::parse::<u32>);
    let (h, min) = (t.next()?.ok()?, t.next()?.ok()?);
    Some(LocalMinute::from_civil(i64::from(y), m, day, h, min))
}

/// The meter's current local time and its settlement (day, hour), from the batch; the
/// gateway's clock in the meter's zone and the 1st 00:00 (the usual setting) where the meter
/// did not say.
pub(super) fn monthly_now(batch: &ReadingBatch, offset: UtcOffset) -> (LocalMinute, (u8, u8)) {
    let text = |q: &str| {
        batch
            .values
            .iter()
            .find_map(|v| match (&v.value, v.quality) {
                (Some(ValueData::Text(t)), Quality::Good) if &*v.quantity == q => Some(t.clone()),
                _ => None,
            })
    };
    let meter_now = text("meter.date")
        .zip(text("meter.time"))
        .and_then(|(d, t)| {
            let date = d.split_whitespace().next()?.to_owned();
            parse_local_minute(&format!("{date}T{t}"))
        });
    let now = meter_now
        .unwrap_or_else(|| LocalMinute(wall_clock_ms().div_euclid(60_000) + offset.minutes()));
    // `---01T00`: day 01, hour 00.
    let settlement = text("meter.settlement_day1")
        .and_then(|s| {
            let (day, hour) = s.trim_start_matches('-').split_once('T')?;
            Some((day.parse().ok()?, hour.parse().ok()?))
        })
        .unwrap_or((1, 0));
    (now, settlement)
}

/// Which record an evidence frame (hex) answers.
fn frame_record(hex: &str, version: Version) -> Option<(FreezeKind, u8)> {
    let bytes = crate::hex_input::parse_hex(&[hex]).ok()?;
    let Scan::Frame { frame, .. } = Dlt645Frame::scan(&bytes) else {
        return None;
    };
    match Response::from_frame(&frame, version).ok()? {
        Response::ReadData { di, .. } => record_of(di),
        _ => None,
    }
}

/// One record as a table.
/// Prints `records` as `meterd.freeze.v1` JSON (`json`) or as a table each; the exit code
/// when they cannot be printed.
pub(super) fn print_records(records: &[FreezeRecord], json: bool) -> Result<(), ExitCode> {
    if json {
        match serde_json::to_string_pretty(records) {
            Ok(s) => println!("{s}"),
            Err(e) => return Err(fail("read", &format!("cannot print JSON: {e}"), 2)),
        }
    } else {
        for r in records {
            print!("{}", table(r));
        }
    }
    Ok(())
}

pub(super) fn table(r: &FreezeRecord) -> String {
    let mut out = format!(
        "{} freeze of meter {}, frozen at {}\n",
        r.kind, r.meter, r.frozen_at
    );
    let w = r
        .values
        .iter()
        .map(|v| v.quantity.chars().count())
        .max()
        .unwrap_or(0);
    for v in &r.values {
        let value = match &v.value {
            Some(ValueData::Number(n)) => n.to_string(),
            Some(ValueData::Text(t)) => t.clone(),
            None => "-".into(),
        };
        let reason = v.reason.as_deref().unwrap_or("");
        let line = format!(
            "  {:<w$}  {value:>12} {:<5} {} {reason}",
            v.quantity, v.unit, v.quality
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("  id {} ({} frames)\n", r.id, r.frames.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_minutes_parse_from_decoded_stamps() {
        assert_eq!(
            parse_local_minute("2026-12-07T00:00"),
            Some(LocalMinute::from_civil(2026, 12, 7, 0, 0))
        );
        assert_eq!(
            parse_local_minute("2026-12-07T13:45:10"),
            Some(LocalMinute::from_civil(2026, 12, 7, 13, 45))
        );
        assert_eq!(parse_local_minute("---01T00"), None);
        assert_eq!(parse_local_minute("garbage"), None);
    }

    #[test]
    fn the_plan_reads_every_record_asked_for() {
        let p = plan(FreezeKind::Daily, Version::V2007, 3).unwrap();
        let dis: Vec<String> = p
            .points
            .iter()
            .filter_map(|p| p.get_ref().di.clone())
            .collect();
        assert_eq!(
            dis,
            [
                "05060001", "05060101", "05060201", "05060002", "05060102", "05060202", "05060003",
                "05060103", "05060203"
            ]
        );
        let p = plan(FreezeKind::Monthly, Version::V2007, 2).unwrap();
        assert_eq!(p.points.len(), 3 + 2 * 2);
    }
}
