//! Property tests for the Modbus TCP (MBAP) decoder: panic freedom of `inspect` on any bytes,
//! and agreement with the RTU decoder on the PDU of the same request.

use meter_protocols::modbus::mbap::{self, MbapHeader};
use meter_protocols::modbus::rtu::{self, ReadFunction, Request};
use proptest::prelude::*;

proptest! {
    #[test]
    fn inspect_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match mbap::inspect(&bytes) {
            Ok(i) => {
                // Whatever it says, it read the header that is there.
                prop_assert!(bytes.len() > mbap::HEADER_LEN);
                prop_assert_eq!(&i.header.to_bytes()[..], &bytes[..mbap::HEADER_LEN]);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn a_wrapped_rtu_request_reads_the_same(
        transaction in any::<u16>(),
        unit in any::<u8>(),
        function in prop::sample::select(vec![1u8, 2, 3, 4]),
        address in any::<u16>(),
        count in 1u16..=125,
    ) {
        let Some(f) = ReadFunction::from_code(function) else {
            return Err(TestCaseError::fail("not a read"));
        };
        // A read must end inside the 65536-register space: the encoder refuses one that
        // runs past 0xFFFF (address 65450 + 87 registers did, failing this test at random).
        prop_assume!(u32::from(address) + u32::from(count) <= 0x1_0000);
        let request = Request::read(f, address, count);
        let mut rtu_adu = Vec::new();
        rtu::encode_request(unit, &request, &mut rtu_adu).unwrap();
        let pdu = &rtu_adu[1..rtu_adu.len() - 2];
        let header = MbapHeader {
            transaction,
            protocol: 0,
            length: u16::try_from(pdu.len() + 1).unwrap(),
            unit,
        };
        let adu = [&header.to_bytes()[..], pdu].concat();
        let tcp = mbap::inspect(&adu).unwrap();
        let serial = rtu::inspect(&rtu_adu).unwrap();
        prop_assert!(tcp.is_valid());
        prop_assert_eq!(tcp.header, header);
        prop_assert_eq!(tcp.pdu, serial.pdu);
        prop_assert_eq!(tcp.direction, serial.direction);
    }
}
