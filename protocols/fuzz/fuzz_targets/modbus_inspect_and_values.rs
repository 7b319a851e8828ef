//! The Modbus decoder path: `rtu::inspect` and `mbap::inspect` on arbitrary bytes, and register value decoding and
//! scaling for every type and order on arbitrary registers. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_protocols::Decimal;
use meter_protocols::modbus::{mbap, rtu};
use meter_protocols::modbus::values::{self, RegisterOrder, Scale, ValueType};

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = rtu::inspect(data) {
        let _ = i.to_string();
    }
    if let Ok(i) = mbap::inspect(data) {
        let _ = i.to_string();
    }
    let regs: Vec<u16> = data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
    let sel = data.first().copied().unwrap_or(0);
    let ty = match sel % 9 {
        0 => ValueType::U16,
        1 => ValueType::I16,
        2 => ValueType::U32,
        3 => ValueType::I32,
        4 => ValueType::U64,
        5 => ValueType::I64,
        6 => ValueType::F32,
        7 => ValueType::F64,
        _ => ValueType::Bits { bit: sel % 17, width: (sel >> 4) % 17 },
    };
    let order = match (sel >> 4) % 4 {
        0 => RegisterOrder::ABCD,
        1 => RegisterOrder::CDAB,
        2 => RegisterOrder::BADC,
        _ => RegisterOrder::DCBA,
    };
    let factor = Decimal::new(i64::from(i16::from_le_bytes([sel, data.get(1).copied().unwrap_or(0)])), sel % 20);
    let scale = match (sel >> 2) % 4 {
        0 => Scale::None,
        1 => factor.map_or(Scale::None, Scale::Factor),
        2 => Scale::Pow10((sel as i8) % 30),
        _ => Scale::ExponentRegister { bias: (sel as i8) % 10 },
    };
    let exponent = regs.last().map(|r| *r as i16);
    if let Ok(v) = values::read_value(&regs, ty, order, scale, exponent) {
        let _ = v.to_string();
    }
});
