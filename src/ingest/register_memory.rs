//! Each meter's last good value of each cumulative register, the memory the "energy register
//! went backwards" check compares with.
//!
//! The durable copy is the spool's (`last_good`, written in the same transaction as the batch);
//! [`RegisterMemory`] reads a register from its [`RegisterStore`] once and then keeps it up to
//! date itself: one SQL query per energy value per reading cost more than storing the reading.
//! Which quantities count is [`crate::reading::is_cumulative`]: the one rule, shared with the
//! spool. Never does I/O of its own.

use std::collections::HashMap;

use meter_protocols::Decimal;

use crate::reading::{Label, Quality, ReadingBatch, ValueData, is_cumulative};
use crate::spool::{Spool, SpoolError};

/// Where a meter's last good register values are kept durably.
pub trait RegisterStore {
    /// The store's error.
    type Error;
    /// The last good value of `quantity` of `meter`, if the store has one.
    fn last_good(&self, meter: &str, quantity: &str) -> Result<Option<Decimal>, Self::Error>;
}

impl RegisterStore for Spool {
    type Error = SpoolError;

    fn last_good(&self, meter: &str, quantity: &str) -> Result<Option<Decimal>, SpoolError> {
        // A stored value that does not parse (hand-edited file) counts as none: the next good
        // value replaces it.
        Ok(Spool::last_good(self, meter, quantity)?.and_then(|t| t.parse().ok()))
    }
}

/// One meter's registers, `None` where the store has no value. A meter has a few such
/// registers, so a short list: a hash map of four entries took ~350 bytes, ~0.2 MB with 1,000
/// meters.
#[derive(Debug, Default)]
pub struct MeterRegisters(Vec<(Label, Option<Decimal>)>);

impl MeterRegisters {
    /// The remembered value: `Some(None)` when the store has none, `None` when not loaded yet.
    fn get(&self, quantity: &str) -> Option<Option<Decimal>> {
        self.0
            .iter()
            .find(|(q, _)| &**q == quantity)
            .map(|(_, v)| *v)
    }

    /// The last good value of `quantity`, if known.
    pub fn last_good(&self, quantity: &str) -> Option<Decimal> {
        self.get(quantity).flatten()
    }

    fn insert(&mut self, quantity: &Label, value: Option<Decimal>) {
        match self.0.iter_mut().find(|(q, _)| q == quantity) {
            Some(slot) => slot.1 = value,
            None => {
                self.0.push((quantity.clone(), value));
                self.0.shrink_to_fit();
            }
        }
    }
}

/// Every meter's [`MeterRegisters`].
#[derive(Debug, Default)]
pub struct RegisterMemory {
    meters: HashMap<String, MeterRegisters>,
}

impl RegisterMemory {
    /// The registers of `batch`'s meter, with every cumulative register of the batch loaded
    /// from `store` if this is its first sight.
    pub fn load<S: RegisterStore>(
        &mut self,
        store: &S,
        batch: &ReadingBatch,
    ) -> Result<&mut MeterRegisters, S::Error> {
        let known = self.meters.entry(batch.meter.clone()).or_default();
        for v in &batch.values {
            if is_cumulative(&v.quantity) && known.get(&v.quantity).is_none() {
                let prev = store.last_good(&batch.meter, &v.quantity)?;
                known.insert(&v.quantity, prev);
            }
        }
        Ok(known)
    }
}

impl MeterRegisters {
    /// Takes the good cumulative values of a validated batch as the new last good values, by
    /// the rule the spool keeps them (`Spool::append`: a good number).
    pub fn remember(&mut self, batch: &ReadingBatch) {
        for v in &batch.values {
            if let (true, Quality::Good, Some(ValueData::Number(n))) =
                (is_cumulative(&v.quantity), v.quality, &v.value)
                && let Ok(d) = n.as_str().parse::<Decimal>()
            {
                self.insert(&v.quantity, Some(d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::SystemTime;

    use super::*;
    use crate::reading::{ExactNumber, ReadingValue};

    /// A store that counts its reads.
    struct Counting {
        reads: Cell<u32>,
    }

    impl RegisterStore for Counting {
        type Error = ();
        fn last_good(&self, _: &str, q: &str) -> Result<Option<Decimal>, ()> {
            self.reads.set(self.reads.get() + 1);
            Ok((q == "energy.active.import.total").then(|| "7.00".parse().unwrap()))
        }
    }

    fn batch(values: &[(&str, &str, Quality)]) -> ReadingBatch {
        let mut b = ReadingBatch::new("gw", "m", "dlt645-2007", 1, SystemTime::UNIX_EPOCH);
        for (q, x, quality) in values {
            b.values.push(ReadingValue {
                quantity: (*q).into(),
                value: Some(ValueData::Number(
                    serde_json::from_str::<ExactNumber>(x).unwrap(),
                )),
                unit: "kWh".into(),
                obis: None,
                source: "test".into(),
                quality: *quality,
                reason: None,
                meter_time: None,
            });
        }
        b
    }

    #[test]
    fn each_cumulative_register_is_read_from_the_store_once_and_then_kept() {
        let store = Counting {
            reads: Cell::new(0),
        };
        let mut memory = RegisterMemory::default();
        let b = batch(&[
            ("energy.active.import.total", "8.00", Quality::Good),
            ("energy.active.combined.total", "1.00", Quality::Good),
            ("voltage.l1", "230.0", Quality::Good),
        ]);
        let known = memory.load(&store, &b).unwrap();
        assert_eq!(
            known.last_good("energy.active.import.total"),
            "7.00".parse().ok()
        );
        assert_eq!(
            store.reads.get(),
            1,
            "combined and voltage are not cumulative"
        );
        known.remember(&b);
        let known = memory.load(&store, &b).unwrap();
        assert_eq!(
            known.last_good("energy.active.import.total"),
            "8.00".parse().ok()
        );
        assert_eq!(store.reads.get(), 1, "not read again");
    }

    #[test]
    fn suspect_values_are_not_remembered() {
        let store = Counting {
            reads: Cell::new(0),
        };
        let mut memory = RegisterMemory::default();
        let b = batch(&[("energy.active.import.total", "6.00", Quality::Suspect)]);
        let known = memory.load(&store, &b).unwrap();
        known.remember(&b);
        assert_eq!(
            known.last_good("energy.active.import.total"),
            "7.00".parse().ok()
        );
    }
}
