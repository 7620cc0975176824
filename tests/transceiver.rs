//! The Transceiver against a real Mongrel2, with real HTTP and WebSocket clients.

use mongrel2_test_fixture as common;
use mongrel2_test_fixture::support;

use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use mongrel2_transceiver::websocket::Opcode;
use mongrel2_transceiver::{CloseReason, Transceiver, Transport};
use support::{
    close_code, get_eventually, ws_connect, EchoHandler, HttpClient, RawWebSocket, Seen,
};

const WAIT: Duration = Duration::from_secs(10);

fn mongrel2() -> Mongrel2 {
    Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start()
}

fn echo(m2: &Mongrel2) -> EchoHandler {
    echo_with(m2, |b| b)
}

fn echo_with(
    m2: &Mongrel2,
    configure: impl FnOnce(mongrel2_transceiver::Builder) -> mongrel2_transceiver::Builder
        + Send
        + 'static,
) -> EchoHandler {
    let h = m2.handler(0);
    EchoHandler::start(&h.send_ident, &h.send_spec, &h.recv_spec, configure)
}

#[test]
fn http_get_and_post_are_answered() {
    let m2 = mongrel2();
    let _handler = echo(&m2);
    let mut client = HttpClient::connect(m2.http_addr());

    let response = client
        .request(
            "GET /echo/x?a=1&b=two+words&a=3 HTTP/1.1\r\nHost: localhost\r\nX-Test: yes\r\n\r\n",
        )
        .expect("GET answered");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let echo = response.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/echo/x");
    assert_eq!(
        echo["query"],
        serde_json::json!([["a", "1"], ["b", "two words"], ["a", "3"]])
    );
    assert_eq!(echo["headers"]["x-test"], "yes");

    let response = client
        .request("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello there")
        .expect("POST answered on the same connection");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["method"], "POST");
    assert_eq!(response.json()["body"], "hello there");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let m2 = mongrel2();
    let _handler = echo(&m2);
    let mut client = HttpClient::connect(m2.http_addr());
    for i in 0..5 {
        let response = client
            .request(&format!(
                "GET /echo/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n"
            ))
            .expect("answered");
        assert_eq!(response.json()["path"], format!("/echo/{i}"));
        assert_eq!(response.header("connection"), None);
    }
}

#[test]
fn connection_close_and_http_1_0_close_after_the_response() {
    let m2 = mongrel2();
    let _handler = echo(&m2);

    let mut client = HttpClient::connect(m2.http_addr());
    let response = client
        .request("GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("answered");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        client.closed_by_server(),
        "server closes after Connection: close"
    );

    let mut client = HttpClient::connect(m2.http_addr());
    let response = client
        .request("GET /echo HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("answered");
    assert_eq!(response.status, 200);
    assert!(
        client.closed_by_server(),
        "server closes an HTTP/1.0 connection"
    );

    let mut client = HttpClient::connect(m2.http_addr());
    for _ in 0..2 {
        let response = client
            .request("GET /echo HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
            .expect("HTTP/1.0 keep-alive answered twice");
        assert_eq!(response.status, 200);
    }
}

#[test]
fn websocket_handshake_and_echo_with_a_real_client() {
    let m2 = mongrel2();
    let handler = echo(&m2);
    let mut socket = ws_connect(m2.http_addr(), "/echo");
    let conn = handler.wait(WAIT, |seen| match seen {
        Seen::Opened(conn) => Some(conn.clone()),
        _ => None,
    });

    socket
        .send(tungstenite::Message::text("hello"))
        .expect("send text");
    assert_eq!(
        socket.read().expect("echo"),
        tungstenite::Message::text("hello")
    );
    socket
        .send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .expect("send binary");
    assert_eq!(
        socket.read().expect("echo"),
        tungstenite::Message::binary(vec![0u8, 1, 2, 255])
    );

    socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Library(4001),
            reason: "bye".into(),
        }))
        .expect("close");
    match socket.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4001),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(err) => panic!("no close echo: {err}"),
    }
    let reason = handler.wait(WAIT, |seen| match seen {
        Seen::Closed(c, reason) if *c == conn => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        reason,
        CloseReason::Client {
            code: Some(mongrel2_transceiver::CloseCode(4001)),
            reason: "bye".into()
        }
    );
}

#[test]
fn fragments_ping_and_close_over_raw_frames() {
    let m2 = mongrel2();
    let _handler = echo(&m2);
    let mut ws = RawWebSocket::connect(m2.http_addr(), "/echo");

    ws.send(false, Opcode::Text, b"Hel");
    ws.send(false, Opcode::Continuation, b"lo, ");
    ws.send(true, Opcode::Continuation, b"world");
    assert_eq!(
        ws.recv_data().unwrap(),
        (Opcode::Text, b"Hello, world".to_vec())
    );

    ws.send(true, Opcode::Ping, b"are you there");
    assert_eq!(
        ws.recv().unwrap(),
        (Opcode::Pong, b"are you there".to_vec())
    );

    let mut close = 4321u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    ws.send(true, Opcode::Close, &close);
    let (opcode, payload) = ws.recv_data().unwrap();
    assert_eq!(opcode, Opcode::Close);
    assert_eq!(close_code(&payload), Some(4321));
    assert!(ws.at_eof(), "connection closed after the close echo");
}

#[test]
fn invalid_utf8_text_is_closed_with_1007_and_others_keep_working() {
    let m2 = mongrel2();
    let handler = echo(&m2);
    let mut bad = RawWebSocket::connect(m2.http_addr(), "/echo");
    let mut good = RawWebSocket::connect(m2.http_addr(), "/echo");

    bad.send(true, Opcode::Text, &[0x68, 0xff, 0xfe, 0x69]);
    let (opcode, payload) = bad.recv_data().unwrap();
    assert_eq!(opcode, Opcode::Close);
    assert_eq!(close_code(&payload), Some(1007));
    assert!(bad.at_eof());
    let reason = handler.wait(WAIT, |seen| match seen {
        Seen::Closed(_, reason) => Some(reason.clone()),
        _ => None,
    });
    assert!(matches!(
        reason,
        CloseReason::ProtocolViolation {
            code: mongrel2_transceiver::CloseCode::INVALID_PAYLOAD,
            ..
        }
    ));

    good.send(true, Opcode::Text, "still here ✓".as_bytes());
    assert_eq!(
        good.recv_data().unwrap(),
        (Opcode::Text, "still here ✓".as_bytes().to_vec())
    );
}

#[test]
fn rsv_bits_reserved_opcodes_and_oversize_are_closed() {
    let m2 = mongrel2();
    let _handler = echo_with(&m2, |b| b.max_message_size(1000));
    let cases: [(&[u8], u16); 3] = [
        // RSV1 set on a text frame, no extension negotiated.
        (&[0xC1, 0x80 | 2, 0, 0, 0, 0, b'h', b'i'], 1002),
        // Opcode 3 is reserved.
        (&[0x83, 0x80 | 2, 0, 0, 0, 0, b'h', b'i'], 1002),
        // 1001 bytes is over the configured maximum.
        (&[], 1009),
    ];
    for (bytes, code) in cases {
        let mut ws = RawWebSocket::connect(m2.http_addr(), "/echo");
        if bytes.is_empty() {
            ws.send(true, Opcode::Binary, &[7u8; 1001]);
        } else {
            ws.send_bytes(bytes);
        }
        let (opcode, payload) = ws.recv_data().unwrap();
        assert_eq!(opcode, Opcode::Close);
        assert_eq!(close_code(&payload), Some(code));
    }
}

#[test]
fn a_client_that_never_pongs_is_dropped_after_the_interval() {
    let m2 = mongrel2();
    let handler = echo_with(&m2, |b| b.ping_interval(Duration::from_millis(300)));
    let mut silent = RawWebSocket::connect(m2.http_addr(), "/echo");
    let silent_conn = handler.wait(WAIT, |seen| match seen {
        Seen::Opened(conn) => Some(conn.clone()),
        _ => None,
    });

    // tungstenite answers pings while it reads: that session survives several intervals.
    let addr = m2.http_addr();
    let lively = std::thread::spawn(move || {
        let mut lively = ws_connect(addr, "/echo");
        lively
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut pings = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            match lively.read() {
                Ok(tungstenite::Message::Ping(_)) => pings += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => panic!("lively client dropped: {err}"),
            }
            let _ = lively.flush();
        }
        lively.send(tungstenite::Message::text("alive")).unwrap();
        lively.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        loop {
            match lively.read().expect("echo") {
                tungstenite::Message::Text(text) => {
                    assert_eq!(text.as_str(), "alive");
                    return pings;
                }
                tungstenite::Message::Ping(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });

    // The silent client sees pings, never answers, and is closed with 1001.
    let mut pings = 0;
    let close = loop {
        let (opcode, payload) = silent.recv().expect("frames until the close");
        match opcode {
            Opcode::Ping => pings += 1,
            Opcode::Close => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pings >= 1);
    assert_eq!(close_code(&close), Some(1001));
    assert!(silent.at_eof());
    let reason = handler.wait(WAIT, |seen| match seen {
        Seen::Closed(c, reason) if *c == silent_conn => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, CloseReason::PingTimeout);

    let lively_pings = lively.join().expect("the lively client stayed connected");
    assert!(
        lively_pings >= 3,
        "pinged every interval, got {lively_pings}"
    );
}

#[test]
fn broadcast_reaches_300_sessions_exactly_once() {
    let m2 = mongrel2();
    let handler = echo(&m2);
    let mut clients: Vec<_> = (0..300)
        .map(|_| ws_connect(m2.http_addr(), "/echo"))
        .collect();
    let mut opened = 0;
    while opened < 300 {
        handler.wait(WAIT, |seen| matches!(seen, Seen::Opened(_)).then_some(()));
        opened += 1;
    }
    handler.handle.broadcast_text("to everyone").unwrap();
    handler.handle.broadcast_text("the end").unwrap();
    for client in &mut clients {
        client.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(
            client.read().unwrap(),
            tungstenite::Message::text("to everyone")
        );
        assert_eq!(
            client.read().unwrap(),
            tungstenite::Message::text("the end")
        );
    }
}

#[test]
fn a_second_mongrel2_added_over_the_control_socket_serves_too() {
    let first = mongrel2();
    let handler = echo(&first);
    let second = Mongrel2::builder()
        .handler(HandlerConf::new("/echo"))
        .start();
    let h2 = second.handler(0);
    let port = |endpoint: &str| -> u16 { endpoint.rsplit(':').next().unwrap().parse().unwrap() };

    let context = zmq::Context::new();
    let control = context.socket(zmq::REQ).unwrap();
    control.set_linger(0).unwrap();
    control.set_rcvtimeo(5000).unwrap();
    control.connect(&handler.control).unwrap();
    control.send("PING", 0).unwrap();
    assert_eq!(control.recv_bytes(0).unwrap(), b"PONG");

    let body = serde_json::json!({
        "push": ["127.0.0.1", port(&h2.send_spec)],
        "sub": ["127.0.0.1", port(&h2.recv_spec)],
    })
    .to_string();
    let request =
        mongrel2_transceiver::request::Request::new(&*h2.send_ident, 0, "/__add_connection__")
            .with_header("METHOD", "JSON")
            .with_header("PATH", "/__add_connection__")
            .with_body(body.into_bytes());
    control.send(request.encode(), 0).unwrap();
    assert_eq!(control.recv_bytes(0).unwrap(), b"RECEIVED");

    let response = get_eventually(second.http_addr(), "/echo/second", WAIT)
        .expect("the second Mongrel2 is served");
    assert_eq!(response.json()["path"], "/echo/second");
    handler.wait(WAIT, |seen| match seen {
        Seen::Http { sender, .. } if *sender == h2.send_ident => Some(()),
        _ => None,
    });
    let response =
        get_eventually(first.http_addr(), "/echo/first", WAIT).expect("first still served");
    assert_eq!(response.json()["path"], "/echo/first");
}

/// The libzmq transport (the suite runs over the default, direct one): HTTP, a WebSocket
/// echo, and a Mongrel2 restart.
#[test]
fn the_libzmq_transport_serves_http_websocket_and_a_restart() {
    let mut m2 = mongrel2();
    let handler = echo_with(&m2, |b| b.transport(Transport::Libzmq));
    let response = get_eventually(m2.http_addr(), "/echo/libzmq", WAIT).expect("served");
    assert_eq!(response.json()["path"], "/echo/libzmq");

    let mut ws = ws_connect(m2.http_addr(), "/echo");
    ws.send(tungstenite::Message::text("over libzmq"))
        .expect("send");
    assert_eq!(
        ws.read().expect("echo"),
        tungstenite::Message::text("over libzmq")
    );
    handler.wait(WAIT, |seen| matches!(seen, Seen::Message(_)).then_some(()));

    m2.kill();
    m2.start();
    let response =
        get_eventually(m2.http_addr(), "/echo/again", WAIT).expect("served after the restart");
    assert_eq!(response.json()["path"], "/echo/again");
}

#[test]
fn mongrel2_restarted_mid_test_is_served_again_within_two_seconds() {
    let mut m2 = mongrel2();
    let _handler = echo(&m2);
    assert!(get_eventually(m2.http_addr(), "/echo/before", WAIT).is_some());
    m2.kill();
    m2.start();
    let back = Instant::now();
    let response = get_eventually(m2.http_addr(), "/echo/after", Duration::from_secs(2))
        .expect("served again after the restart");
    assert_eq!(response.json()["path"], "/echo/after");
    assert!(back.elapsed() < Duration::from_secs(2));
}

#[test]
fn drop_returns_within_a_second_when_mongrel2_is_gone() {
    let mut m2 = mongrel2();
    let h = m2.handler(0).clone();
    let mut transceiver = Transceiver::builder(&h.send_ident)
        .pull(&h.send_spec)
        .publish(&h.recv_spec)
        .control(None)
        .queue_capacity(16)
        .send_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    assert!(transceiver.wait_ready(WAIT).unwrap());
    // The handshake is answered by this thread's loop below, so do not wait for it here.
    let mut ws = std::net::TcpStream::connect(m2.http_addr()).unwrap();
    std::io::Write::write_all(
        &mut ws,
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let opened = Instant::now();
    while transceiver.session_count() == 0 && opened.elapsed() < WAIT {
        let _ = transceiver.recv_timeout(Duration::from_millis(50)).unwrap();
    }
    assert_eq!(transceiver.session_count(), 1);
    m2.kill();
    // A full queue of sends too: the handle gives up on the last ones.
    let handle = transceiver.handle();
    let conn = transceiver.sessions().next().unwrap();
    let mut full = false;
    for _ in 0..100 {
        match handle.send_text(&conn, "queued while Mongrel2 is gone") {
            Ok(()) => {}
            Err(mongrel2_transceiver::Error::QueueFull) => full = true,
            Err(err) => panic!("unexpected {err}"),
        }
    }
    assert!(full, "the queue filled up");
    let start = Instant::now();
    drop(transceiver);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        start.elapsed()
    );
}

#[test]
fn drop_returns_within_a_second_with_an_unreachable_endpoint() {
    let endpoint = format!("tcp://127.0.0.1:{}", common::free_tcp_port());
    let transceiver = Transceiver::builder("nobody-listens")
        .pull(&endpoint)
        .publish(&endpoint)
        .control(None)
        .build()
        .unwrap();
    let start = Instant::now();
    drop(transceiver);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn handles_fail_clearly_once_the_loop_is_gone() {
    let endpoint = format!("tcp://127.0.0.1:{}", common::free_tcp_port());
    let transceiver = Transceiver::builder("gone")
        .pull(&endpoint)
        .publish(&endpoint)
        .control(None)
        .build()
        .unwrap();
    let handle = transceiver.handle();
    transceiver.shutdown();
    let err = handle
        .send_text(&mongrel2_transceiver::ConnId::new("gone", 1), "x")
        .unwrap_err();
    assert!(matches!(err, mongrel2_transceiver::Error::Closed));
}

#[test]
fn pings_stay_on_schedule_while_the_loop_is_busy() {
    let m2 = mongrel2();
    let _handler = echo_with(&m2, |b| b.ping_interval(Duration::from_millis(200)));
    let addr = m2.http_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = HttpClient::connect(addr);
                let mut served = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    client
                        .request("GET /echo/load HTTP/1.1\r\nHost: localhost\r\n\r\n")
                        .expect("served under load");
                    served += 1;
                }
                served
            })
        })
        .collect();

    let mut socket = ws_connect(addr, "/echo");
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_secs(2) {
        match socket.read() {
            Ok(tungstenite::Message::Ping(_)) => pings.push(start.elapsed()),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("dropped under load: {err}"),
        }
        let _ = socket.flush();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let served: u32 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 100, "the loop was busy ({served} requests)");
    // Ten rounds fit in two seconds; a loop that let requests starve its timer would miss most.
    assert!(pings.len() >= 7, "pings at {pings:?}");
}
