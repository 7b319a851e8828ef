//! `meterd test`'s run of one meter: its poll through the daemon's own exchange and driver,
//! then, only when the meter answered nothing at all (or a DL/T 645 meter only with error
//! replies), a few short probes (one attempt each).
//!
//! This module owns the I/O of commissioning and what it gathers ([`MeterCheck`]): the batch,
//! whether our requests came back to us (an echoing adapter, seen on the frame tap), the same
//! replies decoded with the words swapped (Modbus), and the first probe that explains a
//! silence (or a DL/T 645 meter's error replies to every read). What all that means is [`crate::meter::commission`]'s to say.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Bus;
use crate::bus::trace::{Direction, FrameEvent};
use crate::config::EffectiveTiming;
use crate::meter::MeterDriver;
use crate::meter::commission::{self, Evidence};
use crate::reading::{Quality, ReadingBatch};

/// What the commissioning run of one meter gathered.
#[derive(Debug, Clone)]
pub struct MeterCheck {
    /// The meter's reading, every quantity of its profile (not validated yet).
    pub batch: ReadingBatch,
    /// What was seen, for [`commission::verdict`].
    pub evidence: Evidence,
    /// How long the poll and the probes took.
    pub elapsed: Duration,
}

impl Bus {
    /// Reads meter `m` once as the daemon would and gathers what commissioning needs; when
    /// the meter answered nothing, sends the probes of [`commission::probes_after_silence`]
    /// (one attempt each, the meter's response timeout) until one explains the silence, and
    /// when it answered every read with an error reply, [`commission::probes_after_errors`].
    /// `ranges` are the physical ranges of `[validation]` (for the word-order check). Needs a
    /// frame channel in the bus's options to see echoes; without one, echoes go unnoticed.
    pub async fn check_meter(
        &mut self,
        m: usize,
        ranges: &HashMap<String, [f64; 2]>,
    ) -> Option<MeterCheck> {
        let started = Instant::now();
        let slot = self.meters.get(m)?;
        let driver = slot.driver.clone();
        let timing = slot.timing;
        let mut frames = self
            .options
            .frames
            .as_ref()
            .map(broadcast::Sender::subscribe);
        let swapped = driver.with_words_swapped();
        let mut poll = driver.poll();
        let mut shadow = swapped.as_ref().map(|d| d.poll());
        let link_failed = self.drive(m, &mut poll, shadow.as_mut()).await;
        let result = match &link_failed {
            Some(reason) => poll.abandon(reason),
            None => poll.finish(),
        };
        let mut evidence = Evidence {
            answered: result.answered > 0,
            link_failed,
            ..Evidence::default()
        };
        if !timing.echo {
            evidence.echo_seen = frames
                .as_mut()
                .is_some_and(|rx| requests_came_back(rx, &self.name, driver.id()));
        }
        if let Some(shadow) = shadow {
            let shadow = shadow.finish();
            evidence.word_order =
                commission::word_order_finding(&driver, &result.values, &shadow.values, ranges);
        }
        if evidence.link_failed.is_none() && !evidence.echo_seen {
            let all_bad = result.values.iter().all(|v| v.quality == Quality::Bad);
            let probes = if !evidence.answered {
                let others: Vec<Arc<MeterDriver>> = self
                    .meters
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != m)
                    .map(|(_, s)| s.driver.clone())
                    .collect();
                let others: Vec<&MeterDriver> = others.iter().map(Arc::as_ref).collect();
                commission::probes_after_silence(&driver, &others)
            } else if all_bad {
                commission::probes_after_errors(&driver)
            } else {
                Vec::new()
            };
            evidence.probe = self.probe(m, &driver, timing, &probes).await;
        }
        let mut batch = self.new_batch(&driver, &result, crate::clock::now());
        batch.values = result.values;
        batch.tariff_blocks = result.tariff_blocks;
        Some(MeterCheck {
            batch,
            evidence,
            elapsed: started.elapsed(),
        })
    }

    /// Sends `probes` in order (one attempt each, the meter's response timeout); the first
    /// finding, if any probe's reply explains what the poll saw.
    async fn probe(
        &mut self,
        m: usize,
        driver: &MeterDriver,
        timing: EffectiveTiming,
        probes: &[commission::Probe],
    ) -> Option<commission::Finding> {
        let once = EffectiveTiming {
            retries: 0,
            ..timing
        };
        for probe in probes {
            match self.transact_with(m, &probe.step, once).await {
                Ok((reply, _)) => {
                    if let Some(finding) = probe.judge(&reply, driver) {
                        return Some(finding);
                    }
                }
                Err(f) if f.link => return None,
                Err(_) => {}
            }
        }
        None
    }
}

/// Whether bytes received after one of `meter`'s requests on `bus` began with that very
/// request (drains what `rx` holds; other buses' frames share the channel).
fn requests_came_back(rx: &mut broadcast::Receiver<FrameEvent>, bus: &str, meter: &str) -> bool {
    let mut request: Option<Vec<u8>> = None;
    let mut after: Vec<u8> = Vec::new();
    let mut seen = false;
    let mut check = |request: &Option<Vec<u8>>, after: &[u8]| {
        if let Some(r) = request {
            seen |= commission::looks_like_echo(r, after);
        }
    };
    loop {
        let event = match rx.try_recv() {
            Ok(e) => e,
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        if &*event.bus != bus || event.meter.as_deref() != Some(meter) {
            continue;
        }
        match event.direction {
            Direction::Tx => {
                check(&request, &after);
                request = Some(event.bytes);
                after.clear();
            }
            Direction::RxUnusable => after.extend_from_slice(&event.bytes),
            Direction::Rx => {
                after.extend_from_slice(&event.bytes);
                check(&request, &after);
                request = None;
                after.clear();
            }
            Direction::Note => {}
        }
    }
    check(&request, &after);
    seen
}
