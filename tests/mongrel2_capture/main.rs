//! Captures of what a real Mongrel2 sends to handlers, kept in `tests/data/`.
//!
//! Each test starts a Mongrel2 (once per header protocol), drives it with
//! hand-built HTTP and WebSocket traffic over raw TCP, and records every
//! message Mongrel2 pushes to the handler. With `MONGREL2_CAPTURE_UPDATE=1`
//! the recordings replace the files in `tests/data/`; otherwise they must
//! match them, which proves that the stored data (used by the codec tests and
//! benches) is still what Mongrel2 sends.
//!
//! The client is deterministic (fixed WebSocket key and mask, no port in
//! `Host`, fixed send_ident), so only the connection id and the random part of
//! upload file names differ between runs. The comparison parses both sides
//! with [`Request::parse`] and compares sender, path, protocol, kind, headers
//! (in any order) and body, ignoring exactly those two things.

use mongrel2_test_fixture as common;

use common::{
    connect_reply_socket, connect_request_socket, recv_timeout, HandlerConf, Mongrel2, Protocol,
    Setting, UPLOAD_TEMP_STORE,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod compare;
use compare::*;

/// The handler's send_ident: the SENDER of every captured request.
const SENDER: &str = "c6a5e1f2-58d3-4e0b-9a7c-2b4f8d1e6a93";
/// Our identity in replies (Mongrel2's recv_ident is empty, so any will do).
const REPLY_UUID: &str = "3f1d7b2e-9c4a-4e6f-8b05-d2a9c7e41f68";
/// RFC 6455's sample key and its accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// RFC 6455's sample masking key.
const WS_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Messages are the only thing we wait for; this bounds each wait.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Small enough that modest bodies take the upload paths. Not below
/// `limits.buffer_size` (4096): Mongrel2 then shrinks its read buffer under
/// already buffered body bytes and the upload stalls.
const CONTENT_LENGTH_LIMIT: i64 = 4096;
/// Over the limit; the streamed chunks are the limit and the rest.
const UPLOAD_LEN: u32 = 5000;

const UPLOAD_PREFIX: &[u8] = b"/tmp/upload.";

/// One Mongrel2 with one handler, and the handler's two sockets.
struct Rig {
    // Sockets before the server: they close first.
    pull: zmq::Socket,
    publ: zmq::Socket,
    m2: Mongrel2,
    protocol: Protocol,
    captured: Vec<(String, Vec<u8>)>,
}

impl Rig {
    fn new(protocol: Protocol, settings: &[(&str, Setting)]) -> Rig {
        let mut builder = Mongrel2::builder().handler(
            HandlerConf::new("/handler")
                .also_route("@json")
                .send_ident(SENDER)
                .protocol(protocol),
        );
        for (key, value) in settings {
            builder = builder.setting(key, value.clone());
        }
        let m2 = builder.start();
        let ctx = zmq::Context::new();
        let h = m2.handler(0);
        let pull = connect_request_socket(&ctx, &h.send_spec).expect("connect PULL");
        let publ = connect_reply_socket(&ctx, &h.recv_spec).expect("connect PUB");
        Rig {
            pull,
            publ,
            m2,
            protocol,
            captured: Vec::new(),
        }
    }

    fn client(&self) -> TcpStream {
        let s = TcpStream::connect(self.m2.http_addr()).expect("connect to Mongrel2");
        s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// The next message from Mongrel2, skipping disconnect notices of
    /// earlier scenarios' connections.
    fn next(&self, what: &str) -> Vec<u8> {
        loop {
            let msg = self.next_any(what);
            if !is_disconnect(&msg) {
                return msg;
            }
        }
    }

    fn next_any(&self, what: &str) -> Vec<u8> {
        match recv_timeout(&self.pull, TIMEOUT) {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!(
                "no {what} message from Mongrel2 within {TIMEOUT:?}\n{}",
                self.m2.log_tail(30)
            ),
            Err(e) => panic!("receiving: {e}"),
        }
    }

    /// Asserts there is no message from Mongrel2 for a moment (used where a
    /// message would be a protocol surprise worth knowing about).
    fn expect_quiet(&self, what: &str) {
        if let Ok(Some(msg)) = recv_timeout(&self.pull, Duration::from_millis(200)) {
            if !is_disconnect(&msg) {
                panic!("unexpected message {what}: {}", show(&msg));
            }
        }
    }

    fn capture(&mut self, name: &str, msg: Vec<u8>) -> Vec<u8> {
        self.captured.push((name.to_string(), msg.clone()));
        msg
    }

    fn next_capture(&mut self, name: &str) -> Vec<u8> {
        let msg = self.next(name);
        self.capture(name, msg)
    }

    fn reply(&self, conn_id: &str, body: &[u8]) {
        let mut msg = format!("{REPLY_UUID} {}:{conn_id}, ", conn_id.len()).into_bytes();
        msg.extend_from_slice(body);
        self.publ.send(msg, 0).expect("publish reply");
    }

    /// An extended reply granting upload credits: `ctl {credits: n}`.
    fn grant_credits(&self, conn_id: &str, n: u64) {
        let num = n.to_string();
        let dict = format!("7:credits,{}:{num}#", num.len());
        let list = format!("3:ctl,{}:{dict}}}", dict.len());
        let body = format!("{}:{list}]", list.len());
        let ids = format!("X {conn_id}");
        let msg = format!("{REPLY_UUID} {}:{ids}, {body}", ids.len());
        self.publ.send(msg.as_bytes(), 0).expect("publish ctl");
    }

    /// Stores or checks everything captured.
    fn finish(self) {
        let update = std::env::var_os("MONGREL2_CAPTURE_UPDATE").is_some_and(|v| v == "1");
        let mut failures = Vec::new();
        for (name, msg) in &self.captured {
            if let Err(e) = check_kind(name, msg) {
                failures.push(format!("{name}: {e}"));
            }
            let path = data_path(name, self.protocol);
            if update {
                std::fs::write(&path, msg).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
                continue;
            }
            let stored = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{path:?}: {e}; run MONGREL2_CAPTURE_UPDATE=1 cargo test --test mongrel2_capture")
            });
            if let Err(diff) = compare(&stored, msg) {
                failures.push(format!("{}: {diff}", path.display()));
            }
        }
        assert!(
            failures.is_empty(),
            "Mongrel2 no longer sends what tests/data holds:\n{}",
            failures.join("\n")
        );
    }
}

fn data_path(name: &str, protocol: Protocol) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.{}.bin", protocol.name()))
}

fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "test frames are small");
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&WS_MASK);
    f.extend(
        payload
            .iter()
            .zip(WS_MASK.iter().cycle())
            .map(|(b, m)| b ^ m),
    );
    f
}

/// Reads an HTTP response head (through the blank line).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + TIMEOUT;
    while !head.ends_with(b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no response head");
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!("connection closed after {:?}", show(&head)),
            Err(e) => panic!("reading response: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

/// Plain HTTP, WebSocket, disconnect and JSON socket messages.
fn capture_plain(protocol: Protocol) {
    let mut rig = Rig::new(protocol, &[]);
    // Clients stay open until the end so their disconnects come last.
    let mut clients = Vec::new();

    let mut c = rig.client();
    c.write_all(
        b"GET /handler/get?a=1&b=two%20words&a=3#frag HTTP/1.1\r\n\
          Host: localhost\r\n\
          User-Agent: mongrel2-capture\r\n\
          Accept: */*\r\n\
          X-Dup: one\r\n\
          X-Dup: two\r\n\r\n",
    )
    .expect("send");
    let msg = rig.next_capture("http_get");
    rig.reply(&conn_id(&msg), OK_RESPONSE);
    assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
    clients.push(c);

    let mut c = rig.client();
    let body: &[u8] = b"\x00\x01binary, body: 3:abc,\r\n\xff";
    c.write_all(
        format!(
            "POST /handler/post HTTP/1.1\r\n\
             Host: localhost\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send");
    c.write_all(body).expect("send body");
    let msg = rig.next_capture("http_post");
    assert!(contains(&msg, body), "body missing: {}", show(&msg));
    clients.push(c);

    // HTTP/1.0 without Host: routed through the default host.
    let mut c = rig.client();
    c.write_all(b"GET /handler/old HTTP/1.0\r\nUser-Agent: old\r\n\r\n")
        .expect("send");
    rig.next_capture("http_10");
    clients.push(c);

    // A client that goes away: Mongrel2 tells the handler.
    let mut c = rig.client();
    c.write_all(b"GET /handler/bye HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let id = conn_id(&rig.next("request"));
    drop(c);
    let msg = rig.next_any("disconnect");
    assert!(is_disconnect(&msg), "expected a disconnect: {}", show(&msg));
    assert_eq!(conn_id(&msg), id);
    rig.capture("disconnect", msg);

    capture_websocket(&mut rig, &mut clients);

    // A JSON message on a raw socket, routed by its @path.
    let mut c = rig.client();
    c.write_all(b"@json {\"type\":\"msg\",\"msg\":\"hello\"}\0")
        .expect("send");
    rig.next_capture("json_socket");
    clients.push(c);

    rig.expect_quiet("after the scenarios");
    drop(clients);
    rig.finish();
}

fn capture_websocket(rig: &mut Rig, clients: &mut Vec<TcpStream>) {
    let mut c = rig.client();
    c.write_all(
        format!(
            "GET /handler/ws?room=1 HTTP/1.1\r\n\
             Host: localhost\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: http://localhost\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send");
    let msg = rig.next_capture("ws_handshake");
    assert!(ends_with(&msg, WS_ACCEPT.as_bytes()), "{}", show(&msg));
    let id = conn_id(&msg);
    rig.reply(
        &id,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(read_head(&mut c).starts_with("HTTP/1.1 101"));

    let frames: [(&str, Vec<u8>); 5] = [
        ("ws_text", ws_frame(0x81, b"Hello")),
        ("ws_binary", ws_frame(0x82, b"\x00\x01\x02\xff")),
        ("ws_ping", ws_frame(0x89, b"ping!")),
        ("ws_rsv1", ws_frame(0xC1, b"rsv1 set")),
        ("ws_close", {
            let mut p = 1000u16.to_be_bytes().to_vec();
            p.extend_from_slice(b"bye");
            ws_frame(0x88, &p)
        }),
    ];
    for (name, frame) in &frames[..4] {
        c.write_all(frame).expect("send frame");
        rig.next_capture(name);
        if *name == "ws_ping" {
            // A text message in two fragments arrives as one message.
            let mut two = ws_frame(0x01, b"Hel");
            two.extend(ws_frame(0x80, b"lo, world"));
            c.write_all(&two).expect("send fragments");
            let msg = rig.next_capture("ws_fragmented");
            assert!(ends_with(&msg, b"Hello, world"), "{}", show(&msg));
        }
    }
    let (name, frame) = &frames[4];
    c.write_all(frame).expect("send close");
    rig.next_capture(name);
    clients.push(c);
}

/// Download flow control: the first request grants credits, and every reply
/// written to the client is acknowledged with a credits message.
fn capture_credits(protocol: Protocol) {
    let mut rig = Rig::new(protocol, &[("download.flow_control", 1.into())]);
    let mut c = rig.client();
    c.write_all(b"GET /handler/download HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let msg = rig.next_capture("flow_request");
    rig.reply(&conn_id(&msg), OK_RESPONSE);
    assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
    let msg = rig.next_capture("credits");
    assert!(ends_with(&msg, b"\"credits\"}"), "{}", show(&msg));
    rig.expect_quiet("after the credits");
    drop(c);
    rig.finish();
}

fn upload_body() -> Vec<u8> {
    (0..UPLOAD_LEN).map(|i| (i % 251) as u8).collect()
}

fn upload_head(len: usize) -> Vec<u8> {
    format!(
        "POST /handler/upload HTTP/1.1\r\n\
         Host: localhost\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

/// A body over limits.content_length goes to a temp file; the handler hears
/// when it starts and when it is complete.
fn capture_upload_file(protocol: Protocol) {
    let mut rig = Rig::new(
        protocol,
        &[
            ("limits.content_length", CONTENT_LENGTH_LIMIT.into()),
            ("upload.temp_store", UPLOAD_TEMP_STORE.into()),
        ],
    );
    let body = upload_body();
    let mut c = rig.client();
    c.write_all(&upload_head(body.len())).expect("send");
    c.write_all(&body).expect("send body");
    rig.next_capture("upload_start");
    let msg = rig.next_capture("upload_done");
    // The file Mongrel2 names holds the body.
    let at = msg
        .windows(UPLOAD_PREFIX.len())
        .position(|w| w == UPLOAD_PREFIX)
        .expect("upload file name");
    let name = String::from_utf8_lossy(&msg[at..at + UPLOAD_PREFIX.len() + 6]).into_owned();
    let stored = std::fs::read(rig.m2.chroot_path(&name)).expect("read uploaded file");
    assert_eq!(stored, body);
    rig.reply(&conn_id(&msg), OK_RESPONSE);
    assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
    rig.expect_quiet("after the upload");
    drop(c);
    rig.finish();
}

/// With upload.stream the body comes in chunks, each only after the handler
/// grants credits for it.
fn capture_upload_stream(protocol: Protocol) {
    let mut rig = Rig::new(
        protocol,
        &[
            ("limits.content_length", CONTENT_LENGTH_LIMIT.into()),
            ("upload.stream", 1.into()),
        ],
    );
    let body = upload_body();
    let mut c = rig.client();
    // Headers alone first, so the first message reliably has no body.
    c.write_all(&upload_head(body.len())).expect("send");
    let msg = rig.next_capture("upload_stream_start");
    let id = conn_id(&msg);
    c.write_all(&body).expect("send body");
    rig.expect_quiet("before credits were granted");
    let first = CONTENT_LENGTH_LIMIT as usize;
    rig.grant_credits(&id, first as u64);
    let msg = rig.next_capture("upload_stream_chunk");
    assert!(ends_with(&msg, &body[..first]), "{}", show(&msg));
    rig.grant_credits(&id, (body.len() - first) as u64);
    let msg = rig.next_capture("upload_stream_done");
    assert!(ends_with(&msg, &body[first..]), "{}", show(&msg));
    rig.reply(&id, OK_RESPONSE);
    assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
    rig.expect_quiet("after the upload");
    drop(c);
    rig.finish();
}

macro_rules! capture_tests {
    ($($name:ident => $scenario:ident($protocol:ident);)*) => {$(
        #[test]
        fn $name() {
            $scenario(Protocol::$protocol);
        }
    )*};
}

capture_tests! {
    plain_tnetstring => capture_plain(Tnetstring);
    plain_json => capture_plain(Json);
    credits_tnetstring => capture_credits(Tnetstring);
    credits_json => capture_credits(Json);
    upload_file_tnetstring => capture_upload_file(Tnetstring);
    upload_file_json => capture_upload_file(Json);
    upload_stream_tnetstring => capture_upload_stream(Tnetstring);
    upload_stream_json => capture_upload_stream(Json);
}
