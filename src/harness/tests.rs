//! Server, Connector and Client against a minimal stand-in handler that speaks the
//! control protocol with raw sockets the way the seed's Python transceiver does (it checks
//! that every control request carries connection id `-1`, tnetstring headers and the
//! seed's METHODs, and answers `__ping__` with `SENDER 2:-1, GUID`): checks the harness's
//! side of the wire independently of the Transceiver.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::reply;
use crate::request::{HeaderProtocol, Request};

/// A handler thread: control REP, and per added sender a PULL + PUB. Requests are
/// answered by `answer(request) -> Vec<body>` (each body one reply).
struct FakeHandler {
    control: String,
    stop: zmq::Socket,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

type Answer = fn(&Request<'_>) -> Vec<Vec<u8>>;

impl FakeHandler {
    fn spawn(answer: Answer) -> FakeHandler {
        let context = zmq::Context::new();
        let control = context.socket(zmq::REP).unwrap();
        control.set_linger(0).unwrap();
        control.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = control.get_last_endpoint().unwrap().unwrap();
        let stop_endpoint = format!("inproc://fake-stop-{}", uuid::Uuid::new_v4());
        let stop = context.socket(zmq::PAIR).unwrap();
        stop.bind(&stop_endpoint).unwrap();
        let stop_rx = context.socket(zmq::PAIR).unwrap();
        stop_rx.connect(&stop_endpoint).unwrap();
        let thread = std::thread::spawn(move || run(context, control, stop_rx, answer));
        FakeHandler {
            control: endpoint,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the handler and returns every request it received.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.send("stop", 0).unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeHandler {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.stop.send("stop", zmq::DONTWAIT);
            let _ = thread.join();
        }
    }
}

struct Link {
    sender: String,
    pull: zmq::Socket,
    publish: zmq::Socket,
}

fn run(
    context: zmq::Context,
    control: zmq::Socket,
    stop: zmq::Socket,
    answer: Answer,
) -> Vec<Vec<u8>> {
    let mut links: Vec<Link> = Vec::new();
    let mut seen = Vec::new();
    loop {
        let mut items = vec![
            control.as_poll_item(zmq::POLLIN),
            stop.as_poll_item(zmq::POLLIN),
        ];
        items.extend(links.iter().map(|l| l.pull.as_poll_item(zmq::POLLIN)));
        zmq::poll(&mut items, 1000).unwrap();
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        if ready[1] {
            return seen;
        }
        // Requests first: the control request below may change `links`.
        for (index, link) in links.iter().enumerate() {
            if !ready[2 + index] {
                continue;
            }
            while let Ok(message) = link.pull.recv_bytes(zmq::DONTWAIT) {
                let request = Request::parse(&message).unwrap();
                for body in answer(&request) {
                    let reply = reply::reply(&link.sender, &[request.conn_id()], &body).unwrap();
                    link.publish.send(reply, 0).unwrap();
                }
                seen.push(message);
            }
        }
        if ready[0] {
            let message = control.recv_bytes(0).unwrap();
            if message.eq_ignore_ascii_case(b"PING") {
                control.send("PONG", 0).unwrap();
                continue;
            }
            control.send("RECEIVED", 0).unwrap();
            let (request, conn_id) = Request::parse_control(&message).unwrap();
            assert_eq!(conn_id, None, "the seed's control requests come from -1");
            assert_eq!(request.protocol(), HeaderProtocol::Tnetstring);
            let sender = request.sender().to_owned();
            let command = request.path().rsplit('/').next().unwrap();
            let method = match command {
                "__add_connection__" | "__remove_connection__" => "JSON",
                _ => "MONGREL2",
            };
            assert_eq!(request.method(), Some(method), "{command}");
            match command {
                "__add_connection__" => {
                    let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
                    let endpoint = |key: &str| {
                        format!("tcp://{}:{}", body[key][0].as_str().unwrap(), body[key][1])
                    };
                    let pull = context.socket(zmq::PULL).unwrap();
                    pull.set_linger(0).unwrap();
                    pull.connect(&endpoint("push")).unwrap();
                    let publish = context.socket(zmq::PUB).unwrap();
                    publish.set_linger(0).unwrap();
                    publish.connect(&endpoint("sub")).unwrap();
                    links.push(Link {
                        sender,
                        pull,
                        publish,
                    });
                }
                "__remove_connection__" => links.retain(|l| l.sender != sender),
                "__ping__" => {
                    let text = request
                        .query_pairs()
                        .into_iter()
                        .find(|(k, _)| k == "text")
                        .unwrap()
                        .1;
                    if let Some(link) = links.iter().find(|l| l.sender == sender) {
                        // The seed answers the bare text to the request's own id, -1.
                        let message = format!("{sender} 2:-1, {text}");
                        link.publish.send(message.as_bytes(), 0).unwrap();
                    }
                }
                _ => {}
            }
        }
    }
}

fn echo_body(request: &Request<'_>) -> Vec<Vec<u8>> {
    vec![request.body().to_vec()]
}

#[test]
fn first_request_and_reply_are_never_lost() {
    // Repeated to give a slow-joiner race every chance to show.
    for _ in 0..20 {
        let handler = FakeHandler::spawn(echo_body);
        let mut server = Server::new([handler.control.as_str()]).unwrap();
        let mut client = server.client(Protocol::Mongrel2).unwrap();
        client.send("/x", &[("METHOD", "GET")], b"first").unwrap();
        assert_eq!(client.recv().unwrap().body, b"first");
    }
}

#[test]
fn replies_go_to_their_own_client() {
    let handler = FakeHandler::spawn(echo_body);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut clients: Vec<Client> = (0..4)
        .map(|_| server.client(Protocol::Mongrel2).unwrap())
        .collect();
    for (n, client) in clients.iter_mut().enumerate() {
        client.send("/x", &[], n.to_string().as_bytes()).unwrap();
    }
    for (n, client) in clients.iter_mut().enumerate().rev() {
        let reply = client.recv().unwrap();
        assert_eq!(
            (reply.ids, reply.body),
            (vec![client.id()], n.to_string().into_bytes())
        );
        assert_eq!(
            client.recv_timeout(Duration::from_millis(20)).unwrap(),
            None
        );
    }
}

#[test]
fn requests_carry_mongrel2_headers_in_both_protocols() {
    let handler = FakeHandler::spawn(|_| vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()]);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    client.set_pattern("/handler");
    let request = HttpRequest::get("/handler/get?a=1&b=two%20words&a=3#frag")
        .header("X-Dup", "one")
        .header("x-dup", "two")
        .header("X-Forwarded-For", "10.9.9.9");
    assert_eq!(client.http(&request).unwrap().status, 204);
    client.set_header_protocol(HeaderProtocol::Json);
    assert_eq!(client.http(&request).unwrap().status, 204);
    drop(server);
    drop(client);
    let seen = handler.finish();
    assert_eq!(seen.len(), 2);
    for (raw, protocol) in seen
        .iter()
        .zip([HeaderProtocol::Tnetstring, HeaderProtocol::Json])
    {
        let parsed = Request::parse(raw).unwrap();
        assert_eq!(parsed.protocol(), protocol);
        assert_eq!(parsed.path(), "/handler/get");
        assert_eq!(parsed.method(), Some("GET"));
        assert_eq!(parsed.header("VERSION"), Some("HTTP/1.1"));
        assert_eq!(
            parsed.header("URI"),
            Some("/handler/get?a=1&b=two%20words&a=3")
        );
        assert_eq!(parsed.header("QUERY"), Some("a=1&b=two%20words&a=3"));
        assert_eq!(parsed.header("FRAGMENT"), Some("frag"));
        assert_eq!(parsed.header("PATTERN"), Some("/handler"));
        assert_eq!(parsed.header("URL_SCHEME"), Some("http"));
        assert_eq!(parsed.header("REMOTE_ADDR"), Some("127.0.0.1"));
        assert_eq!(parsed.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(parsed.header("host"), Some("localhost"));
        assert_eq!(
            parsed.header_all("x-dup").collect::<Vec<_>>(),
            ["one", "two"]
        );
    }
    // Same shape as the real capture (tests/data/http_get.json.bin): PATH first, then
    // the client headers, then Mongrel2's own ending with REMOTE_ADDR.
    let json = String::from_utf8_lossy(&seen[1]);
    let headers = &json[json.find('{').unwrap()..];
    assert!(
        headers.starts_with(r#"{"PATH":"/handler/get","#),
        "{headers}"
    );
    assert!(
        headers.contains(r#""METHOD":"GET","VERSION":"HTTP/1.1","URI":"#),
        "{headers}"
    );
    assert!(
        headers.contains(r#""URL_SCHEME":"http","REMOTE_ADDR":"127.0.0.1"}"#),
        "{headers}"
    );
    let tnet = String::from_utf8_lossy(&seen[0]);
    assert!(
        tnet.contains("11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,3:GET,10:URL_SCHEME,4:http,"),
        "{tnet}"
    );
}

#[test]
fn notices_match_the_captures() {
    let handler = FakeHandler::spawn(|_| Vec::new());
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut client = server.client(Protocol::Mongrel2).unwrap();
    client.send_credits(41).unwrap();
    client.disconnect().unwrap();
    client.set_header_protocol(HeaderProtocol::Json);
    client.send_credits(41).unwrap();
    client.disconnect().unwrap();
    let sender = server.sender_id().to_owned();
    let id = client.id();
    drop(client);
    drop(server);
    let seen = handler.finish();
    let expected = [
        format!("{sender} {id} @* 41:16:DOWNLOAD_CREDITS,2:41,6:METHOD,4:JSON,}}18:{{\"type\":\"credits\"}},"),
        format!("{sender} {id} @* 16:6:METHOD,4:JSON,}}21:{{\"type\":\"disconnect\"}},"),
        format!("{sender} {id} @* 41:{{\"METHOD\":\"JSON\",\"DOWNLOAD_CREDITS\":\"41\"}},18:{{\"type\":\"credits\"}},"),
        format!("{sender} {id} @* 17:{{\"METHOD\":\"JSON\"}},21:{{\"type\":\"disconnect\"}},"),
    ];
    let seen: Vec<String> = seen
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn websocket_frames_carry_flags_and_handshake_headers() {
    fn answer(request: &Request<'_>) -> Vec<Vec<u8>> {
        match request.method() {
            Some("WEBSOCKET_HANDSHAKE") => {
                let accept = std::str::from_utf8(request.body()).unwrap();
                // The 101 and two frames coalesced into one reply, as handlers may do.
                let mut reply = crate::websocket::handshake_response(accept, None).unwrap();
                reply.extend_from_slice(b"\x81\x05hello\x89\x00");
                vec![reply]
            }
            _ => {
                let flags = request.header("FLAGS").unwrap_or("none").to_owned();
                let mut frame = Vec::new();
                crate::websocket::encode_frame(
                    crate::websocket::Opcode::Text,
                    flags.as_bytes(),
                    &mut frame,
                );
                vec![frame]
            }
        }
    }
    let handler = FakeHandler::spawn(answer);
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut ws = server.client(Protocol::WebSocket).unwrap();
    assert!(matches!(
        ws.send_text("early"),
        Err(HarnessError::NoHandshake)
    ));
    ws.handshake("/ws?room=1").unwrap();
    let first = ws.recv_frame().unwrap();
    assert_eq!(first.text(), Some("hello"));
    assert_eq!(
        ws.recv_frame().unwrap().opcode,
        crate::websocket::Opcode::Ping
    );
    ws.send_text("x").unwrap();
    assert_eq!(ws.recv_text().unwrap(), "0x81");
    ws.send_fragmented(crate::websocket::Opcode::Binary, &[b"a", b"b"])
        .unwrap();
    assert_eq!(ws.recv_text().unwrap(), "0x82");
    ws.send_frame(0x41, b"rsv1").unwrap();
    assert_eq!(ws.recv_text().unwrap(), "0xC1");
    ws.send_pong(b"").unwrap();
    assert_eq!(ws.recv_text().unwrap(), "0x8A");
    drop(ws);
    drop(server);
    let seen = handler.finish();
    let frame = Request::parse(&seen[1]).unwrap();
    assert_eq!(frame.method(), Some("WEBSOCKET"));
    assert_eq!(frame.header("upgrade"), Some("websocket"));
    assert_eq!(frame.header("QUERY"), Some("room=1"));
    assert_eq!(frame.body(), b"x");
    assert!(frame.header("sec-websocket-key").is_some());
    // The dropped client told the handler it went away.
    let last = Request::parse(seen.last().unwrap()).unwrap();
    assert!(last.is_disconnect());
}

#[test]
fn disconnect_is_verified_by_transport_and_probe() {
    let handler = FakeHandler::spawn(echo_body);
    let mut server = Server::builder()
        .send_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    server.connect(&handler.control).unwrap();
    let mut client = server.client(Protocol::Mongrel2).unwrap();
    client.send("/x", &[], b"1").unwrap();
    assert_eq!(client.recv().unwrap().body, b"1");
    server.disconnect(&handler.control).unwrap();
    // With the handler's PULL provably gone, the PUSH has no peer: sending times out.
    let started = Instant::now();
    assert!(matches!(
        client.send("/x", &[], b"2"),
        Err(HarnessError::SendTimeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    server.connect(&handler.control).unwrap();
    client.send("/x", &[], b"3").unwrap();
    assert_eq!(client.recv().unwrap().body, b"3");
}

#[test]
fn a_handler_that_ignores_removal_fails_verification() {
    // Answers control requests but never drops a connection.
    fn stubborn(context: zmq::Context, control: zmq::Socket) {
        let mut kept = Vec::new();
        while let Ok(message) = control.recv_bytes(0) {
            if message == b"PING" {
                control.send("PONG", 0).unwrap();
                continue;
            }
            control.send("RECEIVED", 0).unwrap();
            let (request, _) = Request::parse_control(&message).unwrap();
            match request.path() {
                "/__add_connection__" => {
                    let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
                    let publish = context.socket(zmq::PUB).unwrap();
                    publish.set_linger(0).unwrap();
                    publish
                        .connect(&format!(
                            "tcp://{}:{}",
                            body["sub"][0].as_str().unwrap(),
                            body["sub"][1]
                        ))
                        .unwrap();
                    let pull = context.socket(zmq::PULL).unwrap();
                    pull.set_linger(0).unwrap();
                    pull.connect(&format!(
                        "tcp://{}:{}",
                        body["push"][0].as_str().unwrap(),
                        body["push"][1]
                    ))
                    .unwrap();
                    kept.push((request.sender().to_owned(), publish, pull));
                }
                "/__ping__" => {
                    let text = request
                        .query_pairs()
                        .into_iter()
                        .find(|(k, _)| k == "text")
                        .unwrap()
                        .1;
                    for (sender, publish, _) in &kept {
                        publish
                            .send(format!("{sender} 2:-1, {text}").as_bytes(), 0)
                            .unwrap();
                    }
                }
                _ => {}
            }
        }
    }
    let context = zmq::Context::new();
    let control = context.socket(zmq::REP).unwrap();
    control.set_linger(0).unwrap();
    control.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = control.get_last_endpoint().unwrap().unwrap();
    // Idle for a while means the test is over: the thread then ends.
    control.set_rcvtimeo(3000).unwrap();
    let thread_context = context.clone();
    std::thread::spawn(move || stubborn(thread_context, control));

    let mut server = Server::builder()
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    server.connect(&endpoint).unwrap();
    match server.disconnect(&endpoint) {
        Err(HarnessError::Handler { handler, reason }) => {
            assert_eq!(handler, endpoint);
            assert!(reason.contains("still open"), "{reason}");
        }
        other => panic!("expected a failed verification, got {other:?}"),
    }
    assert_eq!(server.handlers().collect::<Vec<_>>(), [endpoint.as_str()]);
}

#[test]
fn uploads_and_credits_read_as_mongrel2_sends_them() {
    use crate::request::RequestKind;
    let handler = FakeHandler::spawn(|_| Vec::new());
    let mut server = Server::new([handler.control.as_str()]).unwrap();
    let mut client = server.client(Protocol::Http).unwrap();
    client.set_header_protocol(HeaderProtocol::Json);
    let upload = HttpRequest::post("/handler/upload", Vec::new())
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "5000");
    client.upload_start(&upload, "/tmp/upload.X").unwrap();
    client.upload_done(&upload, "/tmp/upload.X").unwrap();
    client.upload_stream_start(&upload).unwrap();
    client
        .upload_stream_chunk(&upload, 0, &[7; 4096], false)
        .unwrap();
    client
        .upload_stream_chunk(&upload, 4096, &[8; 904], true)
        .unwrap();
    client.send_credits(41).unwrap();
    let id = client.id();
    drop(client);
    drop(server);
    let seen = handler.finish();
    let kinds: Vec<String> = seen
        .iter()
        .map(|raw| format!("{:?}", Request::parse(raw).unwrap().kind().unwrap()))
        .collect();
    assert!(
        matches!(
            Request::parse(&seen[0]).unwrap().kind().unwrap(),
            RequestKind::UploadStart {
                path: "/tmp/upload.X"
            }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            Request::parse(&seen[1]).unwrap().kind().unwrap(),
            RequestKind::UploadDone {
                path: "/tmp/upload.X"
            }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            Request::parse(&seen[3]).unwrap().kind().unwrap(),
            RequestKind::UploadChunk {
                offset: 0,
                done: false
            }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            Request::parse(&seen[4]).unwrap().kind().unwrap(),
            RequestKind::UploadChunk {
                offset: 4096,
                done: true
            }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            Request::parse(&seen[5]).unwrap().kind().unwrap(),
            RequestKind::Credits { credits: 41 }
        ),
        "{kinds:?}"
    );
    // Chunks carry only the stream headers, exactly like the capture.
    let chunk = String::from_utf8_lossy(&seen[4]);
    assert!(
        chunk.contains(&format!(
            " {id} /handler/upload 49:{{\"UPLOAD_STREAM\":\"4096\",\"UPLOAD_STREAM_DONE\":\"1\"}},904:"
        )),
        "{chunk}"
    );
}

/// The Connector's control requests are the seed's, byte for byte (issue 9).
#[test]
fn the_connector_sends_the_seeds_bytes() {
    let context = zmq::Context::new();
    let control = context.socket(zmq::REP).unwrap();
    control.set_linger(0).unwrap();
    control.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = control.get_last_endpoint().unwrap().unwrap();
    let answerer = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(control.recv_bytes(0).unwrap());
            control.send("RECEIVED", 0).unwrap();
        }
        seen
    });
    let guid = "9b2f6c1e-3d4a-4f5b-8c7d-1e2f3a4b5c6d";
    let mut connector = Connector::new(&context, &endpoint).unwrap();
    connector
        .add_connection(
            "python_server",
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.1:5556",
        )
        .unwrap();
    connector.ping_connection("python_server", guid).unwrap();
    connector.disconnect_ping("python_server").unwrap();
    connector.remove_connection("python_server").unwrap();
    let seen = answerer.join().unwrap();
    let add_body = br#"{"push":["127.0.0.1",5555],"sub":["127.0.0.1",5556]}"#;
    let mut add = b"python_server -1 /__add_connection__ 16:6:METHOD,4:JSON,}".to_vec();
    add.extend_from_slice(format!("{}:", add_body.len()).as_bytes());
    add.extend_from_slice(add_body);
    add.push(b',');
    assert_eq!(seen[0], add);
    assert_eq!(
        seen[1],
        format!("python_server -1 /__ping__ 73:6:METHOD,8:MONGREL2,5:QUERY,41:text={guid},}}0:,")
            .into_bytes()
    );
    assert_eq!(
        seen[2],
        b"python_server -1 /__disconnect_ping__ 20:6:METHOD,8:MONGREL2,}0:,"
    );
    assert_eq!(
        seen[3],
        b"python_server -1 /__remove_connection__ 16:6:METHOD,4:JSON,}2:{},"
    );
}
