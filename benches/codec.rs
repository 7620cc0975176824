//! Codec benchmarks: `cargo bench --bench codec`. Each area has its own function.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mongrel2_transceiver::reply::{self, DEFAULT_HANDLER_TARGETS};
use mongrel2_transceiver::request::{HeaderProtocol, Request, RequestLimits};
use mongrel2_transceiver::tnetstring;
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

const UUID: &str = "54c6e5d2-2b70-4f4e-a5c5-5e3b7c1d345e";

/// A realistic browser GET as Mongrel2 delivers it: 15 headers, ~460 bytes.
fn typical_get(protocol: HeaderProtocol) -> Vec<u8> {
    Request::new(UUID, 1042, "/app/items")
        .with_header("REMOTE_ADDR", "10.0.0.23")
        .with_header("METHOD", "GET")
        .with_header("URL_SCHEME", "http")
        .with_header("PATTERN", "/app")
        .with_header("URI", "/app/items?page=2")
        .with_header("QUERY", "page=2")
        .with_header("VERSION", "HTTP/1.1")
        .with_header("PATH", "/app/items")
        .with_header("host", "www.example.com")
        .with_header("user-agent", "Mozilla/5.0 (X11; Linux) Firefox/128.0")
        .with_header("accept", "text/html,*/*;q=0.8")
        .with_header("accept-language", "en-US,en")
        .with_header("accept-encoding", "gzip, br")
        .with_header("cookie", "sid=3f2a9c1e8b7d")
        .with_header("x-forwarded-for", "10.0.0.23")
        .with_protocol(protocol)
        .encode()
}

fn bench_request_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_parse");
    for (name, protocol) in [
        ("tnetstring_get", HeaderProtocol::Tnetstring),
        ("json_get", HeaderProtocol::Json),
    ] {
        let msg = typical_get(protocol);
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(format!("{name}_{}B", msg.len()), |b| {
            b.iter(|| {
                let req = Request::parse(black_box(&msg)).expect("valid request");
                black_box(req.header("host"));
                req
            })
        });
    }
    for (name, msg) in [
        (
            "capture_http_get_tnetstring",
            &include_bytes!("../tests/data/http_get.tnetstring.bin")[..],
        ),
        (
            "capture_http_get_json",
            &include_bytes!("../tests/data/http_get.json.bin")[..],
        ),
    ] {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(format!("{name}_{}B", msg.len()), |b| {
            b.iter(|| Request::parse(black_box(msg)).expect("valid capture"))
        });
    }
    group.finish();
}

/// Parsing a hostile-sized request: N distinct headers of ~100 bytes each (100k headers
/// make a 10 MB message), limits lifted. Time per header should stay flat from 1k to
/// 100k: parsing is linear in the message.
fn bench_many_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_parse_many_headers");
    group.sample_size(10);
    let limits = RequestLimits {
        max_headers: usize::MAX,
        ..RequestLimits::default()
    };
    for count in [1_000usize, 10_000, 100_000] {
        for protocol in [HeaderProtocol::Tnetstring, HeaderProtocol::Json] {
            let mut req = Request::new(UUID, 7, "/").with_protocol(protocol);
            for i in 0..count {
                req = req.with_header(format!("x-header-{i:08}"), "v".repeat(80));
            }
            let msg = req.encode();
            group.throughput(Throughput::Elements(count as u64));
            group.bench_function(
                format!("{protocol:?}_{count}_headers_{}B", msg.len()),
                |b| b.iter(|| Request::parse_with_limits(black_box(&msg), &limits).expect("valid")),
            );
        }
    }
    group.finish();
}

/// Building a request header by header: each push looks its name up, so this shows
/// whether many distinct headers cost linear or quadratic time.
fn bench_header_push(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_push");
    group.sample_size(10);
    for count in [1_000usize, 20_000, 100_000] {
        let names: Vec<String> = (0..count).map(|i| format!("x-header-{i}")).collect();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("{count}_distinct"), |b| {
            b.iter(|| {
                let mut req = Request::new("s", 1, "/");
                for name in &names {
                    req = req.with_header(name.as_str(), "v");
                }
                req
            })
        });
    }
    group.finish();
}

fn bench_tnetstring(c: &mut Criterion) {
    let msg = typical_get(HeaderProtocol::Tnetstring);
    // The header dict alone: skip "UUID ID PATH ".
    let start = UUID.len() + " 1042 /app/items ".len();
    let (value, _) = tnetstring::parse(&msg[start..]).expect("header dict");
    let dict_bytes = value.to_bytes().expect("encodable");
    let mut group = c.benchmark_group("tnetstring");
    group.bench_function("parse_header_dict", |b| {
        b.iter(|| tnetstring::parse(black_box(&dict_bytes)).expect("valid"))
    });
    let mut out = Vec::with_capacity(dict_bytes.len() * 2);
    group.bench_function("encode_header_dict", |b| {
        b.iter(|| {
            out.clear();
            tnetstring::encode(black_box(&value), &mut out).expect("finite");
        })
    });
    group.finish();
}

fn bench_reply(c: &mut Criterion) {
    let body = [b'x'; 100];
    let mut group = c.benchmark_group("reply");
    let mut out = Vec::with_capacity(256);
    group.bench_function("encode_1_id_100B_body", |b| {
        b.iter(|| {
            out.clear();
            reply::encode_reply(
                black_box(UUID),
                black_box(&[1042]),
                black_box(&body),
                &mut out,
            )
            .expect("valid reply");
        })
    });
    let ids: Vec<u64> = (1..=1000).map(|i| i * 7919).collect();
    group.bench_function("batched_1000_ids_8_messages", |b| {
        b.iter(|| {
            let msgs = reply::batched(
                black_box(UUID),
                black_box(&ids),
                black_box(&body),
                DEFAULT_HANDLER_TARGETS,
            )
            .expect("valid reply");
            debug_assert_eq!(msgs.len(), 8);
            msgs
        })
    });
    group.finish();
}

criterion_group!(
    codec,
    bench_request_parse,
    bench_many_headers,
    bench_header_push,
    bench_tnetstring,
    bench_reply,
    websocket_benches
);
criterion_main!(codec);
