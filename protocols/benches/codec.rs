//! Codec throughput: the figures behind the design targets (docs/benchmarks.md).
//!
//! - DL/T 645 frame decode ≥ 5 M frames/s on one core: `dlt645/scan` (framing + checksum +
//!   unmasking), `dlt645/scan+response+value` (the whole path a bus task runs per reply, with
//!   the DI's spec looked up once per profile) and `dlt645/scan+response+catalogue` (the
//!   decoder CLI's path, which looks the DI up and builds names per call).
//! - Modbus value decode ≥ 20 M values/s: `modbus/values` decodes and scales registers the way
//!   a poll does, per value; `modbus/scan_response` frames a 25-float reply.
//!
//! Run: `cargo bench -p meter-protocols --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meter_protocols::dlt645::{Dlt645Frame, Response, Version, catalog};
use meter_protocols::modbus::rtu::{self, Expectation, Response as RtuResponse};
use meter_protocols::modbus::values::{self, RegisterOrder, Scale, ValueType};
use meter_protocols::{Decimal, Scan};

/// A 317.76 kWh reply with a 4-byte FE preamble (shared/notes/dlt645-vectors.json).
const ENERGY_REPLY: [u8; 24] = [
    0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x29, 0x25, 0x07, 0x07, 0x21, 0x20, 0x68, 0x91, 0x08, 0x33, 0x33,
    0x33, 0x33, 0xA9, 0x4A, 0x36, 0x33, 0x2E, 0x16,
];

fn dlt645(c: &mut Criterion) {
    let mut g = c.benchmark_group("dlt645");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scan", |b| {
        b.iter(|| match Dlt645Frame::scan(black_box(&ENERGY_REPLY)) {
            Scan::Frame { frame, consumed } => (frame.data.len(), consumed),
            _ => unreachable!("the vector is a valid frame"),
        })
    });
    // The daemon's path: the meter driver looked the DI's spec up once per profile, so each
    // reply costs framing, the typed response and the value decode.
    let Some(catalog::DiInfo::Item(spec)) =
        catalog::lookup(meter_protocols::dlt645::DataIdentifier::V2007(0))
    else {
        unreachable!("00000000 is catalogued")
    };
    g.bench_function("scan+response+value", |b| {
        b.iter(|| {
            let Scan::Frame { frame, .. } = Dlt645Frame::scan(black_box(&ENERGY_REPLY)) else {
                unreachable!("valid frame")
            };
            let Ok(Response::ReadData { payload, .. }) =
                Response::from_frame(&frame, Version::V2007)
            else {
                unreachable!("valid reply")
            };
            spec.format.decode(&payload)
        })
    });
    // The technician's path (`meterd decode`): catalogue lookup and names built per call.
    g.bench_function("scan+response+catalogue", |b| {
        b.iter(|| {
            let Scan::Frame { frame, .. } = Dlt645Frame::scan(black_box(&ENERGY_REPLY)) else {
                unreachable!("valid frame")
            };
            let Ok(Response::ReadData { di, payload, .. }) =
                Response::from_frame(&frame, Version::V2007)
            else {
                unreachable!("valid reply")
            };
            catalog::decode_payload(di, &payload).len()
        })
    });
    g.finish();
}

fn modbus(c: &mut Criterion) {
    // 25 float32 values (50 registers), as an SDM630-style poll returns.
    let floats: Vec<f32> = (0..25).map(|i| 229.8 + i as f32 * 0.1).collect();
    let regs: Vec<u16> = floats
        .iter()
        .flat_map(|f| {
            let b = f.to_bits();
            [(b >> 16) as u16, b as u16]
        })
        .collect();
    let mut g = c.benchmark_group("modbus");
    g.throughput(Throughput::Elements(25));
    g.bench_function("values/f32-abcd", |b| {
        b.iter(|| {
            let r = black_box(&regs);
            let mut n = 0usize;
            for pair in r.chunks_exact(2) {
                if values::read_value(
                    pair,
                    black_box(ValueType::F32),
                    RegisterOrder::ABCD,
                    Scale::None,
                    None,
                )
                .is_ok()
                {
                    n += 1;
                }
            }
            n
        })
    });
    let ints: Vec<u16> = (0..50).map(|i| 1000 + i as u16).collect();
    let factor = Scale::Factor(Decimal::new(1, 2).unwrap_or(Decimal::from_int(1)));
    g.bench_function("values/u32-cdab-x0.01", |b| {
        b.iter(|| {
            let r = black_box(&ints);
            let mut n = 0usize;
            for pair in r.chunks_exact(2) {
                if values::read_value(
                    pair,
                    black_box(ValueType::U32),
                    RegisterOrder::CDAB,
                    factor,
                    None,
                )
                .is_ok()
                {
                    n += 1;
                }
            }
            n
        })
    });
    let mut adu = Vec::new();
    rtu::encode_response(1, &RtuResponse::InputRegisters(regs.clone()), &mut adu).unwrap_or(());
    let expect = Expectation {
        unit: 1,
        function: 4,
        count: 50,
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("scan_response/25xf32", |b| {
        b.iter(|| match rtu::scan_response(black_box(&adu), &expect) {
            Scan::Frame { consumed, .. } => consumed,
            _ => unreachable!("valid reply"),
        })
    });
    g.finish();
}

criterion_group!(benches, dlt645, modbus);
criterion_main!(benches);
