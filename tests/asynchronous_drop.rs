//! Dropping a tokio runtime that runs the async face mid-traffic: it returns promptly and
//! leaves no thread behind. Alone in its binary, so no other test's threads are counted.

use mongrel2_test_fixture as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use futures_util::StreamExt;
use mongrel2_transceiver::http::Response;
use mongrel2_transceiver::{Event, Transceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn dropping_the_runtime_mid_traffic_returns_at_once_and_leaves_no_thread() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/slow"))
        .start();
    let handler = m2.handler(0).clone();
    let addr = m2.http_addr();
    let before = threads();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    runtime.block_on(async move {
        let mut transceiver = Transceiver::builder(&handler.send_ident)
            .pull(&handler.send_spec)
            .publish(&handler.recv_spec)
            .control(None)
            .build_async()
            .unwrap();
        assert!(transceiver.wait_ready(Duration::from_secs(10)).await);
        tokio::spawn(async move {
            while let Some(event) = transceiver.next().await {
                if let Event::Http(request) = event {
                    let handle = transceiver.handle();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = handle.reply_http(&request, &Response::ok()).await;
                    });
                }
            }
        });
        // Clients that never stop asking, so requests and replies are in flight when the
        // runtime goes.
        for _ in 0..50 {
            let counter = counter.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                        continue;
                    };
                    let request = "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                    if stream.write_all(request.as_bytes()).await.is_err() {
                        continue;
                    }
                    let mut response = Vec::new();
                    let _ = stream.read_to_end(&mut response).await;
                    if response.starts_with(b"HTTP/1.1 200") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        while counter.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(answered.load(Ordering::SeqCst) >= 100);

    let dropping = Instant::now();
    drop(runtime);
    let took = dropping.elapsed();
    println!("dropping the runtime mid-traffic took {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(threads(), before, "threads left behind");
}
