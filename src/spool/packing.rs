//! How a payload is kept in the spool file: LZ4-compressed (block format, no size prefix; the
//! row's `bytes` column is the JSON's length), or as the JSON itself when compressing does
//! not make it smaller. [`Spool::pending`](super::Spool::pending) returns the JSON byte for byte
//! as it was appended, whichever way it was kept.
//!
//! Why compress at all: a reading's JSON (quantity names, units, OBIS codes, evidence frames in
//! hex) packs to ~40 % of its size, so each stored row writes fewer SQLite pages to the WAL and
//! the database. That is less flash wear for the same readings, and the same disk holds ~2.5×
//! the backlog. LZ4 because it costs ~0.6 µs per KB here, less than the page writes it saves
//! (docs/benchmarks.md, "Spool payloads compressed"); `lz4_flex` because it is pure safe Rust
//! (no C build for the ARM cross-compile) and its decoder checks every bound, so a damaged row
//! is an error, never a panic or an out-of-bounds read.

/// `outbox.encoding` of a payload kept as the JSON itself (every row of a version 1 spool).
pub(crate) const RAW: i64 = 0;
/// `outbox.encoding` of a payload kept as one LZ4 block.
pub(crate) const LZ4: i64 = 1;

/// Compresses payloads into a reused buffer (one allocation for the spool's life, not one per
/// row).
#[derive(Debug, Default)]
pub(crate) struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    /// The form to store `json` in: `(encoding, bytes)`. The bytes borrow either the packer's
    /// buffer or `json` itself, until the next call.
    pub(crate) fn pack<'a>(&'a mut self, json: &'a [u8]) -> (i64, &'a [u8]) {
        let bound = lz4_flex::block::get_maximum_output_size(json.len());
        if self.buf.len() < bound {
            self.buf.resize(bound, 0);
        }
        let packed = lz4_flex::block::compress_into(json, &mut self.buf)
            .ok()
            .filter(|&n| n < json.len())
            .and_then(|n| self.buf.get(..n));
        match packed {
            Some(block) => (LZ4, block),
            // Not smaller (tiny or random payloads), or the bound was wrong: keep the JSON,
            // marked as JSON (never LZ4 with the JSON's bytes).
            None => (RAW, json),
        }
    }
}

/// The JSON of a stored payload: `stored` kept with `encoding`, whose JSON is `bytes` long.
/// An error says what is wrong with the row (the caller names the file).
pub(crate) fn unpack(encoding: i64, stored: &[u8], bytes: i64) -> Result<Vec<u8>, String> {
    match encoding {
        RAW => Ok(stored.to_vec()),
        LZ4 => {
            // The length comes from the file too: bound it before allocating, so that a damaged
            // row cannot ask for gigabytes. No payload is larger than the block it came from
            // can expand to (LZ4 expands at most ~255×).
            let len = usize::try_from(bytes)
                .ok()
                .filter(|&n| n <= stored.len().saturating_mul(255).saturating_add(16))
                .ok_or_else(|| {
                    format!(
                        "payload length {bytes} is impossible for {} compressed bytes",
                        stored.len()
                    )
                })?;
            let json = lz4_flex::block::decompress(stored, len)
                .map_err(|e| format!("compressed payload does not decompress: {e}"))?;
            if json.len() != len {
                return Err(format!(
                    "compressed payload gives {} bytes, the row says {len}",
                    json.len()
                ));
            }
            Ok(json)
        }
        other => Err(format!(
            "unknown payload encoding {other} (written by a newer meterd?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reading_packs_smaller_and_unpacks_to_the_same_bytes() {
        let json = br#"{"schema":"meterd.reading.v1","values":[{"quantity":"voltage.l1","value":229.1,"unit":"V","obis":"1-0:32.7.0","quality":"good"},{"quantity":"voltage.l2","value":229.2,"unit":"V","obis":"1-0:52.7.0","quality":"good"}],"frames":["01 03 04 43 65 19 9A 2E 0B"]}"#;
        let mut p = Packer::default();
        let (enc, stored) = p.pack(json);
        assert_eq!(enc, LZ4);
        assert!(
            stored.len() < json.len(),
            "{} of {}",
            stored.len(),
            json.len()
        );
        let len = i64::try_from(json.len()).unwrap();
        assert_eq!(unpack(enc, stored, len).unwrap(), json.to_vec());
    }

    #[test]
    fn a_payload_that_does_not_shrink_is_kept_as_it_is() {
        let mut p = Packer::default();
        assert_eq!(p.pack(b"{}"), (RAW, &b"{}"[..]));
        assert_eq!(unpack(RAW, b"{}", 2).unwrap(), b"{}".to_vec());
    }

    #[test]
    fn damaged_rows_are_errors() {
        let mut p = Packer::default();
        let json = vec![b'a'; 4000];
        let (enc, stored) = p.pack(&json);
        assert!(unpack(enc, stored, 3999).is_err(), "length too short");
        assert!(unpack(enc, stored, 4001).is_err(), "length too long");
        assert!(unpack(enc, stored, i64::MAX).is_err(), "impossible length");
        assert!(unpack(enc, stored, -1).is_err(), "negative length");
        assert!(unpack(7, stored, 4000).unwrap_err().contains("encoding 7"));
        let cut = stored.get(..stored.len() / 2).unwrap();
        assert!(unpack(enc, cut, 4000).is_err(), "truncated block");
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(json in prop::collection::vec(any::<u8>(), 0..5000)) {
            let mut p = Packer::default();
            let (enc, stored) = p.pack(&json);
            prop_assert!(stored.len() <= json.len());
            let len = i64::try_from(json.len()).unwrap();
            prop_assert_eq!(unpack(enc, stored, len).unwrap(), json);
        }

        #[test]
        fn any_stored_bytes_never_panic(
            stored in prop::collection::vec(any::<u8>(), 0..600),
            bytes in -5i64..200_000,
            enc in 0i64..3,
        ) {
            let _ = unpack(enc, &stored, bytes);
        }
    }
}
