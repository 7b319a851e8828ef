//! Acceptance of issue 3: healthy meters on a noisy bus, in process (the real simulator on a
//! raw-TCP "serial device server" port, the real bus task). Over hundreds of polls:
//! - with about 1 % of reply bytes corrupted, at least 99 % of the values are good;
//! - every good value is the value the simulator's ground-truth log says the meter sent in the
//!   reply frame that carried it, for the DI it was asked for: a late reply is never taken
//!   as the answer to the next question.
//!
//! Raw TCP rather than a pty: the exchange code is the same (`Link::Tcp` vs `Link::Serial`),
//! ptys cannot add anything here (no parity, no pacing of their own), and TCP works on every
//! CI box.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meter_protocols::Scan;
use meter_protocols::dlt645::Dlt645Frame;
use meterd::bus::task::{Bus, BusOptions};
use meterd::config::Config;
use meterd::health::BusHealth;
use meterd::reading::{Quality, ReadingBatch, ValueData};
use meterd::sim::{SimConfig, Simulator};

/// Eight single-item DIs, as most single-phase meters are read (no blocks).
const PROFILE: &str = r#"
name = "noisy-8"
description = "eight single-item DIs"
source = "test"
protocol = "dlt645-2007"
[[point]]
di = "00000000"
[[point]]
di = "00010000"
[[point]]
di = "00020000"
[[point]]
di = "02010100"
[[point]]
di = "02020100"
[[point]]
di = "02030000"
[[point]]
di = "02060000"
[[point]]
di = "02800002"
"#;

const METERS: u32 = 4;
const POLLS: u32 = 20; // 4 meters × 8 values × 20 polls = 640 values, 640 exchanges at least

/// The profile and the simulator's truth log, in a directory removed when dropped.
fn dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("noisy-8.toml"), PROFILE).unwrap();
    d
}

fn address(i: u32) -> String {
    format!("{:012}", 310_000 + i)
}

// Reply sizes of this profile (DL/T 645-2007, no preamble from the meter): 12 bytes of frame
// (68, address, 68, C, L, CS, 16) + 4 DI bytes + the data: energies 4 data bytes → 20 bytes,
// voltage/PF/frequency 2 → 18, current/power 3 → 19. Mean over the 8 DIs:
// (3×20 + 3×18 + 2×19) / 8 = 19.0 bytes.
// `corrupt` flips exactly one byte of a reply it hits, so with probability p per reply the
// expected share of corrupted bytes is p / 19.0. p = 0.19 gives 1.0 % of reply bytes.
// (The simulator cannot corrupt requests; a request hit on the line is, to the meter, an
// unparseable frame, i.e. silence: that case is `no_reply`, covered by its own tests.)
const CORRUPT_P: f64 = 0.19;
// A few late replies on top (1 in 100 replies, 400 ms late against a 100 ms timeout).
const LATE_P: f64 = 0.01;

fn sim_config(dir: &Path, truth: &Path) -> SimConfig {
    let mut text = format!(
        "truth = {:?}\nprofile_dirs = [{:?}]\n[[port]]\nname = \"noisy\"\ntcp = \"127.0.0.1:0\"\n",
        truth.display().to_string(),
        dir.display().to_string()
    );
    for i in 0..METERS {
        text.push_str(&format!(
            "[[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"noisy-8\"\nseed = {}\n\
             faults = {{ corrupt = {{ probability = {CORRUPT_P} }}, late = {{ probability = {LATE_P}, delay = \"400ms\" }} }}\n",
            address(i),
            1000 + i
        ));
    }
    SimConfig::from_text(Path::new("/tmp/noisy-sim.toml"), &text).unwrap()
}

/// Retries: an attempt fails when the reply is corrupted (p ≈ 0.19) or late (0.01), so about
/// 0.2 per attempt; with 3 retries a value is lost with probability 0.2⁴ ≈ 0.16 %, well
/// inside the 1 % the acceptance allows. One retry (the default) would lose 4 %.
fn gateway_config(dir: &Path, host: &str) -> (Config, meterd::config::ProfileSet) {
    let mut text = format!(
        "gateway = \"gw\"\nprofile_dirs = [{:?}]\n[[bus]]\nname = \"noisy\"\ntransport = \"tcp\"\nhost = \"{host}\"\n\
         timing = {{ response_timeout = \"100ms\", inter_byte_timeout = \"30ms\", retries = 3, turnaround = \"1ms\", late_reply_guard = \"400ms\" }}\n",
        dir.display().to_string()
    );
    for i in 0..METERS {
        text.push_str(&format!(
            "[[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"noisy-8\"\n",
            address(i)
        ));
    }
    Config::from_text(Path::new("/tmp/noisy-gw.toml"), &text).unwrap()
}

fn value_text(v: &Option<ValueData>) -> Option<String> {
    match v {
        Some(ValueData::Number(n)) => Some(n.to_string()),
        Some(ValueData::Text(t)) => Some(t.clone()),
        None => None,
    }
}

/// The DI of a DL/T 645 reply frame given as hex.
fn frame_di(hex: &str) -> String {
    let bytes: Vec<u8> = hex
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    match Dlt645Frame::scan(&bytes) {
        Scan::Frame { frame, .. } => {
            let d: Vec<u8> = frame.data.iter().take(4).rev().copied().collect();
            d.iter().map(|b| format!("{b:02X}")).collect()
        }
        other => panic!("evidence frame {hex} does not scan: {other:?}"),
    }
}

/// One reply in the truth log: valid, its faults, quantity → value.
type Sent = (bool, Vec<String>, HashMap<String, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_bus_yields_99_percent_good_values_and_never_a_wrong_one() {
    let dir = dir();
    let truth_path = dir.path().join("truth.jsonl");
    let sim = Simulator::start(sim_config(dir.path(), &truth_path))
        .await
        .unwrap();
    let host = sim.local_addr("noisy").unwrap().to_string();
    let cfg = gateway_config(dir.path(), &host);
    let health = Arc::new(Mutex::new(BusHealth::for_bus(cfg.0.buses[0].get_ref())));
    let mut bus = Bus::new(cfg.0.buses[0].get_ref(), &cfg.1, BusOptions::new("gw"))
        .unwrap()
        .with_observer(health.clone());
    bus.connect().await.unwrap();

    let started = Instant::now();
    let mut batches: Vec<ReadingBatch> = Vec::new();
    for _ in 0..POLLS {
        for i in 0..METERS {
            batches.push(bus.read_now(&address(i)).await.unwrap());
        }
    }
    let elapsed = started.elapsed();
    // Let the simulator log the last replies (a late one may still be on its way).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = health.lock().unwrap().clone();
    sim.shutdown().await;

    // The truth log: reply bytes (noise excluded: there is none here) → (valid, DI → value).
    let mut truth: HashMap<String, Sent> = HashMap::new();
    let (mut replies, mut corrupted, mut late) = (0usize, 0usize, 0usize);
    for line in std::fs::read_to_string(&truth_path).unwrap().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let faults: Vec<String> = j["faults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        replies += 1;
        corrupted += usize::from(faults.iter().any(|f| f == "corrupt"));
        late += usize::from(faults.iter().any(|f| f == "late"));
        let values = j["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["quantity"].as_str().unwrap().to_owned(),
                    v["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        truth.insert(
            j["response"].as_str().unwrap().to_owned(),
            (j["valid"].as_bool().unwrap(), faults, values),
        );
    }

    let mut good = 0usize;
    let mut bad_reasons: HashMap<String, usize> = HashMap::new();
    let total: usize = batches.iter().map(|b| b.values.len()).sum();
    for b in &batches {
        // Evidence frames by DI: the reply each value came from.
        let frames: HashMap<String, &String> = b.frames.iter().map(|f| (frame_di(f), f)).collect();
        for v in &b.values {
            if v.quality == Quality::Bad {
                *bad_reasons
                    .entry(v.reason.clone().unwrap_or_default())
                    .or_default() += 1;
                continue;
            }
            good += 1;
            let di = v.source.strip_prefix("dlt645:").expect("a DL/T 645 source");
            let frame = frames
                .get(di)
                .unwrap_or_else(|| panic!("{}: no evidence frame for DI {di}", b.meter));
            let (valid, faults, values) = truth
                .get(frame.as_str())
                .unwrap_or_else(|| panic!("{}: frame {frame} was never sent", b.meter));
            assert!(valid, "{}: a broken frame was published: {frame}", b.meter);
            assert_eq!(
                Some(values.get(&*v.quantity).cloned().unwrap_or_default()),
                value_text(&v.value),
                "{} {}: the published value is not what that reply carried (faults {faults:?})",
                b.meter,
                v.quantity
            );
        }
    }
    let share = good as f64 / total as f64;
    println!(
        "noisy bus: {total} values in {POLLS} polls × {METERS} meters, {good} good ({:.2} %), \
         {replies} replies of which {corrupted} corrupted ({:.1} %, ≈ {:.2} % of reply bytes) and {late} late; \
         {} transactions, {} retries, {} timeouts, {} checksum errors, {} stale bytes; {:.1} s; bad: {bad_reasons:?}",
        share * 100.0,
        corrupted as f64 * 100.0 / replies as f64,
        corrupted as f64 * 100.0 / (replies as f64 * 19.0),
        status.transactions,
        status.retries,
        status.timeouts,
        status.wire.checksum_errors,
        status.wire.stale_bytes,
        elapsed.as_secs_f64(),
    );
    assert!(total >= 500, "enough values to mean something: {total}");
    // The faults really happened, at about the rates configured (seeded: reproducible).
    assert!(
        (0.12..0.27).contains(&(corrupted as f64 / replies as f64)),
        "{corrupted} of {replies} replies corrupted"
    );
    assert!(late >= 2, "late replies happened: {late}");
    assert!(
        status.wire.checksum_errors as usize >= corrupted / 2,
        "{status:?}"
    );
    assert!(status.retries > 0 && status.timeouts > 0, "{status:?}");
    assert!(
        share >= 0.99,
        "{good} of {total} values good ({:.2} %): {bad_reasons:?}",
        share * 100.0
    );
}

/// Issue "no lock-up", item 4: a babbling meter (noise without end while its request is
/// pending, every byte well inside the inter-byte timeout) used to hold the bus task forever,
/// because each byte pushed the deadline out again. The exchange now ends at its absolute
/// deadline (response timeout + the longest legal reply's wire time + inter-byte slack), as
/// a timeout with a reason, and the next meter on the bus is polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_babbling_meter_ends_its_exchange_by_the_deadline_and_the_next_meter_is_polled() {
    use meterd::bus::task::spawn;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("two.toml"),
        "name = \"two\"\ndescription = \"two DIs\"\nsource = \"test\"\nprotocol = \"dlt645-2007\"\n\
         [[point]]\ndi = \"00010000\"\n[[point]]\ndi = \"02010100\"\n",
    )
    .unwrap();
    let dir = d.path().display().to_string();
    let sim_text = format!(
        "profile_dirs = [{dir:?}]\n[[port]]\nname = \"b\"\ntcp = \"127.0.0.1:0\"\n\
         [[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"two\"\n\
         faults = {{ babble = {{ every = 1 }} }}\n\
         [[port.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"two\"\n",
        address(1),
        address(2)
    );
    let sim = Simulator::start(
        SimConfig::from_text(Path::new("/tmp/babble-sim.toml"), &sim_text).unwrap(),
    )
    .await
    .unwrap();
    let host = sim.local_addr("b").unwrap().to_string();
    // 9600 8E1: 1.15 ms a character; the limit is 100 ms + 271 × 1.15 ms + 30 ms ≈ 440 ms.
    let gw_text = format!(
        "gateway = \"gw\"\nprofile_dirs = [{dir:?}]\n[[bus]]\nname = \"b\"\ntransport = \"tcp\"\nhost = \"{host}\"\nbaud = 9600\n\
         timing = {{ response_timeout = \"100ms\", inter_byte_timeout = \"30ms\", retries = 0, turnaround = \"1ms\", late_reply_guard = \"0ms\" }}\n\
         [[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"two\"\ninterval = \"1h\"\n\
         [[bus.meter]]\nprotocol = \"dlt645-2007\"\naddress = \"{}\"\nprofile = \"two\"\ninterval = \"1h\"\n",
        address(1),
        address(2)
    );
    let cfg = Config::from_text(Path::new("/tmp/babble-gw.toml"), &gw_text).unwrap();
    let health = Arc::new(Mutex::new(BusHealth::for_bus(cfg.0.buses[0].get_ref())));
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let started = Instant::now();
    let h = spawn(
        cfg.0.buses[0].get_ref(),
        &cfg.1,
        BusOptions::new("gw"),
        tx,
        health.clone(),
    )
    .unwrap();
    // Both meters are due at once: the babbler first, then the healthy one.
    let first = tokio::time::timeout(Duration::from_secs(4), rx.recv())
        .await
        .expect("the babbling meter's poll ended")
        .unwrap();
    let babbler_took = started.elapsed();
    let second = tokio::time::timeout(Duration::from_secs(4), rx.recv())
        .await
        .expect("the next meter on the bus was polled")
        .unwrap();
    assert_eq!(first.meter, address(1));
    assert_eq!(second.meter, address(2));
    for v in &first.values {
        assert_eq!(v.quality, Quality::Bad);
        let reason = v.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("reply not complete within 4")
                && reason.contains("noise on the bus?"),
            "{reason}"
        );
    }
    assert!(
        second.values.iter().all(|v| v.quality == Quality::Good),
        "{:?}",
        second.values
    );
    // One exchange of ≈ 440 ms (plus the connect), not more: nothing usable came back to the
    // poll's first request, so its second is not sent (both values bad with the first's reason).
    assert!(
        babbler_took < Duration::from_millis(1500),
        "{babbler_took:?}"
    );
    let s = health.lock().unwrap().clone();
    assert_eq!(
        s.timeouts, 1,
        "the cut-off exchange counts as a timeout, the skipped one is not sent: {s:?}"
    );
    assert!(
        s.wire.noise_bytes > 100,
        "the babble was received: {:?}",
        s.wire
    );
    h.task.abort();
    sim.shutdown().await;
}
