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

#[cfg(test)]
mod tests {
    use super::*;
    use ReadFunction::*;
    use proptest::prelude::*;

    fn p(function: ReadFunction, address: u16, count: u16) -> PointRange {
        PointRange {
            function,
            address,
            count,
        }
    }

    fn opts(cap: u16, fill: u16) -> PlanOptions {
        PlanOptions {
            max_registers_per_request: cap,
            max_gap_fill: fill,
            ..PlanOptions::default()
        }
    }

    /// SDM630: V L1-L3, I L1-L3, total W, frequency, import/export kWh (FC04 float32 pairs).
    fn sdm630() -> Vec<PointRange> {
        [0x00, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x34, 0x46, 0x48, 0x4A]
            .iter()
            .map(|&a| p(InputRegisters, a, 2))
            .collect()
    }

    #[test]
    fn sdm630_without_and_with_gap_fill() {
        let plan0 = plan(&sdm630(), &opts(125, 0)).unwrap();
        assert_eq!(
            plan0.to_string(),
            "FC04 0x0000+12 → points 0, 1, 2, 3, 4, 5\n\
             FC04 0x0034+2 → points 6\n\
             FC04 0x0046+6 → points 7, 8, 9\n"
        );
        let plan20 = plan(&sdm630(), &opts(125, 20)).unwrap();
        assert_eq!(
            plan20.to_string(),
            "FC04 0x0000+12 → points 0, 1, 2, 3, 4, 5\n\
             FC04 0x0034+24 → points 6, 7, 8, 9\n"
        );
        let plan_all = plan(&sdm630(), &opts(125, 50)).unwrap();
        assert_eq!(
            plan_all.to_string(),
            "FC04 0x0000+76 → points 0, 1, 2, 3, 4, 5, 6, 7, 8, 9\n"
        );
        assert_eq!(
            plan_all.requests[0].request(),
            Request::ReadInputRegisters {
                address: 0,
                count: 76
            }
        );
        // An SDM72-style cap of 30 registers splits the same points into more reads.
        let capped = plan(&sdm630(), &opts(30, 50)).unwrap();
        assert_eq!(
            capped.to_string(),
            "FC04 0x0000+12 → points 0, 1, 2, 3, 4, 5\n\
             FC04 0x0034+24 → points 6, 7, 8, 9\n"
        );
        let capped = plan(&sdm630(), &opts(10, 50)).unwrap();
        assert_eq!(capped.requests.len(), 4);
        assert!(capped.requests.iter().all(|r| r.count <= 10));
    }

    #[test]
    fn duplicates_overlaps_and_functions_are_ordered() {
        let points = [
            p(HoldingRegisters, 10, 4),
            p(Coils, 3, 1),
            p(HoldingRegisters, 10, 4),
            p(HoldingRegisters, 12, 2),
            p(InputRegisters, 0, 1),
            p(Coils, 0, 1),
        ];
        let plan = plan(&points, &opts(125, 0)).unwrap();
        assert_eq!(
            plan.to_string(),
            "FC01 0x0000+1 → points 5\n\
             FC01 0x0003+1 → points 1\n\
             FC03 0x000A+4 → points 0, 2, 3\n\
             FC04 0x0000+1 → points 4\n"
        );
    }

    #[test]
    fn fewest_reads_then_fewest_registers() {
        // Greedy from the left reads [0,10) and [12,14), 12 registers; the programme finds
        // the same number of reads with 8: [0,2) and [8,14).
        let points = [
            p(HoldingRegisters, 0, 2),
            p(HoldingRegisters, 8, 2),
            p(HoldingRegisters, 12, 2),
        ];
        let plan = plan(&points, &opts(10, 8)).unwrap();
        assert_eq!(plan.requests.len(), 2);
        let regs: u32 = plan.requests.iter().map(|r| u32::from(r.count)).sum();
        assert_eq!(regs, 2 + 6);
    }

    #[test]
    fn errors() {
        assert_eq!(
            plan(&[p(HoldingRegisters, 0, 41)], &opts(40, 0)),
            Err(PlanError::PointTooLarge {
                index: 0,
                count: 41,
                cap: 40
            })
        );
        assert_eq!(
            plan(&[p(Coils, 0, 0)], &opts(40, 0)),
            Err(PlanError::EmptyPoint { index: 0 })
        );
        assert!(matches!(
            plan(&[p(InputRegisters, 0xFFFF, 2)], &opts(40, 0)),
            Err(PlanError::AddressOverflow { index: 0, .. })
        ));
        assert!(matches!(
            plan(&[], &opts(126, 0)),
            Err(PlanError::BadCap { .. })
        ));
        assert!(matches!(
            plan(&[], &opts(0, 0)),
            Err(PlanError::BadCap { .. })
        ));
        assert_eq!(plan(&[], &opts(125, 0)), Ok(PollPlan::default()));
        assert!(plan(&[p(Coils, 0, 2000)], &opts(1, 0)).is_ok());
        assert_eq!(
            PlanError::PointTooLarge {
                index: 3,
                count: 41,
                cap: 40
            }
            .to_string(),
            "point 3: 41 exceeds the cap of 40 per request; points are never split"
        );
    }

    fn block_ok(block: &[PointRange], cap: u16, fill: u16) -> bool {
        let Some(first) = block.first() else {
            return true;
        };
        if block.iter().any(|q| q.function != first.function) {
            return false;
        }
        let mut sorted = block.to_vec();
        sorted.sort_by_key(|q| (q.address, q.count));
        let start = u32::from(sorted[0].address);
        let mut end = sorted[0].end();
        for q in &sorted[1..] {
            if u32::from(q.address) > end + u32::from(fill) {
                return false;
            }
            end = end.max(q.end());
        }
        let cap = if first.function.is_bits() {
            MAX_READ_BITS
        } else {
            cap
        };
        end - start <= u32::from(cap)
    }

    /// The fewest blocks over every set partition (tiny inputs only). Blocks are checked only
    /// when complete: adding a point can fill a hole, so feasibility is not monotone.
    fn brute_force_min(points: &[PointRange], cap: u16, fill: u16) -> usize {
        fn go(
            rest: &[PointRange],
            blocks: &mut Vec<Vec<PointRange>>,
            cap: u16,
            fill: u16,
            best: &mut usize,
        ) {
            if blocks.len() >= *best {
                return;
            }
            let Some((first, rest)) = rest.split_first() else {
                if blocks.iter().all(|b| block_ok(b, cap, fill)) {
                    *best = blocks.len();
                }
                return;
            };
            for i in 0..blocks.len() {
                blocks[i].push(*first);
                go(rest, blocks, cap, fill, best);
                blocks[i].pop();
            }
            blocks.push(vec![*first]);
            go(rest, blocks, cap, fill, best);
            blocks.pop();
        }
        let mut best = usize::MAX;
        go(points, &mut Vec::new(), cap, fill, &mut best);
        best
    }

    fn arb_points(max_len: usize, cap: u16) -> impl Strategy<Value = Vec<PointRange>> {
        prop::collection::vec(
            (
                prop::sample::select(vec![HoldingRegisters, InputRegisters, Coils]),
                0u16..150,
                1u16..=cap,
            )
                .prop_map(|(f, a, c)| p(f, a, c)),
            0..max_len,
        )
    }

    proptest! {
        #[test]
        fn plan_serves_every_point_once_within_limits(
            (cap, points) in (1u16..=125).prop_flat_map(|cap| (Just(cap), arb_points(40, cap))),
            fill in 0u16..30,
        ) {
            let o = opts(cap, fill);
            let plan = plan(&points, &o).unwrap();
            let mut served = vec![0usize; points.len()];
            for r in &plan.requests {
                prop_assert!(r.count >= 1 && r.count <= o.cap(r.function));
                prop_assert!(!r.points.is_empty());
                let block: Vec<PointRange> = r.points.iter().map(|&i| points[i]).collect();
                prop_assert!(block_ok(&block, cap, fill), "{r:?}");
                let start = block.iter().map(|q| q.address).min().unwrap();
                let end = block.iter().map(|q| q.end()).max().unwrap();
                prop_assert_eq!(r.address, start);
                prop_assert_eq!(u32::from(r.address) + u32::from(r.count), end);
                for &i in &r.points {
                    prop_assert_eq!(points[i].function, r.function);
                    served[i] += 1;
                }
            }
            prop_assert!(served.iter().all(|&n| n == 1), "{served:?}");
            prop_assert!(plan.requests.len() <= points.len());
            let keys: Vec<_> = plan.requests.iter().map(|r| (r.function, r.address)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(keys, sorted);
        }

        #[test]
        fn plan_is_minimal_on_small_inputs(
            (cap, points) in (1u16..=12).prop_flat_map(|cap| (Just(cap), arb_points(7, cap))),
            fill in 0u16..6,
        ) {
            let points: Vec<PointRange> = points.into_iter().map(|mut q| { q.address %= 30; q.count = q.count.min(cap); q }).collect();
            let plan = plan(&points, &opts(cap, fill)).unwrap();
            let best = if points.is_empty() { 0 } else { brute_force_min(&points, cap, fill) };
            prop_assert_eq!(plan.requests.len(), best, "{}", plan);
        }
    }
}
