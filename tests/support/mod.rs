//! Clients and a handler thread for the integration tests that run a real Mongrel2.
//!
//! `tests/common` starts Mongrel2; this module drives it: a Transceiver running the echo
//! behaviour on its own thread, a plain HTTP/1.x client over TCP (parsed with httparse) and
//! a hand-rolled WebSocket client for the misbehaviour a well-behaved library will not send.

#![allow(dead_code)]

pub mod child;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mongrel2_transceiver::websocket::{Frame, Opcode};
use mongrel2_transceiver::{Builder, CloseReason, ConnId, Event, Handle, Message, Transceiver};

/// What the handler thread saw, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Http { sender: String, path: String },
    Opened(ConnId),
    Message(ConnId),
    Closed(ConnId, CloseReason),
    Other(String),
}

/// A Transceiver on its own thread, echoing HTTP (as JSON) and WebSocket messages.
pub struct EchoHandler {
    pub handle: Handle,
    pub seen: mpsc::Receiver<Seen>,
    pub control: String,
    thread: Option<JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EchoHandler {
    /// Starts the handler for `sender`, connected to `pull`/`publish`, and returns once its
    /// PUB is subscribed by Mongrel2 (nothing it sends afterwards can be lost).
    pub fn start(
        sender: &str,
        pull: &str,
        publish: &str,
        configure: impl FnOnce(Builder) -> Builder + Send + 'static,
    ) -> EchoHandler {
        let control = format!("tcp://127.0.0.1:{}", crate::common::free_tcp_port());
        let builder = configure(
            Transceiver::builder(sender)
                .pull(pull)
                .publish(publish)
                .control(Some(&control)),
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let (seen_tx, seen) = mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut transceiver = match builder.build() {
                Ok(t) => t,
                Err(err) => {
                    let _ = ready_tx.send(Err(err.to_string()));
                    return;
                }
            };
            match transceiver.wait_ready(Duration::from_secs(10)) {
                Ok(true) => {}
                other => {
                    let _ = ready_tx.send(Err(format!("not subscribed: {other:?}")));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(transceiver.handle()));
            echo_loop(&mut transceiver, &seen_tx, &stop_flag);
        });
        let handle = match ready_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(handle)) => handle,
            Ok(Err(err)) => panic!("handler did not start: {err}"),
            Err(err) => panic!("handler did not start: {err}"),
        };
        EchoHandler {
            handle,
            seen,
            control,
            thread: Some(thread),
            stop,
        }
    }

    /// Waits for the first event matching `pick`, skipping others.
    pub fn wait<T>(&self, timeout: Duration, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(seen) => {
                    if let Some(found) = pick(&seen) {
                        return found;
                    }
                }
                Err(_) => panic!("timed out waiting for a handler event"),
            }
        }
    }
}

impl Drop for EchoHandler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.handle.interrupt();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn echo_loop(
    transceiver: &mut Transceiver,
    seen: &mpsc::Sender<Seen>,
    stop: &std::sync::atomic::AtomicBool,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let event = match transceiver.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(mongrel2_transceiver::Error::Interrupted) => continue,
            Err(err) => panic!("loop failed: {err}"),
        };
        let result = match &event {
            Event::Http(request) => {
                let _ = seen.send(Seen::Http {
                    sender: request.sender().to_owned(),
                    path: request.path().to_owned(),
                });
                let headers: serde_json::Map<String, serde_json::Value> = request
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.to_string(), serde_json::json!(value.first())))
                    .collect();
                let echo = serde_json::json!({
                    "method": request.method(),
                    "path": request.path(),
                    "query": request.query_pairs(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(request.body()),
                });
                transceiver.reply_json(request, 200, &echo)
            }
            Event::Opened { conn, .. } => {
                let _ = seen.send(Seen::Opened(conn.clone()));
                Ok(())
            }
            Event::Message { conn, message } => {
                let _ = seen.send(Seen::Message(conn.clone()));
                match message {
                    Message::Text(text) => transceiver.send_text(conn, text),
                    Message::Binary(data) => transceiver.send_binary(conn, data),
                }
            }
            Event::Closed { conn, reason } => {
                let _ = seen.send(Seen::Closed(conn.clone(), reason.clone()));
                Ok(())
            }
            other => {
                let _ = seen.send(Seen::Other(format!("{other:?}")));
                Ok(())
            }
        };
        if let Err(err) = result {
            panic!("reply failed: {err}");
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("response body is JSON")
    }
}

/// A keep-alive capable HTTP/1.x client on one TCP connection.
pub struct HttpClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        let stream = TcpStream::connect(addr).expect("connect to Mongrel2");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        HttpClient {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    pub fn send_raw(&mut self, request: &[u8]) {
        self.stream.write_all(request).expect("write request");
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, request: &str) -> io::Result<HttpResponse> {
        self.send_raw(request.as_bytes());
        self.read_response()
    }

    pub fn read_response(&mut self) -> io::Result<HttpResponse> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed
                .parse(&self.buffer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let status = parsed.code.unwrap_or(0);
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buffer.len() < head_len + length {
                    self.fill()?;
                }
                let body = self.buffer[head_len..head_len + length].to_vec();
                self.buffer.drain(..head_len + length);
                return Ok(HttpResponse {
                    status,
                    headers,
                    body,
                });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// True when the server closes the connection (EOF) within the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        matches!(self.stream.read(&mut chunk), Ok(0))
    }
}

/// One GET on a fresh connection, retried until a response arrives or `timeout` passes.
pub fn get_eventually(addr: SocketAddr, path: &str, timeout: Duration) -> Option<HttpResponse> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(stream) = TcpStream::connect(addr) {
            let mut client = HttpClient {
                stream,
                buffer: Vec::new(),
            };
            client.set_timeout(Duration::from_millis(500));
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            if let Ok(response) = client.request(&request) {
                return Some(response);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A WebSocket client speaking raw frames, for what well-behaved clients never send.
pub struct RawWebSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawWebSocket {
    pub fn connect(addr: SocketAddr, path: &str) -> RawWebSocket {
        let mut stream = TcpStream::connect(addr).expect("connect to Mongrel2");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("handshake");
        let mut ws = RawWebSocket {
            stream,
            buffer: Vec::new(),
        };
        // Read the 101 head.
        loop {
            if let Some(end) = ws.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buffer[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101"), "handshake answer: {head}");
                assert!(
                    head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                    "accept key in {head}"
                );
                ws.buffer.drain(..end + 4);
                return ws;
            }
            ws.fill().expect("handshake answer");
        }
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    pub fn send(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) {
        let mut frame = Frame::new(opcode, payload);
        frame.fin = fin;
        let mut bytes = Vec::new();
        frame.encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut bytes);
        self.stream.write_all(&bytes).expect("write frame");
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write bytes");
    }

    /// The next frame from the server: (opcode, payload).
    pub fn recv(&mut self) -> io::Result<(Opcode, Vec<u8>)> {
        loop {
            match Frame::decode(&self.buffer) {
                Ok(Some((frame, used))) => {
                    let out = (frame.opcode, frame.payload.to_vec());
                    self.buffer.drain(..used);
                    return Ok(out);
                }
                Ok(None) => self.fill()?,
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        }
    }

    /// The next frame that is not a ping.
    pub fn recv_data(&mut self) -> io::Result<(Opcode, Vec<u8>)> {
        loop {
            let frame = self.recv()?;
            if frame.0 != Opcode::Ping {
                return Ok(frame);
            }
        }
    }

    pub fn at_eof(&mut self) -> bool {
        self.buffer.is_empty()
            && matches!(self.fill(), Err(e) if e.kind() == io::ErrorKind::UnexpectedEof)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The close code in a close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A tungstenite client on a plain TcpStream (so tests can set read timeouts).
pub fn ws_connect(addr: SocketAddr, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect to Mongrel2");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let url = format!("ws://{addr}{path}");
    match tungstenite::client::client(url, stream) {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            socket
        }
        Err(err) => panic!("WebSocket handshake failed: {err}"),
    }
}
