//! Turns what a technician types or pastes into bytes.
//!
//! Accepts hex digits with any mix of spaces, tabs, commas, colons, dashes and `0x` prefixes,
//! across one or several arguments: `68 29 25…`, `682925…`, `0x68,0x29`, `68:29`. Rejects
//! anything else with the position of the first bad character, because a wrong digit in a
//! pasted frame must be reported, not guessed around.

use thiserror::Error;

/// Why the input is not a byte string.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HexError {
    /// No hex digits at all.
    #[error("no bytes given")]
    Empty,
    /// A character that is not a hex digit or separator.
    #[error("not a hex digit: {found:?} at character {position}")]
    BadChar {
        /// The offending character.
        found: char,
        /// 1-based position in the joined input.
        position: usize,
    },
    /// An odd number of hex digits in one group (between separators).
    #[error("odd number of hex digits in {group:?}: every byte needs two digits")]
    OddDigits {
        /// The group with an odd digit count.
        group: String,
    },
}

/// Parses hex from one or more command-line words.
pub fn parse_hex<S: AsRef<str>>(words: &[S]) -> Result<Vec<u8>, HexError> {
    let joined: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    let text = joined.join(" ");
    let mut bytes = Vec::with_capacity(text.len() / 2);
    let mut position = 0usize;
    for group in text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | '-' | ';')) {
        let start = position;
        position += group.chars().count() + 1;
        if group.is_empty() {
            continue;
        }
        let digits = group
            .strip_prefix("0x")
            .or_else(|| group.strip_prefix("0X"))
            .unwrap_or(group);
        let prefix_len = group.len() - digits.len();
        if let Some((i, c)) = digits
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(HexError::BadChar {
                found: c,
                position: start + prefix_len + i + 1,
            });
        }
        if digits.len() % 2 != 0 {
            return Err(HexError::OddDigits {
                group: group.to_owned(),
            });
        }
        for pair in digits.as_bytes().chunks(2) {
            // Both bytes are ASCII hex digits (checked above), so this cannot fail; map to an
            // error anyway rather than unwrap.
            let s = std::str::from_utf8(pair).map_err(|_| HexError::Empty)?;
            bytes.push(u8::from_str_radix(s, 16).map_err(|_| HexError::Empty)?);
        }
    }
    if bytes.is_empty() {
        return Err(HexError::Empty);
    }
    Ok(bytes)
}

/// Formats bytes as upper-case hex separated by single spaces (`68 29 25`), the form used in
/// traces, evidence frames and decoder output.
pub fn to_hex(bytes: &[u8]) -> String {
    // By hand rather than `format!` per byte: every evidence frame of every reading passes
    // here, and a formatted String per byte was ~4 % of the daemon's CPU.
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len().saturating_mul(3));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_usual_ways_of_writing_bytes() {
        let want = vec![0x68, 0x29, 0x25];
        assert_eq!(parse_hex(&["68 29 25"]), Ok(want.clone()));
        assert_eq!(parse_hex(&["682925"]), Ok(want.clone()));
        assert_eq!(parse_hex(&["68", "29", "25"]), Ok(want.clone()));
        assert_eq!(parse_hex(&["0x68,0x29,0x25"]), Ok(want.clone()));
        assert_eq!(parse_hex(&["68:29-25"]), Ok(want.clone()));
        assert_eq!(parse_hex(&["6829", "25"]), Ok(want));
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(
            parse_hex(&["68 2"]),
            Err(HexError::OddDigits { group: "2".into() })
        );
        assert_eq!(
            parse_hex(&["68 zz"]),
            Err(HexError::BadChar {
                found: 'z',
                position: 4
            })
        );
        assert_eq!(parse_hex::<&str>(&[]), Err(HexError::Empty));
        assert_eq!(parse_hex(&["  "]), Err(HexError::Empty));
        assert_eq!(to_hex(&[0x68, 0x0a]), "68 0A");
        assert_eq!(to_hex(&[0x00, 0xff, 0x9c]), "00 FF 9C");
        assert_eq!(to_hex(&[]), "");
    }

    proptest! {
        #[test]
        fn round_trips_and_never_panics(bytes in proptest::collection::vec(any::<u8>(), 1..64), junk in ".{0,20}") {
            let formatted: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
            prop_assert_eq!(to_hex(&bytes), formatted.join(" "));
            prop_assert_eq!(parse_hex(&[to_hex(&bytes)]), Ok(bytes));
            let _ = parse_hex(&[junk]);
        }
    }
}
