//! `meterd read --freeze load_profile --last N`: the meter's newest load records (负荷记录),
//! each read by its stamp with the given-time request `06000001`, in the shape the daemon
//! publishes them (`meterd.freeze.v1`, kind `load_profile`).
//!
//! The meter's clock (`04000101`, `04000102`) gives the newest stamp due (the last whole
//! `--load-interval` on its clock); the records go back from there one interval at a time. A
//! stamp the meter did not record shows as lost, with the meter's reason; the newest one, if
//! the meter has not written it yet, is skipped and one more older record is read instead.

use std::path::Path;
use std::process::ExitCode;

use meter_protocols::dlt645::catalog::di_for_quantity;
use meter_protocols::dlt645::freeze::{
    FreezeKind, LocalMinute, MAX_LOAD_RECORDS_BACK, latest_load_record,
};
use meter_protocols::dlt645::{Address, Version};

use super::read::{ReadArgs, one_meter_bus, read_once};
use super::read_freeze::{monthly_now, print_records};
use super::{ProtocolArg, fail, runtime};
use crate::bus::task::{Bus, BusOptions};
use crate::config::profile::{Point, ProfileProtocol};
use crate::config::{BusConfig, Profile, ProfileSet, Protocol};
use crate::meter::freeze_read::{FreezeOutcome, FreezeRead};
use crate::reading::freeze::{FreezeOrigin, FreezeRecord};
use crate::reading::{ReadingBatch, ValueData};

/// The profile name of the clock read.
const PLAN: &str = "cli-load-profile";

/// Runs `meterd read --freeze load_profile`: 0 when every record was read, 1 when the meter
/// did not answer or a record is lost or unreadable, 2 for a bad request or port.
pub fn run(args: &ReadArgs) -> ExitCode {
    let (records, problems) = match read_records(args) {
        Ok(r) => r,
        Err((reason, code)) => return fail("read", &reason, code),
    };
    if let Err(code) = print_records(&records, args.json) {
        return code;
    }
    for p in &problems {
        eprintln!("meterd read: {p}");
    }
    if !problems.is_empty() {
        return fail(
            "read",
            &format!(
                "{} of {} load records not read",
                problems.len(),
                records.len() + problems.len()
            ),
            1,
        );
    }
    ExitCode::SUCCESS
}

/// The records read (newest first) and a line for each stamp that could not be.
fn read_records(args: &ReadArgs) -> Result<(Vec<FreezeRecord>, Vec<String>), (String, u8)> {
    match args.protocol {
        Some(ProtocolArg::Dlt645_2007) => {}
        Some(ProtocolArg::Dlt645_1997) => {
            return Err((
                "a DL/T 645-1997 meter keeps no load profile (the 1997 edition has only \
                 monthly settlements: `--freeze monthly`)"
                    .into(),
                2,
            ));
        }
        _ => return Err(("--freeze reads DL/T 645 meters".into(), 2)),
    }
    if !(1..=MAX_LOAD_RECORDS_BACK).contains(&args.last) {
        return Err((
            format!(
                "--last {}: 1..={MAX_LOAD_RECORDS_BACK} load records",
                args.last
            ),
            2,
        ));
    }
    let profiles = ProfileSet::builtin()
        .map_err(|e| (e.to_string(), 2))?
        .with(clock_plan().map_err(|e| (e, 2))?);
    let bus = one_meter_bus(args, Protocol::Dlt645_2007, PLAN.into()).map_err(|e| (e, 2))?;
    // The meter's clock names the newest record due.
    let batch = read_once(&bus, &profiles)?;
    let now = meter_now(&batch).unwrap_or_else(|| monthly_now(&batch, args.utc_offset).0);
    let interval = args.load_interval;
    let newest = latest_load_record(now, interval);
    let address = bus
        .meters
        .first()
        .and_then(|m| m.get_ref().address.as_deref())
        .and_then(|a| Address::parse_full(a).ok())
        .ok_or(("a DL/T 645 read needs --address (12 digits)".to_owned(), 2))?;
    let rt = runtime().map_err(|e| (e, 2))?;
    rt.block_on(read_stamps(
        args,
        &bus,
        &profiles,
        address,
        newest,
        batch.meter,
    ))
}

/// Reads `args.last` records back from `newest`.
async fn read_stamps(
    args: &ReadArgs,
    bus: &BusConfig,
    profiles: &ProfileSet,
    address: Address,
    newest: LocalMinute,
    meter: String,
) -> Result<(Vec<FreezeRecord>, Vec<String>), (String, u8)> {
    let mut options = BusOptions::new("local");
    options.evidence_frames = true;
    let mut bus = Bus::new(bus, profiles, options).map_err(|e| (e.to_string(), 2))?;
    bus.connect().await.map_err(|e| (e, 2))?;
    let id = bus
        .drivers()
        .next()
        .map(|d| d.id().to_owned())
        .ok_or(("no meter to read".to_owned(), 2))?;
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let mut k = 0i64;
    let mut wanted = i64::from(args.last);
    while k < wanted {
        let stamp = LocalMinute(newest.0 - k * args.load_interval);
        k += 1;
        let read = FreezeRead::load_record(address, stamp, LocalMinute(i64::MIN / 2));
        let outcome = bus.read_record(&id, read).await.map_err(|e| (e, 2))?;
        let read_at = crate::clock::rfc3339_millis(crate::clock::now());
        let origin = FreezeOrigin {
            gateway: "local",
            meter: &meter,
            protocol: Protocol::Dlt645_2007.name(),
            offset: args.utc_offset,
            read_at: &read_at,
        };
        match outcome {
            FreezeOutcome::Record { values, frames, .. } => {
                let frames = frames.iter().map(|f| crate::hex_input::to_hex(f)).collect();
                records.push(FreezeRecord::new(
                    &origin,
                    FreezeKind::LoadProfile,
                    stamp,
                    false,
                    values,
                    frames,
                ));
            }
            // The newest not written yet: one older instead.
            FreezeOutcome::NotYetFrozen if k == 1 => wanted += 1,
            FreezeOutcome::NotYetFrozen => problems.push(format!("{stamp}: not recorded yet")),
            FreezeOutcome::Lost(reason) => problems.push(format!("{stamp}: lost: {reason}")),
            FreezeOutcome::Failed(reason) => problems.push(format!("{stamp}: {reason}")),
        }
    }
    Ok((records, problems))
}

/// The meter's clock as it reported it, whatever the validation thought of it (a clock
/// found off is exactly the clock that stamps the meter's records).
fn meter_now(batch: &ReadingBatch) -> Option<LocalMinute> {
    let text = |q: &str| {
        batch.values.iter().find_map(|v| match &v.value {
            Some(ValueData::Text(t)) if &*v.quantity == q => Some(t.clone()),
            _ => None,
        })
    };
    let date = text("meter.date")?;
    let time = text("meter.time")?;
    let date = date.split_whitespace().next()?;
    let (y, rest) = date.split_once('-')?;
    let (m, d) = rest.split_once('-')?;
    let mut hm = time.split(':');
    let (h, min) = (hm.next()?, hm.next()?);
    Some(LocalMinute::from_civil(
        y.parse().ok()?,
        m.parse().ok()?,
        d.parse().ok()?,
        h.parse().ok()?,
        min.parse().ok()?,
    ))
}

/// The clock read: the meter's date and time.
fn clock_plan() -> Result<Profile, String> {
    let points = ["meter.date", "meter.time"]
        .into_iter()
        .filter_map(|q| di_for_quantity(Version::V2007, q))
        .map(|di| Point {
            quantity: None,
            ..Point::dlt645("", di)
        })
        .collect();
    Profile::new(
        PLAN,
        "the meter's clock, for its load records",
        "command line",
        ProfileProtocol::Dlt645_2007,
        points,
    )
    .checked(Path::new("<command line>"))
    .map_err(|e| e.to_string())
}
