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

/// How many meters' statuses are copied out of a bus's health at a time.
const CHUNK: usize = 32;

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
            // uplink is handed the statuses after the lock is released, [`CHUNK`] at a time:
            // the minute's refresh of every meter, copied at once, held a second copy of
            // every status beside the uplink's (~0.8 MB with 1,000 meters, the daemon's
            // high-water mark).
            let mut from = 0;
            loop {
                let mut due = Vec::with_capacity(CHUNK);
                let snapshot = lock(bus);
                last.resize(snapshot.meters.len(), None);
                let mut next = snapshot.meters.len();
                for (i, (m, prev)) in snapshot
                    .meters
                    .iter()
                    .zip(last.iter_mut())
                    .enumerate()
                    .skip(from)
                {
                    if due.len() == CHUNK {
                        next = i;
                        break;
                    }
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
                if next >= last.len() {
                    break;
                }
                from = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttConfig;
    use crate::health::MeterHealth;
    use crate::ingest::MemoryOutbox;
    use crate::uplink::Uplink;

    /// Every meter of a bus larger than a chunk is handed over: on its first state, on a
    /// change, and in the minute's refresh.
    #[tokio::test(start_paused = true)]
    async fn every_meter_is_forwarded_chunk_by_chunk() {
        let meters: Vec<MeterHealth> = (0..CHUNK * 3 + 5)
            .map(|i| MeterHealth::new(&format!("m{i:03}"), "modbus-tcp"))
            .collect();
        let n = meters.len();
        let bus = Arc::new(Mutex::new(BusHealth::new("b", meters)));
        let outbox = Arc::new(Mutex::new(MemoryOutbox::new()));
        let cfg = MqttConfig {
            url: "mqtt://127.0.0.1:1".into(),
            ..MqttConfig::default()
        };
        let (_uplink, handle) = Uplink::new("gw", cfg, outbox).unwrap();
        let task = tokio::spawn(forward_health(vec![bus.clone()], handle.clone()));
        let handed = |h: &UplinkHandle| {
            let m = h.shared.meters();
            m.latest
                .values()
                .map(|(health, at, _)| (health.id.clone(), health.state, *at))
                .collect::<Vec<_>>()
        };

        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = handed(&handle);
        assert_eq!(first.len(), n, "every meter's first state");

        // A change of one meter in the last chunk is forwarded within 2 s, alone.
        lock(&bus).meters[n - 1].state = MeterState::Degraded;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let changed = handed(&handle);
        let moved: Vec<_> = changed.iter().filter(|r| !first.contains(r)).collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].1, MeterState::Degraded);

        // The minute's refresh hands every meter over again.
        tokio::time::sleep(Duration::from_secs(58)).await;
        let refreshed = handed(&handle);
        assert_eq!(refreshed.len(), n);
        assert!(
            refreshed.iter().all(|r| !changed.contains(r)),
            "every status is newer after the minute"
        );
        task.abort();
    }
}
