//! Forwards meter health to the uplink's retained meter status topics.
//!
//! This module owns when a meter's status is handed to the uplink: when its state changes
//! (looked at every 2 s) and every minute anyway, so the counters stay fresh. It reads the
//! buses' [`BusHealth`] and never changes it; it publishes nothing itself (the uplink session
//! does, when the window allows).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::UplinkHandle;
use crate::health::{BusHealth, MeterState};
use crate::sync::lock;

/// Runs until aborted: hands `uplink` each meter's health of `buses` when its state changed,
/// and all of them every minute. A reload aborts it and starts a new one with the new buses.
pub async fn forward_health(buses: Vec<Arc<Mutex<BusHealth>>>, uplink: UplinkHandle) {
    // Each meter's last forwarded state, by bus and position: a bus's meters keep their order
    // for the life of this task (a reload starts a new one). Not a map by meter id: that was
    // ~0.1 MB with 1,000 meters.
    let mut last: Vec<Vec<Option<MeterState>>> = vec![Vec::new(); buses.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        rounds += 1;
        let refresh_all = rounds.is_multiple_of(30);
        for (bus, last) in buses.iter().zip(last.iter_mut()) {
            // Only what is to be sent is taken out under the bus's lock: a copy of every
            // meter's status every 2 s was most of this task's cost with 1,000 meters. The
            // uplink is handed the statuses after the lock is released.
            let mut due = Vec::new();
            let snapshot = lock(bus);
            last.resize(snapshot.meters.len(), None);
            for (m, prev) in snapshot.meters.iter().zip(last.iter_mut()) {
                let changed = prev.replace(m.state) != Some(m.state);
                if changed || refresh_all {
                    due.push(m.clone());
                }
            }
            drop(snapshot);
            let at = crate::clock::now();
            for health in due {
                uplink.set_meter_status(health, at);
            }
        }
    }
}
