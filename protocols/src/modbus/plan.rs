//! Request planning: which reads serve a meter's configured points.
//!
//! This module owns coalescing: given the register ranges of a meter's points, it finds the
//! fewest reads that cover every point whole, within the device's per-request cap and the
//! configured gap fill (Telegraf's `max_insert`: a hole of unused registers between two points
//! may be read to merge their reads when it is at most `max_gap_fill` long). Among plans with
//! the fewest reads it picks the one reading the fewest registers. It never encodes frames,
//! never decodes values and never knows about timing; `meterd check-config` prints the plan
//! through [`PollPlan`]'s `Display`.

use std::fmt;

use super::rtu::{MAX_READ_BITS, MAX_READ_REGISTERS, ReadFunction, Request};

/// One configured point: the registers (or bits) it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PointRange {
    /// The read function that serves it.
    pub function: ReadFunction,
    /// First register or bit (PDU address).
    pub address: u16,
    /// Registers or bits (≥ 1).
    pub count: u16,
}

impl PointRange {
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// Limits for planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanOptions {
    /// Registers per FC03/FC04 read: 1..=125 (some meters accept only 30 or 40).
    pub max_registers_per_request: u16,
    /// Bits per FC01/FC02 read: 1..=2000.
    pub max_bits_per_request: u16,
    /// The longest hole of unused registers (bits, for FC01/02) that may be read to merge two
    /// reads. 0 merges only adjacent or overlapping points. Reading a hole can draw
    /// exception 02 on meters with sparse maps, so the default is 0.
    pub max_gap_fill: u16,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            max_registers_per_request: MAX_READ_REGISTERS,
            max_bits_per_request: MAX_READ_BITS,
            max_gap_fill: 0,
        }
    }
}

impl PlanOptions {
    fn cap(&self, function: ReadFunction) -> u16 {
        if function.is_bits() {
            self.max_bits_per_request
        } else {
            self.max_registers_per_request
        }
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A per-request cap outside what the standard allows.
    #[error("{what} per request must be in 1..={max}, found {found}")]
    BadCap {
        /// Which cap.
        what: &'static str,
        /// The standard's limit.
        max: u16,
        /// The configured value.
        found: u16,
    },
    /// A point with a zero count.
    #[error("point {index}: count is 0")]
    EmptyPoint {
        /// Index of the point.
        index: usize,
    },
    /// A point whose range runs past address 0xFFFF.
    #[error("point {index}: address {address:#06X} + count {count} runs past 0xFFFF")]
    AddressOverflow {
        /// Index of the point.
        index: usize,
        /// First address.
        address: u16,
        /// Count.
        count: u16,
    },
    /// A point larger than one read may carry (points are never split).
    #[error("point {index}: {count} exceeds the cap of {cap} per request; points are never split")]
    PointTooLarge {
        /// Index of the point.
        index: usize,
        /// Its count.
        count: u16,
        /// The cap.
        cap: u16,
    },
}

/// One planned read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    /// The function.
    pub function: ReadFunction,
    /// First register or bit.
    pub address: u16,
    /// Registers or bits read.
    pub count: u16,
    /// Indices (into the input) of the points this read serves, in address order.
    pub points: Vec<usize>,
}

impl PlannedRead {
    /// The request to send.
    pub fn request(&self) -> Request {
        Request::read(self.function, self.address, self.count)
    }
}

/// The reads that serve all points of one meter, in (function, address) order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PollPlan {
    /// The reads.
    pub requests: Vec<PlannedRead>,
}

impl fmt::Display for PollPlan {
    /// One read per line: `FC04 0x0000+38 → points 0, 1, 2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.requests {
            write!(
                f,
                "FC{:02} {:#06X}+{} → points ",
                r.function.code(),
                r.address,
                r.count
            )?;
            for (i, p) in r.points.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{p}")?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// Plans the reads for `points` under `options`.
///
/// Points are sorted by (function, address, count); each read serves a run of consecutive
/// points in that order, and a dynamic programme picks the runs giving the fewest reads, then
/// the fewest registers read. (A point left out of a run would start at or after a point
/// inside it and so lie inside a later read's span: runs lose nothing.) Duplicate and
/// overlapping points are served by one read whenever the cap allows.
pub fn plan(points: &[PointRange], options: &PlanOptions) -> Result<PollPlan, PlanError> {
    for (what, max, found) in [
        (
            "registers",
            MAX_READ_REGISTERS,
            options.max_registers_per_request,
        ),
        ("bits", MAX_READ_BITS, options.max_bits_per_request),
    ] {
        if found == 0 || found > max {
            return Err(PlanError::BadCap { what, max, found });
        }
    }
    for (index, p) in points.iter().enumerate() {
        if p.count == 0 {
            return Err(PlanError::EmptyPoint { index });
        }
        if p.end() > 0x1_0000 {
            return Err(PlanError::AddressOverflow {
                index,
                address: p.address,
                count: p.count,
            });
        }
        let cap = options.cap(p.function);
        if p.count > cap {
            return Err(PlanError::PointTooLarge {
                index,
                count: p.count,
                cap,
            });
        }
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| points.get(i).map(|p| (p.function, p.address, p.count, i)));
    let sorted: Vec<(usize, PointRange)> = order
        .iter()
        .filter_map(|&i| points.get(i).map(|p| (i, *p)))
        .collect();

    let mut requests = Vec::new();
    for group in sorted.chunk_by(|a, b| a.1.function == b.1.function) {
        plan_group(group, options, &mut requests);
    }
    Ok(PollPlan { requests })
}

/// Plans one function's points (sorted by address) into `out`.
fn plan_group(group: &[(usize, PointRange)], options: &PlanOptions, out: &mut Vec<PlannedRead>) {
    let Some(&(_, first)) = group.first() else {
        return;
    };
    let cap = u32::from(options.cap(first.function));
    let fill = u32::from(options.max_gap_fill);
    let n = group.len();
    // best[i] = (reads, registers, end of the first run) for points i.., best[n] = nothing.
    let mut best: Vec<(usize, u32, usize)> = vec![(0, 0, n); n + 1];
    for i in (0..n).rev() {
        let Some(&(_, start)) = group.get(i) else {
            continue;
        };
        let mut end = start.end();
        let mut choice: Option<(usize, u32, usize)> = None;
        for (j, &(_, p)) in group.iter().enumerate().skip(i) {
            let hole = u32::from(p.address).saturating_sub(end);
            let new_end = end.max(p.end());
            if hole > fill || new_end - u32::from(start.address) > cap {
                break;
            }
            end = new_end;
            let span = end - u32::from(start.address);
            let Some(&(reads, regs, _)) = best.get(j + 1) else {
                break;
            };
            let candidate = (reads + 1, regs + span, j + 1);
            if choice.is_none_or(|c| (candidate.0, candidate.1) < (c.0, c.1)) {
                choice = Some(candidate);
            }
        }
        // A single point always fits (checked by the caller), so `choice` is set.
        if let (Some(c), Some(slot)) = (choice, best.get_mut(i)) {
            *slot = c;
        }
    }
    let mut i = 0;
    while i < n {
        let next = best.get(i).map_or(n, |b| b.2).max(i + 1);
        let run = group.get(i..next).unwrap_or_default();
        if let Some(&(_, s)) = run.first() {
            let end = run.iter().map(|(_, p)| p.end()).max().unwrap_or(s.end());
            out.push(PlannedRead {
                function: s.function,
                address: s.address,
                count: u16::try_from(end - u32::from(s.address)).unwrap_or(u16::MAX),
                points: run.iter().map(|(idx, _)| *idx).collect(),
            });
        }
        i = next;
    }
}
