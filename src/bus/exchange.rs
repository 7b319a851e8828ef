//! One transaction on the wire: request out, the one matching reply in, or a timeout.
//!
//! Rules this module enforces (each one a bug some peer gateway shipped):
//! - Stale input is discarded before every request, so a reply that arrives after its
//!   request timed out is never read as the answer to the next request.
//! - A reply is delimited by the codec's length rules, never by silence or by scanning for
//!   an end byte; noise and broken frames are skipped byte by byte and counted.
//! - A frame that is not the answer (another meter's address, another unit id, another
//!   function) is skipped whole and counted as foreign.
//! - With half-duplex adapters that echo what is sent, the echo is removed first. On a bus
//!   not configured for an echo (`echo = true`), our own request coming back whole is
//!   recognised ([`looks_like_echo`]), removed, and named in the trace with that hint, rather
//!   than skipped as noise byte by byte.
//! - The first byte must come within the response timeout, and each further byte within the
//!   inter-byte timeout; a reply that stalls is abandoned.
//! - Every exchange also has an absolute deadline ([`ExchangeTiming::reply_limit`]): the
//!   response timeout, plus the wire time of the longest frame the framing allows at the bus's
//!   character time (and of the echo), plus one inter-byte timeout of slack. A babbling bus
//!   (noise that never stops, each byte arriving within the inter-byte timeout) ends the
//!   exchange there as a timeout, so it cannot hold the bus task.
//!
//! It never retries (the bus task decides that) and never sleeps before sending (the bus task
//! keeps turnaround and Modbus silence).
//!
//! Where it sits: this is the exchange of the byte-stream transports (a serial port, raw TCP to
//! a serial device server: a [`Link`] from [`super::transport`]), which
//! [`super::transport::Transport`] calls and `meterd scan` calls directly. It stays beside the
//! transports rather than under them because it is about frames and timing, not about a kind
//! of link, and because its [`ExchangeStats`] are the wire counters the rest of the daemon
//! reads. Modbus TCP does not use it: tokio-modbus frames those requests itself.

use std::time::Duration;

use meter_protocols::dlt645::Dlt645Frame;
use meter_protocols::modbus::rtu;
use meter_protocols::{Scan, SkipReason};
use thiserror::Error;
use tokio::time::Instant;

use super::trace::{Direction, FrameTap};
use super::transport::Link;
use crate::meter::contract::{Framing, Reply};

/// Counters of one exchange, added to the bus's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExchangeStats {
    /// Bytes dropped before the request because they were left over from earlier traffic.
    pub stale_bytes: u64,
    /// Bytes of our own request echoed back by the adapter and removed.
    pub echo_bytes: u64,
    /// Noise bytes skipped while looking for the reply.
    pub noise_bytes: u64,
    /// Frame-shaped runs whose checksum or CRC was wrong.
    pub checksum_errors: u64,
    /// Valid frames that were not the answer (other address, unit or function).
    pub foreign_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// Bytes read.
    pub rx_bytes: u64,
}

impl ExchangeStats {
    /// Adds another exchange's counters.
    pub fn add(&mut self, o: &ExchangeStats) {
        self.stale_bytes += o.stale_bytes;
        self.echo_bytes += o.echo_bytes;
        self.noise_bytes += o.noise_bytes;
        self.checksum_errors += o.checksum_errors;
        self.foreign_frames += o.foreign_frames;
        self.tx_bytes += o.tx_bytes;
        self.rx_bytes += o.rx_bytes;
    }
}

/// A finished exchange.
#[derive(Debug, Clone)]
pub struct Exchanged {
    /// The verified reply.
    pub reply: Reply,
    /// The reply's bytes as received (the evidence), without preamble or noise.
    pub raw: Vec<u8>,
    /// From the last request byte written to the last reply byte read.
    pub latency: Duration,
    /// When the last reply byte arrived (for turnaround accounting).
    pub finished: Instant,
    /// Counters.
    pub stats: ExchangeStats,
}

/// Why an exchange failed.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// No reply (or no complete, matching reply) in time.
    #[error("{}{}", timeout_what(*.waited, *.cut_off), partial_note(.partial))]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// Bytes were still coming when the exchange's absolute deadline
        /// ([`ExchangeTiming::reply_limit`]) passed: noise on the bus, not silence.
        cut_off: bool,
        /// Bytes received that did not make a matching frame (hex in the message).
        partial: Vec<u8>,
        /// Counters so far.
        stats: ExchangeStats,
    },
    /// The link failed (port unplugged, connection reset); the bus reopens it.
    #[error("link failed: {source}")]
    Link {
        /// The I/O error.
        #[source]
        source: std::io::Error,
        /// Counters so far.
        stats: ExchangeStats,
    },
}

fn timeout_what(waited: Duration, cut_off: bool) -> String {
    if cut_off {
        format!(
            "reply not complete within {}: noise on the bus?",
            humantime::format_duration(round_ms(waited))
        )
    } else {
        format!("no reply within {waited:?}")
    }
}

/// `d` rounded down to whole milliseconds (for messages).
pub fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn partial_note(partial: &[u8]) -> String {
    if partial.is_empty() {
        String::new()
    } else {
        format!(
            " (received {} unusable bytes: {})",
            partial.len(),
            crate::hex_input::to_hex(partial)
        )
    }
}

impl ExchangeError {
    /// The counters gathered before the failure.
    pub fn stats(&self) -> ExchangeStats {
        match self {
            ExchangeError::Timeout { stats, .. } | ExchangeError::Link { stats, .. } => *stats,
        }
    }
}

/// Timeouts of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeTiming {
    /// Longest wait for the first reply byte after the request was written.
    pub response_timeout: Duration,
    /// Longest gap between reply bytes.
    pub inter_byte_timeout: Duration,
    /// The adapter echoes what we send.
    pub echo: bool,
    /// Wire time of one character at the bus's baud rate and framing ([`char_time`]); zero
    /// when unknown (then the absolute deadline allows no wire time).
    pub char_time: Duration,
}

/// The longest reply `framing` allows, in bytes: a DL/T 645 frame with the most data its
/// one-byte `L` can give, after the longest wake-up preamble; a Modbus RTU ADU of 256 bytes.
pub fn longest_reply(framing: &Framing) -> usize {
    use meter_protocols::dlt645::frame::{MAX_DATA, OVERHEAD};
    match framing {
        Framing::Dlt645 { .. } => 4 + OVERHEAD + MAX_DATA,
        Framing::ModbusRtu(_) => rtu::MAX_ADU_LEN,
        Framing::None => 0,
    }
}

/// Wire time of one character: start bit, data bits, parity bit, stop bits at `baud`.
pub fn char_time(baud: u32, data_bits: u8, parity: bool, stop_bits: u8) -> Duration {
    if baud == 0 {
        return Duration::ZERO;
    }
    let bits = 1 + u64::from(data_bits) + u64::from(parity) + u64::from(stop_bits);
    Duration::from_nanos(bits * 1_000_000_000 / u64::from(baud))
}

impl ExchangeTiming {
    /// The absolute deadline of one exchange, from the last request byte written: the response
    /// timeout, plus the wire time of the longest legal reply (and of the echo of `request_len`
    /// bytes on an echoing adapter), plus one inter-byte timeout of slack. However the bytes
    /// trickle in, an exchange never lasts longer.
    pub fn reply_limit(&self, framing: &Framing, request_len: usize) -> Duration {
        let echo = if self.echo { request_len } else { 0 };
        let chars = u32::try_from(longest_reply(framing) + echo).unwrap_or(u32::MAX);
        self.response_timeout
            .saturating_add(self.char_time.saturating_mul(chars))
            .saturating_add(self.inter_byte_timeout)
    }
}

/// What the trace says of an echo on a bus not configured for one.
pub const UNEXPECTED_ECHO: &str = "our own request came back: the adapter echoes what it sends; \
     set `echo = true` in this bus's timing (timing = { echo = true })";

/// The one echo check, shared with `meterd test` (see its doc there): the exchange names an
/// echo on a bus not configured with `echo = true` ([`UNEXPECTED_ECHO`]).
pub use crate::meter::commission::looks_like_echo;

/// Sends `request` and waits for the reply `framing` describes.
pub async fn exchange(
    link: &mut Link,
    request: &[u8],
    framing: &Framing,
    timing: ExchangeTiming,
    tap: &FrameTap,
) -> Result<Exchanged, ExchangeError> {
    let mut stats = ExchangeStats::default();
    let link_err = |source, stats| ExchangeError::Link { source, stats };
    stats.stale_bytes = link.discard_input().map_err(|e| link_err(e, stats))? as u64;
    if stats.stale_bytes > 0 {
        tap.note(&format!(
            "discarded {} stale bytes before the request",
            stats.stale_bytes
        ));
    }
    tap.frame(Direction::Tx, request);
    link.write_all(request)
        .await
        .map_err(|e| link_err(e, stats))?;
    stats.tx_bytes = request.len() as u64;
    let sent = Instant::now();
    if matches!(framing, Framing::None) {
        return Ok(Exchanged {
            reply: Reply::None,
            raw: Vec::new(),
            latency: Duration::ZERO,
            finished: sent,
            stats,
        });
    }

    let mut buf: Vec<u8> = Vec::with_capacity(64);
    let mut echo_left = if timing.echo { request } else { &[][..] };
    // On a bus not configured for an echo: the request, until it is seen coming back.
    let mut unexpected_echo = (!timing.echo).then_some(request);
    let mut deadline = sent + timing.response_timeout;
    // However the bytes trickle in (a babbling transceiver), the exchange ends here.
    let limit = sent + timing.reply_limit(framing, request.len());
    let mut chunk = [0u8; 256];
    loop {
        // Take what the buffer holds before reading more.
        if let Some(done) = take_reply(
            &mut buf,
            &mut echo_left,
            &mut unexpected_echo,
            framing,
            &mut stats,
            tap,
        ) {
            let (reply, raw) = done;
            let finished = Instant::now();
            tap.frame(Direction::Rx, &raw);
            return Ok(Exchanged {
                reply,
                raw,
                latency: finished - sent,
                finished,
                stats,
            });
        }
        let read = tokio::time::timeout_at(deadline, link.read_some(&mut chunk)).await;
        match read {
            Err(_) => {
                if !buf.is_empty() {
                    tap.frame(Direction::RxUnusable, &buf);
                }
                return Err(ExchangeError::Timeout {
                    waited: Instant::now() - sent,
                    cut_off: deadline == limit && stats.rx_bytes > 0,
                    partial: buf,
                    stats,
                });
            }
            Ok(Err(e)) => return Err(link_err(e, stats)),
            Ok(Ok(0)) => {
                return Err(link_err(
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "peer closed the connection",
                    ),
                    stats,
                ));
            }
            Ok(Ok(n)) => {
                stats.rx_bytes += n as u64;
                buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                deadline = (Instant::now() + timing.inter_byte_timeout).min(limit);
            }
        }
    }
}

/// Looks for the reply in `buf`, draining echo, noise and foreign frames as it goes.
/// `unexpected_echo` is the request on a bus not configured for an echo, until it is seen.
fn take_reply(
    buf: &mut Vec<u8>,
    echo_left: &mut &[u8],
    unexpected_echo: &mut Option<&[u8]>,
    framing: &Framing,
    stats: &mut ExchangeStats,
    tap: &FrameTap,
) -> Option<(Reply, Vec<u8>)> {
    // Echo: our own request comes back first on half-duplex adapters that echo.
    while !echo_left.is_empty() && !buf.is_empty() {
        let n = common_prefix(buf, echo_left);
        if n == 0 {
            // Not our echo after all (the adapter dropped it): stop expecting it.
            *echo_left = &[];
            break;
        }
        buf.drain(..n);
        *echo_left = echo_left.get(n..).unwrap_or(&[]);
        stats.echo_bytes += n as u64;
    }
    if !echo_left.is_empty() {
        return None;
    }
    loop {
        if buf.is_empty() {
            return None;
        }
        let scanned = match framing {
            Framing::Dlt645 {
                address,
                function,
                di,
            } => match Dlt645Frame::scan(buf) {
                Scan::Frame { frame, consumed } => {
                    // Abnormal replies carry no DI; normal ones start with it.
                    let same_item = match di {
                        Some(di) if !frame.control.is_abnormal() => {
                            let (wire, n) = di.to_wire();
                            frame.data.get(..n) == wire.get(..n)
                        }
                        _ => true,
                    };
                    let ok = frame.control.is_response()
                        && frame.control.code() == function.code()
                        && address.accepts_reply_from(frame.address)
                        && same_item;
                    Scanned::Frame {
                        reply: ok.then_some(Reply::Dlt645(frame)),
                        consumed,
                    }
                }
                Scan::Skip { count, reason } => Scanned::Skip { count, reason },
                Scan::Incomplete { .. } => Scanned::Wait,
            },
            Framing::ModbusRtu(expect) => match rtu::scan_response(buf, expect) {
                // scan_response already skips other units' and other functions' frames.
                Scan::Frame {
                    frame: (_, response),
                    consumed,
                } => Scanned::Frame {
                    reply: Some(Reply::ModbusRtu(response)),
                    consumed,
                },
                Scan::Skip { count, reason } => Scanned::Skip { count, reason },
                Scan::Incomplete { .. } => Scanned::Wait,
            },
            Framing::None => return None,
        };
        // The scanner refused the bytes as the reply: are they our own request coming back?
        let refused = matches!(
            scanned,
            Scanned::Skip { .. } | Scanned::Frame { reply: None, .. }
        );
        if let (true, Some(request)) = (refused, *unexpected_echo) {
            if looks_like_echo(request, buf) {
                buf.drain(..request.len());
                stats.echo_bytes += request.len() as u64;
                tap.skipped(request, UNEXPECTED_ECHO);
                *unexpected_echo = None;
                continue;
            }
            if buf.len() < request.len() && request.starts_with(buf) {
                // Perhaps the echo, still arriving: wait for the rest before skipping any.
                return None;
            }
        }
        match scanned {
            Scanned::Wait => return None,
            Scanned::Skip { count, reason } => {
                let count = count.min(buf.len());
                match reason {
                    SkipReason::Checksum { .. } => stats.checksum_errors += 1,
                    SkipReason::Foreign(_) => stats.foreign_frames += 1,
                    _ => stats.noise_bytes += count as u64,
                }
                tap.skipped(buf.get(..count).unwrap_or(&[]), &reason.to_string());
                buf.drain(..count);
            }
            Scanned::Frame { reply, consumed } => {
                let consumed = consumed.min(buf.len());
                let raw: Vec<u8> = buf.drain(..consumed).collect();
                // The evidence is the frame itself: strip the DL/T 645 wake-up preamble.
                let start = raw.iter().position(|b| *b != 0xFE).unwrap_or(0);
                let frame_bytes = raw.get(start..).unwrap_or(&[]).to_vec();
                match reply {
                    Some(reply) => return Some((reply, frame_bytes)),
                    None => {
                        stats.foreign_frames += 1;
                        tap.skipped(
                            &frame_bytes,
                            "valid frame, but not the answer to this request",
                        );
                    }
                }
            }
        }
    }
}

enum Scanned {
    Wait,
    Skip {
        count: usize,
        reason: SkipReason,
    },
    Frame {
        reply: Option<Reply>,
        consumed: usize,
    },
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_protocols::dlt645::{Address, Function};

    #[test]
    fn an_echo_is_the_whole_request_coming_back_first() {
        let request = [0x01, 0x04, 0x00, 0x00, 0x00, 0x12, 0x70, 0x07];
        let reply = [0x01, 0x04, 0x24, 0x43, 0x66];
        assert!(looks_like_echo(&request, &request));
        assert!(looks_like_echo(
            &request,
            &[&request[..], &reply[..]].concat()
        ));
        // Part of it is not (yet) an echo; nor is the reply, nor an empty request.
        assert!(!looks_like_echo(&request, &request[..5]));
        assert!(!looks_like_echo(&request, &reply));
        assert!(!looks_like_echo(&[], &reply));
    }

    #[test]
    fn the_absolute_deadline_allows_the_longest_reply_at_the_bus_rate() {
        // 2400 baud 8E1: 11 bits, 4.583 ms a character.
        let t = ExchangeTiming {
            response_timeout: Duration::from_millis(1000),
            inter_byte_timeout: Duration::from_millis(500),
            echo: false,
            char_time: char_time(2400, 8, true, 1),
        };
        assert_eq!(t.char_time, Duration::from_nanos(4_583_333));
        let dlt = Framing::Dlt645 {
            address: Address::BROADCAST,
            function: Function::ReadData,
            di: None,
        };
        // 4 FE + 12 + 255 = 271 characters: 1.242 s on the wire.
        assert_eq!(
            round_ms(t.reply_limit(&dlt, 16)),
            Duration::from_millis(1000 + 1242 + 500)
        );
        // The echo of a 16-byte request comes first on an echoing adapter.
        let echo = ExchangeTiming { echo: true, ..t };
        assert_eq!(
            round_ms(echo.reply_limit(&dlt, 16)),
            Duration::from_millis(1000 + 1315 + 500)
        );
        assert_eq!(longest_reply(&Framing::None), 0);
    }
}
