//! One meter's trend: the last [`TREND_LEN`] values of one quantity, for the status page's
//! sparkline (a technician sees when a meter started failing, or a value started drifting).
//!
//! This module owns a fixed ring per meter: one `f32` a poll (`NaN` when the poll brought no
//! good value of the quantity, drawn as a gap), the time of the newest, and the quantity's unit.
//! It never grows: the ring is allocated once, at the meter's first batch that has the quantity.
//! `f32` keeps about seven significant digits: plenty for a 120-point line a few pixels high
//! (the exact values are the spool's and the last batch's).
//!
//! Bytes per meter: the ring (120 × 4 = 480) + its newest time (4), position and length (2),
//! the unit label (16, shared with the profile) = 504 bytes on the heap (~512 with the
//! allocator's header), and the 8-byte pointer in the book; ~0.5 MB with 1,000 meters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reading::{Label, Quality, ReadingBatch, ValueData};

/// Values kept per meter.
pub const TREND_LEN: usize = 120;

/// The quantity drawn when `[service] trend_quantity` is not set: in every built-in profile,
/// and it moves (a cumulative energy register draws a ramp).
pub const DEFAULT_TREND_QUANTITY: &str = "power.active.total";

/// The ring of one meter.
#[derive(Debug, Clone)]
struct Ring {
    values: [f32; TREND_LEN],
    /// Where the next value goes.
    next: u8,
    /// Values held (up to [`TREND_LEN`]).
    len: u8,
    /// Seconds since the epoch of the newest value.
    newest: u32,
    unit: Label,
}

/// One meter's trend of one quantity (empty until a batch has the quantity).
#[derive(Debug, Clone, Default)]
pub struct Trend {
    ring: Option<Box<Ring>>,
}

/// A trend as read: values oldest first (`None`: no good value in that poll).
#[derive(Debug, Clone, PartialEq)]
pub struct TrendView {
    /// The quantity's unit.
    pub unit: String,
    /// When the newest value was taken.
    pub newest: SystemTime,
    /// The values, oldest first.
    pub values: Vec<Option<f32>>,
}

/// The value of `quantity` in `batch` when it is there: `Some(NaN)` when it is there but not
/// a good number.
fn value_of<'b>(batch: &'b ReadingBatch, quantity: &str) -> Option<(f32, &'b Label)> {
    let v = batch.values.iter().find(|v| &*v.quantity == quantity)?;
    let number = match (&v.value, v.quality) {
        (Some(ValueData::Number(n)), Quality::Good | Quality::Suspect) => {
            n.as_str().parse::<f32>().ok().filter(|x| x.is_finite())
        }
        _ => None,
    };
    Some((number.unwrap_or(f32::NAN), &v.unit))
}

impl Trend {
    /// Adds the value of `quantity` in `batch`, taken at `now`; a batch without the quantity
    /// adds nothing.
    pub fn add(&mut self, batch: &ReadingBatch, quantity: &str, now: SystemTime) {
        let Some((value, unit)) = value_of(batch, quantity) else {
            return;
        };
        let ring = self.ring.get_or_insert_with(|| {
            Box::new(Ring {
                values: [f32::NAN; TREND_LEN],
                next: 0,
                len: 0,
                newest: 0,
                unit: unit.clone(),
            })
        });
        ring.values[usize::from(ring.next)] = value;
        ring.next = u8::try_from((usize::from(ring.next) + 1) % TREND_LEN).unwrap_or(0);
        ring.len = ring
            .len
            .saturating_add(1)
            .min(u8::try_from(TREND_LEN).unwrap_or(u8::MAX));
        ring.newest = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        if ring.unit != *unit {
            ring.unit = unit.clone();
        }
    }

    /// Forgets every value (the quantity drawn changed).
    pub fn clear(&mut self) {
        self.ring = None;
    }

    /// The values, oldest first; `None` before the first batch with the quantity.
    pub fn view(&self) -> Option<TrendView> {
        let ring = self.ring.as_deref()?;
        let len = usize::from(ring.len);
        let start = (usize::from(ring.next) + TREND_LEN - len) % TREND_LEN;
        let values = (0..len)
            .map(|i| {
                let v = ring.values[(start + i) % TREND_LEN];
                (!v.is_nan()).then_some(v)
            })
            .collect();
        Some(TrendView {
            unit: ring.unit.to_string(),
            newest: UNIX_EPOCH + Duration::from_secs(u64::from(ring.newest)),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{ExactNumber, ReadingValue};

    fn batch(power: Option<&str>) -> ReadingBatch {
        let mut b = ReadingBatch::new("gw", "m1", "modbus-rtu", 0, UNIX_EPOCH);
        b.values.push(ReadingValue {
            quantity: "power.active.total".into(),
            value: power.map(|p| {
                ValueData::Number(
                    ExactNumber::from_f64(p.parse().expect("a number")).expect("finite"),
                )
            }),
            unit: "kW".into(),
            obis: None,
            source: "modbus:fc04:0x0034:f32:abcd".into(),
            quality: if power.is_some() {
                Quality::Good
            } else {
                Quality::Bad
            },
            reason: None,
            meter_time: None,
        });
        b
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn keeps_the_last_values_with_gaps_for_failed_polls() {
        let mut t = Trend::default();
        assert_eq!(t.view(), None);
        t.add(&batch(Some("1.5")), "energy.active.import.total", at(1));
        assert_eq!(t.view(), None, "a batch without the quantity adds nothing");
        t.add(&batch(Some("1.5")), "power.active.total", at(1));
        t.add(&batch(None), "power.active.total", at(2));
        t.add(&batch(Some("2.25")), "power.active.total", at(3));
        let v = t.view().expect("a trend");
        assert_eq!(v.values, vec![Some(1.5), None, Some(2.25)]);
        assert_eq!((v.unit.as_str(), v.newest), ("kW", at(3)));
    }

    #[test]
    fn holds_at_most_trend_len_values_newest_last() {
        let mut t = Trend::default();
        for i in 0..1_000u64 {
            t.add(&batch(Some(&i.to_string())), "power.active.total", at(i));
        }
        let v = t.view().expect("a trend");
        assert_eq!(v.values.len(), TREND_LEN);
        assert_eq!(v.values.first(), Some(&Some(880.0)));
        assert_eq!(v.values.last(), Some(&Some(999.0)));
        assert_eq!(std::mem::size_of::<Ring>(), 504);
        assert_eq!(std::mem::size_of::<Trend>(), 8);
    }
}
