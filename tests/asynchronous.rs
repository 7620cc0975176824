//! The async face through a real Mongrel2 (and the harness from a tokio test).

use mongrel2_test_fixture as common;

#[allow(dead_code)]
#[path = "../examples/async-chat.rs"]
mod chat;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use futures_util::StreamExt;
use mongrel2_transceiver::asynchronous::AsyncTransceiver;
use mongrel2_transceiver::harness::{unbound_endpoint, HttpRequest, Protocol, Server};
use mongrel2_transceiver::{CloseReason, Event, Transceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The chat example's transceiver for the fixture's first handler, once Mongrel2 listens.
/// Its queues are small, so the tests also prove that full queues make senders wait (and
/// the driver leave requests in ZeroMQ) rather than fail or drop anything.
async fn chat_handler(m2: &Mongrel2) -> AsyncTransceiver {
    let handler = m2.handler(0);
    let transceiver = Transceiver::builder(&handler.send_ident)
        .pull(&handler.send_spec)
        .publish(&handler.recv_spec)
        .control(None)
        .build_async()
        .expect("async transceiver");
    assert!(
        transceiver.wait_ready(READY_TIMEOUT).await,
        "Mongrel2 subscribed"
    );
    transceiver
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_requests_overlap_in_one_handler() {
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/slow"))
        .start();
    let transceiver = chat_handler(&m2).await;
    let stop = transceiver.cancellation_token();
    let server = tokio::spawn(chat::serve(transceiver));

    const REQUESTS: usize = 1000;
    let addr = m2.http_addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(http_get(addr, "/slow")))
        .collect();
    let mut answered = 0;
    for client in clients {
        let response = client.await.unwrap().expect("an HTTP response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("slow answer for /slow"), "{response}");
        answered += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "{REQUESTS} concurrent requests awaiting {:?} each: {elapsed:?}",
        chat::SLOW_CALL
    );
    assert_eq!(answered, REQUESTS);
    // One after another they would take REQUESTS x 100 ms = 100 s.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");

    stop.cancel();
    server.await.unwrap().expect("serve returns Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_200_clients_loses_nothing() {
    const CLIENTS: usize = 200;
    let m2 = Mongrel2::builder()
        .handler(HandlerConf::new("/chat"))
        .start();
    let transceiver = chat_handler(&m2).await;
    let stop = transceiver.cancellation_token();
    let server = tokio::spawn(chat::serve(transceiver));

    let url = format!("ws://{}/chat", m2.http_addr());
    // Everyone joins before anyone speaks, so every message has all 200 listeners. Then
    // they speak in turn (each once it heard the one before): Mongrel2 1.12 closes a
    // connection that has more than a small fixed number of messages waiting to be written
    // ("Error delivering to MSG listener"), so 200 simultaneous speakers would overrun it
    // whatever the handler does.
    let joined = Arc::new(Barrier::new(CLIENTS));
    let heard = tokio::task::spawn_blocking(move || {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|index| {
                let url = url.clone();
                let joined = joined.clone();
                thread::spawn(move || chat_client(&url, index, CLIENTS, &joined))
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().expect("client thread"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    let heard: Vec<Vec<String>> = match heard.into_iter().collect() {
        Ok(heard) => heard,
        Err(err) => panic!("{err}\nMongrel2's log:\n{}", m2.log_tail(40)),
    };
    let everything: Vec<String> = (0..CLIENTS).map(|index| format!("from {index}")).collect();
    for (index, mut messages) in heard.into_iter().enumerate() {
        messages.sort();
        let mut expected = everything.clone();
        expected.sort();
        assert_eq!(messages, expected, "client {index} heard everything once");
    }
    stop.cancel();
    server.await.unwrap().expect("serve returns Ok");
}

/// Joins the chat, says one thing once everyone joined, and returns what it heard.
fn chat_client(
    url: &str,
    index: usize,
    everyone: usize,
    joined: &Barrier,
) -> Result<Vec<String>, String> {
    let (mut socket, _) = match tungstenite::connect(url) {
        Ok(connected) => connected,
        Err(err) => {
            joined.wait();
            return Err(format!("client {index}: handshake: {err}"));
        }
    };
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    joined.wait();
    let mine = format!("from {index}");
    let cue = index.checked_sub(1).map(|before| format!("from {before}"));
    let speak = |socket: &mut tungstenite::WebSocket<_>| {
        socket
            .send(tungstenite::Message::text(mine.clone()))
            .map_err(|err| format!("client {index}: send: {err}"))
    };
    if cue.is_none() {
        speak(&mut socket)?;
    }
    let mut heard = Vec::with_capacity(everyone);
    while heard.len() < everyone {
        let message = socket
            .read()
            .map_err(|err| format!("client {index}: after {} messages: {err}", heard.len()))?;
        match message {
            tungstenite::Message::Text(text) => {
                if cue.as_deref() == Some(text.as_str()) {
                    speak(&mut socket)?;
                }
                heard.push(text.to_string());
            }
            _ => continue,
        }
    }
    let _ = socket.close(None);
    Ok(heard)
}

/// The blocking harness from a tokio test: its calls run under `spawn_blocking`, while the
/// async handler runs on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_drives_an_async_handler_from_a_tokio_test() {
    let transceiver = Transceiver::builder("f0b7a3c2-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
        // Nowhere at first: the harness's Server connects it through the control socket.
        .pull(&unbound_endpoint())
        .publish(&unbound_endpoint())
        .control(Some("tcp://127.0.0.1:*"))
        .build_async()
        .expect("async transceiver");
    let control = transceiver.control_endpoint().unwrap().to_owned();
    let stop = transceiver.cancellation_token();
    let server = tokio::spawn(chat::serve(transceiver));

    let (slow, hello, chat) = tokio::task::spawn_blocking(move || {
        let mut server = Server::new([control]).expect("harness server");
        let mut slow = server.client(Protocol::Http).unwrap();
        let mut hello = server.client(Protocol::Http).unwrap();
        let mut chat = server.client(Protocol::WebSocket).unwrap();
        // The slow answer is still pending while the quick one comes back.
        slow.send_http(&HttpRequest::get("/slow")).unwrap();
        let hello = hello.get("/hello").unwrap();
        chat.handshake("/chat").unwrap();
        chat.send_text("hi").unwrap();
        let said = chat.recv_text().unwrap();
        let slow = slow.recv_response().unwrap();
        (
            String::from_utf8_lossy(&slow.body).into_owned(),
            hello.body,
            said,
        )
    })
    .await
    .unwrap();
    assert_eq!(hello, b"hello world\n");
    assert_eq!(chat, "hi");
    assert!(slow.contains("slow answer"), "{slow}");
    stop.cancel();
    server.await.unwrap().expect("serve returns Ok");
}

/// Cancelling the token says goodbye (close 1001) to every session, reports each closed,
/// and then ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_says_goodbye_to_every_session_then_ends_the_stream() {
    let mut transceiver = Transceiver::builder("0c6f1d9e-2b3a-4c5d-8e7f-9a0b1c2d3e4f")
        .pull(&unbound_endpoint())
        .publish(&unbound_endpoint())
        .control(Some("tcp://127.0.0.1:*"))
        .build_async()
        .expect("async transceiver");
    let control = transceiver.control_endpoint().unwrap().to_owned();
    let stop = transceiver.cancellation_token();
    let client = tokio::task::spawn_blocking(move || {
        let mut server = Server::new([control]).expect("harness server");
        let mut session = server.client(Protocol::WebSocket).unwrap();
        session.handshake("/chat").unwrap();
        session.send_text("ready").unwrap();
        let goodbye = session.recv_close_frame().unwrap();
        (goodbye, server)
    });

    let mut closed = Vec::new();
    while let Some(event) = transceiver.next().await {
        match event {
            Event::Message { .. } => stop.cancel(),
            Event::Closed { reason, .. } => closed.push(reason),
            _ => {}
        }
    }
    assert_eq!(closed, [CloseReason::Shutdown]);
    let (goodbye, server) = client.await.unwrap();
    assert_eq!(goodbye, Some(1001));
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
