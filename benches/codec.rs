//! Codec benchmarks. Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mongrel2_transceiver::websocket::{encode_frame, Frame, Opcode};

/// WebSocket frame encoding (server side) and decoding of masked client frames.
fn websocket_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("websocket");

    for len in [125usize, 1000] {
        let payload = vec![b'a'; len];
        // Reused across iterations, as a connection's write buffer would be.
        let mut out = Vec::with_capacity(len + 16);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("encode a {len}-byte text frame"), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(Opcode::Text, black_box(&payload), &mut out);
                black_box(out.len())
            })
        });
    }

    let mut masked = Vec::new();
    Frame::new(Opcode::Text, vec![b'a'; 1000]).encode(Some([0x12, 0x34, 0x56, 0x78]), &mut masked);
    group.throughput(Throughput::Bytes(masked.len() as u64));
    group.bench_function("decode a masked 1000-byte text frame", |b| {
        b.iter(|| match Frame::decode(black_box(&masked)) {
            Ok(Some((frame, used))) => black_box((frame.payload.len(), used)),
            _ => unreachable!("the benchmark input is a valid frame"),
        })
    });

    group.finish();
}

criterion_group!(benches, websocket_benches);
criterion_main!(benches);
