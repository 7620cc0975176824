//! The handler's own work per HTTP request, without sockets: what the sans-IO `Core` does for
//! one request (parse, make it an owned event) and one `reply_http` (encode the response and
//! the Mongrel2 reply). `scripts/bench-http` measures the same through ZeroMQ and a real
//! Mongrel2; the difference between the two is ZeroMQ's and the kernel's share.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::Core;
use mongrel2_transceiver::Event;

fn bench_http_request_and_reply(c: &mut Criterion) {
    let capture = &include_bytes!("../tests/data/http_get.tnetstring.bin")[..];
    let sender = std::str::from_utf8(&capture[..capture.iter().position(|&b| b == b' ').unwrap()])
        .unwrap()
        .to_owned();
    let hello = Response::ok()
        .header("Content-Type", "text/plain")
        .body("hello world\n");
    let mut core = Core::new(Instant::now());
    core.add_server(&sender).unwrap();
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("http_get_to_hello_reply", |b| {
        b.iter(|| {
            core.handle_message(&sender, black_box(capture));
            while let Some(event) = core.poll_event() {
                if let Event::Http(request) = event {
                    core.reply_http(&request, &hello).unwrap();
                }
            }
            while let Some(out) = core.poll_outgoing() {
                // As a driver does once the reply is in its socket's buffer.
                core.recycle(black_box(out.message));
            }
        })
    });
    group.finish();
}

criterion_group!(core, bench_http_request_and_reply);
criterion_main!(core);
