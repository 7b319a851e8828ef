//! The outcome of looking for one frame at the start of a receive buffer.
//!
//! Every frame scanner in this crate (DL/T 645, Modbus RTU) answers with a [`Scan`], so that a
//! bus task can feed bytes as they arrive and act on one of three answers: wait for more,
//! take a frame, or drop some leading bytes and look again. A scanner never consumes bytes
//! on its own: the caller drains what [`Scan::Frame`] or [`Scan::Skip`] says.

/// What a scanner found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan<F> {
    /// The bytes so far are a plausible start of a frame; at least `needed` more bytes must
    /// arrive before the scanner can tell more.
    Incomplete {
        /// The least number of further bytes that can change the answer (always ≥ 1).
        needed: usize,
    },
    /// A complete, verified frame. `consumed` counts every byte it used, including preamble.
    Frame {
        /// The decoded frame.
        frame: F,
        /// How many bytes to drain from the buffer.
        consumed: usize,
    },
    /// The first `count` bytes cannot start a valid frame: drain them and scan again.
    Skip {
        /// How many bytes to drain (always ≥ 1).
        count: usize,
        /// Why they were skipped, for counters and traces.
        reason: SkipReason,
    },
}

/// Why a scanner skipped bytes. Bus tasks count these per bus (noise vs checksum errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Wake-up preamble bytes (DL/T 645 `FE`) with nothing after them yet worth keeping.
    Preamble,
    /// Bytes that cannot begin a frame (line noise, a stray byte, an echo remnant).
    Noise,
    /// A frame-shaped run whose checksum or CRC did not match; one byte is skipped to resync.
    Checksum {
        /// Checksum computed over the received bytes.
        expected: u16,
        /// Checksum carried by the frame.
        found: u16,
    },
    /// A frame-shaped run that broke a structural rule (wrong end byte, impossible length…).
    Malformed(&'static str),
    /// A complete, valid frame that is not the awaited reply: another unit's or meter's, or a
    /// late reply to an earlier request. Skipped whole.
    Foreign(&'static str),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Preamble => f.write_str("preamble"),
            SkipReason::Noise => f.write_str("noise"),
            SkipReason::Checksum { expected, found } => {
                // DL/T 645 checksums are one byte, Modbus CRCs two.
                let w = if *expected > 0xFF || *found > 0xFF {
                    4
                } else {
                    2
                };
                write!(
                    f,
                    "checksum mismatch: expected {expected:0w$X}, found {found:0w$X}"
                )
            }
            SkipReason::Malformed(why) | SkipReason::Foreign(why) => f.write_str(why),
        }
    }
}
