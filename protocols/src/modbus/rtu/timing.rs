//! The RTU silence lengths for a baud rate: t1.5 between characters, t3.5 between frames.
//!
//! It only computes durations; it never reads a clock or waits (the bus task owns the timeouts).

use std::time::Duration;

fn char_time(baud: u32, tenth_bits: u64, fixed_us: u64) -> Duration {
    if baud > 19_200 {
        Duration::from_micros(fixed_us)
    } else {
        // tenth_bits / 10 bits per character time; 1e9 ns per second.
        Duration::from_nanos(tenth_bits * 100_000_000 / u64::from(baud.max(1)))
    }
}

/// The inter-frame silence t3.5: 3.5 eleven-bit characters (38.5 bit times) at or below
/// 19200 baud, a fixed 1750 µs above. A baud of 0 is treated as 1.
pub fn silence_t35(baud: u32) -> Duration {
    char_time(baud, 385, 1750)
}

/// The inter-character timeout t1.5: 1.5 eleven-bit characters (16.5 bit times) at or below
/// 19200 baud, a fixed 750 µs above. A baud of 0 is treated as 1.
pub fn t15(baud: u32) -> Duration {
    char_time(baud, 165, 750)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_times() {
        assert_eq!(silence_t35(9600), Duration::from_nanos(4_010_416));
        assert_eq!(silence_t35(19_200), Duration::from_nanos(2_005_208));
        assert_eq!(silence_t35(38_400), Duration::from_micros(1750));
        assert_eq!(t15(9600), Duration::from_nanos(1_718_750));
        assert_eq!(t15(115_200), Duration::from_micros(750));
        assert!(silence_t35(0) > Duration::ZERO);
    }
}
