//! Feeds arbitrary bytes to the DL/T 645 load-profile record parser and the request-data
//! parser: no panic, and every record parsed re-encodes to bytes that parse to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::dlt645::load_profile::{parse_records, parse_request_extra};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request_extra(data);
    if let Ok(records) = parse_records(data) {
        for r in records {
            let _ = r.values();
            let bytes = r.encode().expect("a parsed record encodes");
            assert_eq!(parse_records(&bytes).expect("re-encoded record parses"), vec![r]);
        }
    }
});
