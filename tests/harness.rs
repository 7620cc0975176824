//! The harness end to end: a real Transceiver echo handler, driven through a fake
//! Mongrel2 with each of the three client protocols.

mod echo_handler;

use std::time::{Duration, Instant};

use echo_handler::EchoHandler;
use mongrel2_transceiver::harness::{Connector, HarnessError, HttpRequest, Protocol, Server};
use mongrel2_transceiver::request::{HeaderProtocol, Request};
use mongrel2_transceiver::websocket::Opcode;

/// Polls `f` until it returns Some or `timeout` passes.
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = f() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

#[test]
fn mongrel2_protocol_sends_raw_requests_and_reads_raw_replies() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut client = server.client(Protocol::Mongrel2).unwrap();

    client
        .send_json("@echo", r#"{"type":"msg","msg":"hello"}"#)
        .unwrap();
    let reply = client.recv().unwrap();
    assert_eq!(reply.sender, server.sender_id());
    assert_eq!(reply.ids, vec![client.id()]);
    assert!(!reply.extended);
    assert_eq!(reply.text(), Some(r#"{"type":"msg","msg":"hello"}"#));

    // A hand-made request with a reserved connection id: the reply comes to the Server.
    let id = server.reserve_conn_id();
    let request = Request::new(server.sender_id(), id, "@echo")
        .with_header("PATH", "@echo")
        .with_header("METHOD", "JSON")
        .with_body(b"{}".to_vec());
    server.send(&request).unwrap();
    let reply = server.recv().unwrap();
    assert_eq!((reply.ids, reply.body), (vec![id], b"{}".to_vec()));
}

#[test]
fn http_echo_with_both_header_protocols() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    for protocol in [HeaderProtocol::Tnetstring, HeaderProtocol::Json] {
        let mut client = server.client(Protocol::Http).unwrap();
        client.set_header_protocol(protocol);
        let request = HttpRequest::post("/echo/x?a=1&b=two#frag", "hello")
            .header("Content-Type", "text/plain");
        let response = client.http(&request).unwrap();
        assert_eq!(response.status, 200, "{protocol:?}");
        assert_eq!(response.body, b"hello");
        assert_eq!(response.header("x-method"), Some("POST"));
        assert_eq!(response.header("x-path"), Some("/echo/x"));
        assert_eq!(response.header("x-query"), Some("a=1&b=two"));
        assert!(response.keeps_alive());
    }
}

#[test]
fn http_keep_alive_then_close() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    for n in 0..3 {
        let response = client.get(&format!("/echo/{n}")).unwrap();
        assert_eq!(
            response.header("x-path"),
            Some(format!("/echo/{n}").as_str())
        );
        assert!(!client.is_closed());
    }
    let response = client.get("/echo/close").unwrap();
    assert!(!response.keeps_alive());
    client.recv_close().unwrap();
    assert!(client.is_closed());

    // HTTP/1.0 without keep-alive: the handler closes after answering.
    let mut old = server.client(Protocol::Http).unwrap();
    let response = old
        .http(&HttpRequest::get("/echo/old").version("HTTP/1.0"))
        .unwrap();
    assert_eq!(response.status, 200);
    old.recv_close().unwrap();
}

#[test]
fn http_head_has_no_body() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    let response = client.http(&HttpRequest::head("/echo/h")).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    // The next response on the same connection is read from the right place.
    assert_eq!(client.post("/echo/after", "x").unwrap().body, b"x");
}

#[test]
fn streamed_chunked_response_arrives_incrementally() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();

    client.send_http(&HttpRequest::get("/echo/stream")).unwrap();
    let head = client.recv_head().unwrap();
    assert_eq!(head.status, 200);
    assert!(head.chunked);
    let mut chunks = Vec::new();
    while let Some(chunk) = client.recv_body_chunk().unwrap() {
        chunks.push(String::from_utf8(chunk).unwrap());
    }
    assert_eq!(chunks, ["one", "two", "three"]);

    let whole = client.get("/echo/stream").unwrap();
    assert_eq!(whole.body, b"onetwothree");
}

#[test]
fn websocket_handshake_echo_ping_and_close() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut ws = server.client(Protocol::WebSocket).unwrap();

    let response = ws.handshake("/echo/ws?room=1").unwrap();
    assert_eq!(response.status, 101);

    ws.send_text("hello").unwrap();
    assert_eq!(ws.recv_text().unwrap(), "hello");
    ws.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(ws.recv_binary().unwrap(), [0, 1, 2, 255]);

    ws.send_fragmented(Opcode::Text, &[b"frag", b"ment", b"ed"])
        .unwrap();
    assert_eq!(ws.recv_text().unwrap(), "fragmented");

    ws.send_ping(b"are you there").unwrap();
    let pong = ws.recv_frame().unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (Opcode::Pong, &b"are you there"[..])
    );

    // Invalid UTF-8 in a text frame passes Mongrel2 and must be refused by the handler.
    ws.send_frame(0x81, b"\xff\xfe").unwrap();
    let close = ws.recv_frame().unwrap();
    assert_eq!(close.close_code(), Some(1007));
    ws.recv_close().unwrap();
    assert!(matches!(ws.recv_frame(), Err(HarnessError::Closed)));
}

#[test]
fn websocket_close_from_either_side() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();

    let mut client_closes = server.client(Protocol::WebSocket).unwrap();
    client_closes.handshake("/echo").unwrap();
    client_closes.send_close(Some((1000, "done"))).unwrap();
    assert_eq!(client_closes.recv_close_frame().unwrap(), Some(1000));

    let mut handler_closes = server.client(Protocol::WebSocket).unwrap();
    handler_closes.handshake("/echo").unwrap();
    handler_closes.send_text("close:4001").unwrap();
    assert_eq!(handler_closes.recv_close_frame().unwrap(), Some(4001));

    // Mongrel2 would never forward a control frame this long.
    let mut other = server.client(Protocol::WebSocket).unwrap();
    other.handshake("/echo").unwrap();
    assert!(matches!(
        other.send_ping(&[0; 126]),
        Err(HarnessError::Unsendable(_))
    ));
}

#[test]
fn broadcast_reaches_every_client_and_replies_are_not_mixed_up() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut clients: Vec<_> = (0..5)
        .map(|_| {
            let mut ws = server.client(Protocol::WebSocket).unwrap();
            ws.handshake("/echo").unwrap();
            ws
        })
        .collect();
    // Interleaved traffic: each client must get exactly its own echo.
    for (n, ws) in clients.iter_mut().enumerate() {
        ws.send_text(&format!("mine-{n}")).unwrap();
    }
    for (n, ws) in clients.iter_mut().enumerate().rev() {
        assert_eq!(ws.recv_text().unwrap(), format!("mine-{n}"));
    }
    clients[2].send_text("broadcast:to everyone").unwrap();
    for ws in &mut clients {
        assert_eq!(ws.recv_text().unwrap(), "to everyone");
    }
}

#[test]
fn disconnect_notice_ends_the_session() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let mut stays = server.client(Protocol::WebSocket).unwrap();
    stays.handshake("/echo").unwrap();
    let mut leaves = server.client(Protocol::WebSocket).unwrap();
    leaves.handshake("/echo").unwrap();
    leaves.disconnect().unwrap();
    let count = eventually(Duration::from_secs(5), || {
        stays.send_text("count").unwrap();
        let count = stays.recv_text().unwrap();
        (count == "1").then_some(count)
    });
    assert_eq!(count.as_deref(), Some("1"));
}

#[test]
fn send_without_a_handler_times_out_instead_of_blocking() {
    let mut server = Server::builder()
        .send_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    let started = Instant::now();
    let err = client.send_http(&HttpRequest::get("/")).unwrap_err();
    assert!(matches!(err, HarnessError::SendTimeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_unreachable_handler_is_an_error_naming_it() {
    // A control socket that is bound but never answers.
    let context = zmq::Context::new();
    let silent = context.socket(zmq::REP).unwrap();
    silent.set_linger(0).unwrap();
    silent.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = silent.get_last_endpoint().unwrap().unwrap();

    let mut server = Server::builder()
        .handler(endpoint.as_str())
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    match server.client(Protocol::Http) {
        Err(HarnessError::Handler { handler, .. }) => assert_eq!(handler, endpoint),
        other => panic!("expected a handler error, got {other:?}"),
    }
}

#[test]
fn connect_and_disconnect_are_verified_and_duplicates_refused() {
    let first = EchoHandler::spawn();
    let second = EchoHandler::spawn();
    let mut server = Server::builder()
        .send_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    server.connect(first.control()).unwrap();
    assert!(matches!(
        server.connect(first.control()),
        Err(HarnessError::AlreadyConnected(_))
    ));
    server.connect(second.control()).unwrap();
    assert_eq!(server.handlers().count(), 2);

    // Both handlers serve: PUSH round-robins, every request is answered.
    let mut client = server.client(Protocol::Http).unwrap();
    for n in 0..6 {
        assert_eq!(
            client.post("/echo", format!("{n}")).unwrap().body,
            format!("{n}").as_bytes()
        );
    }

    server.disconnect(first.control()).unwrap();
    assert!(matches!(
        server.disconnect(first.control()),
        Err(HarnessError::NotConnected(_))
    ));
    for n in 0..4 {
        assert_eq!(
            client.post("/echo", format!("{n}")).unwrap().body,
            format!("{n}").as_bytes()
        );
    }
    server.disconnect(second.control()).unwrap();
    // Nobody is connected now: sending fails fast rather than queueing forever.
    let err = client.send_http(&HttpRequest::get("/echo")).unwrap_err();
    assert!(matches!(err, HarnessError::SendTimeout(_)), "{err}");

    // And a handler can come back.
    server.connect(first.control()).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    assert_eq!(client.get("/echo/back").unwrap().status, 200);
}

#[test]
fn several_servers_share_one_handler() {
    let handler = EchoHandler::spawn();
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::new([handler.control()]).unwrap())
        .collect();
    let mut clients: Vec<_> = servers
        .iter_mut()
        .map(|server| server.client(Protocol::Http).unwrap())
        .collect();
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.post("/echo", format!("server {n}")).unwrap().body,
            format!("server {n}").as_bytes()
        );
    }
    // Dropping one Server leaves the others working.
    drop(clients.remove(0));
    drop(servers.remove(0));
    for client in &mut clients {
        assert_eq!(client.get("/echo").unwrap().status, 200);
    }
}

#[test]
fn a_connector_speaks_the_control_protocol() {
    let handler = EchoHandler::spawn();
    let server = Server::builder().build().unwrap();
    let mut connector = Connector::new(server.context(), handler.control())
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    connector.ping().unwrap();
    connector.connect(&server).unwrap();
    connector.verify_connect(&server).unwrap();
    connector.disconnect(&server).unwrap();
    // After a verified disconnect the handler no longer answers through this Server.
    connector.verify_disconnect(&server).unwrap();
}

#[test]
fn dropping_the_server_is_prompt_even_with_a_dead_handler() {
    let handler = EchoHandler::spawn();
    let mut server = Server::new([handler.control()]).unwrap();
    let _client = server.client(Protocol::Http).unwrap();
    drop(handler); // the handler goes away first: teardown cannot be acknowledged
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(3));
}
