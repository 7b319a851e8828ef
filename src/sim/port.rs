//! A byte-stream port of the simulator: a serial device, a pty, or one connection to a raw
//! TCP listener, with every meter on it (multi-drop; DL/T 645 and Modbus RTU may share it).
//!
//! This module owns the meters' end of the line: finding request frames in the byte stream
//! (length-delimited by the protocols crate's scanners, partial input dropped after an idle
//! gap), choosing the addressed meter (only it answers; a wrong address, a broadcast or an
//! ambiguous wildcard gets silence), applying the meter's faults to the reply bytes, and
//! holding the reply back as a real line would (wire time of request and reply at the
//! configured baud and framing, reply latency, byte pacing). It never computes values (the
//! meter does) and never parses its own configuration.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use meter_protocols::Scan;
use meter_protocols::dlt645::Dlt645Frame;
use meter_protocols::dlt645::Request as DltRequest;
use meter_protocols::modbus::rtu::{
    self, ExceptionCode, Request as RtuRequest, Response as RtuResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::clock::SimClock;
use super::config::PortConfig;
use super::fault::{FaultKind, FiredFaults, SplitMix64, noise_byte};
use super::meter::{SimMeter, TruthValue};
use super::relay::{ControlEvent, ControlLog, ControlLogLine};
use super::truth::{TruthLine, TruthLog};
use crate::clock::{rfc3339_ms, wall_clock_ms};

/// Partial input is dropped after this much silence (DL/T 645 allows Tb ≤ 500 ms between
/// bytes; requests from a gateway arrive in one burst).
const IDLE_DROP: Duration = Duration::from_millis(200);

/// What a port shares between its connections.
#[derive(Debug)]
pub struct PortShared {
    /// Port name.
    pub name: String,
    /// Line settings and timing.
    pub config: PortConfig,
    /// The meters on the port.
    pub meters: Vec<Arc<SimMeter>>,
    /// Simulated time.
    pub clock: SimClock,
    /// Ground-truth log.
    pub truth: Option<Arc<TruthLog>>,
    /// Log of every broadcast time set received.
    pub time_sets: Option<Arc<TruthLog>>,
    /// Control log: every `1C`/`03` frame a meter received.
    pub control_log: Option<Arc<ControlLog>>,
}

/// A request found at the start of the buffer.
enum Found {
    Dlt645(Dlt645Frame, usize),
    Rtu(u8, RtuRequest, usize),
    Wait,
    Skip(usize),
}

/// A reply ready for the wire.
struct Outgoing<'a> {
    meter: &'a SimMeter,
    framing: &'static str,
    bytes: Vec<u8>,
    values: Vec<TruthValue>,
    fired: FiredFaults,
}

impl PortShared {
    fn has_dlt645(&self) -> bool {
        self.meters.iter().any(|m| m.protocol.is_dlt645())
    }

    fn has_rtu(&self) -> bool {
        self.meters.iter().any(|m| !m.protocol.is_dlt645())
    }

    /// A broadcast (never answered): a time sync goes to every DL/T 645 meter of the port,
    /// each applying it within its own limits, and every one is logged.
    fn broadcast(&self, frame: &Dlt645Frame) {
        let t = self.clock.now();
        for meter in self
            .meters
            .iter()
            .filter(|m| m.protocol.is_dlt645() && !m.is_dead(t))
        {
            let Some(version) = meter.dlt645_version() else {
                continue;
            };
            let Ok(DltRequest::BroadcastTimeSync { time }) = DltRequest::from_frame(frame, version)
            else {
                continue;
            };
            let set = meter.events.time_sync(&meter.id, time, t);
            tracing::info!(meter = %meter.id, accepted = set.accepted, refused = ?set.refused, sent = %set.sent, "broadcast time sync received");
            if let Some(log) = &self.time_sets
                && let Err(e) = log.write_json(&set)
            {
                tracing::warn!(error = %e, "cannot write the time-set log");
            }
        }
    }

    /// Looks for one request at the start of `buf`.
    fn find(&self, buf: &[u8]) -> Found {
        let (dlt, rtu) = (self.has_dlt645(), self.has_rtu());
        let d = dlt.then(|| Dlt645Frame::scan(buf));
        let m = rtu.then(|| rtu::parse_request(buf));
        if let Some(Scan::Frame { frame, consumed }) = d {
            return Found::Dlt645(frame, consumed);
        }
        if let Some(Scan::Frame {
            frame: (unit, req),
            consumed,
        }) = m
        {
            return Found::Rtu(unit, req, consumed);
        }
        if matches!(d, Some(Scan::Incomplete { .. })) || matches!(m, Some(Scan::Incomplete { .. }))
        {
            return Found::Wait;
        }
        match (skip_count(d.as_ref()), skip_count(m.as_ref())) {
            (Some(n), None) => Found::Skip(n.max(1)),
            (None, Some(n)) => Found::Skip(n.max(1)),
            _ => Found::Skip(1),
        }
    }

    /// The reply (before timing) to a DL/T 645 frame, or `None` for silence.
    fn answer_dlt645(&self, frame: &Dlt645Frame) -> Option<Outgoing<'_>> {
        if frame.control.is_response() {
            return None;
        }
        if frame.address.is_broadcast() {
            self.broadcast(frame);
            return None;
        }
        let addr = frame.address;
        let mut matching = self.meters.iter().filter(|m| {
            m.address.is_some_and(|own| {
                own == addr || (addr.has_wildcard() && addr.accepts_reply_from(own))
            })
        });
        let meter = matching.next()?;
        if matching.next().is_some() {
            return None; // an ambiguous wildcard: real meters would collide
        }
        if addr.has_wildcard()
            && self
                .meters
                .iter()
                .filter(|m| m.protocol.is_dlt645())
                .count()
                != 1
        {
            return None;
        }
        let version = meter.dlt645_version()?;
        let own = meter.address?;
        let request = DltRequest::from_frame(frame, version).ok()?;
        let t = self.clock.now();
        if meter.is_dead(t) {
            return None;
        }
        let control = meter.respond_control(&request, t);
        let (mut response, mut values, event) = match control {
            Some((response, event)) => (response, Vec::new(), Some(event)),
            None => {
                let (response, values) = meter.respond_dlt645(&request, t)?;
                (response, values, None)
            }
        };
        let fired = lock_faults(meter)?.next(true);
        if let Some(event) = &event {
            self.log_control(meter, frame, event, t, !fired.has(FaultKind::NoReply));
        }
        if fired.has(FaultKind::NoReply) {
            return None;
        }
        if let Some(code) = fired.abnormal_code {
            response = SimMeter::dlt645_abnormal(request.function(), code);
            values.clear();
        }
        let preamble = usize::from(meter.preamble);
        let mut bytes = response.to_frame(own, version).to_bytes(preamble);
        // Layout after the preamble: 68 A0..A5 68 C L DATA CS 16.
        let data_start = preamble + 10;
        let cs_at = bytes.len().saturating_sub(2);
        if fired.has(FaultKind::Corrupt) {
            let at = if cs_at > data_start {
                lock_faults(meter)?.pick(data_start..cs_at)
            } else {
                cs_at
            };
            if let Some(b) = bytes.get_mut(at) {
                *b = !*b;
            }
        }
        if fired.has(FaultKind::BadChecksum)
            && let Some(b) = bytes.get_mut(cs_at)
        {
            *b = b.wrapping_add(1);
        }
        Some(Outgoing {
            meter,
            framing: "dlt645",
            bytes,
            values,
            fired,
        })
    }

    /// The reply (before timing) to a Modbus RTU request, or `None` for silence.
    fn answer_rtu(&self, unit: u8, request: &RtuRequest) -> Option<Outgoing<'_>> {
        if unit == 0 {
            return None; // broadcast: never answered
        }
        let meter = self
            .meters
            .iter()
            .find(|m| m.unit == Some(unit) && !m.protocol.is_dlt645())?;
        let t = self.clock.now();
        if meter.is_dead(t) {
            return None;
        }
        let (mut response, mut values) = meter.respond_modbus(request, t);
        let fired = lock_faults(meter)?.next(false);
        if fired.has(FaultKind::NoReply) {
            return None;
        }
        if let Some(code) = fired.abnormal_code {
            response = RtuResponse::Exception {
                function: request.function(),
                code: ExceptionCode::from_u8(code),
            };
            values.clear();
        }
        let mut bytes = Vec::new();
        rtu::encode_response(unit, &response, &mut bytes).ok()?;
        let len = bytes.len();
        if fired.has(FaultKind::Corrupt) {
            // Data bytes after the byte count when there are any, else the PDU.
            let end = len.saturating_sub(2);
            let range = if len > 5 { 3..end } else { 1.min(end)..end };
            let at = lock_faults(meter)?.pick(range);
            if let Some(b) = bytes.get_mut(at) {
                *b = !*b;
            }
        }
        if fired.has(FaultKind::BadChecksum)
            && let Some(b) = bytes.get_mut(len.saturating_sub(2))
        {
            *b ^= 0xFF;
        }
        Some(Outgoing {
            meter,
            framing: "rtu",
            bytes,
            values,
            fired,
        })
    }

    /// Logs one control frame received (before any reply is written).
    fn log_control(
        &self,
        meter: &SimMeter,
        frame: &Dlt645Frame,
        event: &ControlEvent,
        sim_time: i64,
        replied: bool,
    ) {
        let Some(log) = &self.control_log else {
            return;
        };
        let line = ControlLogLine {
            time: rfc3339_ms(wall_clock_ms()),
            sim_time: rfc3339_ms(sim_time),
            meter_time: &event.meter_time,
            port: &self.name,
            meter: &meter.id,
            function: event.function,
            action: &event.action,
            level: event.level,
            deadline: event.deadline.as_deref(),
            request: rtu::hex(&frame.to_bytes(0)),
            accepted: event.accepted,
            error: event.error.as_deref(),
            before: event.before,
            after: event.after,
            replied,
        };
        if let Err(e) = log.write(&line) {
            tracing::warn!(port = %self.name, "cannot write the control log {}: {e}", log.path().display());
        }
    }

    /// Logs one sent reply.
    fn log(&self, out: &Outgoing<'_>, request: &[u8], sent: &[u8], sim_time: i64) {
        let Some(truth) = &self.truth else {
            return;
        };
        let broken = out.fired.has(FaultKind::Corrupt)
            || out.fired.has(FaultKind::BadChecksum)
            || out.fired.has(FaultKind::Babble);
        let line = TruthLine {
            time: rfc3339_ms(wall_clock_ms()),
            sim_time: rfc3339_ms(sim_time),
            port: &self.name,
            meter: &out.meter.id,
            protocol: out.meter.protocol.name(),
            framing: out.framing,
            request: rtu::hex(request),
            response: rtu::hex(sent),
            echo: out.fired.has(FaultKind::Echo).then(|| rtu::hex(request)),
            faults: &out.fired.kinds,
            valid: !broken,
            values: &out.values,
        };
        if let Err(e) = truth.write(&line) {
            tracing::warn!(port = %self.name, "cannot write the truth log {}: {e}", truth.path().display());
        }
    }
}

fn skip_count<F>(scan: Option<&Scan<F>>) -> Option<usize> {
    match scan {
        Some(Scan::Skip { count, .. }) => Some(*count),
        _ => None,
    }
}

fn lock_faults(meter: &SimMeter) -> Option<std::sync::MutexGuard<'_, super::fault::FaultState>> {
    meter.faults.lock().ok()
}

/// Sleeps until `at`, or returns false if the simulator is stopping.
async fn sleep_until(at: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(at) => true,
        _ = stop.changed() => false,
    }
}

/// A meter babbling (the `babble` fault): random bytes without pause instead of its reply.
struct Babble {
    /// Noise that cannot start a DL/T 645 frame.
    dlt645: bool,
    /// When it stops by itself (`None`: when the next request arrives).
    until: Option<Instant>,
    rng: SplitMix64,
}

/// Bytes of noise per write while babbling.
const BABBLE_CHUNK: usize = 8;

/// What became of a request.
enum Replied {
    /// Answered (or silent); go on.
    Done,
    /// The meter babbles instead.
    Babble(Babble),
    /// The stream broke or the simulator stops.
    Stop,
}

/// Serves one byte stream until it closes or the simulator stops.
pub async fn serve_stream<S>(mut stream: S, port: Arc<PortShared>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut first_at = Instant::now();
    let mut scratch = [0u8; 512];
    let mut babble: Option<Babble> = None;
    // Noise is sent at the line's rate when wire time is emulated, else a chunk every 5 ms.
    let babble_every = if port.config.wire_time {
        port.config
            .wire_time_of(BABBLE_CHUNK)
            .max(Duration::from_millis(1))
    } else {
        Duration::from_millis(5)
    };
    loop {
        if *stop.borrow() {
            return;
        }
        // Take every complete request already buffered.
        loop {
            match port.find(&buf) {
                Found::Wait => break,
                Found::Skip(n) => {
                    buf.drain(..n.min(buf.len()));
                }
                Found::Dlt645(frame, consumed) => {
                    let request: Vec<u8> = buf.drain(..consumed.min(buf.len())).collect();
                    let out = port.answer_dlt645(&frame);
                    match reply(&mut stream, &port, out, &request, first_at, &mut stop).await {
                        Replied::Done => {}
                        Replied::Babble(b) => babble = Some(b),
                        Replied::Stop => return,
                    }
                }
                Found::Rtu(unit, req, consumed) => {
                    let request: Vec<u8> = buf.drain(..consumed.min(buf.len())).collect();
                    let out = port.answer_rtu(unit, &req);
                    match reply(&mut stream, &port, out, &request, first_at, &mut stop).await {
                        Replied::Done => {}
                        Replied::Babble(b) => babble = Some(b),
                        Replied::Stop => return,
                    }
                }
            }
            if buf.is_empty() {
                break;
            }
        }
        if babble
            .as_ref()
            .is_some_and(|b| b.until.is_some_and(|t| Instant::now() >= t))
        {
            babble = None;
        }
        // The idle timer only matters with a partial request buffered: an idle line is not
        // woken five times a second for nothing.
        let partial = !buf.is_empty();
        let reading = async {
            if partial {
                tokio::time::timeout(IDLE_DROP, stream.read(&mut scratch)).await
            } else {
                Ok(stream.read(&mut scratch).await)
            }
        };
        let read = tokio::select! {
            r = reading => r,
            () = tokio::time::sleep(babble_every), if babble.is_some() => {
                if let Some(b) = babble.as_mut() {
                    let noise: Vec<u8> =
                        (0..BABBLE_CHUNK).map(|_| noise_byte(&mut b.rng, b.dlt645)).collect();
                    if write(&mut stream, &noise).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            _ = stop.changed() => return,
        };
        match read {
            Err(_) => buf.clear(), // idle: drop a partial frame
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                let received = scratch.get(..n).unwrap_or_default();
                // An echoing adapter hands the gateway its own bytes back as they go out.
                if port.config.echo && write(&mut stream, received).await.is_err() {
                    return;
                }
                // The gateway moved on: a babbling meter falls quiet when the next request
                // comes (so the other meters on the line can be heard).
                babble = None;
                if buf.is_empty() {
                    first_at = Instant::now();
                }
                buf.extend_from_slice(received);
            }
            // A pty master reads EIO while nobody holds the other end; wait for a reopen.
            Ok(Err(e)) if e.raw_os_error() == Some(5) || e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(port = %port.name, "read failed, port stops: {e}");
                return;
            }
        }
    }
}

/// Sends one reply with its timing and faults; false when the stream broke or we stop.
async fn reply<S>(
    stream: &mut S,
    port: &PortShared,
    out: Option<Outgoing<'_>>,
    request: &[u8],
    received_at: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Replied
where
    S: AsyncWrite + Unpin,
{
    let Some(mut out) = out else {
        return Replied::Done;
    };
    let sim_time = port.clock.now();
    let cfg = &port.config;
    if out.fired.has(FaultKind::Babble) {
        // No reply at all: noise, from now on, instead of it.
        let seed = out
            .bytes
            .iter()
            .fold(0u64, |a, b| a.rotate_left(8) ^ u64::from(*b));
        let babble = Babble {
            dlt645: out.framing == "dlt645",
            until: out.fired.babble_for.map(|d| Instant::now() + d),
            rng: SplitMix64::new(seed ^ sim_time.unsigned_abs()),
        };
        out.values.clear();
        port.log(&out, request, &[], sim_time);
        return Replied::Babble(babble);
    }
    if out.fired.has(FaultKind::Echo) && write(stream, request).await.is_err() {
        return Replied::Stop;
    }
    let mut ready = received_at;
    if cfg.wire_time {
        ready += cfg.wire_time_of(request.len());
    }
    ready += cfg.reply_latency + out.fired.delay;
    let mut sent = out.fired.noise.clone();
    sent.extend_from_slice(&out.bytes);
    if cfg.wire_time && cfg.pace {
        for (i, b) in sent.iter().enumerate() {
            if !sleep_until(ready + cfg.wire_time_of(i + 1), stop).await {
                return Replied::Stop;
            }
            if write(stream, &[*b]).await.is_err() {
                return Replied::Stop;
            }
        }
    } else {
        let at = if cfg.wire_time {
            ready + cfg.wire_time_of(sent.len())
        } else {
            ready
        };
        if !sleep_until(at, stop).await || write(stream, &sent).await.is_err() {
            return Replied::Stop;
        }
    }
    port.log(&out, request, &sent, sim_time);
    Replied::Done
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Accepts raw TCP connections ("serial device server") and serves each until it closes.
pub async fn serve_tcp(
    listener: TcpListener,
    port: Arc<PortShared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_stream(stream, Arc::clone(&port), stop.clone()));
            }
            Err(e) => {
                tracing::warn!(port = %port.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
