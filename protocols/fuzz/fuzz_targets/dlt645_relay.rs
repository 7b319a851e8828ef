//! Fee control's parsers: whatever frame `inspect` finds in arbitrary bytes goes through the
//! `1C` reply, identity-authentication reply and status word 3 decoders, and through the
//! request parser that tells plaintext from ciphertext control. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::dlt645::relay::{ControlReply, IdentityReply, StatusWord3};
use meter_protocols::dlt645::{self, Request, Version};

fuzz_target!(|data: &[u8]| {
    if let Ok(fi) = dlt645::frame::inspect(data) {
        let frame = dlt645::Dlt645Frame {
            address: fi.address,
            control: fi.control,
            data: fi.data.clone(),
        };
        let _ = ControlReply::from_frame(&frame).map(|r| r.describe());
        let _ = IdentityReply::from_frame(&frame).map(|r| r.describe());
        let _ = StatusWord3::from_frame(&frame);
        // Pass-through requests must encode back to exactly the bytes parsed (the plaintext
        // form normalises N2 to 00, so it is not compared).
        if let Ok(req @ (Request::RelayControlCipher { .. } | Request::Security { .. })) =
            Request::from_frame(&frame, Version::V2007)
        {
            assert_eq!(req.data(), frame.data);
        }
    }
    let _ = StatusWord3::from_payload(data);
});
