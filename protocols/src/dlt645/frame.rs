//! DL/T 645 framing: find, verify, decode and encode one frame.
//!
//! Wire form: `FE×n | 68 | A0..A5 | 68 | C | L | DATA (each byte +0x33) | CS | 16`, with
//! CS = sum mod 256 from the first `68` through the last data byte (the `FE` preamble is not
//! summed). This module owns exactly that: [`Dlt645Frame::scan`] for a streaming receive buffer,
//! [`Dlt645Frame::encode`] for the transmit side, [`checksum`], and [`inspect`] for humans
//! looking at a capture. A [`Dlt645Frame`] holds its data **unmasked** (0x33 already removed).
//!
//! It never delimits a frame by searching for `0x16` (masked data, addresses and checksums
//! contain `0x16` and `0x68` all the time): the end is always found from `L`. It never
//! interprets the data field (that is [`super::request`] / [`super::response`]) and never
//! consumes bytes itself: the caller drains what [`Scan`] says.

use std::fmt;

use nom::bytes::streaming::take;
use nom::number::streaming::u8 as byte;
use nom::{IResult, Parser};

use super::DATA_OFFSET;
use super::address::Address;
use super::control::ControlCode;
use crate::scan::{Scan, SkipReason};

/// The frame start byte, sent twice (before and after the address).
pub const START: u8 = 0x68;
/// The frame end byte.
pub const END: u8 = 0x16;
/// The wake-up preamble byte sent before a frame.
pub const PREAMBLE: u8 = 0xFE;
/// Bytes from the first `68` through `L`: `68 A0..A5 68 C L`.
pub const HEADER_LEN: usize = 10;
/// Bytes of a frame that are not data: header, CS and `16` (a frame is `OVERHEAD + L` bytes).
pub const OVERHEAD: usize = 12;
/// The most data bytes a frame can carry (`L` is one byte).
pub const MAX_DATA: usize = 255;
/// How many `FE` bytes with nothing after them [`Dlt645Frame::scan`] keeps waiting on before
/// it skips them (so an idle line sending `FE` cannot grow a receive buffer without bound).
pub const MAX_IDLE_PREAMBLE: usize = 16;

/// Offset of the second `68` from the first.
const SECOND_START_OFFSET: usize = 7;

/// One DL/T 645 frame, data unmasked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dlt645Frame {
    /// The meter address (A0..A5).
    pub address: Address,
    /// The control byte.
    pub control: ControlCode,
    /// The data field with the 0x33 offset removed. At most [`MAX_DATA`] bytes are encoded.
    pub data: Vec<u8>,
}

/// Sum mod 256 of `bytes` (the DL/T 645 CS over `68 … last data byte`).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// The fixed header after the first `68`: six address bytes and the second `68`.
fn address_part(i: &[u8]) -> IResult<&[u8], (&[u8], u8)> {
    (take(6usize), byte).parse(i)
}

/// The control byte and `L`.
fn control_and_length(i: &[u8]) -> IResult<&[u8], (u8, u8)> {
    (byte, byte).parse(i)
}

/// The masked data, CS and end byte, given `L`.
fn body(i: &[u8], len: u8) -> IResult<&[u8], (&[u8], u8, u8)> {
    (take(usize::from(len)), byte, byte).parse(i)
}

/// The offset of the first complete, verified frame starting at or after `from`, if any.
///
/// Used when the candidate at the start of the buffer is still incomplete: a `68 … 68 C L`
/// run of line noise with a large `L` would otherwise hold back a real reply behind it until
/// 267 bytes arrived. A complete frame with a good checksum and end byte inside the bytes of a
/// genuine, still-incomplete frame would need `68` at +0 and +7, `16` at the end and a matching
/// sum by chance, so preferring the complete frame is safe in practice.
fn later_frame(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    tail.iter().enumerate().find_map(|(i, &b)| {
        if b != START {
            return None;
        }
        let cand = tail.get(i..)?;
        if *cand.get(SECOND_START_OFFSET)? != START {
            return None;
        }
        let data_end = HEADER_LEN + usize::from(*cand.get(9)?);
        let (&cs, &end) = (cand.get(data_end)?, cand.get(data_end + 1)?);
        (end == END && checksum(cand.get(..data_end)?) == cs).then_some(from + i)
    })
}

impl Dlt645Frame {
    /// A frame from its parts; `data` is unmasked.
    pub fn new(address: Address, control: ControlCode, data: Vec<u8>) -> Self {
        Self {
            address,
            control,
            data,
        }
    }

    /// Looks for one frame at the start of `buf`.
    ///
    /// - Leading `FE` bytes followed by `68` are preamble and are counted in `consumed`.
    /// - A run of bytes before the next `68` (or the end of `buf`) that is not preamble is
    ///   skipped in one [`Scan::Skip`] with [`SkipReason::Noise`] (or [`SkipReason::Preamble`]
    ///   for more than [`MAX_IDLE_PREAMBLE`] `FE` bytes with nothing after them).
    /// - At a `68`: the second `68` must sit at +7, `L` at +9, and the scanner waits for
    ///   `12 + L` bytes ([`Scan::Incomplete`] says exactly how many more are needed).
    /// - A wrong second `68`, checksum or end byte gives [`Scan::Skip`] through that `68`
    ///   (count 1 without preamble, preamble + 1 with), so the caller resyncs on the next byte
    ///   and a checksum error is counted once, not once per preamble byte.
    ///
    /// While the candidate at the start is incomplete, a complete verified frame later in the
    /// buffer wins: the bytes before it are skipped as [`SkipReason::Noise`], so a noise
    /// `68 … 68 C L` with a large `L` cannot hold back a real reply behind it. Otherwise the
    /// scanner waits for up to 267 bytes; the bus task's inter-byte timeout (Tb ≤ 500 ms)
    /// ends such a wait.
    pub fn scan(buf: &[u8]) -> Scan<Dlt645Frame> {
        let fe = buf.iter().take_while(|&&b| b == PREAMBLE).count();
        match buf.get(fe) {
            None if fe > MAX_IDLE_PREAMBLE => Scan::Skip {
                count: fe,
                reason: SkipReason::Preamble,
            },
            None => Scan::Incomplete { needed: 1 },
            Some(&START) => Self::scan_at(buf, fe),
            Some(_) => {
                let run = buf
                    .iter()
                    .position(|&b| b == START)
                    .unwrap_or(buf.len())
                    .max(1);
                Scan::Skip {
                    count: run,
                    reason: SkipReason::Noise,
                }
            }
        }
    }

    /// Scans a frame whose first `68` is at `start` (after `start` preamble bytes).
    fn scan_at(buf: &[u8], start: usize) -> Scan<Dlt645Frame> {
        let Some(frame) = buf.get(start..) else {
            return Scan::Incomplete { needed: 1 };
        };
        let avail = frame.len();
        let skip = |reason| Scan::Skip {
            count: start.saturating_add(1),
            reason,
        };
        let incomplete = |upto: usize| match later_frame(buf, start.saturating_add(1)) {
            Some(at) => Scan::Skip {
                count: at,
                reason: SkipReason::Noise,
            },
            None => Scan::Incomplete {
                needed: upto.saturating_sub(avail).max(1),
            },
        };
        let after_start = frame.get(1..).unwrap_or(&[]);
        let Ok((rest, (addr, second))) = address_part(after_start) else {
            return incomplete(SECOND_START_OFFSET + 1);
        };
        if second != START {
            return skip(SkipReason::Malformed("second 0x68 missing at offset 7"));
        }
        let Ok((rest, (control, len))) = control_and_length(rest) else {
            return incomplete(HEADER_LEN);
        };
        let total = OVERHEAD + usize::from(len);
        let Ok((_, (masked, cs, end))) = body(rest, len) else {
            return incomplete(total);
        };
        let expected = checksum(frame.get(..HEADER_LEN + usize::from(len)).unwrap_or(&[]));
        if expected != cs {
            return skip(SkipReason::Checksum {
                expected: u16::from(expected),
                found: u16::from(cs),
            });
        }
        if end != END {
            return skip(SkipReason::Malformed("end byte is not 0x16"));
        }
        let Ok(addr) = <[u8; 6]>::try_from(addr) else {
            return skip(SkipReason::Malformed("address is not 6 bytes"));
        };
        Scan::Frame {
            frame: Dlt645Frame {
                address: Address::from_wire(addr),
                control: ControlCode::from_byte(control),
                data: masked.iter().map(|b| b.wrapping_sub(DATA_OFFSET)).collect(),
            },
            consumed: start + total,
        }
    }

    /// Appends `FE × preamble` and the frame (data masked with +0x33, CS, `16`) to `out`.
    ///
    /// `L` is one byte: data beyond [`MAX_DATA`] bytes is not encoded (check
    /// [`Dlt645Frame::is_encodable`] first if the data comes from outside).
    pub fn encode(&self, preamble: usize, out: &mut Vec<u8>) {
        let data = self.data.get(..MAX_DATA).unwrap_or(&self.data);
        let len = u8::try_from(data.len()).unwrap_or(u8::MAX);
        out.reserve(preamble + OVERHEAD + data.len());
        out.extend(std::iter::repeat_n(PREAMBLE, preamble));
        let start = out.len();
        out.push(START);
        out.extend_from_slice(&self.address.to_wire());
        out.push(START);
        out.push(self.control.byte());
        out.push(len);
        out.extend(data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
        let cs = checksum(out.get(start..).unwrap_or(&[]));
        out.push(cs);
        out.push(END);
    }

    /// The encoded frame with `preamble` leading `FE` bytes.
    pub fn to_bytes(&self, preamble: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(preamble, &mut out);
        out
    }

    /// True when the data fits the one-byte `L` field.
    pub fn is_encodable(&self) -> bool {
        self.data.len() <= MAX_DATA
    }
}

/// The checksum as a technician sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumCheck {
    /// Sum mod 256 computed over `68 … last data byte` as received.
    pub expected: u8,
    /// The CS byte the frame carries.
    pub found: u8,
    /// `expected == found`.
    pub ok: bool,
}

/// The end byte as a technician sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndCheck {
    /// The byte where `16` belongs.
    pub found: u8,
    /// `found == 0x16`.
    pub ok: bool,
}

/// Everything [`inspect`] could read from a frame, right or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInspection {
    /// `FE` bytes directly before the first `68`.
    pub preamble: usize,
    /// Offset of the first `68` in the input (preamble plus any other leading bytes).
    pub start: usize,
    /// The address field.
    pub address: Address,
    /// The control byte.
    pub control: ControlCode,
    /// The declared data length `L`.
    pub length: u8,
    /// The data field, 0x33 removed.
    pub data: Vec<u8>,
    /// Computed vs carried checksum.
    pub checksum: ChecksumCheck,
    /// The end byte.
    pub end: EndCheck,
    /// Bytes after the end byte.
    pub trailing: usize,
}

impl FrameInspection {
    /// Leading bytes that are neither preamble nor frame.
    pub fn noise(&self) -> usize {
        self.start.saturating_sub(self.preamble)
    }

    /// True when checksum and end byte are both right.
    pub fn is_valid(&self) -> bool {
        self.checksum.ok && self.end.ok
    }

    /// The frame, if it is valid.
    pub fn frame(&self) -> Option<Dlt645Frame> {
        self.is_valid().then(|| Dlt645Frame {
            address: self.address,
            control: self.control,
            data: self.data.clone(),
        })
    }
}

/// Why [`inspect`] could not lay out a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The input is empty.
    #[error("empty input: no bytes to inspect")]
    Empty,
    /// No `68` anywhere in the input.
    #[error("no frame start 0x68 found in {len} bytes")]
    NoStart {
        /// Input length.
        len: usize,
    },
    /// The header stops before `L`.
    #[error("truncated: header (68 A0..A5 68 C L) needs 10 bytes after the preamble, got {got}")]
    TruncatedHeader {
        /// Bytes from the first `68` to the end of the input.
        got: usize,
    },
    /// The byte at +7 from the first `68` is not `68`.
    #[error("second 0x68 expected at offset 7, found 0x{found:02X}")]
    SecondStart {
        /// The byte found there.
        found: u8,
    },
    /// Fewer bytes than `12 + L`.
    #[error(
        "truncated: frame declares L={length} so needs {needed} bytes after the preamble, got {got}"
    )]
    Truncated {
        /// The declared `L`.
        length: u8,
        /// `12 + L`.
        needed: usize,
        /// Bytes from the first `68` to the end of the input.
        got: usize,
    },
}

/// Lays out the frame that starts at the first `68` of `buf`, even if its checksum or end
/// byte is wrong, for a technician's decoder. Never panics.
pub fn inspect(buf: &[u8]) -> Result<FrameInspection, InspectError> {
    if buf.is_empty() {
        return Err(InspectError::Empty);
    }
    let start = buf
        .iter()
        .position(|&b| b == START)
        .ok_or(InspectError::NoStart { len: buf.len() })?;
    let preamble = buf
        .get(..start)
        .unwrap_or(&[])
        .iter()
        .rev()
        .take_while(|&&b| b == PREAMBLE)
        .count();
    let frame = buf.get(start..).unwrap_or(&[]);
    let got = frame.len();
    if let Some(&found) = frame.get(SECOND_START_OFFSET)
        && found != START
    {
        return Err(InspectError::SecondStart { found });
    }
    let header = frame
        .get(..HEADER_LEN)
        .ok_or(InspectError::TruncatedHeader { got })?;
    let mut address = [0u8; 6];
    address.copy_from_slice(header.get(1..7).unwrap_or(&[0; 6]));
    let control = header.get(8).copied().unwrap_or(0);
    let length = header.get(9).copied().unwrap_or(0);
    let needed = OVERHEAD + usize::from(length);
    let data_end = HEADER_LEN + usize::from(length);
    let (Some(masked), Some(&cs), Some(&end)) = (
        frame.get(HEADER_LEN..data_end),
        frame.get(data_end),
        frame.get(data_end + 1),
    ) else {
        return Err(InspectError::Truncated {
            length,
            needed,
            got,
        });
    };
    let expected = checksum(frame.get(..data_end).unwrap_or(&[]));
    Ok(FrameInspection {
        preamble,
        start,
        address: Address::from_wire(address),
        control: ControlCode::from_byte(control),
        length,
        data: masked.iter().map(|b| b.wrapping_sub(DATA_OFFSET)).collect(),
        checksum: ChecksumCheck {
            expected,
            found: cs,
            ok: expected == cs,
        },
        end: EndCheck {
            found: end,
            ok: end == END,
        },
        trailing: got.saturating_sub(needed),
    })
}

impl fmt::Display for FrameInspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preamble {} (noise {}), address {}, control {}, L={}, data [",
            self.preamble,
            self.noise(),
            self.address,
            self.control,
            self.length
        )?;
        for (i, b) in self.data.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02X}")?;
        }
        write!(
            f,
            "], CS expected {:02X} found {:02X} ({}), end {:02X} ({}), trailing {}",
            self.checksum.expected,
            self.checksum.found,
            if self.checksum.ok { "ok" } else { "BAD" },
            self.end.found,
            if self.end.ok { "ok" } else { "BAD" },
            self.trailing
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    const READ_REQ: &str = "FE FE FE FE 68 29 25 07 07 21 20 68 11 04 33 33 33 33 4E 16";

    #[test]
    fn scans_vector_with_preamble() {
        let buf = hex(READ_REQ);
        let Scan::Frame { frame, consumed } = Dlt645Frame::scan(&buf) else {
            panic!("no frame");
        };
        assert_eq!(consumed, buf.len());
        assert_eq!(frame.address.to_string(), "202107072529");
        assert_eq!(frame.control.byte(), 0x11);
        assert_eq!(frame.data, vec![0, 0, 0, 0]);
        assert_eq!(frame.to_bytes(4), buf);
    }

    #[test]
    fn incomplete_counts_exactly() {
        let buf = hex(READ_REQ);
        // Preamble only.
        assert_eq!(Dlt645Frame::scan(&buf[..3]), Scan::Incomplete { needed: 1 });
        assert_eq!(Dlt645Frame::scan(&[]), Scan::Incomplete { needed: 1 });
        // 68 + 2 address bytes: the next decision is the second 68 at +7.
        assert_eq!(Dlt645Frame::scan(&buf[..7]), Scan::Incomplete { needed: 5 });
        // Through the second 68: L is at +9.
        assert_eq!(
            Dlt645Frame::scan(&buf[..12]),
            Scan::Incomplete { needed: 2 }
        );
        // Header complete, L = 4: 16 bytes from the 68.
        for cut in 14..buf.len() {
            assert_eq!(
                Dlt645Frame::scan(&buf[..cut]),
                Scan::Incomplete {
                    needed: buf.len() - cut
                },
                "cut {cut}"
            );
        }
    }

    #[test]
    fn noise_and_idle_preamble() {
        let mut buf = hex("00 11 FE 22");
        buf.extend(hex(READ_REQ));
        assert_eq!(
            Dlt645Frame::scan(&buf),
            Scan::Skip {
                count: 8,
                reason: SkipReason::Noise
            }
        );
        assert_eq!(
            Dlt645Frame::scan(&[0xFE; 17]),
            Scan::Skip {
                count: 17,
                reason: SkipReason::Preamble
            }
        );
        assert_eq!(
            Dlt645Frame::scan(&[1, 2, 3]),
            Scan::Skip {
                count: 3,
                reason: SkipReason::Noise
            }
        );
    }

    #[test]
    fn bad_checksum_end_and_second_start() {
        let mut buf = hex(READ_REQ);
        let cs = buf.len() - 2;
        buf[cs] = 0x4F;
        assert_eq!(
            Dlt645Frame::scan(&buf),
            Scan::Skip {
                count: 5,
                reason: SkipReason::Checksum {
                    expected: 0x4E,
                    found: 0x4F
                }
            }
        );
        let mut buf = hex(READ_REQ);
        let last = buf.len() - 1;
        buf[last] = 0x17;
        assert_eq!(
            Dlt645Frame::scan(&buf),
            Scan::Skip {
                count: 5,
                reason: SkipReason::Malformed("end byte is not 0x16")
            }
        );
        let buf = hex("68 29 25 07 07 21 20 12");
        assert!(matches!(
            Dlt645Frame::scan(&buf),
            Scan::Skip {
                count: 1,
                reason: SkipReason::Malformed(_)
            }
        ));
    }

    #[test]
    fn masked_data_with_68_and_16_is_not_a_delimiter() {
        // Data bytes 0x35 and 0xE3 mask to 0x68 and 0x16.
        let f = Dlt645Frame::new(
            Address::from_wire([0x16, 0x68, 0x16, 0x68, 0x16, 0x16]),
            ControlCode::from_byte(0x91),
            vec![0x35, 0xE3, 0xE3, 0x35, 0xE3],
        );
        let bytes = f.to_bytes(2);
        assert_eq!(
            Dlt645Frame::scan(&bytes),
            Scan::Frame {
                frame: f,
                consumed: bytes.len()
            }
        );
    }

    #[test]
    fn noise_header_with_large_l_does_not_hold_back_a_frame() {
        let mut buf = hex("00 68 01 02 03 04 05 06 68 11 F0 FE FE");
        buf.extend(hex(READ_REQ));
        assert_eq!(
            Dlt645Frame::scan(&buf),
            Scan::Skip {
                count: 1,
                reason: SkipReason::Noise
            }
        );
        let buf = &buf[1..];
        assert_eq!(
            Dlt645Frame::scan(buf),
            Scan::Skip {
                count: 16,
                reason: SkipReason::Noise
            }
        );
        assert!(matches!(
            Dlt645Frame::scan(&buf[16..]),
            Scan::Frame { consumed: 16, .. }
        ));
    }

    #[test]
    fn long_frame_l_255() {
        let f = Dlt645Frame::new(
            Address::WILDCARD,
            ControlCode::from_byte(0x91),
            (0..=254u8).collect(),
        );
        let bytes = f.to_bytes(0);
        assert_eq!(bytes.len(), 12 + 255);
        assert_eq!(bytes[9], 0xFF);
        assert!(matches!(
            Dlt645Frame::scan(&bytes),
            Scan::Frame { consumed: 267, .. }
        ));
    }

    #[test]
    fn inspect_explains_problems() {
        let mut buf = hex(READ_REQ);
        buf.push(0xAB);
        let cs = buf.len() - 3;
        buf[cs] = 0x00;
        let i = inspect(&buf).unwrap();
        assert_eq!(
            (i.preamble, i.start, i.noise(), i.length, i.trailing),
            (4, 4, 0, 4, 1)
        );
        assert_eq!(
            i.checksum,
            ChecksumCheck {
                expected: 0x4E,
                found: 0,
                ok: false
            }
        );
        assert!(i.end.ok);
        assert!(!i.is_valid());
        assert!(i.to_string().contains("CS expected 4E found 00 (BAD)"));

        let e = inspect(&hex(READ_REQ)[..18]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "truncated: frame declares L=4 so needs 16 bytes after the preamble, got 14"
        );
        let e = inspect(&hex("FE 68 29 25 07 07 21 20 12 11")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "second 0x68 expected at offset 7, found 0x12"
        );
        let e = inspect(&hex("FE FE 00")).unwrap_err();
        assert_eq!(e.to_string(), "no frame start 0x68 found in 3 bytes");
        assert!(
            inspect(&hex("68 01 02"))
                .unwrap_err()
                .to_string()
                .contains("got 3")
        );
        assert_eq!(inspect(&[]), Err(InspectError::Empty));
    }
}
