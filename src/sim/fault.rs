//! Fault injection: which replies of a simulated meter go wrong, and how.
//!
//! This module owns the decision (per reply: which faults fire, from a deterministic "every
//! Nth" counter or a seeded random draw) and the byte surgery on a reply (flip a byte, break
//! the checksum, prepend noise). It never chooses what a meter answers and never touches a
//! socket. The generator is splitmix64, written by hand: one `u64` of state per meter is all
//! a reproducible fault sequence needs, and it keeps the simulator's values and faults on
//! one well-known mixer (see `model.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::mix;
use crate::clock::{UnixMillis, parse_rfc3339};

/// When one fault fires: `{ probability = 0.1 }` or `{ every = 5 }` (the 5th, 10th, … reply),
/// with the fault's own parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Chance per reply, 0.0..=1.0 (seeded, reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Fire on every Nth reply of this meter (N ≥ 1; 1 = always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// `late`: how much later than normal the reply leaves (default 2 s). `babble`: how long
    /// the noise lasts (default: until the next request arrives).
    #[serde(
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// `noise`: how many noise bytes precede the reply (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u8>,
    /// `abnormal`: the DL/T 645 ERR byte (default 0x01, "other error") or Modbus exception
    /// code (default 0x04, "server device failure").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// The faults of one meter (`[port.meter.faults]`); each key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// Seed of the fault generator (defaults to the meter's seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stay silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_reply: Option<FaultRule>,
    /// Reply `delay` later than normal (e.g. after the gateway's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<FaultRule>,
    /// Flip one byte of the reply's data (the checksum/CRC then fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<FaultRule>,
    /// Send a wrong checksum (DL/T 645 CS) or CRC (Modbus RTU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_checksum: Option<FaultRule>,
    /// Send `bytes` noise bytes before the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<FaultRule>,
    /// Send the request back first, as a half-duplex adapter without echo suppression does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<FaultRule>,
    /// Answer with an abnormal reply (DL/T 645 ERR `code`, Modbus exception `code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abnormal: Option<FaultRule>,
    /// Instead of the reply, stream random bytes without pause (a babbling transceiver) until
    /// the next request arrives, or for `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub babble: Option<FaultRule>,
    /// Windows of simulated time in which the meter is dead: it answers nothing and hears no
    /// broadcast (its clock and its frozen history go on, as a meter cut off from the bus
    /// does): `dead = [{ from = "2026-12-02T20:00:00Z", to = "2026-12-03T02:00:00Z" }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead: Vec<DeadWindow>,
}

/// One window in which a meter is dead (`faults.dead`), simulated UTC, `from` included and
/// `to` excluded.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadWindow {
    /// Start, RFC 3339 UTC.
    pub from: String,
    /// End, RFC 3339 UTC.
    pub to: String,
}

impl DeadWindow {
    /// (from, to) in Unix milliseconds, when both parse and `from < to`.
    pub fn millis(&self) -> Option<(UnixMillis, UnixMillis)> {
        let from = parse_rfc3339(&self.from)?;
        let to = parse_rfc3339(&self.to)?;
        (from < to).then_some((from, to))
    }
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// No reply.
    NoReply,
    /// Reply after an extra delay.
    Late,
    /// One data byte flipped.
    Corrupt,
    /// Wrong checksum/CRC.
    BadChecksum,
    /// Noise bytes first.
    Noise,
    /// The request echoed first.
    Echo,
    /// Abnormal reply.
    Abnormal,
    /// Endless noise instead of the reply.
    Babble,
}

impl FaultKind {
    /// Every kind, in the order they are drawn and applied.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::NoReply,
        FaultKind::Late,
        FaultKind::Corrupt,
        FaultKind::BadChecksum,
        FaultKind::Noise,
        FaultKind::Echo,
        FaultKind::Abnormal,
        FaultKind::Babble,
    ];

    /// The configuration key.
    pub const fn key(self) -> &'static str {
        match self {
            FaultKind::NoReply => "no_reply",
            FaultKind::Late => "late",
            FaultKind::Corrupt => "corrupt",
            FaultKind::BadChecksum => "bad_checksum",
            FaultKind::Noise => "noise",
            FaultKind::Echo => "echo",
            FaultKind::Abnormal => "abnormal",
            FaultKind::Babble => "babble",
        }
    }

    /// True for faults that change bytes on a byte stream (not possible on Modbus TCP,
    /// whose framing belongs to tokio-modbus).
    pub const fn is_byte_level(self) -> bool {
        matches!(
            self,
            FaultKind::Corrupt
                | FaultKind::BadChecksum
                | FaultKind::Noise
                | FaultKind::Echo
                | FaultKind::Babble
        )
    }
}

impl FaultsConfig {
    /// The rule configured for `kind`.
    pub fn rule(&self, kind: FaultKind) -> Option<&FaultRule> {
        match kind {
            FaultKind::NoReply => self.no_reply.as_ref(),
            FaultKind::Late => self.late.as_ref(),
            FaultKind::Corrupt => self.corrupt.as_ref(),
            FaultKind::BadChecksum => self.bad_checksum.as_ref(),
            FaultKind::Noise => self.noise.as_ref(),
            FaultKind::Echo => self.echo.as_ref(),
            FaultKind::Abnormal => self.abnormal.as_ref(),
            FaultKind::Babble => self.babble.as_ref(),
        }
    }

    /// The dead windows, in Unix milliseconds (checked by [`FaultsConfig::check`]).
    pub fn dead_windows(&self) -> Vec<(UnixMillis, UnixMillis)> {
        self.dead.iter().filter_map(DeadWindow::millis).collect()
    }

    /// Checks each rule; `Err((key, message))` for the first bad one.
    pub fn check(&self) -> Result<(), (String, String)> {
        for w in &self.dead {
            if w.millis().is_none() {
                return Err((
                    "faults.dead".into(),
                    format!(
                        "{:?} to {:?}: give RFC 3339 UTC times, from before to",
                        w.from, w.to
                    ),
                ));
            }
        }
        for kind in FaultKind::ALL {
            let Some(rule) = self.rule(kind) else {
                continue;
            };
            let key = format!("faults.{}", kind.key());
            match (rule.probability, rule.every) {
                (Some(p), None) if (0.0..=1.0).contains(&p) => {}
                (Some(p), None) => {
                    return Err((key, format!("probability must be 0.0 to 1.0, found {p}")));
                }
                (None, Some(n)) if n >= 1 => {}
                (None, Some(_)) => return Err((key, "every must be at least 1".into())),
                _ => {
                    return Err((
                        key,
                        "give exactly one of `probability = 0.1` or `every = 5`".into(),
                    ));
                }
            }
            if rule.delay.is_some() && !matches!(kind, FaultKind::Late | FaultKind::Babble) {
                return Err((key, "`delay` applies to `late` and `babble` only".into()));
            }
            if rule.bytes.is_some() && kind != FaultKind::Noise {
                return Err((key, "`bytes` applies to `noise` only".into()));
            }
            if rule.code.is_some() && kind != FaultKind::Abnormal {
                return Err((key, "`code` applies to `abnormal` only".into()));
            }
        }
        Ok(())
    }
}

/// splitmix64: a tiny, reproducible generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// A random noise byte; on a DL/T 645 line never `68` or `FE` (they would start a frame or a
/// preamble, and the noise is meant to be skipped byte by byte).
pub fn noise_byte(rng: &mut SplitMix64, dlt645: bool) -> u8 {
    loop {
        let b = (rng.next_u64() & 0xFF) as u8;
        if !dlt645 || (b != 0x68 && b != 0xFE) {
            return b;
        }
    }
}

/// What fires on one reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FiredFaults {
    /// The kinds that fired, in [`FaultKind::ALL`] order.
    pub kinds: Vec<FaultKind>,
    /// Extra delay (`late`).
    pub delay: Duration,
    /// Noise bytes to send first.
    pub noise: Vec<u8>,
    /// Abnormal code, when `abnormal` fired.
    pub abnormal_code: Option<u8>,
    /// How long the noise lasts when `babble` fired (`None`: until the next request).
    pub babble_for: Option<Duration>,
}

impl FiredFaults {
    /// True when `kind` fired.
    pub fn has(&self, kind: FaultKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// The running fault state of one meter: the reply counter and the generator.
#[derive(Debug, Clone)]
pub struct FaultState {
    config: FaultsConfig,
    replies: u64,
    rng: SplitMix64,
}

impl FaultState {
    /// A fresh state; `meter_seed` seeds the generator unless the config gives its own.
    pub fn new(config: FaultsConfig, meter_seed: u64) -> Self {
        let seed = config.seed.unwrap_or(meter_seed);
        Self {
            config,
            replies: 0,
            rng: SplitMix64::new(mix(seed ^ 0xFA17)),
        }
    }

    /// Decides the faults of the next reply. Every probability rule draws once per reply,
    /// fired or not, so a sequence depends only on the seed and the reply count.
    pub fn next(&mut self, dlt645: bool) -> FiredFaults {
        self.replies += 1;
        let n = self.replies;
        let mut fired = FiredFaults::default();
        for kind in FaultKind::ALL {
            let Some(rule) = self.config.rule(kind).cloned() else {
                continue;
            };
            let fire = match (rule.every, rule.probability) {
                (Some(every), _) => every > 0 && n.is_multiple_of(every),
                (None, Some(p)) => self.rng.next_f64() < p,
                (None, None) => false,
            };
            if !fire {
                continue;
            }
            fired.kinds.push(kind);
            match kind {
                FaultKind::Late => fired.delay = rule.delay.unwrap_or(Duration::from_secs(2)),
                FaultKind::Babble => fired.babble_for = rule.delay,
                FaultKind::Noise => {
                    let count = rule.bytes.unwrap_or(3);
                    fired.noise = (0..count).map(|_| self.noise_byte(dlt645)).collect();
                }
                FaultKind::Abnormal => {
                    fired.abnormal_code =
                        Some(rule.code.unwrap_or(if dlt645 { 0x01 } else { 0x04 }));
                }
                _ => {}
            }
        }
        fired
    }

    /// A noise byte that cannot start a DL/T 645 frame or preamble (`68`, `FE`), so the
    /// valid frame after it is still the first frame on the wire.
    fn noise_byte(&mut self, dlt645: bool) -> u8 {
        noise_byte(&mut self.rng, dlt645)
    }

    /// A position in `range` for a byte to flip.
    pub fn pick(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + self.rng.below(range.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_and_probability_are_reproducible() {
        let config = FaultsConfig {
            no_reply: Some(FaultRule {
                every: Some(3),
                ..FaultRule::default()
            }),
            corrupt: Some(FaultRule {
                probability: Some(0.5),
                ..FaultRule::default()
            }),
            ..FaultsConfig::default()
        };
        let run = || {
            let mut s = FaultState::new(config.clone(), 9);
            (0..60).map(|_| s.next(true)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        for (i, f) in a.iter().enumerate() {
            assert_eq!(f.has(FaultKind::NoReply), (i + 1) % 3 == 0);
        }
        let corrupted = a.iter().filter(|f| f.has(FaultKind::Corrupt)).count();
        assert!((15..=45).contains(&corrupted), "{corrupted}");
    }

    #[test]
    fn rules_are_checked() {
        let bad = FaultsConfig {
            late: Some(FaultRule::default()),
            ..FaultsConfig::default()
        };
        assert!(bad.check().is_err());
        let bad = FaultsConfig {
            echo: Some(FaultRule {
                every: Some(1),
                delay: Some(Duration::from_secs(1)),
                ..FaultRule::default()
            }),
            ..FaultsConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "faults.echo");
        let backwards = FaultsConfig {
            dead: vec![DeadWindow {
                from: "2026-12-03T02:00:00Z".into(),
                to: "2026-12-02T20:00:00Z".into(),
            }],
            ..FaultsConfig::default()
        };
        assert_eq!(backwards.check().unwrap_err().0, "faults.dead");
    }
}
