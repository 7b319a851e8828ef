//! Model-based tests of the spool, after vector's disk_v2 model tests: random sequences of
//! append / ack / pending / reopen are run against the real spool and an in-memory model, and
//! every result and the whole visible state are compared after each step.
//!
//! Crashes are real: [`crashes_lose_nothing_taken`] re-runs this test binary as a child process
//! ([`crash_child`]) that performs a random sequence on a spool file and prints a line after
//! each operation *returns*; the parent SIGKILLs it at a random point (after a random number of
//! lines plus a random spin, so often inside a commit), reopens the file and checks it against
//! the model: the state must be exactly the model after the `k` operations the child reported,
//! or after `k + 1` (the one in flight, all of it or nothing).
//! SIGKILL loses the process, not the page cache: this proves atomicity and recovery, not the
//! disk's fsync (that needs power-cut hardware or a fault-injecting file system).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;
use crate::reading::{ExactNumber, Quality, ReadingBatch, ReadingValue, ValueData};

const GATEWAY: &str = "gw-model";
const METERS: [&str; 4] = ["000000000001", "000000000002", "m-tcp-3", "m4"];

/// One step, as generated. Ack targets are selectors into the model's rows, resolved by
/// [`Model::resolve`] so the model and the spool see the same row ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    /// One append call: (meter index, number of values, good energy?) per batch.
    Append(Vec<(u8, u8, bool)>),
    /// Ack the row at `sel % depth` (or an id never stored when the spool is empty).
    Ack(usize),
    /// Ack several rows in one call; one selector may repeat or miss.
    AckMany(Vec<usize>),
    /// Ack a run of consecutive row ids from the one before the row at `sel`, `len` + 1 of
    /// them: the run may cover ids acknowledged before, dropped, or never stored.
    AckRun(usize, u8),
    /// Page: after the row at `sel` (None: from the start), `limit` rows.
    Pending(Option<usize>, u8),
    /// Ack several rows and append, in one call (`append_rows_acking`).
    AppendAcking(Vec<(u8, u8, bool)>, Vec<usize>),
    /// Close and open again.
    Reopen,
}

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<ReadingBatch>),
    Ack(Vec<i64>),
    Pending(Option<i64>, usize),
    AppendAcking(Vec<ReadingBatch>, Vec<i64>),
    Reopen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Appended(Vec<Appended>),
    Acked(usize),
    AppendedAcking(Vec<Appended>, usize),
    Pending(Vec<Pending>),
    Reopened,
    TooLarge,
}

fn make_batch(meter: u8, n: u8, good_energy: bool, step: usize) -> ReadingBatch {
    let meter = METERS[usize::from(meter) % METERS.len()];
    let t = UNIX_EPOCH + Duration::from_millis(1_795_777_200_000 + step as u64 * 15_000);
    let mut b = ReadingBatch::new("unstamped", meter, "dlt645-2007", 0, t);
    for i in 0..n {
        let energy = i == 0;
        let text = if energy {
            format!("{}.{:02}", 1000 + step, (step * 7) % 100)
        } else {
            format!("{}.{}", 220 + u32::from(i), step % 10)
        };
        b.values.push(ReadingValue {
            quantity: if energy {
                "energy.active.import.total".into()
            } else {
                format!("voltage.l{i}").into()
            },
            value: Some(ValueData::Number(
                serde_json::from_str::<ExactNumber>(&text).unwrap(),
            )),
            unit: if energy { "kWh".into() } else { "V".into() },
            obis: None,
            source: format!("dlt645:0201{i:02}00").into(),
            quality: if energy && !good_energy {
                Quality::Suspect
            } else {
                Quality::Good
            },
            reason: None,
            meter_time: None,
        });
    }
    b
}

#[derive(Debug, Clone)]
struct Row {
    rowid: i64,
    meter: String,
    seq: u64,
    id: String,
    read_at: String,
    payload: Vec<u8>,
}

/// The spool's specification, in memory.
#[derive(Debug, Clone)]
struct Model {
    max_bytes: u64,
    rows: VecDeque<Row>,
    next_rowid: i64,
    /// meter → (last seq, dropped batches, dropped bytes)
    meters: BTreeMap<String, (u64, u64, u64)>,
    last_good: BTreeMap<(String, String), String>,
}

impl Model {
    fn new(max_bytes: u64) -> Self {
        Model {
            max_bytes,
            rows: VecDeque::new(),
            next_rowid: 1,
            meters: BTreeMap::new(),
            last_good: BTreeMap::new(),
        }
    }

    fn bytes(&self) -> u64 {
        self.rows.iter().map(|r| r.payload.len() as u64).sum()
    }

    fn resolve(&self, op: &Op, step: usize) -> Step {
        let pick = |sel: usize| {
            if self.rows.is_empty() {
                self.next_rowid + 1000
            } else {
                self.rows[sel % self.rows.len()].rowid
            }
        };
        match op {
            Op::Append(bs) => Step::Append(
                bs.iter()
                    .map(|&(m, n, g)| make_batch(m, n, g, step))
                    .collect(),
            ),
            Op::Ack(sel) => Step::Ack(vec![pick(*sel)]),
            Op::AckMany(sels) => Step::Ack(sels.iter().map(|&s| pick(s)).collect()),
            Op::AckRun(sel, len) => {
                let first = pick(*sel) - 1;
                Step::Ack((first..=first + i64::from(*len)).collect())
            }
            Op::Pending(after, limit) => Step::Pending(after.map(pick), usize::from(*limit)),
            Op::AppendAcking(bs, sels) => Step::AppendAcking(
                bs.iter()
                    .map(|&(m, n, g)| make_batch(m, n, g, step))
                    .collect(),
                sels.iter().map(|&s| pick(s)).collect(),
            ),
            Op::Reopen => Step::Reopen,
        }
    }

    fn apply(&mut self, step: &Step) -> Outcome {
        match step {
            Step::Append(batches) => {
                let mut seqs = self.meters.clone();
                let mut new = Vec::new();
                for b in batches {
                    let e = seqs.entry(b.meter.clone()).or_default();
                    e.0 += 1;
                    let mut b = b.clone();
                    b.gateway = GATEWAY.into();
                    b.seq = e.0;
                    b.id = format!("{GATEWAY}/{}/{}", b.meter, b.seq);
                    let payload = serde_json::to_vec(&b).unwrap();
                    new.push((b, payload));
                }
                let sum: u64 = new.iter().map(|(_, p)| p.len() as u64).sum();
                if sum > self.max_bytes {
                    return Outcome::TooLarge;
                }
                while self.bytes() + sum > self.max_bytes {
                    let Some(old) = self.rows.pop_front() else {
                        break;
                    };
                    let e = seqs.entry(old.meter.clone()).or_default();
                    e.1 += 1;
                    e.2 += old.payload.len() as u64;
                }
                self.meters = seqs;
                let mut out = Vec::new();
                for (b, payload) in new {
                    for v in &b.values {
                        if let (true, Quality::Good, Some(ValueData::Number(n))) = (
                            crate::reading::is_cumulative(&v.quantity),
                            v.quality,
                            &v.value,
                        ) {
                            self.last_good
                                .insert((b.meter.clone(), v.quantity.to_string()), n.to_string());
                        }
                    }
                    out.push(Appended {
                        rowid: self.next_rowid,
                        meter: b.meter.clone(),
                        seq: b.seq,
                        id: b.id.clone(),
                        bytes: payload.len() as u64,
                    });
                    self.rows.push_back(Row {
                        rowid: self.next_rowid,
                        meter: b.meter,
                        seq: b.seq,
                        id: b.id,
                        read_at: b.read_at,
                        payload,
                    });
                    self.next_rowid += 1;
                }
                Outcome::Appended(out)
            }
            Step::Ack(ids) => {
                let before = self.rows.len();
                self.rows.retain(|r| !ids.contains(&r.rowid));
                Outcome::Acked(before - self.rows.len())
            }
            Step::AppendAcking(batches, ids) => {
                // The acks first (they make room), all or nothing.
                let before = self.clone();
                let Outcome::Acked(acked) = self.apply(&Step::Ack(ids.clone())) else {
                    unreachable!("an ack step gives Acked")
                };
                match self.apply(&Step::Append(batches.clone())) {
                    Outcome::Appended(a) => Outcome::AppendedAcking(a, acked),
                    other => {
                        *self = before;
                        other
                    }
                }
            }
            Step::Pending(after, limit) => Outcome::Pending(
                self.rows
                    .iter()
                    .filter(|r| after.is_none_or(|a| r.rowid > a))
                    .take(*limit)
                    .map(|r| Pending {
                        rowid: r.rowid,
                        meter: r.meter.clone(),
                        seq: r.seq,
                        id: r.id.clone(),
                        payload: r.payload.clone(),
                        kind: MessageKind::Reading,
                    })
                    .collect(),
            ),
            Step::Reopen => {
                self.next_rowid = self.rows.back().map_or(1, |r| r.rowid + 1);
                Outcome::Reopened
            }
        }
    }

    fn observe(&self) -> Observed {
        Observed {
            rows: self
                .rows
                .iter()
                .map(|r| {
                    (
                        r.rowid,
                        r.meter.clone(),
                        r.seq,
                        r.id.clone(),
                        r.payload.clone(),
                    )
                })
                .collect(),
            stats: SpoolStats {
                depth: self.rows.len() as u64,
                bytes: self.bytes(),
                dropped_batches: self.meters.values().map(|m| m.1).sum(),
                dropped_bytes: self.meters.values().map(|m| m.2).sum(),
                oldest_read_at: self.rows.front().map(|r| r.read_at.clone()),
                dropped_in_memory: 0,
            },
            meters: self
                .meters
                .iter()
                .map(
                    |(m, &(last_seq, dropped_batches, dropped_bytes))| MeterSpoolRecord {
                        meter: m.clone(),
                        last_seq,
                        dropped_batches,
                        dropped_bytes,
                        dropped_in_memory: 0,
                    },
                )
                .collect(),
            last_good: self.last_good.clone(),
        }
    }
}

/// Everything a reader can see of a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    rows: Vec<(i64, String, u64, String, Vec<u8>)>,
    stats: SpoolStats,
    meters: Vec<MeterSpoolRecord>,
    last_good: BTreeMap<(String, String), String>,
}

fn observe(s: &Spool) -> Observed {
    let rows = s
        .pending(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p| {
            // Nothing half-written: every payload is a whole batch that agrees with its row.
            let b: ReadingBatch = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!((&b.meter, b.seq, &b.id), (&p.meter, p.seq, &p.id));
            (p.rowid, p.meter, p.seq, p.id, p.payload)
        })
        .collect();
    let mut last_good: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut stmt = s
        .conn
        .prepare("SELECT meter, quantity, value FROM last_good")
        .unwrap();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        last_good.insert((r.get(0).unwrap(), r.get(1).unwrap()), r.get(2).unwrap());
    }
    for ((m, qn), v) in &last_good {
        assert_eq!(s.last_good(m, qn).unwrap().as_ref(), Some(v));
    }
    Observed {
        rows,
        stats: s.stats().unwrap(),
        meters: s.meters().unwrap(),
        last_good,
    }
}

fn apply_spool(s: &mut Option<Spool>, path: &Path, max_bytes: u64, step: &Step) -> Outcome {
    let open = || Spool::open(path, SpoolOptions::numbered_from_one(max_bytes)).unwrap();
    let spool = s.get_or_insert_with(open);
    match step {
        Step::Append(bs) => match spool.append(GATEWAY, bs.clone()) {
            Ok(a) => Outcome::Appended(a),
            Err(SpoolError::TooLarge { .. }) => Outcome::TooLarge,
            Err(e) => panic!("append: {e}"),
        },
        Step::AppendAcking(bs, ids) => {
            let mut bs = bs.clone();
            match spool.append_rows_acking(GATEWAY, &mut bs, ids) {
                Ok(a) => Outcome::AppendedAcking(
                    a.rows.into_iter().map(Appended::from).collect(),
                    a.acked,
                ),
                Err(SpoolError::TooLarge { .. }) => Outcome::TooLarge,
                Err(e) => panic!("append_rows_acking: {e}"),
            }
        }
        Step::Ack(ids) if ids.len() == 1 => Outcome::Acked(usize::from(spool.ack(ids[0]).unwrap())),
        Step::Ack(ids) => Outcome::Acked(spool.ack_many(ids).unwrap()),
        Step::Pending(after, limit) => Outcome::Pending(spool.pending(*after, *limit).unwrap()),
        Step::Reopen => {
            *s = None;
            *s = Some(open());
            Outcome::Reopened
        }
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let batch = (
        0u8..4,
        prop_oneof![9 => 0u8..8, 1 => 60u8..90],
        any::<bool>(),
    );
    prop_oneof![
        6 => prop::collection::vec(batch.clone(), 1..5).prop_map(Op::Append),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => prop::collection::vec(any::<usize>(), 0..6).prop_map(Op::AckMany),
        1 => (any::<usize>(), 0u8..6).prop_map(|(s, l)| Op::AckRun(s, l)),
        2 => (prop::option::of(any::<usize>()), 0u8..8).prop_map(|(a, l)| Op::Pending(a, l)),
        2 => (
            prop::collection::vec(batch, 0..4),
            prop::collection::vec(any::<usize>(), 0..6)
        )
            .prop_map(|(b, a)| Op::AppendAcking(b, a)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// In process: each result and the whole visible state equal the model's after every
    /// step; `Reopen` drops the connection cleanly.
    #[test]
    fn spool_behaves_like_the_model(
        max_bytes in 3_000u64..20_000,
        ops in prop::collection::vec(op_strategy(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let mut model = Model::new(max_bytes);
        let mut spool = None;
        for (i, op) in ops.iter().enumerate() {
            let step = model.resolve(op, i);
            let want = model.apply(&step);
            let got = apply_spool(&mut spool, &path, max_bytes, &step);
            prop_assert_eq!(&got, &want, "step {} {:?}", i, op);
            let s = spool.as_ref().unwrap();
            prop_assert_eq!(observe(s), model.observe(), "after step {} {:?}", i, op);
            prop_assert!(s.stats().unwrap().bytes <= max_bytes);
        }
    }
}

const CHILD_DIR: &str = "MeterdSpoolCrashDir";
const MARK: &str = "SPOOL-CRASH-CHILD";

/// The child half of [`crashes_lose_nothing_taken`]: does nothing unless started by it.
#[test]
#[ignore = "run by crashes_lose_nothing_taken in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let (max_bytes, ops): (u64, Vec<Op>) =
        serde_json::from_slice(&std::fs::read(dir.join("ops.json")).unwrap()).unwrap();
    let path = dir.join("spool.db");
    let mut out = std::io::stdout();
    let mut model = Model::new(max_bytes);
    let mut spool = Some(Spool::open(&path, SpoolOptions::numbered_from_one(max_bytes)).unwrap());
    writeln!(out, "{MARK} open").unwrap();
    out.flush().unwrap();
    for (i, op) in ops.iter().enumerate() {
        let step = model.resolve(op, i);
        let want = model.apply(&step);
        let got = apply_spool(&mut spool, &path, max_bytes, &step);
        if got != want {
            writeln!(out, "{MARK} MISMATCH {i}: {got:?} != {want:?}").unwrap();
            std::process::exit(3);
        }
        writeln!(out, "{MARK} done {i}").unwrap();
        out.flush().unwrap();
    }
}

/// The child's line from its mark on.
fn marked(line: &str) -> String {
    line.find(MARK)
        .map_or_else(String::new, |i| line[i..].to_owned())
}

/// Runs `ops` in a child process, SIGKILLs it after `kill_after` lines plus `spin_us`, and
/// returns how many operations it reported done (`None`: it never finished opening).
fn run_child_and_kill(dir: &Path, kill_after: usize, spin_us: u64) -> Option<usize> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "spool::model_tests::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < kill_after {
        match lines.next() {
            Some(Ok(l)) if l.contains(MARK) => seen.push(marked(&l)),
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let until = Instant::now() + Duration::from_micros(spin_us);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    // SIGKILL: no destructors, no SQLite close, no flush.
    let _ = child.kill();
    let status = child.wait().unwrap();
    // libtest prints "test … ... " before the test's own output, on the same line.
    seen.extend(
        lines
            .map_while(Result::ok)
            .filter(|l| l.contains(MARK))
            .map(|l| marked(&l)),
    );
    assert!(
        !seen.iter().any(|l| l.contains("MISMATCH")),
        "child disagreed with the model: {seen:?}"
    );
    assert!(
        status.success() || std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        "child failed: {status:?} {seen:?}"
    );
    let done = seen.iter().filter(|l| l.contains(" done ")).count();
    seen.iter().any(|l| l.ends_with(" open")).then_some(done)
}

proptest! {
    // Each case starts a process: a few dozen cases, the in-process model test does the bulk.
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Real crashes: after SIGKILL at a random point the reopened spool is exactly the model
    /// after the operations that returned, or after one more (the one in flight, whole); every
    /// `seq` handed out before the crash is never handed out again.
    #[test]
    fn crashes_lose_nothing_taken(
        max_bytes in 4_000u64..40_000,
        ops in prop::collection::vec(op_strategy(), 5..80),
        kill_at in 0.0f64..1.1,
        spin_us in 0u64..3_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ops.json"), serde_json::to_vec(&(max_bytes, &ops)).unwrap()).unwrap();
        let kill_after = (kill_at * (ops.len() + 1) as f64) as usize;
        let done = run_child_and_kill(dir.path(), kill_after, spin_us);

        // The models after k and after k + 1 operations.
        let mut model = Model::new(max_bytes);
        let k = done.unwrap_or(0);
        for (i, op) in ops.iter().take(k).enumerate() {
            let step = model.resolve(op, i);
            model.apply(&step);
        }
        let mut next = model.clone();
        if let Some(op) = ops.get(k) {
            let step = next.resolve(op, k);
            next.apply(&step);
        }

        let path = dir.path().join("spool.db");
        // Opening must succeed: a crash never leaves a file the spool calls corrupt.
        let mut s = Spool::open(&path, SpoolOptions::numbered_from_one(max_bytes)).unwrap();
        let seen = observe(&s);
        let (want, other) = (model.observe(), next.observe());
        prop_assert!(
            seen == want || seen == other,
            "after {:?} of {} ops (kill after {} lines):\nseen {:?}\nwant {:?}\nor   {:?}",
            done, ops.len(), kill_after, seen, want, other
        );
        let which = if seen == want { model } else { next };
        if std::env::var_os("SPOOL_CRASH_TRACE").is_some() {
            eprintln!("crash: {} ops, killed after {:?} done, in flight {:?}, state {}",
                ops.len(), done, ops.get(k).map(|o| format!("{o:?}").chars().take(12).collect::<String>()),
                if seen == other && seen != want { "k+1" } else { "k" });
        }

        // No seq reuse: each meter's next batch continues after the last seq handed out.
        let last: HashMap<String, u64> =
            which.meters.iter().map(|(m, v)| (m.clone(), v.0)).collect();
        let bs = (0..METERS.len() as u8).map(|m| make_batch(m, 1, true, 9_999)).collect();
        let a = s.append(GATEWAY, bs).unwrap();
        for a in a {
            prop_assert_eq!(a.seq, last.get(&a.meter).copied().unwrap_or(0) + 1, "{:?}", a);
        }
        // Row ids keep increasing after the crash too.
        let p = s.pending(None, usize::MAX).unwrap();
        prop_assert!(p.windows(2).all(|w| w[0].rowid < w[1].rowid));
    }
}
