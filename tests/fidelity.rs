//! Fidelity: one scenario suite, run against the harness and against a real Mongrel2
//! with real clients (TCP for HTTP, tungstenite for WebSocket), with the same
//! assertions. Each scenario is written once against [`Side`]; both sides serve it with
//! their own echo handler (tests/echo_handler). Intended differences between the two are
//! documented in the harness module docs.

use mongrel2_test_fixture as common;
mod echo_handler;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{HandlerConf, Mongrel2};
use echo_handler::EchoHandler;
use mongrel2_transceiver::harness::{Client, HarnessError, HttpRequest, Protocol, Server};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};

const TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP response, as both sides report it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    status: u16,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A WebSocket message or event, as both sides report it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ws {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// A text message sent in these fragments.
    Fragments(Vec<String>),
    /// The server closed the connection.
    Gone,
}

/// One keep-alive HTTP connection.
trait HttpConn {
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp;
    /// Whether the server closes the connection (waits up to the timeout).
    fn closed_by_server(&mut self) -> bool;
}

/// One WebSocket connection.
trait WsConn {
    fn send(&mut self, message: Ws);
    fn recv(&mut self) -> Ws;
    /// The client disappears without a closing handshake.
    fn go_away(self: Box<Self>);
}

/// A way of reaching the echo handler.
trait Side {
    fn http(&mut self) -> Box<dyn HttpConn>;
    fn ws(&mut self, target: &str) -> Box<dyn WsConn>;
}

// ----- the scenarios -----

fn http_echo(side: &mut dyn Side) {
    let mut conn = side.http();
    let resp = conn.request(
        "POST",
        "/echo/x?a=1",
        &[("Content-Type", "text/plain")],
        b"hello",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello");
    assert_eq!(resp.header("x-method"), Some("POST"));
    assert_eq!(resp.header("x-path"), Some("/echo/x"));
    assert_eq!(resp.header("x-query"), Some("a=1"));
    assert_eq!(resp.header("content-length"), Some("5"));
}

fn http_keep_alive_then_close(side: &mut dyn Side) {
    let mut conn = side.http();
    for n in 0..3 {
        let resp = conn.request("GET", &format!("/echo/{n}"), &[], b"");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-path"), Some(format!("/echo/{n}").as_str()));
        assert_ne!(resp.header("connection"), Some("close"));
    }
    let resp = conn.request("GET", "/echo/close", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_by_server());

    // The client asks to close.
    let mut conn = side.http();
    let resp = conn.request("GET", "/echo/last", &[("Connection", "close")], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_by_server());
}

fn http_streamed(side: &mut dyn Side) {
    let mut conn = side.http();
    let resp = conn.request("GET", "/echo/stream", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body, b"onetwothree");
    // The connection is still usable after a streamed response.
    assert_eq!(conn.request("GET", "/echo/after", &[], b"").status, 200);
}

fn ws_echo(side: &mut dyn Side) {
    let mut ws = side.ws("/echo/ws?room=1");
    ws.send(Ws::Text("hello".into()));
    assert_eq!(ws.recv(), Ws::Text("hello".into()));
    ws.send(Ws::Binary(vec![0, 1, 2, 255]));
    assert_eq!(ws.recv(), Ws::Binary(vec![0, 1, 2, 255]));
    ws.send(Ws::Fragments(vec![
        "frag".into(),
        "ment".into(),
        "ed".into(),
    ]));
    assert_eq!(ws.recv(), Ws::Text("fragmented".into()));
}

fn ws_ping_pong(side: &mut dyn Side) {
    let mut ws = side.ws("/echo");
    ws.send(Ws::Ping(b"are you there".to_vec()));
    assert_eq!(ws.recv(), Ws::Pong(b"are you there".to_vec()));
    ws.send(Ws::Text("still open".into()));
    assert_eq!(ws.recv(), Ws::Text("still open".into()));
}

fn ws_close_with_code(side: &mut dyn Side) {
    let mut client_closes = side.ws("/echo");
    client_closes.send(Ws::Close(Some(1000)));
    assert_eq!(client_closes.recv(), Ws::Close(Some(1000)));
    assert_eq!(client_closes.recv(), Ws::Gone);

    let mut handler_closes = side.ws("/echo");
    handler_closes.send(Ws::Text("close:4001".into()));
    assert_eq!(handler_closes.recv(), Ws::Close(Some(4001)));
    assert_eq!(handler_closes.recv(), Ws::Gone);
}

fn ws_broadcast(side: &mut dyn Side) {
    let mut clients: Vec<Box<dyn WsConn>> = (0..4).map(|_| side.ws("/echo")).collect();
    clients[1].send(Ws::Text("broadcast:to everyone".into()));
    for ws in &mut clients {
        assert_eq!(ws.recv(), Ws::Text("to everyone".into()));
    }
}

fn ws_disconnect(side: &mut dyn Side) {
    let mut stays = side.ws("/echo");
    let leaves = side.ws("/echo");
    stays.send(Ws::Text("count".into()));
    assert_eq!(stays.recv(), Ws::Text("2".into()));
    leaves.go_away();
    // The handler hears of it asynchronously: ask until it has.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        stays.send(Ws::Text("count".into()));
        let count = stays.recv();
        if count == Ws::Text("1".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session count stuck at {count:?}"
        );
    }
}

macro_rules! both_sides {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn harness() {
                    super::$scenario(&mut super::HarnessSide::start());
                }

                #[test]
                fn real_mongrel2() {
                    super::$scenario(&mut super::RealSide::start());
                }
            }
        )*
    };
}

both_sides!(
    http_echo,
    http_keep_alive_then_close,
    http_streamed,
    ws_echo,
    ws_ping_pong,
    ws_close_with_code,
    ws_broadcast,
    ws_disconnect,
);

// ----- the harness side -----

struct HarnessSide {
    // Declared first so it drops first: disconnect before the handler stops.
    server: Server,
    _handler: EchoHandler,
}

impl HarnessSide {
    fn start() -> HarnessSide {
        let handler = EchoHandler::spawn();
        let server = Server::builder()
            .handler(handler.control())
            .recv_timeout(TIMEOUT)
            .build()
            .expect("harness server");
        HarnessSide {
            server,
            _handler: handler,
        }
    }
}

impl Side for HarnessSide {
    fn http(&mut self) -> Box<dyn HttpConn> {
        Box::new(HarnessHttp(
            self.server.client(Protocol::Http).expect("client"),
        ))
    }

    fn ws(&mut self, target: &str) -> Box<dyn WsConn> {
        let mut client = self.server.client(Protocol::WebSocket).expect("client");
        client.handshake(target).expect("handshake");
        Box::new(HarnessWs(client))
    }
}

struct HarnessHttp(Client);

impl HttpConn for HarnessHttp {
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut request = HttpRequest::new(method, target).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = self.0.http(&request).expect("HTTP response");
        Resp {
            status: response.status,
            headers: response
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: response.body,
        }
    }

    fn closed_by_server(&mut self) -> bool {
        self.0.recv_close().is_ok()
    }
}

struct HarnessWs(Client);

impl WsConn for HarnessWs {
    fn send(&mut self, message: Ws) {
        use mongrel2_transceiver::websocket::Opcode;
        let client = &mut self.0;
        match message {
            Ws::Text(text) => client.send_text(&text),
            Ws::Binary(data) => client.send_binary(&data),
            Ws::Ping(data) => client.send_ping(&data),
            Ws::Pong(data) => client.send_pong(&data),
            Ws::Close(code) => client.send_close(code.map(|code| (code, ""))),
            Ws::Fragments(parts) => {
                let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
                client.send_fragmented(Opcode::Text, &parts)
            }
            Ws::Gone => panic!("cannot send Gone"),
        }
        .expect("send");
    }

    fn recv(&mut self) -> Ws {
        use mongrel2_transceiver::websocket::Opcode;
        match self.0.recv_frame() {
            Ok(frame) => match frame.opcode {
                Opcode::Text => Ws::Text(String::from_utf8(frame.payload).expect("UTF-8")),
                Opcode::Binary => Ws::Binary(frame.payload),
                Opcode::Ping => Ws::Ping(frame.payload),
                Opcode::Pong => Ws::Pong(frame.payload),
                Opcode::Close => Ws::Close(frame.close_code()),
                other => panic!("unexpected {other:?} frame"),
            },
            Err(HarnessError::Closed) => Ws::Gone,
            Err(err) => panic!("receiving: {err}"),
        }
    }

    fn go_away(mut self: Box<Self>) {
        // What Mongrel2 tells the handler when a browser vanishes.
        self.0.disconnect().expect("disconnect notice");
    }
}

// ----- the real side -----

struct RealSide {
    // The handler stops first, then Mongrel2.
    _handler: EchoHandler,
    mongrel2: Mongrel2,
}

impl RealSide {
    fn start() -> RealSide {
        let mongrel2 = Mongrel2::builder()
            .handler(HandlerConf::new("/echo"))
            .start();
        let conf = mongrel2.handler(0);
        let (pull, publish) = (conf.send_spec.clone(), conf.recv_spec.clone());
        let handler = EchoHandler::spawn_with(
            &conf.send_ident,
            move |builder| builder.pull(&pull).publish(&publish),
            true,
        );
        RealSide {
            _handler: handler,
            mongrel2,
        }
    }
}

impl Side for RealSide {
    fn http(&mut self) -> Box<dyn HttpConn> {
        Box::new(RealHttp {
            stream: connect(self.mongrel2.http_addr()),
            buffer: Vec::new(),
        })
    }

    fn ws(&mut self, target: &str) -> Box<dyn WsConn> {
        let addr = self.mongrel2.http_addr();
        let url = format!("ws://{addr}{target}");
        let (socket, response) =
            tungstenite::client(url.as_str(), connect(addr)).expect("WebSocket handshake");
        assert_eq!(response.status().as_u16(), 101);
        Box::new(RealWs(socket))
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to Mongrel2");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

struct RealHttp {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RealHttp {
    /// Reads more bytes; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(err) => panic!("reading from Mongrel2: {err}"),
        }
    }
}

impl HttpConn for RealHttp {
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        self.stream.write_all(&raw).expect("send request");

        let (mut resp, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(used) =
                parsed.parse(&self.buffer).expect("HTTP response")
            {
                let resp = Resp {
                    status: parsed.code.expect("status"),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (resp, used);
            }
            assert!(self.fill(), "connection closed before the response head");
        };
        self.buffer.drain(..used);
        if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                match httparse::parse_chunk_size(&self.buffer).expect("chunk size") {
                    httparse::Status::Complete((start, 0)) => {
                        while !self.buffer[start..].starts_with(b"\r\n") {
                            assert!(self.fill(), "closed inside the last chunk");
                        }
                        self.buffer.drain(..start + 2);
                        break;
                    }
                    httparse::Status::Complete((start, size)) => {
                        let end = start + size as usize;
                        if self.buffer.len() < end + 2 {
                            assert!(self.fill(), "closed inside a chunk");
                            continue;
                        }
                        resp.body.extend_from_slice(&self.buffer[start..end]);
                        self.buffer.drain(..end + 2);
                    }
                    httparse::Status::Partial => assert!(self.fill(), "closed before a chunk"),
                }
            }
        } else {
            let length: usize = resp
                .header("content-length")
                .map(|l| l.parse().expect("Content-Length"))
                .unwrap_or(0);
            while self.buffer.len() < length {
                assert!(self.fill(), "closed inside the body");
            }
            resp.body = self.buffer.drain(..length).collect();
        }
        resp
    }

    fn closed_by_server(&mut self) -> bool {
        self.buffer.is_empty() && !self.fill()
    }
}

struct RealWs(tungstenite::WebSocket<TcpStream>);

impl WsConn for RealWs {
    fn send(&mut self, message: Ws) {
        use tungstenite::Message;
        let socket = &mut self.0;
        match message {
            Ws::Text(text) => socket.send(Message::text(text)),
            Ws::Binary(data) => socket.send(Message::binary(data)),
            Ws::Ping(data) => socket.send(Message::Ping(data.into())),
            Ws::Pong(data) => socket.send(Message::Pong(data.into())),
            Ws::Close(code) => socket.close(code.map(|code| CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            })),
            Ws::Fragments(parts) => {
                let last = parts.len() - 1;
                for (index, part) in parts.into_iter().enumerate() {
                    let opcode = if index == 0 {
                        OpCode::Data(Data::Text)
                    } else {
                        OpCode::Data(Data::Continue)
                    };
                    socket
                        .write(Message::Frame(Frame::message(
                            part.into_bytes(),
                            opcode,
                            index == last,
                        )))
                        .expect("send fragment");
                }
                socket.flush()
            }
            Ws::Gone => panic!("cannot send Gone"),
        }
        .expect("send");
    }

    fn recv(&mut self) -> Ws {
        use tungstenite::{Error, Message};
        match self.0.read() {
            Ok(Message::Text(text)) => Ws::Text(text.as_str().to_owned()),
            Ok(Message::Binary(data)) => Ws::Binary(data.to_vec()),
            Ok(Message::Ping(data)) => Ws::Ping(data.to_vec()),
            Ok(Message::Pong(data)) => Ws::Pong(data.to_vec()),
            Ok(Message::Close(frame)) => Ws::Close(frame.map(|f| u16::from(f.code))),
            Ok(Message::Frame(_)) => panic!("raw frame"),
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => Ws::Gone,
            Err(Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ws::Gone
            }
            Err(err) => panic!("receiving: {err}"),
        }
    }

    fn go_away(self: Box<Self>) {
        // Dropping the socket closes the TCP connection without a closing handshake.
        drop(self);
    }
}
