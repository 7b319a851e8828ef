//! The DL/T 645 meter address: 12 BCD digits in 6 bytes, low byte first on the wire.
//!
//! Meter `202107072529` goes on the wire as `29 25 07 07 21 20`. Two special forms:
//! `AA` bytes in the high positions are a wildcard (a read to `AAAAAAAAAAAA` is answered by
//! the only meter on the bus with its real address), and `999999999999` is broadcast (no
//! reply). An address is kept as its wire bytes, so a reply's address is compared byte for
//! byte and a non-BCD address from a broken meter still prints.

use std::fmt;
use std::str::FromStr;

/// A 6-byte DL/T 645 address, stored in wire order (A0 = lowest two digits first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; 6]);

/// Why a string is not a full 12-digit DL/T 645 address ([`Address::parse_full`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a DL/T 645 address is exactly 12 BCD digits (or AA wildcard pairs), as printed on the meter's nameplate; found {} characters: {given:?}",
    given.chars().count()
)]
pub struct FullAddressError {
    /// What was given.
    pub given: String,
}

/// Why a string is not a DL/T 645 address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DL/T 645 address (want 1 to 12 decimal digits, or AA wildcard pairs): {0:?}")]
pub struct ParseAddressError(pub String);

impl Address {
    /// The broadcast address `999999999999` (time sync, freeze; meters never reply).
    pub const BROADCAST: Address = Address([0x99; 6]);
    /// The all-wildcard address `AAAAAAAAAAAA` (read/write address of a lone meter).
    pub const WILDCARD: Address = Address([0xAA; 6]);

    /// From the six bytes as they appear on the wire (A0 first).
    pub const fn from_wire(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// The six wire bytes (A0 first).
    pub const fn to_wire(self) -> [u8; 6] {
        self.0
    }

    /// True for `999999999999`.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// True when any byte is the `AA` wildcard.
    pub fn has_wildcard(self) -> bool {
        self.0.contains(&0xAA)
    }

    /// True when every byte is two BCD digits (a real meter address).
    pub fn is_bcd(self) -> bool {
        self.0.iter().all(|b| b >> 4 <= 9 && b & 0x0F <= 9)
    }

    /// Whether a reply from `reply` answers a request sent to `self`: equal bytes, except that
    /// an `AA` byte in the request matches any byte. A broadcast request matches nothing.
    pub fn accepts_reply_from(self, reply: Address) -> bool {
        if self.is_broadcast() {
            return false;
        }
        self.0
            .iter()
            .zip(reply.0.iter())
            .all(|(req, rep)| *req == 0xAA || req == rep)
    }
}

impl fmt::Display for Address {
    /// The document form: 12 hex digits, most significant byte first (`202107072529`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl Address {
    /// Parses an address a person typed, which must be all 12 digits (or `AA` wildcard
    /// pairs). Unlike [`FromStr`], which pads a short address with leading zeros (the
    /// standard's rule, and what configuration files rely on), a digit left out here is an
    /// error: padding `20210707252` gives `020210707252`, another meter's address.
    pub fn parse_full(s: &str) -> Result<Self, FullAddressError> {
        let err = || FullAddressError {
            given: s.to_owned(),
        };
        if s.len() != 12 {
            return Err(err());
        }
        s.parse().map_err(|_| err())
    }
}

impl FromStr for Address {
    type Err = ParseAddressError;

    /// Parses the document form. Fewer than 12 digits are padded with `0` in the high digits
    /// (the standard's rule for short addresses). `A` digits are accepted only as whole `AA`
    /// bytes, for wildcard reads.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseAddressError(s.to_owned());
        if s.is_empty()
            || s.len() > 12
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'A' || b == b'a')
        {
            return Err(err());
        }
        let padded = format!("{s:0>12}").to_ascii_uppercase();
        let mut out = [0u8; 6];
        for (i, pair) in padded.as_bytes().chunks(2).enumerate() {
            let byte = match pair {
                [b'A', b'A'] => 0xAA,
                [h, l] if h.is_ascii_digit() && l.is_ascii_digit() => {
                    ((h - b'0') << 4) | (l - b'0')
                }
                _ => return Err(err()),
            };
            out[5 - i] = byte;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_address_has_twelve_digits() {
        assert_eq!(
            Address::parse_full("202107072529").unwrap().to_string(),
            "202107072529"
        );
        assert_eq!(
            Address::parse_full("AAAAAAAAAAAA").unwrap(),
            Address::WILDCARD
        );
        for short_or_bad in [
            "20210707252",
            "2021070725290",
            "20210707252X",
            "",
            "２０２１",
        ] {
            let e = Address::parse_full(short_or_bad).unwrap_err();
            assert!(e.to_string().contains("exactly 12 BCD digits"), "{e}");
        }
        assert!(
            Address::parse_full("20210707252")
                .unwrap_err()
                .to_string()
                .ends_with("found 11 characters: \"20210707252\"")
        );
    }

    #[test]
    fn document_form_and_wire_order() {
        let a: Address = "202107072529".parse().unwrap();
        assert_eq!(a.to_wire(), [0x29, 0x25, 0x07, 0x07, 0x21, 0x20]);
        assert_eq!(a.to_string(), "202107072529");
        let short: Address = "123".parse().unwrap();
        assert_eq!(short.to_string(), "000000000123");
        assert_eq!(
            "AAAAAAAAAAAA".parse::<Address>().unwrap(),
            Address::WILDCARD
        );
        assert!(Address::BROADCAST.is_broadcast());
        for bad in ["", "1234567890123", "12345A", "12 34", "0x12"] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcard_matching() {
        let meter: Address = "202107072529".parse().unwrap();
        assert!(Address::WILDCARD.accepts_reply_from(meter));
        assert!(meter.accepts_reply_from(meter));
        let partial = Address::from_wire([0x29, 0x25, 0xAA, 0xAA, 0xAA, 0xAA]);
        assert!(partial.accepts_reply_from(meter));
        let other: Address = "202107072530".parse().unwrap();
        assert!(!meter.accepts_reply_from(other));
        assert!(!Address::BROADCAST.accepts_reply_from(meter));
    }
}
