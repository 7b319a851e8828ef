//! Feeds arbitrary bytes, split into arbitrary chunks, through the DL/T 645 streaming scanner
//! the way a bus task does, and checks the scanner's contract: no panic, progress on every
//! Skip, consumed within the buffer, and every frame it yields has a correct checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::Scan;
use meter_protocols::dlt645::Dlt645Frame;
use meter_protocols::dlt645::frame::checksum;

fuzz_target!(|data: &[u8]| {
    // First byte chooses the chunk size, so libFuzzer explores split points too.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 32) + 1;
    let mut buf: Vec<u8> = Vec::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match Dlt645Frame::scan(&buf) {
                Scan::Incomplete { needed } => {
                    assert!(needed >= 1);
                    break;
                }
                Scan::Skip { count, .. } => {
                    assert!(count >= 1 && count <= buf.len());
                    buf.drain(..count);
                }
                Scan::Frame { frame, consumed } => {
                    assert!(consumed <= buf.len());
                    let raw = &buf[..consumed];
                    let start = raw.iter().position(|b| *b == 0x68).expect("frame starts with 68");
                    let body = &raw[start..consumed - 2];
                    assert_eq!(checksum(body), raw[consumed - 2], "frame with a wrong checksum");
                    assert_eq!(raw[consumed - 1], 0x16);
                    // Re-encoding gives the same frame bytes.
                    assert_eq!(frame.to_bytes(0), raw[start..].to_vec());
                    buf.drain(..consumed);
                }
            }
        }
    }
});
