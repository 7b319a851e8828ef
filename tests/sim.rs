//! The simulator seen from the wire: minimal clients built from the protocols crate's
//! encoders and scanners (and a tokio-modbus client for Modbus TCP) talk to simulated meters
//! over TCP loopback and a pty pair.

use std::path::Path;
use std::time::{Duration, Instant};

use meter_protocols::Scan;
use meter_protocols::SkipReason;
use meter_protocols::dlt645::catalog::decode_payload;
use meter_protocols::dlt645::{Address, DataIdentifier, Dlt645Frame, Request, Response, Version};
use meter_protocols::modbus::rtu;
use meterd::sim::{SimConfig, SimHandle, Simulator};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const SILENCE: Duration = Duration::from_millis(300);

async fn start(text: &str) -> SimHandle {
    let config = SimConfig::from_text(Path::new("test.toml"), text).unwrap();
    Simulator::start(config).await.unwrap()
}

async fn connect(sim: &SimHandle, port: &str) -> TcpStream {
    TcpStream::connect(sim.local_addr(port).unwrap())
        .await
        .unwrap()
}

/// Reads until `done` says the bytes are complete, or `wait` passes; returns what came.
async fn read_until<S: AsyncRead + Unpin>(
    s: &mut S,
    wait: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while !done(&out) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

/// True when a DL/T 645 frame can be found in `buf` after skipping whatever the scanner skips.
fn has_dlt_frame(buf: &[u8]) -> bool {
    dlt_frames(buf).0.is_some()
}

/// Scans `buf`: the first frame, and the skips before it.
fn dlt_frames(mut buf: &[u8]) -> (Option<Dlt645Frame>, Vec<SkipReason>) {
    let mut skips = Vec::new();
    loop {
        match Dlt645Frame::scan(buf) {
            Scan::Frame { frame, .. } => return (Some(frame), skips),
            Scan::Skip { count, reason } => {
                skips.push(reason);
                buf = &buf[count.min(buf.len())..];
            }
            Scan::Incomplete { .. } => return (None, skips),
        }
    }
}

async fn dlt_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    address: &str,
    request: Request,
    version: Version,
) -> (Vec<u8>, Option<Response>) {
    let frame = request.to_frame(address.parse().unwrap());
    s.write_all(&frame.to_bytes(4)).await.unwrap();
    let bytes = read_until(s, Duration::from_secs(2), has_dlt_frame).await;
    let response = dlt_frames(&bytes)
        .0
        .map(|f| Response::from_frame(&f, version).unwrap());
    (bytes, response)
}

fn read(di: &str) -> Request {
    Request::ReadData {
        di: DataIdentifier::parse(di).unwrap(),
        extra: Vec::new(),
    }
}

fn payload(r: &Option<Response>) -> (DataIdentifier, Vec<u8>) {
    match r {
        Some(Response::ReadData { di, payload, .. }) => (*di, payload.clone()),
        other => panic!("expected a read reply, got {other:?}"),
    }
}

const DLT_PORT: &str = r#"
[[port]]
name = "dlt"
tcp = "127.0.0.1:0"

[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
seed = 1

[[port.meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-single-phase"
seed = 2

[[port.meter]]
protocol = "dlt645-1997"
address = "000000000003"
profile = "dlt645-1997-basic"
seed = 3
"#;

#[tokio::test]
async fn dlt645_reads_over_tcp_match_the_truth_log() {
    let dir = std::env::temp_dir().join(format!("meterd-sim-truth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let truth = dir.join("truth.jsonl");
    let text = format!("truth = {:?}\n{DLT_PORT}", truth.display().to_string());
    let sim = start(&text).await;
    let mut s = connect(&sim, "dlt").await;

    // A block read: total + 4 tariffs, the tariffs summing to the total.
    let (bytes, r) = dlt_exchange(&mut s, "000000000001", read("0001FF00"), Version::V2007).await;
    let (di, p) = payload(&r);
    let values = decode_payload(di, &p);
    assert_eq!(values.len(), 5);
    let m: Vec<i64> = values
        .iter()
        .map(|v| v.value.as_decimal().unwrap().mantissa())
        .collect();
    assert_eq!(m[0], m[1..].iter().sum::<i64>(), "{values:?}");
    assert_eq!(values[0].quantity, "energy.active.import.total");

    // Voltage and frequency in their bands.
    let (_, r) = dlt_exchange(&mut s, "000000000001", read("02010100"), Version::V2007).await;
    let (di, p) = payload(&r);
    let v = decode_payload(di, &p)[0]
        .value
        .as_decimal()
        .unwrap()
        .to_f64();
    assert!((225.0..=235.0).contains(&v), "{v}");
    let (_, r) = dlt_exchange(&mut s, "000000000001", read("02800002"), Version::V2007).await;
    let (di, p) = payload(&r);
    let f = decode_payload(di, &p)[0]
        .value
        .as_decimal()
        .unwrap()
        .to_f64();
    assert!((49.95..=50.05).contains(&f), "{f}");

    // DL/T 645-1997 on the same line.
    let (_, r) = dlt_exchange(&mut s, "000000000003", read("9010"), Version::V1997).await;
    let (di, p) = payload(&r);
    assert_eq!(di, DataIdentifier::V1997(0x9010));
    assert_eq!(
        decode_payload(di, &p)[0].quantity,
        "energy.active.import.total"
    );

    // The truth log has one line per reply; the first one's response is the bytes received.
    sim.shutdown().await;
    let log = std::fs::read_to_string(&truth).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{log}");
    let first = &lines[0];
    assert_eq!(first["response"], rtu::hex(&bytes));
    assert_eq!(first["meter"], "000000000001");
    assert_eq!(first["port"], "dlt");
    assert_eq!(first["valid"], true);
    let logged: Vec<(String, String)> = first["values"]
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
    let seen: Vec<(String, String)> = values
        .iter()
        .map(|v| (v.quantity.to_string(), v.value.to_string()))
        .collect();
    assert_eq!(logged, seen);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn only_the_addressed_meter_answers() {
    let sim = start(DLT_PORT).await;
    let mut s = connect(&sim, "dlt").await;
    let (_, r) = dlt_exchange(&mut s, "202107072529", read("00010000"), Version::V2007).await;
    assert!(matches!(r, Some(Response::ReadData { .. })));
    // The reply carries the meter's own address.
    let (bytes, _) = dlt_exchange(&mut s, "202107072529", read("00010000"), Version::V2007).await;
    let frame = dlt_frames(&bytes).0.unwrap();
    assert_eq!(frame.address, "202107072529".parse::<Address>().unwrap());

    // Wrong address, broadcast, and read-address with three meters on the line: silence.
    for (address, request) in [
        ("999999999998", read("00010000")),
        ("999999999999", read("00010000")),
        ("AAAAAAAAAAAA", Request::ReadAddress),
    ] {
        s.write_all(&request.to_frame(address.parse().unwrap()).to_bytes(0))
            .await
            .unwrap();
        let got = read_until(&mut s, SILENCE, |b| !b.is_empty()).await;
        assert!(got.is_empty(), "{address}: {}", rtu::hex(&got));
    }

    // Unknown DI → ERR 02; a write → ERR 04.
    let (_, r) = dlt_exchange(&mut s, "000000000001", read("04000404"), Version::V2007).await;
    assert!(
        matches!(r, Some(Response::Abnormal { error, .. }) if error.0 == 0x02),
        "{r:?}"
    );
    let write = Request::WriteData {
        di: DataIdentifier::parse("04000101").unwrap(),
        password: [0; 4],
        operator: [0; 4],
        data: vec![1, 2, 3, 4],
    };
    let (_, r) = dlt_exchange(&mut s, "000000000001", write, Version::V2007).await;
    assert!(
        matches!(r, Some(Response::Abnormal { error, .. }) if error.0 == 0x04),
        "{r:?}"
    );
}

#[tokio::test]
async fn read_address_is_answered_by_a_lone_meter() {
    let sim = start(
        r#"
[[port]]
name = "one"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-single-phase"
"#,
    )
    .await;
    let mut s = connect(&sim, "one").await;
    let (_, r) = dlt_exchange(&mut s, "AAAAAAAAAAAA", Request::ReadAddress, Version::V2007).await;
    assert_eq!(r, Some(Response::Address("202107072529".parse().unwrap())));
}

/// An echoing adapter (`echo = true` on the port): every request comes back at once, before the
/// reply, even a request no meter answers.
#[tokio::test]
async fn an_echoing_port_sends_each_request_back_before_the_reply() {
    let sim = start(
        r#"
[[port]]
name = "e"
tcp = "127.0.0.1:0"
echo = true
reply_latency = "50ms"
[[port.meter]]
protocol = "dlt645-2007"
address = "202107072529"
profile = "dlt645-single-phase"
"#,
    )
    .await;
    let mut s = connect(&sim, "e").await;
    let request = read("00010000")
        .to_frame("202107072529".parse().unwrap())
        .to_bytes(4);
    s.write_all(&request).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| {
        b.len() > request.len() && has_dlt_frame(&b[request.len()..])
    })
    .await;
    assert!(got.starts_with(&request), "the echo first: {got:02X?}");
    let (reply, _) = dlt_frames(&got[request.len()..]);
    let reply = reply.expect("then the meter's reply");
    assert!(reply.control.is_response());
    // A request for nobody: the echo, then silence.
    let nobody = read("00010000")
        .to_frame("000000000099".parse().unwrap())
        .to_bytes(0);
    s.write_all(&nobody).await.unwrap();
    let got = read_until(&mut s, SILENCE, |_| false).await;
    assert_eq!(got, nobody);
    // Modbus TCP has no echo to simulate: refused where it is configured.
    let e = SimConfig::from_text(
        Path::new("e.toml"),
        "[[port]]\nmodbus_tcp = \"127.0.0.1:0\"\necho = true\n[[port.meter]]\nprotocol = \"modbus-tcp\"\nunit = 1\nprofile = \"generic-modbus\"\n",
    )
    .unwrap_err();
    assert!(e.key.ends_with("echo"), "{e}");
    sim.shutdown().await;
}

fn fault_port(faults: &str) -> String {
    format!(
        r#"
[[port]]
name = "f"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
faults = {faults}
[[port.meter]]
protocol = "modbus-rtu"
unit = 5
profile = "generic-modbus"
faults = {faults}
"#
    )
}

fn rtu_read(unit: u8, address: u16, count: u16) -> (Vec<u8>, rtu::Request) {
    let req = rtu::Request::ReadHoldingRegisters { address, count };
    let mut out = Vec::new();
    rtu::encode_request(unit, &req, &mut out).unwrap();
    (out, req)
}

#[tokio::test]
async fn each_fault_shows_on_the_wire() {
    let request = read("00010000")
        .to_frame("000000000001".parse().unwrap())
        .to_bytes(0);

    // No reply.
    let sim = start(&fault_port("{ no_reply = { every = 1 } }")).await;
    let mut s = connect(&sim, "f").await;
    s.write_all(&request).await.unwrap();
    assert!(
        read_until(&mut s, SILENCE, |b| !b.is_empty())
            .await
            .is_empty()
    );
    let (req, _) = rtu_read(5, 0, 2);
    s.write_all(&req).await.unwrap();
    assert!(
        read_until(&mut s, SILENCE, |b| !b.is_empty())
            .await
            .is_empty()
    );
    drop(sim);

    // Late reply: not before the delay.
    let sim = start(&fault_port("{ late = { every = 1, delay = \"400ms\" } }")).await;
    let mut s = connect(&sim, "f").await;
    let t0 = Instant::now();
    s.write_all(&request).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(3), has_dlt_frame).await;
    assert!(has_dlt_frame(&got));
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    drop(sim);

    // Corrupt byte and bad checksum: the checksum fails.
    for faults in [
        "{ corrupt = { every = 1 } }",
        "{ bad_checksum = { every = 1 } }",
    ] {
        let sim = start(&fault_port(faults)).await;
        let mut s = connect(&sim, "f").await;
        s.write_all(&request).await.unwrap();
        let got = read_until(&mut s, SILENCE, |_| false).await;
        assert_eq!(got.len(), 12 + 8, "{faults}: {}", rtu::hex(&got));
        let (frame, skips) = dlt_frames(&got);
        assert!(frame.is_none(), "{faults}");
        assert!(
            matches!(skips.first(), Some(SkipReason::Checksum { .. })),
            "{faults}: {skips:?}"
        );

        let (req, r) = rtu_read(5, 0, 4);
        s.write_all(&req).await.unwrap();
        let got = read_until(&mut s, SILENCE, |_| false).await;
        let scan = rtu::scan_response(&got, &r.expectation(5));
        assert!(
            matches!(
                scan,
                Scan::Skip {
                    reason: SkipReason::Checksum { .. },
                    ..
                }
            ),
            "{faults}: {scan:?}"
        );
        drop(sim);
    }

    // Noise before a valid frame.
    let sim = start(&fault_port("{ noise = { every = 1, bytes = 5 } }")).await;
    let mut s = connect(&sim, "f").await;
    s.write_all(&request).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), has_dlt_frame).await;
    let (frame, skips) = dlt_frames(&got);
    assert!(frame.is_some());
    assert_eq!(skips, vec![SkipReason::Noise]);
    assert_eq!(got.len(), 5 + 20);
    drop(sim);

    // Echo: the request comes back first, then the reply.
    let sim = start(&fault_port("{ echo = { every = 1 } }")).await;
    let mut s = connect(&sim, "f").await;
    s.write_all(&request).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| {
        b.len() >= request.len() + 20
    })
    .await;
    assert_eq!(&got[..request.len()], &request[..]);
    let Scan::Frame { frame, .. } = Dlt645Frame::scan(&got[request.len()..]) else {
        panic!("no reply after the echo: {}", rtu::hex(&got));
    };
    assert!(frame.control.is_response());
    drop(sim);

    // Abnormal: DL/T 645 ERR with the configured code, Modbus exception.
    let sim = start(&fault_port("{ abnormal = { every = 1, code = 6 } }")).await;
    let mut s = connect(&sim, "f").await;
    let (_, r) = dlt_exchange(&mut s, "000000000001", read("00010000"), Version::V2007).await;
    assert!(
        matches!(r, Some(Response::Abnormal { error, .. }) if error.0 == 0x06),
        "{r:?}"
    );
    let (req, r) = rtu_read(5, 0, 2);
    s.write_all(&req).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| b.len() >= 5).await;
    let Scan::Frame {
        frame: (_, resp), ..
    } = rtu::scan_response(&got, &r.expectation(5))
    else {
        panic!("{}", rtu::hex(&got));
    };
    assert_eq!(
        resp,
        rtu::Response::Exception {
            function: 3,
            code: rtu::ExceptionCode::ServerDeviceBusy
        }
    );
}

#[tokio::test]
async fn modbus_rtu_on_a_pty_pair() {
    let truth =
        std::env::temp_dir().join(format!("meterd-sim-rtu-truth-{}.jsonl", std::process::id()));
    let sim = start(&format!(
        r#"
truth = {:?}
[[port]]
name = "pty"
serial = "pty"
baud = 9600
[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "generic-modbus"
seed = 5
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000009"
profile = "dlt645-single-phase"
"#,
        truth.display().to_string()
    ))
    .await;
    let device = sim.port("pty").unwrap().device.clone().unwrap();
    let mut s = tokio_serial::SerialPortBuilderExt::open_native_async(tokio_serial::new(
        device.to_string_lossy(),
        9600,
    ))
    .unwrap();

    // Registers 0..=13: energy, export, gap (filled), voltage, current, power.
    let (req, r) = rtu_read(1, 0, 14);
    s.write_all(&req).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| b.len() >= 5 + 28).await;
    let Scan::Frame {
        frame: (unit, resp),
        ..
    } = rtu::scan_response(&got, &r.expectation(1))
    else {
        panic!("{}", rtu::hex(&got));
    };
    assert_eq!(unit, 1);
    let regs = resp.registers().unwrap().to_vec();
    let volts = f64::from(regs[10]) / 10.0;
    assert!((225.0..=235.0).contains(&volts), "{volts}");
    assert!(u32::from(regs[0]) << 16 | u32::from(regs[1]) > 0);
    // The truth log names the values exactly as scaled from the registers sent.
    let log = std::fs::read_to_string(&truth).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["response"], rtu::hex(&got));
    assert_eq!(line["framing"], "rtu");
    let voltage = line["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["quantity"] == "voltage.l1")
        .unwrap();
    assert_eq!(voltage["value"], format!("{:.1}", volts));
    assert_eq!(voltage["unit"], "V");
    let _ = std::fs::remove_file(&truth);

    // Unmapped register → exception 02; a write → exception 01; wrong unit → silence.
    let (req, r) = rtu_read(1, 500, 2);
    s.write_all(&req).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| b.len() >= 5).await;
    assert!(matches!(
        rtu::scan_response(&got, &r.expectation(1)),
        Scan::Frame {
            frame: (
                _,
                rtu::Response::Exception {
                    code: rtu::ExceptionCode::IllegalDataAddress,
                    ..
                }
            ),
            ..
        }
    ));
    let w = rtu::Request::WriteSingleRegister {
        address: 10,
        value: 1,
    };
    let mut req = Vec::new();
    rtu::encode_request(1, &w, &mut req).unwrap();
    s.write_all(&req).await.unwrap();
    let got = read_until(&mut s, Duration::from_secs(2), |b| b.len() >= 5).await;
    assert!(matches!(
        rtu::scan_response(&got, &w.expectation(1)),
        Scan::Frame {
            frame: (
                _,
                rtu::Response::Exception {
                    code: rtu::ExceptionCode::IllegalFunction,
                    ..
                }
            ),
            ..
        }
    ));
    let (req, _) = rtu_read(2, 0, 2);
    s.write_all(&req).await.unwrap();
    assert!(
        read_until(&mut s, SILENCE, |b| !b.is_empty())
            .await
            .is_empty()
    );

    // The DL/T 645 meter on the same line still answers.
    let (_, r) = dlt_exchange(&mut s, "000000000009", read("02010100"), Version::V2007).await;
    assert!(matches!(r, Some(Response::ReadData { .. })), "{r:?}");
}

#[tokio::test]
async fn wire_time_holds_replies_back() {
    let sim = start(
        r#"
[[port]]
name = "slow"
tcp = "127.0.0.1:0"
baud = 2400
parity = "even"
wire_time = true
reply_latency = "20ms"
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"

[[port]]
name = "paced"
tcp = "127.0.0.1:0"
baud = 2400
parity = "even"
wire_time = true
reply_latency = "20ms"
pace = true
[[port.meter]]
id = "paced-1"
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
"#,
    )
    .await;
    // 16-byte request, 20-byte reply at 11 bits per char and 2400 baud: 36 × 4.583 ms + 20 ms.
    let expected = Duration::from_micros(36 * 11 * 1_000_000 / 2400) + Duration::from_millis(20);
    for port in ["slow", "paced"] {
        let mut s = connect(&sim, port).await;
        let request = read("00010000")
            .to_frame("000000000001".parse().unwrap())
            .to_bytes(0);
        let t0 = Instant::now();
        s.write_all(&request).await.unwrap();
        let got = read_until(&mut s, Duration::from_secs(3), has_dlt_frame).await;
        let took = t0.elapsed();
        assert!(has_dlt_frame(&got), "{port}");
        eprintln!("wire time {port}: reply complete after {took:?}, line would take {expected:?}");
        assert!(took >= expected, "{port}: {took:?} < {expected:?}");
    }
}

#[tokio::test]
async fn energy_rises_with_simulated_time() {
    let sim = start(
        r#"
[clock]
start = "2026-11-27T00:00:00Z"
speed = 36000.0
[[port]]
name = "fast"
tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
"#,
    )
    .await;
    let mut s = connect(&sim, "fast").await;
    let mut last = 0i64;
    let mut rises = 0;
    for _ in 0..5 {
        let (_, r) = dlt_exchange(&mut s, "000000000001", read("0001FF00"), Version::V2007).await;
        let (di, p) = payload(&r);
        let values = decode_payload(di, &p);
        let m: Vec<i64> = values
            .iter()
            .map(|v| v.value.as_decimal().unwrap().mantissa())
            .collect();
        assert_eq!(m[0], m[1..].iter().sum::<i64>());
        assert!(m[0] >= last);
        rises += usize::from(m[0] > last);
        last = m[0];
        tokio::time::sleep(Duration::from_millis(100)).await; // 1 simulated hour
    }
    assert!(rises >= 4, "energy rose only {rises} times");
    // The meter clock runs on simulated time.
    let (_, r) = dlt_exchange(&mut s, "000000000001", read("04000101"), Version::V2007).await;
    let (di, p) = payload(&r);
    assert!(
        decode_payload(di, &p)[0]
            .value
            .to_string()
            .starts_with("2026-11-2")
    );
}

#[tokio::test]
async fn modbus_tcp_through_a_tokio_modbus_client() {
    use tokio_modbus::prelude::*;
    let sim = start(
        r#"
[[port]]
name = "mb"
modbus_tcp = "127.0.0.1:0"
[[port.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "eastron-sdm630"
[[port.meter]]
protocol = "modbus-tcp"
unit = 2
profile = "generic-modbus"
faults = { abnormal = { every = 2 } }
"#,
    )
    .await;
    let addr = sim.local_addr("mb").unwrap();
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();
    let regs = ctx.read_input_registers(0, 2).await.unwrap().unwrap();
    let v = f32::from_bits(u32::from(regs[0]) << 16 | u32::from(regs[1]));
    assert!((225.0..=235.0).contains(&v), "{v}");
    let regs = ctx.read_input_registers(0x46, 2).await.unwrap().unwrap();
    let hz = f32::from_bits(u32::from(regs[0]) << 16 | u32::from(regs[1]));
    assert!((49.95..=50.05).contains(&hz), "{hz}");
    assert_eq!(
        ctx.read_input_registers(0x200, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    ctx.set_slave(Slave(2));
    assert!(ctx.read_holding_registers(0, 2).await.unwrap().is_ok());
    assert_eq!(
        ctx.read_holding_registers(0, 2).await.unwrap(),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    // A unit with no meter stays silent.
    ctx.set_slave(Slave(9));
    assert!(
        tokio::time::timeout(SILENCE, ctx.read_holding_registers(0, 2))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_busy_address_is_an_error() {
    let sim = start(DLT_PORT).await;
    let addr = sim.local_addr("dlt").unwrap();
    let text = DLT_PORT.replace("127.0.0.1:0", &addr.to_string());
    let config = SimConfig::from_text(Path::new("test.toml"), &text).unwrap();
    let err = Simulator::start(config).await.unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
}
