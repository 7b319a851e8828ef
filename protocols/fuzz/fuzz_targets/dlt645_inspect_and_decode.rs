//! The technician's decoder path and the value decoders: `inspect` on arbitrary bytes, typed
//! request/response parsing of whatever frame it finds, and catalogue decoding of arbitrary
//! payloads for arbitrary data identifiers. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::dlt645::{self, DataIdentifier, Request, Response, Version, catalog};

fuzz_target!(|data: &[u8]| {
    if let Ok(fi) = dlt645::frame::inspect(data) {
        let _ = fi.to_string();
        let frame = dlt645::Dlt645Frame {
            address: fi.address,
            control: fi.control,
            data: fi.data.clone(),
        };
        for v in [Version::V2007, Version::V1997] {
            let _ = Request::from_frame(&frame, v);
            let _ = Response::from_frame(&frame, v);
        }
    }
    if data.len() >= 4 {
        let di = DataIdentifier::V2007(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
        let _ = catalog::decode_payload(di, &data[4..]);
        let di97 = DataIdentifier::V1997(u16::from_le_bytes([data[0], data[1]]));
        let _ = catalog::decode_payload(di97, &data[2..]);
    }
});
