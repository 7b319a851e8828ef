//! A small scripted fake meter bus for tests: answers DL/T 645 and Modbus RTU requests on any
//! byte stream (loopback TCP or a pty), built from the protocols crate's encoders. The real
//! simulator lives in `src/sim/`; this fake exists so bus tests can script faults exactly.
#![allow(dead_code)]

pub mod binary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meter_protocols::Scan;
use meter_protocols::dlt645::{
    Address, DataIdentifier, Dlt645Frame, ErrorWord, Function, Request, Response, Version,
};
use meter_protocols::modbus::rtu::{self, ExceptionCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request the fake received.
#[derive(Debug, Clone)]
pub enum Req {
    /// DL/T 645.
    Dlt { addr: Address, req: Request },
    /// Modbus RTU.
    Modbus { unit: u8, req: rtu::Request },
}

/// What the fake does in answer.
#[derive(Debug, Clone)]
pub enum Act {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Wait.
    Wait(Duration),
}

/// Decides the answer to the n-th request (0-based), given its raw bytes.
pub type Script = Arc<dyn Fn(&Req, &[u8], usize) -> Vec<Act> + Send + Sync>;

/// Every request's raw bytes, in order.
pub type Log = Arc<Mutex<Vec<Vec<u8>>>>;

pub const DLT_ADDR: &str = "202107072529";

pub fn dlt_addr() -> Address {
    DLT_ADDR.parse().unwrap()
}

/// The standard answer of the fake's model meters: DL/T 645 meter `DLT_ADDR` has energy
/// 12345.67 kWh and voltage 229.8 V and nothing else (error word 02); any Modbus unit in
/// `units` answers register `a` with the value `a` (FC03/FC04), others stay silent.
pub fn model_reply(req: &Req, units: &[u8]) -> Option<Vec<u8>> {
    match req {
        Req::Dlt { addr, req } => {
            if *addr != dlt_addr() && !addr.has_wildcard() {
                return None;
            }
            let resp = match req {
                Request::ReadData { di, .. } => match di.to_string().as_str() {
                    "00010000" | "9010" => Response::ReadData {
                        di: *di,
                        payload: vec![0x67, 0x45, 0x23, 0x01],
                        more_follows: false,
                    },
                    "02010100" => Response::ReadData {
                        di: *di,
                        payload: vec![0x98, 0x22],
                        more_follows: false,
                    },
                    _ => Response::Abnormal {
                        function: req.function(),
                        error: ErrorWord(ErrorWord::NO_DATA),
                    },
                },
                Request::ReadAddress => Response::Address(dlt_addr()),
                _ => return None,
            };
            let version = match req {
                Request::ReadData { di, .. } => di.version(),
                _ => Version::V2007,
            };
            Some(resp.to_frame(dlt_addr(), version).to_bytes(2))
        }
        Req::Modbus { unit, req } => {
            if !units.contains(unit) {
                return None;
            }
            let response = match req {
                rtu::Request::ReadHoldingRegisters { address, count } => {
                    rtu::Response::HoldingRegisters((0..*count).map(|i| address + i).collect())
                }
                rtu::Request::ReadInputRegisters { address, count } => {
                    rtu::Response::InputRegisters((0..*count).map(|i| address + i).collect())
                }
                other => rtu::Response::Exception {
                    function: other.function() | 0x80,
                    code: ExceptionCode::IllegalFunction,
                },
            };
            let mut out = Vec::new();
            rtu::encode_response(*unit, &response, &mut out).unwrap();
            Some(out)
        }
    }
}

/// A script answering with [`model_reply`] at once.
pub fn model(units: &'static [u8]) -> Script {
    Arc::new(move |req, _, _| model_reply(req, units).map(Act::Send).into_iter().collect())
}

fn version_of(code: u8) -> Version {
    match code {
        0x01 | 0x02 | 0x03 | 0x04 | 0x0A | 0x0C | 0x0F | 0x10 => Version::V1997,
        _ => Version::V2007,
    }
}

/// Serves requests on `stream` until it closes.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, script: Script, log: Log) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 512];
    let mut n_req = 0usize;
    loop {
        // Take every complete request in the buffer.
        loop {
            if buf.is_empty() {
                break;
            }
            let dlt = matches!(buf.first(), Some(0x68 | 0xFE));
            let found: Option<(Req, usize)> = if dlt {
                match Dlt645Frame::scan(&buf) {
                    Scan::Frame { frame, consumed } => {
                        let v = version_of(frame.control.code());
                        match Request::from_frame(&frame, v) {
                            Ok(req) => Some((
                                Req::Dlt {
                                    addr: frame.address,
                                    req,
                                },
                                consumed,
                            )),
                            Err(_) => {
                                buf.drain(..consumed);
                                continue;
                            }
                        }
                    }
                    Scan::Skip { count, .. } => {
                        buf.drain(..count.min(buf.len()));
                        continue;
                    }
                    Scan::Incomplete { .. } => None,
                }
            } else {
                match rtu::parse_request(&buf) {
                    Scan::Frame {
                        frame: (unit, req),
                        consumed,
                    } => Some((Req::Modbus { unit, req }, consumed)),
                    Scan::Skip { count, .. } => {
                        buf.drain(..count.min(buf.len()));
                        continue;
                    }
                    Scan::Incomplete { .. } => None,
                }
            };
            let Some((req, consumed)) = found else { break };
            let raw: Vec<u8> = buf.drain(..consumed).collect();
            log.lock().unwrap().push(raw.clone());
            for act in script(&req, &raw, n_req) {
                match act {
                    Act::Send(bytes) => {
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                        let _ = stream.flush().await;
                    }
                    Act::Wait(d) => tokio::time::sleep(d).await,
                }
            }
            n_req += 1;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A pty master reads EIO while no one holds the slave end: wait for the opener.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// A fake on a loopback TCP port serving each connection with `script`; returns `host:port`.
pub async fn tcp_fake(script: Script, log: Log) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s, script.clone(), log.clone()));
        }
    });
    addr
}

pub fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn di(s: &str) -> DataIdentifier {
    DataIdentifier::parse(s).unwrap()
}

/// Reply frame bytes of a DL/T 645 read.
pub fn dlt_read_reply(d: &str, payload: &[u8]) -> Vec<u8> {
    Response::ReadData {
        di: di(d),
        payload: payload.to_vec(),
        more_follows: false,
    }
    .to_frame(dlt_addr(), Version::V2007)
    .to_bytes(0)
}

pub fn is_function(req: &Req, f: Function) -> bool {
    matches!(req, Req::Dlt { req, .. } if req.function() == f)
}

/// Value texts of a batch by quantity.
pub fn values(batch: &meterd::reading::ReadingBatch) -> HashMap<String, (String, String)> {
    batch
        .values
        .iter()
        .map(|v| {
            let text = match &v.value {
                Some(meterd::reading::ValueData::Number(n)) => n.to_string(),
                Some(meterd::reading::ValueData::Text(t)) => t.clone(),
                None => "null".into(),
            };
            (
                v.quantity.to_string(),
                (text, v.reason.clone().unwrap_or_default()),
            )
        })
        .collect()
}

/// A pty pair for tests: the master end as an async file and the slave's path; `None` (with
/// the reason printed) when this machine has no usable pty, so the caller can skip.
///
/// Tries `/dev/pts/ptmx` of the mounted devpts first: on some containers `/dev/ptmx` belongs to
/// another devpts instance, and the slave it names does not exist under `/dev/pts` (which also
/// defeats `SerialStream::pair` and socat there).
pub fn pty() -> Option<(tokio::fs::File, String)> {
    use std::os::fd::FromRawFd;
    for path in [c"/dev/pts/ptmx", c"/dev/ptmx"] {
        // SAFETY: plain libc calls on a fd we own; the fd is handed to File, which closes it.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            if fd < 0 {
                continue;
            }
            let file = std::fs::File::from_raw_fd(fd);
            let unlock: libc::c_int = 0;
            let mut n: libc::c_uint = 0;
            if libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) != 0
                || libc::ioctl(fd, libc::TIOCGPTN, &mut n) != 0
            {
                continue;
            }
            let slave = format!("/dev/pts/{n}");
            if std::path::Path::new(&slave).exists() {
                return Some((tokio::fs::File::from_std(file), slave));
            }
        }
    }
    eprintln!("skipped: no usable pty on this machine (/dev/pts/ptmx and /dev/ptmx failed)");
    None
}
