//! Is the spool large enough for one reading? Checked at start, from the configured meters and
//! their profiles: a reading larger than `spool.max_bytes` could never be stored (it would be
//! counted as dropped every poll), so such a configuration is refused up front.
//!
//! The bound is an upper estimate of one batch's `meterd.reading.v1` JSON, from what the
//! driver will ask for (its quantities and transactions) and the largest each part can be:
//! [`PER_VALUE`] bytes per value (keys, a 64-character quantity, unit, OBIS code, source, a
//! 40-digit value, a 120-character reason) and, with evidence frames on, [`PER_FRAME`] per
//! transaction, twice (a DL/T 645 reply may come with a follow-up frame). The largest frame is
//! a Modbus RTU ADU of 256 bytes (DL/T 645: 4 preamble + 12 header + 200 data + 2 = 218), 3
//! characters per byte in hex with spaces. The built-in profiles come to 10-40 KB, below the
//! 64 KiB floor the configuration already enforces; a large site profile may not.

use crate::config::{Config, ProfileSet};
use crate::meter::MeterDriver;
use crate::spool::SpoolError;

/// Envelope: the fixed keys, gateway (64), meter id, protocol, `read_at`, `seq` and `id`.
pub const ENVELOPE: u64 = 512;
/// One value at its largest (see the module doc).
pub const PER_VALUE: u64 = 400;
/// One frame at its largest: 256 bytes as `"xx xx …"`, with quotes and comma.
pub const PER_FRAME: u64 = 3 * 256 + 3;

/// The largest reading (estimated JSON bytes) any configured meter can produce, and its meter.
/// Meters whose driver cannot be built are skipped (the bus reports them).
pub fn largest_reading(config: &Config, profiles: &ProfileSet) -> Option<(u64, String)> {
    let mut largest: Option<(u64, String)> = None;
    for bus in &config.buses {
        let bus = bus.get_ref();
        for meter in &bus.meters {
            let meter = meter.get_ref();
            let Ok(profile) = profiles.for_meter(&meter.profile, meter.protocol) else {
                continue;
            };
            let Ok(driver) = MeterDriver::new(meter, profile, &bus.name) else {
                continue;
            };
            let frames = if config.evidence_frames {
                2 * driver.transactions().len().max(1) as u64 * PER_FRAME
            } else {
                0
            };
            let bytes = ENVELOPE
                + driver.id().len() as u64
                + driver.quantities().len() as u64 * PER_VALUE
                + frames;
            if largest.as_ref().is_none_or(|(b, _)| bytes > *b) {
                largest = Some((bytes, driver.id().to_owned()));
            }
        }
    }
    largest
}

/// Refuses a `spool.max_bytes` that cannot hold the largest reading a configured meter can
/// produce ([`SpoolError::TooSmall`]).
pub fn check_spool_room(config: &Config, profiles: &ProfileSet) -> Result<(), SpoolError> {
    match largest_reading(config, profiles) {
        Some((needed, meter)) if needed > config.spool.max_bytes => Err(SpoolError::TooSmall {
            max_bytes: config.spool.max_bytes,
            needed,
            meter,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;
    use std::path::Path;

    fn config(profile: &str, max_bytes: &str) -> String {
        format!(
            r#"
gateway = "gw-01"
data_dir = "/tmp/x"
[spool]
max_bytes = "{max_bytes}"
[[bus]]
name = "rs485-1"
transport = "serial"
port = "/dev/ttyS1"
baud = 9600
[[bus.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "{profile}"
[[bus.meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-three-phase"
"#
        )
    }

    #[test]
    fn the_built_in_profiles_fit_the_smallest_spool() {
        let (c, p) = Config::from_text(Path::new("t.toml"), &config("eastron-sdm630", "64KiB"))
            .expect("config");
        let (bytes, _) = largest_reading(&c, &p).expect("meters");
        eprintln!("largest built-in reading: {bytes} bytes");
        assert!(bytes > 5_000 && bytes <= 64 * 1024, "{bytes}");
        check_spool_room(&c, &p).expect("fits");
    }

    #[test]
    fn a_spool_too_small_for_one_reading_is_refused_at_start() {
        let points: String = (0..200)
            .map(|i| {
                format!(
                    "[[point]]\nquantity = \"voltage.l{i}\"\nfunction = \"input\"\n\
                     register = {}\ntype = \"f32\"\nunit = \"V\"\n",
                    i * 2
                )
            })
            .collect();
        let text = format!(
            "name = \"big\"\ndescription = \"d\"\nsource = \"s\"\nprotocol = \"modbus\"\n{points}"
        );
        let big = Profile::parse(Path::new("big.toml"), &text).expect("profile");
        let (c, p) =
            Config::from_text(Path::new("t.toml"), &config("generic-modbus", "64KiB")).unwrap();
        let mut c = c;
        c.buses[0].get_mut().meters[0].get_mut().profile = "big".into();
        let p = p.with(big);
        match check_spool_room(&c, &p) {
            Err(SpoolError::TooSmall {
                needed, ref meter, ..
            }) => {
                assert!(needed > 64 * 1024, "{needed}");
                assert_eq!(meter, "rs485-1-unit3");
            }
            other => panic!("{other:?}"),
        }
        c.spool.max_bytes = 1 << 20;
        check_spool_room(&c, &p).expect("fits in 1 MiB");
    }
}
